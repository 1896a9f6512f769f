"""Data (DESIGN §6): ``.npz`` with ``x`` (N, ...) float32 and optional ``y`` (N,) ints; a directory
of such files is one data set, read in name order; from Python, a torch ``Dataset`` or ``DataLoader``.

Data is read in batches, never whole: :func:`open_data` returns a :class:`Data` whose ``x`` is a
:class:`Samples`, a lazy (N, ...) float32 array that reads only the rows a slice or an index array
asks for.  An ``x`` stored uncompressed (``np.savez``) is memory-mapped; a compressed one
(``np.savez_compressed``) is decompressed as a stream, forward, a chunk at a time.  The labels ``y``
(8 bytes a sample) are the one thing held whole.  :meth:`Data.subset` draws a seeded subset
(``--calib-samples N``).

Everything is checked in :func:`open_data`, before calibration or a run, in one streamed pass of
bounded memory: a readable archive (never unpickled; zip CRCs verified), numeric finite ``x`` with at
least one sample, integer ``y`` with one label per sample, and the same sample shape in every shard.
A bad file is a one-line :class:`InputFileError`.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import InputFileError, SnncError, UserError, first_line

NUMERIC = "biuf"  # bool, signed and unsigned integers, floats
CHUNK_BYTES = 8 << 20  # what one read of a compressed member or of the validating scan holds
_READ_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, KeyError)


# ---------------------------------------------------------------------------------------
# one array inside one .npz


class _Member:
    """One ``.npy`` member of a ``.npz``: its header, and its rows read on demand (a memory map
    when stored uncompressed, a forward stream when deflated)."""

    def __init__(self, path: Path, key: str, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype,
                 fortran: bool, header_len: int):
        self.path, self.key, self.info = path, key, info
        self.shape, self.dtype, self.fortran = shape, dtype, fortran
        self.header_len = header_len
        self.row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        self._offset: int | None = None  # where x's data starts in the file (stored members)
        self._stream: Any = None  # (zipfile, member stream, next row) of a deflated member
        self._whole: np.ndarray | None = None  # a Fortran-ordered deflated member (rare): read once

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, local: np.ndarray) -> np.ndarray:
        """The rows ``local`` (sorted, unique) as an array in the member's dtype."""
        if len(local) == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        if self.info.compress_type == zipfile.ZIP_STORED:
            # a fresh map per read, dropped after it: the pages read do not stay mapped, so a pass
            # over the whole file does not grow the resident set by the file's size
            mapped = self._memmap()
            try:
                return np.array(mapped[local])
            finally:
                mm = getattr(mapped, "_mmap", None)
                del mapped
                if mm is not None:
                    mm.close()
        if self.fortran:
            if self._whole is None:
                self._whole = _read_member(self.path, self.key)
            return self._whole[local]
        return self._streamed(local)

    def _memmap(self) -> np.ndarray:
        if self._offset is None:
            with open(self.path, "rb") as f:  # the local header's name and extra lengths locate the data
                f.seek(self.info.header_offset + 26)
                name_len, extra_len = np.frombuffer(f.read(4), "<u2")
            self._offset = self.info.header_offset + 30 + int(name_len) + int(extra_len) + self.header_len
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=self.shape,
                         order="F" if self.fortran else "C")

    def _streamed(self, local: np.ndarray) -> np.ndarray:
        first, last = int(local[0]), int(local[-1]) + 1
        if self._stream is None or self._stream[2] > first:  # only forward: reopen to go back
            self._close_stream()
            zf = zipfile.ZipFile(self.path)
            stream = zf.open(self.info)
            stream.read(self.header_len)
            self._stream = [zf, stream, 0]
        zf, stream, at = self._stream
        row_bytes = self.row_items * self.dtype.itemsize
        per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
        while at < first:  # skip, a chunk at a time
            n = min(per_chunk, first - at)
            stream.read(n * row_bytes)
            at += n
        out = np.empty((len(local), *self.shape[1:]), self.dtype)
        done = 0
        while at < last:
            n = min(per_chunk, last - at)
            block = np.frombuffer(stream.read(n * row_bytes), self.dtype).reshape(n, *self.shape[1:])
            take = local[(local >= at) & (local < at + n)]
            out[done : done + len(take)] = block[take - at]
            done += len(take)
            at += n
        self._stream[2] = at
        return out

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream[0].close()
            self._stream = None

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers, multiprocessing: reopen there
        return {**self.__dict__, "_stream": None}


def _read_member(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[key])


def _open_members(f: Path) -> dict[str, _Member]:
    """The arrays of the archive ``f`` by name, headers read (no data)."""
    if not zipfile.is_zipfile(f):  # np.load would try to unpickle anything else
        raise InputFileError(f"{f}: not a .npz archive (expected arrays x and optionally y, saved with np.savez)")
    members: dict[str, _Member] = {}
    try:
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                with zf.open(info) as stream:
                    version = np.lib.format.read_magic(stream)
                    shape, fortran, dtype = _read_header(stream, version)
                    header_len = stream.tell()
                members[key] = _Member(f, key, info, shape, dtype, fortran, header_len)
    except SnncError:
        raise
    except _READ_ERRORS as e:
        raise InputFileError(f"{f}: not a readable .npz file ({first_line(e) or type(e).__name__})") from None
    return members


