"""prune-spikes: channels that never fire on the calibration data are removed."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import (
    SIM,
    context,
    digits_model,
    digits_split,
    graph_from_text,
    ir,
    logits,
    rel_diff,
    run,
    uniform_inputs,
)

from snnc.errors import PassError
from snnc.ir import print_graph

NET = """
graph @p(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[4,4,4]
  %p = spike_maxpool(%n) : spike[4,2,2]
  %f = flatten(%p) : spike[16]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %n2 = neuron(%l) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[5]
  %o = linear(%n2) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""

EXPECTED = """
graph @p(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[3,4,4]
  %p = spike_maxpool(%n) : spike[3,2,2]
  %f = flatten(%p) : spike[12]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %n2 = neuron(%l) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[3]
  %o = linear(%n2) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def _net():
    return graph_from_text(NET, params={
        "c.bias": [2.0, -100.0, 2.0, 2.0],  # channel 1 never reaches threshold
        "l.bias": [2.0, -100.0, 2.0, -100.0, 2.0],  # neurons 1 and 3 neither; the others always do
        "n.v_th": [0.5, 0.6, 0.7, 0.8],
        "n.out_scale": [0.5, 0.6, 0.7, 0.8],
    })


def test_golden_and_exact_on_calibration_data() -> None:
    g = _net()
    x = uniform_inputs((2, 4, 4), 64)
    ctx = context(x, timesteps=6)
    out = run("prune-spikes", g, ctx)
    assert print_graph(out) == ir(EXPECTED)
    np.testing.assert_array_equal(out.params["n.v_th"], np.float32([0.5, 0.7, 0.8]))
    np.testing.assert_array_equal(out.params["c.weight"], g.params["c.weight"][[0, 2, 3]])
    cols = np.r_[0:4, 8:16]  # channel 1 was flattened to columns 4..7
    np.testing.assert_array_equal(out.params["l.weight"], g.params["l.weight"][[0, 2, 4]][:, cols])
    np.testing.assert_array_equal(out.params["o.weight"], g.params["o.weight"][:, [0, 2, 4]])
    res = ctx.results["prune-spikes"]
    assert res["removed_channels"] == {"n": 1, "n2": 2}
    assert res["removed_neurons"] == 16 + 2
    assert res["silent_neurons"] >= 18
    assert rel_diff(logits(g, x, 6), logits(out, x, 6)) < 1e-5


def test_digits_cnn_keeps_its_predictions() -> None:
    """Differential on the trained CNN: whatever is pruned never fired on the calibration data, so the
    SNN's logits on that data are unchanged, and held-out predictions agree."""
    xtr, ytr = digits_split("train")
    xte, _ = digits_split("test")
    ctx = context(xtr[:512], ytr[:512], timesteps=4, batch_size=128)
    snn = run("canonicalize,fold-bn,calibrate,lower-neurons,fold-thresholds", digits_model("cnn"), ctx)
    out = run("prune-spikes", snn, ctx)
    assert rel_diff(logits(snn, xtr[:512], 4), logits(out, xtr[:512], 4)) < 1e-4
    agree = (SIM.run_snn(snn, xte, 4).predictions == SIM.run_snn(out, xte, 4).predictions).mean()
    assert agree >= 0.99
    assert "removed_neurons" in ctx.results["prune-spikes"]


def test_branches_are_left_whole() -> None:
    """A neuron whose spikes reach a residual add is not pruned (its channels are shared)."""
    text = """
    graph @r(%x: analog[3]) {
      %l = linear(%x) params {weight = "w", bias = "b"} : analog[3]
      %n = neuron(%l) {v_init = 0.5} : spike[3]
      %l2 = linear(%n) params {weight = "w2"} : analog[3]
      %a = add(%l2, %n) : analog[3]
      %readout = readout(%a) : analog[3]
      output %readout
    }
    """
    g = graph_from_text(text, params={"b": [0.5, -100.0, 0.5]})
    ctx = context(uniform_inputs((3,), 16))
    out = run("prune-spikes", g, ctx)
    assert print_graph(out) == print_graph(g)
    assert ctx.results["prune-spikes"]["removed_neurons"] == 0


def test_needs_neurons() -> None:
    g = graph_from_text("""
    graph @a(%x: analog[4]) {
      %l = linear(%x) params {weight = "w"} : analog[2]
      output %l
    }
    """)
    with pytest.raises(PassError, match="needs spiking neurons"):
        run("prune-spikes", g, context(uniform_inputs((4,), 4)))
