"""Reading an ``.onnx`` file into a checked, shape-inferred ``onnx.ModelProto``.

Every way a file can be wrong ends in one ``snnc.errors`` line: a file protobuf cannot parse
(garbage, truncated), a model the ONNX checker rejects, an opset outside 13-21, external data
that is missing, too short, or named by a path that leaves the model's directory (``../``, an
absolute path, a symbolic link pointing out), and shapes that ONNX's own inference finds
inconsistent.  Local functions (the dynamo exporter writes some) are inlined so that the
importer sees only standard ops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from snnc.errors import InputFileError, UnsupportedError, first_line

OPSETS = range(13, 22)  # the default-domain opsets snnc reads (and tests)


def read_onnx_file(path: Path) -> Any:
    """The model in ``path``, checked, with its external data loaded and its shapes inferred."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise InputFileError(f"{path}: empty file; expected an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InputFileError(f"{path}: not a readable ONNX model (corrupt or truncated?): {first_line(e)}") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise InputFileError(f"{path}: not an ONNX model (no graph or no IR version: corrupt, truncated, or "
                             "another kind of file)")
    _require_text(model, str(path))
    model = check_model(model, str(path))  # first: the checks need no weights, only their shapes
    _load_external_data(path, model)
    return model


def check_model(model: Any, where: str) -> Any:
    """Checker, opset, inlining and strict shape inference of an in-memory model; the inferred
    shapes are added to ``model`` (returned, inlined where it had local functions)."""
    import onnx
    import onnx.inliner

    opset = default_opset(model)
    if opset not in OPSETS:
        raise UnsupportedError(
            f"{where}: ONNX opset {opset}; snnc reads opsets {OPSETS[0]}-{OPSETS[-1]}: convert the model with "
            f"onnx.version_converter.convert_version(model, 17) or export it again with opset_version=17")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    skeleton = _skeleton(model)
    try:
        onnx.checker.check_model(skeleton)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise InputFileError(f"{where}: invalid ONNX model: {first_line(e)}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as e:
        raise InputFileError(f"{where}: inconsistent ONNX model (shape inference): {first_line(e)}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def _require_text(message: Any, where: str) -> None:
    """protobuf hands back a string field that is not valid UTF-8 (ONNX's schema is proto2, which does
    not enforce it) as ``bytes``; every name, op type and attribute string must be text before the
    checker or the importer compares or prints it (a fuzzed file found one in an external-data path)."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        values = value if repeated else (value,)
        if field.type == FieldDescriptor.TYPE_STRING:
            if any(not isinstance(v, str) for v in values):
                raise InputFileError(f"{where}: not a valid ONNX model: field '{field.name}' of a "
                                     f"{message.DESCRIPTOR.name} is not UTF-8 text (corrupt?)")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for v in values:
                _require_text(v, where)


_LARGE = 1 << 12  # bytes: initialisers this large are weights, never shape arithmetic


def _skeleton(model: Any) -> Any:
    """A copy of ``model`` whose large or external initialisers are typed graph inputs instead: the
    checker and shape inference serialise the model (twice), which costs seconds for a ResNet's
    weights and fails beyond 2 GB, and they need only the weights' shapes."""
    import onnx
    from onnx import helper

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    graph = skeleton.graph
    def large(t: Any) -> bool:
        return t.data_location == onnx.TensorProto.EXTERNAL or t.ByteSize() > _LARGE

    keep = [t for t in graph.initializer if not large(t)]
    weights = [t for t in graph.initializer if large(t)]
    declared = {i.name for i in graph.input}
    for t in weights:
        if t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return skeleton


def default_opset(model: Any) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else 0


def _load_external_data(path: Path, model: Any) -> None:
    """Fill the tensors stored outside the file: each location must name a regular file inside the
    model's directory (after resolving links) and hold the bytes the tensor claims."""
    from onnx import TensorProto, external_data_helper

    base = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(model):  # initialisers and Constant attributes
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        what = f"{path}: tensor '{tensor.name}' stores its data in '{location}'"
        if not location or os.path.isabs(location) or Path(location).drive:
            raise InputFileError(f"{what}: an absolute or empty path; external data must lie next to the model")
        try:
            target = (base / location).resolve()
            exists = target.is_file()
        except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a link loop, a name too long
            raise InputFileError(
                f"{path}: tensor '{tensor.name}' stores its data in {location!r}, not a usable file name "
                f"({first_line(e)})"
            ) from None
        if not target.is_relative_to(base):
            raise InputFileError(f"{what}, outside the model's directory {base}; refusing to read it")
        if not exists:
            raise InputFileError(f"{what}, which does not exist; copy it next to the model")
        try:
            offset, length = int(info.get("offset", 0) or 0), info.get("length")
        except ValueError:
            raise InputFileError(f"{what} at a malformed offset '{info.get('offset')}'") from None
        size = target.stat().st_size
        try:
            end = offset + (int(length) if length else size - offset)
        except ValueError:
            raise InputFileError(f"{what} with a malformed length '{length}'") from None
        if offset < 0 or end > size:
            raise InputFileError(f"{what} at bytes {offset}-{end}, but the file has {size} bytes (truncated?)")
        with open(target, "rb") as f:
            f.seek(offset)
            tensor.raw_data = f.read(end - offset)
        external_data_helper.remove_external_data_field(tensor, "location")
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
