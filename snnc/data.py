"""Data files (DESIGN §6): ``.npz`` with ``x`` (N, ...) float32 and optional ``y`` (N,) ints;
a directory of such files is one data set, read in name order."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from snnc.errors import InputFileError


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise InputFileError(f"{path}: directory holds no .npz shards")
    xs, ys = [], []
    for f in files:
        if not zipfile.is_zipfile(f):  # np.load would try to unpickle anything else
            raise InputFileError(f"{f}: not a .npz archive (expected arrays x and optionally y, saved with np.savez)")
        try:
            with np.load(f, allow_pickle=False) as data:
                if "x" not in data:
                    raise InputFileError(f"{f}: has no array 'x' (found: {', '.join(data.files) or 'none'})")
                xs.append(np.asarray(data["x"], dtype=np.float32))
                ys.append(np.asarray(data["y"]).astype(np.int64) if "y" in data else None)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise InputFileError(f"{f}: not a readable .npz file ({e})") from None
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise InputFileError(f"{path}: some shards have labels 'y' and some do not")
    x = np.concatenate(xs)
    y = None if ys[0] is None else np.concatenate([y for y in ys if y is not None])
    if y is not None and len(y) != len(x):
        raise InputFileError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    return x, y


def check_shape(x: np.ndarray, shape: tuple[int, ...], path: str | Path) -> None:
    if tuple(x.shape[1:]) != tuple(shape):
        raise InputFileError(
            f"{path}: samples have shape {list(x.shape[1:])}, the model expects {list(shape)}"
        )
