"""NIR files that real tools run: the digits MLP and CNN compiled with ``--target nir`` and no pipeline
(ann-to-nir), loaded in Norse (``norse.torch.from_nir``) and snnTorch (``snntorch.import_nir.
import_from_nir``), give the predictions and the spike counts of snnc's simulator; LIF and CubaLIF
graphs likewise; snnc -> NIR -> snnc simulates exactly.  docs/nir.md has the measured results."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from snnc.ir import Graph, Node, analog
from snnc.ir import ops as O

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")
norse_torch = pytest.importorskip("norse.torch")
snntorch_nir = pytest.importorskip("snntorch.import_nir")

from snnc.backends.torch.simulator import TorchSimulator  # noqa: E402
from snnc.driver import CompileOptions, compile_model  # noqa: E402
from snnc.formats.nir import DT, for_norse, for_snntorch, from_nir, to_nir  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
T = 8
N = 24  # test images per model


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The two digits models compiled for the nir target with the default pipeline (a calibration subset)."""
    root = tmp_path_factory.mktemp("nir_digits")
    out = {}
    for model in ("mlp", "cnn"):
        opts = CompileOptions(model=DIGITS / f"{model}.pt2", out=root / model, target="nir",
                              calib=DIGITS / "train.npz", calib_samples=128, timesteps=T)
        result = compile_model(opts)
        out[model] = (result.graph, root / model / "model.nir", result.report)
    return out


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DIGITS / "test.npz")
    return data["x"][:N], data["y"][:N]


def _snnc_counts(graph: Graph, x: np.ndarray, timesteps: int):
    """snnc's logits and per-neuron spike counts (the simulator records each neuron's mean over T)."""
    neurons = [n.name for n in graph.nodes if isinstance(n.op, O.Neuron)]
    res = TorchSimulator().run_snn(graph, x, timesteps, record=neurons)
    counts = {k: np.rint(v * timesteps).reshape(len(x), -1) for k, v in res.recorded.items()}
    return res.logits, counts


def _library_counts(module, x: np.ndarray, timesteps: int, stateful: bool, neurons: list[str]):
    """Run a torch module from a NIR importer for ``timesteps`` steps on ``x``: the mean output and the
    spike count of every neuron module (found by its NIR node name)."""
    recorded: dict[str, list] = {}
    for name, mod in module.named_modules():
        key = name.split(".")[-1]
        if key in neurons:
            def hook(_m, _i, out, key=key):
                z = out[0] if isinstance(out, tuple) else out
                recorded.setdefault(key, []).append(z.detach().reshape(len(x), -1).clone())
            mod.register_forward_hook(hook)
    xt = torch.as_tensor(x)
    total, state = 0.0, None
    with torch.no_grad():
        for _ in range(timesteps):
            if stateful:  # nirtorch's GraphExecutor (Norse) passes the state through
                out, state = module(xt, state)
            else:  # snnTorch's neurons keep it (init_hidden)
                out = module(xt)
                out = out[0] if isinstance(out, tuple) else out
            total = total + out
    counts = {k: torch.stack(v).sum(0).numpy() for k, v in recorded.items()}
    return (total / timesteps).numpy(), counts


def _norse(nir_graph):
    logging.disable(logging.WARNING)  # Norse warns that IF's r != 1, which it ignores as it should
    try:
        return norse_torch.from_nir(for_norse(nir_graph), dt=DT)
    finally:
        logging.disable(logging.NOTSET)


def _snntorch(nir_graph):
    from snntorch import utils

    module = snntorch_nir.import_from_nir(for_snntorch(nir_graph))
    utils.reset(module)
    return module


LIBRARIES = {"norse": (_norse, True), "snntorch": (_snntorch, False)}


def _assert_same_counts(theirs: np.ndarray, ours: np.ndarray, name: str) -> None:
    """Spike counts equal for (nearly) every neuron: exact here, but a library that summed a layer in
    another order could flip a neuron whose potential lands on its threshold."""
    theirs, ours = np.asarray(theirs).reshape(ours.shape), np.asarray(ours)
    same = np.mean(theirs == ours)
    assert same >= 0.99, f"{name}: {same:.4%} of the neurons spike as often as in snnc"
    assert abs(theirs.sum() - ours.sum()) <= 1e-2 * ours.sum()


def _assert_same_run(ours_logits, ours_counts, their_logits, their_counts):
    """Predictions and spike counts equal; logits to float tolerance (the libraries sum in their own order)."""
    assert set(their_counts) == set(ours_counts)
    np.testing.assert_array_equal(their_logits.argmax(1), ours_logits.argmax(1))
    np.testing.assert_allclose(their_logits, ours_logits, atol=1e-4)
    for name, ours in ours_counts.items():
        _assert_same_counts(their_counts[name], ours, name)
    assert sum(c.sum() for c in ours_counts.values()) > 0  # neurons fire: the comparison means something


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_digits_nir_file_runs_in_library_as_in_snnc(digits, model, library):
    graph, path, report = digits[model]
    assert report["pipeline"].startswith("canonicalize,fold-bn,calibrate")
    assert "nir-legalize" in report["pipeline"]
    x, y = _test_images()
    ours_logits, ours_counts = _snnc_counts(graph, x, T)
    load, stateful = LIBRARIES[library]
    their_logits, their_counts = _library_counts(load(nir.read(str(path))), x, T, stateful, list(ours_counts))
    _assert_same_run(ours_logits, ours_counts, their_logits, their_counts)
    assert np.mean(ours_logits.argmax(1) == y) >= 0.85  # a converted network, not noise


