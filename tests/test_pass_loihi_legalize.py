"""loihi-legalize: Loihi's neuron (hard reset to 0, strict threshold), OR pooling, pooling composed into
the conv / linear next to it, per-channel parameters split into populations, refusals with reasons."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import context, graph_from_text, ir, logits, rel_diff, run, uniform_inputs

from snnc.ir import ops as O
from snnc.ir import print_graph
from snnc.pass_manager import PipelineFailure

NET = """
graph @net(%x: analog[1,8,8]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[1,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,8,8]
  %n = neuron(%c) {reset = "hard"} : spike[4,8,8]
  %m = spike_maxpool(%n) : spike[4,4,4]
  %c2 = conv2d(%m) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[6,4,4]
  %n2 = neuron(%c2) {model = "lif", beta = 0.75, reset = "hard"} : spike[6,4,4]
  %p = avgpool2d(%n2) : analog[6,2,2]
  %f = flatten(%p) : analog[24]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %r = readout(%l) : analog[3]
  output %r
}
"""

EXPECTED = """
graph @net(%x: analog[1,8,8]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[1,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,8,8]
  %n = neuron(%c) {model = "lif", reset = "hard", strict = true} : spike[4,8,8]
  %m = conv2d(%n) {stride = [2, 2], groups = 4} params {weight = "m.weight"} : analog[4,4,4]
  %m_or = neuron(%m) {model = "lif", v_th = 0.5, reset = "hard", strict = true} : spike[4,4,4]
  %c2 = conv2d(%m_or) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[6,4,4]
  %n2 = neuron(%c2) {model = "lif", reset = "hard", beta = 0.75, strict = true} : spike[6,4,4]
  %f = flatten(%n2) : spike[96]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %r = readout(%l) : analog[3]
  output %r
}
"""


def _legalize(text: str, seed: int = 0):
    g = graph_from_text(text, seed)
    ctx = context(uniform_inputs(g.inputs[0][1].shape, 8), timesteps=4)
    return g, run("loihi-legalize", g, ctx), ctx


def test_golden() -> None:
    """IF → LIF without leak, strict thresholds, max pooling as OR pooling (unit depthwise conv + a
    neuron firing on one input spike), average pooling before flatten → linear composed into it."""
    g, out, ctx = _legalize(NET)
    assert print_graph(out) == ir(EXPECTED)
    np.testing.assert_array_equal(out.params["m.weight"], np.ones((4, 1, 2, 2)))
    # linear ∘ flatten ∘ avgpool: every input of a 2x2 window gets a quarter of the pooled weight
    w = g.params["l.weight"].reshape(3, 6, 2, 2)
    want = np.repeat(np.repeat(w, 2, axis=2), 2, axis=3) / 4
    np.testing.assert_allclose(out.params["l.weight"], want.reshape(3, 96), rtol=1e-6)
    assert ctx.results["loihi-legalize"]["rewrites"][-1] == "avgpool2d %p: composed into linear %l"
    assert any("runs as OR pooling" in n for n in ctx.notes)


def test_or_pooling_fires_on_any_spike_of_the_window() -> None:
    text = """
    graph @p(%x: spike[1,2,2]) attributes {timesteps = 3} {
      %m = spike_maxpool(%x) : spike[1,1,1]
      %f = flatten(%m) : spike[1]
      %l = linear(%f) params {weight = "w"} : analog[1]
      %r = readout(%l) : analog[1]
      output %r
    }
    """
    _, out, _ = _legalize(text)
    x = np.array([[[[0, 0], [0, 0]]], [[[0, 1], [0, 0]]], [[[1, 1], [1, 1]]]], dtype=np.float32)
    w = float(out.params["w"].reshape(-1)[0])
    np.testing.assert_allclose(logits(out, x, 3)[:, 0], [0.0, w, w], rtol=1e-6)


POOLS = """
graph @pools(%x: analog[2,8,8]) attributes {timesteps = 5} {
  %e = encode(%x) : analog[2,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,8,8]
  %cp = avgpool2d(%c) : analog[4,4,4]
  %n = neuron(%cp) {reset = "hard", v_th = 0.3} : spike[4,4,4]
  %p = avgpool2d(%n) : analog[4,2,2]
  %c2 = conv2d(%p) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[5,2,2]
  %n2 = neuron(%c2) {reset = "hard", v_th = 0.2} : spike[5,2,2]
  %s = scale(%n2) params {scale = "s.scale"} : analog[5,2,2]
  %q = avgpool2d(%s) : analog[5,1,1]
  %f = flatten(%q) : analog[5]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %r = readout(%l) : analog[3]
  output %r
}
"""


def test_compositions_keep_the_function() -> None:
    """conv → avgpool (one conv 4x4 stride 2), avgpool → conv (one conv 6x6 stride 2), a per-channel
    scale and an average pool folded into the linear after them: the SNN's logits do not change."""
    g, out, _ = _legalize(POOLS)
    kinds = [n.op.name for n in out.nodes]
    assert kinds == ["encode", "conv2d", "neuron", "conv2d", "neuron", "flatten", "linear", "readout"]
    c, c2 = out.node("c"), out.node("c2")
    assert out.params[c.params["weight"]].shape == (4, 2, 4, 4) and c.op.stride == (2, 2)
    assert out.params[c2.params["weight"]].shape == (5, 4, 6, 6) and c2.op.stride == (2, 2)
    assert c2.op.padding == (2, 2) and c2.inputs == ("n",)
    x = uniform_inputs((2, 8, 8), 32, seed=1)
    assert rel_diff(logits(g, x, 5), logits(out, x, 5)) < 1e-5


