"""compress-spikes (SSC): per-layer threshold ratios that cut spikes under a sensitivity budget."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError
from snnc.ir import print_graph

NET = """
graph @s(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[3,4,4]
  %f = flatten(%n) : spike[48]
  %l = linear(%f) params {weight = "l.weight"} : analog[5]
  %n2 = neuron(%l) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[5]
  %o = linear(%n2) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def test_golden_generous_budget() -> None:
    """A budget of 1e9 lets every layer take the ratio with the fewest spikes: thresholds and output
    scales grow together, then bias correction gives the linear a bias."""
    g = graph_from_text(NET, params={"n.v_th": [0.25, 0.5, 1.0], "n.out_scale": [0.25, 0.5, 1.0]})
    ctx = context(uniform_inputs((2, 4, 4), 64), timesteps=4)
    out = run("compress-spikes{budget=1000000000.0,ratios=[1.0;2.0;4.0;10.0]}", g, ctx)
    res = ctx.results["compress-spikes"]
    r_n, r_n2 = res["ratios"]["n"], res["ratios"]["n2"]
    expected = ir(NET).replace('params {weight = "l.weight"}', 'params {weight = "l.weight", bias = "l.bias"}')
    expected = expected.replace("v_th = 0.5, v_init = 0.5, out_scale = 0.5", f"v_th = {0.5 * r_n2!r}, v_init = 0.5, "
                                f"out_scale = {0.5 * r_n2!r}")
    assert print_graph(out) == expected
    np.testing.assert_allclose(out.params["n.v_th"], np.array([0.25, 0.5, 1.0]) * r_n, rtol=1e-6)
    np.testing.assert_allclose(out.params["n.out_scale"], np.array([0.25, 0.5, 1.0]) * r_n, rtol=1e-6)
    assert r_n > 1 and r_n2 > 1
    assert res["spikes_after_estimate"] < res["spikes_before"]


@pytest.mark.parametrize("budget", [0.95, 3.0])
def test_budget_is_respected_and_spikes_do_not_grow(budget: float) -> None:
    """Differential on held-out digits: the ratios never add spikes; the looser budget removes more of
    them, and the accuracy stays within a point of the uncompressed SNN."""
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("test")
    ctx = context(xtr[:512], ytr[:512], timesteps=8, batch_size=128)
    lowered = run("canonicalize,fold-bn,calibrate{method=mse},lower-neurons", digits_model("mlp"), ctx)
    out = run(f"compress-spikes{{budget={budget},ratios=[1.0;1.5;2.0;3.0;5.0]}}", lowered, ctx)
    before, after = SIM.run_snn(lowered, xte, 8), SIM.run_snn(out, xte, 8)
    spikes_before, spikes_after = sum(before.spikes.values()), sum(after.spikes.values())
    assert spikes_after <= spikes_before * 1.01
    if budget > 1:
        assert spikes_after < 0.9 * spikes_before
    acc_before = float((before.predictions == yte).mean())
    acc_after = float((after.predictions == yte).mean())
    assert acc_after >= acc_before - 0.01


def test_errors() -> None:
    g = graph_from_text(NET, params={"n.v_th": [0.25, 0.5, 1.0], "n.out_scale": [0.25, 0.5, 1.0]})
    ctx = context(uniform_inputs((2, 4, 4), 8))
    with pytest.raises(PassError, match=r"ratios \[2.0, 3.0\] must include 1.0"):
        run("compress-spikes{ratios=[2.0;3.0]}", g, ctx)
    with pytest.raises(PassError, match="budget=0.0 must be > 0"):
        run("compress-spikes{budget=0.0}", g, ctx)
    with pytest.raises(PassError, match="samples=-1 must be >= 0"):
        run("compress-spikes{samples=-1}", g, ctx)
