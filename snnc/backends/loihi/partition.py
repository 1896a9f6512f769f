"""Split neuron populations into core-sized ranges, within every per-core limit.

Resource model (per core, checked for every core):
  - neurons: compartments on the core;
  - synapse bits: the packed synapse lists of :mod:`.synapses`;
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
walks along its consumers' cores and shares them in neuron order.  Sharing needs room, so a
:class:`PartitionStrategy` decides how much of a core each population may take: :class:`FluidReserve`
leaves, on every core, the average share the populations still to place need (a fluid estimate of their
neurons, synapse bits and input axons); :class:`OpenerFill` lets a core's first population fill a fixed
fraction, and with ``zip_pairs`` gives a consumer and its producer the same cores in their fluid
proportion.  The strategies run in turn until one is within 10 % of the lower bound; the partition with
the fewest cores is kept.  Every partition is re-counted from scratch before it is accepted.

The lower bound is partition independent and valid on the chip: per resource, the total demand over
the capacity, where a synapse costs at least the cheapest packed size per synapse, every source of an
edge needs an input axon somewhere, and a source of a dense edge needs an output axon to each of the
cores its consumer must at least occupy.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import networkx as nx
import numpy as np

from snnc.errors import TargetError

from .hardware import ChipSpec, Resource, SynapseEncoding
from .network import ConvGeometry, Edge, EdgeKind, Network, Piece, Population
from .synapses import ConvEdge, ConvProfile, min_bits_per_synapse, packed_bits, round_weight_bits

_NUMERIC = (Resource.NEURONS, Resource.SYNAPSE_BITS, Resource.INPUT_AXONS, Resource.OUTPUT_AXONS)
_N, _SYN, _IN, _OUT = range(4)
_MIN_PIECE = 16  # smallest range worth putting on a partly filled core (slivers cost axons and traffic)
_SCAN = 16  # cores evaluated per range before a new one is opened
_GOOD_ENOUGH = 1.1  # stop trying strategies once a partition is within 10 % of the lower bound


# ----------------------------------------------------------------------------------------------------
# Strategies


class PartitionStrategy(Protocol):
    """How much of a core the population being placed may take; the rest is room for the populations
    placed after it (its producers: populations are placed consumers first)."""

    @property
    def name(self) -> str: ...

    @property
    def zip_pairs(self) -> bool:
        """Give a consumer and its largest unplaced producer the same cores, in their fluid proportion,
        when the two bind different resources (see ``_Partitioner._mixing_cap``)."""
        ...

    def opener_ceiling(self, caps: np.ndarray) -> np.ndarray:
        """What the population that opens a core may use of it ([neurons, synapse bits, input axons,
        output axons]; ``caps`` is the core's capacity in that order)."""
        ...

    def population_ceiling(
        self, caps: np.ndarray, still_needed: np.ndarray, total_needed: np.ndarray
    ) -> np.ndarray | None:
        """What the population being placed may use of any core, from the fluid demand
        ([neurons, synapse bits, input axons]) of the populations still to place after it and of all of
        them; None: no ceiling beyond :meth:`opener_ceiling`."""
        ...


@dataclass(frozen=True, kw_only=True)
class OpenerFill:
    """The population that opens a core may fill ``fraction`` of each of its resources; the populations
    placed after it may fill the rest.  ``zip_pairs``: see :class:`PartitionStrategy`."""

    name: str
    fraction: float = 1.0
    zip_pairs: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"partition strategy '{self.name}': fraction={self.fraction} must be in (0, 1]")

    def opener_ceiling(self, caps: np.ndarray) -> np.ndarray:
        return caps if self.fraction >= 1 else np.floor(caps * self.fraction).astype(np.int64)

    def population_ceiling(
        self, caps: np.ndarray, still_needed: np.ndarray, total_needed: np.ndarray
    ) -> np.ndarray | None:
        return None


