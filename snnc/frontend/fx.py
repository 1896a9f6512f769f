"""torch.fx frontend: module-level fx graphs and ATen-level exported programs -> snnc IR.

Both kinds of graph map onto the same IR ops.  Shapes come from shape propagation
(module-level) or from each node's ``meta['val']`` (exported); the batch dimension is
dropped.  Parameters keep their names from the source model (``features.0.weight``).

The import is also the legality check: it maps every node and collects every construct it
cannot map (an activation with no ReLU form, a product of two activations, ...) before it
gives up, so that one ``UnsupportedError`` lists them all, grouped by op, each with its
count, its module paths, the user's source lines and what to do.  An unsupported node's
value is replaced by a stand-in of the same shape so that the nodes after it are checked too.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from snnc.errors import InputFileError, UnsupportedError, UserError, VerifyError
from snnc.frontend.spiking import (
    is_spiking_module,
    lower_spiking_function,
    lower_spiking_module,
    spiking_functions,
)
from snnc.ir import Graph, Node, TensorType, verify
from snnc.ir import ops as O

# ---------------------------------------------------------------------------------------
# locations


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def _user_frame(node: fx.Node) -> tuple[str, str, str, str] | None:
    """The innermost frame of the recorded stack trace that is the user's, not torch's."""
    trace = node.meta.get("stack_trace") or getattr(node, "stack_trace", None) or ""
    frames = [f for f in _FRAME_RE.findall(trace) if "/torch/" not in f[0] and "/snnc/" not in f[0]]
    return frames[-1] if frames else None


def _frame(node: fx.Node) -> str:
    """'file.py:LINE in fn' of the user's source line, or ''."""
    frame = _user_frame(node)
    return f"{frame[0].rsplit('/', 1)[-1]}:{frame[1]} in {frame[2]}" if frame else ""


def _location(node: fx.Node, module_path: str = "") -> str:
    """'file.py:LINE in fn (module.path)' from the node's recorded stack trace."""
    where = _frame(node)
    path = module_path or _nn_module_path(node)
    if path:
        where = f"{where} ({path})" if where else f"({path})"
    return where


def _source_line(node: fx.Node) -> str:
    frame = _user_frame(node)
    return frame[3].strip() if frame else ""


def _nn_module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L__self___|^L\['self'\]\.", "", str(path)).replace("_modules['", "").replace("']", "")


# ---------------------------------------------------------------------------------------
# refusals: what cannot be mapped, where, and what to do


_SEE_OPS = "see `snnc ops` for what the frontend maps"

# activations with no ReLU form: a spiking neuron's rate is a clipped ReLU, nothing else
_NO_RELU_FORM = {
    "hardswish": "Hardswish", "silu": "SiLU", "swish": "SiLU", "gelu": "GELU", "sigmoid": "Sigmoid",
    "hardsigmoid": "Hardsigmoid", "tanh": "Tanh", "elu": "ELU", "selu": "SELU", "celu": "CELU",
    "leaky_relu": "LeakyReLU", "leakyrelu": "LeakyReLU", "prelu": "PReLU", "rrelu": "RReLU", "mish": "Mish",
    "softplus": "Softplus", "logsigmoid": "LogSigmoid", "softsign": "Softsign", "tanhshrink": "Tanhshrink",
    "hardshrink": "Hardshrink", "softshrink": "Softshrink", "glu": "GLU",
}
_ADVICE = {
    "mul": "a product of two activations (squeeze-and-excitation gating, layer scale) has no spiking form: "
           "remove it, or fold a constant factor into the weights",
    "div": "a quotient of two activations has no spiking form: divide by a constant instead",
    "layer_norm": "LayerNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "layernorm": "LayerNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "native_layer_norm": "LayerNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "group_norm": "GroupNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "groupnorm": "GroupNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    # inside attention as well as at the end: the advice must hold for both
    "softmax": "softmax divides by a per-sample sum and has no spiking form: a final one can go (snnc reads "
               "the logits, whose argmax is the same); inside attention, it goes with the attention",
    "log_softmax": "remove the final log-softmax: snnc reads the logits, whose argmax is the same",
    "logsoftmax": "remove the final log-softmax: snnc reads the logits, whose argmax is the same",
    "matmul": "a product of two activations (attention) has no spiking form",
    "bmm": "a product of two activations (attention) has no spiking form",
    "scaled_dot_product_attention": "attention multiplies two activations and has no spiking form",
    "multiheadattention": "attention multiplies two activations and has no spiking form",
}


def _base_name(target: Any) -> str:
    """'hardswish' for aten.hardswish_.default, F.hardswish, nn.Hardswish, the method 'hardswish_'."""
    if isinstance(target, nn.Module):
        name = type(target).__name__
    elif isinstance(target, str):
        name = target
    elif isinstance(target, torch._ops.OpOverload):
        name = str(target).split(".")[1]
    else:
        name = getattr(target, "__name__", str(target))
    return name.lower().strip("_")


def _advice(base: str) -> str:
    if base in _NO_RELU_FORM:
        act = _NO_RELU_FORM[base]
        return (f"{act} has no ReLU form: replace it with nn.ReLU (or nn.ReLU6 / nn.Hardtanh) and retrain, "
                "or use a ReLU-family model")
    if "attention" in base:  # nn.MultiheadAttention, F.scaled_dot_product_attention, swin's window attention
        return _ADVICE["scaled_dot_product_attention"]
    return _ADVICE.get(base, _SEE_OPS)


class _Refusal(UnsupportedError):
    """One construct the frontend cannot map, at one node; the import collects them all."""

    def __init__(self, what: str, frame: str, path: str, code: str, advice: str) -> None:
        self.what, self.frame, self.path, self.code, self.advice = what, frame, path, code, advice
        msg = f"unsupported op {what}"
        where = f"{frame} ({path})" if frame and path else frame or (f"({path})" if path else "")
        if where:
            msg += f" at {where}"
        if code:
            msg += f": `{code}`"
        super().__init__(f"{msg}; {advice}")


class _Poisoned(Exception):
    """An operand is the result of a node that could not be mapped (already reported)."""


def _unsupported(what: str, node: fx.Node, module_path: str = "", base: str | None = None) -> _Refusal:
    """A refusal of ``what`` at ``node``; ``base`` (an op name such as 'hardswish') picks the advice."""
    advice = _advice(base) if base is not None else _SEE_OPS
    return _Refusal(what, _frame(node), module_path or _nn_module_path(node), _source_line(node), advice)


