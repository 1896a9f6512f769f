"""Compile a layer graph into a TVM event artifact, and run the artifact.

The artifact directory (format: ``format.md`` beside this file) holds

* ``lib.so``: every layer kernel of the graph, compiled for one target (``export_library``);
* ``graph.json``: the normalised layer list (shapes, kernel choice, neuron parameters, kernel names);
* ``params.safetensors``: weights, biases and neuron parameters already in kernel layout and dtype.

:class:`EventRuntime` runs it over T timesteps on batches of samples.  It imports numpy,
safetensors and TVM only (no torch).  Per timestep, an event-mode layer is one kernel call that
reads its input's spike list and writes the next one; a dense-mode layer is a densify kernel, a
BLAS matmul (numpy) and a neuron kernel.  A layer that reads the analog (direct-coded) input
gets the same current every step, so it is computed once per batch.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from safetensors.numpy import load_file, save_file

from snnc.backends.tvm import kernel_cache  # sets TVM_NUM_THREADS (read at TVM's first parallel call)
from snnc.backends.tvm.kernels import (
    Conv2dGeometry,
    Current,
    Device,
    Epilogue,
    Events,
    LayerKernel,
    NeuronSpec,
    Pool2dGeometry,
    Precision,
    Reset,
    add_kernel,
    conv2d_kernel,
    conv_out_size,
    linear_kernel,
    pool2d_kernel,
    spike_maxpool2d_kernel,
)
from snnc.errors import InputFileError, TargetError, UnsupportedError, did_you_mean

FORMAT = "snnc-tvm-events"
VERSION = 1
LIB, GRAPH, PARAMS = "lib.so", "graph.json", "params.safetensors"
DECAY_BITS = 12  # int8 path: beta as a 12-bit fixed-point decay (Loihi's convention)


class LayerOp(enum.Enum):
    LINEAR = "linear"
    CONV2D = "conv2d"
    SUMPOOL2D = "sumpool2d"
    AVGPOOL2D = "avgpool2d"
    SPIKE_MAXPOOL = "spike_maxpool"  # gated max pooling (state: accumulated spike counts)
    ADD = "add"
    FLATTEN = "flatten"


class Mode(enum.Enum):
    EVENT = "event"  # work proportional to input events
    DENSE = "dense"  # densify + BLAS matmul; for layers whose calibrated density is high


class ReadoutMode(enum.Enum):
    MEAN_CURRENT = "mean_current"
    SPIKE_COUNT = "spike_count"


class Kind(enum.Enum):
    ANALOG = "analog"  # the direct-coded network input, the same every step
    EVENTS = "events"
    CURRENT = "current"


_LAYER_KEYS = {
    "name", "op", "inputs", "precision", "mode", "weight", "bias", "stride", "padding", "dilation", "groups",
    "kernel", "ceil_mode", "count_include_pad", "neuron", "readout",
}  # fmt: skip
_NEURON_KEYS = {"v_th", "beta", "reset", "v_reset", "v_init", "strict", "max_spikes", "out_scale"}


_POOLS = (LayerOp.SUMPOOL2D, LayerOp.AVGPOOL2D, LayerOp.SPIKE_MAXPOOL)

# ---------------------------------------------------------------------------------------
# normalisation: the user's layer graph -> graph.json (defaults filled, shapes inferred)


def _pair(value, what: str, layer: str) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [int(value[0]), int(value[1])]
    raise TargetError(f"layer '{layer}': {what} must be an int or a pair of ints, got {value!r}")


def _enum(cls, value, what: str, layer: str):
    try:
        return cls(value)
    except ValueError:
        choices = [m.value for m in cls]
        raise TargetError(
            f"layer '{layer}': unknown {what} {value!r}; expected one of {choices}{did_you_mean(str(value), choices)}"
        ) from None


def _param_shape(params: dict[str, tuple[int, ...]], name: str, layer: str, role: str) -> tuple[int, ...]:
    if name not in params:
        raise TargetError(
            f"layer '{layer}': {role} parameter '{name}' is missing{did_you_mean(name, params)}"
        )
    return tuple(params[name])


def _neuron_record(spec: dict, layer: str, channels: int, params: dict[str, tuple[int, ...]]) -> dict:
    unknown = set(spec) - _NEURON_KEYS
    if unknown:
        raise TargetError(
            f"layer '{layer}': unknown neuron fields {sorted(unknown)}; known: {sorted(_NEURON_KEYS)}"
        )
    rec = {
        "v_th": spec.get("v_th", 1.0),
        "beta": spec.get("beta", 1.0),
        "reset": _enum(Reset, spec.get("reset", "soft"), "reset", layer).value,
        "v_reset": float(spec.get("v_reset", 0.0)),
        "v_init": float(spec.get("v_init", 0.0)),
        "strict": bool(spec.get("strict", False)),
        "max_spikes": int(spec.get("max_spikes", 1)),
        "out_scale": float(spec.get("out_scale", 1.0)),
    }
    if rec["max_spikes"] < 1:
        raise TargetError(f"layer '{layer}': max_spikes={rec['max_spikes']} must be >= 1")
    for role in ("v_th", "beta"):
        value = rec[role]
        if isinstance(value, str):
            n = math.prod(_param_shape(params, value, layer, role))
            if n not in (1, channels):
                raise TargetError(
                    f"layer '{layer}': {role} '{value}' has {n} values, the layer has {channels} channels"
                )
        elif not isinstance(value, (int, float)):
            raise TargetError(f"layer '{layer}': {role} must be a number or a parameter name, got {value!r}")
    return rec


def normalize_graph(layer_graph: dict, params: dict[str, tuple[int, ...]]) -> dict:
    """Check a layer graph against parameter shapes and fill every default; return the
    ``graph.json`` record (without kernel names and with source parameter names)."""
    if not isinstance(layer_graph, dict) or "layers" not in layer_graph or "input" not in layer_graph:
        raise TargetError("a layer graph is a dict with 'input' and 'layers' (see snnc/backends/tvm/format.md)")
    inp = dict(layer_graph["input"])
    in_name = inp.get("name", "input")
    encoding = inp.get("encoding", "direct")
    if encoding != "direct":
        raise UnsupportedError(f"input encoding '{encoding}': the TVM backend runs direct-coded inputs only")
    in_shape = [int(d) for d in inp["shape"]]
    if len(in_shape) not in (1, 3):
        raise TargetError(f"input shape {in_shape} must be [n] or [C, H, W]")
    graph = {
        "format": FORMAT,
        "version": VERSION,
        "name": layer_graph.get("name", "network"),
        "timesteps": int(layer_graph.get("timesteps", 1)),
        "input": {
            "name": in_name,
            "shape": in_shape,
            "encoding": "direct",
            "quant_scale": inp.get("quant_scale"),
        },
        "layers": [],
    }
    shapes = {in_name: in_shape}
    previous = in_name
    readouts = []
    for raw in layer_graph["layers"]:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TargetError(f"every layer needs a name, got {raw!r}")
        if name in shapes:
            raise TargetError(f"layer name '{name}' is used twice")
        unknown = set(raw) - _LAYER_KEYS
        if unknown:
            raise TargetError(
                f"layer '{name}': unknown fields {sorted(unknown)}; known: {sorted(_LAYER_KEYS)}"
            )
        op = _enum(LayerOp, raw.get("op"), "op", name)
        inputs = list(raw.get("inputs", [previous]))
        for src in inputs:
            if src not in shapes:
                raise TargetError(
                    f"layer '{name}': input '{src}' is not defined before it{did_you_mean(src, shapes)}"
                )
        rec = {
            "name": name,
            "op": op.value,
            "inputs": inputs,
            "precision": _enum(Precision, raw.get("precision", "float32"), "precision", name).value,
            "mode": _enum(Mode, raw.get("mode", "event"), "mode", name).value,
        }
        x = shapes[inputs[0]]
        if op is not LayerOp.ADD and len(inputs) != 1:
            raise TargetError(f"layer '{name}': {op.value} takes one input, got {len(inputs)}")
        if op is LayerOp.LINEAR:
            ws = _param_shape(params, raw.get("weight", ""), name, "weight")
            if len(ws) != 2 or ws[1] != math.prod(x):
                raise TargetError(
                    f"layer '{name}': weight {list(ws)} does not map an input of {x} (expected [out, {math.prod(x)}])"
                )
            shape = [ws[0]]
        elif op is LayerOp.CONV2D:
            if len(x) != 3:
                raise TargetError(f"layer '{name}': conv2d expects a [C, H, W] input, got {x}")
            ws = _param_shape(params, raw.get("weight", ""), name, "weight")
            if int(raw.get("groups", 1)) != 1:
                raise UnsupportedError(
                    f"layer '{name}': grouped convolution (groups={raw['groups']}) is not supported"
                )
            if len(ws) != 4 or ws[1] != x[0]:
                raise TargetError(
                    f"layer '{name}': weight {list(ws)} does not fit a {x} input (expected [Cout, {x[0]}, KH, KW])"
                )
            for key, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
                rec[key] = _pair(raw.get(key, default), key, name)
            rec["kernel"] = [ws[2], ws[3]]
            oh = conv_out_size(x[1], ws[2], rec["stride"][0], rec["padding"][0], rec["dilation"][0])
            ow = conv_out_size(x[2], ws[3], rec["stride"][1], rec["padding"][1], rec["dilation"][1])
            if oh <= 0 or ow <= 0:
                raise TargetError(f"layer '{name}': kernel {ws[2]}x{ws[3]} does not fit input {x}")
            shape = [ws[0], oh, ow]
        elif op in _POOLS:
            if len(x) != 3:
                raise TargetError(f"layer '{name}': {op.value} expects a [C, H, W] input, got {x}")
            rec["kernel"] = _pair(raw.get("kernel", 2), "kernel", name)
            rec["stride"] = _pair(raw.get("stride", rec["kernel"]), "stride", name)
            rec["padding"] = _pair(raw.get("padding", 0), "padding", name)
            if raw.get("ceil_mode", False) or not raw.get("count_include_pad", True):
                raise UnsupportedError(
                    f"layer '{name}': {op.value} with ceil_mode or count_include_pad=False is not supported"
                )
            oh = conv_out_size(x[1], rec["kernel"][0], rec["stride"][0], rec["padding"][0])
            ow = conv_out_size(x[2], rec["kernel"][1], rec["stride"][1], rec["padding"][1])
            if oh <= 0 or ow <= 0:
                raise TargetError(f"layer '{name}': window {rec['kernel']} does not fit input {x}")
            shape = [x[0], oh, ow]
        elif op is LayerOp.ADD:
            if len(inputs) < 2:
                raise TargetError(f"layer '{name}': add takes at least two inputs")
            for src in inputs[1:]:
                if shapes[src] != x:
                    raise TargetError(f"layer '{name}': add of {x} and {shapes[src]} ('{src}')")
            shape = list(x)
        else:  # flatten
            shape = [math.prod(x)]
        channels = shape[0]
        if op in (LayerOp.LINEAR, LayerOp.CONV2D):
            rec["weight"] = raw["weight"]
            rec["bias"] = raw.get("bias")
            if rec["bias"] is not None:
                bs = _param_shape(params, rec["bias"], name, "bias")
                if math.prod(bs) != channels:
                    raise TargetError(
                        f"layer '{name}': bias has {math.prod(bs)} values, the layer has {channels} channels"
                    )
        neuron = raw.get("neuron")
        if neuron is not None and op in (LayerOp.FLATTEN, LayerOp.SPIKE_MAXPOOL):
            raise TargetError(f"layer '{name}': {op.value} has no neuron")
        rec["neuron"] = None if neuron is None else _neuron_record(neuron, name, channels, params)
        readout = raw.get("readout")
        if readout is not None:
            mode = _enum(ReadoutMode, readout, "readout", name)
            if (mode is ReadoutMode.SPIKE_COUNT) != (rec["neuron"] is not None):
                raise TargetError(
                    f"layer '{name}': readout '{mode.value}' needs a layer "
                    f"{'with' if mode is ReadoutMode.SPIKE_COUNT else 'without'} a neuron"
                )
            if op is LayerOp.FLATTEN:
                raise TargetError(f"layer '{name}': a flatten cannot be the readout")
            readouts.append(name)
            readout = mode.value
        rec["readout"] = readout
        rec["shape"] = shape
        graph["layers"].append(rec)
        shapes[name] = shape
        previous = name
    if len(readouts) != 1:
        raise TargetError(
            f"the layer graph needs exactly one layer with a 'readout', found {readouts or 'none'}"
        )
    graph["output"] = readouts[0]
    return graph


# ---------------------------------------------------------------------------------------
# the kernel plan: which kernels a normalised graph needs, and what each value looks like


@dataclass(frozen=True)
class Signal:
    """What a value is inside the runtime.  ``hwc`` is (H, W, C) when the flat order of the
    value is channels-last of a [C, H, W] map (conv outputs and everything derived from them)."""

    kind: Kind
    shape: tuple[int, ...]
    hwc: tuple[int, int, int] | None = None
    graded: bool = False
    val_dtype: str = "float32"
    scale: float = 1.0
    dtype: str = "float32"  # currents: the accumulation dtype

    @property
    def n(self) -> int:
        return math.prod(self.shape)


@dataclass
class LayerPlan:
    """One layer: its signals and the kernels it calls per batch variant (1 or None=any)."""

    record: dict
    inputs: list[Signal]
    output: Signal
    main: dict[int | None, LayerKernel] = field(default_factory=dict)
    densify: dict[int | None, LayerKernel] = field(default_factory=dict)

    def kernel_for(self, batch: int) -> LayerKernel:
        """The main kernel for a batch size: the batch-1 specialisation where one exists."""
        return self.main.get(1, self.main[None]) if batch == 1 else self.main[None]

    def densify_for(self, batch: int) -> LayerKernel:
        return self.densify.get(1, self.densify[None]) if batch == 1 else self.densify[None]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def op(self) -> LayerOp:
        return LayerOp(self.record["op"])

    @property
    def mode(self) -> Mode:
        return Mode(self.record["mode"])

    def kernels(self) -> list[LayerKernel]:
        return list(self.main.values()) + list(self.densify.values())


def _channels_last(shape: list[int] | tuple[int, ...]) -> tuple[int, int, int] | None:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else None


def _neuron_spec(rec: dict) -> NeuronSpec:
    beta = rec["beta"]
    return NeuronSpec(
        reset=Reset(rec["reset"]),
        strict=rec["strict"],
        max_spikes=rec["max_spikes"],
        leak=isinstance(beta, str) or float(beta) != 1.0,
    )


def plan_graph(graph: dict, device: Device = Device.CPU) -> list[LayerPlan]:
    """The kernels of a normalised graph (deterministic: compile and run derive the same names)."""
    inp = graph["input"]
    signals: dict[str, Signal] = {
        inp["name"]: Signal(Kind.ANALOG, tuple(inp["shape"]), _channels_last(inp["shape"]))
    }
    plans = []
    for rec in graph["layers"]:
        op = LayerOp(rec["op"])
        ins = [signals[s] for s in rec["inputs"]]
        integer = Precision(rec["precision"]) is Precision.INT8
        if integer and ins[0].kind is Kind.ANALOG and inp.get("quant_scale") is None:
            raise TargetError(
                f"layer '{rec['name']}': an int8 layer reads the analog input; give input.quant_scale "
                "(x_q = clip(rint(x·quant_scale), -128, 127))"
            )
        if op is LayerOp.FLATTEN:
            x = ins[0]
            out = Signal(x.kind, tuple(rec["shape"]), x.hwc, x.graded, x.val_dtype, x.scale, x.dtype)
            plans.append(LayerPlan(rec, ins, out))
            signals[rec["name"]] = out
            continue
        plan = _plan_layer(rec, op, ins, device)
        plans.append(plan)
        signals[rec["name"]] = plan.output
    return plans


def _plan_layer(rec: dict, op: LayerOp, ins: list[Signal], device: Device) -> LayerPlan:
    name = rec["name"]
    precision = Precision(rec["precision"])
    adt = precision.acc_dtype
    nrn = rec["neuron"]
    neuron = _neuron_spec(nrn) if nrn else None
    readout = rec["readout"] is not None
    shape = tuple(rec["shape"])
    hwc = _channels_last(shape)
    kshape = hwc or shape  # the kernel's (channels-last) output shape
    x = ins[0]
    if x.kind is Kind.ANALOG and op not in (LayerOp.LINEAR, LayerOp.CONV2D):
        raise UnsupportedError(
            f"layer '{name}': the analog input can feed linear/conv layers only, not {op.value}"
        )
    if x.kind is Kind.CURRENT and op in _POOLS:
        raise UnsupportedError(f"layer '{name}': pooling of an analog current; put a neuron before it")
    mode = Mode(rec["mode"])
    if op in (LayerOp.LINEAR, LayerOp.CONV2D) and x.kind is not Kind.EVENTS:
        mode = Mode.DENSE  # analog values have no events to exploit
        rec["mode"] = mode.value
    if op not in (LayerOp.LINEAR, LayerOp.CONV2D) and mode is Mode.DENSE:
        mode = Mode.EVENT  # pooling and add are event kernels either way
        rec["mode"] = mode.value
    if nrn is not None:
        epilogue = Epilogue.NEURON
    elif op in (LayerOp.LINEAR, LayerOp.CONV2D) or any(s.kind is not Kind.EVENTS for s in ins):
        epilogue = Epilogue.CURRENT
    else:
        epilogue = Epilogue.COMPACT
    if epilogue is Epilogue.CURRENT:
        out = Signal(Kind.CURRENT, shape, hwc, dtype=adt)
    elif op is LayerOp.SPIKE_MAXPOOL:  # forwards its input's events: values and scale carry on
        out = Signal(Kind.EVENTS, shape, hwc, x.graded, adt, x.scale)
    else:
        graded = epilogue is Epilogue.COMPACT or (neuron is not None and neuron.max_spikes > 1)
        scale = nrn["out_scale"] if nrn else 1.0
        out = Signal(Kind.EVENTS, shape, hwc, graded, adt, scale)
    plan = LayerPlan(rec, ins, out)
    if op in _POOLS and readout:
        raise UnsupportedError(f"layer '{name}': a pooling layer cannot be the readout")
    if op is LayerOp.ADD:
        if len({s.hwc for s in ins}) != 1:
            raise UnsupportedError(f"layer '{name}': add of values in different layouts (flattened and not)")
        if any(s.kind is Kind.CURRENT and s.dtype != adt for s in ins):
            raise UnsupportedError(f"layer '{name}': add of currents of another precision")
    has_bias = rec.get("bias") is not None

    def kernels(batch: int | None) -> tuple[LayerKernel, LayerKernel | None]:
        """(main kernel, densify kernel or None) of the layer for a batch variant."""
        common = {"batch": batch, "precision": precision, "device": device}
        layer = common | {"epilogue": epilogue, "neuron": neuron}
        if op in (LayerOp.LINEAR, LayerOp.CONV2D) and mode is Mode.DENSE:
            # BLAS computes the synaptic current; this kernel adds the bias and runs the epilogue
            main = add_kernel(kshape, (Current(),), bias=has_bias, readout=readout, **layer)
            densify = None
            if x.kind is Kind.EVENTS:
                operand = Events(x.n, graded=x.graded, val_dtype=x.val_dtype, scale=x.scale)
                densify = add_kernel(x.hwc or x.shape, (operand,), epilogue=Epilogue.CURRENT, **common)
            return main, densify
        if op is LayerOp.SPIKE_MAXPOOL:
            g = Pool2dGeometry(tuple(rec["kernel"]), tuple(rec["stride"]), tuple(rec["padding"]))
            return spike_maxpool2d_kernel(
                x.hwc, kshape[:2], g, graded=x.graded, val_dtype=x.val_dtype, **common
            ), None
        if op in (LayerOp.SUMPOOL2D, LayerOp.AVGPOOL2D):
            g = Pool2dGeometry(tuple(rec["kernel"]), tuple(rec["stride"]), tuple(rec["padding"]))
            scale = x.scale / (g.kernel[0] * g.kernel[1]) if op is LayerOp.AVGPOOL2D else x.scale
            return pool2d_kernel(
                x.hwc, kshape[:2], g, scale=scale, graded=x.graded, val_dtype=x.val_dtype, **layer
            ), None
        if op is LayerOp.ADD:
            operands = tuple(
                Current(1.0) if s.kind is Kind.CURRENT else Events(s.n, graded=s.graded, val_dtype=s.val_dtype, scale=s.scale)
                for s in ins
            )  # fmt: skip
            return add_kernel(x.hwc or shape, operands, readout=readout, **layer), None
        events = {
            "graded": x.graded,
            "val_dtype": x.val_dtype,
            "scale": x.scale,
            "bias": has_bias,
            "readout": readout,
        }
        if op is LayerOp.LINEAR:
            return linear_kernel(x.n, shape[0], **events, **layer), None
        g = Conv2dGeometry(
            tuple(rec["kernel"]), tuple(rec["stride"]), tuple(rec["padding"]), tuple(rec["dilation"])
        )
        return conv2d_kernel(x.hwc, shape[0], g, **events, **layer), None

    # CPU: a batch-1 variant runs serially (no parallel launch to wait for) or over channel slices
    for batch in (None, 1) if device is Device.CPU else (None,):
        main, densify = kernels(batch)
        plan.main[batch] = main
        if densify is not None:
            plan.densify[batch] = densify
    return plan


# ---------------------------------------------------------------------------------------
# parameters: source (PyTorch) layouts -> kernel layouts


def _exact_int(a: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    r = np.rint(a)
    if not np.array_equal(r, a) or (r.size and (r.min() < lo or r.max() > hi)):
        raise UnsupportedError(f"{what} must hold integers in [{lo}, {hi}] for the int8 path")
    return r


def _per_channel(value, params: dict[str, np.ndarray], channels: int) -> np.ndarray:
    arr = np.asarray(params[value] if isinstance(value, str) else value, dtype=np.float64).reshape(-1)
    return np.broadcast_to(arr, (channels,)).copy()


def kernel_params(
    graph: dict, plans: list[LayerPlan], params: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Weights and neuron parameters of every layer in kernel layout and dtype; records the
    artifact names in each layer's ``params`` field and keeps the source names in ``source``."""
    out: dict[str, np.ndarray] = {}
    for plan in plans:
        rec, name = plan.record, plan.name
        if plan.op is LayerOp.FLATTEN:
            continue
        integer = Precision(rec["precision"]) is Precision.INT8
        adt = np.int32 if integer else np.float32
        names: dict[str, str] = {}
        source: dict[str, str] = {}
        channels = rec["shape"][0]
        if plan.op in (LayerOp.LINEAR, LayerOp.CONV2D):
            w = np.asarray(params[rec["weight"]], dtype=np.float64)
            x = plan.inputs[0]
            if plan.op is LayerOp.LINEAR:
                w = w.T  # [n_in, n_out]
                if x.hwc is not None:  # rows follow the producer's channels-last neuron order
                    h, wd, c = x.hwc
                    w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(h * wd * c, -1)
            else:
                w = w.transpose(1, 2, 3, 0)  # [Cin, KH, KW, Cout]
            if integer:
                w = _exact_int(w, -128, 127, f"layer '{name}': weight")
            out[f"{name}.weight"] = np.ascontiguousarray(w.astype(np.int8 if integer else np.float32))
            names["weight"], source["weight"] = f"{name}.weight", rec["weight"]
            if rec.get("bias") is not None:
                b = np.asarray(params[rec["bias"]], dtype=np.float64).reshape(-1)
                if integer:
                    b = _exact_int(b, -(2**31), 2**31 - 1, f"layer '{name}': bias")
                out[f"{name}.bias"] = b.astype(adt)
                names["bias"], source["bias"] = f"{name}.bias", rec["bias"]
        nrn = rec["neuron"]
        if nrn is not None:
            vth = _per_channel(nrn["v_th"], params, channels)
            if np.any(vth <= 0):
                raise TargetError(f"layer '{name}': v_th must be > 0")
            beta = _per_channel(nrn["beta"], params, channels)
            v0 = nrn["v_init"] * vth
            if integer:
                vth = _exact_int(vth, 1, 2**31 - 1, f"layer '{name}': v_th")
                decay = beta * (1 << DECAY_BITS)
                beta = _exact_int(decay, 0, 1 << DECAY_BITS, f"layer '{name}': beta·4096")
                v0 = _exact_int(v0, -(2**31), 2**31 - 1, f"layer '{name}': v_init·v_th")
                _exact_int(np.array([nrn["v_reset"]]), -(2**31), 2**31 - 1, f"layer '{name}': v_reset")
            out[f"{name}.v_th"] = vth.astype(adt)
            out[f"{name}.beta"] = beta.astype(adt)
            out[f"{name}.v_init"] = v0.astype(adt)
            names |= {"v_th": f"{name}.v_th", "beta": f"{name}.beta", "v_init": f"{name}.v_init"}
            for role in ("v_th", "beta"):
                if isinstance(nrn[role], str):
                    source[role] = nrn[role]
        rec["params"] = names
        rec["source"] = source
    return out


