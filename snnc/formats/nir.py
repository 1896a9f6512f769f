"""snnc IR <-> NIR graphs.

NIR is a continuous-time spec; snnc is discrete.  We use the common exporter convention
(research note §4.1, snnTorch's and Norse's importers): forward Euler with ``dt`` (default 1e-4 s,
kept in the file's metadata as ``snnc_dt``), so that

* IF:      v̇ = R·I, R = 1/dt                                   ->  v += I        (model=if)
* LIF:     τ v̇ = (v_leak − v) + R·I, τ = dt/(1−β), R = τ/dt      ->  v = β·v + I   (model=lif)
* CubaLIF: τ_syn İ = −I + w_in·S, τ_syn = dt/(1−α), w_in = τ_syn/dt  ->  u = α·u + S
           τ_mem v̇ = (v_leak − v) + R·I, τ_mem = dt/(1−β), R = τ_mem/dt ->  v = β·v + u
  (model=cuba: the voltage integrates the current of the same step, as snnTorch's ``Synaptic``,
  Norse's ``from_nir`` (LIBox synapse into a LIFBox cell) and Loihi compute it)

with v_leak = 0.  A value other than these on import is honoured where it means an input gain:
r·dt for IF, r·dt/τ for LIF and w_in·dt/τ_syn · r·dt/τ_mem for CubaLIF scale the neuron's input (a
``scale`` op in front of it), so r = 1, 5 and 1e4 import to three different models.

NIR neurons fire on ``v > v_threshold``, reset to ``v_reset`` (hard reset) and start at rest.
Graphs whose neurons do anything else (soft reset, ``≥``, bursts, a non-zero initial membrane)
are refused with the node and the fix, never silently changed.  A node with several incoming
edges sums them (that is how ``add`` is written).

What the written file works around (docs/nir.md, each exact under the spec): pooling is written as
the ``Conv2d`` it is (snnTorch's importer has no SumPool2d, Norse's no AvgPool2d; both run Conv2d),
with ``snnc_op`` in the node's metadata so that snnc reads the pooling back; ``Flatten`` counts its
``start_dim`` from the end (nir types it without the batch dimension, the importers apply it to
batched tensors: ``start_dim=0`` would flatten the batch there); a grouped convolution
is written with its dense, block-diagonal weight (nir 1.0.8 types a grouped Conv2d's input
channels as ``weight.shape[1]`` and then rejects every graph that holds one).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing
import warnings
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


# what NIR's IF/LIF/CubaLIF nodes express with snnc's discretisation (module docstring)
NEURON_SUPPORT = frozenset({
    NeuronFeature.FIRES_ABOVE_THRESHOLD, NeuronFeature.HARD_RESET, NeuronFeature.NONZERO_RESET,
    NeuronFeature.LEAK, NeuronFeature.PER_CHANNEL, NeuronFeature.CURRENT_BASED,
})
_NEURON_FIXES = {
    NeuronFeature.FIRES_AT_THRESHOLD: "run nir-legalize (hard reset) or convert with the ann-to-nir pipeline",
    NeuronFeature.SOFT_RESET: "NIR's neurons reset to v_reset; convert with the ann-to-nir pipeline",
    NeuronFeature.NO_RESET: "convert with the ann-to-nir pipeline",
    NeuronFeature.NONZERO_START: "NIR's neurons start at rest; convert with the ann-to-nir pipeline",
    NeuronFeature.OUTPUT_SCALE: "run fold-thresholds",
}
_ANN_OPS = (O.MaxPool2d, O.BatchNorm, O.Relu, O.Clip)


def neuron_problems(graph: Graph, node: Node) -> list[str]:
    problems = unsupported_features(graph, node, NEURON_SUPPORT, "nir", _NEURON_FIXES)
    op = node.op
    if isinstance(op, O.Neuron) and op.model is O.NeuronModel.LIF and not problems:
        beta = _channelwise(graph, node, "beta", (1,) if "beta" not in node.params else
                            (graph.params[node.params["beta"]].size,))
        if not (np.all(beta == 1.0) or np.all((beta >= 0.0) & (beta < 1.0))):
            problems.append(f"neuron %{node.name}: NIR's LIF needs 0 <= beta < 1 (tau = dt/(1-beta)), or beta = 1 "
                            f"everywhere (an IF), got beta {_shown(beta.tolist())}")
    if isinstance(op, O.Neuron) and op.model is O.NeuronModel.CUBA and not problems:
        if "beta" in node.params or not 0.0 <= op.beta < 1.0:
            problems.append(f"neuron %{node.name}: model=cuba needs one voltage leak beta < 1 for NIR's CubaLIF "
                            f"(tau_mem = dt/(1-beta)), got beta={op.beta}" + (" per channel" if "beta" in node.params else ""))
        if not 0.0 <= op.alpha < 1.0:
            problems.append(f"neuron %{node.name}: model=cuba needs 0 <= alpha < 1 for NIR's CubaLIF "
                            f"(tau_syn = dt/(1-alpha)), got alpha={op.alpha}")
    return problems


def legality(graph: Graph) -> list[str]:
    problems: list[str] = []
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Neuron):
            problems += neuron_problems(graph, node)
        elif isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
            continue  # the platform feeds events; the scheme is kept in metadata
        elif isinstance(op, _ANN_OPS):
            problems.append(f"{op.name} %{node.name}: NIR has no {op.name} primitive; convert the network first "
                            "(the ann-to-nir pipeline, which needs --calib data)")
        elif isinstance(op, O.SpikeMaxPool2d):
            problems.append(f"{op.name} %{node.name}: NIR has no {op.name} primitive; run nir-legalize "
                            "(OR pooling)")
        elif isinstance(op, (O.Concat, O.Reshape)) or not (
                op.value_identity or isinstance(op, _EXPORTED)):
            problems.append(f"{op.name} %{node.name}: NIR has no {op.name} primitive")
        elif isinstance(op, (O.AvgPool2d, O.SumPool2d)) and op.ceil_mode:
            problems.append(f"{op.name} %{node.name}: NIR pooling has no ceil_mode")
        elif isinstance(op, O.AvgPool2d) and not op.count_include_pad and op.padding != (0, 0):
            problems.append(f"avgpool2d %{node.name}: an average that leaves the padding out is no fixed "
                            "NIR convolution")
        elif isinstance(op, O.Scale) and "bias" in node.params:
            problems.append(f"scale %{node.name}: a per-channel bias has no NIR equivalent")
        elif isinstance(op, O.Readout) and op.exit_rule is not O.ExitRule.NONE:
            problems.append(f"readout %{node.name}: early exit is not expressible in NIR")
    return problems


_EXPORTED = (O.Encode, O.Readout, O.Linear, O.Conv2d, O.Conv1d, O.AvgPool2d, O.SumPool2d, O.Flatten, O.Add,
             O.Scale, O.Neuron)


def to_nir(graph: Graph, dt: float = DT):
    """The NIR graph of a legal snnc graph (``legality`` lists what is not); TargetError otherwise."""
    import nir

    problems = legality(graph)
    if problems:
        raise TargetError("NIR export: " + "; ".join(problems))
    try:
        return _to_nir(nir, graph, dt)
    except (ValueError, AssertionError, TypeError) as e:  # nir's own checks (its type inference asserts)
        raise TargetError(f"NIR export: the nir package refused the graph: {e}") from None


def _to_nir(nir, graph: Graph, dt: float):
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
        in_shape = graph.value_type(node.inputs[0]).shape
        if isinstance(op, O.Linear):
            nodes[node.name] = nir.Affine(weight=p["weight"], bias=p.get("bias", np.zeros(t.shape, np.float32)))
        elif isinstance(op, O.Conv2d):
            nodes[node.name] = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_dense(p["weight"], op.groups),
                                          stride=op.stride, padding=op.padding, dilation=op.dilation, groups=1,
                                          bias=p.get("bias", np.zeros(t.shape[0], np.float32)),
                                          metadata=_groups_meta(op.groups))
        elif isinstance(op, O.Conv1d):
            nodes[node.name] = nir.Conv1d(input_shape=in_shape[1], weight=_dense(p["weight"], op.groups),
                                          stride=op.stride, padding=op.padding, dilation=op.dilation, groups=1,
                                          bias=p.get("bias", np.zeros(t.shape[0], np.float32)),
                                          metadata=_groups_meta(op.groups))
        elif isinstance(op, (O.AvgPool2d, O.SumPool2d)):
            nodes[node.name] = _pool_as_conv(nir, op, in_shape)
        elif isinstance(op, O.Flatten):
            # counted from the end: nir types the flatten without the batch dimension, snnTorch and Norse
            # apply torch.nn.Flatten(start_dim, end_dim) to batched tensors; -ndim means the same to both
            nodes[node.name] = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=-len(in_shape),
                                           end_dim=-1)
        elif isinstance(op, (O.Add, O.Scale)):
            scale = np.full(t.shape, op.factor if isinstance(op, O.Scale) else 1.0, np.float32)
            if "scale" in p:
                scale = scale * _broadcast(p["scale"], t.shape)
            nodes[node.name] = nir.Scale(scale=scale)
        else:
            assert isinstance(op, O.Neuron)  # legality admits nothing else
            nodes[node.name] = _neuron_to_nir(graph, node, t, dt)
        edges += [(s, node.name) for s in src]
        rename[node.name] = node.name
    for i, v in enumerate(graph.outputs):
        out = "output" if len(graph.outputs) == 1 else f"output_{i}"
        nodes[out] = nir.Output(output_type={"output": np.array(graph.value_type(v).shape)})
        edges.append((rename[v], out))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"snnc_dt": dt, "snnc_graph": graph.name})


def _groups_meta(groups: int) -> dict:
    return {} if groups == 1 else {"snnc_groups": np.array([groups])}


def _dense(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight (C_out, C_in/groups, k…) as the dense (C_out, C_in, k…) weight of the
    same map: zero outside the diagonal blocks (module docstring: nir 1.0.8 mistypes grouped convs)."""
    if groups == 1:
        return weight
    c_out, c_in_group = weight.shape[:2]
    out_group = c_out // groups
    dense = np.zeros((c_out, c_in_group * groups, *weight.shape[2:]), dtype=weight.dtype)
    for g in range(groups):
        rows = slice(g * out_group, (g + 1) * out_group)
        dense[rows, g * c_in_group:(g + 1) * c_in_group] = weight[rows]
    return dense


