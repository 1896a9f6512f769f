"""Data files (DESIGN §6): ``.npz`` with ``x`` (N, ...) float32 and optional ``y`` (N,) ints;
a directory of such files is one data set, read in name order.

Everything is checked here, before calibration or a run: a readable archive (never unpickled),
numeric finite ``x`` with at least one sample, integer ``y`` with one label per sample, and the same
sample shape in every shard.  A bad file is a one-line :class:`InputFileError`.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from snnc.errors import InputFileError, SnncError, first_line

NUMERIC = "biuf"  # bool, signed and unsigned integers, floats


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise InputFileError(f"{path}: directory holds no .npz shards")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    for f in files:
        x, y = _load_one(f)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise InputFileError(f"{f}: samples have shape {list(x.shape[1:])}, but {files[0]} has "
                                 f"{list(xs[0].shape[1:])}")
        xs.append(x)
        ys.append(y)
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise InputFileError(f"{path}: some shards have labels 'y' and some do not")
    x = np.concatenate(xs)
    y = None if ys[0] is None else np.concatenate([y for y in ys if y is not None])
    return x, y


def _load_one(f: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not zipfile.is_zipfile(f):  # np.load would try to unpickle anything else
        raise InputFileError(f"{f}: not a .npz archive (expected arrays x and optionally y, saved with np.savez)")
    try:
        with np.load(f, allow_pickle=False) as data:
            if "x" not in data:
                raise InputFileError(f"{f}: has no array 'x' (found: {', '.join(data.files) or 'none'})")
            x = _array(data, "x", f)
            y = _array(data, "y", f) if "y" in data else None
    except SnncError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, KeyError) as e:
        raise InputFileError(f"{f}: not a readable .npz file ({first_line(e) or type(e).__name__})") from None
    if x.dtype.kind not in NUMERIC:
        raise InputFileError(f"{f}: x has dtype {x.dtype}; expected numbers (float32)")
    if x.ndim < 2 or len(x) == 0:
        raise InputFileError(f"{f}: x has shape {list(x.shape)}; expected (N, ...) with at least one sample")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        sample = int(np.argwhere(~finite)[0][0])
        raise InputFileError(f"{f}: x holds NaN or infinite values (first in sample {sample})")
    if y is None:
        return x, None
    if y.ndim != 1:
        raise InputFileError(f"{f}: y has shape {list(y.shape)}; expected one integer label per sample, (N,)")
    if y.dtype.kind not in NUMERIC or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise InputFileError(f"{f}: y has dtype {y.dtype} with non-integer labels; expected integers")
    if len(y) != len(x):
        raise InputFileError(f"{f}: x has {len(x)} samples but y has {len(y)}")
    return x, y.astype(np.int64)


def _array(data, key: str, f: Path) -> np.ndarray:
    try:
        return np.asarray(data[key])
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise InputFileError(f"{f}: {key} is an object array (pickled Python objects), which snnc never "
                                 "unpickles; save plain numbers with np.savez") from None
        raise


def check_shape(x: np.ndarray, shape: tuple[int, ...], path: str | Path) -> None:
    if tuple(x.shape[1:]) != tuple(shape):
        raise InputFileError(
            f"{path}: samples have shape {list(x.shape[1:])}, the model expects {list(shape)}"
        )
