"""Partition neuron populations onto Loihi cores and cores onto chips, within every per-core limit.

Input: a :class:`Network` of :class:`Population` (name, shape, configuration keys, calibrated spike
rate) and :class:`Edge` (dense, or conv with its geometry; weight bits).  Output: a :class:`Mapping`
(every neuron range -> chip/core/tile, per-core use of every :class:`~.hardware.Resource`, the lower
bound, the spike traffic), serialisable with ``to_json()``.

Neuron order.  Ranges are contiguous in each population's own index order: ``(N,)`` populations in
order; ``(C, H, W)`` populations in lava's order, the C-order flattening of (x, y, c) (= (W, H, C)), which
is how netx lays out a conv layer's LIF process.  A range is thus a band of columns with all channels,
which keeps a conv layer's fan-in and fan-out local.

Resource model (per core, checked for every core):
  - neurons: compartments on the core;
  - synapse bits: for every (incoming edge, source neuron) with >= 1 synapse on the core, its synapse
    list packed as nengo-loihi does (groups of <= ``synapses_per_group`` synapses with a
    ``header_bits`` header, each group rounded up to ``word_bits``); a synapse costs its weight bits
    (rounded up to an allowed width) + delay bits, + ``index_bits`` for sparse (conv) lists; dense lists
    address a contiguous compartment range and carry no index;
  - input axons: (incoming edge, source neuron) pairs with >= 1 synapse on the core;
  - output axons: (neuron on the core, destination range) pairs; a population keeps at most one range
    per core, so this is Loihi's (source neuron, destination core) count;
  - configuration entries: distinct compartment configs, threshold configs and synapse formats.
Input axons and synapse lists are counted per (edge, range): when one core holds ranges of two
populations fed by the same source, the chip could share one list, so the count is an upper bound
(safe: a mapping that fits here fits on the chip).  Conv synapses are stored per axon, without Loihi's
population-axon kernel sharing, which is also an upper bound.

Algorithm.  Populations are placed in reverse topological order (consumers first, so that a producer's
output-axon demand is known exactly), each split into contiguous ranges: a range goes on the first core,
from the population's scan pointer on, that takes a useful piece, as large as fits (exact demand, found
by galloping and bisection), else on a new core.  Because the pointer only moves forward, a producer
walks along its consumers' cores and shares them in neuron order.  Sharing needs room, so a strategy
decides how much of a core each population may take: (a) leave, on every core, the average share the
populations still to place need (a fluid estimate of their neurons, synapse bits and input axons);
(b) give a consumer and its producer the same cores in their fluid proportion ("zip"); (c) let a
core's first population fill a fixed fraction.  Strategies run in turn until one is within 10 % of
the lower bound; the mapping with the fewest cores is kept.  Every mapping is re-counted from scratch
before it is accepted.  Cores are then ordered by reverse Cuthill-McKee on the traffic graph (networkx),
cut into chips, laid on each chip's tile mesh along a snake path, and improved by pairwise swaps that
lower spike traffic x hops (X-Y routing; a chip-to-chip link counts ``chip_hop_weight`` tile hops;
chips sit on a square grid).

The lower bound is partition independent and valid on the chip: per resource, the total demand over
the capacity, where a synapse costs at least the cheapest packed size per synapse, every source of an
edge needs an input axon somewhere, and a source of a dense edge needs an output axon to each of the
cores its consumer must at least occupy.
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from snnc.errors import TargetError, UnsupportedError, UserError

from .bitacc import LayerKind, QLayer, conv_output_hw
from .fixed_point import netx_weight_format
from .hardware import ChipSpec, CostModel, Resource, SynapseEncoding

RESOURCES: tuple[Resource, ...] = tuple(Resource)
_NUMERIC = (Resource.NEURONS, Resource.SYNAPSE_BITS, Resource.INPUT_AXONS, Resource.OUTPUT_AXONS)
_N, _SYN, _IN, _OUT = range(4)
_MIN_PIECE = 16  # smallest range worth putting on a partly filled core (slivers cost axons and traffic)
_SCAN = 16  # cores evaluated per range before a new one is opened
# placement strategies tried in turn: (zip producer into its consumer's cores?, fraction of a core its
# first population may fill; None: every range leaves room for the populations still to place)
_STRATEGIES = ((False, None), (True, 1.0), (False, 1.0), (False, 0.8), (False, 0.6))


class EdgeKind(enum.Enum):
    DENSE = "dense"  # every source neuron to every destination neuron
    CONV = "conv"  # 2-D convolution (pooling and one-to-one are convs with groups = channels)


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution from ``in_shape`` (C, H, W) to ``out_shape`` (C, H, W); pairs are (H, W)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True)
class Population:
    """Neurons that share a shape and a layer.  ``rate``: calibrated spikes per neuron per timestep.
    ``on_chip`` False: spikes come from the host (an input layer) and take no compartments."""

    name: str
    shape: tuple[int, ...]
    on_chip: bool = True
    compartment_config: Hashable = None  # key of its (du, dv, refractory) entry; None: one of its own
    threshold_config: Hashable = None  # key of its vth entry; None: one of its own
    rate: float = 0.0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Edge:
    """Synapses from population ``src`` to ``dst``; ``weight_bits`` per synapse (before rounding up to a
    width the chip allows)."""

    src: str
    dst: str
    kind: EdgeKind
    weight_bits: int = 8
    geometry: ConvGeometry | None = None


@dataclass(frozen=True)
class Network:
    populations: tuple[Population, ...]
    edges: tuple[Edge, ...]

    def population(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise UserError(f"no population named '{name}'")

    def verify(self) -> None:
        """Raise UserError on duplicate names, dangling edges or shapes that do not match."""
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names):
            raise UserError(f"population names repeat: {sorted(n for n in names if names.count(n) > 1)}")
        pops = {p.name: p for p in self.populations}
        for e in self.edges:
            for end in (e.src, e.dst):
                if end not in pops:
                    raise UserError(f"edge {e.src} -> {e.dst}: no population '{end}'")
            if not pops[e.dst].on_chip:
                raise UserError(f"edge {e.src} -> {e.dst}: an off-chip population cannot receive synapses")
            if e.kind is EdgeKind.CONV:
                g = e.geometry
                if g is None:
                    raise UserError(f"edge {e.src} -> {e.dst}: a conv edge needs its geometry")
                if tuple(g.in_shape) != tuple(pops[e.src].shape) or tuple(g.out_shape) != tuple(
                    pops[e.dst].shape
                ):
                    raise UserError(
                        f"edge {e.src} -> {e.dst}: geometry {g.in_shape} -> {g.out_shape} does not match "
                        f"populations {pops[e.src].shape} -> {pops[e.dst].shape}"
                    )
                ho, wo = conv_output_hw(g.in_shape[1:], g.kernel, g.stride, g.padding, g.dilation)
                if (
                    (ho, wo) != tuple(g.out_shape[1:])
                    or g.in_shape[0] % g.groups
                    or g.out_shape[0] % g.groups
                ):
                    raise UserError(f"edge {e.src} -> {e.dst}: inconsistent conv geometry {g}")


# ----------------------------------------------------------------------------------------------------
# Synaptic memory packing


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


def _round_weight_bits(bits: int, enc: SynapseEncoding, where: str) -> int:
    ok = [b for b in enc.allowed_weight_bits if b >= bits]
    if not ok:
        raise TargetError(
            f"{where}: {bits}-bit weights exceed the widest synapse ({max(enc.allowed_weight_bits)} bits)"
        )
    return min(ok)


# ----------------------------------------------------------------------------------------------------
# Ranges in (x, y, c) order


@dataclass(frozen=True)
class _Split:
    """A range of a (C, H, W) population in (x, y, c) order: whole positions [full_lo, full_hi) plus up to
    two positions with only a channel interval."""

    full_lo: int
    full_hi: int
    partial: tuple[tuple[int, int, int], ...]  # (position, c_lo, c_hi)


def _split(a: int, b: int, channels: int) -> _Split:
    p0, c0 = divmod(a, channels)
    p1, c1 = divmod(b - 1, channels)
    if p0 == p1:
        if c0 == 0 and c1 == channels - 1:
            return _Split(p0, p0 + 1, ())
        return _Split(p0, p0, ((p0, c0, c1 + 1),))
    partial = []
    lo, hi = p0, p1 + 1
    if c0 > 0:
        partial.append((p0, c0, channels))
        lo = p0 + 1
    if c1 < channels - 1:
        partial.append((p1, 0, c1 + 1))
        hi = p1
    return _Split(lo, hi, tuple(partial))


def _overlap(lo: np.ndarray | int, hi: np.ndarray | int, a: int, b: int) -> np.ndarray | int:
    return np.maximum(0, np.minimum(hi, b) - np.maximum(lo, a))


@dataclass
class _ConvProfile:
    """What one destination range of a conv edge needs from its source (see _ConvEdge.profile)."""

    x_lo: int  # source columns [x_lo, x_hi) that feed it
    x_hi: int
    synapses: int
    axons: int
    bits: int
    prefix: np.ndarray  # prefix sums, over source positions (x - x_lo) * H + y, of feeding channels
    combos: list[tuple[np.ndarray, np.ndarray]]  # (group ids, feeds[H, x_hi - x_lo] bool)


class _ConvEdge:
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

    def profile(self, d0: int, d1: int) -> _ConvProfile:
        """Synapses, input axons, synapse bits and per-source feeding of destination range [d0, d1)."""
        sp = _split(d0, d1, self.cout)
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
            combos.append((groups_k, feeds))
        flat = feeding.T.reshape(-1)  # position order: (x - x_lo) * H_in + y
        prefix = np.concatenate([[0], np.cumsum(flat)])
        return _ConvProfile(x_lo, x_hi, synapses, axons, bits, prefix, combos)

    def sources_feeding(self, prof: _ConvProfile, s0: int, s1: int) -> int:
        """How many source neurons of range [s0, s1) (source (x, y, c) order) feed the profiled range."""
        sp = _split(s0, s1, self.cin)
        lo_pos, hi_pos = prof.x_lo * self.hin, prof.x_hi * self.hin
        total = 0
        a, b = max(sp.full_lo, lo_pos), min(sp.full_hi, hi_pos)
        if b > a:
            total += int(prof.prefix[b - lo_pos] - prof.prefix[a - lo_pos])
        for p, c_lo, c_hi in sp.partial:
            if not lo_pos <= p < hi_pos:
                continue
            x, y = divmod(p, self.hin)
            for groups_k, feeds in prof.combos:
                if feeds[y, x - prof.x_lo]:
                    total += int(np.sum(_overlap(groups_k * self.cg, (groups_k + 1) * self.cg, c_lo, c_hi)))
        return total

    def source_index_range(self, prof: _ConvProfile) -> tuple[int, int]:
        """Source neuron indices [lo, hi) that can feed the profiled range."""
        return prof.x_lo * self.hin * self.cin, prof.x_hi * self.hin * self.cin

    def full_profile(self) -> _ConvProfile:
        return self.profile(0, self.cout * self.hout * self.wout)


# ----------------------------------------------------------------------------------------------------
# The mapping result


@dataclass
class Piece:
    """Neurons [start, stop) of ``population`` (in its neuron order) on one core."""

    population: str
    start: int
    stop: int


@dataclass
class MappedCore:
    index: int  # global core id = chip * cores_per_chip + core
    chip: int
    core: int  # index within the chip
    tile: tuple[int, int]
    pieces: list[Piece]
    usage: dict[Resource, int]
    synops: float = 0.0  # synaptic events per timestep (calibrated rates)
    spikes: float = 0.0  # spikes per timestep of its neurons
    messages: float = 0.0  # spike messages it sends per timestep (spikes x destination cores)


class DoesNotFitError(TargetError):
    """The mapped network needs more chips than the board has."""

    def __init__(self, message: str, cores_needed: int, chips_needed: int) -> None:
        super().__init__(message)
        self.cores_needed = cores_needed
        self.chips_needed = chips_needed


@dataclass
class Mapping:
    chip: ChipSpec
    cores: list[MappedCore]
    lower_bound: int
    lower_bound_by_resource: dict[Resource, int]
    traffic: dict[str, float]
    seconds: float
    populations: dict[str, list[tuple[int, int, int]]] = field(
        default_factory=dict
    )  # name -> (start, stop, core)

    @property
    def cores_used(self) -> int:
        return len(self.cores)

    @property
    def chips_used(self) -> int:
        return 1 + max((c.chip for c in self.cores), default=-1)

    def capacity(self, resource: Resource) -> int:
        return self.chip.core.capacity(resource)

    def utilisation(self) -> np.ndarray:
        """[cores, resources] fraction of each core's capacity in use (RESOURCES order)."""
        caps = np.array([self.capacity(r) for r in RESOURCES], dtype=np.float64)
        return (
            np.array([[c.usage[r] for r in RESOURCES] for c in self.cores], dtype=np.float64).reshape(
                -1, len(RESOURCES)
            )
            / caps
        )

    def violations(self) -> list[str]:
        """Every (core, resource) over capacity; empty for a valid mapping."""
        out = []
        for c in self.cores:
            for r in RESOURCES:
                if c.usage[r] > self.capacity(r):
                    out.append(f"core {c.index}: {r.value} {c.usage[r]} > {self.capacity(r)}")
        return out

    def fits(self, board: str) -> bool:
        return self.chips_used <= self.chip.board_chips(board)

    def require_fits(self, board: str) -> None:
        """Raise :class:`DoesNotFitError` (a TargetError) saying what the model needs when it does not fit."""
        chips = self.chip.board_chips(board)
        if self.chips_used > chips:
            raise DoesNotFitError(
                f"the model needs {self.cores_used} cores on {self.chips_used} {self.chip.name} chips "
                f"({self.chip.cores_per_chip} cores each); board '{board}' has {chips} chip"
                f"{'s' if chips != 1 else ''} ({chips * self.chip.cores_per_chip} cores)",
                self.cores_used,
                self.chips_used,
            )

    def to_json(self) -> dict:
        caps = {r.value: self.capacity(r) for r in RESOURCES}
        util = self.utilisation()
        return {
            "chip": self.chip.name,
            "cores_per_chip": self.chip.cores_per_chip,
            "cores_used": self.cores_used,
            "chips_used": self.chips_used,
            "lower_bound": self.lower_bound,
            "lower_bound_by_resource": {r.value: v for r, v in self.lower_bound_by_resource.items()},
            "cores_over_lower_bound": self.cores_used / max(self.lower_bound, 1),
            "capacity": caps,
            "neuron_order": "(N,) populations in order; (C, H, W) populations in lava (x, y, c) C-order",
            "mapping_seconds": self.seconds,
            "traffic": dict(self.traffic),
            "populations": {
                name: [{"start": a, "stop": b, "core": c} for a, b, c in ranges]
                for name, ranges in self.populations.items()
            },
            "cores": [
                {
                    "core": c.index,
                    "chip": c.chip,
                    "core_in_chip": c.core,
                    "tile": list(c.tile),
                    "pieces": [
                        {"population": p.population, "start": p.start, "stop": p.stop} for p in c.pieces
                    ],
                    "usage": {r.value: int(c.usage[r]) for r in RESOURCES},
                    "utilisation": {r.value: round(float(util[i, j]), 6) for j, r in enumerate(RESOURCES)},
                    "synops_per_step": c.synops,
                    "spikes_per_step": c.spikes,
                }
                for i, c in enumerate(self.cores)
            ],
        }


