"""Prefix replay: simulate only the nodes from some position on, reading the values that cross
that position from a recorded baseline run.

A sensitivity search (adafire, compress-spikes) simulates many variants of one graph, each of which
changes one neuron layer.  The nodes before the changed one compute the same values at every step
as the baseline, so a variant only needs the nodes from the changed one on, fed at each step with
the recorded values (and event counts) that those nodes read from before it.  The suffix nodes run
the time-major step rule (``GraphModule.step``) on the same inputs: the same spikes as a whole run
(``GraphModule.run_snn``, no exit rule), the readout's mean summed step by step as there, and the
spike counts as exact integer totals in float64 divided once by the samples, as its layer-major
run counts them (tests/test_sensitivity_cache.py compares both).  Only spike counts are kept,
not SOPs or MACs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from snnc.errors import UserError
from snnc.ir import Graph
from snnc.ir import ops as O


@dataclass(frozen=True, kw_only=True)
class StepRecording:
    """Per batch chunk and step, the values (and signed event counts) a suffix may read."""

    timesteps: int
    batch_size: int
    n: int
    values: tuple[tuple[dict[str, torch.Tensor], ...], ...]  # [chunk][t] value -> tensor
    events: tuple[tuple[dict[str, torch.Tensor], ...], ...]


def _check(graph: Graph) -> None:
    for node in graph.nodes:
        if isinstance(node.op, O.Readout) and node.op.exit_rule is not O.ExitRule.NONE:
            raise UserError(f"prefix replay: readout %{node.name} has an exit rule; run the whole graph")
    if len(graph.inputs) != 1:
        raise UserError(f"prefix replay: graph @{graph.name} has {len(graph.inputs)} inputs, expected 1")


def _steps(module, x: torch.Tensor, timesteps: int, start: int, values: Sequence[dict[str, torch.Tensor]],
           events_given: Sequence[dict[str, torch.Tensor]], keep: Collection[str], spikes_of: Collection[str]):
    """Run nodes[start:] for ``timesteps`` steps; ``values[t]`` / ``events_given[t]`` are the
    recorded values and events at step t (empty sequences: nothing recorded, start = 0).  Returns (logits, {neuron: spikes per sample}, recorded steps)."""
    g: Graph = module.graph
    nodes = g.nodes[start:]
    readout = next((nd for nd in g.nodes if isinstance(nd.op, O.Readout)), None)
    read = readout.inputs[0] if readout is not None else g.outputs[0]
    n = x.shape[0]
    state: dict = {}
    # exact integer totals in float64, divided once at the end (as the layer-major run counts)
    spikes = {v: torch.zeros((), dtype=torch.float64, device=x.device) for v in spikes_of}
    acc = torch.zeros((), device=x.device)
    kept_values, kept_events = [], []
    for t in range(timesteps):
        env = {g.inputs[0][0]: x, **(values[t] if values else {})}
        events = dict(events_given[t] if events_given else {})
        for node in nodes:
            env[node.name] = module.step(node, [env[v] for v in node.inputs], events, state, t, timesteps, False)
            if node.name in spikes and node.name in events:
                spikes[node.name] += events[node.name].abs().sum(dtype=torch.float64)
        if keep:
            kept_values.append({v: env[v] for v in keep if v in env})
            kept_events.append({v: events[v] for v in keep if v in events})
        acc = acc + env[read]
    return acc / timesteps, {v: c / n for v, c in spikes.items()}, (tuple(kept_values), tuple(kept_events))


@torch.no_grad()
def record_steps(module, x: np.ndarray, timesteps: int, keep: Collection[str], batch_size: int,
                 device: torch.device) -> StepRecording:
    """A whole run of ``module`` that keeps the values ``keep`` (and their events) at every step."""
    _check(module.graph)
    values, events = [], []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.asarray(x[start: start + batch_size]), device=device)
        _, _, (v, e) = _steps(module, xb, timesteps, 0, (), (), set(keep), ())
        values.append(v)
        events.append(e)
    return StepRecording(timesteps=timesteps, batch_size=batch_size, n=len(x), values=tuple(values),
                         events=tuple(events))


@torch.no_grad()
def run_from(module, x: np.ndarray, start: int, recording: StepRecording, spikes_of: Sequence[str],
             device: torch.device) -> tuple[np.ndarray, dict[str, float]]:
    """(logits, spikes per sample of ``spikes_of``) of a run of ``module`` over the recording's steps
    that computes only nodes[start:], reading every value from before ``start`` from ``recording``
    (which must hold them: ``snnc.passes._sensitivity.crossing_values``).  Batches and their weights as ``run_snn``'s."""
    _check(module.graph)
    logits, counts = [], {v: 0.0 for v in spikes_of}
    for i, lo in enumerate(range(0, len(x), recording.batch_size)):
        xb = torch.as_tensor(np.asarray(x[lo: lo + recording.batch_size]), device=device)
        out, spikes, _ = _steps(module, xb, recording.timesteps, start, recording.values[i], recording.events[i],
                                (), spikes_of)
        logits.append(out.cpu().numpy())
        for v in spikes_of:
            counts[v] += float(spikes[v]) * (xb.shape[0] / len(x))
    return np.concatenate(logits), counts
