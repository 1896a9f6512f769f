"""Value types: their text form (`analog[1,8,8]`, `spike[16]`, `burst<4>[16,8,8]`, `analog[10]xi32`),
parsed alone (`parse_type`) and inside a graph (the graph parser), and the malformed forms both reject."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from strategies import tensor_types

from snnc.errors import ParseError
from snnc.ir import DType, Signal, TensorType, analog, burst, parse_graph, parse_type, print_graph, spike

WELL_FORMED = [
    ("analog[1,8,8]", TensorType((1, 8, 8))),
    ("spike[16]", TensorType((16,), Signal.SPIKE)),
    ("burst<4>[16,8,8]", TensorType((16, 8, 8), Signal.BURST, burst=4)),
    ("analog[10]xi32", TensorType((10,), dtype=DType.I32)),
    ("spike[3,4]xi8", TensorType((3, 4), Signal.SPIKE, dtype=DType.I8)),
    ("burst<255>[2]xi8", TensorType((2,), Signal.BURST, burst=255, dtype=DType.I8)),
    ("analog[]", TensorType(())),
]


@pytest.mark.parametrize(("text", "expected"), WELL_FORMED)
def test_type_text_parses_and_prints_back(text: str, expected: TensorType) -> None:
    assert parse_type(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(("text", "expected"), WELL_FORMED)
def test_graph_parser_reads_the_same_types(text: str, expected: TensorType) -> None:
    graph = parse_graph(f"graph @g(%x: {text}) {{\n  output %x\n}}\n")
    assert graph.inputs == [("x", expected)]
    assert f"%x: {text})" in print_graph(graph)


def test_parse_type_ignores_surrounding_and_inner_spaces() -> None:
    assert parse_type("  analog[ 1, 8 ]  ") == analog(1, 8)


def test_constructors_and_properties() -> None:
    assert analog(1, 8, 8) == TensorType((1, 8, 8), Signal.ANALOG, burst=1, dtype=DType.F32)
    assert spike(16) == TensorType((16,), Signal.SPIKE)
    assert burst(4, 16, 8) == TensorType((16, 8), Signal.BURST, burst=4)
    assert burst(1, 16) == spike(16)  # burst<1> is a spike: one kind, one spelling
    assert not analog(3).is_event and spike(3).is_event and burst(2, 3).is_event
    assert burst(3, 2, 4, 5).numel == 40 and analog().numel == 1
    assert analog(6, 2).channels == 6 and analog().channels == 1
    widened = TensorType((4,), Signal.BURST, burst=3, dtype=DType.I8).with_shape((2, 2))
    assert widened == TensorType((2, 2), Signal.BURST, burst=3, dtype=DType.I8)


@settings(max_examples=100, deadline=None)
@given(tensor_types())
def test_every_type_round_trips(t: TensorType) -> None:
    assert parse_type(str(t)) == t
    graph = parse_graph(f"graph @g(%x: {t}) {{\n  output %x\n}}\n")
    assert graph.inputs[0][1] == t


MALFORMED = [
    "",
    "analog",
    "analog[1,8",
    "analog1,8]",
    "spike(16)",
    "Analog[1]",
    "burst[4]",
    "burst<>[4]",
    "burst<a>[4]",
    "analog[-1]",
    "analog[1.5]",
    "analog[a]",
    "analog[1]x",
    "analog[1]xf64",
    "analog[1]xi32 extra",
    "tensor[1]",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_parse_type_rejects_malformed(text: str) -> None:
    message = f"malformed type '{text}'; expected e.g. analog[1,8,8], spike[16], burst<4>[16]"
    with pytest.raises(ParseError, match="^" + re.escape(message) + "$"):
        parse_type(text)


GRAPH_TYPE_ERRORS = [
    ("analog", "line 1:20: expected '[', got ')'"),
    ("tensor[1]", "line 1:14: expected a type (analog|spike|burst<B>), got 'tensor'"),
    ("burst[4]", "line 1:19: expected '<', got '['"),
    ("burst<>[4]", "line 1:20: burst size must be a positive integer, got '>'"),
    ("analog[1,8", "line 1:24: expected ']', got ')'"),
    ("analog[a]", "line 1:21: dimension must be a positive integer, got 'a'"),
    ("analog[1 8]", "line 1:23: expected ']', got '8'"),
    ("analog[1,,8]", "line 1:23: dimension must be a positive integer, got ','"),
]


@pytest.mark.parametrize(("text", "message"), GRAPH_TYPE_ERRORS)
def test_graph_parser_rejects_malformed_types_with_a_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ParseError, match="^" + re.escape(message) + "$"):
        parse_graph(f"graph @g(%x: {text}) {{\n  output %x\n}}\n")


def test_graph_parser_reports_the_line_of_a_bad_node_type() -> None:
    text = "graph @g(%x: analog[3]) {\n  %y = relu(%x) : analog[3\n  output %y\n}\n"
    with pytest.raises(ParseError, match="^" + re.escape("line 3:3: expected ']', got 'output'") + "$"):
        parse_graph(text)


# -- defects found by these tests, now fixed: pinned against regressions -------------------------------------


def test_parse_type_rejects_space_separated_dims() -> None:
    with pytest.raises(ParseError):
        parse_type("analog[1 8]")


@pytest.mark.parametrize("text", ["analog[1,,8]", "analog[,]", "spike[4,]"])
def test_parse_type_rejects_empty_dims(text: str) -> None:
    with pytest.raises(ParseError):
        parse_type(text)


@pytest.mark.parametrize("text", ["burst<0>[4]", "burst<1>[4]"])
def test_burst_needs_at_least_two_levels(text: str) -> None:
    with pytest.raises(ParseError):
        parse_type(text)


@pytest.mark.parametrize("text", ["analog[1.5]", "burst<2.5>[3]", "analog[1e3]"])
def test_graph_parser_rejects_non_integer_dims_with_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match=r"^line 1:\d+: "):
        parse_graph(f"graph @g(%x: {text}) {{\n  output %x\n}}\n")
