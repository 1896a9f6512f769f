"""What the tvm target rewrites in its own copy of a converted graph before lowering it to layers.

The target's pooling kernels pool events (spikes, or a pooling layer's graded events); a pooling op
that reads an analog current has no layer.  Conversion leaves one wherever the ANN pools a linear
map's output with no ReLU between: DenseNet's transition (BN, ReLU, 1x1 conv, 2x2 average
pooling).  Such a pool is **composed** into the conv2d that computes its input, when that conv feeds
only the pool: one exact linear map (a 1x1 conv then a 2x2 average pooling is one 2x2 stride-2
conv; ``snnc/passes/_compose.py`` checks each composite on a random input and declines where the
borders differ).  The composite does the same synaptic operations per input event as the 1x1 conv
(each input position lies in one pooling window) and saves the pooling layer.

An ``upsample`` (nearest-neighbour repetition: VGG's and AlexNet's adaptive average pooling of a
1x1 map to 7x7) has no layer either: its event would reach every copy.  Where it is read, through
``flatten`` / ``reshape`` only, by a ``linear``, it is **folded** into the linear's weights: each
input element's column is the sum of the columns of its copies (VGG's classifier then reads 512
events instead of 25,088 copies of them).

Keeps: every value the rest of the graph reads (the conv takes the pool's readers, the linear reads
the upsample's input); the float sums change order, as any lowering does.  The graph the driver
writes (``graph.snnir``) and the report's simulation are the unchanged one.
"""

from __future__ import annotations

import numpy as np

from snnc.backends.tvm.lower import legality
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.passes._compose import POOLS, compose_convs, node_conv, set_param, write_conv
from snnc.passes._reindex import gather_columns, reindex


def legalize(graph: Graph) -> list[str]:
    """Every rewrite of this module, in place; one line per rewrite."""
    return compose_pooled_currents(graph) + fold_upsampling(graph)


def problems(graph: Graph) -> list[str]:
    """What the target refuses in ``graph`` once :func:`legalize` ran (on a copy: ``graph`` is not
    changed), as ``"op %n: reason"`` lines."""
    trial = graph.copy()
    legalize(trial)
    return legality(trial) + pooling_problems(trial)


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
    """The pooling ops of a legalized graph that still read an analog current, as ``"op %n: reason"``."""
    out = []
    for node in graph.nodes:
        if isinstance(node.op, (*POOLS, O.SpikeMaxPool2d)) and not graph.value_type(node.inputs[0]).is_event:
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


def fold_upsampling(graph: Graph) -> list[str]:
    """Fold, in place, every ``upsample`` read through flatten / reshape by one ``linear`` into that
    linear's weights; one line per fold."""
    log = []
    for up in list(graph.nodes):
        if not isinstance(up.op, O.Upsample):
            continue
        chain, user = [up], graph.only_user(up.name)
        while user is not None and isinstance(user.op, (O.Flatten, O.Reshape)):
            chain.append(user)
            user = graph.only_user(user.name)
        if user is None or not isinstance(user.op, O.Linear):
            continue
        source = up.inputs[0]
        shape = graph.value_type(source).shape
        position = np.arange(int(np.prod(shape))).reshape(shape)  # where each linear input comes from
        for node in chain:
            position = reindex(node, [position], graph.value_type(node.name).shape)
        w = np.asarray(user.param(graph, "weight"))
        set_param(graph, user, "weight", gather_columns(w, position, int(np.prod(shape))))
        reads = source
        if len(shape) != 1:
            flat = Node(graph.fresh_name(f"{source}_flat"), O.Flatten(), (source,), loc=up.loc)
            graph.nodes.insert(graph.nodes.index(up), flat)
            reads = flat.name
        user.inputs = (reads,)
        for node in chain:
            graph.nodes.remove(node)
        log.append(f"upsample %{up.name}: folded into linear %{user.name}")
    graph.infer_types()
    return log
