"""The tvm target end to end: the converted digits MLP and CNN (gated max pooling) compiled to
TVM kernels give the torch backend's predictions, the artifact runs in a process that cannot
import torch, and what the target cannot run is refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
pytestmark = pytest.mark.tvm

from click.testing import CliRunner  # noqa: E402

from snnc.cli import main  # noqa: E402
from snnc.runner import open_artifact, run_artifact  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


@pytest.fixture(scope="module")
def tvm_mlp(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tvm") / "mlp"
    r = CliRunner().invoke(
        main,
        [
            "compile",
            str(DIGITS / "mlp.pt2"),
            "--calib",
            str(DIGITS / "train.npz"),
            "-T",
            "6",
            "--target",
            "tvm",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def test_tvm_artifact_has_the_runtime_files(tvm_mlp):
    for name in (
        "graph.snnir",
        "params.safetensors",
        "report.json",
        "tvm/lib.so",
        "tvm/graph.json",
        "tvm/params.safetensors",
    ):
        assert (tvm_mlp / name).exists(), name
    report = json.loads((tvm_mlp / "report.json").read_text())
    assert report["target"] == "tvm"
    assert set(report["target_report"]["layer_modes"]) >= {"linear", "linear_1", "linear_2"}


def test_tvm_predictions_equal_the_torch_backend(tvm_mlp):
    x = np.load(DIGITS / "test.npz")["x"][:200]
    art = open_artifact(tvm_mlp)
    tvm_out = run_artifact(art, x, None, "snn", "tvm")
    torch_out = run_artifact(art, x, None, "snn", "torch")
    np.testing.assert_array_equal(tvm_out["predictions"], torch_out["predictions"])
    np.testing.assert_allclose(tvm_out["logits"], torch_out["logits"], atol=1e-3)


def test_tvm_artifact_runs_without_torch(tvm_mlp, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.load(DIGITS / "test.npz")["x"][:16])
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from snnc.backends.tvm.runtime import EventRuntime\n"
        f"x = np.load({str(tmp_path / 'x.npz')!r})['x']\n"
        f"out = EventRuntime({str(tvm_mlp / 'tvm')!r}).run(x, 6)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(out['predictions'].tolist())\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout.strip().splitlines()[-1])
    art = open_artifact(tvm_mlp)
    expected = run_artifact(art, np.load(tmp_path / "x.npz")["x"], None, "snn", "torch")["predictions"]
    assert preds == expected.tolist()


@pytest.fixture(scope="module")
def tvm_cnn(tmp_path_factory) -> Path:
    """The digits CNN as the default conversion leaves it: max pooling gated by spike counts."""
    out = tmp_path_factory.mktemp("tvm") / "cnn"
    args = ["compile", str(DIGITS / "cnn.pt2"), "--calib", str(DIGITS / "train.npz"), "-T", "4"]
    r = CliRunner().invoke(main, [*args, "--target", "tvm", "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_cnn_with_gated_maxpool_compiles_and_runs_as_the_torch_backend(tvm_cnn, tmp_path):
    """`snnc run OUT` (the TVM artifact) and `snnc run OUT --backend torch` agree sample for sample."""
    layers = json.loads((tvm_cnn / "tvm" / "graph.json").read_text())["layers"]
    assert [r["op"] for r in layers if r["op"] == "spike_maxpool"] == ["spike_maxpool"]
    data = tmp_path / "x.npz"
    np.savez(data, x=np.load(DIGITS / "test.npz")["x"][:120])
    for backend in ("tvm", "torch"):
        args = ["run", str(tvm_cnn), "--data", str(data), "-o", str(tmp_path / f"{backend}.npz")]
        r = CliRunner().invoke(main, args + (["--backend", "torch"] if backend == "torch" else []))
        assert r.exit_code == 0, r.output
    ours, ref = np.load(tmp_path / "tvm.npz"), np.load(tmp_path / "torch.npz")
    np.testing.assert_array_equal(ours["predictions"], ref["predictions"])
    np.testing.assert_allclose(ours["logits"], ref["logits"], atol=1e-4)
    assert len(set(ref["predictions"].tolist())) > 5  # a real classifier, not a constant


def test_early_exit_readout_is_refused_with_the_reason(tvm_mlp, tmp_path):
    """adaptive-timesteps' early-exit readout has no TVM form: compile stops and writes nothing."""
    from dataclasses import replace

    from snnc.ir import load_graph, save_graph
    from snnc.ir import ops as O

    graph = load_graph(tvm_mlp)
    node = next(n for n in graph.nodes if isinstance(n.op, O.Readout))
    node.op = replace(node.op, exit_rule=O.ExitRule.CONFIDENCE)
    node.params["exit_thresholds"] = "readout.exit_thresholds"
    graph.params["readout.exit_thresholds"] = np.full(graph.attrs.timesteps, 0.9, np.float32)
    save_graph(graph, tmp_path / "ee")
    out = tmp_path / "o"
    source = tmp_path / "ee" / "graph.snnir"
    args = ["compile", str(source), "-p", "count-ops", "--target", "tvm", "-o", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    # the refusal names the reason and the node (its layout, grouped by reason, is the driver's)
    assert "early exit (adaptive-timesteps) runs on the torch target only" in r.output
    assert f"readout %{node.name}" in r.output
    assert not out.exists()
