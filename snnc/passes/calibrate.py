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

from snnc.errors import PassError
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._samples import MAX_VALUES_PER_CHANNEL, channel_values, subsample
from snnc.passes._thresholds import mse_thresholds, positive_or


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
            rows, maxima, count = self._collect(ctx, graph, data, sim, names)
            for name in names:
                stats[name] = self._stats(rows.get(name), maxima[name], count, ctx)
        graph.analyses.put(Calibration(stats=stats))
        ctx.results[self.name] = {
            "method": self.method.value,
            "per_channel": self.per_channel,
            "samples": stats[names[0]].samples if names else 0,
            "thresholds": {k: [float(v) for v in s.threshold] for k, s in stats.items()},
        }

    def _collect(self, ctx, graph, data, sim, names):
        """Running maxima (all methods) and the activation values (percentile / mse)."""
        keep = self.method is not CalibrationMethod.MAX
        total = len(data.x) if self.batches <= 0 else min(len(data.x), self.batches * data.batch_size)
        nbatches = -(-total // data.batch_size)
        maxima: dict[str, np.ndarray] = {}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        count = 0
        with ctx.track("calibrate", nbatches) as bar:
            for xb, _ in data.batches(nbatches):
                out = sim.run_ann(graph, np.asarray(xb, dtype=np.float32), record=names)
                count += len(xb)
                for name in names:
                    rows = channel_values(out[name])
                    m = rows.max(axis=1)
                    maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
                    if keep:
                        parts[name].append(rows)
                bar.advance()
        if count == 0:
            raise PassError("calibrate: the calibration data is empty")
        rows = {n: np.concatenate(p, axis=1) for n, p in parts.items()} if keep else {}
        return rows, maxima, count

    def _stats(self, rows, maximum, count, ctx) -> ActivationStats:
        maximum = np.asarray(maximum, dtype=np.float64)
        if self.method is CalibrationMethod.MAX:
            theta = maximum if self.per_channel else np.array([maximum.max()])
        else:
            if not self.per_channel:
                rows = rows.reshape(1, -1)
            rows = subsample(rows, MAX_VALUES_PER_CHANNEL, ctx.seed)
            if self.method is CalibrationMethod.PERCENTILE:
                theta = np.array([_positive_percentile(r, self.percentile) for r in rows])
            else:
                theta = mse_thresholds(rows, ctx.timesteps, self.shift)
                theta = np.where(rows.max(axis=1) > 0, theta, 0.0)
        fallback = float(theta.max()) if np.any(theta > 0) else 1.0
        return ActivationStats(threshold=positive_or(theta, fallback), maximum=maximum, method=self.method,
                               per_channel=self.per_channel, samples=count)


def _positive_percentile(row: np.ndarray, q: float) -> float:
    pos = row[row > 0]
    return float(np.percentile(pos, q)) if pos.size else 0.0
