"""Structural ops of real models through both torch frontends, and the re-indexing ops they import as.

Each construct (permute/transpose, channel shuffle, flatten/view variants, chunk/split/unbind/slicing,
one- and multi-operand concat, adaptive average pooling to any size, ceil_mode pooling, dropout variants,
the ReLU family, spatial means, nearest upsampling) is imported through torch.fx and torch.export and
compared with the module in ANN mode (DESIGN §3: max abs diff <= 1e-5).  Then the new ops on their own:
verifier messages, spikes passing through them, the adaptive pooling's fan-out; and the import's
legality check that lists every unsupported op at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from snnc.backends.torch.ops import adaptive_fanout
from snnc.backends.torch.simulator import TorchSimulator
from snnc.errors import UnsupportedError, VerifyError
from snnc.frontend import import_exported, import_module
from snnc.ir import Graph, parse_graph, verify
from snnc.ir import ops as O

TOL = 1e-5
THIS_FILE = Path(__file__).name


class Fn(nn.Module):
    """A conv (so that channels are mixed and parameters exist), then ``fn``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], channels: int = 4, size: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fn = fn
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.conv(x))


def _flat_cat(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat([u.flatten(1) for u in ts], 1)


def _chunk(x: torch.Tensor) -> torch.Tensor:  # as ShuffleNet v2 unpacks it (fx cannot iterate a result)
    a, b = x.chunk(2, dim=1)
    return _flat_cat(b, a)


def _chunk_uneven(x: torch.Tensor) -> torch.Tensor:
    a, b, c = torch.chunk(x, 3, 2)  # 5 rows: 2, 2, 1
    return _flat_cat(c, a, b)


def _split_sizes(x: torch.Tensor) -> torch.Tensor:
    a, b = torch.split(x, [1, 3], dim=1)
    return _flat_cat(b, a)


def _split_size(x: torch.Tensor) -> torch.Tensor:
    a, b = x.split(3, 1)  # 4 channels: 3, 1
    return _flat_cat(b, a)


def _unbind(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.unbind(1)
    return _flat_cat(d, b, a, c)


def _shuffle(x: torch.Tensor) -> torch.Tensor:  # ShuffleNet v2's channel_shuffle, as torchvision writes it
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // 2
    x = x.view(batchsize, 2, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor] | nn.Module, int, set[str]]] = {
    # name: (fn or module applied after the conv, spatial size, IR ops expected besides conv2d)
    "permute": (lambda x: x.permute(0, 2, 3, 1).flatten(1), 6, {"permute", "flatten"}),
    "permute-list": (lambda x: torch.permute(x, [0, 3, 1, 2]), 6, {"permute"}),
    "transpose": (lambda x: x.transpose(2, 3), 5, {"permute"}),
    "transpose-negative": (lambda x: torch.transpose(x, -1, 1), 5, {"permute"}),
    "channel-shuffle": (_shuffle, 4, {"reshape", "permute"}),
    "nn-channel-shuffle": (nn.ChannelShuffle(2), 4, {"reshape", "permute"}),
    "flatten-fn": (lambda x: torch.flatten(x, 1), 4, {"flatten"}),
    "flatten-module": (nn.Flatten(), 4, {"flatten"}),
    "flatten-start2": (lambda x: torch.flatten(x, 2), 4, {"reshape"}),
    "flatten-module-2-3": (nn.Flatten(2, 3), 4, {"reshape"}),
    "view-size": (lambda x: x.view(x.size(0), -1), 4, {"flatten"}),
    "reshape-3d": (lambda x: x.reshape(x.shape[0], 2, -1), 4, {"reshape"}),
    "unsqueeze-squeeze": (lambda x: x.unsqueeze(2).squeeze(2), 4, set()),
    "chunk": (_chunk, 4, {"slice", "flatten", "concat"}),
    "chunk-uneven": (_chunk_uneven, 5, {"slice"}),
    "split-sizes": (_split_sizes, 4, {"slice"}),
    "split-size": (_split_size, 4, {"slice"}),
    "unbind": (_unbind, 4, {"slice", "flatten"}),
    "getitem-channels": (lambda x: x[:, 1:3], 4, {"slice"}),
    "getitem-steps": (lambda x: x[:, ::2, 1:-1], 6, {"slice"}),
    "getitem-ellipsis": (lambda x: x[..., :3], 6, {"slice"}),
    "select": (lambda x: x[:, 1], 4, {"slice", "reshape"}),
    "narrow": (lambda x: x.narrow(1, 1, 2), 4, {"slice"}),
    "cat-one": (lambda x: torch.cat([x], 1), 4, set()),
    "cat-three": (lambda x: torch.cat([x, F.relu(x), x[:, :1]], dim=1), 4, {"concat", "relu", "slice"}),
    "adaptive-divides": (nn.AdaptiveAvgPool2d(4), 8, {"avgpool2d"}),
    "adaptive-none": (nn.AdaptiveAvgPool2d((None, 2)), 8, {"avgpool2d"}),
    "adaptive-1-to-7": (lambda x: F.adaptive_avg_pool2d(F.adaptive_avg_pool2d(x, 1), (7, 7)), 4,
                        {"avgpool2d", "upsample"}),
    "adaptive-2-to-6": (nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d(6)), 8, {"upsample"}),
    "adaptive-5-to-3": (nn.AdaptiveAvgPool2d(3), 5, {"adaptive_avgpool2d"}),
    "adaptive-6-to-4": (nn.AdaptiveAvgPool2d((4, 3)), 6, {"adaptive_avgpool2d"}),
    "adaptive-mixed": (nn.AdaptiveAvgPool2d((8, 2)), 4, {"adaptive_avgpool2d"}),  # 4 -> 8 repeats, 4 -> 2 pools
    "adaptive-max": (nn.AdaptiveMaxPool2d(2), 8, {"maxpool2d"}),
    "maxpool-ceil": (nn.MaxPool2d(3, 2, ceil_mode=True), 8, {"maxpool2d"}),
    "avgpool-ceil": (nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False), 8, {"avgpool2d"}),
    "dropout2d": (nn.Sequential(nn.Dropout2d(0.3), nn.AlphaDropout(0.1), nn.Identity()), 4, set()),
    "dropout-fn": (lambda x: F.dropout(x, 0.5, training=False), 4, set()),
    "relu-inplace": (nn.ReLU(inplace=True), 4, {"relu"}),
    "relu-fn": (lambda x: F.relu(x) + torch.relu(x) + x.relu(), 4, {"relu", "add"}),
    "relu6": (nn.ReLU6(), 4, {"clip"}),
    "relu6-fn": (F.relu6, 4, {"clip"}),
    "hardtanh": (nn.Hardtanh(-0.5, 0.5), 4, {"clip"}),
    "hardtanh-fn": (lambda x: F.hardtanh(x, 0.0, 2.0), 4, {"clip"}),
    "clamp": (lambda x: torch.clamp(x, 0, 6) + x.clamp(min=0) + x.clamp_min(0), 4, {"clip", "relu"}),
    "mean-spatial": (lambda x: x.mean([2, 3]), 4, {"avgpool2d", "flatten"}),
    "mean-keepdim": (lambda x: torch.mean(x, dim=(-2, -1), keepdim=True), 4, {"avgpool2d"}),
    "upsample-module": (nn.Upsample(scale_factor=2), 3, {"upsample"}),
    "interpolate": (lambda x: F.interpolate(x, scale_factor=(3, 2), mode="nearest"), 3, {"upsample"}),
    "scalar-mul-div": (lambda x: 0.5 * (x * 2.0) / 4, 4, {"scale"}),
}


