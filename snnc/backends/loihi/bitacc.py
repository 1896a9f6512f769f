"""Bit-accurate simulator of lava's Loihi CUBA LIF neuron with Dense and Conv synapses.

It computes, batched and vectorised, exactly what lava's ``PyLifModelBitAcc`` (tag
``bit_accurate_loihi``), ``PyDenseModelBitAcc`` and ``PyConvModelBinaryFixed`` compute (lava-nc/lava
``src/lava/proc/lif/models.py``, ``proc/dense/models.py``, ``proc/conv/models.py`` and ``conv/utils.py``).
All arithmetic is done in int64 with the wraps lava's int32 / 24-bit types imply made explicit.

One timestep of a LIF population, with ``T0(x) = sign(x) * (|x| >> 12)`` (truncation toward zero)::

    u <- T0(u * (4096 - (du + 1))) + (a_in << 6)       then one 24-bit wrap: u > 2^23 -> u - 2^24,
                                                         u <= -2^23 -> u + 2^24
    v <- clip(T0(v * (4096 - dv)) + u + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)
    s  = v > (vth_mant << 6)                           strict: v == vth << 6 does not fire
    v[s] <- 0                                          hard reset to 0

Synapses, as lava's bit-accurate models, send at step t what they accumulated at step t-1, so every
Dense/Conv/Pool layer adds **one timestep of latency**: a spike entering synaptic layer k at step t
reaches the neurons of layer k at step t+1.  Dense: weights are first clipped to the 8-bit range of their
sign mode and LSB-truncated to ``num_weight_bits`` (lava ``clip_weights`` / ``truncate_weights``); the
accumulated input is then shifted by ``weight_exp`` (left if > 0, else an arithmetic right shift, i.e.
floor) and travels as int32.  Conv: exact correlation (PyTorch orientation, CHW) wrapped to 24 bits (lava
``signed_clamp``), then shifted by its ``weight_exp`` as Dense does and wrapped again (a non-zero one
comes only from per-channel exponents).  lava's Conv *process* takes a ``weight_exp``, but its Python
models (``proc/conv/models.py``, lava 0.x) do not apply it: in lava's CPU simulation such a group needs
its weights shifted ahead (``mantissa << e``); on the chip the exponent belongs to the synapse format.  Lava's own conv uses float32 arithmetic, which is exact while every partial sum stays
below 2^24 in magnitude, i.e. for any realistic spiking layer.

Two shortcuts give the same integers where a bound shows that no wrap can act: an integrate-and-fire
population (``du = 4095``, ``dv = 0``) whose input stays below 2^17 steps in int32 (``_if_steps``), and a
conv group with its per-channel exponent classes runs as one float32 conv (``conv_runs.ConvRun``).

Not modelled (lava's bit-accurate model does not model them either): refractory periods, axonal delays.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from snnc.errors import UserError

from . import conv_runs

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
VTH_SHIFT = 6
ACT_SHIFT = 6
UV_BITS = 24
UV_MAX = 1 << (UV_BITS - 1)  # 2^23
CONV_ACC_BITS = 24
DU_MIN, DU_MAX = -1, 4095  # du = -1 is what netx makes of iDecay = 0 (no current decay)
DV_MAX = 4095
VTH_MANT_MAX = (1 << 17) - 1
BIAS_MANT_MIN, BIAS_MANT_MAX = -(1 << 12), (1 << 12) - 1
BIAS_EXP_MAX = 7
DELAY_BITS = 6  # Loihi 2 synaptic delays (lava-dl netx clamps delays to 62)
MAX_DELAY = 62
# float64 holds every integer below 2^53 exactly; the matmul paths below use BLAS while sums stay there.
_EXACT_FLOAT_BOUND = 1 << 52
_EXACT_FLOAT32_BOUND = 1 << 24


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 ``x`` into ``bits`` bits (lava ``signed_clamp``; int32 overflow)."""
    half = np.int64(1) << (bits - 1)
    # the mask is the modulo by 2^bits for two's-complement int64, without an integer division (the
    # division was a third of the bit-accurate simulation's time on mobilenet_v2)
    return ((x + half) & ((np.int64(1) << bits) - 1)) - half


def trunc_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """``sign(x) * (|x| >> shift)``: division by 2^shift truncating toward zero (Loihi's decay)."""
    return np.sign(x) * (np.abs(x) >> shift)


