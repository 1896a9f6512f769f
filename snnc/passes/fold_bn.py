"""fold-bn: fold inference-mode batch normalisation into the preceding conv or linear.

Changes: ``batchnorm(conv(x))`` becomes ``conv'(x)`` with
W' = W·γ/√(σ²+ε) (per output channel) and b' = (b − μ)·γ/√(σ²+ε) + β; the new tensors are
stored under the conv's names.  A batchnorm not fed by a conv/linear used only by it
becomes a per-channel ``scale`` op.
Preserves: ANN-mode outputs within float32 rounding (differential test: 1e-5).
Requires: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class FoldBN(Pass):
    name: ClassVar[str] = "fold-bn"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        for bn in list(graph.ops(O.BatchNorm)):
            gain, shift = _affine(graph, bn)
            src = graph.producer(bn.inputs[0])
            if (
                src is not None
                and isinstance(src.op, (O.Conv2d, O.Conv1d, O.Linear))
                and len(graph.users(src.name)) == 1
                and src.name not in graph.outputs
            ):
                _fold_into(graph, src, gain, shift)
            else:
                _as_scale(graph, bn, gain, shift)
                continue
            graph.remove(bn)
        graph.drop_unused_params()
        graph.infer_types()


def _affine(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """y = gain·x + shift for this batchnorm (float64 for exactness, stored as float32)."""
    op: O.BatchNorm = bn.op  # type: ignore[assignment]
    mean = graph.params[bn.params["mean"]].astype(np.float64)
    var = graph.params[bn.params["var"]].astype(np.float64)
    weight = graph.params[bn.params["weight"]].astype(np.float64) if "weight" in bn.params else np.ones_like(mean)
    bias = graph.params[bn.params["bias"]].astype(np.float64) if "bias" in bn.params else np.zeros_like(mean)
    gain = weight / np.sqrt(var + op.eps)
    return gain, bias - mean * gain


def _fold_into(graph: Graph, layer: Node, gain: np.ndarray, shift: np.ndarray) -> None:
    w = graph.params[layer.params["weight"]].astype(np.float64)
    b = graph.params[layer.params["bias"]].astype(np.float64) if "bias" in layer.params else np.zeros(w.shape[0])
    w = w * gain.reshape((-1,) + (1,) * (w.ndim - 1))
    b = b * gain + shift
    graph.params[layer.params["weight"]] = w.astype(np.float32)
    if "bias" not in layer.params:
        layer.params["bias"] = graph.fresh_param(layer.params["weight"].rsplit(".", 1)[0] + ".bias")
    graph.params[layer.params["bias"]] = b.astype(np.float32)


def _as_scale(graph: Graph, bn: Node, gain: np.ndarray, shift: np.ndarray) -> None:
    base = bn.params["mean"].rsplit(".", 1)[0]
    scale_key = graph.fresh_param(f"{base}.scale")
    graph.params[scale_key] = gain.astype(np.float32)
    bias_key = graph.fresh_param(f"{base}.shift")
    graph.params[bias_key] = shift.astype(np.float32)
    bn.op = O.Scale()
    bn.params = {"scale": scale_key, "bias": bias_key}
