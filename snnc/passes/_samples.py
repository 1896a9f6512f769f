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


def sample_batches(ctx, pass_name: str, samples: int, labelled: bool = False) -> Iterator:
    """The calibration batches (x float32, y) holding the first ``samples`` samples (``samples`` <= 0:
    all), read one batch at a time: a pass that iterates over it (as often as it needs) holds one batch,
    whatever ``samples`` is."""
    data = ctx.require_calibration(pass_name, labelled=labelled)
    batches = -(-samples // data.batch_size) if samples > 0 else 0
    left = samples if samples > 0 else None
    for xb, yb in calibration_batches(ctx, pass_name, batches, labelled):
        x = np.asarray(xb, dtype=np.float32)
        y = None if yb is None else np.asarray(yb)
        if left is not None:
            x, y = x[:left], None if y is None else y[:left]
            left -= len(x)
        if len(x):
            yield x, y
        if left is not None and left <= 0:
            return


def leading_batches(x, n: int, batch_size: int) -> Iterator[np.ndarray]:
    """The first ``n`` rows of ``x`` as float32 batches of ``batch_size`` rows, read one batch at a
    time (a lazy :class:`snnc.data.Samples` reads only that batch's rows): what a pass that simulates
    a bounded sample several times iterates over, so its memory is one batch, not the sample."""
    for start in range(0, min(n, len(x)), batch_size):
        yield np.asarray(x[start : min(start + batch_size, n)], dtype=np.float32)


def channel_sums(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-channel sum (float64) of (N, C, ...) activations over the batch and every spatial
    position, and the number of values each channel summed: channel means merged over batches are
    ``sum(sums) / sum(counts)``."""
    rows = channel_values(a)
    return rows.sum(axis=1, dtype=np.float64), rows.shape[1]


def sample_rows(total: int, n: int, seed: int) -> np.ndarray:
    """``n`` of ``total`` row indices drawn without replacement with ``seed``, sorted (all rows when
    ``n`` >= ``total``): the seeded sample that count-ops and the compile report simulate."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


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


# ---------------------------------------------------------------------------------------
# a mergeable, constant-memory sketch of each channel's activations

SUB_BITS = 7  # mantissa bits a bin keeps: bins are 2**-7 (0.78 %) of their value wide
OCTAVES = (-16, 16)  # [2**-16, 2**16): the range binned at that resolution
_MID = (OCTAVES[1] - OCTAVES[0]) << SUB_BITS
NUM_BINS = _MID + 2  # 0: values < 2**-16 (zeros, negatives, tiny); 1 .. _MID: the octaves; _MID+1: >= 2**16
_FIRST = (127 + OCTAVES[0]) << SUB_BITS  # float32 bits >> (23 - SUB_BITS) of 2**-16


def bin_edges() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) value of every bin of :class:`ChannelHistogram` (bin 0 counts as 0; the last
    bin's high is +inf: the channel's exact maximum closes it)."""
    k = np.arange(_MID)
    octave = OCTAVES[0] + (k >> SUB_BITS)
    frac = (k & ((1 << SUB_BITS) - 1)) / (1 << SUB_BITS)
    lo = np.concatenate([[0.0], np.ldexp(1.0 + frac, octave), [2.0 ** OCTAVES[1]]])
    hi = np.concatenate([[0.0], np.ldexp(1.0 + frac + 2.0**-SUB_BITS, octave), [np.inf]])
    return lo, hi


class ChannelHistogram:
    """Per-channel counts of activations in fixed, log-spaced bins (float32's exponent and its top
    :data:`SUB_BITS` mantissa bits), plus the exact per-channel maximum and the sample count.

    The bins are the same for every batch and every process, so two histograms merge by adding
    their counts (integers: exact, in any order) and taking the maximum of their maxima; memory is
    channels × :data:`NUM_BINS` × 8 bytes whatever the number of samples.  :meth:`percentile` and
    :meth:`weighted_values` read estimates off it (accuracy stated there).
    """

    def __init__(self, channels: int, counts: bool = True):
        self.maximum = np.full(channels, -np.inf)
        self.counts = np.zeros((channels, NUM_BINS), np.int64) if counts else None
        self.samples = 0

    def add(self, a: np.ndarray) -> None:
        """Add a batch of activations (N, C, ...) (or (N,) for a scalar value)."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        n = t.shape[0]
        t = t.reshape(n, 1, -1) if t.ndim == 1 else t.reshape(n, t.shape[1], -1)  # (N, C, S)
        self.samples += n
        if t.numel() == 0:
            return
        self.maximum = np.maximum(self.maximum, t.amax(dim=(0, 2)).double().numpy())
        if self.counts is None:
            return
        channels = t.shape[1]
        # the bin is float32's exponent and top mantissa bits, read off the bit pattern: for x >= 0
        # the bits grow with x; zeros, negatives and values below 2**-16 fall under the range (bin 0)
        idx = t.view(torch.int32) >> (23 - SUB_BITS)
        idx.sub_(_FIRST - 1).clamp_(0, NUM_BINS - 1)
        idx.add_(torch.arange(channels, dtype=torch.int32).view(1, -1, 1) * NUM_BINS)
        counts = torch.bincount(idx.view(-1), minlength=channels * NUM_BINS)
        self.counts += counts.view(channels, NUM_BINS).numpy()

    def layer(self) -> ChannelHistogram:
        """The whole layer as one channel (counts summed: exact)."""
        merged = ChannelHistogram(1, self.counts is not None)
        merged.maximum = np.array([self.maximum.max(initial=-np.inf)])
        if self.counts is not None:
            merged.counts = self.counts.sum(axis=0, keepdims=True)
        merged.samples = self.samples
        return merged

    def percentile(self, q: float) -> np.ndarray:
        """Per channel, the ``q``-th percentile of the positive values (numpy's linear method), 0.0
        for a channel with none; "positive" here means at least 2**-16 (smaller values are not
        told apart from zeros).

        Accuracy against ``np.percentile`` of the exact values >= 2**-16: each of the two order
        statistics it interpolates between is estimated inside its bin (uniform spread), so where
        the percentile lies below 2**16 the estimate is within a relative 2**-7 (0.78 %) of the
        exact value; above 2**16 it lies between 2**16 and the channel's maximum; q = 100 gives the
        exact maximum (tests/test_calibrate_stream.py)."""
        assert self.counts is not None  # built with counts=True
        lo, hi = bin_edges()
        out = np.zeros(len(self.maximum))
        for c, row in enumerate(self.counts):
            pos = row[1:]
            n = int(pos.sum())
            if n == 0:
                continue
            top = float(self.maximum[c])
            if q >= 100:
                out[c] = top
                continue
            cum = np.cumsum(pos)
            rank = q / 100.0 * (n - 1)
            k = int(np.floor(rank))
            a = _order_stat(k, pos, cum, lo, hi, top)
            out[c] = a if k + 1 >= n else a + (_order_stat(k + 1, pos, cum, lo, hi, top) - a) * (rank - k)
        return out

    def weighted_values(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Channel ``c`` as (value, count) pairs: each non-empty bin's midpoint (within half a bin,
        a relative 2**-8, of every value in it; 0 for values below 2**-16; the top bin closed by
        the exact maximum) and its count."""
        assert self.counts is not None
        lo, hi = bin_edges()
        row = self.counts[c]
        nz = np.flatnonzero(row)
        top = max(float(self.maximum[c]), 0.0)
        value = np.where(nz == 0, 0.0, (lo[nz] + np.minimum(hi[nz], top)) / 2)
        return np.minimum(value, top), row[nz]


def _order_stat(k: int, pos: np.ndarray, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, top: float) -> float:
    """The k-th smallest positive value (0-based), placed inside its bin as if the bin's values
    were spread evenly (bin b of ``pos`` is histogram bin b + 1; the top bin ends at ``top``)."""
    b = int(np.searchsorted(cum, k, side="right"))
    before = int(cum[b - 1]) if b else 0
    low, high = lo[b + 1], min(hi[b + 1], top)
    return min(low + (high - low) * (k - before + 0.5) / int(pos[b]), top)