class SignMode(enum.Enum):
    """Sign mode of a Dense weight matrix (lava ``weightutils.SignMode``)."""

    MIXED = 1
    EXCITATORY = 2
    INHIBITORY = 3


def sign_mode_of(weight: np.ndarray) -> SignMode:
    """lava ``determine_sign_mode``: all >= 0 excitatory, all <= 0 inhibitory, otherwise mixed."""
    if weight.size == 0 or weight.min() >= 0:
        return SignMode.EXCITATORY
    if weight.max() <= 0:
        return SignMode.INHIBITORY
    return SignMode.MIXED


def prepare_dense_weights(weight: np.ndarray, num_weight_bits: int = 8) -> np.ndarray:
    """The weights lava's bit-accurate Dense really uses: clipped to 8 bits for their sign mode
    ([-256, 255] mixed, [0, 255] excitatory, [-255, 0] inhibitory), then the
    ``8 - num_weight_bits + is_mixed`` least significant bits dropped (floor, as lava's ``>>``)."""
    w = np.asarray(weight, dtype=np.int64)
    mode = sign_mode_of(w)
    if mode is SignMode.INHIBITORY:
        w = -w
    mixed = int(mode is SignMode.MIXED)
    w = np.clip(w, -256 * mixed, 255)
    drop = 8 - num_weight_bits + mixed
    if drop > 0:
        w = (w >> drop) << drop
    return -w if mode is SignMode.INHIBITORY else w


@dataclass(eq=False, kw_only=True)
class LifParams:
    """Integer parameters of one CUBA LIF population, in lava's ``LIF`` process convention.

    ``du``: the current keeps ``4096 - (du + 1)`` / 4096 of itself per step (4095: no memory, u = input).
    ``dv``: the voltage keeps ``4096 - dv`` / 4096 of itself per step (0: integrate-and-fire).
    ``vth_mant``: fires when ``v > vth_mant << 6``.  ``bias_mant << bias_exp`` is added to v every step;
    ``bias_mant`` is a scalar or an array of the population's rank broadcastable to its shape (CHW; per
    channel: (C, 1, 1)).
    """

    du: int
    dv: int
    vth_mant: int
    bias_mant: np.ndarray | int = 0
    bias_exp: int = 0

    def verify(self, where: str) -> None:
        """Raise UserError naming ``where`` when a value is outside the hardware's field."""
        if not DU_MIN <= int(self.du) <= DU_MAX:
            raise UserError(f"{where}: du = {self.du} is outside [{DU_MIN}, {DU_MAX}]")
        if not 0 <= int(self.dv) <= DV_MAX:
            raise UserError(f"{where}: dv = {self.dv} is outside [0, {DV_MAX}]")
        if not 0 <= int(self.vth_mant) <= VTH_MANT_MAX:
            raise UserError(f"{where}: vth_mant = {self.vth_mant} is outside [0, {VTH_MANT_MAX}] (17 bits)")
        b = np.asarray(self.bias_mant)
        if b.size and (b.min() < BIAS_MANT_MIN or b.max() > BIAS_MANT_MAX):
            raise UserError(
                f"{where}: bias_mant spans [{b.min()}, {b.max()}], outside [{BIAS_MANT_MIN}, {BIAS_MANT_MAX}]"
            )
        if not 0 <= int(self.bias_exp) <= BIAS_EXP_MAX:
            raise UserError(f"{where}: bias_exp = {self.bias_exp} is outside [0, {BIAS_EXP_MAX}]")

    def effective_bias(self) -> np.ndarray:
        """``bias_mant << bias_exp`` as int64 (what is added to v every step)."""
        return np.left_shift(np.asarray(self.bias_mant, dtype=np.int64), int(self.bias_exp))


