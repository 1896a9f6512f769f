"""Event-driven layer kernels as generated TVMScript (TIR), one prim_func per :class:`LayerKernel`.

A layer kernel computes, for each sample b of a batch,

    acc[b] = bias + Σ_operands scale · (linear map of the operand)      (accumulation)

and then one epilogue:

* ``CURRENT``: ``acc`` is the output (an analog current), optionally added into a readout sum;
* ``NEURON``:  the neuron update of DESIGN.md §3 on ``I = acc``, which emits the next layer's
  spike list (``cnt_out``/``idx_out``, plus ``val_out`` counts for burst neurons); it runs
  vectorised over channels and leaves the spike counts in ``acc``, then one branch-free scalar
  pass per sample compacts them into the list;
* ``COMPACT``: the non-zero entries of ``acc`` become a graded event list (pooling, add), or,
  for gated max pooling, the forwarded events (graded only when its input is).

The work of the accumulation is proportional to the input events: a linear layer adds the
weight row of each active input (gather), a convolution adds each spike's kernel footprint
into a channels-last output (scatter, tap ranges clipped to the output, one input position at
a time: :meth:`_Emitter.accumulate_conv`), pooling and add scatter
the event values.  Gated max pooling (``spike_maxpool``) keeps each input's accumulated spike
count as layer state (``count``): per step it adds the events to the counts, then, for each
window an event falls in, forwards the event when its input is the window's winner (the most
spikes so far, ties to the first in the window): a window's winner can only change to an input
that just spiked, so the work stays proportional to the events.  On 0/1 spikes (CPU, windows of
5 or more inputs) it also keeps each window's winner (``win``), so an event is compared with one
input per window instead of with the whole window (:meth:`_Emitter.take_window`).  A sample in
which many inputs spiked runs gated max pooling as a gather over a dense copy of its input
instead, vectorised over channels (:meth:`_Emitter.maxpool_dense`), as it runs a depthwise conv
(:meth:`_Emitter.accumulate_depthwise`).

Event lists (see ``format.md``):

* ``ROWS`` (between layers): ``cnt[B]`` and ``idx[B, cap]``; sample b's active neuron indices
  are ``idx[b, :cnt[b]]`` (a CSR whose row b starts at ``b·cap``, so that a producer can write
  every sample's list in parallel without a prefix sum);
* ``CSR``: ``ptr[B + 1]``, ``idx[nnz]``; sample b's list is ``idx[ptr[b]:ptr[b + 1]]``;
* ``CSC`` (weight-stationary linear only): ``ptr[n_in + 1]``, ``bidx[nnz]``; the samples in which
  input i is active are ``bidx[ptr[i]:ptr[i + 1]]``.

A graded list (burst counts, pooled sums) has values ``val`` parallel to ``idx``.  Neuron
indices are flat in the producer's layout: ``j`` for a vector, ``(y·W + x)·C + c`` for a
channels-last feature map.

Code generation rules learnt the hard way (research/tvm-event-kernels.md §4): index expressions
inside ``T.vectorized`` are always written inline (TVM 0.27 miscompiles a let-bound ramp); sums are
written out explicitly, never as ``s = s + x`` in a loop (that is an SSA rebind in TVMScript);
a select whose operands load from buffers is ``T.Select``, not ``T.if_then_else`` (whose loads
are guarded: LLVM then loads lane by lane behind branches); the source is parsed with ``tvm.script.parser.parse`` (``@T.prim_func`` needs a source file).
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import cast

from snnc.errors import UnsupportedError
from snnc.ir.ops import Reset  # the IR's enum (torch-free): soft, hard, none

LANES = 16  # fp32 lanes of one AVX-512 register; int8 rows widen to int32 lanes
# Output channels a conv event adds in one vector statement (kernels.accumulate_conv): 64 fp32
# lanes are 8 AVX2 (4 AVX-512) registers, which hold the block's sums over a position's events,
# and 256 contiguous bytes of each event's weight row (narrower blocks read the rows of a wide
# layer in 64-byte pieces 9 KB apart: measured slower on resnet18's 256-channel convs).
CONV_BLOCK = 64
# a depthwise conv runs as a dense gather (vectorised over channels) for a sample in which at
# least 1 / DEPTHWISE_DENSE of its inputs spiked, else as the scatter by position (one scalar per
# event and tap).  Measured (one thread, batch 32, mobilenet_v2's depthwise shapes, 32-960
# channels): the scatter 1.0-1.4x faster at 5 % density, the gather 1.0-1.5x faster at 10 % and
# 1.0-3.0x at 25 %
DEPTHWISE_DENSE = 14
# Gated max pooling keeps each window's winner (``LayerKernel.keeps_winners``) for windows of at
# least WINNER_WINDOW inputs: an event is then compared with one input per window, not with all,
# behind a branch that mispredicts.  Measured (one thread, 16x16x64, stride 2): 3x3 windows
# (padding 1) 2.0x faster at 5 % density, 1.5x at 12 %, 1.24x at 30 % (batch 1; 1.6x at batch
# 32, 12 %); 2x2 windows equal at 10 %, 0.77x at 25 %
WINNER_WINDOW = 5
# gated max pooling runs as a gather over a dense copy of its input, vectorised over channels
# (:meth:`_Emitter.maxpool_dense`), for a sample in which at least 1 / MAXPOOL_DENSE of its
# inputs spiked, else as the scatter by position.  Measured (one thread, batch 1, 16 steps of
# random spikes; scatter time / gather time): 16x16x64, 2x2 windows 1.12x at 2 %, 1.80x at 5 %,
# 2.38x at 20 %; 3x3 windows (stride 2, padding 1) 1.10x, 1.76x, 3.53x; 8x8x256, 2x2 windows
# 0.85x at 2 %, 0.94x at 5 %, 1.01x at 8 %, 1.31x at 20 % (few positions, long runs: the
# scatter's per-position work is amortised)
MAXPOOL_DENSE = 14
# The tiled linear kernel (``LayerKernel.tiled``, :meth:`_Emitter.emit_tiled`): output columns in
# tiles of LINEAR_TILE (8 AVX2 registers hold a sample's sums over a chunk's events), input rows
# in chunks of TILE_ROWS (the tile's weights of one chunk, 8-32 KB in fp32, sit in L1, fetched ahead
# by software prefetch while the previous chunk is summed).  Measured (one thread, n = 2048 and
# 4096, batch 32, 2-20 %): 64 x 32 and 64 x 64 equal within noise; 32 or 128 columns and 128-512
# rows slower; weights read strided from [n_in, n_out] instead of pre-tiled 1.5-2x slower.  That
# was the AMD host (AVX2, 32 KB L1).  On the Intel host (AVX-512, 48 KB L1; sixth session) chunks of
# 128 rows (32 KB of a tile's weights) are faster across samples: 2048x2048 at 19 % 1.3-1.4x, at
# 2 % 1.25x, 1024x1024 1.3x, 1280x1000 at 44 % 1.07x (batch 32; 256 rows slower again), but
# 0.9x over a block of 16 steps (``LayerKernel.steps``), which keeps TILE_ROWS_STEPS
LINEAR_TILE = 64
TILE_ROWS = 128
TILE_ROWS_STEPS = 32
PREFETCH_CHUNKS = 1  # chunks the tiled kernel prefetches ahead (2 and 4 measured no faster)
# vectors of sums that a conv's pass over an interior position's events keeps in registers
# (:meth:`_Emitter.conv_interior`; AVX-512 has 32, the rest hold the weights being added)
CONV_REGISTERS = 24
MAX_INTERIOR_CLASSES = 4  # residue classes (stride products) that get specialised interior loops
# an int8 conv of 0/1 events with at most this many input channels sums a position's events in
# int16 (:attr:`_Emitter.narrow_sums`): 256 weights of -128 reach -2^15, still an int16
CONV_INT16_CHANNELS = 256
NARROW_MIN_RUN = 4  # entries a position needs for its int16 pass (:meth:`_Emitter.conv_pass`)
# the largest |bias| + sum of |W| per output channel of an int8 conv whose step sums stay in
# int16 (``LayerSpec.int16_sums``, :attr:`LayerKernel.sums16`; :func:`largest_step_sum`)
INT16_SUM_BOUND = (1 << 15) - 1


class Precision(enum.Enum):
    """Arithmetic of a layer: fp32 weights and state, or int8 weights with int32 state."""

    FLOAT32 = "float32"
    INT8 = "int8"

    @property
    def weight_dtype(self) -> str:
        return "float32" if self is Precision.FLOAT32 else "int8"

    @property
    def acc_dtype(self) -> str:
        return "float32" if self is Precision.FLOAT32 else "int32"


class Layout(enum.Enum):
    """Layout of an input event list (see the module docstring)."""

    ROWS = "rows"
    CSR = "csr"
    CSC = "csc"


class Op(enum.Enum):
    LINEAR = "linear"
    CONV2D = "conv2d"
    POOL2D = "pool2d"
    MAXPOOL2D = "spike_maxpool"  # gated by accumulated spike counts (state: ``count``)
    ADD = "add"
    REMAP = "remap"  # re-indexing (permute, slice, concat, reshape) and per-element scale


class Epilogue(enum.Enum):
    CURRENT = "current"
    NEURON = "neuron"
    COMPACT = "compact"


class Device(enum.Enum):
    CPU = "llvm"
    CUDA = "cuda"


@dataclass(frozen=True, kw_only=True)
class Events:
    """An event-list operand.  ``cap`` is the number of neurons of the producer (row capacity);
    ``scale`` multiplies its contribution (avg-pool divisor, a producer's output scale)."""

    cap: int
    layout: Layout = Layout.ROWS
    graded: bool = False
    val_dtype: str = "float32"
    scale: float = 1.0


@dataclass(frozen=True)
class Current:
    """A dense operand ``cur[B, N]`` in the layer's accumulation dtype (an analog current);
    ``cap`` is N when it differs from the layer's output size (remap operands), else 0."""

    scale: float = 1.0
    cap: int = 0


Operand = Events | Current


@dataclass(frozen=True, kw_only=True)
class Conv2dGeometry:
    """``groups`` > 1: input channel ci belongs to group ci // (Cin/groups) and reaches only that
    group's Cout/groups output channels (depthwise: groups = Cin)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True, kw_only=True)
class Pool2dGeometry:
    """``average``: each window's sum is divided by PyTorch's divisor of that window (needed when
    the divisor varies: ceil_mode windows that overhang the padded input, count_include_pad=False);
    without it a constant 1/(KH·KW) travels as the operand scale."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    average: bool = False
    count_include_pad: bool = True


@dataclass(frozen=True, kw_only=True)
class NeuronSpec:
    """The structural part of a neuron update; numbers (v_th, beta, v_reset) are kernel arguments.

    fp32:  v = beta·v + I                     (leak=False: v = v + I)
    int8:  v = sign(v)·((|v|·decay) >> 12) + I (decay = round(beta·4096); rounds toward zero)
    s = 1[v ≥ v_th] (strict: 1[v > v_th]); burst (max_spikes B > 1): s = clamp(floor(v/v_th), 0, B)
    (strict: clamp(ceil(v/v_th) − 1, 0, B)); reset SOFT: v −= s·v_th, HARD: v = v_reset where s > 0.
    """

    reset: Reset = Reset.SOFT
    strict: bool = False
    max_spikes: int = 1
    leak: bool = False


@dataclass(frozen=True, kw_only=True)
class LayerKernel:
    """One layer kernel: accumulation of ``operands`` by ``op`` into ``acc``, then ``epilogue``.

    Shapes exclude the batch: ``(n,)`` for vectors, ``(H, W, C)`` channels-last for maps.
    ``batch=None`` makes the batch size symbolic (one kernel for every batch size, parallel over
    samples).  ``batch=1`` runs serially, except that a large linear/conv layer is parallelised
    over output-channel slices: ``slices`` forces their number (1: serial), ``None`` chooses
    (:meth:`slice_plan`).  The weight-stationary CSC layout is always split into slices.

    ``steps`` (a tiled linear kernel of symbolic batch, CPU): the kernel runs the steps
    0 .. B - 1 of a block of *one* sample (layer-major order, ``steps.py``).  The per-step
    buffers (the input list ``cnt``/``idx``/``val``, ``acc``, the output list) have one row per
    step, padded to 64 bytes (:func:`padded_row`; ``cnt`` and ``cnt_out`` are ``[B, 16]``, read
    at column 0); the state (``v``, ``stats``, ``rsum``) is the sample's one row, updated by
    step 0, then step 1, and so on.  The synaptic currents of all the block's steps are summed
    first, each weight row read once for the block (the point: a layer whose weights exceed the
    cache reads them once per block instead of once per step); the neuron updates then run step
    by step.  Each step's current is the sum of its own events only, so the results are those of
    B calls of the batch-1 kernel (up to the order of the float sums).
    """

    op: Op
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    operands: tuple[Operand, ...]
    precision: Precision = Precision.FLOAT32
    batch: int | None = None
    geometry: Conv2dGeometry | Pool2dGeometry | None = None
    bias: bool = False
    epilogue: Epilogue = Epilogue.CURRENT
    neuron: NeuronSpec | None = None
    readout: bool = False
    device: Device = Device.CPU
    slices: int | None = None
    multiplier: bool = False  # remap: every operand i has a per-element multiplier ``mul{i}``
    tiled: bool = False  # linear: weights pre-tiled, read once per call (:meth:`_Emitter.emit_tiled`)
    # tiled linear: the batch axis is a block of one sample's steps (below); out of the repr, so
    # that the names of every other kernel stay those of artifacts written before it existed
    steps: bool = field(default=False, repr=False)
    # int8 conv: the whole step's sums in int16 (:attr:`_Emitter.sums16`); the layer's weights
    # bound them below 2^15 (``LayerSpec.int16_sums``).  Out of the repr, as ``steps``
    sums16: bool = field(default=False, repr=False)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check(self)
        if not self.name:
            # the winner-keeping max pooling takes one more argument than the kernel of an
            # earlier artifact with the same fields: another name, so that such an artifact is
            # refused ("recompile it") instead of called with the wrong arguments
            key = repr(self) + (" win" if self.keeps_winners else "") + (" steps" if self.steps else "")
            key += " sums16" if self.sums16 else ""
            digest = hashlib.sha1(key.encode()).hexdigest()[:12]
            object.__setattr__(self, "name", f"snnc_{self.op.value}_{digest}")

    # typed views of the optional parts (present by construction: ``_check`` ran) ----
    @property
    def conv(self) -> Conv2dGeometry:
        return cast(Conv2dGeometry, self.geometry)

    @property
    def pool(self) -> Pool2dGeometry:
        return cast(Pool2dGeometry, self.geometry)

    @property
    def nrn(self) -> NeuronSpec:
        return cast(NeuronSpec, self.neuron)

    def events(self, i: int = 0) -> Events:
        return cast(Events, self.operands[i])

    # derived sizes -----------------------------------------------------------------
    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def channels(self) -> int:
        return self.out_shape[-1]

    @property
    def pixels(self) -> int:
        return self.n_out // self.channels

    @property
    def out_graded(self) -> bool:
        """Whether the output event list carries values (burst counts, compacted sums)."""
        if self.op is Op.MAXPOOL2D:  # forwards the winners' events as they are
            return self.events(0).graded
        if self.op is Op.REMAP and self.epilogue is Epilogue.COMPACT:  # moved spikes stay spikes
            return self.multiplier or any(isinstance(o, Events) and o.graded for o in self.operands)
        if self.epilogue is Epilogue.COMPACT:
            return True
        return self.epilogue is Epilogue.NEURON and self.neuron is not None and self.neuron.max_spikes > 1

    @property
    def keeps_winners(self) -> bool:
        """Gated max pooling that keeps each window's winner as state (``win[b, window]``: the
        winner's flat input index + 1, 0 while no input of the window has spiked): CPU, 0/1
        spikes, windows of at least WINNER_WINDOW inputs.  Graded inputs, small windows and CUDA
        compare each event with its whole window instead."""
        if self.op is not Op.MAXPOOL2D or self.device is not Device.CPU or self.events(0).graded:
            return False
        return math.prod(self.pool.kernel) >= WINNER_WINDOW

    @property
    def depthwise(self) -> bool:
        """A depthwise event conv (groups = input = output channels, CPU): a sample with many
        events runs it as a gather over a dense copy of its input, vectorised over channels
        (:meth:`_Emitter.accumulate_depthwise`); its weight is stored ``[KH, KW, C]``
        (:meth:`kernel_weight`) so that a tap's weights are one contiguous vector."""
        if self.op is not Op.CONV2D or self.device is not Device.CPU or not isinstance(self.operands[0], Events):
            return False
        return self.conv.groups == self.in_shape[2] == self.out_shape[2]

    @property
    def can_sum16(self) -> bool:
        """Whether this kernel could keep its step's sums in int16 (:attr:`sums16`, where the
        layer's weights bound them: ``LayerSpec.int16_sums``): a CPU int8 conv2d of 0/1 events,
        ungrouped, on a map larger than 1x1 (those are linear layers), that ends in a neuron
        (which widens the sums)."""
        operand = self.operands[0]
        return (
            self.op is Op.CONV2D and self.precision is Precision.INT8 and self.device is Device.CPU
            and isinstance(operand, Events) and not operand.graded and self.conv.groups == 1
            and self.in_shape[0] * self.in_shape[1] > 1 and self.epilogue is Epilogue.NEURON
        )  # fmt: skip

    @property
    def own_weight_layout(self) -> bool:
        """Whether the kernel reads its weight in a layout or dtype other than the stored one."""
        return self.tiled or self.depthwise or self.sums16

    def kernel_weight(self, weight):
        """The weight array (numpy) in the layout the kernel reads: as stored (a linear layer's
        [n_in, n_out], a conv's [C_in, KH, KW, C_out/groups]), :func:`tiled_weight`'s for a tiled
        linear kernel, or [KH, KW, C] for a depthwise one (a view: the caller makes it contiguous);
        a :attr:`sums16` kernel's int8 weights widened to int16 (added without a widening each)."""
        if self.tiled:
            return tiled_weight(weight)
        if self.sums16:
            return weight.astype("int16")
        if not self.depthwise:
            return weight
        kh, kw = self.conv.kernel
        return weight.reshape(self.channels, kh * kw).T.reshape(kh, kw, self.channels)

    @property
    def work(self) -> int:
        """Multiply-accumulates of the dense layer per sample (sizes the parallelism)."""
        if self.op is Op.LINEAR:
            return self.in_shape[0] * self.n_out
        if self.op is Op.CONV2D:
            kh, kw = self.conv.kernel
            return self.n_out * self.in_shape[2] // self.conv.groups * kh * kw
        return self.n_out

    def slice_plan(self) -> tuple[int, int]:
        """(number of output-channel slices run in parallel, channels per slice); (1, C) means
        no channel parallelism.  Automatic at batch 1: slices of at least MIN_SLICE channels
        when the layer has at least PARALLEL_WORK multiply-accumulates (below that, a parallel
        launch, ~5 µs, costs more than it saves)."""
        csc = isinstance(self.operands[0], Events) and self.operands[0].layout is Layout.CSC
        grouped = self.op is Op.CONV2D and self.conv.groups > 1  # a group's channels are one slice
        sliceable = self.device is Device.CPU and (
            csc or (self.batch == 1 and self.op in (Op.LINEAR, Op.CONV2D) and not grouped)
        )
        if not sliceable:
            return 1, self.channels
        if self.slices is not None:
            return self.slices, self.channels // self.slices
        if not csc and (self.work < PARALLEL_WORK or (os.cpu_count() or 1) < SLICE_CORES):
            return 1, self.channels
        return channel_slices(self.channels, MIN_SLICE)

    def arg_names(self) -> list[str]:
        """The kernel's positional arguments, in order (see ``format.md`` for their shapes)."""
        names: list[str] = []
        for i, operand in enumerate(self.operands):
            if isinstance(operand, Current):
                names.append(f"cur{i}")
                continue
            if operand.layout is Layout.ROWS:
                names += [f"cnt{i}", f"idx{i}"]
            else:
                names += [f"ptr{i}", f"idx{i}"]
            if operand.graded:
                names.append(f"val{i}")
        if self.op is Op.REMAP:
            names += [f"map{i}" for i in range(len(self.operands))]
            if self.multiplier:
                names += [f"mul{i}" for i in range(len(self.operands))]
        if self.op in (Op.LINEAR, Op.CONV2D):
            names.append("weight")
        if self.bias:
            names.append("bias")
        if self.op is Op.MAXPOOL2D:
            names.append("count")
            if self.keeps_winners:
                names.append("win")
        names.append("acc")
        if self.epilogue is Epilogue.NEURON:
            names += ["v", "vth"]
            if self.nrn.leak:
                names.append("beta")
            if self.nrn.reset is Reset.HARD:
                names.append("vreset")
        if self.epilogue in (Epilogue.NEURON, Epilogue.COMPACT):
            names += ["cnt_out", "idx_out"]
            if self.out_graded:
                names.append("val_out")
        if self.epilogue is Epilogue.NEURON:
            names.append("stats")
        if self.readout:
            names.append("rsum")
        return names

    def arg_shapes(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Buffer argument name -> (shape expressions, dtype) as the kernel declares them
        (``B`` is the symbolic batch); scalars (``vreset``) are absent."""
        emitter = _CudaEmitter(self) if self.device is Device.CUDA else _Emitter(self)
        return emitter.buffer_shapes()

    def source(self) -> str:
        """The TVMScript source of the kernel (a ``@T.prim_func`` without imports)."""
        emitter = _CudaEmitter(self) if self.device is Device.CUDA else _Emitter(self)
        return emitter.emit()

    def prim_func(self):
        """Parse :meth:`source` into a ``tvm.tirx.PrimFunc`` (imports TVM)."""
        from tvm.script import parser
        from tvm.script import tirx as T

        return parser.parse(self.source(), extra_vars={"T": T})


# ---------------------------------------------------------------------------------------
# convenience constructors


def linear_kernel(
    n_in: int,
    n_out: int,
    *,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    layout: Layout = Layout.ROWS,
    graded: bool = False,
    val_dtype: str | None = None,
    scale: float = 1.0,
    bias: bool = False,
    epilogue: Epilogue = Epilogue.CURRENT,
    neuron: NeuronSpec | None = None,
    readout: bool = False,
    device: Device = Device.CPU,
    slices: int | None = None,
    tiled: bool = False,
    steps: bool = False,
) -> LayerKernel:
    """Event linear layer: ``acc[b] = bias + scale · Σ_k val_k · W[idx_k, :]`` with W stored [n_in, n_out]
    (``tiled``: stored as :func:`tiled_weight` makes it, and read once per call; ``steps``: over
    a block of one sample's steps, see :class:`LayerKernel`)."""
    events = Events(
        cap=n_in, layout=layout, graded=graded, val_dtype=val_dtype or precision.acc_dtype, scale=scale
    )
    return LayerKernel(
        op=Op.LINEAR,
        in_shape=(n_in,),
        out_shape=(n_out,),
        operands=(events,),
        precision=precision,
        batch=batch,
        bias=bias,
        epilogue=epilogue,
        neuron=neuron,
        readout=readout,
        device=device,
        slices=slices,
        tiled=tiled,
        steps=steps,
    )


def largest_step_sum(weight, bias=None) -> float:
    """The largest magnitude one step of 0/1 input events can give an output of a weighted layer
    (numpy arrays, PyTorch layouts: output channels first): per output channel |bias| plus the
    sum of |W| over its inputs (a conv's taps too).  ``LayerSpec.int16_sums`` holds where it is
    at most INT16_SUM_BOUND."""
    per_channel = abs(weight.astype("float64")).reshape(weight.shape[0], -1).sum(axis=1)
    if bias is not None:
        per_channel = per_channel + abs(bias.astype("float64")).reshape(-1)
    return float(per_channel.max(initial=0.0))


def tiled_weight(weight):
    """A linear layer's weight ``[n_in, n_out]`` (a numpy array) in the tiled kernel's layout
    ``[ceil(n_out / LINEAR_TILE), n_in, LINEAR_TILE]``: tile t holds columns t·LINEAR_TILE
    onwards, each input row's piece contiguous; the last tile's missing columns are zeros
    (never read: the kernel's tail tile is narrower)."""
    import numpy as np

    n_in, n_out = weight.shape
    tiles = -(-n_out // LINEAR_TILE)
    padded = np.zeros((n_in, tiles * LINEAR_TILE), dtype=weight.dtype)
    padded[:, :n_out] = weight
    return np.ascontiguousarray(padded.reshape(n_in, tiles, LINEAR_TILE).transpose(1, 0, 2))


def padded_row(size: int, dtype: str) -> int:
    """A row of ``size`` elements of ``dtype`` padded to a multiple of 64 bytes, in elements: the
    row of a per-step buffer of a block of steps (kernels assume 64-byte aligned buffers, and a
    vector load of a row at another offset faults)."""
    item = {"int8": 1, "int32": 4, "float32": 4}[dtype]
    return -(-size * item // 64) * 64 // item


def conv2d_kernel(
    in_shape: tuple[int, int, int],
    out_channels: int,
    geometry: Conv2dGeometry,
    *,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    graded: bool = False,
    val_dtype: str | None = None,
    scale: float = 1.0,
    bias: bool = False,
    epilogue: Epilogue = Epilogue.CURRENT,
    neuron: NeuronSpec | None = None,
    readout: bool = False,
    device: Device = Device.CPU,
    slices: int | None = None,
    current: bool = False,
    sums16: bool = False,
) -> LayerKernel:
    """Event conv2d (scatter) on a channels-last ``(H, W, C_in)`` input; weights ``[C_in, KH, KW, C_out]``.

    ``current``: the input is a dense current ``cur0[B, H·W·C_in]`` (a linear bottleneck's
    output) instead of an event list; the same scatter then walks every input position and adds
    each input's value times its weights (a dense product inside the generated code, CPU only).
    ``sums16``: an int8 layer whose step sums fit int16 (:attr:`_Emitter.sums16`)."""
    h, w, _ = in_shape
    oh = conv_out_size(h, geometry.kernel[0], geometry.stride[0], geometry.padding[0], geometry.dilation[0])
    ow = conv_out_size(w, geometry.kernel[1], geometry.stride[1], geometry.padding[1], geometry.dilation[1])
    events: Operand = Events(
        cap=math.prod(in_shape), graded=graded, val_dtype=val_dtype or precision.acc_dtype, scale=scale
    )
    if current:
        events = Current(cap=math.prod(in_shape))
    return LayerKernel(
        op=Op.CONV2D,
        in_shape=tuple(in_shape),
        out_shape=(oh, ow, out_channels),
        operands=(events,),
        precision=precision,
        batch=batch,
        geometry=geometry,
        bias=bias,
        epilogue=epilogue,
        neuron=neuron,
        readout=readout,
        device=device,
        slices=slices,
        sums16=sums16,
    )


def pool2d_kernel(
    in_shape: tuple[int, int, int],
    out_hw: tuple[int, int],
    geometry: Pool2dGeometry,
    *,
    scale: float = 1.0,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    graded: bool = False,
    val_dtype: str | None = None,
    epilogue: Epilogue = Epilogue.COMPACT,
    neuron: NeuronSpec | None = None,
    device: Device = Device.CPU,
) -> LayerKernel:
    """Sum pooling of events (``scale = 1/(KH·KW)`` makes it average pooling, padding counted)."""
    events = Events(
        cap=math.prod(in_shape), graded=graded, val_dtype=val_dtype or precision.acc_dtype, scale=scale
    )
    return LayerKernel(
        op=Op.POOL2D,
        in_shape=tuple(in_shape),
        out_shape=(out_hw[0], out_hw[1], in_shape[2]),
        operands=(events,),
        precision=precision,
        batch=batch,
        geometry=geometry,
        epilogue=epilogue,
        neuron=neuron,
        device=device,
    )


def spike_maxpool2d_kernel(
    in_shape: tuple[int, int, int],
    out_hw: tuple[int, int],
    geometry: Pool2dGeometry,
    *,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    graded: bool = False,
    val_dtype: str | None = None,
    device: Device = Device.CPU,
) -> LayerKernel:
    """Gated max pooling of events (DESIGN.md §3): ``count[b] += events``; each window forwards
    this step's event of its winner, the input with the largest ``count`` (ties: first in the
    window, row-major; padding never wins).  The output list carries the input's values (graded
    only when the input is); the producer's output scale is the caller's to carry on."""
    events = Events(cap=math.prod(in_shape), graded=graded, val_dtype=val_dtype or precision.acc_dtype)
    return LayerKernel(
        op=Op.MAXPOOL2D,
        in_shape=tuple(in_shape),
        out_shape=(out_hw[0], out_hw[1], in_shape[2]),
        operands=(events,),
        precision=precision,
        batch=batch,
        geometry=geometry,
        epilogue=Epilogue.COMPACT,
        device=device,
    )


def add_kernel(
    shape: tuple[int, ...],
    operands: tuple[Operand, ...],
    *,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    bias: bool = False,
    epilogue: Epilogue = Epilogue.COMPACT,
    neuron: NeuronSpec | None = None,
    readout: bool = False,
    device: Device = Device.CPU,
) -> LayerKernel:
    """Elementwise sum of event lists and currents (residual add; also densify and neuron-only)."""
    return LayerKernel(
        op=Op.ADD,
        in_shape=tuple(shape),
        out_shape=tuple(shape),
        operands=tuple(operands),
        precision=precision,
        batch=batch,
        bias=bias,
        epilogue=epilogue,
        neuron=neuron,
        readout=readout,
        device=device,
    )


def remap_kernel(
    shape: tuple[int, ...],
    operands: tuple[Operand, ...],
    *,
    multiplier: bool = False,
    batch: int | None = None,
    precision: Precision = Precision.FLOAT32,
    bias: bool = False,
    epilogue: Epilogue = Epilogue.COMPACT,
    neuron: NeuronSpec | None = None,
    readout: bool = False,
    device: Device = Device.CPU,
) -> LayerKernel:
    """Re-indexing of event lists or currents into one output (permute, slice, concat, reshape,
    and with ``multiplier`` a per-element scale): operand i's element e lands at ``map{i}[e]``
    (-1: dropped) times ``mul{i}[e]``.  An event costs one lookup and one add; the output list is
    compacted from the accumulator as for pooling."""
    return LayerKernel(
        op=Op.REMAP,
        in_shape=tuple(shape),
        out_shape=tuple(shape),
        operands=tuple(operands),
        precision=precision,
        batch=batch,
        bias=bias,
        epilogue=epilogue,
        neuron=neuron,
        readout=readout,
        device=device,
        multiplier=multiplier,
    )


def conv_out_size(size: int, k: int, s: int, p: int, d: int = 1, ceil_mode: bool = False) -> int:
    """PyTorch's output size of a convolution or pooling window (ceil_mode: pooling only; the
    last window must start inside the input or its left padding)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@dataclass(frozen=True, kw_only=True)
class InteriorClass:
    """The input positions (iy, ix) of a conv with iy + py ≡ ry (mod sy) and ix + px ≡ rx
    (mod sx) whose taps all reach the output: rows ``rows[0]..rows[1]``, columns
    ``cols[0]..cols[1]``.  ``taps`` holds (kh, kw, dy, dx): tap (kh, kw) of such a position
    reaches output (qy − dy, qx − dx), where q = floor((i + p) / s)."""

    residue: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    in_hw: tuple[int, int]
    taps: tuple[tuple[int, int, int, int], ...]

    def condition(self) -> str:
        """The class's test on the let-bound (iy, ix), as an expression of the kernel source."""
        parts = []
        for coord, r, s, p, (lo, hi), size in zip(
            ("iy", "ix"), self.residue, self.stride, self.padding, (self.rows, self.cols), self.in_hw, strict=True
        ):
            if s > 1:
                parts.append(f"T.floormod({coord} + {p}, {s}) == {r}")
            if lo > 0:
                parts.append(f"{coord} >= {lo}")
            if hi < size - 1:
                parts.append(f"{coord} <= {hi}")
        return " and ".join(parts) or "iy >= 0"


def interior_classes(k: LayerKernel) -> list[InteriorClass]:
    """The classes of a conv's input positions that sum several taps in one pass over their
    events (:meth:`_Emitter.conv_interior`): per residue of each coordinate modulo the stride,
    the taps it reaches (kh with kh·d ≡ i + p mod s) and the coordinates at which all of those
    reach an output.  Classes with one tap, or with no interior position, are left out: the
    clipped loop costs them the same.  So are convs with strides of more than 2 x 2 (up to 4
    classes): alexnet's 11x11 stride-4 stem has 16, whose specialised loops took 3.6 s to compile
    (0.6 s for a 7x7 stride-2 conv's 4)."""
    g = k.conv
    if g.stride[0] * g.stride[1] > MAX_INTERIOR_CLASSES:
        return []
    axes: list[list[tuple[int, list[tuple[int, int]], tuple[int, int]]]] = []
    for axis in (0, 1):
        kk, s, p, d = g.kernel[axis], g.stride[axis], g.padding[axis], g.dilation[axis]
        out, size = k.out_shape[axis], k.in_shape[axis]
        per_residue = []
        for r in range(s):
            taps = [(t, (t * d - r) // s) for t in range(kk) if (t * d - r) % s == 0]
            if taps:
                offsets = [off for _, off in taps]
                lo = max(0, s * max(offsets) + r - p)  # qy − dy >= 0 for every tap
                hi = min(size - 1, s * (out - 1 + min(offsets)) + r - p)  # qy − dy <= out − 1
                if lo <= hi:
                    per_residue.append((r, taps, (lo, hi)))
        axes.append(per_residue)
    classes = []
    for ry, taps_y, rows in axes[0]:
        for rx, taps_x, cols in axes[1]:
            if len(taps_y) * len(taps_x) < 2:
                continue
            classes.append(
                InteriorClass(
                    residue=(ry, rx), stride=g.stride, padding=g.padding, rows=rows, cols=cols,
                    in_hw=(k.in_shape[0], k.in_shape[1]),
                    taps=tuple((kh, kw, dy, dx) for kh, dy in taps_y for kw, dx in taps_x),
                )
            )  # fmt: skip
    return classes


def conv_blocks(width: int) -> list[tuple[str, str, int, str]]:
    """The blocks of up to CONV_BLOCK output channels that a conv's pass sums in registers, as
    (loop range, loop variable, lanes, first channel expression): the full blocks, then a tail."""
    full, tail = divmod(width, CONV_BLOCK)
    blocks = [(f"range({full})", "jb", CONV_BLOCK, f"jb * {CONV_BLOCK}")] if full else []
    if tail:
        blocks.append(("range(1)", "jt0", tail, str(full * CONV_BLOCK)))
    return blocks


def channel_slices(channels: int, min_width: int, cores: int | None = None) -> tuple[int, int]:
    """Split ``channels`` into S equal slices of a multiple of LANES channels, each at least
    ``min_width`` wide; (1, channels) when no such split exists.  Threads own slices, so
    scattered writes never conflict.

    S is the fewest of 2, 4, 8, 16 that gives each of the host's ``cores`` (default: this
    machine's) a slice, or the most that fit below that: every slice re-reads the whole spike
    list and redoes each event's address (and tap) arithmetic, so slices beyond one per thread
    only repeat that work (on one thread, 16 slices of a 2048x2048 linear at 21 % density cost
    2.4x the CPU time of one slice, 2 slices 1.3x)."""
    want = max(2, cores or os.cpu_count() or 2)
    fitting = [s for s in (2, 4, 8, 16) if channels % (LANES * s) == 0 and channels // s >= min_width]
    if not fitting:
        return 1, channels
    enough = [s for s in fitting if s >= want]
    s = min(enough) if enough else max(fitting)
    return s, channels // s


# Narrowest channel slice worth a thread: every slice re-reads the spike list (and, for a conv,
# redoes each event's tap arithmetic), so a slice must hold at least 4 vectors of work.
MIN_SLICE = 4 * LANES
PARALLEL_WORK = 1 << 20  # multiply-accumulates of a batch-1 layer worth a parallel launch
# Fewest host cores for which a batch-1 layer is split into channel slices.  Each slice repeats
# the per-event work, so two slices cost 1.3-1.8x the CPU time of one (measured on a 2-core AMD
# EPYC, one thread: 960x1280 linear and 1x1 conv at 48 %, 2048x2048 at 21 %, 64->256 3x3 conv on
# 8x8 at 25 %): two cores can gain at most 1.1-1.5x, and with the second core busy (a shared
# machine) the parallel launch waits for it: 1.5-3.7x slower than one serial slice in wall time.
SLICE_CORES = 4


# ---------------------------------------------------------------------------------------
# validation


def _check(k: LayerKernel) -> None:
    if not k.operands:
        raise ValueError(f"{k.op.value} kernel needs at least one operand")
    single = k.op in (Op.LINEAR, Op.CONV2D, Op.POOL2D, Op.MAXPOOL2D)
    dense_conv = k.op is Op.CONV2D and len(k.operands) == 1 and isinstance(k.operands[0], Current)
    if single and not dense_conv and (len(k.operands) != 1 or not isinstance(k.operands[0], Events)):
        raise ValueError(f"a {k.op.value} kernel takes exactly one event operand")
    if dense_conv:
        current = cast(Current, k.operands[0])
        if k.device is Device.CUDA:
            raise UnsupportedError("conv2d kernels on a current operand are CPU-only")
        if current.cap != math.prod(k.in_shape) or current.scale != 1.0:
            raise ValueError("a conv2d current operand is the whole input (cap = H·W·C), unscaled")
    for operand in k.operands:
        if isinstance(operand, Events) and operand.layout is Layout.CSC and k.op is not Op.LINEAR:
            raise UnsupportedError("the weight-stationary CSC layout exists for linear layers only")
        if isinstance(operand, Events) and operand.layout is not Layout.ROWS and k.op is not Op.LINEAR:
            raise UnsupportedError(f"{k.op.value} kernels read ROWS event lists only")
    if k.op in (Op.CONV2D, Op.POOL2D, Op.MAXPOOL2D) and (len(k.in_shape) != 3 or len(k.out_shape) != 3):
        raise ValueError(f"{k.op.value} shapes must be (H, W, C)")
    if k.op is Op.CONV2D:
        g = k.geometry
        if not isinstance(g, Conv2dGeometry):
            raise ValueError("conv2d kernel needs a Conv2dGeometry")
        if g.groups < 1 or k.in_shape[2] % g.groups or k.out_shape[2] % g.groups:
            raise ValueError(f"groups={g.groups} must divide {k.in_shape[2]} input and {k.out_shape[2]} output channels")
        if g.groups > 1 and k.device is Device.CUDA:
            raise UnsupportedError("grouped convolution kernels are CPU-only")
        for axis in (0, 1):
            if g.stride[axis] > 1 and g.dilation[axis] > 1:
                raise UnsupportedError(
                    f"event conv2d: stride {g.stride} together with dilation {g.dilation} is not supported "
                    "(one of them must be 1 per axis)"
                )
    if k.op is Op.MAXPOOL2D:
        if k.epilogue is not Epilogue.COMPACT or k.readout or k.bias:
            raise ValueError("spike_maxpool forwards events: a COMPACT epilogue, no bias, no readout")
        if k.operands[0].scale != 1.0:
            raise ValueError("spike_maxpool forwards events unscaled; the runtime carries the scale")
    if k.op in (Op.POOL2D, Op.MAXPOOL2D):
        if not isinstance(k.geometry, Pool2dGeometry):
            raise ValueError("pool2d kernel needs a Pool2dGeometry")
        if k.bias:
            raise ValueError("pooling has no bias")
        if k.in_shape[2] != k.out_shape[2]:
            raise ValueError("pooling keeps the channel count")
        if k.pool.average and (k.op is not Op.POOL2D or k.precision is Precision.INT8):
            raise ValueError("a per-window divisor belongs to fp32 average pooling")
    if k.op in (Op.ADD, Op.REMAP) and k.in_shape != k.out_shape:
        raise ValueError(f"{k.op.value} keeps the shape")
    if k.multiplier and k.op is not Op.REMAP:
        raise ValueError("only a remap kernel takes per-element multipliers")
    if k.op is Op.REMAP and any(isinstance(o, Current) and not o.cap for o in k.operands):
        raise ValueError("a remap kernel's current operands need their size (Current.cap)")
    if k.op is Op.REMAP and (k.device is Device.CUDA or any(o.scale != 1.0 for o in k.operands)):
        if k.device is Device.CUDA:
            raise UnsupportedError("remap kernels (permute, slice, concat, scale) are CPU-only")
        raise ValueError("a remap kernel carries scales in its multipliers, not in operand scales")
    if k.tiled and (
        k.op is not Op.LINEAR
        or k.device is not Device.CPU
        or k.events(0).layout is Layout.CSC
        or (k.slices or 1) > 1
    ):
        raise UnsupportedError("the tiled kernel is a CPU linear layer on ROWS or CSR event lists, unsliced")
    if k.steps and (not k.tiled or k.batch is not None or k.events(0).layout is not Layout.ROWS):
        raise UnsupportedError("a kernel over a block of steps is a tiled linear kernel of symbolic batch, on ROWS lists")
    if k.slices is not None and (
        k.slices < 1 or k.channels % k.slices or (k.slices > 1 and (k.channels // k.slices) % LANES)
    ):
        raise ValueError(f"{k.slices} slices do not split {k.channels} channels into multiples of {LANES}")
    if (k.epilogue is Epilogue.NEURON) != (k.neuron is not None):
        raise ValueError("a NEURON epilogue needs a NeuronSpec and only it takes one")
    if k.neuron is not None and k.neuron.max_spikes < 1:
        raise ValueError(f"max_spikes={k.neuron.max_spikes} must be >= 1")
    if k.readout and k.epilogue is Epilogue.COMPACT:
        raise ValueError("a readout accumulates a current or spikes, not a compacted list")
    if k.epilogue is Epilogue.COMPACT and k.op in (Op.LINEAR, Op.CONV2D):
        raise ValueError("linear/conv layers end in a current or a neuron, not a compacted list")
    if k.sums16 and not k.can_sum16:
        raise UnsupportedError(
            "int16 sums (sums16) belong to a CPU int8 conv2d of 0/1 events, ungrouped, on a map "
            "larger than 1x1, that ends in a neuron"
        )
    if k.precision is Precision.INT8:
        for operand in k.operands:
            if operand.scale != 1.0:
                raise UnsupportedError(
                    f"int8 {k.op.value}: an operand scale of {operand.scale} is not an integer map; "
                    "fold it into the weights (avgpool: use sumpool and fold 1/(KH·KW) into the next layer)"
                )


# ---------------------------------------------------------------------------------------
# TVMScript emission


class _Writer:
    """Indented source lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


def _lit(value: float | int, dtype: str) -> str:
    if dtype.startswith("float"):
        return f"T.{dtype}({float(value)!r})"
    return f"T.{dtype}({int(value)})"


class _Emitter:
    """Writes the TVMScript of one :class:`LayerKernel` (CPU); :class:`_CudaEmitter` for GPUs."""

    def __init__(self, k: LayerKernel) -> None:
        self.k = k
        self.w = _Writer()
        self.adt = k.precision.acc_dtype
        self.wdt = k.precision.weight_dtype
        self.B = "1" if k.batch == 1 else ("B" if k.batch is None else str(k.batch))
        self.sb = "0" if k.steps else "b"  # the state row of step/sample b (LayerKernel.steps)
        self.scopes = 0  # compute scopes emitted (each needs its own name)
        self.parts = 0  # int16 partial-sum buffers emitted (conv_pass; each its own name)

    @contextmanager
    def over_samples(self) -> Iterator[None]:
        """The loop over samples b: a plain loop at batch 1; otherwise ``T.parallel``, its body a
        compute scope of its own.  TVM outlines a parallel loop's body into a closure that gets
        the buffers as pointers loaded from a struct, without LLVM's ``noalias``, so LLVM must
        assume that any store can change any later load; a compute scope inside the loop is
        outlined once more, into a function whose buffer arguments are ``noalias`` again (the
        gated max pooling of the synthetic CNN at B = 32, one thread: 49.5 -> 23.2 µs per sample,
        24.1 with a serial loop), and the loop stays parallel."""
        if self.B == "1" or self.k.steps:  # a block's steps update one state: in order
            with self.w.block(f"for b in range({self.B}):"):
                yield
            return
        self.scopes += 1
        with self.w.block(f"for b in T.parallel({self.B}):"):
            with self.w.block(f'with T.attr(0, "compute_scope", "{self.k.name}_samples{self.scopes}"):'):
                yield
        # TVM 0.27 leaves the outlined scope's debug location on the next instruction it emits;
        # were that the enclosing function's return, LLVM's verifier would refuse the module ("!dbg
        # attachment points at wrong subprogram"): a dead store to a local takes it instead
        self.w(f'after{self.scopes} = T.alloc_buffer((1,), "int32", scope="local")')
        self.w(f"after{self.scopes}[0] = 0")

    # -- signature ---------------------------------------------------------------------
    def buffer_shapes(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Argument name -> (shape expressions, dtype) for every buffer argument."""
        k, B, adt = self.k, self.B, self.adt
        n = str(k.n_out)
        shapes: dict[str, tuple[tuple[str, ...], str]] = {}

        def row(size: int | str, dtype: str) -> tuple[str, str]:  # (B, a step's row)
            return (B, str(padded_row(int(size), dtype) if k.steps else size))

        one = (B, "16") if k.steps else (B,)  # cnt, cnt_out: a padded row, read at column 0
        state = "1" if k.steps else B
        for i, operand in enumerate(k.operands):
            if isinstance(operand, Current):
                shapes[f"cur{i}"] = ((B, str(operand.cap or n)), adt)
                if k.op is Op.REMAP:
                    shapes[f"map{i}"] = ((str(operand.cap),), "int32")
                    shapes[f"mul{i}"] = ((str(operand.cap),), adt)
                continue
            if k.op is Op.REMAP:
                shapes[f"map{i}"] = ((str(operand.cap),), "int32")
                shapes[f"mul{i}"] = ((str(operand.cap),), adt)
            if operand.layout is Layout.ROWS:
                shapes[f"cnt{i}"] = (one, "int32")
                shapes[f"idx{i}"] = (row(operand.cap, "int32"), "int32")
                if operand.graded:
                    shapes[f"val{i}"] = (row(operand.cap, operand.val_dtype), operand.val_dtype)
            else:
                ptr_len = f"{B} + 1" if operand.layout is Layout.CSR else f"{operand.cap} + 1"
                shapes[f"ptr{i}"] = ((ptr_len,), "int32")
                shapes[f"idx{i}"] = ((f"nnz{i}",), "int32")
                if operand.graded:
                    shapes[f"val{i}"] = ((f"nnz{i}",), operand.val_dtype)
        if k.op is Op.LINEAR:
            if k.tiled:  # [tiles, n_in, LINEAR_TILE], the last tile zero-padded (tiled_weight)
                tiles = -(-k.n_out // LINEAR_TILE)
                shapes["weight"] = ((str(tiles), str(k.in_shape[0]), str(LINEAR_TILE)), self.wdt)
            else:
                shapes["weight"] = ((str(k.in_shape[0]), n), self.wdt)
        if k.op is Op.CONV2D:
            kh, kw = k.conv.kernel
            cols = k.channels // k.conv.groups
            shapes["weight"] = ((str(k.in_shape[2]), str(kh), str(kw), str(cols)), "int16" if k.sums16 else self.wdt)
            if k.depthwise:
                shapes["weight"] = ((str(kh), str(kw), str(k.channels)), self.wdt)
        if k.bias:
            shapes["bias"] = ((str(k.channels),), adt)
        if k.op is Op.MAXPOOL2D:
            shapes["count"] = ((B, str(k.events(0).cap)), adt)
            if k.keeps_winners:
                shapes["win"] = ((B, n), "int32")
        shapes["acc"] = (row(n, adt), adt)
        if k.epilogue is Epilogue.NEURON:
            shapes["v"] = ((state, n), adt)
            shapes["vth"] = ((str(k.channels),), adt)
            if k.nrn.leak:
                shapes["beta"] = ((str(k.channels),), adt)
        if k.epilogue in (Epilogue.NEURON, Epilogue.COMPACT):
            shapes["cnt_out"] = (one, "int32")
            shapes["idx_out"] = (row(n, "int32"), "int32")
            if k.out_graded:
                shapes["val_out"] = (row(n, adt), adt)
        if k.epilogue is Epilogue.NEURON:
            shapes["stats"] = ((state,), "int32")
        if k.readout:
            shapes["rsum"] = ((state, n), adt)
        return shapes

    def signature(self) -> None:
        k, w = self.k, self.w
        shapes = self.buffer_shapes()
        params = []
        for name in k.arg_names():
            params.append(f"{name}: T.{self.adt}" if name == "vreset" else f"{name}_h: T.handle")
        w("@T.prim_func")
        w(f"def {k.name}({', '.join(params)}):")
        w.depth += 1
        w(f'T.func_attr({{"global_symbol": "{k.name}", "tirx.noalias": True}})')
        symbols = {"B"} if self.B == "B" else set()
        symbols |= {
            f"nnz{i}"
            for i, o in enumerate(k.operands)
            if isinstance(o, Events) and o.layout is not Layout.ROWS
        }
        for sym in sorted(symbols):
            w(f"{sym} = T.int32()")
        for name in k.arg_names():
            if name in shapes:
                dims, dtype = shapes[name]
                w(f'{name} = T.match_buffer({name}_h, ({", ".join(dims)},), "{dtype}")')

    # -- helpers -------------------------------------------------------------------------
    def vector(self, width: int, base: str, stmt: Callable[[str], None]) -> None:
        """Emit ``stmt(col)`` for col over [base, base + width) in LANES-wide vector chunks and a
        vector tail; ``col`` is an inline expression (never let-bound inside the vector loop)."""
        full, tail = divmod(width, LANES)
        if full:
            with self.w.block(f"for jv in range({full}):"):
                with self.w.block(f"for ji in T.vectorized({LANES}):"):
                    stmt(f"{base} + jv * {LANES} + ji")
        if tail:
            with self.w.block(f"for jt in T.vectorized({tail}):"):
                stmt(f"{base} + {full * LANES} + jt")

    def to_acc(self, expr: str, dtype: str) -> str:
        return expr if dtype == self.adt else f'T.cast({expr}, "{self.adt}")'

    def event_range(self, i: int) -> tuple[str, Callable[[str], str], Callable[[str], str]]:
        """For operand i of sample b: (count, index(k), value(k)) expressions (ROWS or CSR)."""
        operand = self.k.events(i)
        if operand.layout is Layout.ROWS:
            count = f"cnt{i}[b, 0]" if self.k.steps else f"cnt{i}[b]"

            def at(kk: str) -> str:
                return f"idx{i}[b, {kk}]"

            def val(kk: str) -> str:
                return f"val{i}[b, {kk}]"
        else:
            count = f"(ptr{i}[b + 1] - ptr{i}[b])"

            def at(kk: str) -> str:
                return f"idx{i}[ptr{i}[b] + {kk}]"

            def val(kk: str) -> str:
                return f"val{i}[ptr{i}[b] + {kk}]"

        return count, at, val

    def pixel(self, p: str) -> str:
        """Flat offset of pixel p's channel vector ("" for vectors)."""
        return f"{p} * {self.k.channels} + " if self.k.pixels > 1 else ""

    @property
    def scaled(self) -> bool:
        """A linear/conv operand scale is applied once to the finished sum, not per event."""
        return self.k.op in (Op.LINEAR, Op.CONV2D) and self.k.operands[0].scale != 1.0

    @property
    def init_with_bias(self) -> bool:
        return self.k.bias and not self.scaled

    @property
    def needs_finish(self) -> bool:
        return (self.k.bias and not self.init_with_bias) or self.scaled

    # -- structure -----------------------------------------------------------------------
    def emit(self) -> str:
        k, w = self.k, self.w
        self.signature()
        if k.tiled:
            self.emit_tiled()
            return "\n".join(w.lines) + "\n"
        n_slices, width = k.slice_plan()
        csc = isinstance(k.operands[0], Events) and k.operands[0].layout is Layout.CSC
        if n_slices > 1 or csc:
            # threads own output-channel slices: accumulation and elementwise epilogue are
            # race-free for any batch; the compaction of spike lists runs per sample after it
            with w.block(f"for c in T.parallel({n_slices}):"):
                if csc:
                    with w.block(f"for b in range({self.B}):"):
                        self.init("b", f"c * {width}", width)
                    self.accumulate_csc(f"c * {width}", width)
                    if self.has_vector_epilogue:
                        with w.block(f"for b in range({self.B}):"):
                            self.epilogue_vector(f"c * {width}", width)
                else:
                    self.declare_sums16()
                    with w.block(f"for b in range({self.B}):"):
                        self.init("b", f"c * {width}", width)
                        self.accumulate(f"c * {width}", width)
                        self.epilogue_vector(f"c * {width}", width)
            if k.epilogue is not Epilogue.CURRENT:
                with self.over_samples():
                    self.epilogue_serial()
        elif self.elementwise:
            with self.over_samples():
                self.over_pixels("0", k.channels, self.elementwise_element)
                self.epilogue_serial()
        else:
            with self.over_samples():
                self.declare_sums16()
                self.init("b", "0", k.channels)
                self.accumulate("0", k.channels)
                self.epilogue_vector("0", k.channels)
                self.epilogue_serial()
        return "\n".join(w.lines) + "\n"

    @property
    def elementwise(self) -> bool:
        """An add of currents only (a dense-mode layer's bias and neuron after its BLAS product,
        a direct-coded input layer's per-step neuron, a residual add of currents): every element
        is independent, so its bias, sum, neuron update or readout run in one vector pass instead
        of one pass each (the synthetic CNN's 32x32x32 input layer at batch 1: 4 passes over its
        acc, cur and v rows per step, 128 KB each, became 1 plus the compaction)."""
        return self.k.op is Op.ADD and all(isinstance(o, Current) for o in self.k.operands)

    def elementwise_element(self, j: str, co: str) -> None:
        """Element j of :attr:`elementwise`: the additions of :meth:`init` and
        :meth:`accumulate_add` in their order (bias or 0, then each current), then the epilogue's
        statements (the same operations as the passes, bit for bit)."""
        k, w, adt = self.k, self.w, self.adt
        total = f"bias[{co}]" if self.init_with_bias else _lit(0, adt)
        for i, operand in enumerate(k.operands):
            scale = f" * {_lit(operand.scale, adt)}" if operand.scale != 1.0 else ""
            total = f"({total} + cur{i}[b, {j}]{scale})"
        w(f"acc[b, {j}] = {total}")
        if k.epilogue is Epilogue.NEURON:
            self.neuron_element(j, co)
        elif k.readout:
            w(f"rsum[b, {j}] = rsum[b, {j}] + acc[b, {j}]")

    @property
    def sums16(self) -> bool:
        """Whether the step's sums live in ``acc16``, a local int16 buffer, instead of acc (an
        int8 conv of 0/1 events whose weights bound every sum below 2^15, ``LayerSpec.int16_sums``):
        each event and tap adds 64 int16 weights (the int8 ones widened once, at load:
        :meth:`LayerKernel.kernel_weight`) in two 512-bit adds of 32 lanes, instead of
        widening them to int32 and adding four vectors of 16, and the sums are widened once, in
        the neuron update; no position pass flushes partial sums into acc (:meth:`conv_pass`'s
        int16 partials).  Exact: integer sums below 2^15 in any order.  Why it pays: the
        synthetic CNN's 3x3 stride-2 conv took the same time with every event on channel 0 (2 KB
        of weights in L1) as with the real ones, so it is bound by the adds and widenings, not by
        reading weights (docs/tvm.md, "Eighth session": 1.15-1.21x alone)."""
        return self.k.sums16

    def declare_sums16(self) -> None:
        if self.sums16:
            self.w(f'acc16 = T.alloc_buffer(({self.k.n_out},), "int16")')

    def init(self, b: str, base: str, width: int) -> None:
        """acc[b, pixel, base:base+width] = bias (or 0); acc16 for :attr:`sums16`."""
        k = self.k
        zero = _lit(0, self.adt)

        def body() -> None:
            if self.sums16:
                value = (lambda col: f'T.cast(bias[{col}], "int16")') if self.init_with_bias else (lambda col: "T.int16(0)")
                self.vector(width, base, lambda col: self.w(f"acc16[{self.pixel('p')}{col}] = {value(col)}"))
            elif self.init_with_bias:
                self.vector(
                    width, base, lambda col: self.w(f"acc[{b}, {self.pixel('p')}{col}] = bias[{col}]")
                )
            else:
                self.vector(width, base, lambda col: self.w(f"acc[{b}, {self.pixel('p')}{col}] = {zero}"))

        if k.pixels > 1:
            with self.w.block(f"for p in range({k.pixels}):"):
                body()
        else:
            body()

    # -- accumulation --------------------------------------------------------------------
    def accumulate(self, base: str, width: int) -> None:
        op = self.k.op
        if op is Op.LINEAR:
            self.accumulate_linear(base, width)
        elif op is Op.CONV2D:
            self.accumulate_conv(base, width)
        elif op is Op.POOL2D:
            self.accumulate_pool()
        elif op is Op.MAXPOOL2D:
            self.accumulate_maxpool()
        elif op is Op.REMAP:
            self.accumulate_remap()
        else:
            self.accumulate_add()

    def weight_term(self, row: str, col: str, value: str | None) -> str:
        """One input's contribution to acc column col: W[row, col] (· value)."""
        term = self.to_acc(f"weight[{row}, {col}]", self.wdt)
        return f"{term} * {value}" if value is not None else term

    def accumulate_linear(self, base: str, width: int) -> None:
        w = self.w
        operand = self.k.events(0)
        count, at, val = self.event_range(0)

        def value(kk: str) -> str | None:
            return self.to_acc(val(kk), operand.val_dtype) if operand.graded else None

        def quad(col: str) -> None:
            t = [self.weight_term(at(f"k4 * 4 + {r}"), col, value(f"k4 * 4 + {r}")) for r in range(4)]
            w(f"acc[b, {col}] = acc[b, {col}] + (({t[0]} + {t[1]}) + ({t[2]} + {t[3]}))")

        def single(col: str) -> None:
            w(f"acc[b, {col}] = acc[b, {col}] + {self.weight_term(at('k'), col, value('k'))}")

        # four rows per pass over the accumulator row: 10-25 % faster than one at 2-50 % density
        with w.block(f"for k4 in range({count} // 4):"):
            self.vector(width, base, quad)
        with w.block(f"for k in range({count} // 4 * 4, {count}):"):
            self.vector(width, base, single)

    def accumulate_csc(self, base: str, width: int) -> None:
        w = self.w
        operand = self.k.events(0)
        value = self.to_acc("val0[q]", operand.val_dtype) if operand.graded else None
        with w.block(f"for i in range({operand.cap}):"):
            with w.block("for q in range(ptr0[i], ptr0[i + 1]):"):
                self.vector(
                    width,
                    base,
                    lambda col: w(
                        f"acc[idx0[q], {col}] = acc[idx0[q], {col}] + {self.weight_term('i', col, value)}"
                    ),
                )

    def emit_tiled(self) -> None:
        """The tiled linear kernel: every weight is read from memory at most once per call.

        The batch's ascending event lists are first cut at every :attr:`tile_rows`-th input row
        (``bnd[b, c]``: where sample b's events of row chunk c start) and the rows that any
        sample uses are marked.  Then, for each tile of LINEAR_TILE output columns (threads own
        tiles: race-free), chunk after chunk, each sample adds its events of the chunk into its
        tile of ``acc``, which LLVM keeps in registers over the chunk; meanwhile the samples
        prefetch the next chunk's marked rows of the tile (the weights are pre-tiled,
        ``[tiles, n_in, LINEAR_TILE]``, so a chunk of a tile is one contiguous 8-32 KB block that
        the prefetches stream from memory and the events then read from L1).  Keeps: each
        output element adds its sample's events in list order, then bias, scale and the
        epilogue exactly as the untiled kernel; changes: the order of the loops (not the sums)
        and the weight layout."""
        k, w = self.k, self.w
        operand = k.events(0)
        count, at, val = self.event_range(0)
        n_in, rows = operand.cap, self.tile_rows
        chunks = -(-n_in // rows)
        full, tail = divmod(k.n_out, LINEAR_TILE)
        w(f'bnd = T.alloc_buffer(({self.B}, {chunks + 1}), "int32")')
        w(f'mark = T.alloc_buffer(({n_in},), "int8")')
        with w.block(f"for r in range({n_in}):"):
            w("mark[r] = T.int8(0)")
        # serial over samples: every sample marks the rows it uses in one shared mask
        with w.block(f"for b in range({self.B}):"):
            with w.block(f"for c in range({chunks + 1}):"):
                w("bnd[b, c] = 0")
            with w.block(f"for kk in range({count}):"):
                w(f"mark[{at('kk')}] = T.int8(1)")
                chunk = f"bnd[b, T.floordiv({at('kk')}, {rows}) + 1]"
                w(f"{chunk} = {chunk} + 1")
            with w.block(f"for c in range({chunks}):"):
                w("bnd[b, c + 1] = bnd[b, c + 1] + bnd[b, c]")
        if full:
            # a compute scope as this loop's body (as in over_samples) was measured slower:
            # synthetic MLP at B = 32, one thread, 73 -> 87 µs per sample-step
            with w.block(f"for t in T.parallel({full}):"):
                self.tile_body(LINEAR_TILE, val if operand.graded else None, at)
        if tail:
            with w.block(f"for t in range({full}, {full + 1}):"):
                self.tile_body(tail, val if operand.graded else None, at)
        if k.epilogue is not Epilogue.CURRENT:
            with self.over_samples():
                self.epilogue_serial()

    @property
    def tile_rows(self) -> int:
        """Input rows per chunk of the tiled kernel (TILE_ROWS; over a block of steps TILE_ROWS_STEPS)."""
        return TILE_ROWS_STEPS if self.k.steps else TILE_ROWS

    def tile_body(self, width: int, val: Callable[[str], str] | None, at: Callable[[str], str]) -> None:
        """One column tile ``t`` of :meth:`emit_tiled`, ``width`` columns wide."""
        k, w = self.k, self.w
        n_in, rows = k.in_shape[0], self.tile_rows
        chunks = -(-n_in // rows)
        base = f"t * {LINEAR_TILE}"
        item = 4 if self.wdt == "float32" else 1
        per_line = 64 // item  # weights per 64-byte cache line
        lines = -(-width * item // 64)

        def prefetch(row: str) -> None:
            with w.block(f"if mark[{row}] != T.int8(0):"):
                with w.block(f"for ln in range({lines}):"):
                    address = f"T.address_of(weight[t, {row}, ln * {per_line}])"
                    w(f'T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch", {address}, 0, 3, 1))')

        with w.block(f"for b in range({self.B}):"):
            self.init("b", base, width)
        with w.block(f"for r in range({min(rows * PREFETCH_CHUNKS, n_in)}):"):
            prefetch("r")
        with w.block(f"for c in range({chunks}):"):
            with w.block(f"for b in range({self.B}):"):
                # sample b's share of the next chunk's rows (all of them when B = 1)
                share = f"T.floordiv(b * {rows}, {self.B}), T.floordiv((b + 1) * {rows}, {self.B})"
                with w.block(f"for r in range({share}):"):
                    with w.block(f"if (c + {PREFETCH_CHUNKS}) * {rows} + r < {n_in}:"):
                        prefetch(f"(c + {PREFETCH_CHUNKS}) * {rows} + r")
                self.tile_chunk(width, base, val, at)
        if self.has_vector_epilogue:
            with w.block(f"for b in range({self.B}):"):
                self.epilogue_vector(base, width)

    def tile_chunk(self, width: int, base: str, val: Callable[[str], str] | None, at: Callable[[str], str]) -> None:
        """Sample b's events of chunk c added into its tile of acc.  An int8 kernel of 0/1
        events (:attr:`narrow_tiles`) sums a chunk of at least NARROW_MIN_RUN events in int16
        partial sums (32 lanes per add, one widening per 32 weights instead of per 16), added
        to acc after the chunk; a chunk holds at most one event per row, so its sums stay
        within tile_rows · 128 ≤ 2^15 (exact).  The synthetic MLP's int8 network, side by side
        (its two 2048x2048 int8 layers at 21 % density, logits identical): 1.30x faster at batch
        32, 1.05x at batch 1 (a block of 16 steps: chunks of 32 rows, ~7 events).  The seventh
        session measured int16 here 2.6x slower on one layer: at the densities of the per-layer
        quantisation that had silenced it (0.5 %; chunks of 0 or 1 event, each paying the
        widening), which the NARROW_MIN_RUN guard now leaves to the int32 loop."""
        w = self.w

        def wide() -> None:
            with w.block("for kk in range(bnd[b, c], bnd[b, c + 1]):"):
                with w.block(f"for ji in T.vectorized({width}):"):
                    term = self.to_acc(f"weight[t, {at('kk')}, ji]", self.wdt)
                    if val is not None:
                        term = f"{term} * {self.to_acc(val('kk'), self.k.events(0).val_dtype)}"
                    dst = f"acc[b, {base} + ji]"
                    w(f"{dst} = {dst} + {term}")

        if not self.narrow_tiles:
            wide()
            return
        slot = (f"acc[b, {base} + ji]", f"weight[t, {at('kk')}, ji]")
        self.narrow_pass("bnd[b, c]", "bnd[b, c + 1]", [slot], width, wide)

    @property
    def narrow_tiles(self) -> bool:
        """Whether the tiled kernel sums its chunks in int16 (:meth:`tile_chunk`): int8 weights,
        0/1 events, and a chunk's 128 · tile_rows within int16."""
        operand = self.k.events(0)
        return self.k.precision is Precision.INT8 and not operand.graded and 128 * self.tile_rows < (1 << 15)

    def taps(self, coord: str, k: int, s: int, p: int, d: int, out: int, tag: str) -> tuple[str, str, str]:
        """Clipped tap range of one spatial axis for an input coordinate: emits the let-bound
        first tap and count; returns (count, tap(a), out(a)) expressions."""
        w = self.w
        if s == 1:
            # taps kh with 0 <= coord + p - kh·d <= out - 1
            w(f"{tag}_lo = T.max(0, 0 - T.floordiv({out - 1} - ({coord} + {p}), {d}))")
            w(f"{tag}_hi = T.min({k - 1}, T.floordiv({coord} + {p}, {d}))")
            return (
                f"T.max({tag}_hi - {tag}_lo + 1, 0)",
                f"({tag}_lo + a{tag})",
                f"({coord} + {p} - ({tag}_lo + a{tag}) * {d})",
            )
        # dilation 1: taps kh ≡ coord + p (mod s) with 0 <= (coord + p - kh)/s <= out - 1
        w(f"{tag}_lo = T.max(0, {coord} + {p} - {(out - 1) * s})")
        w(f"{tag}_first = {tag}_lo + T.floormod({coord} + {p} - {tag}_lo, {s})")
        w(f"{tag}_hi = T.min({k - 1}, {coord} + {p})")
        return (
            f"T.max(T.floordiv({tag}_hi - {tag}_first, {s}) + 1, 0)",
            f"({tag}_first + a{tag} * {s})",
            f"T.floordiv({coord} + {p} - ({tag}_first + a{tag} * {s}), {s})",
        )

    def decode(self, e: str) -> None:
        """Let-bind (iy, ix, ci) of a flat channels-last input index e."""
        h, wd, c = self.k.in_shape
        self.w(f"ci = T.floormod({e}, {c})")
        self.w(f"ix = T.floormod(T.floordiv({e}, {c}), {wd})")
        self.w(f"iy = T.floordiv({e}, {wd * c})")

    def accumulate_conv(self, base: str, width: int) -> None:
        """Scatter of sample b's events into the channels-last output, one input position at a
        time.  The ascending channels-last list holds the events of one position (iy, ix)
        consecutively, so the position's decode (a division and a modulo) and its tap clipping
        are paid once per position, not per event, and, without groups, each tap's output
        vector accumulates every event of the position before it is stored (LLVM keeps it in a
        register).  Each output element still adds its inputs in list order (one tap links a
        position to an output), so the sums are those of the per-event scatter, bit for bit."""
        k, w = self.k, self.w
        h, wd, c = k.in_shape
        if isinstance(k.operands[0], Current):
            walk = self.every_position(h, wd, c)
        else:
            count, at, _ = self.event_range(0)
            walk = self.positions(count, at, c, h, wd)
        if not k.depthwise:
            self.scatter_by_position(walk, base, width)
            return
        with w.block(f"if {count} * {DEPTHWISE_DENSE} >= {h * wd * c}:"):
            self.accumulate_depthwise()
        with w.block("else:"):
            self.scatter_by_position(walk, base, width)

    def scatter_by_position(self, walk: AbstractContextManager[None], base: str, width: int) -> None:
        """The body of :meth:`accumulate_conv` for each input position that ``walk`` visits.  A
        position whose taps all reach the output, in a class of positions with several taps
        (:func:`interior_classes`), sums them in one pass over its entries
        (:meth:`conv_interior`); the others clip their taps (:meth:`conv_clipped`)."""
        g = self.k.conv
        one_by_one = self.k.in_shape[0] * self.k.in_shape[1] == 1  # a linear layer (conv_tap)
        classes = [] if g.groups > 1 or one_by_one else interior_classes(self.k)
        with walk:
            for i, cls in enumerate(classes):
                with self.w.block(f"{'el' if i else ''}if {cls.condition()}:"):
                    self.conv_interior(cls, base, width)
            with self.w.block("else:") if classes else nullcontext():
                self.conv_clipped(base, width)

    def conv_clipped(self, base: str, width: int) -> None:
        """The position's clipped taps, and per tap the position's entries added into the tap's
        outputs."""
        g = self.k.conv
        co, c = self.k.out_shape[2], self.k.in_shape[2]
        with self.clipped_taps():
            if g.groups > 1:
                self.conv_tap_grouped(co // g.groups, c, c // g.groups)
            else:
                self.conv_tap(base, width)

    @contextmanager
    def clipped_taps(self) -> Iterator[None]:
        """Loops over the taps of the let-bound input position (iy, ix) that reach the output:
        the body sees the tap (kh, kw) and its output position (oy, ox)."""
        k, w = self.k, self.w
        g = k.conv
        oh, ow, _ = k.out_shape
        ny, tap_y, out_y = self.taps("iy", g.kernel[0], g.stride[0], g.padding[0], g.dilation[0], oh, "y")
        nx, tap_x, out_x = self.taps("ix", g.kernel[1], g.stride[1], g.padding[1], g.dilation[1], ow, "x")
        with w.block(f"for ay in range({ny}):"):
            w(f"kh = {tap_y}")
            w(f"oy = {out_y}")
            with w.block(f"for ax in range({nx}):"):
                w(f"kw = {tap_x}")
                w(f"ox = {out_x}")
                yield

    def conv_interior(self, cls: InteriorClass, base: str, width: int) -> None:
        """An interior position of class ``cls``: per block of output channels and group of
        taps, one pass over the position's entries adds each entry's weights of every tap.
        The taps' outputs lie at constant offsets from the first one's, so LLVM keeps all their
        sums in registers across the pass (CONV_REGISTERS vectors: blocks of CONV_BLOCK
        channels, up to 6 taps per pass).  Each output element still adds its inputs in list
        order (one tap links a position to an output), so the sums are those of
        :meth:`conv_clipped`, bit for bit.

        Measured alone (one thread, batch 1, the layers' real event lists): the synthetic CNN's
        3x3 stride-2 conv (classes of 4, 2 and 2 taps) 1.11x faster; 3x3 stride-1 convs of 64
        channels (resnet18's, the synthetic CNN's third) within ±6 % either way, as blocks of 32
        channels over all 9 taps or of 64 over 6 + 3: their 147 KB weights come from L2 at
        ~140 GB/s (256 B per event and tap), which bounds them whichever loop reads them."""
        k, w = self.k, self.w
        _, ow, co = k.out_shape
        w(f"qy = T.floordiv(iy + {k.conv.padding[0]}, {k.conv.stride[0]})")
        w(f"qx = T.floordiv(ix + {k.conv.padding[1]}, {k.conv.stride[1]})")
        per_pass = CONV_REGISTERS * LANES // CONV_BLOCK  # taps whose sums one pass keeps in registers
        for loop, var, n, offset in conv_blocks(width):
            with w.block(f"for {var} in {loop}:"):
                for first in range(0, len(cls.taps), per_pass):
                    taps = cls.taps[first : first + per_pass]
                    outputs = [(f"((qy - {dy}) * {ow} + qx - {dx}) * {co}", kh, kw) for kh, kw, dy, dx in taps]
                    self.conv_pass(outputs, n, f"{base} + {offset}")

    @property
    def narrow_sums(self) -> bool:
        """Whether a conv pass sums its int8 weights in int16 (:meth:`conv_pass`): an ungrouped
        conv of 0/1 events with at most CONV_INT16_CHANNELS input channels, so that one
        position's events (at most one per channel) sum to at most 128·C ≤ 2^15 in magnitude."""
        k = self.k
        operand = k.operands[0]
        return (
            k.precision is Precision.INT8 and isinstance(operand, Events) and not operand.graded
            and k.conv.groups == 1 and k.in_shape[2] <= CONV_INT16_CHANNELS
        )  # fmt: skip

    def conv_pass(self, outputs: Sequence[tuple[str, str | int, str | int]], lanes: int, base: str) -> None:
        """One pass over the current position's entries: each adds, per (output offset, kh, kw)
        of ``outputs``, its weights W[ci, kh, kw, base:base+lanes] to those output channels.  The
        sums stay in registers across the pass: int32 (fp32) sums of acc itself, whose address
        does not change in the loop, or, for :attr:`narrow_sums`, int16 partial sums in a local
        buffer, added to acc after the pass (32 lanes per add instead of 16, one widening per 32
        weights instead of per 16; integer sums, so the result is the same), where the position
        has at least NARROW_MIN_RUN entries: with fewer, widening the partial sums afterwards
        costs more than it saves.  Measured alone (int8, batch 1, 16 steps of random spikes,
        3x3 kernels, int32 time / int16 time): 16x16x64 → 64 0.98-0.99x at 1-2 %, 1.18x at 10 %,
        1.41x at 20 % (0.90x at 1 % with int16 at every position); 8x8x128 → 128 0.95-1.06x at
        1-2 %, 1.31x at 10 %, 1.43x at 20 %; 16x16x32 → 64 stride 2 (a pass sums fewer events)
        0.88x at 1 % (3.8 against 4.3 µs), 0.96-1.07x at 2-20 %; the synthetic CNN's convs at
        their own spike trains 1.10x and 1.37x.  A :attr:`sums16` kernel adds into ``acc16``
        itself (its int16 sums need no flush)."""
        w = self.w
        ci = f"({self.conv_input('kk')} - pos * {self.k.in_shape[2]})"
        col = f"{base} + ji"

        def wide() -> None:
            with w.block("for kk in range(run[0], run[1]):"):
                for offset, kh, kw in outputs:
                    with w.block(f"for ji in T.vectorized({lanes}):"):
                        dst = f"acc[b, {offset} + {col}]"
                        w(f"{dst} = {dst} + {self.conv_term(ci, col, 'kk', kh, kw)}")

        if self.sums16:
            with w.block("for kk in range(run[0], run[1]):"):
                for offset, kh, kw in outputs:
                    with w.block(f"for ji in T.vectorized({lanes}):"):
                        dst = f"acc16[{offset} + {col}]"
                        w(f"{dst} = {dst} + weight[{ci}, {kh}, {kw}, {col}]")
            return
        if not self.narrow_sums:
            wide()
            return
        slots = [(f"acc[b, {offset} + {col}]", f"weight[{ci}, {kh}, {kw}, {col}]") for offset, kh, kw in outputs]
        self.narrow_pass("run[0]", "run[1]", slots, lanes, wide)

    def narrow_pass(
        self, lo: str, hi: str, slots: Sequence[tuple[str, str]], lanes: int, wide: Callable[[], None]
    ) -> None:
        """The entries ``lo .. hi - 1`` (loop variable ``kk``) summed in int16 partial sums when
        there are at least NARROW_MIN_RUN of them, else by ``wide()``: per slot (its int32
        destination and its int8 weight, expressions in ``ji`` of a ``lanes``-wide vector), a
        local int16 vector adds every entry's weights, then is added to the destination (one
        widening per 32 weights instead of per 16).  The callers bound the partial sums below
        2^15 (:meth:`conv_pass`, :meth:`tile_chunk`)."""
        w = self.w
        self.parts += 1
        part = f"part{self.parts}"
        with w.block(f"if {hi} - {lo} >= {NARROW_MIN_RUN}:"):
            w(f'{part} = T.alloc_buffer(({len(slots) * lanes},), "int16", scope="local")')
            for t in range(len(slots)):
                with w.block(f"for ji in T.vectorized({lanes}):"):
                    w(f"{part}[{t * lanes} + ji] = T.int16(0)")
            with w.block(f"for kk in range({lo}, {hi}):"):
                for t, (_, weight) in enumerate(slots):
                    with w.block(f"for ji in T.vectorized({lanes}):"):
                        partial = f"{part}[{t * lanes} + ji]"
                        w(f'{partial} = {partial} + T.cast({weight}, "int16")')
            for t, (dst, _) in enumerate(slots):
                with w.block(f"for ji in T.vectorized({lanes}):"):
                    w(f'{dst} = {dst} + T.cast({part}[{t * lanes} + ji], "int32")')
        with w.block("else:"):
            wide()

    def accumulate_depthwise(self) -> None:
        """A depthwise conv of sample b as a gather: its events are written into a zeroed dense
        copy of its input ``xd``, then each output position adds, tap by tap, the tap's weight
        vector times the input's channel vector, LANES channels at a time.  Work: output
        positions × taps × C, whatever the events; used when at least 1 / DEPTHWISE_DENSE of the
        inputs spiked.  Each output element adds its taps in (kh, kw) order, which is the order
        of their input positions in the scatter; the inputs that did not spike add an exact
        zero, so the sums are the scatter's."""
        k, w = self.k, self.w
        g = k.conv
        h, wd, c = k.in_shape
        oh, ow, _ = k.out_shape
        operand = k.events(0)
        count, at, val = self.event_range(0)
        (sh, sw), (ph, pw), (dh, dw) = g.stride, g.padding, g.dilation
        w(f'xd = T.alloc_buffer(({h * wd * c},), "{self.adt}")')
        self.vector(h * wd * c, "0", lambda col: w(f"xd[{col}] = {_lit(0, self.adt)}"))
        # int32 sums of 0/1 events: xd holds a mask (-1 where the input spiked) and a tap adds
        # its weights ANDed with it, instead of an int32 multiply (vpmulld: two micro-ops);
        # mobilenet_v2's int8 depthwise convs alone, at their own spike trains: 1.06-1.09x
        # faster, at par with the fp32 ones (they were 1.1-1.2x slower)
        mask = self.adt == "int32" and not operand.graded
        value = self.to_acc(val("kk"), operand.val_dtype) if operand.graded else _lit(-1 if mask else 1, self.adt)
        with w.block(f"for kk in range({count}):"):
            w(f"xd[{at('kk')}] = {value}")
        with w.block(f"for oy in range({oh}):"):
            with w.block(f"for ox in range({ow}):"):
                with w.block(f"for kh in range({g.kernel[0]}):"):
                    w(f"iy = oy * {sh} - {ph} + kh * {dh}")
                    with w.block(f"if iy >= 0 and iy < {h}:"):
                        with w.block(f"for kw in range({g.kernel[1]}):"):
                            w(f"ix = ox * {sw} - {pw} + kw * {dw}")
                            with w.block(f"if ix >= 0 and ix < {wd}:"):

                                def tap(col: str) -> None:
                                    dst = f"acc[b, (oy * {ow} + ox) * {c} + {col}]"
                                    term = self.to_acc(f"weight[kh, kw, {col}]", self.wdt)
                                    x = f"xd[(iy * {wd} + ix) * {c} + {col}]"
                                    term = f"T.bitwise_and({term}, {x})" if mask else f"{term} * {x}"
                                    w(f"{dst} = {dst} + {term}")

                                self.vector(c, "0", tap)

    @contextmanager
    def positions(self, count: str, at: Callable[[str], str], c: int, h: int, wd: int) -> Iterator[None]:
        """A loop over the input positions of an ascending channels-last event list (a position's
        events are consecutive): the body sees ``pos``, ``iy``, ``ix`` and its events
        ``run[0] .. run[1] - 1``.  ``bnd[p]``, the first entry at a position ≥ p, is found by
        storing each entry's index at its position, last entry first (a position's first entry
        is stored last; plain stores: counting the entries per position instead made a chain of
        increments of one counter, 0.94-0.96x on mobilenet_v2's hundreds of events per
        position), then a minimum from the last position back; every position with entries runs
        the body.  Measured against the earlier scan from each position's first event to the
        next position's (a loop that ends at a data-dependent point, a mispredicted branch per
        position): synthetic CNN 1.18x / 1.12x (batch 1 / 32), resnet18 1.04-1.07x, mobilenet_v2
        and the digits CNN 1.00-1.05x (side by side, CPU time, logits identical)."""
        w = self.w
        n = h * wd
        w(f'bnd = T.alloc_buffer(({n + 1},), "int32")')
        w('run = T.alloc_buffer((2,), "int32", scope="local")')
        with w.block(f"for q in range({n + 1}):"):
            w(f"bnd[q] = {count}")
        with w.block(f"for kk in range({count}):"):
            entry = f"{count} - 1 - kk"
            w(f"bnd[T.floordiv({at(entry)}, {c})] = {entry}")
        with w.block(f"for q in range({n}):"):
            w(f"bnd[{n - 1} - q] = T.min(bnd[{n - 1} - q], bnd[{n} - q])")
        with w.block(f"for pos in range({h * wd}):"):
            with w.block("if bnd[pos] < bnd[pos + 1]:"):
                w("run[0] = bnd[pos]")
                w("run[1] = bnd[pos + 1]")
                w(f"ix = T.floormod(pos, {wd})")
                w(f"iy = T.floordiv(pos, {wd})")
                yield

    @contextmanager
    def every_position(self, h: int, wd: int, c: int) -> Iterator[None]:
        """The loop of :meth:`positions` for a dense current operand: every input position, its
        inputs ``run[0] .. run[1] - 1`` all C of its channels."""
        w = self.w
        w('run = T.alloc_buffer((2,), "int32", scope="local")')
        with w.block(f"for pos in range({h * wd}):"):
            w(f"run[0] = pos * {c}")
            w(f"run[1] = pos * {c} + {c}")
            w(f"ix = T.floormod(pos, {wd})")
            w(f"iy = T.floordiv(pos, {wd})")
            yield

    def conv_input(self, kk: str) -> str:
        """The flat channels-last input index of entry kk of the walk (an event's index, or kk
        itself for a current)."""
        if isinstance(self.k.operands[0], Current):
            return kk
        _, at, _ = self.event_range(0)
        return at(kk)

    def conv_term(self, ci: str, col: str, kk: str, kh: str | int = "kh", kw: str | int = "kw") -> str:
        """Entry kk's contribution to output column col at tap (kh, kw): W[ci, kh, kw, col]
        (times its value for a graded list or a current)."""
        operand = self.k.operands[0]
        weight = f"weight[{kh}, {kw}, {ci} + {col}]" if self.k.depthwise else f"weight[{ci}, {kh}, {kw}, {col}]"
        term = self.to_acc(weight, self.wdt)
        if isinstance(operand, Current):
            return f"{term} * cur0[b, {kk}]"
        _, _, val = self.event_range(0)
        return f"{term} * {self.to_acc(val(kk), operand.val_dtype)}" if operand.graded else term

    def conv_tap(self, base: str, width: int) -> None:
        """One tap of the current position: per block of up to CONV_BLOCK output channels, the
        sum over the position's events (the block's accumulator is loaded and stored once; an
        event reads a contiguous CONV_BLOCK-wide piece of its weight row)."""
        k, w = self.k, self.w
        _, ow, co = k.out_shape
        c = k.in_shape[2]
        ci = f"({self.conv_input('kk')} - pos * {c})"
        if k.in_shape[0] * k.in_shape[1] == 1:
            # a 1x1 input map (the last stages of mobilenet_v2: 160-1280 channels, weights of
            # 0.6-4.9 MB) is a linear layer: each entry adds its whole weight row, read once and
            # contiguously, instead of a CONV_BLOCK-wide piece of it per block (row pieces 5 KB
            # apart, which the prefetcher does not follow); same order of sums per output
            with w.block("for kk in range(run[0], run[1]):"):

                def row(col: str) -> None:
                    dst = f"acc[b, (oy * {ow} + ox) * {co} + {col}]"
                    w(f"{dst} = {dst} + {self.conv_term(ci, col, 'kk')}")

                self.vector(width, base, row)
            return
        for loop, var, lanes, offset in conv_blocks(width):
            with w.block(f"for {var} in {loop}:"):
                self.conv_pass([(f"(oy * {ow} + ox) * {co}", "kh", "kw")], lanes, f"{base} + {offset}")

    def conv_tap_grouped(self, cols: int, c: int, per_group: int) -> None:
        """One tap of the current position for a grouped conv: each event reaches its group's
        ``cols`` output channels (offset ``g0``)."""
        k, w = self.k, self.w
        _, ow, co = k.out_shape
        with w.block("for kk in range(run[0], run[1]):"):
            w(f"ci = {self.conv_input('kk')} - pos * {c}")
            w(f"g0 = T.floordiv(ci, {per_group}) * {cols}")

            def grouped(col: str) -> None:
                dst = f"acc[b, (oy * {ow} + ox) * {co} + g0 + {col}]"
                w(f"{dst} = {dst} + {self.conv_term('ci', col, 'kk')}")

            self.vector(cols, "0", grouped)

    def event_value(self, operand: Events, val_expr: str) -> str:
        """The scalar an event adds: its value (or 1) times the operand scale, in acc dtype."""
        v = self.to_acc(val_expr, operand.val_dtype) if operand.graded else _lit(1, self.adt)
        if operand.scale != 1.0:
            v = f"{v} * {_lit(operand.scale, self.adt)}"
        return v

    def windows(self) -> None:
        """Let-bind the range [y_lo, y_hi] × [x_lo, x_hi] of the pooling windows that hold the
        decoded input (iy, ix)."""
        k, w = self.k, self.w
        g = k.pool
        oh, ow, _ = k.out_shape
        for axis, (coord, out, tag) in enumerate((("iy", oh, "y"), ("ix", ow, "x"))):
            kk, s, p = g.kernel[axis], g.stride[axis], g.padding[axis]
            # windows o with o·s − p <= coord <= o·s − p + k − 1
            w(f"{tag}_lo = T.max(0, 0 - T.floordiv({kk - 1} - ({coord} + {p}), {s}))")
            w(f"{tag}_hi = T.min({out - 1}, T.floordiv({coord} + {p}, {s}))")

    def accumulate_pool(self) -> None:
        k, w = self.k, self.w
        _, ow, c = k.out_shape
        operand = k.events(0)
        count, at, val = self.event_range(0)
        with w.block(f"for k in range({count}):"):
            self.decode(at("k"))
            w(f"ev = {self.event_value(operand, val('k'))}")
            self.windows()
            with w.block("for oy in range(y_lo, T.max(y_hi + 1, y_lo)):"):
                with w.block("for ox in range(x_lo, T.max(x_hi + 1, x_lo)):"):
                    dst = f"acc[b, (oy * {ow} + ox) * {c} + ci]"
                    if k.pool.average:
                        w(f"{dst} = {dst} + ev / {self.divisor()}")
                    else:
                        w(f"{dst} = {dst} + ev")

    def divisor(self) -> str:
        """PyTorch's avg_pool2d divisor of window (oy, ox), as a float: with count_include_pad
        the window clipped to the padded input, else to the input."""
        g = self.k.pool
        h, wd, _ = self.k.in_shape
        sizes = []
        for axis, (o, size) in enumerate((("oy", h), ("ox", wd))):
            kk, s, p = g.kernel[axis], g.stride[axis], g.padding[axis]
            start = f"({o} * {s} - {p})"
            if g.count_include_pad:
                sizes.append(f"(T.min({start} + {kk}, {size + p}) - {start})")
            else:
                sizes.append(f"(T.min({start} + {kk}, {size}) - T.max({start}, 0))")
        return f'T.cast({sizes[0]} * {sizes[1]}, "{self.adt}")'

    def accumulate_remap(self) -> None:
        """Each element e of operand i (an event, or every element of a current) adds its value,
        times ``mul{i}[e]``, at ``map{i}[e]`` unless that is -1."""
        k, w = self.k, self.w
        for i, operand in enumerate(k.operands):
            mul = f" * mul{i}[e]" if k.multiplier else ""
            if isinstance(operand, Current):
                with w.block(f"for e in range({operand.cap}):"):
                    with w.block(f"if map{i}[e] >= 0:"):
                        w(f"acc[b, map{i}[e]] = acc[b, map{i}[e]] + cur{i}[b, e]{mul}")
                continue
            count, at, val = self.event_range(i)
            with w.block(f"for k in range({count}):"):
                w(f"e = {at('k')}")
                with w.block(f"if map{i}[e] >= 0:"):
                    v = self.to_acc(val("k"), operand.val_dtype) if operand.graded else _lit(1, self.adt)
                    w(f"acc[b, map{i}[e]] = acc[b, map{i}[e]] + {v}{mul}")

    def accumulate_maxpool(self) -> None:
        """Gated max pooling of sample b: add the events to the counts, then write each event
        into acc at every window whose winner it is (acc is zero elsewhere).  A sample in which
        at least 1 / MAXPOOL_DENSE of the inputs spiked runs :meth:`maxpool_dense`, the others
        :meth:`maxpool_scatter`."""
        h, wd, c = self.k.in_shape
        count, _, _ = self.event_range(0)
        with self.w.block(f"if {count} * {MAXPOOL_DENSE} >= {h * wd * c}:"):
            self.maxpool_dense()
        with self.w.block("else:"):
            self.maxpool_scatter()

    def maxpool_scatter(self) -> None:
        """The events walked by input position, as in :meth:`accumulate_conv`: the position's
        decode and its windows are computed once; per event only its channel's counts are
        compared, with the whole window or, where the kernel keeps each window's winner, with
        that one input (:meth:`take_window`)."""
        w = self.w
        h, wd, c = self.k.in_shape
        _, ow, _ = self.k.out_shape
        count, at, _ = self.event_range(0)
        ev = self.add_pool_counts("kk")
        with self.positions(count, at, c, h, wd):
            with self.over_windows():
                with w.block("for kk in range(run[0], run[1]):"):
                    w(f"e = {at('kk')}")
                    w(f"ci = e - pos * {c}")
                    w(f"o = (oy * {ow} + ox) * {c} + ci")
                    w("ce = count[b, e]")
                    if self.k.keeps_winners:
                        self.take_window(ev)
                    else:
                        with w.block(f"if {self.beaten_count()} == 0:"):
                            w(f"acc[b, o] = {ev}")

    def maxpool_dense(self) -> None:
        """Gated max pooling of sample b as a gather, vectorised over channels: the events are
        written into a zeroed dense copy ``xd`` of this step's input, which is added to the
        counts; then each window takes its inputs in row-major order (padding skipped), keeping per
        channel the largest count so far (a later input takes over only with more spikes: ties
        go to the first) and that input's value in ``xd``, which is the window's output (0,
        which the compaction drops, where the winner did not spike now).  That is the winner
        the scatter finds: the input no other input of the window beats.  Where the kernel
        keeps winners, ``win`` is set to the winner + 1, or 0 while the window's counts are
        all 0.  Work: windows × inputs per window × C, whatever the events."""
        k, w, adt = self.k, self.w, self.adt
        g = k.pool
        h, wd, c = k.in_shape
        oh, ow, _ = k.out_shape
        count, at, val = self.event_range(0)
        operand = k.events(0)
        ev = self.to_acc(val("kk"), operand.val_dtype) if operand.graded else _lit(1, adt)
        w(f'xd = T.alloc_buffer(({h * wd * c},), "{adt}")')
        self.vector(h * wd * c, "0", lambda col: w(f"xd[{col}] = {_lit(0, adt)}"))
        with w.block(f"for kk in range({count}):"):
            w(f"xd[{at('kk')}] = {ev}")
        # the counts in one vector pass (adding 0 where nothing spiked): an update per event
        # (a load and a store at a scattered address) took 2/3 of the kernel at 21 % density
        self.vector(h * wd * c, "0", lambda col: w(f"count[b, {col}] = count[b, {col}] + xd[{col}]"))
        keeps = k.keeps_winners
        for name, dtype in (("bc", adt), ("bv", adt)) + ((("bi", "int32"),) if keeps else ()):
            w(f'{name} = T.alloc_buffer(({LANES},), "{dtype}", scope="local")')
        (sy, sx), (py, px) = g.stride, g.padding
        full, tail = divmod(c, LANES)
        chunks = [(f"range({full})", "jv", LANES, f"jv * {LANES}", "ji")] if full else []
        if tail:
            chunks.append(("range(1)", "jt0", tail, str(full * LANES), "jt"))
        with w.block(f"for oy in range({oh}):"):
            with w.block(f"for ox in range({ow}):"):
                for loop, var, lanes, base, lane in chunks:
                    with w.block(f"for {var} in {loop}:"):
                        col = f"{base} + {lane}"
                        with w.block(f"for {lane} in T.vectorized({lanes}):"):
                            w(f'bc[{lane}] = T.min_value("{adt}")')
                            w(f"bv[{lane}] = {_lit(0, adt)}")
                            if keeps:
                                w(f"bi[{lane}] = 0")
                        for dy in range(g.kernel[0]):
                            for dx in range(g.kernel[1]):
                                y, x = f"(oy * {sy} - {py} + {dy})", f"(ox * {sx} - {px} + {dx})"
                                with w.block(f"if {y} >= 0 and {y} < {h} and {x} >= 0 and {x} < {wd}:"):
                                    j = f"({y} * {wd} + {x}) * {c} + {col}"
                                    with w.block(f"for {lane} in T.vectorized({lanes}):"):
                                        # T.Select, not T.if_then_else: that one guards its
                                        # loads, which makes them scalar (3x slower here)
                                        more = f"count[b, {j}] > bc[{lane}]"
                                        w(f"bv[{lane}] = T.Select({more}, xd[{j}], bv[{lane}])")
                                        if keeps:
                                            w(f"bi[{lane}] = T.Select({more}, {j}, bi[{lane}])")
                                        w(f"bc[{lane}] = T.max(bc[{lane}], count[b, {j}])")
                        with w.block(f"for {lane} in T.vectorized({lanes}):"):
                            o = f"(oy * {ow} + ox) * {c} + {col}"
                            w(f"acc[b, {o}] = bv[{lane}]")
                            if keeps:
                                w(f"win[b, {o}] = T.Select(bc[{lane}] > {_lit(0, adt)}, bi[{lane}] + 1, 0)")

    def take_window(self, ev: str) -> None:
        """Event e (count ce) against the kept winner of window o, on 0/1 spikes.

        Counts only grow, so after this step's events are added a window's winner is the best
        (most spikes, then the first in the window) of its previous winner and its inputs that
        spiked now: each event challenges the winner of every window holding it, and takes it
        over when it beats it.  The window's output spikes when its final winner spiked now,
        which is when some event took the window over or the previous winner is itself among
        the events; on 0/1 spikes every such event writes the same 1, so one pass suffices.
        ``win`` = 0 (no input of the window has spiked yet: every count in it is 0) loses to any
        event."""
        w = self.w
        w("held = win[b, o] - 1")
        w("ch = count[b, T.max(held, 0)]")
        with w.block("if held < 0 or held == e or ce > ch or (ce == ch and e < held):"):
            w("win[b, o] = e + 1")
            w(f"acc[b, o] = {ev}")

    def add_pool_counts(self, var: str) -> str:
        """Emit the loop (over ``var``) that adds sample b's events to the counts; returns an
        event's value expression in that loop's variable."""
        operand = self.k.events(0)
        count, at, val = self.event_range(0)
        ev = self.to_acc(val(var), operand.val_dtype) if operand.graded else _lit(1, self.adt)
        with self.w.block(f"for {var} in range({count}):"):
            self.w(f"count[b, {at(var)}] = count[b, {at(var)}] + {ev}")
        return ev

    @contextmanager
    def over_windows(self) -> Iterator[None]:
        """A loop over the pooling windows that hold the decoded position (iy, ix); the body sees
        the output (oy, ox) and the window's corner (y0, x0)."""
        w, g = self.w, self.k.pool
        self.windows()
        with w.block("for oy in range(y_lo, T.max(y_hi + 1, y_lo)):"):
            with w.block("for ox in range(x_lo, T.max(x_hi + 1, x_lo)):"):
                w(f"y0 = oy * {g.stride[0]} - {g.padding[0]}")
                w(f"x0 = ox * {g.stride[1]} - {g.padding[1]}")
                yield

    def beaten_count(self) -> str:
        """How many inputs of the window at (y0, x0) beat event e (channel ci, count ce): more spikes,
        or as many and earlier (same channel: flat order is row-major order); padding never beats."""
        g, (h, wd, c) = self.k.pool, self.k.in_shape
        beaten = []
        for dy in range(g.kernel[0]):
            for dx in range(g.kernel[1]):
                y, x = f"(y0 + {dy})", f"(x0 + {dx})"
                j = f"T.min(T.max(({y} * {wd} + {x}) * {c} + ci, 0), {h * wd * c - 1})"
                inside = f"{y} >= 0 and {y} < {h} and {x} >= 0 and {x} < {wd}"
                beats = f"count[b, {j}] > ce or (count[b, {j}] == ce and {j} < e)"
                beaten.append(f"T.if_then_else({inside} and ({beats}), 1, 0)")
        return " + ".join(beaten)

    def accumulate_maxpool_per_event(self) -> None:
        """Gated max pooling of sample b, one event at a time (the CUDA emitter's form): add the
        events to the counts, then write each event into acc at every window whose winner it is."""
        w = self.w
        c = self.k.in_shape[2]
        _, ow, _ = self.k.out_shape
        count, at, _ = self.event_range(0)
        ev = self.add_pool_counts("k")
        with w.block(f"for k in range({count}):"):
            w(f"e = {at('k')}")
            self.decode("e")
            w("ce = count[b, e]")
            with self.over_windows():
                with w.block(f"if {self.beaten_count()} == 0:"):
                    w(f"acc[b, (oy * {ow} + ox) * {c} + ci] = {ev}")

    def accumulate_add(self) -> None:
        k, w = self.k, self.w
        for i, operand in enumerate(k.operands):
            if isinstance(operand, Current):
                scale = f" * {_lit(operand.scale, self.adt)}" if operand.scale != 1.0 else ""

                def add_current(col: str, i: int = i, scale: str = scale) -> None:
                    w(f"acc[b, {col}] = acc[b, {col}] + cur{i}[b, {col}]{scale}")

                self.vector(k.n_out, "0", add_current)
                continue
            count, at, val = self.event_range(i)
            with w.block(f"for k in range({count}):"):
                w(f"acc[b, {at('k')}] = acc[b, {at('k')}] + {self.event_value(operand, val('k'))}")

    # -- epilogues -----------------------------------------------------------------------
    def over_pixels(self, base: str, width: int, stmt: Callable[[str, str], None]) -> None:
        """Emit ``stmt(j, co)`` for every element j whose channel co is in [base, base + width):
        vectorised over channels, both expressions inline."""
        if self.k.pixels > 1:
            with self.w.block(f"for p in range({self.k.pixels}):"):
                self.vector(width, base, lambda col: stmt(f"{self.pixel('p')}{col}", col))
        else:
            self.vector(width, base, lambda col: stmt(col, col))

    @property
    def has_vector_epilogue(self) -> bool:
        return self.needs_finish or self.k.epilogue is Epilogue.NEURON or self.k.readout

    def epilogue_vector(self, base: str, width: int) -> None:
        """The elementwise part of the epilogue on channels [base, base + width), vectorised:
        scale and bias, then the neuron update (the spike counts replace the current in acc)
        or the readout sum."""
        k, w, adt = self.k, self.w, self.adt
        if self.needs_finish:
            scale = k.operands[0].scale if self.scaled else 1.0

            def finish(j: str, co: str) -> None:
                rhs = f"acc[b, {j}]" if scale == 1.0 else f"acc[b, {j}] * {_lit(scale, adt)}"
                if k.bias:
                    rhs = f"{rhs} + bias[{co}]"
                w(f"acc[b, {j}] = {rhs}")

            self.over_pixels(base, width, finish)
        if k.epilogue is Epilogue.NEURON:
            self.over_pixels(base, width, self.neuron_element)
        elif k.readout:
            sb = self.sb
            self.over_pixels(base, width, lambda j, co: w(f"rsum[{sb}, {j}] = rsum[{sb}, {j}] + acc[b, {j}]"))

    def neuron_element(self, j: str, co: str) -> None:
        """v and s of element j in three vector statements, every expression inline (a let-bound
        value inside T.vectorized miscompiles): acc := v_new; v := reset(acc); acc := s."""
        k, w, adt, sb = self.k, self.w, self.adt, self.sb
        nrn = k.nrn
        th = f"vth[{co}]"
        current = f'T.cast(acc16[{j}], "int32")' if self.sums16 else f"acc[b, {j}]"
        w(f"acc[b, {j}] = {self.leak_expr(f'v[{sb}, {j}]', co)} + {current}")
        s = self.spike_expr(f"acc[b, {j}]", th)
        if nrn.reset is Reset.SOFT:
            w(f'v[{sb}, {j}] = acc[b, {j}] - T.cast({s}, "{adt}") * {th}')
        elif nrn.reset is Reset.HARD:
            w(f"v[{sb}, {j}] = T.if_then_else({s} > 0, vreset, acc[b, {j}])")
        else:
            w(f"v[{sb}, {j}] = acc[b, {j}]")
        w(f'acc[b, {j}] = T.cast({s}, "{adt}")')
        if k.readout:
            w(f"rsum[{sb}, {j}] = rsum[{sb}, {j}] + acc[b, {j}]")

    def epilogue_serial(self) -> None:
        """Compaction of the non-zeros of acc (spike counts or pooled sums) into the ordered
        event list of sample b; counts the spikes emitted.

        Vectorised: each LANES-wide block of acc writes the indices (and values) of its non-zeros
        at the list's end with one ``llvm.masked.compressstore`` (AVX-512's ``vpcompressd``; LLVM
        expands it into scalar stores where the CPU has none), and the list advances by the
        block's number of non-zeros.  Measured (one thread, 16384 neurons, 1-30 % density):
        2.8-3.5x faster than the branch-free scalar loop on AVX-512, 2.1x built for AVX2.  The
        last n mod LANES elements run that scalar loop: every element writes its index at the
        list's end, which advances only past a non-zero (no mispredicted branch; a branching
        loop cost ~4 ns per neuron at 19 % density).  The count and the spikes are summed in
        registers and stored once.  A neuron that fires at most once per step emits as many
        spikes as it has non-zeros, so its spikes are not summed again (a horizontal sum of a
        float block per 16 neurons: the synthetic CNN's 32x32x32 input layer 1.20-1.23x faster,
        16.2 -> 13.2 µs per step alone; compressing into a register and storing it whole
        instead of ``compressstore`` measured equal)."""
        k, w = self.k, self.w
        if k.epilogue is Epilogue.CURRENT:
            return
        # a burst neuron's spikes are summed apart from its non-zeros (nz[1])
        bursts = k.epilogue is Epilogue.NEURON and k.nrn.max_spikes > 1
        zero = _lit(0, self.adt)
        w('nz = T.alloc_buffer((2,), "int32", scope="local")')  # list length, spikes emitted
        w("nz[0] = 0")
        if bursts:
            w("nz[1] = 0")
        full = k.n_out // LANES
        if full:
            lanes = f"T.Ramp(jv * {LANES}, 1, {LANES})"
            block = f"acc[b, {lanes}]"
            nonzero = f"{block} != T.Broadcast({zero}, {LANES})"
            vtype = {"float32": "f32", "int32": "i32"}[self.adt]

            def reduce_add(vector: str) -> str:
                cast = f'T.Cast("int32x{LANES}", {vector})'
                return f'T.call_llvm_pure_intrin("int32", "llvm.vector.reduce.add.v{LANES}i32", {cast})'

            def compress(vector: str, dst: str, suffix: str) -> str:
                intrin = f"llvm.masked.compressstore.v{LANES}{suffix}"
                return f'T.evaluate(T.call_llvm_intrin("void", "{intrin}", {vector}, T.address_of({dst}[b, nz[0]]), {nonzero}))'

            with w.block(f"for jv in range({full}):"):
                w(compress(lanes, "idx_out", "i32"))  # nz[0] + the block's non-zeros <= its end: inside the row
                if k.out_graded:
                    w(compress(block, "val_out", vtype))
                if bursts:  # acc holds the spike counts s >= 0
                    w(f"nz[1] = nz[1] + {reduce_add(block)}")
                w(f"nz[0] = nz[0] + {reduce_add(nonzero)}")
        if k.n_out % LANES:
            with w.block(f"for j in range({full * LANES}, {k.n_out}):"):
                w("idx_out[b, nz[0]] = j")  # nz[0] <= j: inside the row
                if k.out_graded:
                    w("val_out[b, nz[0]] = acc[b, j]")
                if bursts:
                    w('nz[1] = nz[1] + T.cast(acc[b, j], "int32")')
                w(f"nz[0] = nz[0] + T.if_then_else(acc[b, j] != {zero}, 1, 0)")
        w(f"cnt_out[b{', 0' if k.steps else ''}] = nz[0]")
        if k.epilogue is Epilogue.NEURON:
            w(f"stats[{self.sb}] = stats[{self.sb}] + nz[{1 if bursts else 0}]")

    def spike_expr(self, vn: str, th: str) -> str:
        """s as an int32 expression of membrane expression vn and threshold th."""
        nrn, adt = self.k.nrn, self.adt
        if nrn.max_spikes == 1:
            cmp = ">" if nrn.strict else ">="
            return f"T.if_then_else({vn} {cmp} {th}, T.int32(1), T.int32(0))"
        bmax = nrn.max_spikes
        if adt == "float32":
            q = f"T.ceil({vn} / {th}) - T.float32(1.0)" if nrn.strict else f"T.floor({vn} / {th})"
            # clamp in float before the cast: a huge v must not overflow int32
            return f'T.cast(T.min(T.max({q}, T.float32(0.0)), T.float32({float(bmax)})), "int32")'
        q = f"T.floordiv({vn} - 1, {th})" if nrn.strict else f"T.floordiv({vn}, {th})"
        return f"T.min(T.max({q}, T.int32(0)), T.int32({bmax}))"

    def leak_expr(self, vold: str, co: str) -> str:
        nrn = self.k.nrn
        if not nrn.leak:
            return vold
        if self.adt == "float32":
            return f"beta[{co}] * {vold}"
        # fixed point, 12 fractional bits, rounded toward zero (Loihi's convention)
        mag = f'T.cast(T.shift_right({{x}} * T.cast(beta[{co}], "int64"), T.int64(12)), "int32")'
        pos = mag.format(x=f'T.cast({vold}, "int64")')
        neg = mag.format(x=f'(T.int64(0) - T.cast({vold}, "int64"))')
        return f"T.if_then_else({vold} >= 0, {pos}, 0 - {neg})"


class _CudaEmitter(_Emitter):
    """The GPU form of a layer kernel: one thread block per sample, threads over output columns.

    Each phase is a separate thread-bound loop nest, i.e. a separate kernel launch, so a phase
    sees everything the previous one wrote: (1) acc = bias or 0; (2) accumulation: a thread owns
    its output columns (linear, conv: channels) and walks every event, so no two threads write
    the same element; scatters of pooling (gated max pooling too) and add run on one thread per sample; (3) neuron update
    per element, the spike count kept in acc; (4) compaction of the non-zeros of acc into the
    ordered event list, one thread per sample.  Correctness first: the compaction and the
    scatters are serial per sample.
    """

    THREADS = 128

    def __init__(self, k: LayerKernel) -> None:
        super().__init__(k)
        self.B = "B" if k.batch is None else str(k.batch)

    def threads(self, width: int) -> int:
        return min(self.THREADS, width)

    @contextmanager
    def columns(self, width: int, col: str = "col") -> Iterator[None]:
        """Loop nest over sample b (block) and ``col`` in [0, width) (threads × chunks)."""
        w, nt = self.w, self.threads(width)
        chunks = -(-width // nt)
        with w.block(f'for b in T.thread_binding({self.B}, thread="blockIdx.x"):'):
            with w.block(f'for tx in T.thread_binding({nt}, thread="threadIdx.x"):'):
                with w.block(f"for jc in range({chunks}):"):
                    with w.block(f"if jc * {nt} + tx < {width}:"):
                        w(f"{col} = jc * {nt} + tx")
                        yield

    @contextmanager
    def serial(self) -> Iterator[None]:
        """Loop nest over sample b with a single thread."""
        with self.w.block(f'for b in T.thread_binding({self.B}, thread="blockIdx.x"):'):
            with self.w.block('for tx in T.thread_binding(1, thread="threadIdx.x"):'):
                yield

    def emit(self) -> str:
        k, w = self.k, self.w
        operand = k.events(0)
        if isinstance(operand, Events) and operand.layout is Layout.CSC:
            raise UnsupportedError("the weight-stationary CSC kernel is CPU-only; use ROWS or CSR on CUDA")
        self.signature()
        zero = _lit(0, self.adt)
        c = k.channels
        with self.columns(k.n_out, "j"):  # (1)
            w(f"acc[b, j] = {f'bias[T.floormod(j, {c})]' if self.init_with_bias else zero}")
        if k.op is Op.LINEAR:  # (2)
            with self.columns(c):
                self.linear_column()
        elif k.op is Op.CONV2D:
            with self.columns(c):
                self.conv_column()
        else:
            for i, o in enumerate(k.operands):
                if isinstance(o, Current):
                    times = f" * {_lit(o.scale, self.adt)}" if o.scale != 1.0 else ""
                    with self.columns(k.n_out, "j"):
                        w(f"acc[b, j] = acc[b, j] + cur{i}[b, j]{times}")
            if k.op is Op.POOL2D:
                with self.serial():
                    self.accumulate_pool()
            elif k.op is Op.MAXPOOL2D:
                with self.serial():
                    self.accumulate_maxpool_per_event()
            elif any(isinstance(o, Events) for o in k.operands):
                with self.serial():
                    for i, o in enumerate(k.operands):
                        if isinstance(o, Events):
                            count, at, val = self.event_range(i)
                            with w.block(f"for k in range({count}):"):
                                w(f"acc[b, {at('k')}] = acc[b, {at('k')}] + {self.event_value(o, val('k'))}")
        if self.needs_finish:
            factor = k.operands[0].scale if self.scaled else 1.0
            with self.columns(k.n_out, "j"):
                rhs = "acc[b, j]" if factor == 1.0 else f"acc[b, j] * {_lit(factor, self.adt)}"
                if k.bias:
                    rhs = f"{rhs} + bias[T.floormod(j, {c})]"
                w(f"acc[b, j] = {rhs}")
        if k.epilogue is Epilogue.NEURON:  # (3)
            with self.columns(k.n_out, "j"):
                self.neuron_element("j", f"T.floormod(j, {c})")
        if k.readout and k.epilogue is Epilogue.CURRENT:
            with self.columns(k.n_out, "j"):
                w("rsum[b, j] = rsum[b, j] + acc[b, j]")
        if k.epilogue in (Epilogue.NEURON, Epilogue.COMPACT):  # (4)
            with self.serial():
                self.epilogue_serial()
        return "\n".join(w.lines) + "\n"

    def epilogue_serial(self) -> None:
        """The branching compaction (one thread per sample): only the non-zeros are written."""
        k, w = self.k, self.w
        if k.epilogue is Epilogue.CURRENT:
            return
        w("cnt_out[b] = 0")
        with w.block(f"for j in range({k.n_out}):"):
            with w.block(f"if acc[b, j] != {_lit(0, self.adt)}:"):
                w("idx_out[b, cnt_out[b]] = j")
                if k.out_graded:
                    w("val_out[b, cnt_out[b]] = acc[b, j]")
                w("cnt_out[b] = cnt_out[b] + 1")
                if k.epilogue is Epilogue.NEURON:
                    w('stats[b] = stats[b] + T.cast(acc[b, j], "int32")')

    def linear_column(self) -> None:
        w = self.w
        operand = self.k.events(0)
        count, at, val = self.event_range(0)
        value = (lambda kk: self.to_acc(val(kk), operand.val_dtype)) if operand.graded else (lambda kk: None)
        with w.block(f"for k in range({count}):"):
            w(f"acc[b, col] = acc[b, col] + {self.weight_term(at('k'), 'col', value('k'))}")

    def conv_column(self) -> None:
        k, w = self.k, self.w
        _, ow, co = k.out_shape
        operand = k.events(0)
        count, at, val = self.event_range(0)
        with w.block(f"for k in range({count}):"):
            self.decode(at("k"))
            term = self.to_acc("weight[ci, kh, kw, col]", self.wdt)
            if operand.graded:
                term = f"{term} * {self.to_acc(val('k'), operand.val_dtype)}"
            with self.clipped_taps():
                dst = f"acc[b, (oy * {ow} + ox) * {co} + col]"
                w(f"{dst} = {dst} + {term}")
