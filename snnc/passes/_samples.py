"""Pass helpers (not a pass): drawing calibration data and arranging recorded activations.

Activations are arrays (N, C, ...); :func:`channel_values` turns them into one row per channel,
which :func:`subsample` caps at :data:`MAX_VALUES_PER_CHANNEL` columns for percentile and grid
searches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from snnc.errors import PassError

MAX_VALUES_PER_CHANNEL = 200_000  # subsample beyond this for percentile / grid searches


def calibration_batches(ctx, pass_name: str, batches: int, labelled: bool = False) -> Iterator:
    """The first ``batches`` calibration batches (x, y) (``batches`` <= 0: all of them)."""
    data = ctx.require_calibration(pass_name, labelled=labelled)
    return data.batches(batches if batches > 0 else None)


def first_samples(ctx, pass_name: str, batches: int, labelled: bool = False):
    """The first ``batches`` calibration batches concatenated: (x, y)."""
    xs, ys = [], []
    for xb, yb in calibration_batches(ctx, pass_name, batches, labelled):
        xs.append(np.asarray(xb, dtype=np.float32))
        if yb is not None:
            ys.append(np.asarray(yb))
    if not xs:
        raise PassError(f"pass '{pass_name}': the calibration data is empty")
    return np.concatenate(xs), (np.concatenate(ys) if ys else None)


def channel_values(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) activations -> (C, N·...) one row per channel."""
    a = np.asarray(a)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


def channel_mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean of (N, C, ...) activations over the batch and every spatial position."""
    return channel_values(a).mean(axis=1)


def subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` columns of a (C, n) array, drawn without replacement (seeded)."""
    if rows.shape[1] <= limit:
        return rows
    idx = np.random.default_rng(seed).choice(rows.shape[1], size=limit, replace=False)
    return rows[:, np.sort(idx)]
