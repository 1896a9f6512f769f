"""Loihi on concatenations: DenseNet's dense connectivity (each layer's BN-ReLU reads the concat of the
block input's spikes and every earlier layer's conv current, no ReLU after it, so one current is read by
several populations) and Inception's branches (of different depths, concatenated, then max pooled).
loihi-legalize gives every reading population its own synapse groups (``_neurons_over_concats``),
splits a depthwise conv over a concat into one per part (``_depthwise_over_concats``), and reads
populations of different depths through groups of a join, the shallower delayed.  The function is kept
and the chip simulates the quantised graph spike for spike."""

from __future__ import annotations

import numpy as np
from conversion_util import SIM, context, graph_from_text, rel_diff, run
from loihi_util import assert_spike_for_spike

from snnc.ir import ops as O

T = 6
LOWERING = "loihi-legalize,loihi-quantize,loihi-map"

DENSE = """
graph @dense(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c0 = conv2d(%e) {padding = [1, 1]} params {weight = "c0.weight", bias = "c0.bias"} : analog[4,6,6]
  %n0 = neuron(%c0) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %s1 = scale(%n0) params {scale = "s1.scale", bias = "s1.bias"} : analog[4,6,6]
  %m1 = neuron(%s1) {reset = "hard", v_th = 0.3} : spike[4,6,6]
  %f1 = conv2d(%m1) {padding = [1, 1]} params {weight = "f1.weight", bias = "f1.bias"} : analog[3,6,6]
  %cat1 = concat(%n0, %f1) : analog[7,6,6]
  %s2 = scale(%cat1) params {scale = "s2.scale", bias = "s2.bias"} : analog[7,6,6]
  %m2 = neuron(%s2) {reset = "hard"} params {v_th = "m2.v_th"} : spike[7,6,6]
  %f2 = conv2d(%m2) {padding = [1, 1]} params {weight = "f2.weight"} : analog[3,6,6]
  %cat2 = concat(%n0, %f1, %f2) : analog[10,6,6]
  %s3 = scale(%cat2) params {scale = "s3.scale", bias = "s3.bias"} : analog[10,6,6]
  %m3 = neuron(%s3) {reset = "hard", v_th = 0.3} : spike[10,6,6]
  %fl = flatten(%m3) : spike[360]
  %o = linear(%fl) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _graph():
    rng = np.random.default_rng(7)
    params = {f"s{k}.scale": rng.uniform(0.5, 1.5, n).astype(np.float32) for k, n in ((1, 4), (2, 7), (3, 10))}
    params |= {f"s{k}.bias": rng.uniform(-0.1, 0.2, n).astype(np.float32) for k, n in ((1, 4), (2, 7), (3, 10))}
    params["m2.v_th"] = np.array([0.3, 0.3, 0.3, 0.3, 0.5, 0.5, 0.5], dtype=np.float32)
    return graph_from_text(DENSE, seed=8, params=params)


def _inputs(n: int = 48, seed: int = 1) -> np.ndarray:
    # on the graded grid of the quantiser (levels 16 divide 64): the chip sees exactly these inputs
    return (np.random.default_rng(seed).integers(0, 17, (n, 2, 6, 6)) / 16).astype(np.float32)


def test_each_reader_of_a_shared_current_gets_its_own_population_and_synapses() -> None:
    g = _graph()
    x = _inputs()
    ctx = context(x, timesteps=T)
    out = run("loihi-legalize", g, ctx)
    # m3 is three populations, each fed by its own synapse group; they lie at different depths, so the
    # readout's linear reads them as three groups of a join (the shallower delayed)
    parts = [out.node(f"m3_part{k}") for k in range(3)]
    assert all(isinstance(n.op, O.Neuron) for n in parts)
    feeders = [out.producer(p.inputs[0]) for p in parts]
    assert [f.inputs[0] for f in feeders[:2]] == ["n0", "m1"]
    assert feeders[0].op.groups == 4  # the block input's spikes: a one-to-one synapse of the BN scale
    # f2 reads m2, itself two populations (the per-part thresholds 0.3 and 0.5): two groups of a join
    assert [out.producer(v).inputs[0] for v in feeders[2].inputs] == ["m2_part0", "m2_part1"]
    o = out.node("o")
    assert isinstance(o.op, O.Add) and len(o.inputs) == 3
    # f1's synapses exist twice (for m2's and m3's parts), each scaled by its reader's BN
    f1_copies = [n for n in out.nodes if isinstance(n.op, O.Conv2d) and n.inputs == ("m1",)]
    assert len(f1_copies) == 2
    assert not any(isinstance(n.op, O.Scale) for n in out.nodes)
    rewrites = ctx.results["loihi-legalize"]["rewrites"]
    assert "neuron %m3: reads a concat of currents; 3 populations, each with its own synapses from %n0, %f1, %f2" \
        in rewrites
    assert rel_diff(SIM.run_snn(g, x, T).logits, SIM.run_snn(out, x, T).logits) < 1e-5


def test_dense_block_maps_and_simulates_spike_for_spike() -> None:
    g = _graph()
    x = _inputs(seed=2)
    q = run(LOWERING, g, context(x, timesteps=T))
    assert_spike_for_spike(q, x, T)


INCEPTION = """
graph @inception(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c0 = conv2d(%e) {padding = [1, 1]} params {weight = "c0.weight", bias = "c0.bias"} : analog[4,6,6]
  %n0 = neuron(%c0) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %a = conv2d(%n0) {padding = [1, 1]} params {weight = "a.weight", bias = "a.bias"} : analog[3,6,6]
  %na = neuron(%a) {reset = "hard", v_th = 0.4} : spike[3,6,6]
  %b1 = conv2d(%n0) {padding = [1, 1]} params {weight = "b1.weight"} : analog[3,6,6]
  %nb1 = neuron(%b1) {reset = "hard", v_th = 0.4} : spike[3,6,6]
  %b2 = conv2d(%nb1) {padding = [1, 1]} params {weight = "b2.weight", bias = "b2.bias"} : analog[2,6,6]
  %nb2 = neuron(%b2) {reset = "hard", v_th = 0.4} : spike[2,6,6]
  %cat = concat(%na, %nb2) : spike[5,6,6]
  %m = spike_maxpool(%cat) {kernel = [2, 2], stride = [2, 2]} : spike[5,3,3]
  %d = conv2d(%m) {padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[4,3,3]
  %nd = neuron(%d) {reset = "hard", v_th = 0.5} : spike[4,3,3]
  %f = flatten(%nd) : spike[36]
  %o = linear(%f) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def test_inception_branches_pool_per_part_and_join_with_delays() -> None:
    g = graph_from_text(INCEPTION, seed=9)
    x = _inputs(seed=4)
    ctx = context(x, timesteps=T)
    out = run("loihi-legalize", g, ctx)
    # the OR pooling is one depthwise conv per branch, each with its own OR population
    pools = [n for n in out.nodes if isinstance(n.op, O.Conv2d) and n.inputs in (("na",), ("nb2",))
             and n.op.groups > 1]
    assert sorted(n.op.groups for n in pools) == [2, 3]
    d = out.node("d")  # the branches' OR populations lie at depths 3 and 4: a join of two groups
    assert isinstance(d.op, O.Add) and len(d.inputs) == 2
    # (the OR pooling is another function than gated max pooling: the chip is checked against the
    # quantised graph, spike for spike)
    q = run(LOWERING, g, context(x, timesteps=T))
    assert_spike_for_spike(q, x, T)


def test_a_depthwise_layer_over_a_concat_splits_per_part_and_keeps_the_function() -> None:
    """An average pooling read by a neuron is a depthwise conv: per branch, the function unchanged."""
    text = INCEPTION.replace("%m = spike_maxpool(%cat) {kernel = [2, 2], stride = [2, 2]} : spike[5,3,3]",
                             "%p = avgpool2d(%cat) : analog[5,3,3]\n  %m = neuron(%p) {reset = \"hard\", "
                             "v_th = 0.2} : spike[5,3,3]")
    g = graph_from_text(text, seed=9)
    x = _inputs(seed=5)
    ctx = context(x, timesteps=T)
    out = run("loihi-legalize", g, ctx)
    rewrites = ctx.results["loihi-legalize"]["rewrites"]
    assert "conv2d %p: depthwise over a concat; one depthwise conv per part, concatenated" in rewrites
    assert rel_diff(SIM.run_snn(g, x, T).logits, SIM.run_snn(out, x, T).logits) < 1e-5


JOIN_BIASES = """
graph @biases(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %a = conv2d(%n) {padding = [1, 1]} params {weight = "a.weight", bias = "a.bias"} : analog[3,6,6]
  %b = conv2d(%n) params {weight = "b.weight", bias = "b.bias"} : analog[3,6,6]
  %s = add(%a, %b) : analog[3,6,6]
  %m = neuron(%s) {reset = "hard", v_th = 30.0} : spike[3,6,6]
  %f = flatten(%m) : spike[108]
  %o = linear(%f) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def test_a_joins_summed_biases_fit_the_13_bit_mantissa() -> None:
    """Two groups whose biases each fit the 13-bit mantissa at 8-bit weights but whose sum does not:
    loihi-quantize takes a coarser grid (before: the lowering refused the join)."""
    rng = np.random.default_rng(3)
    params = {"a.weight": rng.choice([-1.0, 1.0], (3, 4, 3, 3)).astype(np.float32),
              "b.weight": rng.choice([-1.0, 1.0], (3, 4, 1, 1)).astype(np.float32),
              "a.bias": np.full(3, 12.0, dtype=np.float32), "b.bias": np.full(3, 12.0, dtype=np.float32)}
    g = graph_from_text(JOIN_BIASES, seed=2, params=params)
    x = _inputs(seed=6)
    ctx = context(x, timesteps=T)
    q = run(LOWERING, g, ctx)
    total = q.params[q.node("a").params["bias"]] + q.params[q.node("b").params["bias"]]
    assert np.abs(total).max() <= (1 << 12) - 1
    assert any("-bit weights so that its bias fits" in n for n in ctx.notes)
    assert_spike_for_spike(q, x, T)
    # larger biases: no grid fits their sum, which then saturates on one group (before: refused)
    g = graph_from_text(JOIN_BIASES, seed=2, params={**params, "a.bias": np.full(3, 40.0, dtype=np.float32)})
    ctx = context(x, timesteps=T)
    q = run(LOWERING, g, ctx)
    assert q.node("b").params.get("bias") is None
    np.testing.assert_array_equal(q.params[q.node("a").params["bias"]], (1 << 12) - 1)
    assert any("summed bias of one population's synapse groups saturated" in n for n in ctx.notes)
