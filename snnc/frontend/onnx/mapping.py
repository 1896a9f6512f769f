"""ONNX ops -> snnc IR ops: one function per ONNX op type, looked up in :data:`MAPPINGS`.

Each mapping reads its node's activations (IR values) and constants, checks that the node means
what the IR op means (ONNX's defaults differ from PyTorch's in places: ``count_include_pad`` is 0,
``strides`` default to 1, padding may be asymmetric or ``auto_pad``) and emits the same IR that
the torch.export frontend emits for the same PyTorch layer: ``Gemm`` -> ``linear``, ``Conv`` ->
``conv2d``/``conv1d``, ``GlobalAveragePool``/``ReduceMean`` over H, W -> ``avgpool2d`` over the
whole map.  What it cannot express it refuses with a :class:`Refusal` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from snnc.frontend.onnx.context import BATCH_SENTINEL, Context, Refusal, attributes
from snnc.ir import ops as O

Mapping = Callable[[Context, Any, dict[str, Any]], None]
MAPPINGS: dict[str, Mapping] = {}


def _maps(*op_types: str) -> Callable[[Mapping], Mapping]:
    def register(fn: Mapping) -> Mapping:
        for t in op_types:
            MAPPINGS[t] = fn
        return fn

    return register


def map_node(c: Context, node: Any) -> None:
    MAPPINGS[node.op_type](c, node, attributes(node))


def _f32(v: Any) -> float:
    """A float32 attribute as the number it was written as (1e-05, not 9.999999747378752e-06): the
    shortest decimal that rounds to the same float32, so the IR equals the torch frontends'."""
    return float(str(np.float32(np.asarray(v).reshape(()))))


def _refuse_extra_outputs(node: Any, c: Context, what: str) -> None:
    """Outputs after the first (max pooling's indices, dropout's mask) that something reads."""
    for out in node.output[1:]:
        if out and c.uses.get(out, 0):
            raise Refusal(f"{node.op_type} whose {what} output '{out}' is used", node.name,
                          f"snnc's {node.op_type} has one result: use only the first")


def _axis(c: Context, node: Any, value: str, axis: int, what: str) -> int:
    """The IR axis (0 = channels) of the ONNX axis ``axis`` (batch first) of ``value``."""
    rank = len(c.graph.value_type(value).shape) + 1
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise Refusal(f"{node.op_type} along axis {axis} of a rank-{rank} tensor", node.name)
    if a == 0:
        raise Refusal(f"{node.op_type} {what} along the batch axis", node.name)
    return a - 1


# ---------------------------------------------------------------------------------------
# convolution and pooling windows


def _pads(c: Context, node: Any, a: dict[str, Any], spatial: Sequence[int], kernel: Sequence[int],
          strides: Sequence[int], dilations: Sequence[int]) -> tuple[int, ...]:
    """Symmetric padding per spatial axis (``auto_pad`` resolved as ONNX defines it)."""
    r = len(kernel)
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = [int(p) for p in a.get("pads", [0] * (2 * r))]
    elif auto == "VALID":
        pads = [0] * (2 * r)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else large)
            ends.append(large if auto == "SAME_UPPER" else small)
        pads = begins + ends
    else:
        raise Refusal(f"{node.op_type} with auto_pad={auto}", node.name)
    if pads[:r] != pads[r:]:
        raise Refusal(f"{node.op_type} with asymmetric padding {pads} (begin != end)", node.name,
                      "pad symmetrically, or export with padding that PyTorch can express")
    return tuple(pads[:r])


def _window(c: Context, node: Any, a: dict[str, Any], x: str, kernel: Sequence[int]) -> tuple[Any, ...]:
    r = len(kernel)
    spatial = c.graph.value_type(x).shape[1:]
    if len(spatial) != r:
        raise Refusal(f"{node.op_type} with a {r}-d window on a {c.graph.value_type(x)} value", node.name)
    strides = tuple(int(s) for s in a.get("strides", [1] * r))
    dilations = tuple(int(d) for d in a.get("dilations", [1] * r))
    return strides, dilations, _pads(c, node, a, spatial, kernel, strides, dilations)


