"""bias-correct: light calibration of the spiking layers' biases (Li et al. 2021; AdaFire).

For every neuron, in graph order, on the first ``batches`` calibration batches:
m_ann[c] = per-channel mean of the neuron's ANN-mode output (the clipped activation the
neuron stands for), m_snn[c] = per-channel mean of its SNN-mode output averaged over
``ctx.timesteps`` steps (with the corrections of the earlier layers in place), and the bias
of the layer that feeds the neuron becomes b[c] − (m_snn[c] − m_ann[c])·v_th[c]/out_scale[c]
(the current that shifts the output mean by that much).  The ANN reference is taken once,
before any change.  A channel is corrected only where its mean error exceeds ``z-score``
standard errors: a flat layer sees one value per neuron per sample, and a shift fitted to
noise on a few hundred samples makes held-out data worse (measured on the digits MLP).

Changes: the biases of the conv / linear / scale ops that feed neurons (a missing bias is
created; through a residual add, the weighted operand's bias).  A neuron with no such
layer is left alone (a note names it).
Preserves: the graph structure.  Lossy by design: it trades the exact ANN-mode function for a
smaller mean error of the SNN at T = ``ctx.timesteps``.
Requires: neurons (lower-neurons), calibration data and a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector, require_neurons
from snnc.passes._params import add_to_bias, bias_owner
from snnc.passes._samples import channel_values, first_samples


@register_pass
@dataclass(frozen=True)
class BiasCorrect(Pass):
    name: ClassVar[str] = "bias-correct"
    batches: int = 2
    z_score: float = 2.0

    def option_problems(self) -> list[str]:
        problems = []
        if self.batches < 1:
            problems.append(f"batches={self.batches} must be >= 1")
        if not self.z_score > 0:
            problems.append(f"z-score={self.z_score} must be > 0")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        x, _ = first_samples(ctx, self.name, self.batches)
        shifts = correct_biases(ctx, graph, x, self.name, self.z_score)
        ctx.results[self.name] = {"layers": {k: float(np.abs(v).mean()) for k, v in shifts.items()}}


def correct_biases(
    ctx: PassContext, graph: Graph, x: np.ndarray, pass_name: str, z_score: float = 2.0
) -> dict[str, np.ndarray]:
    """The bias correction itself (also run by compress-spikes and adafire); returns the
    per-channel output-mean error removed at each neuron."""
    if ctx.timesteps < 1:
        raise PassError(f"{pass_name}: timesteps={ctx.timesteps} must be >= 1")
    sim = ctx.require_simulator(pass_name)
    layers = require_neurons(graph, pass_name)
    names = [n.name for n in layers]
    reference = sim.run_ann(graph, x, record=names)
    shifts: dict[str, np.ndarray] = {}
    with ctx.track(pass_name, len(layers)) as bar:
        for neuron in layers:
            owner = bias_owner(graph, neuron)
            if owner is None:
                ctx.note(f"{pass_name}: neuron %{neuron.name} is not fed by a layer with a bias; left uncorrected")
                bar.advance()
                continue
            run = sim.run_snn(_prefix(graph, neuron), x, ctx.timesteps, record=[neuron.name])
            diff = channel_values(run.recorded[neuron.name] - reference[neuron.name])
            error = diff.mean(axis=1)
            # correct only means that the sample pins down: a flat layer sees one value per sample per
            # neuron, and an insignificant mean shift learned from a few hundred samples does not generalise
            stderr = diff.std(axis=1) / np.sqrt(diff.shape[1])
            error = np.where(np.abs(error) > z_score * stderr, error, 0.0)
            gain = neuron_vector(graph, neuron, "out_scale") / neuron_vector(graph, neuron, "v_th")
            add_to_bias(graph, owner, -error / gain)
            shifts[neuron.name] = error
            bar.advance()
    graph.infer_types()
    return shifts


def _prefix(graph: Graph, node: Node) -> Graph:
    """The part of ``graph`` that ``node``'s value depends on, with ``node`` as its output (sharing
    the nodes and the parameter store).  A step of a node reads only its ancestors, so simulating
    the prefix gives ``node`` the values it has in the whole graph, for the work of its ancestors
    alone: one correction per neuron then costs half the graph on average, not all of it."""
    needed: set[str] = set()
    todo = [node.name]
    while todo:
        producer = graph.producer(todo.pop())
        if producer is not None and producer.name not in needed:
            needed.add(producer.name)
            todo.extend(producer.inputs)
    return Graph(graph.name, graph.inputs, nodes=[n for n in graph.nodes if n.name in needed],
                 outputs=[node.name], attrs=graph.attrs, params=graph.params)
