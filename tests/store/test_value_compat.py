"""Values written by an earlier gbc (value format 2) decode to the same graphs, and the same
graphs are encoded to the same payload bytes as then: stores written before keep reading, and
a change to the serialisation or the in-edge rules shows here (``data/values_format2.json``
holds values the codec wrote, one per in-edge mode, with extras, a span and the full layout)."""

import json
from pathlib import Path

import pytest

from gbc.schemas import GbcGraph
from gbc.store.codec import ValueCodec, in_edges_mode

VALUES = json.loads((Path(__file__).parent / "data" / "values_format2.json").read_text())


@pytest.mark.parametrize("case", VALUES, ids=[c["name"] for c in VALUES])
def test_values_of_an_earlier_gbc_decode_and_encode_the_same(case):
    codec = ValueCodec()
    value = bytes.fromhex(case["value"])
    old_payload, mode = codec.unpack(value)
    assert mode == case["mode"]
    graph = codec.decode_graph(value)
    assert graph.to_dict() == case["graph"]
    assert graph.to_dict("full") == GbcGraph.model_validate(case["graph"]).to_dict("full")
    # the same graph, given again, is stored as the same payload with the same in-edge mode
    again = GbcGraph.model_validate(case["graph"])
    assert in_edges_mode(again) == mode
    assert codec.graph_payload(again) == (old_payload, mode)
    # and a graph read back from the store (in-edges shared with out-edges) as well
    assert codec.graph_payload(graph) == (old_payload, mode)


def test_the_recorded_values_cover_every_in_edge_mode():
    assert {c["mode"] for c in VALUES} == {0, 1, 2}
