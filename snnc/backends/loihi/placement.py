"""Place a partition's cores on chips and tiles, lowering spike traffic x hops.

A :class:`PlacementStrategy` turns the spike flows between cores into a :class:`CorePlacement` (the
chip, slot and tile of every core).  The default, :class:`RcmSnake`, orders the cores by reverse
Cuthill-McKee on the traffic graph (networkx), which keeps communicating cores close in one sequence
(it interleaves the layers of a conv stack by position); cuts the sequence into chips; lays each chip's
cores on its tile mesh along a snake path; and improves the result by pairwise swaps that lower spike
traffic x hops.  Hops: X-Y routing between the tiles of one chip; chips sit on a square grid, a
chip-to-chip link counting ``chip_hop_weight`` tile hops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import networkx as nx
import numpy as np

from .hardware import ChipSpec


def _snake_tiles(nx_: int, ny: int) -> list[tuple[int, int]]:
    tiles: list[tuple[int, int]] = []
    for y in range(ny):
        xs = range(nx_) if y % 2 == 0 else range(nx_ - 1, -1, -1)
        tiles.extend((x, y) for x in xs)
    return tiles


def traffic_graph(flows: dict[tuple[int, int], float], n_cores: int) -> nx.Graph:
    """Undirected graph of the cores, weighted by the spikes per timestep between them (both ways)."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n_cores))
    for (i, j), w in flows.items():
        if i != j:
            old = graph.get_edge_data(i, j, {"weight": 0.0})["weight"]
            graph.add_edge(i, j, weight=old + w)
    return graph


class _LocalCost:
    """Spikes x tile hops of each core to its neighbours (``local(i)`` of :meth:`CorePlacement.improve`),
    summed in neighbour order as a plain loop does, so that every swap decision is the same float
    comparison: one loop over a few neighbours, ``cumsum`` (sequential, unlike ``sum``) over many; and a
    core's cost is remembered until it or a neighbour moves.  DenseNet's 6,239 cores have 500 neighbours
    on average: the swap passes summed 10^9 terms before."""

    _NUMPY_FROM = 32  # neighbours from which numpy's per-call overhead pays off

    def __init__(self, graph: nx.Graph, slot_of: np.ndarray, slot_tile: np.ndarray) -> None:
        self.nbrs = {i: [(j, d["weight"]) for j, d in graph[i].items()] for i in graph}
        self.arrays = {
            i: (np.array([j for j, _ in nb], dtype=np.int64), np.array([w for _, w in nb], dtype=np.float64))
            for i, nb in self.nbrs.items() if len(nb) >= self._NUMPY_FROM
        }
        self.slot = [int(x) for x in slot_of]
        self.slots = np.array(self.slot, dtype=np.int64)
        self.xy = [(int(x), int(y)) for x, y in slot_tile]
        self.tx, self.ty = (np.asarray(slot_tile[:, k], dtype=np.int64) for k in (0, 1))
        self.cache: dict[int, float] = {}

    def has_neighbours(self, i: int) -> bool:
        return bool(self.nbrs[i])

    def fresh(self, i: int) -> float:
        """The cost of core i at the current slots."""
        arrays = self.arrays.get(i)
        x, y = self.xy[self.slot[i]]
        if arrays is not None:
            js, ws = arrays
            s = self.slots[js]
            terms = ws * (np.abs(x - self.tx[s]) + np.abs(y - self.ty[s]))
            return float(np.cumsum(terms)[-1])
        total = 0.0
        for j, w in self.nbrs[i]:
            xj, yj = self.xy[self.slot[j]]
            total += w * (abs(x - xj) + abs(y - yj))
        return total

    def kept(self, i: int) -> float:
        """:meth:`fresh`, remembered while core i and its neighbours stay where they are."""
        cost = self.cache.get(i)
        if cost is None:
            cost = self.cache[i] = self.fresh(i)
        return cost

    def swap(self, a: int, b: int) -> None:
        self.slot[a], self.slot[b] = self.slot[b], self.slot[a]
        self.slots[a], self.slots[b] = self.slot[a], self.slot[b]

    def moved(self, a: int, b: int) -> None:
        """Cores a and b were swapped for good: their costs and their neighbours' are stale."""
        for i in (a, b):
            self.cache.pop(i, None)
            for j, _ in self.nbrs[i]:
                self.cache.pop(j, None)


