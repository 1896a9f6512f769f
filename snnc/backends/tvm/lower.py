"""Lower a converted snnc graph to the TVM backend's layer graph (``format.md``).

A synaptic op (linear, conv2d, pooling, add) and the neuron that is its only user become
one layer whose neuron update is fused into the op's kernel epilogue.  Gated max pooling
(``spike_maxpool``) is a layer of its own: an event kernel that keeps each input's accumulated
spike count and forwards the window winner's events.  Structure ops that
only rename (identity, dropout, readout) disappear; flatten is a layer (free at run time).
What the runtime cannot express is refused with the node and the pass that would fix it.

The per-layer kernel choice (``mode``: event or dense) comes from the calibrated input
density when count-ops simulated the graph: a layer whose input density is above the
crossover (default 20 %, research note §5) runs dense.  The density is the producing neuron's
spike rate, or, when the input comes through a gated max pooling, SOPs / (dense MACs · T).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snnc.errors import TargetError
from snnc.ir import Graph, Node
from snnc.ir import ops as O

FUSABLE = (O.Linear, O.Conv2d, O.AvgPool2d, O.SumPool2d, O.Add)
PASS_THROUGH = (O.Identity, O.Dropout)
DENSE_CROSSOVER = 0.20


def _neuron_problems(node: Node) -> list[str]:
    op: O.Neuron = node.op  # type: ignore[assignment]
    where = f"neuron %{node.name}"
    out = []
    if op.model is O.NeuronModel.CUBA:
        out.append(f"{where}: current-based neurons are not supported by the tvm target")
    if op.leak is not O.Leak.MULTIPLY:
        out.append(f"{where}: leak={op.leak.value} is not supported by the tvm target (leak=multiply only)")
    if op.reset_delay:
        out.append(f"{where}: reset_delay is not supported by the tvm target")
    if op.emit is not O.Emit.SPIKES:
        out.append(f"{where}: emit={op.emit.value} is not supported by the tvm target")
    if op.presubtract:
        out.append(f"{where}: presubtract (snnTorch reset_delay=False) is not supported by the tvm target")
    return out


def legality(graph: Graph) -> list[str]:
    problems: list[str] = []
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
            problems.append(f"encode %{node.name}: the tvm target takes direct (analog) input only")
        elif isinstance(op, O.Neuron):
            problems += _neuron_problems(node)
            src = graph.producer(node.inputs[0])
            if src is None or not isinstance(src.op, FUSABLE) or len(graph.users(src.name)) != 1:
                problems.append(f"neuron %{node.name}: must follow a linear/conv/pool/add that feeds only it")
        elif isinstance(op, O.Readout) and op.exit_rule is not O.ExitRule.NONE:
            problems.append(
                f"readout %{node.name}: early exit (adaptive-timesteps) runs on the torch target only"
            )
        elif isinstance(op, O.Conv2d) and op.groups != 1:
            problems.append(f"conv2d %{node.name}: grouped convolution is not supported by the tvm target")
        elif isinstance(op, (O.AvgPool2d, O.SumPool2d, O.SpikeMaxPool2d)) and op.ceil_mode:
            problems.append(f"{op.name} %{node.name}: ceil_mode is not supported by the tvm target")
        elif isinstance(op, (O.Conv1d, O.Concat, O.Reshape, O.Scale)) or op.ann_only:
            problems.append(f"{op.name} %{node.name}: not supported by the tvm target")
    readouts = [n for n in graph.nodes if isinstance(n.op, O.Readout)]
    if len(readouts) != 1:
        problems.append(
            f"graph @{graph.name}: the tvm target needs exactly one readout, found {len(readouts)}"
        )
    return problems


def _neuron_fields(graph: Graph, node: Node, params: dict[str, np.ndarray]) -> dict[str, Any]:
    op: O.Neuron = node.op  # type: ignore[assignment]
    fields: dict[str, Any] = {
        "reset": op.reset.value,
        "v_reset": op.v_reset,
        "v_init": op.v_init,
        "strict": op.strict,
        "max_spikes": op.max_spikes,
    }
    for role in ("v_th", "beta"):
        scalar = float(getattr(op, role))
        if role in node.params:  # per-channel: attribute × parameter, stored under a new name
            key = f"{node.name}.{role}"
            params[key] = (scalar * graph.params[node.params[role]].reshape(-1)).astype(np.float32)
            fields[role] = key
        else:
            fields[role] = scalar
    if "out_scale" in node.params:
        raise TargetError(
            f"neuron %{node.name}: a per-channel output scale is not supported (run fold-thresholds)"
        )
    fields["out_scale"] = float(op.out_scale)
    return fields


def lower(
    graph: Graph, densities: dict[str, float] | None = None, crossover: float = DENSE_CROSSOVER
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The layer graph and its parameters (PyTorch layouts) for ``runtime.compile_artifact``."""
    problems = legality(graph)
    if problems:
        raise TargetError("tvm target: " + "; ".join(problems))
    params: dict[str, np.ndarray] = {}
    layers: list[dict[str, Any]] = []
    name_of: dict[str, str] = {}  # IR value -> layer (or input) name
    layer_of: dict[str, dict[str, Any]] = {}
    input_name, input_type = graph.inputs[0]
    name_of[input_name] = "x"
    for node in graph.nodes:
        op = node.op
        if isinstance(op, (O.Encode, *PASS_THROUGH)):
            name_of[node.name] = name_of[node.inputs[0]]
            continue
        if isinstance(op, O.Readout):
            src = layer_of[name_of[node.inputs[0]]]
            src["readout"] = "spike_count" if "neuron" in src else "mean_current"
            name_of[node.name] = src["name"]
            continue
        if isinstance(op, O.Neuron):
            layer = layer_of[name_of[node.inputs[0]]]
            layer["neuron"] = _neuron_fields(graph, node, params)
            name_of[node.name] = layer["name"]
            continue
        layer: dict[str, Any] = {"name": node.name, "inputs": [name_of[v] for v in node.inputs]}  # type: ignore[no-redef]
        if isinstance(op, (O.Linear, O.Conv2d)):
            layer["op"] = op.name
            layer["weight"] = node.params["weight"]
            params[node.params["weight"]] = graph.params[node.params["weight"]]
            if "bias" in node.params:
                layer["bias"] = node.params["bias"]
                params[node.params["bias"]] = graph.params[node.params["bias"]]
            if isinstance(op, O.Conv2d):
                layer.update(stride=list(op.stride), padding=list(op.padding), dilation=list(op.dilation))
            density = (densities or {}).get(node.name)
            if density is not None:
                layer["mode"] = "dense" if density > crossover else "event"
        elif isinstance(op, (O.AvgPool2d, O.SumPool2d, O.SpikeMaxPool2d)):
            layer.update(op=op.name, kernel=list(op.kernel), stride=list(op.stride), padding=list(op.padding))
        elif isinstance(op, O.Add):
            layer["op"] = "add"
        elif isinstance(op, O.Flatten):
            layer["op"] = "flatten"
        else:  # legality() has refused everything else
            raise TargetError(f"{op.name} %{node.name}: not supported by the tvm target")
        layers.append(layer)
        layer_of[node.name] = layer
        name_of[node.name] = node.name
    layer_graph = {
        "name": graph.name,
        "timesteps": graph.attrs.timesteps or 1,
        "input": {"name": "x", "shape": list(input_type.shape), "encoding": "direct"},
        "layers": layers,
    }
    return layer_graph, params


