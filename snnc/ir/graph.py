"""Graph, nodes and the parameter store.

A Graph is a list of Nodes in topological order.  Every node defines one value, named
like the node (``%conv1``); graph inputs are values too.  Parameters are numpy arrays in
``graph.params`` under stable names taken from the source model.  Arrays are never
mutated in place by passes: a pass that changes a tensor stores a new array.

``graph.analyses`` holds typed results that passes leave for later ones (calibration statistics,
op counts; see :mod:`snnc.ir.analyses`); it is not part of the textual IR or of graph equality.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from snnc.errors import VerifyError
from snnc.ir.analyses import Analyses
from snnc.ir.op import Op
from snnc.ir.types import TensorType

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$|^[0-9]+$")


@dataclass
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]
    _: KW_ONLY
    params: dict[str, str] = field(default_factory=dict)  # role -> key in the store
    type: TensorType | None = None
    loc: str = ""  # where it came from in the user's model ("model.py:12 in forward (features.0)")

    def param(self, graph: Graph, role: str) -> np.ndarray | None:
        key = self.params.get(role)
        return None if key is None else graph.params[key]


@dataclass(frozen=True)
class GraphAttributes:
    timesteps: int = 0  # 0: not a spiking graph yet


@dataclass
class Graph:
    name: str
    inputs: list[tuple[str, TensorType]]
    _: KW_ONLY
    nodes: list[Node] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attrs: GraphAttributes = field(default_factory=GraphAttributes)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    analyses: Analyses = field(default_factory=Analyses)

    # -- equality: structure only (params live in the sidecar, analyses are transient) --
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.name, self.inputs, _nodes_key(self.nodes), self.outputs, self.attrs) == (
            other.name,
            other.inputs,
            _nodes_key(other.nodes),
            other.outputs,
            other.attrs,
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Graph:
        """A copy whose nodes and dicts can be changed freely (arrays are shared, never mutated)."""
        g = Graph(
            self.name,
            list(self.inputs),
            nodes=[copy.copy(n) for n in self.nodes],
            outputs=list(self.outputs),
            attrs=self.attrs,
            params=dict(self.params),
            analyses=copy.deepcopy(self.analyses),
        )
        for n in g.nodes:
            n.params = dict(n.params)
        return g

    # -- lookup ---------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, value: str) -> Node | None:
        """The node that defines ``value``, or None for a graph input."""
        for n in self.nodes:
            if n.name == value:
                return n
        return None

    def producer_through_shape_ops(self, value: str) -> Node | None:
        """The node that computes ``value``'s numbers: its producer, looking through shape-only ops
        (flatten, reshape, identity, dropout); None for a graph input."""
        node = self.producer(value)
        while node is not None and node.op.shape_only:
            node = self.producer(node.inputs[0])
        return node

    def users(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]

    def only_user(self, value: str) -> Node | None:
        """The one node that reads ``value``; None when several or none do, or ``value`` is a graph output."""
        users = self.users(value)
        return users[0] if len(users) == 1 and value not in self.outputs else None

    def value_type(self, value: str) -> TensorType:
        for name, t in self.inputs:
            if name == value:
                return t
        node_type = self.node(value).type
        if node_type is None:
            raise VerifyError(f"%{value} has no type; run type inference first")
        return node_type

    def param_shapes(self, node: Node) -> dict[str, tuple[int, ...]]:
        return {role: tuple(self.params[key].shape) for role, key in node.params.items() if key in self.params}

    def ops(self, op_type: type[Op]) -> Iterator[Node]:
        return (n for n in self.nodes if isinstance(n.op, op_type))

    def value_names(self) -> set[str]:
        return {name for name, _ in self.inputs} | {n.name for n in self.nodes}

    def fresh_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.]", "_", base) or "v"
        if not re.match(r"^[A-Za-z_]", base):
            base = "v" + base
        taken = self.value_names()
        if base not in taken:
            return base
        for i in itertools.count(1):
            candidate = f"{base}_{i}"
            if candidate not in taken:
                return candidate
        raise AssertionError("unreachable")

    def fresh_param(self, base: str) -> str:
        if base not in self.params:
            return base
        for i in itertools.count(1):
            if f"{base}.{i}" not in self.params:
                return f"{base}.{i}"
        raise AssertionError("unreachable")

    # -- rewriting --------------------------------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes:
            if old in n.inputs:
                n.inputs = tuple(new if v == old else v for v in n.inputs)
        self.outputs = [new if v == old else v for v in self.outputs]

    def remove(self, node: Node) -> None:
        """Remove a node; its single input takes over its uses."""
        self.nodes.remove(node)
        if node.inputs:
            self.replace_uses(node.name, node.inputs[0])

    def insert_after(self, anchor: Node, node: Node) -> None:
        self.nodes.insert(self.nodes.index(anchor) + 1, node)

    def drop_unused_params(self) -> None:
        used = {key for n in self.nodes for key in n.params.values()}
        self.params = {k: v for k, v in self.params.items() if k in used}

    def infer_types(self) -> None:
        """Recompute every node's type in order (raises VerifyError on inconsistency)."""
        for n in self.nodes:
            in_types = [self.value_type(v) for v in n.inputs]
            n.type = n.op.infer_type(n.name, in_types, self.param_shapes(n))

    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for name, _ in self.inputs:
            g.add_node(name)
        for n in self.nodes:
            g.add_node(n.name)
            for v in n.inputs:
                g.add_edge(v, n.name)
        return g


class _NaN:
    """Stands for a nan attribute in graph equality: equal to itself, unlike float("nan")."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NaN)

    def __hash__(self) -> int:
        return 0


def _nan_equal(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return _NaN()
    if isinstance(value, tuple):
        return tuple(_nan_equal(v) for v in value)
    return value


def _nodes_key(nodes: list[Node]) -> list[tuple[Any, ...]]:
    """What graph equality compares for each node.

    Graph equality is structural: a graph equals its copy and ``parse_graph(print_graph(g))``.
    The printer writes a nan attribute as ``nan`` and the parser reads it back as nan, but
    ``nan != nan`` in Python, so comparing the op dataclasses directly would make such a graph
    unequal to itself.  Here each nan (also inside a tuple attribute) compares equal to any
    other nan; every other value compares with ``==`` as before (so 0.0 == -0.0, as for ops).
    """
    return [
        (n.name, type(n.op), _nan_equal(tuple(n.op.attributes().values())), n.inputs, n.params, n.type, n.loc)
        for n in nodes
    ]
