"""d2e-encode: replace the direct coding of a direct-coded SNN by an event encoding.

A direct-coded SNN feeds the analog input to its first layer at every step, so that layer
multiplies (MACs) T times.  This pass swaps the ``encode{scheme=direct}`` after each graph
input for an event code, so the first layer accumulates the weights of the input events
instead (SOPs), and the whole graph is event-based (``verify(graph, require_event=True)``).

Schemes (``snnc.ir.ops.Encode``; inputs must lie in [0, 1]):
* ``rate``: Bernoulli spikes with p = x, seeded with ``ctx.seed``.  E[e_t] = x, so the first
  layer's mean drive per step, W·x + b, is what it saw under direct coding; only its
  per-step noise is new.  Nothing is rescaled.
* ``phase``: x written in ``bits`` binary digits, one digit per step, step k weighted by
  bits·2^-(k+1); the mean over a window of ``bits`` steps is x quantised to ``bits`` bits,
  so the mean drive is kept again (exactly, up to quantisation, when ``bits`` divides T).
  ``bits=0`` picks the largest divisor of T that is at most 8.
* ``ttfs``: one spike per positive input, earlier for larger values.  Over T steps the first
  layer receives W·1[x > 0] in total, T·W·x under direct coding: the magnitude is carried
  only by the spike time.  To keep the mean drive on the calibration data, the first
  layer's weights are multiplied by g = T·mean(x) / mean(1[x > 0]) (1 without data; the
  factor is reported).  This keeps an average, not the function: d2e-calibrate and
  d2e-finetune have to recover the rest.

Changes: the scheme of the input encoders (one is inserted after a graph input that has
none); the graph attribute ``timesteps`` becomes ``ctx.timesteps``; for ``ttfs`` the
weights of the first synaptic layers (reached from the encoder through flatten / reshape /
identity / dropout) are scaled.  Keeps the direct-coded graph as the teacher of the later
d2e passes in ``graph.analyses["d2e-teacher"]`` (the graph as this pass found it, with the
same T).
Preserves: every other node and parameter.  Lossy: ``rate`` adds sampling noise, ``phase``
quantises to ``bits`` bits, ``ttfs`` keeps only the spike time (see above).
Requires: inputs in [0, 1] (checked on the calibration data when there is any).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from snnc.passes._conversion import WEIGHTED, store_param

from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass

TEACHER = "d2e-teacher"  # graph.analyses key of the direct-coded source graph
_STRUCTURE = (O.Flatten, O.Reshape, O.Identity, O.Dropout)
_MAX_PHASE_BITS = 8


def teacher_of(graph: Graph, pass_name: str) -> Graph:
    """The direct-coded graph d2e-encode started from (the teacher of calibrate and finetune)."""
    teacher = graph.analyses.get(TEACHER)
    if teacher is None:
        raise PassError(
            f"pass '{pass_name}' needs the direct-coded source graph; run d2e-encode earlier in the same pipeline"
        )
    return teacher


def timesteps_of(ctx: PassContext, graph: Graph) -> int:
    t = graph.attrs.timesteps or ctx.timesteps
    if t < 1:
        raise PassError(f"timesteps={t} must be >= 1")
    return t


def phase_bits(timesteps: int) -> int:
    """The largest divisor of T that is at most 8 (a phase window that tiles T exactly)."""
    return max(b for b in range(1, min(timesteps, _MAX_PHASE_BITS) + 1) if timesteps % b == 0)


@register_pass
@dataclass(frozen=True)
class D2EEncode(Pass):
    name: ClassVar[str] = "d2e-encode"
    scheme: O.Scheme = O.Scheme.RATE
    bits: int = 0  # phase only; 0 = the largest divisor of T that is at most 8

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if self.scheme is O.Scheme.DIRECT:
            raise PassError(
                "d2e-encode: scheme=direct is what this pass replaces; choose rate, phase or ttfs"
            )
        if self.bits < 0:
            raise PassError(f"d2e-encode: bits={self.bits} must be >= 0")
        timesteps = ctx.timesteps
        if timesteps < 1:
            raise PassError(f"d2e-encode: timesteps={timesteps} must be >= 1")
        x = _check_range(ctx)
        bits = self.bits or phase_bits(timesteps)
        if self.scheme is O.Scheme.PHASE and timesteps % bits:
            ctx.note(
                f"d2e-encode: T={timesteps} is not a multiple of bits={bits}; the last phase window is cut short"
            )
        if TEACHER not in graph.analyses:
            teacher = graph.copy()
            teacher.attrs = dataclasses.replace(teacher.attrs, timesteps=timesteps)
            graph.analyses[TEACHER] = teacher
        op = O.Encode(scheme=self.scheme, seed=ctx.seed, bits=bits if self.scheme is O.Scheme.PHASE else 8)
        gains: dict[str, float] = {}
        for name, _ in graph.inputs:
            encoder = _direct_encoder(graph, name)
            encoder.op = op
            if self.scheme is O.Scheme.TTFS:
                gain = _ttfs_gain(x, timesteps) if x is not None else 1.0
                for layer in first_layers(graph, encoder):
                    _scale_weights(graph, layer, gain)
                gains[encoder.name] = gain
        graph.attrs = dataclasses.replace(graph.attrs, timesteps=timesteps)
        graph.infer_types()
        ctx.results[self.name] = {"scheme": self.scheme.value, "timesteps": timesteps, "weight_gain": gains}
        if self.scheme is O.Scheme.PHASE:
            ctx.results[self.name]["bits"] = bits


def _check_range(ctx: PassContext) -> np.ndarray | None:
    """The calibration inputs (if any), after checking that they lie in [0, 1]."""
    if ctx.calibration is None:
        ctx.note("d2e-encode: no calibration data; assuming inputs in [0, 1]")
        return None
    x = np.asarray(ctx.calibration.x, dtype=np.float32)
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if lo < 0.0 or hi > 1.0:
        raise PassError(
            f"d2e-encode: event encoders read inputs in [0, 1], the calibration data spans [{lo:.4g}, {hi:.4g}]; "
            "rescale the data to [0, 1] (folding the normalisation into the first layer) or keep direct coding"
        )
    return x


def _direct_encoder(graph: Graph, value: str) -> Node:
    """The direct encoder reading graph input ``value`` (inserted if there is none)."""
    encoders = [u for u in graph.users(value) if isinstance(u.op, O.Encode)]
    others = [u for u in graph.users(value) if not isinstance(u.op, O.Encode)]
    if len(encoders) > 1 or (encoders and others):
        raise UnsupportedError(
            f"d2e-encode: input %{value} is read by {len(encoders)} encoders and {len(others)} other nodes; "
            "expected one encoder"
        )
    if encoders:
        enc = encoders[0]
        scheme = enc.op.scheme  # type: ignore[attr-defined]
        if scheme is not O.Scheme.DIRECT:
            raise PassError(f"d2e-encode: encode %{enc.name} is already event-coded (scheme={scheme.value})")
        return enc
    enc = Node(graph.fresh_name(f"{value}_enc"), O.Encode(), (value,))
    graph.replace_uses(value, enc.name)
    graph.nodes.insert(0, enc)
    return enc


def first_layers(graph: Graph, encoder: Node) -> list[Node]:
    """The synaptic ops that read ``encoder``'s value, directly or through structure ops."""
    found: list[Node] = []
    frontier = [encoder]
    while frontier:
        node = frontier.pop()
        for user in graph.users(node.name):
            if isinstance(user.op, _STRUCTURE):
                frontier.append(user)
            elif user.op.synaptic:
                found.append(user)
            else:
                raise UnsupportedError(
                    f"d2e-encode: encode %{encoder.name} reaches {user.op.name} %{user.name} before any synaptic "
                    "layer; the input scale cannot be folded"
                )
    return found


def _ttfs_gain(x: np.ndarray, timesteps: int) -> float:
    """g with g·mean(1[x > 0]) = T·mean(x): TTFS's total drive per window matched to direct coding's."""
    active = float(np.mean(x > 0))
    return float(timesteps * np.mean(x) / active) if active > 0 else 1.0


def _scale_weights(graph: Graph, layer: Node, gain: float) -> None:
    if isinstance(layer.op, WEIGHTED):
        store_param(graph, layer, "weight", np.asarray(graph.params[layer.params["weight"]]) * gain)
    elif isinstance(layer.op, O.Scale):
        layer.op = dataclasses.replace(layer.op, factor=layer.op.factor * gain)
    else:
        raise UnsupportedError(
            f"d2e-encode: the input's first layer {layer.op.name} %{layer.name} has no weights to carry the "
            f"TTFS gain {gain:.4g}; use scheme=rate or phase"
        )
