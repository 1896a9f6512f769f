"""fold-thresholds: unit thresholds and unit spikes, the same SNN.

Differential tests compare SNN-mode logits before and after the pass (within 1e-4 relative).  With
thresholds rounded to powers of two every rescaling is exact in floating point, so the folded graph
must reproduce the spikes bit for bit on every test model (residual adds, concat, pooling, flatten,
1-D convs, grouped convs).  With real thresholds the rescaled weights round differently, and a
membrane that lands within float32 rounding of the threshold may fire one step apart, depending on
the CPU's summation order: on the tiny models this does not happen and the logits agree to 1e-4; on
the digits and deep models only ANN mode is compared exactly, and the spike totals and predictions
within a tolerance.
"""

from __future__ import annotations

import models
import numpy as np
import pytest
import torch
from conversion_util import (
    SIM,
    context,
    digits_model,
    digits_split,
    graph_from_text,
    ir,
    logits,
    power_of_two_thresholds,
    rel_diff,
    run,
    uniform_inputs,
)

from snnc.errors import PassError
from snnc.frontend.fx import import_module
from snnc.ir import ops as O
from snnc.ir import print_graph

RESIDUAL = """
graph @res(%x: analog[2,4,4]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[2,4,4]
  %n1 = neuron(%c1) {v_init = 0.5} params {v_th = "n1.v_th", out_scale = "n1.out_scale"} : spike[2,4,4]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,4,4]
  %a = add(%c2, %n1) : analog[2,4,4]
  %n2 = neuron(%a) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[2,4,4]
  %cat = concat(%n1, %n2) : spike[4,4,4]
  %p = avgpool2d(%cat) : analog[4,2,2]
  %f = flatten(%p) : analog[16]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %readout = readout(%l) : analog[3]
  output %readout
}
"""

EXPECTED = """
graph @res(%x: analog[2,4,4]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[2,4,4]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[2,4,4]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,4,4]
  %n1_rescale = scale(%n1) params {scale = "n1_rescale.scale"} : analog[2,4,4]
  %a = add(%c2, %n1_rescale) : analog[2,4,4]
  %n2 = neuron(%a) {v_init = 0.5} : spike[2,4,4]
  %cat = concat(%n1, %n2) : spike[4,4,4]
  %p = avgpool2d(%cat) : analog[4,2,2]
  %f = flatten(%p) : analog[16]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %readout = readout(%l) : analog[3]
  output %readout
}
"""


def _residual():
    return graph_from_text(RESIDUAL, params={"n1.v_th": [2.0, 0.25], "n1.out_scale": [2.0, 0.25]})


def test_golden_residual_concat_pool_flatten() -> None:
    g = _residual()
    out = run("fold-thresholds", g, context(uniform_inputs((2, 4, 4), 4)))
    assert print_graph(out) == ir(EXPECTED)
    # the shortcut carries n1's spikes (units σ1 = [2, 0.25]) into the add, which n2 reads in units θ2 = 0.5
    np.testing.assert_array_equal(out.params["n1_rescale.scale"], [4.0, 0.5])
    # c1 produces currents in units of θ1 per output channel
    w1, w1_out = g.params["c1.weight"], out.params["c1.weight"]
    np.testing.assert_allclose(w1_out, w1 / np.array([2.0, 0.25]).reshape(2, 1, 1, 1), rtol=1e-6)
    # the linear reads flattened channels: σ of each channel repeated over its 2·2 positions (σ2 = 0.5)
    sigma = np.repeat([2.0, 0.25, 0.5, 0.5], 4)
    np.testing.assert_allclose(out.params["l.weight"], g.params["l.weight"] * sigma, rtol=1e-6)
    x = uniform_inputs((2, 4, 4), 64)
    assert rel_diff(logits(g, x, 8), logits(out, x, 8)) == 0.0


def _converted(model, x, timesteps: int, exact: bool):
    g = import_module(model, torch.as_tensor(x[:2]))
    ctx = context(x, timesteps=timesteps)
    calibrated = run("canonicalize,fold-bn,calibrate", g, ctx)
    if exact:
        power_of_two_thresholds(calibrated)
    return run("lower-neurons", calibrated, ctx), ctx


