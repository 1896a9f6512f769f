"""Deterministic textual form of a Graph (the unit of golden tests and ``snnc opt``)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from snnc.ir.graph import Graph, GraphAttributes, Node
from snnc.ir.op import Op


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return json.dumps(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest string that round-trips exactly
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def _dict(entries: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in entries.items()) + "}"


def _attributes(op: Op) -> dict[str, Any]:
    """The attributes to print: those that differ from their default, where -0.0 differs from 0.0
    (they compare equal, but the parser must give back the same bits)."""
    out = op.non_default_attributes()
    for f in dataclasses.fields(op):  # type: ignore[arg-type]
        value = getattr(op, f.name)
        default = f.default
        if f.name not in out and isinstance(value, float) and isinstance(default, (int, float)) \
                and math.copysign(1.0, value) != math.copysign(1.0, default):
            out[f.name] = value
    return {f.name: out[f.name] for f in dataclasses.fields(op) if f.name in out}  # type: ignore[arg-type]


def format_node(node: Node) -> str:
    text = f"%{node.name} = {node.op.name}(" + ", ".join(f"%{v}" for v in node.inputs) + ")"
    attrs = _attributes(node.op)
    if attrs:
        text += " " + _dict(attrs)
    if node.params:
        text += " params " + _dict(dict(node.params))
    text += f" : {node.type}"
    if node.loc:
        text += f" loc({json.dumps(node.loc)})"
    return text


def _graph_attrs(attrs: GraphAttributes) -> dict[str, Any]:
    defaults = GraphAttributes()
    return {k: v for k, v in vars(attrs).items() if getattr(defaults, k) != v}


def print_graph(graph: Graph) -> str:
    """The textual IR; ``parse_graph(print_graph(g)) == g``."""
    sig = ", ".join(f"%{name}: {t}" for name, t in graph.inputs)
    head = f"graph @{graph.name}({sig})"
    attrs = _graph_attrs(graph.attrs)
    if attrs:
        head += " attributes " + _dict(attrs)
    lines = [head + " {"]
    lines += ["  " + format_node(n) for n in graph.nodes]
    lines.append("  output " + ", ".join(f"%{v}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
