"""Per-op evaluation rules of the reference simulator (DESIGN.md §3).

``ANN`` maps an op class to ``f(op, inputs, params) -> tensor`` for one evaluation;
stateless ops use the same rule at every timestep of SNN mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from snnc.ir import Node, Op
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseDecode, PhaseMaxPool2d, PhaseNeuron, phase_levels_midpoint


def channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a per-channel vector [C] (or scalar) to broadcast over [B, C, ...] of rank ndim."""
    t = t.reshape(-1)
    if t.numel() == 1:
        return t.reshape(())
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _conv2d(op: O.Conv2d, xs, p):
    return F.conv2d(xs[0], p["weight"], p.get("bias"), op.stride, op.padding, op.dilation, op.groups)


def _conv1d(op: O.Conv1d, xs, p):
    return F.conv1d(xs[0], p["weight"], p.get("bias"), op.stride, op.padding, op.dilation, op.groups)


def _linear(op, xs, p):
    return F.linear(xs[0], p["weight"], p.get("bias"))


def _avgpool(op: O.AvgPool2d, xs, p):
    return F.avg_pool2d(xs[0], op.kernel, op.stride, op.padding, op.ceil_mode, op.count_include_pad)


def _sumpool(op: O.SumPool2d, xs, p):
    return F.avg_pool2d(xs[0], op.kernel, op.stride, op.padding, op.ceil_mode, True, divisor_override=1)


def _maxpool(op: O.MaxPool2d, xs, p):
    return F.max_pool2d(xs[0], op.kernel, op.stride, op.padding, op.dilation, op.ceil_mode)


def _add(op, xs, p):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _mul(op: O.Mul, xs, p):
    return xs[0] * (1.0 - xs[1]) if op.complement else xs[0] * xs[1]  # SpikingJelly's sew_function, same floats


def add_events(events: list[torch.Tensor]) -> torch.Tensor:
    """The signed event counts of an ``add`` whose operands are all events (SEW-ResNet's ADD of two
    spike trains: 0, 1 or 2 per element): their sum, so that a reader counts a 2 as two accumulates
    per synapse, as it counts a burst of two."""
    out = events[0]
    for e in events[1:]:
        out = out + e
    return out


def _scale(op: O.Scale, xs, p):
    x = xs[0]
    out = x if op.factor == 1.0 else x * op.factor  # x·1.0 is x: one pass less over the values
    if "scale" in p:
        out = out * channel_view(p["scale"], x.dim())
    if "bias" in p:
        out = out + channel_view(p["bias"], x.dim())
    return out


def _batchnorm(op: O.BatchNorm, xs, p):
    x = xs[0]
    return F.batch_norm(x, p["mean"], p["var"], p.get("weight"), p.get("bias"), False, 0.0, op.eps)


def _clip(op: O.Clip, xs, p):
    x = xs[0]
    if op.levels > 0:
        lam = op.hi
        return lam * torch.clamp(torch.floor(x * op.levels / lam + op.shift) / op.levels, 0, 1)
    return torch.clamp(x, op.lo, op.hi)


def _neuron_rate(op: O.Neuron, xs, p):
    """ANN mode of a neuron: the rate it approximates, out_scale · clamp(I / v_th, 0, B) (from −B for negative=signed)."""
    x = xs[0]
    vth = neuron_param(op, p, "v_th", x.dim())
    scale = neuron_param(op, p, "out_scale", x.dim())
    return scale * torch.clamp(x / vth, -op.max_spikes if op.negative is O.Negative.SIGNED else 0, op.max_spikes)


def neuron_param(op: Op, p: dict[str, torch.Tensor], role: str, ndim: int) -> torch.Tensor | float:
    """The effective ``role`` of a (phase) neuron: its attribute × its per-channel parameter, if any."""
    value = getattr(op, role)
    if role in p:
        return value * channel_view(p[role], ndim)
    return value


def _phase_neuron(op: PhaseNeuron, xs, p):
    """ANN mode of a phase neuron: with a = I + b, out_scale·B^(−k) for the least k < K with
    a ≥ θ·B^(−k)·(1 + 1/B)/2, else 0: the comparisons of its emission window, in the same floats."""
    x = xs[0]
    nd = x.dim()
    a = x + channel_view(p["bias"], nd) if "bias" in p else x
    vth = neuron_param(op, p, "v_th", nd)
    mid = phase_levels_midpoint(op.base)
    level = torch.zeros_like(a, dtype=torch.float64)  # B^(−k) exactly, rounded once with the scale
    fired = torch.zeros_like(a, dtype=torch.bool)
    for k in range(op.window):
        hit = ~fired & (a >= vth * op.base ** (-k) * mid)
        level = torch.where(hit, op.base ** (-k), level)
        fired = fired | hit
    return (level * neuron_param(op, p, "out_scale", nd)).to(a.dtype)