# ----------------------------------------------------------------------------------------------------
# The mapper


@dataclass
class _Core:
    pieces: list[Piece] = field(default_factory=list)
    numeric: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    cx: set = field(default_factory=set)
    vth: set = field(default_factory=set)
    fmt: set = field(default_factory=set)
    pops: set = field(default_factory=set)
    refused: set = field(default_factory=set)


@dataclass
class _Fill:
    """Progress of one population's placement: next neuron, ranges so far and their cores."""

    pop: str
    a: int = 0
    guess: int = 0
    ptr: int = 0
    placed: list[Piece] = field(default_factory=list)
    cores: list[_Core] = field(default_factory=list)


@dataclass
class _Windows:
    """Cached view of a conv link's destination pieces for output-axon counting."""

    pieces: list[Piece]
    profiles: list[_ConvProfile]
    los: list[int]  # source neuron windows [lo, hi) of each piece
    his: list[int]
    lo_pos: np.ndarray  # source position window of each piece
    hi_pos: np.ndarray
    offset: np.ndarray  # where each piece's prefix sums start in ``prefix``
    prefix: np.ndarray


class _Link:
    """One edge as the mapper uses it (identity-hashed; the frozen Edge hashes slowly)."""

    def __init__(self, k: int, edge: Edge, src: Population, enc: SynapseEncoding) -> None:
        self.k = k
        self.edge = edge
        self.src = src
        self.dense = edge.kind is EdgeKind.DENSE
        wb = _round_weight_bits(edge.weight_bits, enc, f"edge {edge.src} -> {edge.dst}")
        self.bits = wb + enc.delay_bits + (0 if self.dense else enc.index_bits)
        self.fmt = ("dense" if self.dense else "sparse", wb)
        self.conv = None if edge.geometry is None else _ConvEdge(edge.geometry, self.bits, enc)
        self.dense_bits: dict[int, int] = {}  # range length -> packed bits of one dense synapse list

    @property
    def cv(self) -> _ConvEdge:
        """The conv accounting of a conv link (Network.verify guarantees its geometry)."""
        if self.conv is None:
            raise TypeError(f"edge {self.edge.src} -> {self.edge.dst} is not a conv edge")
        return self.conv


