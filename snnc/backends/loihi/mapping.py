"""Map a network onto Loihi cores and chips, within every per-core limit: the entry point.

Input: a :class:`~.network.Network` of populations and edges (:func:`network_from_layers` builds one
from a lowered layer list).  :func:`map_network` splits the populations into core-sized ranges
(:mod:`.partition`, under named :class:`~.partition.PartitionStrategy` objects tried in turn), then
places the cores on chips and tiles (:mod:`.placement`, a :class:`~.placement.PlacementStrategy`).
Output: a :class:`Mapping` (every neuron range -> chip/core/tile, per-core use of every
:class:`~.hardware.Resource`, the lower bound, the spike traffic), serialisable with ``to_json()``;
:func:`estimate_cost` (:mod:`.cost`) turns it into energy and time per timestep.

Neuron order.  Ranges are contiguous in each population's own index order: ``(N,)`` populations in
order; ``(C, H, W)`` populations in lava's order, the C-order flattening of (x, y, c) (= (W, H, C)), which
is how netx lays out a conv layer's LIF process.  A range is thus a band of columns with all channels,
which keeps a conv layer's fan-in and fan-out local.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from snnc.errors import TargetError, UnsupportedError

from .bitacc import DELAY_BITS, LayerKind, QLayer
from .cost import estimate_cost
from .fixed_point import netx_weight_format
from .hardware import ChipSpec, Resource
from .network import ConvGeometry, Edge, EdgeKind, Network, Piece, Population
from .partition import DEFAULT_PARTITION, FluidReserve, OpenerFill, PartitionStrategy, partition_network
from .placement import DEFAULT_PLACEMENT, PlacementStrategy, RcmSnake
from .synapses import packed_bits

__all__ = [
    "DEFAULT_PARTITION",
    "DEFAULT_PLACEMENT",
    "RESOURCES",
    "ConvGeometry",
    "DoesNotFitError",
    "Edge",
    "EdgeKind",
    "FluidReserve",
    "MappedCore",
    "Mapping",
    "Network",
    "OpenerFill",
    "PartitionStrategy",
    "Piece",
    "PlacementStrategy",
    "Population",
    "RcmSnake",
    "estimate_cost",
    "map_network",
    "network_from_layers",
    "packed_bits",
]

RESOURCES: tuple[Resource, ...] = tuple(Resource)


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
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
    partition_strategy: str = ""  # name of the partition strategy whose result was kept
    placement_strategy: str = ""

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
                cores_needed=self.cores_used,
                chips_needed=self.chips_used,
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


def map_network(
    net: Network,
    chip: ChipSpec,
    *,
    partition: Sequence[PartitionStrategy] = DEFAULT_PARTITION,
    placement: PlacementStrategy = DEFAULT_PLACEMENT,
    advance: Callable[[], None] | None = None,
) -> Mapping:
    """Map ``net`` onto as few ``chip`` cores as the greedy finds, then lower traffic x hops.

    ``partition``: the strategies tried in turn to split the populations onto cores (the partition with
    the fewest cores is kept); ``placement``: how the cores are laid on chips and tiles; ``advance``:
    called after each strategy and after the placement (a progress bar of ``len(partition) + 1``).
    Raises UserError for an inconsistent network, TargetError when a single neuron of some population
    exceeds a core (fan-in too large).
    """
    t0 = time.perf_counter()
    part = partition_network(net, chip, partition, advance)
    where = placement.place(part.flows, len(part.cores), chip)
    if advance is not None:
        advance()
    traffic = where.traffic(part.flows, part.host_spikes)
    mapped = [
        MappedCore(
            index=where.index(i),
            chip=int(where.chip_of[i]),
            core=int(where.slot_of[i]),
            tile=where.tile(i),
            pieces=list(core.pieces),
            usage=core.usage,
            synops=core.synops,
            spikes=core.spikes,
            messages=core.messages,
        )
        for i, core in enumerate(part.cores)
    ]
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
        lower_bound=max(part.lower_bound.values(), default=0),
        lower_bound_by_resource=part.lower_bound,
        traffic=traffic,
        seconds=time.perf_counter() - t0,
        populations=ranges,
        partition_strategy=part.strategy,
        placement_strategy=placement.name,
    )


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
                Population(
                    name=layer.name, shape=tuple(layer.shape), on_chip=False, rate=rates.get(layer.name, 0.0)
                )
            )
            continue
        lif = layer.lif_params
        pops.append(
            Population(
                name=layer.name,
                shape=tuple(layer.shape),
                compartment_config=(int(lif.du), int(lif.dv)),
                threshold_config=int(lif.vth_mant),
                rate=rates.get(layer.name, 0.0),
            )
        )
        # one edge per synapse group and per population behind it (a residual join has several groups)
        for group, k in zip((layer, *layer.extra), srcs, strict=True):
            if group.exp_class:
                # the channels of another exponent: the same synapses as the group before it, split by
                # output channel; on the core they are lists of their own synapse format, counted once here
                # (one header more per source where its list splits, not charged)
                continue
            in_shape = tuple(layers[k].shape)
            for name in forwards[k]:
                edge = _edge_for(group, name, shapes[name], part=shapes[name] != in_shape)
                if group.delay:
                    edge = replace(edge, delay_bits=DELAY_BITS)
                edges.append(edge)
    return Network(tuple(pops), tuple(edges))


def _edge_for(layer: QLayer, src: str, src_shape: tuple[int, ...], part: bool) -> Edge:
    """The edge from population ``src`` into ``layer``; ``part``: src is one part of a concat."""
    if layer.kind is LayerKind.DENSE:
        bits = netx_weight_format(np.asarray(layer.weight))[0]
        return Edge(src=src, dst=layer.name, kind=EdgeKind.DENSE, weight_bits=max(bits, 1))
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
        in_shape=(int(c), int(h), int(w)),
        out_shape=(int(co), int(ho), int(wo)),
        kernel=(int(kh), int(kw)),
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=groups,
    )
    return Edge(src=src, dst=layer.name, kind=EdgeKind.CONV, weight_bits=8, geometry=geom)
