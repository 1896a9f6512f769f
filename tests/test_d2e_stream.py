"""d2e-encode and d2e-calibrate read the calibration data a batch at a time (issue 13): their peak
memory does not grow with the number of samples, and the streamed result is the whole-array one."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conversion_util import graph_from_text, run, uniform_inputs

from snnc.backends.torch.simulator import TorchSimulator
from snnc.data import open_data
from snnc.pass_manager import CalibrationData, PassContext
from snnc.passes.d2e_encode import InputSummary

SIM = TorchSimulator(batch_size=64)

NET = """
graph @d(%x: analog[1,16,16]) {
  %enc = encode(%x) : analog[1,16,16]
  %c = conv2d(%enc) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[8,16,16]
  %n = neuron(%c) {model = "lif", reset = "hard", beta = 0.9} : spike[8,16,16]
  %f = flatten(%n) : spike[2048]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %r = readout(%l) : analog[5]
  output %r
}
"""


def _context(tmp_path, n: int) -> PassContext:
    """``n`` samples in an uncompressed .npz, opened lazily (memory-mapped) as `snnc compile` does."""
    path = tmp_path / f"calib{n}.npz"
    np.savez(path, x=uniform_inputs((1, 16, 16), n))
    data = open_data(path)
    return PassContext(calibration=CalibrationData(data.x, None, batch_size=64), simulator=SIM, timesteps=4)


def _peak(pipeline: str, ctx: PassContext) -> int:
    """Peak traced memory of the pipeline, the smaller of two runs.  tracemalloc counts everything the
    process allocates meanwhile: what happens once per process (lazy imports, the simulator's caches,
    torch's first-call set-up) lands in whichever run comes first, which depends on the other tests in
    the process, and pytest-xdist's own thread allocates whenever the controller sends work.  Neither
    repeats in both runs; memory that grows with the samples does."""
    return min(_traced_peak(pipeline, ctx) for _ in range(2))


def _traced_peak(pipeline: str, ctx: PassContext) -> int:
    g = graph_from_text(NET)
    tracemalloc.start()
    try:
        run(pipeline, g, ctx)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_encode_memory_does_not_grow_with_the_data(tmp_path):
    small = _peak("d2e-encode{scheme=ttfs}", _context(tmp_path, 256))
    large = _peak("d2e-encode{scheme=ttfs}", _context(tmp_path, 4096))  # the whole set alone: 4 MiB
    assert large < 1.3 * small + (1 << 20), (small, large)


def test_calibrate_memory_does_not_grow_with_the_samples(tmp_path):
    ctx = _context(tmp_path, 1024)
    small = _peak("d2e-encode,d2e-calibrate{samples=128,steps=1}", ctx)
    # 8x the samples; recording the layer for all of them would hold 1024 x 8 KiB = 8 MiB
    large = _peak("d2e-encode,d2e-calibrate{samples=1024,steps=1}", ctx)
    assert large < 1.3 * small + (1 << 20), (small, large)
    assert ctx.results["d2e-calibrate"]["samples"] == 1024


@pytest.mark.parametrize("objective", ["rate", "counts"])
def test_streamed_calibration_matches_one_batch(tmp_path, objective):
    """Batches of 64 or one batch of all 256 samples: the merged means differ only by float
    rounding, which can move a threshold by at most a search step where a channel sits exactly on
    its target (measured: identical)."""
    x = uniform_inputs((1, 16, 16), 256)
    out = []
    for batch in (64, 256):
        ctx = PassContext(calibration=CalibrationData(x, None), simulator=TorchSimulator(batch_size=batch),
                          timesteps=4)
        out.append(run(f"d2e-encode,d2e-calibrate{{objective={objective},samples=256,steps=8,range-log2=4}}",
                       graph_from_text(NET), ctx))
    step = 2 * 8 / 2**8 if objective == "rate" else 8 / 8  # two final bisection intervals; one grid step
    log_ratio = np.abs(np.log2(out[0].params["n.v_th"] / out[1].params["n.v_th"]))
    assert log_ratio.max() <= step + 1e-9


def test_input_summary_is_the_whole_array_one():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0.2, 0.5, (300, 1, 4, 4)), 0).astype(np.float32)
    s = InputSummary.of(x, 64)
    assert (s.lo, s.hi) == (0.0, float(x.max())) and s.positive == int((x > 0).sum())
    assert s.total == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-12)
    assert s.ttfs_gain(4) == pytest.approx(4 * x.mean(dtype=np.float64) / (x > 0).mean(), rel=1e-12)
