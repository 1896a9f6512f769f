"""A direct reader of torch.export ``.pt2`` archives, for the common case.

``torch.export.load`` imports ``torch._export.serde.serialize``, which imports torch._dynamo,
sympy, triton and torch.distributed.tensor: about 4 s on a quiet 2-core machine, more than the
whole rest of loading a resnet18, and the same for a model of ten parameters.  snnc's frontend
needs none of that: it reads the ATen graph (targets, arguments, shapes, stack traces) and the
weights.  :func:`read_exported` builds exactly that from the archive's JSON and raw tensor bytes,
as a ``torch.fx.Graph`` whose nodes carry the names, arguments and metadata that
``torch.export.load`` gives them, so that ``snnc.frontend.fx.import_exported`` maps both to the
same IR (tests/test_compile_time_pt2.py compares the two on every archive it makes).

It reads a subset and says so: on anything outside it (another schema or opset version, a
higher-order op, symbolic arithmetic, custom objects, pickled or non-CPU payloads, several models,
a legacy layout, a malformed member) it raises :class:`NotCovered` and the caller uses
``torch.export.load``, whose behaviour and error messages are then unchanged.  It never
unpickles anything: the sample inputs (the one pickle every archive holds) are not read.
"""

from __future__ import annotations

import json
import keyword
import operator
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch._export.serde import schema  # the archive's own schema: enums and version, no dynamo import

_C = torch._C._export.pt2_archive_constants  # the layout, as torch's writer and reader name it
_MODEL = "model"  # torch.export.load returns the program of this name

_DTYPES = {
    schema.ScalarType.BYTE: torch.uint8, schema.ScalarType.CHAR: torch.int8, schema.ScalarType.SHORT: torch.int16,
    schema.ScalarType.INT: torch.int32, schema.ScalarType.LONG: torch.int64, schema.ScalarType.HALF: torch.float16,
    schema.ScalarType.FLOAT: torch.float32, schema.ScalarType.DOUBLE: torch.float64,
    schema.ScalarType.BOOL: torch.bool, schema.ScalarType.BFLOAT16: torch.bfloat16,
}


class NotCovered(Exception):
    """The archive needs torch.export.load (the reason is the message; never shown to a user)."""


@dataclass(frozen=True)
class SymbolicSize:
    """A symbolic size (a dynamic batch): ``str`` gives its expression as torch prints a SymInt, and
    ``int`` fails as it does for an unbacked one, which is how the frontend tells the two apart."""

    expr: str

    def __str__(self) -> str:
        return self.expr

    def __int__(self) -> int:
        raise TypeError(f"symbolic size {self.expr}")

    def __index__(self) -> int:
        raise TypeError(f"symbolic size {self.expr}")


@dataclass(frozen=True)
class TensorMeta:
    """``node.meta["val"]`` of a tensor value: what the frontend reads of torch's FakeTensor."""

    shape: tuple[int | SymbolicSize, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class GraphHolder:
    """Stands for ``ExportedProgram.graph_module``: the frontend reads only its ``graph``."""

    graph: fx.Graph


@dataclass(frozen=True, kw_only=True)
class Signature:
    """The part of ``ExportGraphSignature`` the frontend reads: placeholder name -> state name."""

    inputs_to_parameters: dict[str, str] = field(default_factory=dict)
    inputs_to_buffers: dict[str, str] = field(default_factory=dict)
    inputs_to_lifted_tensor_constants: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ExportedGraph:
    """What ``snnc.frontend.fx.import_exported`` reads of an ``ExportedProgram``."""

    graph_module: GraphHolder
    graph_signature: Signature
    state_dict: dict[str, torch.Tensor]
    constants: dict[str, torch.Tensor]


def read_exported(z: zipfile.ZipFile) -> ExportedGraph:
    """The program ``model`` of a torch.export archive whose CRCs were checked; :class:`NotCovered`
    when the archive is outside what this reader does (see the module docstring)."""
    try:
        return _read(_Archive(z))
    except NotCovered:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, UnicodeDecodeError) as e:
        # a member or field shaped otherwise than torch writes it: torch.export.load decides, and words it
        raise NotCovered(f"{type(e).__name__}: {e}") from None


