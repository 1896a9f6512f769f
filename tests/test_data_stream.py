"""Streaming data (issue 13): .npz members read by rows (memory map or stream), shard directories,
seeded subsets and torch Datasets give exactly the arrays np.load gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnc.data import CHUNK_BYTES, open_data
from snnc.errors import InputFileError


def _arrays(n: int = 37, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, 5, 4)).astype(np.float32), rng.integers(0, 10, size=n)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_rows_equal_np_load(tmp_path, save):
    x, y = _arrays()
    save(tmp_path / "d.npz", x=x, y=y)
    data = open_data(tmp_path / "d.npz")
    assert data.x.shape == x.shape and len(data) == len(x)
    np.testing.assert_array_equal(data.y, y)
    np.testing.assert_array_equal(data.x[:], x)
    np.testing.assert_array_equal(data.x[5:17], x[5:17])
    np.testing.assert_array_equal(data.x[2:3], x[2:3])  # backwards: a stream reopens
    np.testing.assert_array_equal(data.x[-1], x[-1])
    np.testing.assert_array_equal(data.x[np.array([30, 4, 4, 11])], x[[30, 4, 4, 11]])
    np.testing.assert_array_equal(np.asarray(data.x), x)


def test_uncompressed_x_is_memory_mapped(tmp_path):
    x, _ = _arrays()
    np.savez(tmp_path / "d.npz", x=x)
    data = open_data(tmp_path / "d.npz")
    data.x[0:2]
    member = data.x._source.members[0]  # type: ignore[attr-defined]
    assert isinstance(member._memmap(), np.memmap)


def test_compressed_reads_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("snnc.data.CHUNK_BYTES", 3 * 5 * 4 * 4 * 2)  # two rows a chunk
    assert CHUNK_BYTES > 1000
    x, y = _arrays()
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    data = open_data(tmp_path / "d.npz")
    got = np.concatenate([data.x[i : i + 5] for i in range(0, len(x), 5)])
    np.testing.assert_array_equal(got, x)


def test_shard_directory_is_one_data_set(tmp_path):
    x, y = _arrays(50)
    np.savez(tmp_path / "a.npz", x=x[:20], y=y[:20])
    np.savez_compressed(tmp_path / "b.npz", x=x[20:33], y=y[20:33])
    np.savez(tmp_path / "c.npz", x=x[33:], y=y[33:])
    data = open_data(tmp_path)
    np.testing.assert_array_equal(data.x[:], x)
    np.testing.assert_array_equal(data.x[15:40], x[15:40])
    np.testing.assert_array_equal(data.y, y)


def test_subset_is_seeded_and_in_file_order(tmp_path):
    x, y = _arrays(100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = open_data(tmp_path / "d.npz")
    a, b, c = data.subset(10, 0), data.subset(10, 0), data.subset(10, 1)
    np.testing.assert_array_equal(a.x[:], b.x[:])
    assert not np.array_equal(a.x[:], c.x[:])
    rows = np.array([int(np.flatnonzero((x == r).all(axis=(1, 2, 3)))[0]) for r in a.x[:]])
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(a.y, y[rows])
    np.testing.assert_array_equal(a.x[3:7], x[rows[3:7]])
    assert data.subset(1000, 0) is data


def test_torch_dataset_and_loader():
    x, y = _arrays(12)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    for source in (ds, torch.utils.data.DataLoader(ds, batch_size=5)):
        data = open_data(source)
        np.testing.assert_array_equal(data.x[2:9], x[2:9])
        np.testing.assert_array_equal(data.y, y)
    unlabelled = open_data(torch.utils.data.TensorDataset(torch.from_numpy(x)))
    assert unlabelled.y is None


def test_nan_found_in_a_later_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr("snnc.data.CHUNK_BYTES", 3 * 5 * 4 * 4 * 2)
    x, _ = _arrays()
    x[29, 1, 2, 3] = np.nan
    np.savez_compressed(tmp_path / "d.npz", x=x)
    with pytest.raises(InputFileError, match=r"first in sample 29\)"):
        open_data(tmp_path / "d.npz")
