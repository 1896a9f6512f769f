"""The tvm target end to end: a converted digits MLP compiled to TVM kernels gives the torch
backend's predictions, and the artifact runs in a process that cannot import torch."""

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


def test_cnn_with_gated_maxpool_is_refused_with_the_fix(tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "compile",
            str(DIGITS / "cnn.pt2"),
            "--calib",
            str(DIGITS / "train.npz"),
            "-T",
            "4",
            "--target",
            "tvm",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2
    assert "spike_maxpool" in r.output and "maxpool=avg" in r.output
    assert not (tmp_path / "o").exists()
