"""tvm-quantize: the spiking layers of a converted network in integer units, for the int8 kernels.

For every linear / conv2d / conv1d whose only user is an integrate-and-fire neuron and whose input
is 0/1 (or burst) spikes with output scale 1 (after ``fold-thresholds``), the layer is rewritten
in the integer units of its int8 kernel (``snnc/backends/tvm/format.md``, "int8 layers"):

* weights ``W_int = round(W · s)`` with one scale per output channel
  ``s[c] = (2^(weight-bits − 1) − 1) / max|W[c, :]|`` (the largest |w| of each channel's row
  reaches the end of the range);
* channel c's neuron works on ``s[c] ×`` the float current: threshold ``round(θ[c] · s[c])``,
  rounded to a multiple of the denominator of ``v_init`` so that ``v[0] = v_init · v_th`` stays an
  integer (v_init = 0.5: even thresholds), a per-channel parameter; bias ``round(b[c] · s[c])``.

One scale per channel costs the kernels nothing (thresholds are per channel anyway) and matters
after ``fold-thresholds``: it folds each channel's threshold into its weight row, so rows differ
by orders of magnitude (the synthetic 2048-wide MLP: largest |w| 123, standard deviation 0.56);
one scale per layer left most weights at 0 or ±1 and the thresholds a grid step or two, and its
hidden layers fired at 1.6 % and 0.5 % instead of 21 %.  Spikes are unchanged in meaning (0/1, or
0..B), so each layer's scales are local: the next layer reads the same spike trains.  A scale is
capped so that no threshold or bias passes MAX_UNITS.

A residual join (an ``add`` whose only user is such a neuron) is quantised as one layer: each of
its operands is a linear / conv2d / conv1d that reads spikes and feeds only the add, or a ``scale``
of spikes (the identity shortcut with its per-channel rescaling) that feeds only the add; all of
them share each channel's scale ``s[c] = (2^(weight-bits − 1) − 1) / m[c]``, m[c] the largest |w|
of channel c's rows of the weighted operands, so that their currents add in the same integer
units: weights and biases rounded to ``s[c] ×`` their values, a scale operand's multipliers
``factor · scale[c]`` too (int32 in the kernels, not int8 weights: they do not set s[c] unless
``s[c] ×`` the multiplier would pass MAX_MULTIPLIER), the neuron's threshold as above.

The layer that reads the analog input (direct coding, computed once per batch), pooling layers
and the readout layer stay float32 (the logits keep their units; the int8 kernels read the float
layers' spikes as they are).  Integer values are stored as float32, exact
while a layer's current and membrane stay below 2^24 in magnitude (127 · fan-in per step), so
the torch simulator runs the quantised graph exactly as the int8 kernels do: a differential test
compares them spike for spike.

Stores :class:`TvmQuantization` (the integer layers, joins and their operands included) in the graph's analyses, which the tvm
target reads to lower those layers to int8; the result is in ``ctx.results["tvm-quantize"]`` too
(per layer: the range of its scales, max weight and threshold error in float units).  Lossy: a
weight of channel c moves by at most ``1 / (2 s[c])`` (``max|W[c, :]| / (2 (2^(bits−1) − 1))``;
a join's multipliers too), a threshold by at most ``d / (2 s[c])`` (d the denominator of
``v_init``), a bias by ``1 / (2 s[c])``.  Layers that do not meet the conditions are left as they were
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
# the largest integer multiplier of a residual join's scale operand, and threshold or bias (the
# sums stay far below 2^24, where float32, and so the torch simulator, would round them)
MAX_MULTIPLIER = 1 << 15
MAX_UNITS = 1 << 20


@dataclass(frozen=True, kw_only=True)
class TvmQuantization:
    """What tvm-quantize left in integer units: the nodes that lower to int8 layers (weighted
    nodes, and residual joins with their operands: ``add`` and ``scale`` nodes)."""

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
        report: dict[str, Any] = {"weight_bits": self.weight_bits, "layers": {}, "joins": {}, "skipped": {}}
        qmax = (1 << (self.weight_bits - 1)) - 1
        for node in list(graph.nodes):
            if not isinstance(node.op, O.Add):
                continue
            reason = _join_problem(graph, node)
            if reason:
                report["skipped"][node.name] = reason
                continue
            operands = [graph.producer(v) for v in node.inputs]
            report["joins"][node.name] = _quantize_join(graph, node, [p for p in operands if p is not None], qmax)
            done += [node.name, *(p.name for p in operands if p is not None)]
        for node in list(graph.nodes):
            if not isinstance(node.op, WEIGHTED) or node.name in done:
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
        ctx.note(_summary(graph, done, report))


def _summary(graph: Graph, done: list[str], report: dict[str, Any]) -> str:
    """One line for the compile's notes: how many weighted layers went int8, and why the others
    did not, grouped by reason (a few names each)."""
    weighted = [n.name for n in graph.nodes if isinstance(n.op, WEIGHTED)]
    int8 = [name for name in weighted if name in done]
    by_reason: dict[str, list[str]] = {}
    for name in weighted:
        if name not in done:
            by_reason.setdefault(report["skipped"].get(name, "?"), []).append(name)
    n_joins = len(report["joins"])
    joins = f", {n_joins} residual join{'s' if n_joins != 1 else ''}" if n_joins else ""
    line = f"tvm-quantize: {len(int8)} of {len(weighted)} weighted layers in int8{joins}"
    if by_reason:
        parts = []
        for reason, names in by_reason.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{shown}: {reason}")
        line += "; float32: " + "; ".join(parts)
    return line


def _v_init_denominator(v_init: float) -> int | None:
    frac = Fraction(v_init).limit_denominator(MAX_DENOMINATOR)
    return frac.denominator if abs(float(frac) - v_init) < 1e-9 else None


def _why_not(graph: Graph, node: Node) -> str:
    """Why ``node`` cannot be an int8 layer ('' when it can)."""
    neuron = graph.only_user(node.name)
    if neuron is None or not isinstance(neuron.op, O.Neuron):
        if isinstance(neuron, Node) and isinstance(neuron.op, O.Add):
            return f"feeds the residual join %{neuron.name}, which could not be quantised (see it)"
        return "not followed by a neuron it alone feeds (the readout layer stays float32)"
    return _neuron_problem(neuron) or _spikes_problem(graph, node.inputs[0]) or _zero_weights(graph, node)


def _neuron_problem(neuron: Node) -> str:
    """Why the integer units cannot hold ``neuron`` ('' when they can)."""
    op = neuron.op
    assert isinstance(op, O.Neuron)
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
    return ""


def _spikes_problem(graph: Graph, value: str) -> str:
    """Why ``value`` is not spikes of output scale 1 straight from a neuron ('' when it is)."""
    if graph.value_type(value).signal is Signal.ANALOG:
        return "reads analog values (the input layer stays float32)"
    src = graph.producer(value)
    while src is not None and (src.op.shape_only or isinstance(src.op, O.SpikeMaxPool2d)):
        src = graph.producer(src.inputs[0])
    if src is None or not isinstance(src.op, O.Neuron):
        return "its spikes do not come straight from a neuron (through flatten or gated max pooling)"
    if src.op.out_scale != 1.0 or "out_scale" in src.params:
        return "its input spikes carry an output scale (run fold-thresholds)"
    return ""


def _zero_weights(graph: Graph, node: Node) -> str:
    return "" if np.any(graph.params[node.params["weight"]]) else "all weights are zero"


def _join_problem(graph: Graph, add: Node) -> str:
    """Why the residual join ``add`` cannot be an int8 layer with its operands ('' when it can)."""
    neuron = graph.only_user(add.name)
    if neuron is None or not isinstance(neuron.op, O.Neuron):
        return "not followed by a neuron it alone feeds"
    problem = _neuron_problem(neuron)
    if problem:
        return problem
    if len(set(add.inputs)) != len(add.inputs):
        return "adds a value to itself"
    for value in add.inputs:
        src = graph.producer(value)
        if src is None or not isinstance(src.op, (*WEIGHTED, O.Scale)):
            return f"operand %{value} is not a linear/conv or a scale of spikes"
        if graph.only_user(src.name) is not add:
            return f"operand %{value} has other users"
        problem = _spikes_problem(graph, src.inputs[0])
        if problem:
            return f"operand %{value}: {problem}"
    if not any(_magnitude(graph, graph.producer(v)) for v in add.inputs):  # type: ignore[arg-type]
        return "all its operands' weights are zero"
    return ""


def _magnitude(graph: Graph, node: Node) -> float:
    """The largest |weight| of a weighted operand, |factor · scale[c]| of a scale operand."""
    return float(_row_magnitudes(graph, node).max(initial=0.0))


def _row_magnitudes(graph: Graph, node: Node) -> np.ndarray:
    """Per output channel: the largest |weight| of a weighted node's row (PyTorch layouts:
    output channels first), or |factor · scale[c]| of a scale node."""
    if isinstance(node.op, O.Scale):
        return np.abs(_multipliers(graph, node))
    w = np.abs(np.asarray(graph.params[node.params["weight"]], dtype=np.float64))
    return w.reshape(w.shape[0], -1).max(axis=1)


def _multipliers(graph: Graph, node: Node) -> np.ndarray:
    """A scale node's per-channel multipliers ``factor · scale[c]``."""
    channels = graph.value_type(node.inputs[0]).channels
    scale = graph.params[node.params["scale"]] if "scale" in node.params else np.ones(channels)
    op: O.Scale = node.op  # type: ignore[assignment]
    return op.factor * np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (channels,))