# ---------------------------------------------------------------------------------------
# compile


def compile_artifact(
    layer_graph: dict, params: dict[str, np.ndarray], out_dir: str | Path, target: str = "llvm"
) -> Path:
    """Compile a layer graph (``format.md``; parameters in PyTorch layouts) into an artifact
    directory ``out_dir`` (created if needed): ``lib.so``, ``graph.json``, ``params.safetensors``.
    ``target`` is ``"llvm"`` (this CPU) or ``"cuda"``.  Returns ``out_dir``."""
    try:
        device = Device(target)
    except ValueError:
        raise TargetError(f"unknown TVM target '{target}'; expected 'llvm' or 'cuda'") from None
    shapes = {k: tuple(np.shape(v)) for k, v in params.items()}
    graph = normalize_graph(layer_graph, shapes)
    graph["target"] = device.value
    plans = plan_graph(graph, device)
    arrays = kernel_params(graph, plans, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kernels = [k for p in plans for k in p.kernels()]
    kernel_cache.export_library(kernels, out / LIB)
    for plan in plans:
        if plan.main:
            plan.record["kernels"] = {
                "any_batch": [k.name for k in (plan.densify.get(None), plan.main[None]) if k is not None],
                "batch1": [k.name for k in (plan.densify.get(1), plan.main.get(1)) if k is not None],
            }
    save_file(arrays, str(out / PARAMS))
    (out / GRAPH).write_text(json.dumps(graph, indent=1) + "\n")
    return out


# ---------------------------------------------------------------------------------------
# run


def _dense_conv_hwc(x: np.ndarray, w: np.ndarray, rec: dict) -> np.ndarray:
    """Dense conv of channels-last x [B, H, W, Ci] with w [Ci, KH, KW, Co] via one BLAS product."""
    (sh, sw), (ph, pw), (dh, dw) = rec["stride"], rec["padding"], rec["dilation"]
    kh, kw = rec["kernel"]
    b, h, wd, ci = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(wd, kw, sw, pw, dw)
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]  # [B, OH, OW, Ci, KH, KW]
    return np.tensordot(win, w, axes=([3, 4, 5], [0, 1, 2]))  # [B, OH, OW, Co]


