"""d2e-calibrate: surrogate-to-spike calibration with adaptive threshold scaling.

A direct-coded SNN's thresholds were tuned, by surrogate-gradient training, for the analog
drive of direct coding.  Under event input each layer sees a different drive (noisier for
rate coding, front-loaded for phase coding, one pulse per input for TTFS), so its neurons
fire more or less than they did, and the error compounds layer by layer.

For every neuron layer in graph order (a progress bar counts them), on the first
``samples`` calibration inputs:

1. the teacher (the direct-coded graph kept by d2e-encode) gives each channel's firing
   rate r_d[c] (spikes per neuron and step, over samples, positions and steps);
2. under event input, with the layers before it already calibrated, the channel's rate is a
   monotonic (non-increasing) function r_e[c](k) of a factor k that scales its threshold;
   the pass fits that map by bisection on log2 k in [−``range-log2``, +``range-log2``]
   (``iterations`` simulations, all channels of the layer at once, since a channel's rate
   depends only on its own threshold and on the layers before it);
3. the threshold becomes v_th[c]·k[c] with r_e[c](k[c]) = r_d[c] (adaptive threshold
   scaling), so the layer keeps the teacher's firing distribution.  A channel that cannot
   reach its target within the range gets the bound.  With ``per-channel=false`` one k per
   layer matches the layer's mean rate.

The neurons' output scale is left alone: a spike still carries the weight the next layer
was trained for, only how often it comes changes.
Changes: the neurons' effective ``v_th`` (per channel: a parameter ``<node>.v_th``).
Preserves: the structure and every other parameter.  Reports per layer the teacher's rate,
the event rate before and after, and the mean factor.
Requires: d2e-encode earlier in the pipeline (it keeps the teacher), calibration inputs
(labels not needed) and a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from snnc.passes._conversion import channel_mean, neuron_vector, require_neurons, set_neuron_vector
from snnc.passes.d2e_encode import teacher_of, timesteps_of

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class D2ECalibrate(Pass):
    name: ClassVar[str] = "d2e-calibrate"
    samples: int = 256
    iterations: int = 12
    range_log2: float = 4.0
    per_channel: bool = True
    objective: str = "rate"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if self.samples < 1 or self.iterations < 1 or self.range_log2 <= 0:
            raise PassError(
                f"d2e-calibrate: samples={self.samples}, iterations={self.iterations} must be >= 1 "
                f"and range-log2={self.range_log2} > 0"
            )
        teacher = teacher_of(graph, self.name)
        data = ctx.require_calibration(self.name)
        sim = ctx.require_simulator(self.name)
        layers = require_neurons(graph, self.name)
        timesteps = timesteps_of(ctx, graph)
        x = np.asarray(data.x[: self.samples], dtype=np.float32)
        names = [n.name for n in layers]
        direct = sim.run_snn(teacher, x, timesteps, record=names).recorded
        before = sim.run_snn(graph, x, timesteps, record=names).recorded
        report: dict[str, dict[str, float]] = {}
        with ctx.track(self.name, len(layers)) as bar:
            for neuron in layers:
                target = self._rates(graph, neuron, direct[neuron.name])
                if self.objective == "mse":
                    k, reached = self._fit_mse(graph, neuron, x, timesteps, sim, direct[neuron.name])
                else:
                    k, reached = self._fit(graph, neuron, x, timesteps, sim, target)
                report[neuron.name] = {
                    "direct_rate": float(target.mean()),
                    "event_rate_before": float(self._rates(graph, neuron, before[neuron.name]).mean()),
                    "event_rate_after": float(reached.mean()),
                    "threshold_factor": float(np.exp(np.mean(np.log(k)))),
                }
                bar.advance()
        graph.infer_types()
        ctx.results[self.name] = {"samples": len(x), "layers": report}

    def _rates(self, graph: Graph, neuron: Node, recorded: np.ndarray) -> np.ndarray:
        """Per-channel firing rate (spikes per neuron and step) from a recorded mean output."""
        rate = channel_mean(recorded) / neuron_vector(graph, neuron, "out_scale")
        return rate if self.per_channel else np.full_like(rate, rate.mean())

    def _fit(self, graph, neuron, x, timesteps, sim, target) -> tuple[np.ndarray, np.ndarray]:
        """Bisection on log2 k per channel; leaves the threshold at v_th·k and returns (k, rates)."""
        base = neuron_vector(graph, neuron, "v_th")
        lo = np.full_like(base, -self.range_log2)
        hi = np.full_like(base, self.range_log2)
        for _ in range(self.iterations):
            mid = (lo + hi) / 2
            rate = self._rate_at(graph, neuron, base, mid, x, timesteps, sim)
            too_active = rate > target
            lo = np.where(too_active, mid, lo)
            hi = np.where(too_active, hi, mid)
        log_k = (lo + hi) / 2
        rate = self._rate_at(graph, neuron, base, log_k, x, timesteps, sim)
        return np.exp2(log_k), rate

    def _fit_mse(self, graph, neuron, x, timesteps, sim, direct) -> tuple[np.ndarray, np.ndarray]:
        base = neuron_vector(graph, neuron, "v_th")
        grid = np.linspace(-self.range_log2, self.range_log2, 4 * int(self.range_log2) * 2 + 1)
        best = np.full_like(base, np.inf)
        best_k = np.zeros_like(base)
        for lk in grid:
            set_neuron_vector(graph, neuron, "v_th", base * np.exp2(lk))
            run = sim.run_snn(graph, x, timesteps, record=[neuron.name])
            err = channel_mean((run.recorded[neuron.name] - direct) ** 2)
            better = err < best - 1e-12
            best = np.where(better, err, best)
            best_k = np.where(better, lk, best_k)
        set_neuron_vector(graph, neuron, "v_th", base * np.exp2(best_k))
        run = sim.run_snn(graph, x, timesteps, record=[neuron.name])
        return np.exp2(best_k), self._rates(graph, neuron, run.recorded[neuron.name])

    def _rate_at(self, graph, neuron, base, log_k, x, timesteps, sim) -> np.ndarray:
        if not self.per_channel:
            log_k = np.full_like(log_k, log_k.mean())
        set_neuron_vector(graph, neuron, "v_th", base * np.exp2(log_k))
        run = sim.run_snn(graph, x, timesteps, record=[neuron.name])
        return self._rates(graph, neuron, run.recorded[neuron.name])
