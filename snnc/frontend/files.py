"""Model files -> snnc IR.

* ``.pt2``: a torch.export archive (ATen graph; the safe, preferred format);
* ``.pt`` / ``.pth`` state dict + ``--arch path/to/file.py:factory``;
* ``.pt`` pickled whole module: only with ``trust_pickle`` (unpickling runs code);
* ``.snnir``: textual IR (+ sidecar ``params.safetensors``);
* ``.nir``: a NIR graph (HDF5) with snnc's discretisation convention.
TorchScript archives, garbage and truncated files get a one-line explanation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnc.errors import InputFileError, UserError
from snnc.frontend.fx import import_exported, import_module
from snnc.ir import Graph, TensorType, load_graph


@dataclass
class LoadedModel:
    graph: Graph
    kind: str  # "pt2" | "state_dict" | "pickle" | "snnir"
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


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


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
        raise InputFileError(f"{path}: is a directory; expected a model file (.pt2, .pt, .snnir)")
    digest = sha256_of(path)
    if path.suffix == ".snnir":
        return LoadedModel(load_graph(path), "snnir", digest)
    if path.suffix == ".nir":
        return LoadedModel(_load_nir(path), "nir", digest)
    names = _zip_names(path)
    if names is None:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04" or path.stat().st_size == 0:
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
        return _load_pt2(path, digest, stem, input_shape)
    return _load_pt(path, digest, stem, arch, input_shape, trust_pickle)


def _load_pt2(path: Path, digest: str, stem: str, input_shape: tuple[int, ...] | None) -> LoadedModel:
    logger = logging.getLogger("torch.export")
    was_disabled, logger.disabled = logger.disabled, True  # its own warning carries a traceback
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        first = first.replace("; check the warnings above", "").replace(", check the warnings above", "")
        raise InputFileError(f"{path}: cannot read the torch.export archive (corrupt or truncated?): "
                             f"{type(e).__name__}: {first}") from None
    finally:
        logger.disabled = was_disabled
    graph = import_exported(ep, stem)
    if input_shape is not None:
        declared = graph.inputs[0][1].shape
        if tuple(input_shape) != declared:
            raise UserError(f"--input-shape {','.join(map(str, input_shape))} does not match the model's input "
                            f"shape {','.join(map(str, declared))} stored in {path.name}")
    return LoadedModel(graph, "pt2", digest, ep.module())


def _load_pt(path: Path, digest: str, stem: str, arch: str | None, input_shape: tuple[int, ...] | None,
             trust_pickle: bool) -> LoadedModel:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        kind = "state_dict"
    except Exception as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e) and "GLOBAL" not in str(e):
            raise InputFileError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if not trust_pickle:
            raise UserError(
                f"{path}: holds a pickled Python object (a whole module), and unpickling runs arbitrary code; "
                "pass --trust-pickle if you trust this file, or save a state dict and use --arch file.py:factory, "
                "or export with torch.export to .pt2"
            ) from None
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise InputFileError(f"{path}: cannot unpickle ({type(e2).__name__}: {e2})") from None
        kind = "pickle"
    if isinstance(obj, torch.nn.Module):
        module = obj
    elif isinstance(obj, dict):
        if arch is None:
            raise UserError(f"{path}: is a state dict (weights only); say which architecture builds it with "
                            "--arch path/to/file.py:factory")
        module = load_factory(arch)()
        try:
            module.load_state_dict(obj)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise UserError(f"{path}: does not fit the architecture from --arch {arch}: {first}") from None
    else:
        raise InputFileError(f"{path}: holds a {type(obj).__name__}, not a module or a state dict")
    if input_shape is None:
        input_shape = getattr(module, "input_shape", None)
        if input_shape is None:
            raise UserError(f"{path}: the input shape is not stored in this file; pass --input-shape, e.g. 1,8,8")
    example = torch.zeros((1,) + tuple(input_shape))
    from snnc.frontend.snn import import_snn, is_snn  # a direct-coded SNN is imported as one timestep

    graph = (import_snn if is_snn(module) else import_module)(module, example, stem)
    return LoadedModel(graph, kind, digest, module.eval())


def _load_nir(path: Path) -> Graph:
    try:
        import nir
    except ModuleNotFoundError:
        raise UserError(f"{path}: reading NIR files needs the 'nir' package (pip install 'snnc[nir]')") from None
    from snnc.formats.nir import from_nir  # shared with the NIR backend, which writes the format

    try:
        nir_graph = nir.read(str(path))
    except Exception as e:
        raise InputFileError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None
    return from_nir(nir_graph, path.stem.replace("-", "_"))


def input_type(graph: Graph) -> TensorType:
    return graph.inputs[0][1]