class CorePlacement:
    """Chip and tile of every core, and hop distances: X-Y routing between tiles of one chip; chips on a
    square grid, a chip-to-chip link counting ``chip_hop_weight`` tile hops.

    ``order``: the cores in placement order; the sequence is cut into chips and laid along a snake of
    tiles (``cores_per_tile`` consecutive cores share a tile)."""

    def __init__(self, graph: nx.Graph, order: list[int], chip: ChipSpec) -> None:
        t = chip.topology
        n_cores = graph.number_of_nodes()
        self.chip = chip
        self.weight = t.chip_hop_weight
        self.graph = graph
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

    def index(self, i: int) -> int:
        """Global id of core i: chip * cores_per_chip + slot."""
        return int(self.chip_of[i] * self.chip.cores_per_chip + self.slot_of[i])

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
        local = _LocalCost(self.graph, self.slot_of, self.slot_tile)
        by_chip: dict[int, list[int]] = {}
        for i in self.order:
            if local.has_neighbours(i):
                by_chip.setdefault(int(self.chip_of[i]), []).append(i)
        per_tile = self.chip.topology.cores_per_tile
        slot = local.slot
        for _ in range(passes):
            improved = False
            for members in by_chip.values():
                for ai, a in enumerate(members):
                    for b in members[ai + 1 : ai + 1 + window]:
                        if slot[a] // per_tile == slot[b] // per_tile:
                            continue
                        before = local.kept(a) + local.kept(b)
                        local.swap(a, b)
                        if local.fresh(a) + local.fresh(b) < before - 1e-9:
                            improved = True
                            local.moved(a, b)
                        else:
                            local.swap(a, b)
            if not improved:
                break
        self.slot_of = np.array(slot, dtype=np.int64)

    def traffic(self, flows: dict[tuple[int, int], float], host_spikes: float) -> dict[str, float]:
        """Spikes per timestep within cores, between cores and chips, from the host, and their hops.
        Each total is summed over the flows in their order (``cumsum`` is sequential: the same floats as a
        loop over the flows, without its cost on DenseNet's 3 million)."""
        ij = np.array(list(flows), dtype=np.int64).reshape(-1, 2)
        s = np.fromiter(flows.values(), dtype=np.float64, count=len(flows))
        i, j = ij[:, 0], ij[:, 1]
        inter = i != j
        ti, tj = self.slot_tile[self.slot_of[i]], self.slot_tile[self.slot_of[j]]
        ew, ns = np.abs(ti[:, 0] - tj[:, 0]), np.abs(ti[:, 1] - tj[:, 1])
        ci, cj = np.divmod(self.chip_of[i], self.grid_w), np.divmod(self.chip_of[j], self.grid_w)
        links = np.abs(ci[0] - cj[0]) + np.abs(ci[1] - cj[1])
        cost = ew + ns + self.weight * links
        return {
            "spikes_per_step": _in_order(s),
            "intra_core_spikes_per_step": _in_order(s[~inter]),
            "inter_core_spikes_per_step": _in_order(s[inter]),
            "inter_chip_spikes_per_step": _in_order(np.where(links > 0, s, 0.0)[inter]),
            "host_spikes_per_step": host_spikes,
            "spike_hops_per_step": _in_order((s * cost)[inter]),  # spikes x (tile hops + chip_hop_weight x links)
            "ew_hops_per_step": _in_order((s * ew)[inter]),
            "ns_hops_per_step": _in_order((s * ns)[inter]),
            "chip_links_per_step": _in_order((s * links)[inter]),
        }


def _in_order(values: np.ndarray) -> float:
    """``0.0 + values[0] + values[1] + ...`` left to right, as a loop adds them."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


class PlacementStrategy(Protocol):
    """Where each core of a partition goes on the chips."""

    @property
    def name(self) -> str: ...

    def place(self, flows: dict[tuple[int, int], float], n_cores: int, chip: ChipSpec) -> CorePlacement:
        """Place ``n_cores`` cores exchanging ``flows`` (spikes per timestep from core i to core j)."""
        ...


@dataclass(frozen=True, kw_only=True)
class RcmSnake:
    """Reverse Cuthill-McKee order on the traffic graph, cut into chips, along a snake of tiles; then
    ``swap_passes`` passes of pairwise swaps within a chip, each core against the ``swap_window`` cores
    that follow it (0 passes: no swaps)."""

    name: str = "rcm-snake"
    swap_passes: int = 2
    swap_window: int = 24

    def __post_init__(self) -> None:
        if self.swap_passes < 0 or self.swap_window < 0:
            raise ValueError(f"placement '{self.name}': swap_passes and swap_window must be >= 0")

    def place(self, flows: dict[tuple[int, int], float], n_cores: int, chip: ChipSpec) -> CorePlacement:
        graph = traffic_graph(flows, n_cores)
        placement = CorePlacement(graph, list(nx.utils.reverse_cuthill_mckee_ordering(graph)), chip)
        placement.improve(self.swap_passes, self.swap_window)
        return placement


DEFAULT_PLACEMENT: PlacementStrategy = RcmSnake()
