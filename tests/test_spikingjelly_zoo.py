"""SpikingJelly's own model zoo (``spikingjelly.activation_based.model``) imported spike for spike and
run through direct-to-event.

The models are the library's definitions, unmodified: ``spiking_resnet18``, ``sew_resnet18`` with
each connect function (ADD, AND, IAND), ``spiking_vgg11`` and ``spiking_vgg11_bn``, built with
``IFNode`` or ``LIFNode``, an ATan surrogate and ``detach_reset=True``, 10 classes, 3x32x32 input.
Their random weights are made to fire (BatchNorm statistics from the data; without BatchNorm each
layer scaled to unit output spread), then the library runs the model as its users do, in
single-step mode (one call per step) or multi-step mode (``functional.set_step_mode(model, 'm')``,
one call on the input repeated over a leading T axis, [T, N, C, H, W] -> [T, N, classes]), with
``functional.reset_net`` first, and snnc's reference simulator runs the imported graph time-major.
Every neuron layer's spikes at every step and the output at every step must be equal: exact, in
float32.  (The layer-major run computes each conv on T·N samples in channels-last layout; its last
bits differ from the library's, which flips a few spikes deep in a ResNet: see
``test_layer_major_run_of_a_deep_zoo_model_is_close_not_exact``.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from snnc.backends.torch.simulator import GraphModule, TorchSimulator
from snnc.frontend.snn import import_snn
from snnc.frontend.spiking import neuron_modules
from snnc.ir import Graph, parse_graph, print_graph, verify
from snnc.ir import ops as O
from snnc.pass_manager import CalibrationData, PassContext, PassManager

sj_model = pytest.importorskip("spikingjelly.activation_based.model")
from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg  # noqa: E402

T = 4
CLASSES = 10

ZOO: dict[str, Callable[..., nn.Module]] = {
    "spiking_resnet18": spiking_resnet.spiking_resnet18,
    "sew_resnet18_add": lambda **kw: sew_resnet.sew_resnet18(cnf="ADD", **kw),
    "sew_resnet18_and": lambda **kw: sew_resnet.sew_resnet18(cnf="AND", **kw),
    "sew_resnet18_iand": lambda **kw: sew_resnet.sew_resnet18(cnf="IAND", **kw),
    "spiking_vgg11": spiking_vgg.spiking_vgg11,
    "spiking_vgg11_bn": spiking_vgg.spiking_vgg11_bn,
}
NEURONS = {"if": neuron.IFNode, "lif": neuron.LIFNode}


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def zoo_model(name: str, cell: str, data: torch.Tensor) -> nn.Module:
    """The library's model with seeded random weights that fire on ``data`` (in eval mode)."""
    torch.manual_seed(0)
    model = ZOO[name](spiking_neuron=NEURONS[cell], surrogate_function=surrogate.ATan(), detach_reset=True,
                      num_classes=CLASSES)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def unit(m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        std = out.std()
        m.weight.div_(std)
        if m.bias is not None:
            m.bias.div_(std)
        return out / std

    with torch.no_grad():
        if norms:  # BatchNorm statistics from the data: one training-mode step records the batch's
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = None
            model.train()
            functional.reset_net(model)
            model(data)
        # the layers no BatchNorm follows (VGG's classifier; every layer of spiking_vgg11) scaled to
        # unit output spread on the data, in order (a data-based normalisation); the last one stays
        model.eval()
        layers = [m for m in model.modules() if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and not norms)]
        hooks = [m.register_forward_hook(unit) for m in layers[:-1]]
        if hooks:
            functional.reset_net(model)
            model(data)
        for h in hooks:
            h.remove()
    functional.reset_net(model)
    return model


