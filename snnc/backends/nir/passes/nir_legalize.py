"""nir-legalize: rewrite a converted SNN into neurons and ops that NIR expresses and its consumers run.

NIR's IF / LIF / CubaLIF neurons fire on ``v > v_threshold``, reset to ``v_reset`` and start at rest
(the spec has no initial state); NIR has no max pooling of spikes.  This pass rewrites what it can:

* ``spike_maxpool`` (gated max pooling, which needs per-input spike counters) → **OR pooling**: a
  ``sumpool2d`` with the same window into a ``neuron{model=if, v_th=0.5, reset=hard, strict}``,
  which fires in a step when any input of its window spiked in that step (its potential is 0 or
  at least 1, and a spike resets it to 0).  Its rate lies between the largest and the summed input
  rate: a different function from gated max pooling (a note says so).  The digits CNN (ann-to-nir)
  keeps its ANN's 99.2 % at T = 8 and has 97.5 % at T = 16 (docs/nir.md);
* a hard-reset ``neuron`` with the non-strict threshold ``v ≥ θ`` → ``v > θ`` (``strict=true``):
  the two differ only where ``v`` equals ``θ`` exactly.

Everything else is left to the nir target's legality, which lists every node NIR cannot express with
the pass that fixes it (soft reset, a non-zero initial membrane, bursts, ...): the ``ann-to-nir``
pipeline converts an ANN into neurons that need none of that.

Preserves: the SNN's function exactly, except the OR pooling above and ties at the threshold.
Requires: a converted SNN (spike max pooling reads spikes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from snnc.errors import UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass

OR_THRESHOLD = 0.5  # half a spike: the OR neuron fires when one input of its window spiked


@register_pass
@dataclass(frozen=True)
class NirLegalize(Pass):
    name: ClassVar[str] = "nir-legalize"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        log: list[str] = []
        for node in graph.nodes:
            op = node.op
            if isinstance(op, O.Neuron) and op.reset is O.Reset.HARD and not op.strict:
                node.op = dataclasses.replace(op, strict=True)
                log.append(f"neuron %{node.name}: strict=true")
        _or_pooling(ctx, graph, log)
        graph.infer_types()
        ctx.results[self.name] = {"rewrites": log}


def _or_pooling(ctx: PassContext, graph: Graph, log: list[str]) -> None:
    for node in list(graph.nodes):
        if not isinstance(node.op, O.SpikeMaxPool2d):
            continue
        op: O.SpikeMaxPool2d = node.op
        if op.ceil_mode:  # NIR's pooling and convolutions have no partial windows
            raise UnsupportedError(f"nir-legalize: spike_maxpool %{node.name}: ceil_mode has no NIR equivalent")
        t = graph.value_type(node.inputs[0])
        if not t.is_event or t.burst > 1:
            raise UnsupportedError(f"nir-legalize: spike_maxpool %{node.name}: OR pooling needs 0/1 spikes, "
                                   f"reads {t}")
        node.op = O.SumPool2d(kernel=op.kernel, stride=op.stride, padding=op.padding)
        gate = Node(
            graph.fresh_name(f"{node.name}_or"),
            O.Neuron(model=O.NeuronModel.IF, v_th=OR_THRESHOLD, reset=O.Reset.HARD, strict=True),
            (node.name,),
            loc=node.loc,
        )
        graph.replace_uses(node.name, gate.name)
        gate.inputs = (node.name,)
        graph.insert_after(node, gate)
        log.append(f"spike_maxpool %{node.name}: OR pooling (sumpool2d + neuron %{gate.name})")
        ctx.note(f"nir-legalize: max pooling %{node.name} is exported as OR pooling (a neuron fires when any "
                 "input of its window spiked); gated spike max pooling has no NIR equivalent")
