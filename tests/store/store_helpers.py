"""Graphs shared by the store tests (also imported by the processes those tests start)."""

from gbc.schemas import GbcGraph
from gbc.schemas.synthetic import synthetic_graph


def gbc10m_graph(seed: int) -> GbcGraph:
    """A synthetic graph whose fields are exactly those of a GBC10M record (all set)."""
    return GbcGraph.model_validate(synthetic_graph(seed).to_dict("gbc10m"))
