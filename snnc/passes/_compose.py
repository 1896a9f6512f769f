"""Pass helpers (not a pass): convolutions and pooling as data, and their exact composition.

A pooling op is a depthwise convolution (:func:`pool_conv`); two convolutions in a row are often one
(:func:`compose_convs`: a 1x1 conv then a 2x2 average pooling is one 2x2 stride-2 conv), and a conv
before ``flatten`` → ``linear`` is one linear map (:func:`compose_into_linear`).  Each composite is
checked against the two maps on a random input (float64), so where the borders differ (padding over
a partial window) the answer is None, never a wrong map.  Used by the targets whose layers cannot
hold the intermediate value: loihi-legalize (no value between two synaptic maps on the chip) and the
tvm target (pooling of a current).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.passes._params import uses

POOLS = (O.AvgPool2d, O.SumPool2d)
COMPOSE_RTOL = 1e-6


@dataclass
class ConvMap:
    """A 2-D convolution as data (PyTorch conventions)."""

    weight: np.ndarray  # [Co, Ci / groups, kh, kw]
    bias: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def dense_weight(self) -> np.ndarray:
        """The weight with groups expanded to a full [Co, Ci, kh, kw] (zeros across groups)."""
        co, cig, kh, kw = self.weight.shape
        if self.groups == 1:
            return self.weight.astype(np.float64)
        out = np.zeros((co, cig * self.groups, kh, kw))
        per = co // self.groups
        for g in range(self.groups):
            out[g * per : (g + 1) * per, g * cig : (g + 1) * cig] = self.weight[g * per : (g + 1) * per]
        return out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else torch.as_tensor(self.bias, dtype=torch.float64)
        return F.conv2d(x, torch.as_tensor(self.weight, dtype=torch.float64), b, self.stride, self.padding,
                        self.dilation, self.groups)


def pool_conv(op: O.AvgPool2d | O.SumPool2d, in_shape: tuple[int, ...]) -> ConvMap | None:
    """The depthwise conv a pooling op on inputs of ``in_shape`` (C, H, W) is, or None where it is not
    one: an average whose divisor changes at the border (padding it excludes, or a ceil_mode window
    that overhangs the padded input and so divides by fewer elements)."""
    overhang = op.overhang(*in_shape[1:])
    value = 1.0
    if isinstance(op, O.AvgPool2d):
        if (not op.count_include_pad and op.padding != (0, 0)) or overhang != (0, 0):
            return None
        value = 1.0 / (op.kernel[0] * op.kernel[1])
    _, padding = window_with_overhang(op.kernel, op.padding, overhang)
    return ConvMap(window_weight(op.kernel, overhang, in_shape[0], value, np.float64), None, op.stride, padding,
                   (1, 1), in_shape[0])


def window_with_overhang(kernel: tuple[int, int], padding: tuple[int, int],
                         overhang: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Kernel and (symmetric) padding of a conv with the windows of a pooling whose last window reaches
    ``overhang`` past the far border (ceil_mode; :meth:`Pool2d.overhang`): both grow by the overhang,
    and the kernel's first ``overhang`` rows / columns are zeros (:func:`window_weight`), so every
    window still starts where the pooling's does and reads the same elements, while the far padding
    now covers the overhang (the near padding it adds is read only by the zeros).  Exact for sums and
    for OR pooling of spikes (zero padding adds nothing), not for averages (their divisor changes at
    the border)."""
    return ((kernel[0] + overhang[0], kernel[1] + overhang[1]),
            (padding[0] + overhang[0], padding[1] + overhang[1]))


def window_weight(kernel: tuple[int, int], overhang: tuple[int, int], channels: int, value: float = 1.0,
                  dtype: type = np.float32) -> np.ndarray:
    """The depthwise weight [C, 1, kh, kw] of a pooling window of ``value``s, led by ``overhang`` rows
    and columns of zeros (:func:`window_with_overhang`)."""
    out: np.ndarray = np.zeros((channels, 1, kernel[0] + overhang[0], kernel[1] + overhang[1]), dtype=dtype)
    out[:, :, overhang[0]:, overhang[1]:] = value
    return out


def node_conv(graph: Graph, node: Node) -> ConvMap | None:
    if isinstance(node.op, O.Conv2d):
        b = node.param(graph, "bias")
        op = node.op
        return ConvMap(np.asarray(node.param(graph, "weight"), dtype=np.float64),
                     None if b is None else np.asarray(b, dtype=np.float64),
                     op.stride, op.padding, op.dilation, op.groups)
    if isinstance(node.op, POOLS):
        return pool_conv(node.op, graph.value_type(node.inputs[0]).shape)
    return None


