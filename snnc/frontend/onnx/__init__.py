"""ONNX frontend: an ``.onnx`` model -> snnc IR (the same IR the torch.export frontend builds).

What it keeps: every layer as the torch frontends map it (``Conv`` -> ``conv2d``/``conv1d``,
``Gemm``/``MatMul``+``Add`` -> ``linear``, ``BatchNormalization`` -> ``batchnorm``, ``Relu``/``Clip``,
pooling, residual ``Add``, ``Concat``, reshapes, transposes, slices), with parameters named after
the initialisers they come from (``features.0.weight``) and each node's ``loc`` set to its ONNX
node name.  What it changes: the batch dimension is dropped; ``Dropout``/``Identity``/float
``Cast`` disappear; everything computed from constants alone (the ``Shape -> Gather -> Unsqueeze ->
Concat`` chains exporters write for reshapes, transposed weights) is folded with ONNX's reference
evaluator.  What it refuses: every node it cannot map, all listed in one ``UnsupportedError``
(one line per kind of op, with node names) before any pass runs.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import InputFileError, UnsupportedError, first_line
from snnc.frontend.onnx.context import BATCH_SENTINEL, Context, Poisoned, Refusal
from snnc.frontend.onnx.mapping import MAPPINGS, map_node
from snnc.frontend.onnx.reader import check_model, default_opset, read_onnx_file
from snnc.ir import Graph, TensorType, verify

__all__ = ["import_onnx", "load_onnx"]

# ops that fold only when every operand is a constant; with the batch size among their operands
# (a dynamic batch, BATCH_SENTINEL) only these, which move integers around without computing with them
_BATCH_SAFE = {"Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Identity", "Reshape",
               "Constant"}
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def load_onnx(path: Path) -> Graph:
    """Read, check and import the ONNX model in ``path`` (external data from its directory)."""
    return import_onnx(read_onnx_file(path), path.stem.replace("-", "_"), checked=True)


def import_onnx(model: Any, name: str = "model", *, checked: bool = False) -> Graph:
    """Map an ``onnx.ModelProto`` onto snnc IR; every node that does not map is listed in one
    ``UnsupportedError``.  ``checked``: the model already went through the checker and shape inference."""
    if not checked:
        model = check_model(model, f"@{name}")
    g = model.graph
    c = Context(Graph(re.sub(r"[^A-Za-z0-9_]", "_", name) or "model", []), batch=1, opset=default_opset(model))
    c.uses = Counter(i for n in g.node for i in n.input if i)
    for o in g.output:
        c.uses[o.name] += 1
    for n in g.node:
        for i in n.input:
            c.consumers.setdefault(i, []).append(n)
    _initializers(c, g)
    _inputs(c, g)
    shapes = _inferred_shapes(g)
    for node in g.node:
        _one_node(c, node, shapes)
    outputs = []
    for o in g.output:
        if o.name in c.values:
            outputs.append(c.values[o.name])
        elif o.name in c.consts:
            c.refusals.append(Refusal(f"graph output '{o.name}' that is a constant", o.name))
    c.graph.outputs = outputs
    if c.refusals:
        raise _report(c)
    verify(c.graph)
    return c.graph


def _initializers(c: Context, g: Any) -> None:
    from onnx import numpy_helper

    for t in g.initializer:
        try:
            c.consts[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:  # raw data of the wrong size: a damaged file
            raise InputFileError(f"initialiser '{t.name}' is unreadable (corrupt file?): {first_line(e)}") from None
        c.origin[t.name] = t.name


def _inputs(c: Context, g: Any) -> None:
    """Graph inputs (not initialisers) become IR inputs; the batch size is their first dimension."""
    for inp in g.input:
        if inp.name in c.consts:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.elem_type not in _FLOAT_TYPES or len(dims) < 2 or any(d is None for d in dims[1:]):
            what = f"elem type {tt.elem_type}" if tt.elem_type not in _FLOAT_TYPES else f"shape {dims}"
            raise UnsupportedError(f"graph input '{inp.name}' with {what}: snnc needs a float input "
                                   "[batch, C, ...] whose dimensions after the batch are fixed")
        batch = BATCH_SENTINEL if dims[0] is None else int(dims[0])
        if c.values and batch != c.batch:
            raise UnsupportedError(f"graph inputs with different batch sizes ('{inp.name}')")
        c.batch = batch
        value = c.graph.fresh_name(inp.name)
        c.graph.inputs.append((value, TensorType(tuple(int(d or 0) for d in dims[1:]))))
        c.values[inp.name] = value
    if not c.values:
        raise UnsupportedError("the ONNX graph has no input (every value is a constant)")


def _inferred_shapes(g: Any) -> dict[str, tuple[int, ...] | None]:
    """Shapes from ONNX's shape inference (batch dropped; None where not all fixed): the stand-ins
    for values of refused nodes, so that the nodes after them are checked too."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for vi in list(g.value_info) + list(g.output):
        if vi.type.tensor_type.elem_type not in _FLOAT_TYPES:  # shape arithmetic, not an activation
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        fixed = [d for d in dims[1:] if d is not None]
        shapes[vi.name] = tuple(fixed) if dims and len(fixed) == len(dims) - 1 else None
    return shapes


