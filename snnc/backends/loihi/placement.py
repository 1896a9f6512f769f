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

    def traffic(self, flows: dict[tuple[int, int], float], host_spikes: float) -> dict[str, float]:
        """Spikes per timestep within cores, between cores and chips, from the host, and their hops."""
        traffic = {
            "spikes_per_step": 0.0,
            "intra_core_spikes_per_step": 0.0,
            "inter_core_spikes_per_step": 0.0,
            "inter_chip_spikes_per_step": 0.0,
            "host_spikes_per_step": host_spikes,
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
            ew, ns, links = self.hops(i, j)
            traffic["inter_core_spikes_per_step"] += s
            traffic["inter_chip_spikes_per_step"] += s if links else 0.0
            traffic["spike_hops_per_step"] += s * self.cost(i, j)
            traffic["ew_hops_per_step"] += s * ew
            traffic["ns_hops_per_step"] += s * ns
            traffic["chip_links_per_step"] += s * links
        return traffic


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
