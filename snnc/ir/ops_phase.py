"""Ops of single-spike phase coding (Hwang & Kung 2024, "One-Spike SNN"), used by ``phase-coding``.

Time is cut into windows of K steps and the layers are pipelined: a phase neuron integrates its
input during one window and sends at most one spike during the next; a spike at offset k of a
window stands for the value B^(−k) (B = base, 1 < B ≤ 2: logarithmic quantisation; B = 2 is
binary phase coding).  The receiving neuron decodes by weighting what it receives at offset k by
B^(−k).  None of these ops is synaptic: the conv / linear between them costs one accumulate per
spike.  Max pooling of phase codes passes the earliest spike of each window (``phase_maxpool``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from snnc.ir.op import Op, ParamSpec, fail, register_op
from snnc.ir.ops import Pool2d
from snnc.ir.types import Signal, TensorType


def _check_window(op: Op, node: str, base: float, window: int, start: int) -> None:
    if not 1.0 < base <= 2.0:
        raise fail(op, node, f"base={base} must be in (1, 2]")
    if window < 1:
        raise fail(op, node, f"window={window} must be >= 1")
    if start < 0:
        raise fail(op, node, f"start={start} must be >= 0")


def _check_channels(op: Op, node: str, params, roles: tuple[str, ...], channels: int) -> None:
    for role in roles:
        if role in params and math.prod(params[role]) not in (1, channels):
            raise fail(op, node, f"{role} has {math.prod(params[role])} values, input has {channels} channels")


def phase_levels_midpoint(base: float) -> float:
    """The threshold shift: level k fires for values ≥ B^(−k)·(1 + 1/B)/2, the midpoint between the
    levels B^(−k) and B^(−k−1), so that a value is rounded to its nearest level, not floored."""
    return (1.0 + 1.0 / base) / 2.0


@register_op
@dataclass(frozen=True, kw_only=True)
class PhaseNeuron(Op):
    r"""Single-spike phase-coded neuron; θ = v_th (× parameter ``v_th`` per channel), K = window.

    * integration window, t ∈ [start, start + K), k = t − start:  x += B^(−k)·I[t]   (x = 0 before);
      with ``constant_input`` (the current is the same at every step: a direct-coded input) the
      neuron samples it once instead: x = I[start];
    * at the end of the window the optional per-channel parameter ``bias`` is added once: x += b
      (the layer's bias: a bias in the synaptic op would arrive at every step of the window);
    * emission window, t ∈ [start + K, start + 2K), k = t − start − K:
      s[t] = 1 if the neuron has not fired yet and x ≥ θ·B^(−k)·(1 + 1/B)/2, else 0
      (the threshold shift: the midpoint between the levels θ·B^(−k) and θ·B^(−k−1));
    * every other step: s[t] = 0.  Output: s·out_scale (× parameter ``out_scale``).
    * ANN mode (what the spike stands for): with a = I + b, out_scale·B^(−k*) for the least k* < K
      with a ≥ θ·B^(−k*)·(1 + 1/B)/2, and 0 if there is none: a ReLU clipped at θ and rounded to
      the nearest of the levels θ·B^(−k).
    """

    name: ClassVar[str] = "phase_neuron"
    stateful: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("v_th", optional=True),
        ParamSpec("out_scale", optional=True),
        ParamSpec("bias", optional=True),
    )
    base: float = 2.0
    window: int = 8
    start: int = 0
    v_th: float = 1.0
    out_scale: float = 1.0
    constant_input: bool = False

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        _check_window(self, node, self.base, self.window, self.start)
        if self.v_th <= 0:
            raise fail(self, node, f"v_th={self.v_th} must be > 0")
        _check_channels(self, node, params, ("v_th", "out_scale", "bias"), x.channels)
        return TensorType(x.shape, Signal.SPIKE)


@register_op
@dataclass(frozen=True, kw_only=True)
class PhaseDecode(Op):
    r"""Decodes the phase-coded currents of the output layer (which has no neuron) for the readout.

    y[t] = total·(B^(−k)·I[t] + [k = 0]·b) for t ∈ [start, start + K), k = t − start, and 0 otherwise,
    so that the readout's running mean after ``total`` steps is Σ_k B^(−k)·I[start + k] + b, the
    decoded value (b: the optional per-channel parameter ``bias``, the output layer's bias).
    ANN mode: y = I + b.
    """

    name: ClassVar[str] = "phase_decode"
    stateful: ClassVar[bool] = True
    params_spec: ClassVar[tuple[ParamSpec, ...]] = (ParamSpec("bias", optional=True),)
    base: float = 2.0
    window: int = 8
    start: int = 0
    total: int = 16

    def infer_type(self, node, inputs, params):
        _check_window(self, node, self.base, self.window, self.start)
        if self.total < self.start + self.window:
            raise fail(self, node, f"total={self.total} ends before the window [{self.start}, "
                                   f"{self.start + self.window})")
        _check_channels(self, node, params, ("bias",), inputs[0].channels)
        return TensorType(inputs[0].shape)


@register_op
@dataclass(frozen=True, kw_only=True)
class PhaseMaxPool2d(Pool2d):
    r"""Max pooling of single-spike phase codes: the earliest spike of a window is the largest value.

    Per pooling window and per phase window of K steps starting at ``start`` + j·K (j = 0, 1, …):
    y[t] = max of x[t] over the pooling window if no output was sent earlier in the same phase
    window, else 0 (so at most one spike per phase window passes, the first).  Inputs are the scaled
    spikes s·σ of one phase neuron (σ per channel).  ANN mode: max pooling.
    """

    name: ClassVar[str] = "phase_maxpool"
    stateful: ClassVar[bool] = True
    window: int = 8
    start: int = 0

    def infer_type(self, node, inputs, params):
        x = inputs[0]
        if self.window < 1 or self.start < 0:
            raise fail(self, node, f"window={self.window} must be >= 1 and start={self.start} >= 0")
        return TensorType(self._out_shape(node, x), x.signal, burst=x.burst, dtype=x.dtype)
