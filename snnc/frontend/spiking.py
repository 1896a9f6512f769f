"""Spiking modules in source models: a registry that maps a neuron class to a ``neuron`` op.

A mapping is a function ``(module) -> snnc.ir.ops.Neuron`` (plus optional per-channel
parameters); register one with :func:`register_neuron_mapping` for a class the frontend
does not know.  Such modules are kept as leaves while tracing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from snnc.ir import ops as O

NeuronMapping = Callable[[nn.Module], tuple[O.Neuron, dict[str, np.ndarray]]]
NEURON_MAPPINGS: dict[type, NeuronMapping] = {}


def register_neuron_mapping(cls: type) -> Callable[[NeuronMapping], NeuronMapping]:
    """Decorator: ``@register_neuron_mapping(MyLIF) def f(m): return Neuron(...), {}``."""

    def decorate(fn: NeuronMapping) -> NeuronMapping:
        NEURON_MAPPINGS[cls] = fn
        return fn

    return decorate


def _mapping_for(module: nn.Module) -> NeuronMapping | None:
    for cls in type(module).__mro__:
        if cls in NEURON_MAPPINGS:
            return NEURON_MAPPINGS[cls]
    return None


def is_spiking_module(module: nn.Module) -> bool:
    return _mapping_for(module) is not None


def lower_spiking_module(builder: Any, node: Any, module: nn.Module, path: str, x: str) -> bool:
    """Emit a ``neuron`` node for a registered spiking module; False if none is registered."""
    mapping = _mapping_for(module)
    if mapping is None:
        return False
    op, tensors = mapping(module)
    params = {role: builder.param(f"{path}.{role}", _as_tensor(v)) for role, v in tensors.items()}
    builder.emit(node, op, [x], params)
    return True


def _as_tensor(value: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.asarray(value, dtype=np.float32))
