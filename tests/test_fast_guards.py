"""The guards of the fast pipeline's lossy passes: compress-spikes checks its ratios together (the
per-layer divergences do not add) and adaptive-timesteps keeps the exit rule's calibration
accuracy within max-loss of running to T."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, run, uniform_inputs

from snnc.passes._neurons import scale_threshold
from snnc.passes._sensitivity import sym_kl
from snnc.passes.adaptive_timesteps import _guard, _simulate_exit

NET = """
graph @s(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[4,4,4]
  %c2 = conv2d(%n) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[4,4,4]
  %n1 = neuron(%c2) {v_th = 0.6, v_init = 0.5, out_scale = 0.6, max_spikes = 3} : burst<3>[4,4,4]
  %f = flatten(%n1) : burst<3>[64]
  %l = linear(%f) params {weight = "l.weight"} : analog[5]
  %n2 = neuron(%l) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[5]
  %o = linear(%n2) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


@pytest.mark.parametrize("budget", [0.95, 1.0, 2.0])
def test_compress_spikes_joint_divergence_is_within_budget(budget: float) -> None:
    """Whatever the per-layer programme picked, the ratios applied together diverge from the ANN by
    at most max(1, budget) × the baseline on the probe batch (measured again here)."""
    g = graph_from_text(NET, params={"n.v_th": [0.3, 0.5, 0.8, 1.0], "n.out_scale": [0.3, 0.5, 0.8, 1.0]})
    x = uniform_inputs((2, 4, 4), 64, seed=2)
    ctx = context(x, timesteps=4)
    run(f"compress-spikes{{budget={budget},ratios=[1.0;1.5;2.0;4.0],batches=1}}", g, ctx)
    res = ctx.results["compress-spikes"]
    probe = x[:64]
    reference = SIM.run_ann(g, probe)["readout"]
    scaled = g.copy()
    for name, r in res["ratios"].items():
        scale_threshold(scaled, scaled.node(name), np.array(r))
    kl = sym_kl(SIM.run_snn(scaled, probe, 4).logits, reference)
    assert kl == pytest.approx(res["joint_sym_kl"], rel=1e-9, abs=1e-12)
    assert kl <= max(1.0, budget) * res["baseline_sym_kl"] * (1 + 1e-9)


def _scores(seed: int):
    """Per-step scores and correctness of 200 samples over 8 steps: confident samples are right
    more often, and late steps more often than early ones."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.uniform(0.3, 1.0, (8, 200)), axis=0)
    correct = rng.uniform(size=(8, 200)) < (0.3 + 0.6 * scores * np.linspace(0.6, 1.0, 8)[:, None])
    return scores, correct


@pytest.mark.parametrize("max_loss", [0.0, 0.02, 0.1])
def test_exit_guard_meets_max_loss_with_the_most_exits(max_loss: float) -> None:
    scores, correct = _scores(1)
    tau = np.full(8, 0.7)
    raised = _guard(tau, scores, correct, max_loss)
    _, accuracy = _simulate_exit(scores, correct, raised)
    assert accuracy >= correct[-1].mean() - max_loss - 1e-12
    assert np.all(raised >= tau - 1e-12) and np.all(raised <= 1.0)
    alpha = (1 - raised[0]) / (1 - tau[0])  # the chosen α; the next grid point up fails
    if alpha < 1.0 - 1e-9:
        looser = 1.0 - min(alpha + 0.02, 1.0) * (1.0 - tau)
        assert _simulate_exit(scores, correct, looser)[1] < correct[-1].mean() - max_loss


def test_exit_guard_keeps_thresholds_that_lose_nothing() -> None:
    scores, correct = _scores(2)
    tau = np.full(8, 0.7)
    assert np.array_equal(_guard(tau, scores, correct, 1.0), tau)