def _pool_as_conv(nir, op: O.AvgPool2d | O.SumPool2d, in_shape: tuple[int, ...]):
    """A pooling op as the Conv2d it is: weight 1 (sum) or 1/k² (average) from each channel to itself."""
    channels = in_shape[0]
    value = 1.0 if isinstance(op, O.SumPool2d) else 1.0 / (op.kernel[0] * op.kernel[1])
    weight = np.zeros((channels, channels, *op.kernel), np.float32)
    weight[np.arange(channels), np.arange(channels)] = np.float32(value)
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=weight, stride=op.stride, padding=op.padding,
                      dilation=1, groups=1, bias=np.zeros(channels, np.float32),
                      metadata={"snnc_op": op.name, "snnc_kernel": np.array(op.kernel)})


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
    zero = np.zeros(shape, np.float32)
    beta = _channelwise(graph, node, "beta", shape)
    # the exact leaks go into the metadata too: 1 − dt/τ of a float32 τ may miss snnc's β by a rounding
    if op.model is O.NeuronModel.CUBA:
        tau_mem = np.full(shape, dt / (1.0 - op.beta), np.float32)
        tau_syn = np.full(shape, dt / (1.0 - op.alpha), np.float32)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / np.float32(dt), v_leak=zero,
                           v_threshold=vth, v_reset=v_reset, w_in=tau_syn / np.float32(dt),
                           metadata={"snnc_beta": _exact_leak(graph, node, shape),
                                     "snnc_alpha": np.full(shape, op.alpha, np.float64)})
    if op.model is O.NeuronModel.IF or np.all(beta == 1.0):
        return nir.IF(r=np.full(shape, 1.0 / dt, np.float32), v_threshold=vth, v_reset=v_reset)
    tau = (dt / (1.0 - beta.astype(np.float64))).astype(np.float32)
    return nir.LIF(tau=tau, r=tau / np.float32(dt), v_leak=zero, v_threshold=vth, v_reset=v_reset,
                   metadata={"snnc_beta": _exact_leak(graph, node, shape)})


