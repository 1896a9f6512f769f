"""The event/dense cost model of a weighted layer (linear, conv2d): CPU seconds per timestep of
each mode, from the layer's shape, its input density and the batch size.  No TVM here.

Event mode (one kernel: scatter/gather of the active inputs' weight rows, then the neuron)::

    t_event = call + B · (p·n_in · per_event + p·synapses · per_synapse(W) + n_out · per_output)

Dense mode (densify kernel, one BLAS product on the host over an im2col gather for a conv,
then the neuron kernel)::

    t_dense = call + B · (n_out · per_output + product_in · per_product_in + macs · per_mac) + W · per_weight

``synapses`` counts only the taps that land inside the output (what the event kernel does;
a 3x3 conv on a 1x1 map has one tap per input), ``macs`` the dense product's full K = Cin·KH·KW
(padding included), ``product_in`` the elements of the product's input per sample (a linear's
densified input, n_in; a conv's im2col matrix, OH·OW·Cin·KH·KW), ``W`` the number of weights.
The weight term is per call: a product reads W once for the whole batch, which is why dense
mode loses at batch 1 whatever the density (the event kernels read only the active rows) and can
win at batch 32 above a crossover that grows as the layer shrinks.

Tiled mode (linear only: ``kernels.LayerKernel.tiled``, each weight read at most once per call,
the events summed per 64-column tile)::

    t_tiled = call + W · per_weight_tiled + B · (p·n_in·tiles · per_tile_event + n_out · per_output)

(tiles = ceil(n_out / 64)), and never for weights of at most ``tiled_min_bytes``: those stay in
the caches, where the event kernel's re-reads cost little.  Fitted (choices, not times) to 50 rows
of one linear kernel at batch 32, one thread, CPU time (shapes 64x128 to 4096x4096, 2-40 %,
the event and the tiled kernel interleaved; 2026-12-07): with the event model above it picks the
faster of the two on 47 rows, and within 1.1x of it on 48 of 50 (the misses: 256x256 at 40 %,
event 1.35x the tiled time, and 4096x4096 at 10 %, 1.37x: the event model underestimates there).

The constants are a non-negative least-squares fit (relative error) to the 130 per-layer rows of
``benchmarks/event_kernels.py --modes-only --threads 1`` (six networks, batch 1 and 32, CPU time;
AMD EPYC Zen 3, AVX2, 2026-12-07), rounded: with them the choice is within 1.1x of the faster
mode on all 130 rows, and on 129-130 of them when each network's rows are left out of the fit
in turn; re-measured after the conv and compaction kernels got faster, 130 of 130 again (CPU
time; docs/tvm.md).  A synapse costs more once the weights exceed ``cache_bytes`` (1 or 2 MB give the
same choices; the 512 KB L2 misses two).  The batched kernels run any batch size; they are
judged at ``BATCHED`` samples, the benchmark's and a typical evaluation batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from snnc.backends.tvm.kernels import LINEAR_TILE

BATCHED = 32  # the batch size at which the batched (any-batch) kernels' mode is chosen


@dataclass(frozen=True, kw_only=True)
class LayerShape:
    """What the cost of a weighted layer depends on (see the module docstring)."""

    n_in: int
    n_out: int
    synapses: int  # per sample, taps inside the output only
    macs: int  # the dense product's multiply-accumulates per sample (padding included)
    product_in: int  # the dense product's input elements per sample (n_in; a conv's im2col matrix)
    weights: int

    @classmethod
    def linear(cls, n_in: int, n_out: int) -> LayerShape:
        n = n_in * n_out
        return cls(n_in=n_in, n_out=n_out, synapses=n, macs=n, product_in=n_in, weights=n)

    @classmethod
    def conv2d(
        cls,
        in_chw: tuple[int, int, int],
        out_chw: tuple[int, int, int],
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int = 1,
    ) -> LayerShape:
        ci, h, w = in_chw
        co, oh, ow = out_chw
        cig = ci // groups
        taps = _taps(h, kernel[0], stride[0], padding[0], dilation[0], oh)
        taps *= _taps(w, kernel[1], stride[1], padding[1], dilation[1], ow)
        k = kernel[0] * kernel[1]
        return cls(
            n_in=ci * h * w,
            n_out=co * oh * ow,
            synapses=taps * cig * co,
            macs=oh * ow * co * cig * k,
            product_in=oh * ow * cig * k,
            weights=co * cig * k,
        )


def _taps(size: int, k: int, s: int, p: int, d: int, out: int) -> int:
    """(output, tap) pairs of one axis whose input lies inside the map."""
    return sum(1 for o in range(out) for t in range(k) if 0 <= o * s - p + t * d < size)


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Seconds per unit of work (one thread); defaults: the fit of the module docstring."""

    event_call: float = 2.4e-6
    per_event: float = 6.2e-9
    per_synapse: float = 0.115e-9  # weights within cache_bytes (8.7 G synapses/s)
    per_synapse_far: float = 0.19e-9  # beyond (5.3 G synapses/s)
    per_output_event: float = 6.9e-9  # neuron update and spike-list compaction
    cache_bytes: int = 2 << 20
    dense_call: float = 13.3e-6  # densify + host BLAS call + neuron kernel launches
    per_output_dense: float = 11.3e-9
    per_product_in: float = 6.4e-9  # densify, im2col gather, the copies around the product
    per_mac: float = 0.029e-9  # ~34 GMAC/s, one core's sgemm
    per_weight: float = 0.60e-9  # ~6.7 GB/s, the product's read of W
    per_weight_tiled: float = 0.5e-9  # the tiled kernel's read of W (prefetched 8 KB blocks)
    per_tile_event: float = 2.5e-9  # one event's 64-column row piece, summed from L1
    # smaller weights stay event: they stay in the caches.  512 KB (the AMD host's L2) until the
    # sixth session, when mobilenet_v2's 960 -> 160 convs on 1x1 maps became linear layers: at
    # 600 KB and 50 % density the event kernel measured 1.17-1.24x faster than the tiled one at
    # batch 32, while resnet18's 1 MB layers (3x3 convs on 1x1 maps) are 1.17-1.35x faster tiled
    tiled_min_bytes: int = 768 << 10
    # mode BLOCK (a linear layer's batch-1 kernels; layers.Mode): for inputs at block_min_density
    # or more, whatever the size.  Measured against the event kernel, blocks of 16 steps (one
    # thread, 2026-12-07, Intel Xeon, AVX-512).  Rate-coded events: 2048x2048 2.7x faster at 19 %,
    # 1.8x at 12 %, 1.6x at 10 %, equal at 6 %, 0.5x at 3 %; 1024x1024 2.1x at 17.5 %, 0.4x at
    # 2.6 %; 512x512 and 256x256 1.1x at 18 %; 1280x1000 3.2x at 44 %, 0.7-0.8x at 10 %.  The
    # benchmark's 16 linear layers at their own spike trains (each alone, as in layer-major
    # order; 19-52 %): 1.7-4.1x faster, one (4096x10, 20 %) equal (docs/tvm.md, sixth session)
    block_min_density: float = 0.15

    def event_seconds(self, shape: LayerShape, density: float, batch: int, weight_bytes: int = 4) -> float:
        far = shape.weights * weight_bytes > self.cache_bytes
        synapse = self.per_synapse_far if far else self.per_synapse
        per_sample = (
            density * shape.n_in * self.per_event + density * shape.synapses * synapse
            + shape.n_out * self.per_output_event
        )  # fmt: skip
        return self.event_call + batch * per_sample

    def dense_seconds(self, shape: LayerShape, batch: int) -> float:
        per_sample = (
            shape.n_out * self.per_output_dense + shape.product_in * self.per_product_in + shape.macs * self.per_mac
        )
        return self.dense_call + batch * per_sample + shape.weights * self.per_weight

    def tiled_seconds(self, shape: LayerShape, density: float, batch: int, weight_bytes: int = 4) -> float:
        """The tiled event kernel of a linear layer (math.inf for cache-resident weights)."""
        if shape.weights * weight_bytes <= self.tiled_min_bytes:
            return math.inf
        tiles = -(-shape.n_out // LINEAR_TILE)
        per_sample = density * shape.n_in * tiles * self.per_tile_event + shape.n_out * self.per_output_event
        return self.event_call + shape.weights * self.per_weight_tiled + batch * per_sample

    def block_wins(self, shape: LayerShape, density: float) -> bool:
        """Whether a linear layer's batch-1 kernels run over blocks of steps (mode BLOCK)."""
        return density >= self.block_min_density

    def dense_wins(self, shape: LayerShape, density: float, batch: int) -> bool:
        return self.dense_seconds(shape, batch) < self.event_seconds(shape, density, batch)


MODEL = CostModel()


def crossover(shape: LayerShape, batch: int, model: CostModel = MODEL) -> float:
    """The density above which dense mode is cheaper at ``batch`` (math.inf: never up to 100 %)."""
    if not model.dense_wins(shape, 1.0, batch):
        return math.inf
    lo, hi = 0.0, 1.0
    for _ in range(30):  # the event cost grows with the density, the dense cost does not
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if model.dense_wins(shape, mid, batch) else (mid, hi)
    return hi
