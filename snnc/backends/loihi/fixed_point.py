"""Float SNN parameters -> Loihi integers, with the error each rounding makes.

How one float layer maps to integers
------------------------------------
The float layer (per step t; hard reset to 0; strict threshold, as Loihi)::

    I[t] = W x[t] + b ;   v[t] = beta * v[t-1] + I[t] ;   s[t] = v[t] > theta ;   v[t] = 0 where s[t]

runs on Loihi (lava ``Dense`` + ``PyLifModelBitAcc``, see :mod:`bitacc`) as::

    a[t+1] = (W_q x[t]) << weight_exp                    (one step later: synaptic latency)
    u      = T0(u * (4096 - (du + 1))) + (a << 6)        with du = 4095: u = a << 6, no current memory
    v      = T0(v * (4096 - dv)) + u + (bias_mant << bias_exp)
    s      = v > (vth_mant << 6) ;   v = 0 where s

Let ``scale`` be the float value of one unit of ``a`` (one integer weight step when weight_exp = 0).
Then the integer voltage is ``v_int ~= 64 * v / scale`` and the integers are::

    W_q       = round(W / scale)                   even integers in [-256, 254] for 8 bits (netx form)
    vth_mant  = round(theta / scale)               17 bits;  hardware threshold vth_mant << 6
    bias_mant << bias_exp = round(64 * b / scale)  13-bit signed mantissa, exponent 0..7 (netx fixes 6,
                                                   i.e. bias_mant = round(b / scale))
    dv        = round(4096 * (1 - beta))           12 bits; IF: dv = 0;  du = 4095 (no synaptic current)

so that ``v_int * scale / 64`` follows ``v`` up to: the rounding of each weight (<= scale, the 2-unit
grid), of theta (<= scale / 2), of b (<= scale / 2 per step with bias_exp 6, scale / 128 at
bias_exp 0), the leak's truncation toward zero (<= scale / 64 per step), the saturation of v at
+-(2^23 - 1) (|v| <= 131072 * scale) and the wrap of u at 2^23 (|a| < 2^17 per step).  ``scale`` is a
per-layer float chosen so the largest |w| uses the whole mantissa range; the threshold absorbs it, so it
need not be a power of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from snnc.errors import UserError

from .bitacc import SignMode

DECAY_UNITY = 4096
NETX_BIAS_EXP = 6  # lava-dl netx loads every CUBA layer with bias_exp = 6


@dataclass(frozen=True, kw_only=True)
class QuantError:
    """Error of one quantisation, in the float units of the quantised value."""

    max_abs: float  # largest |x - dequantised(x)|
    rms: float  # root mean square of that difference
    rel: float  # max_abs / max|x| (0 when x is all zero)
    clipped: int  # how many values fell outside the integer range and were saturated

    @staticmethod
    def of(x: np.ndarray, x_hat: np.ndarray, clipped: int = 0) -> QuantError:
        x = np.asarray(x, dtype=np.float64)
        d = np.abs(x - np.asarray(x_hat, dtype=np.float64))
        if d.size == 0:
            return QuantError(max_abs=0.0, rms=0.0, rel=0.0, clipped=clipped)
        peak = float(np.abs(x).max())
        return QuantError(
            max_abs=float(d.max()),
            rms=float(np.sqrt(np.mean(d**2))),
            rel=float(d.max() / peak) if peak else 0.0,
            clipped=clipped,
        )

    def to_json(self) -> dict[str, float | int]:
        return {"max_abs": self.max_abs, "rms": self.rms, "rel": self.rel, "clipped": self.clipped}


@dataclass(frozen=True, eq=False, kw_only=True)
class WeightQuant:
    """Result of :func:`quantize_weights`.

    ``w_int``: integers on a grid of ``2^(9 - num_bits)`` within [-256, 254] (8 bits: even integers, the
    netx form).  ``scale``: float value of one unit of the synaptic input ``a`` (w ~= w_int * scale when
    ``weight_exp`` = 0).  ``weight_exp``: the lava Dense exponent to run ``w_int`` with (0 in netx form).
    ``hw_weight_bits``, ``hw_weight_exp``, ``sign_mode``: what lava-dl netx will program on the chip for
    ``w_int`` (:func:`netx_weight_format`); the mapping charges ``hw_weight_bits`` per synapse.
    """

    w_int: np.ndarray
    scale: float
    weight_exp: int
    hw_weight_bits: int
    hw_weight_exp: int
    sign_mode: SignMode
    error: QuantError
    # per output channel, the weight exponent of its synapse group (None: one exponent, 0, for all):
    # ``w_int[c] = mantissa[c] << channel_exp[c]`` (see quantize_weights' ``channel_exp_max``)
    channel_exp: np.ndarray | None = None
    unit_exp: int = 0  # K': the unit is 2^K' times finer than the layer grid (0 without channel exponents)


def quantize_weights(w: np.ndarray, num_bits: int = 8, weight_exp: int = 0,
                     span: tuple[float, float] | None = None, channel_exp_max: int = 0,
                     channel_exp_top: int | None = None) -> WeightQuant:
    """Quantise a float weight tensor to Loihi's signed ``num_bits`` mantissa in netx form.

    The mantissa ``m`` lies in [-2^(num_bits-1), 2^(num_bits-1) - 1] and ``w_int = m * 2^(9 - num_bits)``;
    the per-layer scale is chosen so that the largest positive or negative weight reaches the end of the
    range.  ``weight_exp`` > 0 makes the threshold grid 2^weight_exp times finer (not expressible in netx).
    ``span``: the (min, max) the scale is set for instead of ``w``'s own (it must contain them): synapse
    groups into one population share one scale, that of all their weights.
    ``channel_exp_max`` = K > 0: floating-point weights per output channel.  Channel c whose largest
    weight is 2^k times below the layer's (k <= K) gets a mantissa grid 2^k times finer, and
    ``w_int[c] = mantissa[c] · step · 2^(K' − k_c)`` with K' the largest k_c used: the chip runs it as
    one synapse group per exponent ``K' − k_c`` (Loihi's per-group ``weight_exp``), all in one unit
    ``scale`` 2^K' times finer than the layer grid.  Each channel then keeps ``num_bits`` bits of its
    own range, where one layer grid leaves a channel of small weights a few steps.  ``channel_exp_top``
    fixes K' (>= what the channels use, <= K): the synapse groups of one population pass the same value so
    that they share the population's unit.
    Keeps ``w``; returns a :class:`WeightQuant`.
    """
    if not 1 <= num_bits <= 8:
        raise UserError(f"weights need 1..8 mantissa bits, got {num_bits}")
    w = np.asarray(w, dtype=np.float64)
    step = 1 << (9 - num_bits)  # grid of w_int
    m_pos, m_neg = (1 << (num_bits - 1)) - 1, 1 << (num_bits - 1)
    w_max = float(w.max(initial=0.0))
    w_min = float(w.min(initial=0.0))
    if span is not None:
        w_min, w_max = min(w_min, span[0], 0.0), max(w_max, span[1], 0.0)
    # one mantissa step in float units; m_pos may be 0 for num_bits = 1 (sign only)
    candidates = [-w_min / m_neg] + ([w_max / m_pos] if m_pos else [])
    m_step = max(candidates)
    if m_pos == 0 and w_max > 0:
        raise UserError("1-bit weights can only be negative or zero")
    if m_step == 0.0:
        m_step = 1.0  # all-zero weights: any scale is exact
    if channel_exp_max > 0 and m_pos > 0 and w.ndim >= 1 and w.size:
        return _channel_exponents(w, m_step, m_pos, m_neg, step, channel_exp_max, channel_exp_top, weight_exp)
    mant = np.clip(np.rint(w / m_step), -m_neg, m_pos).astype(np.int64)
    w_int = mant * step
    return _weight_quant(w, w_int, w_int, m_step / step, weight_exp)


def _weight_quant(w: np.ndarray, w_int: np.ndarray, mantissas: np.ndarray, scale_w: float, weight_exp: int,
                  **channel: Any) -> WeightQuant:
    """The :class:`WeightQuant` of integer weights ``w_int`` (float value ``w_int · scale_w``) whose
    netx format (bits, exponent, sign mode) is that of ``mantissas``."""
    bits, hw_exp, mode = netx_weight_format(mantissas)
    return WeightQuant(
        w_int=w_int,
        scale=scale_w / (1 << weight_exp) if weight_exp >= 0 else scale_w * (1 << -weight_exp),
        weight_exp=int(weight_exp),
        hw_weight_bits=bits,
        hw_weight_exp=hw_exp,
        sign_mode=mode,
        error=QuantError.of(w, w_int * scale_w),
        **channel,
    )


def _channel_exponents(w: np.ndarray, m_step: float, m_pos: int, m_neg: int, step: int, k_max: int,
                       k_top: int | None, weight_exp: int) -> WeightQuant:
    """:func:`quantize_weights` with a mantissa grid per output channel (``channel_exp_max`` > 0)."""
    rows = w.reshape(w.shape[0], -1)
    pos = np.maximum(rows.max(axis=1), 0.0)
    neg = np.maximum(-rows.min(axis=1), 0.0)
    # k_c: how many times finer than the layer grid channel c's grid can be with its weights in range
    # (a tolerance of 1e-9 so that the channel that set the layer grid keeps k = 0 despite rounding)
    k = np.zeros(len(rows), dtype=np.int64)
    for j in range(1, k_max + 1):
        fits = (pos * 2.0**j <= m_pos * m_step * (1 + 1e-9)) & (neg * 2.0**j <= m_neg * m_step * (1 + 1e-9))
        k[fits] = j
    k_used = int(k.max(initial=0)) if k_top is None else int(k_top)
    if not 0 <= k_used <= k_max:
        raise UserError(f"channel_exp_top={k_top} must be in [0, channel_exp_max={k_max}]")
    k = np.minimum(k, k_used)
    fine = (2.0 ** k).reshape(-1, *([1] * (w.ndim - 1)))
    mant = np.clip(np.rint(w * fine / m_step), -m_neg, m_pos).astype(np.int64)
    exps = k_used - k
    w_int = mant * step * (1 << exps).reshape(fine.shape)
    return _weight_quant(w, w_int, mant * step, m_step / (step * 2.0**k_used), weight_exp,
                         channel_exp=exps, unit_exp=k_used)


def netx_weight_format(w_int: np.ndarray) -> tuple[int, int, SignMode]:
    """``(num_weight_bits, weight_exp, sign_mode)`` that lava-dl netx (``utils.optimize_weight_bits``)
    derives from a netx weight matrix: it rescales the integers by 2^-weight_exp and keeps only the bits
    the matrix needs.  Dense layers only; netx passes conv weights unchanged."""
    w = np.asarray(w_int, dtype=np.int64)
    if w.size == 0 or not w.any():
        return 0, 0, SignMode.EXCITATORY
    w = np.clip(w, -256, 254)
    w_max, w_min = int(w.max()), int(w.min())
    if w_max < 0:
        mode, signed, scale = SignMode.INHIBITORY, 0, -256 / w_min
    elif w_min >= 0:
        mode, signed, scale = SignMode.EXCITATORY, 0, 255 / w_max
    else:
        pos = 127 / w_max if w_max > 0 else np.inf
        mode, signed, scale = SignMode.MIXED, 1, min(pos, -128 / w_min)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    # the trailing zero bits all weights share: those of their bitwise OR (one pass, not one per n)
    low = int(np.bitwise_or.reduce(w, axis=None))
    n = 8
    while n > 0 and low % (1 << n):
        n -= 1
    n -= signed
    return int(8 - scale_bits - n), int(-scale_bits), mode


def quantize_threshold(v_th: float, scale: float, mant_bits: int = 17) -> tuple[int, QuantError]:
    """``vth_mant = round(v_th / scale)`` in [1, 2^mant_bits - 1]; the hardware compares v with
    ``vth_mant << 6``.  A positive threshold below half a weight step (a layer whose largest weight is
    over 500 thresholds) becomes 1, the smallest positive one, not 0 (a neuron firing at v > 0).  Returns
    the mantissa and its error in float units (clipped counts saturation at either end)."""
    if scale <= 0:
        raise UserError(f"threshold scale must be positive, got {scale}")
    top = (1 << mant_bits) - 1
    raw = float(np.rint(v_th / scale))
    mant = int(np.clip(raw, 1 if v_th > 0 else 0, top))
    return mant, QuantError.of(np.array([v_th]), np.array([mant * scale]), int(raw != mant))


def quantize_decay(
    x: float | np.ndarray, offset: int = 0, bits: int = 12
) -> tuple[np.ndarray | int, QuantError]:
    """Fraction ``x`` lost per step (1 - beta) -> the 12-bit decay field.

    The hardware keeps ``(4096 - (d + offset)) / 4096`` per step: ``offset`` = 0 for dv, 1 for lava's du
    (so du = 4095 forgets everything, as ``iDecay = 4096`` in netx).  Returns ``d`` (int for a scalar
    input) and the error on the kept fraction.
    """
    xs = np.asarray(x, dtype=np.float64)
    top = (1 << bits) - 1
    raw = np.rint(xs * DECAY_UNITY) - offset
    d = np.clip(raw, 0, top).astype(np.int64)
    err = QuantError.of(xs, (d + offset) / DECAY_UNITY, int(np.count_nonzero(raw != d)))
    return (int(d) if d.ndim == 0 else d), err


def quantize_bias(
    b: float | np.ndarray,
    scale: float,
    bias_exp: int | None = NETX_BIAS_EXP,
    mant_bits: int = 13,
    exp_max: int = 7,
) -> tuple[np.ndarray, int, QuantError]:
    """Per-step bias ``b`` (float) -> ``(bias_mant, bias_exp)`` with ``bias_mant << bias_exp ~= 64 b / scale``.

    ``bias_exp`` = 6 (default) is lava-dl netx's convention (the file stores ``bias_mant`` and netx adds
    ``<< 6``); ``None`` picks the smallest exponent whose mantissa fits (finest, as nengo-loihi does) for
    flows that do not go through netx.  Mantissas are saturated to 13 bits signed (counted in ``clipped``).
    """
    if scale <= 0:
        raise UserError(f"bias scale must be positive, got {scale}")
    bs = np.asarray(b, dtype=np.float64)
    target = 64.0 * bs / scale
    top = (1 << (mant_bits - 1)) - 1
    if bias_exp is None:
        peak = float(np.abs(target).max(initial=0.0))
        bias_exp = 0
        while bias_exp < exp_max and np.rint(peak / (1 << bias_exp)) > top:
            bias_exp += 1
    if not 0 <= bias_exp <= exp_max:
        raise UserError(f"bias exponent must be in [0, {exp_max}], got {bias_exp}")
    raw = np.rint(target / (1 << bias_exp))
    mant = np.clip(raw, -top - 1, top).astype(np.int64)
    err = QuantError.of(bs, mant * (1 << bias_exp) * scale / 64.0, int(np.count_nonzero(raw != mant)))
    return mant, int(bias_exp), err
