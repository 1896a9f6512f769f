"""The committed digits checkpoints: they load, agree with each other, are trained, and match data.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
ARCHS = ("cnn", "mlp")
TRAIN_SIZE, TEST_SIZE = 1437, 360  # 80/20 of the 1797 images
MAX_FILE_BYTES = 200_000


def _load_example_module(name: str):
    """Import examples/digits/NAME.py under a private name (tests/models.py already owns `models`)."""
    spec = importlib.util.spec_from_file_location(f"digits_example_{name}", DIGITS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits_models = _load_example_module("models")


def _load_npz(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(DIGITS / f"{split}.npz") as f:
        return torch.from_numpy(f["x"]), torch.from_numpy(f["y"])


def _state_dict_model(arch: str) -> torch.nn.Module:
    model = digits_models.ARCHITECTURES[arch]()
    model.load_state_dict(torch.load(DIGITS / f"{arch}.pt", weights_only=True))
    return model.eval()


@pytest.mark.parametrize("split,size", [("train", TRAIN_SIZE), ("test", TEST_SIZE)])
def test_npz_has_design_keys_and_dtypes(split, size):
    with np.load(DIGITS / f"{split}.npz") as f:
        assert sorted(f.files) == ["x", "y"]
        x, y = f["x"], f["y"]
    assert x.dtype == np.float32 and x.shape == (size, 1, 8, 8)
    assert y.dtype == np.int64 and y.shape == (size,)
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_npz_matches_data_module():
    pytest.importorskip("sklearn")
    data = _load_example_module("data")
    x_train, y_train, x_test, y_test = data.load_digits_splits(seed=0)
    for split, x, y in [("train", x_train, y_train), ("test", x_test, y_test)]:
        with np.load(DIGITS / f"{split}.npz") as f:
            np.testing.assert_array_equal(f["x"], x)
            np.testing.assert_array_equal(f["y"], y)
    # Stratified: every class has the same share (to one sample) in both splits.
    train_counts, test_counts = np.bincount(y_train), np.bincount(y_test)
    assert np.all(np.abs(test_counts - 0.2 * (train_counts + test_counts)) <= 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_exported_program_matches_state_dict_model(arch):
    x, _ = _load_npz("test")
    model = _state_dict_model(arch)
    exported = torch.export.load(DIGITS / f"{arch}.pt2").module()
    with torch.no_grad():
        # The whole test set and a single image: the batch dimension was exported as dynamic.
        for batch in (x, x[:1]):
            torch.testing.assert_close(exported(batch), model(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_is_trained(arch):
    x, y = _load_npz("test")
    with torch.no_grad():
        trained = (_state_dict_model(arch)(x).argmax(1) == y).float().mean().item()
        torch.manual_seed(0)
        untrained = (digits_models.ARCHITECTURES[arch]().eval()(x).argmax(1) == y).float().mean().item()
    assert trained >= 0.9
    assert untrained < 0.5  # the bar above is one that only a trained model clears
    metrics = json.loads((DIGITS / "metrics.json").read_text())
    assert metrics[arch]["test_accuracy"] == pytest.approx(trained, abs=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_has_no_subnormals(arch):
    tiny = torch.finfo(torch.float32).tiny
    for name, tensor in torch.load(DIGITS / f"{arch}.pt", weights_only=True).items():
        if tensor.is_floating_point():
            assert not ((tensor != 0) & (tensor.abs() < tiny)).any(), name


def test_committed_artifacts_are_small():
    artifacts = [DIGITS / f"{a}{ext}" for a in ARCHS for ext in (".pt", ".pt2")]
    artifacts += [DIGITS / "train.npz", DIGITS / "test.npz", DIGITS / "metrics.json"]
    for path in artifacts:
        assert path.stat().st_size < MAX_FILE_BYTES, path.name


def test_train_script_writes_every_artifact(tmp_path):
    pytest.importorskip("sklearn")
    # A subprocess: train.py imports its siblings as top-level `data` and `models`.
    subprocess.run(
        [sys.executable, str(DIGITS / "train.py"), "--out", str(tmp_path), "--epochs", "1"],
        check=True,
        capture_output=True,
        timeout=600,  # it takes seconds on a quiet machine; the limit is generous so that a loaded CI runner does not fail it
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(
        ["cnn.pt", "cnn.pt2", "mlp.pt", "mlp.pt2", "train.npz", "test.npz", "metrics.json"]
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1
    x, _ = _load_npz("test")
    reloaded = torch.export.load(tmp_path / "cnn.pt2").module()
    assert reloaded(x[:3]).shape == (3, 10)