def lif_step(
    u: np.ndarray, v: np.ndarray, a_in: np.ndarray, params: LifParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One timestep of lava ``PyLifModelBitAcc``; returns new ``(u, v, s)``, inputs are left unchanged.

    ``u``, ``v``, ``a_in`` are int64 arrays of one shape (``a_in`` is what the synapse sent this step);
    ``s`` is a bool array.
    """
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    # lava: int64 product, truncation toward zero, back to int32
    decayed_u = wrap_signed(trunc_shift(u * (DECAY_UNITY - (int(params.du) + 1)), DECAY_SHIFT), 32)
    # a_in arrives as int32 and is shifted within int32
    act = wrap_signed(wrap_signed(np.asarray(a_in, dtype=np.int64), 32) << ACT_SHIFT, 32)
    u_new = wrap_signed(decayed_u + act, 32)
    # one 24-bit wrap, with lava's asymmetric bounds: 2^23 itself stays, -2^23 becomes +2^23
    u_new = np.where(
        u_new > UV_MAX, u_new - 2 * UV_MAX, np.where(u_new <= -UV_MAX, u_new + 2 * UV_MAX, u_new)
    )
    decayed_v = wrap_signed(trunc_shift(v * (DECAY_UNITY - int(params.dv)), DECAY_SHIFT), 32)
    v_new = wrap_signed(decayed_v + u_new + params.effective_bias(), 32)
    v_new = np.clip(v_new, -(UV_MAX - 1), UV_MAX - 1)
    s = v_new > (int(params.vth_mant) << VTH_SHIFT)
    v_new = np.where(s, 0, v_new)
    return u_new, v_new, s


def _matmul_exact(x: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """``x @ w_t`` for int64 operands, exactly: BLAS in float64 when every sum fits 2^52, else int64."""
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w_t).max(initial=0)) * max(w_t.shape[0], 1)
    if bound < _EXACT_FLOAT32_BOUND:  # every partial sum exact in float32, whatever the summation order
        return (x.astype(np.float32) @ w_t.astype(np.float32)).astype(np.int64)
    if bound < _EXACT_FLOAT_BOUND:
        return (x.astype(np.float64) @ w_t.astype(np.float64)).astype(np.int64)
    return x @ w_t


def dense_step(s_in: np.ndarray, weight: np.ndarray, weight_exp: int = 0) -> np.ndarray:
    """Synaptic input of a bit-accurate Dense for a batch of spike vectors.

    ``s_in``: [B, N_in] integers (binary spikes or graded payloads); ``weight``: [N_out, N_in], already
    prepared with :func:`prepare_dense_weights`.  Returns [B, N_out] int64 = ``(W s) << weight_exp``
    (arithmetic right shift for a negative exponent), wrapped to int32 as lava's output port.
    """
    acc = _matmul_exact(np.asarray(s_in, dtype=np.int64), np.asarray(weight, dtype=np.int64).T)
    acc = acc << weight_exp if weight_exp > 0 else acc >> (-weight_exp)
    return wrap_signed(acc, 32)


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(x, (int, np.integer)):
        return int(x), int(x)
    a, b = x
    return int(a), int(b)


def conv_output_hw(
    in_hw: tuple[int, int], kernel: tuple[int, int], stride, padding, dilation
) -> tuple[int, int]:
    """Output height and width of a 2-D convolution (PyTorch / lava ``output_shape`` formula)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (in_hw[0] + 2 * ph - dh * (kernel[0] - 1) - 1) // sh + 1
    wo = (in_hw[1] + 2 * pw - dw * (kernel[1] - 1) - 1) // sw + 1
    return ho, wo


def conv_step(
    s_in: np.ndarray,
    weight: np.ndarray,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> np.ndarray:
    """Synaptic input of a bit-accurate Conv: exact integer cross-correlation, wrapped to 24 bits.

    ``s_in``: [B, C_in, H, W]; ``weight``: [C_out, C_in / groups, kH, kW] in PyTorch orientation (no
    kernel flip; netx's flip + transpose for lava's WHC Conv cancels out).  Returns [B, C_out, Ho, Wo].
    """
    x = np.asarray(s_in, dtype=np.int64)
    w = np.asarray(weight, dtype=np.int64)
    b, c_in, h, wd = x.shape
    c_out, c_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0)) * c_g * kh * kw
    if bound < _EXACT_FLOAT_BOUND:
        # every partial sum is an integer below the float type's exact range: any summation order gives the
        # exact integer result, so torch's convolution (float32 below 2^24, float64 below 2^52) is exact
        import torch
        import torch.nn.functional as F

        dtype = torch.float32 if bound < _EXACT_FLOAT32_BOUND else torch.float64
        out = F.conv2d(torch.as_tensor(x, dtype=dtype), torch.as_tensor(w, dtype=dtype), None, (sh, sw), (ph, pw),
                       (dh, dw), groups).numpy().astype(np.int64)
        return wrap_signed(out, CONV_ACC_BITS)
    ho, wo = conv_output_hw((h, wd), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]  # [B, C, Ho, Wo, kh, kw]
    o_g = c_out // groups
    cols = win.reshape(b, groups, c_g, ho, wo, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(b, groups, ho * wo, c_g * kh * kw)
    wg = w.reshape(groups, o_g, c_g * kh * kw)
    out = np.matmul(cols, wg.transpose(0, 2, 1))  # int64: the sums exceed float64's exact range
    out = out.transpose(0, 1, 3, 2).reshape(b, c_out, ho, wo)  # [B, G, HoWo, Og] -> [B, C_out, Ho, Wo]
    return wrap_signed(out, CONV_ACC_BITS)


def pool_weight_tensor(channels: int, kernel: tuple[int, int], weight: int) -> np.ndarray:
    """Sum pooling with one integer weight as a depthwise conv kernel [C, 1, kH, kW] (how it is run and
    how netx receives it, since netx has no pool layer)."""
    return np.full((channels, 1, kernel[0], kernel[1]), int(weight), dtype=np.int64)


class LayerKind(enum.Enum):
    """What a :class:`QLayer` does."""

    INPUT = "input"  # spikes from the host; no neurons
    DENSE = "dense"  # Dense synapse + LIF
    CONV = "conv"  # Conv synapse + LIF
    POOL = "pool"  # sum-pool synapse (one integer weight) + LIF
    FLATTEN = "flatten"  # CHW -> N, PyTorch order; no neurons, no latency
    ADD = "add"  # element-wise sum of its inputs' spikes (SEW-style residual); graded, no latency
    CONCAT = "concat"  # concatenation of its inputs along channels; no latency


SYNAPTIC_KINDS = (LayerKind.DENSE, LayerKind.CONV, LayerKind.POOL)


@dataclass(eq=False, kw_only=True)
class QLayer:
    """One layer of a quantised network, independent of the snnc IR.

    ``shape`` is the output shape without batch: (C, H, W) or (N,).  ``inputs`` lists the indices of the
    layers it reads; empty means the previous layer (ADD and CONCAT take several, and so does a neuron layer
    with ``extra`` synapse groups).
    ``extra``: further synapse groups into the same neurons (a residual join: the population's dendritic
    accumulator sums every group's input each step); each is a DENSE or CONV ``QLayer`` without neurons,
    of this layer's name and shape, reading ``inputs[1 + k]`` (``inputs`` is then explicit).
    ``delay``: steps a synapse (group) holds its input beyond the usual one, so that branches of different
    synaptic depth reach a population in the same step (at most :data:`MAX_DELAY`).
    Dense: ``weight`` [N_out, N_in] integers (netx form: even, in [-256, 254]), ``weight_exp``,
    ``num_weight_bits``.  Conv: ``weight`` [C_out, C_in / groups, kH, kW].  Pool: ``weight`` one integer,
    ``kernel``.  Conv and pool use ``stride``, ``padding``, ``dilation`` (pairs, H first) and ``groups``.
    ``message_bits`` (input only): 0 = binary spikes (any non-zero value is a spike, as lava's
    ``astype(bool)``), > 0 = graded integer payloads.
    """

    name: str
    kind: LayerKind
    shape: tuple[int, ...]
    weight: np.ndarray | int | None = None
    weight_exp: int = 0
    num_weight_bits: int = 8
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    lif: LifParams | None = None
    inputs: tuple[int, ...] = ()
    message_bits: int = 0
    source: str = field(default="")  # where it came from in the user's model (for messages)
    extra: tuple[QLayer, ...] = ()
    delay: int = 0  # synaptic delay in steps beyond the one every synapse adds (lava DelayDense / Loihi 2)
    # a synapse group that carries some output channels of the group before it (same source, same
    # geometry) with its own weight_exp: per-channel weight exponents (loihi-quantize{channel-exponents})
    exp_class: bool = False

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))

    @property
    def has_neurons(self) -> bool:
        return self.kind in SYNAPTIC_KINDS

    @property
    def lif_params(self) -> LifParams:
        """The LIF parameters of a neuron layer (UserError when missing)."""
        if self.lif is None:
            raise UserError(f"layer '{self.name}' ({self.kind.value}) has no LIF parameters")
        return self.lif

    @property
    def weight_array(self) -> np.ndarray:
        """``weight`` as an int64 array (UserError when missing)."""
        if self.weight is None:
            raise UserError(f"layer '{self.name}' ({self.kind.value}) has no weight")
        return np.asarray(self.weight, dtype=np.int64)


