"""The tvm target on the ops of real architectures, differentially against the torch simulator.

Grouped and depthwise convolution, conv1d, channel shuffle (reshape, permute, reshape), slice,
concat, scale, ceil_mode average and gated max pooling.  Weights, biases, scales and inputs are
multiples of powers of two and window divisors are powers of two, so every sum is exact in
float32 whatever its order: the TVM artifact must give the simulator's logits and spike counts
exactly (spike for spike).  Channel-shuffle chains compose into one remap layer.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, run_both  # noqa: E402

from snnc.backends.tvm.layers import LayerOp  # noqa: E402
from snnc.backends.tvm.lower import import_legality, legality, lower  # noqa: E402
from snnc.ir import Graph  # noqa: E402

pytestmark = pytest.mark.tvm

SHUFFLE = """
graph @shuffle(%x: analog[4,9,9]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[4,9,9]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,9,9]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,9,9]
  %dw = conv2d(%n1) {padding = [1, 1], groups = 8} params {weight = "dw.weight", bias = "dw.bias"} : analog[8,9,9]
  %n2 = neuron(%dw) {v_init = 0.5} : spike[8,9,9]
  %g = conv2d(%n2) {groups = 2} params {weight = "g.weight"} : analog[8,9,9]
  %n3 = neuron(%g) {v_init = 0.5} : spike[8,9,9]
  %r1 = reshape(%n3) {shape = [2, 4, 9, 9]} : spike[2,4,9,9]
  %p = permute(%r1) {dims = [1, 0, 2, 3]} : spike[4,2,9,9]
  %r2 = reshape(%p) {shape = [8, 9, 9]} : spike[8,9,9]
  %s1 = slice(%r2) {axis = 0, start = 0, stop = 4} : spike[4,9,9]
  %s2 = slice(%r2) {axis = 0, start = 4, stop = 8} : spike[4,9,9]
  %b = conv2d(%s2) {padding = [1, 1]} params {weight = "b.weight", bias = "b.bias"} : analog[4,9,9]
  %sc = scale(%s1) {factor = 0.5} params {scale = "sc.scale", bias = "sc.bias"} : analog[4,9,9]
  %a = add(%b, %sc) : analog[4,9,9]
  %n4 = neuron(%a) {v_init = 0.5} : spike[4,9,9]
  %cat = concat(%s1, %n4) : spike[8,9,9]
  %mp = spike_maxpool(%cat) {kernel = [2, 2], stride = [2, 2], ceil_mode = true} : spike[8,5,5]
  %ap = avgpool2d(%mp) {kernel = [2, 2], stride = [2, 2], ceil_mode = true} : analog[8,3,3]
  %n5 = neuron(%ap) {v_th = 0.25, v_init = 0.5} : spike[8,3,3]
  %f = flatten(%n5) : spike[72]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[5]
  %out = readout(%fc) : analog[5]
  output %out
}
"""

CONV1D = """
graph @conv1d(%x: analog[4,16]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[4,16]
  %c1 = conv1d(%e) {padding = 1} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,16]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,16]
  %c2 = conv1d(%n1) {stride = 2, padding = 1, groups = 4} params {weight = "c2.weight"} : analog[8,8]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[8,8]
  %c3 = conv1d(%n2) {padding = 2, dilation = 2} params {weight = "c3.weight"} : analog[4,8]
  %n3 = neuron(%c3) {v_init = 0.5} : spike[4,8]
  %t = permute(%n3) {dims = [1, 0]} : spike[8,4]
  %f = flatten(%t) : spike[32]
  %fc = linear(%f) params {weight = "fc.weight"} : analog[3]
  %n4 = neuron(%fc) : spike[3]
  %out = readout(%n4) : spike[3]
  output %out
}
"""


def _shuffle(seed: int) -> Graph:
    """SHUFFLE with its 1x1 grouped convolution's weight (graph_from_text makes 3x3 kernels)."""
    rng = np.random.default_rng(seed)
    return graph_from_text(SHUFFLE, seed=seed, params={"g.weight": rng.standard_normal((8, 4, 1, 1)) * 0.7})


@pytest.mark.parametrize("name,shape", [("shuffle", (4, 9, 9)), ("conv1d", (4, 16))])
def test_spike_for_spike(tmp_path, name, shape):
    graph = dyadic(_shuffle(1) if name == "shuffle" else graph_from_text(CONV1D, seed=1), seed=2)
    assert import_legality(graph) == [] and legality(graph) == []
    x = grid_inputs(6, shape)
    tvm_out, ref = run_both(graph, x, tmp_path)
    np.testing.assert_array_equal(tvm_out["logits"], ref.logits)
    assert_spike_counts_equal(graph, tvm_out, ref, len(x))


def test_channel_shuffle_is_one_remap_layer():
    layer_graph, _ = lower(dyadic(_shuffle(1), seed=2))
    remaps = [layer for layer in layer_graph.layers if layer.op is LayerOp.REMAP]
    # reshape, permute, reshape compose into one layer (r2; it feeds two slices, so they stay)
    assert [layer.name for layer in remaps] == ["r2", "s1", "s2", "sc", "cat"]
    assert remaps[0].inputs == ("g",)


