"""The per-layer event/dense choice of the tvm target (``lower.input_densities``, the cost model
``cost.py`` and ``lower``).

A layer's mode comes from its input density per step: the producing neuron's spike rate, or,
for a layer that reads a pooling's, an add's or a concat's graded output (which count-ops counts
as analog), an estimate from the rates of the neurons that value is made of; the batch-1 and the
batched kernels each get their own mode.  Every mode, and a batch-1 mode that differs from the
batched one, must stay spike for spike with the torch simulator (parameters and inputs on a
power-of-two grid: every sum is exact whatever its order).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.cost import MODEL, CostModel, LayerShape, crossover  # noqa: E402
from snnc.backends.tvm.layers import Mode  # noqa: E402
from snnc.backends.tvm.lower import choose_modes, input_densities, layer_shape_of, lower  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.ir import ops as O  # noqa: E402

pytestmark = pytest.mark.tvm

T = 4
# fc reads an average pooling's graded output through a flatten; head reads an add of two
# spike maps, then a concat of two spike vectors
NET = f"""
graph @modes(%x: analog[2,8,8]) attributes {{timesteps = {T}}} {{
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {{padding = [1, 1]}} params {{weight = "c1.weight", bias = "c1.bias"}} : analog[4,8,8]
  %n1 = neuron(%c1) {{v_init = 0.5}} : spike[4,8,8]
  %c2 = conv2d(%n1) {{padding = [1, 1]}} params {{weight = "c2.weight", bias = "c2.bias"}} : analog[4,8,8]
  %n2 = neuron(%c2) {{v_init = 0.5}} : spike[4,8,8]
  %p = avgpool2d(%n2) {{kernel = [2, 2], stride = [2, 2]}} : analog[4,4,4]
  %f = flatten(%p) : analog[64]
  %fc = linear(%f) params {{weight = "fc.weight", bias = "fc.bias"}} : analog[8]
  %n3 = neuron(%fc) {{v_init = 0.5}} : spike[8]
  %a = add(%n1, %n2) : analog[4,8,8]
  %fa = flatten(%a) : analog[256]
  %fa_fc = linear(%fa) params {{weight = "fa.weight", bias = "fa.bias"}} : analog[8]
  %n4 = neuron(%fa_fc) {{v_init = 0.5}} : spike[8]
  %cat = concat(%n3, %n4) {{axis = 0}} : spike[16]
  %out_fc = linear(%cat) params {{weight = "out.weight", bias = "out.bias"}} : analog[3]
  %out = readout(%out_fc) : analog[3]
  output %out
}}
"""


def _graph():
    return dyadic(graph_from_text(NET, seed=11))


def _counts(spikes: dict[str, float]) -> dict:
    """count-ops' result as the target reads it: spikes per sample of each neuron, no SOPs."""
    return {
        "simulated": True,
        "layers": [{"name": n, "spikes_per_sample": s, "sops": 0.0, "macs": 0} for n, s in spikes.items()],
    }


def test_densities_of_spikes_and_of_graded_values():
    graph = _graph()
    rates = {"n1": 0.1, "n2": 0.3, "n3": 0.25, "n4": 0.5}  # spikes per neuron per step
    spikes = {n: r * graph.value_type(n).numel * T for n, r in rates.items()}
    d = input_densities(graph, _counts(spikes), T)
    assert d["c2"] == pytest.approx(0.1)  # the spikes of n1: exact
    assert d["fc"] == pytest.approx(1 - 0.7**4)  # a 2x2 window of n2 holds a spike
    assert d["fa_fc"] == pytest.approx(1 - 0.9 * 0.7)  # either operand of the add spikes
    assert d["out_fc"] == pytest.approx((0.25 * 8 + 0.5 * 8) / 16)  # concat: the mean rate
    assert "c1" not in d  # reads the analog input: always dense, no density
    assert input_densities(graph, None, T) == {} and input_densities(graph, _counts(spikes), 0) == {}


