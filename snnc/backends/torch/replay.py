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
           events_given: Sequence[dict[str, torch.Tensor]], keep: Collection[str], spikes_of: Collection[str],
           split: _Split | None = None):
    """Run nodes[start:] for ``timesteps`` steps; ``values[t]`` / ``events_given[t]`` are the
    recorded values and events at step t (empty sequences: nothing recorded, start = 0).  With
    ``split``, ``x`` and the recorded values stand for ``len(split.modules)`` slices of equal size
    stacked along the batch: node ``split.node`` of slice j is computed by ``split.modules[j]`` (its
    own op and parameters, its own state), every other node by ``module`` for all slices at once.
    Returns (logits, {neuron: spikes per sample}, recorded steps); with ``split``, the spikes of
    ``spikes_of`` per slice (a tensor of one total per slice, divided by the slice's samples)."""
    g: Graph = module.graph
    nodes = g.nodes[start:]
    readout = next((nd for nd in g.nodes if isinstance(nd.op, O.Readout)), None)
    read = readout.inputs[0] if readout is not None else g.outputs[0]
    k = len(split.modules) if split is not None else 1
    n = x.shape[0]
    if k > 1:  # the slices share the recorded prefix: one copy of it per slice
        x = torch.cat([x] * k)
    state: dict = {}
    slice_states: list[dict] = [{} for _ in range(k)]
    # exact integer totals in float64, divided once at the end (as the layer-major run counts)
    spikes = {v: torch.zeros(k if split is not None else (), dtype=torch.float64, device=x.device)
              for v in spikes_of}
    acc = torch.zeros((), device=x.device)
    kept_values, kept_events = [], []
    for t in range(timesteps):
        given = values[t] if values else {}
        env = {g.inputs[0][0]: x, **({v: torch.cat([val] * k) for v, val in given.items()} if k > 1 else given)}
        events_t = events_given[t] if events_given else {}
        events = {v: torch.cat([e] * k) for v, e in events_t.items()} if k > 1 else dict(events_t)
        for node in nodes:
            ins = [env[v] for v in node.inputs]
            if split is not None and node.name == split.node:
                env[node.name] = _split_step(split, ins, events, slice_states, t, timesteps)
            else:
                env[node.name] = module.step(node, ins, events, state, t, timesteps, False)
            if node.name in spikes and node.name in events:
                counted = events[node.name].abs()
                if split is not None:
                    spikes[node.name] += counted.reshape(k, -1).sum(dim=1, dtype=torch.float64)
                else:
                    spikes[node.name] += counted.sum(dtype=torch.float64)
        if keep:
            kept_values.append({v: env[v] for v in keep if v in env})
            kept_events.append({v: events[v] for v in keep if v in events})
        acc = acc + env[read]
    return acc / timesteps, {v: c / n for v, c in spikes.items()}, (tuple(kept_values), tuple(kept_events))


@dataclass(frozen=True, kw_only=True)
class _Split:
    """One node computed per batch slice by a module of its own (a variant of that node)."""

    node: str
    modules: tuple  # GraphModule per slice, each holding its own version of ``node``


def _split_step(split: _Split, ins: list[torch.Tensor], events: dict[str, torch.Tensor], states: list[dict],
                t: int, timesteps: int) -> torch.Tensor:
    """Step t of ``split.node`` on every slice with that slice's module (its op, parameters and
    state); the slices' values and events stacked back along the batch."""
    k = len(split.modules)
    chunks = [x.chunk(k) for x in ins]
    outs: list[torch.Tensor] = []
    evs: list[torch.Tensor] = []
    for j, m in enumerate(split.modules):
        node = m.graph.node(split.node)
        # what a step may read of its operands' events (gated pooling), this slice's part of them
        ev = {v: events[v].chunk(k)[j] for v in node.inputs if v in events}
        outs.append(m.step(node, [c[j] for c in chunks], ev, states[j], t, timesteps, False))
        if split.node in ev:  # every slice's node is the same op kind: all record events or none
            evs.append(ev[split.node])
    if evs:
        events[split.node] = torch.cat(evs)
    return torch.cat(outs)


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


def one_node(graph: Graph, node: str) -> Graph:
    """The node ``node`` of ``graph`` alone with its parameters: what a module needs to step it."""
    nd = graph.node(node)
    return Graph(graph.name, list(graph.inputs), nodes=[nd], outputs=[nd.name], attrs=graph.attrs,
                 params={key: graph.params[key] for key in nd.params.values()})


@torch.no_grad()
def run_variants_from(module, variants: Sequence, node: str, x: np.ndarray, start: int, recording: StepRecording,
                      device: torch.device) -> list[tuple[np.ndarray, float]]:
    """(logits, spikes per sample of ``node``) of each module in ``variants``, whose graphs equal
    ``module``'s except at ``node`` (at or after ``start``): one simulation of nodes[start:] over the
    variants stacked along the batch, node ``node`` computed per slice by its variant's module.  A
    slice sees exactly the values of its own run (``run_from`` with that variant): nothing crosses
    between samples; float sums of a wider batch may differ in the last bit (convolution blocking)."""
    _check(module.graph)
    logits: list[list[np.ndarray]] = [[] for _ in variants]
    counts = [0.0] * len(variants)
    split = _Split(node=node, modules=tuple(variants))
    for i, lo in enumerate(range(0, len(x), recording.batch_size)):
        xb = torch.as_tensor(np.asarray(x[lo: lo + recording.batch_size]), device=device)
        out, spikes, _ = _steps(module, xb, recording.timesteps, start, recording.values[i], recording.events[i],
                                (), [node], split)
        for j, part in enumerate(out.chunk(len(variants))):
            logits[j].append(part.cpu().numpy())
            counts[j] += float(spikes[node][j]) * (xb.shape[0] / len(x))
    return [(np.concatenate(parts), c) for parts, c in zip(logits, counts, strict=True)]