class _Archive:
    """The members of one archive, by their name below its root folder (torch's layout)."""

    def __init__(self, z: zipfile.ZipFile):
        names = z.namelist()
        if not names or "/" not in names[0]:
            raise NotCovered("no root folder")
        root = names[0].split("/", 1)[0] + "/"
        if not all(n.startswith(root) for n in names):
            raise NotCovered("members outside the root folder")
        self.z, self.root = z, root
        self.names = {n[len(root):] for n in names}

    def read(self, name: str) -> bytes:
        if name not in self.names:
            raise NotCovered(f"no member {name}")
        return self.z.read(self.root + name)

    def json(self, name: str) -> Any:
        return json.loads(self.read(name))


def _read(a: _Archive) -> ExportedGraph:
    if a.read(_C.ARCHIVE_FORMAT_PATH).decode() != _C.ARCHIVE_FORMAT_VALUE:
        raise NotCovered("not a pt2 archive")
    if a.read(_C.ARCHIVE_VERSION_PATH).decode() != _C.ARCHIVE_VERSION_VALUE:
        raise NotCovered("another archive version")
    if a.read("byteorder").decode() != sys.byteorder:  # raw tensor bytes are in the writer's order
        raise NotCovered("another byte order")
    model = _C.MODELS_FILENAME_FORMAT.format(_MODEL)
    models = [n for n in a.names if n.startswith(_C.MODELS_DIR)]
    if models != [model]:
        raise NotCovered(f"models {models}")
    program = a.json(model)
    if program["schema_version"]["major"] != schema.SCHEMA_VERSION[0]:
        raise NotCovered("another schema version")
    if program["opset_version"] != {"aten": torch._C._get_max_operator_version()}:
        raise NotCovered("another opset version (torch would upgrade the graph)")
    if program.get("verifiers") not in (["TRAINING"], ["ATEN"], [], None):
        raise NotCovered(f"dialect {program.get('verifiers')}")
    gm = program["graph_module"]
    signature = _signature(gm["signature"])
    graph = _Graph(gm["graph"]).build()
    return ExportedGraph(
        graph_module=GraphHolder(graph),
        graph_signature=signature,
        state_dict=_payloads(a, _C.WEIGHTS_DIR, _C.WEIGHTS_CONFIG_FILENAME_FORMAT.format(_MODEL),
                             _C.WEIGHT_FILENAME_PREFIX),
        constants=_payloads(a, _C.CONSTANTS_DIR, _C.CONSTANTS_CONFIG_FILENAME_FORMAT.format(_MODEL),
                            _C.TENSOR_CONSTANT_FILENAME_PREFIX),
    )


def _signature(sig: dict[str, Any]) -> Signature:
    params, buffers, constants = {}, {}, {}
    for spec in sig["input_specs"]:
        (kind, body), = spec.items()
        if kind == "user_input":
            if set(body["arg"]) != {"as_tensor"}:
                raise NotCovered(f"user input {body['arg']}")
        elif kind == "parameter":
            params[body["arg"]["name"]] = body["parameter_name"]
        elif kind == "buffer":
            buffers[body["arg"]["name"]] = body["buffer_name"]
        elif kind == "tensor_constant":
            constants[body["arg"]["name"]] = body["tensor_constant_name"]
        else:  # custom objects, effect tokens, constant inputs
            raise NotCovered(f"input spec {kind}")
    return Signature(inputs_to_parameters=params, inputs_to_buffers=buffers,
                     inputs_to_lifted_tensor_constants=constants)


def _size(value: dict[str, Any]) -> int | SymbolicSize:
    (kind, body), = value.items()
    if kind == "as_int":
        return int(body)
    if kind == "as_expr":
        return SymbolicSize(str(body["expr_str"]))
    raise NotCovered(f"size {value}")


def _dtype(code: int) -> torch.dtype:
    try:
        return _DTYPES[schema.ScalarType(code)]
    except (KeyError, ValueError):
        raise NotCovered(f"dtype {code}") from None


