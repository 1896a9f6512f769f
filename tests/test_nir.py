"""NIR backend: export -> nir.read -> import gives a graph that simulates spike for spike the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nir_graphs import nir_graphs

from snnc.errors import TargetError
from snnc.ir import Graph, Node, analog, verify
from snnc.ir import ops as O

nir = pytest.importorskip("nir")

from snnc.backends.torch.simulator import TorchSimulator  # noqa: E402
from snnc.formats.nir import from_nir, legality, to_nir  # noqa: E402


def _conv_graph(rng: np.random.Generator) -> Graph:
    g = nir_graphs(rng)[0]
    verify(g)
    return g


def test_export_read_import_simulates_spike_for_spike(tmp_path):
    rng = np.random.default_rng(0)
    g = _conv_graph(rng)
    path = tmp_path / "model.nir"
    nir.write(str(path), to_nir(g))
    back = from_nir(nir.read(str(path)), "back")
    verify(back)
    x = rng.uniform(0, 1, (16, 2, 8, 8)).astype(np.float32)
    sim = TorchSimulator()
    a = sim.run_snn(g, x, 12, record=["n1", "n2"])
    b = sim.run_snn(back, x, 12, record=["n1", "n2"])
    np.testing.assert_array_equal(a.recorded["n1"], b.recorded["n1"])
    np.testing.assert_array_equal(a.recorded["n2"], b.recorded["n2"])
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-6)
    assert a.recorded["n2"].sum() > 0  # the test means something: neurons fire


def test_soft_reset_graph_is_refused_with_node_and_fix():
    g = Graph("n", [("x", analog(3))])
    g.nodes = [Node("n", O.Neuron(v_init=0.5), ("x",))]
    g.outputs = ["n"]
    g.infer_types()
    problems = legality(g)
    assert problems[:3] == [
        "neuron %n: fires on v >= v_th (strict=false): not supported by the nir target; run nir-legalize "
        "(hard reset) or convert with the ann-to-nir pipeline",
        "neuron %n: resets by subtracting v_th (reset=soft): not supported by the nir target; NIR's neurons "
        "reset to v_reset; convert with the ann-to-nir pipeline",
        "neuron %n: starts at v_init != 0: not supported by the nir target; NIR's neurons start at rest; "
        "convert with the ann-to-nir pipeline",
    ]
    with pytest.raises(TargetError, match="NIR export: neuron %n"):
        to_nir(g)


def test_nir_target_via_cli(tmp_path):
    from click.testing import CliRunner

    from snnc.cli import main
    from snnc.ir import print_graph, save_params

    g = _conv_graph(np.random.default_rng(1))
    src = tmp_path / "g.snnir"
    src.write_text(print_graph(g))
    save_params(g.params, tmp_path / "g.safetensors")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["compile", str(src), "--target", "nir", "-p", "count-ops", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "model.nir").exists()
    back = from_nir(nir.read(str(out / "model.nir")))
    assert [n.op.name for n in back.nodes].count("neuron") == 2
    # and the file imports as a model
    r = CliRunner().invoke(
        main, ["compile", str(out / "model.nir"), "-p", "count-ops", "-o", str(tmp_path / "o2")]
    )
    assert r.exit_code == 0, r.output


# -- import: r, every node type, neurons without spikes ---------------------------------------------


def _nir_chain(n: int, neuron, weight: np.ndarray | None = None):
    """input -> Linear (identity unless given) -> neuron -> output, as a NIR graph."""
    w = np.eye(n, dtype=np.float32) if weight is None else weight
    return nir.NIRGraph(
        nodes={"x": nir.Input(input_type={"input": np.array([w.shape[1]])}), "w": nir.Linear(weight=w),
               "n": neuron, "out": nir.Output(output_type={"output": np.array([n])})},
        edges=[("x", "w"), ("w", "n"), ("n", "out")])


def _scale_of(g: Graph) -> float | None:
    scales = [n.op.factor for n in g.nodes if isinstance(n.op, O.Scale)]
    return scales[0] if scales else None


@pytest.mark.parametrize("gain", [1.0, 5.0, 1e4])
def test_if_and_lif_input_scale_r_is_honoured_alike(gain):
    """r·dt (IF) and r·dt/tau (LIF) are the neuron's input gain: a scale op in front of it unless 1."""
    from snnc.formats.nir import DT

    ones = np.ones(3, np.float32)
    if_graph = from_nir(_nir_chain(3, nir.IF(r=ones * gain / DT, v_threshold=ones)))
    tau = ones * 2e-3
    lif_graph = from_nir(_nir_chain(3, nir.LIF(tau=tau, r=gain * tau / DT, v_leak=0 * ones, v_threshold=ones)))
    expected = None if gain == 1.0 else pytest.approx(gain, rel=1e-6)
    assert _scale_of(if_graph) == expected and _scale_of(lif_graph) == expected
    # and it is what the neuron integrates: constant input 0.3 for 10 steps, v += gain·0.3, reset to 0
    x = np.full((1, 3), 0.3, np.float32)
    rate = TorchSimulator().run_snn(if_graph, x, 10, record=["n"]).recorded["n"][0, 0]
    v, spikes = 0.0, 0
    for _ in range(10):
        v += np.float32(gain) * np.float32(0.3)
        if v > 1.0:
            spikes, v = spikes + 1, 0.0
    assert round(float(rate) * 10) == spikes


