"""snnc's direct .pt2 reader (snnc/frontend/pt2_reader.py) against torch.export.load.

The reader exists to spare the import of torch._dynamo (seconds for any model, issue 13); it must
give the frontend the same graph as torch.export.load: the same IR text, parameters and source
locations on every archive, the same refusal where the frontend refuses, and a fall back to
torch.export.load for what it does not cover.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snnc.errors import UnsupportedError
from snnc.frontend.files import load_model
from snnc.frontend.fx import import_exported
from snnc.frontend.pt2_reader import NotCovered, read_exported
from snnc.ir import print_graph

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


class Block(nn.Module):
    """A residual block with a 1x1 downsample, as torchvision's BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.block = Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.pool(self.block(self.stem(x))), 1)))


class Constants(nn.Module):
    """A non-persistent buffer used as a weight (a lifted constant), a tied weight, a hardtanh."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.register_buffer("proj", torch.linspace(-1.0, 1.0, 36).reshape(6, 6), persistent=False)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = nn.functional.hardtanh(self.b(torch.relu(self.a(x))), 0.0, 1.0)
        return self.out(torch.relu(nn.functional.linear(h, self.proj)))


class Refused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


def _save(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool = False) -> bytes:
    torch.manual_seed(0)
    model.eval()
    shapes = {"x": {0: torch.export.Dim("batch", min=2)}} if dynamic_batch else None
    ep = torch.export.export(model, (x,), dynamic_shapes=shapes)
    torch.export.save(ep, path)
    return path.read_bytes()


def _both(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        ours = read_exported(z)
    return ours, torch.export.load(io.BytesIO(data))


def _fx_nodes(graph) -> list[tuple[str, ...]]:
    """Each fx node as kind, name, target, args and kwargs (operands by name)."""
    def named(a):
        return str(torch.fx.node.map_arg(a, lambda n: f"%{n.name}"))
    return [(n.op, n.name, str(n.target), named(n.args), named(dict(n.kwargs))) for n in graph.nodes]


def _same_import(data: bytes) -> None:
    ours, theirs = _both(data)
    # the same fx graph, node for node, and the same lifted state ...
    assert _fx_nodes(ours.graph_module.graph) == _fx_nodes(theirs.graph_module.graph)
    for field in ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants"):
        assert getattr(ours.graph_signature, field) == dict(getattr(theirs.graph_signature, field)), field
    assert ours.state_dict.keys() == theirs.state_dict.keys() and ours.constants.keys() == theirs.constants.keys()
    # ... hence the same IR
    a, b = import_exported(ours, "m"), import_exported(theirs, "m")
    assert print_graph(a) == print_graph(b)
    assert a.params.keys() == b.params.keys()
    for key in a.params:
        assert np.array_equal(a.params[key], b.params[key]), key
    assert [n.loc for n in a.nodes] == [n.loc for n in b.nodes]
    assert [n.loc for n in a.nodes if n.loc], "the stack traces reached the IR"


CASES = {
    "resnet_like": (ResNetLike, (2, 3, 16, 16), False),
    "resnet_like_dynamic_batch": (ResNetLike, (2, 3, 16, 16), True),
    "constants_and_tied_weights": (Constants, (2, 6), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_ir_as_torch_export_load(case, tmp_path):
    factory, shape, dynamic = CASES[case]
    torch.manual_seed(0)
    _same_import(_save(factory(), torch.rand(shape), tmp_path / "m.pt2", dynamic))


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_same_ir_on_the_shipped_examples(name):
    _same_import((DIGITS / f"{name}.pt2").read_bytes())


def test_same_refusal(tmp_path):
    ours, theirs = _both(_save(Refused(), torch.rand(2, 4), tmp_path / "r.pt2"))
    messages = []
    for ep in (ours, theirs):
        with pytest.raises(UnsupportedError) as err:
            import_exported(ep, "m")
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "sigmoid" in messages[0]


def test_decomposed_program_same_result(tmp_path):
    """A run_decompositions() program (ATen dialect: multi-output batch norm and max pooling read
    through getitem nodes, addmm): the frontend refuses part of it, in the same words either way."""
    torch.manual_seed(0)
    ep = torch.export.export(ResNetLike().eval(), (torch.rand(2, 3, 16, 16),)).run_decompositions()
    torch.export.save(ep, tmp_path / "d.pt2")
    outcomes = []
    for program in _both((tmp_path / "d.pt2").read_bytes()):
        try:
            outcomes.append(print_graph(import_exported(program, "m")))
        except UnsupportedError as e:
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]


def _rewrite(data: bytes, edit) -> bytes:
    """The archive with its model JSON changed by ``edit`` (a new, consistent zip)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("models/model.json"):
                program = json.loads(body)
                edit(program)
                body = json.dumps(program).encode()
            dst.writestr(info, body)
    return out.getvalue()


def test_outside_the_subset_falls_back_to_torch(tmp_path):
    """An archive the reader does not cover (here: another aten opset, which torch would upgrade)
    is read by torch.export.load, and the model still loads."""
    data = _save(ResNetLike(), torch.rand(2, 3, 16, 16), tmp_path / "m.pt2")

    def older_opset(program):
        program["opset_version"] = {"aten": program["opset_version"]["aten"] - 1}

    changed = _rewrite(data, older_opset)
    with zipfile.ZipFile(io.BytesIO(changed)) as z, pytest.raises(NotCovered, match="opset"):
        read_exported(z)
    path = tmp_path / "old.pt2"
    path.write_bytes(changed)
    direct = import_exported(torch.export.load(io.BytesIO(changed)), "old")
    assert print_graph(load_model(path).graph) == print_graph(direct)


def test_a_higher_order_op_is_left_to_torch(tmp_path):
    data = _save(ResNetLike(), torch.rand(2, 3, 16, 16), tmp_path / "m.pt2")

    def hop(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.higher_order.cond"

    with zipfile.ZipFile(io.BytesIO(_rewrite(data, hop))) as z, pytest.raises(NotCovered, match="target"):
        read_exported(z)


def test_loading_a_pt2_does_not_import_dynamo(tmp_path):
    """The point of the reader: load_model on a covered .pt2 leaves torch._dynamo (and sympy, triton)
    unimported.  A fresh interpreter, since this one imported them to export."""
    path = tmp_path / "m.pt2"
    _save(ResNetLike(), torch.rand(2, 3, 16, 16), path)
    code = ("import sys; from snnc.frontend.files import load_model; g = load_model(sys.argv[1]).graph; "
            "print(len(g.nodes), sorted(m for m in ('torch._dynamo', 'sympy', 'triton') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, imported = proc.stdout.split(" ", 1)
    assert int(count) > 5
    assert imported.strip() == "[]"