def _phase_decode(op: PhaseDecode, xs, p):
    return xs[0] + channel_view(p["bias"], xs[0].dim()) if "bias" in p else xs[0]


# -- re-indexing ops and adaptive pooling (the equations are in the op docstrings) ----------------


def _permute(op: O.Permute, xs, p):
    return xs[0].permute((0,) + tuple(d + 1 for d in op.dims))


def _slice(op: O.Slice, xs, p):
    return xs[0].narrow(op.axis + 1, op.start, op.stop - op.start)[
        (slice(None),) * (op.axis + 1) + (slice(None, None, op.step),)
    ]


def _upsample(op: O.Upsample, xs, p):
    return xs[0].repeat_interleave(op.scale[0], dim=2).repeat_interleave(op.scale[1], dim=3)


def _adaptive_avgpool(op: O.AdaptiveAvgPool2d, xs, p):
    return F.adaptive_avg_pool2d(xs[0], op.output_size)


def adaptive_fanout(op: O.AdaptiveAvgPool2d, h: int, w: int) -> torch.Tensor:
    """How many windows of ``op`` read each input element, [H, W] (its synapses per input)."""
    rows = torch.zeros(h)
    cols = torch.zeros(w)
    for a, b in O.adaptive_windows(h, op.output_size[0]):
        rows[a:b] += 1
    for a, b in O.adaptive_windows(w, op.output_size[1]):
        cols[a:b] += 1
    return rows[:, None] * cols[None, :]


ANN: dict[type, Callable] = {
    O.Identity: lambda op, xs, p: xs[0],
    O.Dropout: lambda op, xs, p: xs[0],
    O.Flatten: lambda op, xs, p: xs[0].reshape(xs[0].shape[0], -1),
    O.Reshape: lambda op, xs, p: xs[0].reshape((xs[0].shape[0],) + tuple(op.shape)),
    O.Concat: lambda op, xs, p: torch.cat(xs, dim=op.axis + 1),
    O.Conv2d: _conv2d,
    O.Conv1d: _conv1d,
    O.Linear: _linear,
    O.AvgPool2d: _avgpool,
    O.SumPool2d: _sumpool,
    O.Add: _add,
    O.Mul: _mul,
    O.Scale: _scale,
    O.BatchNorm: _batchnorm,
    O.Relu: lambda op, xs, p: torch.relu(xs[0]),
    O.Clip: _clip,
    O.MaxPool2d: _maxpool,
    O.Encode: lambda op, xs, p: xs[0],
    O.Neuron: _neuron_rate,
    O.SpikeMaxPool2d: lambda op, xs, p: F.max_pool2d(xs[0], op.kernel, op.stride, op.padding, 1, op.ceil_mode),
    O.SpikeCountMaxPool2d: lambda op, xs, p: F.max_pool2d(xs[0], op.kernel, op.stride, op.padding, 1,
                                                          op.ceil_mode),
    O.Readout: lambda op, xs, p: xs[0],
    PhaseNeuron: _phase_neuron,
    PhaseMaxPool2d: lambda op, xs, p: F.max_pool2d(xs[0], op.kernel, op.stride, op.padding, 1, op.ceil_mode),
    PhaseDecode: _phase_decode,
    O.Permute: _permute,
    O.Slice: _slice,
    O.Upsample: _upsample,
    O.AdaptiveAvgPool2d: _adaptive_avgpool,
}


# -- step rules shared by the time-major and the layer-major runs (simulator.py, layer_major.py) -----


def count_maxpool_step(op: O.SpikeCountMaxPool2d, x: torch.Tensor, st: dict[str, torch.Tensor], key: str
                       ) -> torch.Tensor:
    """One step of ``spike_count_maxpool`` (its equation is in the op's docstring): y[t] = max_i C_i[t] −
    max_i C_i[t−1].  ``st[key]`` keeps the running sums C and ``st[key + "_max"]`` the last window
    maxima; the value (spikes times their scale) and the signed event counts run separately, so that
    the counts stay exact integers whatever the scale.  Not detached: fine-tuning differentiates
    through the running sums."""
    total = st[key] = st[key] + x if key in st else x
    best = F.max_pool2d(total, op.kernel, op.stride, op.padding, 1, op.ceil_mode)
    prev = st.get(key + "_max")
    st[key + "_max"] = best
    return best if prev is None else best - prev


def gather_windows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per pooling window, the element of ``x`` at the flat index ``idx`` (max_pool2d's indices)."""
    return torch.gather(x.flatten(2), 2, idx.flatten(2)).reshape(idx.shape)


def emits_events(node: Node) -> bool:
    """Whether the node's output is counted as events (spikes per sample): neurons and time-coded encoders."""
    if isinstance(node.op, (O.Neuron, PhaseNeuron)):
        return True
    return isinstance(node.op, O.Encode) and node.op.scheme is not O.Scheme.DIRECT
