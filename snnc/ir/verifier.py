"""The IR verifier: structure, operands, parameters and types.

Every error is a VerifyError that names the node (``conv2d %c1: ...``) and the values.
"""

from __future__ import annotations

from snnc.errors import VerifyError
from snnc.ir.graph import NAME_RE, Graph
from snnc.ir.op import VARIADIC, attribute_type_errors
from snnc.ir.ops import Encode, Scheme
from snnc.ir.types import Signal


def verify(graph: Graph, *, require_event: bool = False) -> None:
    """Raise VerifyError on the first broken invariant.

    With ``require_event``, also check that the graph is event-based (DESIGN §2): no
    ANN-only op remains and every synaptic op reads spikes or bursts, except a synaptic op
    fed by a ``direct`` encoder, directly or through shape-only ops (flatten, reshape): the
    explicitly marked encoding layer.
    """
    if not NAME_RE.match(graph.name):
        raise VerifyError(f"graph name '@{graph.name}' is not a valid identifier")
    if not graph.inputs:
        raise VerifyError(f"graph @{graph.name} has no inputs")
    defined: set[str] = set()
    for name, _ in graph.inputs:
        if not NAME_RE.match(name):
            raise VerifyError(f"graph input '%{name}' is not a valid name")
        if name in defined:
            raise VerifyError(f"graph input %{name} is declared twice")
        t = dict(graph.inputs)[name]
        if any(d < 1 for d in t.shape) or (t.signal is Signal.BURST and t.burst < 2):
            raise VerifyError(f"graph input %{name}: malformed type {t}")
        defined.add(name)

    for node in graph.nodes:
        op = node.op
        where = f"{op.name} %{node.name}"
        if not NAME_RE.match(node.name):
            raise VerifyError(f"{where}: '{node.name}' is not a valid value name")
        if node.name in defined:
            raise VerifyError(f"{where}: value %{node.name} is defined twice")
        if op.arity != VARIADIC and len(node.inputs) != op.arity:
            raise VerifyError(f"{where}: expects {op.arity} operand(s), got {len(node.inputs)}")
        for v in node.inputs:
            if v not in defined:
                raise VerifyError(f"{where}: operand %{v} is not defined before its use")
        bad = attribute_type_errors(op)
        if bad:
            raise VerifyError(f"{where}: {bad[0]}")
        roles = {p.role: p for p in op.params_spec}
        for role, key in node.params.items():
            if role not in roles:
                raise VerifyError(f"{where}: unknown parameter role '{role}'")
            if key not in graph.params:
                raise VerifyError(f"{where}: parameter {role} = \"{key}\" is not in the parameter store")
        for p in op.params_spec:
            if not p.optional and p.role not in node.params:
                raise VerifyError(f"{where}: missing required parameter '{p.role}'")
        in_types = [graph.value_type(v) for v in node.inputs]
        inferred = op.infer_type(node.name, in_types, graph.param_shapes(node))
        if node.type is None:
            raise VerifyError(f"{where}: has no type")
        if node.type != inferred:
            raise VerifyError(f"{where}: declared type {node.type}, inferred {inferred}")
        defined.add(node.name)

    if not graph.outputs:
        raise VerifyError(f"graph @{graph.name} has no outputs")
    for v in graph.outputs:
        if v not in defined:
            raise VerifyError(f"graph output %{v} is not defined")
    if graph.attrs.timesteps < 0:
        raise VerifyError(f"graph attribute timesteps = {graph.attrs.timesteps} must be >= 0")
    if require_event:
        check_event_based(graph)


def _direct_encoded(graph: Graph, value: str) -> bool:
    """True if ``value`` is a direct encoder's output, seen through shape-only ops."""
    src = graph.producer_through_shape_ops(value)
    return src is not None and isinstance(src.op, Encode) and src.op.scheme is Scheme.DIRECT


def check_event_based(graph: Graph) -> None:
    for node in graph.nodes:
        if node.op.ann_only:
            raise VerifyError(
                f"{node.op.name} %{node.name}: ANN-only op in an event-based graph; run the ann-to-snn pipeline"
            )
        if not node.op.synaptic:
            continue
        for v in node.inputs:
            if _direct_encoded(graph, v):
                continue  # the explicitly marked encoding layer
            t = graph.value_type(v)
            if not t.is_event:
                raise VerifyError(
                    f"{node.op.name} %{node.name}: reads analog value %{v} ({t}); an event-based graph "
                    "needs spikes here (lower-neurons, or encode-input for the input)"
                )
