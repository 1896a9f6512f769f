"""Constant-memory calibration (issue 13): the log-binned histogram sketch against exact numpy
statistics, its exact merge, and calibrate's memory not growing with the number of samples."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conversion_util import graph_from_text, run, uniform_inputs

from snnc.passes._samples import NUM_BINS, OCTAVES, SUB_BITS, ChannelHistogram
from snnc.passes.calibrate import Calibration

BOUND = 2.0**-SUB_BITS


def _samples(kind: str, rng) -> np.ndarray:
    n = 20_000
    if kind == "exponential":
        return rng.exponential(1.0, n)
    if kind == "lognormal":  # six decades
        return rng.lognormal(0.0, 3.0, n)
    if kind == "relu":  # half zeros, as after a ReLU
        return np.maximum(rng.normal(0.0, 1.0, n), 0.0)
    if kind == "ties":
        return rng.integers(0, 5, n).astype(np.float64) * 0.25
    if kind == "few":
        return rng.uniform(0.0, 3.0, 7)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["exponential", "lognormal", "relu", "ties", "few"])
@pytest.mark.parametrize("q", [50.0, 90.0, 99.0, 99.9, 99.99, 100.0])
def test_percentile_within_the_stated_bound(kind, q):
    rng = np.random.default_rng(hash(kind) % 1000)
    values = _samples(kind, rng).astype(np.float32)
    h = ChannelHistogram(1)
    for part in np.array_split(values, 7):  # in batches, as calibration adds them
        h.add(part)
    pos = values[values >= 2.0 ** OCTAVES[0]].astype(np.float64)  # smaller values count as zeros
    exact = np.percentile(pos, q)
    got = h.percentile(q)[0]
    if q == 100.0:
        assert got == pos.max()
    elif exact < 2.0 ** OCTAVES[1]:
        assert abs(got - exact) <= BOUND * exact, (got, exact)
    assert 0 < got <= pos.max()


def test_tiny_and_huge_values_fall_in_the_end_bins():
    h = ChannelHistogram(1)
    h.add(np.array([1e-9, 2e-9, 1e6, 3e6, 0.0, -1.0], np.float32))
    assert h.counts is not None
    assert h.counts[0, 0] == 4 and h.counts[0, NUM_BINS - 1] == 2 and h.counts.sum() == 6
    assert 2.0 ** OCTAVES[1] <= h.percentile(0.0)[0] <= h.percentile(90.0)[0] <= 3e6


def test_merge_is_exact_and_order_free():
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, (64, 3, 5, 5)).astype(np.float32)
    whole, split = ChannelHistogram(3), ChannelHistogram(3)
    whole.add(a)
    for part in (a[40:], a[:13], a[13:40]):
        split.add(part)
    assert whole.counts is not None and split.counts is not None
    np.testing.assert_array_equal(whole.counts, split.counts)
    np.testing.assert_array_equal(whole.maximum, split.maximum)
    assert whole.samples == split.samples == 64
    np.testing.assert_array_equal(whole.layer().counts, whole.counts.sum(axis=0, keepdims=True))


def test_silent_channel_has_percentile_zero():
    h = ChannelHistogram(2)
    a = np.zeros((4, 2, 3), np.float32)
    a[:, 0] = 1.5
    h.add(a)
    assert h.percentile(99.0)[1] == 0.0 and h.percentile(99.0)[0] == pytest.approx(1.5, rel=BOUND)


NET = """
graph @net(%x: analog[2,8,8]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[8,8,8]
  %r = relu(%c) : analog[8,8,8]
  %f = flatten(%r) : analog[512]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  output %l
}
"""


def _peak(method: str, n: int) -> tuple[int, np.ndarray]:
    from conversion_util import context

    g = graph_from_text(NET)
    ctx = context(uniform_inputs((2, 8, 8), n), timesteps=4, batch_size=64)
    tracemalloc.start()
    try:
        out = run(f"calibrate{{method={method}}}", g, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out.analyses.get(Calibration).stats["r"].threshold


@pytest.mark.parametrize("method", ["max", "percentile", "mse"])
def test_peak_memory_does_not_grow_with_the_samples(method):
    small, _ = _peak(method, 256)
    large, theta = _peak(method, 2048)  # 8x the samples: the old collector kept all 8x
    assert large < 1.3 * small + (1 << 20), (small, large)
    assert np.all(theta > 0)