def test_every_nir_node_type_is_imported_or_refused_by_name():
    from snnc.formats.nir import IMPORTED_NODES, REFUSED_NODES

    every = set(vars(nir.ir)["__all_ir"])  # nir's own list of the node types it serialises
    assert set(IMPORTED_NODES) | set(REFUSED_NODES) == every
    assert not set(IMPORTED_NODES) & set(REFUSED_NODES)


def test_refused_node_types_are_listed_at_once():
    from snnc.errors import UnsupportedError

    sub = _nir_chain(2, nir.IF(r=np.ones(2, np.float32) * 1e4, v_threshold=np.ones(2, np.float32)))
    g = nir.NIRGraph(
        nodes={"x": nir.Input(input_type={"input": np.array([2])}), "d1": nir.Delay(delay=np.ones(2)),
               "d0": nir.Delay(delay=np.ones(2)), "rnn": sub, "out": nir.Output(output_type={"output": np.array([2])})},
        edges=[("x", "d0"), ("d0", "d1"), ("d1", "rnn"), ("rnn", "out")], type_check=False)
    with pytest.raises(UnsupportedError) as e:
        from_nir(g)
    assert str(e.value) == ("NIR graph: node types snnc does not import: Delay (d0, d1): snnc has no delay op; "
                            "NIRGraph (rnn): a nested subgraph (snnc imports flat feed-forward graphs)")


def test_integrators_and_threshold_import_with_their_equations():
    """I: v += r·dt·I; LI: v = beta·v + r·dt/tau·I; CubaLI: u = alpha·u + I, v = beta·v + u; all output v.
    Threshold: s = 1[I > theta], no state."""
    from snnc.formats.nir import DT

    ones = np.ones(2, np.float32)
    x = np.array([[0.5, -0.25]], np.float32)
    steps = 5
    cases = {
        "I": (nir.I(r=ones * 2 / DT), lambda u, v, i: (u, v + 2 * i)),
        "LI": (nir.LI(tau=ones * 5 * DT, r=ones * 5, v_leak=0 * ones), lambda u, v, i: (u, 0.8 * v + i)),
        "CubaLI": (nir.CubaLI(tau_syn=ones * 2 * DT, tau_mem=ones * 4 * DT, r=ones * 4, v_leak=0 * ones, w_in=ones * 2),
                   lambda u, v, i: (0.5 * u + i, 0.75 * v + 0.5 * u + i)),
    }
    for kind, (node, step) in cases.items():
        g = from_nir(_nir_chain(2, node))
        assert g.node("n").op.emit is O.Emit.MEMBRANE, kind
        u = v = np.zeros(2)
        for _ in range(steps):
            u, v = step(u, v, x[0].astype(np.float64))
        # the graph's output is the membrane; its logits are the mean over T of it
        logits = TorchSimulator().run_snn(g, x, steps).logits[0]
        vs, u2, v2 = [], np.zeros(2), np.zeros(2)
        for _ in range(steps):
            u2, v2 = step(u2, v2, x[0].astype(np.float64))
            vs.append(v2)
        np.testing.assert_allclose(logits, np.mean(vs, axis=0), rtol=1e-5, err_msg=kind)
    g = from_nir(_nir_chain(2, nir.Threshold(threshold=np.array([0.4, 0.2], np.float32))))
    rate = TorchSimulator().run_snn(g, np.array([[0.5, 0.1]], np.float32), 4, record=["n"]).recorded["n"][0]
    np.testing.assert_array_equal(rate, [1.0, 0.0])


# -- export: grouped convolutions, OR pooling, the CLI ----------------------------------------------


def _depthwise_graph() -> Graph:
    rng = np.random.default_rng(3)
    g = Graph("dw", [("x", analog(4, 6, 6))])
    g.params = {"dw.w": rng.normal(0, 0.7, (8, 1, 3, 3)).astype(np.float32), "dw.b": np.zeros(8, np.float32)}
    g.params["c.w"] = rng.normal(0, 0.7, (4, 4, 1, 1)).astype(np.float32)
    g.nodes = [
        Node("c", O.Conv2d(), ("x",), params={"weight": "c.w"}),
        Node("dw", O.Conv2d(padding=(1, 1), groups=4), ("c",), params={"weight": "dw.w", "bias": "dw.b"}),
        Node("n", O.Neuron(reset=O.Reset.HARD, strict=True), ("dw",)),
        Node("p", O.AvgPool2d(), ("n",)),
    ]
    g.outputs = ["p"]
    g.infer_types()
    return g