@_maps("Conv")
def _conv(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    w = c.const(node, 1, "weight")
    assert w is not None  # the checker requires input 1
    bias = c.bias(node, 2)
    kernel = tuple(int(k) for k in w.shape[2:])
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
        raise Refusal(f"Conv whose kernel_shape {a['kernel_shape']} is not its weight's {list(kernel)}", node.name)
    strides, dilations, pads = _window(c, node, a, x, kernel)
    groups = int(a.get("group", 1))
    if len(kernel) == 2:
        op: O.Op = O.Conv2d(stride=strides, padding=pads, dilation=dilations, groups=groups)
    elif len(kernel) == 1:
        op = O.Conv1d(stride=strides[0], padding=pads[0], dilation=dilations[0], groups=groups)
    else:
        raise Refusal(f"{len(kernel)}-d Conv", node.name, "snnc maps 1-d and 2-d convolutions")
    params = {"weight": c.param(node.input[1], w)}
    if bias is not None:
        params["bias"] = c.param(node.input[2], bias)
    c.emit(node, op, [x], params)


def _pool_kernel(node: Any, a: dict[str, Any]) -> tuple[int, int]:
    kernel = tuple(int(k) for k in a["kernel_shape"])
    if len(kernel) != 2:
        raise Refusal(f"{len(kernel)}-d {node.op_type}", node.name, "snnc maps 2-d pooling")
    return (kernel[0], kernel[1])


@_maps("MaxPool")
def _max_pool(c: Context, node: Any, a: dict[str, Any]) -> None:
    _refuse_extra_outputs(node, c, "indices")
    x = c.value(node)
    kernel = _pool_kernel(node, a)
    strides, dilations, pads = _window(c, node, a, x, kernel)
    op = O.MaxPool2d(kernel=kernel, stride=strides, padding=pads, ceil_mode=bool(a.get("ceil_mode", 0)),
                     dilation=dilations)
    c.emit(node, op, [x])


@_maps("AveragePool")
def _avg_pool(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    kernel = _pool_kernel(node, a)
    strides, dilations, pads = _window(c, node, a, x, kernel)
    if dilations != (1, 1):
        raise Refusal(f"AveragePool with dilations {list(dilations)}", node.name)
    op = O.AvgPool2d(kernel=kernel, stride=strides, padding=pads, ceil_mode=bool(a.get("ceil_mode", 0)),
                     count_include_pad=bool(a.get("count_include_pad", 0)))  # ONNX's default is 0
    c.emit(node, op, [x])


def _whole_map(c: Context, node: Any, x: str) -> tuple[int, int]:
    shape = c.graph.value_type(x).shape
    if len(shape) != 3:
        raise Refusal(f"{node.op_type} of a {c.graph.value_type(x)} value (not [C,H,W])", node.name)
    return (shape[1], shape[2])


@_maps("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(c: Context, node: Any, a: dict[str, Any]) -> None:
    """Pooling over the whole map; over a 1x1 map nothing, as the torch frontends map
    ``adaptive_avg_pool2d(x, 1)`` of a 1x1 ``x`` (ResNets on 32x32 inputs)."""
    x = c.value(node)
    hw = _whole_map(c, node, x)
    if hw == (1, 1):
        c.alias(node, x)
    elif node.op_type == "GlobalAveragePool":
        c.emit(node, O.AvgPool2d(kernel=hw, stride=hw), [x])
    else:
        c.emit(node, O.MaxPool2d(kernel=hw, stride=hw), [x])


@_maps("ReduceMean")
def _reduce_mean(c: Context, node: Any, a: dict[str, Any]) -> None:
    """The spatial mean of [C,H,W] (what adaptive average pooling to 1x1 exports as): global pooling."""
    x = c.value(node)
    axes_input = c.const(node, 1, "axes") if len(node.input) > 1 else None
    axes = a.get("axes") if axes_input is None else [int(v) for v in np.asarray(axes_input).reshape(-1)]
    rank = len(c.graph.value_type(x).shape) + 1
    picked = sorted({int(v) % rank for v in axes}) if axes else list(range(rank))
    if rank != 4 or picked != [2, 3]:
        raise Refusal(f"ReduceMean over axes {axes} of a rank-{rank} tensor (only the spatial mean of "
                      "[N,C,H,W], global average pooling, maps)", node.name)
    hw = _whole_map(c, node, x)
    y = x if hw == (1, 1) else c.emit(node, O.AvgPool2d(kernel=hw, stride=hw), [x], output="")
    if a.get("keepdims", 1):
        c.alias(node, y)
    else:
        c.emit(node, O.Flatten(), [y])


# ---------------------------------------------------------------------------------------
# dense layers


def _flat_input(c: Context, node: Any) -> str:
    x = c.value(node)
    if len(c.graph.value_type(x).shape) != 1:
        raise Refusal(f"{node.op_type} on a value that is not flat ({c.graph.value_type(x)}): a layer applied "
                      "along the last axis", node.name, "flatten its input first, or use a 1x1 convolution")
    return x


@_maps("Gemm")
def _gemm(c: Context, node: Any, a: dict[str, Any]) -> None:
    """y = alpha·A·B' + beta·C with A the activation: a linear layer W = alpha·B' (B' = B or Bᵀ)."""
    if a.get("transA", 0):
        raise Refusal("Gemm with transA=1 (the batch would not be the first axis)", node.name)
    x = _flat_input(c, node)
    b = c.const(node, 1, "weight")
    assert b is not None
    w = b if a.get("transB", 0) else b.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if alpha != 1.0:
        w = w * alpha
    params = {"weight": c.param(node.input[1], w)}
    bias = c.bias(node, 2)
    if bias is not None:
        n_out = w.shape[0]
        if bias.size not in (1, n_out) or (bias.ndim == 2 and bias.shape[0] != 1):
            raise Refusal(f"Gemm whose C has shape {list(bias.shape)} (not one value per output)", node.name)
        params["bias"] = c.param(node.input[2], np.broadcast_to(bias.reshape(-1), (n_out,)) * beta)
    c.emit(node, O.Linear(), [x], params)


@_maps("MatMul")
def _matmul(c: Context, node: Any, a: dict[str, Any]) -> None:
    """x·W with a constant W [K, N]: a linear layer of weight Wᵀ (its bias comes from a following Add)."""
    if node.input[1] not in c.consts:
        if c.is_value(node.input[1]) and c.is_value(node.input[0]):
            raise Refusal("MatMul of two activations", node.name, "a product of two activations (attention) "
                          "has no spiking form")
        raise Refusal("MatMul with the constant on the left", node.name)
    x = _flat_input(c, node)
    w = c.consts[node.input[1]]
    if w.ndim != 2:
        raise Refusal(f"MatMul with a rank-{w.ndim} constant", node.name)
    c.emit(node, O.Linear(), [x], {"weight": c.param(node.input[1], w.T)})


@_maps("BatchNormalization")
def _batchnorm(c: Context, node: Any, a: dict[str, Any]) -> None:
    if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise Refusal("BatchNormalization in training mode", node.name, "export the model in eval() mode")
    x = c.value(node)
    roles = {"mean": 3, "var": 4, "weight": 1, "bias": 2}  # the torch frontends' order
    params = {}
    for role, i in roles.items():
        t = c.const(node, i, role)
        assert t is not None
        params[role] = c.param(node.input[i], t)
    c.emit(node, O.BatchNorm(eps=_f32(a.get("epsilon", 1e-5))), [x], params)


# ---------------------------------------------------------------------------------------
# activations


@_maps("Relu")
def _relu(c: Context, node: Any, a: dict[str, Any]) -> None:
    c.emit(node, O.Relu(), [c.value(node)])


@_maps("Clip")
def _clip(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    lo, hi = c.const(node, 1, "min"), c.const(node, 2, "max")
    if lo is not None and hi is None and float(lo) == 0.0:
        c.emit(node, O.Relu(), [x])
    elif lo is None or hi is None:
        raise Refusal("Clip with only one bound other than min=0", node.name)
    else:
        c.emit(node, O.Clip(lo=_f32(lo), hi=_f32(hi)), [x])


# ---------------------------------------------------------------------------------------
# elementwise arithmetic with a constant, and residual adds


def _per_channel(c: Context, x: str, k: np.ndarray) -> np.ndarray | None:
    """``k`` as a scalar or one value per channel of ``x``, or None when it varies otherwise."""
    full = c.full_shape(x)
    if k.ndim > len(full):
        return None
    shape = (1,) * (len(full) - k.ndim) + tuple(k.shape)
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, full[1]):
        return None
    return k.reshape(-1).astype(np.float32)


def _const_operand(c: Context, node: Any) -> tuple[str, str, np.ndarray, str] | None:
    """(activation value, its tensor, constant, its tensor) for a node with one constant operand."""
    first, second = node.input[0], node.input[1]
    if first in c.consts and c.is_value(second):
        return c.value(node, 1), second, c.consts[first], first
    if second in c.consts and c.is_value(first):
        return c.value(node, 0), first, c.consts[second], second
    return None


def _bias_into_producer(c: Context, x: str, x_tensor: str, k: np.ndarray, k_tensor: str) -> bool:
    """MatMul + Add (how exporters write a linear layer on its own): the constant becomes the bias of
    the linear or convolution just before, when nothing else reads that layer's result."""
    prod = c.producer(x)
    if prod is None or "bias" in prod.params or not isinstance(prod.op, (O.Linear, O.Conv2d, O.Conv1d)):
        return False
    n_out = c.graph.value_type(x).shape[0]
    if not c.single_use(x_tensor) or k.size not in (1, n_out):
        return False
    prod.params["bias"] = c.param(k_tensor, np.broadcast_to(k, (n_out,)))
    return True


@_maps("Add", "Sub")
def _add(c: Context, node: Any, a: dict[str, Any]) -> None:
    sub = node.op_type == "Sub"
    operand = _const_operand(c, node)
    if operand is None:
        if sub:
            raise Refusal("Sub of two activations", node.name, "a difference of two activations has no "
                          "synaptic op in snnc: add a scale{factor=-1}")
        lhs, rhs = c.value(node, 0), c.value(node, 1)
        if c.graph.value_type(lhs).shape != c.graph.value_type(rhs).shape:
            raise Refusal(f"Add of {c.graph.value_type(lhs)} and {c.graph.value_type(rhs)} (broadcasting)",
                          node.name)
        c.emit(node, O.Add(), [lhs, rhs])
        return
    x, x_tensor, k, k_tensor = operand
    vec = _per_channel(c, x, k)
    if vec is None:
        raise Refusal(f"{node.op_type} of a constant of shape {list(k.shape)} that varies along more than the "
                      "channels", node.name)
    if sub and k_tensor == node.input[0]:  # k - x
        c.emit(node, O.Scale(factor=-1.0), [x], {"bias": c.param(k_tensor, vec)})
        return
    vec = -vec if sub else vec
    if not sub and _bias_into_producer(c, x, x_tensor, vec, k_tensor):
        c.alias(node, x)
        return
    c.emit(node, O.Scale(), [x], {"bias": c.param(k_tensor, vec)})


@_maps("Mul", "Div")
def _mul(c: Context, node: Any, a: dict[str, Any]) -> None:
    operand = _const_operand(c, node)
    what = "product" if node.op_type == "Mul" else "quotient"
    if operand is None:
        raise Refusal(f"{node.op_type} of two activations", node.name,
                      f"a {what} of two activations has no spiking form")
    x, _, k, k_tensor = operand
    if node.op_type == "Div" and k_tensor == node.input[0]:
        raise Refusal("Div of a constant by an activation", node.name)
    vec = _per_channel(c, x, k)
    if vec is None:
        raise Refusal(f"{node.op_type} by a constant of shape {list(k.shape)} that varies along more than the "
                      "channels", node.name)
    if node.op_type == "Div":
        vec = 1.0 / vec
    if vec.size == 1:
        c.emit(node, O.Scale(factor=float(vec[0])), [x])
    else:
        c.emit(node, O.Scale(), [x], {"scale": c.param(k_tensor, vec)})


# ---------------------------------------------------------------------------------------
# structure


@_maps("Concat")
def _concat(c: Context, node: Any, a: dict[str, Any]) -> None:
    xs = [c.value(node, i) for i in range(len(node.input))]
    axis = _axis(c, node, xs[0], int(a["axis"]), "concatenation")
    if len(xs) == 1:
        c.alias(node, xs[0])
        return
    c.emit(node, O.Concat(axis=axis), xs)


def _reshape(c: Context, node: Any, x: str, out: Sequence[int]) -> None:
    """Reshape ``x`` (batch dropped) to ``out`` (batch dropped): flatten, reshape or nothing."""
    if tuple(out) == c.graph.value_type(x).shape:
        c.alias(node, x)
    elif len(out) == 1:
        c.emit(node, O.Flatten(), [x])
    else:
        c.emit(node, O.Reshape(shape=tuple(int(d) for d in out)), [x])


@_maps("Reshape")
def _reshape_node(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    target = c.const(node, 1, "shape")
    assert target is not None
    shape = c.graph.value_type(x).shape
    size = math.prod(shape)
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    if not a.get("allowzero", 0):  # 0 copies the input's dimension
        full = (c.batch,) + shape
        dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(dims)]
    batch_kept = dims and (dims[0] == c.batch or dims[0] == -1 and math.prod(d for d in dims[1:]) == size)
    rest = dims[1:]
    if not batch_kept or BATCH_SENTINEL in rest or sum(d == -1 for d in rest) > 1 or (dims[0] == -1 and -1 in rest):
        raise Refusal(f"Reshape to {dims} that changes the batch dimension", node.name)
    if -1 in rest:
        known = math.prod(d for d in rest if d != -1)
        if known <= 0 or size % known:
            raise Refusal(f"Reshape of {c.graph.value_type(x)} to {dims}", node.name)
        rest = [size // known if d == -1 else d for d in rest]
    if math.prod(rest) != size or any(d <= 0 for d in rest):
        raise Refusal(f"Reshape of {c.graph.value_type(x)} to {dims}", node.name)
    _reshape(c, node, x, rest)


@_maps("Flatten")
def _flatten(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    rank = len(c.graph.value_type(x).shape) + 1
    axis = int(a.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        raise Refusal(f"Flatten with axis={a.get('axis', 1)} (it merges the batch with other axes)", node.name)
    c.emit(node, O.Flatten(), [x])


def _axes(c: Context, node: Any, a: dict[str, Any]) -> list[int] | None:
    given = c.const(node, 1, "axes") if len(node.input) > 1 else None
    if given is not None:
        return [int(v) for v in np.asarray(given).reshape(-1)]
    return [int(v) for v in a["axes"]] if "axes" in a else None


@_maps("Squeeze")
def _squeeze(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    full = list(c.full_shape(x))
    axes = _axes(c, node, a)
    drop = {d % len(full) for d in axes} if axes is not None else {i for i, d in enumerate(full) if d == 1 and i}
    if 0 in drop or any(full[d] != 1 for d in drop):
        raise Refusal(f"Squeeze of axes {axes} of {c.graph.value_type(x)}", node.name)
    _reshape(c, node, x, [d for i, d in enumerate(full) if i not in drop][1:])


@_maps("Unsqueeze")
def _unsqueeze(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    full = list(c.full_shape(x))
    axes = _axes(c, node, a) or []
    rank = len(full) + len(axes)
    at = sorted(d % rank for d in axes)
    if 0 in at:
        raise Refusal("Unsqueeze in front of the batch axis", node.name)
    for d in at:
        full.insert(d, 1)
    _reshape(c, node, x, full[1:])


@_maps("Transpose")
def _transpose(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    rank = len(c.graph.value_type(x).shape) + 1
    perm = [int(p) for p in a.get("perm", list(range(rank))[::-1])]
    if perm == [2, 3, 0, 1] and rank == 4 and _gathered_pooling(c, node, x):
        return
    if perm[0] != 0:
        raise Refusal(f"Transpose with perm={perm} (it moves the batch axis)", node.name)
    if perm == list(range(rank)):
        c.alias(node, x)
        return
    c.emit(node, O.Permute(dims=tuple(p - 1 for p in perm[1:])), [x])


def _slice_axis(c: Context, node: Any, x: str, axis: int, start: int, stop: int, step: int, output: str) -> str:
    """x[..., start:stop:step, ...] along the ONNX axis ``axis`` (ONNX's clamping = Python's)."""
    full = c.full_shape(x)
    if axis == 0:
        if start == 0 and step == 1 and stop >= c.batch:
            return x
        raise Refusal(f"{node.op_type} of the batch axis", node.name)
    size = full[axis]
    r = range(size)[slice(start, stop, step)]
    if r.step < 1:
        raise Refusal(f"{node.op_type} with step {r.step}", node.name)
    if len(r) == 0:
        raise Refusal(f"{node.op_type} with no elements", node.name)
    if len(r) == size:
        return x
    op = O.Slice(axis=axis - 1, start=r.start, stop=r[-1] + 1, step=r.step if len(r) > 1 else 1)
    return c.emit(node, op, [x], output=output)


@_maps("Slice")
def _slice(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    rank = len(c.graph.value_type(x).shape) + 1
    consts = [c.const(node, i, what) for i, what in enumerate(("data", "starts", "ends", "axes", "steps")) if i]
    starts, ends, axes, steps = (None if v is None else [int(d) for d in np.asarray(v).reshape(-1)] for v in consts)
    assert starts is not None and ends is not None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    y = x
    for i, (ax, lo, hi, st) in enumerate(zip(axes, starts, ends, steps, strict=True)):
        last = i == len(axes) - 1
        y = _slice_axis(c, node, y, ax % rank, lo, hi, st, node.output[0] if last else "")
    c.values[node.output[0]] = y


@_maps("Split")
def _split(c: Context, node: Any, a: dict[str, Any]) -> None:
    x = c.value(node)
    rank = len(c.graph.value_type(x).shape) + 1
    axis = int(a.get("axis", 0)) % rank
    if axis == 0:
        raise Refusal("Split along the batch axis", node.name)
    size = c.full_shape(x)[axis]
    given = c.const(node, 1, "split") if len(node.input) > 1 else None
    n = len(node.output)
    if given is not None:
        sizes = [int(s) for s in np.asarray(given).reshape(-1)]
    elif "split" in a:
        sizes = [int(s) for s in a["split"]]
    else:  # equal parts, the last smaller (opset 18's num_outputs)
        each = -(-size // n)
        sizes = [min(each, size - i * each) for i in range(n)]
    if sum(sizes) != size or len(sizes) != n:
        raise Refusal(f"Split of {size} into {sizes}", node.name)
    start = 0
    for out, s in zip(node.output, sizes, strict=True):
        c.values[out] = _slice_axis(c, node, x, axis, start, start + s, 1, out)
        start += s


@_maps("Dropout", "Identity")
def _identity(c: Context, node: Any, a: dict[str, Any]) -> None:
    _refuse_extra_outputs(node, c, "mask")
    c.alias(node, c.value(node))


@_maps("Cast")
def _cast(c: Context, node: Any, a: dict[str, Any]) -> None:
    from onnx import TensorProto

    if int(a["to"]) not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise Refusal(f"Cast of an activation to {TensorProto.DataType.Name(int(a['to']))}", node.name)
    c.alias(node, c.value(node))


@_maps("Resize", "Upsample")
def _resize(c: Context, node: Any, a: dict[str, Any]) -> None:
    """Nearest-neighbour upsampling by whole factors with PyTorch's index rule (floor(i / factor))."""
    x = c.value(node)
    shape = c.graph.value_type(x).shape
    mode = a.get("mode", "nearest")
    transform = a.get("coordinate_transformation_mode", "half_pixel")
    rounding = a.get("nearest_mode", "round_prefer_floor")
    scales = c.const(node, 2 if node.op_type == "Resize" else 1, "scales")
    sizes = c.const(node, 3, "sizes") if node.op_type == "Resize" and len(node.input) > 3 else None
    full = (c.batch,) + shape
    if sizes is not None and sizes.size:
        out = [int(s) for s in sizes.reshape(-1)]
    elif scales is not None and scales.size:
        out = [int(math.floor(d * float(s))) for d, s in zip(full, scales.reshape(-1), strict=True)]
    else:
        raise Refusal("Resize without scales or sizes", node.name)
    ok_rule = transform == "asymmetric" and rounding == "floor"
    if (mode != "nearest" or not ok_rule or len(shape) != 3 or out[:2] != list(full[:2])
            or out[2] % shape[1] or out[3] % shape[2]):
        raise Refusal(f"{node.op_type} {list(full)} -> {out} with mode={mode}, {transform}, {rounding} (only "
                      "nearest upsampling of [C,H,W] by whole factors, asymmetric/floor, maps)", node.name)
    c.emit(node, O.Upsample(scale=(out[2] // shape[1], out[3] // shape[2])), [x])


# ---------------------------------------------------------------------------------------
# adaptive average pooling as the dynamo exporter writes it


def _gathered_pooling(c: Context, node: Any, x: str) -> bool:
    """``Transpose(2,3,0,1) -> GatherND(windows) -> Transpose(4,5,0,1,2,3) -> ReduceMean(-3,-1)``: the
    dynamo exporter's adaptive average pooling (AlexNet's and VGG's 1x1 -> 6x6 / 7x7), gathering each
    output's window of rows x columns and averaging it.  When the windows are PyTorch's adaptive ones
    the four nodes map to what the torch frontends emit for ``adaptive_avg_pool2d``; False otherwise
    (the transpose is then refused as one that moves the batch axis)."""
    gather = c.only_consumer(node.output[0], "GatherND")
    if gather is None or attributes(gather).get("batch_dims", 0) != 0 or gather.input[1] not in c.consts:
        return False
    back = c.only_consumer(gather.output[0], "Transpose")
    if back is None or list(attributes(back).get("perm", [])) != [4, 5, 0, 1, 2, 3]:
        return False
    mean = c.only_consumer(back.output[0], "ReduceMean")
    if mean is None:
        return False
    ma = attributes(mean)
    axes = ma.get("axes") if len(mean.input) < 2 else c.consts.get(mean.input[1])
    if axes is None or sorted(int(v) % 6 for v in np.asarray(axes).reshape(-1)) != [3, 5] or ma.get("keepdims", 1):
        return False
    idx = c.consts[gather.input[1]]
    _, h, w = c.graph.value_type(x).shape
    if idx.ndim != 5 or idx.shape[-1] != 2:
        return False
    oh, _, ow, _, _ = idx.shape
    rows, cols = idx[..., 0] % h, idx[..., 1] % w  # GatherND accepts negative indices
    if not all((rows[i] == rows[i, :, :1, :1]).all() and sorted(rows[i, :, 0, 0]) == _window_of(i, h, oh)
               for i in range(oh)):
        return False
    if not all((cols[:, :, j] == cols[:1, :1, j]).all() and sorted(cols[0, 0, j]) == _window_of(j, w, ow)
               for j in range(ow)):
        return False
    _adaptive_avg(c, mean, x, oh, ow)
    c.absorbed.update({id(gather), id(back), id(mean)})
    return True


def _window_of(i: int, size: int, out: int) -> list[int]:
    """PyTorch's adaptive pooling window of output ``i``: floor(i·size/out) .. ceil((i+1)·size/out)."""
    return list(range(i * size // out, -(-(i + 1) * size // out)))


def _adaptive_avg(c: Context, node: Any, x: str, oh: int, ow: int) -> None:
    """What the torch frontends emit for adaptive_avg_pool2d: whole windows -> avgpool2d, a repeat of the
    input -> upsample, anything else -> adaptive_avgpool2d."""
    _, h, w = c.graph.value_type(x).shape
    if (oh, ow) == (h, w):
        c.alias(node, x)
    elif h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        c.emit(node, O.AvgPool2d(kernel=k, stride=k), [x])
    elif oh % h == 0 and ow % w == 0:
        c.emit(node, O.Upsample(scale=(oh // h, ow // w)), [x])
    else:
        c.emit(node, O.AdaptiveAvgPool2d(output_size=(oh, ow)), [x])