def _sources(layers: Sequence[QLayer], i: int) -> tuple[int, ...]:
    layer = layers[i]
    return layer.inputs if layer.inputs else ((i - 1,) if i > 0 else ())


def verify_layers(layers: Sequence[QLayer]) -> None:
    """Check shapes, weights and parameters of a layer list; raise UserError naming the first bad layer."""
    if not layers or layers[0].kind is not LayerKind.INPUT:
        raise UserError("a Loihi network starts with an input layer")
    for i, layer in enumerate(layers):
        where = f"layer {i} '{layer.name}' ({layer.kind.value})"
        srcs = _sources(layers, i)
        if layer.kind is LayerKind.INPUT:
            if i != 0:
                raise UserError(f"{where}: only the first layer may be an input")
            continue
        if any(s < 0 or s >= i for s in srcs):
            raise UserError(f"{where}: inputs {srcs} must name earlier layers")
        in_shapes = [layers[s].shape for s in srcs]
        wanted = 1 + len(layer.extra)
        if layer.kind not in (LayerKind.ADD, LayerKind.CONCAT) and len(srcs) != wanted:
            raise UserError(f"{where}: takes exactly {wanted} input(s), got {len(srcs)}")
        if layer.extra and not layer.has_neurons:
            raise UserError(f"{where}: only a neuron layer takes extra synapse groups")
        for group in (layer, *layer.extra):
            if not 0 <= group.delay <= MAX_DELAY or (group.delay and not layer.has_neurons):
                raise UserError(f"{where}: delay {group.delay} must be in [0, {MAX_DELAY}] on a synapse")
        for k, group in enumerate(layer.extra):
            if group.kind not in (LayerKind.DENSE, LayerKind.CONV) or group.lif is not None or group.extra:
                raise UserError(f"{where}: synapse group {k + 1} must be a dense or conv synapse without neurons")
            got = _expected_shape(group, [in_shapes[1 + k]], f"{where} synapse group {k + 1}")
            if tuple(got) != tuple(layer.shape):
                raise UserError(f"{where}: synapse group {k + 1} makes {got}, not the layer's {tuple(layer.shape)}")
        expect = _expected_shape(layer, in_shapes, where)
        if tuple(expect) != tuple(layer.shape):
            raise UserError(
                f"{where}: shape {tuple(layer.shape)} does not match its inputs, expected {expect}"
            )
        if layer.has_neurons:
            if layer.lif is None:
                raise UserError(f"{where}: has no LIF parameters")
            layer.lif.verify(where)
            b = np.asarray(layer.lif.bias_mant)
            # same rank required: a per-channel (C,) bias would silently broadcast along W
            ok = b.ndim == 0 or (
                b.ndim == len(layer.shape)
                and all(d in (1, n) for d, n in zip(b.shape, layer.shape, strict=True))
            )
            if not ok:
                raise UserError(
                    f"{where}: bias_mant of shape {b.shape} does not broadcast to {layer.shape} "
                    "(give a scalar or an array of the same rank, e.g. (C, 1, 1) per channel)"
                )


