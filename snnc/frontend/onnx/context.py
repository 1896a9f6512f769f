"""The state of one ONNX import: constants, IR values, refusals (shared by the op mappings).

An ONNX tensor is either a *constant* (an initialiser, a ``Constant`` node, or anything computed
from constants alone: folded at import with ONNX's reference evaluator) or an *activation* (it
depends on a graph input) that is an IR value.  Shapes of activations are the IR's (batch
dropped); shape arithmetic that exporters write for reshapes (``Shape -> Gather -> Unsqueeze ->
Concat``) folds with the batch size standing in as :data:`BATCH_SENTINEL` when it is dynamic, so that
a reshape can tell the batch dimension from the others and arithmetic on the batch is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snnc.errors import UnsupportedError, VerifyError
from snnc.ir import Graph, Node
from snnc.ir import ops as O

# a dynamic batch size while shape arithmetic folds: a prime no real dimension is, so that it is
# recognised wherever it ends up (a reshape's target) and refused where it is computed with
BATCH_SENTINEL = 1_000_003

_SEE_OPS = "see docs/onnx.md for the ONNX ops snnc maps"


class Refusal(UnsupportedError):
    """One node snnc cannot map: its op type, its name, what exactly and what to do."""

    def __init__(self, what: str, node: str, advice: str = _SEE_OPS) -> None:
        self.what, self.node, self.advice = what, node, advice
        super().__init__(f"unsupported op {what} at node '{node}'; {advice}")


class Poisoned(Exception):
    """An operand comes from a node that could not be mapped (already reported)."""


def attributes(node: Any) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded, tensors as numpy arrays)."""
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
            value = numpy_helper.to_array(value)
        out[a.name] = value
    return out


@dataclass
class Context:
    graph: Graph
    batch: int  # the batch size (BATCH_SENTINEL when the model's is dynamic)
    opset: int
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # constant -> the one initialiser it derives from
    values: dict[str, str] = field(default_factory=dict)  # ONNX tensor -> IR value
    uses: dict[str, int] = field(default_factory=dict)  # ONNX tensor -> consumers (+1 for a graph output)
    consumers: dict[str, list[Any]] = field(default_factory=dict)  # ONNX tensor -> the nodes that read it
    absorbed: set[int] = field(default_factory=set)  # id() of nodes a pattern already mapped
    refusals: list[Refusal] = field(default_factory=list)
    poisoned: set[str] = field(default_factory=set)

    # -- operands --------------------------------------------------------------------------
    def is_value(self, name: str) -> bool:
        return name in self.values or name in self.poisoned

    def value(self, node: Any, index: int = 0) -> str:
        """The IR value of the node's input ``index`` (an activation)."""
        name = node.input[index] if index < len(node.input) else ""
        if name in self.values:
            return self.values[name]
        if name in self.poisoned:
            raise Poisoned()
        if name in self.consts:
            raise Refusal(f"{node.op_type} of a constant where snnc needs an activation (input {index})",
                          node.name)
        raise Refusal(f"{node.op_type} without input {index}", node.name)

    def const(self, node: Any, index: int, what: str) -> np.ndarray | None:
        """The constant input ``index`` (None when it is absent); an activation there is refused."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            return None
        if name in self.consts:
            return self.consts[name]
        if name in self.poisoned:
            raise Poisoned()
        raise Refusal(f"{node.op_type} with a computed {what} (it must be a constant or an initialiser)",
                      node.name)

    def bias(self, node: Any, index: int) -> np.ndarray | None:
        """The constant bias input ``index``; a computed one that is all zeros is no bias (the
        unoptimised dynamo export writes ``bias=False`` as an expanded zero), as the torch frontends
        see it."""
        b = self.const(node, index, "bias")
        name = node.input[index] if index < len(node.input) else ""
        if b is not None and name not in self.origin and not b.any():
            return None
        return b

    def full_shape(self, value: str) -> tuple[int, ...]:
        """The value's shape with the batch dimension in front."""
        return (self.batch,) + self.graph.value_type(value).shape

    def single_use(self, tensor: str) -> bool:
        return self.uses.get(tensor, 0) == 1

    def only_consumer(self, tensor: str, op_type: str) -> Any | None:
        """The one node that reads ``tensor`` when it is an ``op_type`` and nothing else reads it."""
        readers = self.consumers.get(tensor, [])
        if self.single_use(tensor) and len(readers) == 1 and readers[0].op_type == op_type:
            return readers[0]
        return None

    # -- building --------------------------------------------------------------------------
    def param(self, source: str, array: np.ndarray) -> str:
        """Store ``array`` under the name of the initialiser it comes from (``features.0.weight``)."""
        key = self.graph.fresh_param(self.origin.get(source, source) or "param")
        self.graph.params[key] = np.ascontiguousarray(array, dtype=np.float32).copy()
        return key

    def emit(self, node: Any, op: O.Op, inputs: list[str], params: dict[str, str] | None = None,
             output: str | None = None) -> str:
        """Append an IR node for ``op`` and bind it to ``output`` (the node's first output by default;
        "" binds nothing: an intermediate value)."""
        out = node.output[0] if output is None else output
        # the dynamo exporter names results as torch.export does (relu, max_pool2d); the legacy one by
        # module path ("/features/0/Conv_output_0") or number: then the op type, the path stays in loc
        readable = out and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", out) and "output" not in out
        name = self.graph.fresh_name(out if readable else node.op_type.lower())
        ir = Node(name, op, tuple(inputs), params=params or {}, type=None, loc=node.name)
        try:
            ir.type = op.infer_type(name, [self.graph.value_type(v) for v in inputs], self.graph.param_shapes(ir))
        except VerifyError as e:
            detail = re.sub(r"^\S+ %\S+: ", "", str(e))
            raise Refusal(f"{node.op_type} ({detail})", node.name) from None
        self.graph.nodes.append(ir)
        if out:
            self.values[out] = name
        return name

    def alias(self, node: Any, value: str, output: int = 0) -> None:
        self.values[node.output[output]] = value

    def producer(self, value: str) -> Node | None:
        for n in reversed(self.graph.nodes):
            if n.name == value:
                return n
        return None