def run_library(model: nn.Module, x: torch.Tensor, timesteps: int, mode: str
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The model run as SpikingJelly runs it: per neuron module in call order its spikes [T, N, ...],
    and the output at every step."""
    calls: list[nn.Module] = []
    record: dict[int, list[torch.Tensor]] = {}

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if id(m) not in record:
            calls.append(m)
        record.setdefault(id(m), []).append(out.detach().clone())

    handles = [m.register_forward_hook(hook) for _, m in neuron_modules(model)]
    functional.reset_net(model)
    try:
        with torch.no_grad():
            if mode == "m":
                functional.set_step_mode(model, "m")
                outputs = list(model(x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)))
            else:
                outputs = [model(x) for _ in range(timesteps)]
    finally:
        functional.reset_net(model)
        for h in handles:
            h.remove()
    spikes = [record[id(m)][0] if mode == "m" else torch.stack(record[id(m)]) for m in calls]
    return spikes, outputs


class _Recorder(GraphModule):
    """The reference simulator, keeping every neuron's spikes and the readout's input at every step."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.spikes: dict[str, list[torch.Tensor]] = {}
        self.readout_input = graph.node(graph.outputs[0]).inputs[0]
        self.outputs: list[torch.Tensor] = []

    def _neuron(self, node, current, p, state, surrogate):
        out, s = super()._neuron(node, current, p, state, surrogate)
        self.spikes.setdefault(node.name, []).append(s.clone())
        return out, s

    def step(self, node, ins, events, state, t, T, surrogate=False):
        out = super().step(node, ins, events, state, t, T, surrogate)
        if node.name == self.readout_input:
            self.outputs.append(out.clone())
        return out


def assert_spike_for_spike(model: nn.Module, x: torch.Tensor, mode: str) -> Graph:
    graph = import_snn(model, x[:1])
    sim = _Recorder(graph)
    with torch.no_grad():
        result = sim.run_snn(x, T, layer_major=False)
    theirs, outputs = run_library(model, x, T, mode)
    names = [n.name for n in graph.nodes if isinstance(n.op, O.Neuron)]
    assert len(names) == len(theirs) == len(neuron_modules(model))
    for name, b in zip(names, theirs, strict=True):
        a = torch.stack(sim.spikes[name])
        b = b.reshape(a.shape)
        assert int((a != b).sum()) == 0, f"{name}: {int((a != b).sum())} of {a.numel()} spikes differ"
        rate = float(b.mean())
        assert 0.005 < rate < 0.99, f"{name}: spike rate {rate:.4f} does not exercise the neuron"
    for t, (ours, out) in enumerate(zip(sim.outputs, outputs, strict=True)):
        assert torch.equal(ours, out), f"output at step {t}: max diff {float((ours - out).abs().max())}"
    mean: torch.Tensor | float = 0.0
    for out in outputs:  # the readout's running sum, in its order
        mean = mean + out
    assert torch.equal(result["logits"], mean / T)
    verify(graph)
    assert parse_graph(print_graph(graph)) == graph
    return graph


# ---------------------------------------------------------------------------------------
# spike for spike: a fast sample of (model, neuron, step mode) and the whole product marked slow

FAST = [
    ("sew_resnet18_add", "if", "m"),
    ("sew_resnet18_iand", "lif", "s"),
]
EVERY = [(name, cell, mode) for name in ZOO for cell in NEURONS for mode in ("s", "m")]
SLOW = [case for case in EVERY if case not in FAST]


def _check(name: str, cell: str, mode: str) -> Graph:
    x = images(2, seed=1)
    model = zoo_model(name, cell, images(8, seed=2))
    if mode == "m":
        functional.set_step_mode(model, "m")
    graph = assert_spike_for_spike(model, x, mode)
    if mode == "m":  # the import worked on a copy: the user's model keeps its step mode
        assert {m.step_mode for m in model.modules() if hasattr(m, "step_mode")} == {"m"}
    return graph


@pytest.mark.parametrize(("name", "cell", "mode"), FAST)
def test_zoo_model_spike_for_spike(name: str, cell: str, mode: str) -> None:
    graph = _check(name, cell, mode)
    ops = [n.op for n in graph.nodes]
    cnf = name.rsplit("_", 1)[1] if name.startswith("sew") else None
    muls = [op for op in ops if isinstance(op, O.Mul)]
    assert len(muls) == (8 if cnf in ("and", "iand") else 0)  # one connect per BasicBlock
    assert all(op.complement == (cnf == "iand") for op in muls)
    adds = sum(isinstance(op, O.Add) for op in ops)
    assert adds == (0 if muls else 8)  # ADD's connects or spiking_resnet's shortcuts, one per BasicBlock


@pytest.mark.slow
@pytest.mark.parametrize(("name", "cell", "mode"), SLOW)
def test_zoo_model_spike_for_spike_every_neuron_and_step_mode(name: str, cell: str, mode: str) -> None:
    _check(name, cell, mode)


@pytest.mark.slow
def test_vgg11_bn_spike_for_spike() -> None:
    """VGG's classifier (25088 -> 4096 -> 4096 -> 10, with its neurons and dropout) after an adaptive
    pooling from 1x1 to 7x7, which imports as an upsample."""
    graph = _check("spiking_vgg11_bn", "if", "s")
    assert any(isinstance(n.op, O.Upsample) and n.op.scale == (7, 7) for n in graph.nodes)


@pytest.mark.slow
def test_layer_major_run_of_a_deep_zoo_model_is_close_not_exact() -> None:
    """Layer-major runs each conv on T·N samples in channels-last layout: the currents differ from the
    time-major ones in their last bits, and a current that lands on the threshold flips a spike, which
    the next layers carry on.  Measured, not hidden: the logits stay close."""
    model = zoo_model("spiking_resnet18", "if", images(8, seed=2))
    x = images(2, seed=1)
    graph = import_snn(model, x[:1])
    sim = GraphModule(graph)
    with torch.no_grad():
        tm = sim.run_snn(x, T, layer_major=False)
        lm = sim.run_snn(x, T)
    assert lm["execution"] == "layer-major"
    assert torch.allclose(lm["logits"], tm["logits"], atol=0.5)
    # spikes flip (float order), so they are not compared here; the time-major run is the exact one
    assert abs(float(sum(lm["spikes"].values())) - float(sum(tm["spikes"].values()))) < 0.02 * float(
        sum(tm["spikes"].values()))


# ---------------------------------------------------------------------------------------
# the connect functions' ops, on their own


def test_sew_connect_functions_equal_the_library_on_spikes() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(64, 4, 3, 3, generator=g) < 0.5).float()
    b = (torch.rand(64, 4, 3, 3, generator=g) < 0.5).float()
    graph = parse_graph("""\
graph @sew(%a: spike[4,3,3], %b: spike[4,3,3]) {
  %and = mul(%a, %b) : spike[4,3,3]
  %iand = mul(%a, %b) {complement = true} : spike[4,3,3]
  %add = add(%a, %b) : analog[4,3,3]
  output %and, %iand, %add
}
""")
    verify(graph)
    outs, _ = GraphModule(graph)(a, b)
    for cnf, out in zip(("AND", "IAND", "ADD"), outs, strict=True):
        assert torch.equal(out, sew_resnet.sew_function(a, b, cnf))
    assert set(torch.unique(outs[2]).tolist()) == {0.0, 1.0, 2.0}  # ADD: graded values


