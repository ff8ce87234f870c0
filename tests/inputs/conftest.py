import pytest

from input_helpers import ImageServer


@pytest.fixture
def server():
    with ImageServer(slow_s=2.0) as srv:
        yield srv
