"""The prefix cache of the sensitivity searches (snnc.passes._sensitivity.Variants, the torch
simulator's replay): a one-layer variant simulated from its changed layer on gives the floats of a
whole run, and adafire / compress-spikes make the same choices with and without it."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, run, uniform_inputs

from snnc.ir import print_graph
from snnc.passes._neurons import neurons, scale_threshold
from snnc.passes._params import with_attrs
from snnc.passes._sensitivity import Variants, crossing_values, first_change

# a residual add that reads a neuron two layers back, a concat of two neurons, a max pooling
# (count and gated) and a signed neuron: values cross a layer's position in several ways
NET = """
graph @branchy(%x: analog[2,6,6]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[4,6,6]
  %n1 = neuron(%c1) {v_init = 0.5} params {v_th = "n1.v_th", out_scale = "n1.out_scale"} : spike[4,6,6]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[4,6,6]
  %a = add(%c2, %n1) : analog[4,6,6]
  %n2 = neuron(%a) {v_th = 0.7, v_init = 0.5, out_scale = 0.7, negative = "rectified"} : spike[4,6,6]
  %c3 = conv2d(%n2) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[4,6,6]
  %s3 = neuron(%c3) {v_th = 0.8, v_init = 0.5, out_scale = 0.8, negative = "signed"} : spike[4,6,6]
  %c4 = conv2d(%s3) {padding = [1, 1]} params {weight = "c4.weight", bias = "c4.bias"} : analog[4,6,6]
  %n4 = neuron(%c4) {v_th = 0.6, v_init = 0.5, out_scale = 0.6} : spike[4,6,6]
  %cat = concat(%n2, %n4) : spike[8,6,6]
  %p = POOL(%cat) {kernel = [3, 3], stride = [2, 2], ceil_mode = true} : spike[8,3,3]
  %f = flatten(%p) : spike[72]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[5]
  %n5 = neuron(%l) {v_th = 1.5, v_init = 0.5, out_scale = 1.5} : spike[5]
  %o = linear(%n5) params {weight = "o.weight"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def _net(pool: str):
    return graph_from_text(NET.replace("POOL", pool), params={"n1.v_th": [0.5, 0.9, 1.2, 0.7],
                                                                 "n1.out_scale": [0.5, 0.9, 1.2, 0.7]})


def test_crossing_values_are_what_a_suffix_reads() -> None:
    g = _net("spike_count_maxpool")
    pos = {n.name: i for i, n in enumerate(g.nodes)}
    # from n2 on: only the add's sum (n1 is read by c2 and the add, both before n2)
    assert crossing_values(g, [pos["n2"]]) == {"a"}
    assert crossing_values(g, [pos["c2"]]) == {"n1"}
    assert crossing_values(g, [pos["c4"]]) == {"s3", "n2"}


@pytest.mark.parametrize("pool", ["spike_count_maxpool", "spike_maxpool"])
@pytest.mark.parametrize("burst", [1, 3])
def test_a_variant_run_from_its_layer_is_a_whole_run(pool: str, burst: int) -> None:
    base = _net(pool)
    for n in neurons(base):
        if burst > 1:
            n.op = with_attrs(n.op, max_spikes=burst)
    base.infer_types()
    x = uniform_inputs((2, 6, 6), 16, seed=3)
    variants = Variants(SIM, base, x, 5, neurons(base))
    assert variants.replay
    for layer in neurons(base):
        for factor in (1.0, 0.6):  # 1.0: the variant is the base (starts at the layer itself)
            g = base.copy()
            scale_threshold(g, g.node(layer.name), np.array(factor))
            g.infer_types()
            whole = SIM.run_snn(g, x, 5)
            logits, spikes = variants.run(g, layer.name)
            np.testing.assert_array_equal(logits, whole.logits)
            assert spikes == whole.spikes[layer.name]
            assert first_change(base, g) == (len(base.nodes) if factor == 1.0 else base.nodes.index(layer))


@pytest.mark.parametrize("pipeline", ["adafire{max-spikes=3,batches=1}", "compress-spikes{budget=2.0,ratios=[1.0;1.5;3.0],batches=1}"])
def test_cached_search_chooses_what_the_uncached_one_does(pipeline: str) -> None:
    x = uniform_inputs((2, 6, 6), 32, seed=5)
    key = pipeline.split("{")[0]
    outs, results = [], []
    for cache in ("true", "false"):
        ctx = context(x, timesteps=4, batch_size=32)
        outs.append(run(pipeline.replace("}", f",cache={cache}}}"), _net("spike_count_maxpool"), ctx))
        results.append(ctx.results[key])
    assert print_graph(outs[0]) == print_graph(outs[1])
    for k in outs[0].params:
        np.testing.assert_array_equal(outs[0].params[k], outs[1].params[k])
    assert results[0] == results[1]


def _dyadic_net(pool: str):
    """``_net`` with every weight, bias and threshold a multiple of 1/16 (thresholds powers of two):
    every sum is exact in float32, whatever order a batched convolution adds in."""
    g = _net(pool)
    for key, value in g.params.items():
        g.params[key] = (np.round(np.asarray(value) * 16) / 16).astype(np.float32)
    for key in ("n1.v_th", "n1.out_scale"):
        g.params[key] = np.array([0.5, 1.0, 2.0, 0.25], dtype=np.float32)
    for n in neurons(g):  # the scalar thresholds (0.6 ... 1.5) to the nearest power of two
        theta = float(2.0 ** np.round(np.log2(n.op.v_th)))
        n.op = with_attrs(n.op, v_th=theta, out_scale=theta)
    return g


@pytest.mark.parametrize("pool", ["spike_count_maxpool", "spike_maxpool"])
def test_stacked_variants_are_one_at_a_time_variants(pool: str) -> None:
    base = _dyadic_net(pool)
    for n in neurons(base):
        n.op = with_attrs(n.op, max_spikes=2)
    base.infer_types()
    x = np.round(uniform_inputs((2, 6, 6), 12, seed=4) * 8) / 8
    stacked = Variants(SIM, base, x, 4, neurons(base))
    alone = Variants(SIM, base, x, 4, neurons(base), stack=False)
    assert stacked.stack and not alone.stack
    for layer in neurons(base):
        graphs = []
        for factor, burst in ((1.0, 2), (0.5, 2), (2.0, 1), (0.75, 3), (1.5, 2)):  # (1.0, 2): the base itself
            g = base.copy()
            g.node(layer.name).op = with_attrs(g.node(layer.name).op, max_spikes=burst)
            scale_threshold(g, g.node(layer.name), np.array(factor))
            g.infer_types()
            graphs.append(g)
        # a variant that also changes another node runs on its own, in its place in the list
        other = next(n for n in neurons(base) if n.name != layer.name)
        g = base.copy()
        scale_threshold(g, g.node(other.name), np.array(0.5))
        g.infer_types()
        graphs.insert(2, g)
        got = stacked.run_all(graphs, layer.name)
        want = [alone.run(g, layer.name) for g in graphs]
        for (lg, sg), (lw, sw), g in zip(got, want, graphs, strict=True):
            np.testing.assert_array_equal(lg, lw)
            assert sg == sw
            np.testing.assert_array_equal(lw, SIM.run_snn(g, x, 4).logits)  # and both are whole runs
            assert sw == SIM.run_snn(g, x, 4).spikes[layer.name]


@pytest.mark.parametrize("pipeline", ["adafire{max-spikes=3,batches=1}",
                                      "compress-spikes{budget=2.0,ratios=[1.0;1.5;3.0],batches=1}"])
def test_stacked_search_chooses_what_the_one_at_a_time_one_does(pipeline: str) -> None:
    x = np.round(uniform_inputs((2, 6, 6), 32, seed=5) * 8) / 8
    key = pipeline.split("{")[0]
    outs, results = [], []
    for stack in ("true", "false"):
        ctx = context(x, timesteps=4, batch_size=32)
        outs.append(run(pipeline.replace("}", f",stack={stack}}}"), _dyadic_net("spike_count_maxpool"), ctx))
        results.append(ctx.results[key])
    assert print_graph(outs[0]) == print_graph(outs[1])
    for k in outs[0].params:
        np.testing.assert_array_equal(outs[0].params[k], outs[1].params[k])
    assert results[0] == results[1]