def test_grouped_conv_is_written_dense_and_read_back_grouped(tmp_path):
    g = _depthwise_graph()
    path = tmp_path / "dw.nir"
    nir.write(str(path), to_nir(g))  # nir 1.0.8 alone raises a type error on a grouped Conv2d
    written = nir.read(str(path))
    assert written.nodes["dw"].groups == 1 and written.nodes["dw"].weight.shape == (8, 4, 3, 3)
    assert type(written.nodes["p"]).__name__ == "Conv2d"  # pooling as the conv it is (docs/nir.md)
    back = from_nir(written)
    assert back.node("dw").op.groups == 4 and isinstance(back.node("p").op, O.AvgPool2d)
    x = np.random.default_rng(4).uniform(0, 1, (6, 4, 6, 6)).astype(np.float32)
    a = TorchSimulator().run_snn(g, x, 6, record=["n"])
    b = TorchSimulator().run_snn(back, x, 6, record=["n"])
    np.testing.assert_array_equal(a.recorded["n"], b.recorded["n"])
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.recorded["n"].sum() > 0


def test_nir_legalize_turns_max_pooling_into_or_pooling():
    from snnc.pass_manager import PassContext, PassManager

    g = Graph("mp", [("x", analog(2, 4, 4))])
    g.nodes = [Node("n", O.Neuron(reset=O.Reset.HARD), ("x",)), Node("mp", O.SpikeMaxPool2d(), ("n",))]
    g.outputs = ["mp"]
    g.infer_types()
    g = PassManager.parse("nir-legalize").run(g, PassContext())
    assert [(n.name, n.op.name) for n in g.nodes] == [("n", "neuron"), ("mp", "sumpool2d"), ("mp_or", "neuron")]
    assert g.node("n").op.strict and g.node("mp_or").op.v_th == 0.5 and g.outputs == ["mp_or"]
    assert legality(g) == []
    # the OR neuron fires in a step exactly when some input of its window fired in that step
    x = np.random.default_rng(5).uniform(0, 2, (8, 2, 4, 4)).astype(np.float32)
    steps = 6
    v = np.zeros_like(x)
    expected = np.zeros((8, 2, 2, 2))
    for _ in range(steps):
        v = v + x
        s = (v > 1.0).astype(np.float32)
        v = np.where(s > 0, 0.0, v)
        expected += s.reshape(8, 2, 2, 2, 2, 2).max(axis=(3, 5))
    got = TorchSimulator().run_snn(g, x, steps, record=["mp_or"]).recorded["mp_or"] * steps
    np.testing.assert_array_equal(np.rint(got), expected)


def test_cli_compiles_digits_mlp_for_nir_with_no_pipeline_and_refuses_an_ann_without_data(tmp_path):
    from click.testing import CliRunner

    from snnc.cli import main

    digits = Path(__file__).resolve().parents[1] / "examples" / "digits"
    out = tmp_path / "mlp"
    r = CliRunner().invoke(main, ["compile", str(digits / "mlp.pt2"), "--calib", str(digits / "train.npz"),
                                  "--calib-samples", "64", "--target", "nir", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "model.nir").exists()
    r = CliRunner().invoke(main, ["compile", str(digits / "cnn.pt2"), "--target", "nir", "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "relu %relu: NIR has no relu primitive; convert the network first" in lines[0]
    assert not (tmp_path / "c").exists()


def test_cli_exports_a_direct_coded_snn_with_snn_to_nir_and_refuses_soft_reset(tmp_path):
    from click.testing import CliRunner
    from d2e_util import direct_mlp

    from snnc.cli import main
    from snnc.ir import print_graph, save_params

    g = direct_mlp()  # LIF, hard reset, v >= v_th: nir-legalize makes the threshold strict
    for name, graph in (("lif", g), ("soft", g.copy())):
        if name == "soft":
            graph.node("lif1").op = O.Neuron(model=O.NeuronModel.LIF, beta=0.9)
        (tmp_path / f"{name}.snnir").write_text(print_graph(graph))
        save_params(graph.params, tmp_path / f"{name}.safetensors")
    out = tmp_path / "lif_out"
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "lif.snnir"), "--target", "nir", "-o", str(out)])
    assert r.exit_code == 0, r.output
    written = nir.read(str(out / "model.nir"))
    assert type(written.nodes["lif1"]).__name__ == "LIF"
    assert "nir-legalize" in (out / "report.json").read_text()
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "soft.snnir"), "--target", "nir", "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1
    assert "neuron %lif1: resets by subtracting v_th (reset=soft): not supported by the nir target" in r.stderr
