"""Helpers shared by the ANN→SNN conversion passes (not a pass itself).

Conventions used throughout:

* a neuron's *effective* threshold, leak and output scale are the scalar attribute times
  the optional per-channel parameter (``snnc.ir.ops.Neuron``); :func:`neuron_vector` returns
  them as one value per channel;
* "normalised" activations are in units of the neuron's threshold: 1.0 is one spike per
  step;
* the quantiser an IF neuron with soft reset and initial membrane ``shift·θ`` implements for
  a constant input ``a`` over T steps is ``clamp(floor(T·a/θ + shift), 0, T·B)·θ/T``
  (tests/test_conversion_theory.py pins it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.ir import ops as O

OpT = TypeVar("OpT")
ACTIVATIONS = (O.Relu, O.Clip)
MAX_VALUES_PER_CHANNEL = 200_000  # subsample beyond this for percentile / grid searches


# ---------------------------------------------------------------------------------------
# activation statistics


def channel_values(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) activations -> (C, N·...) one row per channel."""
    a = np.asarray(a)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


def channel_mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean of (N, C, ...) activations over the batch and every spatial position."""
    return channel_values(a).mean(axis=1)


def subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` columns of a (C, n) array, drawn without replacement (seeded)."""
    if rows.shape[1] <= limit:
        return rows
    idx = np.random.default_rng(seed).choice(rows.shape[1], size=limit, replace=False)
    return rows[:, np.sort(idx)]


def quantise(a: np.ndarray, theta: np.ndarray, timesteps: int, shift: float, bursts: int = 1) -> np.ndarray:
    """What the converted neuron's rate computes for a constant input ``a`` (rows = channels)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
    levels = np.clip(np.floor(a / theta * timesteps + shift), 0, timesteps * bursts)
    return levels * theta / timesteps


def mse_thresholds(rows: np.ndarray, timesteps: int, shift: float, bursts: int = 1) -> np.ndarray:
    """AdaFire's grid search, one threshold per row of ``rows`` (C, n).

    Candidates θ_i = max/B·(1 − 0.01 i), i = 0..94 (with B = ``bursts`` the top level is B·θ,
    so the grid starts where that level reaches the maximum); picks argmin ‖a − q(a; θ)‖² with
    ``q`` = :func:`quantise`.  A row that is never positive gets θ = 1 (it never fires).
    """
    rows = np.asarray(rows, dtype=np.float64)
    top = rows.max(axis=1, initial=0.0)
    best = top / bursts
    best_err = np.full(rows.shape[0], np.inf)
    for i in range(95):
        theta = np.where(top > 0, top / bursts * (1.0 - 0.01 * i), 1.0)
        err = np.sum((rows - quantise(rows, theta, timesteps, shift, bursts)) ** 2, axis=1)
        better = err < best_err
        best = np.where(better, theta, best)
        best_err = np.where(better, err, best_err)
    return np.where(top > 0, best, 1.0)


def positive_or(values: np.ndarray, fallback: float) -> np.ndarray:
    """Replace non-positive thresholds (channels that never activate) by ``fallback``."""
    values = np.asarray(values, dtype=np.float64).copy()
    values[~(values > 0)] = fallback
    return values


# ---------------------------------------------------------------------------------------
# neurons


def with_attrs(op: OpT, **changes: Any) -> OpT:
    """A copy of the (frozen dataclass) op with some attributes changed."""
    return dataclasses.replace(op, **changes)  # type: ignore[type-var]


def neuron_vector(graph: Graph, node: Node, role: str) -> np.ndarray:
    """Effective per-channel value of a neuron attribute (attribute × optional parameter)."""
    assert node.type is not None  # internal: the pass manager verifies graphs between passes
    channels = node.type.channels
    value = np.full(channels, float(getattr(node.op, role)))
    param = node.param(graph, role)
    if param is not None:
        value = value * np.asarray(param, dtype=np.float64).reshape(-1)
    return value


def set_neuron_vector(graph: Graph, node: Node, role: str, value: np.ndarray) -> None:
    """Store an effective per-channel value: as the scalar attribute when uniform, else as a
    per-channel parameter ``<node>.<role>`` with the attribute set to 1."""
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    if np.all(value == value[0]):
        node.op = with_attrs(node.op, **{role: float(value[0])})
        node.params.pop(role, None)
        return
    node.op = with_attrs(node.op, **{role: 1.0})
    key = node.params.get(role)
    if key is None or uses(graph, key) > 1:
        key = graph.fresh_param(f"{node.name}.{role}")
    node.params[role] = key
    graph.params[key] = value.astype(np.float32)


def scale_threshold(graph: Graph, node: Node, factor: np.ndarray) -> None:
    """Multiply a neuron's threshold and output scale by ``factor`` (per channel): the
    neuron then approximates the same clipped activation with a coarser or finer step."""
    for role in ("v_th", "out_scale"):
        set_neuron_vector(graph, node, role, neuron_vector(graph, node, role) * factor)


def neurons(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if isinstance(n.op, O.Neuron)]


def require_neurons(graph: Graph, pass_name: str) -> list[Node]:
    found = neurons(graph)
    if not found:
        raise PassError(f"pass '{pass_name}' needs spiking neurons; run lower-neurons first")
    return found


# ---------------------------------------------------------------------------------------
# graph helpers


def uses(graph: Graph, key: str) -> int:
    """How many (node, role) pairs read the parameter ``key`` (a shared tensor is never rewritten)."""
    return sum(list(n.params.values()).count(key) for n in graph.nodes)


def only_user(graph: Graph, value: str) -> Node | None:
    users = graph.users(value)
    if len(users) == 1 and value not in graph.outputs:
        return users[0]
    return None


def bias_owner(graph: Graph, neuron: Node) -> Node | None:
    """The node whose bias shifts ``neuron``'s input current one-for-one: a conv/linear/scale
    used only by the neuron, or one such operand of an ``add`` used only by the neuron."""
    src = graph.producer(neuron.inputs[0])
    if src is None or only_user(graph, src.name) is not neuron:
        return None
    if src.op.synaptic and src.op.declares_param("bias"):  # conv, linear, scale
        return src
    if isinstance(src.op, O.Add):
        for v in src.inputs:
            p = graph.producer(v)
            if p is not None and p.op.weighted and only_user(graph, p.name) is src:
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


def store_param(graph: Graph, node: Node, role: str, value: np.ndarray) -> None:
    """Store a new tensor for ``node``'s parameter ``role``: under its own key when only this
    node reads it, under a fresh key when it is shared (shared tensors stay as they were)."""
    key = node.params[role]
    if uses(graph, key) > 1:
        key = graph.fresh_param(key)
        node.params[role] = key
    graph.params[key] = np.asarray(value, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# sensitivity and the Pareto programme


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sym_kl(a_logits: np.ndarray, b_logits: np.ndarray) -> float:
    """Symmetric KL divergence KL(p‖q) + KL(q‖p) of the softmaxes, averaged over the batch."""
    p = np.clip(softmax(np.asarray(a_logits, dtype=np.float64)), 1e-12, 1.0)
    q = np.clip(softmax(np.asarray(b_logits, dtype=np.float64)), 1e-12, 1.0)
    return float(np.mean(np.sum((p - q) * (np.log(p) - np.log(q)), axis=1)))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One candidate setting of one layer: ``limited`` counts against the limit, ``objective``
    is minimised."""

    limited: float
    objective: float