def _expected_shape(layer: QLayer, in_shapes: list[tuple[int, ...]], where: str) -> tuple[int, ...]:
    kind = layer.kind
    if kind is LayerKind.FLATTEN:
        return (int(np.prod(in_shapes[0])),)
    if kind is LayerKind.ADD:
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise UserError(f"{where}: inputs have different shapes {in_shapes}")
        return tuple(in_shapes[0])
    if kind is LayerKind.CONCAT:
        if any(tuple(s[1:]) != tuple(in_shapes[0][1:]) for s in in_shapes):
            raise UserError(f"{where}: inputs differ beyond the channel axis: {in_shapes}")
        return (sum(s[0] for s in in_shapes), *in_shapes[0][1:])
    if kind is LayerKind.DENSE:
        w = np.asarray(layer.weight)
        n_in = int(np.prod(in_shapes[0]))
        if w.ndim != 2 or w.shape[1] != n_in:
            raise UserError(f"{where}: weight {w.shape} does not read {n_in} inputs")
        return (w.shape[0],)
    if len(in_shapes[0]) != 3:
        raise UserError(f"{where}: needs a (C, H, W) input, got {in_shapes[0]}")
    c_in, h, w_ = in_shapes[0]
    if kind is LayerKind.CONV:
        w = np.asarray(layer.weight)
        if (
            w.ndim != 4
            or c_in % layer.groups
            or w.shape[0] % layer.groups
            or w.shape[1] * layer.groups != c_in
        ):
            raise UserError(
                f"{where}: weight {w.shape} with groups={layer.groups} does not read {c_in} channels"
            )
        ho, wo = conv_output_hw((h, w_), w.shape[2:], layer.stride, layer.padding, layer.dilation)
        return (w.shape[0], ho, wo)
    # POOL
    if layer.weight is None or np.ndim(layer.weight) != 0:
        raise UserError(f"{where}: a pool weight is one integer")
    ho, wo = conv_output_hw((h, w_), layer.kernel, layer.stride, layer.padding, layer.dilation)
    return (c_in, ho, wo)


