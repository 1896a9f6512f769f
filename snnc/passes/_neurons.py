"""Pass helpers (not a pass): finding spiking neurons and reading or writing their per-channel
quantities.

A neuron's *effective* threshold, leak and output scale are the scalar attribute times the
optional per-channel parameter (``snnc.ir.ops.Neuron``); :func:`neuron_vector` returns them as
one value per channel and :func:`set_neuron_vector` stores them back.  "Normalised" activations
are in units of the neuron's threshold: 1.0 is one spike per step.
"""

from __future__ import annotations

import numpy as np

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.passes._params import uses, with_attrs


def neurons(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if isinstance(n.op, O.Neuron)]


def require_neurons(graph: Graph, pass_name: str) -> list[Node]:
    found = neurons(graph)
    if not found:
        raise PassError(f"pass '{pass_name}' needs spiking neurons; run lower-neurons first")
    return found


def neuron_vector(graph: Graph, node: Node, role: str) -> np.ndarray:
    """Effective per-channel value of a neuron attribute (attribute × optional parameter)."""
    assert node.type is not None  # internal: the pass manager verifies graphs between passes
    channels = node.type.channels
    value = np.full(channels, float(getattr(node.op, role)))
    param = node.param(graph, role)
    if param is not None:
        value = value * np.asarray(param, dtype=np.float64).reshape(-1)
    return value


def set_neuron_vector(graph: Graph, node: Node, role: str, value: np.ndarray) -> None:
    """Store an effective per-channel value: as the scalar attribute when uniform, else as a
    per-channel parameter ``<node>.<role>`` with the attribute set to 1."""
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    if np.all(value == value[0]):
        node.op = with_attrs(node.op, **{role: float(value[0])})
        node.params.pop(role, None)
        return
    node.op = with_attrs(node.op, **{role: 1.0})
    key = node.params.get(role)
    if key is None or uses(graph, key) > 1:
        key = graph.fresh_param(f"{node.name}.{role}")
    node.params[role] = key
    graph.params[key] = value.astype(np.float32)


def scale_threshold(graph: Graph, node: Node, factor: np.ndarray) -> None:
    """Multiply a neuron's threshold and output scale by ``factor`` (per channel): the
    neuron then approximates the same clipped activation with a coarser or finer step."""
    for role in ("v_th", "out_scale"):
        set_neuron_vector(graph, node, role, neuron_vector(graph, node, role) * factor)
