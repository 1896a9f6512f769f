"""lower-neurons: activations become neurons with calibrated thresholds; max pooling is gated."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError, UnsupportedError
from snnc.ir import ops as O
from snnc.ir import print_graph
from snnc.passes.calibrate import ActivationStats, Calibration, CalibrationMethod
from snnc.passes.lower_neurons import LowerNeurons

NET = """
graph @net(%x: analog[1,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,4,4]
  %p = maxpool2d(%c) : analog[2,2,2]
  %r = relu(%p) : analog[2,2,2]
  %f = flatten(%r) : analog[8]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[4]
  %r2 = relu(%l) : analog[4]
  %q = clip(%r2) {hi = 2.0, levels = 4, shift = 0.25} : analog[4]
  %o = linear(%q) params {weight = "o.weight"} : analog[3]
  output %o
}
"""

EXPECTED = """
graph @net(%x: analog[1,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,4,4]
  %r = neuron(%c) {v_init = 0.5} params {v_th = "r.v_th", out_scale = "r.out_scale"} : spike[2,4,4]
  %p = spike_maxpool(%r) : spike[2,2,2]
  %f = flatten(%p) : spike[8]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[4]
  %q = neuron(%l) {v_th = 2.0, v_init = 0.25, out_scale = 2.0} : spike[4]
  %o = linear(%q) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def _stats(*theta: float) -> ActivationStats:
    t = np.array(theta)
    return ActivationStats(threshold=t, maximum=t, method=CalibrationMethod.MAX, per_channel=len(t) > 1,
                           samples=10)


def _lowered(pipeline: str = "lower-neurons"):
    g = graph_from_text(NET)
    g.analyses.put(Calibration(stats={"r": _stats(1.5, 3.0), "r2": _stats(0.75)}))
    ctx = context(uniform_inputs((1, 4, 4), 4))
    return run(pipeline, g, ctx), ctx


def test_golden() -> None:
    """relu(maxpool) is swapped to maxpool(relu) and gated; clip(relu) is one QCFS neuron (θ = hi,
    v_init = its shift); per-channel thresholds are parameters; a readout closes the graph."""
    out, _ = _lowered()
    assert print_graph(out) == ir(EXPECTED)
    np.testing.assert_array_equal(out.params["r.v_th"], [1.5, 3.0])
    np.testing.assert_array_equal(out.params["r.out_scale"], [1.5, 3.0])


def test_options_and_avg_pooling_note() -> None:
    out, ctx = _lowered("lower-neurons{model=lif,beta=0.8,reset=hard,v-init=0.0,max-spikes=3,maxpool=avg}")
    neuron = out.node("r")
    assert neuron.op.model is O.NeuronModel.LIF and neuron.op.beta == 0.8 and neuron.op.reset is O.Reset.HARD
    assert neuron.op.v_init == 0.0 and neuron.op.max_spikes == 3 and str(neuron.type) == "burst<3>[2,2,2]"
    assert isinstance(out.node("p").op, O.AvgPool2d)
    assert any("maxpool2d %p replaced by average pooling" in n for n in ctx.notes)


def test_qcfs_clip_maps_exactly_at_t_equals_l() -> None:
    """A QCFS activation (L levels, shift 0.5) fed a constant input: SNN at T = L == the ANN, exactly."""
    text = """
    graph @q(%x: analog[16]) {
      %l = linear(%x) params {weight = "w", bias = "b"} : analog[32]
      %q = clip(%l) {hi = 1.5, levels = 4} : analog[32]
      output %q
    }
    """
    g = graph_from_text(text)
    x = uniform_inputs((16,), 64)
    ann = SIM.run_ann(g, x)["q"]
    snn = run("lower-neurons", g, context(x, timesteps=4))
    got = SIM.run_snn(snn, x, 4).logits
    np.testing.assert_allclose(got, ann, rtol=0, atol=1e-6)
    assert np.unique(np.round(ann / 1.5 * 4)).size > 2  # the test exercises several levels


def test_ann_mode_is_the_source_on_its_calibration_data() -> None:
    """With max calibration θ ≥ every activation seen, so clamp(x, 0, θ) = relu(x) on that data."""
    g = digits_model("mlp")
    x, y = digits_split("test")
    out = run("canonicalize,fold-bn,calibrate,lower-neurons", g, context(x, y))
    np.testing.assert_allclose(SIM.run_ann(out, x)["readout"], SIM.run_ann(g, x)[g.outputs[0]], atol=1e-5)


def test_snn_approaches_the_ann_as_t_grows() -> None:
    g = digits_model("mlp")
    x, y = digits_split("test")
    ann = SIM.run_ann(g, x)[g.outputs[0]].argmax(axis=1)
    agreement = []
    for timesteps in (2, 8, 32):
        out = run("canonicalize,fold-bn,calibrate,lower-neurons", g, context(x[:256], timesteps=timesteps))
        agreement.append(float((SIM.run_snn(out, x, timesteps).predictions == ann).mean()))
    assert agreement[0] < agreement[2] and agreement[2] >= 0.99, agreement


def test_errors() -> None:
    g = graph_from_text(NET)
    with pytest.raises(PassError, match="relu %r has no threshold; run calibrate first"):
        run("lower-neurons", g, context(uniform_inputs((1, 4, 4), 4)))
    bad = graph_from_text("""
    graph @b(%x: analog[4]) {
      %h = clip(%x) {lo = -1.0, hi = 1.0} : analog[4]
      output %h
    }
    """)
    with pytest.raises(UnsupportedError, match="clip %h has lo=-1.0; only clips from 0"):
        LowerNeurons().apply(context(uniform_inputs((4,), 4)), bad)
    pool = graph_from_text("""
    graph @m(%x: analog[1,4,4]) {
      %p = maxpool2d(%x) : analog[1,2,2]
      output %p
    }
    """)
    with pytest.raises(UnsupportedError, match="spike max pooling needs spikes"):
        LowerNeurons().apply(context(uniform_inputs((1, 4, 4), 4)), pool)


FIRE = """
graph @fire(%x: analog[1,4,4]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[2,4,4]
  %r1 = relu(%c1) : analog[2,4,4]
  %c2 = conv2d(%x) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,4,4]
  %r2 = relu(%c2) : analog[2,4,4]
  %cat = concat(%r1, %r2) : analog[4,4,4]
  %p = maxpool2d(%cat) {ceil_mode = true, kernel = [3, 3]} : analog[4,2,2]
  %f = flatten(%p) : analog[16]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  output %l
}
"""


def test_max_pooling_of_a_concat_of_activations_is_gated() -> None:
    """SqueezeNet's Fire module ends in a concat of two ReLUs that a ceil-mode max pooling reads:
    the pooling sees spikes through the concat and is gated; ANN mode keeps the max of the clipped
    activations, and a max pooling of anything else is still refused, naming the culprit."""
    g = graph_from_text(FIRE)
    x = uniform_inputs((1, 4, 4), 16)
    out = run("calibrate{method=max},lower-neurons", g, context(x))
    assert isinstance(out.node("p").op, O.SpikeMaxPool2d) and str(out.node("p").type) == "spike[4,2,2]"
    np.testing.assert_allclose(SIM.run_ann(out, x)["readout"], SIM.run_ann(g, x)["l"], atol=1e-5)
    mixed = graph_from_text(FIRE.replace("concat(%r1, %r2)", "concat(%r1, %c2)"))
    with pytest.raises(PassError, match="maxpool2d %p reads %c2, not the output of an activation"):
        run("calibrate{method=max},lower-neurons", mixed, context(x))


STEM = """
graph @stem(%x: analog[1,6,6]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,6,6]
  %r = relu(%c) : analog[2,6,6]
  %p = maxpool2d(%r) {kernel = [3, 3], stride = [2, 2], padding = [1, 1]} : analog[2,3,3]
  %c2 = conv2d(%p) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,3,3]
  %r2 = relu(%c2) : analog[2,3,3]
  %p2 = maxpool2d(%r2) {kernel = [3, 3], stride = [2, 2], padding = [1, 1]} : analog[2,2,2]
  %f = flatten(%p2) : analog[8]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  output %l
}
"""


def test_invariant_maxpool_pools_the_stem_current() -> None:
    """invariant-maxpool: the stem's pooling (its input depends on the input alone) moves before the
    activation and stays a max pooling of the analog current; a pooling of spikes stays gated.  The
    ANN is unchanged, and the SNN's first neuron sees exactly the pooled current at every step."""
    g = graph_from_text(STEM)
    x = uniform_inputs((1, 6, 6), 16)
    out = run("calibrate{method=max},lower-neurons{invariant-maxpool=true}", g, context(x))
    order = [n.name for n in out.nodes]
    assert order.index("p") < order.index("r") and isinstance(out.node("p").op, O.MaxPool2d)
    assert out.node("r").inputs == ("p",) and out.node("c2").inputs == ("r",)
    assert isinstance(out.node("p2").op, O.SpikeMaxPool2d)
    np.testing.assert_allclose(SIM.run_ann(out, x)["readout"], SIM.run_ann(g, x)["l"], atol=1e-5)
    pooled = SIM.run_snn(out, x, 4, record=["p"]).recorded["p"]  # the mean over the steps
    np.testing.assert_allclose(pooled, SIM.run_ann(out, x, record=["p"])["p"], atol=1e-5)
    np.testing.assert_allclose(np.maximum(pooled, 0.0), SIM.run_ann(g, x, record=["p"])["p"], atol=1e-5)
