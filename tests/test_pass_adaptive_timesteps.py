"""adaptive-timesteps (IAT): an early-exit readout with per-step thresholds from calibration data."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError
from snnc.ir import ops as O
from snnc.ir import print_graph
from snnc.pass_manager import CalibrationData, PassContext
from snnc.passes.adaptive_timesteps import exit_scores

NET = """
graph @t(%x: analog[6]) {
  %l = linear(%x) params {weight = "w", bias = "b"} : analog[8]
  %n = neuron(%l) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[8]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def _labelled(n: int = 128):
    g = graph_from_text(NET)
    x = uniform_inputs((6,), n)
    y = SIM.run_ann(g, x)["readout"].argmax(axis=1)  # labels the network mostly gets right
    return g, x, y


def test_golden_and_thresholds() -> None:
    g, x, y = _labelled()
    ctx = context(x, y, timesteps=6, batch_size=64)
    out = run("adaptive-timesteps{batches=2}", g, ctx)
    expected = ir(NET).replace("%readout = readout(%o) :", '%readout = readout(%o) {exit_rule = "entropy"} params '
                               '{exit_thresholds = "readout.exit_thresholds"} :')
    assert print_graph(out) == expected
    # τ_t = 0.6 + 0.4·exp(min u − u_t), u_t = mean (1 − score) of the samples right at step t
    u = []
    for t in range(1, 7):
        lg = SIM.run_snn(g, x, t).logits
        right = lg.argmax(axis=1) == y
        u.append(float(np.mean(1 - exit_scores(O.ExitRule.ENTROPY, lg)[right])))
    tau = 0.6 + 0.4 * np.exp(min(u) - np.array(u))
    np.testing.assert_allclose(out.params["readout.exit_thresholds"], tau, rtol=1e-5)
    assert tau.max() == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["entropy", "confidence"])
def test_digits_early_exit(metric: str) -> None:
    """Differential: the simulator's steps on the calibration data equal the pass's own prediction
    (the numpy twin of the exit rule), samples exit early, and held-out accuracy stays within a point."""
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("test")
    ctx = context(xtr[:512], ytr[:512], timesteps=8, batch_size=128)
    snn = run("canonicalize,fold-bn,calibrate,lower-neurons,fold-thresholds", digits_model("mlp"), ctx)
    out = run(f"adaptive-timesteps{{metric={metric}}}", snn, ctx)
    res = ctx.results["adaptive-timesteps"]
    calib = SIM.run_snn(out, xtr[:512], 8)
    assert calib.steps_used.mean() == pytest.approx(res["calibration_mean_steps"])
    assert float((calib.predictions == ytr[:512]).mean()) == pytest.approx(res["calibration_accuracy"])
    full, early = SIM.run_snn(snn, xte, 8), SIM.run_snn(out, xte, 8)
    assert early.steps_used.mean() < 7.0
    assert float((early.predictions == yte).mean()) >= float((full.predictions == yte).mean()) - 0.01


def test_errors() -> None:
    g, x, _ = _labelled(8)
    with pytest.raises(PassError, match="needs labelled calibration data"):
        run("adaptive-timesteps", g, context(x))
    with pytest.raises(PassError, match="metric must be entropy or confidence"):
        run("adaptive-timesteps{metric=none}", g, context(x, np.zeros(8, dtype=np.int64)))
    bare = graph_from_text("""
    graph @b(%x: analog[4]) {
      %l = linear(%x) params {weight = "w"} : analog[2]
      output %l
    }
    """)
    ctx = PassContext(calibration=CalibrationData(uniform_inputs((4,), 4), np.zeros(4, dtype=np.int64)), simulator=SIM)
    with pytest.raises(PassError, match="needs exactly one readout, found 0; run lower-neurons"):
        run("adaptive-timesteps", bare, ctx)
