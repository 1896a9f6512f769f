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

import concurrent.futures
import concurrent.futures.process
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import numpy as np

from snnc.errors import InputFileError, TargetError, UnsupportedError
from snnc.ir import Graph, Node, TensorType
from snnc.ir import ops as O
from snnc.ir.neuron_features import NeuronFeature, unsupported_features

DT = 1e-4


def _channelwise(graph: Graph, node: Node, role: str, shape: tuple[int, ...]) -> np.ndarray:
    """A neuron quantity (attribute × optional per-channel param) broadcast to the full shape."""
    value = np.full(shape, getattr(node.op, role), dtype=np.float32)
    if role in node.params:
        per_channel = graph.params[node.params[role]].reshape(-1).astype(np.float32)
        value = value * (per_channel.reshape((-1,) + (1,) * (len(shape) - 1)) if per_channel.size > 1 else per_channel)
    return value.astype(np.float32)


# what NIR's IF/LIF nodes express with snnc's discretisation (module docstring)
NEURON_SUPPORT = frozenset({
    NeuronFeature.FIRES_ABOVE_THRESHOLD, NeuronFeature.HARD_RESET, NeuronFeature.NONZERO_RESET,
    NeuronFeature.LEAK, NeuronFeature.PER_CHANNEL,
})
_NEURON_FIXES = {
    NeuronFeature.SOFT_RESET: "convert with lower-neurons{reset=hard}",
    NeuronFeature.NO_RESET: "convert with lower-neurons{reset=hard}",
    NeuronFeature.NONZERO_START: "convert with lower-neurons{v-init=0}",
    NeuronFeature.OUTPUT_SCALE: "run fold-thresholds",
    NeuronFeature.CURRENT_BASED: "backends disagree on its discretisation (see snnc/formats/nir.py)",
}


def neuron_problems(graph: Graph, node: Node) -> list[str]:
    return unsupported_features(graph, node, NEURON_SUPPORT, "nir", _NEURON_FIXES)


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


def _floats(value, what: str, key: str) -> np.ndarray:
    """A numeric NIR field as a float32 array; a malformed file (strings, objects) is an InputFileError."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise InputFileError(f"NIR node '{key}': {what} must be numbers, got {arr.dtype} {_shown(value)}")
    return arr.astype(np.float32)


def _ints(value, what: str, key: str) -> list[int]:
    """A NIR field of integers (a scalar or a vector): finite, integral, in the 64-bit range."""
    arr = _floats(value, what, key).astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(np.abs(arr) >= 2**62):
        raise InputFileError(f"NIR node '{key}': {what} must be integers, got {_shown(value)}")
    return [int(v) for v in arr]


def _int(value, what: str, key: str) -> int:
    values = _ints(value, what, key)
    if len(values) != 1:
        raise InputFileError(f"NIR node '{key}': {what} must be one integer, got {_shown(value)}")
    return values[0]


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _uniform(values: np.ndarray, what: str, name: str) -> float:
    flat = _floats(values, what, name).astype(np.float64).reshape(-1)
    if flat.size and not np.allclose(flat, flat[0], rtol=1e-6):
        raise UnsupportedError(f"NIR node '{name}': per-neuron {what} that is not uniform is not supported")
    return float(flat[0]) if flat.size else 0.0


def _per_channel_or_scalar(values: np.ndarray) -> tuple[float, np.ndarray | None]:
    """A full-shape NIR array as (scalar, None) if uniform, else (1.0, per-channel vector)."""
    arr = np.asarray(values, dtype=np.float32)
    flat = arr.reshape(-1)
    if flat.size == 0:
        raise UnsupportedError("NIR neuron or scale parameters with no values")
    if np.allclose(flat, flat[0]):
        return float(flat[0]), None
    per_channel = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    if not np.allclose(per_channel, per_channel[:, :1]):
        raise UnsupportedError("NIR neuron parameters that vary within a channel are not supported")
    return 1.0, per_channel[:, 0].copy()


# -- reading a file --------------------------------------------------------------------------
# A corrupt HDF5 file can crash libhdf5 itself (a segfault no Python exception catches; found by
# tools/fuzz.py), so the file is read in a child process: a crash there is a clean InputFileError
# here.  The child comes from a fork server that has imported nir and h5py once, so each read costs
# a fork, not an interpreter start.
_READER: concurrent.futures.ProcessPoolExecutor | None = None


def _read_file(path: str):
    import nir

    return nir.read(path)


def read_nir_file(path: Path):
    """``nir.read(path)``, isolated from crashes of the HDF5 library; InputFileError on any failure."""
    global _READER
    if _READER is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["snnc.formats.nir", "nir", "h5py"])
        _READER = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        return _READER.submit(_read_file, str(path)).result()
    except concurrent.futures.process.BrokenProcessPool:
        _READER = None  # the worker died: the next read starts a new one
        raise InputFileError(f"{path}: the HDF5 library crashed reading this file; it is corrupt") from None
    except Exception as e:
        raise InputFileError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None


def from_nir(nir_graph, name: str = "nir_model") -> Graph:
    """Build snnc IR from a NIR graph written with snnc's discretisation convention."""
    import nir

    dt = _dt(nir_graph.metadata)
    g = nx.DiGraph()
    g.add_nodes_from(nir_graph.nodes)
    g.add_edges_from(nir_graph.edges)
    if not nx.is_directed_acyclic_graph(g):
        raise UnsupportedError("NIR graph has recurrent edges; snnc imports feed-forward graphs only")
    graph = Graph(name, [])
    value: dict[str, str] = {}
    unknown = sorted(str(k) for k in g.nodes if k not in nir_graph.nodes)
    if unknown:
        raise InputFileError(f"NIR graph: edges name nodes that do not exist: {', '.join(unknown)}")
    for key in nx.lexicographical_topological_sort(g):
        node = nir_graph.nodes[key]
        preds = sorted(g.predecessors(key))
        if isinstance(node, nir.Input):
            shape = tuple(_ints(node.input_type.get("input", []), "the input shape", key))
            if any(d < 1 for d in shape):
                raise InputFileError(f"NIR node '{key}': input shape {list(shape)} has a dimension < 1")
            graph.inputs.append((key, TensorType(shape)))
            value[key] = key
            continue
        if not preds:
            raise UnsupportedError(f"NIR node '{key}' has no inputs")
        readers_of_outputs = [p for p in preds if p not in value]
        if readers_of_outputs:
            raise InputFileError(f"NIR node '{key}' reads from output node '{readers_of_outputs[0]}'")
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