class _Graph:
    """The serialized graph -> a ``torch.fx.Graph`` as torch's deserializer names and shapes it."""

    def __init__(self, g: dict[str, Any]):
        if g.get("custom_obj_values") or g.get("sym_float_values") or g.get("sym_bool_values"):
            raise NotCovered("custom objects or symbolic floats/bools")
        self.g = g
        self.graph = fx.Graph()
        self.nodes: dict[str, fx.Node] = {}
        self.meta: dict[str, Any] = {}
        for name, tm in g["tensor_values"].items():
            if tm.get("layout", 7) != 7 or tm.get("device", {}).get("type", "cpu") != "cpu":
                raise NotCovered(f"tensor {name} is not a strided CPU tensor")
            self.meta[name] = TensorMeta(tuple(_size(s) for s in tm["sizes"]), _dtype(tm["dtype"]))
        for name, value in g["sym_int_values"].items():
            self.meta[name] = _size(value)

    def build(self) -> fx.Graph:
        for value in self.g["inputs"]:
            (kind, body), = value.items()
            if kind != "as_tensor":
                raise NotCovered(f"graph input {value}")
            self._bind(body["name"], self.graph.placeholder(body["name"]))
        for node in self.g["nodes"]:
            self._node(node)
        if any(set(v) != {"as_tensor"} for v in self.g["outputs"]):
            raise NotCovered("a graph output that is not a tensor")
        outputs = [self._argument(v) for v in self.g["outputs"]]
        if self.g.get("is_single_tensor_return"):
            if len(outputs) != 1:
                raise NotCovered("a single return with several outputs")
            out = self.graph.output(outputs[0])
            out.meta["val"] = outputs[0].meta["val"]
        else:
            out = self.graph.output(tuple(outputs))
            out.meta["val"] = tuple(v.meta["val"] if isinstance(v, fx.Node) else v for v in outputs)
        return self.graph

    def _bind(self, name: str, node: fx.Node) -> None:
        """Give ``node`` the serialized name (torch overwrites fx's choice the same way) and its meta."""
        if name in self.nodes:
            raise NotCovered(f"value {name} defined twice")
        node.name = name
        self.nodes[name] = node
        node.meta["val"] = self.meta[name]

    def _node(self, node: dict[str, Any]) -> None:
        target = _aten_op(node["target"])
        args, kwargs = self._inputs(target, node["inputs"])
        outputs = node["outputs"]
        single = len(outputs) == 1 and next(iter(outputs[0])) in ("as_tensor", "as_sym_int")
        name = node.get("name") or (_value_name(outputs[0]) if single else None)
        fx_node = self.graph.create_node("call_function", target, args, kwargs, name)
        metadata = _metadata(node.get("metadata") or {})
        if single:
            self._bind(_value_name(outputs[0]), fx_node)
        elif outputs:
            values = outputs[0]["as_tensors"] if len(outputs) == 1 and "as_tensors" in outputs[0] else outputs
            meta_val = []
            for i, value in enumerate(values):
                value_name = value["name"] if "name" in value else _value_name(value)
                item = self.graph.create_node("call_function", operator.getitem, (fx_node, i), name=value_name)
                self._bind(value_name, item)
                item.meta.update(metadata)
                meta_val.append(item.meta["val"])
            fx_node.meta["val"] = tuple(meta_val)
        fx_node.meta.update(metadata)
        fx_node.meta.setdefault("nn_module_stack", {})  # torch's default where the archive has none

    def _inputs(self, target: torch._ops.OpOverload, inputs: list[dict[str, Any]]) -> tuple[tuple, dict]:
        """Positional and keyword arguments by the op's schema and each argument's recorded kind, as
        torch's deserializer places them (the frontend reads them by position or by name)."""
        given = {i["name"]: self._argument(i["arg"]) for i in inputs}
        kinds = {i["name"]: i.get("kind") for i in inputs}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for arg in target._schema.arguments:
            if keyword.iskeyword(arg.name):  # torch shuffles these in a way not worth mirroring
                raise NotCovered(f"argument {arg.name} of {target}")
            kind = kinds.get(arg.name)
            if kind == schema.ArgumentKind.POSITIONAL or (
                    kind != schema.ArgumentKind.KEYWORD and not arg.has_default_value() and not arg.kwarg_only):
                args.append(given[arg.name])  # a required argument missing: KeyError -> NotCovered
            elif arg.name in given:
                kwargs[arg.name] = given[arg.name]
        return tuple(args), kwargs

    def _argument(self, value: dict[str, Any]) -> Any:
        (kind, body), = value.items()
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return self.nodes[body["name"]]
        if kind in ("as_int", "as_float", "as_bool", "as_string"):
            return body
        if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
            return list(body)
        if kind == "as_tensors":
            return [self.nodes[t["name"]] for t in body]
        if kind == "as_optional_tensors":
            return [None if "as_none" in t else self.nodes[t["as_tensor"]["name"]] for t in body]
        if kind == "as_sym_int":
            return self._sym(body)
        if kind == "as_sym_ints":
            return [self._sym(s) for s in body]
        if kind == "as_scalar_type":
            return _dtype(body)
        raise NotCovered(f"argument kind {kind}")

    def _sym(self, value: dict[str, Any]) -> Any:
        (kind, body), = value.items()
        if kind == "as_int":
            return int(body)
        if kind == "as_name":
            return self.nodes[body]
        raise NotCovered(f"symbolic argument {value}")


