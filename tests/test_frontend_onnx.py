"""The ONNX frontend (issue 15): ``.onnx`` files -> the same IR as the torch.export path.

The reference is onnxruntime: the imported graph, run once by the reference simulator in ANN mode,
must equal onnxruntime's output on the same file within 1e-4 relative, for graphs written by hand
with ``onnx.helper`` (every mapped op and the exporters' reshape arithmetic), the digits models and
the torchvision classifiers of tests/test_torchvision_import.py, each exported by both torch.onnx
exporters (``dynamo=False``, the TorchScript one, and ``dynamo=True``).  Dynamo exports cost 5-30 s
each on this machine, so only the digits ones are in the fast set.  The IR must equal the torch.export
frontend's for the same model (ops, attributes, wiring, parameter names and values); unsupported ops
are listed at once; malformed files and external data that leaves the model's directory are one-line
user errors.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snnc.backends.torch.simulator import TorchSimulator
from snnc.cli import main
from snnc.errors import InputFileError, UnsupportedError
from snnc.frontend.files import load_model
from snnc.ir import Graph, print_graph
from snnc.ir import ops as O

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
RTOL = 1e-4
OPSET = 18


# ---------------------------------------------------------------------------------------
# helpers


def _ort(path_or_model, x: np.ndarray) -> np.ndarray:
    data = path_or_model if isinstance(path_or_model, (str, Path)) else path_or_model.SerializeToString()
    sess = ort.InferenceSession(str(data) if isinstance(data, Path) else data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ann(graph: Graph, x: np.ndarray) -> np.ndarray:
    return TorchSimulator().run_ann(graph, x)[graph.outputs[0]]


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL * max(1.0, float(np.abs(want).max()))


def _save(model, tmp_path: Path, name: str = "model") -> Path:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _import(model, tmp_path: Path, name: str = "model") -> Graph:
    return load_model(_save(model, tmp_path, name)).graph


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array), name)


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset: int = OPSET):
    graph = helper.make_graph(nodes, "hand", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _canonical(graph: Graph, names: bool = True) -> list[tuple]:
    """The graph without value names: per node its op (with attributes), its operands by position and
    its parameters by role (values, and names unless ``names`` is false)."""
    index = {name: f"in{i}" for i, (name, _) in enumerate(graph.inputs)}
    out = []
    for i, n in enumerate(graph.nodes):
        index[n.name] = i
        params = {role: (key if names else "", graph.params[key].tobytes()) for role, key in sorted(n.params.items())}
        out.append((n.op, tuple(index[v] for v in n.inputs), params, n.type))
    return out + [tuple(index[o] for o in graph.outputs)]


def _without_identity_pooling(graph: Graph) -> Graph:
    """The graph without 1x1 average poolings of stride 1 (identities): the torch frontends map
    ``x.mean((2, 3))`` of a 1x1 map to one and ``adaptive_avg_pool2d(x, 1)`` to none, while the dynamo
    exporter writes both as ReduceMean (which the ONNX frontend maps to none on a 1x1 map)."""
    graph = copy.deepcopy(graph)
    for n in list(graph.nodes):
        if n.op == O.AvgPool2d(kernel=(1, 1), stride=(1, 1)):
            graph.replace_uses(n.name, n.inputs[0])
            graph.outputs = [n.inputs[0] if o == n.name else o for o in graph.outputs]
            graph.nodes.remove(n)
    return graph


def _assert_same_ir(onnx_graph: Graph, torch_graph: Graph) -> None:
    """Equal but for the names of parameters the legacy exporter shared between layers because their
    values are equal (BatchNorm's initial ones and zeros): each use gets a copy, `bn1.weight.1`."""
    onnx_graph, torch_graph = _without_identity_pooling(onnx_graph), _without_identity_pooling(torch_graph)
    assert _canonical(onnx_graph, names=False) == _canonical(torch_graph, names=False)
    for a, b in zip(onnx_graph.nodes, torch_graph.nodes, strict=True):
        for role, key in a.params.items():
            if key != b.params[role]:
                shared = re.sub(r"\.\d+$", "", key)
                np.testing.assert_array_equal(onnx_graph.params[key], torch_graph.params[shared])


# ---------------------------------------------------------------------------------------
# graphs written by hand


def _hand_2d():
    """Every 2-d op the frontend maps, with a dynamic batch and the exporters' reshape arithmetic."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    inits = [
        _init("c1.w", _rand(rng, 8, 4, 3, 3)), _init("c1.b", _rand(rng, 8)),
        _init("bn.s", 1 + _rand(rng, 8)), _init("bn.b", _rand(rng, 8)), _init("bn.m", _rand(rng, 8)),
        _init("bn.v", 0.5 + np.abs(_rand(rng, 8))),
        _init("lo", np.float32(0.0)), _init("hi", np.float32(6.0)),
        _init("dw.w", _rand(rng, 8, 1, 3, 3)),
        _init("k.mul", 1 + _rand(rng, 1, 8, 1, 1)), _init("k.add", _rand(rng, 8, 1, 1)),
        _init("pw.w", _rand(rng, 8, 8, 1, 1)), _init("split", np.array([3, 5], np.int64)),
        _init("sl.starts", np.array([0, 1], np.int64)), _init("sl.ends", np.array([4, 2**62], np.int64)),
        _init("sl.axes", np.array([2, 3], np.int64)),
        _init("zero", np.array([0], np.int64)), _init("minus1", np.array([-1], np.int64)),
        _init("fc1.w", _rand(rng, 32, 16)), _init("fc1.b", _rand(rng, 16)),
        _init("fc2.w", _rand(rng, 16, 10)), _init("fc2.b", _rand(rng, 10)),
        _init("k.sub", _rand(rng, 10)), _init("k.div", np.float32(2.0)),
    ]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        N("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], name="bn", epsilon=1e-3),
        N("Clip", ["bn", "lo", "hi"], ["relu6"], name="relu6"),
        N("Conv", ["relu6", "dw.w"], ["dw"], name="dw", group=8, auto_pad="SAME_UPPER", kernel_shape=[3, 3]),
        N("Relu", ["dw"], ["dw.relu"], name="dw.relu"),
        N("Mul", ["dw.relu", "k.mul"], ["scaled"], name="scaled"),
        N("Add", ["k.add", "scaled"], ["shifted"], name="shifted"),
        N("MaxPool", ["shifted"], ["mp"], name="mp", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          ceil_mode=1),
        N("Conv", ["mp", "pw.w"], ["pw"], name="pw"),
        N("Add", ["pw", "mp"], ["res"], name="res"),
        N("Split", ["res", "split"], ["s0", "s1"], name="split", axis=1),
        N("Concat", ["s1", "s0"], ["cat"], name="cat", axis=-3),
        N("Slice", ["cat", "sl.starts", "sl.ends", "sl.axes"], ["sl"], name="sl"),
        N("Transpose", ["sl"], ["tr"], name="tr", perm=[0, 1, 3, 2]),
        N("AveragePool", ["tr"], ["ap"], name="ap", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        N("Dropout", ["ap"], ["drop"], name="drop"),
        N("Identity", ["drop"], ["ident"], name="ident"),
        N("Shape", ["ident"], ["shape"], name="shape"),
        N("Gather", ["shape", "zero"], ["batch"], name="batch", axis=0),
        N("Concat", ["batch", "minus1"], ["target"], name="target", axis=0),
        N("Reshape", ["ident", "target"], ["flat"], name="flat"),
        N("MatMul", ["flat", "fc1.w"], ["mm"], name="mm"),
        N("Add", ["mm", "fc1.b"], ["fc1"], name="fc1"),
        N("Relu", ["fc1"], ["fc1.relu"], name="fc1.relu"),
        N("Gemm", ["fc1.relu", "fc2.w", "fc2.b"], ["fc2"], name="fc2", alpha=0.5, beta=2.0),
        N("Sub", ["fc2", "k.sub"], ["sub"], name="sub"),
        N("Div", ["sub", "k.div"], ["y"], name="div"),
    ]
    x = helper.make_tensor_value_info("x", f, ["N", 4, 9, 9])
    y = helper.make_tensor_value_info("y", f, ["N", 10])
    return _model(nodes, [x], [y], inits)


def _hand_1d():
    """Conv1d (strided, grouped), global pooling written three ways, Squeeze/Unsqueeze, Flatten, Gemm."""
    rng = np.random.default_rng(1)
    f = TensorProto.FLOAT
    inits = [_init("a.w", _rand(rng, 6, 3, 5)), _init("a.b", _rand(rng, 6)), _init("g.w", _rand(rng, 6, 2, 3)),
             _init("ax2", np.array([2], np.int64)), _init("ax23", np.array([2, 3], np.int64)),
             _init("fc.w", _rand(rng, 4, 6)), _init("fc.b", _rand(rng, 4))]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "a.w", "a.b"], ["a"], name="a", strides=[2], pads=[2, 2]),
        N("Relu", ["a"], ["a.relu"], name="a.relu"),
        N("Conv", ["a.relu", "g.w"], ["g"], name="g", group=3, pads=[1, 1], dilations=[1]),
        N("Unsqueeze", ["g", "ax2"], ["g4"], name="g4"),  # [N,6,1,10]
        N("GlobalMaxPool", ["g4"], ["gmax"], name="gmax"),
        N("GlobalAveragePool", ["g4"], ["gavg"], name="gavg"),
        N("ReduceMean", ["g4", "ax23"], ["rmean"], name="rmean", keepdims=1),
        N("Add", ["gmax", "gavg"], ["sum2"], name="sum2"),
        N("Add", ["sum2", "rmean"], ["sum3"], name="sum3"),
        N("Squeeze", ["sum3", "ax23"], ["sq"], name="sq"),
        N("Flatten", ["sq"], ["fl"], name="fl", axis=1),
        N("Gemm", ["fl", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("x", f, ["batch", 3, 20])
    y = helper.make_tensor_value_info("y", f, ["batch", 4])
    return _model(nodes, [x], [y], inits)


def _hand_pool(count_include_pad: int):
    """A bias-less Conv + Add (the bias), scalar Mul/Add, an AveragePool whose last ceil_mode window
    reaches past the padding (PyTorch's divisor rule), nearest Resize by 2."""
    rng = np.random.default_rng(4)
    f = TensorProto.FLOAT
    N = helper.make_node
    inits = [_init("w", _rand(rng, 4, 2, 3, 3)), _init("b", _rand(rng, 1, 4, 1, 1)), _init("half", np.float32(0.5)),
             _init("one", np.float32(1.0)), _init("scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [
        N("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        N("Add", ["c", "b"], ["cb"], name="bias"),
        N("Mul", ["cb", "half"], ["m"], name="half"),
        N("Add", ["m", "one"], ["a"], name="one"),
        N("AveragePool", ["a"], ["ap"], name="ap", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          ceil_mode=1, count_include_pad=count_include_pad),
        N("Resize", ["ap", "", "scales"], ["y"], name="up", mode="nearest",
          coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", f, ["N", 2, 8, 8])],
                  [helper.make_tensor_value_info("y", f, ["N", 4, 10, 10])], inits)


@pytest.mark.parametrize("make, shape", [
    (_hand_2d, (3, 4, 9, 9)), (_hand_1d, (3, 3, 20)), (functools.partial(_hand_pool, 0), (3, 2, 8, 8)),
    (functools.partial(_hand_pool, 1), (3, 2, 8, 8))], ids=["2d", "1d", "pool-excl-pad", "pool-incl-pad"])
def test_hand_written_graph_equals_onnxruntime(make, shape, tmp_path) -> None:
    model = make()
    graph = _import(model, tmp_path)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    _assert_close(_ann(graph, x), _ort(model, x))
    _assert_close(_ann(graph, x[:1]), _ort(model, x[:1]))  # the batch is dynamic


def test_hand_written_pool_graph_ops() -> None:
    from snnc.frontend.onnx import import_onnx

    graph = import_onnx(_hand_pool(0), "pool")
    assert [n.op.name for n in graph.nodes] == ["conv2d", "scale", "scale", "avgpool2d", "upsample"]
    assert graph.node("c").params == {"weight": "w", "bias": "b"}  # the Add became the conv's bias
    assert graph.node("m").op.factor == 0.5 and graph.node("y").op.scale == (2, 2)


def test_hand_written_2d_maps_each_op_to_the_ir_op() -> None:
    from snnc.frontend.onnx import import_onnx

    graph = import_onnx(_hand_2d(), "hand")
    ops = [n.op.name for n in graph.nodes]
    assert ops == ["conv2d", "batchnorm", "clip", "conv2d", "relu", "scale", "scale", "maxpool2d", "conv2d",
                   "add", "slice", "slice", "concat", "slice", "slice", "permute", "avgpool2d", "flatten",
                   "linear", "relu", "linear", "scale", "scale"]
    dw = graph.node("dw")
    assert dw.op.groups == 8 and dw.op.padding == (1, 1)  # SAME_UPPER of a 3x3 stride-1 window
    assert graph.node("mp").op.ceil_mode and graph.node("ap").op.count_include_pad is False  # ONNX's default
    fc1 = graph.node("mm")
    assert fc1.params == {"weight": "fc1.w", "bias": "fc1.b"}  # MatMul + Add: one linear layer, its bias
    np.testing.assert_array_equal(graph.params["fc1.w"], numpy_helper.to_array(_hand_2d().graph.initializer[18]).T)
    assert graph.node("bn").op.eps == 1e-3
    assert "Shape" not in print_graph(graph) and "gather" not in print_graph(graph)  # folded away


# ---------------------------------------------------------------------------------------
# exported by torch.onnx


def _export(module: torch.nn.Module, x: torch.Tensor, path: Path, exporter: str) -> Path:
    """``legacy``: the TorchScript exporter (dynamo=False) with a dynamic batch, BN folded as by default;
    ``legacy-keep``: the same keeping BatchNormalization (training=PRESERVE, no constant folding);
    ``dynamo``: the torch.export-based exporter with a dynamic batch; ``dynamo-keep``: without its
    optimiser (BN kept, the batch-size arithmetic left in the graph)."""
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if exporter.startswith("legacy"):
                keep = exporter == "legacy-keep"
                kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep else {}
                torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"],
                                  dynamic_axes={"x": {0: "N"}}, **kwargs)
            else:
                torch.onnx.export(module, (x,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("N")},),
                                  optimize=exporter == "dynamo", verbose=False)
        finally:
            logging.disable(logging.NOTSET)
    return path


def _digits_module(name: str) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("digits_models_onnx", DIGITS / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, name)()
    model.load_state_dict(torch.load(DIGITS / f"{name}.pt", weights_only=True))
    return model.eval()


@functools.cache
def _digits_onnx(name: str, exporter: str, folder: Path) -> Path:
    return _export(_digits_module(name), torch.zeros(2, 1, 8, 8), folder / f"{name}_{exporter}.onnx", exporter)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


def _digits_x(n: int = 16) -> np.ndarray:
    with np.load(DIGITS / "test.npz") as f:
        return f["x"][:n]


_slow = pytest.mark.slow


@pytest.mark.parametrize("name, exporter", [
    ("cnn", "legacy"), ("mlp", "legacy"), ("cnn", "legacy-keep"), ("cnn", "dynamo-keep"), ("mlp", "dynamo"),
    pytest.param("cnn", "dynamo", marks=_slow), pytest.param("mlp", "dynamo-keep", marks=_slow)])
def test_digits_models_equal_onnxruntime_and_torch(name, exporter, onnx_dir) -> None:
    path = _digits_onnx(name, exporter, onnx_dir)
    graph = load_model(path).graph
    x = _digits_x()
    got = _ann(graph, x)
    _assert_close(got, _ort(path, x))
    with torch.no_grad():
        _assert_close(got, _digits_module(name)(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("name, exporter", [
    ("cnn", "legacy-keep"), ("cnn", "dynamo-keep"), ("mlp", "legacy"), pytest.param("mlp", "dynamo", marks=_slow)])
def test_same_ir_as_the_torch_export_path(name, exporter, onnx_dir) -> None:
    """Ops, attributes, wiring, types, parameter names and values equal those imported from the .pt2."""
    onnx_graph = load_model(_digits_onnx(name, exporter, onnx_dir)).graph
    pt2_graph = load_model(DIGITS / f"{name}.pt2").graph
    assert _canonical(onnx_graph) == _canonical(pt2_graph)


def test_folded_batch_norm_is_the_only_difference_of_the_default_legacy_export(onnx_dir) -> None:
    """The exporters fold BN into the convolutions by default: then the IR lacks the batchnorm nodes."""
    graph = load_model(_digits_onnx("cnn", "legacy", onnx_dir)).graph
    pt2_ops = [n.op.name for n in load_model(DIGITS / "cnn.pt2").graph.nodes]
    assert [n.op.name for n in graph.nodes] == [op for op in pt2_ops if op != "batchnorm"]


# torchvision: the classifiers of tests/test_torchvision_import.py.  Exporting costs 1-13 s (legacy) and
# 15-120 s (dynamo) each; alexnet and vgg11_bn have no legacy export (torch refuses adaptive pooling
# to a size that does not divide the input: 1x1 -> 6x6 / 7x7); the dynamo exporter writes it as a
# Transpose/GatherND/ReduceMean pattern that the frontend maps to `upsample`.
_TV_FAST = {("resnet18", "legacy"), ("squeezenet1_1", "legacy"), ("mobilenet_v2", "legacy"),
            ("shufflenet_v2_x0_5", "legacy")}
_TV = [(n, e) for n in ("resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1",
                        "densenet121", "vgg11_bn", "alexnet", "googlenet") for e in ("legacy", "dynamo")
       if not (e == "legacy" and n in ("alexnet", "vgg11_bn"))]
_TV_NEEDS = {"alexnet": {"upsample"}, "vgg11_bn": {"upsample"}, "shufflenet_v2_x0_5": {"permute", "reshape", "slice"},
             "squeezenet1_1": {"concat", "maxpool2d"}, "resnet18": {"add"}, "mobilenet_v2": {"clip"}}


@pytest.mark.parametrize("name, exporter", [
    pytest.param(n, e, id=f"{n}-{e}", marks=[] if (n, e) in _TV_FAST else [_slow]) for n, e in _TV])
def test_torchvision_classifier_equals_onnxruntime(name, exporter, tmp_path) -> None:
    tv = pytest.importorskip("test_torchvision_import")
    model = tv._model(name)
    path = _export(model, tv._input(name, 2, 0), tmp_path / f"{name}.onnx", exporter)
    graph = load_model(path).graph
    assert _TV_NEEDS.get(name, set()) <= {n.op.name for n in graph.nodes}
    x = tv._input(name, 3, 1).numpy()
    got = _ann(graph, x)
    _assert_close(got, _ort(path, x))
    with torch.no_grad():
        _assert_close(got, model(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("name, exporter", [
    ("resnet18", "legacy-keep"), pytest.param("resnet18", "dynamo-keep", marks=_slow),
    pytest.param("shufflenet_v2_x0_5", "legacy-keep", marks=_slow)])
def test_torchvision_same_ir_as_the_torch_export_path(name, exporter, tmp_path) -> None:
    tv = pytest.importorskip("test_torchvision_import")
    model, x = tv._model(name), tv._input(name, 2, 0)
    graph = load_model(_export(model, x, tmp_path / f"{name}.onnx", exporter)).graph
    _assert_same_ir(graph, tv.import_exported(torch.export.export(model, (x,)), name))


# ---------------------------------------------------------------------------------------
# refusals: every unsupported node at once


def _unsupported_model():
    rng = np.random.default_rng(2)
    f = TensorProto.FLOAT
    N = helper.make_node
    inits = [_init("w", _rand(rng, 4, 3, 3, 3)), _init("fc.w", _rand(rng, 4 * 2 * 2, 5))]
    nodes = [
        N("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 0, 1, 1]),  # asymmetric padding
        N("Sigmoid", ["c"], ["s1"], name="sig1"),
        N("LeakyRelu", ["s1"], ["l"], name="leaky", alpha=0.1),
        N("Sigmoid", ["l"], ["s2"], name="sig2"),
        N("MaxPool", ["s2"], ["p", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        N("Cast", ["idx"], ["idx.f"], name="idx.f", to=TensorProto.FLOAT),
        N("Add", ["p", "idx.f"], ["pi"], name="pi"),
        N("Flatten", ["pi"], ["fl"], name="fl"),
        N("MatMul", ["fl", "fc.w"], ["mm"], name="mm"),
        N("Softmax", ["mm"], ["y"], name="softmax"),
    ]
    x = helper.make_tensor_value_info("x", f, ["N", 3, 6, 6])
    y = helper.make_tensor_value_info("y", f, ["N", 5])
    return _model(nodes, [x], [y], inits)


def test_unsupported_ops_are_listed_at_once_one_line_per_kind(tmp_path) -> None:
    with pytest.raises(UnsupportedError) as err:
        _import(_unsupported_model(), tmp_path, "bad")
    lines = str(err.value).splitlines()
    assert lines[0] == "6 unsupported ops in @bad (5 kinds); nothing was imported:"
    assert lines[1] == ("  Conv with asymmetric padding [0, 0, 1, 1] (begin != end) ×1 at 'conv': pad symmetrically, "
                        "or export with padding that PyTorch can express")
    assert lines[2].startswith("  Sigmoid ×2 at 'sig1', 'sig2': Sigmoid has no ReLU form")
    assert lines[3].startswith("  LeakyRelu ×1 at 'leaky': LeakyRelu has no ReLU form")
    assert lines[4].startswith("  MaxPool whose indices output 'idx' is used ×1 at 'pool'")
    assert lines[5] == ("  Softmax ×1 at 'softmax': remove the final softmax: snnc reads the logits, whose argmax "
                        "is the same")
    assert len(lines) == 6  # the Cast and Add of the indices, downstream of a refusal, are not listed twice


def test_cli_lists_unsupported_ops_in_one_line_and_writes_nothing(tmp_path) -> None:
    path = _save(_unsupported_model(), tmp_path, "bad")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("snnc: error: 6 unsupported ops in @bad (5 kinds)")
    assert "Sigmoid ×2 at 'sig1', 'sig2'" in result.stderr
    assert not out.exists()


def test_arithmetic_on_a_dynamic_batch_and_reshapes_across_it_are_refused(tmp_path) -> None:
    f = TensorProto.FLOAT
    N = helper.make_node
    inits = [_init("zero", np.array([0], np.int64)), _init("two", np.array([2], np.int64)),
             _init("whole", np.array([-1], np.int64))]
    nodes = [N("Shape", ["x"], ["shape"], name="shape"), N("Gather", ["shape", "zero"], ["b"], name="b", axis=0),
             N("Mul", ["b", "two"], ["b2"], name="b2"), N("Concat", ["b2", "whole"], ["t"], name="t", axis=0),
             N("Reshape", ["x", "t"], ["r"], name="r"), N("Reshape", ["x", "whole"], ["y"], name="y")]
    model = _model(nodes, [helper.make_tensor_value_info("x", f, ["N", 4, 2])],
                   [helper.make_tensor_value_info("r", f, ["M", 4]), helper.make_tensor_value_info("y", f, ["M"])],
                   inits)
    with pytest.raises(UnsupportedError) as err:
        _import(model, tmp_path)
    message = str(err.value)
    assert "Mul that computes with the (dynamic) batch size ×1 at 'b2'" in message
    assert "Reshape to [-1] that changes the batch dimension ×1 at 'y'" in message


# ---------------------------------------------------------------------------------------
# malformed files and external data


def _cli_error(path: Path, tmp_path: Path) -> str:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(out)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()
    return result.stderr.strip()


@pytest.mark.parametrize("cut", ["half", "tail", "empty", "garbage"])
def test_truncated_or_garbage_file_is_one_line_input_error(cut, tmp_path) -> None:
    data = _hand_1d().SerializeToString()
    body = {"half": data[: len(data) // 2], "tail": data[:-7], "empty": b"", "garbage": b"\x00\xffnot onnx" * 9}[cut]
    path = tmp_path / "m.onnx"
    path.write_bytes(body)
    with pytest.raises(InputFileError):
        load_model(path)
    assert _cli_error(path, tmp_path).startswith(f"snnc: error: {path}: ")


def test_opset_outside_13_to_21_is_refused_with_what_to_do(tmp_path) -> None:
    model = _hand_1d()
    model.opset_import[0].version = 12
    line = _cli_error(_save(model, tmp_path), tmp_path)
    assert "ONNX opset 12; snnc reads opsets 13-21: convert the model with onnx.version_converter" in line


def test_inconsistent_shapes_are_an_input_error(tmp_path) -> None:
    model = _hand_1d()
    model.graph.initializer[5].CopyFrom(_init("fc.w", np.zeros((4, 7), np.float32)))  # 7 inputs, not 6
    line = _cli_error(_save(model, tmp_path), tmp_path)
    assert "inconsistent ONNX model (shape inference)" in line


def test_weight_of_an_invalid_data_type_is_an_input_error(tmp_path) -> None:
    """Found by mutating files: a large weight's type byte damaged (shape inference raised ValueError)."""
    w = _init("w", np.zeros((64, 3, 3, 3), np.float32))
    w.data_type = 114
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64, 3, 3])], [w])
    line = _cli_error(_save(model, tmp_path), tmp_path)
    assert "invalid" in line or "inconsistent" in line, line


def _external(tmp_path: Path, location: str) -> Path:
    """The 1-d hand graph with its weights in an external file; then its location rewritten."""
    model = _hand_1d()
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    path = folder / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=0)
    if location != "ext.bin":
        m = onnx.load(path, load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save(m, path)
    return path


def test_external_data_next_to_the_model_loads_from_any_working_directory(tmp_path, monkeypatch) -> None:
    path = _external(tmp_path, "ext.bin")
    monkeypatch.chdir(tmp_path)  # relative to the model's directory, not the working one
    graph = load_model(path).graph
    x = np.random.default_rng(3).standard_normal((2, 3, 20)).astype(np.float32)
    _assert_close(_ann(graph, x), _ort(_hand_1d(), x))


@pytest.mark.parametrize("location, fragment", [
    ("../secret.bin", "outside the model's directory"),
    ("/etc/passwd", "an absolute or empty path"),
    ("missing.bin", "which does not exist"),
    ("link.bin", "outside the model's directory"),
    ("short.bin", "but the file has 10 bytes (truncated?)"),
])
def test_external_data_outside_the_model_directory_or_damaged_is_refused(location, fragment, tmp_path) -> None:
    path = _external(tmp_path, location)
    (tmp_path / "secret.bin").write_bytes((path.parent / "ext.bin").read_bytes())
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    (path.parent / "short.bin").write_bytes(b"0123456789")
    with pytest.raises(InputFileError, match="stores its data in"):
        load_model(path)
    line = _cli_error(path, tmp_path)
    assert fragment in line, line


# ---------------------------------------------------------------------------------------
# end to end


def test_cli_compiles_onnx_like_the_pt2_and_runs_it(onnx_dir, tmp_path) -> None:
    """`snnc compile model.onnx --calib ...` converts the digits CNN (BN kept by the export) to the same
    SNN as the .pt2: identical predictions and logits of `snnc run`."""
    onnx_path = _digits_onnx("cnn", "legacy-keep", onnx_dir)
    flags = ["--calib", str(DIGITS / "train.npz"), "--calib-samples", "128", "--timesteps", "4", "--quiet"]
    logits = []
    for src, out in ((onnx_path, tmp_path / "a"), (DIGITS / "cnn.pt2", tmp_path / "b")):
        result = CliRunner().invoke(main, ["compile", str(src), "-o", str(out), *flags])
        assert result.exit_code == 0, result.stderr
        y = tmp_path / f"{out.name}.npz"
        result = CliRunner().invoke(main, ["run", str(out), "--data", str(DIGITS / "test.npz"), "-o", str(y)])
        assert result.exit_code == 0, result.stderr
        with np.load(y) as f:
            logits.append((f["logits"], f["predictions"]))
    report = (tmp_path / "a" / "report.json").read_text()
    assert '"kind": "onnx"' in report
    np.testing.assert_array_equal(logits[0][1], logits[1][1])
    np.testing.assert_allclose(logits[0][0], logits[1][0], rtol=1e-5, atol=1e-5)