def _refusal_of(error: UnsupportedError, node: fx.Node) -> _Refusal:
    if isinstance(error, _Refusal):
        return error
    return _Refusal(str(error), _frame(node), _nn_module_path(node), _source_line(node), _SEE_OPS)


def _inside(r: _Refusal, causes: Sequence[_Refusal]) -> bool:
    """Whether ``r`` has no advice of its own and lies in (or under) the module of a refusal that has:
    the reshapes, permutes and token indexing inside an attention module are its internals."""
    return r.advice == _SEE_OPS and bool(r.path) and any(
        r.path == c.path or r.path.startswith(c.path + ".") for c in causes)


def _places(rs: Sequence[_Refusal]) -> str:
    frames: dict[str, list[str]] = {}
    for r in rs:
        frame = f"{r.frame}: `{r.code}`" if r.frame and r.code else r.frame
        frames.setdefault(frame, [])
        if r.path and r.path not in frames[frame]:
            frames[frame].append(r.path)
    places = []
    for frame, paths in frames.items():
        where = ", ".join(paths)
        places.append(f"{where} [{frame}]" if frame and where else where or f"[{frame}]")
    return " and ".join(places)


def _report(name: str, refusals: Sequence[_Refusal]) -> UnsupportedError:
    """One error for every refusal: the refusal itself when there is one, else one line per kind
    of op (in order of first appearance) with its count, module paths, source lines and advice.
    Refusals without advice inside a module refused with advice (the permutes of an attention
    module) share one last line: what to change is the module, not them."""
    if len(refusals) == 1:
        return UnsupportedError(str(refusals[0]))
    causes = [r for r in refusals if r.advice != _SEE_OPS and r.path]
    inner = [r for r in refusals if _inside(r, causes)]
    groups: dict[tuple[str, str], list[_Refusal]] = {}
    for r in refusals:
        if not _inside(r, causes):
            groups.setdefault((r.what, r.advice), []).append(r)
    kinds = len(groups) + (1 if inner else 0)
    lines = [f"{len(refusals)} unsupported ops in {name} ({kinds} kinds); nothing was imported:"]
    for (what, advice), rs in groups.items():
        lines.append(f"  {what} ×{len(rs)} at {_places(rs)}: {advice}")
    if inner:
        ops: dict[str, int] = {}
        for r in inner:
            ops[r.what] = ops.get(r.what, 0) + 1
        listed = ", ".join(f"{what} ×{n}" for what, n in ops.items())
        paths = ", ".join(dict.fromkeys(r.path for r in inner))
        lines.append(f"  {len(inner)} more ops inside the modules above ({listed}) at {paths}: "
                     "they are those modules' internals and go with them")
    return UnsupportedError("\n".join(lines))


# ---------------------------------------------------------------------------------------
# the builder


class _Builder:
    def __init__(self, name: str, params_source: Callable[[str], torch.Tensor]):
        self.graph = Graph(re.sub(r"[^A-Za-z0-9_]", "_", name) or "model", [])
        self.values: dict[fx.Node, str] = {}
        self.get_tensor = params_source
        self.consts: dict[fx.Node, torch.Tensor] = {}
        self.tuples: dict[fx.Node, list[str]] = {}  # nodes with several tensor results (chunk, split)
        self.refusals: list[_Refusal] = []
        self.poisoned: set[fx.Node] = set()

    def value(self, arg: Any, node: fx.Node) -> str:
        if isinstance(arg, fx.Node) and arg in self.values:
            return self.values[arg]
        if isinstance(arg, fx.Node) and arg in self.poisoned:
            raise _Poisoned()
        raise _unsupported(f"operand {arg!r} (not a tensor value)", node)

    def is_value(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and (arg in self.values or arg in self.poisoned)

    def param(self, key: str, tensor: torch.Tensor) -> str:
        key = key if key not in self.graph.params else self.graph.fresh_param(key)
        self.graph.params[key] = tensor.detach().cpu().to(torch.float32).numpy().copy()
        return key

    def emit(self, fxnode: fx.Node, op: O.Op, inputs: list[str], params: dict[str, str] | None = None,
             loc: str = "", bind: bool = True) -> str:
        """Append a node for ``op`` (the value of ``fxnode`` unless ``bind`` is false)."""
        name = self.graph.fresh_name(fxnode.name)
        node = Node(name, op, tuple(inputs), params=params or {}, type=None, loc=loc or _location(fxnode))
        in_types = [self.graph.value_type(v) for v in inputs]
        try:
            node.type = op.infer_type(name, in_types, self.graph.param_shapes(node))
        except VerifyError as e:  # a construct the op cannot express: report it where the user wrote it
            detail = re.sub(r"^\S+ %\S+: ", "", str(e))
            raise _unsupported(f"{_describe(fxnode)} ({detail})", fxnode) from None
        self.graph.nodes.append(node)
        if bind:
            self.values[fxnode] = name
        return name

    def alias(self, fxnode: fx.Node, arg: Any) -> None:
        self.values[fxnode] = self.value(arg, fxnode)

    def guarded(self, node: fx.Node, lower: Callable[..., Any], *args: Any) -> None:
        """Run ``lower``; on a refusal record it and stand a fresh input of the node's shape in for its
        value, so that the nodes after it are checked too (the graph is dropped at the end)."""
        try:
            lower(*args)
        except _Poisoned:  # already reported; a stand-in where the shape is known keeps the check going
            self.stand_in(node)  # (a refused module with a tuple result: its getitems have shapes)
        except UnsupportedError as e:
            self.refusals.append(_refusal_of(e, node))
            self.stand_in(node)

    def stand_in(self, node: fx.Node) -> None:
        """A fresh input of the node's shape as its value, or, shape unknown, no value at all."""
        shape = _shape(node)
        if shape is None:
            self.poisoned.add(node)
            return
        stand_in = self.graph.fresh_name(f"{node.name}_unmapped")
        self.graph.inputs.append((stand_in, TensorType(shape)))
        self.values[node] = stand_in

    def finish(self) -> Graph:
        if self.refusals:
            raise _report(f"@{self.graph.name}", self.refusals)
        verify(self.graph)
        return self.graph


def _describe(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, (str, torch._ops.OpOverload)):
        return f"'{t}'"
    return f"'{(getattr(t, '__module__', '') or '')}.{getattr(t, '__name__', t)}'".replace("'.", "'")


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    if val is None:
        tm = node.meta.get("tensor_meta")
        shape = getattr(tm, "shape", None)
    else:
        shape = getattr(val, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in list(shape)[1:])
    except (TypeError, ValueError):  # a symbolic size other than the batch
        return None


def _batch(node: fx.Node) -> str | None:
    val = node.meta.get("val")
    shape = getattr(val if val is not None else node.meta.get("tensor_meta"), "shape", None)
    return str(shape[0]) if shape is not None and len(shape) else None


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return (int(v[0]), int(v[0]))
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _single(v: Any) -> int:
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


def _axis(b: _Builder, node: fx.Node, x: str, dim: Any, what: str) -> int:
    """The IR axis (0 = channels) of the torch dimension ``dim`` of ``x`` (batch first)."""
    rank = len(b.graph.value_type(x).shape) + 1
    d = int(dim)
    d = d + rank if d < 0 else d
    if not 0 <= d < rank:
        raise _unsupported(f"{what} along dimension {dim} of a rank-{rank} tensor", node)
    if d == 0:
        raise _unsupported(f"{what} along the batch dimension", node)
    return d - 1


# ---------------------------------------------------------------------------------------
# shared lowering of one operation (module, function or ATen op) to IR


def _conv(b: _Builder, node: fx.Node, x: str, w: torch.Tensor, bias, stride, padding, dilation, groups,
          prefix: str) -> str:
    if isinstance(padding, str):
        raise _unsupported(f"convolution with padding='{padding}'", node)
    params = {"weight": b.param(f"{prefix}weight", w)}
    if bias is not None:
        params["bias"] = b.param(f"{prefix}bias", bias)
    if w.dim() == 4:
        op: O.Op = O.Conv2d(stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation),
                            groups=int(groups))
    elif w.dim() == 3:
        op = O.Conv1d(stride=_single(stride), padding=_single(padding), dilation=_single(dilation),
                      groups=int(groups))
    else:
        raise _unsupported(f"{w.dim() - 2}-d convolution", node)
    return b.emit(node, op, [x], params)


