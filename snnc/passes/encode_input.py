"""encode-input: put an ``encode`` node after every graph input and set the graph's T.

Changes: inserts ``encode{scheme}`` after each graph input (or changes the scheme of the
one already there); sets the graph attribute ``timesteps`` to ``ctx.timesteps``.
* ``direct``: the analog input every step (exact; the first synaptic layer is the encoding
  layer and costs MACs);
* ``rate``: Bernoulli spikes with p = clamp(x, 0, 1), seeded with ``ctx.seed``;
* ``ttfs``: one spike per element, earlier for larger values;
* ``phase``: binary phase code over ``bits`` steps.
Preserves: ``direct`` preserves the function; the spike codes clamp inputs to [0, 1] (a
note says so) and approximate x with an error that shrinks with T.
Requires: nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class EncodeInput(Pass):
    name: ClassVar[str] = "encode-input"
    scheme: O.Scheme = O.Scheme.DIRECT
    bits: int = 8

    def option_problems(self) -> list[str]:
        return [f"bits={self.bits} must be >= 1"] if self.bits < 1 else []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if ctx.timesteps < 1:
            raise PassError(f"encode-input: timesteps={ctx.timesteps} must be >= 1")
        op = O.Encode(scheme=self.scheme, seed=ctx.seed, bits=self.bits)
        for name, _ in graph.inputs:
            users = graph.users(name)
            existing = [u for u in users if isinstance(u.op, O.Encode)]
            if existing:
                for node in existing:
                    node.op = op
                continue
            node = Node(graph.fresh_name(f"{name}_enc"), op, (name,))
            graph.replace_uses(name, node.name)
            graph.nodes.insert(0, node)
        if self.scheme is not O.Scheme.DIRECT:
            ctx.note(f"encode-input: scheme={self.scheme.value} clamps inputs to [0, 1]")
        graph.attrs = dataclasses.replace(graph.attrs, timesteps=ctx.timesteps)
        graph.infer_types()
