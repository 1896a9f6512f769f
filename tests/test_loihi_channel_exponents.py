"""Per-channel weight exponents on Loihi (``loihi-quantize{channel-exponents=K}``): output channels whose
weights are far below their layer's largest get a mantissa grid up to 2^K times finer, run on the chip as
one synapse group per weight exponent into the same population.  Tests: the fixed-point split (exact,
each channel on its own grid), the lowering back into mantissas and exponents, a depthwise layer with one
loud channel and a residual join through the pipeline, spike for spike on the bit-accurate chip and
closer to the float SNN than one grid, the mapping charging the synapses once, and netx's refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, run
from loihi_util import assert_spike_for_spike

from snnc.backends.loihi.fixed_point import quantize_weights
from snnc.backends.loihi.lower import channel_exponents, lower
from snnc.backends.loihi.mapping import Mapping, network_from_layers
from snnc.backends.loihi.netx import write_netx
from snnc.errors import UnsupportedError
from snnc.pass_manager import PassManager

T = 6

# a depthwise conv whose channel 0 has 30 times the weights of the others (as folded per-channel
# thresholds leave mobilenet_v2's depthwise layers), then a residual join of a 3x3 conv and the stem
LOUD_CHANNEL = """
graph @cx(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %d = conv2d(%n) {padding = [1, 1], groups = 4} params {weight = "d.weight", bias = "d.bias"} : analog[4,6,6]
  %nd = neuron(%d) {reset = "hard", v_th = 0.3} : spike[4,6,6]
  %p = conv2d(%nd) {padding = [1, 1]} params {weight = "p.weight", bias = "p.bias"} : analog[4,6,6]
  %s = scale(%n) params {scale = "s.scale"} : analog[4,6,6]
  %a = add(%p, %s) : analog[4,6,6]
  %na = neuron(%a) {reset = "hard", v_th = 0.5} : spike[4,6,6]
  %f = flatten(%na) : spike[144]
  %o = linear(%f) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _graph():
    rng = np.random.default_rng(7)
    d = np.abs(rng.standard_normal((4, 1, 3, 3))) * 0.3 + 0.05
    d[0] *= 30.0  # one loud channel sets the layer's grid
    return graph_from_text(LOUD_CHANNEL, seed=2, params={"d.weight": d})


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    # on the quantiser's graded grid (levels 16 divide its 64): the chip sees exactly these inputs
    return (np.random.default_rng(seed).integers(0, 17, (n, 2, 6, 6)) / 16).astype(np.float32)


def _lowering(k: int, netx_chain: bool = True) -> str:
    return f"loihi-legalize,loihi-quantize{{channel-exponents={k},netx-chain={str(netx_chain).lower()}}},loihi-map"


def test_each_channel_gets_its_own_grid_and_the_integers_are_exact() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3))
    w *= np.array([1.0, 1 / 5, 1 / 40, 1e-4]).reshape(-1, 1, 1, 1)
    one = quantize_weights(w)
    per = quantize_weights(w, channel_exp_max=7)
    assert one.channel_exp is None and one.unit_exp == 0
    # channel 0 sets the grid (exponent K' = 7 above the finest); the others are 2^2, 2^5, 2^7 finer
    assert per.unit_exp == 7 and per.channel_exp.tolist() == [7, 5, 2, 0]
    np.testing.assert_allclose(per.scale * 2**7, one.scale, rtol=1e-12)
    for c in range(4):
        # each channel within half a step of its own 8-bit grid (2^-k of the layer's)
        step = one.scale * 2 / 2 ** (7 - per.channel_exp[c])
        err = np.abs(w[c] - per.w_int[c] * per.scale).max()
        assert err <= step / 2 * (1 + 1e-9), c
    # the loud channel is quantised exactly as with one grid; channel 2 is 32 times finer
    np.testing.assert_array_equal(per.w_int[0], one.w_int[0] * 2**7)
    assert np.abs(w[2] - per.w_int[2] * per.scale).max() < np.abs(w[2] - one.w_int[2] * one.scale).max() / 8
    # the lowering finds mantissas and exponents that give back exactly these integers
    exps = channel_exponents(per.w_int)
    assert exps is not None and (exps <= per.channel_exp).all()
    mant = per.w_int >> exps.reshape(-1, 1, 1, 1)
    assert mant.min() >= -256 and mant.max() <= 254 and not (mant % 2).any()
    np.testing.assert_array_equal(mant << exps.reshape(-1, 1, 1, 1), per.w_int)
    # a population's synapse groups share the unit: a fixed K' coarser than a channel wants clips it
    top = quantize_weights(w, channel_exp_max=7, channel_exp_top=3)
    assert top.unit_exp == 3 and top.channel_exp.tolist() == [3, 1, 0, 0]


