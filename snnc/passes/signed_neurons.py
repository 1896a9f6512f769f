"""signed-neurons: spike-code the analog values that a conv / linear reads, with signed neurons.

After lower-neurons a layer not followed by a ReLU (MobileNetV2's linear bottleneck, the
residual stream of its inverted-residual blocks, any conv feeding a conv directly) leaves a
signed analog value that the next conv / linear reads as is: the result is right, but that layer
multiplies analog values at every step instead of accumulating spikes, and the value is never
rate-coded.  An IF neuron cannot code it: it drops the negative part (ReLU), and an analog
bottleneck is mostly negative half the time.  This pass puts one signed IF neuron (``neuron``
with ``negative=signed``: +1 spikes at v ≥ θ, −1 spikes at v < 0, soft reset, v_init = 0.5; see
``snnc.ir.ops.Neuron``) on each such value, right before its weighted readers, with a per-channel
threshold θ = the ``percentile``-th percentile of |a| on the calibration data (measured on the
graph in ANN mode, i.e. with the earlier neurons already clipped).  The neuron's count after T
steps is round(Σ I / θ): the same θ/(2T) error bound as the unsigned neurons, negative values kept.

Per case (docs/analog_paths.md):
* an analog value that reaches a neuron only through ``add`` / ``scale`` / pooling / shape ops
  (ResNet's residual branch: conv2 + shortcut → ReLU) is left alone: it is part of that neuron's
  input current, exact and signed;
* a conv / linear that reads another conv / linear through nothing but structure is merged into
  it by ``compose-linear`` where that is exact (a pointwise reader); what remains (a value also
  read by a residual ``add``, a 3x3 reader) gets a signed neuron here;
* the direct-coded input and the layers computed from it alone stay analog (the encoding layer).

Changes: inserts ``neuron{negative = "signed"}`` nodes named ``<value>_signed`` (per-channel ``v_th`` /
``out_scale`` parameters); the readers read them.  ANN mode then clips each such value to
[−θ, θ].  Preserves: everything else.  Requires: ``lower-neurons`` (it measures the clipped
network), calibration data and a simulator in the context; runs before ``fold-thresholds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import set_neuron_vector
from snnc.passes._samples import ChannelHistogram, calibration_batches
from snnc.passes._thresholds import positive_or


@register_pass
@dataclass(frozen=True)
class SignedNeurons(Pass):
    name: ClassVar[str] = "signed-neurons"
    percentile: float = 99.99
    v_init: float = 0.5
    batches: int = 0

    def option_problems(self) -> list[str]:
        problems = []
        if not 0 < self.percentile <= 100:
            problems.append(f"percentile={self.percentile} must be in (0, 100]")
        if not 0.0 <= self.v_init < 1.0:
            problems.append(f"v-init={self.v_init} must be in [0, 1)")
        if self.batches < 0:
            problems.append(f"batches={self.batches} must be >= 0 (0: all)")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        readers = analog_reads(graph)
        ctx.results[self.name] = {"coded": sorted(readers)}
        if not readers:
            return
        sim = ctx.require_simulator(self.name)
        values = list(readers)
        # |a| folded batch by batch into constant-memory histograms (calibrate's; within 2**-7 of
        # the exact percentile): memory does not grow with the calibration set (issue 13)
        sketches: dict[str, ChannelHistogram] = {}
        for xb, _ in calibration_batches(ctx, self.name, self.batches):
            out = sim.run_ann(graph, np.asarray(xb, dtype=np.float32), record=values)
            for v in values:
                a = np.abs(out[v])
                sketches.setdefault(v, ChannelHistogram(a.shape[1] if a.ndim > 1 else 1)).add(a)
        for v in values:
            theta = sketches[v].percentile(self.percentile)
            theta = positive_or(theta, float(theta.max()) if np.any(theta > 0) else 1.0)
            self._insert(graph, v, readers[v], theta)
        graph.infer_types()

    def _insert(self, graph: Graph, value: str, readers: list[Node], theta: np.ndarray) -> None:
        node = Node(graph.fresh_name(f"{value}_signed"), O.Neuron(negative=O.Negative.SIGNED, v_init=self.v_init), (value,))
        graph.nodes.insert(min(graph.nodes.index(r) for r in readers), node)
        set_neuron_vector(graph, node, "v_th", theta)
        set_neuron_vector(graph, node, "out_scale", theta)
        for r in readers:
            r.inputs = tuple(node.name if v == value else v for v in r.inputs)


def analog_reads(graph: Graph) -> dict[str, list[Node]]:
    """{analog value: the conv / linear nodes that read it} for every value a weighted op reads
    that carries the output of another weighted op through stateless, unweighted ops (add, scale,
    pooling, structure) and is not computed from the graph inputs alone."""
    memo: dict[str, bool] = {}

    def synaptic_analog(value: str) -> bool:
        if value not in memo:
            p = graph.producer(value)
            if p is None or p.op.stateful or isinstance(p.op, O.Encode):
                memo[value] = False
            elif p.op.weighted:
                memo[value] = not _from_inputs_only(graph, p)
            else:
                memo[value] = any(synaptic_analog(v) for v in p.inputs)
        return memo[value]

    found: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if node.op.weighted and node.inputs and synaptic_analog(node.inputs[0]):
            found.setdefault(node.inputs[0], []).append(node)
    return found


def _from_inputs_only(graph: Graph, node: Node) -> bool:
    """Whether ``node`` is computed from the graph inputs through stateless ops alone (the
    direct-coded encoding layers: the same value at every step)."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.op.stateful:
            return False
        todo.extend(p for p in (graph.producer(v) for v in n.inputs) if p is not None)
    return True
