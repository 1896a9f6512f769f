"""Direct-coded SNNs from snnTorch, SpikingJelly and Norse, imported and simulated spike for spike.

Every test runs a model the way its library runs it and the imported graph in snnc's reference
simulator, and compares the output of every neuron layer at every step: exact equality, in float32
(snnc performs each library's float operations in the library's order, so there is no tolerance).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from snnc.backends.torch.ops import neuron_param
from snnc.backends.torch.simulator import GraphModule
from snnc.errors import UnsupportedError
from snnc.frontend.snn import import_snn
from snnc.frontend.spiking import neuron_modules, register_neuron_mapping
from snnc.ir import Graph, parse_graph, print_graph
from snnc.ir import ops as O

snn = pytest.importorskip("snntorch")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
norse = pytest.importorskip("norse.torch")
from conftest import DIGITS, REPO  # noqa: E402
from norse.torch.functional.reset import reset_subtract  # noqa: E402
from spikingjelly.activation_based import layer as sj_layer  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

EXAMPLE = REPO / "examples" / "direct_snn"


def _load_example_models():
    spec = importlib.util.spec_from_file_location("direct_snn_models", EXAMPLE / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _load_example_models()


# ---------------------------------------------------------------------------------------
# running both sides


class _Recorder(GraphModule):
    """The reference simulator, also keeping every neuron's output (s·out_scale, and v) at every step."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.spikes: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}

    def _neuron(self, node, current, p, state, surrogate):
        out, s = super()._neuron(node, current, p, state, surrogate)
        self.spikes.setdefault(node.name, []).append(s * neuron_param(node.op, p, "out_scale", current.dim()))
        self.outputs.setdefault(node.name, []).append(out)
        return out, s


def run_snnc(graph: Graph, x: torch.Tensor, timesteps: int) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
    """Per neuron node in graph order: spikes [T, N, ...] and emitted values [T, N, ...]; plus run_snn's result."""
    sim = _Recorder(graph)
    with torch.no_grad():
        result = sim.run_snn(x, timesteps)
    names = [n.name for n in graph.nodes if isinstance(n.op, O.Neuron)]
    return ([torch.stack(sim.spikes[n]) for n in names], [torch.stack(sim.outputs[n]) for n in names], result)


def run_source(model: nn.Module, run: Callable, x: torch.Tensor, timesteps: int):
    """Per mapped neuron module in call order: its spikes [T, N, ...]; plus the model's per-step outputs."""
    calls: list[nn.Module] = []
    record: dict[int, list[torch.Tensor]] = {}

    def hook(module, args, out):
        if id(module) not in record:
            calls.append(module)
        spikes = out[0] if isinstance(out, tuple) else out
        record.setdefault(id(module), []).append(spikes.detach().clone())

    handles = [m.register_forward_hook(hook) for _, m in neuron_modules(model)]
    try:
        with torch.no_grad():
            outputs = run(model, x, timesteps)
    finally:
        for h in handles:
            h.remove()
    per_layer = []
    for m in calls:
        steps = record[id(m)]  # one call per step, or one multi-step call on [T, N, ...]
        per_layer.append(steps[0] if len(steps) == 1 and timesteps != 1 else torch.stack(steps))
    return per_layer, outputs


def assert_spike_for_spike(model: nn.Module, run: Callable, x: torch.Tensor, timesteps: int,
                           min_rate: float = 0.005) -> Graph:
    """Import ``model``, run both sides, and require equal spikes in every layer at every step."""
    graph = import_snn(model, x[:1])
    ours, emitted, result = run_snnc(graph, x, timesteps)
    theirs, outputs = run_source(model, run, x, timesteps)
    assert len(ours) == len(theirs) == len(neuron_modules(model))
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        b = b.reshape(a.shape)
        mismatches = int((a != b).sum())
        assert mismatches == 0, f"layer {i}: {mismatches} of {a.numel()} spikes differ"
        # the case must exercise the dynamics: some spikes, not all
        rate = float((b != 0).float().mean())
        assert min_rate < rate < 0.99, f"layer {i}: spike rate {rate:.4f} does not exercise the neuron"
    last = graph.producer(graph.node(graph.outputs[0]).inputs[0])
    if isinstance(last.op, O.Neuron):  # the per-step output itself (spikes or membrane) is exact too
        assert torch.equal(emitted[-1], torch.stack(list(outputs)).reshape(emitted[-1].shape))
    source_logits = torch.stack(list(outputs)).mean(0)
    assert torch.allclose(result["logits"], source_logits, atol=1e-5, rtol=0)
    return graph


