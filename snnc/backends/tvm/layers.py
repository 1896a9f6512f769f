"""The TVM backend's layer graph: typed, frozen layer specs and their JSON forms (``format.md``).

Three ways in, one checked form:

* :func:`snnc.backends.tvm.lower.lower` builds a :class:`LayerGraph` from a verified IR graph
  (the IR verifier has checked shapes and parameters; the lowering fills every field);
* :func:`parse_layer_graph` reads the hand-written layer-graph dict (the input of
  ``compile_artifact``): defaults filled, shapes inferred, every field checked against the
  parameter shapes;
* :meth:`Artifact.read` parses an artifact's ``graph.json``, checking it once.

The planner and the runtime read typed fields only and check nothing these guarantee.
No TVM and no torch here (the enums shared with the IR come from ``snnc.ir.ops``).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from snnc.backends.tvm.kernels import Conv2dGeometry, Device, Pool2dGeometry, Precision, conv_out_size
from snnc.errors import InputFileError, TargetError, UnsupportedError, did_you_mean
from snnc.ir.ops import ReadoutMode, Reset

FORMAT = "snnc-tvm-events"
VERSION = 1


class LayerOp(enum.Enum):
    """The layer kinds this backend has kernels for (the ``op`` field)."""

    LINEAR = "linear"
    CONV2D = "conv2d"
    SUMPOOL2D = "sumpool2d"
    AVGPOOL2D = "avgpool2d"
    SPIKE_MAXPOOL = "spike_maxpool"  # gated max pooling (state: accumulated spike counts)
    ADD = "add"
    FLATTEN = "flatten"
    # re-indexing (permute, slice, concat, reshape) and per-element scale: element e of input i
    # moves to ``maps[i][e]`` (-1: dropped), times ``multipliers[i][e]``, plus a per-channel bias
    REMAP = "remap"

    @property
    def variadic(self) -> bool:
        """Takes one or more inputs (add: at least two)."""
        return self in (LayerOp.ADD, LayerOp.REMAP)

    @property
    def weighted(self) -> bool:
        """Reads a weight (and optional bias): linear, conv2d."""
        return self in (LayerOp.LINEAR, LayerOp.CONV2D)

    @property
    def pooling(self) -> bool:
        return self in (LayerOp.SUMPOOL2D, LayerOp.AVGPOOL2D, LayerOp.SPIKE_MAXPOOL)


class Mode(enum.Enum):
    EVENT = "event"  # work proportional to input events
    DENSE = "dense"  # densify + BLAS matmul; for layers whose calibrated density is high
    # linear only: the tiled event kernel, which reads each weight at most once per call
    # (kernels.LayerKernel.tiled; pays at batch 32 when most rows are used by some sample)
    TILED = "tiled"
    # batch-1 kernels of a linear layer only: in layer-major order (a batch of one sample whose
    # network's weights exceed the cache, steps.py), the tiled kernel over a block of steps
    # (kernels.LayerKernel.steps: each weight row read once per block, not once per step);
    # in step-major order, the event kernel
    BLOCK = "block"


@dataclass(frozen=True, kw_only=True)
class Window:
    """A conv or pooling window (pooling: ``dilation`` is always 1; conv: ``ceil_mode`` and
    ``count_include_pad`` keep their defaults; pooling: ``groups`` is 1)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = True

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return (
            conv_out_size(h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0], self.ceil_mode),
            conv_out_size(w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1], self.ceil_mode),
        )

    # the kernels' views of this window: the layer graph keeps one window type for conv and
    # pooling; each kernel takes only the fields its code reads (and hashes into its name)
    def conv_geometry(self) -> Conv2dGeometry:
        return Conv2dGeometry(
            kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups
        )

    def pool_geometry(self, average: bool = False) -> Pool2dGeometry:
        """``average``: the kernel divides each window by its own PyTorch divisor (which then
        depends on ``count_include_pad``); otherwise a constant divisor travels as a scale."""
        return Pool2dGeometry(
            kernel=self.kernel, stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
            average=average, count_include_pad=self.count_include_pad if average else True,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class NeuronParams:
    """The neuron fused into a layer (format.md, "Neuron fields").  ``v_th`` and ``beta`` are
    numbers or the names of per-channel parameters (in the source parameters)."""

    v_th: float | str = 1.0
    beta: float | str = 1.0
    reset: Reset = Reset.SOFT
    v_reset: float = 0.0
    v_init: float = 0.0
    strict: bool = False
    max_spikes: int = 1
    out_scale: float = 1.0

    @property
    def leak(self) -> bool:
        return isinstance(self.beta, str) or float(self.beta) != 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "v_th": self.v_th,
            "beta": self.beta,
            "reset": self.reset.value,
            "v_reset": self.v_reset,
            "v_init": self.v_init,
            "strict": self.strict,
            "max_spikes": self.max_spikes,
            "out_scale": self.out_scale,
        }


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The direct-coded network input: ``shape`` without batch, ``[n]`` or ``[C, H, W]``."""

    name: str
    shape: tuple[int, ...]
    quant_scale: float | None = None  # int8: the runtime feeds clip(rint(x·quant_scale), -128, 127)


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """One layer: ``op`` on ``inputs``, then the fused ``neuron``; ``shape`` is the output in
    PyTorch order.  ``weight``/``bias`` (linear, conv2d) name source parameters; ``window``
    (conv2d, pooling) is the geometry."""

    name: str
    op: LayerOp
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    precision: Precision = Precision.FLOAT32
    mode: Mode = Mode.EVENT  # the batched (any batch size) kernels' mode
    mode_batch1: Mode | None = None  # the batch-1 kernels' mode; None: ``mode``
    weight: str | None = None
    bias: str | None = None
    window: Window | None = None
    neuron: NeuronParams | None = None
    readout: ReadoutMode | None = None
    maps: tuple[str, ...] = ()  # remap: per input, int parameter [n_in] (C-order index -> C-order index)
    multipliers: tuple[str, ...] = ()  # remap: none, or per input a float parameter [n_in]
    # an int8 conv2d whose weights bound every output's sum of one step of 0/1 events below 2^15
    # (|bias| + sum of |W| per output channel <= INT16_SUM_BOUND): its kernels may sum in int16
    int16_sums: bool = False

    def __post_init__(self) -> None:
        where = f"layer '{self.name}'"
        if not self.op.variadic and len(self.inputs) != 1:
            raise TargetError(f"{where}: {self.op.value} takes one input, got {len(self.inputs)}")
        if self.op is LayerOp.ADD and len(self.inputs) < 2:
            raise TargetError(f"{where}: add takes at least two inputs")
        if self.op.weighted != (self.weight is not None) or (
            self.bias is not None and not (self.op.weighted or self.op is LayerOp.REMAP)
        ):
            raise TargetError(f"{where}: a weight belongs to linear and conv2d layers only, a bias also to remap")
        if (self.op is LayerOp.REMAP) != bool(self.maps) or (self.maps and len(self.maps) != len(self.inputs)):
            raise TargetError(f"{where}: a remap layer has one map per input, other layers none")
        if self.multipliers and len(self.multipliers) != len(self.inputs):
            raise TargetError(f"{where}: a remap layer has no multipliers or one per input")
        if Mode.TILED in (self.mode, self.mode_batch1) and self.op is not LayerOp.LINEAR:
            raise TargetError(f"{where}: mode 'tiled' exists for linear layers only")
        if self.mode is Mode.BLOCK or (self.mode_batch1 is Mode.BLOCK and self.op is not LayerOp.LINEAR):
            raise TargetError(f"{where}: mode 'block' exists for the batch-1 kernels of linear layers only")
        if (self.op is LayerOp.CONV2D or self.op.pooling) != (self.window is not None):
            raise TargetError(f"{where}: a window belongs to conv2d and pooling layers only")
        if self.neuron is not None and self.op in (LayerOp.FLATTEN, LayerOp.SPIKE_MAXPOOL):
            raise TargetError(f"{where}: {self.op.value} has no neuron")
        if self.int16_sums and (self.op is not LayerOp.CONV2D or self.precision is not Precision.INT8):
            raise TargetError(f"{where}: int16_sums belongs to int8 conv2d layers only")
        if self.readout is not None:
            if (self.readout is ReadoutMode.SPIKE_COUNT) != (self.neuron is not None):
                with_neuron = "with" if self.readout is ReadoutMode.SPIKE_COUNT else "without"
                raise TargetError(
                    f"{where}: readout '{self.readout.value}' needs a layer {with_neuron} a neuron"
                )
            if self.op is LayerOp.FLATTEN:
                raise TargetError(f"{where}: a flatten cannot be the readout")

    @property
    def geometry(self) -> Window:
        """The window of a conv2d or pooling layer (present by construction)."""
        return cast(Window, self.window)

    @property
    def channels(self) -> int:
        return self.shape[0]

    def mode_for(self, batch: int | None) -> Mode:
        """The mode of the kernels that run ``batch`` samples (None: the batched kernels)."""
        return self.mode_batch1 if batch == 1 and self.mode_batch1 is not None else self.mode

    def to_json(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "name": self.name,
            "op": self.op.value,
            "inputs": list(self.inputs),
            "precision": self.precision.value,
            "mode": self.mode.value,
        }
        if self.mode_batch1 is not None:
            rec["mode_batch1"] = self.mode_batch1.value
        if self.op is LayerOp.CONV2D:
            g = self.geometry
            rec |= {"stride": list(g.stride), "padding": list(g.padding), "dilation": list(g.dilation)}
            rec |= {"kernel": list(g.kernel), "groups": g.groups}
        elif self.op.pooling:
            g = self.geometry
            rec |= {"kernel": list(g.kernel), "stride": list(g.stride), "padding": list(g.padding)}
            rec |= {"ceil_mode": g.ceil_mode, "count_include_pad": g.count_include_pad}
        if self.op.weighted:
            rec |= {"weight": self.weight, "bias": self.bias}
        if self.int16_sums:  # absent otherwise: the graph.json of earlier artifacts is unchanged
            rec["int16_sums"] = True
        if self.op is LayerOp.REMAP:
            rec |= {"maps": list(self.maps), "multipliers": list(self.multipliers), "bias": self.bias}
        rec["neuron"] = None if self.neuron is None else self.neuron.to_json()
        rec["readout"] = None if self.readout is None else self.readout.value
        rec["shape"] = list(self.shape)
        return rec


@dataclass(frozen=True, kw_only=True)
class LayerGraph:
    """Layers in topological order; exactly one is the readout (the output)."""

    name: str
    timesteps: int
    input: InputSpec
    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        defined = {self.input.name}
        for layer in self.layers:
            if layer.name in defined:
                raise TargetError(f"layer name '{layer.name}' is used twice")
            for src in layer.inputs:
                if src not in defined:
                    raise TargetError(
                        f"layer '{layer.name}': input '{src}' is not defined before it{did_you_mean(src, defined)}"
                    )
            defined.add(layer.name)
        readouts = [layer.name for layer in self.layers if layer.readout is not None]
        if len(readouts) != 1:
            raise TargetError(
                f"the layer graph needs exactly one layer with a 'readout', found {readouts or 'none'}"
            )

    @property
    def output(self) -> str:
        """The readout layer's name."""
        return next(layer.name for layer in self.layers if layer.readout is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "timesteps": self.timesteps,
            "input": {
                "name": self.input.name,
                "shape": list(self.input.shape),
                "encoding": "direct",
                "quant_scale": self.input.quant_scale,
            },
            "layers": [layer.to_json() for layer in self.layers],
            "output": self.output,
        }


