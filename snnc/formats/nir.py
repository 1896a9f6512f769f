"""snnc IR <-> NIR graphs.

NIR is a continuous-time spec; snnc is discrete.  We use the common exporter convention
(research note §4.1): forward Euler with ``dt`` (default 1e-4 s), so that

* IF:   v̇ = R·I with R = 1/dt        ->  v += I            (snnc: model=if, beta=1)
* LIF:  τ v̇ = (v_leak − v) + R·I, τ = dt/(1−β), R = τ/dt  ->  v = β·v + I

Current-based neurons (CubaLIF) are refused both ways for now: backends disagree on whether
the voltage update uses the synaptic current before or after the step's input (Norse and
explicit Euler: before; Loihi: after), and a silent one-step shift is worse than an error.

NIR neurons fire on ``v > v_threshold`` and reset to ``v_reset`` (hard reset).  Graphs
whose neurons do anything else (soft reset, ``≥``, bursts, a non-zero initial membrane)
are refused with the node and the fix, never silently changed.  A node with several
incoming edges sums them (that is how ``add`` is written).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from snnc.errors import TargetError, UnsupportedError
from snnc.ir import Graph, Node, TensorType
from snnc.ir import ops as O

DT = 1e-4


def _channelwise(graph: Graph, node: Node, role: str, shape: tuple[int, ...]) -> np.ndarray:
    """A neuron quantity (attribute × optional per-channel param) broadcast to the full shape."""
    value = np.full(shape, getattr(node.op, role), dtype=np.float32)
    if role in node.params:
        per_channel = graph.params[node.params[role]].reshape(-1).astype(np.float32)
        value = value * (per_channel.reshape((-1,) + (1,) * (len(shape) - 1)) if per_channel.size > 1 else per_channel)
    return value.astype(np.float32)


def neuron_problems(graph: Graph, node: Node) -> list[str]:
    op: O.Neuron = node.op  # type: ignore[assignment]
    where = f"neuron %{node.name}"
    out = []
    if op.reset is not O.Reset.HARD:
        out.append(f"{where}: NIR neurons reset to v_reset, this one has reset={op.reset.value} "
                   "(convert with lower-neurons{reset=hard})")
    if not op.strict:
        out.append(f"{where}: NIR neurons fire on v > v_th, this one on v >= v_th (strict=false)")
    if op.max_spikes != 1:
        out.append(f"{where}: NIR has no burst neurons (max_spikes={op.max_spikes})")
    if op.v_init != 0.0:
        out.append(f"{where}: NIR neurons start at v = 0, this one at v_init={op.v_init}")
    if op.model is O.NeuronModel.CUBA:
        out.append(f"{where}: current-based (CUBA) neurons are not exported to NIR (see snnc/formats/nir.py)")
    if op.emit is not O.Emit.SPIKES or op.presubtract:
        out.append(f"{where}: emit={op.emit.value}, presubtract={op.presubtract} have no NIR equivalent")
    if op.leak is not O.Leak.MULTIPLY or op.reset_delay:
        out.append(f"{where}: leak={op.leak.value}, reset_delay={op.reset_delay} have no NIR equivalent")
    if op.out_scale != 1.0 or "out_scale" in node.params:
        out.append(f"{where}: output scale != 1 (run fold-thresholds)")
    return out


def legality(graph: Graph) -> list[str]:
    problems: list[str] = []
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Neuron):
            problems += neuron_problems(graph, node)
        elif isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
            continue  # the platform feeds events; the scheme is kept in metadata
        elif isinstance(op, (O.Concat, O.SpikeMaxPool2d, O.Reshape, O.MaxPool2d, O.BatchNorm, O.Relu, O.Clip)):
            problems.append(f"{op.name} %{node.name}: NIR has no {op.name} primitive")
        elif isinstance(op, O.AvgPool2d) and (op.padding != (0, 0) or op.ceil_mode):
            problems.append(f"avgpool2d %{node.name}: NIR pooling has no padding or ceil_mode")
        elif isinstance(op, O.Readout) and op.exit_rule is not O.ExitRule.NONE:
            problems.append(f"readout %{node.name}: early exit is not expressible in NIR")
    return problems


def to_nir(graph: Graph, dt: float = DT):
    import nir

    problems = legality(graph)
    if problems:
        raise TargetError("NIR export: " + "; ".join(problems))
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str]] = []
    rename: dict[str, str] = {}  # snnc value -> NIR node whose output carries it
    for name, t in graph.inputs:
        nodes[name] = nir.Input(input_type={"input": np.array(t.shape)})
        rename[name] = name
    for node in graph.nodes:
        op = node.op
        t = graph.value_type(node.name)
        p = {role: graph.params[key] for role, key in node.params.items()}
        src = [rename[v] for v in node.inputs]
        if op.value_identity or isinstance(op, (O.Encode, O.Readout)):
            rename[node.name] = src[0]
            if isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
                nodes[src[0]].metadata["snnc_encoding"] = op.scheme.value  # type: ignore[attr-defined]
            continue
        if isinstance(op, O.Linear):
            nodes[node.name] = nir.Affine(weight=p["weight"], bias=p.get("bias", np.zeros(t.shape, np.float32)))
        elif isinstance(op, O.Conv2d):
            in_shape = graph.value_type(node.inputs[0]).shape
            nodes[node.name] = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=p["weight"], stride=op.stride,
                                          padding=op.padding, dilation=op.dilation, groups=op.groups,
                                          bias=p.get("bias", np.zeros(t.shape[0], np.float32)))
        elif isinstance(op, O.Conv1d):
            in_shape = graph.value_type(node.inputs[0]).shape
            nodes[node.name] = nir.Conv1d(input_shape=in_shape[1], weight=p["weight"], stride=op.stride,
                                          padding=op.padding, dilation=op.dilation, groups=op.groups,
                                          bias=p.get("bias", np.zeros(t.shape[0], np.float32)))
        elif isinstance(op, (O.AvgPool2d, O.SumPool2d)):
            cls = nir.AvgPool2d if isinstance(op, O.AvgPool2d) else nir.SumPool2d
            nodes[node.name] = cls(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                                   padding=np.array(op.padding))
        elif isinstance(op, O.Flatten):
            in_shape = graph.value_type(node.inputs[0]).shape
            nodes[node.name] = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
        elif isinstance(op, (O.Add, O.Scale)):
            scale = np.full(t.shape, op.factor if isinstance(op, O.Scale) else 1.0, np.float32)
            if isinstance(op, O.Scale) and ("bias" in p):
                raise TargetError(f"scale %{node.name}: a per-channel bias has no NIR equivalent")
            if "scale" in p:
                scale = scale * _broadcast(p["scale"], t.shape)
            nodes[node.name] = nir.Scale(scale=scale)
        elif isinstance(op, O.Neuron):
            nodes[node.name] = _neuron_to_nir(graph, node, t, dt)
        else:
            raise TargetError(f"{op.name} %{node.name}: no NIR mapping")
        edges += [(s, node.name) for s in src]
        rename[node.name] = node.name
    for i, v in enumerate(graph.outputs):
        out = "output" if len(graph.outputs) == 1 else f"output_{i}"
        nodes[out] = nir.Output(output_type={"output": np.array(graph.value_type(v).shape)})
        edges.append((rename[v], out))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"snnc_dt": dt, "snnc_graph": graph.name})


def _broadcast(per_channel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    v = per_channel.reshape(-1).astype(np.float32)
    if v.size == 1:
        return np.full(shape, v[0], np.float32)
    return np.broadcast_to(v.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(np.float32)


def _neuron_to_nir(graph: Graph, node: Node, t: TensorType, dt: float):
    import nir

    op: O.Neuron = node.op  # type: ignore[assignment]
    shape = t.shape
    vth = _channelwise(graph, node, "v_th", shape)
    v_reset = np.full(shape, op.v_reset, np.float32)
    beta = _channelwise(graph, node, "beta", shape)
    if op.model is O.NeuronModel.IF or np.all(beta == 1.0):
        return nir.IF(r=np.full(shape, 1.0 / dt, np.float32), v_threshold=vth, v_reset=v_reset)
    tau = (dt / (1.0 - beta)).astype(np.float32)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape, np.float32), v_threshold=vth, v_reset=v_reset)


# ---------------------------------------------------------------------------------------
# NIR -> snnc


def _uniform(values: np.ndarray, what: str, name: str) -> float:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size and not np.allclose(flat, flat[0], rtol=1e-6):
        raise UnsupportedError(f"NIR node '{name}': per-neuron {what} that is not uniform is not supported")
    return float(flat[0]) if flat.size else 0.0


def _per_channel_or_scalar(values: np.ndarray) -> tuple[float, np.ndarray | None]:
    """A full-shape NIR array as (scalar, None) if uniform, else (1.0, per-channel vector)."""
    arr = np.asarray(values, dtype=np.float32)
    flat = arr.reshape(-1)
    if np.allclose(flat, flat[0]):
        return float(flat[0]), None
    per_channel = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    if not np.allclose(per_channel, per_channel[:, :1]):
        raise UnsupportedError("NIR neuron parameters that vary within a channel are not supported")
    return 1.0, per_channel[:, 0].copy()


def from_nir(nir_graph, name: str = "nir_model") -> Graph:
    """Build snnc IR from a NIR graph written with snnc's discretisation convention."""
    import nir

    dt = float(nir_graph.metadata.get("snnc_dt", DT)) if nir_graph.metadata else DT
    g = nx.DiGraph()
    g.add_nodes_from(nir_graph.nodes)
    g.add_edges_from(nir_graph.edges)
    if not nx.is_directed_acyclic_graph(g):
        raise UnsupportedError("NIR graph has recurrent edges; snnc imports feed-forward graphs only")
    graph = Graph(name, [])
    value: dict[str, str] = {}
    for key in nx.lexicographical_topological_sort(g):
        node = nir_graph.nodes[key]
        preds = sorted(g.predecessors(key))
        if isinstance(node, nir.Input):
            shape = tuple(int(d) for d in np.asarray(node.input_type["input"]).reshape(-1))
            graph.inputs.append((key, TensorType(shape)))
            value[key] = key
            continue
        if not preds:
            raise UnsupportedError(f"NIR node '{key}' has no inputs")
        ins = [value[p] for p in preds]
        if isinstance(node, nir.Output):
            graph.outputs += ins
            continue
        if len(ins) > 1:  # NIR sums incoming edges
            add_name = graph.fresh_name(f"{key}_sum")
            _emit(graph, add_name, O.Add(), ins, {})
            ins = [add_name]
        _emit_nir_node(graph, key, node, ins, dt)
        value[key] = key
    return graph