def test_digits_round_trip_simulates_exactly(digits):
    x, _ = _test_images()
    for graph, path, _ in digits.values():
        back = from_nir(nir.read(str(path)), "back")
        assert [n.op.name for n in back.nodes] == [n.op.name for n in graph.nodes if n.op.name not in
                                                     ("encode", "readout")]
        ours_logits, ours_counts = _snnc_counts(graph, x, T)
        back_logits, back_counts = _snnc_counts(back, x, T)
        np.testing.assert_array_equal(back_logits, ours_logits)
        for name, counts in ours_counts.items():
            np.testing.assert_array_equal(back_counts[name], counts)


def _lif_cuba_graph(first: O.NeuronModel) -> Graph:
    """linear · LIF (or IF) · linear · CubaLIF, uniform thresholds (snnTorch needs them)."""
    rng = np.random.default_rng(0)
    g = Graph("lif_cuba", [("x", analog(6))])
    g.params = {"a.w": rng.normal(0, 0.8, (12, 6)).astype(np.float32), "a.b": rng.normal(0, 0.1, 12).astype(np.float32),
                "b.w": rng.normal(0, 0.8, (5, 12)).astype(np.float32), "b.b": np.zeros(5, np.float32)}
    hard = dict(reset=O.Reset.HARD, strict=True)
    g.nodes = [
        Node("a", O.Linear(), ("x",), params={"weight": "a.w", "bias": "a.b"}),
        Node("n1", O.Neuron(model=first, beta=0.85 if first is O.NeuronModel.LIF else 1.0, **hard), ("a",)),  # type: ignore[arg-type]
        Node("b", O.Linear(), ("n1",), params={"weight": "b.w", "bias": "b.b"}),
        Node("n2", O.Neuron(model=O.NeuronModel.CUBA, alpha=0.7, beta=0.9, **hard), ("b",)),  # type: ignore[arg-type]
    ]
    g.outputs = ["n2"]
    g.infer_types()
    return g


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("first", [O.NeuronModel.LIF, O.NeuronModel.IF])
def test_lif_and_cubalif_export_runs_in_library_spike_for_spike(tmp_path, library, first):
    g = _lif_cuba_graph(first)
    path = tmp_path / "m.nir"
    nir.write(str(path), to_nir(g))
    written = nir.read(str(path))
    kinds = {k: type(v).__name__ for k, v in written.nodes.items()}
    assert kinds["n1"] == ("LIF" if first is O.NeuronModel.LIF else "IF") and kinds["n2"] == "CubaLIF"
    x = np.random.default_rng(1).uniform(0, 1, (40, 6)).astype(np.float32)
    steps = 20
    ours = TorchSimulator().run_snn(g, x, steps, record=["n1", "n2"])
    ours_counts = {k: np.rint(v * steps).reshape(len(x), -1) for k, v in ours.recorded.items()}
    load, stateful = LIBRARIES[library]
    _, counts = _library_counts(load(written), x, steps, stateful, ["n1", "n2"])
    for name in ("n1", "n2"):
        _assert_same_counts(counts[name], ours_counts[name], name)
    assert ours_counts["n2"].sum() > 0
    back = from_nir(written)
    assert [(n.op.beta, n.op.alpha) for n in back.nodes if isinstance(n.op, O.Neuron)] == \
        [(g.nodes[1].op.beta, 0.0), (0.9, 0.7)]  # the exact leaks, not their float32 images


def test_default_pipeline_of_the_nir_target():
    from snnc.backends.nir.target import NIRTarget

    ann = Graph("a", [("x", analog(4))])
    ann.nodes = [Node("r", O.Relu(), ("x",))]
    snn = Graph("s", [("x", analog(4))])
    snn.nodes = [Node("n", O.Neuron(), ("x",))]
    target = NIRTarget()
    assert target.default_pipeline(ann, True) == "ann-to-nir"
    assert target.default_pipeline(ann, False) is None
    assert target.default_pipeline(snn, False) == "snn-to-nir"


def test_snntorch_export_imports_and_simulates_spike_for_spike():
    """snnTorch's own exporter (``snntorch.export_nir.export_to_nir``) -> snnc: LIF and CubaLIF with
    snnTorch's convention (r = tau/dt, w_in = tau_syn/dt) import as gain-1 neurons and fire as
    snnTorch runs them.  Per-neuron leaks and thresholds: snnTorch 1.0 writes scalar ones with shape ()
    that nir 1.0.8's type check rejects."""
    import snntorch as snn
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    zero = dict(init_hidden=True, reset_mechanism="zero", reset_delay=False)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 12), snn.Leaky(beta=torch.full((12,), 0.85), threshold=torch.ones(12), **zero),
        torch.nn.Linear(12, 5),
        snn.Synaptic(alpha=torch.full((5,), 0.7), beta=torch.full((5,), 0.9), threshold=torch.ones(5), output=True,
                     **zero),
    )
    x = torch.rand(40, 6) * 2
    graph = from_nir(export_to_nir(net, x[:1], ignore_dims=[0]))
    assert not any(isinstance(n.op, O.Scale) for n in graph.nodes)  # snnTorch's r and w_in are gain 1
    lif, cuba = (n.name for n in graph.nodes if isinstance(n.op, O.Neuron))
    steps = 20
    spikes: dict[int, list] = {1: [], 3: []}
    for i in spikes:
        net[i].register_forward_hook(lambda _m, _i, out, i=i: spikes[i].append(out[0] if isinstance(out, tuple) else out))
    utils.reset(net)
    with torch.no_grad():
        for _ in range(steps):
            net(x)
    ours = TorchSimulator().run_snn(graph, x.numpy(), steps, record=[lif, cuba]).recorded
    for i, name in ((1, lif), (3, cuba)):
        _assert_same_counts(torch.stack(spikes[i]).sum(0).numpy(), np.rint(ours[name] * steps), name)
    assert torch.stack(spikes[3]).sum() > 0
