"""Loihi on branching networks: residual joins (several synapse groups into one population, shallower
branches delayed), fan-out (one population feeding several synapse layers), mapping onto cores, the
bit-accurate simulation spike for spike against the quantised graph, what netx cannot express, a
torchvision resnet18 end to end, and refusals grouped by reason with one line per node."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, ir, rel_diff, run
from loihi_util import assert_spike_for_spike, synapse_groups

from snnc.backends.loihi.bitacc import DELAY_BITS, LayerKind
from snnc.backends.loihi.lower import lower
from snnc.backends.loihi.mapping import DoesNotFitError, Mapping, network_from_layers
from snnc.backends.loihi.target import LoihiTarget, run_net
from snnc.ir import print_graph
from snnc.pass_manager import PipelineFailure
from snnc.targets import TargetOptions

T = 6
LOWERING = "loihi-legalize,loihi-quantize,loihi-map"

# a basic block (identity shortcut through a per-channel scale of spikes, as ann-to-loihi leaves it) and
# a downsampling block (1x1 stride-2 conv shortcut), then a linear readout
RESIDUAL = """
graph @res(%x: analog[2,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %c1 = conv2d(%n) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[4,6,6]
  %n1 = neuron(%c1) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[4,6,6]
  %s = scale(%n) params {scale = "s.scale"} : analog[4,6,6]
  %a = add(%c2, %s) : analog[4,6,6]
  %n2 = neuron(%a) {reset = "hard", v_th = 0.5} : spike[4,6,6]
  %d = conv2d(%n2) {stride = [2, 2], padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[8,3,3]
  %ds = conv2d(%n2) {stride = [2, 2]} params {weight = "ds.weight"} : analog[8,3,3]
  %a2 = add(%d, %ds) : analog[8,3,3]
  %n3 = neuron(%a2) {reset = "hard", v_th = 0.5} : spike[8,3,3]
  %f = flatten(%n3) : spike[72]
  %o = linear(%f) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""

# one population read by two convs (fan-out), their populations joined by a concat, and a flat
# residual: the linear layer's neurons also get the flattened spikes of %n through a diagonal synapse
FANOUT = """
graph @fan(%x: analog[1,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[1,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[3,6,6]
  %ca = conv2d(%n) {padding = [1, 1]} params {weight = "ca.weight", bias = "ca.bias"} : analog[2,6,6]
  %na = neuron(%ca) {reset = "hard", v_th = 0.4} : spike[2,6,6]
  %cb = conv2d(%n) {stride = [1, 1]} params {weight = "cb.weight"} : analog[2,4,4]
  %nb = neuron(%cb) {reset = "hard", v_th = 0.4} : spike[2,4,4]
  %fa = flatten(%na) : spike[72]
  %fb = flatten(%nb) : spike[32]
  %la = linear(%fa) params {weight = "la.weight", bias = "la.bias"} : analog[16]
  %lb = linear(%fb) params {weight = "lb.weight"} : analog[16]
  %sum = add(%la, %lb) : analog[16]
  %m = neuron(%sum) {reset = "hard", v_th = 0.3} : spike[16]
  %o = linear(%m) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _inputs(shape: tuple[int, ...], n: int = 48, seed: int = 1) -> np.ndarray:
    # on the graded grid of the quantiser (levels 16 divide 64): the chip sees exactly these inputs
    return (np.random.default_rng(seed).integers(0, 17, (n, *shape)) / 16).astype(np.float32)


def _residual_graph():
    shortcut = (np.random.default_rng(5).standard_normal((8, 4, 1, 1)) * 0.5).astype(np.float32)
    return graph_from_text(RESIDUAL, seed=3, params={"ds.weight": shortcut})


def _spike_for_spike(q, x: np.ndarray) -> None:
    assert_spike_for_spike(q, x, T)


def test_residual_adds_legalise_to_joins() -> None:
    """The identity shortcut's scale of spikes becomes a one-to-one synapse (a depthwise 1x1 conv of the
    scale's weights) into the block's output population; a conv shortcut stays as it is; the function
    is unchanged."""
    g = _residual_graph()
    x = _inputs((2, 6, 6))
    out = run("loihi-legalize", g, context(x, timesteps=T))
    text = print_graph(out)
    assert '%n_syn = conv2d(%n) {groups = 4} params {weight = "n_syn.weight"} : analog[4,6,6]' in text
    assert "%a = add(%c2, %n_syn) : analog[4,6,6]" in text and "%a2 = add(%d, %ds) : analog[8,3,3]" in text
    np.testing.assert_array_equal(out.params["n_syn.weight"].reshape(-1), g.params["s.scale"])
    assert rel_diff(SIM.run_snn(g, x, T).logits, SIM.run_snn(out, x, T).logits) < 1e-5


def test_residual_net_maps_and_simulates_spike_for_spike() -> None:
    g = _residual_graph()
    x = _inputs((2, 6, 6))
    ctx = context(x, timesteps=T)
    q = run(LOWERING, g, ctx)
    net = lower(q)
    joins = {layer.name: layer for layer in net.layers if layer.has_neurons and len(synapse_groups(net, layer)) > 1}
    assert set(joins) == {"n2", "n3"}
    # the identity branch skips two synaptic layers, the main branch's last conv one: delayed by one step
    n2 = synapse_groups(net, joins["n2"])
    assert [s for s, _ in n2] == ["n1", "n"] and [g.delay for _, g in n2] == [0, 1]
    assert n2[1][1].kind is LayerKind.CONV and n2[1][1].groups == 4
    n3 = synapse_groups(net, joins["n3"])
    assert [s for s, _ in n3] == ["n2", "n2"] and [g.delay for _, g in n3] == [0, 0]
    # one weight unit per population: the largest mantissa of all its groups (and exponent classes) ends the
    # 8-bit range
    layer = joins["n3"]
    assert max(np.abs(g.weight_array).max() for g in (layer, *layer.extra)) in (254, 256)
    _spike_for_spike(q, x)
    mapping = q.analyses.get(Mapping)
    assert isinstance(mapping, Mapping) and not mapping.violations()
    edges = network_from_layers(net.layers).edges
    into_n2 = sorted((e.src, e.delay_bits) for e in edges if e.dst == "n2")
    assert into_n2 == [("n", DELAY_BITS), ("n1", 0)]
    assert {p.population for c in mapping.cores for p in c.pieces} == {"n", "n1", "n2", "n3", "o"}
    for layer in net.layers:  # every neuron of every population on exactly one core
        if layer.has_neurons:
            ranges = mapping.populations[layer.name]
            assert ranges[0][0] == 0 and ranges[-1][1] == layer.neurons
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_bit_accurate_chip_stays_close_to_the_float_snn() -> None:
    """The chip differs from the float SNN by quantisation only (8-bit weights, integer thresholds and
    biases; the chip equals the quantised graph spike for spike).  With random weights at T = 6 one
    flipped spike moves a logit by a sixth of a spike's weight, so the bound is loose: measured 94 %
    agreement and 18 % mean relative logit error on these 96 inputs (88 % and 18 % on 256 others)."""
    g = _residual_graph()
    x = _inputs((2, 6, 6), n=96, seed=4)
    ctx = context(x, timesteps=T)
    float_snn = SIM.run_snn(g, x, T)
    chip = run_net(lower(run(LOWERING, g, ctx)), x, T)
    error = np.abs(float_snn.logits - chip.logits).mean() / np.abs(float_snn.logits).mean()
    assert error < 0.25
    assert (float_snn.predictions == chip.predictions).mean() >= 0.85


def test_fan_out_and_a_flat_join_simulate_spike_for_spike() -> None:
    g = graph_from_text(FANOUT, seed=11)
    x = _inputs((1, 6, 6), seed=2)
    q = run(LOWERING, g, context(x, timesteps=T))
    net = lower(q)
    names = [layer.name for layer in net.layers]
    m = net.layers[names.index("m")]
    assert m.kind is LayerKind.DENSE and m.extra[0].kind is LayerKind.DENSE
    assert [s for s, _ in synapse_groups(net, m)] == ["fa", "fb"]  # the flattens of the two branches
    readers_of_n = [layer.name for layer in net.layers if names.index("n") in layer.inputs or
                    (not layer.inputs and names.index(layer.name) == names.index("n") + 1)]
    assert readers_of_n == ["na", "nb"]
    _spike_for_spike(q, x)
    edges = network_from_layers(net.layers).edges
    assert sorted(e.dst for e in edges if e.src == "n") == ["na", "nb"]  # one population, two axon groups


def test_target_writes_mapping_and_results_and_names_what_netx_cannot_express(tmp_path: Path) -> None:
    g = _residual_graph()
    x = _inputs((2, 6, 6))
    ctx = context(x, timesteps=T)
    q = run(LOWERING, g, ctx)
    report = LoihiTarget("loihi", TargetOptions(board="kapoho-point")).compile(q, tmp_path, ctx)
    assert not (tmp_path / "network.net").exists() and (tmp_path / "mapping.json").exists()
    reason = report["netx"]["reason"]
    assert reason == ("layer 'n2' sums 2 synapse groups (from 'n1', 'n'): a residual join, which the lava-dl netx "
                      "format cannot express (netx connects each layer to the one before it only)")
    assert f"loihi: network.net not written: {reason}" in ctx.notes
    assert report["chips"] == 1 and report["board_chips"] >= 1 and report["fits_board"] is True
    assert report["measured"]["synaptic_ops_per_inference"] > 0


def test_refusals_are_grouped_by_reason_one_line_per_node() -> None:
    """Thirty soft-reset neurons: one line for the reason and its fix, one per node (the first twelve),
    a count for the rest; no line is long."""
    body = "\n".join(
        f'  %l{i} = linear(%{"e" if i == 0 else f"n{i - 1}"}) params {{weight = "l{i}.weight"}} : analog[4]\n'
        f"  %n{i} = neuron(%l{i}) : spike[4]" for i in range(30)
    )
    text = (f"graph @deep(%x: analog[4]) attributes {{timesteps = 2}} {{\n  %e = encode(%x) : analog[4]\n{body}\n"
            "  %r = readout(%n29) : analog[4]\n  output %r\n}\n")
    g = graph_from_text(ir(text))
    with pytest.raises(PipelineFailure) as e:
        run("loihi-legalize", g, context(np.zeros((2, 4), np.float32), timesteps=2))
    lines = str(e.value).splitlines()
    assert lines[0].endswith("loihi-legalize: 30 problems in 30 nodes, 1 reason:")
    assert lines[1] == ("  soft reset; Loihi's CUBA neuron resets to 0: convert with lower-neurons{reset=hard} "
                        "(the ann-to-loihi pipeline does) (30 nodes):")
    assert lines[2:14] == [f"    neuron %n{i}" for i in range(12)] and lines[14:] == ["    ... and 18 more"]
    assert max(len(line) for line in lines) < 160


def test_target_legality_is_grouped_too() -> None:
    g = _residual_graph()
    problems = LoihiTarget("loihi").legality(g)
    assert len(problems) == 1
    lines = problems[0].splitlines()
    assert lines[0].startswith("loihi: ") and all(len(line) < 200 for line in lines)
    assert any(line.strip().startswith("neuron %n2") for line in lines)


# ----------------------------------------------------------------------------------------------------
# torchvision resnet18 end to end

tvm = pytest.importorskip("torchvision.models")


def _resnet18_report(size: int, samples: int, tmp_path: Path, board: str | None = None) -> tuple[dict, float]:
    import torch

    from snnc.frontend import import_module

    torch.manual_seed(0)
    model = tvm.resnet18(weights=None, num_classes=10)
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(100 + i)))
    model.eval()
    x = np.random.default_rng(0).random((samples, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    t0 = time.perf_counter()
    g = import_module(model, torch.randn(1, 3, size, size))
    ctx = context(x, y, timesteps=4, batch_size=samples)
    target = LoihiTarget("loihi", TargetOptions(board=board))
    pipeline = target.default_pipeline(g, True)
    assert pipeline is not None
    q = run(pipeline, g, ctx)
    report = target.compile(q, tmp_path, ctx)
    return report, time.perf_counter() - t0


def test_resnet18_reduced_input_compiles_with_a_chip_count(tmp_path: Path) -> None:
    """torchvision resnet18 at 3x8x8 (the network is the same; the maps are smaller): legalised,
    quantised, mapped, simulated bit-accurately; the report says it fits Kapoho Point."""
    report, seconds = _resnet18_report(8, 16, tmp_path, board="kapoho-point")
    print(f"resnet18 3x8x8: {report['cores']} cores, {report['chips']} chips in {seconds:.1f} s")
    assert report["chips"] >= 1 and report["cores"] >= report["cores_lower_bound"] >= 1
    assert report["fits_board"] is True
    assert report["netx"]["written"] is False and "residual join" in report["netx"]["reason"]
    assert report["measured"]["agreement_with_quantised_snn"] >= 0.9


@pytest.mark.slow
def test_resnet18_3x32x32_compiles_and_reports_the_boards_it_fits(tmp_path: Path) -> None:
    report, seconds = _resnet18_report(32, 32, tmp_path)
    print(f"resnet18 3x32x32: {report['cores']} cores, {report['chips']} chips in {seconds:.1f} s")
    assert report["chips"] >= 1 and report["cores"] >= report["cores_lower_bound"]
    fits = report["fits_boards"]
    assert fits["hala_point"] is True and fits["oheo_gulch"] is (report["chips"] <= 1)
    if not fits["oheo_gulch"]:
        with pytest.raises(DoesNotFitError, match=r"^the model needs \d+ cores on \d+ loihi2 chips"):
            _resnet18_report(32, 32, tmp_path / "again", board="oheo_gulch")


def test_the_cli_one_line_refusal_numbers_its_reasons(tmp_path: Path) -> None:
    """The CLI joins a refusal's lines with '; ' (one line, exit status 2); with several reasons, each
    is numbered, so that the reader sees where one reason's nodes end and the next reason begins."""
    import subprocess
    import sys

    from snnc.ir import save_graph

    text = ir("""
    graph @two(%x: analog[4]) attributes {timesteps = 2} {
      %e = encode(%x) : analog[4]
      %l = linear(%e) params {weight = "l.weight"} : analog[4]
      %n = neuron(%l) : spike[4]
      %l2 = linear(%n) params {weight = "l2.weight"} : analog[4]
      %n2 = neuron(%l2) : spike[4]
      %l3 = linear(%n2) params {weight = "l3.weight"} : analog[4]
      %n3 = neuron(%l3) {reset = "hard", max_spikes = 3} : burst<3>[4]
      %r = readout(%n3) : analog[4]
      output %r
    }
    """)
    save_graph(graph_from_text(text), tmp_path / "model")
    proc = subprocess.run([sys.executable, "-m", "snnc.cli", "compile", str(tmp_path / "model" / "graph.snnir"),
                           "--target", "loihi", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert ("2 reasons: [1/2] soft reset; Loihi's CUBA neuron resets to 0: convert with lower-neurons{reset=hard} "
            "(the ann-to-loihi pipeline does) (2 nodes): neuron %n; neuron %n2; [2/2] bursts; ") in lines[0]
    assert "convert without burst neurons (1 node): neuron %n3 (max_spikes=3)" in lines[0]