def _dt(metadata) -> float:
    """The time step the file was written with (``snnc_dt``), finite and positive."""
    if not metadata or "snnc_dt" not in metadata:
        return DT
    values = _floats(metadata["snnc_dt"], "snnc_dt", "metadata").astype(np.float64).reshape(-1)
    if values.size != 1 or not np.isfinite(values[0]) or values[0] <= 0:
        raise InputFileError(f"NIR metadata: snnc_dt must be one positive number, got {_shown(metadata['snnc_dt'])}")
    return float(values[0])


def _emit(graph: Graph, name: str, op: O.Op, ins: Sequence[str], params: dict[str, np.ndarray]) -> None:
    keys = {}
    for role, arr in params.items():
        key = graph.fresh_param(f"{name}.{role}")
        graph.params[key] = _floats(arr, role, name)
        keys[role] = key
    node = Node(name, op, tuple(ins), params=keys)
    graph.nodes.append(node)
    node.type = op.infer_type(name, [graph.value_type(v) for v in ins], graph.param_shapes(node))


def _pair(value, what: str, key: str) -> tuple[int, int]:
    if isinstance(value, str):
        raise UnsupportedError(f"NIR padding '{value}' is not supported; use explicit integers")
    flat = _ints(value, what, key)
    if len(flat) not in (1, 2):
        raise InputFileError(f"NIR node '{key}': {what} must be 1 or 2 integers, got {_shown(value)}")
    return (flat[0], flat[-1])


def _emit_nir_node(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    import nir

    if isinstance(node, (nir.Affine, nir.Linear)):
        params = {"weight": node.weight}
        if isinstance(node, nir.Affine):
            params["bias"] = node.bias
        _emit(graph, key, O.Linear(), ins, params)
    elif isinstance(node, nir.Conv2d):
        conv2 = O.Conv2d(
            stride=_pair(node.stride, "stride", key),
            padding=_pair(node.padding, "padding", key),
            dilation=_pair(node.dilation, "dilation", key),
            groups=_int(node.groups, "groups", key),
        )
        _emit(graph, key, conv2, ins, {"weight": node.weight, "bias": node.bias})
    elif isinstance(node, nir.Conv1d):
        if isinstance(node.padding, str):
            raise UnsupportedError(f"NIR padding '{node.padding}' is not supported; use explicit integers")
        conv1 = O.Conv1d(
            stride=_int(node.stride, "stride", key),
            padding=_int(node.padding, "padding", key),
            dilation=_int(node.dilation, "dilation", key),
            groups=_int(node.groups, "groups", key),
        )
        _emit(graph, key, conv1, ins, {"weight": node.weight, "bias": node.bias})
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        cls = O.AvgPool2d if isinstance(node, nir.AvgPool2d) else O.SumPool2d
        pool = cls(
            kernel=_pair(node.kernel_size, "kernel_size", key),
            stride=_pair(node.stride, "stride", key),
            padding=_pair(node.padding, "padding", key),
        )
        _emit(graph, key, pool, ins, {})
    elif isinstance(node, nir.Flatten):
        _emit(graph, key, O.Flatten(), ins, {})
    elif isinstance(node, nir.Scale):
        s = _floats(node.scale, "scale", key)
        factor, per_channel = _per_channel_or_scalar(s)
        _emit(graph, key, O.Scale(factor=factor), ins, {} if per_channel is None else {"scale": per_channel})
    elif isinstance(node, (nir.IF, nir.LIF)):
        _emit_neuron(graph, key, node, ins, dt)
    else:
        raise UnsupportedError(f"NIR node '{key}' of type {type(node).__name__} is not supported")


def _emit_neuron(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    import nir

    vth, vth_c = _per_channel_or_scalar(_floats(node.v_threshold, "v_threshold", key))
    v_reset = _uniform(node.v_reset, "v_reset", key)
    params: dict[str, np.ndarray] = {} if vth_c is None else {"v_th": vth_c}
    if isinstance(node, nir.IF):
        _uniform(_floats(node.r, "r", key) * dt, "r·dt (must be 1)", key)
        op = O.Neuron(model=O.NeuronModel.IF, v_th=vth, reset=O.Reset.HARD, v_reset=v_reset, strict=True)
    else:
        tau = _floats(node.tau, "tau", key).astype(np.float64)
        r, v_leak = _floats(node.r, "r", key), _floats(node.v_leak, "v_leak", key)
        if not np.allclose(r * dt, tau, rtol=1e-5) or np.any(v_leak != 0):
            raise UnsupportedError(f"NIR node '{key}': LIF with r != tau/dt or v_leak != 0 is not supported")
        beta, beta_c = _per_channel_or_scalar((1.0 - dt / tau).astype(np.float32))
        if beta_c is not None:
            params["beta"] = beta_c
        op = O.Neuron(model=O.NeuronModel.LIF, v_th=vth, reset=O.Reset.HARD, v_reset=v_reset, beta=beta,
                      strict=True)
    _emit(graph, key, op, ins, params)