@dataclass(frozen=True, kw_only=True)
class FluidReserve:
    """Every range leaves free, on every core and of each resource, the average share per core that the
    populations still to place need (their fluid demand over the cores all of them need; at most
    ``max_reserve`` of the core)."""

    name: str = "fluid-reserve"
    max_reserve: float = 0.9
    zip_pairs: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_reserve < 1.0:
            raise ValueError(
                f"partition strategy '{self.name}': max_reserve={self.max_reserve} must be in [0, 1)"
            )

    def opener_ceiling(self, caps: np.ndarray) -> np.ndarray:
        return caps

    def population_ceiling(
        self, caps: np.ndarray, still_needed: np.ndarray, total_needed: np.ndarray
    ) -> np.ndarray | None:
        cores = max(1.0, float((total_needed / caps[:3]).max()))
        keep = np.minimum(self.max_reserve, still_needed / (cores * caps[:3]))
        ceiling = caps.copy()
        ceiling[:3] = np.floor(caps[:3] * (1 - keep)).astype(np.int64)
        return ceiling


# the strategies map_network tries in turn, best first on the networks of benchmarks/loihi_mapping.py
DEFAULT_PARTITION: tuple[PartitionStrategy, ...] = (
    FluidReserve(name="fluid-reserve"),
    OpenerFill(name="zip", zip_pairs=True),
    OpenerFill(name="first-fit"),
    OpenerFill(name="opener-80", fraction=0.8),
    OpenerFill(name="opener-60", fraction=0.6),
)


# ----------------------------------------------------------------------------------------------------
# The result


@dataclass(kw_only=True)
class CoreLoad:
    """One core of a partition: its ranges, its exact use of every resource, and its activity per
    timestep from the calibrated rates."""

    pieces: list[Piece]
    usage: dict[Resource, int]
    synops: float  # synaptic events
    spikes: float  # spikes of its neurons
    messages: float  # spike messages it sends (spikes x destination ranges)


@dataclass(kw_only=True)
class Partition:
    """Neuron ranges on cores, before the cores are placed on chips."""

    cores: list[CoreLoad]
    lower_bound: dict[Resource, int]  # per resource, cores any partition needs
    flows: dict[tuple[int, int], float]  # spikes per timestep from core i to core j (i may equal j)
    host_spikes: float  # spikes per timestep from the host (off-chip populations)
    strategy: str  # name of the strategy that made it


def partition_network(
    net: Network, chip: ChipSpec, strategies: Sequence[PartitionStrategy] = DEFAULT_PARTITION,
    tried: Callable[[], None] | None = None,
) -> Partition:
    """Split ``net`` onto as few ``chip`` cores as the greedy finds, trying ``strategies`` in turn
    (``tried`` is called after each: progress).

    Raises UserError for an inconsistent network, TargetError when a single neuron of some population
    exceeds a core (fan-in too large).
    """
    part = _Partitioner(net, chip)
    lb = part.lower_bound()
    cores, usage, activity, name = part.run(max(lb.values(), default=0), strategies, tried)
    flows, host = part.core_traffic(cores)
    loads = []
    for core, u, (synops, spikes, messages) in zip(cores, usage, activity, strict=True):
        counts = {
            Resource.NEURONS: int(u[_N]),
            Resource.SYNAPSE_BITS: int(u[_SYN]),
            Resource.INPUT_AXONS: int(u[_IN]),
            Resource.OUTPUT_AXONS: int(u[_OUT]),
            Resource.COMPARTMENT_CONFIGS: len(core.cx),
            Resource.THRESHOLD_CONFIGS: len(core.vth),
            Resource.SYNAPSE_FORMATS: len(core.fmt),
        }
        loads.append(
            CoreLoad(pieces=list(core.pieces), usage=counts, synops=synops, spikes=spikes, messages=messages)
        )
    return Partition(cores=loads, lower_bound=lb, flows=flows, host_spikes=host, strategy=name)


# ----------------------------------------------------------------------------------------------------
# The partitioner


