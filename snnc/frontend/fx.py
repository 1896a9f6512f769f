"""torch.fx frontend: module-level fx graphs and ATen-level exported programs -> snnc IR.

Both kinds of graph map onto the same IR ops.  Shapes come from shape propagation
(module-level) or from each node's ``meta['val']`` (exported); the batch dimension is
dropped.  Parameters keep their names from the source model (``features.0.weight``).
Every unsupported construct raises UnsupportedError naming the op, the module path and
the user's source line.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from snnc.errors import UnsupportedError, UserError
from snnc.frontend.spiking import is_spiking_module, lower_spiking_module
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


def _location(node: fx.Node, module_path: str = "") -> str:
    """'file.py:LINE in fn (module.path)' from the node's recorded stack trace."""
    frame = _user_frame(node)
    where = f"{frame[0].rsplit('/', 1)[-1]}:{frame[1]} in {frame[2]}" if frame else ""
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


def _unsupported(what: str, node: fx.Node, module_path: str = "") -> UnsupportedError:
    where = _location(node, module_path)
    code = _source_line(node)
    msg = f"unsupported op {what}"
    if where:
        msg += f" at {where}"
    if code:
        msg += f": `{code}`"
    return UnsupportedError(msg + "; see `snnc ops` for what the frontend maps")


# ---------------------------------------------------------------------------------------
# the builder


class _Builder:
    def __init__(self, name: str, params_source: Callable[[str], torch.Tensor]):
        self.graph = Graph(re.sub(r"[^A-Za-z0-9_]", "_", name) or "model", [])
        self.values: dict[fx.Node, str] = {}
        self.get_tensor = params_source
        self.consts: dict[fx.Node, torch.Tensor] = {}

    def value(self, arg: Any, node: fx.Node) -> str:
        if isinstance(arg, fx.Node) and arg in self.values:
            return self.values[arg]
        raise _unsupported(f"operand {arg!r} (not a tensor value)", node)

    def param(self, key: str, tensor: torch.Tensor) -> str:
        key = key if key not in self.graph.params else self.graph.fresh_param(key)
        self.graph.params[key] = tensor.detach().cpu().to(torch.float32).numpy().copy()
        return key

    def emit(self, fxnode: fx.Node, op: O.Op, inputs: list[str], params: dict[str, str] | None = None,
             loc: str = "") -> str:
        name = self.graph.fresh_name(fxnode.name)
        node = Node(name, op, tuple(inputs), params=params or {}, type=None, loc=loc or _location(fxnode))
        self.graph.nodes.append(node)
        in_types = [self.graph.value_type(v) for v in inputs]
        node.type = op.infer_type(name, in_types, self.graph.param_shapes(node))
        self.values[fxnode] = name
        return name

    def alias(self, fxnode: fx.Node, arg: Any) -> None:
        self.values[fxnode] = self.value(arg, fxnode)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    if val is None:
        tm = node.meta.get("tensor_meta")
        shape = getattr(tm, "shape", None)
    else:
        shape = getattr(val, "shape", None)
    if shape is None:
        return None
    return tuple(int(d) for d in list(shape)[1:])


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return (int(v[0]), int(v[0]))
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _single(v: Any) -> int:
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


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


