"""Graph queries that passes and backends share: who reads a value, who computes it."""

from __future__ import annotations

from snnc.ir import parse_graph

GRAPH = parse_graph(
    """
    graph @g(%x: analog[2,4,4]) {
      %r = relu(%x) : analog[2,4,4]
      %f = flatten(%r) : analog[32]
      %a = relu(%f) : analog[32]
      %b = relu(%f) : analog[32]
      %c = add(%a, %b) : analog[32]
      output %c, %a
    }
    """
)


def test_only_user_is_the_single_reader_of_a_value_that_is_not_an_output() -> None:
    assert GRAPH.only_user("r").name == "f"  # type: ignore[union-attr]
    assert GRAPH.only_user("f") is None  # read by %a and %b
    assert GRAPH.only_user("a") is None  # read by %c only, but also a graph output
    assert GRAPH.only_user("c") is None  # read by nobody


def test_producer_through_shape_ops_looks_through_flatten() -> None:
    assert GRAPH.producer_through_shape_ops("a").name == "a"  # type: ignore[union-attr]
    assert GRAPH.producer_through_shape_ops("f").name == "r"  # type: ignore[union-attr]
    assert GRAPH.producer_through_shape_ops("x") is None