def test_mode_follows_the_estimated_density():
    """Each variant's mode follows the (estimated) density through the cost model.  fc (64 -> 8,
    reading pooled values) is too small for dense mode ever to pay with the fitted constants;
    a model without fixed costs and with cheap dense products puts its crossovers at ~7 % for
    the batched kernels and ~71 % for the batch-1 ones, so the three densities below give all
    three combinations of modes."""
    graph = _graph()
    fc = layer_shape_of(graph, graph.node("fc"))
    assert fc == LayerShape.linear(64, 8)
    assert crossover(fc, 32) == crossover(fc, 1) == float("inf")
    model = CostModel(
        event_call=0.0, dense_call=0.0, per_output_dense=0.0, per_product_in=1e-9, block_min_density=2.0
    )  # mode block never: this test is about the event/dense crossovers
    edge32, edge1 = crossover(fc, 32, model), crossover(fc, 1, model)
    assert 0.05 < edge32 < 0.1 and 0.65 < edge1 < 0.75
    seen = set()
    # n2 at 1 %, 10 %, 30 %: a pooled value is non-zero with p = 1 - (1 - rate)^4 = 4 %, 34 %, 76 %
    for rate in (0.01, 0.1, 0.3):
        spikes = {n: rate * graph.value_type(n).numel * T for n in ("n1", "n2", "n3", "n4")}
        d = input_densities(graph, _counts(spikes), T)
        want = tuple(Mode.DENSE if d["fc"] > edge else Mode.EVENT for edge in (edge32, edge1))
        layers = {layer.name: layer for layer in lower(graph, d, model=model)[0].layers}
        assert (layers["fc"].mode, layers["fc"].mode_batch1) == want, (rate, d["fc"])
        seen.add(want)
    assert len(seen) == 3