# ---------------------------------------------------------------------------------------
# trained models of each library (examples/direct_snn), the whole digits test set

CHECKPOINTS = sorted(p.stem for p in EXAMPLE.glob("*_t*.pt"))


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(DIGITS / "test.npz")
    return torch.as_tensor(data["x"]), torch.as_tensor(data["y"])


def test_every_architecture_has_trained_checkpoints():
    assert {c.rsplit("_t", 1)[0] for c in CHECKPOINTS} == set(models.ARCHITECTURES)
    for c in CHECKPOINTS:
        assert (EXAMPLE / f"{c}.pt").stat().st_size < 200_000


@pytest.mark.parametrize("key", CHECKPOINTS)
def test_trained_model_spike_for_spike(key: str, digits_test):
    x, y = digits_test
    name, timesteps = key.rsplit("_t", 1)
    timesteps = int(timesteps)
    factory, run = models.ARCHITECTURES[name]
    model = factory()
    model.load_state_dict(torch.load(EXAMPLE / f"{key}.pt", weights_only=True))
    model.eval()
    graph = assert_spike_for_spike(model, run, x, timesteps)
    # the accuracy snnc reports is the one the library gets, and what train.py measured
    metrics = json.loads((EXAMPLE / "metrics.json").read_text())[key]
    ours = float((run_snnc(graph, x, timesteps)[2]["logits"].argmax(1) == y).float().mean())
    assert ours == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert ours > 0.8


# ---------------------------------------------------------------------------------------
# small random-weight cases, one per neuron class and option


def _net(neuron: Callable[[], nn.Module], gain: float = 3.0, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), neuron(), nn.Flatten(), nn.Linear(6 * 8 * 8, 10), neuron())
    with torch.no_grad():
        net[0].weight.mul_(gain)
        net[3].weight.mul_(gain)
    return net.eval()


@pytest.fixture(scope="module")
def x_small() -> torch.Tensor:
    return torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


SNNTORCH_LEAKY = {
    "subtract-delay": {},
    "zero-delay": {"reset_mechanism": "zero"},
    "none": {"reset_mechanism": "none"},
    "subtract-now": {"reset_delay": False},
    "zero-now": {"reset_delay": False, "reset_mechanism": "zero"},
    "graded-threshold": {"graded_spikes_factor": 0.5, "threshold": 0.7},
}


@pytest.mark.parametrize("case", SNNTORCH_LEAKY)
def test_snntorch_leaky(case: str, x_small):
    kw = SNNTORCH_LEAKY[case]
    assert_spike_for_spike(_net(lambda: snn.Leaky(beta=0.85, init_hidden=True, **kw)),
                           models._run_snntorch, x_small, 8)


def test_snntorch_leaky_per_channel_learned_parameters(x_small):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), snn.Leaky(beta=torch.rand(16) * 0.5 + 0.4,
                        threshold=torch.rand(16) + 0.5, learn_beta=True, learn_threshold=True, init_hidden=True))
    with torch.no_grad():
        net[1].weight.mul_(3)
    graph = assert_spike_for_spike(net, models._run_snntorch, x_small, 8)
    neuron = next(n for n in graph.nodes if isinstance(n.op, O.Neuron))
    assert set(neuron.params) == {"v_th", "beta"} and graph.params[neuron.params["beta"]].shape == (16,)


@pytest.mark.parametrize("kw", [{}, {"reset_mechanism": "zero"}, {"reset_delay": False},
                                {"reset_delay": False, "reset_mechanism": "zero"}], ids=str)
def test_snntorch_synaptic(kw, x_small):
    assert_spike_for_spike(_net(lambda: snn.Synaptic(alpha=0.6, beta=0.85, init_hidden=True, **kw)),
                           models._run_snntorch, x_small, 8)


class _MembraneReadout(nn.Module):
    def __init__(self, synaptic: bool = False, **kw):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        # no init_hidden: without a state argument snnTorch keeps the state inside the module
        self.lif = snn.Synaptic(alpha=0.7, beta=0.9, output=True, **kw) if synaptic else \
            snn.Leaky(beta=0.9, output=True, **kw)

    def forward(self, x):
        out = self.lif(self.fc(x.flatten(1)))
        return out[-1]  # the membrane: (spk, mem) or (spk, syn, mem)