def test_mul_type_rule() -> None:
    ok = "graph @m(%a: spike[2], %b: {t}) {{\n  %y = mul(%a, %b) : {r}\n  output %y\n}}\n"
    verify(parse_graph(ok.format(t="spike[2]", r="spike[2]")))
    verify(parse_graph(ok.format(t="analog[2]", r="analog[2]")))
    with pytest.raises(Exception, match=r"mul %y: operand shapes differ: spike\[2\] vs spike\[3\]"):
        verify(parse_graph(ok.format(t="spike[3]", r="spike[2]")))


SEW_BLOCK = """\
graph @sew_block(%x: analog[2,6,6]) {
  %enc = encode(%x) : analog[2,6,6]
  %s1 = neuron(%enc) {v_init = 0.3} : spike[2,6,6]
  %c1 = conv2d(%s1) {padding = [1, 1]} params {weight = "c1.weight"} : analog[2,6,6]
  %s2 = neuron(%c1) : spike[2,6,6]
  %join = JOIN : TYPE
  %c2 = conv2d(%join) {padding = [1, 1]} params {weight = "c2.weight"} : analog[3,6,6]
  %s3 = neuron(%c2) : spike[3,6,6]
  %out = readout(%s3) {mode = "spike_count"} : analog[3,6,6]
  output %out
}
"""
JOINS = {
    "ADD": ("add(%s1, %s2)", "analog[2,6,6]"),
    "AND": ("mul(%s1, %s2)", "spike[2,6,6]"),
    "IAND": ("mul(%s1, %s2) {complement = true}", "spike[2,6,6]"),
}


