"""What the tvm tests share: exact (dyadic) networks and inputs, one compile-and-run of a graph
on the TVM artifact and on the torch simulator, and the spike-for-spike comparison of both.

Weights on a 1/8 grid in [-1, 1] and inputs on a 1/4 grid make every sum a short dyadic
fraction, exact in float32 whatever the order of summation, so the TVM kernels and the torch
simulator must agree exactly, not within a tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snnc.backends.torch.simulator import TorchSimulator
from snnc.backends.tvm.build import compile_artifact
from snnc.backends.tvm.lower import lower
from snnc.backends.tvm.runtime import EventRuntime
from snnc.ir import Graph
from snnc.ir import ops as O


def dyadic(graph: Graph, seed: int = 0) -> Graph:
    """Round every parameter of ``graph`` (in place) to a multiple of 1/8 in [-1, 1]; ``*.scale``
    parameters become multiples of 1/2 in [0.5, 2] (drawn with ``seed``).  Returns ``graph``."""
    rng = np.random.default_rng(seed)
    for key, value in graph.params.items():
        if key.endswith(".scale"):
            graph.params[key] = rng.integers(1, 5, value.shape).astype(np.float32) / 2
        else:
            graph.params[key] = np.clip(np.round(value * 8), -8, 8).astype(np.float32) / 8
    return graph


def grid_inputs(n: int, shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """``n`` inputs of ``shape`` with values in {0, 1/4, ..., 1}."""
    return (np.random.default_rng(seed).integers(0, 5, (n, *shape)) / 4).astype(np.float32)


def compile_graph(
    graph: Graph, out_dir: Path, densities: dict[str, float] | None = None, int8: tuple[str, ...] = ()
) -> Path:
    """Lower ``graph`` (``densities`` choose the layer modes, ``int8`` the int8 layers) and
    compile it into the artifact directory ``out_dir``."""
    layer_graph, params = lower(graph, densities=densities, int8=int8)
    return compile_artifact(layer_graph, params, out_dir)


def reference(graph: Graph, x: np.ndarray):
    """The torch simulator's run of ``graph`` on ``x`` (its own T)."""
    return TorchSimulator(batch_size=64).run_snn(graph, x, graph.attrs.timesteps)


def run_both(graph: Graph, x: np.ndarray, out_dir: Path, batch_size: int = 4) -> tuple[dict, object]:
    """(the TVM artifact's result, the torch simulator's result) of ``graph`` on ``x``."""
    compile_graph(graph, out_dir)
    return EventRuntime(out_dir).run(x, batch_size=batch_size), reference(graph, x)


def assert_spike_counts_equal(graph: Graph, tvm_out: dict, ref, n: int) -> None:
    """Every spiking layer of the TVM run emitted exactly as many spikes over the ``n`` samples
    as the simulator's neuron after it, every neuron is covered, and some layer spiked."""
    neuron_of = {}
    for node in graph.nodes:
        producer = graph.producer(node.inputs[0]) if isinstance(node.op, O.Neuron) else None
        if producer is not None:
            neuron_of[producer.name] = node.name
    assert set(tvm_out["spikes_per_layer"]) == set(neuron_of)
    for layer, counts in tvm_out["spikes_per_layer"].items():
        # the simulator reports a float32 mean per sample: compare the exact totals
        assert counts.sum() == round(float(ref.spikes[neuron_of[layer]]) * n), layer
    assert sum(counts.sum() for counts in tvm_out["spikes_per_layer"].values()) > 0
