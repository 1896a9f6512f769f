"""The op declaration machinery.

An op is a frozen dataclass whose fields are its attributes (typed, with defaults).
Class-level declarations say how many operands it takes, which parameters (named tensors
in the graph's store) it reads, and whether it is synaptic.  The printer, parser,
verifier and the docs (``snnc ops``) all read this one declaration.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from snnc.errors import ParseError, VerifyError, did_you_mean
from snnc.ir.types import TensorType

VARIADIC = -1


@dataclass(frozen=True)
class ParamSpec:
    """A tensor parameter an op reads from the store (``weight``, ``bias``, ...)."""

    role: str
    optional: bool = False


class Op:
    """Base of every op class.  Subclasses are frozen dataclasses registered with @register_op."""

    name: ClassVar[str]
    arity: ClassVar[int] = 1
    params_spec: ClassVar[tuple[ParamSpec, ...]] = ()
    # Traits: groups of ops are declared here, on the op, never as a tuple in a pass or backend.
    synaptic: ClassVar[bool] = False  # linear in its input: costs MACs on analog, SOPs on events
    ann_only: ClassVar[bool] = False  # must be removed before a graph is event-based
    shape_only: ClassVar[bool] = False  # y is x re-indexed (flatten, reshape, identity, dropout)
    value_identity: ClassVar[bool] = False  # y = x, same shape (identity, dropout at inference)
    weighted: ClassVar[bool] = False  # y = W·x (+ b) with a weight parameter (conv1d, conv2d, linear)
    channelwise: ClassVar[bool] = False  # each output channel reads only its own input channel, and a
    #   positive per-channel scale commutes with the op: f(s·x) = s·f(x) (pooling, identity, dropout)
    stateful: ClassVar[bool] = False  # keeps state across timesteps (neuron, gated max pooling, readout)
    reindexing: ClassVar[bool] = False  # y[i] = x[g(i)] for a fixed index map g: every output element is a
    #   copy of one input element, no arithmetic (shape_only ops, concat, permute, slice, upsample); commutes
    #   with every elementwise map (relu, clip, a neuron's rate) and carries spikes and bursts unchanged

    def infer_type(self, node: str, inputs: Sequence[TensorType], params: dict[str, tuple[int, ...]]) -> TensorType:
        """Result type from operand types and parameter shapes; raise VerifyError if inconsistent."""
        raise NotImplementedError(f"{type(self).__name__} must define infer_type")

    # -- declaration helpers ---------------------------------------------------------
    @classmethod
    def attribute_fields(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def attribute_types(cls) -> Mapping[str, Any]:
        """The resolved annotations of the op's fields, computed once per class: the verifier asks for
        every node after every pass, and ``typing.get_type_hints`` costs ~0.1 ms a call (2 s of a
        resnet18 compile)."""
        return _type_hints(cls)

    @classmethod
    def declares_param(cls, role: str) -> bool:
        """True if the op reads a parameter called ``role`` (``bias``, ``weight``, ...)."""
        return any(spec.role == role for spec in cls.params_spec)

    def attributes(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.attribute_fields()}

    def non_default_attributes(self) -> dict[str, Any]:
        out = {}
        for f in self.attribute_fields():
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                out[f.name] = value
        return out


_TYPE_HINTS: dict[type, Mapping[str, Any]] = {}


def _type_hints(cls: type) -> Mapping[str, Any]:
    hints = _TYPE_HINTS.get(cls)
    if hints is None:
        hints = _TYPE_HINTS[cls] = types.MappingProxyType(typing.get_type_hints(cls))
    return hints


OPS: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Register an op class under its ``name``; one declaration, no second list."""
    if cls.name in OPS:
        raise ValueError(f"op '{cls.name}' registered twice")
    OPS[cls.name] = cls
    return cls


def op_class(name: str) -> type[Op]:
    try:
        return OPS[name]
    except KeyError:
        raise ParseError(f"unknown op '{name}'{did_you_mean(name, OPS)}") from None


def coerce_attribute(op_cls: type[Op], attr: str, value: Any) -> Any:
    """Convert a parsed literal (int, float, str, bool, list) to the field's declared type."""
    hints = op_cls.attribute_types()
    fields = [f.name for f in op_cls.attribute_fields()]
    if attr not in fields:
        raise ParseError(f"{op_cls.name}: unknown attribute '{attr}'{did_you_mean(attr, fields)}")
    return coerce_value(hints[attr], value, f"{op_cls.name}.{attr}")


def coerce_value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [m.value for m in hint]
            raise ParseError(f"{where}: '{value}' is not one of {choices}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ParseError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParseError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParseError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParseError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ParseError(f"{where}: expected a list, got {value!r}")
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(elem, v, where) for v in value)
        if len(value) != len(args):
            raise ParseError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce_value(a, v, where) for a, v in zip(args, value, strict=True))
    raise ParseError(f"{where}: unsupported attribute type {hint}")


def attribute_type_errors(op: Op) -> list[str]:
    """Attributes whose runtime value is not of the declared type (e.g. numpy scalars)."""
    errors = []
    hints = op.attribute_types()
    for attr in (f.name for f in op.attribute_fields()):
        hint = hints[attr]
        value = getattr(op, attr)
        origin = typing.get_origin(hint)
        if origin is tuple:
            ok = isinstance(value, tuple) and all(type(v) is typing.get_args(hint)[0] for v in value)
        elif hint is float:
            ok = type(value) is float
        elif isinstance(hint, type):
            ok = type(value) is hint or (issubclass(hint, enum.Enum) and isinstance(value, hint))
        else:
            ok = True
        if not ok:
            errors.append(f"attribute {attr} = {value!r} is not of type {getattr(hint, '__name__', hint)}")
    return errors


def fail(op: Op, node: str, message: str) -> VerifyError:
    """Build a VerifyError that names the op and the node."""
    return VerifyError(f"{op.name} %{node}: {message}")