def _linear(b: _Builder, node: fx.Node, x: str, params: dict[str, str]) -> str:
    if len(b.graph.value_type(x).shape) != 1:
        raise _Refusal("linear on a value that is not flat (PyTorch applies it along the last axis)",
                       _frame(node), _nn_module_path(node), _source_line(node),
                       "flatten its input first, or use a 1x1 convolution over the channels")
    return b.emit(node, O.Linear(), [x], params)


def _batchnorm(b: _Builder, node: fx.Node, x: str, weight, bias, mean, var, eps, prefix: str) -> str:
    params = {"mean": b.param(f"{prefix}running_mean", mean), "var": b.param(f"{prefix}running_var", var)}
    if weight is not None:
        params["weight"] = b.param(f"{prefix}weight", weight)
    if bias is not None:
        params["bias"] = b.param(f"{prefix}bias", bias)
    return b.emit(node, O.BatchNorm(eps=float(eps)), [x], params)


def _clamp(b: _Builder, node: fx.Node, x: str, lo, hi) -> str:
    if lo is not None and hi is None and float(lo) == 0.0:
        return b.emit(node, O.Relu(), [x])
    if lo is None or hi is None:
        raise _unsupported("clamp with only one bound other than min=0", node)
    return b.emit(node, O.Clip(lo=float(lo), hi=float(hi)), [x])


def _max_pool(b: _Builder, node: fx.Node, x: str, kernel, stride, padding, dilation, ceil_mode) -> str:
    k = _pair(kernel)
    op = O.MaxPool2d(kernel=k, stride=_pair(stride or k), padding=_pair(padding), ceil_mode=bool(ceil_mode),
                     dilation=_pair(dilation))
    return b.emit(node, op, [x])


def _avg_pool(b: _Builder, node: fx.Node, x: str, kernel, stride, padding, ceil_mode, count_include_pad,
              divisor_override) -> str:
    if divisor_override:
        raise _unsupported("average pooling with divisor_override", node)
    k = _pair(kernel)
    op = O.AvgPool2d(kernel=k, stride=_pair(stride or k), padding=_pair(padding), ceil_mode=bool(ceil_mode),
                     count_include_pad=bool(count_include_pad))
    return b.emit(node, op, [x])


def _output_size(b: _Builder, x: str, output_size: Any) -> tuple[int, int]:
    _, h, w = b.graph.value_type(x).shape
    if output_size is None:
        return h, w
    size = output_size if isinstance(output_size, (list, tuple)) else (output_size, output_size)
    if len(size) == 1:
        size = (size[0], size[0])
    oh, ow = size
    return (h if oh is None else int(oh)), (w if ow is None else int(ow))