def _adaptive_avg(b: _Builder, node: fx.Node, x: str, output_size) -> str:
    c, h, w = b.graph.value_type(x).shape
    oh, ow = _pair(output_size) if output_size is not None else (h, w)
    oh = h if oh is None else oh
    ow = w if ow is None else ow
    if h % oh or w % ow:
        raise _unsupported(f"adaptive average pooling {h}x{w} -> {oh}x{ow} (not a whole window)", node)
    k = (h // oh, w // ow)
    return b.emit(node, O.AvgPool2d(kernel=k, stride=k), [x])


def _reshape_to(b: _Builder, node: fx.Node, x: str) -> str:
    shape = _shape(node)
    if shape is None:
        raise _unsupported("reshape whose result shape is unknown", node)
    src = b.graph.value_type(x)
    if shape == src.shape:
        b.alias(node, node.args[0])  # type: ignore[arg-type]
        return b.values[node]
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


def _add(b: _Builder, node: fx.Node, lhs: Any, rhs: Any, alpha: Any = 1) -> str:
    if not (isinstance(lhs, fx.Node) and isinstance(rhs, fx.Node)) or lhs not in b.values or rhs not in b.values:
        raise _unsupported("add of a tensor and a constant", node)
    if alpha != 1:
        raise _unsupported(f"add with alpha={alpha}", node)
    return b.emit(node, O.Add(), [b.values[lhs], b.values[rhs]])


def _cat(b: _Builder, node: fx.Node, tensors: Any, dim: int) -> str:
    vals = [b.value(t, node) for t in tensors]
    rank = len(b.graph.value_type(vals[0]).shape) + 1
    dim = dim + rank if dim < 0 else dim
    if dim == 0:
        raise _unsupported("concatenation along the batch dimension", node)
    return b.emit(node, O.Concat(axis=dim - 1), vals)


# ---------------------------------------------------------------------------------------
# module-level graphs (torch.fx.symbolic_trace)


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
        b.emit(node, O.Linear(), [x], params, loc)
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
        k = _pair(mod.kernel_size)
        s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        op: O.Op = O.MaxPool2d(kernel=k, stride=s, padding=_pair(mod.padding), ceil_mode=bool(mod.ceil_mode),
                               dilation=_pair(mod.dilation))
        b.emit(node, op, [x], loc=loc)
    elif isinstance(mod, nn.AvgPool2d):
        if mod.divisor_override:
            raise _unsupported("AvgPool2d with divisor_override", node, path)
        k = _pair(mod.kernel_size)
        s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        op = O.AvgPool2d(kernel=k, stride=s, padding=_pair(mod.padding), ceil_mode=bool(mod.ceil_mode),
                         count_include_pad=bool(mod.count_include_pad))
        b.emit(node, op, [x], loc=loc)
    elif isinstance(mod, nn.AdaptiveAvgPool2d):
        _adaptive_avg(b, node, x, mod.output_size)
    elif isinstance(mod, nn.Flatten):
        _flatten(b, node, x, mod.start_dim, mod.end_dim)
    elif isinstance(mod, nn.Dropout):
        b.emit(node, O.Dropout(p=float(mod.p)), [x], loc=loc)
    elif isinstance(mod, nn.Identity):
        b.emit(node, O.Identity(), [x], loc=loc)
    else:
        if not lower_spiking_module(b, node, mod, path, x):
            raise _unsupported(f"module {type(mod).__module__}.{type(mod).__name__}", node, path)


def _kw(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _call_function(b: _Builder, node: fx.Node) -> None:
    t = node.target
    x = node.args[0] if node.args else node.kwargs.get("input")
    if t in (F.relu, torch.relu) or (node.op == "call_method" and t in ("relu", "relu_")):
        b.emit(node, O.Relu(), [b.value(x, node)])
    elif t is F.relu6:
        b.emit(node, O.Clip(lo=0.0, hi=6.0), [b.value(x, node)])
    elif t is F.hardtanh:
        op: O.Op = O.Clip(lo=float(_kw(node, 1, "min_val", -1.0)), hi=float(_kw(node, 2, "max_val", 1.0)))
        b.emit(node, op, [b.value(x, node)])
    elif t in (torch.clamp, torch.clip) or (node.op == "call_method" and t in ("clamp", "clip")):
        _clamp(b, node, b.value(x, node), _kw(node, 1, "min"), _kw(node, 2, "max"))
    elif t in (operator.add, operator.iadd, torch.add) or (node.op == "call_method" and t in ("add", "add_")):
        _add(b, node, node.args[0], node.args[1], node.kwargs.get("alpha", 1))
    elif t is torch.cat or t is torch.concat:
        _cat(b, node, node.args[0], _kw(node, 1, "dim", 0))
    elif t is torch.flatten or (node.op == "call_method" and t == "flatten"):
        _flatten(b, node, b.value(x, node), int(_kw(node, 1, "start_dim", 0)), int(_kw(node, 2, "end_dim", -1)))
    elif node.op == "call_method" and t in ("view", "reshape") or t is torch.reshape:
        _reshape_to(b, node, b.value(x, node))
    elif t in (F.dropout, torch.dropout) or (node.op == "call_method" and t in ("contiguous", "clone", "detach")):
        b.alias(node, x)
    elif t is F.max_pool2d:
        k = _pair(_kw(node, 1, "kernel_size"))
        s = _kw(node, 2, "stride") or k
        op = O.MaxPool2d(kernel=k, stride=_pair(s), padding=_pair(_kw(node, 3, "padding", 0)),
                         ceil_mode=bool(_kw(node, 5, "ceil_mode", False)),
                         dilation=_pair(_kw(node, 4, "dilation", 1)))
        b.emit(node, op, [b.value(x, node)])
    elif t is F.avg_pool2d:
        k = _pair(_kw(node, 1, "kernel_size"))
        s = _kw(node, 2, "stride") or k
        op = O.AvgPool2d(kernel=k, stride=_pair(s), padding=_pair(_kw(node, 3, "padding", 0)),
                         ceil_mode=bool(_kw(node, 4, "ceil_mode", False)),
                         count_include_pad=bool(_kw(node, 5, "count_include_pad", True)))
        b.emit(node, op, [b.value(x, node)])
    elif t is F.adaptive_avg_pool2d:
        _adaptive_avg(b, node, b.value(x, node), _kw(node, 1, "output_size"))
    elif (node.op == "call_method" and t in ("size", "dim")) or (t is getattr and node.args[1] == "shape") or (
        t is operator.getitem and node.args[0] in b.consts
    ):
        b.consts[node] = torch.tensor(0)  # shape queries only feed view/reshape, whose shape is propagated
    else:
        name = t if isinstance(t, str) else f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}"
        raise _unsupported(f"'{name.lstrip('.')}'", node)


class SourceTracer(fx.Tracer):
    """Records a stack trace per node so that errors can point at the user's source; spiking
    neuron modules stay leaves (they become ``neuron`` ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or is_spiking_module(m)


def import_module(module: nn.Module, example_input: torch.Tensor, name: str | None = None) -> Graph:
    """Trace ``module`` with torch.fx and return the snnc Graph of its inference behaviour.

    ``example_input`` includes the batch dimension; it fixes the input shape.
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
            _call_module(b, node, modules[node.target], node.target)
        elif node.op in ("call_function", "call_method"):
            _call_function(b, node)
        elif node.op == "get_attr":
            raise _unsupported(f"direct use of tensor attribute '{node.target}'", node)
        elif node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            b.graph.outputs = [b.value(o, node) for o in outs]
    verify(b.graph)
    return b.graph


# ---------------------------------------------------------------------------------------
# ATen-level graphs (torch.export)

aten = torch.ops.aten


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def import_exported(ep: Any, name: str = "model") -> Graph:
    """Map an ``ExportedProgram`` (ATen ops, possibly with a dynamic batch) onto snnc IR."""
    gm = ep.graph_module
    sig = ep.graph_signature
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
              **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    b = _Builder(name, lambda key: ep.state_dict[key])
    tensors: dict[fx.Node, tuple[str, torch.Tensor]] = {}  # parameter nodes: (source name, tensor)

    def tensor(arg: Any, node: fx.Node) -> Any:  # a parameter tensor, or None for an absent one
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg in tensors:
            return tensors[arg][1]
        raise _unsupported(f"computed weight {arg!r} (weights must be parameters)", node)

    def prefix(arg: Any) -> str:
        key = tensors[arg][0] if isinstance(arg, fx.Node) and arg in tensors else "param"
        return key.rsplit(".", 1)[0] + "." if "." in key else ""

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node.name in lifted:
                key = lifted[node.name]
                value = ep.state_dict[key] if key in ep.state_dict else ep.constants[key]
                tensors[node] = (key, value)
                continue
            shape = _shape(node)
            if shape is None:
                continue
            b.graph.inputs.append((b.graph.fresh_name(node.name), TensorType(shape)))
            b.values[node] = b.graph.inputs[-1][0]
            continue
        if node.op == "get_attr":
            tensors[node] = (str(node.target), _attr(gm, node.target))
            continue
        if node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            b.graph.outputs = [b.value(o, node) for o in outs]
            continue
        if node.op != "call_function":
            raise _unsupported(f"fx node kind '{node.op}'", node)
        t = node.target
        a = node.args
        if t is operator.getitem:
            if a[1] == 0 and a[0] in b.values:
                b.alias(node, a[0])
            continue
        if t in (aten.sym_size.int, aten.sym_size, torch.ops.aten.sym_size.int) or "sym_size" in str(t) or \
                "_assert" in str(t) or str(t).startswith("aten._assert"):
            continue
        x = a[0] if a else None
        if t in (aten.conv2d.default, aten.conv1d.default):
            w = tensor(a[1], node)
            _conv(b, node, b.value(x, node), w, tensor(_kw(node, 2, "bias"), node), _kw(node, 3, "stride", 1),
                  _kw(node, 4, "padding", 0), _kw(node, 5, "dilation", 1), _kw(node, 6, "groups", 1), prefix(a[1]))
        elif t is aten.convolution.default:
            if a[6]:
                raise _unsupported("transposed convolution", node)
            _conv(b, node, b.value(x, node), tensor(a[1], node), tensor(a[2], node), a[3], a[4], a[5], a[8],
                  prefix(a[1]))
        elif t is aten.linear.default:
            params = {"weight": b.param(prefix(a[1]) + "weight", tensor(a[1], node))}
            bias = tensor(_kw(node, 2, "bias"), node)
            if bias is not None:
                params["bias"] = b.param(prefix(a[1]) + "bias", bias)
            b.emit(node, O.Linear(), [b.value(x, node)], params)
        elif t is aten.batch_norm.default:
            _batchnorm(b, node, b.value(x, node), tensor(a[1], node), tensor(a[2], node), tensor(a[3], node),
                       tensor(a[4], node), a[7], prefix(a[3]))
        elif t is aten._native_batch_norm_legit_no_training.default:
            _batchnorm(b, node, b.value(x, node), tensor(a[1], node), tensor(a[2], node), tensor(a[3], node),
                       tensor(a[4], node), a[6], prefix(a[3]))
        elif t in (aten.relu.default, aten.relu_.default):
            b.emit(node, O.Relu(), [b.value(x, node)])
        elif t in (aten.hardtanh.default, aten.hardtanh_.default):
            op: O.Op = O.Clip(lo=float(_kw(node, 1, "min_val", -1.0)), hi=float(_kw(node, 2, "max_val", 1.0)))
            b.emit(node, op, [b.value(x, node)])
        elif t in (aten.relu6.default,):
            b.emit(node, O.Clip(lo=0.0, hi=6.0), [b.value(x, node)])
        elif t in (aten.clamp.default, aten.clamp_.default, aten.clip.default):
            _clamp(b, node, b.value(x, node), _kw(node, 1, "min"), _kw(node, 2, "max"))
        elif t in (aten.clamp_min.default,):
            _clamp(b, node, b.value(x, node), a[1], None)
        elif t in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default):
            k = _pair(a[1])
            s = _kw(node, 2, "stride") or k
            op = O.MaxPool2d(kernel=k, stride=_pair(s), padding=_pair(_kw(node, 3, "padding", 0)),
                             ceil_mode=bool(_kw(node, 5, "ceil_mode", False)),
                             dilation=_pair(_kw(node, 4, "dilation", 1)))
            b.emit(node, op, [b.value(x, node)])
        elif t is aten.avg_pool2d.default:
            if _kw(node, 6, "divisor_override") is not None:
                raise _unsupported("avg_pool2d with divisor_override", node)
            k = _pair(a[1])
            s = _kw(node, 2, "stride") or k
            op = O.AvgPool2d(kernel=k, stride=_pair(s), padding=_pair(_kw(node, 3, "padding", 0)),
                             ceil_mode=bool(_kw(node, 4, "ceil_mode", False)),
                             count_include_pad=bool(_kw(node, 5, "count_include_pad", True)))
            b.emit(node, op, [b.value(x, node)])
        elif t in (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default):
            _adaptive_avg(b, node, b.value(x, node), a[1])
        elif t is aten.mean.dim and sorted(int(d) % 4 for d in a[1]) == [2, 3]:
            y = _adaptive_avg(b, node, b.value(x, node), (1, 1))
            if not _kw(node, 2, "keepdim", False):
                b.values[node] = b.emit(node, O.Flatten(), [y])
        elif t in (aten.view.default, aten.reshape.default, aten._unsafe_view.default):
            _reshape_to(b, node, b.value(x, node))
        elif t is aten.flatten.using_ints:
            _flatten(b, node, b.value(x, node), int(_kw(node, 1, "start_dim", 0)), int(_kw(node, 2, "end_dim", -1)))
        elif t in (aten.add.Tensor, aten.add_.Tensor):
            _add(b, node, a[0], a[1], node.kwargs.get("alpha", 1))
        elif t in (aten.cat.default, aten.concat.default):
            _cat(b, node, a[0], _kw(node, 1, "dim", 0))
        elif t in (aten.dropout.default, aten.dropout_.default, aten.clone.default, aten.contiguous.default,
                   aten.detach.default, aten.alias.default, aten.feature_dropout.default):
            b.alias(node, x)
        else:
            raise _unsupported(f"'{t}'", node)
    verify(b.graph)
    return b.graph