@dataclass(frozen=True, kw_only=True)
class LayerFiles:
    """What the artifact holds for one (non-flatten) layer: ``params`` (role -> name in
    ``params.safetensors``), ``source`` (role -> the parameter's name in the source model) and
    the ``lib.so`` symbols it calls for batches of any size and of one sample."""

    params: dict[str, str]
    source: dict[str, str]
    any_batch: tuple[str, ...] = ()
    batch1: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """An artifact's ``graph.json``: the layer graph (modes as the runtime runs them), the
    target, and per layer its parameter and kernel names."""

    graph: LayerGraph
    target: Device
    files: dict[str, LayerFiles] = field(default_factory=dict)
    # the generated step kernels (``steps.py``) per batch variant ("any_batch", "batch1"), in
    # call order; empty: the runtime calls every layer kernel from Python (CUDA, older files)
    step_kernels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # the most values one step kernel takes (``steps.MAX_STEP_PARAMS`` when written); None: no
    # limit, one step kernel per run of kernel calls (files written before the limit existed)
    step_kernel_params: int | None = None
    # the steps of a block of the batch-1 layer-major step kernels (``step_kernels`` key
    # "batch1_layer_major"); 0: none (the runtime orders per-kernel calls itself when asked)
    layer_major_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        out = self.graph.to_json()
        for rec in out["layers"]:
            files = self.files.get(rec["name"])
            if files is not None:
                rec |= {"params": dict(files.params), "source": dict(files.source)}
                rec["kernels"] = {"any_batch": list(files.any_batch), "batch1": list(files.batch1)}
        out["target"] = self.target.value
        if self.step_kernels:
            out["step_kernels"] = {k: list(v) for k, v in self.step_kernels.items()}
            if self.step_kernel_params is not None:
                out["step_kernel_params"] = self.step_kernel_params
            if self.layer_major_steps:
                out["layer_major_steps"] = self.layer_major_steps
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Artifact:
        """Parse and check ``graph.json``; a malformed file is an :class:`InputFileError`."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputFileError(f"{path}: cannot read the layer graph: {e}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
            got = raw if not isinstance(raw, dict) else f"{raw.get('format')!r} v{raw.get('version')}"
            raise InputFileError(
                f"{path}: format {got}, expected {FORMAT!r} v{VERSION}; recompile the artifact"
            )
        try:
            return cls.from_json(raw)
        except TargetError as e:
            raise InputFileError(f"{path}: {e}; recompile the artifact") from None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Artifact:
        graph = _parse_graph(raw, None)
        target = _enum(Device, raw.get("target", Device.CPU.value), "target", "graph")
        files = {}
        for rec, layer in zip(raw["layers"], graph.layers, strict=True):  # checked by _parse_graph
            if layer.op is LayerOp.FLATTEN:
                continue
            where = f"layer '{layer.name}'"
            params = _names(rec.get("params", {}), "params", where)
            roles = {"weight"} if layer.weight is not None else set()
            roles |= {f"map{i}" for i in range(len(layer.maps))}
            roles |= {f"mul{i}" for i in range(len(layer.multipliers))}
            roles |= {"bias"} if layer.bias is not None else set()
            roles |= {"v_th", "beta", "v_init"} if layer.neuron is not None else set()
            if not roles <= set(params):
                raise TargetError(f"{where}: params names no parameter for {sorted(roles - set(params))}")
            kernels = _object(rec.get("kernels", {}), "kernels", where)
            files[layer.name] = LayerFiles(
                params=params,
                source=_names(rec.get("source", {}), "source", where),
                any_batch=tuple(_str_list(kernels.get("any_batch", []), "kernels.any_batch", where)),
                batch1=tuple(_str_list(kernels.get("batch1", []), "kernels.batch1", where)),
            )
        steps = _object(raw.get("step_kernels", {}), "step_kernels", "graph")
        step_kernels = {
            key: tuple(_str_list(steps[key], f"step_kernels.{key}", "graph"))
            for key in ("any_batch", "batch1", "batch1_layer_major")
            if key in steps
        }
        limit = raw.get("step_kernel_params")
        if limit is not None and _int(limit, "step_kernel_params", "graph") < 1:
            raise TargetError(f"graph: step_kernel_params must be at least 1, got {limit!r}")
        block = _int(raw.get("layer_major_steps", 0), "layer_major_steps", "graph")
        if block < 0 or (block > 0) != ("batch1_layer_major" in step_kernels):
            raise TargetError(
                f"graph: layer_major_steps {block} does not match the step kernels "
                f"{'with' if 'batch1_layer_major' in step_kernels else 'without'} batch1_layer_major"
            )
        return cls(
            graph=graph,
            target=target,
            files=files,
            step_kernels=step_kernels,
            step_kernel_params=None if limit is None else int(limit),
            layer_major_steps=block,
        )


def parse_layer_graph(raw: Mapping[str, Any], param_shapes: Mapping[str, tuple[int, ...]]) -> LayerGraph:
    """The hand-written layer graph (format.md, "Layer graph") checked against the parameter
    shapes (PyTorch layouts), with every default filled and every shape inferred."""
    if not isinstance(raw, Mapping) or "layers" not in raw or "input" not in raw:
        raise TargetError(
            "a layer graph is a dict with 'input' and 'layers' (see snnc/backends/tvm/format.md)"
        )
    return _parse_graph(raw, param_shapes)


# ---------------------------------------------------------------------------------------
# the JSON readers: one for both forms (param_shapes=None: graph.json, shapes given)

_LAYER_KEYS = {
    "name", "op", "inputs", "precision", "mode", "mode_batch1", "weight", "bias", "stride", "padding", "dilation", "groups",
    "kernel", "ceil_mode", "count_include_pad", "neuron", "readout", "maps", "multipliers", "shape", "int16_sums",
}  # fmt: skip
_ARTIFACT_KEYS = {"shape", "params", "source", "kernels"}
_NEURON_KEYS = {"v_th", "beta", "reset", "v_reset", "v_init", "strict", "max_spikes", "out_scale"}


def _object(value: Any, what: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TargetError(f"{where}: {what} must be an object, got {value!r}")
    return value


def _str_list(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TargetError(f"{where}: {what} must be a list of names, got {value!r}")
    return value


def _names(value: Any, what: str, where: str) -> dict[str, str]:
    obj = _object(value, what, where)
    if not all(isinstance(v, str) for v in obj.values()):
        raise TargetError(f"{where}: {what} must map roles to names, got {value!r}")
    return dict(obj)


def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise TargetError(f"{where}: {what} must be an integer, got {value!r}")
    return int(value)


def _bool(value: Any, what: str, layer: str) -> bool:
    if not isinstance(value, bool):
        raise TargetError(f"layer '{layer}': {what} must be true or false, got {value!r}")
    return value


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def _shape(value: Any, what: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise TargetError(f"{where}: {what} must be a list of integers, got {value!r}")
    return tuple(_int(d, what, where) for d in value)


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise TargetError(f"layer '{layer}': {what} must be an int or a pair of ints, got {value!r}")


def _enum(cls: Any, value: Any, what: str, where: str) -> Any:
    try:
        return cls(value)
    except (ValueError, TypeError):
        choices = [m.value for m in cls]
        raise TargetError(
            f"{where}: unknown {what} {value!r}; expected one of {choices}{did_you_mean(str(value), choices)}"
        ) from None


def _param_shape(params: Mapping[str, tuple[int, ...]], name: Any, layer: str, role: str) -> tuple[int, ...]:
    if not isinstance(name, str) or name not in params:
        raise TargetError(
            f"layer '{layer}': {role} parameter '{name}' is missing{did_you_mean(str(name), params)}"
        )
    return tuple(params[name])


def _parse_graph(raw: Mapping[str, Any], params: Mapping[str, tuple[int, ...]] | None) -> LayerGraph:
    inp = _object(raw.get("input"), "input", "graph")
    in_name = inp.get("name", "input")
    if not isinstance(in_name, str) or not in_name:
        raise TargetError(f"graph: the input name must be a string, got {in_name!r}")
    encoding = inp.get("encoding", "direct")
    if encoding != "direct":
        raise UnsupportedError(f"input encoding '{encoding}': the TVM backend runs direct-coded inputs only")
    in_shape = _shape(inp.get("shape"), "input shape", "graph")
    if len(in_shape) not in (1, 3):
        raise TargetError(f"input shape {list(in_shape)} must be [n] or [C, H, W]")
    qs = inp.get("quant_scale")
    name = raw.get("name", "network")
    if not isinstance(name, str):
        raise TargetError(f"graph: the name must be a string, got {name!r}")
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, list):
        raise TargetError(f"graph: 'layers' must be a list, got {layers_raw!r}")
    shapes: dict[str, tuple[int, ...]] = {in_name: in_shape}
    previous = in_name
    layers = []
    for rec in layers_raw:
        layer = _parse_layer(rec, previous, shapes, params)
        layers.append(layer)
        shapes[layer.name] = layer.shape
        previous = layer.name
    return LayerGraph(
        name=name,
        timesteps=_int(raw.get("timesteps", 1), "timesteps", "graph"),
        input=InputSpec(
            name=in_name,
            shape=in_shape,
            quant_scale=None if qs is None else _number(qs, "input.quant_scale", "graph"),
        ),
        layers=tuple(layers),
    )


def _parse_layer(
    raw: Any,
    previous: str,
    shapes: Mapping[str, tuple[int, ...]],
    params: Mapping[str, tuple[int, ...]] | None,
) -> LayerSpec:
    """One layer record; with ``params`` (a layer graph) its shape is inferred from the parameter
    shapes, without (graph.json) it is read."""
    name = raw.get("name") if isinstance(raw, Mapping) else None
    if not isinstance(name, str) or not name:
        raise TargetError(f"every layer needs a name, got {raw!r}")
    if name in shapes:
        raise TargetError(f"layer name '{name}' is used twice")
    known = _LAYER_KEYS if params is not None else _LAYER_KEYS | _ARTIFACT_KEYS
    unknown = set(raw) - known
    if unknown:
        raise TargetError(f"layer '{name}': unknown fields {sorted(unknown)}; known: {sorted(known)}")
    op: LayerOp = _enum(LayerOp, raw.get("op"), "op", f"layer '{name}'")
    inputs = tuple(_str_list(raw.get("inputs", [previous]), "inputs", f"layer '{name}'"))
    for src in inputs:
        if src not in shapes:
            raise TargetError(
                f"layer '{name}': input '{src}' is not defined before it{did_you_mean(src, shapes)}"
            )
    if not op.variadic and len(inputs) != 1:
        raise TargetError(f"layer '{name}': {op.value} takes one input, got {len(inputs)}")
    if op is LayerOp.ADD and len(inputs) < 2:
        raise TargetError(f"layer '{name}': add takes at least two inputs")
    x = shapes[inputs[0]]
    window = None
    if op is LayerOp.CONV2D:
        if len(x) != 3:
            raise TargetError(f"layer '{name}': conv2d expects a [C, H, W] input, got {list(x)}")
        groups = _int(raw.get("groups", 1), "groups", f"layer '{name}'")
        if groups < 1 or x[0] % groups:
            raise TargetError(f"layer '{name}': groups={groups} does not divide the {x[0]} input channels")
        if params is not None:
            ws = _param_shape(params, raw.get("weight", ""), name, "weight")
            if len(ws) != 4 or ws[1] != x[0] // groups or ws[0] % groups:
                raise TargetError(
                    f"layer '{name}': weight {list(ws)} does not fit a {list(x)} input "
                    f"(expected [Cout, {x[0] // groups}, KH, KW], Cout divisible by groups={groups})"
                )
            kernel = (ws[2], ws[3])
        else:
            kernel = _pair(raw.get("kernel"), "kernel", name)
        window = Window(
            kernel=kernel,
            stride=_pair(raw.get("stride", 1), "stride", name),
            padding=_pair(raw.get("padding", 0), "padding", name),
            dilation=_pair(raw.get("dilation", 1), "dilation", name),
            groups=groups,
        )
        oh, ow = window.out_hw(x[1], x[2])
        if oh <= 0 or ow <= 0:
            raise TargetError(f"layer '{name}': kernel {kernel[0]}x{kernel[1]} does not fit input {list(x)}")
    elif op.pooling:
        if len(x) != 3:
            raise TargetError(f"layer '{name}': {op.value} expects a [C, H, W] input, got {list(x)}")
        kernel = _pair(raw.get("kernel", 2), "kernel", name)
        window = Window(
            kernel=kernel,
            stride=_pair(raw.get("stride", kernel), "stride", name),
            padding=_pair(raw.get("padding", 0), "padding", name),
            ceil_mode=_bool(raw.get("ceil_mode", False), "ceil_mode", name),
            count_include_pad=_bool(raw.get("count_include_pad", True), "count_include_pad", name),
        )
        oh, ow = window.out_hw(x[1], x[2])
        if oh <= 0 or ow <= 0:
            raise TargetError(f"layer '{name}': window {list(kernel)} does not fit input {list(x)}")
    if params is None:
        shape = _shape(raw.get("shape"), "shape", f"layer '{name}'")
    elif op is LayerOp.LINEAR:
        ws = _param_shape(params, raw.get("weight", ""), name, "weight")
        if len(ws) != 2 or ws[1] != math.prod(x):
            raise TargetError(
                f"layer '{name}': weight {list(ws)} does not map an input of {list(x)} (expected [out, {math.prod(x)}])"
            )
        shape = (ws[0],)
    elif op is LayerOp.CONV2D:
        shape = (_param_shape(params, raw["weight"], name, "weight")[0], oh, ow)
    elif op.pooling:
        shape = (x[0], oh, ow)
    elif op is LayerOp.ADD:
        for src in inputs[1:]:
            if shapes[src] != x:
                raise TargetError(f"layer '{name}': add of {list(x)} and {list(shapes[src])} ('{src}')")
        shape = x
    elif op is LayerOp.REMAP:
        shape = _shape(raw.get("shape"), "shape", f"layer '{name}'")
    else:  # flatten
        shape = (math.prod(x),)
    channels = shape[0] if shape else 0
    weight = bias = None
    if op.weighted:
        weight = raw.get("weight")
        if not isinstance(weight, str):
            raise TargetError(f"layer '{name}': weight must be a parameter name, got {weight!r}")
        bias = raw.get("bias")
        if bias is not None and params is not None:
            n = math.prod(_param_shape(params, bias, name, "bias"))
            if n != channels:
                raise TargetError(f"layer '{name}': bias has {n} values, the layer has {channels} channels")
        elif bias is not None and not isinstance(bias, str):
            raise TargetError(f"layer '{name}': bias must be a parameter name, got {bias!r}")
    maps: tuple[str, ...] = ()
    multipliers: tuple[str, ...] = ()
    if op is LayerOp.REMAP:
        maps = tuple(_str_list(raw.get("maps"), "maps", f"layer '{name}'"))
        multipliers = tuple(_str_list(raw.get("multipliers", []), "multipliers", f"layer '{name}'"))
        bias = raw.get("bias")
        if bias is not None and not isinstance(bias, str):
            raise TargetError(f"layer '{name}': bias must be a parameter name, got {bias!r}")
        if params is not None:
            for role, names in (("map", maps), ("multiplier", multipliers)):
                for src, pname in zip(inputs, names, strict=False):
                    n = math.prod(_param_shape(params, pname, name, role))
                    if n != math.prod(shapes[src]):
                        raise TargetError(
                            f"layer '{name}': {role} '{pname}' has {n} values, input '{src}' has {math.prod(shapes[src])}"
                        )
            if bias is not None and math.prod(_param_shape(params, bias, name, "bias")) != channels:
                raise TargetError(f"layer '{name}': bias has the wrong size, the layer has {channels} channels")
    neuron = raw.get("neuron")
    if neuron is not None and op in (LayerOp.FLATTEN, LayerOp.SPIKE_MAXPOOL):
        raise TargetError(f"layer '{name}': {op.value} has no neuron")
    readout = raw.get("readout")
    return LayerSpec(
        name=name,
        op=op,
        inputs=inputs,
        shape=shape,
        precision=_enum(Precision, raw.get("precision", "float32"), "precision", f"layer '{name}'"),
        mode=_enum(Mode, raw.get("mode", "event"), "mode", f"layer '{name}'"),
        mode_batch1=None if raw.get("mode_batch1") is None
        else _enum(Mode, raw["mode_batch1"], "mode_batch1", f"layer '{name}'"),
        weight=weight,
        bias=bias,
        window=window,
        neuron=None if neuron is None else _parse_neuron(neuron, name, channels, params),
        readout=None if readout is None else _enum(ReadoutMode, readout, "readout", f"layer '{name}'"),
        maps=maps,
        multipliers=multipliers,
        int16_sums=_bool(raw.get("int16_sums", False), "int16_sums", name),
    )


def _parse_neuron(
    spec: Any, layer: str, channels: int, params: Mapping[str, tuple[int, ...]] | None
) -> NeuronParams:
    where = f"layer '{layer}'"
    spec = _object(spec, "neuron", where)
    unknown = set(spec) - _NEURON_KEYS
    if unknown:
        raise TargetError(f"{where}: unknown neuron fields {sorted(unknown)}; known: {sorted(_NEURON_KEYS)}")
    per_channel: dict[str, float | str] = {}
    for role in ("v_th", "beta"):
        value = spec.get(role, 1.0)
        if isinstance(value, str):
            if params is not None:
                n = math.prod(_param_shape(params, value, layer, role))
                if n not in (1, channels):
                    raise TargetError(
                        f"{where}: {role} '{value}' has {n} values, the layer has {channels} channels"
                    )
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TargetError(f"{where}: {role} must be a number or a parameter name, got {value!r}")
        per_channel[role] = value
    max_spikes = _int(spec.get("max_spikes", 1), "max_spikes", where)
    if max_spikes < 1:
        raise TargetError(f"{where}: max_spikes={max_spikes} must be >= 1")
    strict = bool(spec.get("strict", False))
    return NeuronParams(
        v_th=per_channel["v_th"],
        beta=per_channel["beta"],
        reset=_enum(Reset, spec.get("reset", "soft"), "reset", where),
        v_reset=_number(spec.get("v_reset", 0.0), "v_reset", where),
        v_init=_number(spec.get("v_init", 0.0), "v_init", where),
        strict=strict,
        max_spikes=max_spikes,
        out_scale=_number(spec.get("out_scale", 1.0), "out_scale", where),
    )