@pytest.mark.parametrize("synaptic", [False, True], ids=["leaky", "synaptic"])
@pytest.mark.parametrize("kw", [{}, {"reset_delay": False}, {"reset_mechanism": "none"}], ids=str)
def test_snntorch_membrane_readout_is_exact(kw, synaptic, x_small):
    model = _MembraneReadout(synaptic, **kw)
    with torch.no_grad():
        model.fc.weight.mul_(3)
    graph = assert_spike_for_spike(model, models._run_snntorch, x_small, 8)
    neuron = next(n for n in graph.nodes if isinstance(n.op, O.Neuron))
    assert neuron.op.emit is O.Emit.MEMBRANE and not neuron.type.is_event
    assert graph.node(graph.outputs[0]).op.mode is O.ReadoutMode.MEAN_CURRENT


def test_snntorch_synaptic_membrane_with_delayed_zero_reset_is_exact(x_small):
    model = _MembraneReadout(True, reset_mechanism="zero")
    with torch.no_grad():
        model.fc.weight.mul_(3)
    assert_spike_for_spike(model, models._run_snntorch, x_small, 8)


def test_snntorch_membrane_of_delayed_zero_reset_is_refused(x_small):
    with pytest.raises(UnsupportedError, match="reset_mechanism='zero' and reset_delay=True"):
        import_snn(_MembraneReadout(False, reset_mechanism="zero"), x_small[:1])


def test_snntorch_no_delay_subtraction_reads_the_reset_membrane():
    """snnTorch 1.0's Leaky with reset_delay=False subtracts the threshold once more from a membrane
    that is still above it after its reset, before comparing (and adds it back after): such a neuron
    must pass 2·threshold to fire.  snnc's ``presubtract`` does the same; a plain soft reset would not."""
    model = nn.Sequential(nn.Identity(), snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False))
    inputs = torch.tensor([[2.5], [0.3], [0.3], [2.0]])
    theirs = [float(model(i[None])) for i in inputs]
    graph = import_snn(model, inputs[:1])
    node = next(n for n in graph.nodes if isinstance(n.op, O.Neuron))
    assert node.op.presubtract and node.op.reset is O.Reset.SOFT and not node.op.reset_delay
    for op, expected in ((node.op, theirs), (dataclasses.replace(node.op, presubtract=False), [1.0, 1.0, 0.0, 1.0])):
        sim, state = _Recorder(graph), {}
        node.op = op
        ours = [float(sim._neuron(node, i[None], {}, state, False)[1]) for i in inputs]
        assert ours == expected
    assert theirs == [1.0, 0.0, 0.0, 1.0]


SPIKINGJELLY = {
    "if-hard": lambda m: sj_neuron.IFNode(step_mode=m),
    "if-soft": lambda m: sj_neuron.IFNode(v_reset=None, step_mode=m),
    "if-reset-value": lambda m: sj_neuron.IFNode(v_threshold=0.8, v_reset=-0.25, step_mode=m),
    "lif": lambda m: sj_neuron.LIFNode(tau=2.0, surrogate_function=sj_surrogate.ATan(), step_mode=m),
    "lif-no-decay-input-soft": lambda m: sj_neuron.LIFNode(tau=3.0, decay_input=False, v_reset=None, step_mode=m),
    "lif-reset-value": lambda m: sj_neuron.LIFNode(tau=1.7, v_threshold=1.3, v_reset=0.2, step_mode=m),
    "plif": lambda m: sj_neuron.ParametricLIFNode(init_tau=2.5, step_mode=m),
    "plif-no-decay-input-soft": lambda m: sj_neuron.ParametricLIFNode(init_tau=1.5, decay_input=False,
                                                                      v_reset=None, step_mode=m),
}


def _spikingjelly_net(make: Callable[[str], nn.Module], mode: str) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        sj_layer.Conv2d(1, 6, 3, padding=1, step_mode=mode), sj_layer.BatchNorm2d(6, step_mode=mode), make(mode),
        sj_layer.MaxPool2d(2, step_mode=mode), sj_layer.Flatten(step_mode=mode),
        sj_layer.Linear(6 * 4 * 4, 10, step_mode=mode), make(mode),
    )
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[5].weight.mul_(4)
        for m in net.modules():
            if isinstance(m, sj_neuron.ParametricLIFNode):
                m.w.fill_(0.37)  # a learned, not an initial, rate
    return net.eval()


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("case", SPIKINGJELLY)
def test_spikingjelly(case: str, mode: str, x_small):
    net = _spikingjelly_net(SPIKINGJELLY[case], mode)
    graph = assert_spike_for_spike(net, models._run_spikingjelly, x_small, 8)
    assert all(getattr(m, "step_mode", mode) == mode for m in net.modules())  # the user's model is untouched
    assert graph.node(graph.outputs[0]).op.mode is O.ReadoutMode.SPIKE_COUNT