def _read_header(stream, version) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return np.lib.format._read_array_header(stream, version)  # type: ignore[attr-defined]  # 3.0


def _object_array(f: Path, key: str) -> InputFileError:
    return InputFileError(f"{f}: {key} is an object array (pickled Python objects), which snnc never "
                          "unpickles; save plain numbers with np.savez")


@dataclass(frozen=True, kw_only=True)
class _Shard:
    x: _Member
    y: np.ndarray | None


def _open_shard(f: Path) -> _Shard:
    """One file, checked whole in a streamed pass (finite x, CRCs), its labels read."""
    members = _open_members(f)
    if "x" not in members:
        raise InputFileError(f"{f}: has no array 'x' (found: {', '.join(members) or 'none'})")
    x = members["x"]
    if x.dtype.hasobject:
        raise _object_array(f, "x")
    if x.dtype.kind not in NUMERIC:
        raise InputFileError(f"{f}: x has dtype {x.dtype}; expected numbers (float32)")
    if len(x.shape) < 2 or x.shape[0] == 0:
        raise InputFileError(f"{f}: x has shape {list(x.shape)}; expected (N, ...) with at least one sample")
    y = None
    if "y" in members:
        if members["y"].dtype.hasobject:
            raise _object_array(f, "y")
        y = _labels(f, members["y"], len(x))
    _scan(f, x)
    return _Shard(x=x, y=y)


def _labels(f: Path, member: _Member, n: int) -> np.ndarray:
    try:
        y = _read_member(f, "y")
    except _READ_ERRORS as e:
        raise InputFileError(f"{f}: not a readable .npz file ({first_line(e) or type(e).__name__})") from None
    if y.ndim != 1:
        raise InputFileError(f"{f}: y has shape {list(y.shape)}; expected one integer label per sample, (N,)")
    if y.dtype.kind not in NUMERIC or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise InputFileError(f"{f}: y has dtype {y.dtype} with non-integer labels; expected integers")
    if len(y) != n:
        raise InputFileError(f"{f}: x has {n} samples but y has {len(y)}")
    return y.astype(np.int64)


def _scan(f: Path, x: _Member) -> None:
    """Read ``x`` once through the zip stream, a chunk at a time: the CRC is checked at its end, and
    every value must be finite once made float32 (as the simulator will see it)."""
    row_bytes = x.row_items * x.dtype.itemsize
    per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
    try:
        with zipfile.ZipFile(f) as zf, zf.open(x.info) as stream:
            stream.read(x.header_len)
            if x.fortran:  # column-major: rows are not contiguous; check it whole (rare)
                arr = np.frombuffer(stream.read(), x.dtype).reshape(x.shape, order="F")
                _check_finite(f, arr, 0)
                return
            at = 0
            while at < len(x):
                n = min(per_chunk, len(x) - at)
                raw = stream.read(n * row_bytes)
                if len(raw) != n * row_bytes:
                    raise EOFError("the archive ends inside x")
                _check_finite(f, np.frombuffer(raw, x.dtype).reshape(n, *x.shape[1:]), at)
                at += n
            stream.read()  # to the end: zipfile checks the CRC there
    except SnncError:
        raise
    except _READ_ERRORS as e:
        raise InputFileError(f"{f}: not a readable .npz file ({first_line(e) or type(e).__name__})") from None


def _check_finite(f: Path, block: np.ndarray, first: int) -> None:
    if block.dtype.kind != "f" and block.dtype.itemsize < 8:
        return  # small integers and bools are finite as float32
    with np.errstate(over="ignore"):
        finite = np.isfinite(block.astype(np.float32, copy=False))
    if not finite.all():
        sample = int(np.argwhere(~finite)[0][0]) + first
        raise InputFileError(f"{f}: x holds NaN or infinite values (first in sample {sample})")


# ---------------------------------------------------------------------------------------
# the lazy array


