"""calibrate: measure a threshold for every ReLU / clip activation (an analysis).

Runs the graph in ANN mode on the calibration data of the pass context (the first
``batches`` batches; 0 = all) with a progress bar, and attaches
``graph.analyses`` gets a :class:`Calibration`: ``{activation node name: ActivationStats}``, where the
threshold θ is one value per channel (``per-channel=true``) or one per layer.

Methods (activations a of one channel, or of the whole layer):
* ``max``: θ = max a (threshold balancing, Diehl 2015 / Deng & Gu 2021);
* ``percentile``: θ = the ``percentile``-th percentile of the positive activations
  (robust normalisation, Rueckauer 2017; zeros are left out as SNN Toolbox does, so that
  a sparse channel does not get θ = 0);
* ``mse``: AdaFire's grid search at the target T = ``ctx.timesteps``: θ_i = max·(1 − 0.01 i),
  i = 0..94, argmin ‖a − q(a)‖² where q(a) = clamp(floor(T·a/θ + shift), 0, T)·θ/T is what
  an IF neuron with soft reset and initial membrane ``shift``·θ computes (``shift`` = the
  ``v-init`` lower-neurons will use).  The original code uses floor without the shift.

Constant memory, one pass: each batch's activations are folded into a per-channel
:class:`~snnc.passes._samples.ChannelHistogram` (the exact running maximum, and counts in fixed
log-spaced bins 2⁻⁷ of their value wide over [2⁻¹⁶, 2¹⁶)) and dropped, so memory is channels × 4,098
counts whatever the number of samples.  ``max`` is exact.  ``percentile`` is read off the histogram:
within a relative 2⁻⁷ (0.78 %) of numpy's exact percentile of the positive activations (those
below 2⁻¹⁶ count as zeros; 100: the exact maximum).  ``mse`` runs its grid search on the histogram, each value at
its bin's midpoint (within a relative 2⁻⁸ of the value), the grid from the exact maximum.  The
sketches are mergeable exactly (integer counts, maxima), which is how several processes
(torch.distributed, :mod:`snnc.distributed`) calibrate on their share of the batches and produce the
thresholds one process would.

A channel (or layer) that is never positive gets the layer's largest threshold (1.0 if the
whole layer is silent): it never fires on the calibration data.

Changes: nothing but ``graph.analyses`` (a ``Calibration``).  Requires: calibration data and a
simulator in the context.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc import distributed
from snnc.errors import PassError
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._samples import ChannelHistogram
from snnc.passes._thresholds import positive_or, quantise


class CalibrationMethod(enum.Enum):
    MAX = "max"
    PERCENTILE = "percentile"
    MSE = "mse"


@dataclass(frozen=True, kw_only=True)
class ActivationStats:
    """Calibration result of one activation.

    ``threshold``: θ, shape (C,) when per channel, (1,) per layer; ``maximum``: the largest
    activation seen per channel (C,); ``samples``: how many inputs were used.
    """

    threshold: np.ndarray
    maximum: np.ndarray
    method: CalibrationMethod
    per_channel: bool
    samples: int


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """What calibrate leaves in ``graph.analyses`` for lower-neurons: the statistics of every
    activation (relu / clip node name -> ActivationStats)."""

    stats: dict[str, ActivationStats]


@register_pass
@dataclass(frozen=True)
class Calibrate(Pass):
    name: ClassVar[str] = "calibrate"
    analysis: ClassVar[bool] = True
    method: CalibrationMethod = CalibrationMethod.MAX
    percentile: float = 99.99
    per_channel: bool = True
    batches: int = 0
    shift: float = 0.5

    def option_problems(self) -> list[str]:
        problems = []
        if not 0 < self.percentile <= 100:
            problems.append(f"percentile={self.percentile} must be in (0, 100]")
        if self.batches < 0:
            problems.append(f"batches={self.batches} must be >= 0 (0: all)")
        if not 0.0 <= self.shift <= 1.0:
            problems.append(f"shift={self.shift} must be in [0, 1]")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        data = ctx.require_calibration(self.name)
        sim = ctx.require_simulator(self.name)
        names = [n.name for n in graph.nodes if isinstance(n.op, (O.Relu, O.Clip))]
        stats: dict[str, ActivationStats] = {}
        if names:
            sketches = self._collect(ctx, graph, data, sim, names)
            for name in names:
                stats[name] = self._stats(sketches[name], ctx)
        graph.analyses.put(Calibration(stats=stats))
        ctx.results[self.name] = {
            "method": self.method.value,
            "per_channel": self.per_channel,
            "samples": stats[names[0]].samples if names else 0,
            "thresholds": {k: [float(v) for v in s.threshold] for k, s in stats.items()},
        }

    def _collect(self, ctx, graph, data, sim, names) -> dict[str, ChannelHistogram]:
        """One ANN pass over this process's share of the batches, each activation folded into its
        sketch as it comes (nothing kept per sample); then the sketches of all processes merged."""
        counts = self.method is not CalibrationMethod.MAX
        total = -(-len(data.x) // data.batch_size)
        if self.batches > 0:
            total = min(total, self.batches)
        sketches: dict[str, ChannelHistogram] = {}
        mine = distributed.batch_indices(total)
        with ctx.track("calibrate", len(mine)) as bar:
            for _, xb, _ in distributed.my_batches(data.x, None, data.batch_size, total):
                out = sim.run_ann(graph, np.asarray(xb, dtype=np.float32), record=names)
                for name in names:
                    a = out[name]
                    if name not in sketches:
                        sketches[name] = ChannelHistogram(a.shape[1] if a.ndim > 1 else 1, counts)
                    sketches[name].add(a)
                bar.advance()
        if distributed.active():
            sketches = self._merge(graph, names, sketches, counts)
        if not sketches or sketches[names[0]].samples == 0:
            raise PassError("calibrate: the calibration data is empty")
        return sketches

    @staticmethod
    def _merge(graph, names, sketches, counts) -> dict[str, ChannelHistogram]:
        """Exact all-reduce: maxima by max, counts and sample numbers by integer sums."""
        merged = {}
        for name in names:
            node_type = graph.node(name).type
            channels = node_type.shape[0] if node_type is not None and len(node_type.shape) else 1
            mine = sketches.get(name) or ChannelHistogram(channels, counts)
            m = ChannelHistogram(channels, counts)
            m.maximum = distributed.all_max(mine.maximum)
            m.samples = int(distributed.all_sum(np.array([mine.samples]))[0])
            if counts and mine.counts is not None:
                m.counts = distributed.all_sum(mine.counts)
            merged[name] = m
        return merged

    def _stats(self, sketch: ChannelHistogram, ctx) -> ActivationStats:
        maximum = np.maximum(sketch.maximum, 0.0) if sketch.samples else sketch.maximum
        layer = sketch if self.per_channel else sketch.layer()
        if self.method is CalibrationMethod.MAX:
            theta = maximum if self.per_channel else np.array([maximum.max()])
        elif self.method is CalibrationMethod.PERCENTILE:
            theta = layer.percentile(self.percentile)
        else:
            theta = np.array([self._mse(layer, c, ctx.timesteps) for c in range(len(layer.maximum))])
        fallback = float(theta.max()) if np.any(theta > 0) else 1.0
        return ActivationStats(threshold=positive_or(theta, fallback), maximum=sketch.maximum.astype(np.float64),
                               method=self.method, per_channel=self.per_channel, samples=sketch.samples)

    def _mse(self, sketch: ChannelHistogram, c: int, timesteps: int) -> float:
        """The grid search of ``mse`` on the histogram: every value stands at its bin's midpoint,
        weighted by the bin's count (0.0 for a channel that is never positive)."""
        top = float(sketch.maximum[c])
        if not top > 0:
            return 0.0
        values, weights = sketch.weighted_values(c)
        grid = top * (1.0 - 0.01 * np.arange(95))
        q = quantise(np.broadcast_to(values, (len(grid), len(values))), grid, timesteps, self.shift)
        errors = ((values - q) ** 2) @ weights.astype(np.float64)
        return float(grid[int(np.argmin(errors))])
