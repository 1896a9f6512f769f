"""loihi-quantize: the graph in Loihi's integer units (netx weights, 17-bit thresholds, 13-bit biases,
graded input levels), its error report, bias correction and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import context, graph_from_text, ir, run, uniform_inputs

from snnc.ir import ops as O
from snnc.ir import print_graph
from snnc.pass_manager import PipelineFailure

NET = """
graph @q(%x: analog[2]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[2]
  %l = linear(%e) params {weight = "l.weight", bias = "l.bias"} : analog[2]
  %n = neuron(%l) {reset = "hard"} : spike[2]
  %o = linear(%n) params {weight = "o.weight"} : analog[2]
  %r = readout(%o) : analog[2]
  output %r
}
"""
PARAMS = {
    "l.weight": np.array([[0.5, -0.25], [1.0, 0.127]]),
    "l.bias": np.array([0.1, -0.05]),
    "o.weight": np.array([[1.0, -1.0], [0.5, 0.25]]),
}
# Q = 64 (the largest power of two with 64 * max|x| <= 127); l: one mantissa step = 1/127 of the largest
# weight, w_int = 2 * round(127 w) (even, netx form), unit = (1/254) / 64, vth = 1 / unit = 16256,
# bias = round(b / unit); o reads spikes: unit = 1/254, decoded by the scale before the readout.
EXPECTED = """
graph @q(%x: analog[2]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[2]
  %e_levels = scale(%e) {factor = 64.0} : analog[2]
  %l = linear(%e_levels) params {weight = "l.weight", bias = "l.bias"} : analog[2]
  %n = neuron(%l) {model = "lif", v_th = 16256.0, reset = "hard", strict = true} : spike[2]
  %o = linear(%n) params {weight = "o.weight"} : analog[2]
  %o_unit = scale(%o) {factor = 0.003937007874015748} : analog[2]
  %r = readout(%o_unit) : analog[2]
  output %r
}
"""


def _quantised(pipeline: str = "loihi-legalize,loihi-quantize{bias-correction=false}"):
    g = graph_from_text(NET, params=PARAMS)
    x = uniform_inputs((2,), 16)
    x[0, 0] = 1.0
    ctx = context(x, np.zeros(16, dtype=np.int64), timesteps=4)
    return run(pipeline, g, ctx), ctx


def test_golden() -> None:
    out, ctx = _quantised()
    assert print_graph(out) == ir(EXPECTED)
    np.testing.assert_array_equal(out.params["l.weight"], [[128, -64], [254, 32]])
    np.testing.assert_array_equal(out.params["l.bias"], [1626, -813])
    np.testing.assert_array_equal(out.params["o.weight"], [[254, -254], [128, 64]])
    rep = ctx.results["loihi-quantize"]
    assert rep["input"] == {"scheme": "direct", "levels": 64.0, "message_bits": 8, "max_abs_x": 1.0}
    layer = rep["layers"]["l"]
    assert layer["vth_mant"] == 16256 and layer["hw_weight_bits"] == 8
    # the largest weight error is half a mantissa step: 0.5 / 127 of the largest |w| = 1
    assert layer["weight"]["max_abs"] <= 0.5 / 127 + 1e-9 and layer["weight"]["clipped"] == 0
    assert rep["accuracy"]["samples"] == 16
    assert out.node("e").op.bits == 8


def test_integer_units_on_a_random_network() -> None:
    """Every weight an even integer in [-256, 254], thresholds and biases integers; the error report
    bounds each weight's move by half a grid step."""
    text = """
    graph @r(%x: analog[3,6,6]) attributes {timesteps = 4} {
      %e = encode(%x) : analog[3,6,6]
      %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[8,6,6]
      %n = neuron(%c) {reset = "hard", v_th = 0.8} : spike[8,6,6]
      %f = flatten(%n) : spike[288]
      %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[16]
      %n2 = neuron(%l) {model = "lif", beta = 0.9, reset = "hard", v_th = 0.3} : spike[16]
      %o = linear(%n2) params {weight = "o.weight", bias = "o.bias"} : analog[4]
      %r = readout(%o) : analog[4]
      output %r
    }
    """
    g = graph_from_text(text, seed=4)
    ctx = context(uniform_inputs((3, 6, 6), 32), timesteps=4)
    out = run("loihi-legalize,loihi-quantize", g, ctx)
    for name in ("c", "l", "o"):
        node = out.node(name)
        w = out.params[node.params["weight"]]
        assert np.all(w == np.rint(w)) and np.all(w % 2 == 0) and w.min() >= -256 and w.max() <= 254
        b = out.params[node.params["bias"]]
        assert np.all(b == np.rint(b)) and np.abs(b).max() <= 4095
        report = ctx.results["loihi-quantize"]["layers"][name]
        assert report["weight"]["max_abs"] <= report["unit"] * (1 + 1e-6) * (
            1.0 if name != "c" else ctx.results["loihi-quantize"]["input"]["levels"])
    n2 = out.node("n2").op
    assert isinstance(n2, O.Neuron)
    assert n2.v_th == round(n2.v_th) and n2.beta == 1 - 410 / 4096  # dv = round(4096 * 0.1) = 410


