"""canonicalize: drop no-op structure.

Changes: removes ``dropout`` and ``identity`` nodes; merges chains of ``flatten`` /
``reshape`` into one; removes a reshape to the shape it already has.
Preserves: the graph's function exactly (ANN and SNN mode); parameter names.
Requires: nothing.  Idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from snnc.ir import Graph
from snnc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    name: ClassVar[str] = "canonicalize"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op.value_identity:
                graph.remove(node)
        for node in list(graph.nodes):
            if not node.op.shape_only:
                continue
            src = graph.producer(node.inputs[0])
            # reshape(reshape(x)) == reshape(x): read from the first one's input instead
            if src is not None and src.op.shape_only:
                node.inputs = (src.inputs[0],)
            if node.type is not None and graph.value_type(node.inputs[0]).shape == node.type.shape:
                graph.remove(node)
        _drop_dead(graph)
        graph.infer_types()


def _drop_dead(graph: Graph) -> None:
    """Remove nodes whose value nobody uses (after merges, the inner reshapes)."""
    changed = True
    while changed:
        used = {v for n in graph.nodes for v in n.inputs} | set(graph.outputs)
        dead = [n for n in graph.nodes if n.name not in used]
        changed = bool(dead)
        for n in dead:
            graph.nodes.remove(n)
    graph.drop_unused_params()