def _exact_leak(graph: Graph, node: Node, shape: tuple[int, ...]) -> np.ndarray:
    """beta (attribute × per-channel parameter) in float64, so that an attribute 0.85 reads back as 0.85."""
    beta = np.full(shape, node.op.beta, np.float64)  # type: ignore[attr-defined]
    if "beta" in node.params:
        return beta * _broadcast(graph.params[node.params["beta"]], shape).astype(np.float64)
    return beta


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
    arr = np.asarray(values)
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)  # snnc's exact leaks are float64
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
# tools/fuzz.py), or send it into a loop that never ends (h5py's Dataset.__getitem__ spinning on a
# mutated chunk index; also found by the fuzzer), so the file is read in a child process with a time
# limit: a crash or a hang there is a clean InputFileError here.  The child comes from a fork server
# that has imported nir and h5py once, so each read costs a fork, not an interpreter start.
_READER: concurrent.futures.ProcessPoolExecutor | None = None

# Reading a well-formed file is a memcpy of its datasets: even a 100 MB file takes well under a second.
# The limit is generous so that a loaded machine never refuses a good file.
READ_SECONDS_BASE = 60.0
READ_SECONDS_PER_MB = 2.0


def _read_file(path: str):
    import nir

    # nir's reader derives node fields with numpy (e.g. a ratio of two datasets); on a damaged file
    # numpy's "divide by zero" RuntimeWarning would reach the user's terminal from this worker.  The
    # values are checked where they are imported, with snnc's own errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return nir.read(path)


