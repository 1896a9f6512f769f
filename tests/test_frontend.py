"""The torch frontends: module-level fx and ATen-level torch.export graphs -> snnc IR.

The test is the differential one of DESIGN §3: the imported graph, run once by the reference simulator
in ANN mode, equals the source module within 1e-5 (max abs, float32).  Errors for unsupported
constructs must name the op, the module path and the user's source line (this file's).
"""

from __future__ import annotations

import functools
from pathlib import Path

import models
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

import snnc
from snnc.backends.torch.simulator import TorchSimulator
from snnc.errors import UnsupportedError
from snnc.frontend import import_exported, import_module
from snnc.ir import Graph, parse_graph, print_graph, verify
from snnc.ir import ops as O

TOL = 1e-5
THIS_FILE = Path(__file__).name


def _line_of(text: str) -> int:
    """1-based line number of the only line of this file that reads ``text`` (pins source locations)."""
    lines = [i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1) if line.strip() == text]
    assert len(lines) == 1, f"{text!r} occurs on lines {lines}"
    return lines[0]


@functools.cache
def _model(cls: type[models.ZooModel]) -> models.ZooModel:
    """One instance per model class and process (building ResNet18ish is not free)."""
    return cls()


def _ann(graph: Graph, x: torch.Tensor) -> np.ndarray:
    out = TorchSimulator().run_ann(graph, x.numpy())
    return out[graph.outputs[0]]


def _reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _export(model: nn.Module, x: torch.Tensor):
    return torch.export.export(model, (x,), dynamic_shapes=({0: Dim("batch")},))


def _source_names(model: nn.Module) -> set[str]:
    """The state dict's keys, less BatchNorm's step counter (not an inference parameter)."""
    return {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}


MODEL_IDS = [cls.__name__ for cls in models.ALL_MODELS]


# ---------------------------------------------------------------------------------------
# ANN-mode equality, module-level fx


