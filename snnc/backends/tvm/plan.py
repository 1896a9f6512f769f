"""The kernel plan of a layer graph: what each value is at run time (event list, current, the
analog input), the mode each layer runs in, and the kernels it calls per batch variant.

Deterministic: the compiler and the runtime derive the same plan, hence the same kernel names,
from the same :class:`~snnc.backends.tvm.layers.LayerGraph`.  No TVM here.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, replace

from snnc.backends.tvm.kernels import (
    Current,
    Device,
    Epilogue,
    Events,
    LayerKernel,
    NeuronSpec,
    Op,
    Precision,
    add_kernel,
    conv2d_kernel,
    linear_kernel,
    pool2d_kernel,
    remap_kernel,
    spike_maxpool2d_kernel,
)
from snnc.backends.tvm.layers import LayerGraph, LayerOp, LayerSpec, Mode
from snnc.errors import TargetError, UnsupportedError


class ValueKind(enum.Enum):
    """How a value travels between layers (not the IR's :class:`~snnc.ir.types.Signal`: a spike
    or burst value is an event list here, and so is a pooled sum; an analog IR value is either
    the input, constant over the steps, or a per-step current)."""

    ANALOG = "analog"  # the direct-coded network input, the same every step
    EVENTS = "events"
    CURRENT = "current"


@dataclass(frozen=True, kw_only=True)
class Value:
    """A value inside the runtime.  ``hwc`` is (H, W, C) when the flat order of the value is
    channels-last of a [C, H, W] map (conv outputs and everything derived from them)."""

    kind: ValueKind
    shape: tuple[int, ...]
    hwc: tuple[int, int, int] | None = None
    graded: bool = False
    val_dtype: str = "float32"
    scale: float = 1.0
    dtype: str = "float32"  # currents: the accumulation dtype

    @property
    def n(self) -> int:
        return math.prod(self.shape)


@dataclass(kw_only=True)
class LayerPlan:
    """One layer (``layer.mode`` and ``layer.mode_batch1`` as they run), its values and the
    kernels it calls per batch variant (1 or None = any): each variant has its own mode, so a
    dense batched variant lists a densify kernel that an event batch-1 variant does not."""

    layer: LayerSpec
    inputs: list[Value]
    output: Value
    main: dict[int | None, LayerKernel] = field(default_factory=dict)
    densify: dict[int | None, LayerKernel] = field(default_factory=dict)
    # mode BLOCK: the batch-1 variant's kernel over a block of steps (layer-major order only;
    # ``main[1]`` is the event kernel that step-major order calls).  Not in :meth:`kernels`: an
    # artifact holds it only with layer-major step kernels, the only callers
    block: LayerKernel | None = None

    def kernel_for(self, batch: int) -> LayerKernel:
        """The main kernel for a batch size: the batch-1 specialisation where one exists."""
        return self.main[1] if batch == 1 and 1 in self.main else self.main[None]

    def densify_for(self, batch: int) -> LayerKernel:
        """The densify kernel of the variant that runs ``batch`` samples (in dense mode)."""
        return self.densify[1] if batch == 1 and 1 in self.main else self.densify[None]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def op(self) -> LayerOp:
        return self.layer.op

    @property
    def mode(self) -> Mode:
        """The batched kernels' mode."""
        return self.layer.mode

    def mode_for(self, batch: int | None) -> Mode:
        """The mode of the kernels that run ``batch`` samples (None: the batched kernels); the
        batch-1 kernels' where the layer has them (CPU)."""
        return self.layer.mode_for(1 if batch == 1 and 1 in self.main else None)

    def kernels(self) -> list[LayerKernel]:
        return list(self.main.values()) + list(self.densify.values())

    def host_product(self, batch: int | None) -> bool:
        """Whether the ``batch`` variant computes its synaptic current on the host (BLAS): a
        dense-mode layer, unless its main kernel reads the producer's current itself."""
        if self.mode_for(batch) is not Mode.DENSE:
            return False
        main = self.main[None] if batch is None else self.kernel_for(batch)
        return main.op is not Op.CONV2D or not isinstance(main.operands[0], Current)


