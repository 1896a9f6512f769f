"""Every torchvision classifier family: the ReLU-family ones import and equal torch in ANN mode, the
others are refused by the import itself, every unsupported op listed at once (issue 12).

One model per family, the smallest variant (docs/analog_paths.md, "Which torchvision classifiers
convert", lists them and the larger variants measured; the table is checked against this file).
Random weights (no download), 10 classes, BatchNorm statistics set from random batches so that BN
is not the identity, 3x32x32 inputs (alexnet 64x64: at 32x32 its last max pooling has no window;
inception_v3 75x75, the smallest its stem's valid convolutions take).  Fast set: the torch.fx
import; slow set: the torch.export import of the same models, the CLI on a .pt2 with the default
pipeline, and each new family's convergence at T = 8 … 256 (benchmarks/convergence.py has the
numbers).  tests/test_torchvision_import.py covers the first nine models through both frontends.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

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

DOC = Path(__file__).resolve().parents[1] / "docs" / "analog_paths.md"
RTOL = 1e-4
# family -> its smallest variant; each converts
CONVERTS = {
    "ResNet": "resnet18", "ResNeXt": "resnext50_32x4d", "Wide ResNet": "wide_resnet50_2", "VGG": "vgg11",
    "VGG-BN": "vgg11_bn", "AlexNet": "alexnet", "SqueezeNet": "squeezenet1_0", "ShuffleNetV2": "shufflenet_v2_x0_5",
    "MobileNetV2": "mobilenet_v2", "MNASNet": "mnasnet0_5", "RegNetX": "regnet_x_400mf", "DenseNet": "densenet121",
    "GoogLeNet": "googlenet", "Inception-v3": "inception_v3",
}
# family -> its smallest variant; each refused at import
REFUSED = {
    "RegNetY": "regnet_y_400mf", "EfficientNet": "efficientnet_b0", "EfficientNetV2": "efficientnet_v2_s",
    "MobileNetV3": "mobilenet_v3_small", "ConvNeXt": "convnext_tiny", "ViT": "vit_b_16", "Swin": "swin_t",
    "Swin V2": "swin_v2_t", "MaxViT": "maxvit_t",
}
SIZE = {"alexnet": 64, "inception_v3": 75, "maxvit_t": 224}  # maxvit_t: its partitions need 224
BUILD = {"googlenet": {"init_weights": True, "aux_logits": False},
         "inception_v3": {"init_weights": True, "aux_logits": False}, "vit_b_16": {"image_size": 32}}
# more than ~4 s each to build and import on the loaded 2-core machine (over 50M weights to draw and copy);
# vgg11_bn and alexnet are in tests/test_torchvision_import.py's fast set already; maxvit_t: a 224x224 input
SLOW = {"wide_resnet50_2", "vgg11", "vgg11_bn", "alexnet", "maxvit_t"}
RELU = "has no ReLU form: replace it with nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and retrain"
PRODUCT = "a product of two activations"
NORM = "LayerNorm divides by a per-sample statistic"
ATTENTION = "attention multiplies two activations"
# per refused family: (advice fragment, the module classes whose every instance it must list)
EXPECT: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "regnet_y_400mf": [(f"Sigmoid {RELU}", ("Sigmoid",)), (PRODUCT, ("SqueezeExcitation",))],
    "efficientnet_b0": [(f"SiLU {RELU}", ("SiLU",)), (f"Sigmoid {RELU}", ("Sigmoid",)),
                        (PRODUCT, ("SqueezeExcitation",))],
    "efficientnet_v2_s": [(f"SiLU {RELU}", ("SiLU",)), (PRODUCT, ("SqueezeExcitation",))],
    "mobilenet_v3_small": [(f"Hardswish {RELU}", ("Hardswish",)), (f"Hardsigmoid {RELU}", ("Hardsigmoid",)),
                           (PRODUCT, ("SqueezeExcitation",))],
    "convnext_tiny": [(f"GELU {RELU}", ("GELU",)), (NORM, ("LayerNorm", "LayerNorm2d"))],
    "vit_b_16": [(f"GELU {RELU}", ("GELU",)), (NORM, ("LayerNorm",)), (ATTENTION, ("MultiheadAttention",))],
    "swin_t": [(f"GELU {RELU}", ("GELU",)), (NORM, ("LayerNorm",)), (ATTENTION, ("ShiftedWindowAttention",))],
    "swin_v2_t": [(f"GELU {RELU}", ("GELU",)), (NORM, ("LayerNorm",)), (ATTENTION, ("ShiftedWindowAttentionV2",))],
    "maxvit_t": [(f"GELU {RELU}", ("GELU",)), (f"SiLU {RELU}", ("SiLU",)), (NORM, ("LayerNorm",)),
                 (PRODUCT, ("SqueezeExcitation",))],
}


@functools.cache
def _model(name: str) -> nn.Module:
    """The classifier (10 classes) with random weights and BatchNorm statistics from random batches."""
    torch.manual_seed(0)
    model = getattr(tvm, name)(weights=None, num_classes=10, **BUILD.get(name, {}))
    if name in CONVERTS.values():  # a refusal needs no statistics
        model.train()
        with torch.no_grad():
            for i in range(2):
                model(_input(name, 4, 100 + i))
    return model.eval()


def _input(name: str, batch: int, seed: int) -> torch.Tensor:
    size = SIZE.get(name, 32)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _import(name: str, path: str) -> Graph:
    x = _input(name, 2, 0)
    if path == "export":
        return import_exported(torch.export.export(_model(name), (x,)), name)
    return import_module(_model(name), x, name)


def _marks(name: str, slow: bool = False) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] if slow or name in SLOW else []


def _assert_ann_mode_equals_torch(graph: Graph, name: str) -> None:
    verify(graph)
    x = _input(name, 3, 1)  # other inputs than the import saw, another batch size
    with torch.no_grad():
        want = _model(name)(x).numpy()
    got = TorchSimulator().run_ann(graph, x.numpy())[graph.outputs[0]]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n), id=n) for n in CONVERTS.values()])
def test_relu_family_imports_and_equals_torch_in_ann_mode(name: str) -> None:
    _assert_ann_mode_equals_torch(_import(name, "fx"), name)


NEW = ["resnext50_32x4d", "wide_resnet50_2", "vgg11", "squeezenet1_0", "mnasnet0_5", "regnet_x_400mf", "inception_v3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_relu_family_through_torch_export_equals_torch(name: str) -> None:
    _assert_ann_mode_equals_torch(_import(name, "export"), name)


# ---------------------------------------------------------------------------------------
# refused at import: every op at once, each with where and what to do


def _instances(model: nn.Module, classes: tuple[str, ...]) -> list[str]:
    return [p for p, m in model.named_modules() if type(m).__name__ in classes]


def _refusal(name: str, path: str) -> str:
    with pytest.raises(UnsupportedError) as err:
        _import(name, path)
    return str(err.value)


def _count(line: str) -> int:
    """The number of ops a line of the refusal stands for."""
    m = re.match(r"\s+(\d+) more ops inside", line) or re.search(r" ×(\d+) at ", line)
    assert m is not None, line
    return int(m.group(1))


def _assert_listed(message: str, advice: str, paths: list[str]) -> None:
    """The lines with ``advice`` count every instance and name each one's module path."""
    lines = [line for line in message.splitlines() if advice in line]
    assert lines, f"no line with {advice!r} in:\n{message}"
    count = sum(_count(line) for line in lines)
    assert count == len(paths), (advice, count, len(paths))
    listed = {p for line in lines for p in re.split(r", | and | \[|\]", line.split(" at ", 1)[1])}
    assert set(paths) <= listed, sorted(set(paths) - listed)[:5]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n), id=n) for n in REFUSED.values()])
