"""calibrate: thresholds per activation, an analysis that changes nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError
from snnc.ir import print_graph
from snnc.pass_manager import PassContext, PassManager
from snnc.passes._thresholds import mse_thresholds, quantise
from snnc.passes.calibrate import ActivationStats, Calibration, CalibrationMethod

NET = """
graph @net(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %r = relu(%c) : analog[3,4,4]
  %f = flatten(%r) : analog[48]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %q = clip(%l) {hi = 2.0} : analog[5]
  %o = linear(%q) params {weight = "o.weight"} : analog[3]
  output %o
}
"""


def _setup(method: str = "max", per_channel: bool = True, **opts):
    g = graph_from_text(NET)
    x = uniform_inputs((2, 4, 4), 96)
    ctx = context(x, timesteps=4, batch_size=32)
    extra = "".join(f",{k}={v}" for k, v in opts.items())
    out = run(f"calibrate{{method={method},per-channel={'true' if per_channel else 'false'}{extra}}}", g, ctx)
    acts = SIM.run_ann(g, x, record=["r", "q"])
    return g, out, ctx, acts


def test_golden_nothing_but_the_analysis_changes() -> None:
    g, out, _, _ = _setup()
    assert print_graph(out) == ir(NET)
    assert set(out.analyses.get(Calibration).stats) == {"r", "q"}
    assert all(isinstance(s, ActivationStats) for s in out.analyses.get(Calibration).stats.values())


def test_max_per_channel_and_per_layer() -> None:
    _, out, ctx, acts = _setup()
    per_channel = np.moveaxis(acts["r"], 1, 0).reshape(3, -1).max(axis=1)
    stats = out.analyses.get(Calibration).stats["r"]
    np.testing.assert_allclose(stats.threshold, per_channel, rtol=1e-6)
    np.testing.assert_allclose(stats.maximum, per_channel, rtol=1e-6)
    assert stats.samples == 96 and stats.method is CalibrationMethod.MAX
    assert ctx.results["calibrate"]["thresholds"]["r"] == pytest.approx(list(per_channel), rel=1e-6)
    _, layer, _, _ = _setup(per_channel=False)
    np.testing.assert_allclose(layer.analyses.get(Calibration).stats["r"].threshold, [per_channel.max()], rtol=1e-6)


def test_percentile_of_positive_activations() -> None:
    _, out, _, acts = _setup("percentile", percentile=90.0)
    rows = np.moveaxis(acts["r"], 1, 0).reshape(3, -1)
    expected = [np.percentile(r[r > 0], 90.0) for r in rows]
    # a histogram estimate (constant memory): within 2**-7 of the exact percentile (tests/test_calibrate_stream.py)
    np.testing.assert_allclose(out.analyses.get(Calibration).stats["r"].threshold, expected, rtol=2**-7)


def test_mse_is_the_grid_argmin() -> None:
    _, out, _, acts = _setup("mse")
    rows = np.moveaxis(acts["r"], 1, 0).reshape(3, -1).astype(np.float64)
    got = out.analyses.get(Calibration).stats["r"].threshold
    for row, theta in zip(rows, got, strict=True):
        grid = row.max() * (1 - 0.01 * np.arange(95))
        errors = [np.sum((row - quantise(row[None], np.array([t]), 4, 0.5)[0]) ** 2) for t in grid]
        assert theta == pytest.approx(grid[int(np.argmin(errors))], rel=1e-9)


def test_mse_search_with_bursts_and_silent_rows() -> None:
    rng = np.random.default_rng(1)
    rows = np.vstack([rng.exponential(1.0, 500), np.zeros(500), -rng.uniform(size=500)])
    one, four = mse_thresholds(rows, 4, 0.5, 1), mse_thresholds(rows, 4, 0.5, 4)
    assert one[1] == four[1] == one[2] == 1.0  # silent channels: any positive value
    assert four[0] <= rows[0].max() / 4 + 1e-12 < one[0] <= rows[0].max()


def test_silent_channel_gets_the_layer_threshold() -> None:
    g = graph_from_text(NET, params={"c.bias": np.array([0.0, -1e6, 0.0])})
    out = run("calibrate", g, context(uniform_inputs((2, 4, 4), 32)))
    theta = out.analyses.get(Calibration).stats["r"].threshold
    assert theta[1] == max(theta[0], theta[2]) > 0


def test_errors() -> None:
    g = graph_from_text(NET)
    with pytest.raises(PassError, match="needs calibration data; pass --calib"):
        PassManager.parse("calibrate").run(g, PassContext(simulator=SIM))
    with pytest.raises(PassError, match=r"percentile=0.0 must be in \(0, 100\]"):
        run("calibrate{percentile=0.0}", g, context(uniform_inputs((2, 4, 4), 8)))