def _thresholds(graph: Graph, neuron: Node) -> np.ndarray:
    """``neuron``'s threshold per channel, in float units."""
    op: O.Neuron = neuron.op  # type: ignore[assignment]
    channels = graph.value_type(neuron.name).channels
    per_channel = graph.params[neuron.params["v_th"]] if "v_th" in neuron.params else np.ones(channels)
    return float(op.v_th) * np.broadcast_to(np.asarray(per_channel, dtype=np.float64).reshape(-1), (channels,))


def _channel_scales(graph: Graph, operands: list[Node], neuron: Node, qmax: int) -> np.ndarray:
    """The integer scale of each output channel (module docstring): its weighted operands'
    largest |w| reaches qmax; a scale operand's multipliers follow unless they would pass
    MAX_MULTIPLIER; no threshold or bias beyond MAX_UNITS."""
    weighted = [_row_magnitudes(graph, n) for n in operands if not isinstance(n.op, O.Scale)]
    multipliers = [_row_magnitudes(graph, n) for n in operands if isinstance(n.op, O.Scale)]
    m = np.max(weighted, axis=0) if weighted else np.zeros_like(multipliers[0])
    if not np.any(m > 0):  # a join of scales (or zero weights): the multipliers set it
        m = np.max(multipliers, axis=0)
    # a channel without weights keeps the layer's grid (its current is its bias alone)
    scales = qmax / np.where(m > 0, m, m.max())
    for rows in multipliers:
        scales = np.minimum(scales, MAX_MULTIPLIER / np.maximum(rows, 1e-300))
    bias = sum(
        (np.abs(graph.params[n.params["bias"]].astype(np.float64)).reshape(-1) for n in operands if "bias" in n.params),
        np.zeros_like(scales),
    )
    return np.minimum(scales, MAX_UNITS / np.maximum(np.maximum(_thresholds(graph, neuron), bias), 1e-300))