def _discard_reader() -> None:
    """Kill the reader's worker (it may be stuck in libhdf5, where no signal handler runs) and forget
    the pool; the next read starts a new one."""
    global _READER
    reader, _READER = _READER, None
    if reader is None:
        return
    # ProcessPoolExecutor has no public way to stop a running task: its workers are killed directly
    for process in list(getattr(reader, "_processes", {}).values()):
        process.kill()
    reader.shutdown(wait=False, cancel_futures=True)


def read_nir_file(path: Path, timeout: float | None = None):
    """``nir.read(path)``, isolated from crashes and hangs of the HDF5 library; InputFileError on any
    failure.  ``timeout`` (seconds) defaults to READ_SECONDS_BASE + READ_SECONDS_PER_MB per MB."""
    global _READER
    if timeout is None:
        size_mb = path.stat().st_size / 1e6 if path.exists() else 0.0
        timeout = READ_SECONDS_BASE + READ_SECONDS_PER_MB * size_mb
    if _READER is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["snnc.formats.nir", "nir", "h5py"])
        _READER = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        return _READER.submit(_read_file, str(path)).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        _discard_reader()
        raise InputFileError(
            f"{path}: reading this file did not finish in {timeout:.0f} s (the HDF5 library loops on it); "
            "it is corrupt"
        ) from None
    except concurrent.futures.process.BrokenProcessPool:
        _discard_reader()
        raise InputFileError(f"{path}: the HDF5 library crashed reading this file; it is corrupt") from None
    except Exception as e:
        raise InputFileError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None


# Every node type of NIR 1.0 (nir.ir's serialisable list) is imported or refused by name.
IMPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "AvgPool2d", "SumPool2d", "Flatten",
                  "Scale", "IF", "LIF", "CubaLIF", "I", "LI", "CubaLI", "Threshold")
REFUSED_NODES = {
    "Delay": "snnc has no delay op",
    "NIRGraph": "a nested subgraph (snnc imports flat feed-forward graphs)",
}


def from_nir(nir_graph, name: str = "nir_model") -> Graph:
    """Build snnc IR from a NIR graph written with snnc's discretisation convention (module docstring).
    Every node that cannot be imported is listed at once, by type and name."""
    dt = _dt(nir_graph.metadata)
    refused: dict[str, list[str]] = {}
    for key, node in nir_graph.nodes.items():
        kind = type(node).__name__
        if kind not in IMPORTED_NODES:
            refused.setdefault(kind, []).append(str(key))
    if refused:
        parts = [f"{kind} ({', '.join(sorted(keys))}): {REFUSED_NODES.get(kind, 'not a NIR 1.0 node snnc knows')}"
                 for kind, keys in sorted(refused.items())]
        raise UnsupportedError("NIR graph: node types snnc does not import: " + "; ".join(parts))
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
        if type(node).__name__ == "Input":
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
        if type(node).__name__ == "Output":
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