def test_spikingjelly_multistep_container(x_small):
    torch.manual_seed(0)
    net = nn.Sequential(
        sj_layer.SeqToANNContainer(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)).eval(),
        sj_neuron.LIFNode(step_mode="m"), sj_layer.Flatten(step_mode="m"),
        sj_layer.SeqToANNContainer(nn.Linear(6 * 64, 10)), sj_neuron.IFNode(step_mode="m"),
    )
    with torch.no_grad():
        net[0][0].weight.mul_(3)
    graph = assert_spike_for_spike(net, models._run_spikingjelly, x_small, 6)
    assert [n.op.name for n in graph.nodes][:3] == ["encode", "conv2d", "batchnorm"]
    assert graph.nodes[1].params["weight"] == "0.0.weight"  # the source's names


NORSE = {
    "lif-cell": lambda: norse.LIFCell(),
    "lif-cell-params": lambda: norse.LIFCell(norse.LIFParameters(
        tau_syn_inv=torch.tensor(150.0), tau_mem_inv=torch.tensor(70.0), v_th=torch.tensor(0.6),
        v_leak=torch.tensor(0.1), v_reset=torch.tensor(0.1), method="heaviside"), dt=0.002),
    "lif-box-cell": lambda: norse.LIFBoxCell(),
    "lif-box-cell-subtract": lambda: norse.LIFBoxCell(norse.LIFBoxParameters(
        reset_method=reset_subtract, v_th=torch.tensor(0.5), tau_mem_inv=torch.tensor(250.0))),
}


@pytest.mark.parametrize("case", NORSE)
def test_norse(case: str, x_small):
    torch.manual_seed(0)
    net = norse.SequentialState(nn.Flatten(), nn.Linear(64, 32), NORSE[case](), nn.Linear(32, 10), NORSE[case](),
                                nn.Linear(10, 10))
    with torch.no_grad():
        net[1].weight.mul_(10)
        net[3].weight.mul_(20)
    graph = assert_spike_for_spike(net, models._run_norse, x_small, 12)
    assert graph.node(graph.outputs[0]).op.mode is O.ReadoutMode.MEAN_CURRENT


def test_norse_cell_in_a_custom_forward_with_state(x_small):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.cell, self.out = nn.Linear(64, 20), norse.LIFCell(), nn.Linear(20, 10)

        def forward(self, x, state=None):
            z, state = self.cell(self.fc(x.flatten(1)), state)
            return self.out(z), state

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc.weight.mul_(10)
    graph = assert_spike_for_spike(net, models._run_norse, x_small, 12)
    assert [n.op.name for n in graph.nodes] == ["encode", "flatten", "linear", "neuron", "linear", "readout"]


# ---------------------------------------------------------------------------------------
# what the import refuses, and how it says so


@pytest.mark.parametrize("make, name", [
    (lambda: snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True), "snntorch._neurons.alpha.Alpha"),
    (lambda: sj_neuron.QIFNode(), "QIFNode"),
    (lambda: norse.LIFRefracCell(), "LIFRefracCell"),
])
def test_unknown_neuron_class_says_how_to_register(make, name, x_small):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), make())
    with pytest.raises(UnsupportedError) as err:
        import_snn(model, x_small[:1])
    message = str(err.value)
    assert name in message and "'2'" in message
    assert "register_neuron_mapping" in message and "snnc.frontend.spiking" in message


def test_subclass_of_a_known_neuron_is_not_mapped_silently(x_small):
    class MyLeaky(snn.Leaky):
        pass

    with pytest.raises(UnsupportedError, match="derives from Leaky"):
        import_snn(nn.Sequential(nn.Flatten(), MyLeaky(beta=0.9, init_hidden=True)), x_small[:1])