@dataclass
class _Buffers:
    """Everything a batch size needs: each layer's preallocated (64-B aligned) tensors by role
    (``acc``, ``v``, ``cnt_out``, ...), the calls of one timestep, and the calls made once per
    batch (the direct-coded input currents)."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[Callable[[], None]] = field(default_factory=list)
    per_batch: list[Callable[[np.ndarray], None]] = field(default_factory=list)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded (numpy's), found once: 14 µs per use
    instead of ~0.8 ms for a fresh search; None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ModuleNotFoundError:
        return None
    return ThreadpoolController()


def _blas_single_thread() -> contextlib.AbstractContextManager:
    """A context in which numpy's BLAS (the dense-mode layers) runs on one thread.

    Inside the step loop the CPUs belong to TVM's thread pool, whose workers spin between
    kernels; a multi-threaded BLAS call competing with them was measured 6-20x slower
    (synthetic 2048-wide MLP, batch 1, 2 loaded cores: 15 ms instead of 0.8 ms per dense
    layer).  threadpoolctl is optional: without it BLAS keeps its threads (correct, slower)."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


class EventRuntime:
    """Loads an artifact directory and runs it over T timesteps on batches of samples."""

    def __init__(self, artifact_dir: str | Path) -> None:
        d = Path(artifact_dir)
        for f in (LIB, GRAPH, PARAMS):
            if not (d / f).is_file():
                raise InputFileError(f"{d}: not a TVM event artifact ({f} is missing)")
        self.graph = json.loads((d / GRAPH).read_text())
        if self.graph.get("format") != FORMAT or self.graph.get("version") != VERSION:
            raise InputFileError(
                f"{d / GRAPH}: format {self.graph.get('format')!r} v{self.graph.get('version')}, "
                f"expected {FORMAT!r} v{VERSION}; recompile the artifact"
            )
        self.device_kind = Device(self.graph.get("target", "llvm"))
        if self.device_kind is Device.CUDA and not kernel_cache.cuda_available():
            raise TargetError(f"{d}: the artifact was compiled for CUDA and this machine has no CUDA device")
        self.dev = tvm.cuda(0) if self.device_kind is Device.CUDA else tvm.cpu(0)
        self.lib = tvm.runtime.load_module(str(d / LIB))
        self.params = load_file(str(d / PARAMS))
        self.plans = plan_graph(self.graph, self.device_kind)
        for plan, rec in zip(self.plans, self.graph["layers"], strict=True):
            stored = rec.get("kernels", {})
            derived = [k.name for k in plan.kernels()]
            missing = [n for n in derived if n not in stored.get("batch1", []) + stored.get("any_batch", [])]
            if missing:
                raise InputFileError(
                    f"{d}: layer '{plan.name}' needs kernels {missing} that the artifact lacks; recompile it"
                )
        self._functions = {k.name: self.lib[k.name] for p in self.plans for k in p.kernels()}
        self._by_batch: dict[int, _Buffers] = {}
        self._params_on_device: dict[str, Any] = {}

    @property
    def timesteps(self) -> int:
        return int(self.graph["timesteps"])

    # -- buffers and steps of one batch size ----------------------------------------------
    def _tensor(self, shape, dtype, fill=0) -> Any:
        t = tvm.runtime.empty(tuple(int(s) for s in shape), dtype, self.dev)
        t.copyfrom(np.full(tuple(shape), fill, dtype=dtype))
        return t

    def _param_tensor(self, name: str) -> Any:
        """A parameter as a device tensor, shared by every batch size."""
        t = self._params_on_device.get(name)
        if t is None:
            t = self._params_on_device[name] = tvm.runtime.tensor(
                np.ascontiguousarray(self.params[name]), self.dev
            )
        return t

    def _build(self, batch: int) -> _Buffers:
        """Allocate every buffer for ``batch`` samples and bind each layer's kernel calls."""
        buf = _Buffers()
        values: dict[str, dict[str, Any]] = {}
        in_name = self.graph["input"]["name"]
        values[in_name] = {}
        for plan in self.plans:
            rec = plan.record
            if plan.op is LayerOp.FLATTEN:
                values[plan.name] = values[rec["inputs"][0]]
                continue
            out = plan.output
            n = out.n
            adt = Precision(rec["precision"]).acc_dtype
            t: dict[str, Any] = {"acc": self._tensor((batch, n), adt)}
            if out.kind is Kind.EVENTS:
                t["cnt_out"] = self._tensor((batch,), "int32")
                t["idx_out"] = self._tensor((batch, n), "int32")
                if out.graded:
                    t["val_out"] = self._tensor((batch, n), adt)
            pnames = rec.get("params", {})
            for role in ("weight", "bias", "v_th", "beta"):
                if role in pnames:
                    t["vth" if role == "v_th" else role] = self._param_tensor(pnames[role])
            if rec["neuron"] is not None:
                t["v"] = self._tensor((batch, n), adt)
                v0 = self.params[rec["params"]["v_init"]]  # per channel; channels are innermost
                t["v0"] = np.ascontiguousarray(np.broadcast_to(np.tile(v0, n // v0.size), (batch, n)))
                t["stats"] = self._tensor((batch,), "int32")
                v_reset = rec["neuron"]["v_reset"]
                t["vreset"] = int(v_reset) if adt == "int32" else float(v_reset)
            if rec["readout"] is not None:
                t["rsum"] = self._tensor((batch, n), adt)
            if plan.op is LayerOp.SPIKE_MAXPOOL:  # accumulated spike counts of its inputs
                t["count"] = self._tensor((batch, plan.inputs[0].n), adt)
            self._bind_layer(plan, batch, values, t, buf)
            values[plan.name] = buf.layers[plan.name] = t
        return buf

    def _bind_layer(self, plan: LayerPlan, batch: int, values: dict, t: dict, buf: _Buffers) -> None:
        main = plan.kernel_for(batch)
        fn = self._functions[main.name]
        rec = plan.record
        args_by_name = dict(t)
        x = plan.inputs[0]
        if plan.mode is Mode.DENSE:
            adt = Precision(rec["precision"]).acc_dtype
            cur = self._tensor((batch, plan.output.n), adt)
            args_by_name["cur0"] = cur
            t["cur"] = cur
            weight = self.params[rec["params"]["weight"]]
            w_host = weight.astype(np.float64) if adt == "int32" else weight
            compute = self._dense_current(plan, w_host, cur, x)
            if x.kind is Kind.ANALOG:
                buf.per_batch.append(compute)  # direct coding: one current for all steps
            elif x.kind is Kind.CURRENT:  # the producer's current is already dense
                src = values[rec["inputs"][0]]["acc"]

                def from_current(compute=compute, src=src) -> None:
                    compute(self._host_view(src))

                buf.steps.append(from_current)
            else:
                dense_in = self._tensor((batch, x.n), adt)
                dk = plan.densify_for(batch)
                dargs = self._event_args(dk, [values[rec["inputs"][0]]]) + [dense_in]
                dfn = self._functions[dk.name]

                def from_events(dfn=dfn, dargs=dargs, compute=compute, dense_in=dense_in) -> None:
                    dfn(*dargs)
                    compute(self._host_view(dense_in))

                buf.steps.append(from_events)

        else:
            for i, src in enumerate(rec["inputs"]):
                value = values[src]
                if plan.inputs[i].kind is Kind.CURRENT:
                    args_by_name[f"cur{i}"] = value["acc"]
                else:
                    args_by_name[f"cnt{i}"] = value["cnt_out"]
                    args_by_name[f"idx{i}"] = value["idx_out"]
                    if plan.inputs[i].graded:
                        args_by_name[f"val{i}"] = value["val_out"]
        args = [args_by_name[a] for a in main.arg_names()]

        def call(fn=fn, args=args) -> None:
            fn(*args)

        buf.steps.append(call)

    def _host_view(self, tensor) -> np.ndarray:
        """A numpy view of a CPU tensor (zero-copy), or a host copy of a device tensor."""
        return np.from_dlpack(tensor) if self.device_kind is Device.CPU else tensor.numpy()

    @staticmethod
    def _event_args(kernel: LayerKernel, sources: list[dict]) -> list:
        args = []
        for i, operand in enumerate(kernel.operands):
            args += [sources[i]["cnt_out"], sources[i]["idx_out"]]
            if operand.graded:
                args.append(sources[i]["val_out"])
        return args

    def _dense_current(self, plan: LayerPlan, w: np.ndarray, cur, x: Signal) -> Callable[[np.ndarray], None]:
        """A function that writes W·input (BLAS; exact float64 for int8) into ``cur``."""
        rec = plan.record
        integer = cur.dtype == "int32"
        in_hwc = x.hwc or (x.n,)

        def compute(dense: np.ndarray) -> None:
            src = dense.astype(np.float64) if integer else dense
            if plan.op is LayerOp.LINEAR:
                res = src.reshape(src.shape[0], -1) @ w
            else:
                res = _dense_conv_hwc(src.reshape((src.shape[0], *in_hwc)), w, rec)
            res = res.reshape(res.shape[0], -1)
            if self.device_kind is Device.CPU:
                np.from_dlpack(cur)[...] = res
            else:
                cur.copyfrom(np.ascontiguousarray(res, dtype=cur.dtype))

        return compute

    # -- running ---------------------------------------------------------------------------
    def _encode_input(self, x: np.ndarray) -> np.ndarray:
        """[B, C, H, W] (or [B, n]) float input -> flat channels-last, quantised for int8 layers."""
        shape = tuple(self.graph["input"]["shape"])
        if x.shape[1:] != shape:
            raise TargetError(
                f"input has shape {list(x.shape[1:])} per sample, the network expects {list(shape)}"
            )
        x = np.asarray(x, dtype=np.float32)
        if len(shape) == 3:
            x = x.transpose(0, 2, 3, 1)
        x = x.reshape(x.shape[0], -1)
        qs = self.graph["input"].get("quant_scale")
        if qs is not None:
            x = np.clip(np.rint(x * np.float32(qs)), -128, 127)
        return np.ascontiguousarray(x)

    def _reset(self, buf: _Buffers) -> None:
        """Restore the state of a new batch: v = v_init·v_th; counters, readout sums and the
        gated max pooling's spike counts zero."""
        for t in buf.layers.values():
            if "count" in t:
                t["count"].copyfrom(np.zeros(t["count"].shape, t["count"].dtype))
            if "v" in t:
                t["v"].copyfrom(t["v0"])
                t["stats"].copyfrom(np.zeros(t["stats"].shape, np.int32))
            if "rsum" in t:
                t["rsum"].copyfrom(np.zeros(t["rsum"].shape, t["rsum"].dtype))

    def run(
        self, x: np.ndarray, timesteps: int | None = None, batch_size: int = 64, record_state: bool = False
    ) -> dict:
        """Simulate ``timesteps`` steps (default: the graph's) on inputs ``x`` [N, *input shape].

        Returns ``logits`` [N, classes] (the readout's running mean at the last step),
        ``predictions`` [N], ``spikes_per_layer`` {layer: [N] spikes per sample over all steps,
        a burst of n counting n}, ``timesteps``; with ``record_state`` also ``membrane``
        {layer: [N, *shape] final v, in the layer's PyTorch (channels-first) layout}.
        """
        steps = self.timesteps if timesteps is None else int(timesteps)
        if steps < 1:
            raise TargetError(f"timesteps must be >= 1, got {steps}")
        if batch_size < 1:
            raise TargetError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x)
        if x.ndim < 2:
            raise TargetError(f"input must be batched [N, ...], got shape {list(x.shape)}")
        enc = self._encode_input(x)
        with (
            _blas_single_thread()
            if any(p.mode is Mode.DENSE for p in self.plans)
            else contextlib.nullcontext()
        ):
            return self._run(enc, steps, batch_size, record_state)

    def _run(self, enc: np.ndarray, steps: int, batch_size: int, record_state: bool) -> dict:
        out_plan = next(p for p in self.plans if p.name == self.graph["output"])
        logits: list[np.ndarray] = []
        spikes: dict[str, list[np.ndarray]] = {}
        membranes: dict[str, list[np.ndarray]] = {}
        for start in range(0, enc.shape[0], batch_size):
            chunk = enc[start : start + batch_size]
            batch = chunk.shape[0]
            buf = self._by_batch.get(batch)
            if buf is None:
                buf = self._by_batch[batch] = self._build(batch)
            self._reset(buf)
            for compute in buf.per_batch:
                compute(chunk)
            for _ in range(steps):
                for step in buf.steps:
                    step()
            rsum = buf.layers[out_plan.name]["rsum"].numpy().astype(np.float64)
            logits.append(self._to_chw(rsum, out_plan.output) / steps)
            for plan in self.plans:
                t = buf.layers.get(plan.name, {})
                if "stats" in t:
                    spikes.setdefault(plan.name, []).append(t["stats"].numpy().astype(np.int64))
                if record_state and "v" in t:
                    v = self._to_chw(t["v"].numpy(), plan.output)
                    membranes.setdefault(plan.name, []).append(v.reshape((batch, *plan.output.shape)))
        lg = np.concatenate(logits).astype(np.float32)
        result = {
            "logits": lg,
            "predictions": np.argmax(lg, axis=1),
            "spikes_per_layer": {k: np.concatenate(v) for k, v in spikes.items()},
            "timesteps": steps,
        }
        if record_state:
            result["membrane"] = {k: np.concatenate(v) for k, v in membranes.items()}
        return result

    @staticmethod
    def _to_chw(flat: np.ndarray, sig: Signal) -> np.ndarray:
        """[B, n] in the runtime's order -> [B, n] in PyTorch's (channels-first) order."""
        if sig.hwc is None or len(sig.shape) != 3:
            return flat
        h, w, c = sig.hwc
        return flat.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(flat.shape[0], -1)