def test_non_relu_family_is_refused_with_every_op_listed(name: str) -> None:
    message = _refusal(name, "fx")
    total, kinds = re.match(r"(\d+) unsupported ops in @\S+ \((\d+) kinds\); nothing was imported:$",
                            message.splitlines()[0]).groups()  # type: ignore[union-attr]
    lines = message.splitlines()[1:]
    assert len(lines) == int(kinds)
    assert sum(_count(line) for line in lines) == int(total)
    for advice, classes in EXPECT[name]:
        _assert_listed(message, advice, _instances(_model(name), classes))
    assert re.search(r"\w+\.py:\d+ in \w+: `", message)  # the source lines that lead there


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regnet_y_400mf", "vit_b_16", "swin_t"])
def test_non_relu_family_is_refused_through_torch_export(name: str) -> None:
    message = _refusal(name, "export")
    for advice, classes in EXPECT[name]:
        if classes != ("ShiftedWindowAttention",):  # exported, window attention is its matmuls and softmax
            _assert_listed(message, advice, _instances(_model(name), classes))


class _Attention(nn.Module):
    """Two transformer blocks on 2-d tokens: attention returns a tuple (its value and its weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.MultiheadAttention(8, 2, batch_first=True) for _ in range(2))
        self.act = nn.GELU()
        self.fc = nn.Linear(4 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x, _ = block(x, x, x, need_weights=False)  # as torchvision's ViT calls it
        return self.fc(torch.flatten(self.act(x), 1))


def test_ops_after_a_refused_module_with_a_tuple_result_are_still_checked() -> None:
    """Regression: MultiheadAttention's result had no shape, so everything after the first one went
    unchecked (vit_b_16 listed 1 of its 12 attentions and none of its GELUs)."""
    with pytest.raises(UnsupportedError) as err:
        import_module(_Attention().eval(), torch.rand(2, 4, 8))
    message = str(err.value)
    assert "MultiheadAttention ×2 at blocks.0, blocks.1 [" in message, message
    assert "GELU ×1 at act [" in message and f"GELU {RELU}" in message


def test_an_attention_modules_internals_share_one_line() -> None:
    """Exported, attention is ~20 ATen ops (permutes over the batch, reshapes, sdpa): one line for the
    attention with its advice, one for what lies inside it, not one per kind of permute."""
    ep = torch.export.export(_Attention().eval(), (torch.rand(2, 4, 8),))
    with pytest.raises(UnsupportedError) as err:
        import_exported(ep, "attention")
    lines = str(err.value).splitlines()
    attention = [line for line in lines if ATTENTION in line]
    assert len(attention) == 1 and " at blocks.0, blocks.1 " in attention[0], lines
    inside = [line for line in lines if "more ops inside the modules above" in line]
    assert len(inside) == 1 and inside[0].endswith("at blocks.0, blocks.1: they are those modules' internals "
                                                   "and go with them"), lines
    assert not any("see `snnc ops`" in line for line in lines), lines


# ---------------------------------------------------------------------------------------
# the CLI users take: a .pt2, `snnc compile` with the default pipeline, `snnc run --mode ann`


def _pt2(name: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(_model(name), (_input(name, 2, 0),)), path)
    return path


def test_cli_refuses_a_non_relu_family_before_reading_the_calibration_data(tmp_path: Path) -> None:
    """Exit 2, one line whose groups are separated by '; ', nothing written; the calibration file has
    the wrong shape, so an error about it would mean the data was read before the model was checked."""
    pt2 = _pt2("regnet_y_400mf", tmp_path)
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(pt2), "--calib", str(tmp_path / "calib.npz"), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("snnc: error: 32 unsupported ops in @regnet_y_400mf (2 kinds); nothing was imported: ")
    assert "'aten.sigmoid.default' ×16 at trunk_output.block1.block1-0.f.se.scale_activation" in line
    assert "; 'aten.mul.Tensor' of two tensors ×16 at trunk_output.block1.block1-0.f.se, " in line
    assert not out.exists()


def _cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.stderr


def test_cli_compiles_a_pt2_and_runs_it_in_ann_mode_equal_to_torch(tmp_path: Path) -> None:
    name = "squeezenet1_0"
    x = _input(name, 3, 1).numpy()
    np.savez(tmp_path / "x.npz", x=x)
    _cli("compile", str(_pt2(name, tmp_path)), "-o", str(tmp_path / "out"))  # no data: the imported graph
    _cli("run", str(tmp_path / "out"), "--data", str(tmp_path / "x.npz"), "--mode", "ann", "-o", str(tmp_path / "y.npz"))
    with torch.no_grad():
        want = _model(name)(torch.from_numpy(x)).numpy()
    got = np.load(tmp_path / "y.npz")["logits"]
    assert np.abs(got - want).max() <= RTOL * max(1.0, float(np.abs(want).max()))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnasnet0_5", "regnet_x_400mf", "inception_v3"])
def test_cli_converts_with_the_default_pipeline_and_the_snn_follows_its_ann(name: str, tmp_path: Path) -> None:
    size = SIZE.get(name, 32)
    calib = np.random.default_rng(0).uniform(0, 1, (32, 3, size, size)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=calib)
    np.savez(tmp_path / "x.npz", x=calib[:4])
    out = tmp_path / "out"
    _cli("compile", str(_pt2(name, tmp_path)), "--calib", str(tmp_path / "calib.npz"), "-T", "64",
         "--report-samples", "4", "-o", str(out))
    for mode in ("ann", "snn"):
        _cli("run", str(out), "--data", str(tmp_path / "x.npz"), "--mode", mode, "-o", str(tmp_path / f"{mode}.npz"))
    ann, snn = (np.load(tmp_path / f"{m}.npz")["logits"] for m in ("ann", "snn"))
    assert _cosine(snn, ann) >= 0.95


# ---------------------------------------------------------------------------------------
# the docs' coverage table is this file's


def _doc_rows() -> dict[str, tuple[str, list[str]]]:
    """family -> (status, models) from the table of docs/analog_paths.md's coverage section."""
    text = DOC.read_text()
    section = text.split("## Which torchvision classifiers convert", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[2] in ("converts", "refused"):
            rows[cells[0]] = (cells[2], re.findall(r"`([a-z0-9_]+)`", cells[1]))
    return rows


def test_docs_coverage_table_matches_this_test() -> None:
    rows = _doc_rows()
    want = {**{f: ("converts", m) for f, m in CONVERTS.items()}, **{f: ("refused", m) for f, m in REFUSED.items()}}
    assert set(rows) == set(want)
    for family, (status, model) in want.items():
        assert rows[family][0] == status, family
        assert model in rows[family][1], family
