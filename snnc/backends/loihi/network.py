"""What the Loihi mapper maps: neuron :class:`Population` s joined by synapse :class:`Edge` s.

A :class:`Network` is independent of the snnc IR (``mapping.network_from_layers`` builds one from a
lowered layer list).  A :class:`Piece` is a contiguous range of one population's neurons, in the
population's own neuron order: ``(N,)`` populations in order; ``(C, H, W)`` populations in lava's order,
the C-order flattening of (x, y, c) (= (W, H, C)), which is how netx lays out a conv layer's LIF process.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable
from dataclasses import dataclass

from snnc.errors import UserError

from .bitacc import conv_output_hw


class EdgeKind(enum.Enum):
    DENSE = "dense"  # every source neuron to every destination neuron
    CONV = "conv"  # 2-D convolution (pooling and one-to-one are convs with groups = channels)


@dataclass(frozen=True, kw_only=True)
class ConvGeometry:
    """A 2-D convolution from ``in_shape`` (C, H, W) to ``out_shape`` (C, H, W); pairs are (H, W)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True, kw_only=True)
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
        return int(math.prod(self.shape))  # math, not numpy: the mapper asks for it ~10^5 times


@dataclass(frozen=True, kw_only=True)
class Edge:
    """Synapses from population ``src`` to ``dst``; ``weight_bits`` per synapse (before rounding up to a
    width the chip allows); ``delay_bits`` per synapse when the edge delays its spikes (a residual branch
    aligned with the longer path), at least the chip's own ``delay_bits``."""

    src: str
    dst: str
    kind: EdgeKind
    weight_bits: int = 8
    geometry: ConvGeometry | None = None
    delay_bits: int = 0


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


@dataclass
class Piece:
    """Neurons [start, stop) of ``population`` (in its neuron order) on one core."""

    population: str
    start: int
    stop: int
