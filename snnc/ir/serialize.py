"""Graph files: ``graph.snnir`` (text) + ``params.safetensors`` (sidecar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from snnc.errors import InputFileError
from snnc.ir.graph import Graph
from snnc.ir.parser import parse_graph
from snnc.ir.printer import print_graph


def save_params(params: dict[str, np.ndarray], path: Path) -> None:
    save_file({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in sorted(params.items())}, str(path))


def load_params(path: Path) -> dict[str, np.ndarray]:
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputFileError(f"{path}: not a readable safetensors file ({e})") from None


def save_graph(graph: Graph, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "graph.snnir").write_text(print_graph(graph))
    save_params(graph.params, directory / "params.safetensors")


def load_graph(path: Path) -> Graph:
    """Load ``graph.snnir`` (or a directory holding it) and its sidecar, if present."""
    path = Path(path)
    text_path = path / "graph.snnir" if path.is_dir() else path
    if not text_path.exists():
        raise InputFileError(f"{text_path}: no such file")
    graph = parse_graph(text_path.read_text())
    sidecar = text_path.with_name("params.safetensors")
    if not sidecar.exists():
        sidecar = text_path.with_suffix(".safetensors")
    if sidecar.exists():
        graph.params = load_params(sidecar)
    return graph