@pytest.mark.parametrize("cls", models.ALL_MODELS, ids=MODEL_IDS)
def test_fx_import_equals_source_in_ann_mode(cls):
    model = _model(cls)
    x = model.example_input(batch=6, seed=1)
    graph = import_module(model, x)
    verify(graph)
    got = _ann(graph, x)
    want = _reference(model, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("cls", models.ALL_MODELS, ids=MODEL_IDS)
def test_fx_import_keeps_source_parameter_names_and_values(cls):
    model = _model(cls)
    graph = import_module(model, model.example_input())
    state = model.state_dict()
    assert set(graph.params) == _source_names(model)
    for key, value in graph.params.items():
        np.testing.assert_array_equal(value, state[key].numpy())


@pytest.mark.parametrize("cls", models.ALL_MODELS, ids=MODEL_IDS)
def test_fx_import_drops_the_batch_dimension(cls):
    model = _model(cls)
    graph = import_module(model, model.example_input(batch=5))
    assert [t.shape for _, t in graph.inputs] == [tuple(model.input_shape)]
    # the graph, traced at batch 5, runs any batch
    x = model.example_input(batch=2, seed=3)
    assert np.abs(_ann(graph, x) - _reference(model, x)).max() <= TOL


def test_vggish_maps_to_the_expected_ops_with_nested_source_names():
    graph = import_module(_model(models.VGGish), _model(models.VGGish).example_input())
    ops = [n.op.name for n in graph.nodes]
    assert ops == (
        ["conv2d", "batchnorm", "relu"] * 2
        + ["maxpool2d"]
        + ["conv2d", "batchnorm", "relu", "maxpool2d"]
        + ["conv2d", "batchnorm", "relu", "maxpool2d"]
        + ["flatten", "dropout", "linear", "relu", "dropout", "linear"]
    )
    first = graph.nodes[0]
    assert first.params == {"weight": "features.0.0.weight", "bias": "features.0.0.bias"}
    bn = graph.nodes[1]
    assert bn.params == {
        "mean": "features.0.1.running_mean",
        "var": "features.0.1.running_var",
        "weight": "features.0.1.weight",
        "bias": "features.0.1.bias",
    }


def test_resnet_residual_spellings_all_become_add():
    """`out + identity`, `torch.add(out, identity)` and `out += identity` are the same IR op."""
    graph = import_module(_model(models.ResNet18ish), _model(models.ResNet18ish).example_input())
    adds = list(graph.ops(O.Add))
    assert len(adds) == 8  # 4 stages x 2 basic blocks
    assert all(len(n.inputs) == 2 for n in adds)
    assert len(list(graph.ops(O.AvgPool2d))) == 1  # the global average pool


class Functional(nn.Module):
    """The functional spellings the frontend must map, one per line."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.skip = nn.Identity()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.conv(x))
        y = F.hardtanh(y, -0.5, 2.0)
        y = torch.add(y, self.skip(F.relu(self.conv2(y))))
        y = y.clamp(min=0.0)
        y = torch.clamp(y, 0.0, 1.5)
        y = F.max_pool2d(y, 2)
        y = F.avg_pool2d(y, kernel_size=2, stride=1)
        y = F.adaptive_avg_pool2d(y, (2, 2))
        y = F.dropout(y, 0.3, training=self.training)
        y = y.reshape(y.size(0), 4, 4).view(-1, 16)
        return self.fc(torch.relu(y))


def _functional() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Functional().eval(), torch.rand(3, 2, 10, 10)


def test_functional_forms_import_and_equal_source():
    model, x = _functional()
    graph = import_module(model, x)
    ops = [n.op.name for n in graph.nodes]
    assert ops == [
        "conv2d",
        "clip",
        "clip",
        "conv2d",
        "relu",
        "identity",
        "add",
        "relu",
        "clip",
        "maxpool2d",
        "avgpool2d",
        "avgpool2d",
        "reshape",
        "flatten",
        "relu",
        "linear",
    ]
    assert np.abs(_ann(graph, x) - _reference(model, x)).max() <= TOL


def test_view_with_shape_attribute_imports():
    class ShapeView(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.view(x.shape[0], -1))

    model, x = ShapeView().eval(), torch.rand(2, 3, 4)
    graph = import_module(model, x)
    assert np.abs(_ann(graph, x) - _reference(model, x)).max() <= TOL


def test_snnc_import_module_is_the_frontend():
    model = _model(models.TinyMLP)
    x = model.example_input()
    graph = snnc.import_module(model, x)
    assert isinstance(graph, Graph)
    assert graph == import_module(model, x)
    assert graph.name == "TinyMLP"
    assert snnc.import_module(model, x, name="mlp").name == "mlp"


def test_imported_graph_round_trips_through_text():
    graph = import_module(_model(models.ConcatNet), _model(models.ConcatNet).example_input())
    assert parse_graph(print_graph(graph)) == graph


# ---------------------------------------------------------------------------------------
# ANN-mode equality, ATen-level torch.export (dynamic batch)


@pytest.mark.parametrize("cls", models.ALL_MODELS, ids=MODEL_IDS)
def test_exported_import_equals_source_in_ann_mode(cls):
    model = _model(cls)
    ep = _export(model, model.example_input(batch=4))
    graph = import_exported(ep, cls.__name__)
    verify(graph)
    # the dynamic batch dimension is not in the IR type; any batch runs
    assert [t.shape for _, t in graph.inputs] == [tuple(model.input_shape)]
    assert set(graph.params) == _source_names(model)
    for batch in (1, 7):
        x = model.example_input(batch=batch, seed=batch)
        assert np.abs(_ann(graph, x) - _reference(model, x)).max() <= TOL


def test_exported_and_fx_graphs_have_the_same_ops():
    model = _model(models.ResNet18ish)
    x = model.example_input()
    fx_ops = [n.op for n in import_module(model, x).nodes]
    aten_ops = [n.op for n in import_exported(_export(model, x)).nodes]
    assert aten_ops == fx_ops


def test_exported_functional_forms_equal_source():
    model, x = _functional()
    graph = import_exported(_export(model, x))
    assert np.abs(_ann(graph, x) - _reference(model, x)).max() <= TOL


# ---------------------------------------------------------------------------------------
# unsupported constructs: name the op, the module path and the user's line


class SigmoidHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x))  # the unsupported op


class WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), SigmoidHead())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(8, 8), nn.LSTM(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)  # reaches the LSTM


def test_unsupported_function_names_op_module_path_and_line():
    line = _line_of("return torch.sigmoid(self.fc(x))  # the unsupported op")
    with pytest.raises(UnsupportedError) as err:
        import_module(WithSigmoid(), torch.rand(2, 8))
    assert str(err.value) == (
        f"unsupported op 'torch.sigmoid' at {THIS_FILE}:{line} in forward (body.1): "
        "`return torch.sigmoid(self.fc(x))  # the unsupported op`; Sigmoid has no ReLU form: replace it with "
        "nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and retrain, or use a ReLU-family model"
    )


def test_unsupported_aten_op_names_op_module_path_and_line():
    line = _line_of("return torch.sigmoid(self.fc(x))  # the unsupported op")
    ep = _export(WithSigmoid().eval(), torch.rand(3, 8))
    with pytest.raises(UnsupportedError) as err:
        import_exported(ep)
    msg = str(err.value)
    assert msg.startswith(
        f"unsupported op 'aten.sigmoid.default' at {THIS_FILE}:{line} in forward (body.1): "
    )
    assert "\n" not in msg


def test_unsupported_module_names_class_module_path_and_line():
    line = _line_of("return self.enc(x)  # reaches the LSTM")
    with pytest.raises(UnsupportedError) as err:
        import_module(WithLSTM(), torch.rand(2, 8))
    msg = str(err.value)
    assert msg.startswith("unsupported op module torch.nn.modules.rnn.LSTM ")
    assert f"at {THIS_FILE}:{line} in forward (enc.1)" in msg
    assert msg.endswith("; see `snnc ops` for what the frontend maps")
    assert "\n" not in msg


def test_unsupported_error_is_a_user_error():
    assert issubclass(UnsupportedError, snnc.UserError)