def channels_last(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else None


def plan_graph(graph: LayerGraph, device: Device = Device.CPU) -> list[LayerPlan]:
    """The plan of every layer, in order."""
    inp = graph.input
    values: dict[str, Value] = {
        inp.name: Value(kind=ValueKind.ANALOG, shape=inp.shape, hwc=channels_last(inp.shape))
    }
    plans = []
    for layer in graph.layers:
        ins = [values[s] for s in layer.inputs]
        if layer.precision is Precision.INT8 and ins[0].kind is ValueKind.ANALOG and inp.quant_scale is None:
            raise TargetError(
                f"layer '{layer.name}': an int8 layer reads the analog input; give input.quant_scale "
                "(x_q = clip(rint(x·quant_scale), -128, 127))"
            )
        if layer.op is LayerOp.FLATTEN:
            out = replace(ins[0], shape=layer.shape)
            plan = LayerPlan(layer=layer, inputs=ins, output=out)
        else:
            plan = _plan_layer(layer, ins, device)
        plans.append(plan)
        values[layer.name] = plan.output
    return plans


def _hwc(v: Value) -> tuple[int, int, int]:
    """The (H, W, C) of a feature map (conv and pooling inputs are, by the layer graph's checks)."""
    if v.hwc is None:
        raise TargetError(f"a [C, H, W] value was expected, got shape {list(v.shape)}")
    return v.hwc


def _run_mode(layer: LayerSpec, x: Value, batch: int | None) -> Mode:
    """The mode a layer's ``batch`` variant runs in: analog values have no events to exploit
    (dense); pooling and add are event kernels either way."""
    if layer.op.weighted and x.kind is not ValueKind.EVENTS:
        return Mode.DENSE
    if not layer.op.weighted:
        return Mode.EVENT
    return layer.mode_for(batch)


def _neuron_spec(layer: LayerSpec) -> NeuronSpec | None:
    nrn = layer.neuron
    if nrn is None:
        return None
    return NeuronSpec(reset=nrn.reset, strict=nrn.strict, max_spikes=nrn.max_spikes, leak=nrn.leak)


def remap_multiplier(layer: LayerSpec, ins: list[Value], compact: bool) -> bool:
    """Whether a remap kernel multiplies each element (``mul{i}``): when the layer scales (its
    multipliers), or when its inputs' output scales cannot travel on with its output events
    (they differ, or the output is a current or a neuron's input)."""
    scales = {s.scale if s.kind is ValueKind.EVENTS else 1.0 for s in ins}
    return bool(layer.multipliers) or len(scales) > 1 or (not compact and scales != {1.0})


def _plan_layer(layer: LayerSpec, ins: list[Value], device: Device) -> LayerPlan:
    name, op = layer.name, layer.op
    precision = layer.precision
    adt = precision.acc_dtype
    neuron = _neuron_spec(layer)
    readout = layer.readout is not None
    shape = layer.shape
    hwc = channels_last(shape)
    kshape = hwc or shape  # the kernel's (channels-last) output shape
    x = ins[0]
    if x.kind is ValueKind.ANALOG and not op.weighted:
        raise UnsupportedError(
            f"layer '{name}': the analog input can feed linear/conv layers only, not {op.value}"
        )
    if x.kind is ValueKind.CURRENT and op.pooling:
        raise UnsupportedError(f"layer '{name}': pooling of an analog current; put a neuron before it")
    if any(s.kind is ValueKind.ANALOG for s in ins[1:]):
        raise UnsupportedError(f"layer '{name}': the analog input can feed linear/conv layers only")
    variants: tuple[int | None, ...] = (None, 1) if device is Device.CPU else (None,)
    modes = {batch: _run_mode(layer, x, batch) for batch in variants}
    # a weighted layer's batch-1 mode is written out on the CPU (graph.json gives both); pooling,
    # add and remap are event kernels in every variant, and CUDA has no batch-1 kernels
    layer = replace(layer, mode=modes[None], mode_batch1=modes.get(1) if op.weighted else None)
    if neuron is not None:
        epilogue = Epilogue.NEURON
    elif op.weighted or readout or any(s.kind is not ValueKind.EVENTS for s in ins):
        epilogue = Epilogue.CURRENT
    elif op is LayerOp.REMAP and layer.bias is not None:
        epilogue = Epilogue.CURRENT
    else:
        epilogue = Epilogue.COMPACT
    multiplier = op is LayerOp.REMAP and remap_multiplier(layer, ins, epilogue is Epilogue.COMPACT)
    if epilogue is Epilogue.CURRENT:
        out = Value(kind=ValueKind.CURRENT, shape=shape, hwc=hwc, dtype=adt)
    elif op is LayerOp.SPIKE_MAXPOOL:  # forwards its input's events: values and scale carry on
        out = Value(
            kind=ValueKind.EVENTS, shape=shape, hwc=hwc, graded=x.graded, val_dtype=adt, scale=x.scale
        )
    elif op is LayerOp.REMAP and epilogue is Epilogue.COMPACT:  # moved events keep their scale
        graded = multiplier or any(s.graded for s in ins)
        carried = 1.0 if multiplier else x.scale
        out = Value(kind=ValueKind.EVENTS, shape=shape, hwc=hwc, graded=graded, val_dtype=adt, scale=carried)
    else:
        graded = epilogue is Epilogue.COMPACT or (neuron is not None and neuron.max_spikes > 1)
        scale = layer.neuron.out_scale if layer.neuron is not None else 1.0
        out = Value(kind=ValueKind.EVENTS, shape=shape, hwc=hwc, graded=graded, val_dtype=adt, scale=scale)
    plan = LayerPlan(layer=layer, inputs=ins, output=out)
    if op.pooling and readout:
        raise UnsupportedError(f"layer '{name}': a pooling layer cannot be the readout")
    if op is LayerOp.ADD:
        if len({s.hwc for s in ins}) != 1:
            raise UnsupportedError(f"layer '{name}': add of values in different layouts (flattened and not)")
        if any(s.kind is ValueKind.CURRENT and s.dtype != adt for s in ins):
            raise UnsupportedError(f"layer '{name}': add of currents of another precision")
    has_bias = layer.bias is not None

    def events(v: Value) -> Events:
        return Events(cap=v.n, graded=v.graded, val_dtype=v.val_dtype, scale=v.scale)

    def kernels(batch: int | None) -> tuple[LayerKernel, LayerKernel | None]:
        """(main kernel, densify kernel or None) of the layer for a batch variant."""
        if op is LayerOp.CONV2D and x.kind is ValueKind.CURRENT and device is Device.CPU:
            # the product on the producer's current (a linear bottleneck's output) runs in the
            # generated code: no host call, so a timestep needs no round trip through Python.
            # Measured on mobilenet_v2's 15 such layers, product and neuron update together:
            # 2.4x faster than BLAS + a neuron kernel at batch 1, 1.5x at batch 32
            return conv2d_kernel(
                _hwc(x), shape[0], layer.geometry.conv_geometry(), batch=batch, precision=precision,
                bias=has_bias, epilogue=epilogue, neuron=neuron, readout=readout, device=device, current=True,
            ), None  # fmt: skip
        if op.weighted and modes[batch] is Mode.DENSE:
            # BLAS computes the synaptic current; this kernel adds the bias and runs the epilogue
            main = add_kernel(
                kshape,
                (Current(),),
                batch=batch,
                precision=precision,
                bias=has_bias,
                epilogue=epilogue,
                neuron=neuron,
                readout=readout,
                device=device,
            )
            densify = None
            if x.kind is ValueKind.EVENTS:
                densify = add_kernel(
                    x.hwc or x.shape,
                    (events(x),),
                    batch=batch,
                    precision=precision,
                    epilogue=Epilogue.CURRENT,
                    device=device,
                )
            return main, densify
        if op is LayerOp.REMAP:
            operands = tuple(
                Current(cap=s.n) if s.kind is ValueKind.CURRENT
                else Events(cap=s.n, graded=s.graded, val_dtype=s.val_dtype)
                for s in ins
            )  # fmt: skip
            return remap_kernel(
                kshape,
                operands,
                multiplier=multiplier,
                batch=batch,
                precision=precision,
                bias=has_bias,
                epilogue=epilogue,
                neuron=neuron,
                readout=readout,
                device=device,
            ), None
        if op is LayerOp.SPIKE_MAXPOOL:
            w = layer.geometry
            return spike_maxpool2d_kernel(
                _hwc(x),
                (kshape[0], kshape[1]),
                w.pool_geometry(),
                batch=batch,
                precision=precision,
                graded=x.graded,
                val_dtype=x.val_dtype,
                device=device,
            ), None
        if op.pooling:
            w = layer.geometry
            # a window-dependent divisor (ceil_mode overhang, padding not counted) is computed per
            # window in the kernel; a constant one travels as the operand scale
            average = op is LayerOp.AVGPOOL2D and (w.ceil_mode or not w.count_include_pad)
            constant = op is LayerOp.AVGPOOL2D and not average
            scale = x.scale / (w.kernel[0] * w.kernel[1]) if constant else x.scale
            return pool2d_kernel(
                _hwc(x),
                (kshape[0], kshape[1]),
                w.pool_geometry(average),
                scale=scale,
                batch=batch,
                precision=precision,
                graded=x.graded,
                val_dtype=x.val_dtype,
                epilogue=epilogue,
                neuron=neuron,
                device=device,
            ), None
        if op is LayerOp.ADD:
            operands = tuple(Current(scale=1.0) if s.kind is ValueKind.CURRENT else events(s) for s in ins)
            return add_kernel(
                x.hwc or shape,
                operands,
                batch=batch,
                precision=precision,
                epilogue=epilogue,
                neuron=neuron,
                readout=readout,
                device=device,
            ), None
        # a weighted layer: the same event operand and epilogue for linear and conv2d
        weighted = functools.partial(
            linear_kernel if op is LayerOp.LINEAR else conv2d_kernel, batch=batch, precision=precision,
            graded=x.graded, val_dtype=x.val_dtype, scale=x.scale, bias=has_bias, epilogue=epilogue, neuron=neuron,
            readout=readout, device=device,
        )
        if op is LayerOp.LINEAR:  # the tiled kernel is CPU-only: CUDA runs its mode as events
            return weighted(x.n, shape[0], tiled=modes[batch] is Mode.TILED and device is Device.CPU), None
        conv = weighted(_hwc(x), shape[0], layer.geometry.conv_geometry())
        if layer.int16_sums and conv.can_sum16:
            conv = replace(conv, sums16=True, name="")
        return conv, None

    # CPU: a batch-1 variant runs serially (no parallel launch to wait for) or over channel slices
    for batch in variants:
        main, densify = kernels(batch)
        plan.main[batch] = main
        if densify is not None:
            plan.densify[batch] = densify
    if modes.get(1) is Mode.BLOCK and device is Device.CPU:
        plan.block = replace(plan.main[1], batch=None, slices=None, tiled=True, steps=True, name="")
    return plan