def test_lowering_refuses_weights_no_exponent_expresses() -> None:
    assert channel_exponents(np.array([[2, 4], [512, 1016]])).tolist() == [0, 2]
    assert channel_exponents(np.array([[3, 4]])) is None  # odd: not an 8-bit mantissa in netx form
    assert channel_exponents(np.array([[254 << 8]])) is None  # beyond weight_exp 7


def test_option_is_checked_when_the_pipeline_is_parsed() -> None:
    with pytest.raises(Exception, match=r"channel-exponents=8 must be in 0\.\.7"):
        PassManager.parse("loihi-quantize{channel-exponents=8}")


def test_loud_channel_net_runs_spike_for_spike_and_closer_to_the_float_snn() -> None:
    g = _graph()
    x = _inputs(64)
    ctx = context(x, timesteps=T)
    legal = run("loihi-legalize", g, context(x, timesteps=T))
    float_logits = SIM.run_snn(legal, x, T).logits
    q = run(_lowering(7), g, ctx)
    report = ctx.results["loihi-quantize"]["layers"]
    assert report["d"]["weight_exponents"] == {"0": 3, "4": 1}  # channel 0: 2^4 coarser than the others
    net = lower(q)
    nd = next(layer for layer in net.layers if layer.name == "nd")
    assert [(g.weight_exp, g.exp_class) for g in (nd, *nd.extra)] == [(0, False), (4, True)]
    # the join: each operand's groups, all into one population, every group reading its own source
    na = next(layer for layer in net.layers if layer.name == "na")
    names = [layer.name for layer in net.layers]
    groups = (na, *na.extra)
    assert len(groups) >= 2 and [names[k] for k in na.inputs][0] == "nd"
    assert_spike_for_spike(q, x, T)
    # the mapping counts the depthwise synapses once: one edge n -> nd
    edges = network_from_layers(net.layers).edges
    assert [(e.src, e.dst) for e in edges if e.dst == "nd"] == [("n", "nd")]
    mapping = q.analyses.get(Mapping)
    assert isinstance(mapping, Mapping) and not mapping.violations()
    # one grid per population leaves channels 1..3 of %d about 8 steps per weight: further from the float SNN
    q0 = run(_lowering(0), g, context(x, timesteps=T))
    err = {name: np.abs(SIM.run_snn(graph, x, T).logits - float_logits).mean() for name, graph in
           (("one grid", q0), ("per channel", q))}
    assert err["per channel"] < 0.7 * err["one grid"], err


def test_netx_names_the_layer_with_several_exponents(tmp_path: Path) -> None:
    g = graph_from_text(
        """
        graph @chain(%x: analog[2,6,6]) attributes {timesteps = 6} {
          %e = encode(%x) {scheme = "rate"} : spike[2,6,6]
          %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
          %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
          %d = conv2d(%n) {padding = [1, 1], groups = 4} params {weight = "d.weight"} : analog[4,6,6]
          %nd = neuron(%d) {reset = "hard", v_th = 0.3} : spike[4,6,6]
          %f = flatten(%nd) : spike[144]
          %o = linear(%f) params {weight = "o.weight"} : analog[3]
          %r = readout(%o) : analog[3]
          output %r
        }
        """,
        seed=3,
        params={"d.weight": _graph().params["d.weight"]},
    )
    x = _inputs(16)
    layers = lower(run(_lowering(7, netx_chain=False), g, context(x, timesteps=T))).layers
    with pytest.raises(UnsupportedError, match=r"layer 'nd' has per-channel weight exponents \[0, 4\]"):
        write_netx(tmp_path / "n.net", layers)
    # by default a chain keeps one grid per population: netx loads it
    ctx = context(x, timesteps=T)
    chain = run("loihi-legalize,loihi-quantize,loihi-map", g, ctx)
    assert ctx.results["loihi-quantize"]["channel_exponents"] == 0
    write_netx(tmp_path / "n0.net", lower(chain).layers)