def _emit(graph: Graph, name: str, op: O.Op, ins: Sequence[str], params: dict[str, np.ndarray]) -> None:
    keys = {}
    for role, arr in params.items():
        key = graph.fresh_param(f"{name}.{role}")
        graph.params[key] = np.asarray(arr, dtype=np.float32)
        keys[role] = key
    node = Node(name, op, tuple(ins), keys)
    graph.nodes.append(node)
    node.type = op.infer_type(name, [graph.value_type(v) for v in ins], graph.param_shapes(node))


def _pair(value) -> tuple[int, int]:
    if isinstance(value, str):
        raise UnsupportedError(f"NIR padding '{value}' is not supported; use explicit integers")
    flat = np.asarray(value).reshape(-1)
    both = np.broadcast_to(flat, 2) if flat.size == 1 else flat
    return (int(both[0]), int(both[1]))


def _emit_nir_node(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    import nir

    if isinstance(node, (nir.Affine, nir.Linear)):
        params = {"weight": node.weight}
        if isinstance(node, nir.Affine):
            params["bias"] = node.bias
        _emit(graph, key, O.Linear(), ins, params)
    elif isinstance(node, nir.Conv2d):
        _emit(graph, key, O.Conv2d(_pair(node.stride), _pair(node.padding), _pair(node.dilation), int(node.groups)),
              ins, {"weight": node.weight, "bias": node.bias})
    elif isinstance(node, nir.Conv1d):
        _emit(graph, key, O.Conv1d(int(np.asarray(node.stride).reshape(-1)[0]),
                                   int(np.asarray(node.padding).reshape(-1)[0]),
                                   int(np.asarray(node.dilation).reshape(-1)[0]), int(node.groups)),
              ins, {"weight": node.weight, "bias": node.bias})
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        cls = O.AvgPool2d if isinstance(node, nir.AvgPool2d) else O.SumPool2d
        _emit(graph, key, cls(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding)), ins, {})
    elif isinstance(node, nir.Flatten):
        _emit(graph, key, O.Flatten(), ins, {})
    elif isinstance(node, nir.Scale):
        s = np.asarray(node.scale, dtype=np.float32)
        factor, per_channel = _per_channel_or_scalar(s)
        _emit(graph, key, O.Scale(factor=factor), ins, {} if per_channel is None else {"scale": per_channel})
    elif isinstance(node, (nir.IF, nir.LIF)):
        _emit_neuron(graph, key, node, ins, dt)
    else:
        raise UnsupportedError(f"NIR node '{key}' of type {type(node).__name__} is not supported")


def _emit_neuron(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    import nir

    vth, vth_c = _per_channel_or_scalar(node.v_threshold)
    v_reset = _uniform(node.v_reset, "v_reset", key)
    params: dict[str, np.ndarray] = {} if vth_c is None else {"v_th": vth_c}
    if isinstance(node, nir.IF):
        _uniform(np.asarray(node.r) * dt, "r·dt (must be 1)", key)
        op = O.Neuron(O.NeuronModel.IF, vth, O.Reset.HARD, v_reset, strict=True)
    else:
        tau = np.asarray(node.tau, dtype=np.float64)
        if not np.allclose(np.asarray(node.r) * dt, tau, rtol=1e-5) or np.any(np.asarray(node.v_leak) != 0):
            raise UnsupportedError(f"NIR node '{key}': LIF with r != tau/dt or v_leak != 0 is not supported")
        beta, beta_c = _per_channel_or_scalar((1.0 - dt / tau).astype(np.float32))
        if beta_c is not None:
            params["beta"] = beta_c
        op = O.Neuron(O.NeuronModel.LIF, vth, O.Reset.HARD, v_reset, beta=beta, strict=True)
    _emit(graph, key, op, ins, params)