@pytest.mark.parametrize("cnf", JOINS)
@pytest.mark.parametrize("layer_major", [False, True])
def test_events_of_a_connect_are_counted_where_they_are_read(cnf: str, layer_major: bool) -> None:
    """The reader of a connect counts one accumulate per synapse per unit of its value: ADD's 2 counts
    two (as a burst of two), AND / IAND's 0/1 one; the connect itself is no synaptic event (mul) or
    sums two spike trains (add: an accumulate per operand event).  Counted by hand from the spikes."""
    join, typ = JOINS[cnf]
    graph = parse_graph(SEW_BLOCK.replace("JOIN", join).replace("TYPE", typ))
    rng = np.random.default_rng(0)
    graph.params = {"c1.weight": rng.uniform(-0.2, 0.9, (2, 2, 3, 3)).astype(np.float32),
                    "c2.weight": rng.uniform(-0.2, 0.6, (3, 2, 3, 3)).astype(np.float32)}
    verify(graph)
    x = torch.rand(5, 2, 6, 6, generator=torch.Generator().manual_seed(3)) * 0.8
    sim = _Recorder(graph)
    with torch.no_grad():
        out = sim.run_snn(x, 6, layer_major=layer_major)
    assert out["execution"].startswith("layer-major" if layer_major else "time-major")
    s1, s2 = (torch.stack(sim.spikes[k]) for k in ("s1", "s2"))
    joined = sew_resnet.sew_function(s1, s2, cnf)  # [T, N, C, H, W]
    fanout = torch.nn.functional.conv_transpose2d(torch.ones(1, 3, 6, 6), torch.ones(3, 2, 3, 3), padding=1)[0]
    expected = float((joined.sum((0, 1)) * fanout).sum()) / 5
    assert float(out["sops"]["c2"]) == pytest.approx(expected, rel=1e-6)
    assert float(out["macs"]["c2"]) == 0.0
    if cnf == "ADD":
        assert float(joined.max()) == 2.0  # graded events were exercised
        assert float(out["sops"]["join"]) == pytest.approx(float(s1.sum() + s2.sum()) / 5, rel=1e-6)


def test_count_ops_has_a_row_for_a_connect_product() -> None:
    graph = parse_graph(SEW_BLOCK.replace("JOIN", JOINS["IAND"][0]).replace("TYPE", JOINS["IAND"][1]))
    rng = np.random.default_rng(0)
    graph.params = {"c1.weight": rng.uniform(-0.2, 0.9, (2, 2, 3, 3)).astype(np.float32),
                    "c2.weight": rng.uniform(-0.2, 0.6, (3, 2, 3, 3)).astype(np.float32)}
    x = rng.uniform(0, 0.8, (16, 2, 6, 6)).astype(np.float32)
    ctx = PassContext(calibration=CalibrationData(x), simulator=TorchSimulator(), timesteps=4)
    PassManager.parse("count-ops{samples=16}").run(graph, ctx)
    rows = {r["name"]: r for r in ctx.results["count-ops"]["layers"]}
    assert rows["join"]["op"] == "mul" and rows["join"]["macs"] == 2 * 6 * 6
    assert rows["join"]["sops"] == 0 and rows["join"]["analog_macs"] == 0
    assert rows["c2"]["sops"] > 0 and rows["c2"]["analog_macs"] == 0


@pytest.mark.parametrize("target", ["tvm", "loihi", "nir"])
def test_targets_without_a_product_refuse_it_after_import(target: str) -> None:
    from snnc.targets import get_target

    graph = parse_graph(SEW_BLOCK.replace("JOIN", JOINS["AND"][0]).replace("TYPE", JOINS["AND"][1]))
    problems = get_target(target).import_legality(graph)
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith("mul %join: ") and "cnf='ADD'" in problems[0]
    added = parse_graph(SEW_BLOCK.replace("JOIN", JOINS["ADD"][0]).replace("TYPE", JOINS["ADD"][1]))
    assert not [p for p in get_target(target).import_legality(added) if "mul" in p]


# ---------------------------------------------------------------------------------------
# direct-to-event (snnc/passes/d2e_*.py, docs/direct_to_event.md)

ENCODE_ONLY = "canonicalize,fold-bn,d2e-encode{scheme=if},count-ops{samples=8}"
UNLABELLED = "canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate{samples=8,steps=6},count-ops{samples=8}"


