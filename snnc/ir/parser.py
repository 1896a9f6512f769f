"""Parser for the textual IR written by :mod:`snnc.ir.printer`."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

from snnc.errors import ParseError, did_you_mean
from snnc.ir.graph import Graph, GraphAttributes, Node
from snnc.ir.op import coerce_attribute, coerce_value, op_class
from snnc.ir.types import DType, Signal, TensorType

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<symbol>@[A-Za-z0-9_.\-]+)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+)|-inf\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}\[\]<>,=:])
    """,
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if not m:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            if kind != "ws":
                self.toks.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "", self.toks[-1][2] if self.toks else 1)

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        kind, value, line = self.next()
        if value != text:
            raise ParseError(f"line {line}: expected '{text}', got '{value or kind}'")

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def take(self, kind: str) -> str:
        k, value, line = self.next()
        if k != kind:
            raise ParseError(f"line {line}: expected {kind}, got '{value or k}'")
        return value


def _literal(t: _Tokens) -> Any:
    kind, value, line = t.next()
    if kind == "string":
        return json.loads(value)
    if kind == "number":
        if value == "-inf":
            return float("-inf")
        return float(value) if any(c in value for c in ".eE") else int(value)
    if kind == "ident":
        if value in ("true", "false"):
            return value == "true"
        if value in ("inf", "nan"):
            return float(value)
    if value == "[":
        items: list[Any] = []
        if not t.accept("]"):
            items.append(_literal(t))
            while t.accept(","):
                items.append(_literal(t))
            t.expect("]")
        return items
    raise ParseError(f"line {line}: expected a value, got '{value}'")


def _dict(t: _Tokens) -> dict[str, Any]:
    t.expect("{")
    out: dict[str, Any] = {}
    if t.accept("}"):
        return out
    while True:
        line = t.peek()[2]
        key = t.take("ident")
        if key in out:
            raise ParseError(f"line {line}: '{key}' given twice")
        t.expect("=")
        out[key] = _literal(t)
        if t.accept("}"):
            return out
        t.expect(",")


def _positive_int(t: _Tokens, what: str) -> int:
    kind, value, line = t.next()
    if kind != "number" or not value.isdigit() or int(value) < 1:
        raise ParseError(f"line {line}: {what} must be a positive integer, got '{value}'")
    return int(value)


def _type(t: _Tokens) -> TensorType:
    kind, value, line = t.next()
    if value not in ("analog", "spike", "burst"):
        raise ParseError(f"line {line}: expected a type (analog|spike|burst<B>), got '{value}'")
    burst = 1
    if value == "burst":
        t.expect("<")
        burst = _positive_int(t, "burst size")
        if burst < 2:
            raise ParseError(f"line {line}: burst<B> needs B >= 2 (burst<1> is spike)")
        t.expect(">")
    t.expect("[")
    dims: list[int] = []
    if not t.accept("]"):
        dims.append(_positive_int(t, "dimension"))
        while t.accept(","):
            dims.append(_positive_int(t, "dimension"))
        t.expect("]")
    dtype = DType.F32
    k, v, _ = t.peek()
    if k == "ident" and v.startswith("x") and v[1:] in {d.value for d in DType}:
        t.next()
        dtype = DType(v[1:])
    signal = Signal.BURST if value == "burst" else Signal(value)
    return TensorType(tuple(dims), signal, burst, dtype)


def _node(t: _Tokens, name: str, line: int) -> Node:
    opname = t.take("ident")
    cls = op_class(opname)
    t.expect("(")
    inputs: list[str] = []
    if not t.accept(")"):
        inputs.append(t.take("value")[1:])
        while t.accept(","):
            inputs.append(t.take("value")[1:])
        t.expect(")")
    attrs: dict[str, Any] = {}
    params: dict[str, str] = {}
    if t.peek()[1] == "{":
        raw = _dict(t)
        attrs = {k: coerce_attribute(cls, k, v) for k, v in raw.items()}
    if t.accept("params"):
        raw = _dict(t)
        roles = [p.role for p in cls.params_spec]
        for role, key in raw.items():
            if role not in roles:
                raise ParseError(f"line {line}: {opname} has no parameter '{role}'{did_you_mean(role, roles)}")
            if not isinstance(key, str):
                raise ParseError(f"line {line}: parameter {role} must name a tensor with a string")
            params[role] = key
    t.expect(":")
    ty = _type(t)
    loc = ""
    if t.accept("loc"):
        t.expect("(")
        loc = json.loads(t.take("string"))
        t.expect(")")
    try:
        op = cls(**attrs)
    except TypeError as e:
        raise ParseError(f"line {line}: {opname}: {e}") from None
    return Node(name, op, tuple(inputs), params, ty, loc)


def parse_graph(text: str) -> Graph:
    """Parse textual IR.  Types are taken as written; run the verifier to check them."""
    t = _Tokens(text)
    t.expect("graph")
    name = t.take("symbol")[1:]
    t.expect("(")
    inputs: list[tuple[str, TensorType]] = []
    if not t.accept(")"):
        while True:
            v = t.take("value")[1:]
            t.expect(":")
            inputs.append((v, _type(t)))
            if t.accept(")"):
                break
            t.expect(",")
    attrs = GraphAttributes()
    if t.accept("attributes"):
        raw = _dict(t)
        known = {f.name: f.type for f in fields(GraphAttributes)}
        values = {}
        for k, v in raw.items():
            if k not in known:
                raise ParseError(f"unknown graph attribute '{k}'{did_you_mean(k, known)}")
            values[k] = coerce_value(int if known[k] in (int, "int") else str, v, f"graph.{k}")
        attrs = GraphAttributes(**values)
    t.expect("{")
    nodes: list[Node] = []
    outputs: list[str] = []
    while True:
        kind, value, line = t.next()
        if value == "output":
            outputs.append(t.take("value")[1:])
            while t.accept(","):
                outputs.append(t.take("value")[1:])
            t.expect("}")
            break
        if kind != "value":
            raise ParseError(f"line {line}: expected '%name = op(...)' or 'output', got '{value or kind}'")
        t.expect("=")
        nodes.append(_node(t, value[1:], line))
    k, v, line = t.peek()
    if k != "eof":
        raise ParseError(f"line {line}: unexpected '{v}' after the graph")
    return Graph(name, inputs, nodes, outputs, attrs)