class _Mapper:
    def __init__(self, net: Network, chip: ChipSpec) -> None:
        net.verify()
        self.net = net
        self.chip = chip
        self.enc = chip.synapse
        self.pops = {p.name: p for p in net.populations}
        self.caps = np.array([chip.core.capacity(r) for r in _NUMERIC], dtype=np.int64)
        self.links = [_Link(k, e, self.pops[e.src], self.enc) for k, e in enumerate(net.edges)]
        self.in_links: dict[str, list[_Link]] = {p.name: [] for p in net.populations}
        self.out_links: dict[str, list[_Link]] = {p.name: [] for p in net.populations}
        for ln in self.links:
            self.in_links[ln.edge.dst].append(ln)
            self.out_links[ln.edge.src].append(ln)
        self.placed: dict[str, list[Piece]] = {}  # destination ranges placed so far
        self.profiles: dict[tuple[int, int], _ConvProfile] = {}  # (link, piece start) -> profile
        self.windows: dict[int, _Windows] = {}  # link -> source windows of its placed pieces
        # the strategy (see _STRATEGIES): zip pairs; ceiling for a core's opener; adaptive ceiling
        self.zip_pairs, self.open_caps, self.reserve = True, self.caps, False
        self.adaptive, self.pop_caps = False, self.caps
        self.per_neuron: dict[str, np.ndarray] = {}
        self.total_need = np.zeros(3)  # fluid demand of every on-chip population
        self.estimate_pieces: dict[str, int] = {}

    # -- keys ------------------------------------------------------------------------------------
    def _cx(self, p: Population) -> Hashable:
        return ("cx", p.name) if p.compartment_config is None else p.compartment_config

    def _vth(self, p: Population) -> Hashable:
        return ("vth", p.name) if p.threshold_config is None else p.threshold_config

    # -- demand of one range ---------------------------------------------------------------------
    def _in_demand(self, pop: str, a: int, b: int, keep: bool = False) -> tuple[int, int, float]:
        """(synapse bits, input axons, synops) of range [a, b) of ``pop``; ``keep`` stores conv profiles."""
        bits = axons = 0
        synops = 0.0
        for ln in self.in_links[pop]:
            if ln.dense:
                n_src = ln.src.size
                per_list = ln.dense_bits.get(b - a)
                if per_list is None:
                    per_list = ln.dense_bits[b - a] = int(
                        packed_bits(np.array([b - a]), ln.bits, self.enc)[0]
                    )
                axons += n_src
                bits += n_src * per_list
                synops += ln.src.rate * n_src * (b - a)
            else:
                prof = ln.cv.profile(a, b)
                axons += prof.axons
                bits += prof.bits
                synops += ln.src.rate * prof.synapses
                if keep:
                    self.profiles[(ln.k, a)] = prof
        return bits, axons, synops

    def _feeds(self, ln: _Link, a: int, b: int, dst: Piece) -> int:
        """Source neurons of [a, b) (in the link's source) that feed destination piece ``dst``."""
        if ln.dense:
            return b - a
        prof = self.profiles[(ln.k, dst.start)]
        lo, hi = ln.cv.source_index_range(prof)
        if hi <= a or lo >= b:
            return 0
        return ln.cv.sources_feeding(prof, a, b)

    def _window(self, ln: _Link) -> _Windows:
        """Source windows of a conv link's placed destination pieces, with their prefix sums joined."""
        w = self.windows.get(ln.k)
        if w is None:
            pieces = self.placed[ln.edge.dst]
            profs = [self.profiles[(ln.k, d.start)] for d in pieces]
            bounds = [ln.cv.source_index_range(pr) for pr in profs]
            sizes = np.array([len(pr.prefix) for pr in profs], dtype=np.int64)
            w = self.windows[ln.k] = _Windows(
                pieces=pieces,
                profiles=profs,
                los=[lo for lo, _ in bounds],
                his=[hi for _, hi in bounds],
                lo_pos=np.array([pr.x_lo * ln.cv.hin for pr in profs], dtype=np.int64),
                hi_pos=np.array([pr.x_hi * ln.cv.hin for pr in profs], dtype=np.int64),
                offset=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
                prefix=np.concatenate([pr.prefix for pr in profs]) if profs else np.zeros(0, np.int64),
            )
        return w

    def _conv_out(self, ln: _Link, a: int, b: int) -> int:
        """(source neuron, destination piece) pairs of range [a, b) over a conv link, vectorised over
        the destination pieces whose window meets the range (windows move monotonically: bisection)."""
        w = self._window(ln)
        j0, j1 = bisect.bisect_right(w.his, a), bisect.bisect_left(w.los, b)
        if j1 <= j0:
            return 0
        sp = _split(a, b, ln.cv.cin)
        lo, hi, off = w.lo_pos[j0:j1], w.hi_pos[j0:j1], w.offset[j0:j1]
        fa = np.clip(sp.full_lo, lo, hi)
        fb = np.maximum(fa, np.clip(sp.full_hi, lo, hi))
        total = int((w.prefix[off + fb - lo] - w.prefix[off + fa - lo]).sum())
        for p, c_lo, c_hi in sp.partial:
            inside = np.flatnonzero((lo <= p) & (p < hi))
            if ln.cv.groups == 1:  # every channel feeds, or none: the prefix step says which
                at = off[inside] + p - lo[inside]
                total += (c_hi - c_lo) * int(np.count_nonzero(w.prefix[at + 1] > w.prefix[at]))
            else:
                for j in inside:
                    total += ln.cv.sources_feeding(
                        w.profiles[j0 + j], p * ln.cv.cin + c_lo, p * ln.cv.cin + c_hi
                    )
        return total

    def _out_demand(self, pop: str, a: int, b: int) -> int:
        """Output axons of range [a, b): (source neuron, destination range) pairs."""
        total = 0
        for ln in self.out_links[pop]:
            dst = ln.edge.dst
            if dst not in self.placed:  # a cycle: the consumer is not placed yet; estimate its split
                k = self.estimate_pieces.get(dst, max(1, -(-self.pops[dst].size // int(self.caps[_N]))))
                total += (b - a) * (k if ln.dense else 1)
            elif ln.dense:
                total += (b - a) * len(self.placed[dst])
            else:
                total += self._conv_out(ln, a, b)
        return total

    def _demand(self, pop: str, a: int, b: int, keep: bool = False) -> tuple[np.ndarray, float, float]:
        """(numeric demand [neurons, bits, in axons, out axons], synops, messages) of range [a, b)."""
        bits, axons, synops = self._in_demand(pop, a, b, keep)
        out = self._out_demand(pop, a, b)
        return np.array([b - a, bits, axons, out], dtype=np.int64), synops, self.pops[pop].rate * out

    def _room(self, core: _Core) -> np.ndarray:
        """What the population being placed may still use of ``core`` under the current strategy."""
        if self.adaptive and self.reserve:
            ceiling = self.pop_caps
        else:
            ceiling = self.open_caps if not core.pieces and self.reserve else self.caps
        return ceiling - core.numeric

    def _fits(self, core: _Core, pop: str, a: int, b: int) -> bool:
        """Whether range [a, b) fits next to what ``core`` holds; cheap resources are checked first.
        The population that opens a core may use only ``open_caps`` of it (a reservation for the
        populations still to place)."""
        room = self._room(core)
        if b - a > room[_N]:
            return False
        bits, axons, _ = self._in_demand(pop, a, b)
        if bits > room[_SYN] or axons > room[_IN]:
            return False
        return self._out_demand(pop, a, b) <= room[_OUT]

    # -- configuration entries -------------------------------------------------------------------
    def _config_fits(self, core: _Core, p: Population) -> bool:
        c = self.chip.core
        fmts = core.fmt | {ln.fmt for ln in self.in_links[p.name]}
        return (
            len(core.cx | {self._cx(p)}) <= c.compartment_configs
            and len(core.vth | {self._vth(p)}) <= c.threshold_configs
            and len(fmts) <= c.synapse_formats
        )

    def _estimate(self, core: _Core, pop: str) -> int:
        """Neurons of ``pop`` the core's room should hold, from the population's average demand."""
        room = self.caps[:3] - core.numeric[:3]
        d = self._per_neuron_cached(pop)
        with np.errstate(divide="ignore"):
            return int(np.floor(np.min(np.where(d > 0, room / d, np.inf))))

    def _largest(self, core: _Core, pop: str, a: int, limit: int, guess: int) -> int:
        """Largest n <= limit with range [a, a + n) fitting ``core`` (0 if none); demand grows with n."""
        if limit <= 0:
            return 0
        estimate = self._estimate(core, pop)
        if guess <= 0:
            guess = estimate
        # the estimate says whether trying the whole limit first is likely to pay off
        if estimate >= 0.9 * limit and self._fits(core, pop, a, a + limit):
            return limit
        lo, hi = 0, limit + 1  # invariant: fits(lo) (vacuously for 0), not fits(hi)
        guess = min(max(guess, 1), limit)
        room = self._room(core)
        for _ in range(2):
            # demand is close to linear in n: rescale the guess by the tightest resource's headroom
            demand, _, _ = self._demand(pop, a, a + guess)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.min(np.where(demand > 0, room / demand, np.inf)))
            if ratio >= 1:
                lo = guess
            else:
                hi = min(hi, guess)
            better = min(max(int(guess * ratio), 1), limit) if np.isfinite(ratio) else limit
            if better == guess or not lo < better < hi:
                break
            guess = better
        if lo < guess < hi:
            if self._fits(core, pop, a, a + guess):
                lo = guess
            else:
                hi = guess
        # gallop away from the guess (the answer is usually within a few neurons of it), then bisect
        step = 1
        if lo == guess:
            while lo + step < hi:
                if not self._fits(core, pop, a, a + lo + step):
                    hi = lo + step
                    break
                lo, step = lo + step, step * 2
        elif hi == guess:
            while hi - step > lo:
                if self._fits(core, pop, a, a + hi - step):
                    lo = hi - step
                    break
                hi, step = hi - step, step * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._fits(core, pop, a, a + mid):
                lo = mid
            else:
                hi = mid
        return lo

    def _add(self, core: _Core, pop: str, a: int, b: int) -> None:
        p = self.pops[pop]
        numeric, _, _ = self._demand(pop, a, b, keep=True)
        core.numeric = core.numeric + numeric
        core.pieces.append(Piece(pop, a, b))
        core.cx.add(self._cx(p))
        core.vth.add(self._vth(p))
        core.fmt |= {ln.fmt for ln in self.in_links[pop]}
        core.pops.add(pop)

    def _too_big(self, pop: str) -> TargetError:
        """Explain why even one neuron of ``pop`` does not fit an empty core."""
        d, _, _ = self._demand(pop, 0, 1)
        over = [
            f"{r.value} {int(d[i])} > {int(self.caps[i])}"
            for i, r in enumerate(_NUMERIC)
            if d[i] > self.caps[i]
        ]
        return TargetError(
            f"population '{pop}': a single neuron does not fit a {self.chip.name} core ({'; '.join(over)}); "
            "split its fan-in or fan-out (e.g. a smaller dense layer) or target a chip with larger cores"
        )

    def _per_neuron(self, pop: str) -> np.ndarray:
        """Average (neurons, synapse bits, input axons) per neuron of a mid-population probe range."""
        n = self.pops[pop].size
        width = min(n, 256)
        a = (n - width) // 2
        bits, axons, _ = self._in_demand(pop, a, a + width)
        return np.array([width, bits, axons], dtype=np.float64) / width

    def _mixing_cap(self, pop: str, placed: set[str]) -> tuple[int, str | None]:
        """Largest range per core for ``pop`` and the producer that will share its cores.

        When ``pop`` and its largest unplaced producer bind different resources (say a conv layer fed
        by few channels is neuron-bound, its consumer synapse-bound), sharing cores in the fluid
        proportion N / K* (K* = cores the two need together) beats giving each its own cores; the
        consumer's ranges are then capped so that the producer, placed next, fills what is left.
        """
        producers = [ln.src.name for ln in self.in_links[pop] if ln.src.on_chip and ln.src.name not in placed]
        producers = [q for q in producers if q != pop]
        none = int(self.caps[_N]), None
        if not producers:
            return none
        partner = max(producers, key=lambda q: self.pops[q].size)
        caps = self.caps[:3].astype(np.float64)
        need_q = self.pops[pop].size * self._per_neuron(pop) / caps
        need_p = self.pops[partner].size * self._per_neuron(partner) / caps
        together, apart = (need_q + need_p).max(), need_q.max() + need_p.max()
        if together > 0.95 * apart or together < 1:
            return none
        # 4 % headroom: the per-neuron demands are estimates, and the producer must fit beside it
        return max(_MIN_PIECE, math.floor(0.96 * self.pops[pop].size / together)), partner

    def _put(self, fill: _Fill, core: _Core, b: int) -> None:
        self._add(core, fill.pop, fill.a, b)
        fill.cores.append(core)
        fill.placed.append(Piece(fill.pop, fill.a, b))
        fill.a = b

    def _new_core(self, fill: _Fill, limit: int) -> _Core:
        """Open a core and put on it the largest range (<= limit) starting at fill.a."""
        core = _Core()
        n = self._largest(core, fill.pop, fill.a, min(limit, int(self.caps[_N])), fill.guess)
        if n == 0 and self.reserve:  # not even one neuron within the reservation: use the whole core
            self.reserve = False
            n = self._largest(core, fill.pop, fill.a, min(limit, int(self.caps[_N])), 0)
            self.reserve = True
        if n == 0:
            raise self._too_big(fill.pop)
        fill.guess = n
        self.cores.append(core)
        self._put(fill, core, fill.a + n)
        return core

    def _fill_zipped(self, fill: _Fill, core: _Core, target: int) -> None:
        """Put [fill.a, target) on ``core`` (a consumer core reserved for this producer) as far as it
        fits, and the rest on new cores right away, so producer and consumer stay aligned."""
        p = self.pops[fill.pop]
        if target > fill.a and fill.pop not in core.pops and self._config_fits(core, p):
            limit = min(target - fill.a, int(self.caps[_N] - core.numeric[_N]))
            n = self._largest(core, fill.pop, fill.a, limit, 0)
            if n:
                self._put(fill, core, fill.a + n)
        while fill.a < target:
            self._new_core(fill, target - fill.a)

    def _fill_next(self, fill: _Fill, cap: int) -> None:
        """Place the next range on the first core, from the population's scan pointer on, that takes a
        useful piece (at most ``_SCAN`` candidates are evaluated), else on a new core.  The pointer only
        moves forward, so a producer walks along its consumers' cores in neuron order."""
        p = self.pops[fill.pop]
        remaining = p.size - fill.a
        smallest = min(remaining, _MIN_PIECE)
        i, tried = fill.ptr, 0
        while i < len(self.cores) and tried < _SCAN:
            core = self.cores[i]
            skip = (
                fill.pop in core.pops
                or fill.pop in core.refused
                or core.numeric[_N] >= self.caps[_N]
                or not self._config_fits(core, p)
            )
            if not skip and self._estimate(core, fill.pop) < smallest // 2:
                core.refused.add(fill.pop)  # far too full, judging by the average demand
                skip = True
            if not skip:
                tried += 1
                if self._fits(core, fill.pop, fill.a, fill.a + smallest):
                    limit = min(remaining, int(self.caps[_N] - core.numeric[_N]), cap)
                    self._put(fill, core, fill.a + self._largest(core, fill.pop, fill.a, limit, smallest))
                    fill.ptr = i + 1
                    return
                core.refused.add(fill.pop)  # it will not take this population further on either
            if i == fill.ptr:
                fill.ptr += 1  # never useful to this population again
            i += 1
        self._new_core(fill, min(remaining, cap))

    def _adaptive_caps(self, remaining: list[str]) -> np.ndarray:
        """Ceiling for the population being placed: every core keeps free, of each resource, the average
        share per core that the populations still to place need (fluid estimate, at most 90 %)."""
        need = np.zeros(3)
        for q in remaining:
            need += self.pops[q].size * self._per_neuron_cached(q)
        cores = max(1.0, float((self.total_need / self.caps[:3]).max()))
        keep = np.minimum(0.9, need / (cores * self.caps[:3]))
        ceiling = self.caps.copy()
        ceiling[:3] = np.floor(self.caps[:3] * (1 - keep)).astype(np.int64)
        return ceiling

    def _per_neuron_cached(self, pop: str) -> np.ndarray:
        if pop not in self.per_neuron:
            self.per_neuron[pop] = self._per_neuron(pop)
        return self.per_neuron[pop]

    def _place(self, order: list[str]) -> list[_Core]:
        """First-fit with splitting, consumers first (so output axons are exact); a producer that
        shares its consumer's cores is zipped into them in order.  Returns cores in forward order."""
        self.cores: list[_Core] = []
        shared: dict[str, list[tuple[_Core, int]]] = {}  # producer -> consumer cores reserved for it
        done: set[str] = set()
        for k, pop in enumerate(reversed(order)):
            self.reserve = k < len(order) - 1  # the last population has nobody to reserve for
            if self.adaptive:
                self.pop_caps = self._adaptive_caps(order[: len(order) - 1 - k])
            cap, partner = self._mixing_cap(pop, done) if self.zip_pairs else (int(self.caps[_N]), None)
            fill = _Fill(pop)
            for core, target in shared.pop(pop, []):
                self._fill_zipped(fill, core, min(self.pops[pop].size, target))
            while fill.a < self.pops[pop].size:
                self._fill_next(fill, cap)
            self.placed[pop] = fill.placed
            done.add(pop)
            if partner is not None:
                # the producer's range on each of these cores ends where the consumer's range ends, scaled
                ratio = self.pops[partner].size / self.pops[pop].size
                shared[partner] = [
                    (core, round(pc.stop * ratio)) for core, pc in zip(fill.cores, fill.placed, strict=True)
                ]
        cores = self.cores
        cores.reverse()
        return cores

    # -- exact accounting of a finished placement ------------------------------------------------
    def _account(self, cores: list[_Core]) -> tuple[list[np.ndarray], list[tuple[float, float, float]]]:
        usage, flows = [], []
        for core in cores:
            total = np.zeros(4, dtype=np.int64)
            synops = spikes = messages = 0.0
            for pc in core.pieces:
                numeric, syn, msg = self._demand(pc.population, pc.start, pc.stop)
                total += numeric
                synops += syn
                messages += msg
                spikes += self.pops[pc.population].rate * (pc.stop - pc.start)
            usage.append(total)
            flows.append((synops, spikes, messages))
        return usage, flows

    def _topological(self) -> list[str]:
        g = nx.DiGraph()
        on_chip = [p.name for p in self.net.populations if p.on_chip]
        g.add_nodes_from(on_chip)
        g.add_edges_from((e.src, e.dst) for e in self.net.edges if e.src in g and e.src != e.dst)
        cond = nx.condensation(g)
        order: list[str] = []
        for scc in nx.topological_sort(cond):
            members = cond.nodes[scc]["members"]
            order.extend(n for n in on_chip if n in members)  # keep the user's order inside a cycle
        return order

    def _attempt(
        self, order: list[str]
    ) -> tuple[list[_Core], list[np.ndarray], list[tuple[float, float, float]]]:
        """One placement under the current strategy, verified exactly; retried for recurrent networks."""
        self.estimate_pieces = {}
        for _ in range(4):
            self.placed, self.profiles, self.windows = {}, {}, {}
            cores = self._place(order)
            usage, flows = self._account(cores)
            if all(np.all(u <= self.caps) for u in usage):
                return cores, usage, flows
            # only cycles make estimates; take this attempt's splits as the next estimate
            self.estimate_pieces = {k: len(v) * 2 for k, v in self.placed.items()}
        raise TargetError("could not map a recurrent network within the output-axon limit after 4 attempts")

    def run(self, lower_bound: int) -> tuple[list[_Core], list[np.ndarray], list[tuple[float, float, float]]]:
        """Try the placement strategies; keep the one with the fewest cores (stop once within 10 % of
        the lower bound)."""
        order = self._topological()
        self.total_need = sum((self.pops[q].size * self._per_neuron_cached(q) for q in order), np.zeros(3))
        kept: tuple[dict, dict, tuple] | None = None
        for zip_pairs, fill in _STRATEGIES:
            self.zip_pairs, self.adaptive = zip_pairs, fill is None
            self.open_caps = (
                self.caps if fill is None or fill >= 1 else np.floor(self.caps * fill).astype(np.int64)
            )
            result = self._attempt(order)
            if kept is None or len(result[0]) < len(kept[2][0]):
                kept = (dict(self.placed), dict(self.profiles), result)
            if len(kept[2][0]) <= 1.1 * lower_bound:
                break
        assert kept is not None  # _STRATEGIES is not empty
        self.placed, self.profiles, result = kept
        self.windows = {}
        return result

    # -- lower bound -----------------------------------------------------------------------------
    def lower_bound(self) -> dict[Resource, int]:
        """Partition-independent lower bound on the cores, per resource (valid on the chip itself)."""
        c = self.chip.core
        on = [p for p in self.net.populations if p.on_chip]
        neurons = sum(p.size for p in on)
        syn = {p.name: 0.0 for p in on}
        in_axons = 0
        feeding: dict[int, int] = {}
        for ln in self.links:
            dst = self.pops[ln.edge.dst]
            if ln.dense:
                n_syn, n_feed = ln.src.size * dst.size, ln.src.size
            else:
                prof = ln.cv.full_profile()
                n_syn, n_feed = prof.synapses, prof.axons
            syn[dst.name] += n_syn * min_bits_per_synapse(ln.bits, self.enc)
            in_axons += n_feed
            feeding[ln.k] = n_feed
        # a population spreads over at least k_min cores, and every source of a dense edge reaches each
        k_min = {
            p.name: max(math.ceil(p.size / c.neurons), math.ceil(syn[p.name] / c.synapse_bits)) for p in on
        }
        out_axons = 0
        for p in on:
            per_link = [
                feeding[ln.k] * (k_min[ln.edge.dst] if ln.dense else 1) for ln in self.out_links[p.name]
            ]
            out_axons += max(per_link, default=0)
        cx = {self._cx(p) for p in on}
        vth = {self._vth(p) for p in on}
        fmts = {ln.fmt for ln in self.links}
        return {
            Resource.NEURONS: math.ceil(neurons / c.neurons),
            Resource.SYNAPSE_BITS: math.ceil(sum(syn.values()) / c.synapse_bits),
            Resource.INPUT_AXONS: math.ceil(in_axons / c.input_axons),
            Resource.OUTPUT_AXONS: math.ceil(out_axons / c.output_axons),
            Resource.COMPARTMENT_CONFIGS: math.ceil(len(cx) / c.compartment_configs),
            Resource.THRESHOLD_CONFIGS: math.ceil(len(vth) / c.threshold_configs),
            Resource.SYNAPSE_FORMATS: math.ceil(len(fmts) / c.synapse_formats),
        }

    # -- traffic between cores -------------------------------------------------------------------
    def core_traffic(self, cores: list[_Core]) -> tuple[dict[tuple[int, int], float], float]:
        """Spikes per timestep from core i to core j (i may equal j), and spikes from the host."""
        where = {(pc.population, pc.start): i for i, core in enumerate(cores) for pc in core.pieces}
        flows: dict[tuple[int, int], float] = {}
        host = 0.0
        for ln in self.links:
            src = ln.src
            src_pieces = self.placed.get(src.name, [Piece(src.name, 0, src.size)])
            starts = [s.start for s in src_pieces]
            for d in self.placed[ln.edge.dst]:
                j = where[(ln.edge.dst, d.start)]
                if ln.dense:
                    hits = [(s, s.stop - s.start) for s in src_pieces]
                else:
                    lo, hi = ln.cv.source_index_range(self.profiles[(ln.k, d.start)])
                    first = max(0, bisect.bisect_right(starts, lo) - 1)
                    last = bisect.bisect_left(starts, hi)
                    hits = [(s, self._feeds(ln, s.start, s.stop, d)) for s in src_pieces[first:last]]
                for s, count in hits:
                    if count == 0:
                        continue
                    spikes = src.rate * count
                    if not src.on_chip:
                        host += spikes
                        continue
                    i = where[(src.name, s.start)]
                    flows[(i, j)] = flows.get((i, j), 0.0) + spikes
        return flows, host


# ----------------------------------------------------------------------------------------------------
# Placement on chips and tiles


def _snake_tiles(nx_: int, ny: int) -> list[tuple[int, int]]:
    tiles: list[tuple[int, int]] = []
    for y in range(ny):
        xs = range(nx_) if y % 2 == 0 else range(nx_ - 1, -1, -1)
        tiles.extend((x, y) for x in xs)
    return tiles


class _Placement:
    """Chip and tile of every core, and hop distances: X-Y routing between tiles of one chip; chips on a
    square grid, a chip-to-chip link counting ``chip_hop_weight`` tile hops."""

    def __init__(self, flows: dict[tuple[int, int], float], n_cores: int, chip: ChipSpec) -> None:
        t = chip.topology
        self.chip = chip
        self.weight = t.chip_hop_weight
        self.graph = nx.Graph()
        self.graph.add_nodes_from(range(n_cores))
        for (i, j), w in flows.items():
            if i != j:
                old = self.graph.get_edge_data(i, j, {"weight": 0.0})["weight"]
                self.graph.add_edge(i, j, weight=old + w)
        # Cuthill-McKee keeps communicating cores close in one sequence (it interleaves the layers of a
        # conv stack by position); the sequence is then cut into chips and laid along a snake of tiles.
        order = list(nx.utils.reverse_cuthill_mckee_ordering(self.graph))
        self.n_chips = max(1, -(-n_cores // t.cores_per_chip))
        self.grid_w = math.ceil(math.sqrt(self.n_chips))
        tiles = _snake_tiles(t.mesh_tiles_x, t.mesh_tiles_y)
        slot_tile = np.array([tiles[k // t.cores_per_tile] for k in range(t.cores_per_chip)], dtype=np.int64)
        self.chip_of = np.zeros(n_cores, dtype=np.int64)
        self.slot_of = np.zeros(n_cores, dtype=np.int64)
        for pos, i in enumerate(order):
            self.chip_of[i], self.slot_of[i] = divmod(pos, t.cores_per_chip)
        self.slot_tile = slot_tile
        self.order = order

    def tile(self, i: int) -> tuple[int, int]:
        x, y = self.slot_tile[self.slot_of[i]]
        return int(x), int(y)

    def hops(self, i: int, j: int) -> tuple[int, int, int]:
        """(east-west tile hops, north-south tile hops, chip links) from core i to core j."""
        (xi, yi), (xj, yj) = self.tile(i), self.tile(j)
        ci, cj = divmod(int(self.chip_of[i]), self.grid_w), divmod(int(self.chip_of[j]), self.grid_w)
        return abs(xi - xj), abs(yi - yj), abs(ci[0] - cj[0]) + abs(ci[1] - cj[1])

    def cost(self, i: int, j: int) -> float:
        ew, ns, links = self.hops(i, j)
        return ew + ns + self.weight * links

    def improve(self, passes: int = 2, window: int = 24) -> None:
        """Swap cores of one chip while that lowers sum(spikes x tile hops); a core is tried against the
        ``window`` cores that follow it in the placement order, which keeps a pass linear."""
        # plain Python lists: most cores have a handful of neighbours, where numpy's overhead dominates
        nbrs = {i: [(j, d["weight"]) for j, d in self.graph[i].items()] for i in self.graph}
        slot = [int(x) for x in self.slot_of]
        xy = [(int(x), int(y)) for x, y in self.slot_tile]

        def local(i: int) -> float:
            x, y = xy[slot[i]]
            total = 0.0
            for j, w in nbrs[i]:
                xj, yj = xy[slot[j]]
                total += w * (abs(x - xj) + abs(y - yj))
            return total

        by_chip: dict[int, list[int]] = {}
        for i in self.order:
            if len(nbrs[i]):
                by_chip.setdefault(int(self.chip_of[i]), []).append(i)
        per_tile = self.chip.topology.cores_per_tile
        for _ in range(passes):
            improved = False
            for members in by_chip.values():
                for ai, a in enumerate(members):
                    for b in members[ai + 1 : ai + 1 + window]:
                        if slot[a] // per_tile == slot[b] // per_tile:
                            continue
                        before = local(a) + local(b)
                        slot[a], slot[b] = slot[b], slot[a]
                        if local(a) + local(b) < before - 1e-9:
                            improved = True
                        else:
                            slot[a], slot[b] = slot[b], slot[a]
            if not improved:
                break
        self.slot_of = np.array(slot, dtype=np.int64)


def map_network(net: Network, chip: ChipSpec) -> Mapping:
    """Map ``net`` onto as few ``chip`` cores as the greedy finds, then lower traffic x hops.

    Raises TargetError when a single neuron of some population exceeds a core (fan-in too large).
    """
    t0 = time.perf_counter()
    mapper = _Mapper(net, chip)
    lb = mapper.lower_bound()
    cores, usage, flows_per_core = mapper.run(max(lb.values(), default=0))
    flows, host = mapper.core_traffic(cores)
    placement = _Placement(flows, len(cores), chip)
    placement.improve()
    traffic = {
        "spikes_per_step": 0.0,
        "intra_core_spikes_per_step": 0.0,
        "inter_core_spikes_per_step": 0.0,
        "inter_chip_spikes_per_step": 0.0,
        "host_spikes_per_step": host,
        "spike_hops_per_step": 0.0,  # spikes x (tile hops + chip_hop_weight x chip links)
        "ew_hops_per_step": 0.0,
        "ns_hops_per_step": 0.0,
        "chip_links_per_step": 0.0,
    }
    for (i, j), s in flows.items():
        traffic["spikes_per_step"] += s
        if i == j:
            traffic["intra_core_spikes_per_step"] += s
            continue
        ew, ns, links = placement.hops(i, j)
        traffic["inter_core_spikes_per_step"] += s
        traffic["inter_chip_spikes_per_step"] += s if links else 0.0
        traffic["spike_hops_per_step"] += s * placement.cost(i, j)
        traffic["ew_hops_per_step"] += s * ew
        traffic["ns_hops_per_step"] += s * ns
        traffic["chip_links_per_step"] += s * links
    mapped = []
    for i, core in enumerate(cores):
        u = usage[i]
        counts = {
            Resource.NEURONS: int(u[_N]),
            Resource.SYNAPSE_BITS: int(u[_SYN]),
            Resource.INPUT_AXONS: int(u[_IN]),
            Resource.OUTPUT_AXONS: int(u[_OUT]),
            Resource.COMPARTMENT_CONFIGS: len(core.cx),
            Resource.THRESHOLD_CONFIGS: len(core.vth),
            Resource.SYNAPSE_FORMATS: len(core.fmt),
        }
        synops, spikes, messages = flows_per_core[i]
        mapped.append(
            MappedCore(
                index=int(placement.chip_of[i] * chip.cores_per_chip + placement.slot_of[i]),
                chip=int(placement.chip_of[i]),
                core=int(placement.slot_of[i]),
                tile=placement.tile(i),
                pieces=list(core.pieces),
                usage=counts,
                synops=synops,
                spikes=spikes,
                messages=messages,
            )
        )
    ranges: dict[str, list[tuple[int, int, int]]] = {}
    for m in mapped:
        for pc in m.pieces:
            ranges.setdefault(pc.population, []).append((pc.start, pc.stop, m.index))
    for v in ranges.values():
        v.sort()
    mapped.sort(key=lambda m: m.index)
    return Mapping(
        chip=chip,
        cores=mapped,
        lower_bound=max(lb.values(), default=0),
        lower_bound_by_resource=lb,
        traffic=traffic,
        seconds=time.perf_counter() - t0,
        populations=ranges,
    )


# ----------------------------------------------------------------------------------------------------
# Cost estimate


def estimate_cost(mapping: Mapping, model: CostModel = CostModel.DAVIES2018) -> dict[str, float | str]:
    """Energy (pJ) and time (ns) per timestep from the calibrated rates, with one table of per-op costs.

    Energy = synops x synaptic_op + neurons x inactive update + spikes x (active - inactive + spike)
    + messages x (axon_out + within-tile spike) + hops x hop energy (a chip link as ``chip_hop_weight``
    east-west hops).  Time = the slowest core's synops, updates and messages + the barrier sync.
    Spiking neurons are counted as the active updates (a lower estimate of activity).
    """
    e, t = mapping.chip.energy(model), mapping.chip.time(model)
    tr = mapping.traffic
    synops = sum(c.synops for c in mapping.cores)
    neurons = sum(c.usage[Resource.NEURONS] for c in mapping.cores)
    spikes = sum(c.spikes for c in mapping.cores)
    messages = sum(c.messages for c in mapping.cores)
    hop_links = tr["chip_links_per_step"] * mapping.chip.topology.chip_hop_weight
    energy = {
        "synaptic": synops * e.synaptic_op,
        "neurons": neurons * e.neuron_update_inactive
        + spikes * (e.neuron_update_active - e.neuron_update_inactive + e.neuron_spike),
        "messages": messages * (e.axon_out + e.spike_within_tile),
        "mesh": tr["ew_hops_per_step"] * e.hop_ew + tr["ns_hops_per_step"] * e.hop_ns + hop_links * e.hop_ew,
    }
    core_ns = [
        c.synops * t.synaptic_op
        + c.usage[Resource.NEURONS] * t.neuron_update_inactive
        + c.spikes * (t.neuron_update_active - t.neuron_update_inactive + t.neuron_spike)
        + c.messages * (t.axon_out + t.spike_within_tile)
        for c in mapping.cores
    ]
    return {
        "model": model.value,
        "energy_pj_per_step": sum(energy.values()),
        **{f"energy_pj_{k}": v for k, v in energy.items()},
        "time_ns_per_step": max(core_ns, default=0.0) + t.barrier_sync,
        "synops_per_step": synops,
        "spikes_per_step": spikes,
    }


# ----------------------------------------------------------------------------------------------------
# From a quantised layer list


def network_from_layers(layers: Sequence[QLayer], rates: dict[str, float] | None = None) -> Network:
    """Populations and edges of a :class:`~.bitacc.QLayer` list.  The input layer is off-chip; flatten,
    add and concat are wiring (each population behind them gets its own edge to the consumer).
    ``rates``: calibrated spikes per neuron per timestep by layer name (default 0)."""
    rates = rates or {}
    pops: list[Population] = []
    edges: list[Edge] = []
    shapes: dict[str, tuple[int, ...]] = {}
    forwards: list[list[str]] = []  # per layer: the populations whose spikes it passes on
    for i, layer in enumerate(layers):
        srcs = layer.inputs if layer.inputs else ((i - 1,) if i > 0 else ())
        kind = layer.kind
        if kind in (LayerKind.FLATTEN, LayerKind.ADD, LayerKind.CONCAT):
            forwards.append([name for k in srcs for name in forwards[k]])
            continue
        shapes[layer.name] = tuple(layer.shape)
        forwards.append([layer.name])
        if kind is LayerKind.INPUT:
            pops.append(
                Population(layer.name, tuple(layer.shape), on_chip=False, rate=rates.get(layer.name, 0.0))
            )
            continue
        lif = layer.lif_params
        pops.append(
            Population(
                layer.name,
                tuple(layer.shape),
                compartment_config=(int(lif.du), int(lif.dv)),
                threshold_config=int(lif.vth_mant),
                rate=rates.get(layer.name, 0.0),
            )
        )
        in_shape = tuple(layers[srcs[0]].shape)
        for name in forwards[srcs[0]]:
            edges.append(_edge_for(layer, name, shapes[name], part=shapes[name] != in_shape))
    return Network(tuple(pops), tuple(edges))


def _edge_for(layer: QLayer, src: str, src_shape: tuple[int, ...], part: bool) -> Edge:
    """The edge from population ``src`` into ``layer``; ``part``: src is one part of a concat."""
    if layer.kind is LayerKind.DENSE:
        bits = netx_weight_format(np.asarray(layer.weight))[0]
        return Edge(src, layer.name, EdgeKind.DENSE, weight_bits=max(bits, 1))
    if layer.kind is LayerKind.CONV:
        kh, kw = np.asarray(layer.weight).shape[2:]
        groups = layer.groups
    else:
        (kh, kw), groups = layer.kernel, int(src_shape[0])
    if part and groups != 1:
        raise UnsupportedError(
            f"layer '{layer.name}': a grouped conv or a pool after a concat cannot be mapped (channels are split)"
        )
    c, h, w = src_shape
    co, ho, wo = layer.shape
    geom = ConvGeometry(
        (int(c), int(h), int(w)),
        (int(co), int(ho), int(wo)),
        (int(kh), int(kw)),
        layer.stride,
        layer.padding,
        layer.dilation,
        groups,
    )
    return Edge(src, layer.name, EdgeKind.CONV, weight_bits=8, geometry=geom)