def input_densities(graph: Graph, counts: dict[str, Any] | None, timesteps: int) -> dict[str, float]:
    """Per synaptic layer: the mean fraction of its inputs active per step (from count-ops):
    the producing neuron's spikes / (neurons · T); for an input that is not a neuron's spikes
    (a gated max pooling's forwarded events), the layer's SOPs / (dense MACs · T), exact for a
    linear layer and within the border effects for a convolution."""
    if not counts or not counts.get("simulated"):
        return {}
    spikes = {layer["name"]: layer["spikes_per_sample"] for layer in counts["layers"]}
    by_name = {layer["name"]: layer for layer in counts["layers"]}
    out = {}
    for node in graph.nodes:
        if not isinstance(node.op, (O.Linear, O.Conv2d)):
            continue
        src = node.inputs[0]
        while True:  # through flatten / pooling-free structure to the neuron that spikes
            prod = graph.producer(src)
            if (
                prod is None
                or isinstance(prod.op, O.Neuron)
                or not isinstance(prod.op, (O.Flatten, *PASS_THROUGH))
            ):
                break
            src = prod.inputs[0]
        if not timesteps:
            continue
        prod = graph.producer(src)
        if prod is not None and isinstance(prod.op, O.Neuron) and src in spikes:
            out[node.name] = spikes[src] / (graph.value_type(src).numel * timesteps)
        elif node.name in by_name and by_name[node.name]["sops"] > 0 and by_name[node.name]["macs"] > 0:
            out[node.name] = by_name[node.name]["sops"] / (by_name[node.name]["macs"] * timesteps)
    return out
