"""prune-spikes: remove channels that never fire on the calibration data.

Simulates the graph for ``ctx.timesteps`` steps on the first ``batches`` calibration batches
(0 = all) and finds, for every neuron layer, the channels (for a flat layer: the neurons)
that sent no spike at any position for any sample.  Such a channel contributes nothing
downstream, so it is removed: the rows of the conv / linear that feeds it, its per-channel
neuron parameters, and the matching input slices of every conv / linear that reads it
(through gated max pooling, average / sum pooling and flatten, where a channel is a block of
H·W columns).

A layer is left whole when its channels cannot be removed cleanly: it is not fed by an
ungrouped conv / linear used only by it, or its spikes reach a residual add, concat, scale,
grouped conv, readout or graph output; at least one channel always stays.

Changes: weight / bias / per-channel parameter tensors (stored under the same names) and the
types of the pruned values.  Reports ``ctx.results["prune-spikes"]``: removed channels per
layer, removed neurons, and silent neurons in total (including positions of live channels).
Preserves: the SNN-mode output on the calibration data (up to float summation order); on
other inputs a removed channel might have fired (the pass's only loss).
Requires: neurons (lower-neurons), calibration data and a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import require_neurons
from snnc.passes._params import store_param
from snnc.passes._samples import channel_values, first_samples


@register_pass
@dataclass(frozen=True)
class PruneSpikes(Pass):
    name: ClassVar[str] = "prune-spikes"
    batches: int = 0

    def option_problems(self) -> list[str]:
        return [f"batches={self.batches} must be >= 0 (0: all)"] if self.batches < 0 else []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        sim = ctx.require_simulator(self.name)
        layers = require_neurons(graph, self.name)
        x, _ = first_samples(ctx, self.name, self.batches)
        run = sim.run_snn(graph, x, ctx.timesteps, record=[n.name for n in layers])
        removed: dict[str, int] = {}
        removed_neurons = 0
        silent = 0
        for n in layers:
            activity = channel_values(np.abs(run.recorded[n.name]))
            per_position = np.abs(run.recorded[n.name]).max(axis=0)  # (C, ...) max over samples
            silent += int(np.sum(per_position == 0))
            dead = activity.max(axis=1) == 0
            if not dead.any() or dead.all():
                continue
            readers = _readers(graph, n)
            producer = graph.producer(n.inputs[0])
            if readers is None or producer is None or not _prunable_producer(graph, producer, n):
                continue
            keep = np.flatnonzero(~dead)
            _prune(graph, producer, n, readers, keep)
            removed[n.name] = int(dead.sum())
            removed_neurons += int(dead.sum()) * int(per_position[0].size)
        graph.infer_types()
        ctx.results[self.name] = {
            "removed_channels": removed,
            "removed_neurons": removed_neurons,
            "silent_neurons": silent,
            "samples": len(x),
        }
        if removed:
            ctx.note(f"prune-spikes: removed {removed_neurons} never-firing neurons "
                     f"({sum(removed.values())} channels in {len(removed)} layers)")


def _prunable_producer(graph: Graph, producer: Node, neuron: Node) -> bool:
    if not producer.op.weighted or graph.only_user(producer.name) is not neuron:
        return False
    return getattr(producer.op, "groups", 1) == 1


def _readers(graph: Graph, neuron: Node) -> list[tuple[Node, int]] | None:
    """The weighted layers that read the neuron's channels, with the number of positions per
    channel they see as separate inputs (1 for a conv, H·W for a linear after flatten); None
    if the channels reach anything else."""
    found: list[tuple[Node, int]] = []
    todo = [(neuron.name, 1)]
    while todo:
        value, block = todo.pop()
        if value in graph.outputs:
            return None
        for user in graph.users(value):
            if user.op.weighted and getattr(user.op, "groups", 1) == 1:
                found.append((user, block))
            elif user.op.channelwise and block == 1:  # a pruned channel stays silent through it
                todo.append((user.name, 1))
            elif isinstance(user.op, O.Flatten) and block == 1:
                t = graph.value_type(value)
                todo.append((user.name, t.numel // t.channels))
            else:
                return None
    return found


def _prune(graph: Graph, producer: Node, neuron: Node, readers: list[tuple[Node, int]], keep: np.ndarray) -> None:
    w = graph.params[producer.params["weight"]]
    store_param(graph, producer, "weight", w[keep])
    if "bias" in producer.params:
        store_param(graph, producer, "bias", graph.params[producer.params["bias"]][keep])
    for role in ("v_th", "beta", "out_scale"):
        if role in neuron.params:
            p = graph.params[neuron.params[role]].reshape(-1)
            if p.size > 1:
                store_param(graph, neuron, role, p[keep])
    for reader, block in readers:
        w = graph.params[reader.params["weight"]]
        if isinstance(reader.op, O.Linear):
            cols = (keep[:, None] * block + np.arange(block)[None, :]).reshape(-1)
            store_param(graph, reader, "weight", w[:, cols])
        else:
            store_param(graph, reader, "weight", w[:, keep])