@pytest.mark.parametrize("cls", models.ALL_MODELS, ids=lambda c: c.__name__)
def test_exact_with_power_of_two_thresholds(cls) -> None:
    model = cls()
    x = model.example_input(16, seed=3).numpy()
    before, ctx = _converted(model, x, 4, exact=True)
    after = run("fold-thresholds", before, ctx)
    for n in after.ops(O.Neuron):
        assert n.op.v_th == 1.0 and n.op.out_scale == 1.0 and "v_th" not in n.params and "out_scale" not in n.params
    a, b = SIM.run_snn(before, x, 4), SIM.run_snn(after, x, 4)
    assert rel_diff(a.logits, b.logits) < 1e-4
    assert a.spikes == b.spikes


@pytest.mark.parametrize("cls", [models.TinyMLP, models.ConcatNet, models.Conv1dNet], ids=lambda c: c.__name__)
def test_real_thresholds_small_models(cls) -> None:
    model = cls()
    x = model.example_input(64, seed=4).numpy()
    before, ctx = _converted(model, x, 8, exact=False)
    after = run("fold-thresholds", before, ctx)
    assert rel_diff(logits(before, x, 8), logits(after, x, 8)) < 1e-4


def _digits_converted(arch: str, exact: bool):
    x, y = digits_split("test")
    ctx = context(x, y, 8)
    calibrated = run("canonicalize,fold-bn,calibrate", digits_model(arch), ctx)
    if exact:
        power_of_two_thresholds(calibrated)
    before = run("lower-neurons", calibrated, ctx)
    return x, before, run("fold-thresholds", before, ctx)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_digits_exact_with_power_of_two_thresholds(arch: str) -> None:
    x, before, after = _digits_converted(arch, exact=True)
    a, b = SIM.run_snn(before, x, 8), SIM.run_snn(after, x, 8)
    assert rel_diff(a.logits, b.logits) < 1e-4
    assert a.spikes == b.spikes


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_digits_real_thresholds(arch: str) -> None:
    """With calibrated thresholds the rescaled weights round differently: a membrane within float32
    rounding of its threshold may fire one step apart, depending on the CPU's summation order.
    What the pass promises under rounding: the ANN is unchanged, the spike totals agree to 0.1 %
    and the predictions to one sample in a hundred."""
    x, before, after = _digits_converted(arch, exact=False)
    np.testing.assert_allclose(SIM.run_ann(before, x)["readout"], SIM.run_ann(after, x)["readout"], atol=1e-4)
    a, b = SIM.run_snn(before, x, 8), SIM.run_snn(after, x, 8)
    total_a, total_b = sum(a.spikes.values()), sum(b.spikes.values())
    assert abs(total_a - total_b) <= 1e-3 * total_a
    agree = float(np.mean(a.logits.argmax(1) == b.logits.argmax(1)))
    assert agree >= 0.99


@pytest.mark.parametrize("cls", [models.VGGish, models.ResNet18ish], ids=lambda c: c.__name__)
def test_real_thresholds_deep_models(cls) -> None:
    model = cls()
    x = model.example_input(16, seed=5).numpy()
    before, ctx = _converted(model, x, 4, exact=False)
    after = run("fold-thresholds", before, ctx)
    ann_b, ann_a = SIM.run_ann(before, x)["readout"], SIM.run_ann(after, x)["readout"]
    assert rel_diff(ann_b, ann_a) < 1e-4
    a, b = SIM.run_snn(before, x, 4), SIM.run_snn(after, x, 4)
    total_a, total_b = sum(a.spikes.values()), sum(b.spikes.values())
    assert abs(total_a - total_b) <= 1e-2 * total_a


def test_hard_reset_potential_is_rescaled() -> None:
    text = """
    graph @h(%x: analog[4]) {
      %l = linear(%x) params {weight = "w", bias = "b"} : analog[4]
      %n = neuron(%l) {v_th = 0.5, reset = "hard", v_reset = 0.25, out_scale = 0.5} : spike[4]
      %o = linear(%n) params {weight = "o"} : analog[2]
      %readout = readout(%o) : analog[2]
      output %readout
    }
    """
    g = graph_from_text(text)
    out = run("fold-thresholds", g, context(uniform_inputs((4,), 4)))
    assert out.node("n").op.v_reset == 0.5
    x = uniform_inputs((4,), 64, seed=2)
    assert rel_diff(logits(g, x, 8), logits(out, x, 8)) < 1e-6


def test_needs_lowered_graph() -> None:
    g = graph_from_text("""
    graph @r(%x: analog[4]) {
      %r = relu(%x) : analog[4]
      output %r
    }
    """)
    with pytest.raises(PassError, match="relu %r is still an ANN op; run fold-bn and lower-neurons first"):
        run("fold-thresholds", g, context(uniform_inputs((4,), 4)))


