"""What the tvm target rewrites in its own copy of a converted graph before lowering it to layers.

The target's pooling kernels pool events (spikes, or a pooling layer's graded events); a pooling op
that reads an analog current has no layer.  Conversion leaves one wherever the ANN pools a linear
map's output with no ReLU between: DenseNet's transition (BN, ReLU, 1x1 conv, 2x2 average
pooling).  Such a pool is **composed** into the conv2d that computes its input, when that conv feeds
only the pool: one exact linear map (a 1x1 conv then a 2x2 average pooling is one 2x2 stride-2
conv; ``snnc/passes/_compose.py`` checks each composite on a random input and declines where the
borders differ).  The composite does the same synaptic operations per input event as the 1x1 conv
(each input position lies in one pooling window) and saves the pooling layer.

Keeps: every value the rest of the graph reads (the conv takes the pool's readers); the float sums
change order (the composite adds the window's terms inside one conv), as any lowering does.
The graph the driver writes (``graph.snnir``) and the report's simulation are the unchanged one.
"""

from __future__ import annotations

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.passes._compose import POOLS, compose_convs, node_conv, write_conv


def compose_pooled_currents(graph: Graph) -> list[str]:
    """Compose, in place, every pooling op that reads a current into the conv2d feeding only it;
    one line per composition."""
    log = []
    for pool in list(graph.nodes):
        conv = _composable_conv(graph, pool)
        if conv is None:
            continue
        a, b = node_conv(graph, conv), node_conv(graph, pool)
        composite = None if a is None or b is None else compose_convs(a, b, graph.value_type(conv.inputs[0]).shape)
        if composite is None:
            continue
        write_conv(graph, conv, composite)
        graph.replace_uses(pool.name, conv.name)
        graph.nodes.remove(pool)
        log.append(f"{pool.op.name} %{pool.name}: composed into conv2d %{conv.name}")
    graph.infer_types()
    return log


def pooling_problems(graph: Graph) -> list[str]:
    """The pooling ops that read an analog current and cannot be composed away, as
    ``"op %n: reason; fix"`` (checked on a copy: the graph is not changed)."""
    trial = graph.copy()
    compose_pooled_currents(trial)
    out = []
    for node in trial.nodes:
        if isinstance(node.op, (*POOLS, O.SpikeMaxPool2d)) and not trial.value_type(node.inputs[0]).is_event:
            out.append(
                f"{node.op.name} %{node.name}: pools an analog current that is not one conv2d's output the "
                "pool alone reads (or whose composite with the pool is no single conv: ceil_mode, a padded "
                "average); the tvm target pools events only: keep a ReLU before the pooling"
            )
    return out


def _composable_conv(graph: Graph, pool: Node) -> Node | None:
    if not isinstance(pool.op, POOLS) or graph.value_type(pool.inputs[0]).is_event:
        return None
    conv = graph.producer(pool.inputs[0])
    if conv is None or not isinstance(conv.op, O.Conv2d) or graph.only_user(conv.name) is not pool:
        return None
    return conv