def test_a_border_that_differs_is_not_composed() -> None:
    """avgpool 2x2 on 5x5 drops the last row; conv with padding 1 would read it after composition:
    refused, and the pool alone has no neurons to feed."""
    text = """
    graph @b(%x: analog[1,5,5]) attributes {timesteps = 2} {
      %e = encode(%x) : analog[1,5,5]
      %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight"} : analog[2,5,5]
      %n = neuron(%c) {reset = "hard"} : spike[2,5,5]
      %p = avgpool2d(%n) : analog[2,2,2]
      %c2 = conv2d(%p) {padding = [1, 1]} params {weight = "c2.weight"} : analog[3,2,2]
      %n2 = neuron(%c2) {reset = "hard"} : spike[3,2,2]
      %r = readout(%n2) : analog[3,2,2]
      output %r
    }
    """
    with pytest.raises(PipelineFailure, match=r"a Loihi synaptic layer feeds exactly one population \(or the "
                                              r"readout\); .* \(1 node\):\n    conv2d %p \(feeds %c2\)"):
        _legalize(text)


def test_per_channel_leak_is_split_into_populations() -> None:
    text = """
    graph @s(%x: analog[6]) attributes {timesteps = 6} {
      %e = encode(%x) : analog[6]
      %l = linear(%e) params {weight = "l.weight", bias = "l.bias"} : analog[4]
      %n = neuron(%l) {model = "lif", reset = "hard"} params {beta = "n.beta", v_th = "n.v_th"} : spike[4]
      %o = linear(%n) params {weight = "o.weight"} : analog[2]
      %r = readout(%o) : analog[2]
      output %r
    }
    """
    g = graph_from_text(text, params={"n.beta": np.array([0.5, 0.5, 0.9, 0.9]), "n.v_th": np.array([0.4] * 4)})
    ctx = context(uniform_inputs((6,), 8), timesteps=6)
    out = run("loihi-legalize", g, ctx)
    parts = [n for n in out.nodes if isinstance(n.op, O.Neuron)]
    assert [(p.name, p.op.beta, p.op.v_th, p.params) for p in parts] == [
        ("n_part0", 0.5, 0.4000000059604645, {}), ("n_part1", 0.8999999761581421, 0.4000000059604645, {})]
    assert isinstance(out.node("n").op, O.Concat) and out.node("n").inputs == ("n_part0", "n_part1")
    x = uniform_inputs((6,), 32, seed=2)
    assert rel_diff(logits(g, x, 6), logits(out, x, 6)) < 1e-5
    assert "split into 2 populations" in ctx.results["loihi-legalize"]["rewrites"][-1]


def test_refusals_name_every_node_and_the_fix() -> None:
    text = """
    graph @bad(%x: analog[4]) attributes {timesteps = 2} {
      %e = encode(%x) {scheme = "phase"} : spike[4]
      %l = linear(%e) params {weight = "l.weight"} : analog[4]
      %n = neuron(%l) {v_init = 0.5} : spike[4]
      %l2 = linear(%n) params {weight = "l2.weight"} : analog[4]
      %n2 = neuron(%l2) {reset = "hard", max_spikes = 3, out_scale = 2.0} : burst<3>[4]
      %r = readout(%n2) : analog[4]
      output %r
    }
    """
    with pytest.raises(PipelineFailure) as e:
        _legalize(text)
    msg = str(e.value)
    assert "loihi-legalize: 4 problems in 2 nodes, 4 reasons:\n" in msg
    assert ("\n  [1/4] soft reset; Loihi's CUBA neuron resets to 0: convert with lower-neurons{reset=hard} (the "
            "ann-to-loihi pipeline does) (1 node):\n    neuron %n\n") in msg
    assert "\n  [2/4] v starts above 0; Loihi starts at v = 0: convert with lower-neurons{v-init=0} (1 node):\n" \
        "    neuron %n (v_init=0.5)\n" in msg
    assert "[3/4] bursts; Loihi's CUBA LIF sends one spike per step: convert without burst neurons (1 node):\n" \
        "    neuron %n2 (max_spikes=3)" in msg
    assert msg.endswith("\n  [4/4] out_scale ≠ 1; Loihi spikes carry no value: run fold-thresholds first (1 node):\n"
                        "    neuron %n2")


def test_a_sum_of_analog_values_that_are_not_currents_is_refused() -> None:
    """A sum of currents into one neuron is a join (tests/test_loihi_branching.py); a sum of the analog
    input is not."""
    text = """
    graph @add(%x: analog[4]) attributes {timesteps = 2} {
      %e = encode(%x) : analog[4]
      %a = linear(%e) params {weight = "a.weight"} : analog[4]
      %s = add(%a, %e) : analog[4]
      %n = neuron(%s) {reset = "hard"} : spike[4]
      %r = readout(%n) : analog[4]
      output %r
    }
    """
    with pytest.raises(PipelineFailure, match=r"a sum of analog values that are not conv2d / linear currents feeding "
                                              r"one neuron; Loihi adds synaptic currents into a population, or "
                                              r"spikes \(1 node\):\n    add %s \(reads %e\)"):
        _legalize(text)


def test_an_unconverted_network_is_refused_once() -> None:
    text = """
    graph @ann(%x: analog[4]) {
      %l = linear(%x) params {weight = "l.weight"} : analog[4]
      %a = relu(%l) : analog[4]
      output %a
    }
    """
    with pytest.raises(PipelineFailure, match=r"loihi-legalize: 1 problem in 1 node, 1 reason:\n  an ANN op; convert "
                                              r"the network first \(the ann-to-loihi pipeline, which needs --calib "
                                              r"data\) \(1 node\):\n    relu %a$"):
        _legalize(text)
