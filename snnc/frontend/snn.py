"""The import of a whole direct-coded SNN (snnTorch, SpikingJelly, Norse) as one timestep.

The model's ``forward(x)`` is one step from the analog input (see :mod:`snnc.frontend.spiking` for
the per-step idioms and the neuron mappings); it is traced by :mod:`snnc.frontend.fx` with its
neuron modules as leaves, then wrapped in ``encode{direct}`` and a ``readout``.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn

from snnc.errors import UnsupportedError, UserError
from snnc.frontend.fx import SourceTracer, import_module
from snnc.frontend.spiking import PER_STEP_HINT, check_neuron_calls, is_snn, spikingjelly_single_step
from snnc.ir import Graph, Node
from snnc.ir import ops as O

__all__ = ["import_snn", "is_snn", "per_step_module"]


def per_step_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``forward(x)`` is one timestep with a single output.

    The copy is what gets traced and shape-propagated (which runs it), so the user's model
    and its neuron state are left untouched.  Parameter names stay those of ``module``.
    """
    step = copy.deepcopy(module)
    if sys.modules.get("spikingjelly") is not None:  # its modules can only be in the model if it is imported
        step = spikingjelly_single_step(step)
    base = type(step)
    forward = base.forward

    def step_forward(self: nn.Module, x: torch.Tensor) -> Any:
        out = forward(self, x)  # extra arguments (a Norse state) keep their default, None
        return out[0] if isinstance(out, (tuple, list)) else out

    step.__class__ = type(base.__name__, (base,), {"forward": step_forward, "__module__": base.__module__})
    return step


def import_snn(module: nn.Module, example_input: torch.Tensor, name: str | None = None) -> Graph:
    """Trace a direct-coded SNN (one timestep, see the module docstring) into a snnc Graph.

    The graph is ``encode{direct}`` -> the traced step -> ``readout`` (spike count when the
    step returns a neuron's spikes, mean current otherwise).  Graph attribute ``timesteps``
    stays unset: T is a choice of the run (``--timesteps``), not of the model.
    """
    step = per_step_module(module)
    _check_one_step(step)
    try:
        graph = import_module(step, example_input, name or type(module).__name__)
    except UnsupportedError as e:
        if PER_STEP_HINT in str(e) or "register_neuron_mapping" in str(e):  # says already what to do
            raise
        raise UnsupportedError(f"{e}; {PER_STEP_HINT}") from None
    except UserError as e:
        raise UserError(f"{e}; {PER_STEP_HINT}") from None
    _add_encoding_and_readout(graph)
    return graph


def _check_one_step(step: nn.Module) -> None:
    """Refuse a forward that is not one timestep (a time loop, explicit neuron state) before the
    lowering trips over its first symptom; a model fx cannot trace is left to the lowering to report."""
    try:
        graph = SourceTracer().trace(step)
    except Exception:  # reported with the user's source line by the lowering
        return
    check_neuron_calls(graph, dict(step.named_modules()))


def _add_encoding_and_readout(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedError(f"a direct-coded SNN has one input and one output; @{graph.name} has "
                               f"{len(graph.inputs)} and {len(graph.outputs)}")
    name = graph.inputs[0][0]
    enc = Node(graph.fresh_name(f"{name}_enc"), O.Encode(scheme=O.Scheme.DIRECT), (name,))
    graph.replace_uses(name, enc.name)
    graph.nodes.insert(0, enc)
    out = graph.outputs[0]
    producer = graph.producer(out)
    spikes = producer is not None and isinstance(producer.op, O.Neuron) and producer.op.emit is O.Emit.SPIKES
    mode = O.ReadoutMode.SPIKE_COUNT if spikes else O.ReadoutMode.MEAN_CURRENT
    readout = Node(graph.fresh_name("readout"), O.Readout(mode=mode), (out,))
    graph.nodes.append(readout)
    graph.outputs = [readout.name]
    graph.infer_types()