def _value_name(value: dict[str, Any]) -> str:
    (kind, body), = value.items()
    if kind == "as_tensor":
        return str(body["name"])
    if kind == "as_sym_int" and set(body) == {"as_name"}:
        return str(body["as_name"])
    raise NotCovered(f"output {value}")


def _aten_op(target: str) -> torch._ops.OpOverload:
    """``torch.ops.aten.conv2d.default`` -> the op; anything else (higher-order ops, Python
    operators on symbolic sizes, custom ops) is left to torch."""
    parts = target.split(".")
    if len(parts) != 5 or parts[:3] != ["torch", "ops", "aten"]:
        raise NotCovered(f"target {target}")
    packet = getattr(torch.ops.aten, parts[3], None)
    op = getattr(packet, parts[4], None) if packet is not None else None
    if not isinstance(op, torch._ops.OpOverload):
        raise NotCovered(f"target {target}")
    return op


def _metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """The node metadata the frontend reads: ``stack_trace`` and ``nn_module_stack`` (key ->
    (path, type)), split as torch splits it."""
    out: dict[str, Any] = {}
    if metadata.get("stack_trace"):
        out["stack_trace"] = metadata["stack_trace"]
    if metadata.get("nn_module_stack"):
        stack = {}
        for item in metadata["nn_module_stack"].split(";"):
            key, path, ty = _split3(item)
            stack[key] = (path, ty)
        out["nn_module_stack"] = stack
    return out


def _split3(item: str) -> tuple[str, str, str]:
    """``key,path,type`` where a path may hold commas inside brackets (``L['self'].x[(0, 1)]``)."""
    parts, start, depth = [], 0, 0
    for i, c in enumerate(item):
        depth += (c in "[(") - (c in ")]")
        if c == "," and depth == 0:
            parts.append(item[start:i])
            start = i + 1
    parts.append(item[start:])
    if len(parts) != 3:
        raise NotCovered(f"nn_module_stack entry {item!r}")
    return parts[0], parts[1], parts[2]


def _payloads(a: _Archive, directory: str, config_path: str, prefix: str) -> dict[str, torch.Tensor]:
    """Weights or constants: each a strided view of its member's raw bytes (members shared by several
    names, tied weights, stay shared, as torch keeps them)."""
    if any(n.startswith(_C.XL_MODEL_WEIGHTS_DIR) for n in a.names):
        raise NotCovered("weights in the XL layout")
    config = a.json(config_path)["config"]
    flat: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for fqn, payload in config.items():
        path = str(payload["path_name"])
        meta = payload.get("tensor_meta")
        if payload.get("use_pickle") or not path.startswith(prefix) or meta is None:
            raise NotCovered(f"payload {fqn} ({path}) is pickled or not a tensor")
        if meta.get("layout", 7) != 7 or meta.get("device", {}).get("type", "cpu") != "cpu":
            raise NotCovered(f"payload {fqn} is not a strided CPU tensor")
        dtype = _dtype(meta["dtype"])
        sizes = [_int(s) for s in meta["sizes"]]
        if path not in flat:
            data = a.read(directory + path)
            item = torch.empty((), dtype=dtype).element_size()
            if len(data) % item:
                raise NotCovered(f"payload {path}: {len(data)} bytes is not a whole number of elements")
            flat[path] = (torch.frombuffer(bytearray(data), dtype=dtype) if data
                          else torch.zeros(sizes, dtype=dtype).reshape(-1))
        strides = [_int(s) for s in meta["strides"]]
        offset = _int(meta["storage_offset"])
        base = flat[path]
        need = offset + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True)) + 1 if all(sizes) else 0
        if need > base.numel():
            raise NotCovered(f"payload {fqn} reads past its member")
        out[str(fqn)] = torch.as_strided(base, sizes, strides, offset)
    return out


def _int(value: dict[str, Any]) -> int:
    size = _size(value)
    if isinstance(size, SymbolicSize):
        raise NotCovered("a symbolic payload size")
    return size
