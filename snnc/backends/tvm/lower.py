"""Lower a converted snnc graph to the TVM backend's layer graph: typed layer specs
(:mod:`snnc.backends.tvm.layers`; ``format.md``).

A synaptic op (linear, conv2d, pooling, add) and the neuron that is its only user become
one layer whose neuron update is fused into the op's kernel epilogue.  Gated max pooling
(``spike_maxpool``) is a layer of its own: an event kernel that keeps each input's accumulated
spike count and forwards the window winner's events.  Structure ops that
only rename (identity, dropout, readout) disappear; flatten is a layer (free at run time).
Re-indexing ops (permute, slice, concat, a reshape that is not a flatten) and scale become
``remap`` layers: a map from each input element to its output element (PyTorch's C order here;
the build turns it into the runtime's channels-last order), a per-element multiplier for scale;
a chain of remaps whose intermediate values have no other user composes into one layer.
A conv1d on [C, L] is a conv2d on [C, 1, L] (every [C, L] value is [C, 1, L] here).
What the runtime cannot express is refused with the node and the pass that would fix it.

The per-layer kernel choice (``mode``: event or dense) is made per batch variant: the batch-1
kernels (``LayerSpec.mode_batch1``) and the batched kernels (``mode``) each get the mode that
the cost model (:mod:`snnc.backends.tvm.cost`) predicts cheaper for the layer's shape (inputs,
outputs, synapses inside the output, the dense product's MACs and im2col size, weights) at the
calibrated input density and at 1 or ``cost.BATCHED`` samples.  Dense mode pays a fixed cost
per step and reads every weight once per call; event mode pays per active input and per
synapse.  So at batch 1 a layer stays event at any density below ~100 % (the measured rows:
dense 1.5-10x slower at every density up to 52.5 %, ~100-150 µs of fixed cost on the wide
layers), while at batch 32 dense wins above a crossover that grows as the layer shrinks
(2048x2048: ~28 %, 960x160: ~60 %; measured 22 % and 59 %).  One mode for both variants
(before) made mobilenet_v2's three 960→160 projections at 50-52 % dense, 2.0-2.7x slower than
event at batch 1; a fixed crossover cannot serve both variants.  The constants are a fit to the
130 per-layer rows of benchmarks/event_kernels.py (docs/tvm.md); a grouped or depthwise
convolution stays event at any density (its dense path has no GEMM, a sliding window on the
host, measured 4-13x slower).  The density is the producing neuron's
spike rate, or, when the input comes through a gated max pooling, SOPs / (dense MACs · T), or,
for a pooling's, an add's or a concat's graded output, an estimate from the spike rates it is
made of (:func:`input_densities`); a layer without a density runs as events.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from snnc.backends.tvm.cost import BATCHED, MODEL, CostModel, LayerShape
from snnc.backends.tvm.kernels import INT16_SUM_BOUND, Precision, largest_step_sum
from snnc.backends.tvm.layers import InputSpec, LayerGraph, LayerOp, LayerSpec, Mode, NeuronParams, Window
from snnc.errors import TargetError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.neuron_features import NeuronFeature, unsupported_features

# The IR ops this backend has layers (kernels) for; everything else is refused by legality(),
# except what lowering removes: encode (direct), value-identity ops, and the neuron and readout
# that fuse into the layer before them.
LAYER_OPS: dict[type[O.Op], LayerOp] = {
    O.Linear: LayerOp.LINEAR,
    O.Conv2d: LayerOp.CONV2D,
    O.Conv1d: LayerOp.CONV2D,
    O.Scale: LayerOp.REMAP,
    O.Permute: LayerOp.REMAP,
    O.Slice: LayerOp.REMAP,
    O.Concat: LayerOp.REMAP,
    O.Reshape: LayerOp.REMAP,
    O.SumPool2d: LayerOp.SUMPOOL2D,
    O.AvgPool2d: LayerOp.AVGPOOL2D,
    O.SpikeMaxPool2d: LayerOp.SPIKE_MAXPOOL,
    O.Add: LayerOp.ADD,
    O.Flatten: LayerOp.FLATTEN,
}


def _fuses_neuron(op: O.Op) -> bool:
    """A layer whose kernel can end in a neuron update: a synaptic op this backend lowers, or a
    remap (a neuron after a concat: its kernel accumulates before the epilogue like any other)."""
    kind = LAYER_OPS.get(type(op))
    if isinstance(op, O.Reshape) and len(op.shape) == 1:  # lowered as a flatten
        return False
    return kind is not None and (op.synaptic or kind is LayerOp.REMAP) and kind is not LayerOp.SPIKE_MAXPOOL


# the neuron update the fused kernels implement: IF / LIF with multiplicative leak, either threshold
# test, soft / hard / no reset, bursts, per-channel parameters (kernels.py, the neuron epilogue)
NEURON_SUPPORT = frozenset(NeuronFeature) - {
    NeuronFeature.CURRENT_BASED, NeuronFeature.TAU_LEAK, NeuronFeature.RATE_LEAK, NeuronFeature.DELAYED_RESET,
    NeuronFeature.PRESUBTRACT, NeuronFeature.EMITS_MEMBRANE, NeuronFeature.NEGATIVE_SPIKES,
}


def _neuron_problems(graph: Graph, node: Node) -> list[str]:
    return unsupported_features(graph, node, NEURON_SUPPORT, "tvm")


def import_legality(graph: Graph) -> list[str]:
    """What no pass changes and this target refuses: among the ops of the imported models only
    ``mul`` (SEW-ResNet's AND / IAND; grouped and 1-D convolution, ceil_mode pooling, concat, permute
    and slice have layers); what conversion leaves behind is checked by :func:`legality`."""
    from snnc.passes._refusals import product_refusal

    return product_refusal(graph, "an elementwise product of two values has no event kernel in the tvm target "
                                  "(its layers are synaptic maps, pooling, adds and re-indexings)")


def legality(graph: Graph) -> list[str]:
    problems: list[str] = []
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
            problems.append(f"encode %{node.name}: the tvm target takes direct (analog) input only")
        elif isinstance(op, O.Neuron):
            problems += _neuron_problems(graph, node)
            src = graph.producer(node.inputs[0])
            if src is None or not _fuses_neuron(src.op) or len(graph.users(src.name)) != 1:
                problems.append(f"neuron %{node.name}: must follow a linear/conv/pool/add/remap (scale, concat, permute, slice) that feeds only it")
        elif isinstance(op, O.Readout) and op.exit_rule is not O.ExitRule.NONE:
            problems.append(
                f"readout %{node.name}: early exit (adaptive-timesteps) runs on the torch target only"
            )
        elif op.ann_only or not (
            type(op) in LAYER_OPS or op.value_identity or isinstance(op, (O.Encode, O.Neuron, O.Readout))
        ):
            problems.append(f"{op.name} %{node.name}: not supported by the tvm target")
    readouts = [n for n in graph.nodes if isinstance(n.op, O.Readout)]
    if len(readouts) != 1:
        problems.append(
            f"graph @{graph.name}: the tvm target needs exactly one readout, found {len(readouts)}"
        )
    return problems


def _neuron_params(graph: Graph, node: Node, params: dict[str, np.ndarray]) -> NeuronParams:
    op: O.Neuron = node.op  # type: ignore[assignment]
    per_channel: dict[str, float | str] = {}
    for role in ("v_th", "beta"):
        scalar = float(getattr(op, role))
        if role in node.params:  # per-channel: attribute × parameter, stored under a new name
            key = f"{node.name}.{role}"
            params[key] = (scalar * graph.params[node.params[role]].reshape(-1)).astype(np.float32)
            per_channel[role] = key
        else:
            per_channel[role] = scalar
    if "out_scale" in node.params:
        raise TargetError(
            f"neuron %{node.name}: a per-channel output scale is not supported (run fold-thresholds)"
        )
    return NeuronParams(
        v_th=per_channel["v_th"],
        beta=per_channel["beta"],
        reset=op.reset,
        v_reset=float(op.v_reset),
        v_init=float(op.v_init),
        strict=bool(op.strict),
        max_spikes=int(op.max_spikes),
        out_scale=float(op.out_scale),
    )


def _pair(value: tuple[int, int]) -> tuple[int, int]:
    return (int(value[0]), int(value[1]))


def layer_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The layer graph's shape of an IR value: [C, L] runs as [C, 1, L]."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _remap_params(graph: Graph, node: Node, params: dict[str, np.ndarray]) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(maps, multipliers, bias) of a re-indexing or scale node, stored in ``params``: per input,
    the C-order output index of each C-order input element (-1: dropped)."""
    op = node.op
    ins = [tuple(graph.value_type(v).shape) for v in node.inputs]
    out = tuple(graph.value_type(node.name).shape)
    n_out = int(np.prod(out))
    n_in = [int(np.prod(s)) for s in ins]
    maps: list[np.ndarray] = []
    if isinstance(op, O.Permute):
        m = np.empty(n_in[0], np.int64)
        m[np.arange(n_in[0]).reshape(ins[0]).transpose(op.dims).reshape(-1)] = np.arange(n_out)
        maps = [m]
    elif isinstance(op, O.Slice):
        m = np.full(n_in[0], -1, np.int64)
        index = [slice(None)] * len(ins[0])
        index[op.axis] = slice(op.start, op.stop, op.step)
        m[np.arange(n_in[0]).reshape(ins[0])[tuple(index)].reshape(-1)] = np.arange(n_out)
        maps = [m]
    elif isinstance(op, O.Concat):
        cuts = np.cumsum([s[op.axis] for s in ins])[:-1]
        maps = [piece.reshape(-1) for piece in np.split(np.arange(n_out).reshape(out), cuts, axis=op.axis)]
    else:  # reshape, scale: element e stays element e (in C order)
        maps = [np.arange(n_out)]
    names = []
    for i, m in enumerate(maps):
        names.append(f"{node.name}.map{i}")
        params[names[-1]] = m.astype(np.int64)
    multipliers: tuple[str, ...] = ()
    bias = None
    if isinstance(op, O.Scale):
        channels = out[0]
        s = np.full(channels, float(op.factor))
        if "scale" in node.params:
            s = s * graph.params[node.params["scale"]].reshape(-1).astype(np.float64)
        if "scale" in node.params or op.factor != 1.0:
            params[f"{node.name}.multiplier"] = np.repeat(s, n_out // channels).astype(np.float32)
            multipliers = (f"{node.name}.multiplier",)
        if "bias" in node.params:
            bias = node.params["bias"]
            params[bias] = graph.params[bias]
    return tuple(names), multipliers, bias


def _compose_remaps(layers: dict[str, LayerSpec], params: dict[str, np.ndarray], output: str) -> None:
    """Merge a remap that only moves elements (no multiplier, bias, neuron or readout) into the
    one remap that reads it: one kernel call instead of two (channel shuffle: three into one)."""
    uses: dict[str, int] = {}
    for layer in layers.values():
        for src in layer.inputs:
            uses[src] = uses.get(src, 0) + 1
    for name in list(layers):
        layer = layers[name]
        if layer.op is not LayerOp.REMAP:
            continue
        inputs: list[str] = []
        new_maps: list[np.ndarray] = []
        new_muls: list[np.ndarray] = []
        # the layer's own maps, read before any is rewritten: a merged input with several inputs of
        # its own shifts the keys of the inputs after it (``{name}.map{k}`` is renumbered below)
        own_maps = [params[m] for m in layer.maps]
        own_muls = [params[m] for m in layer.multipliers]
        changed = False
        for i, src in enumerate(layer.inputs):
            up = layers.get(src)
            pure = (
                up is not None and up.op is LayerOp.REMAP and not up.multipliers and up.bias is None
                and up.neuron is None and up.readout is None and uses.get(src) == 1 and src != output
            )  # fmt: skip
            if up is None or not pure:
                inputs.append(src)
                new_maps.append(own_maps[i])
                if own_muls:
                    new_muls.append(own_muls[i])
                continue
            changed = True
            for src_in, src_map in zip(up.inputs, up.maps, strict=True):
                first = params[src_map]
                new_maps.append(np.where(first >= 0, own_maps[i][np.maximum(first, 0)], -1))
                inputs.append(src_in)
                if own_muls:
                    new_muls.append(own_muls[i][np.maximum(first, 0)])
            del layers[src]
        if changed:
            maps = [f"{name}.map{k}" for k in range(len(new_maps))]
            muls = [f"{name}.multiplier{k}" for k in range(len(new_muls))]
            params.update(zip(maps, new_maps, strict=True))
            params.update(zip(muls, new_muls, strict=True))
            layers[name] = replace(layer, inputs=tuple(inputs), maps=tuple(maps), multipliers=tuple(muls))


def _layer(graph: Graph, node: Node, inputs: tuple[str, ...], mode: Mode, mode_batch1: Mode) -> LayerSpec:
    """The layer of a node of LAYER_OPS, without neuron and readout (they fuse in later)."""
    op = node.op
    kind = LAYER_OPS[type(op)]
    shape = layer_shape(tuple(graph.value_type(node.name).shape))
    window = None
    if isinstance(op, O.Conv2d):
        kh, kw = graph.params[node.params["weight"]].shape[2:]
        window = Window(
            kernel=(int(kh), int(kw)),
            stride=_pair(op.stride),
            padding=_pair(op.padding),
            dilation=_pair(op.dilation),
            groups=op.groups,
        )
    elif isinstance(op, O.Conv1d):  # a conv2d with a 1-row kernel on [C, 1, L]
        k = int(graph.params[node.params["weight"]].shape[2])
        window = Window(
            kernel=(1, k), stride=(1, op.stride), padding=(0, op.padding), dilation=(1, op.dilation), groups=op.groups
        )
    elif isinstance(op, O.Pool2d):
        window = Window(
            kernel=_pair(op.kernel),
            stride=_pair(op.stride),
            padding=_pair(op.padding),
            ceil_mode=op.ceil_mode,
            count_include_pad=getattr(op, "count_include_pad", True),
        )
    return LayerSpec(
        name=node.name,
        op=kind,
        inputs=inputs,
        shape=shape,
        mode=mode if op.weighted else Mode.EVENT,
        mode_batch1=mode_batch1 if op.weighted else None,
        weight=node.params["weight"] if op.weighted else None,
        bias=node.params.get("bias") if op.weighted else None,
        window=window,
    )


def point_conv_weight(graph: Graph, node: Node) -> np.ndarray | None:
    """The [Cout, Cin] matrix of a conv2d (groups 1) from a 1x1 map of events to a 1x1 map, else
    None.  Such a conv is a linear layer: its one output position sees one tap, (p / d) on each
    axis (the input at 0·s - p + k·d = 0), or none (then only its bias acts: zeros).  Lowered as
    linear, it gets the linear kernels (the tiled ones, mode BLOCK) and reads Cin·Cout weights
    instead of the whole KH·KW kernel's layout (mobilenet_v2's last 960 -> 1280 conv at 32x32,
    resnet18's layer4 3x3 convs at 32x32).  An analog (current) input stays a conv: its kernel
    reads the current without a host product."""
    op = node.op
    if not isinstance(op, O.Conv2d) or op.groups != 1:
        return None
    x, y = graph.value_type(node.inputs[0]), graph.value_type(node.name)
    if not x.is_event or tuple(x.shape[-2:]) != (1, 1) or tuple(y.shape[-2:]) != (1, 1):
        return None
    weight = np.asarray(graph.params[node.params["weight"]])
    taps = []
    for p, d, k in zip(_pair(op.padding), _pair(op.dilation), weight.shape[2:], strict=True):
        taps.append(p // d if p % d == 0 and p // d < k else None)
    if None in taps:
        return np.zeros(weight.shape[:2], weight.dtype)
    return np.ascontiguousarray(weight[:, :, taps[0], taps[1]])


def layer_shape_of(graph: Graph, node: Node) -> LayerShape:
    """The cost model's view of a linear or conv (conv1d: a conv2d on [C, 1, L]; a conv on a 1x1
    map of events: the linear layer it lowers to, :func:`point_conv_weight`)."""
    op = node.op
    point = point_conv_weight(graph, node)
    if point is not None:
        return LayerShape.linear(int(point.shape[1]), int(point.shape[0]))
    x = layer_shape(tuple(graph.value_type(node.inputs[0]).shape))
    y = layer_shape(tuple(graph.value_type(node.name).shape))
    if isinstance(op, O.Linear):
        return LayerShape.linear(int(np.prod(x)), int(np.prod(y)))
    weight = graph.params[node.params["weight"]].shape
    if isinstance(op, O.Conv1d):
        kernel, stride, padding, dilation = (1, weight[2]), (1, op.stride), (0, op.padding), (1, op.dilation)
        groups = op.groups
    elif isinstance(op, O.Conv2d):
        kernel = (int(weight[2]), int(weight[3]))
        stride, padding, dilation = _pair(op.stride), _pair(op.padding), _pair(op.dilation)
        groups = op.groups
    else:
        raise TargetError(f"{op.name} %{node.name}: the cost model knows linear and conv layers only")
    return LayerShape.conv2d((x[0], x[1], x[2]), (y[0], y[1], y[2]), kernel, stride, padding, dilation, groups)


def choose_modes(
    op: O.Op, shape: LayerShape | None, density: float | None, model: CostModel = MODEL
) -> tuple[Mode, Mode]:
    """(batched, batch-1) modes of a weighted layer that reads events at ``density`` per step:
    each the cheapest by the cost model at ``BATCHED`` samples and at one, the batched kernels of
    a linear layer also choosing among the tiled kernel (never at batch 1, where it would stream
    every weight for one sample's events; a linear layer read at 15 % density or more runs it
    over a block of steps instead, mode BLOCK: ``CostModel.block_wins``).  Event without a
    density, and for a grouped (or depthwise) convolution at any density: its dense path has no
    GEMM (a sliding window on the host), measured 10-13x slower than the event kernel at batch 1
    and 4.0-4.3x at batch 32 (CPU time, one thread) on mobilenet_v2's depthwise layers at
    50-52.5 % density."""
    grouped = isinstance(op, (O.Conv2d, O.Conv1d)) and op.groups > 1
    if density is None or shape is None or grouped:
        return Mode.EVENT, Mode.EVENT
    batched, single = (
        Mode.DENSE if model.dense_wins(shape, density, batch) else Mode.EVENT for batch in (BATCHED, 1)
    )
    if isinstance(op, O.Linear):
        costs = {
            Mode.EVENT: model.event_seconds(shape, density, BATCHED),
            Mode.DENSE: model.dense_seconds(shape, BATCHED),
            Mode.TILED: model.tiled_seconds(shape, density, BATCHED),
        }
        batched = min(costs, key=lambda m: costs[m])
        if single is Mode.EVENT and model.block_wins(shape, density):
            single = Mode.BLOCK
    return batched, single


def lower(
    graph: Graph,
    densities: dict[str, float] | None = None,
    model: CostModel = MODEL,
    int8: frozenset[str] | tuple[str, ...] = (),
    modes: dict[str, Mode] | None = None,
    modes_batch1: dict[str, Mode] | None = None,
) -> tuple[LayerGraph, dict[str, np.ndarray]]:
    """The layer graph and its parameters (PyTorch layouts) for ``build.compile_artifact``.
    ``int8``: the nodes (weighted ones with their neurons, residual joins and their scale
    operands) that ``tvm-quantize`` left in integer units, lowered to int8 layers (the build checks that their values are integers).
    ``modes``: weighted nodes whose mode (both variants) is given rather than chosen from
    ``densities`` (the benchmark's per-layer check runs every layer in each mode);
    ``modes_batch1``: the same for the batch-1 kernels alone (after ``modes``)."""
    problems = legality(graph)
    if problems:
        raise TargetError("tvm target: " + "; ".join(problems))
    params: dict[str, np.ndarray] = {}
    layers: dict[str, LayerSpec] = {}  # in graph order; neuron and readout replace their layer
    name_of: dict[str, str] = {}  # IR value -> layer (or input) name
    input_name, input_type = graph.inputs[0]
    name_of[input_name] = "x"
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Encode) or op.value_identity:
            name_of[node.name] = name_of[node.inputs[0]]
            continue
        if isinstance(op, O.Readout):
            src = layers[name_of[node.inputs[0]]]
            readout = O.ReadoutMode.SPIKE_COUNT if src.neuron is not None else O.ReadoutMode.MEAN_CURRENT
            layers[src.name] = replace(src, readout=readout)
            name_of[node.name] = src.name
            continue
        if isinstance(op, O.Neuron):
            src = layers[name_of[node.inputs[0]]]
            layers[src.name] = replace(src, neuron=_neuron_params(graph, node, params))
            name_of[node.name] = src.name
            continue
        if type(op) not in LAYER_OPS:  # legality() has refused everything else
            raise TargetError(f"{op.name} %{node.name}: not supported by the tvm target")
        run_as = run_as_batch1 = Mode.EVENT
        point = point_conv_weight(graph, node)  # a conv on a 1x1 map: lowered as a linear layer
        if op.weighted:
            run_as, run_as_batch1 = choose_modes(
                O.Linear() if point is not None else op, layer_shape_of(graph, node),
                (densities or {}).get(node.name), model,
            )  # fmt: skip
            forced = (modes or {}).get(node.name)
            run_as, run_as_batch1 = (forced, forced) if forced is not None else (run_as, run_as_batch1)
            run_as_batch1 = (modes_batch1 or {}).get(node.name, run_as_batch1)
        inputs = tuple(name_of[v] for v in node.inputs)
        if isinstance(op, O.Flatten) or (isinstance(op, O.Reshape) and len(op.shape) == 1):  # free
            layers[node.name] = LayerSpec(
                name=node.name, op=LayerOp.FLATTEN, inputs=inputs, shape=tuple(graph.value_type(node.name).shape)
            )
        elif LAYER_OPS[type(op)] is LayerOp.REMAP:
            maps, multipliers, bias = _remap_params(graph, node, params)
            layers[node.name] = LayerSpec(
                name=node.name, op=LayerOp.REMAP, inputs=inputs, bias=bias, maps=maps, multipliers=multipliers,
                shape=layer_shape(tuple(graph.value_type(node.name).shape)),
            )  # fmt: skip
        elif point is not None:
            tap = f"{node.params['weight']}[centre tap]"
            params[tap] = point
            layers[node.name] = LayerSpec(
                name=node.name, op=LayerOp.LINEAR, inputs=inputs, shape=layer_shape(tuple(graph.value_type(node.name).shape)),
                mode=run_as, mode_batch1=run_as_batch1, weight=tap, bias=node.params.get("bias"),
            )  # fmt: skip
        else:
            layers[node.name] = _layer(graph, node, inputs, run_as, run_as_batch1)
        if node.name in int8:  # tvm-quantize's layers: weighted ones, residual joins and their scales
            spec = replace(layers[node.name], precision=Precision.INT8)
            if spec.op is LayerOp.CONV2D:
                bias_value = graph.params[node.params["bias"]] if "bias" in node.params else None
                bound = largest_step_sum(graph.params[node.params["weight"]], bias_value)
                spec = replace(spec, int16_sums=bound <= INT16_SUM_BOUND)
            layers[node.name] = spec
        for role in ("weight", "bias"):
            if op.weighted and role in node.params and not (role == "weight" and point is not None):
                value = graph.params[node.params[role]]
                if role == "weight" and isinstance(op, O.Conv1d):  # [Cout, Cin/g, K] -> [Cout, Cin/g, 1, K]
                    value = value[:, :, None, :]
                params[node.params[role]] = value
        name_of[node.name] = node.name
    _compose_remaps(layers, params, next(n for n, spec in layers.items() if spec.readout is not None))
    layer_graph = LayerGraph(
        name=graph.name,
        timesteps=graph.attrs.timesteps or 1,
        input=InputSpec(name="x", shape=layer_shape(tuple(input_type.shape))),
        layers=tuple(layers.values()),
    )
    return layer_graph, params


def input_densities(graph: Graph, counts: dict[str, Any] | None, timesteps: int) -> dict[str, float]:
    """Per synaptic layer: the mean fraction of its inputs active per step (from count-ops).

    * spikes of a neuron: the neuron's spikes / (neurons · T), exact;
    * anything else that count-ops counted as events into the layer (a gated max pooling's
      forwarded events): the layer's SOPs / (dense MACs · T), exact for a linear layer and within
      the border effects for a convolution;
    * a graded value that count-ops counts as analog (the output of average or sum pooling, an
      add or a concat of spikes, before a linear/conv without a neuron between): the fraction of
      non-zero values, estimated from the spike rates of the neurons it is made of as if they
      spiked independently (a pooling window of m inputs at rate p is non-zero with probability
      1 - (1 - p)^m; an add of operands at rates p_i: 1 - Π(1 - p_i)).  Neighbouring neurons
      spike together more often than not, so this over-estimates the density (it errs towards
      dense mode); without it such a layer had no density and always ran as events."""
    if not counts or not counts.get("simulated") or not timesteps:
        return {}
    spikes = {layer["name"]: layer["spikes_per_sample"] for layer in counts["layers"]}
    by_name = {layer["name"]: layer for layer in counts["layers"]}
    out = {}
    for node in graph.nodes:
        if not node.op.weighted:
            continue
        src = _through_shape_ops(graph, node.inputs[0])
        prod = graph.producer(src)
        if prod is not None and isinstance(prod.op, O.Neuron) and src in spikes:
            out[node.name] = spikes[src] / (graph.value_type(src).numel * timesteps)
        elif node.name in by_name and by_name[node.name]["sops"] > 0 and by_name[node.name]["macs"] > 0:
            out[node.name] = by_name[node.name]["sops"] / (by_name[node.name]["macs"] * timesteps)
        else:
            estimate = _graded_density(graph, src, spikes, timesteps)
            if estimate is not None:
                out[node.name] = estimate
    return out


def _through_shape_ops(graph: Graph, value: str) -> str:
    """The value that ``value`` re-indexes through flatten / reshape / identity (itself if none)."""
    while True:
        prod = graph.producer(value)
        if prod is None or not prod.op.shape_only:
            return value
        value = prod.inputs[0]


def _graded_density(
    graph: Graph, value: str, spikes: dict[str, float], timesteps: int, depth: int = 0
) -> float | None:
    """The estimated fraction of non-zero elements of ``value`` per step (see
    :func:`input_densities`), or None where it is not built from neurons' spikes by pooling, add,
    concat and re-indexing (an analog input, a current)."""
    value = _through_shape_ops(graph, value)
    prod = graph.producer(value)
    if prod is None or depth > 32:
        return None
    op = prod.op
    if isinstance(op, O.Neuron):
        return spikes[value] / (graph.value_type(value).numel * timesteps) if value in spikes else None
    ins = [_graded_density(graph, v, spikes, timesteps, depth + 1) for v in prod.inputs]
    if any(d is None for d in ins):
        return None
    dens = [float(d) for d in ins if d is not None]
    if isinstance(op, (O.AvgPool2d, O.SumPool2d, O.SpikeMaxPool2d)):
        # a gated max pooling forwards its window's winner, the most active input: as often as
        # any input of the window spikes at most
        window = int(op.kernel[0]) * int(op.kernel[1])
        return 1.0 - (1.0 - dens[0]) ** window
    if isinstance(op, O.Add):
        return 1.0 - float(np.prod([1.0 - d for d in dens]))
    if isinstance(op, O.Concat):
        sizes = [graph.value_type(v).numel for v in prod.inputs]
        return sum(d * n for d, n in zip(dens, sizes, strict=True)) / sum(sizes)
    if isinstance(op, (O.Permute, O.Slice, O.Scale)):
        return dens[0]  # moved elements keep their rate
    return None
