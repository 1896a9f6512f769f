"""loihi-quantize reads its calibration samples one batch at a time (issue 14): its peak memory does not
grow with the number of samples it uses, and batching changes nothing but float summation order (the
same integers, biases within one mantissa step, the same accuracy)."""

from __future__ import annotations

import tracemalloc

import numpy as np
from conversion_util import context, graph_from_text, run

from snnc.passes._samples import sample_batches

T = 4
NET = """
graph @q(%x: analog[2,12,12]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[2,12,12]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[16,12,12]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[16,12,12]
  %c2 = conv2d(%n) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[16,12,12]
  %n2 = neuron(%c2) {reset = "hard", v_th = 0.4} : spike[16,12,12]
  %f = flatten(%n2) : spike[2304]
  %o = linear(%f) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, (n, 2, 12, 12)).astype(np.float32), rng.integers(0, 3, n)


def _quantise(n: int, batch_size: int = 64):
    x, y = _data(n)
    legal = run("loihi-legalize", graph_from_text(NET, seed=1), context(x, y, timesteps=T))
    ctx = context(x, y, timesteps=T, batch_size=batch_size)
    tracemalloc.start()
    try:
        out = run(f"loihi-quantize{{samples={n}}}", legal, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out, ctx.results["loihi-quantize"]


def test_peak_memory_does_not_grow_with_the_samples() -> None:
    small, _, r_small = _quantise(128)
    large, _, r_large = _quantise(1024)  # 8x the samples: reading them whole held 8x the recorded inputs
    assert r_small["accuracy"]["samples"] == 128 and r_large["accuracy"]["samples"] == 1024
    # the samples alone are 1.2 MB at 1024; what the pass records for them (the mean input of each layer
    # per sample) is 9 MB more
    assert large < 1.3 * small + (1 << 20), (small, large)


def test_batches_change_only_the_summation_order() -> None:
    _, a, ra = _quantise(256, batch_size=32)
    _, b, rb = _quantise(256, batch_size=256)
    for key in a.params:
        if key.endswith("bias"):  # the bias correction sums the mean input in another order
            assert np.abs(a.params[key] - b.params[key]).max() <= 1.0, key
        else:
            np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert [n.op for n in a.nodes] == [n.op for n in b.nodes]  # thresholds, input levels
    assert ra["accuracy"] == rb["accuracy"] and ra["input"] == rb["input"]


def test_sample_batches_stop_at_the_samples() -> None:
    x, y = _data(100)
    ctx = context(x, y, batch_size=32)
    sizes = [len(xb) for xb, _ in sample_batches(ctx, "p", 70)]
    assert sizes == [32, 32, 6]
    assert [len(xb) for xb, _ in sample_batches(ctx, "p", 0)] == [32, 32, 32, 4]
    got = np.concatenate([xb for xb, _ in sample_batches(ctx, "p", 70)])
    np.testing.assert_array_equal(got, x[:70])
