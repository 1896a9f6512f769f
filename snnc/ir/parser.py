"""Parser for the textual IR written by :mod:`snnc.ir.printer`.

Every malformed input is a :class:`ParseError` whose message starts with where it is:
``line 2:17: expected ':', got 'analog'`` (``graph.snnir:2:17: ...`` when the text came from a
file).  The parser is total on untrusted text: nesting, integer size and string escapes are
bounded and checked here, so no input can reach a RecursionError, Python's int-to-string limit
or a JSON decoding error (``tools/fuzz.py --target snnir`` checks this).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from typing import Any, NoReturn

from snnc.errors import ParseError, did_you_mean
from snnc.ir.graph import Graph, GraphAttributes, Node
from snnc.ir.op import Op, coerce_attribute, coerce_value, op_class
from snnc.ir.types import DType, Signal, TensorType

MAX_NESTING = 64  # lists inside lists in an attribute value
MAX_INT_DIGITS = 20  # integers are 64-bit, signed or unsigned (a seed may be a uint64)
_INT_RANGE = range(-(2**63), 2**64)

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<symbol>@[A-Za-z0-9_.\-]+)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+)|-inf\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}\[\]<>,=:])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.ASCII | re.DOTALL,  # ASCII: \d is 0-9 and \s is plain whitespace, as the printer writes them
)
_STRING_ATOM_RE = re.compile(r'[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}')
_BAD_ESCAPE_RE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3}|.?)", re.DOTALL)


class _Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def shown(self) -> str:
        return self.text or self.kind


class _Tokens:
    def __init__(self, text: str, filename: str | None):
        self.filename = filename
        self.toks: list[_Token] = []
        line, line_start = 1, 0
        for m in _TOKEN_RE.finditer(text):
            kind = m.lastgroup
            if kind == "ws":
                newlines = m.group().count("\n")
                if newlines:
                    line += newlines
                    line_start = m.start() + m.group().rindex("\n") + 1
            elif kind == "bad":
                where, message = _bad_character(text, m.start())
                self.error(line, where - line_start + 1, message)
            else:
                self.toks.append(_Token(kind or "", m.group(), line, m.start() - line_start + 1))
        pos = len(text)
        self.eof = _Token("eof", "", line, pos - line_start + 1)
        self.i = 0

    def error(self, line: int, col: int, message: str) -> NoReturn:
        where = f"{self.filename}:" if self.filename else "line "
        raise ParseError(f"{where}{line}:{col}: {message}")

    def error_at(self, tok: _Token, message: str) -> NoReturn:
        self.error(tok.line, tok.col, message)

    def peek(self) -> _Token:
        return self.toks[self.i] if self.i < len(self.toks) else self.eof

    def next(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.next()
        if tok.text != text:
            self.error_at(tok, f"expected '{text}', got '{tok.shown()}'")
        return tok

    def accept(self, text: str) -> bool:
        if self.peek().text == text:
            self.i += 1
            return True
        return False

    def take(self, kind: str) -> str:
        tok = self.next()
        if tok.kind != kind:
            self.error_at(tok, f"expected {kind}, got '{tok.shown()}'")
        return tok.text


def _bad_character(text: str, pos: int) -> tuple[int, str]:
    """Why no token starts at ``pos``: a malformed string, or a character the IR never uses.

    Returns the offset to report (a bad escape or control character, else ``pos``) and the message.
    """
    if text[pos] != '"':
        return pos, f"unexpected character {text[pos]!r}"
    i = pos + 1
    while i < len(text):
        m = _STRING_ATOM_RE.match(text, i)
        if m:
            i = m.end()
            continue
        c = text[i]
        if c == '"':
            break  # unreachable: the whole string would have matched
        if c == "\\":
            escape = _BAD_ESCAPE_RE.match(text, i).group()  # type: ignore[union-attr]
            shown = f"'{escape}'" if escape.isprintable() else repr(escape)
            return i, f"bad escape {shown} in a string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"
        if c == "\n":
            return pos, "unterminated string (a string ends on its line; write a newline as \\n)"
        return i, f"control character {c!r} in a string; write it as \\u{ord(c):04x}"
    return pos, "unterminated string"


def _string(t: _Tokens, tok: _Token) -> str:
    try:
        return json.loads(tok.text)  # the token regex admits exactly JSON's string syntax
    except ValueError as e:  # pragma: no cover - defensive: the regex and json.loads agree
        t.error_at(tok, f"malformed string: {e}")


def _integer(t: _Tokens, tok: _Token) -> int:
    digits = tok.text.lstrip("-")  # count first: int() of a huge literal is slow, and refused past 4300 digits
    if len(digits) > MAX_INT_DIGITS or int(tok.text) not in _INT_RANGE:
        shown = tok.text if len(tok.text) <= 24 else tok.text[:20] + f"... ({len(digits)} digits)"
        t.error_at(tok, f"integer {shown} does not fit in 64 bits (-2**63 .. 2**64-1)")
    return int(tok.text)


def _number(t: _Tokens, tok: _Token) -> int | float:
    if tok.text == "-inf":
        return -math.inf
    if not any(c in tok.text for c in ".eE"):
        return _integer(t, tok)
    value = float(tok.text)
    if math.isinf(value):
        shown = tok.text if len(tok.text) <= 24 else tok.text[:20] + "..."
        t.error_at(tok, f"number {shown} is out of range for a 64-bit float (write inf or -inf)")
    return value


def _literal(t: _Tokens) -> Any:
    """A value: string, number, true/false, inf/nan, or a list of values (nested at most MAX_NESTING deep).

    Iterative, with an explicit stack of the lists being built, so that depth is a checked limit.
    """
    stack: list[list[Any]] = []
    while True:
        tok = t.next()
        if tok.text == "[":
            if len(stack) == MAX_NESTING:
                t.error_at(tok, f"nesting deeper than {MAX_NESTING} lists")
            stack.append([])
            if t.accept("]"):
                value: Any = stack.pop()
            else:
                continue
        else:
            value = _scalar(t, tok)
        while True:  # close every list that this value completes
            if not stack:
                return value
            stack[-1].append(value)
            if t.accept(","):
                break
            t.expect("]")
            value = stack.pop()


def _scalar(t: _Tokens, tok: _Token) -> Any:
    if tok.kind == "string":
        return _string(t, tok)
    if tok.kind == "number":
        return _number(t, tok)
    if tok.kind == "ident":
        if tok.text in ("true", "false"):
            return tok.text == "true"
        if tok.text in ("inf", "nan"):
            return float(tok.text)
    t.error_at(tok, f"expected a value, got '{tok.shown()}'")


_HINTS: dict[type[Op], dict[str, Any]] = {}  # op class -> field name -> declared type


def _attribute_hints(cls: type[Op]) -> dict[str, Any]:
    """Field name -> declared type; cached, as typing.get_type_hints is slow (milliseconds per op)."""
    if cls not in _HINTS:
        hints = cls.attribute_types()
        _HINTS[cls] = {f.name: hints[f.name] for f in cls.attribute_fields()}
    return _HINTS[cls]


def _coerce_attribute(cls: type[Op], key: str, value: Any) -> Any:
    hint = _attribute_hints(cls).get(key)
    if hint is None:
        return coerce_attribute(cls, key, value)  # raises the unknown-attribute error
    return coerce_value(hint, value, f"{cls.name}.{key}")


def _dict(t: _Tokens) -> dict[str, tuple[_Token, Any]]:
    """``{key = value, ...}`` -> key -> (the key's token, for error locations; the value)."""
    t.expect("{")
    out: dict[str, tuple[_Token, Any]] = {}
    if t.accept("}"):
        return out
    while True:
        tok = t.peek()
        key = t.take("ident")
        if key in out:
            t.error_at(tok, f"'{key}' given twice")
        t.expect("=")
        out[key] = (tok, _literal(t))
        if t.accept("}"):
            return out
        t.expect(",")


def _positive_int(t: _Tokens, what: str) -> int:
    tok = t.next()
    if tok.kind != "number" or not tok.text.isdigit() or _integer(t, tok) < 1:
        t.error_at(tok, f"{what} must be a positive integer, got '{tok.shown()}'")
    return int(tok.text)


def _type(t: _Tokens) -> TensorType:
    tok = t.next()
    if tok.text not in ("analog", "spike", "burst"):
        t.error_at(tok, f"expected a type (analog|spike|burst<B>), got '{tok.shown()}'")
    burst = 1
    if tok.text == "burst":
        t.expect("<")
        burst = _positive_int(t, "burst size")
        if burst < 2:
            t.error_at(tok, "burst<B> needs B >= 2 (burst<1> is spike)")
        t.expect(">")
    t.expect("[")
    dims: list[int] = []
    if not t.accept("]"):
        dims.append(_positive_int(t, "dimension"))
        while t.accept(","):
            dims.append(_positive_int(t, "dimension"))
        t.expect("]")
    dtype = DType.F32
    suffix = t.peek()
    if suffix.kind == "ident" and suffix.text.startswith("x") and suffix.text[1:] in {d.value for d in DType}:
        t.next()
        dtype = DType(suffix.text[1:])
    signal = Signal.BURST if tok.text == "burst" else Signal(tok.text)
    return TensorType(tuple(dims), signal, burst=burst, dtype=dtype)


def _node(t: _Tokens, name: str, start: _Token) -> Node:
    op_tok = t.peek()
    opname = t.take("ident")
    try:
        cls = op_class(opname)
    except ParseError as e:
        t.error_at(op_tok, str(e))
    t.expect("(")
    inputs: list[str] = []
    if not t.accept(")"):
        inputs.append(t.take("value")[1:])
        while t.accept(","):
            inputs.append(t.take("value")[1:])
        t.expect(")")
    attrs: dict[str, Any] = {}
    params: dict[str, str] = {}
    if t.peek().text == "{":
        for key, (key_tok, value) in _dict(t).items():
            try:
                attrs[key] = _coerce_attribute(cls, key, value)
            except ParseError as e:
                t.error_at(key_tok, str(e))
    if t.accept("params"):
        roles = [p.role for p in cls.params_spec]
        for role, (key_tok, key) in _dict(t).items():
            if role not in roles:
                t.error_at(key_tok, f"{opname} has no parameter '{role}'{did_you_mean(role, roles)}")
            if not isinstance(key, str):
                t.error_at(key_tok, f"parameter {role} must name a tensor with a string")
            params[role] = key
    t.expect(":")
    ty = _type(t)
    loc = ""
    if t.accept("loc"):
        t.expect("(")
        tok = t.peek()
        t.take("string")
        loc = _string(t, tok)
        t.expect(")")
    try:
        op = cls(**attrs)
    except (TypeError, ValueError) as e:
        t.error_at(start, f"{opname}: {e}")
    return Node(name, op, tuple(inputs), params=params, type=ty, loc=loc)


def _graph_attributes(t: _Tokens) -> GraphAttributes:
    known = {f.name: f.type for f in fields(GraphAttributes)}
    values = {}
    for k, (key_tok, v) in _dict(t).items():
        if k not in known:
            t.error_at(key_tok, f"unknown graph attribute '{k}'{did_you_mean(k, known)}")
        try:
            values[k] = coerce_value(int if known[k] in (int, "int") else str, v, f"graph.{k}")
        except ParseError as e:
            t.error_at(key_tok, str(e))
    return GraphAttributes(**values)


def parse_graph(text: str, filename: str | None = None) -> Graph:
    """Parse textual IR.  Types are taken as written; run the verifier to check them.

    ``filename`` (when the text came from a file) starts every error message instead of "line".
    """
    t = _Tokens(text, filename)
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
    attrs = _graph_attributes(t) if t.accept("attributes") else GraphAttributes()
    t.expect("{")
    nodes: list[Node] = []
    outputs: list[str] = []
    while True:
        tok = t.next()
        if tok.text == "output":
            outputs.append(t.take("value")[1:])
            while t.accept(","):
                outputs.append(t.take("value")[1:])
            t.expect("}")
            break
        if tok.kind != "value":
            t.error_at(tok, f"expected '%name = op(...)' or 'output', got '{tok.shown()}'")
        t.expect("=")
        nodes.append(_node(t, tok.text[1:], tok))
    tok = t.peek()
    if tok.kind != "eof":
        t.error_at(tok, f"unexpected '{tok.text}' after the graph")
    return Graph(name, inputs, nodes=nodes, outputs=outputs, attrs=attrs)
