"""d2e-calibrate: surrogate-to-spike calibration with adaptive threshold scaling.

A direct-coded SNN's thresholds were tuned, by surrogate-gradient training, for the smooth
analog drive of direct coding.  Under event input each layer sees a different drive (in
bursts of whole weights, noisier for rate coding, front-loaded for phase coding, one pulse
per input for TTFS), so its neurons fire more or less than they did, and the error
compounds layer by layer.

For every spiking layer of the source network in graph order (input encoders and neurons
read by their membrane are left alone; a progress bar counts layers), on the first
``samples`` calibration inputs (no labels needed), read and simulated one calibration batch at a
time (per-channel sums merged over the batches: memory is one batch's activations, whatever
``samples`` is):

1. the teacher (the direct-coded graph d2e-encode kept) gives, per channel c, the activity
   a_d[c] of that layer under direct coding (spikes per neuron and step);
2. under event input, with the layers before it already calibrated, the channel's activity
   is a monotonic (non-increasing) function ``a_e[c](k)`` of a factor k on its threshold; the
   pass fits that map on log2 k in [−``range-log2``, +``range-log2``] with ``steps``
   simulations per layer (all channels at once: a channel depends only on its own
   threshold and on the layers before it);
3. the threshold becomes v_th[c]·k[c] (adaptive threshold scaling), where k[c]
   * ``objective=rate`` (default): solves ``a_e[c](k)`` = a_d[c] by bisection, so each channel
     keeps its firing rate and the layer its firing distribution;
   * ``objective=counts``: minimises, over a grid that includes k = 1, the squared
     difference of each neuron's spike count sample by sample (the per-sample response,
     not just its average).
   A channel that cannot reach its target within the range gets the bound.  With
   ``per-channel=false`` one k per layer matches the layer's mean.

The neurons' output scale is left alone: a spike still carries the weight the next layer
was trained for; only how often it comes changes.
Changes: the neurons' effective ``v_th`` (per channel: a parameter ``<node>.v_th``).
Preserves: the structure and every other parameter.  Reports per layer the direct-coded
rate, the event rate before and after, and the geometric-mean factor.
Requires: d2e-encode earlier in the pipeline (it keeps the teacher), calibration inputs and
a simulator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector, require_neurons, set_neuron_vector
from snnc.passes._samples import channel_sums, leading_batches
from snnc.passes.d2e_encode import network_neurons, teacher_of, timesteps_of


class Objective(enum.Enum):
    RATE = "rate"  # match each channel's mean firing rate (its firing distribution over the data)
    COUNTS = "counts"  # match each neuron's spike count sample by sample (least squares)


@register_pass
@dataclass(frozen=True)
class D2ECalibrate(Pass):
    name: ClassVar[str] = "d2e-calibrate"
    objective: Objective = Objective.RATE
    samples: int = 256
    steps: int = 12
    range_log2: float = 4.0
    per_channel: bool = True

    def option_problems(self) -> list[str]:
        if self.samples < 1 or self.steps < 1 or not self.range_log2 > 0:
            return [f"samples={self.samples} and steps={self.steps} must be >= 1, "
                    f"range-log2={self.range_log2} must be > 0"]
        return []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        teacher = teacher_of(graph, self.name)
        data = ctx.require_calibration(self.name)
        sim = ctx.require_simulator(self.name)
        require_neurons(graph, self.name)
        in_teacher = {n.name for n in teacher.nodes}
        layers = [n for n in network_neurons(graph) if n.name in in_teacher]
        timesteps = timesteps_of(ctx, graph)
        # the simulator's own batches: a rate encoder draws its noise per batch, so these are the
        # numbers one run_snn over the whole sample gives
        batch = getattr(sim, "batch_size", data.batch_size)
        stream = _Stream(sim, data.x, min(self.samples, len(data.x)), batch, timesteps)
        if stream.samples == 0:
            raise PassError("d2e-calibrate: the calibration data is empty")
        names = [n.name for n in layers]
        direct = stream.channel_means(teacher, names)
        before = stream.channel_means(graph, names)
        report: dict[str, dict[str, float]] = {}
        with ctx.track(self.name, len(layers)) as bar:
            for neuron in layers:
                search = _ThresholdSearch(self, graph, neuron, stream)
                target = direct[neuron.name] / search.out_scale
                if self.objective is Objective.RATE:
                    log_k = search.match_rates(target)
                else:
                    log_k = search.match_counts(teacher)
                reached = search.rates_at(log_k)  # also leaves the threshold at the chosen factor
                report[neuron.name] = {
                    "direct_rate": float(target.mean()),
                    "event_rate_before": float((before[neuron.name] / search.out_scale).mean()),
                    "event_rate_after": float(reached.mean()),
                    "threshold_factor": float(np.exp2(np.mean(log_k))),
                }
                bar.advance()
        graph.infer_types()
        ctx.results[self.name] = {"objective": self.objective.value, "samples": stream.samples, "layers": report}


class _Stream:
    """The first ``samples`` calibration inputs, simulated one batch at a time."""

    def __init__(self, sim, x, samples: int, batch_size: int, timesteps: int):
        self.sim, self.x, self.samples = sim, x, samples
        self.batch_size, self.timesteps = batch_size, timesteps

    def batches(self):
        return leading_batches(self.x, self.samples, self.batch_size)

    def recorded(self, graph: Graph, xb: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """The neurons' mean output over time on one batch."""
        return self.sim.run_snn(graph, xb, self.timesteps, record=names).recorded

    def channel_means(self, graph: Graph, names: list[str]) -> dict[str, np.ndarray]:
        """Per neuron, the per-channel mean of its output over the samples and positions."""
        sums: dict[str, np.ndarray] = {}
        counts = dict.fromkeys(names, 0)
        for xb in self.batches():
            for name, a in self.recorded(graph, xb, names).items():
                part, k = channel_sums(a)
                sums[name] = sums[name] + part if name in sums else part
                counts[name] += k
        return {name: sums[name] / counts[name] for name in names}


