"""phase-coding: single-spike phase coding with threshold shift and base manipulation
(Hwang & Kung 2024, "One-Spike SNN"; encoding as in their SpikedAttention code).

Every ``neuron`` becomes a ``phase_neuron`` (snnc/ir/ops_phase.py) with the same threshold θ and
output scale: it integrates one window of K = ``window`` steps (0: K = ctx.timesteps) and sends at most one spike in the
next, at offset k for the value θ·B^(−k).  Layers are pipelined: a neuron's integration window
is the window in which its input spikes arrive (the first neuron reads the direct-coded input in
window 0), so a network with L neuron layers runs for (L + 1)·K steps; the graph attribute
``timesteps`` is set to that (the driver must simulate that many steps; ctx.timesteps is ignored).

* threshold shift: a value fires at the level nearest to it (midpoint thresholds), not the next
  lower one;
* base manipulation: B ∈ (1, 2] trades resolution (small B) against range (B^(−(K−1))).  With
  ``base = 0`` B is searched over 1.05, 1.10, …, 2.0: the one minimising the summed per-layer error
  Σ_l mean((relu(I_l) − q_B(I_l))²)/θ_l² on the calibration data (ANN-mode currents; a layer-wise
  proxy for the output error);
* decoding: a neuron's integration weights its input at offset k by B^(−k); a layer's bias, which
  a synaptic op adds at every step, moves into the phase neuron (added once per window); the
  first layer's direct-coded current is the same at every step and is sampled once
  (``constant_input``); a ``phase_decode`` before the readout decodes the output layer.

* max pooling: gated ``spike_maxpool`` → ``phase_maxpool`` (the earliest spike of a window is
  the largest value, and passes alone).

Changes: neurons → phase neurons, spike_maxpool → phase_maxpool, the biases of spike-reading
layers move into the phase neuron / decoder after them, a phase_decode before the readout, graph
timesteps.  Preserves: ANN mode computes the phase-quantised network (each activation rounded to
the nearest level θ·B^(−k), 0 below the last level), and the time-domain run decodes to exactly
that (differential test).
Requires: lower-neurons (thresholds), calibration data for the base search.  Unsupported (an
error says so): operands arriving in different windows (residual shortcuts would need delays),
burst neurons, a bias separated from its neuron by pooling.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseDecode, PhaseMaxPool2d, PhaseNeuron, phase_levels_midpoint
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector, require_neurons
from snnc.passes._samples import MAX_VALUES_PER_CHANNEL, channel_values, first_samples, subsample

BASES = tuple(round(1.0 + 0.05 * i, 2) for i in range(1, 21))  # 1.05 … 2.0


def phase_quantise(a: np.ndarray, base: float, window: int) -> np.ndarray:
    """What a phase neuron's spike stands for, for normalised inputs a = I/θ (top level 1)."""
    a = np.asarray(a, dtype=np.float64)
    mid = phase_levels_midpoint(base)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.ceil(np.log(mid / a) / np.log(base) - 1e-12)
    k = np.where(a > 0, np.maximum(k, 0), window)
    return np.where(k < window, base ** -np.minimum(k, window), 0.0)


