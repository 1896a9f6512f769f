"""Unmodified torchvision classifiers through both torch frontends (issue: real architectures).

Random weights (no download), BatchNorm statistics set from a few random batches so that BN is not the
identity, 3x32x32 inputs (alexnet needs 64x64: at 32x32 its last max pooling has no window).  A ReLU-family
classifier must import through ``torch.export`` AND ``torch.fx`` and its imported graph, run once by the
reference simulator in ANN mode, must equal the model within 1e-4 relative.  A classifier with activations
that have no ReLU form must be refused by the import itself, with every unsupported op listed at once.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snnc.backends.torch.simulator import TorchSimulator
from snnc.cli import main
from snnc.errors import UnsupportedError
from snnc.frontend import import_exported, import_module
from snnc.ir import Graph, verify

tvm = pytest.importorskip("torchvision.models")

RTOL = 1e-4
# model build and BN statistics (once per model), export, import and one ANN run: 15-40 s per path for these
# on a loaded 2-core machine (vgg11_bn: 132M parameters copied by each import), 2-18 s for the others;
# alexnet covers the upsampling adaptive pooling (1x1 -> 6x6) of vgg11_bn (1x1 -> 7x7) in the fast set
SLOW = {"densenet121", "resnet50", "googlenet", "vgg11_bn"}
ACCEPTED = ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "densenet121",
            "vgg11_bn", "alexnet", "googlenet"]
SIZE = {"alexnet": 64}
# the IR ops that show the constructs each model needs (besides conv, BN, ReLU, pooling, linear)
NEEDS = {
    "shufflenet_v2_x0_5": {"permute", "reshape", "slice", "concat"},  # channel shuffle, chunk
    "vgg11_bn": {"upsample"},  # adaptive average pooling 1x1 -> 7x7
    "alexnet": {"upsample"},  # 1x1 -> 6x6
    "densenet121": {"concat"},  # (and one-operand torch.cat)
    "squeezenet1_1": {"concat", "maxpool2d"},  # ceil_mode max pooling after a concat
    "googlenet": {"concat"},
}


@functools.cache
def _model(name: str) -> nn.Module:
    """The classifier with random weights and BatchNorm running statistics from random batches."""
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    model = getattr(tvm, name)(weights=None, **kwargs)
    size = SIZE.get(name, 32)
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(100 + i)))
    return model.eval()


def _input(name: str, batch: int, seed: int) -> torch.Tensor:
    size = SIZE.get(name, 32)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _import(name: str, path: str) -> Graph:
    model = _model(name)
    x = _input(name, 2, 0)
    if path == "export":
        return import_exported(torch.export.export(model, (x,)), name)
    return import_module(model, x, name)


def _params(names: list[str]) -> list:
    return [pytest.param(n, path, marks=[pytest.mark.slow] if n in SLOW else [], id=f"{n}-{path}")
            for n in names for path in ("export", "fx")]


@pytest.mark.parametrize("name, path", _params(ACCEPTED))
def test_relu_family_classifier_imports_and_equals_torch_in_ann_mode(name: str, path: str) -> None:
    graph = _import(name, path)
    verify(graph)
    assert NEEDS.get(name, set()) <= {n.op.name for n in graph.nodes}
    x = _input(name, 4, 1)  # other inputs than the one the import saw, another batch size
    with torch.no_grad():
        want = _model(name)(x).numpy()
    got = TorchSimulator().run_ann(graph, x.numpy())[graph.outputs[0]]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL * max(1.0, float(np.abs(want).max()))


# ---------------------------------------------------------------------------------------
# refused at import, every op at once


def _count(model: nn.Module, *classes: type) -> tuple[int, list[str]]:
    paths = [p for p, m in model.named_modules() if isinstance(m, classes)]
    return len(paths), paths


def _line_with(message: str, fragment: str) -> str:
    lines = [line for line in message.splitlines() if fragment in line]
    assert len(lines) == 1, f"{fragment!r} in {len(lines)} lines of:\n{message}"
    return lines[0]


def _refusal(name: str, path: str) -> str:
    with pytest.raises(UnsupportedError) as err:
        _import(name, path)
    return str(err.value)


def _assert_group(message: str, advice: str, count: int, paths: list[str]) -> None:
    """One line for the op: its count, every module path that uses it, what to do."""
    line = _line_with(message, advice)
    assert f"×{count} at " in line, line
    listed = set(re.split(r", | and | \[", line.split(" at ", 1)[1]))
    assert set(paths) <= listed, sorted(set(paths) - listed)


@pytest.mark.parametrize("path", ["export", "fx"])
def test_mobilenet_v3_is_refused_with_every_hardswish_and_gating(path: str) -> None:
    model = _model("mobilenet_v3_small")
    message = _refusal("mobilenet_v3_small", path)
    n_hs, hs = _count(model, nn.Hardswish)
    n_hsig, hsig = _count(model, nn.Hardsigmoid)
    se = [p for p, m in model.named_modules() if type(m).__name__ == "SqueezeExcitation"]
    assert message.startswith(f"{n_hs + n_hsig + len(se)} unsupported ops in @mobilenet_v3_small (3 kinds)")
    relu = "has no ReLU form: replace it with nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and retrain, or use a ReLU-family"
    _assert_group(message, f"Hardswish {relu}", n_hs, hs)
    _assert_group(message, f"Hardsigmoid {relu}", n_hsig, hsig)
    _assert_group(message, "a product of two activations", len(se), se)
    assert "mobilenetv3.py:" in message  # the source lines that lead there


@pytest.mark.parametrize("path", ["export", "fx"])
def test_efficientnet_is_refused_with_every_silu_sigmoid_and_gating(path: str) -> None:
    model = _model("efficientnet_b0")
    message = _refusal("efficientnet_b0", path)
    n_silu, silu = _count(model, nn.SiLU)
    n_sig, sig = _count(model, nn.Sigmoid)
    se = [p for p, m in model.named_modules() if type(m).__name__ == "SqueezeExcitation"]
    assert message.startswith(f"{n_silu + n_sig + len(se)} unsupported ops in @efficientnet_b0 (3 kinds)")
    _assert_group(message, "SiLU has no ReLU form", n_silu, silu)
    _assert_group(message, "Sigmoid has no ReLU form", n_sig, sig)
    _assert_group(message, "a product of two activations", len(se), se)


@pytest.mark.parametrize("path", ["export", "fx"])
def test_convnext_is_refused_with_gelu_layernorm_and_channels_last_linears(path: str) -> None:
    model = _model("convnext_tiny")
    message = _refusal("convnext_tiny", path)
    n_gelu, gelu = _count(model, nn.GELU)
    _assert_group(message, "GELU has no ReLU form", n_gelu, gelu)
    assert "LayerNorm divides by a per-sample statistic" in message
    n_lin = Counter(type(m) for m in model.features.modules())[nn.Linear]
    _assert_group(message, "linear on a value that is not flat", n_lin, [])
    assert "permute" not in message  # the channels-last permutes themselves map


class _TwoKinds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act1, self.act2 = nn.SiLU(), nn.Hardswish()
        self.fc = nn.Linear(4 * 30 * 30, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.act1(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


def test_cli_prints_every_unsupported_op_on_one_line(tmp_path) -> None:
    model = _TwoKinds().eval()
    pt2 = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, 32, 32),)), pt2)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(pt2), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("snnc: error: 2 unsupported ops in @two (2 kinds); nothing was imported: ")
    assert "'aten.silu.default' ×1 at act1 [" in lines[0]
    assert "; 'aten.hardswish.default' ×1 at act2 [" in lines[0]
    assert "SiLU has no ReLU form" in lines[0] and "Hardswish has no ReLU form" in lines[0]
    assert not out.exists()