@dataclass(kw_only=True)
class _Core:
    """A core being filled: its ranges, numeric use (neurons, synapse bits, input axons, output axons),
    configuration entries, and the populations it holds or has refused."""

    pieces: list[Piece] = field(default_factory=list)
    numeric: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    cx: set = field(default_factory=set)
    vth: set = field(default_factory=set)
    fmt: set = field(default_factory=set)
    pops: set = field(default_factory=set)
    refused: set = field(default_factory=set)


@dataclass(kw_only=True)
class _Fill:
    """Progress of one population's placement: next neuron, ranges so far and their cores."""

    pop: str
    a: int = 0
    guess: int = 0
    ptr: int = 0
    placed: list[Piece] = field(default_factory=list)
    cores: list[_Core] = field(default_factory=list)


class _Link:
    """One edge as the mapper uses it (identity-hashed; the frozen Edge hashes slowly)."""

    def __init__(self, k: int, edge: Edge, src: Population, enc: SynapseEncoding,
                 convs: dict[tuple[ConvGeometry, int], ConvEdge]) -> None:
        self.k = k
        self.edge = edge
        self.src = src
        self.dense = edge.kind is EdgeKind.DENSE
        wb = round_weight_bits(edge.weight_bits, enc, f"edge {edge.src} -> {edge.dst}")
        self.bits = wb + max(enc.delay_bits, edge.delay_bits) + (0 if self.dense else enc.index_bits)
        self.fmt = ("dense" if self.dense else "sparse", wb)
        self.conv = None
        if edge.geometry is not None:
            # a profile is a pure function of the geometry, the synapse width and the range: edges that
            # share both share one ConvEdge and its remembered profiles (DenseNet's joins repeat a few
            # dozen geometries over ~2,000 edges, their consumers split alike)
            key = (edge.geometry, self.bits)
            if key not in convs:
                convs[key] = ConvEdge(edge.geometry, self.bits, enc)
            self.conv = convs[key]
        self.dense_bits: dict[int, int] = {}  # range length -> packed bits of one dense synapse list

    @property
    def cv(self) -> ConvEdge:
        """The conv accounting of a conv link (Network.verify guarantees its geometry)."""
        if self.conv is None:
            raise TypeError(f"edge {self.edge.src} -> {self.edge.dst} is not a conv edge")
        return self.conv