class _ThresholdSearch:
    """The threshold search of one neuron layer: sets v_th = base·2^log_k and simulates."""

    def __init__(self, opts: D2ECalibrate, graph: Graph, neuron: Node, stream: _Stream):
        self.opts, self.graph, self.neuron, self.stream = opts, graph, neuron, stream
        self.base = neuron_vector(graph, neuron, "v_th")
        self.out_scale = neuron_vector(graph, neuron, "out_scale")

    def _set(self, log_k: np.ndarray) -> None:
        """Thresholds base·2^log_k (one factor per layer unless per-channel)."""
        if not self.opts.per_channel:
            log_k = np.full_like(log_k, log_k.mean())
        set_neuron_vector(self.graph, self.neuron, "v_th", self.base * np.exp2(log_k))

    def rates_at(self, log_k: np.ndarray) -> np.ndarray:
        """Per-channel firing rate (spikes per neuron and step) with thresholds base·2^log_k."""
        self._set(log_k)
        return self.stream.channel_means(self.graph, [self.neuron.name])[self.neuron.name] / self.out_scale

    def match_rates(self, target: np.ndarray) -> np.ndarray:
        """Bisection on log2 k: the rate does not increase with the threshold."""
        if not self.opts.per_channel:
            target = np.full_like(target, target.mean())
        lo = np.full_like(self.base, -self.opts.range_log2)
        hi = np.full_like(self.base, self.opts.range_log2)
        for _ in range(self.opts.steps):
            mid = (lo + hi) / 2
            rate = self.rates_at(mid)
            if not self.opts.per_channel:
                rate = np.full_like(rate, rate.mean())
            too_active = rate > target
            lo = np.where(too_active, mid, lo)
            hi = np.where(too_active, hi, mid)
        return (lo + hi) / 2

    def match_counts(self, teacher: Graph) -> np.ndarray:
        """Grid search on log2 k for the least per-channel squared difference of the outputs from
        the teacher's, sample by sample.  The grid does not depend on the data, so the batches are
        the outer loop: the teacher runs once per batch and every grid point is scored on it."""
        points = 2 * (self.opts.steps // 2) + 1  # odd: k = 1 (log_k = 0) is a candidate
        grid = np.linspace(-self.opts.range_log2, self.opts.range_log2, points)
        name = self.neuron.name
        err = np.zeros((points, len(self.base)))
        count = 0
        for xb in self.stream.batches():
            direct = self.stream.recorded(teacher, xb, [name])[name]
            for i, log_k in enumerate(grid):
                self._set(np.full_like(self.base, log_k))
                part, k = channel_sums((self.stream.recorded(self.graph, xb, [name])[name] - direct) ** 2)
                err[i] += part
            count += k
        err /= max(count, 1)
        if not self.opts.per_channel:
            err = np.repeat(err.mean(axis=1, keepdims=True), len(self.base), axis=1)
        # the first grid point with the least error (strictly better ones replace it, as a scan would)
        return grid[np.argmin(err, axis=0)]