def _adaptive_avg(b: _Builder, node: fx.Node, x: str, output_size) -> str:
    """Whole windows -> avgpool2d; a multiple of the input size (1x1 -> 7x7) -> upsample; anything else
    (overlapping or uneven windows) -> adaptive_avgpool2d.  All three equal PyTorch's adaptive pooling."""
    if len(b.graph.value_type(x).shape) != 3:
        raise _unsupported(f"adaptive average pooling of a {b.graph.value_type(x)} value (not [C,H,W])", node)
    _, h, w = b.graph.value_type(x).shape
    oh, ow = _output_size(b, x, output_size)
    if (oh, ow) == (h, w):
        b.alias(node, node.args[0])
        return b.values[node]
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return b.emit(node, O.AvgPool2d(kernel=k, stride=k), [x])
    if oh % h == 0 and ow % w == 0:
        return b.emit(node, O.Upsample(scale=(oh // h, ow // w)), [x])
    return b.emit(node, O.AdaptiveAvgPool2d(output_size=(oh, ow)), [x])


def _adaptive_max(b: _Builder, node: fx.Node, x: str, output_size) -> str:
    _, h, w = b.graph.value_type(x).shape
    oh, ow = _output_size(b, x, output_size)
    if h % oh or w % ow:
        raise _unsupported(f"adaptive max pooling {h}x{w} -> {oh}x{ow} (not whole windows)", node)
    k = (h // oh, w // ow)
    return b.emit(node, O.MaxPool2d(kernel=k, stride=k), [x])


def _mean(b: _Builder, node: fx.Node, x: str, dims: Any, keepdim: Any) -> str:
    """Mean over the spatial dimensions of [C,H,W] = global average pooling (then a flatten)."""
    t = b.graph.value_type(x)
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    axes = sorted({_axis(b, node, x, d, "mean") for d in dims})
    if len(t.shape) != 3 or axes != [1, 2]:
        raise _unsupported(f"mean over dimensions {dims} of a {t} value (only the spatial mean of [C,H,W], "
                           "global average pooling, maps)", node)
    _, h, w = t.shape
    if keepdim:
        return b.emit(node, O.AvgPool2d(kernel=(h, w), stride=(h, w)), [x])
    y = b.emit(node, O.AvgPool2d(kernel=(h, w), stride=(h, w)), [x], bind=False)
    return b.emit(node, O.Flatten(), [y])


def _reshape_to(b: _Builder, node: fx.Node, x: str) -> str:
    shape = _shape(node)
    if shape is None:
        raise _unsupported("reshape whose result shape is unknown", node)
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if src is not None and _batch(node) is not None and _batch(src) is not None and _batch(node) != _batch(src):
        raise _unsupported("reshape that changes the batch dimension", node)
    if shape == b.graph.value_type(x).shape:
        b.values[node] = x
        return x
    if len(shape) == 1:
        return b.emit(node, O.Flatten(), [x])
    return b.emit(node, O.Reshape(shape=shape), [x])


def _flatten(b: _Builder, node: fx.Node, x: str, start: int, end: int = -1) -> str:
    rank = len(b.graph.value_type(x).shape) + 1
    if start < 0:
        start += rank
    if end < 0:
        end += rank
    if start == 0:
        raise _unsupported("flatten over the batch dimension (start_dim=0)", node)
    if start == 1 and end == rank - 1:
        return b.emit(node, O.Flatten(), [x])
    return _reshape_to(b, node, x)


def _permute(b: _Builder, node: fx.Node, x: str, dims: Sequence[Any]) -> str:
    rank = len(b.graph.value_type(x).shape) + 1
    perm = [int(d) + rank if int(d) < 0 else int(d) for d in dims]
    if sorted(perm) != list(range(rank)):
        raise _unsupported(f"permute with dims {list(dims)} of a rank-{rank} tensor", node)
    if perm[0] != 0:
        raise _unsupported(f"permute with dims {list(dims)} (it moves the batch dimension)", node)
    if perm == list(range(rank)):
        b.values[node] = x
        return x
    return b.emit(node, O.Permute(dims=tuple(d - 1 for d in perm[1:])), [x])


def _transpose(b: _Builder, node: fx.Node, x: str, d0: Any, d1: Any) -> str:
    rank = len(b.graph.value_type(x).shape) + 1
    perm = list(range(rank))
    i, j = int(d0) % rank, int(d1) % rank
    perm[i], perm[j] = perm[j], perm[i]
    return _permute(b, node, x, perm)


def _slice(b: _Builder, node: fx.Node, x: str, dim: Any, start: Any, stop: Any, step: Any = 1,
           bind: bool = True) -> str:
    """x[..., start:stop:step, ...] along the torch dimension ``dim`` (Python slice rules)."""
    if int(dim) in (0, -len(b.graph.value_type(x).shape) - 1) and start in (None, 0) and step in (None, 1) and (
            stop is None or (isinstance(stop, int) and stop >= 2**62)):
        if bind:  # the whole batch (torch.export writes x[:, a:b] as a slice of each dimension)
            b.values[node] = x
        return x
    axis = _axis(b, node, x, dim, "slicing")
    size = b.graph.value_type(x).shape[axis]
    r = range(size)[slice(None if start is None else int(start), None if stop is None else int(stop),
                          None if step is None else int(step))]
    if r.step < 1:
        raise _unsupported(f"slice with step {r.step}", node)
    if len(r) == 0:
        raise _unsupported("slice with no elements", node)
    if len(r) == size:
        if bind:
            b.values[node] = x
        return x
    op = O.Slice(axis=axis, start=r.start, stop=r[-1] + 1, step=r.step if len(r) > 1 else 1)
    return b.emit(node, op, [x], bind=bind)


def _drop_axis(b: _Builder, node: fx.Node, x: str, axis: int, bind: bool = True) -> str:
    """Reshape away the axis ``axis`` (of size 1)."""
    shape = b.graph.value_type(x).shape
    out = shape[:axis] + shape[axis + 1 :]
    op: O.Op = O.Flatten() if len(out) == 1 else O.Reshape(shape=out)
    return b.emit(node, op, [x], bind=bind)


def _split(b: _Builder, node: fx.Node, x: str, sizes: Sequence[int], dim: Any) -> None:
    """Consecutive slices of the given sizes along ``dim``: the node's results (chunk, split)."""
    outs, start = [], 0
    for n in sizes:
        outs.append(_slice(b, node, x, dim, start, start + n, 1, bind=False))
        start += n
    b.tuples[node] = outs


def _split_sizes(b: _Builder, node: fx.Node, x: str, split: Any, dim: Any) -> list[int]:
    size = b.graph.value_type(x).shape[_axis(b, node, x, dim, "split")]
    if isinstance(split, (list, tuple)):
        return [int(s) for s in split]
    n = int(split)
    return [min(n, size - i) for i in range(0, size, n)]


def _chunk(b: _Builder, node: fx.Node, x: str, chunks: Any, dim: Any) -> None:
    size = b.graph.value_type(x).shape[_axis(b, node, x, dim, "chunk")]
    each = -(-size // int(chunks))
    _split(b, node, x, [min(each, size - i) for i in range(0, size, each)], dim)


def _unbind(b: _Builder, node: fx.Node, x: str, dim: Any) -> None:
    axis = _axis(b, node, x, dim, "unbind")
    size = b.graph.value_type(x).shape[axis]
    b.tuples[node] = [_drop_axis(b, node, _slice(b, node, x, dim, i, i + 1, 1, bind=False), axis, bind=False)
                      for i in range(size)]


def _select(b: _Builder, node: fx.Node, x: str, dim: Any, index: Any) -> str:
    axis = _axis(b, node, x, dim, "indexing")
    i = int(index) % b.graph.value_type(x).shape[axis]
    return _drop_axis(b, node, _slice(b, node, x, dim, i, i + 1, 1, bind=False), axis)


def _index(b: _Builder, node: fx.Node, x: str, index: Any) -> str:
    """x[index] with slices, integers and ``...``: a chain of slices (and reshapes for integers)."""
    items = list(index) if isinstance(index, tuple) else [index]
    rank = len(b.graph.value_type(x).shape) + 1
    if any(i is Ellipsis for i in items):
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (rank - len(items) + 1)
    if not items or items[0] != slice(None) or len(items) > rank:
        raise _unsupported(f"indexing [{index!r}] (the batch dimension must stay whole)", node)
    y, dropped = x, 0
    for d, item in enumerate(items[1:], 1):
        if isinstance(item, slice) and all(v is None or isinstance(v, int) for v in (item.start, item.stop, item.step)):
            y = _slice(b, node, y, d - dropped, item.start, item.stop, item.step, bind=False)
        elif isinstance(item, int):
            axis = d - dropped - 1
            size = b.graph.value_type(y).shape[axis]
            y = _drop_axis(b, node, _slice(b, node, y, d - dropped, item % size, item % size + 1, 1, bind=False),
                           axis, bind=False)
            dropped += 1
        else:
            raise _unsupported(f"indexing with {item!r}", node)
    b.values[node] = y
    return y


def _upsample(b: _Builder, node: fx.Node, x: str, mode: Any) -> str:
    if mode not in ("nearest", "nearest-exact"):
        raise _unsupported(f"upsampling with mode='{mode}' (only 'nearest' maps)", node)
    shape = _shape(node)
    src = b.graph.value_type(x).shape
    if shape is None or len(shape) != 3 or len(src) != 3 or shape[1] % src[1] or shape[2] % src[2]:
        raise _unsupported(f"upsampling {list(src)} -> {list(shape or ())} (only whole factors of [C,H,W] map)",
                           node)
    return b.emit(node, O.Upsample(scale=(shape[1] // src[1], shape[2] // src[2])), [x])


def _channel_shuffle(b: _Builder, node: fx.Node, x: str, groups: int) -> str:
    """ShuffleNet's shuffle: view [g, C/g, H, W], swap the first two axes, view [C, H, W]."""
    c, h, w = b.graph.value_type(x).shape
    y = b.emit(node, O.Reshape(shape=(groups, c // groups, h, w)), [x], bind=False)
    y = b.emit(node, O.Permute(dims=(1, 0, 2, 3)), [y], bind=False)
    return b.emit(node, O.Reshape(shape=(c, h, w)), [y])


def _add(b: _Builder, node: fx.Node, lhs: Any, rhs: Any, alpha: Any = 1) -> str:
    if not (b.is_value(lhs) and b.is_value(rhs)):
        raise _Refusal("add of a tensor and a constant", _frame(node), _nn_module_path(node), _source_line(node),
                       "a constant added to an activation (a position embedding) maps only as a layer's bias: "
                       "fold it into the bias of the layer before")
    if alpha != 1:
        raise _unsupported(f"add with alpha={alpha}", node)
    return b.emit(node, O.Add(), [b.value(lhs, node), b.value(rhs, node)])


def _mul(b: _Builder, node: fx.Node, lhs: Any, rhs: Any, divide: bool = False) -> str:
    """A tensor times (or over) a number: scale{factor}; two tensors: refused (no spiking form)."""
    if b.is_value(lhs) and isinstance(rhs, (int, float)) and not isinstance(rhs, bool):
        x, factor = lhs, float(rhs)
    elif b.is_value(rhs) and isinstance(lhs, (int, float)) and not isinstance(lhs, bool) and not divide:
        x, factor = rhs, float(lhs)
    else:
        what = "div" if divide else "mul"
        raise _unsupported(f"{_describe(node)} of two tensors", node, base=what)
    if divide:
        if factor == 0.0:
            raise _unsupported("division by zero", node)
        factor = 1.0 / factor
    return b.emit(node, O.Scale(factor=factor), [b.value(x, node)])


def _cat(b: _Builder, node: fx.Node, tensors: Any, dim: int) -> str:
    vals = [b.value(t, node) for t in tensors]
    if not vals:
        raise _unsupported("concatenation of no tensors", node)
    axis = _axis(b, node, vals[0], dim, "concatenation")
    if len(vals) == 1:  # torch.cat([x]) (DenseNet's first layer of a block) is x
        b.values[node] = vals[0]
        return vals[0]
    return b.emit(node, O.Concat(axis=axis), vals)


# ---------------------------------------------------------------------------------------
# module-level graphs (torch.fx.symbolic_trace)

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _call_module(b: _Builder, node: fx.Node, mod: nn.Module, path: str) -> None:
    if not node.args:
        raise _unsupported(f"module {type(mod).__name__} called without a tensor input", node, path)
    x = b.value(node.args[0], node)
    pre = f"{path}."
    loc = _location(node, path)
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        _conv(b, node, x, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups, pre)
    elif isinstance(mod, nn.Linear):
        params = {"weight": b.param(pre + "weight", mod.weight)}
        if mod.bias is not None:
            params["bias"] = b.param(pre + "bias", mod.bias)
        _linear(b, node, x, params)
    elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if mod.running_mean is None:
            raise _unsupported("BatchNorm without running statistics (track_running_stats=False)", node, path)
        _batchnorm(b, node, x, mod.weight, mod.bias, mod.running_mean, mod.running_var, mod.eps, pre)
    elif isinstance(mod, nn.ReLU):
        b.emit(node, O.Relu(), [x], loc=loc)
    elif isinstance(mod, nn.ReLU6):
        b.emit(node, O.Clip(lo=0.0, hi=6.0), [x], loc=loc)
    elif isinstance(mod, nn.Hardtanh):
        b.emit(node, O.Clip(lo=float(mod.min_val), hi=float(mod.max_val)), [x], loc=loc)
    elif isinstance(mod, nn.MaxPool2d):
        if mod.return_indices:
            raise _unsupported("MaxPool2d with return_indices=True", node, path)
        _max_pool(b, node, x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)
    elif isinstance(mod, nn.AvgPool2d):
        _avg_pool(b, node, x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad,
                  mod.divisor_override)
    elif isinstance(mod, nn.AdaptiveAvgPool2d):
        _adaptive_avg(b, node, x, mod.output_size)
    elif isinstance(mod, nn.AdaptiveMaxPool2d) and not mod.return_indices:
        _adaptive_max(b, node, x, mod.output_size)
    elif isinstance(mod, (nn.Upsample, nn.UpsamplingNearest2d)):
        _upsample(b, node, x, mod.mode)
    elif isinstance(mod, nn.Flatten):
        _flatten(b, node, x, mod.start_dim, mod.end_dim)
    elif isinstance(mod, nn.Unflatten):
        _reshape_to(b, node, x)
    elif isinstance(mod, nn.ChannelShuffle):
        _channel_shuffle(b, node, x, int(mod.groups))
    elif isinstance(mod, _DROPOUTS):
        b.emit(node, O.Dropout(p=float(mod.p)), [x], loc=loc)
    elif isinstance(mod, nn.Identity):
        b.emit(node, O.Identity(), [x], loc=loc)
    else:
        if not lower_spiking_module(b, node, mod, path, x):
            raise _unsupported(f"module {type(mod).__module__}.{type(mod).__name__}", node, path,
                               base=_base_name(mod))


def _kw(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _dims(node: fx.Node, start: int, name: str) -> list[Any]:
    """Dimensions given as varargs (x.permute(0, 2, 3, 1)) or as one sequence (x.permute([0, 2, 3, 1]))."""
    rest = list(node.args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    given: Any = node.kwargs.get(name, ())
    return rest or list(given)


def _is(node: fx.Node, functions: tuple[Any, ...], methods: tuple[str, ...] = ()) -> bool:
    """Whether ``node`` calls one of ``functions`` or (as a tensor method) one of ``methods``."""
    if node.op == "call_method":
        return node.target in methods
    return any(node.target is f for f in functions)


def _is_shape_arithmetic(b: _Builder, node: fx.Node) -> bool:
    """Shape queries (x.size(), x.shape, x.dim()) and arithmetic on their results: they only feed
    view/reshape, whose result shapes are propagated."""
    t = node.target
    if (node.op == "call_method" and t in ("size", "dim")) or (t is getattr and node.args[1] == "shape"):
        return True
    operands: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), operands.append)
    return bool(operands) and all(o in b.consts for o in operands)


def _is_stochastic_depth(node: fx.Node) -> bool:
    t = node.target
    return (getattr(t, "__name__", "") == "stochastic_depth" and getattr(t, "__module__", "").startswith("torchvision")
            and _kw(node, 3, "training", True) is False)


def _call_function(b: _Builder, node: fx.Node) -> None:
    t = node.target
    x: Any = node.args[0] if node.args else node.kwargs.get("input")
    index: Any = node.args[1] if len(node.args) > 1 else None
    if _is_shape_arithmetic(b, node):
        b.consts[node] = torch.tensor(0)
    elif t is operator.getitem and x in b.tuples:
        b.values[node] = b.tuples[x][int(index)]
    elif t is operator.getitem:
        _index(b, node, b.value(x, node), index)
    elif _is(node, (F.relu, torch.relu, F.relu_, torch.relu_), ("relu", "relu_")):
        b.emit(node, O.Relu(), [b.value(x, node)])
    elif _is(node, (F.relu6,)):
        b.emit(node, O.Clip(lo=0.0, hi=6.0), [b.value(x, node)])
    elif _is(node, (F.hardtanh, F.hardtanh_)):
        op: O.Op = O.Clip(lo=float(_kw(node, 1, "min_val", -1.0)), hi=float(_kw(node, 2, "max_val", 1.0)))
        b.emit(node, op, [b.value(x, node)])
    elif _is(node, (torch.clamp, torch.clip, torch.clamp_), ("clamp", "clip", "clamp_", "clip_")):
        _clamp(b, node, b.value(x, node), _kw(node, 1, "min"), _kw(node, 2, "max"))
    elif _is(node, (torch.clamp_min, torch.clamp_min_), ("clamp_min", "clamp_min_")):
        _clamp(b, node, b.value(x, node), _kw(node, 1, "min"), None)
    elif _is(node, (operator.add, operator.iadd, torch.add), ("add", "add_")):
        _add(b, node, node.args[0], node.args[1], node.kwargs.get("alpha", 1))
    elif _is(node, (operator.mul, operator.imul, torch.mul), ("mul", "mul_")):
        _mul(b, node, node.args[0], node.args[1])
    elif _is(node, (operator.truediv, operator.itruediv, torch.div), ("div", "div_")):
        if node.kwargs.get("rounding_mode") is not None:
            raise _unsupported("division with a rounding mode", node)
        _mul(b, node, node.args[0], node.args[1], divide=True)
    elif _is(node, (torch.cat, torch.concat, torch.concatenate)):
        _cat(b, node, node.args[0], _kw(node, 1, "dim", 0))
    elif _is(node, (torch.flatten,), ("flatten",)):
        _flatten(b, node, b.value(x, node), int(_kw(node, 1, "start_dim", 0)), int(_kw(node, 2, "end_dim", -1)))
    elif _is(node, (torch.reshape, torch.squeeze, torch.unsqueeze),
             ("view", "reshape", "squeeze", "unsqueeze", "view_as", "reshape_as", "unflatten")):
        _reshape_to(b, node, b.value(x, node))
    elif _is(node, (torch.permute,), ("permute",)):
        _permute(b, node, b.value(x, node), _dims(node, 1, "dims"))
    elif _is(node, (torch.transpose, torch.swapaxes, torch.swapdims), ("transpose", "swapaxes", "swapdims")):
        _transpose(b, node, b.value(x, node), _kw(node, 1, "dim0"), _kw(node, 2, "dim1"))
    elif _is(node, (torch.narrow,), ("narrow",)):
        start = int(_kw(node, 2, "start"))
        _slice(b, node, b.value(x, node), _kw(node, 1, "dim"), start, start + int(_kw(node, 3, "length")))
    elif _is(node, (torch.chunk,), ("chunk",)):
        _chunk(b, node, b.value(x, node), _kw(node, 1, "chunks"), _kw(node, 2, "dim", 0))
    elif _is(node, (torch.split,), ("split",)):
        xv = b.value(x, node)
        dim = _kw(node, 2, "dim", 0)
        _split(b, node, xv, _split_sizes(b, node, xv, _kw(node, 1, "split_size_or_sections"), dim), dim)
    elif _is(node, (torch.unbind,), ("unbind",)):
        _unbind(b, node, b.value(x, node), _kw(node, 1, "dim", 0))
    elif _is(node, (torch.select,), ("select",)):
        _select(b, node, b.value(x, node), _kw(node, 1, "dim"), _kw(node, 2, "index"))
    elif _is(node, (torch.mean,), ("mean",)):
        _mean(b, node, b.value(x, node), _kw(node, 1, "dim"), _kw(node, 2, "keepdim", False))
    elif _is(node, (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
                    torch.dropout), ("contiguous", "clone", "detach")):
        b.alias(node, x)
    elif _is_stochastic_depth(node):  # torchvision's StochasticDepth: the identity at inference
        b.alias(node, x)
    elif _is(node, (F.max_pool2d,)):
        if _kw(node, 6, "return_indices", False):
            raise _unsupported("max_pool2d with return_indices=True", node)
        _max_pool(b, node, b.value(x, node), _kw(node, 1, "kernel_size"), _kw(node, 2, "stride"),
                  _kw(node, 3, "padding", 0), _kw(node, 4, "dilation", 1), _kw(node, 5, "ceil_mode", False))
    elif _is(node, (F.avg_pool2d,)):
        _avg_pool(b, node, b.value(x, node), _kw(node, 1, "kernel_size"), _kw(node, 2, "stride"),
                  _kw(node, 3, "padding", 0), _kw(node, 4, "ceil_mode", False),
                  _kw(node, 5, "count_include_pad", True), _kw(node, 6, "divisor_override"))
    elif _is(node, (F.adaptive_avg_pool2d,)):
        _adaptive_avg(b, node, b.value(x, node), _kw(node, 1, "output_size"))
    elif _is(node, (F.adaptive_max_pool2d,)) and not _kw(node, 2, "return_indices", False):
        _adaptive_max(b, node, b.value(x, node), _kw(node, 1, "output_size"))
    elif _is(node, (F.interpolate, F.upsample, F.upsample_nearest)):
        mode = "nearest" if t is F.upsample_nearest else _kw(node, 3, "mode", "nearest")
        _upsample(b, node, b.value(x, node), mode)
    elif _is(node, (F.channel_shuffle, torch.channel_shuffle)):
        _channel_shuffle(b, node, b.value(x, node), int(_kw(node, 1, "groups")))
    elif not lower_spiking_function(b, node):  # a library's function between neurons (SEW's connect)
        raise _unsupported(_describe(node), node, base=_base_name(t))


class SourceTracer(fx.Tracer):
    """Records a stack trace per node so that errors can point at the user's source; spiking
    neuron modules stay leaves (they become ``neuron`` ops)."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=spiking_functions())  # kept whole: lower_spiking_function
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or is_spiking_module(m)


def import_module(module: nn.Module, example_input: torch.Tensor, name: str | None = None) -> Graph:
    """Trace ``module`` with torch.fx and return the snnc Graph of its inference behaviour.

    ``example_input`` includes the batch dimension; it fixes the input shape.  Every construct
    that does not map is listed in one ``UnsupportedError``.
    """
    module = module.eval()
    tracer = SourceTracer()
    try:
        fx_graph = tracer.trace(module)
    except Exception as e:  # fx raises many kinds: report the user's construct
        raise UnsupportedError(f"torch.fx could not trace {type(module).__name__}: {e}") from None
    gm = fx.GraphModule(tracer.root, fx_graph)
    try:
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as e:
        raise UserError(f"running {type(module).__name__} on an input of shape {list(example_input.shape)} "
                        f"failed: {e}") from None
    modules = dict(gm.named_modules())
    b = _Builder(name or type(module).__name__, lambda key: gm.get_parameter(key))
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = _shape(node)
            b.graph.inputs.append((b.graph.fresh_name(node.name), TensorType(shape or ())))
            b.values[node] = b.graph.inputs[-1][0]
        elif node.op == "call_module":
            b.guarded(node, _call_module, b, node, modules[node.target], node.target)
        elif node.op in ("call_function", "call_method"):
            b.guarded(node, _call_function, b, node)
        elif node.op == "get_attr":
            pass  # a tensor attribute: whatever reads it as an activation is refused there
        elif node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            b.guarded(node, _outputs, b, node, outs)
    return b.finish()


def _outputs(b: _Builder, node: fx.Node, outs: Sequence[Any]) -> None:
    b.graph.outputs = [b.value(o, node) for o in outs]


# ---------------------------------------------------------------------------------------
# ATen-level graphs (torch.export)

aten = torch.ops.aten


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Exported:
    """The parameters of an exported program: lifted placeholders and attributes, by node."""

    b: _Builder
    tensors: dict[fx.Node, tuple[str, torch.Tensor]]

    def tensor(self, arg: Any, node: fx.Node) -> Any:  # a parameter tensor, or None for an absent one
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg in self.tensors:
            return self.tensors[arg][1]
        raise _unsupported(f"computed weight {arg!r} (weights must be parameters)", node)

    def prefix(self, arg: Any) -> str:
        key = self.tensors[arg][0] if isinstance(arg, fx.Node) and arg in self.tensors else "param"
        return key.rsplit(".", 1)[0] + "." if "." in key else ""


def _program_tensor(ep: Any, key: str) -> Any:
    """The parameter, buffer or constant ``key`` of an ``ExportedProgram``; a program whose signature
    names a tensor the file does not hold is a damaged file, not a crash."""
    if key in ep.state_dict:
        return ep.state_dict[key]
    if key in ep.constants:
        return ep.constants[key]
    raise InputFileError(f"the program's signature names the tensor '{key}', which the file does not hold "
                         "(a damaged or hand-edited file?); export the model again")


def import_exported(ep: Any, name: str = "model") -> Graph:
    """Map an ``ExportedProgram`` (ATen ops, possibly with a dynamic batch) onto snnc IR; every
    construct that does not map is listed in one ``UnsupportedError``."""
    gm = ep.graph_module
    sig = ep.graph_signature
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
              **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    b = _Builder(name, lambda key: _program_tensor(ep, key))
    p = _Exported(b, {})
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node.name in lifted:
                key = lifted[node.name]
                value = _program_tensor(ep, key)
                p.tensors[node] = (key, value)
                continue
            shape = _shape(node)
            if shape is None:
                continue
            b.graph.inputs.append((b.graph.fresh_name(node.name), TensorType(shape)))
            b.values[node] = b.graph.inputs[-1][0]
        elif node.op == "get_attr":
            p.tensors[node] = (str(node.target), _attr(gm, node.target))
        elif node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            b.guarded(node, _outputs, b, node, outs)
        elif node.op != "call_function":
            b.guarded(node, _refuse_kind, node)
        elif not _ignored(node.target):
            b.guarded(node, _call_aten, p, node)
    return b.finish()


def _refuse_kind(node: fx.Node) -> None:
    raise _unsupported(f"fx node kind '{node.op}'", node)


def _ignored(t: Any) -> bool:
    """Symbolic-size queries and runtime asserts: no tensor computation."""
    return "sym_size" in str(t) or "_assert" in str(t)


_RELUS = (aten.relu.default, aten.relu_.default)
_HARDTANHS = (aten.hardtanh.default, aten.hardtanh_.default)
_CLAMPS = (aten.clamp.default, aten.clamp_.default, aten.clip.default, aten.clip_.default)
_ALIASES = (aten.dropout.default, aten.dropout_.default, aten.clone.default, aten.contiguous.default,
            aten.detach.default, aten.alias.default, aten.feature_dropout.default, aten.feature_dropout_.default,
            aten.alpha_dropout.default, aten.feature_alpha_dropout.default, aten.lift_fresh_copy.default)
_RESHAPES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.squeeze.default,
             aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.unflatten.int)


def _call_aten(p: _Exported, node: fx.Node) -> None:
    b = p.b
    t = node.target
    a: Any = node.args
    x = a[0] if a else None
    if t is operator.getitem:
        if x in b.tuples:
            b.values[node] = b.tuples[x][int(a[1])]
        elif a[1] == 0 and b.is_value(x):  # max_pool2d_with_indices: the values
            b.alias(node, x)
        elif x in b.poisoned:
            raise _Poisoned()
        return  # the indices of max_pool2d_with_indices: a use of them is refused there
    if t in (aten.conv2d.default, aten.conv1d.default):
        _conv(b, node, b.value(x, node), p.tensor(a[1], node), p.tensor(_kw(node, 2, "bias"), node),
              _kw(node, 3, "stride", 1), _kw(node, 4, "padding", 0), _kw(node, 5, "dilation", 1),
              _kw(node, 6, "groups", 1), p.prefix(a[1]))
    elif t is aten.convolution.default:
        if a[6]:
            raise _unsupported("transposed convolution", node)
        _conv(b, node, b.value(x, node), p.tensor(a[1], node), p.tensor(a[2], node), a[3], a[4], a[5], a[8],
              p.prefix(a[1]))
    elif t is aten.linear.default:
        params = {"weight": b.param(p.prefix(a[1]) + "weight", p.tensor(a[1], node))}
        bias = p.tensor(_kw(node, 2, "bias"), node)
        if bias is not None:
            params["bias"] = b.param(p.prefix(a[1]) + "bias", bias)
        _linear(b, node, b.value(x, node), params)
    elif t is aten.batch_norm.default:
        _batchnorm(b, node, b.value(x, node), p.tensor(a[1], node), p.tensor(a[2], node), p.tensor(a[3], node),
                   p.tensor(a[4], node), a[7], p.prefix(a[3]))
    elif t is aten._native_batch_norm_legit_no_training.default:
        _batchnorm(b, node, b.value(x, node), p.tensor(a[1], node), p.tensor(a[2], node), p.tensor(a[3], node),
                   p.tensor(a[4], node), a[6], p.prefix(a[3]))
    elif t in _RELUS:
        b.emit(node, O.Relu(), [b.value(x, node)])
    elif t in _HARDTANHS:
        op: O.Op = O.Clip(lo=float(_kw(node, 1, "min_val", -1.0)), hi=float(_kw(node, 2, "max_val", 1.0)))
        b.emit(node, op, [b.value(x, node)])
    elif t is aten.relu6.default:
        b.emit(node, O.Clip(lo=0.0, hi=6.0), [b.value(x, node)])
    elif t in _CLAMPS:
        _clamp(b, node, b.value(x, node), _kw(node, 1, "min"), _kw(node, 2, "max"))
    elif t in (aten.clamp_min.default, aten.clamp_min_.default):
        _clamp(b, node, b.value(x, node), a[1], None)
    elif t in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default):
        _max_pool(b, node, b.value(x, node), a[1], _kw(node, 2, "stride"), _kw(node, 3, "padding", 0),
                  _kw(node, 4, "dilation", 1), _kw(node, 5, "ceil_mode", False))
    elif t is aten.avg_pool2d.default:
        _avg_pool(b, node, b.value(x, node), a[1], _kw(node, 2, "stride"), _kw(node, 3, "padding", 0),
                  _kw(node, 4, "ceil_mode", False), _kw(node, 5, "count_include_pad", True),
                  _kw(node, 6, "divisor_override"))
    elif t in (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default):
        _adaptive_avg(b, node, b.value(x, node), a[1])
    elif t is aten.adaptive_max_pool2d.default:  # a (values, indices) pair, like max_pool2d_with_indices
        _adaptive_max(b, node, b.value(x, node), a[1])
    elif t is aten.mean.dim:
        _mean(b, node, b.value(x, node), a[1], _kw(node, 2, "keepdim", False))
    elif t in _RESHAPES:
        _reshape_to(b, node, b.value(x, node))
    elif t is aten.flatten.using_ints:
        _flatten(b, node, b.value(x, node), int(_kw(node, 1, "start_dim", 0)), int(_kw(node, 2, "end_dim", -1)))
    elif t is aten.permute.default:
        _permute(b, node, b.value(x, node), a[1])
    elif t in (aten.transpose.int, aten.swapaxes.default, aten.swapdims.default):
        _transpose(b, node, b.value(x, node), a[1], a[2])
    elif t is aten.slice.Tensor:
        _slice(b, node, b.value(x, node), _kw(node, 1, "dim", 0), _kw(node, 2, "start"), _kw(node, 3, "end"),
               _kw(node, 4, "step", 1))
    elif t is aten.narrow.default:
        _slice(b, node, b.value(x, node), a[1], int(a[2]), int(a[2]) + int(a[3]))
    elif t is aten.select.int:
        _select(b, node, b.value(x, node), a[1], a[2])
    elif t in (aten.split.Tensor, aten.split_with_sizes.default, aten.split.sizes):
        xv = b.value(x, node)
        dim = _kw(node, 2, "dim", 0)
        _split(b, node, xv, _split_sizes(b, node, xv, a[1], dim), dim)
    elif t is aten.chunk.default:
        _chunk(b, node, b.value(x, node), a[1], _kw(node, 2, "dim", 0))
    elif t is aten.unbind.int:
        _unbind(b, node, b.value(x, node), _kw(node, 1, "dim", 0))
    elif t in (aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten._upsample_nearest_exact2d.vec,
               aten._upsample_nearest_exact2d.default):
        _upsample(b, node, b.value(x, node), "nearest")
    elif t in (aten.channel_shuffle.default, aten.native_channel_shuffle.default):
        _channel_shuffle(b, node, b.value(x, node), int(a[1]))
    elif t in (aten.add.Tensor, aten.add_.Tensor):
        _add(b, node, a[0], a[1], node.kwargs.get("alpha", 1))
    elif t in (aten.mul.Tensor, aten.mul_.Tensor, aten.mul.Scalar, aten.mul_.Scalar):
        _mul(b, node, a[0], a[1])
    elif t in (aten.div.Tensor, aten.div_.Tensor, aten.div.Scalar, aten.div_.Scalar):
        _mul(b, node, a[0], a[1], divide=True)
    elif t in (aten.cat.default, aten.concat.default):
        _cat(b, node, a[0], _kw(node, 1, "dim", 0))
    elif t in _ALIASES:
        b.alias(node, x)
    else:
        raise _unsupported(f"'{t}'", node, base=_base_name(t))
