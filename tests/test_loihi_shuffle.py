"""Loihi on ShuffleNet's channel shuffle and split: spikes re-indexed (reshape, permute, slice, concat)
on their way to a synapse become synapse groups whose weights carry the index map (loihi-legalize's
``_fold_reindexing``).  The function is kept, the chip simulates the quantised graph spike for spike,
and what no group can carry (a map that moves spatial positions into a conv) stays refused."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, rel_diff, run
from loihi_util import assert_spike_for_spike, synapse_groups

from snnc.backends.loihi.lower import lower
from snnc.ir import ops as O
from snnc.pass_manager import PipelineFailure

T = 6
LOWERING = "loihi-legalize,loihi-quantize,loihi-map"

# a ShuffleNetV2 unit: channel shuffle, split, one half through a branch, concat, shuffle again; the
# first half's spikes reach the last conv and the linear readout without a synapse of their own
SHUFFLE = """
graph @shuffle(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[8,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[8,6,6]
  %r1 = reshape(%n) {shape = [2, 4, 6, 6]} : spike[2,4,6,6]
  %p1 = permute(%r1) {dims = [1, 0, 2, 3]} : spike[4,2,6,6]
  %r2 = reshape(%p1) {shape = [8, 6, 6]} : spike[8,6,6]
  %s1 = slice(%r2) {axis = 0, start = 0, stop = 4} : spike[4,6,6]
  %s2 = slice(%r2) {axis = 0, start = 4, stop = 8} : spike[4,6,6]
  %b = conv2d(%s2) {padding = [1, 1]} params {weight = "b.weight", bias = "b.bias"} : analog[4,6,6]
  %nb = neuron(%b) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %cat = concat(%s1, %nb) : spike[8,6,6]
  %r3 = reshape(%cat) {shape = [2, 4, 6, 6]} : spike[2,4,6,6]
  %p2 = permute(%r3) {dims = [1, 0, 2, 3]} : spike[4,2,6,6]
  %r4 = reshape(%p2) {shape = [8, 6, 6]} : spike[8,6,6]
  %d = conv2d(%r4) {stride = [2, 2], padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[6,3,3]
  %nd = neuron(%d) {reset = "hard", v_th = 0.5} : spike[6,3,3]
  %t = permute(%nd) {dims = [1, 2, 0]} : spike[3,3,6]
  %f = flatten(%t) : spike[54]
  %o = linear(%f) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _inputs(n: int = 48, seed: int = 1) -> np.ndarray:
    # on the graded grid of the quantiser (levels 16 divide 64): the chip sees exactly these inputs
    return (np.random.default_rng(seed).integers(0, 17, (n, 2, 6, 6)) / 16).astype(np.float32)


def test_reindexed_spikes_fold_into_synapse_groups_and_keep_the_function() -> None:
    g = graph_from_text(SHUFFLE, seed=4)
    x = _inputs()
    ctx = context(x, timesteps=T)
    out = run("loihi-legalize", g, ctx)
    assert not any(isinstance(n.op, (O.Reshape, O.Permute, O.Slice)) for n in out.nodes)
    # the branch reads channels 2, 6, 3, 7 of %n (the second half after the shuffle): one group
    b = out.node("b")
    assert b.inputs == ("n",) and out.params[b.params["weight"]].shape == (4, 8, 3, 3)
    w = out.params[b.params["weight"]]
    np.testing.assert_array_equal(w[:, [0, 1, 4, 5]], 0)
    np.testing.assert_array_equal(w[:, [2, 6, 3, 7]], g.params["b.weight"])
    # the last conv reads %n (through s1) and %nb: two groups summed into its population
    d = out.node("d")
    assert isinstance(d.op, O.Add) and sorted(out.producer(v).inputs[0] for v in d.inputs) == ["n", "nb"]
    o = out.node("o")  # the permute before flatten folds into the linear: it reads %nd's own order
    assert out.node(o.inputs[0]).op == O.Flatten() and out.node(o.inputs[0]).inputs == ("nd",)
    rewrites = ctx.results["loihi-legalize"]["rewrites"]
    assert "conv2d %d: reads re-indexed spikes; folded into 2 synapse groups from %n, %nb" in rewrites
    assert rel_diff(SIM.run_snn(g, x, T).logits, SIM.run_snn(out, x, T).logits) < 1e-5


def test_shuffle_unit_maps_and_simulates_spike_for_spike() -> None:
    g = graph_from_text(SHUFFLE, seed=4)
    x = _inputs(seed=2)
    q = run(LOWERING, g, context(x, timesteps=T))
    net = lower(q)
    nd = next(layer for layer in net.layers if layer.name == "nd")
    assert sorted(s for s, _ in synapse_groups(net, nd)) == ["n", "nb"]
    assert_spike_for_spike(q, x, T)


def test_a_map_that_moves_positions_into_a_conv_is_refused() -> None:
    """A spatial transpose before a conv: no conv weight carries it (a linear would)."""
    text = SHUFFLE.replace("%r4 = reshape(%p2) {shape = [8, 6, 6]} : spike[8,6,6]",
                           "%r4x = reshape(%p2) {shape = [8, 6, 6]} : spike[8,6,6]\n"
                           "  %r4 = permute(%r4x) {dims = [0, 2, 1]} : spike[8,6,6]")
    g = graph_from_text(text, seed=4)
    with pytest.raises(PipelineFailure, match=r"re-indexes values on their way to a synapse that cannot carry the "
                                              r"map .* \(8 nodes\):\n(    .*\n)*    permute %r4$"):
        run("loihi-legalize", g, context(_inputs(8), timesteps=T))


SLICED_SHORTCUT = """
graph @cut(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[8,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[8,6,6]
  %b = conv2d(%n) {padding = [1, 1]} params {weight = "b.weight", bias = "b.bias"} : analog[4,6,6]
  %s = slice(%n) {axis = 0, start = 2, stop = 6} : spike[4,6,6]
  %a = add(%b, %s) : analog[4,6,6]
  %na = neuron(%a) {reset = "hard", v_th = 0.5} : spike[4,6,6]
  %f = flatten(%na) : spike[144]
  %o = linear(%f) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def test_a_sliced_shortcut_enters_its_join_through_one_group() -> None:
    """The residual operand is a slice of spikes: its one-to-one synapse reads %n itself, channels 2-5."""
    g = graph_from_text(SLICED_SHORTCUT, seed=6)
    x = _inputs(seed=3)
    q = run(LOWERING, g, context(x, timesteps=T))
    a = q.node("a")
    assert isinstance(a.op, O.Add) and [q.producer(v).inputs[0] for v in a.inputs] == ["n", "n"]
    shortcut = q.producer(a.inputs[1])
    w = q.params[shortcut.params["weight"]].reshape(4, 8)
    assert np.count_nonzero(w) == 4 and all(w[k, k + 2] != 0 for k in range(4))
    assert_spike_for_spike(q, x, T)