def _d2e(graph: Graph, pipeline: str, x: np.ndarray, y: np.ndarray | None = None) -> tuple[Graph, PassContext]:
    ctx = PassContext(calibration=CalibrationData(x, y), simulator=TorchSimulator(), timesteps=T)
    return PassManager.parse(pipeline).run(graph, ctx), ctx


def test_sew_resnet_through_d2e_encode_reads_events_only() -> None:
    """What d2e-encode keeps (its docstring): every node and parameter name of the source, with an IF
    encoder after the direct coding; each input element sends round(x·T/m) spikes within one, m the
    calibration maximum; the first conv then accumulates input events (SOPs) instead of multiplying
    the image T times, and with SEW's ADD passing graded events on, no synaptic op multiplies."""
    model = zoo_model("sew_resnet18_add", "if", images(8, seed=2))
    x = images(8, seed=3).numpy()
    source = import_snn(model, torch.as_tensor(x[:1]))
    out, ctx = _d2e(source, ENCODE_ONLY, x)
    assert out.attrs.timesteps == T
    names = {n.name for n in out.nodes}
    assert {n.name for n in source.nodes if not isinstance(n.op, O.BatchNorm)} <= names  # BN folded into convs
    weights = {n.params["weight"] for n in source.nodes if n.op.weighted}  # the source's names (conv1.weight)
    assert len(weights) == 21 and weights <= {n.params["weight"] for n in out.nodes if n.op.weighted}
    encoder = next(n for n in out.nodes if isinstance(n.op, O.Neuron))
    assert out.producer(encoder.inputs[0]).op == O.Encode(scheme=O.Scheme.DIRECT)
    sim = _Recorder(out)
    with torch.no_grad():
        sim.run_snn(torch.as_tensor(x), T, layer_major=False)
    counts = torch.stack(sim.spikes[encoder.name]).sum(0)
    assert float((counts - torch.as_tensor(x) * T / float(x.max())).abs().max()) <= 1.0
    totals = ctx.results["count-ops"]["totals"]
    assert totals["analog_macs"] == 0 and totals["sops"] > 0
    before = TorchSimulator().run_snn(source, x, T)
    assert before.macs["conv1"] > 0 and sum(before.macs.values()) == before.macs["conv1"]  # only the first conv


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_through_direct_to_event_unlabelled(name: str) -> None:
    """d2e-calibrate's promise on each zoo model: every spiking layer fires under event input as
    often as under direct coding (per channel; here the layer means, on the calibration samples)."""
    model = zoo_model(name, "if", images(8, seed=2))
    x = images(8, seed=3).numpy()
    out, ctx = _d2e(import_snn(model, torch.as_tensor(x[:1])), UNLABELLED, x)
    layers = ctx.results["d2e-calibrate"]["layers"]
    assert len(layers) == len(neuron_modules(model))
    before = np.array([abs(v["event_rate_before"] - v["direct_rate"]) for v in layers.values()])
    after = np.array([abs(v["event_rate_after"] - v["direct_rate"]) for v in layers.values()])
    assert after.mean() < before.mean() and after.max() < 0.03, (before, after)
    totals = ctx.results["count-ops"]["totals"]
    if name == "spiking_resnet18":  # its shortcut adds sum a conv's current and spikes: an add of currents
        assert totals["analog_macs"] > 0
    else:
        assert totals["analog_macs"] == 0
    assert totals["sops"] > 0


# ---------------------------------------------------------------------------------------
# snnTorch and Norse convolutional nets (conv + pooling + neuron stacks) through direct-to-event


