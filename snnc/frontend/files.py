"""Model files -> snnc IR.

* ``.pt2``: a torch.export archive (ATen graph; the safe, preferred format).  Before it is read,
  every member's CRC is checked, and every member torch could unpickle (sample inputs, pickled
  weights) must pass torch's own ``weights_only`` loader, unless ``trust_pickle``: torch.export.load
  would otherwise fall back to a full unpickle, which runs code from the file.  Then
  ``snnc.frontend.pt2_reader`` reads it (JSON and raw tensor bytes only) when it covers the archive,
  else, and always with ``trust_pickle``, ``torch.export.load``;
* ``.pt`` / ``.pth`` state dict + ``--arch path/to/file.py:factory``;
* ``.pt`` pickled whole module: only with ``trust_pickle`` (unpickling runs code);
* ``.snnir``: textual IR (+ sidecar ``params.safetensors``);
* ``.nir``: a NIR graph (HDF5) with snnc's discretisation convention;
* ``.onnx``: an ONNX model (opsets 13-21; external data only from the model's directory), read by
  ``snnc.frontend.onnx`` into the same IR as the torch.export path.
TorchScript archives, garbage and truncated files get a one-line explanation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnc.errors import InputFileError, UserError, first_line
from snnc.frontend.fx import import_exported, import_module
from snnc.frontend.pt2_reader import NotCovered, read_exported
from snnc.ir import Graph, TensorType, load_graph


@dataclass(kw_only=True)
class LoadedModel:
    graph: Graph
    kind: str  # "pt2" | "state_dict" | "pickle" | "snnir" | "nir" | "onnx"
    sha256: str
    module: Any = None  # the torch module, when there is one (to evaluate the source model)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape '{text}': expected comma-separated positive integers like 1,8,8") from None
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape '{text}': expected comma-separated positive integers like 1,8,8")
    return shape


def load_factory(spec: str) -> Any:
    """``path/to/file.py:factory`` -> the callable (importing the user's file runs it: it is theirs)."""
    if ":" not in spec:
        raise UserError(f"--arch '{spec}': expected path/to/file.py:factory")
    file, func = spec.rsplit(":", 1)
    path = Path(file)
    if not path.exists():
        raise InputFileError(f"--arch: {path}: no such file")
    mod_name = f"snnc_user_arch_{abs(hash(path.resolve()))}"
    spec_obj = importlib.util.spec_from_file_location(mod_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise InputFileError(f"--arch: cannot import {path}")
    module = importlib.util.module_from_spec(spec_obj)
    sys.modules[mod_name] = module
    try:
        spec_obj.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"--arch: importing {path} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, func):
        raise UserError(f"--arch: {path} has no function '{func}'")
    return getattr(module, func)


def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):  # NotImplemented: zip version
        return None


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence torch's export/serde loggers and warnings while a file loads: their records carry
    tracebacks (and one of them is malformed: "--- Logging error ---"); snnc reports in one line."""
    prefixes = ("torch.export", "torch._export", "torch.serialization")
    names = {n for n in logging.root.manager.loggerDict if n.startswith(prefixes)} | set(prefixes)
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, was in zip(loggers, saved, strict=True):
            lg.disabled = was


_RAW_TENSOR_DIRS = ("data/weights/", "data/constants/")
_UNPICKLED_DIRS = (*_RAW_TENSOR_DIRS, "data/sample_inputs/")  # torch.export.load may unpickle what lies here


def _raw_tensor_members(z: zipfile.ZipFile) -> set[str]:
    """Members that the archive's weight/constant configs name as raw tensor bytes (``use_pickle``
    false): torch reads them with ``frombuffer``, never with an unpickler."""
    raw: set[str] = set()
    pickled: set[str] = set()
    for name in z.namelist():
        directory = next((d for d in _RAW_TENSOR_DIRS if d in name), None)
        if directory is None or not name.endswith("_config.json"):
            continue
        base = name[: name.index(directory) + len(directory)]
        try:
            config = json.loads(z.read(name))["config"]
            entries = [(str(e["path_name"]), bool(e.get("use_pickle"))) for e in config.values()]
        except Exception:  # a malformed config: no member is trusted to be raw bytes
            continue
        for path_name, use_pickle in entries:
            tensor = path_name.startswith(("weight_", "tensor_")) and not use_pickle
            (raw if tensor else pickled).add(base + path_name)
    return raw - pickled


def _looks_pickled(data: bytes) -> bool:
    """A zip (torch.save's format) or a pickle stream (PROTO opcode)."""
    return data[:4] == b"PK\x03\x04" or (len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5)


def _weights_only_refusal(data: bytes) -> str | None:
    """None when torch's own ``weights_only`` unpickler accepts ``data`` (a torch.save zip, whose every
    member's CRC is read too); otherwise why not, in a few words."""
    if data[:4] != b"PK\x03\x04":
        return "a raw pickle, not a torch.save archive"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            for info in inner.infolist():
                inner.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as e:
        return f"damaged: {e}"  # RuntimeError: an encrypted member
    try:
        with _quiet_torch():
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        for line in text.splitlines():  # torch's message is long; its reason is on one line
            if "Unsupported" in line or "WeightsUnpickler error" in line:
                return line.split("error:", 1)[-1].strip().split(". ")[0]
        return f"{type(e).__name__}: {first_line(e)}".strip()
    return None


def _check_archive(path: Path, data: bytes, *, kind: str, pickles: bool) -> None:
    """Before torch sees the file: every member's CRC (a damaged file never loads silently), no member
    name twice (torch's reader and Python's could pick different copies), and, with ``pickles``, every
    member torch could unpickle accepted by torch's ``weights_only`` loader, so that no code from the
    file can run (torch.export.load falls back to ``weights_only=False`` on its own)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if infos and min(i.header_offset for i in infos) != 0:  # torch writes nothing before its zip
                raise InputFileError(f"{path}: cannot read the {kind} archive (corrupt or truncated?): the zip "
                                     "directory found is not the file's own (a damaged end, or a nested archive)")
            seen: set[str] = set()
            for info in infos:
                if info.filename in seen:
                    raise InputFileError(f"{path}: member {info.filename} appears twice; the archive is corrupt "
                                         "or was tampered with")
                seen.add(info.filename)
            raw = _raw_tensor_members(z) if pickles else set()
            for info in infos:
                try:
                    member = z.read(info)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                    # RuntimeError: zipfile's "is encrypted, password required" (torch never encrypts)
                    reason = "fails its CRC check" if "CRC" in str(e) else f"is unreadable ({e})"
                    raise InputFileError(f"{path}: cannot read the {kind} archive (corrupt or truncated?): member "
                                         f"{info.filename} {reason}; copy or export the file again") from None
                if not pickles or info.filename in raw or info.is_dir():
                    continue
                name = info.filename
                by_name = name.endswith((".pt", ".pkl")) or (
                    any(d in name for d in _UNPICKLED_DIRS) and not name.endswith(".json"))
                if not (by_name or _looks_pickled(member)):
                    continue
                refusal = _weights_only_refusal(member)
                if refusal is not None:
                    raise InputFileError(
                        f"{path}: member {name} holds pickled Python objects that torch's safe loader refuses "
                        f"({refusal}); unpickling them would run code from the file: pass --trust-pickle "
                        "only if you trust this file"
                    )
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise InputFileError(f"{path}: truncated or corrupt archive ({first_line(e) or type(e).__name__})") from None


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory; expected a model file (.pt2, .pt, .onnx, .snnir)")
    if path.suffix == ".snnir":
        return LoadedModel(graph=load_graph(path), kind="snnir", sha256=sha256_of(path))
    if path.suffix == ".nir":
        return LoadedModel(graph=_load_nir(path), kind="nir", sha256=sha256_of(path))
    if path.suffix == ".onnx":
        return LoadedModel(graph=_load_onnx(path), kind="onnx", sha256=sha256_of(path))
    try:
        data = path.read_bytes()  # checked and loaded from the same bytes: the file cannot change in between
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    names = _zip_names(data)
    if names is None:
        if data[:4] == b"PK\x03\x04" or not data:
            raise InputFileError(f"{path}: truncated or corrupt archive")
        raise InputFileError(
            f"{path}: not a PyTorch model file (expected a torch.export .pt2 archive or a torch.save .pt zip)"
        )
    stem = path.stem.replace("-", "_")
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names) and not any(
        n.endswith("serialized_exported_program.json") or "/models/" in n for n in names
    ):
        raise InputFileError(
            f"{path}: a TorchScript archive; snnc reads torch.export (.pt2) archives: "
            "re-export with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')"
        )
    if path.suffix == ".pt2" or any("serialized_exported_program" in n or n.endswith(".json") and "models/" in n
                                    for n in names):
        _check_archive(path, data, kind="torch.export", pickles=not trust_pickle)
        return _load_pt2(path, data, digest, stem, input_shape, trust_pickle)
    # a .pt: CRCs only; its pickle guard is torch.load(weights_only=True) in _load_pt, with no silent fallback
    _check_archive(path, data, kind="torch.save", pickles=False)
    return _load_pt(path, data, digest, stem, arch, input_shape, trust_pickle)


def _read_exported(path: Path, data: bytes, *, direct: bool) -> Any:
    """The exported program: with ``direct``, snnc's reader when the archive is in what it covers
    (it spares the import of torch._dynamo that torch.export.load makes, seconds for any model, and
    unpickles nothing); else torch.export.load, which then decides and words every refusal."""
    if direct:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return read_exported(z)
        except (NotCovered, zipfile.BadZipFile):
            pass
    try:
        with _quiet_torch():
            return torch.export.load(io.BytesIO(data))
    except Exception as e:
        first = first_line(e)
        first = first.replace("; check the warnings above", "").replace(", check the warnings above", "")
        raise InputFileError(f"{path}: cannot read the torch.export archive (corrupt or truncated?): "
                             f"{type(e).__name__}: {first}") from None


def _load_pt2(path: Path, data: bytes, digest: str, stem: str, input_shape: tuple[int, ...] | None,
              trust_pickle: bool) -> LoadedModel:
    # --trust-pickle asks for torch's own loader, pickles and all (what it has always meant)
    ep = _read_exported(path, data, direct=not trust_pickle)
    graph = import_exported(ep, stem)
    if input_shape is not None:
        declared = graph.inputs[0][1].shape
        if tuple(input_shape) != declared:
            raise UserError(f"--input-shape {','.join(map(str, input_shape))} does not match the model's input "
                            f"shape {','.join(map(str, declared))} stored in {path.name}")
    # no module: nothing reads it for a .pt2 (the source is evaluated from its graph), and
    # ExportedProgram.module() costs a retrace
    return LoadedModel(graph=graph, kind="pt2", sha256=digest)


def _load_pt(path: Path, data: bytes, digest: str, stem: str, arch: str | None,
             input_shape: tuple[int, ...] | None, trust_pickle: bool) -> LoadedModel:
    try:
        with _quiet_torch():
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        kind = "state_dict"
    except Exception as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e) and "GLOBAL" not in str(e):
            raise InputFileError(f"{path}: cannot read ({type(e).__name__}: {first_line(e)})") from None
        if not trust_pickle:
            raise UserError(
                f"{path}: holds a pickled Python object (a whole module), and unpickling runs arbitrary code; "
                "pass --trust-pickle if you trust this file, or save a state dict and use --arch file.py:factory, "
                "or export with torch.export to .pt2"
            ) from None
        try:
            with _quiet_torch():
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise InputFileError(f"{path}: cannot unpickle ({type(e2).__name__}: {e2})") from None
        kind = "pickle"
    if isinstance(obj, torch.nn.Module):
        module = obj
    elif isinstance(obj, dict):
        if arch is None:
            raise UserError(f"{path}: is a state dict (weights only); say which architecture builds it with "
                            "--arch path/to/file.py:factory")
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            raise InputFileError(f"{path}: holds a dict that is not a state dict (names -> tensors)")
        module = load_factory(arch)()
        try:
            module.load_state_dict(obj)
        except RuntimeError as e:
            raise UserError(f"{path}: does not fit the architecture from --arch {arch}: {first_line(e)}") from None
    else:
        raise InputFileError(f"{path}: holds a {type(obj).__name__}, not a module or a state dict")
    if input_shape is None:
        input_shape = getattr(module, "input_shape", None)
        if input_shape is None:
            raise UserError(f"{path}: the input shape is not stored in this file; pass --input-shape, e.g. 1,8,8")
    example = torch.zeros((1,) + tuple(input_shape))
    from snnc.frontend.snn import import_snn, is_snn  # a direct-coded SNN is imported as one timestep

    graph = (import_snn if is_snn(module) else import_module)(module, example, stem)
    return LoadedModel(graph=graph, kind=kind, sha256=digest, module=module.eval())


def _load_nir(path: Path) -> Graph:
    if importlib.util.find_spec("nir") is None:
        raise UserError(f"{path}: reading NIR files needs the 'nir' package (pip install 'snnc[nir]')")
    from snnc.formats.nir import from_nir, read_nir_file  # shared with the NIR backend

    return from_nir(read_nir_file(path), path.stem.replace("-", "_"))


def _load_onnx(path: Path) -> Graph:
    if importlib.util.find_spec("onnx") is None:
        raise UserError(f"{path}: reading ONNX files needs the 'onnx' package (pip install 'snnc[onnx]')")
    from snnc.frontend.onnx import load_onnx

    return load_onnx(path)


def input_type(graph: Graph) -> TensorType:
    return graph.inputs[0][1]