def _meta(node, field: str):
    """A metadata entry snnc wrote (None when absent); strings come back from HDF5 as bytes."""
    metadata = getattr(node, "metadata", None) or {}
    value = metadata.get(field) if isinstance(metadata, dict) else None
    return value.decode() if isinstance(value, bytes) else value


def _emit_nir_node(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    import nir

    if isinstance(node, (nir.Affine, nir.Linear)):
        params = {"weight": node.weight}
        if isinstance(node, nir.Affine):
            params["bias"] = node.bias
        _emit(graph, key, O.Linear(), ins, params)
    elif isinstance(node, nir.Conv2d):
        stride, padding = _pair(node.stride, "stride", key), _pair(node.padding, "padding", key)
        pool = _written_pool(node, key, stride, padding)
        if pool is not None:
            _emit(graph, key, pool, ins, {})
            return
        weight, groups = _grouped(node, key)
        conv2 = O.Conv2d(stride=stride, padding=padding, dilation=_pair(node.dilation, "dilation", key), groups=groups)
        _emit(graph, key, conv2, ins, {"weight": weight, "bias": node.bias})
    elif isinstance(node, nir.Conv1d):
        if isinstance(node.padding, str):
            raise UnsupportedError(f"NIR padding '{node.padding}' is not supported; use explicit integers")
        weight, groups = _grouped(node, key)
        conv1 = O.Conv1d(
            stride=_int(node.stride, "stride", key),
            padding=_int(node.padding, "padding", key),
            dilation=_int(node.dilation, "dilation", key),
            groups=groups,
        )
        _emit(graph, key, conv1, ins, {"weight": weight, "bias": node.bias})
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        cls = O.AvgPool2d if isinstance(node, nir.AvgPool2d) else O.SumPool2d
        pool = cls(
            kernel=_pair(node.kernel_size, "kernel_size", key),
            stride=_pair(node.stride, "stride", key),
            padding=_pair(node.padding, "padding", key),
        )
        _emit(graph, key, pool, ins, {})
    elif isinstance(node, nir.Flatten):
        out = node.output_type.get("output") if isinstance(node.output_type, dict) else None
        if out is not None and np.asarray(out).size > 1:  # snnc's flatten keeps only the batch dimension
            raise UnsupportedError(f"NIR node '{key}': a Flatten to {list(np.asarray(out))} (start_dim="
                                   f"{node.start_dim}, end_dim={node.end_dim}) keeps several dimensions; snnc "
                                   "imports a flatten of all of them")
        _emit(graph, key, O.Flatten(), ins, {})
    elif isinstance(node, nir.Scale):
        factor, per_channel = _per_channel_or_scalar(_floats(node.scale, "scale", key))
        _emit(graph, key, O.Scale(factor=factor), ins, {} if per_channel is None else {"scale": per_channel})
    else:
        _emit_neuron(graph, key, node, ins, dt)


def _written_pool(node, key: str, stride: tuple[int, int], padding: tuple[int, int]) -> O.Op | None:
    """The pooling op snnc wrote as this Conv2d (metadata ``snnc_op``), if its weights are that pooling's."""
    kind = _meta(node, "snnc_op")
    if not isinstance(kind, str) or kind not in ("sumpool2d", "avgpool2d"):  # absent, or not what snnc writes
        return None
    w = _floats(node.weight, "weight", key)
    if w.ndim != 4 or w.shape[0] != w.shape[1]:
        return None
    kernel = (int(w.shape[2]), int(w.shape[3]))
    value = np.float32(1.0 if kind == "sumpool2d" else 1.0 / (kernel[0] * kernel[1]))
    expected = np.zeros_like(w)
    expected[np.arange(w.shape[0]), np.arange(w.shape[0])] = value
    if not np.array_equal(w, expected) or np.any(_floats(node.bias, "bias", key) != 0) or \
            _pair(node.dilation, "dilation", key) != (1, 1):
        return None  # edited after snnc wrote it: import the conv as it stands
    cls = O.SumPool2d if kind == "sumpool2d" else O.AvgPool2d
    return cls(kernel=kernel, stride=stride, padding=padding)


def _grouped(node, key: str) -> tuple[np.ndarray, int]:
    """The weight and groups of a convolution: NIR's own ``groups``, or the groups snnc wrote in the
    metadata (``snnc_groups``) when the dense weight is zero outside their diagonal blocks."""
    weight = _floats(node.weight, "weight", key)
    groups = _int(node.groups, "groups", key)
    written = _meta(node, "snnc_groups")
    if groups != 1 or written is None:
        return weight, groups
    g = _int(written, "snnc_groups", key)
    c_out, c_in = weight.shape[:2]
    if g < 2 or c_out % g or c_in % g:
        return weight, 1
    block_in, block_out = c_in // g, c_out // g
    grouped = np.stack([weight[o, (o // block_out) * block_in:(o // block_out + 1) * block_in] for o in range(c_out)])
    dense = np.zeros_like(weight)
    for o in range(c_out):
        dense[o, (o // block_out) * block_in:(o // block_out + 1) * block_in] = grouped[o]
    return (grouped, g) if np.array_equal(dense, weight) else (weight, 1)


def _emit_neuron(graph: Graph, key: str, node, ins: list[str], dt: float) -> None:
    """A NIR neuron (IF, LIF, CubaLIF, I, LI, CubaLI, Threshold) as a ``neuron`` op; the input gain its
    ``r`` / ``w_in`` give under the forward-Euler convention (module docstring) as a ``scale`` in front
    of it when it is not 1."""
    import nir

    kind = type(node).__name__
    params: dict[str, np.ndarray] = {}
    hard = dict(reset=O.Reset.HARD, strict=True)
    if isinstance(node, nir.Threshold):
        vth, vth_c = _threshold(node.threshold, "threshold", key)
        # stateless: v = 0·v + I, spike where v > θ
        op = O.Neuron(model=O.NeuronModel.LIF, beta=0.0, v_th=vth, **hard)  # type: ignore[arg-type]
        _emit(graph, key, op, ins, {} if vth_c is None else {"v_th": vth_c})
        return
    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))
    if spiking:
        vth, vth_c = _threshold(node.v_threshold, "v_threshold", key)
        if vth_c is not None:
            params["v_th"] = vth_c
        kw: dict = dict(v_th=vth, v_reset=_uniform(node.v_reset, "v_reset", key), **hard)
    else:  # I, LI, CubaLI: the membrane potential is the output
        kw = dict(reset=O.Reset.NONE, emit=O.Emit.MEMBRANE)
    r = _floats(node.r, "r", key).astype(np.float64)
    if isinstance(node, (nir.IF, nir.I)):
        gain = r * dt
        model = O.NeuronModel.IF
    else:
        if isinstance(node, (nir.LIF, nir.LI)):
            tau, v_leak, exact = node.tau, node.v_leak, _meta(node, "snnc_beta")
        else:
            tau, v_leak, exact = node.tau_mem, node.v_leak, _meta(node, "snnc_beta")
        tau = _positive(tau, "tau_mem" if kind.startswith("Cuba") else "tau", key)
        if np.any(_floats(v_leak, "v_leak", key) != 0):
            raise UnsupportedError(f"NIR node '{key}': {kind} with v_leak != 0 (got {_shown(v_leak)}) is not "
                                   "supported")
        gain = r * dt / tau
        beta, beta_c = _per_channel_or_scalar(_exact(1.0 - dt / tau, exact))
        if beta_c is not None:
            params["beta"] = beta_c
        kw["beta"] = beta
        model = O.NeuronModel.LIF
        if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            tau_syn = _positive(node.tau_syn, "tau_syn", key)
            alpha, alpha_c = _per_channel_or_scalar(_exact(1.0 - dt / tau_syn, _meta(node, "snnc_alpha")))
            if alpha_c is not None:  # snnc's synaptic leak is one number per neuron op
                raise UnsupportedError(f"NIR node '{key}': per-neuron tau_syn that is not uniform is not supported")
            kw["alpha"] = alpha
            gain = gain * _floats(node.w_in, "w_in", key).astype(np.float64) * dt / tau_syn
            model = O.NeuronModel.CUBA
    gain = np.broadcast_to(gain, np.asarray(node.r).shape)
    if not np.all(np.isfinite(gain)):
        raise InputFileError(f"NIR node '{key}': its input gain (r and time constants) is not finite")
    if not np.allclose(gain, 1.0, rtol=1e-6, atol=0):  # more than float32 rounding of snnc's own values
        factor, per_channel = _per_channel_or_scalar(gain.astype(np.float32))
        scaled = graph.fresh_name(f"{key}_r")
        _emit(graph, scaled, O.Scale(factor=factor), ins, {} if per_channel is None else {"scale": per_channel})
        ins = [scaled]
    _emit(graph, key, O.Neuron(model=model, **kw), ins, params)


def _threshold(values, what: str, key: str) -> tuple[float, np.ndarray | None]:
    arr = _floats(values, what, key)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise UnsupportedError(f"NIR node '{key}': {what} must be finite and > 0 for snnc's neurons, got "
                               f"{_shown(values)}")
    return _per_channel_or_scalar(arr)


def _positive(values, what: str, key: str) -> np.ndarray:
    arr = _floats(values, what, key).astype(np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputFileError(f"NIR node '{key}': {what} must be finite and > 0, got {_shown(values)}")
    return arr


def _exact(derived: np.ndarray, written) -> np.ndarray:
    """snnc's exact leak (metadata it wrote) where it agrees with the one the time constants give up to
    float32 rounding; the derived value otherwise (a file from another tool, or edited)."""
    derived = np.asarray(derived, dtype=np.float32)
    if written is None:
        return derived
    try:
        exact = np.asarray(written, dtype=np.float64)
    except (TypeError, ValueError):  # not numbers: not what snnc wrote
        return derived
    if exact.shape == derived.shape and np.allclose(exact, derived, rtol=0, atol=1e-5):
        return exact
    return derived


# ---------------------------------------------------------------------------------------
# consumers


def for_snntorch(nir_graph, tau: float = 1e30):
    """A copy of ``nir_graph`` that ``snntorch.import_nir.import_from_nir`` (snnTorch 0.9-1.0) runs as NIR
    says: its IF importer builds ``Leaky(beta=0.9)`` with subtractive reset and asserts ``r == 1``, so each
    IF node becomes the LIF node with a leak below float32 resolution (``tau``; beta = 1 − dt/tau rounds
    to 1.0) and the same threshold, reset and input gain (r = tau/dt), which its LIF importer maps to
    ``Leaky(beta=1, reset_mechanism="zero")``.  The file snnc writes keeps IF nodes (Norse runs them as
    written); docs/nir.md says why."""
    import copy

    import nir

    dt = _dt(nir_graph.metadata)
    out = copy.deepcopy(nir_graph)
    for key, node in out.nodes.items():
        if isinstance(node, nir.IF):
            if not np.allclose(np.asarray(node.r, np.float64) * dt, 1.0, rtol=1e-6):
                raise UnsupportedError(f"NIR node '{key}': IF with r·dt != 1 has no snnTorch equivalent")
            shape = np.asarray(node.v_threshold).shape
            taus = np.full(shape, tau, np.float32)
            out.nodes[key] = nir.LIF(tau=taus, r=taus / np.float32(dt), v_leak=np.zeros(shape, np.float32),
                                     v_threshold=node.v_threshold, v_reset=node.v_reset)
    return out


def for_norse(nir_graph):
    """A copy of ``nir_graph`` that ``norse.torch.from_nir(graph, dt=<snnc_dt>)`` (Norse 1.1) runs as NIR says:
    its LIF importer drops ``r`` (a LIFBox cell integrates ``dt/tau · I``, not ``dt/tau · r·I``), while
    its CubaLIF importer honours ``r`` and ``w_in``; so each LIF node becomes the CubaLIF node with
    ``tau_syn = dt`` (under forward Euler a synaptic current that passes the step's input through:
    alpha = 0), which Norse then runs as ``v = beta·v + I``.  IF and CubaLIF nodes are kept."""
    import copy

    import nir

    dt = np.float32(_dt(nir_graph.metadata))
    out = copy.deepcopy(nir_graph)
    for key, node in out.nodes.items():
        if isinstance(node, nir.LIF):
            tau_syn = np.full(np.asarray(node.tau).shape, dt, np.float32)
            out.nodes[key] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=node.tau, r=node.r, v_leak=node.v_leak,
                                         v_threshold=node.v_threshold, v_reset=node.v_reset, w_in=tau_syn / dt)
    return out
