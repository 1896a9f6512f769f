"""compose-linear: merge a conv / linear into the pointwise layer that reads it, where exact.

An analog value that one synaptic layer writes and another reads with no nonlinearity between
them (MobileNetV2's linear bottleneck: the 1x1 projection read by the next block's 1x1
expansion) would reach the second layer as an analog value, not as spikes.  Where the two
layers compose exactly they become one:

* ``conv2d(conv2d(x; P, p); E, e)`` with E pointwise (1x1 kernel, stride 1, no padding, one
  group, no dilation): one conv with P's geometry, weight W'[o, i] = Σ_m E[o, m]·P_dense[m, i]
  (P's groups expanded to a dense kernel) and bias b' = E·p + e.  Exact at the borders too: E
  reads every output position of P, padding included, one for one.
* ``linear(linear(x; P, p); E, e)``: W' = E·P, b' = E·p + e.

Only when the first layer's value has no other reader and is no graph output (a value that also
enters a residual ``add`` stays: ``signed-neurons`` spike-codes it instead).  The merged layer
keeps the second node's name and its parameter keys; the first node is removed.

Preserves: the function in ANN and SNN mode (float rounding: the products are formed in float64).
Changes the synapse count: a bottleneck of width m between n inputs and k outputs has n·m + m·k
weights, the merged layer n·k.  Requires: ``fold-bn`` first (a batchnorm between the layers
blocks the merge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._params import store_param, with_attrs


@register_pass
@dataclass(frozen=True)
class ComposeLinear(Pass):
    name: ClassVar[str] = "compose-linear"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        merged = []
        for second in list(graph.nodes):
            first = graph.producer(second.inputs[0]) if second.inputs else None
            if first is None or not _composable(graph, first, second):
                continue
            _merge(graph, first, second)
            merged.append(second.name)
        graph.drop_unused_params()
        graph.infer_types()
        ctx.results[self.name] = {"merged": merged}


def _composable(graph: Graph, first: Node, second: Node) -> bool:
    if graph.only_user(first.name) is not second or first.name in graph.outputs:
        return False
    if isinstance(first.op, O.Linear) and isinstance(second.op, O.Linear):
        return True
    if isinstance(first.op, O.Conv2d) and isinstance(second.op, O.Conv2d):
        op = second.op
        w = second.param(graph, "weight")
        return (w is not None and tuple(w.shape[2:]) == (1, 1) and op.stride == (1, 1) and op.padding == (0, 0)
                and op.dilation == (1, 1) and op.groups == 1)
    return False


def _merge(graph: Graph, first: Node, second: Node) -> None:
    p = np.asarray(first.param(graph, "weight"), dtype=np.float64)
    e = np.asarray(second.param(graph, "weight"), dtype=np.float64)
    pb = first.param(graph, "bias")
    eb = second.param(graph, "bias")
    e2 = e.reshape(e.shape[0], e.shape[1])
    if isinstance(first.op, O.Conv2d):
        p = _dense(p, first.op.groups)
        w = np.einsum("om,mikl->oikl", e2, p)
        second.op = with_attrs(first.op, groups=1)
    else:
        w = e2 @ p
    bias = (np.zeros(e.shape[0]) if eb is None else np.asarray(eb, dtype=np.float64))
    if pb is not None:
        bias = bias + e2 @ np.asarray(pb, dtype=np.float64)
    store_param(graph, second, "weight", w)
    if "bias" in second.params:
        store_param(graph, second, "bias", bias)
    else:
        key = graph.fresh_param(f"{second.params['weight'].rsplit('.', 1)[0]}.bias")
        second.params["bias"] = key
        graph.params[key] = bias.astype(np.float32)
    second.inputs = first.inputs
    graph.nodes.remove(first)


def _dense(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight [Cout, Cin/g, kh, kw] as the dense [Cout, Cin, kh, kw] (zeros across groups)."""
    if groups == 1:
        return w
    cout, cin_g = w.shape[:2]
    cout_g = cout // groups
    dense = np.zeros((cout, cin_g * groups) + w.shape[2:])
    for g in range(groups):
        dense[g * cout_g:(g + 1) * cout_g, g * cin_g:(g + 1) * cin_g] = w[g * cout_g:(g + 1) * cout_g]
    return dense