def _module(name: str) -> Fn:
    torch.manual_seed(0)
    fn, size, _ = CASES[name]
    return Fn(fn, size=size).eval()


def _import(model: Fn, path: str) -> Graph:
    x = torch.randn(2, 3, model.size, model.size)
    if path == "fx":
        return import_module(model, x)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: Dim("batch")},))
    return import_exported(ep)


@pytest.mark.parametrize("path", ["fx", "export"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_structural_construct_imports_and_equals_torch(name: str, path: str) -> None:
    model = _module(name)
    graph = _import(model, path)
    verify(graph)
    ops = {n.op.name for n in graph.nodes} - {"conv2d"}
    expected = CASES[name][2]
    assert expected <= ops, f"expected {expected}, got {ops}"
    assert "dropout" not in ops or name.startswith("dropout")
    x = torch.randn(5, 3, model.size, model.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    got = TorchSimulator().run_ann(graph, x.numpy())[graph.outputs[0]]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL


# ---------------------------------------------------------------------------------------
# the new ops on their own


@pytest.mark.parametrize("text, message", [
    ("%y = permute(%x) {dims = [0, 0, 1]} : analog[2,2,3]",
     "permute %y: dims [0, 0, 1] is not a permutation of the 3 axes of analog[2,3,4]"),
    ("%y = slice(%x) {axis = 1, start = 2, stop = 5} : analog[2,3,4]",
     "slice %y: 2:5:1 is not a non-empty slice of an axis of size 3 (0 <= start < stop <= size, step >= 1)"),
    ("%y = slice(%x) {axis = 3, stop = 1} : analog[2,3,4]", "slice %y: axis 3 out of range for analog[2,3,4]"),
    ("%y = upsample(%x) {scale = [0, 2]} : analog[2,3,4]", "upsample %y: scale = [0, 2] must be >= 1"),
    ("%y = adaptive_avgpool2d(%x) {output_size = [2, 0]} : analog[2,2,1]",
     "adaptive_avgpool2d %y: output_size = [2, 0] must be >= 1"),
])
def test_new_ops_refuse_bad_attributes_naming_the_node(text: str, message: str) -> None:
    graph = parse_graph(f"graph @g(%x: analog[2,3,4]) {{\n  {text}\n  output %y\n}}\n")
    with pytest.raises(VerifyError) as err:
        verify(graph)
    assert str(err.value) == message


def test_upsample_needs_an_image() -> None:
    graph = parse_graph("graph @g(%x: analog[2,3]) {\n  %y = upsample(%x) : analog[2,6]\n  output %y\n}\n")
    with pytest.raises(VerifyError, match=r"upsample %y: expects a \[C,H,W\] input, got analog\[2,3\]"):
        verify(graph)


def test_reindexing_ops_carry_spikes_and_are_not_synaptic() -> None:
    graph = parse_graph("""\
graph @g(%x: spike[4,3,3]) attributes {timesteps = 2} {
  %p = permute(%x) {dims = [1, 2, 0]} : spike[3,3,4]
  %s = slice(%p) {axis = 2, start = 1, stop = 4, step = 2} : spike[3,3,2]
  %u = upsample(%x) {scale = [2, 1]} : spike[4,6,3]
  %a = adaptive_avgpool2d(%u) {output_size = [4, 2]} : analog[4,4,2]
  output %s, %a
}
""")
    verify(graph)
    for node in graph.nodes[:3]:
        assert node.op.reindexing and not node.op.synaptic and not node.op.shape_only and not node.op.ann_only
    assert O.Upsample.channelwise and not O.Permute.channelwise and not O.Slice.channelwise
    assert O.AdaptiveAvgPool2d.synaptic and O.AdaptiveAvgPool2d.channelwise
    assert all(cls.reindexing for cls in (O.Identity, O.Dropout, O.Flatten, O.Reshape, O.Concat))
    # in ANN mode the re-indexing ops are torch's own re-indexing
    x = (np.random.default_rng(0).random((2, 4, 3, 3)) > 0.5).astype(np.float32)
    out = TorchSimulator().run_ann(graph, x)
    t = torch.from_numpy(x)
    assert np.array_equal(out["s"], t.permute(0, 2, 3, 1)[:, :, :, 1:4:2].numpy())
    want = F.adaptive_avg_pool2d(t.repeat_interleave(2, dim=2), (4, 2)).numpy()
    assert np.array_equal(out["a"], want)


def test_adaptive_avgpool_counts_each_window_as_a_synapse() -> None:
    fan = adaptive_fanout(O.AdaptiveAvgPool2d(output_size=(3, 3)), 5, 5)
    # windows along one axis: [0,2), [1,4), [3,5): elements 1 and 3 are read twice
    assert fan[:, 0].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert float(fan.sum()) == (2 + 3 + 2) ** 2
    assert O.adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert O.adaptive_windows(1, 7) == [(0, 1)] * 7


# ---------------------------------------------------------------------------------------
# the legality check: every unsupported op at once


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.SiLU()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        y = y * self.gate(y)  # the gating
        y = F.gelu(y) + F.gelu(y)  # two gelus
        return y.flatten(1)


def test_every_unsupported_op_is_listed_with_count_place_and_advice() -> None:
    gating = [i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
              if line.strip().startswith("y = y * self.gate(y)")][0]
    gelus = gating + 1
    with pytest.raises(UnsupportedError) as err:
        import_module(Gated(), torch.rand(2, 3, 6, 6))
    relu = "has no ReLU form: replace it with nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and retrain, or use a ReLU-family model"
    assert str(err.value).splitlines() == [
        "5 unsupported ops in @Gated (4 kinds); nothing was imported:",
        f"  module torch.nn.modules.activation.SiLU ×1 at act [{THIS_FILE}:{gating - 1} in forward: "
        f"`y = self.act(self.conv(x))`]: SiLU {relu}",
        f"  module torch.nn.modules.activation.Sigmoid ×1 at gate [{THIS_FILE}:{gating} in forward: "
        f"`y = y * self.gate(y)  # the gating`]: Sigmoid {relu}",
        f"  '_operator.mul' of two tensors ×1 at [{THIS_FILE}:{gating} in forward: "
        "`y = y * self.gate(y)  # the gating`]: a product of two activations (squeeze-and-excitation gating, "
        "layer scale) has no spiking form: remove it, or fold a constant factor into the weights",
        f"  'torch._C._nn.gelu' ×2 at [{THIS_FILE}:{gelus} in forward: `y = F.gelu(y) + F.gelu(y)  # two gelus`]: "
        f"GELU {relu}",
    ]


def test_export_lists_every_unsupported_op_with_module_paths() -> None:
    ep = torch.export.export(Gated().eval(), (torch.rand(2, 3, 6, 6),))
    with pytest.raises(UnsupportedError) as err:
        import_exported(ep, "gated")
    lines = str(err.value).splitlines()
    assert lines[0] == "5 unsupported ops in @gated (4 kinds); nothing was imported:"
    assert [line.split(" at ")[0] for line in lines[1:]] == [
        "  'aten.silu.default' ×1", "  'aten.sigmoid.default' ×1", "  'aten.mul.Tensor' of two tensors ×1",
        "  'aten.gelu.default' ×2",
    ]
    assert lines[1].startswith(f"  'aten.silu.default' ×1 at act [{THIS_FILE}:")


def test_one_unsupported_op_keeps_the_one_line_form() -> None:
    model = Fn(torch.tanh)
    with pytest.raises(UnsupportedError) as err:
        import_module(model, torch.rand(2, 3, 8, 8))
    message = str(err.value)
    assert message.startswith("unsupported op 'torch.tanh' at ")
    assert message.endswith("; Tanh has no ReLU form: replace it with nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and "
                            "retrain, or use a ReLU-family model")
    assert "\n" not in message


@pytest.mark.parametrize("fn, what", [
    (lambda x: x.permute(1, 0, 2, 3), "permute with dims [1, 0, 2, 3] (it moves the batch dimension)"),
    (lambda x: x.chunk(2, dim=0)[0], "chunk along the batch dimension"),
    (lambda x: x.view(-1), "reshape that changes the batch dimension"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), "upsampling with mode='bilinear'"),
    (lambda x: x.mean(1), "mean over dimensions [1] of a analog[4,8,8] value"),
])
def test_structural_ops_that_do_not_map_say_why(fn, what) -> None:
    with pytest.raises(UnsupportedError, match="unsupported op " + what.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        import_module(Fn(fn), torch.rand(2, 3, 8, 8))