def _synapse(layer: QLayer, x: np.ndarray, dense_w: np.ndarray | None, conv_w: tuple | None = None) -> np.ndarray:
    """Synaptic input computed from this step's input ``x`` ([B, *in_shape]); [B, *layer.shape].
    ``conv_w``: a conv's weight as a float32 torch tensor and its largest |w|, made once per run."""
    b = x.shape[0]
    if layer.kind is LayerKind.DENSE:
        return dense_step(
            x.reshape(b, -1), dense_w if dense_w is not None else layer.weight_array, layer.weight_exp
        )
    if layer.kind is LayerKind.CONV:
        if conv_w is not None:
            w32, w_max = conv_w
            k = w32.shape[1] * w32.shape[2] * w32.shape[3]
            if float(np.abs(x).max(initial=0)) * w_max * k < _EXACT_FLOAT32_BOUND:  # exact: see conv_step
                import torch
                import torch.nn.functional as F

                out = F.conv2d(torch.as_tensor(x, dtype=torch.float32), w32, None, layer.stride, layer.padding,
                               layer.dilation, layer.groups)
                e = layer.weight_exp
                peak = float(out.abs().max()) if out.numel() else 0.0
                if peak * 2.0 ** max(e, 0) < UV_MAX:
                    # |acc| and |acc << e| below 2^23: both 24-bit wraps leave them alone, and the shift
                    # is exact in float32 (an integer below 2^24 times a power of two; floor for e < 0)
                    if e > 0:
                        out = out * float(1 << e)
                    elif e < 0:
                        out = torch.floor(out * 2.0**e)
                    return out.to(torch.int32).numpy()
                return _shift(wrap_signed(out.numpy().astype(np.int64), CONV_ACC_BITS), e)
        acc = conv_step(x, layer.weight_array, layer.stride, layer.padding, layer.dilation, layer.groups)
        return _shift(acc, layer.weight_exp)
    w = pool_weight_tensor(x.shape[1], layer.kernel, int(layer.weight_array))
    return conv_step(x, w, layer.stride, layer.padding, layer.dilation, groups=x.shape[1])


def _shift(acc: np.ndarray, weight_exp: int) -> np.ndarray:
    """A conv's accumulated input shifted by its ``weight_exp`` as lava's Dense does, wrapped to 24 bits."""
    if weight_exp == 0:
        return acc
    acc = acc << weight_exp if weight_exp > 0 else acc >> (-weight_exp)
    return wrap_signed(acc, CONV_ACC_BITS)


def simulate(layers: Sequence[QLayer], spikes_in: np.ndarray, T: int | None = None) -> dict[str, np.ndarray]:
    """Run the network for ``T`` steps on ``spikes_in`` [B, T_in, *input_shape] (zeros after T_in).

    Returns ``{layer name: output [B, T, *shape]}`` for every layer: bool spikes for neuron layers and
    binary inputs, int64 for graded values (graded input, ADD).  State starts at 0.
    """
    return simulate_with_state(layers, spikes_in, T)[0]


