"""d2e-calibrate: per-channel threshold scaling that gives each layer back its direct-coded firing."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, digits_split, graph_from_text, ir, run, uniform_inputs
from d2e_util import digits_context, trained_mlp

from snnc.errors import PassError
from snnc.ir import print_graph
from snnc.pass_manager import PassContext
from snnc.passes._neurons import neuron_vector
from snnc.passes._samples import channel_mean
from snnc.passes.d2e_encode import DirectCodedTeacher

SOURCE = """
graph @d(%x: analog[6]) {
  %enc = encode(%x) : analog[6]
  %l = linear(%enc) params {weight = "w", bias = "b"} : analog[8]
  %n = neuron(%l) {model = "lif", reset = "hard", beta = 0.9} : spike[8]
  %o = linear(%n) params {weight = "o", bias = "c"} : analog[3]
  %m = neuron(%o) {model = "lif", reset = "none", beta = 0.9, emit = "membrane"} : analog[3]
  output %m
}
"""

# the encoder neuron and the membrane read-out keep their thresholds; %n gets one per channel
EXPECTED = """
graph @d(%x: analog[6]) attributes {timesteps = 8} {
  %enc = encode(%x) : analog[6]
  %enc_if = neuron(%enc) {v_init = 0.5} : spike[6]
  %l = linear(%enc_if) params {weight = "w", bias = "b"} : analog[8]
  %n = neuron(%l) {model = "lif", reset = "hard", beta = 0.9} params {v_th = "n.v_th"} : spike[8]
  %o = linear(%n) params {weight = "o", bias = "c"} : analog[3]
  %m = neuron(%o) {model = "lif", reset = "none", beta = 0.9, emit = "membrane"} : analog[3]
  output %m
}
"""


def _rates(graph, x, timesteps, names) -> dict[str, np.ndarray]:
    rec = SIM.run_snn(graph, x, timesteps, record=names).recorded
    return {n: channel_mean(rec[n]) / neuron_vector(graph, graph.node(n), "out_scale") for n in names}


def test_golden() -> None:
    x = uniform_inputs((6,), 128)
    x[0, 0] = 1.0
    g = graph_from_text(SOURCE, params={"b": np.full(8, 0.3)})
    out = run("d2e-encode{scheme=if},d2e-calibrate", g, context(x, timesteps=8))
    assert print_graph(out) == ir(EXPECTED)


def test_rates_come_back_to_the_direct_coded_ones() -> None:
    """Under rate coding the trained MLP's hidden layer fires differently; calibrated, each channel
    fires as it did under direct coding (within 10 % of the layer's mean rate)."""
    T = 4
    ctx = digits_context(T, labelled=False, n=256)
    x = ctx.calibration.x
    encoded = run("d2e-encode{scheme=rate}", trained_mlp(T), ctx)
    calibrated = run("d2e-calibrate", encoded, ctx)
    direct = _rates(encoded.analyses.get(DirectCodedTeacher).graph, x, T, ["lif1"])["lif1"]
    before = _rates(encoded, x, T, ["lif1"])["lif1"]
    after = _rates(calibrated, x, T, ["lif1"])["lif1"]
    err_before, err_after = np.abs(before - direct).mean(), np.abs(after - direct).mean()
    assert err_after < err_before / 2 and err_after < 0.1 * direct.mean()
    layer = ctx.results["d2e-calibrate"]["layers"]["lif1"]
    assert layer["event_rate_after"] == pytest.approx(direct.mean(), rel=0.05)
    assert layer["event_rate_before"] == pytest.approx(before.mean(), rel=1e-6)


def test_counts_objective_never_worsens_the_first_layer() -> None:
    """k = 1 is on the grid, so each channel's per-sample squared error can only drop."""
    T = 4
    ctx = digits_context(T, labelled=False, n=128)
    x = ctx.calibration.x
    encoded = run("d2e-encode{scheme=phase}", trained_mlp(T), ctx)
    calibrated = run("d2e-calibrate{objective=counts,range-log2=1,steps=8}", encoded, ctx)
    teacher = SIM.run_snn(encoded.analyses.get(DirectCodedTeacher).graph, x, T, record=["lif1"]).recorded["lif1"]

    def err(g):
        return channel_mean((SIM.run_snn(g, x, T, record=["lif1"]).recorded["lif1"] - teacher) ** 2)

    assert np.all(err(calibrated) <= err(encoded) + 1e-9)
    assert err(calibrated).mean() < err(encoded).mean()


def test_per_layer_factor() -> None:
    """per-channel=false: one scalar threshold for the layer, which brings the layer's mean rate
    back to its direct-coded one."""
    T = 4
    ctx = digits_context(T, labelled=False, n=128)
    x = ctx.calibration.x
    encoded = run("d2e-encode{scheme=rate}", trained_mlp(T), ctx)
    out = run("d2e-calibrate{per-channel=false}", encoded, ctx)
    node, before = out.node("lif1"), encoded.node("lif1")
    assert "v_th" not in node.params and "v_th" not in before.params
    assert node.op.v_th != before.op.v_th
    direct = _rates(encoded.analyses.get(DirectCodedTeacher).graph, x, T, ["lif1"])["lif1"].mean()
    assert _rates(out, x, T, ["lif1"])["lif1"].mean() == pytest.approx(direct, rel=0.05)


def test_calibration_helps_the_event_graph() -> None:
    """Under the IF encoder the calibrated MLP is at least as accurate on the train split as before."""
    T = 4
    ctx = digits_context(T, labelled=False, n=512)
    encoded = run("d2e-encode", trained_mlp(T), ctx)
    calibrated = run("d2e-calibrate", encoded, ctx)
    x, y = digits_split("train")

    def acc(g):
        return float((SIM.run_snn(g, x, T).predictions == y).mean())

    assert acc(calibrated) >= acc(encoded) - 0.005


def test_prerequisites() -> None:
    g = trained_mlp(4)
    with pytest.raises(PassError, match="needs the direct-coded source graph; run d2e-encode"):
        run("d2e-calibrate", g, digits_context(4, n=32))
    encoded = run("d2e-encode", g, digits_context(4, n=32))
    with pytest.raises(PassError, match="needs calibration data"):
        run("d2e-calibrate", encoded, PassContext(simulator=SIM, timesteps=4))
    with pytest.raises(PassError, match="steps=0 must be >= 1"):
        run("d2e-calibrate{steps=0}", encoded, digits_context(4, n=32))
