"""Graph files: ``graph.snnir`` (text) + ``params.safetensors`` (sidecar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from snnc.errors import InputFileError, ParseError
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


def decode_text(data: bytes, filename: str) -> str:
    """UTF-8 bytes -> text (a leading byte-order mark is dropped); ParseError at the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ParseError(
            f"{filename}:{line}:{col}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}: {e.reason})"
        ) from None
    return text.removeprefix("\ufeff")


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
    try:
        data = text_path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{text_path}: cannot read ({e.strerror or e})") from None
    graph = parse_graph(decode_text(data, str(text_path)), str(text_path))
    sidecar = text_path.with_name("params.safetensors")
    if not sidecar.exists():
        sidecar = text_path.with_suffix(".safetensors")
    if sidecar.exists():
        graph.params = load_params(sidecar)
    return graph