def _one_node(c: Context, node: Any, shapes: dict[str, tuple[int, ...] | None]) -> None:
    """Fold the node, map it, or record why not (and stand a fresh input in for its results)."""
    if not node.name:  # names are optional in ONNX; a refusal names the node by its first result
        node.name = node.output[0] if node.output else node.op_type
    if id(node) in c.absorbed:
        return
    try:
        if node.op_type in ("Shape", "Size") and node.input[0] in c.values:
            _fold_shape(c, node)
        elif node.op_type == "CastLike" and node.input[0] in c.consts and node.input[1] in c.values:
            # a constant cast to an activation's type (float32): the unoptimised dynamo export's zero
            # bias of a bias-less convolution is CastLike(0, x) expanded
            c.consts[node.output[0]] = c.consts[node.input[0]].astype(np.float32)
        elif node.op_type not in _RANDOM and all(not i or i in c.consts for i in node.input):
            _fold(c, node)
        elif node.domain not in ("", "ai.onnx"):
            raise Refusal(f"{node.domain}.{node.op_type}", node.name, "snnc maps only standard ONNX ops")
        elif node.op_type in MAPPINGS:
            map_node(c, node)
        else:
            raise Refusal(node.op_type, node.name, _advice(node.op_type))
    except Poisoned:
        c.poisoned.update(o for o in node.output if o)
    except UnsupportedError as e:
        c.refusals.append(e if isinstance(e, Refusal) else Refusal(f"{node.op_type} ({e})", node.name))
        for out in node.output:
            shape = shapes.get(out)
            if not out:
                continue
            if shape is None:
                c.poisoned.add(out)
                continue
            stand_in = c.graph.fresh_name(f"{out}_unmapped")
            c.graph.inputs.append((stand_in, TensorType(shape)))
            c.values[out] = stand_in


def _fold_shape(c: Context, node: Any) -> None:
    """Shape/Size of an activation: its static shape, the batch as it stands (BATCH_SENTINEL if dynamic)."""
    from onnx import helper

    full = np.array(c.full_shape(c.values[node.input[0]]), dtype=np.int64)
    if node.op_type == "Size":
        c.consts[node.output[0]] = np.array(np.prod(full), dtype=np.int64)
        return
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    start, end = a.get("start", 0), a.get("end", None)
    c.consts[node.output[0]] = full[slice(int(start), None if end is None else int(end))]


def _fold(c: Context, node: Any) -> None:
    from onnx.reference import ReferenceEvaluator

    operands = [c.consts[i] if i else None for i in node.input]
    if c.batch == BATCH_SENTINEL and node.op_type not in _BATCH_SAFE and any(
            v is not None and v.dtype.kind in "iu" and (v == BATCH_SENTINEL).any() for v in operands):
        raise Refusal(f"{node.op_type} that computes with the (dynamic) batch size", node.name,
                      "export with a fixed batch size, or keep the batch dimension out of the arithmetic")
    feeds = {i: v for i, v in zip(node.input, operands, strict=True) if i}
    try:
        results = ReferenceEvaluator(node, opsets={"": c.opset}).run(None, feeds)
    except Exception as e:  # the reference evaluator raises what numpy raises
        raise Refusal(f"{node.op_type} on constants (folding failed: {type(e).__name__}: {first_line(e)})",
                      node.name) from None
    # a transposed, reshaped or cast weight keeps its initialiser's name: the one float operand it has
    sources = {c.origin.get(i, "") for i in node.input if i and c.consts[i].dtype.kind == "f"}
    for out, value in zip(node.output, results, strict=False):
        if out:
            c.consts[out] = np.asarray(value)
            if len(sources) == 1 and "" not in sources and c.consts[out].dtype.kind == "f":
                c.origin[out] = next(iter(sources))


_ACTIVATION_ADVICE = "has no ReLU form: replace it with ReLU (or ReLU6 / Hardtanh) and retrain, or use a ReLU-family model"
_NO_RELU_FORM = {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "LeakyRelu", "PRelu",
                 "Gelu", "Mish", "Softplus", "Softsign", "Shrink", "ThresholdedRelu", "Swish"}
_ADVICE = {
    "Softmax": "remove the final softmax: snnc reads the logits, whose argmax is the same",
    "LogSoftmax": "remove the final log-softmax: snnc reads the logits, whose argmax is the same",
    "LayerNormalization": "LayerNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "GroupNormalization": "GroupNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "InstanceNormalization": "InstanceNorm divides by a per-sample statistic and has no spiking form: use BatchNorm",
    "ConvTranspose": "transposed convolutions are not mapped",
    "Pad": "fold the padding into the convolution or pooling that follows (their pads attribute)",
}


def _advice(op_type: str) -> str:
    if op_type in _NO_RELU_FORM:
        return f"{op_type} {_ACTIVATION_ADVICE}"
    return _ADVICE.get(op_type, "see docs/onnx.md for the ONNX ops snnc maps")


def _report(c: Context) -> UnsupportedError:
    """One error for every refusal: one line per kind (op and reason) with its count and node names."""
    refusals = c.refusals
    if len(refusals) == 1:
        return UnsupportedError(str(refusals[0]))
    groups: dict[tuple[str, str], list[str]] = {}
    for r in refusals:
        groups.setdefault((r.what, r.advice), []).append(r.node)
    lines = [f"{len(refusals)} unsupported ops in @{c.graph.name} ({len(groups)} kinds); nothing was imported:"]
    for (what, advice), nodes in groups.items():
        names = ", ".join(f"'{n}'" for n in nodes[:20]) + (f" and {len(nodes) - 20} more" if len(nodes) > 20 else "")
        lines.append(f"  {what} ×{len(nodes)} at {names}: {advice}")
    return UnsupportedError("\n".join(lines))