class _Partitioner:
    """The greedy of the module docstring, for one network and chip; :meth:`run` tries the strategies."""

    def __init__(self, net: Network, chip: ChipSpec) -> None:
        net.verify()
        self.net = net
        self.chip = chip
        self.enc = chip.synapse
        self.pops = {p.name: p for p in net.populations}
        self.caps = np.array([chip.core.capacity(r) for r in _NUMERIC], dtype=np.int64)
        convs: dict[tuple[ConvGeometry, int], ConvEdge] = {}
        self.links = [_Link(k, e, self.pops[e.src], self.enc, convs) for k, e in enumerate(net.edges)]
        self.in_links: dict[str, list[_Link]] = {p.name: [] for p in net.populations}
        self.out_links: dict[str, list[_Link]] = {p.name: [] for p in net.populations}
        for ln in self.links:
            self.in_links[ln.edge.dst].append(ln)
            self.out_links[ln.edge.src].append(ln)
        self.placed: dict[str, list[Piece]] = {}  # destination ranges placed so far
        self.profiles: dict[tuple[int, int], ConvProfile] = {}  # (link, piece start) -> profile
        # population -> prefix sums, over its neurons, of the destination ranges each one feeds (see
        # _out_prefix); valid while its consumers' placement stays as it is
        self.out_prefix: dict[str, np.ndarray] = {}
        # the strategy being tried, and the ceilings it sets: for a core's opener, for the population
        # being placed (None: none); ``reserve`` False lifts them (the last population, or a neuron that
        # fits only a whole core)
        self.strategy: PartitionStrategy = DEFAULT_PARTITION[0]
        self.open_caps, self.reserve = self.caps, False
        self.pop_caps: np.ndarray | None = None
        self.per_neuron: dict[str, np.ndarray] = {}
        self.per_neuron_floats: dict[str, list[float]] = {}
        self.caps_list: list[int] = self.caps[:3].tolist()
        self.in_formats = {p: {ln.fmt for ln in links} for p, links in self.in_links.items()}
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

    def _out_demand(self, pop: str, a: int, b: int) -> int:
        """Output axons of range [a, b): (source neuron, destination range) pairs."""
        prefix = self.out_prefix.get(pop)
        if prefix is None:
            prefix = self.out_prefix[pop] = self._out_prefix(pop)
        return int(prefix[b] - prefix[a])

    def _out_prefix(self, pop: str) -> np.ndarray:
        """Prefix sums over the neurons of ``pop`` of how many destination ranges each neuron feeds.

        Output axons are (source neuron, destination range) pairs, so a range's demand is a sum over its
        neurons; the consumers are placed before their producers, so the per-neuron counts stay fixed while
        ``pop`` is placed and one array answers every range the search tries (it asked each out-link anew
        per range before: the mapper's hottest call on networks with wide fan-out, such as DenseNet)."""
        feeds = np.zeros(self.pops[pop].size, dtype=np.int64)
        for ln in self.out_links[pop]:
            dst = ln.edge.dst
            if dst not in self.placed:  # a cycle: the consumer is not placed yet; estimate its split
                k = self.estimate_pieces.get(dst, max(1, -(-self.pops[dst].size // int(self.caps[_N]))))
                feeds += k if ln.dense else 1
            elif ln.dense:
                feeds += len(self.placed[dst])
            else:
                self._add_conv_feeds(ln, feeds)
        return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(feeds)])

    def _add_conv_feeds(self, ln: _Link, feeds: np.ndarray) -> None:
        """Add 1 to every source neuron of conv link ``ln`` for every placed destination range it feeds.
        A range's profile says which source positions feed it per channel combination (``combos``: a
        boolean map over its source columns, and which source channels the combination holds)."""
        cv = ln.cv
        grid = feeds.reshape(cv.win, cv.hin, cv.cin)  # lava's (x, y, c) neuron order: a view
        for d in self.placed[ln.edge.dst]:
            prof = self.profiles[(ln.k, d.start)]
            block = grid[prof.x_lo : prof.x_hi]  # [columns, H, C]
            for fed, channels in prof.combos:
                block += fed.T[:, :, None] * np.diff(channels)[None, None, :]

    def _demand(self, pop: str, a: int, b: int, keep: bool = False) -> tuple[np.ndarray, float, float]:
        """(numeric demand [neurons, bits, in axons, out axons], synops, messages) of range [a, b)."""
        bits, axons, synops = self._in_demand(pop, a, b, keep)
        out = self._out_demand(pop, a, b)
        return np.array([b - a, bits, axons, out], dtype=np.int64), synops, self.pops[pop].rate * out

    def _room(self, core: _Core) -> np.ndarray:
        """What the population being placed may still use of ``core`` under the current strategy."""
        if self.pop_caps is not None and self.reserve:
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
        new_fmts = self.in_formats[p.name] - core.fmt
        return (
            len(core.cx) + (self._cx(p) not in core.cx) <= c.compartment_configs
            and len(core.vth) + (self._vth(p) not in core.vth) <= c.threshold_configs
            and len(core.fmt) + len(new_fmts) <= c.synapse_formats
        )

    def _estimate(self, core: _Core, pop: str) -> int:
        """Neurons of ``pop`` the core's room should hold, from the population's average demand."""
        # plain floats: called for every candidate core, where numpy's overhead on 3 numbers dominated
        used = core.numeric.tolist()[:3]
        best = math.inf
        for cap, u, d in zip(self.caps_list, used, self._per_neuron_floats(pop), strict=True):
            if d > 0:
                best = min(best, (cap - u) / d)
        return math.floor(best)

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

    def _too_big(self, pop: str, a: int) -> TargetError:
        """Explain why neuron ``a`` of ``pop`` alone does not fit an empty core."""
        d, _, _ = self._demand(pop, a, a + 1)
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
            raise self._too_big(fill.pop, fill.a)
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

    def _still_needed(self, order: list[str]) -> list[np.ndarray]:
        """Fluid demand (neurons, synapse bits, input axons) of ``order[:m]`` for every m: what the
        populations still to place need when ``order[m]`` is placed (added up in order, as one loop per
        population did: the same floats, without its quadratic cost on DenseNet's 659 populations)."""
        need = [np.zeros(3)]
        for q in order:
            need.append(need[-1] + self.pops[q].size * self._per_neuron_cached(q))
        return need

    def _per_neuron_cached(self, pop: str) -> np.ndarray:
        if pop not in self.per_neuron:
            self.per_neuron[pop] = self._per_neuron(pop)
        return self.per_neuron[pop]

    def _per_neuron_floats(self, pop: str) -> list[float]:
        floats = self.per_neuron_floats.get(pop)
        if floats is None:
            floats = self.per_neuron_floats[pop] = self._per_neuron_cached(pop).tolist()
        return floats

    def _place(self, order: list[str]) -> list[_Core]:
        """First-fit with splitting, consumers first (so output axons are exact); a producer that
        shares its consumer's cores is zipped into them in order.  Returns cores in forward order."""
        self.cores: list[_Core] = []
        shared: dict[str, list[tuple[_Core, int]]] = {}  # producer -> consumer cores reserved for it
        done: set[str] = set()
        still_needed = self._still_needed(order)
        for k, pop in enumerate(reversed(order)):
            self.reserve = k < len(order) - 1  # the last population has nobody to reserve for
            self.pop_caps = self.strategy.population_ceiling(
                self.caps, still_needed[len(order) - 1 - k], self.total_need
            )
            if self.strategy.zip_pairs:
                cap, partner = self._mixing_cap(pop, done)
            else:
                cap, partner = int(self.caps[_N]), None
            fill = _Fill(pop=pop)
            for core, target in shared.pop(pop, []):
                self._fill_zipped(fill, core, min(self.pops[pop].size, target))
            while fill.a < self.pops[pop].size:
                self._fill_next(fill, cap)
            self.placed[pop] = fill.placed
            for ln in self.in_links[pop]:  # its producers now see its ranges
                self.out_prefix.pop(ln.src.name, None)
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
            self.placed, self.profiles, self.out_prefix = {}, {}, {}
            cores = self._place(order)
            usage, flows = self._account(cores)
            if all(np.all(u <= self.caps) for u in usage):
                return cores, usage, flows
            # only cycles make estimates; take this attempt's splits as the next estimate
            self.estimate_pieces = {k: len(v) * 2 for k, v in self.placed.items()}
        raise TargetError("could not map a recurrent network within the output-axon limit after 4 attempts")

    def run(
        self, lower_bound: int, strategies: Sequence[PartitionStrategy], tried: Callable[[], None] | None = None
    ) -> tuple[list[_Core], list[np.ndarray], list[tuple[float, float, float]], str]:
        """Try ``strategies`` in turn; keep the partition with the fewest cores (the first of equals),
        stopping once one is within 10 % of the lower bound.  Returns its cores, their exact use of the
        numeric resources, their (synops, spikes, messages) and the strategy's name."""
        if not strategies:
            raise ValueError("partition_network needs at least one partition strategy")
        order = self._topological()
        self.total_need = sum((self.pops[q].size * self._per_neuron_cached(q) for q in order), np.zeros(3))
        kept: tuple[dict, dict, tuple, str] | None = None
        for strategy in strategies:
            self.strategy = strategy
            self.open_caps = strategy.opener_ceiling(self.caps)
            result = self._attempt(order)
            if tried is not None:
                tried()
            if kept is None or len(result[0]) < len(kept[2][0]):
                kept = (dict(self.placed), dict(self.profiles), result, strategy.name)
            if len(kept[2][0]) <= _GOOD_ENOUGH * lower_bound:
                break
        assert kept is not None  # strategies is not empty
        self.placed, self.profiles, (cores, usage, activity), name = kept
        self.out_prefix = {}
        return cores, usage, activity, name

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
