"""tvm-quantize: the spiking layers of a converted network in integer units, for the int8 kernels.

For every linear / conv2d / conv1d whose only user is an integrate-and-fire neuron and whose input
is 0/1 (or burst) spikes with output scale 1 (after ``fold-thresholds``), the layer is rewritten
in the integer units of its int8 kernel (``snnc/backends/tvm/format.md``, "int8 layers"):

* weights ``W_int = round(W · s)`` with one scale per layer ``s = (2^(weight-bits − 1) − 1) / max|W|``
  (the largest |w| reaches the end of the range, the same per-layer grid as ``loihi-quantize``'s
  mantissa without its even-integer constraint);
* the neuron works on ``s ×`` the float current: threshold ``round(θ · s)`` per channel, rounded to a
  multiple of the denominator of ``v_init`` so that ``v[0] = v_init · v_th`` stays an integer
  (v_init = 0.5: even thresholds); bias ``round(b · s)``; a hard reset's ``v_reset`` likewise.

Spikes are unchanged in meaning (0/1, or 0..B), so each layer's scale is local: the next layer reads
the same spike trains.  The layer that reads the analog input (direct coding, computed once per
batch), pooling layers and the readout layer stay float32 (the logits keep their units; the int8
kernels read the float layers' spikes as they are).  Integer values are stored as float32, exact
while a layer's current and membrane stay below 2^24 in magnitude (127 · fan-in per step), so
the torch simulator runs the quantised graph exactly as the int8 kernels do: a differential test
compares them spike for spike.

Stores :class:`TvmQuantization` (the integer layers) in the graph's analyses, which the tvm
target reads to lower those layers to int8; the result is in ``ctx.results["tvm-quantize"]`` too
(per layer: scale, max weight and threshold error in float units).  Lossy: a weight moves by at most
``max|W| / (2 (2^(bits−1) − 1))``, a threshold by at most ``d / (2 s)`` (d the denominator of
``v_init``), a bias by ``1 / (2 s)``.  Layers that do not meet the conditions are left as they were
(listed in the result with the reason).  Requires: a converted graph (``lower-neurons``,
``fold-thresholds``).  Not a ``loihi-quantize``: that pass targets Loihi's neuron (CUBA, hard reset,
strict threshold, even 9-bit weights); this one keeps the converted IF neurons.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.types import Signal
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._params import store_param

WEIGHTED = (O.Linear, O.Conv2d, O.Conv1d)
MAX_DENOMINATOR = 64  # v_init must be k / d with d at most this (0.5, 0.25, 0: yes)


@dataclass(frozen=True, kw_only=True)
class TvmQuantization:
    """What tvm-quantize left in integer units: the weighted nodes that lower to int8 layers."""

    layers: tuple[str, ...]
    weight_bits: int


@register_pass
@dataclass(frozen=True)
class TvmQuantize(Pass):
    name: ClassVar[str] = "tvm-quantize"
    weight_bits: int = 8

    def option_problems(self) -> list[str]:
        if not 2 <= self.weight_bits <= 8:
            return [f"weight-bits={self.weight_bits} must be in 2..8 (int8 weights)"]
        return []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        done: list[str] = []
        report: dict[str, Any] = {"weight_bits": self.weight_bits, "layers": {}, "skipped": {}}
        qmax = (1 << (self.weight_bits - 1)) - 1
        for node in list(graph.nodes):
            if not isinstance(node.op, WEIGHTED):
                continue
            reason = _why_not(graph, node)
            if reason:
                report["skipped"][node.name] = reason
                continue
            neuron = graph.only_user(node.name)
            if neuron is None:  # _why_not checked it; keeps the type checker informed
                continue
            report["layers"][node.name] = _quantize(graph, node, neuron, qmax)
            done.append(node.name)
        graph.analyses.put(TvmQuantization(layers=tuple(done), weight_bits=self.weight_bits))
        ctx.results["tvm-quantize"] = report


def _v_init_denominator(v_init: float) -> int | None:
    frac = Fraction(v_init).limit_denominator(MAX_DENOMINATOR)
    return frac.denominator if abs(float(frac) - v_init) < 1e-9 else None


def _why_not(graph: Graph, node: Node) -> str:
    """Why ``node`` cannot be an int8 layer ('' when it can)."""
    neuron = graph.only_user(node.name)
    if neuron is None or not isinstance(neuron.op, O.Neuron):
        return "not followed by a neuron it alone feeds (the readout layer stays float32)"
    op = neuron.op
    if op.model is not O.NeuronModel.IF or op.beta != 1.0 or "beta" in neuron.params:
        return "the neuron leaks (the int8 leak rounds differently from the simulator)"
    if op.reset_delay or op.emit is not O.Emit.SPIKES or op.negative is not O.Negative.NONE:
        return "the neuron is not a plain IF neuron (reset_delay, membrane output or signed spikes)"
    if op.presubtract:
        return "the neuron presubtracts"
    if op.out_scale != 1.0 or "out_scale" in neuron.params:
        return "the neuron has an output scale (run fold-thresholds)"
    if _v_init_denominator(float(op.v_init)) is None:
        return f"v_init={op.v_init} is not a fraction k/d with d <= {MAX_DENOMINATOR}"
    if op.reset is O.Reset.HARD and op.v_reset != 0.0:
        return "hard reset to a non-zero v_reset"
    value = node.inputs[0]
    if graph.value_type(value).signal is Signal.ANALOG:
        return "reads analog values (the input layer stays float32)"
    src = graph.producer(value)
    while src is not None and (src.op.shape_only or isinstance(src.op, O.SpikeMaxPool2d)):
        src = graph.producer(src.inputs[0])
    if src is None or not isinstance(src.op, O.Neuron):
        return "its spikes do not come straight from a neuron (through flatten or gated max pooling)"
    if src.op.out_scale != 1.0 or "out_scale" in src.params:
        return "its input spikes carry an output scale (run fold-thresholds)"
    w = graph.params[node.params["weight"]]
    if not np.any(w):
        return "all weights are zero"
    return ""


def _quantize(graph: Graph, node: Node, neuron: Node, qmax: int) -> dict[str, float]:
    """Rewrite ``node`` and ``neuron`` in the layer's integer units; return the layer's report."""
    op: O.Neuron = neuron.op  # type: ignore[assignment]
    w = graph.params[node.params["weight"]].astype(np.float64)
    s = qmax / float(np.abs(w).max())
    w_int = np.clip(np.rint(w * s), -qmax, qmax)
    store_param(graph, node, "weight", w_int)
    if "bias" in node.params:
        store_param(graph, node, "bias", np.rint(graph.params[node.params["bias"]].astype(np.float64) * s))
    d = _v_init_denominator(float(op.v_init)) or 1
    theta = float(op.v_th) * (
        graph.params[neuron.params["v_th"]].astype(np.float64) if "v_th" in neuron.params else np.float64(1.0)
    )
    theta_int = np.maximum(np.rint(theta * s / d) * d, d)  # at least one grid step, v_init·v_th integral
    if "v_th" in neuron.params:
        store_param(graph, neuron, "v_th", theta_int)
        neuron.op = dataclasses.replace(op, v_th=1.0)
    else:
        neuron.op = dataclasses.replace(op, v_th=float(theta_int))
    return {
        "scale": s,
        "max_weight_error": float(np.abs(w_int / s - w).max()),
        "max_threshold_error": float(np.abs(theta_int / s - theta).max()),
    }
