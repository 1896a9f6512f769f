"""The snnc IR: typed ops, graphs, textual form and verifier (DESIGN.md §2)."""

from snnc.ir import (
    ops,
    ops_phase,  # registers the phase-coding ops, so any .snnir file parses
)
from snnc.ir.graph import Graph, GraphAttributes, Node
from snnc.ir.op import OPS, Op, ParamSpec, register_op
from snnc.ir.parser import parse_graph
from snnc.ir.printer import print_graph
from snnc.ir.serialize import load_graph, load_params, save_graph, save_params
from snnc.ir.types import DType, Signal, TensorType, analog, burst, parse_type, spike
from snnc.ir.verifier import check_event_based, verify

parse = parse_graph
print = print_graph  # noqa: A001  (snnc.ir.print, as DESIGN.md names it)

__all__ = [
    "OPS", "DType", "Graph", "GraphAttributes", "Node", "Op", "ParamSpec", "Signal", "TensorType",
    "analog", "burst", "check_event_based", "load_graph", "load_params", "ops", "ops_phase", "parse", "parse_graph",
    "parse_type", "print_graph", "register_op", "save_graph", "save_params", "spike", "verify",
]