def test_float_weights_within_tolerance(tmp_path):
    """Random float weights: the same predictions, logits within float tolerance."""
    graph = _shuffle(4)
    x = np.random.default_rng(5).uniform(0, 1, (8, 4, 9, 9)).astype(np.float32)
    tvm_out, ref = run_both(graph, x, tmp_path)
    np.testing.assert_allclose(tvm_out["logits"], ref.logits, rtol=1e-4, atol=1e-4)


NESTED_CONCAT = """
graph @nested(%x: analog[3,5,5]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[3,5,5]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[4,5,5]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[4,5,5]
  %c2 = conv2d(%e) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,5,5]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[2,5,5]
  %c3 = conv2d(%e) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[3,5,5]
  %n3 = neuron(%c3) {v_init = 0.5} : spike[3,5,5]
  %inner = concat(%n1, %n2) : spike[6,5,5]
  %outer = concat(%inner, %n3) : spike[9,5,5]
  %c4 = conv2d(%outer) {padding = [1, 1]} params {weight = "c4.weight"} : analog[4,5,5]
  %n4 = neuron(%c4) {v_init = 0.5} : spike[4,5,5]
  %f = flatten(%n4) : spike[100]
  %fc = linear(%f) params {weight = "fc.weight"} : analog[3]
  %out = readout(%fc) : analog[3]
  output %out
}
"""


def test_a_concat_of_a_concat_merges_into_one_remap_spike_for_spike(tmp_path):
    """Inception-v3's nested concats: the inner concat (two inputs) merges into the outer, whose own map
    for its second input must survive the renumbering (it was overwritten: wrong or out-of-range maps)."""
    graph = dyadic(graph_from_text(NESTED_CONCAT, seed=5), seed=6)
    layer_graph, _ = lower(graph)
    outer = next(layer for layer in layer_graph.layers if layer.name == "outer")
    assert outer.inputs == ("c1", "c2", "c3")
    x = grid_inputs(6, (3, 5, 5))
    tvm_out, ref = run_both(graph, x, tmp_path)
    np.testing.assert_array_equal(tvm_out["logits"], ref.logits)
    assert_spike_counts_equal(graph, tvm_out, ref, len(x))


POINT = """
graph @point(%x: analog[4,3,3]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[4,3,3]
  %c1 = conv2d(%e) params {weight = "c1.weight", bias = "c1.bias"} : analog[16,1,1]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[16,1,1]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[16,1,1]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[16,1,1]
  %c3 = conv2d(%n2) {padding = [2, 2], dilation = [2, 2]} params {weight = "c3.weight"} : analog[12,1,1]
  %n3 = neuron(%c3) {v_init = 0.5} : spike[12,1,1]
  %c4 = conv2d(%n3) {padding = [1, 1], dilation = [2, 2]} params {weight = "c4.weight", bias = "c4.bias"} : analog[12,1,1]
  %n4 = neuron(%c4) {v_th = 0.25} : spike[12,1,1]
  %s = add(%n3, %n4) : analog[12,1,1]
  %c5 = conv2d(%s) params {weight = "c5.weight", bias = "c5.bias"} : analog[5,1,1]
  %out = readout(%c5) : analog[5,1,1]
  output %out
}
"""


def test_conv_on_a_1x1_map_is_a_linear_layer_spike_for_spike(tmp_path):
    """A conv2d from a 1x1 map of events to a 1x1 map lowers as a linear layer of its one tap
    (3x3 padding 1: the centre; 3x3 padding 2 dilation 2: the centre; 2x2 padding 1 dilation 2:
    no tap, the bias only); a conv on a larger map or on an add's analog values stays a conv.
    Batches of 4 and 1 equal the torch simulator spike for spike."""
    from snnc.backends.tvm.runtime import EventRuntime

    rng = np.random.default_rng(3)
    weights = {"c4.weight": rng.standard_normal((12, 12, 2, 2)), "c5.weight": rng.standard_normal((5, 12, 1, 1))}
    graph = dyadic(graph_from_text(POINT, seed=4, params=weights), seed=2)
    graph.params["c4.bias"] = np.abs(graph.params["c4.bias"]) + 0.125  # no tap: the bias alone spikes
    layer_graph, params = lower(graph)
    ops = {layer.name: layer.op for layer in layer_graph.layers}
    assert [n for n, op in ops.items() if op is LayerOp.LINEAR] == ["c2", "c3", "c4"]
    assert ops["c1"] is ops["c5"] is LayerOp.CONV2D
    np.testing.assert_array_equal(params["c2.weight[centre tap]"], graph.params["c2.weight"][:, :, 1, 1])
    np.testing.assert_array_equal(params["c3.weight[centre tap]"], graph.params["c3.weight"][:, :, 1, 1])
    assert not params["c4.weight[centre tap]"].any() and params["c4.weight[centre tap]"].shape == (12, 12)
    x = grid_inputs(6, (4, 3, 3))
    tvm_out, ref = run_both(graph, x, tmp_path)
    logits = ref.logits.reshape(len(x), -1)  # the runtime's logits are flat
    np.testing.assert_array_equal(tvm_out["logits"], logits)
    assert_spike_counts_equal(graph, tvm_out, ref, len(x))
    assert all(tvm_out["spikes_per_layer"][n].sum() > 0 for n in ("c1", "c2", "c3", "c4"))
    single = EventRuntime(tmp_path).run(x, batch_size=1)
    np.testing.assert_array_equal(single["logits"], logits)
