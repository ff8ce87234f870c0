import json

import pytest

from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph


def gbc10m_graph(seed: int) -> GbcGraph:
    """A synthetic graph whose fields are exactly those of a GBC10M record (all set)."""
    return GbcGraph.model_validate(synthetic_graph(seed).to_dict("gbc10m"))


@pytest.fixture(scope="session")
def reference_records(reference_jsonl):
    return [json.loads(line) for line in reference_jsonl.read_text().splitlines()]


@pytest.fixture(scope="session")
def gbc10m_records():
    return [gbc10m_graph(i).to_dict() for i in range(12)]