def _quantize(graph: Graph, node: Node, neuron: Node, qmax: int) -> dict[str, Any]:
    """Rewrite ``node`` and ``neuron`` in the layer's integer units; return the layer's report."""
    s = _channel_scales(graph, [node], neuron, qmax)
    return _report(s, {node.name: _integer_operand(graph, node, s, qmax)}) | _integer_neuron(graph, neuron, s)


def _quantize_join(graph: Graph, add: Node, operands: list[Node], qmax: int) -> dict[str, Any]:
    """Rewrite the join ``add``'s operands and its neuron in one integer scale per channel; its
    report.  The scales are set by the weighted operands (int8 weights); a scale operand's
    multipliers are int32 in the kernels, so they are rounded to the same grid without taking
    part in it (resnet18's shortcut multipliers reach 27 times its conv weights: counting them
    would leave the conv 5 weight steps), up to MAX_MULTIPLIER."""
    neuron = graph.only_user(add.name)
    assert neuron is not None
    s = _channel_scales(graph, operands, neuron, qmax)
    errors = {node.name: _integer_operand(graph, node, s, qmax) for node in operands}
    return _report(s, errors) | {"operands": list(errors)} | _integer_neuron(graph, neuron, s)


def _report(s: np.ndarray, errors: dict[str, float]) -> dict[str, Any]:
    return {"scale_range": [float(s.min()), float(s.max())], "max_weight_error": max(errors.values())}


def _integer_operand(graph: Graph, node: Node, s: np.ndarray, qmax: int) -> float:
    """``node``'s weights (or scale multipliers) and bias times its output channels' scales
    ``s``, rounded; the largest weight error in float units."""
    if isinstance(node.op, O.Scale):
        w = _multipliers(graph, node)
        role = "scale"
        node.op = dataclasses.replace(node.op, factor=1.0)
    else:
        w = graph.params[node.params["weight"]].astype(np.float64)
        role = "weight"
    rows = s.reshape(-1, *([1] * (w.ndim - 1)))
    w_int = np.rint(w * rows) if role == "scale" else np.clip(np.rint(w * rows), -qmax, qmax)
    _store(graph, node, role, w_int)
    if "bias" in node.params:
        b = graph.params[node.params["bias"]].astype(np.float64).reshape(-1)
        store_param(graph, node, "bias", np.rint(b * s))
    return float(np.abs(w_int / rows - w).max())


def _store(graph: Graph, node: Node, role: str, value: np.ndarray) -> None:
    """:func:`store_param`, creating the parameter where ``node`` had none (a scale by its factor
    alone, a neuron with one scalar threshold)."""
    if role not in node.params:
        node.params[role] = graph.fresh_param(f"{node.name}.{role}")
        graph.params[node.params[role]] = np.asarray(value, dtype=np.float32)
    store_param(graph, node, role, value)


def _integer_neuron(graph: Graph, neuron: Node, s: np.ndarray) -> dict[str, float]:
    """``neuron`` on ``s ×`` the float current, per channel: its threshold rounded (module
    docstring), a per-channel parameter."""
    op: O.Neuron = neuron.op  # type: ignore[assignment]
    d = _v_init_denominator(float(op.v_init)) or 1
    theta = _thresholds(graph, neuron)
    theta_int = np.maximum(np.rint(theta * s / d) * d, d)  # at least one grid step, v_init·v_th integral
    _store(graph, neuron, "v_th", theta_int)
    neuron.op = dataclasses.replace(op, v_th=1.0)
    return {"max_threshold_error": float(np.abs(theta_int / s - theta).max())}
