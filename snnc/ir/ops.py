"""Every op of the snnc IR, declared once.

Shapes exclude the batch dimension.  Each docstring gives the op's equation at one
timestep (DESIGN.md §3): synaptic ops apply their map every step, neurons carry state.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar

from snnc.ir.op import VARIADIC, Op, ParamSpec, fail, register_op
from snnc.ir.types import Signal, TensorType

# ---------------------------------------------------------------------------------------
# enums


class Scheme(enum.Enum):
    DIRECT = "direct"  # analog input every step
    RATE = "rate"  # Bernoulli spikes with p = clamp(x, 0, 1)
    PHASE = "phase"  # binary-weighted phase code over a window
    TTFS = "ttfs"  # one spike, earlier for larger values


class NeuronModel(enum.Enum):
    IF = "if"
    LIF = "lif"
    CUBA = "cuba"  # current-based LIF: synaptic current state u, voltage v (Loihi, Norse LIFCell)


class Reset(enum.Enum):
    SOFT = "soft"  # v -= s·v_th
    HARD = "hard"  # v = v_reset where s > 0
    NONE = "none"


class Leak(enum.Enum):
    MULTIPLY = "multiply"  # v = β·v + I
    TAU = "tau"  # SpikingJelly: v = v + (I − (v − v_rest))/τ  (decay_input) or v − (v − v_rest)/τ + I
    RATE = "rate"  # the tau form multiplied by the rate β = 1/τ: SpikingJelly ParametricLIF, Norse (β = dt/τ)


class Emit(enum.Enum):
    SPIKES = "spikes"  # s·out_scale (a spike or burst value)
    MEMBRANE = "membrane"  # the membrane potential v (analog): an output layer read by its membrane


class Negative(enum.Enum):
    NONE = "none"  # spikes 0/1 only
    SIGNED = "signed"  # also −1 where v < 0: a signed value
    RECTIFIED = "rectified"  # also −1 where v < 0 while the net count is > 0: a ReLU that takes spikes back


class ReadoutMode(enum.Enum):
    MEAN_CURRENT = "mean_current"
    SPIKE_COUNT = "spike_count"


class ExitRule(enum.Enum):
    NONE = "none"
    ENTROPY = "entropy"  # exit when 1 − H(softmax(mean logits))/log C > τ_t
    CONFIDENCE = "confidence"  # exit when max softmax probability > τ_t


# ---------------------------------------------------------------------------------------
# helpers


def _one_input(op: Op, node: str, inputs: Sequence[TensorType]) -> TensorType:
    return inputs[0]


def _channel_param(op: Op, node: str, params: dict[str, tuple[int, ...]], role: str, channels: int) -> None:
    """A per-channel parameter must be a scalar or have one value per channel."""
    if role in params:
        shape = params[role]
        if math.prod(shape) not in (1, channels):
            raise fail(op, node, f"{role} has {math.prod(shape)} values, input has {channels} channels")
        if shape not in ((), (1,), (channels,)):
            raise fail(op, node, f"{role} has shape {list(shape)}, expected a scalar or [{channels}]")


def _pool_out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # PyTorch: last window must start inside the input
        out -= 1
    return out


def _check_geometry(op: Op, node: str, **values: tuple[int, ...] | int) -> None:
    """Strides, dilations and kernels must be >= 1; paddings >= 0."""
    for name, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        low = 0 if name == "padding" else 1
        if any(v < low for v in items):
            raise fail(op, node, f"{name} = {list(items)} must be >= {low}")


def _spatial(op: Op, node: str, x: TensorType, rank: int) -> tuple[int, ...]:
    if len(x.shape) != rank + 1:
        dims = "[C,H,W]" if rank == 2 else "[C,L]"
        raise fail(op, node, f"expects a {dims} input, got {x}")
    return x.shape[1:]


# ---------------------------------------------------------------------------------------
# structure


@register_op
@dataclass(frozen=True, kw_only=True)
class Identity(Op):
    """y = x."""

    name: ClassVar[str] = "identity"
    shape_only: ClassVar[bool] = True
    reindexing: ClassVar[bool] = True
    value_identity: ClassVar[bool] = True
    channelwise: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        return inputs[0]


@register_op
@dataclass(frozen=True, kw_only=True)
class Dropout(Op):
    """y = x (inference); p is kept only to trace the source model."""

    name: ClassVar[str] = "dropout"
    shape_only: ClassVar[bool] = True
    reindexing: ClassVar[bool] = True
    value_identity: ClassVar[bool] = True
    channelwise: ClassVar[bool] = True
    ann_only: ClassVar[bool] = True
    p: float = 0.5

    def infer_type(self, node, inputs, params):
        return inputs[0]


@register_op
@dataclass(frozen=True, kw_only=True)
class Flatten(Op):
    """y = x reshaped to one dimension (C-order, i.e. PyTorch's CHW order)."""

    name: ClassVar[str] = "flatten"
    shape_only: ClassVar[bool] = True
    reindexing: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        return inputs[0].with_shape((inputs[0].numel,))


@register_op
@dataclass(frozen=True, kw_only=True)
class Reshape(Op):
    """y = x reshaped to ``shape`` (C-order, without batch)."""

    name: ClassVar[str] = "reshape"
    shape_only: ClassVar[bool] = True
    reindexing: ClassVar[bool] = True
    shape: tuple[int, ...] = ()

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if math.prod(self.shape) != x.numel or any(d <= 0 for d in self.shape):
            raise fail(self, node, f"cannot reshape {x} to {list(self.shape)}")
        return x.with_shape(self.shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Concat(Op):
    """y = concatenation of the operands along ``axis`` (0 = channels)."""

    name: ClassVar[str] = "concat"
    arity: ClassVar[int] = VARIADIC
    reindexing: ClassVar[bool] = True
    axis: int = 0

    def infer_type(self, node, inputs, params):
        if len(inputs) < 2:
            raise fail(self, node, "needs at least 2 operands")
        first = inputs[0]
        if not 0 <= self.axis < len(first.shape):
            raise fail(self, node, f"axis {self.axis} out of range for {first}")
        total = 0
        for t in inputs:
            rest = t.shape[: self.axis] + t.shape[self.axis + 1 :]
            if len(t.shape) != len(first.shape) or rest != first.shape[: self.axis] + first.shape[self.axis + 1 :]:
                raise fail(self, node, f"operand shapes {[str(i) for i in inputs]} differ outside axis {self.axis}")
            total += t.shape[self.axis]
        shape = first.shape[: self.axis] + (total,) + first.shape[self.axis + 1 :]
        return _merge_signal(inputs).with_shape(shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Permute(Op):
    """y[i_0, …, i_{r−1}] = x[j] with j[dims[k]] = i_k: the axes of x reordered, y.shape[k] =
    x.shape[dims[k]] (``torch.permute`` without the batch axis; transpose and ShuffleNet's channel
    shuffle import as one).  A re-indexing: linear, no arithmetic, spikes pass unchanged; not
    ``shape_only`` (the flat order changes) and not ``channelwise`` (it can move the channel axis)."""

    name: ClassVar[str] = "permute"
    reindexing: ClassVar[bool] = True
    dims: tuple[int, ...] = ()

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if sorted(self.dims) != list(range(len(x.shape))):
            raise fail(self, node, f"dims {list(self.dims)} is not a permutation of the {len(x.shape)} axes of {x}")
        return x.with_shape(tuple(x.shape[d] for d in self.dims))


@register_op
@dataclass(frozen=True, kw_only=True)
class Slice(Op):
    """y = x[…, start:stop:step, …] along ``axis`` (0 = channels): chunk, split, narrow, unbind and
    ``x[:, a:b]`` import as slices.  A re-indexing that drops elements: linear, spikes pass
    unchanged; not ``shape_only`` and not ``channelwise`` (a channel slice renumbers the channels)."""

    name: ClassVar[str] = "slice"
    reindexing: ClassVar[bool] = True
    axis: int = 0
    start: int = 0
    stop: int = 1
    step: int = 1

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if not 0 <= self.axis < len(x.shape):
            raise fail(self, node, f"axis {self.axis} out of range for {x}")
        size = x.shape[self.axis]
        if self.step < 1 or not 0 <= self.start < self.stop <= size:
            raise fail(self, node, f"{self.start}:{self.stop}:{self.step} is not a non-empty slice of an axis "
                                   f"of size {size} (0 <= start < stop <= size, step >= 1)")
        n = len(range(self.start, self.stop, self.step))
        return x.with_shape(x.shape[: self.axis] + (n,) + x.shape[self.axis + 1 :])


@register_op
@dataclass(frozen=True, kw_only=True)
class Upsample(Op):
    """Nearest-neighbour upsampling by whole factors: y[c, i, j] = x[c, i // scale[0], j // scale[1]]
    on [C, H, W] (``nn.Upsample(mode='nearest')``, and adaptive average pooling to a multiple of the
    input size, e.g. VGG's 1×1 -> 7×7).  A re-indexing that repeats elements: linear, spikes pass
    unchanged (each input event reaches scale[0]·scale[1] outputs), channelwise; not ``shape_only``."""

    name: ClassVar[str] = "upsample"
    reindexing: ClassVar[bool] = True
    channelwise: ClassVar[bool] = True
    scale: tuple[int, int] = (2, 2)

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        h, w = _spatial(self, node, x, 2)
        _check_geometry(self, node, scale=self.scale)
        return x.with_shape((x.shape[0], h * self.scale[0], w * self.scale[1]))


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows along one axis: [floor(i·size/out), ceil((i+1)·size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _merge_signal(inputs: Sequence[TensorType]) -> TensorType:
    """Concat of events stays events; anything analog makes the result analog."""
    if all(t.is_event for t in inputs):
        b = max(t.burst for t in inputs)
        signal = Signal.BURST if b > 1 else Signal.SPIKE
        return TensorType(inputs[0].shape, signal, burst=b, dtype=inputs[0].dtype)
    return TensorType(inputs[0].shape, Signal.ANALOG, burst=1, dtype=inputs[0].dtype)


# ---------------------------------------------------------------------------------------
# synaptic ops (linear in their input)


@register_op
@dataclass(frozen=True, kw_only=True)
class Conv2d(Op):
    """y[co] = b[co] + Σ_ci W[co, ci] ⋆ x[ci]  (cross-correlation, PyTorch conventions)."""

    name: ClassVar[str] = "conv2d"
    weighted: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (ParamSpec("weight"), ParamSpec("bias", optional=True))
    synaptic: ClassVar[bool] = True
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        h, w = _spatial(self, node, x, 2)
        _check_geometry(self, node, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups)
        ws = params.get("weight")
        if ws is None or len(ws) != 4:
            raise fail(self, node, f"weight must be [Cout, Cin/groups, KH, KW], got {list(ws or ())}")
        cout, cin_g, kh, kw = ws
        if cin_g * self.groups != x.shape[0]:
            raise fail(self, node, f"weight expects {cin_g * self.groups} input channels, input has {x.shape[0]}")
        if cout % self.groups:
            raise fail(self, node, f"{cout} output channels not divisible by groups={self.groups}")
        if "bias" in params and params["bias"] != (cout,):
            raise fail(self, node, f"bias has shape {list(params['bias'])}, expected [{cout}]")
        oh = _pool_out(h, kh, self.stride[0], self.padding[0], self.dilation[0])
        ow = _pool_out(w, kw, self.stride[1], self.padding[1], self.dilation[1])
        if oh <= 0 or ow <= 0:
            raise fail(self, node, f"kernel {kh}x{kw} does not fit input {x}")
        return TensorType((cout, oh, ow))


@register_op
@dataclass(frozen=True, kw_only=True)
class Conv1d(Op):
    """y[co] = b[co] + Σ_ci W[co, ci] ⋆ x[ci]  on [C, L] inputs."""

    name: ClassVar[str] = "conv1d"
    weighted: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (ParamSpec("weight"), ParamSpec("bias", optional=True))
    synaptic: ClassVar[bool] = True
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        (length,) = _spatial(self, node, x, 1)
        _check_geometry(self, node, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups)
        ws = params.get("weight")
        if ws is None or len(ws) != 3:
            raise fail(self, node, f"weight must be [Cout, Cin/groups, K], got {list(ws or ())}")
        cout, cin_g, k = ws
        if cin_g * self.groups != x.shape[0]:
            raise fail(self, node, f"weight expects {cin_g * self.groups} input channels, input has {x.shape[0]}")
        if "bias" in params and params["bias"] != (cout,):
            raise fail(self, node, f"bias has shape {list(params['bias'])}, expected [{cout}]")
        out = _pool_out(length, k, self.stride, self.padding, self.dilation)
        if out <= 0:
            raise fail(self, node, f"kernel {k} does not fit input {x}")
        return TensorType((cout, out))


@register_op
@dataclass(frozen=True, kw_only=True)
class Linear(Op):
    """y = W·x + b  on a flat input [N_in]; W is [N_out, N_in]."""

    name: ClassVar[str] = "linear"
    weighted: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (ParamSpec("weight"), ParamSpec("bias", optional=True))
    synaptic: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        ws = params.get("weight")
        if ws is None or len(ws) != 2:
            raise fail(self, node, f"weight must be [Nout, Nin], got {list(ws or ())}")
        if len(x.shape) != 1:
            raise fail(self, node, f"expects a flat input, got {x}; insert a flatten")
        if ws[1] != x.shape[0]:
            raise fail(self, node, f"weight expects {ws[1]} inputs, input has {x.shape[0]}")
        if "bias" in params and params["bias"] != (ws[0],):
            raise fail(self, node, f"bias has shape {list(params['bias'])}, expected [{ws[0]}]")
        return TensorType((ws[0],))


@dataclass(frozen=True, kw_only=True)
class Pool2d(Op):
    """Base of the 2-D pooling ops (avg, sum, max, gated max): one window geometry, declared once."""

    channelwise: ClassVar[bool] = True
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False

    def _out_shape(self, node: str, x: TensorType) -> tuple[int, int, int]:
        h, w = _spatial(self, node, x, 2)
        _check_geometry(self, node, kernel=self.kernel, stride=self.stride, padding=self.padding)
        oh, ow = self.out_size(h, w)
        if oh <= 0 or ow <= 0:
            raise fail(self, node, f"window {list(self.kernel)} does not fit input {x}")
        return (x.shape[0], oh, ow)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output rows and columns on an h x w input (PyTorch's rule, ceil_mode included)."""
        return (_pool_out(h, self.kernel[0], self.stride[0], self.padding[0], 1, self.ceil_mode),
                _pool_out(w, self.kernel[1], self.stride[1], self.padding[1], 1, self.ceil_mode))

    def overhang(self, h: int, w: int) -> tuple[int, int]:
        """How far (rows, columns) the last window reaches past the padded h x w input: more than 0
        only where ceil_mode adds a partial window."""
        out = self.out_size(h, w)
        return tuple(max(0, (o - 1) * s + k - n - 2 * p)  # type: ignore[return-value]
                     for o, s, k, n, p in zip(out, self.stride, self.kernel, (h, w), self.padding, strict=True))


@register_op
@dataclass(frozen=True, kw_only=True)
class AvgPool2d(Pool2d):
    """y = mean of x over each window (count_include_pad as PyTorch's default)."""

    name: ClassVar[str] = "avgpool2d"
    synaptic: ClassVar[bool] = True
    count_include_pad: bool = True

    def infer_type(self, node, inputs, params):
        return TensorType(self._out_shape(node, inputs[0]))


@register_op
@dataclass(frozen=True, kw_only=True)
class SumPool2d(Pool2d):
    """y = sum of x over each window."""

    name: ClassVar[str] = "sumpool2d"
    synaptic: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        return TensorType(self._out_shape(node, inputs[0]))


@register_op
@dataclass(frozen=True, kw_only=True)
class AdaptiveAvgPool2d(Op):
    """y[c, i, j] = mean of x[c, h0(i):h1(i), w0(j):w1(j)] with PyTorch's adaptive windows
    h0(i) = floor(i·H/oh), h1(i) = ceil((i+1)·H/oh) (likewise w): ``nn.AdaptiveAvgPool2d`` where the
    windows neither tile the input (that is ``avgpool2d``) nor repeat it (that is ``upsample``), e.g.
    5×5 -> 3×3 with overlapping windows of sizes 2, 3, 2.  Linear with fixed weights 1/|window|,
    separable (y = A_h · x[c] · A_wᵀ); channelwise."""

    name: ClassVar[str] = "adaptive_avgpool2d"
    synaptic: ClassVar[bool] = True
    channelwise: ClassVar[bool] = True
    output_size: tuple[int, int] = (1, 1)

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        _spatial(self, node, x, 2)
        _check_geometry(self, node, output_size=self.output_size)
        return TensorType((x.shape[0],) + self.output_size)


@register_op
@dataclass(frozen=True, kw_only=True)
class Add(Op):
    """y = Σ_i x_i  (residual add; operands of equal shape)."""

    name: ClassVar[str] = "add"
    arity: ClassVar[int] = VARIADIC
    synaptic: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        if len(inputs) < 2:
            raise fail(self, node, "needs at least 2 operands")
        shapes = {t.shape for t in inputs}
        if len(shapes) != 1:
            raise fail(self, node, f"operand shapes differ: {' vs '.join(str(t) for t in inputs)}")
        return TensorType(inputs[0].shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Mul(Op):
    """Elementwise product of two values of equal shape:

    * complement=false:  y = x0 · x1          (on 0/1 spikes: x0 AND x1)
    * complement=true:   y = x0 · (1 − x1)    (on 0/1 spikes: x0 AND NOT x1)

    SpikingJelly's SEW-ResNet connect functions import as this op: ``sew_function(a, b, 'AND')`` =
    a·b, ``'IAND'`` = a·(1 − b), operands in the library's order (its BasicBlock passes
    (identity, block output), so IAND keeps the identity's spikes where the block is silent: the SEW
    paper's ¬A ∧ S).  Not synaptic (it is bilinear, not linear in its input, and sends no event to
    a synapse): on spikes it is a gate, which the cost models count like a neuron update (not at
    all); a dense evaluation multiplies once per element.  The result is ``spike`` when both operands
    are (0/1 spikes give 0/1; a −1 spike of a negative neuron in x1 would give 2·x0 under complement),
    ``analog`` otherwise."""

    name: ClassVar[str] = "mul"
    arity: ClassVar[int] = 2
    complement: bool = False

    def infer_type(self, node, inputs, params):
        a, b = inputs
        if a.shape != b.shape:
            raise fail(self, node, f"operand shapes differ: {a} vs {b}")
        if a.signal is Signal.SPIKE and b.signal is Signal.SPIKE:
            return TensorType(a.shape, Signal.SPIKE)
        return TensorType(a.shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Scale(Op):
    """y = factor · s[c] · x + b[c]  (s, b optional per-channel parameters ``scale``, ``bias``)."""

    name: ClassVar[str] = "scale"
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("scale", optional=True),
        ParamSpec("bias", optional=True),
    )
    synaptic: ClassVar[bool] = True
    factor: float = 1.0

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        for role in ("scale", "bias"):
            _channel_param(self, node, params, role, x.channels)
        return TensorType(x.shape)


# ---------------------------------------------------------------------------------------
# ANN-only ops


@register_op
@dataclass(frozen=True, kw_only=True)
class BatchNorm(Op):
    """y[c] = (x[c] − mean[c]) / sqrt(var[c] + eps) · weight[c] + bias[c]."""

    name: ClassVar[str] = "batchnorm"
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("mean"),
        ParamSpec("var"),
        ParamSpec("weight", optional=True),
        ParamSpec("bias", optional=True),
    )
    ann_only: ClassVar[bool] = True
    eps: float = 1e-5

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        for role in ("mean", "var", "weight", "bias"):
            if role in params and params[role] != (x.channels,):
                raise fail(self, node, f"{role} has shape {list(params[role])}, input has {x.channels} channels")
        return TensorType(x.shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Relu(Op):
    """y = max(x, 0)."""

    name: ClassVar[str] = "relu"
    ann_only: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        return TensorType(inputs[0].shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class Clip(Op):
    """y = clamp(x, lo, hi); with levels L > 0 (QCFS): y = hi·clamp(floor(x·L/hi + shift)/L, 0, 1)."""

    name: ClassVar[str] = "clip"
    ann_only: ClassVar[bool] = True
    lo: float = 0.0
    hi: float = 6.0
    levels: int = 0
    shift: float = 0.5

    def infer_type(self, node, inputs, params):
        if self.hi <= self.lo:
            raise fail(self, node, f"hi={self.hi} must exceed lo={self.lo}")
        if self.levels < 0:
            raise fail(self, node, f"levels={self.levels} must be >= 0")
        return TensorType(inputs[0].shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class MaxPool2d(Pool2d):
    """y = max of x over each window (padding with −inf, as PyTorch)."""

    name: ClassVar[str] = "maxpool2d"
    ann_only: ClassVar[bool] = True
    dilation: tuple[int, int] = (1, 1)

    def infer_type(self, node, inputs, params):
        if self.dilation != (1, 1):
            raise fail(self, node, "dilated max pooling is not supported")
        return TensorType(self._out_shape(node, inputs[0]))


# ---------------------------------------------------------------------------------------
# spiking ops


@register_op
@dataclass(frozen=True, kw_only=True)
class Encode(Op):
    """Input coding.  direct: y_t = x.  rate: y_t ~ Bernoulli(clamp(x,0,1)) (seeded).
    ttfs: one spike at t = round((1 − clamp(x,0,1))·(T−1)) for x > 0.  phase: x in [0,1)
    written in ``bits`` binary digits; bit k = t mod bits (MSB first) is emitted at step t with
    the value bits·2^-(k+1), so that the mean over a whole window is x.  ``bits`` is also the
    graded-spike width that loihi-quantize gives a direct-coded input (round(Q·x) per step)."""

    name: ClassVar[str] = "encode"
    scheme: Scheme = Scheme.DIRECT
    seed: int = 0
    bits: int = 8

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if self.scheme is Scheme.DIRECT:
            return TensorType(x.shape)
        return TensorType(x.shape, Signal.SPIKE)


@register_op
@dataclass(frozen=True, kw_only=True)
class Neuron(Op):
    r"""Spiking neuron, one state per element (DESIGN §3).

    Effective v_th = attribute ``v_th`` × parameter ``v_th`` (per channel, if present);
    likewise ``beta`` and ``out_scale``.  One step t, in this order:

    * model=cuba, the synaptic current:  u[t] = α·u[t−1] + I[t]  (leak=rate: u[t] = (u − α·u) + I[t]);
      the voltage then integrates u[t] in place of I[t]
    * leak=multiply: v = β·v[t−1] + I[t]      (IF: β = 1)
    * leak=tau:      v = v + (I − (v − v_rest))/τ  if decay_input else  v − (v − v_rest)/τ + I
    * leak=rate:     v = v + (I − (v − v_rest))·β  if decay_input else  v − (v − v_rest)·β + I
      (the tau form with the rate β = 1/τ multiplied, as SpikingJelly's ParametricLIF (β = sigmoid(w))
      and Norse's forward-Euler step (β = dt/τ_mem, α = dt/τ_syn) compute it);
      v_rest = v_reset for reset=hard, else 0
    * reset_delay: the previous step's spikes reset v now (snnTorch's default):
      soft: v −= s[t−1]·v_th;  hard: v = v_reset where s[t−1] > 0
    * s[t] = clamp(floor(v/v_th), 0, B) for B = max_spikes > 1, else 1[v ≥ v_th] (1[v > v_th] if strict)
    * unless reset_delay: soft: v −= s[t]·v_th;  hard: v = v_reset where s[t] > 0;  v[t] = v
    * presubtract (reset=soft without reset_delay only; snnTorch's reset_delay=False): r = 1[v[t−1] > v_th]
      of the stored, already reset v is subtracted before the comparison (v −= r·v_th), and the reset
      after it is v −= (s[t] − r)·v_th; a neuron still above v_th after its reset must pass 2·v_th to fire
    * v[0] = v_init·v_th;  output: emit=spikes: s[t]·out_scale;  emit=membrane: v[t] (analog; the
      state carried to the next step, so with reset_delay the value compared with v_th)
    * negative spikes (reset=soft; max_spikes=1 here, bursts below): negative=signed also fires s[t] = −1 where
      v < 0 (v after integration); the soft reset v −= s[t]·v_th then raises v by v_th, so v stays in
      [0, v_th) while |I| ≤ v_th and the net count after t steps is floor((v_init·v_th + Σ I)/v_th):
      a rate code for signed values (v_init = 0.5 rounds; MobileNetV2's linear bottlenecks).
      negative=rectified fires −1 only while the net count so far n[t−1] = Σ s is > 0 (SNM's memory,
      Fast-SNN's inhibitory spike): the count stays ≥ 0 and ends at max(0, floor((v_init·v_th + Σ I)/v_th))
      up to the last step's spike: a ReLU neuron that takes back the spikes an early positive current
      sent.  The spikes are ±1 (the value type stays ``spike``; an event is |s|); ANN mode:
      out_scale·clamp(I/v_th, −1, 1) for signed, out_scale·clamp(I/v_th, 0, 1) for rectified
    * negative spikes of burst neurons (max_spikes = B > 1, reset=soft): s[t] = clamp(floor(v/v_th), lo, B)
      with lo = −B for signed and lo = −min(B, n[t−1]) for rectified (for B = 1 the rule above); the
      soft reset then leaves v in [0, v_th) while |I| ≤ B·v_th: a burst of up to B −1 spikes takes
      back earlier spikes (rectified) or codes a signed value (signed), and the counts end as above.
      The value type stays ``burst<B>`` (an event is |s|); ANN mode: out_scale·clamp(I/v_th, −B, B)
      for signed, out_scale·clamp(I/v_th, 0, B) for rectified
    """

    name: ClassVar[str] = "neuron"
    stateful: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("v_th", optional=True),
        ParamSpec("beta", optional=True),
        ParamSpec("out_scale", optional=True),
    )
    model: NeuronModel = NeuronModel.IF
    v_th: float = 1.0
    reset: Reset = Reset.SOFT
    v_reset: float = 0.0
    v_init: float = 0.0
    beta: float = 1.0
    alpha: float = 0.0
    max_spikes: int = 1
    strict: bool = False
    reset_delay: bool = False
    leak: Leak = Leak.MULTIPLY
    tau: float = 2.0
    decay_input: bool = True
    out_scale: float = 1.0
    emit: Emit = Emit.SPIKES
    presubtract: bool = False
    negative: Negative = Negative.NONE

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if self.negative is not Negative.NONE and (self.reset is not Reset.SOFT or self.reset_delay
                            or self.presubtract or self.emit is not Emit.SPIKES):
            raise fail(self, node, f"negative={self.negative.value} needs reset=soft, emit=spikes and neither "
                                   "reset_delay nor presubtract")
        if self.max_spikes < 1:
            raise fail(self, node, f"max_spikes={self.max_spikes} must be >= 1")
        if not self.v_th > 0:
            raise fail(self, node, f"v_th={self.v_th} must be > 0")
        if self.model is NeuronModel.IF and self.leak is Leak.MULTIPLY and self.beta != 1.0:
            raise fail(self, node, f"an IF neuron has no leak, got beta={self.beta}; use model=lif")
        if self.leak is Leak.RATE and not 0.0 < self.beta <= 1.0:
            raise fail(self, node, f"leak=rate needs a rate 0 < beta <= 1, got beta={self.beta}")
        if self.leak is Leak.TAU and not self.tau > 0:
            raise fail(self, node, f"leak=tau needs tau > 0, got tau={self.tau}")
        unused = self.unused_fields(params)
        if unused:
            raise fail(self, node, "; ".join(unused))
        for role in ("v_th", "beta", "out_scale"):
            _channel_param(self, node, params, role, x.channels)
        if self.emit is Emit.MEMBRANE:
            return TensorType(x.shape)
        kind = Signal.BURST if self.max_spikes > 1 else Signal.SPIKE
        return TensorType(x.shape, kind, burst=self.max_spikes)

    def unused_fields(self, params: Collection[str] = ()) -> list[str]:
        """Fields set away from their default where the equations above never read them (a
        meaningless combination: ``model=if`` with ``alpha``, ``presubtract`` with a hard reset, ...).
        Each message names the field, its value and why it does not apply."""
        out = []
        defaults = {f.name: f.default for f in dataclasses.fields(self)}

        def unused(field: str, why: str) -> None:
            value = getattr(self, field)
            if value != defaults[field]:
                text = value.value if isinstance(value, enum.Enum) else str(value).lower()
                out.append(f"{field}={text} has no effect: {why}")

        if self.model is not NeuronModel.CUBA:
            unused("alpha", f"only model=cuba has a synaptic current, this is model={self.model.value}")
        if self.model is NeuronModel.IF:
            unused("leak", "an IF neuron has no leak; use model=lif")
        if self.leak is not Leak.TAU:
            unused("tau", f"only leak=tau reads tau, this is leak={self.leak.value}")
        if self.leak is Leak.MULTIPLY:
            unused("decay_input", "only leak=tau and leak=rate read decay_input")
        if self.leak is Leak.TAU:
            unused("beta", "leak=tau reads tau, not beta")
            if "beta" in params:
                out.append("a beta parameter has no effect: leak=tau reads tau, not beta")
        if self.reset is not Reset.HARD:
            unused("v_reset", f"only reset=hard reads v_reset, this is reset={self.reset.value}")
        if self.reset is Reset.NONE:
            unused("reset_delay", "reset=none never resets")
        if self.reset is not Reset.SOFT or self.reset_delay:
            unused("presubtract", "presubtract is the subtraction of a soft reset applied at once "
                                  "(reset=soft, reset_delay=false)")
        if self.emit is Emit.MEMBRANE:
            unused("out_scale", "emit=membrane sends v, not scaled spikes")
        return out


@register_op
@dataclass(frozen=True, kw_only=True)
class SpikeMaxPool2d(Pool2d):
    """Gated max pooling: per window, pass the spikes of the input with the largest
    accumulated spike count so far (ties: first in the window)."""

    name: ClassVar[str] = "spike_maxpool"
    stateful: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        return TensorType(self._out_shape(node, x), x.signal, burst=x.burst, dtype=x.dtype)


@register_op
@dataclass(frozen=True, kw_only=True)
class SpikeCountMaxPool2d(Pool2d):
    """Count max pooling: per window, the output's net spike count so far is the window's largest
    net input count so far.  With C_i[t] = Σ_{τ≤t} x_i[τ] (the net cumulative input of window
    element i: a −1 spike takes one back; padding never wins):

    * y[t] = max_i C_i[t] − max_i C_i[t−1],  max_i C_i[0] = 0
    * so Σ_{τ≤t} y[τ] = max_i C_i[t]: over T steps the output sends exactly the largest count of
      the window (gated ``spike_maxpool`` sends the spikes of whichever input leads at each step,
      more than the largest count when inputs of similar rate take turns leading)

    State: the running sums C_i of every input element (and the previous window maximum).  On 0/1
    (or ±1) spikes each C_i moves by at most one a step, so y is a ±1 spike; on bursts of up to B,
    y is in −B..B: the result has the input's signal kind.  Channelwise: a positive per-channel
    scale of x scales y.  ANN mode: max pooling."""

    name: ClassVar[str] = "spike_count_maxpool"
    stateful: ClassVar[bool] = True

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        return TensorType(self._out_shape(node, x), x.signal, burst=x.burst, dtype=x.dtype)


@register_op
@dataclass(frozen=True, kw_only=True)
class Readout(Op):
    """Accumulates its input over time; prediction at t = argmax of the running mean.
    With an exit rule, a sample stops at the first t whose score exceeds the per-step
    threshold ``exit_thresholds[t−1]`` (parameter) and keeps that prediction."""

    name: ClassVar[str] = "readout"
    stateful: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (ParamSpec("exit_thresholds", optional=True),)
    mode: ReadoutMode = ReadoutMode.MEAN_CURRENT
    exit_rule: ExitRule = ExitRule.NONE

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if self.exit_rule is not ExitRule.NONE and "exit_thresholds" not in params:
            raise fail(self, node, f"exit_rule={self.exit_rule.value} needs an exit_thresholds parameter")
        return TensorType(x.shape)