@register_pass
@dataclass(frozen=True)
class PhaseCoding(Pass):
    name: ClassVar[str] = "phase-coding"
    base: float = 0.0  # 0: search
    window: int = 0  # 0: ctx.timesteps
    batches: int = 4

    def option_problems(self) -> list[str]:
        problems = []
        if self.window < 0:
            problems.append(f"window={self.window} must be >= 1, or 0 for the run's T")
        if self.base != 0.0 and not 1.0 < self.base <= 2.0:
            problems.append(f"base={self.base} must be in (1, 2], or 0 to search")
        if self.batches < 1:
            problems.append(f"batches={self.batches} must be >= 1")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if self.window == 0:  # the window is the context's T
            dataclasses.replace(self, window=ctx.timesteps).apply(ctx, graph)
            return
        layers = require_neurons(graph, self.name)
        for n in layers:
            if isinstance(n.op, O.Neuron) and n.op.max_spikes > 1:
                raise UnsupportedError(f"phase-coding: neuron %{n.name} sends bursts; phase neurons send one spike")
        base = self.base or self._search_base(ctx, graph, layers)
        arrive = self._rewrite(graph, base)
        last = self._decode(graph, base, arrive)
        self._check_constants(graph, arrive)
        total = (last + 1) * self.window
        graph.attrs = dataclasses.replace(graph.attrs, timesteps=total)
        graph.drop_unused_params()
        graph.infer_types()
        ctx.results[self.name] = {"base": base, "window": self.window, "timesteps": total, "layers": last}
        ctx.note(f"phase-coding: base {base}, window {self.window}: simulate {total} steps (graph timesteps)")

    def _search_base(self, ctx: PassContext, graph: Graph, layers: list[Node]) -> float:
        sim = ctx.require_simulator(self.name)
        x, _ = first_samples(ctx, self.name, self.batches)
        currents = sim.run_ann(graph, x, record=sorted({n.inputs[0] for n in layers}))
        rows = []
        for n in layers:
            theta = neuron_vector(graph, n, "v_th")
            rows.append(subsample(channel_values(currents[n.inputs[0]]) / theta[:, None], MAX_VALUES_PER_CHANNEL,
                                  ctx.seed))
        errors = {}
        for b in BASES:
            errors[b] = sum(float(np.mean((np.clip(r, 0, 1) - phase_quantise(r, b, self.window)) ** 2)) for r in rows)
        best = min(errors, key=lambda b: errors[b])
        ctx.results[f"{self.name}-search"] = {str(b): e for b, e in errors.items()}
        return best

    def _rewrite(self, graph: Graph, base: float) -> dict[str, int | None]:
        """Replace the neurons and max pools; returns the window each value's events arrive in
        (None: constant over time: the direct-coded input and what is computed from it alone)."""
        arrive: dict[str, int | None] = {name: None for name, _ in graph.inputs}
        for node in list(graph.nodes):
            timed = {w for w in (arrive[v] for v in node.inputs) if w is not None}
            if len(timed) > 1:
                raise UnsupportedError(
                    f"phase-coding: the operands of {node.op.name} %{node.name} arrive in windows {sorted(timed)}; "
                    "a residual shortcut across layers would need delays"
                )
            window = timed.pop() if timed else None
            if isinstance(node.op, O.Neuron):
                start = 0 if window is None else window
                params = {r: k for r, k in node.params.items() if r in ("v_th", "out_scale")}
                node.op = PhaseNeuron(base=base, window=self.window, start=start * self.window, v_th=node.op.v_th,
                                      out_scale=node.op.out_scale, constant_input=window is None)
                node.params = params
                if window is not None:
                    _take_bias(graph, node)
                arrive[node.name] = start + 1
                continue
            if isinstance(node.op, O.SpikeMaxPool2d):
                op = node.op
                node.op = PhaseMaxPool2d(kernel=op.kernel, stride=op.stride, padding=op.padding,
                                         ceil_mode=op.ceil_mode, window=self.window,
                                         start=(window or 0) * self.window)
            arrive[node.name] = window
        return arrive

    def _decode(self, graph: Graph, base: float, arrive: dict[str, int | None]) -> int:
        readouts = [n for n in graph.nodes if isinstance(n.op, O.Readout)]
        if len(readouts) != 1:
            raise PassError(f"phase-coding needs exactly one readout, found {len(readouts)}; run lower-neurons")
        readout = readouts[0]
        value = readout.inputs[0]
        window = arrive[value]
        if window is None:
            raise PassError("phase-coding: the readout does not depend on any neuron")
        total = (window + 1) * self.window
        node = Node(graph.fresh_name(f"{value}_decode"),
                    PhaseDecode(base=base, window=self.window, start=window * self.window, total=total), (value,))
        graph.nodes.insert(graph.nodes.index(readout), node)
        readout.inputs = (node.name,)
        arrive[node.name] = window
        _take_bias(graph, node)
        return window

    @staticmethod
    def _check_constants(graph: Graph, arrive: dict[str, int | None]) -> None:
        """A bias left in a layer that reads phase spikes would be counted at every step of a window."""
        for node in graph.nodes:
            if arrive.get(node.inputs[0] if node.inputs else "") is None:
                continue
            if node.op.synaptic and node.op.declares_param("bias") and "bias" in node.params:
                raise UnsupportedError(
                    f"phase-coding: the bias of {node.op.name} %{node.name} reaches a phase neuron through other "
                    "ops; only a layer that feeds a neuron (or the readout) directly can have a bias"
                )


def _take_bias(graph: Graph, node: Node) -> None:
    """Move the bias of the conv / linear / scale feeding ``node`` (and nothing else) into ``node``."""
    src = graph.producer(node.inputs[0])
    if src is None or not (src.op.synaptic and src.op.declares_param("bias")) or "bias" not in src.params:
        return
    if graph.only_user(src.name) is not node:
        return
    node.params["bias"] = src.params.pop("bias")