SHUFFLE = """
graph @shuffle(%x: analog[2,4,4]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[4,4,4]
  %n1 = neuron(%c1) {v_init = 0.5} params {v_th = "n1.v_th", out_scale = "n1.out_scale"} : spike[4,4,4]
  %a = slice(%n1) {axis = 0, start = 0, stop = 2} : spike[2,4,4]
  %b = slice(%n1) {axis = 0, start = 2, stop = 4} : spike[2,4,4]
  %c2 = conv2d(%b) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,4,4]
  %n2 = neuron(%c2) {v_init = 0.5} params {v_th = "n2.v_th", out_scale = "n2.out_scale"} : spike[2,4,4]
  %cat = concat(%a, %n2) : spike[4,4,4]
  %r = reshape(%cat) {shape = [2, 2, 4, 4]} : spike[2,2,4,4]
  %t = permute(%r) {dims = [1, 0, 2, 3]} : spike[2,2,4,4]
  %s = reshape(%t) {shape = [4, 4, 4]} : spike[4,4,4]
  %c3 = conv2d(%s) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[3,4,4]
  %n3 = neuron(%c3) {v_init = 0.5} params {v_th = "n3.v_th", out_scale = "n3.out_scale"} : spike[3,4,4]
  %p = avgpool2d(%n3) : analog[3,2,2]
  %f = flatten(%p) : analog[12]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %readout = readout(%l) : analog[3]
  output %readout
}
"""


def test_channel_split_and_shuffle_carry_their_scales() -> None:
    """ShuffleNetV2's unit: a channel split (slices), a branch, a concat and a channel shuffle
    (reshape, permute, reshape).  Each channel's scale travels with it, so the conv after the
    shuffle absorbs the permuted scales and no scale op is needed; with power-of-two thresholds
    the folded SNN fires the same spikes."""
    theta = {"n1": [2.0, 0.25, 4.0, 0.5], "n2": [1.0, 8.0], "n3": [0.5, 2.0, 1.0]}
    params = {f"{n}.{role}": np.array(v) for n, v in theta.items() for role in ("v_th", "out_scale")}
    g = graph_from_text(SHUFFLE, seed=3, params=params)
    out = run("fold-thresholds", g, context(uniform_inputs((2, 4, 4), 4)))
    assert not list(out.ops(O.Scale))
    # c3 reads the shuffled channels [a0, n2_0, a1, n2_1] = units [2, 1, 0.25, 8] and writes units of θ3
    s_in = np.array([2.0, 1.0, 0.25, 8.0]).reshape(1, 4, 1, 1)
    s_out = np.array(theta["n3"]).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(out.params["c3.weight"], g.params["c3.weight"] * s_in / s_out, rtol=1e-6)
    # c2 reads the second half of n1's channels (units [4, 0.5])
    s_in2 = np.array([4.0, 0.5]).reshape(1, 2, 1, 1)
    s_out2 = np.array(theta["n2"]).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(out.params["c2.weight"], g.params["c2.weight"] * s_in2 / s_out2, rtol=1e-6)
    x = uniform_inputs((2, 4, 4), 64, seed=1)
    a, b = SIM.run_snn(g, x, 8), SIM.run_snn(out, x, 8)
    assert rel_diff(a.logits, b.logits) < 1e-5
    assert a.spikes == b.spikes


def test_slice_read_by_a_neuron_gets_its_own_scale() -> None:
    """A slice of a conv's output read by a neuron wishes θ for its channels only; the other channels
    (read by the readout) keep unit scale: the conv writes both without a scale op."""
    text = """
    graph @split(%x: analog[4]) {
      %l = linear(%x) params {weight = "l.weight", bias = "l.bias"} : analog[4]
      %a = slice(%l) {axis = 0, start = 0, stop = 2} : analog[2]
      %b = slice(%l) {axis = 0, start = 2, stop = 4} : analog[2]
      %n = neuron(%b) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[2]
      %cat = concat(%a, %n) : analog[4]
      %readout = readout(%cat) : analog[4]
      output %readout
    }
    """
    g = graph_from_text(text, params={"n.v_th": np.array([0.5, 4.0]), "n.out_scale": np.array([0.5, 4.0])})
    out = run("fold-thresholds", g, context(uniform_inputs((4,), 4)))
    np.testing.assert_allclose(out.params["l.weight"],
                               g.params["l.weight"] / np.array([1.0, 1.0, 0.5, 4.0]).reshape(4, 1), rtol=1e-6)
    x = uniform_inputs((4,), 32, seed=2)
    assert rel_diff(logits(g, x, 8), logits(out, x, 8)) < 1e-5