def pareto_select(layers: Sequence[Sequence[Choice]], limit: float) -> list[int] | None:
    """Pick one choice per layer minimising Σ objective subject to Σ limited ≤ limit.

    The Pareto programme of burst-ann2snn: extend partial solutions layer by layer, sort by
    the limited quantity, keep a partial solution only if its objective is strictly below every
    cheaper one and its limited total is within the limit.  Returns the choice indices, or
    None when no combination meets the limit.
    """
    frontier: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for options in layers:
        grown = [
            (lim + c.limited, obj + c.objective, picks + (i,))
            for lim, obj, picks in frontier
            for i, c in enumerate(options)
            if lim + c.limited <= limit * (1 + 1e-12)
        ]
        grown.sort(key=lambda s: (s[0], s[1]))
        frontier = []
        for s in grown:
            if not frontier or s[1] < frontier[-1][1]:
                frontier.append(s)
        if not frontier:
            return None
    return list(min(frontier, key=lambda s: s[1])[2])


def calibration_batches(ctx, pass_name: str, batches: int, labelled: bool = False) -> Iterator:
    """The first ``batches`` calibration batches (x, y) (``batches`` <= 0: all of them)."""
    data = ctx.require_calibration(pass_name, labelled=labelled)
    return data.batches(batches if batches > 0 else None)


def first_samples(ctx, pass_name: str, batches: int, labelled: bool = False):
    """The first ``batches`` calibration batches concatenated: (x, y)."""
    xs, ys = [], []
    for xb, yb in calibration_batches(ctx, pass_name, batches, labelled):
        xs.append(np.asarray(xb, dtype=np.float32))
        if yb is not None:
            ys.append(np.asarray(yb))
    if not xs:
        raise PassError(f"pass '{pass_name}': the calibration data is empty")
    return np.concatenate(xs), (np.concatenate(ys) if ys else None)