def test_trained_snntorch_cnn_through_direct_to_event_unlabelled() -> None:
    """examples/direct_snn's snnTorch CNN (Conv·MaxPool·Leaky twice, Linear·Leaky read by its membrane),
    trained on the digits: after d2e-encode and d2e-calibrate nothing multiplies and the accuracy stays
    within 5 points of the direct-coded source (docs/direct_to_event.md: -1.9 at T = 4 with 1437
    calibration images; the fine-tune then recovers the rest)."""
    pytest.importorskip("snntorch")
    from conftest import REPO
    from conversion_util import digits_split

    from snnc.frontend.files import load_model

    example = REPO / "examples" / "direct_snn"
    source = load_model(example / "snntorch_cnn_t4.pt", arch=f"{example / 'models.py'}:snntorch_cnn",
                        input_shape=(1, 8, 8)).graph
    x, _ = digits_split("train")
    pipeline = "canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate{samples=128,steps=8},count-ops{samples=32}"
    out, ctx = _d2e(source, pipeline, x[:128])
    xt, yt = digits_split("test")
    sim = TorchSimulator()
    acc_source = float((sim.run_snn(source, xt, T).predictions == yt).mean())
    run = sim.run_snn(out, xt, T)
    assert float((run.predictions == yt).mean()) >= acc_source - 0.05
    assert sum(run.macs.values()) == 0 and ctx.results["count-ops"]["totals"]["analog_macs"] == 0


def test_norse_cnn_spike_for_spike_and_through_direct_to_event() -> None:
    """A Norse convolutional net (Conv·LIFBoxCell·MaxPool·Conv·LIFCell·MaxPool·Linear) imports spike for
    spike as Norse runs it, then d2e-encode and d2e-calibrate leave no multiply (max pooling passes the
    spikes on; an average pooling would send the linear layer fractions, which it multiplies)."""
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    net = norse.SequentialState(
        nn.Conv2d(1, 8, 3, padding=1), norse.LIFBoxCell(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), norse.LIFCell(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    )
    with torch.no_grad():
        net[0].weight.mul_(25)
        net[3].weight.mul_(40)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    graph = import_snn(net, x[:1])
    sim = _Recorder(graph)
    with torch.no_grad():
        result = sim.run_snn(x, T, layer_major=False)
    cells = [m for m in net.modules() if isinstance(m, (norse.LIFBoxCell, norse.LIFCell))]
    record: dict[int, list[torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda m, a, o: record.setdefault(id(m), []).append(o[0].clone()))
               for m in cells]
    state, outputs = None, []
    with torch.no_grad():
        for _ in range(T):
            out, state = net(x, state)
            outputs.append(out)
    for h in handles:
        h.remove()
    names = [n.name for n in graph.nodes if isinstance(n.op, O.Neuron)]
    for name, cell in zip(names, cells, strict=True):
        ours, theirs = torch.stack(sim.spikes[name]), torch.stack(record[id(cell)])
        assert torch.equal(ours, theirs.reshape(ours.shape))
        assert 0.005 < float(theirs.mean()) < 0.99
    for ours, out in zip(sim.outputs, outputs, strict=True):
        assert torch.equal(ours, out)
    assert torch.allclose(result["logits"], torch.stack(outputs).mean(0), atol=1e-6)
    event, ctx = _d2e(graph, "canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate{samples=8},count-ops",
                      x.numpy())
    layers = ctx.results["d2e-calibrate"]["layers"]
    assert all(abs(v["event_rate_after"] - v["direct_rate"]) < 0.03 for v in layers.values()), layers
    assert ctx.results["count-ops"]["totals"]["analog_macs"] == 0


@pytest.mark.slow
def test_sew_resnet_through_the_whole_direct_to_event_pipeline() -> None:
    """The passes of the named ``direct-to-event`` pipeline, fine-tune included (short: 2 epochs on 16
    images labelled with the source's own predictions), on SEW-ResNet-18 with IAND: the fine-tune
    trains the event graph (its training loss falls) and the result still multiplies nothing."""
    from snnc.pass_manager import parse_pipeline

    model = zoo_model("sew_resnet18_iand", "if", images(8, seed=2))
    x = images(16, seed=3).numpy()
    source = import_snn(model, torch.as_tensor(x[:1]))
    y = TorchSimulator().run_snn(source, x, T).predictions
    pipeline = ("canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate{samples=16,steps=6},"
                "d2e-finetune{epochs=2,batch-size=8},count-ops{samples=16}")
    assert [p.name for p in parse_pipeline(pipeline)] == [p.name for p in parse_pipeline("direct-to-event")]
    out, ctx = _d2e(source, pipeline, x, y)
    history = ctx.results["d2e-finetune"]["history"]
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"], history
    assert ctx.results["count-ops"]["totals"]["analog_macs"] == 0
    assert out.attrs.timesteps == T
