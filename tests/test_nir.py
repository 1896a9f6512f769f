"""NIR backend: export -> nir.read -> import gives a graph that simulates spike for spike the same."""

from __future__ import annotations

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
