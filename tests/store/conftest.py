import json

import pytest

from store_helpers import gbc10m_graph


@pytest.fixture(scope="session")
def reference_records(reference_jsonl):
    return [json.loads(line) for line in reference_jsonl.read_text().splitlines()]


@pytest.fixture(scope="session")
def gbc10m_records():
    return [gbc10m_graph(i).to_dict() for i in range(12)]