def test_bias_correction_removes_the_mean_current_error() -> None:
    """With bias correction the first layer's mean input current over the calibration data moves by
    at most the rounding of its bias; without it, by ΔW · E[x]."""
    text = """
    graph @b(%x: analog[64]) attributes {timesteps = 2} {
      %e = encode(%x) : analog[64]
      %l = linear(%e) params {weight = "l.weight", bias = "l.bias"} : analog[32]
      %n = neuron(%l) {reset = "hard"} : spike[32]
      %r = readout(%n) : analog[32]
      output %r
    }
    """
    g = graph_from_text(text, seed=5)
    x = uniform_inputs((64,), 128, seed=6)
    errors = {}
    for bc in ("true", "false"):
        ctx = context(x, timesteps=2)
        out = run(f"loihi-legalize,loihi-quantize{{bias-correction={bc}}}", g, ctx)
        rep = ctx.results["loihi-quantize"]
        unit, levels = rep["layers"]["l"]["unit"], rep["input"]["levels"]
        q = out.node("l")
        i_q = (np.rint(levels * x) @ out.params[q.params["weight"]].T + out.params[q.params["bias"]]) * unit
        i_f = x @ g.params["l.weight"].T + g.params["l.bias"]
        errors[bc] = np.abs((i_q - i_f).mean(axis=0)).max()
    assert errors["true"] <= unit * 0.6 < errors["false"], errors


def test_refuses_a_graph_loihi_legalize_has_not_seen() -> None:
    text = """
    graph @m(%x: spike[1,2,2]) attributes {timesteps = 2} {
      %m = spike_maxpool(%x) : spike[1,1,1]
      %f = flatten(%m) : spike[1]
      %l = linear(%f) params {weight = "w"} : analog[1]
      %r = readout(%l) : analog[1]
      output %r
    }
    """
    g = graph_from_text(text)
    with pytest.raises(PipelineFailure, match=r"loihi-quantize: run loihi-legalize first: 1 problem in 1 node, "
                                              r"1 reason:\n  no Loihi equivalent \(1 node\):\n    spike_maxpool %m"):
        run("loihi-quantize", g, context(uniform_inputs((1, 2, 2), 4)))


def test_refuses_to_quantise_twice() -> None:
    out, ctx = _quantised()
    with pytest.raises(PipelineFailure, match=r"graph @q is already quantised \(scale %e_levels\)"):
        run("loihi-quantize", out, ctx)


def test_readout_unit_keeps_the_integrators_sum_within_its_voltage_range() -> None:
    """The readout integrates T steps of its input in a voltage of +-(2^17 - 1) graph units; with the full
    8-bit weight range this net's sum (64 neurons firing every step into weights near the largest, T = 16)
    would pass it and the chip's integrator would fire and reset.  The pass gives the readout a coarser unit
    until the calibration peak, with the headroom, fits; the chip then computes the quantised graph's logits."""
    from snnc.backends.loihi.lower import lower
    from snnc.backends.loihi.passes.loihi_quantize import READOUT_LIMIT
    from snnc.backends.loihi.target import run_net
    from snnc.backends.torch.simulator import TorchSimulator

    text = """
    graph @ro(%x: analog[8]) attributes {timesteps = 16} {
      %e = encode(%x) : analog[8]
      %l = linear(%e) params {weight = "l.weight"} : analog[64]
      %n = neuron(%l) {reset = "hard"} : spike[64]
      %o = linear(%n) params {weight = "o.weight"} : analog[3]
      %r = readout(%o) : analog[3]
      output %r
    }
    """
    rng = np.random.default_rng(8)
    params = {"l.weight": rng.uniform(0.2, 0.4, (64, 8)), "o.weight": rng.uniform(0.6, 1.0, (3, 64))}
    g = graph_from_text(text, params=params)
    x = rng.uniform(0.5, 1.0, (16, 8)).astype(np.float32)
    ctx = context(x, timesteps=16)
    q = run("loihi-legalize,loihi-quantize", g, ctx)
    rep = ctx.results["loihi-quantize"]["layers"]["o"]
    shrink = rep["readout_range_shrink"]
    assert shrink >= 1 and rep["readout_peak_sum"] * 2.0**shrink > READOUT_LIMIT  # the full range would not fit
    assert rep["readout_peak_sum"] * 2.0 <= READOUT_LIMIT  # the default headroom of 2
    levels = ctx.results["loihi-quantize"]["input"]["levels"]
    chip = run_net(lower(q), x, 16)
    want = TorchSimulator().run_snn(q, (np.rint(levels * x) / levels).astype(np.float32), 16)
    assert not chip.readout_fired
    np.testing.assert_allclose(chip.logits, want.logits, rtol=1e-6)


@pytest.mark.parametrize("bias_correction", ["true", "false"])
def test_reported_float_accuracy_is_the_float_graphs(bias_correction: str) -> None:
    """The float SNN's calibration accuracy comes from the run that measures the mean inputs (with bias
    correction) or a run of its own: either way it is the legalised graph's accuracy on those samples."""
    g = graph_from_text(NET, params=PARAMS)
    rng = np.random.default_rng(2)
    x = uniform_inputs((2,), 24, seed=3)
    y = rng.integers(0, 2, 24)
    ctx = context(x, y, timesteps=4)
    legal = run("loihi-legalize", g, ctx)
    assert ctx.simulator is not None
    want = float((ctx.simulator.run_snn(legal, x, 4).predictions == y).mean())
    ctx = context(x, y, timesteps=4)
    run(f"loihi-legalize,loihi-quantize{{bias-correction={bias_correction}}}", g, ctx)
    acc = ctx.results["loihi-quantize"]["accuracy"]
    assert acc["float_snn"] == want and 0.0 < want < 1.0