def compose_convs(a: ConvMap, b: ConvMap, in_shape: tuple[int, ...], seed: int = 0) -> ConvMap | None:
    """One conv equal to ``b`` after ``a`` on inputs of ``in_shape`` (C, H, W), or None when no single
    conv is (dilation, or border values that differ: checked on a random input)."""
    if a.dilation != (1, 1) or b.dilation != (1, 1):
        return None
    wa = torch.as_tensor(a.dense_weight())  # [Cm, Ci, ka, ka]
    wb = torch.as_tensor(b.dense_weight())  # [Co, Cm, kb, kb]
    # the kernel of b∘a: Σ_m Σ_j Wb[o, m, j] Wa[m, i, y − j·s_a], which is a transposed conv
    wc = F.conv_transpose2d(wb, wa, stride=a.stride).numpy()
    bias = None
    if a.bias is not None or b.bias is not None:
        bias = np.zeros(wb.shape[0]) if b.bias is None else b.bias.copy()
        if a.bias is not None:
            bias = bias + wb.sum(dim=(2, 3)).numpy() @ a.bias
    groups = 1
    cm, ci = wa.shape[0], wa.shape[1]
    if a.groups == ci == cm and b.groups == cm == wb.shape[0]:  # depthwise after depthwise
        wc = np.stack([wc[c, c] for c in range(ci)])[:, None]
        groups = ci
    c = ConvMap(
        wc, bias, (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1]),
        (a.padding[0] + b.padding[0] * a.stride[0], a.padding[1] + b.padding[1] * a.stride[1]), (1, 1), groups,
    )
    x = torch.as_tensor(np.random.default_rng(seed).random((2, *in_shape)))
    try:
        want, got = b.apply(a.apply(x)), c.apply(x)
    except RuntimeError:
        return None
    if want.shape != got.shape or not torch.allclose(want, got, rtol=COMPOSE_RTOL, atol=1e-9 * float(want.abs().max())):
        return None
    return c


def compose_into_linear(a: ConvMap, in_shape: tuple[int, ...], w: np.ndarray, b: np.ndarray | None, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The weight and bias of ``linear(flatten(a(x)))`` as one linear map of ``flatten(x)``."""
    x = torch.as_tensor(np.random.default_rng(seed).random((2, *in_shape)))
    mid = a.apply(x)
    c, h, wd = in_shape
    wl = torch.as_tensor(np.asarray(w, dtype=np.float64)).reshape(w.shape[0], *mid.shape[1:])
    # the adjoint of a: a transposed conv; uncovered right/bottom borders get zero weight
    eff = F.conv_transpose2d(wl, torch.as_tensor(a.dense_weight()), stride=a.stride, padding=a.padding)
    if eff.shape[2] > h or eff.shape[3] > wd:
        return None
    eff = F.pad(eff, (0, wd - eff.shape[3], 0, h - eff.shape[2]))
    bias = None if b is None else np.asarray(b, dtype=np.float64).copy()
    if a.bias is not None:
        extra = (wl * torch.as_tensor(a.bias).reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3)).numpy()
        bias = extra if bias is None else bias + extra
    w_eff = eff.reshape(w.shape[0], -1).numpy()
    want = mid.reshape(2, -1) @ wl.reshape(w.shape[0], -1).T
    got = x.reshape(2, -1) @ torch.as_tensor(w_eff).T
    if a.bias is not None:
        got = got + torch.as_tensor(bias - (np.zeros_like(bias) if b is None else b))
    if not torch.allclose(want, got, rtol=COMPOSE_RTOL, atol=1e-9 * float(want.abs().max() + 1)):
        return None
    return w_eff, bias


def set_param(graph: Graph, node: Node, role: str, value: np.ndarray | None) -> None:
    """Store ``value`` as ``node``'s parameter ``role`` (a fresh key when the old one is shared)."""
    if value is None:
        node.params.pop(role, None)
        return
    key = node.params.get(role)
    if key is None or uses(graph, key) > 1:
        key = graph.fresh_param(f"{node.name}.{role}")
    node.params[role] = key
    graph.params[key] = np.asarray(value, dtype=np.float32)


def write_conv(graph: Graph, node: Node, c: ConvMap) -> None:
    node.op = O.Conv2d(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)
    set_param(graph, node, "weight", c.weight)
    set_param(graph, node, "bias", c.bias)