def simulate_with_state(
    layers: Sequence[QLayer],
    spikes_in: np.ndarray,
    T: int | None = None,
    resets: Sequence[int | None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`simulate`, plus lava's ``LIFReset``: layer i's ``u`` and ``v`` are zeroed at the start of
    step ``resets[i]`` (before that step's update, as ``PyLifResetModelBitAcc`` does).

    Returns ``(outputs, voltages)``: the outputs as :func:`simulate` gives them, and every neuron
    layer's voltage after the last step.
    """
    verify_layers(layers)
    x_in = np.asarray(spikes_in)
    if x_in.ndim < 2 or tuple(x_in.shape[2:]) != tuple(layers[0].shape):
        raise UserError(
            f"input spikes have shape {x_in.shape}; expected [batch, time, {', '.join(map(str, layers[0].shape))}]"
        )
    batch, t_in = x_in.shape[:2]
    steps = t_in if T is None else int(T)
    if layers[0].message_bits == 0:
        x_in = x_in != 0
    dense_w = {
        id(group): prepare_dense_weights(np.asarray(group.weight), group.num_weight_bits)
        for layer in layers
        for group in (layer, *layer.extra)
        if group.kind is LayerKind.DENSE
    }
    conv_w = _ConvWeights()
    out = {
        layer.name: np.zeros((batch, steps, *layer.shape), dtype=_out_dtype(layer, layers))
        for layer in layers
    }
    voltages: dict[str, np.ndarray] = {}
    # Layer by layer, all steps of a layer before the next (the network is feed-forward: a layer reads
    # only earlier ones, and a synapse group's output at step t reaches its neurons at t + 1 + delay), so
    # each synapse group runs as one conv / matmul over a block of steps instead of one per step; the
    # integers are those of the step-by-step order, which sums nothing across steps.
    for i, layer in enumerate(layers):
        srcs = _sources(layers, i)
        o = out[layer.name]
        if layer.kind is LayerKind.INPUT:
            o[:, : min(t_in, steps)] = x_in[:, :steps]
        elif layer.kind is LayerKind.FLATTEN:
            o[...] = out[layers[srcs[0]].name].reshape(batch, steps, -1)
        elif layer.kind is LayerKind.ADD:
            o[...] = np.sum([out[layers[s].name].astype(np.int64) for s in srcs], axis=0)
        elif layer.kind is LayerKind.CONCAT:
            o[...] = np.concatenate([out[layers[s].name] for s in srcs], axis=2)
        else:
            voltages[layer.name] = _neuron_layer(
                layer, [out[layers[s].name] for s in srcs], srcs, o, None if resets is None else resets[i],
                dense_w, conv_w,
            )
    return out, voltages


class _ConvWeights:
    """A conv group's weight as a float32 torch tensor and its largest |w|, made when first asked for
    (most conv groups run in a :class:`conv_runs.ConvRun` and never need it)."""

    def __init__(self) -> None:
        self._made: dict[int, tuple] = {}

    def of(self, group: QLayer) -> tuple | None:
        if group.kind is not LayerKind.CONV:
            return None
        if id(group) not in self._made:
            import torch

            w = group.weight_array
            self._made[id(group)] = (torch.as_tensor(w, dtype=torch.float32), float(np.abs(w).max(initial=0)))
        return self._made[id(group)]


# elements of one block of synaptic input (int64): a layer's steps run in blocks of at most this size
_BLOCK_ELEMENTS = 1 << 22


def _neuron_layer(layer: QLayer, inputs: list[np.ndarray], sources: Sequence[int], out: np.ndarray,
                  reset: int | None, dense_w: dict, conv_w: _ConvWeights) -> np.ndarray:
    """Every step of one neuron layer: its synapse groups' currents in blocks of steps, then lava's LIF
    step by step (LIFReset zeroes ``u`` and ``v`` at the start of step ``reset``).  ``inputs``: each
    group's source output [B, steps, *in_shape] (``sources``: the source layers' indices); the spikes go
    into ``out`` [B, steps, *shape]; returns the voltage after the last step."""
    batch, steps = out.shape[:2]
    per_step = batch * int(np.prod(layer.shape))
    block = max(1, _BLOCK_ELEMENTS // max(per_step, 1))
    params = layer.lif_params
    fast = _is_if(params)
    groups = (layer, *layer.extra)
    # a conv group and the exponent classes after it run as one conv (conv_runs.py); others one by one
    is_conv = [g.kind is LayerKind.CONV for g in groups]
    runs = {r.first: r for r in conv_runs.conv_runs(groups, sources, is_conv, UV_MAX)}
    spans = [(k, runs[k].count if k in runs else 1) for k in range(len(groups))
             if not any(r.first < k < r.first + r.count for r in runs.values())]
    u = v = np.zeros((batch, *layer.shape), dtype=np.int32 if fast else np.int64)
    for t0 in range(0, steps, block):
        t1 = min(t0 + block, steps)
        # what lava's a_in port sums at steps t0..t1-1: group k's synaptic output of step t - 1 - delay
        parts: list[tuple[slice | np.ndarray, np.ndarray, bool]] = []  # (a_in steps, input, from a ConvRun)
        for k, n in spans:
            lag = 1 + groups[k].delay
            s0, s1 = max(t0 - lag, 0), max(t1 - lag, 0)
            if s1 <= s0:
                continue
            x = inputs[k][:, s0:s1]
            live = np.flatnonzero(x.reshape(batch, s1 - s0, -1).any(axis=(0, 2)))  # a silent step sends 0
            if live.size == 0:
                continue
            xs = np.ascontiguousarray(x[:, live].swapaxes(0, 1)).reshape(live.size * batch, *x.shape[2:])
            at = live + (s0 + lag - t0)
            rows = slice(int(at[0]), int(at[-1]) + 1) if at[-1] - at[0] + 1 == at.size else at
            fused = runs[k].apply(xs) if k in runs else None
            if fused is not None:
                parts.append((rows, fused.reshape(live.size, batch, *layer.shape), True))
                continue
            for g in groups[k : k + n]:
                syn = _synapse(g, xs, dense_w.get(id(g)), conv_w.of(g))
                parts.append((rows, syn.reshape(live.size, batch, *layer.shape), False))
        # conv runs send less than 2^23 each (ConvRun.apply), so fewer than 256 of them sum within int32
        narrow = all(bounded for _, _, bounded in parts) and len(parts) < 256
        a_in = np.zeros((t1 - t0, batch, *layer.shape), dtype=np.int32 if narrow else np.int64)
        for rows, part, _ in parts:
            a_in[rows] += part
        if fast and (a_in.size == 0 or max(-int(a_in.min()), int(a_in.max())) < IF_INPUT_LIMIT):
            v = _if_steps(v.astype(np.int32, copy=False), a_in, params, out, t0, reset)
            continue
        v = v.astype(np.int64, copy=False)
        for t in range(t0, t1):
            if reset == t:
                u = v = np.zeros_like(v)
            u, v, out[:, t] = lif_step(u, v, a_in[t - t0], params)
    return v.astype(np.int64, copy=False)


# |a_in| below this: a_in << 6 stays below 2^23, so neither the int32 nor the 24-bit wrap of u acts
IF_INPUT_LIMIT = 1 << (UV_BITS - 1 - ACT_SHIFT)


def _is_if(params: LifParams) -> bool:
    """lava's LIF with ``du = 4095`` and ``dv = 0``: u is this step's input alone (``u * 0``) and v does
    not decay (``T0(v * 4096) = v``), the integrate-and-fire neuron ``loihi-legalize`` makes."""
    return int(params.du) == DU_MAX and int(params.dv) == 0


def _if_steps(v: np.ndarray, a_in: np.ndarray, params: LifParams, out: np.ndarray, t0: int,
              reset: int | None) -> np.ndarray:
    """:func:`lif_step` for an integrate-and-fire population (:func:`_is_if`) over the steps of ``a_in``
    [steps, B, *shape], every |a_in| below IF_INPUT_LIMIT: then ``u = a_in << 6`` without a wrap, and
    ``v + u + bias`` stays below 2^25, so lava's step is ``v = clip(v + (a_in << 6) + bias)``, fire,
    reset, in int32 (the same integers in a third of the memory traffic; ``v`` [B, *shape] int32 is
    updated in place and returned)."""
    drive = a_in.astype(np.int32, copy=False)  # a_in is not read again: shifted in place when int32
    drive <<= ACT_SHIFT
    drive += params.effective_bias().astype(np.int32)
    threshold = int(params.vth_mant) << VTH_SHIFT
    for j in range(len(drive)):
        if reset == t0 + j:
            v[...] = 0
        v += drive[j]
        np.clip(v, -(UV_MAX - 1), UV_MAX - 1, out=v)
        s = v > threshold
        np.putmask(v, s, 0)
        out[:, t0 + j] = s
    return v


def _out_dtype(layer: QLayer, layers: Sequence[QLayer]) -> np.dtype:
    if layer.kind is LayerKind.INPUT:
        return np.dtype(bool) if layer.message_bits == 0 else np.dtype(np.int64)
    if layer.kind is LayerKind.ADD:
        return np.dtype(np.int64)
    if layer.kind in (LayerKind.FLATTEN, LayerKind.CONCAT):
        srcs = _sources(layers, layers.index(layer))
        return np.result_type(*[_out_dtype(layers[s], layers) for s in srcs])
    return np.dtype(bool)