class _Counter(nn.Module):
    """A user's stateful neuron: integrate-and-fire kept in a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("v", torch.zeros(0), persistent=False)

    def forward(self, x):
        self.v = (self.v if self.v.shape == x.shape else torch.zeros_like(x)) + x
        s = (self.v >= 1.0).float()
        self.v = self.v - s
        return s


def test_user_stateful_module_error_then_registered_mapping(x_small):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), _Counter())
    with torch.no_grad():
        model[1].weight.mul_(4)
    with pytest.raises(UnsupportedError, match="_Counter"):
        import_snn(model, x_small[:1])

    @register_neuron_mapping(_Counter)
    def _map(m):
        return O.Neuron(model=O.NeuronModel.IF, v_th=1.0, reset=O.Reset.SOFT), {}

    def run(model, x, timesteps):
        model[2].v = torch.zeros(0)
        return [model(x) for _ in range(timesteps)]

    assert_spike_for_spike(model, run, x_small, 8)


def test_state_passed_explicitly_is_refused(x_small):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(64, 10), snn.Leaky(beta=0.9)

        def forward(self, x):
            mem = self.lif.init_leaky()
            outs = []
            for _ in range(4):  # the time loop inside forward
                spk, mem = self.lif(self.fc(x.flatten(1)), mem)
                outs.append(spk)
            return torch.stack(outs).sum(0)

    with pytest.raises(UnsupportedError, match="called 4 times in one forward.*one timestep"):
        import_snn(Net(), x_small[:1])


def test_reading_spikes_and_membrane_of_one_neuron_is_refused(x_small):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(64, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True)

        def forward(self, x):
            spk, mem = self.lif(self.fc(x.flatten(1)))
            return spk + mem

    with pytest.raises(UnsupportedError, match=r"reads output\(s\) \[0, 1\]"):
        import_snn(Net(), x_small[:1])


# ---------------------------------------------------------------------------------------
# the IR side


def test_imported_graph_round_trips_as_text(x_small):
    model = models.spikingjelly_cnn()
    graph = import_snn(model, x_small[:1])
    assert parse_graph(print_graph(graph)) == graph
    text = print_graph(graph)
    assert 'leak = "rate"' in text and "= encode(%x)" in text
    norse_graph = import_snn(models.norse_mlp(), x_small[:1])
    assert 'model = "cuba"' in print_graph(norse_graph)
    mem_graph = import_snn(models.snntorch_mlp(), x_small[:1])
    assert 'emit = "membrane"' in print_graph(mem_graph)
    assert parse_graph(print_graph(mem_graph)) == mem_graph


def test_rate_leak_needs_a_rate():
    from snnc.errors import VerifyError
    from snnc.ir import TensorType

    with pytest.raises(VerifyError, match="0 < beta <= 1"):
        O.Neuron(model=O.NeuronModel.LIF, leak=O.Leak.RATE, beta=1.5).infer_type("n", [TensorType((4,))], {})


def test_import_snnc_without_the_libraries():
    """``import snnc`` imports none of the libraries, and snnc works with them blocked."""
    code = (
        "import sys\n"
        "import snnc, snnc.frontend, snnc.frontend.spiking, torch\n"
        "libs = ('snntorch', 'spikingjelly', 'norse')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in libs], 'imported by snnc'\n"
        "for lib in libs:\n"
        "    sys.modules[lib] = None  # import would fail\n"
        "from snnc.frontend import import_module\n"
        "from snnc.frontend.snn import import_snn\n"
        "g = import_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), torch.zeros(1, 4))\n"
        "assert [n.op.name for n in g.nodes] == ['flatten', 'linear']\n"
        "g = import_snn(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), torch.zeros(1, 4))\n"
        "assert [n.op.name for n in g.nodes] == ['encode', 'flatten', 'linear', 'readout']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_state_dict_and_arch_load_as_a_direct_coded_snn(digits_test):
    """`snnc compile ckpt.pt --arch models.py:factory` reads the checkpoint through load_model."""
    from snnc.frontend.files import load_model

    loaded = load_model(EXAMPLE / "spikingjelly_cnn_t4.pt", arch=f"{EXAMPLE / 'models.py'}:spikingjelly_cnn",
                        input_shape=(1, 8, 8))
    ops = [n.op.name for n in loaded.graph.nodes]
    assert ops[0] == "encode" and ops[-1] == "readout" and ops.count("neuron") == 2
    x, y = digits_test
    accuracy = float((run_snnc(loaded.graph, x, 4)[2]["logits"].argmax(1) == y).float().mean())
    metrics = json.loads((EXAMPLE / "metrics.json").read_text())["spikingjelly_cnn_t4"]
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