def test_cost_model_choices_for_representative_shapes():
    """The rule at the shapes the benchmark measured (docs/tvm.md): batch 1 is never dense; a
    linear layer's batch-1 kernels run over blocks of steps (mode block) at 15 % density or
    more, else stay event; the batched crossover grows as the layer shrinks (the model: ~28 % for
    2048x2048, ~30 % for 960x1280, ~62 % for 960x160; the measured rows put them near 22 %,
    below 48 % and near 59 %)."""
    wide, mid, proj = LayerShape.linear(2048, 2048), LayerShape.linear(960, 1280), LayerShape.linear(960, 160)
    for shape in (wide, mid, proj, LayerShape.linear(4096, 4096)):
        assert choose_modes(O.Linear(), shape, 0.95)[1] is Mode.BLOCK
        assert choose_modes(O.Linear(), shape, 0.15)[1] is Mode.BLOCK
        assert choose_modes(O.Linear(), shape, 0.1)[1] is Mode.EVENT
    assert choose_modes(O.Conv2d(), mid, 0.95)[1] is Mode.EVENT  # linear layers only
    assert 0.2 < crossover(wide, 32) < 0.35 and 0.2 < crossover(mid, 32) < 0.45 < 0.55 < crossover(proj, 32) < 0.7
    # mobilenet_v2's 960 -> 160 projections at 51 %: event in both variants; 90 %: dense batched
    assert choose_modes(O.Conv2d(), proj, 0.51) == (Mode.EVENT, Mode.EVENT)
    assert choose_modes(O.Conv2d(), proj, 0.9) == (Mode.DENSE, Mode.EVENT)
    # a 3x3 conv on a 1x1 map: one tap per input event, while the dense product pays all nine
    center = LayerShape.conv2d((512, 1, 1), (512, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1))
    assert center.synapses * 9 == center.macs == 9 * 512 * 512
    assert choose_modes(O.Conv2d(), center, 0.5) == (Mode.EVENT, Mode.EVENT)
    # the synthetic CNN's 32 -> 64 3x3 stride-2 conv on 32x32: event up to high densities
    conv = LayerShape.conv2d((32, 32, 32), (64, 16, 16), (3, 3), (2, 2), (1, 1), (1, 1))
    assert choose_modes(O.Conv2d(), conv, 0.5) == (Mode.EVENT, Mode.EVENT)
    assert MODEL.event_seconds(conv, 0.2, 1) < MODEL.dense_seconds(conv, 1)
    assert choose_modes(O.Linear(), wide, None) == (Mode.EVENT, Mode.EVENT)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The network compiled twice: every weighted layer that reads events in event mode, then in
    dense mode (densify kernel, BLAS product on the host)."""
    graph = _graph()
    weighted = ("c2", "fc", "fa_fc", "out_fc")
    out = {}
    for mode in (Mode.EVENT, Mode.DENSE):
        layer_graph, params = lower(graph, modes=dict.fromkeys(weighted, mode))
        out[mode] = compile_artifact(layer_graph, params, tmp_path_factory.mktemp(mode.value))
    return graph, weighted, out


@pytest.mark.parametrize("mode", [Mode.EVENT, Mode.DENSE])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_both_modes_spike_for_spike_on_graded_inputs(artifacts, mode, batch_size):
    """fc (pooled graded values), fa_fc (an add's graded values) and out_fc (a concat of spikes)
    in either mode: the same logits and spike counts as the torch simulator."""
    graph, weighted, dirs = artifacts
    x = grid_inputs(6, (2, 8, 8))
    ref = reference(graph, x)
    rt = EventRuntime(dirs[mode])
    modes = {p.name: p.mode for p in rt.plans if p.op.weighted}
    assert all(modes[n] is mode for n in weighted), modes
    got = rt.run(x, batch_size=batch_size)
    np.testing.assert_array_equal(got["logits"], ref.logits)
    assert_spike_counts_equal(graph, got, ref, len(x))


def test_grouped_convolutions_stay_event_at_any_density():
    """Their dense path has no GEMM (a sliding window on the host): event at any density."""
    shape = LayerShape.conv2d((64, 8, 8), (64, 8, 8), (3, 3), (1, 1), (1, 1), (1, 1), groups=64)
    full = LayerShape.linear(4096, 4096)
    assert choose_modes(O.Conv2d(groups=64), shape, 0.99) == (Mode.EVENT, Mode.EVENT)
    assert choose_modes(O.Conv1d(groups=2), full, 0.99) == (Mode.EVENT, Mode.EVENT)
    assert choose_modes(O.Conv2d(), full, 0.99) == (Mode.DENSE, Mode.EVENT)


def test_variants_in_different_modes_spike_for_spike(tmp_path):
    """Every layer that reads events dense in the batched kernels and event in the batch-1
    kernels (and the reverse): graph.json records both, the batch-1 run calls no BLAS product,
    and both runs equal the torch simulator spike for spike."""
    from snnc.backends.tvm.layers import Artifact
    from snnc.backends.tvm.steps import HostCall, step_program

    graph = _graph()
    weighted = ("c2", "fc", "fa_fc", "out_fc")
    x = grid_inputs(5, (2, 8, 8))
    ref = reference(graph, x)
    for batched, single in ((Mode.DENSE, Mode.EVENT), (Mode.EVENT, Mode.DENSE)):
        layer_graph, params = lower(
            graph, modes=dict.fromkeys(weighted, batched), modes_batch1=dict.fromkeys(weighted, single)
        )
        out = compile_artifact(layer_graph, params, tmp_path / batched.value)
        art = Artifact.read(out / "graph.json")
        layers = {layer.name: layer for layer in art.graph.layers}
        assert all((layers[n].mode, layers[n].mode_batch1) == (batched, single) for n in weighted)
        rt = EventRuntime(out)
        hosts = {b: {c.layer for c in step_program(rt.plans, b) if isinstance(c, HostCall)} for b in (None, 1)}
        assert hosts == {None if batched is Mode.DENSE else 1: set(weighted), 1 if batched is Mode.DENSE else None: set()}
        for batch_size in (1, 2):
            got = rt.run(x, batch_size=batch_size)
            np.testing.assert_array_equal(got["logits"], ref.logits)
            assert_spike_counts_equal(graph, got, ref, len(x))


def test_artifact_without_a_batch1_mode_runs_its_one_mode(artifacts, tmp_path):
    """An artifact written before the per-variant mode (no ``mode_batch1`` in graph.json) loads
    and runs both variants in its one ``mode``; a bad value is a one-line InputFileError."""
    import json
    import shutil

    from snnc.errors import InputFileError

    graph, weighted, dirs = artifacts
    old = shutil.copytree(dirs[Mode.DENSE], tmp_path / "old")
    raw = json.loads((old / "graph.json").read_text())
    for rec in raw["layers"]:
        rec.pop("mode_batch1", None)
    (old / "graph.json").write_text(json.dumps(raw))
    rt = EventRuntime(old)
    assert all(p.mode_for(1) is Mode.DENSE for p in rt.plans if p.name in weighted)
    x = grid_inputs(3, (2, 8, 8))
    np.testing.assert_array_equal(rt.run(x, batch_size=1)["logits"], reference(graph, x).logits)
    raw["layers"][1]["mode_batch1"] = "sparse"
    (old / "graph.json").write_text(json.dumps(raw))
    with pytest.raises(InputFileError, match="unknown mode_batch1 'sparse'"):
        EventRuntime(old)
