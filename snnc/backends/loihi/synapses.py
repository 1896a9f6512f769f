"""Synapse and axon accounting of one neuron range: synaptic-memory packing and conv edges.

Synapse bits: for every (incoming edge, source neuron) with >= 1 synapse on the core, its synapse list
packed as nengo-loihi does (groups of <= ``synapses_per_group`` synapses with a ``header_bits`` header,
each group rounded up to ``word_bits``); a synapse costs its weight bits (rounded up to an allowed width)
+ delay bits, + ``index_bits`` for sparse (conv) lists; dense lists address a contiguous compartment
range and carry no index.  :class:`ConvEdge` counts, exactly and without enumerating synapses, what a
range of a conv edge's destination neurons (in (x, y, c) order) needs from its source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.errors import TargetError

from .hardware import SynapseEncoding
from .network import ConvGeometry


def packed_bits(n: np.ndarray, bits_per_synapse: int, enc: SynapseEncoding) -> np.ndarray:
    """Bits of synaptic memory for synapse lists of ``n`` synapses each (0 for an empty list)."""
    n = np.asarray(n, dtype=np.int64)
    g, w, h = enc.synapses_per_group, enc.word_bits, enc.header_bits
    full_group = -(-(g * bits_per_synapse + h) // w) * w
    rem = n % g
    rem_cost = np.where(rem > 0, -(-(rem * bits_per_synapse + h) // w) * w, 0)
    return (n // g) * full_group + rem_cost


def min_bits_per_synapse(bits_per_synapse: int, enc: SynapseEncoding) -> float:
    """The cheapest any synapse can be once headers and word padding are paid (for the lower bound)."""
    n = np.arange(1, enc.synapses_per_group + 1)
    return float((packed_bits(n, bits_per_synapse, enc) / n).min())


def round_weight_bits(bits: int, enc: SynapseEncoding, where: str) -> int:
    """The narrowest synapse width the chip allows for ``bits``-bit weights (TargetError naming ``where``)."""
    ok = [b for b in enc.allowed_weight_bits if b >= bits]
    if not ok:
        raise TargetError(
            f"{where}: {bits}-bit weights exceed the widest synapse ({max(enc.allowed_weight_bits)} bits)"
        )
    return min(ok)


# ----------------------------------------------------------------------------------------------------
# Ranges in (x, y, c) order


@dataclass(frozen=True)
class Split:
    """A range of a (C, H, W) population in (x, y, c) order: whole positions [full_lo, full_hi) plus up to
    two positions with only a channel interval."""

    full_lo: int
    full_hi: int
    partial: tuple[tuple[int, int, int], ...]  # (position, c_lo, c_hi)


def split_range(a: int, b: int, channels: int) -> Split:
    """Neurons [a, b) of a population with ``channels`` channels, as whole positions and partial ones."""
    p0, c0 = divmod(a, channels)
    p1, c1 = divmod(b - 1, channels)
    if p0 == p1:
        if c0 == 0 and c1 == channels - 1:
            return Split(p0, p0 + 1, ())
        return Split(p0, p0, ((p0, c0, c1 + 1),))
    partial = []
    lo, hi = p0, p1 + 1
    if c0 > 0:
        partial.append((p0, c0, channels))
        lo = p0 + 1
    if c1 < channels - 1:
        partial.append((p1, 0, c1 + 1))
        hi = p1
    return Split(lo, hi, tuple(partial))


def _overlap(lo: np.ndarray | int, hi: np.ndarray | int, a: int, b: int) -> np.ndarray | int:
    return np.maximum(0, np.minimum(hi, b) - np.maximum(lo, a))


@dataclass(kw_only=True)
class ConvProfile:
    """What one destination range of a conv edge needs from its source (see ConvEdge.profile)."""

    x_lo: int  # source columns [x_lo, x_hi) that feed it
    x_hi: int
    synapses: int
    axons: int
    bits: int
    prefix: np.ndarray  # prefix sums, over source positions (x - x_lo) * H + y, of feeding channels
    # (feeds[H, x_hi - x_lo] bool, prefix sums over source channels of "its group is one of the combo's"):
    # a partial source position's channels [c_lo, c_hi) that feed are prefix[c_hi] - prefix[c_lo]
    combos: list[tuple[np.ndarray, np.ndarray]]


_PROFILE_CACHE = 4096  # remembered profiles per conv edge (each holds a few arrays of one column band)


class ConvEdge:
    """Exact synapse / axon accounting of one conv edge for destination ranges."""

    def __init__(self, g: ConvGeometry, bits_per_synapse: int, enc: SynapseEncoding) -> None:
        self.cin, self.hin, self.win = g.in_shape
        self.cout, self.hout, self.wout = g.out_shape
        self.kh, self.kw = g.kernel
        (self.sy, self.sx), (self.py, self.px), (self.dy, self.dx) = g.stride, g.padding, g.dilation
        self.groups = g.groups
        self.cg, self.og = self.cin // g.groups, self.cout // g.groups
        self.bits_per_synapse = bits_per_synapse
        self.enc = enc
        # profile() is a pure function of the range; the partitioner asks for the same ranges again and
        # again (bisection for the largest range that fits, then once per strategy it tries)
        self._profiles: dict[tuple[int, int], ConvProfile] = {}

    def _coverage(self, masks: np.ndarray, xa: int) -> tuple[np.ndarray, int, int]:
        """For masks [M, H_out, ncols] over output columns xa.., how many masked outputs read each input
        pixel: [M, H_in, x_hi - x_lo] over input columns [x_lo, x_hi)."""
        m, _, ncols = masks.shape
        hc = (self.hout - 1) * self.sy + (self.kh - 1) * self.dy + 1
        wc = (ncols - 1) * self.sx + (self.kw - 1) * self.dx + 1
        canvas = np.zeros((m, hc, wc), dtype=np.int64)
        for ky in range(self.kh):
            r = ky * self.dy
            for kx in range(self.kw):
                c = kx * self.dx
                canvas[
                    :,
                    r : r + (self.hout - 1) * self.sy + 1 : self.sy,
                    c : c + (ncols - 1) * self.sx + 1 : self.sx,
                ] += masks
        col0 = xa * self.sx - self.px  # input column of canvas column 0
        x_lo, x_hi = max(0, col0), min(self.win, col0 + wc)
        cov = np.zeros((m, self.hin, max(0, x_hi - x_lo)), dtype=np.int64)
        r1 = min(hc, self.py + self.hin)
        if x_hi > x_lo and r1 > self.py:
            cov[:, : r1 - self.py] = canvas[:, self.py : r1, x_lo - col0 : x_hi - col0]
        return cov, x_lo, x_hi

    def profile(self, d0: int, d1: int) -> ConvProfile:
        """Synapses, input axons, synapse bits and per-source feeding of destination range [d0, d1)
        (remembered: callers must not change the result)."""
        prof = self._profiles.get((d0, d1))
        if prof is None:
            if len(self._profiles) >= _PROFILE_CACHE:
                self._profiles.clear()
            prof = self._profiles[(d0, d1)] = self._profile(d0, d1)
        return prof

    def _profile(self, d0: int, d1: int) -> ConvProfile:
        sp = split_range(d0, d1, self.cout)
        positions = [p for p, _, _ in sp.partial]
        if sp.full_hi > sp.full_lo:
            positions += [sp.full_lo, sp.full_hi - 1]
        xa, xb = min(positions) // self.hout, max(positions) // self.hout
        ncols = xb - xa + 1
        masks = np.zeros((1 + len(sp.partial), ncols * self.hout), dtype=np.int64)
        base = xa * self.hout
        masks[0, max(0, sp.full_lo - base) : max(0, sp.full_hi - base)] = 1
        for k, (p, _, _) in enumerate(sp.partial):
            masks[1 + k, p - base] = 1
        # positions run down a column first: [M, ncols, H_out] -> [M, H_out, ncols]
        cov, x_lo, x_hi = self._coverage(masks.reshape(-1, ncols, self.hout).transpose(0, 2, 1), xa)
        gids = np.arange(self.groups)
        if sp.partial and self.groups > 1:
            # channels of each partial position that fall in each group; groups with equal counts share a map
            counts = np.stack(
                [_overlap(gids * self.og, (gids + 1) * self.og, lo, hi) for _, lo, hi in sp.partial], axis=1
            )
            keys, inverse = np.unique(counts, axis=0, return_inverse=True)
            inverse = np.asarray(inverse).reshape(-1)
        elif sp.partial:
            keys = np.array([[hi - lo for _, lo, hi in sp.partial]], dtype=np.int64)
            inverse = np.zeros(1, dtype=np.int64)
        else:
            keys, inverse = np.zeros((1, 0), dtype=np.int64), np.zeros(self.groups, dtype=np.int64)
        synapses = axons = bits = 0
        feeding = np.zeros(cov.shape[1:], dtype=np.int64)
        combos = []
        for k, key in enumerate(keys):
            groups_k = gids[inverse == k]
            n = self.og * cov[0]
            for j, a in enumerate(key):
                if a:
                    n = n + int(a) * cov[1 + j]
            feeds = n > 0
            mult = len(groups_k) * self.cg
            synapses += mult * int(n.sum())
            axons += mult * int(np.count_nonzero(feeds))
            bits += mult * int(packed_bits(n[feeds], self.bits_per_synapse, self.enc).sum())
            feeding += mult * feeds
            in_combo = np.zeros(self.groups, dtype=np.int64)
            in_combo[groups_k] = 1
            combos.append((feeds, np.concatenate([[0], np.cumsum(np.repeat(in_combo, self.cg))])))
        flat = feeding.T.reshape(-1)  # position order: (x - x_lo) * H_in + y
        prefix = np.concatenate([[0], np.cumsum(flat)])
        return ConvProfile(
            x_lo=x_lo, x_hi=x_hi, synapses=synapses, axons=axons, bits=bits, prefix=prefix, combos=combos
        )

    def sources_feeding(self, prof: ConvProfile, s0: int, s1: int) -> int:
        """How many source neurons of range [s0, s1) (source (x, y, c) order) feed the profiled range."""
        sp = split_range(s0, s1, self.cin)
        lo_pos, hi_pos = prof.x_lo * self.hin, prof.x_hi * self.hin
        total = 0
        a, b = max(sp.full_lo, lo_pos), min(sp.full_hi, hi_pos)
        if b > a:
            total += int(prof.prefix[b - lo_pos] - prof.prefix[a - lo_pos])
        for p, c_lo, c_hi in sp.partial:
            if not lo_pos <= p < hi_pos:
                continue
            x, y = divmod(p, self.hin)
            for feeds, channels in prof.combos:
                if feeds[y, x - prof.x_lo]:
                    total += int(channels[c_hi] - channels[c_lo])
        return total

    def source_index_range(self, prof: ConvProfile) -> tuple[int, int]:
        """Source neuron indices [lo, hi) that can feed the profiled range."""
        return prof.x_lo * self.hin * self.cin, prof.x_hi * self.hin * self.cin

    def full_profile(self) -> ConvProfile:
        return self.profile(0, self.cout * self.hout * self.wout)