class Samples:
    """A lazy (N, ...) float32 array: ``len``, ``shape``, ``x[a:b]``, ``x[i]`` and ``x[index_array]``
    read only the rows asked for (from memory maps, streams or a torch ``Dataset``).

    ``np.asarray(samples)`` reads everything: the escape hatch of a pass that wants it whole.
    """

    def __init__(self, source: _Source, index: np.ndarray | None = None):
        self._source = source
        self._index = index  # the rows of ``source`` this view shows, in order (None: all)
        n = len(source) if index is None else len(index)
        self.shape: tuple[int, ...] = (n, *source.sample_shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"sample {key} out of range for {len(self)} samples")
            return self._read(np.array([i]))[0]
        if isinstance(key, slice):
            return self._read(np.arange(*key.indices(len(self))))
        if isinstance(key, tuple) and key and isinstance(key[0], slice):  # x[a:b, ...]: rows first
            return self[key[0]][(slice(None), *key[1:])]
        return self._read(np.asarray(key, dtype=np.int64).reshape(-1))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        rows = rows if self._index is None else self._index[rows]
        if len(rows) and np.all(rows[1:] > rows[:-1]):
            return self._source.read(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._source.read(unique)[inverse]

    def view(self, rows: np.ndarray) -> Samples:
        """The lazy array of the rows ``rows`` of this one."""
        rows = np.asarray(rows, dtype=np.int64)
        return Samples(self._source, rows if self._index is None else self._index[rows])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self) -> str:
        return f"Samples(shape={self.shape}, {self._source!r})"


class _Source:
    """Rows by global index over the concatenation of parts (float32 out)."""

    sample_shape: tuple[int, ...] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _NpzSource(_Source):
    def __init__(self, members: Sequence[_Member], name: str):
        self.members = list(members)
        self.name = name
        self.starts = np.cumsum([0] + [len(m) for m in self.members])
        self.sample_shape = tuple(self.members[0].shape[1:])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.sample_shape), np.float32)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            with np.errstate(over="ignore"):
                out[sel] = self.members[p].rows(rows[sel] - self.starts[p])
        return out

    def __repr__(self) -> str:
        return f"{self.name}, {len(self.members)} file(s)"


class _TorchSource(_Source):
    """A map-style torch ``Dataset``: items ``x`` or ``(x, y, ...)``, read one by one."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        first = _item_x(dataset[0])
        self.sample_shape = tuple(first.shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.sample_shape), np.float32)
        for i, r in enumerate(rows):
            out[i] = _item_x(self.dataset[int(r)])
        return out

    def __repr__(self) -> str:
        return type(self.dataset).__name__


def _item_x(item: Any) -> np.ndarray:
    x = item[0] if isinstance(item, (tuple, list)) else item
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return x.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------
# a data set


@dataclass(frozen=True, kw_only=True)
class Data:
    """A data set: ``x`` a lazy :class:`Samples` (N, ...) float32; ``y`` (N,) int64 labels or None."""

    x: Samples
    y: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, n: int | None, seed: int) -> Data:
        """``n`` samples drawn without replacement with ``seed``, in file order (all when n is None or
        >= N): the same ``n`` and ``seed`` always give the same samples."""
        if n is None or n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return Data(x=self.x.view(rows), y=None if self.y is None else self.y[rows], name=self.name)


def open_data(source: Any) -> Data:
    """A data set from a ``.npz`` path, a directory of ``.npz`` shards, or a torch ``Dataset`` /
    ``DataLoader`` (its map-style dataset; its sampler and batching are not used: snnc batches)."""
    if isinstance(source, (str, Path)):
        return _open_path(Path(source))
    dataset = getattr(source, "dataset", source)  # a DataLoader's dataset
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise UserError(f"{type(source).__name__}: not a map-style torch Dataset (no __len__ / __getitem__); "
                        "pass a Dataset, a DataLoader over one, or a .npz path")
    if len(dataset) == 0:
        raise UserError(f"{type(dataset).__name__}: the data set is empty")
    src = _TorchSource(dataset)
    first = dataset[0]
    y = None
    if isinstance(first, (tuple, list)) and len(first) > 1:
        targets = getattr(dataset, "targets", None)  # torchvision's datasets: labels without the images
        if targets is not None and len(targets) == len(dataset):
            y = np.asarray(targets, dtype=np.int64)
        else:
            y = np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)
    return Data(x=Samples(src), y=y, name=type(dataset).__name__)


def _open_path(path: Path) -> Data:
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise InputFileError(f"{path}: directory holds no .npz shards")
    shards: list[_Shard] = []
    for f in files:
        shard = _open_shard(f)
        if shards and shard.x.shape[1:] != shards[0].x.shape[1:]:
            raise InputFileError(f"{f}: samples have shape {list(shard.x.shape[1:])}, but {files[0]} has "
                                 f"{list(shards[0].x.shape[1:])}")
        shards.append(shard)
    labels = [s.y for s in shards]
    if any(y is None for y in labels) and not all(y is None for y in labels):
        raise InputFileError(f"{path}: some shards have labels 'y' and some do not")
    y = None if labels[0] is None else np.concatenate([y for y in labels if y is not None])
    return Data(x=Samples(_NpzSource([s.x for s in shards], str(path))), y=y, name=str(path))


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole data set in memory, (x, y): for callers that need it whole (small data)."""
    data = open_data(Path(path))
    return np.asarray(data.x), data.y


def check_shape(x: Any, shape: tuple[int, ...], path: Any) -> None:
    if tuple(x.shape[1:]) != tuple(shape):
        raise InputFileError(
            f"{path}: samples have shape {list(x.shape[1:])}, the model expects {list(shape)}"
        )
