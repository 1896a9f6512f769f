"""adafire: per-layer burst limits from the sensitivity search; the Pareto programme."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError
from snnc.ir import print_graph
from snnc.passes._sensitivity import Choice, pareto_select, sym_kl

NET = """
graph @a(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.v_th"} : spike[3,4,4]
  %f = flatten(%n) : spike[48]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %n2 = neuron(%l) {v_th = 2.0, v_init = 0.5, out_scale = 2.0} : spike[5]
  %o = linear(%n2) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""

EXPECTED = """
graph @a(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %n = neuron(%c) {v_init = 0.5, max_spikes = 2} params {v_th = "n.v_th.1", out_scale = "n.v_th"} : burst<2>[3,4,4]
  %f = flatten(%n) : burst<2>[48]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %n2 = neuron(%l) {v_th = VTH, v_init = 0.5, max_spikes = 2, out_scale = VTH} : burst<2>[5]
  %o = linear(%n2) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def test_golden_single_choice() -> None:
    """With one candidate per layer the search is forced: every neuron becomes burst<2> with the
    threshold of the φ = 2 grid search (per channel where it was per channel; the tensor that v_th
    and out_scale shared is split, each role gets its own, both scaled once)."""
    g = graph_from_text(NET, params={"n.v_th": [0.5, 1.0, 2.0]})
    ctx = context(uniform_inputs((2, 4, 4), 64), timesteps=4)
    out = run("adafire{max-spikes=2,min-spikes=2}", g, ctx)
    vth = out.node("n2").op.v_th
    assert print_graph(out) == ir(EXPECTED).replace("VTH", repr(vth))
    assert 0 < vth < 2.0  # the top level is now 2θ: the grid starts at max/2
    assert g.params["n.v_th"].tolist() == [0.5, 1.0, 2.0]  # the input graph's tensor is untouched
    np.testing.assert_array_equal(out.params["n.v_th.1"], out.params["n.v_th"])
    assert not np.array_equal(out.params["n.v_th"], g.params["n.v_th"])
    assert ctx.results["adafire"]["max_spikes"] == {"n": 2, "n2": 2}


def _brute(layers, limit):
    best = None
    for picks in itertools.product(*[range(len(o)) for o in layers]):
        cost = sum(layers[i][p].limited for i, p in enumerate(picks))
        obj = sum(layers[i][p].objective for i, p in enumerate(picks))
        if cost <= limit and (best is None or obj < best[0]):
            best = (obj, picks)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_pareto_programme_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = [
        [Choice(float(rng.integers(1, 20)), float(rng.uniform(0, 5))) for _ in range(rng.integers(1, 5))]
        for _ in range(rng.integers(1, 5))
    ]
    limit = float(rng.uniform(0.3, 1.0) * sum(max(c.limited for c in o) for o in layers))
    picks = pareto_select(layers, limit)
    best = _brute(layers, limit)
    if best is None:
        assert picks is None
    else:
        assert picks is not None
        assert sum(layers[i][p].limited for i, p in enumerate(picks)) <= limit
        assert sum(layers[i][p].objective for i, p in enumerate(picks)) == pytest.approx(best[0])


def test_digits_mlp_t4_bursts_bring_the_snn_to_the_ann() -> None:
    """Differential: at T = 4 the search gives bursts to the layers and the SNN's divergence from the
    ANN on held-out data drops well below the binary-spike conversion's; spikes stay within budget."""
    xtr, ytr = digits_split("train")
    xte, _ = digits_split("test")
    ctx = context(xtr[:512], ytr[:512], timesteps=4, batch_size=128)
    lowered = run("canonicalize,fold-bn,calibrate{method=mse},lower-neurons", digits_model("mlp"), ctx)
    out = run("adafire", lowered, ctx)
    res = ctx.results["adafire"]
    assert res["spikes"] <= res["spikes_budget"]
    assert max(res["max_spikes"].values()) > 1
    ann = SIM.run_ann(lowered, xte)["readout"]
    kl_binary = sym_kl(SIM.run_snn(lowered, xte, 4).logits, ann)
    kl_burst = sym_kl(SIM.run_snn(out, xte, 4).logits, ann)
    assert kl_burst < 0.5 * kl_binary, (kl_binary, kl_burst)


def test_errors() -> None:
    g = graph_from_text(NET, params={"n.v_th": [0.5, 1.0, 2.0]})
    ctx = context(uniform_inputs((2, 4, 4), 8))
    with pytest.raises(PassError, match=r"need 1 <= min-spikes \(3\) <= max-spikes \(2\)"):
        run("adafire{max-spikes=2,min-spikes=3}", g, ctx)
    with pytest.raises(PassError, match=r"desired-spikes=5 must be within \[1, 4\]"):
        run("adafire{desired-spikes=5}", g, ctx)
    with pytest.raises(PassError, match=r"levels \[1, 2\] must lie in \[1, 4\] and include max-spikes \(4\)"):
        run("adafire{levels=[1;2]}", g, ctx)
    with pytest.raises(PassError, match="samples=-1 must be >= 0"):
        run("adafire{samples=-1}", g, ctx)


def test_levels_and_samples_bound_the_sweep() -> None:
    """``levels``: only those burst limits are tried and chosen; ``samples``: the sweep's probe is the
    first N calibration samples, so a probe as large as the batch is the default sweep."""
    g = graph_from_text(NET, params={"n.v_th": [0.5, 1.0, 2.0]})
    x = uniform_inputs((2, 4, 4), 64)
    ctx = context(x, timesteps=4, batch_size=32)
    run("adafire{max-spikes=4,levels=[1;4]}", g, ctx)
    assert set(ctx.results["adafire"]["max_spikes"].values()) <= {1, 4}
    outs = []
    for options in ("", ",samples=32"):
        ctx = context(x, timesteps=4, batch_size=32)
        outs.append((print_graph(run(f"adafire{{max-spikes=3{options}}}", g, ctx)), ctx.results["adafire"]))
    assert outs[0] == outs[1]
