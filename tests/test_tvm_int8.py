"""int8 end to end: ``tvm-quantize`` writes the spiking layers in integer units, the tvm target
lowers them to the int8 kernels, and the artifact agrees with the torch simulator on the same
(quantised) graph spike for spike (integers are exact in float32 and in int32 alike)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, grid_inputs, reference  # noqa: E402

from snnc.backends.torch.simulator import TorchSimulator  # noqa: E402
from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.kernels import Precision  # noqa: E402
from snnc.backends.tvm.lower import lower  # noqa: E402
from snnc.backends.tvm.passes.tvm_quantize import TvmQuantization, TvmQuantize  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.ir import Graph  # noqa: E402
from snnc.ir import ops as O  # noqa: E402
from snnc.ir.verifier import verify  # noqa: E402
from snnc.pass_manager import PassContext, PassOptionError  # noqa: E402

pytestmark = pytest.mark.tvm

NET = """
graph @int8(%x: analog[2,8,8]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,8,8]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,8,8]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[8,8,8]
  %n2 = neuron(%c2) {v_init = 0.5, v_th = 0.7} : spike[8,8,8]
  %mp = spike_maxpool(%n2) {kernel = [2, 2], stride = [2, 2]} : spike[8,4,4]
  %c3 = conv2d(%mp) {padding = [1, 1]} params {weight = "c3.weight"} : analog[8,4,4]
  %n3 = neuron(%c3) {v_init = 0.5, reset = "hard"} params {v_th = "n3.v_th"} : spike[8,4,4]
  %p = avgpool2d(%n3) {kernel = [2, 2], stride = [2, 2]} : analog[8,2,2]
  %n4 = neuron(%p) {v_th = 0.25, v_init = 0.5} : spike[8,2,2]
  %f = flatten(%n4) : spike[32]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[16]
  %n5 = neuron(%fc) {v_init = 0.5} : spike[16]
  %out_fc = linear(%n5) params {weight = "out.weight", bias = "out.bias"} : analog[4]
  %out = readout(%out_fc) : analog[4]
  output %out
}
"""


def _quantized(weight_bits: int = 8) -> tuple[Graph, Graph, dict]:
    """(float graph, quantised graph, the pass's report)."""
    graph = graph_from_text(NET, seed=11)
    q = graph.copy()
    ctx = PassContext()
    TvmQuantize(weight_bits=weight_bits).apply(ctx, q)
    verify(q)
    return graph, q, ctx.results["tvm-quantize"]


def test_pass_quantizes_the_spiking_layers():
    graph, q, report = _quantized()
    result = q.analyses.get(TvmQuantization)
    assert result is not None and result.layers == ("c2", "c3", "fc")
    # the input layer, the pooling and the readout stay float32, and the report says why
    assert set(report["skipped"]) == {"c1", "out_fc"}
    assert "analog" in report["skipped"]["c1"] and "readout" in report["skipped"]["out_fc"]
    for name in result.layers:
        node = next(n for n in q.nodes if n.name == name)
        w = q.params[node.params["weight"]]
        # one scale per output channel: every row's largest |w| reaches 127
        assert np.array_equal(w, np.rint(w)) and np.all(np.abs(w).reshape(len(w), -1).max(axis=1) == 127)
        neuron = q.only_user(name)
        assert isinstance(neuron.op, O.Neuron)
        v_th = neuron.op.v_th * (q.params[neuron.params["v_th"]] if "v_th" in neuron.params else 1.0)
        # v_init = 0.5: even thresholds, so that v[0] = v_init·v_th is an integer
        assert np.all(np.asarray(v_th) % 2 == 0) and np.all(np.asarray(v_th) >= 2)
        assert report["layers"][name]["max_weight_error"] <= np.abs(
            graph.params[node.params["weight"]]
        ).max() / 254 + 1e-6
    # the float graph is untouched (params are shared copy-on-write)
    assert not np.array_equal(graph.params["c2.weight"], q.params[next(n for n in q.nodes if n.name == "c2").params["weight"]])


def test_option_is_checked_when_the_pipeline_is_parsed():
    with pytest.raises(PassOptionError, match=r"pass 'tvm-quantize': weight-bits=9 must be in 2\.\.8"):
        TvmQuantize(weight_bits=9)
    assert TvmQuantize(weight_bits=4).weight_bits == 4


@pytest.mark.parametrize("batch_size", [1, 4])
def test_int8_artifact_spike_for_spike(tmp_path, batch_size):
    _, q, _ = _quantized()
    layer_graph, params = lower(q, int8=q.analyses.get(TvmQuantization).layers)
    precisions = {layer.name: layer.precision for layer in layer_graph.layers if layer.op.weighted}
    assert precisions == {
        "c1": Precision.FLOAT32, "c2": Precision.INT8, "c3": Precision.INT8, "fc": Precision.INT8,
        "out_fc": Precision.FLOAT32,
    }  # fmt: skip
    # c2's and c3's weights bound their sums below 2^15: their kernels sum in int16
    assert {layer.name for layer in layer_graph.layers if layer.int16_sums} == {"c2", "c3"}
    compile_artifact(layer_graph, params, tmp_path)
    # inputs on a 1/4 grid: the float first layer's sums are exact too
    x = grid_inputs(6, (2, 8, 8))
    out = EventRuntime(tmp_path).run(x, batch_size=batch_size, record_state=True)
    ref = reference(q, x)
    np.testing.assert_allclose(out["logits"], ref.logits, rtol=1e-6, atol=1e-6)  # float readout layer
    assert_spike_counts_equal(q, out, ref, len(x))
    assert all(out["spikes_per_layer"][name].sum() > 0 for name in ("c2", "c3", "fc"))
    assert out["membrane"]["c2"].dtype == np.int32


WIDE = """
graph @wide(%x: analog[2,6,6]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[2,6,6]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight"} : analog[48,6,6]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[48,6,6]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight"} : analog[8,6,6]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[8,6,6]
  %f = flatten(%n2) : spike[288]
  %fc = linear(%f) params {weight = "fc.weight"} : analog[4]
  %out = readout(%fc) : analog[4]
  output %out
}
"""


def test_int16_sums_only_where_the_weights_bound_them(tmp_path):
    """c2 reads 48 channels through 9 taps: with its weights at 127 in magnitude its sums reach
    54,864, beyond int16, so the lowering leaves ``int16_sums`` off; at 60 (25,920) it sets it.
    A graph.json that claims it for weights that do not allow it is refused by the build."""
    import dataclasses

    from snnc.errors import TargetError

    graph = graph_from_text(WIDE, seed=3)
    for magnitude, expected in ((127, False), (60, True)):
        q = graph.copy()
        TvmQuantize().apply(PassContext(), q)
        node = next(n for n in q.nodes if n.name == "c2")
        q.params[node.params["weight"]] = np.sign(q.params[node.params["weight"]]) * magnitude
        layer_graph, params = lower(q, int8=q.analyses.get(TvmQuantization).layers)
        c2 = next(layer for layer in layer_graph.layers if layer.name == "c2")
        assert c2.int16_sums is expected
    forged = dataclasses.replace(
        layer_graph, layers=tuple(dataclasses.replace(layer, int16_sums=layer.name == "c2") for layer in layer_graph.layers)
    )
    params[c2.weight] = np.full_like(params[c2.weight], 127)
    with pytest.raises(TargetError, match=r"layer 'c2': int16_sums is set, but .* reaches 54864 > 32767"):
        compile_artifact(forged, params, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything is written


RESIDUAL = """
graph @res(%x: analog[2,8,8]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,8,8]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,8,8]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[8,8,8]
  %n2 = neuron(%c2) {v_init = 0.5, v_th = 0.7} : spike[8,8,8]
  %c3 = conv2d(%n2) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[8,8,8]
  %s1 = scale(%n1) {factor = 0.8} params {scale = "s1.scale"} : analog[8,8,8]
  %a1 = add(%c3, %s1) : analog[8,8,8]
  %n3 = neuron(%a1) {v_init = 0.5} : spike[8,8,8]
  %c4 = conv2d(%n3) {stride = [2, 2], padding = [1, 1]} params {weight = "c4.weight", bias = "c4.bias"} : analog[16,4,4]
  %n4 = neuron(%c4) {v_init = 0.5} : spike[16,4,4]
  %c5 = conv2d(%n4) {padding = [1, 1]} params {weight = "c5.weight"} : analog[16,4,4]
  %d = conv2d(%n3) {stride = [2, 2], padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[16,4,4]
  %a2 = add(%c5, %d) : analog[16,4,4]
  %n5 = neuron(%a2) {v_init = 0.5} : spike[16,4,4]
  %s2 = scale(%n5) : analog[16,4,4]
  %a3 = add(%s2, %c5) : analog[16,4,4]
  %n6 = neuron(%a3) {v_init = 0.5} : spike[16,4,4]
  %f = flatten(%n6) : spike[256]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[4]
  %out = readout(%fc) : analog[4]
  output %out
}
"""


def test_residual_joins_in_one_integer_scale_spike_for_spike(tmp_path):
    """A residual join (an add before a neuron) is quantised with its operands: a conv and the
    identity shortcut's per-channel scale (a1), or a conv and a strided "downsample" conv (a2),
    in one scale per join, so that their currents add in the same integer units.  a3's conv
    c5 also feeds a2: an operand with other users leaves its join float32, and c5 is a2's.
    The artifact agrees with the torch simulator on the quantised graph spike for spike."""
    graph = graph_from_text(RESIDUAL, seed=11)
    graph.params["s1.scale"] = np.abs(graph.params["s1.scale"]) + 0.5
    q = graph.copy()
    ctx = PassContext()
    TvmQuantize().apply(ctx, q)
    verify(q)
    report = ctx.results["tvm-quantize"]
    assert set(report["joins"]) == {"a1"}
    # the compile's note: the count, and the float32 layers grouped by reason
    (note,) = [n for n in ctx.notes if n.startswith("tvm-quantize:")]
    assert note.startswith("tvm-quantize: 3 of 7 weighted layers in int8, 1 residual join; float32: c1: reads analog")
    assert "d: feeds the residual join %a2" in note and "c5, fc: not followed by a neuron it alone feeds" in note
    assert report["joins"]["a1"]["operands"] == ["c3", "s1"]
    assert report["skipped"]["a2"] == "operand %c5 has other users"
    assert "feeds the residual join %a2" in report["skipped"]["d"]
    layers = q.analyses.get(TvmQuantization).layers
    assert set(layers) == {"a1", "c3", "s1", "c2", "c4"}
    # one scale for the join: c3's weights and s1's multipliers (factor folded in) on one grid;
    nodes = {n.name: n for n in q.nodes}
    c3 = graph.params[next(n for n in graph.nodes if n.name == "c3").params["weight"]]
    s1 = 0.8 * graph.params["s1.scale"]
    # the conv's rows set each channel's scale; the multipliers (int32 in the kernels) are rounded to its grid
    scale = 127 / np.abs(c3).reshape(8, -1).max(axis=1)
    assert report["joins"]["a1"]["scale_range"] == pytest.approx([scale.min(), scale.max()])
    np.testing.assert_array_equal(q.params[nodes["s1"].params["scale"]], np.rint(s1 * scale).astype(np.float32))
    np.testing.assert_array_equal(np.abs(q.params[nodes["c3"].params["weight"]]).reshape(8, -1).max(axis=1), 127)
    assert nodes["s1"].op.factor == 1.0
    layer_graph, params = lower(q, int8=layers)
    precisions = {layer.name: layer.precision for layer in layer_graph.layers}
    assert precisions["a1"] is Precision.INT8 and precisions["s1"] is Precision.INT8
    assert precisions["a2"] is Precision.FLOAT32 and precisions["d"] is Precision.FLOAT32
    compile_artifact(layer_graph, params, tmp_path)
    x = grid_inputs(6, (2, 8, 8))
    for batch_size in (1, 4):
        out = EventRuntime(tmp_path).run(x, batch_size=batch_size, record_state=True)
        ref = reference(q, x)
        np.testing.assert_allclose(out["logits"], ref.logits, rtol=1e-6, atol=1e-6)
        assert_spike_counts_equal(q, out, ref, len(x))
        assert out["spikes_per_layer"]["a1"].sum() > 0 and out["membrane"]["a1"].dtype == np.int32


def test_a_scale_by_its_factor_alone_gets_integer_multipliers():
    """The join a3 of the residual net without c5's second user: s2 (no scale parameter, factor
    1) becomes a per-channel parameter of round(s) in the join's units."""
    text = RESIDUAL.replace("%a2 = add(%c5, %d)", "%a2 = add(%d, %d2)").replace(
        '%d = conv2d(%n3) {stride = [2, 2], padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[16,4,4]',
        '%d = conv2d(%n3) {stride = [2, 2], padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[16,4,4]\n'
        '  %d2 = conv2d(%n3) {stride = [2, 2], padding = [1, 1]} params {weight = "d2.weight"} : analog[16,4,4]',
    )
    q = graph_from_text(text, seed=5)
    ctx = PassContext()
    TvmQuantize().apply(ctx, q)
    verify(q)
    joins = ctx.results["tvm-quantize"]["joins"]
    assert set(joins) == {"a1", "a2", "a3"}
    nodes = {n.name: n for n in q.nodes}
    c5 = graph_from_text(text, seed=5).params["c5.weight"]
    scale = 127 / np.abs(c5).reshape(16, -1).max(axis=1)
    np.testing.assert_array_equal(q.params[nodes["s2"].params["scale"]], np.rint(scale).astype(np.float32))
    assert joins["a3"]["scale_range"] == pytest.approx([scale.min(), scale.max()])


FOLDED = """
graph @folded(%x: analog[16]) attributes {timesteps = 16} {
  %e = encode(%x) : analog[16]
  %l1 = linear(%e) params {weight = "l1.weight", bias = "l1.bias"} : analog[64]
  %n1 = neuron(%l1) {v_init = 0.5} : spike[64]
  %l2 = linear(%n1) params {weight = "l2.weight", bias = "l2.bias"} : analog[64]
  %n2 = neuron(%l2) {v_init = 0.5} : spike[64]
  %l3 = linear(%n2) params {weight = "l3.weight"} : analog[4]
  %out = readout(%l3) : analog[4]
  output %out
}
"""


def test_rows_of_very_different_magnitude_keep_their_firing():
    """After fold-thresholds a layer's rows differ by orders of magnitude (each channel's
    threshold folded into its row).  Here l2's row c is scaled by 10^(3c/63) (1 to 1000) with
    the threshold 1: one scale per layer would round the small rows to 0 or ±1 and leave their
    neurons nearly silent; one scale per output channel keeps every row on a 127-step grid, and
    each neuron's spike count over the inputs stays within 10 % (or 3 spikes) of the float
    graph's."""
    graph = graph_from_text(FOLDED, seed=2)
    rng = np.random.default_rng(4)
    w = np.abs(rng.standard_normal((64, 64))) * 0.06 + 0.02
    rows = 10.0 ** (3 * np.arange(64) / 63)
    graph.params["l2.weight"] = (w * rows[:, None]).astype(np.float32)
    graph.params["l2.bias"] = (0.01 * rows).astype(np.float32)
    q = graph.copy()
    TvmQuantize().apply(PassContext(), q)
    assert "l2" in q.analyses.get(TvmQuantization).layers
    x = grid_inputs(12, (16,))
    float_counts = TorchSimulator(batch_size=64).run_snn(graph, x, 16, record=("n2",)).recorded["n2"].sum(axis=(0, 1))
    int_counts = TorchSimulator(batch_size=64).run_snn(q, x, 16, record=("n2",)).recorded["n2"].sum(axis=(0, 1))
    assert float_counts.min() > 0
    assert np.all(np.abs(int_counts - float_counts) <= np.maximum(0.1 * float_counts, 3))
