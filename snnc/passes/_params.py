"""Pass helpers (not a pass): editing the parameter store and op attributes.

A parameter tensor may be shared by several nodes (``uses`` counts them); these helpers never
rewrite a shared tensor in place: the node being changed gets a fresh key instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O

OpT = TypeVar("OpT")


def with_attrs(op: OpT, **changes: Any) -> OpT:
    """A copy of the (frozen dataclass) op with some attributes changed."""
    return dataclasses.replace(op, **changes)  # type: ignore[type-var]


def uses(graph: Graph, key: str) -> int:
    """How many (node, role) pairs read the parameter ``key`` (a shared tensor is never rewritten)."""
    return sum(list(n.params.values()).count(key) for n in graph.nodes)


def store_param(graph: Graph, node: Node, role: str, value: np.ndarray) -> None:
    """Store a new tensor for ``node``'s parameter ``role``: under its own key when only this
    node reads it, under a fresh key when it is shared (shared tensors stay as they were)."""
    key = node.params[role]
    if uses(graph, key) > 1:
        key = graph.fresh_param(key)
        node.params[role] = key
    graph.params[key] = np.asarray(value, dtype=np.float32)


def bias_owner(graph: Graph, neuron: Node) -> Node | None:
    """The node whose bias shifts ``neuron``'s input current one-for-one: a conv/linear/scale
    used only by the neuron, or one such operand of an ``add`` used only by the neuron."""
    src = graph.producer(neuron.inputs[0])
    if src is None or graph.only_user(src.name) is not neuron:
        return None
    if src.op.synaptic and src.op.declares_param("bias"):  # conv, linear, scale
        return src
    if isinstance(src.op, O.Add):
        for v in src.inputs:
            p = graph.producer(v)
            if p is not None and p.op.weighted and graph.only_user(p.name) is src:
                return p
    return None


def add_to_bias(graph: Graph, node: Node, delta: np.ndarray) -> None:
    """bias ← bias + delta (per output channel), creating the bias when the node has none."""
    assert node.type is not None
    delta = np.broadcast_to(np.asarray(delta, dtype=np.float64).reshape(-1), (node.type.channels,))
    old = node.param(graph, "bias")
    base = np.zeros(node.type.channels) if old is None else np.asarray(old, dtype=np.float64)
    key = node.params.get("bias")
    if key is None or uses(graph, key) > 1:
        stem = node.params.get("weight", node.name).rsplit(".", 1)[0]
        key = graph.fresh_param(f"{stem}.bias")
    node.params["bias"] = key
    graph.params[key] = (base + delta).astype(np.float32)
