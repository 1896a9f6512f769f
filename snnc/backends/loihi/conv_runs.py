"""A conv synapse group and its per-channel exponent classes as one float32 conv (bit-accurate simulator).

``lower`` splits a conv whose output channels use several weight exponents into synapse groups, one per
exponent, each holding the mantissas of its channels and zeros elsewhere (``QLayer.exp_class`` marks the
groups after the first).  Lava runs each group as its own Conv: ``wrap24(wrap24(W_k * x) << e_k)`` (an
arithmetic right shift for e_k < 0), and the population's ``a_in`` sums them.  Since every output channel
is non-zero in one group only, the sum is, channel by channel, that group's shifted correlation.  When
``max|x| * max_c(|W_c|_1 * 2^max(e_c, 0)) < 2^23`` every partial sum of the correlation is an integer below
2^23 (exact in float32 in any order), neither 24-bit wrap acts, and the shift is exact in float32 (a
multiplication by a power of two, floored for e < 0): one conv over the summed mantissas, scaled per
channel, gives lava's integers.  Otherwise the caller runs the groups one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class SynapseGroup(Protocol):
    """What a run reads of a synapse group (``bitacc.QLayer``; not imported: bitacc calls this module)."""

    @property
    def weight_array(self) -> np.ndarray: ...

    weight_exp: int
    exp_class: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    delay: int


@dataclass(frozen=True, kw_only=True, eq=False)
class ConvRun:
    """Conv synapse groups ``(layer, *layer.extra)[first : first + count]``: one source, one geometry."""

    first: int
    count: int
    weight: Any  # torch float32 [C_out, C_in / groups, kh, kw]: the groups' mantissas summed
    scale: Any  # torch float32 [C_out, 1, 1]: 2^e of each channel's group; None when all e = 0
    floor: bool  # some e < 0: the scaled correlation is floored (lava's arithmetic right shift)
    bound: float  # max over channels of |W_c|_1 * 2^max(e_c, 0)
    group: SynapseGroup  # the first group: stride, padding, dilation, groups
    limit: int  # the accumulator's range (bitacc.UV_MAX): every partial sum must stay below it

    def apply(self, x: np.ndarray) -> np.ndarray | None:
        """``a_in``'s share of these groups for the input ``x`` [N, *in_shape] as int32, or None when the
        bound does not hold for this input (the groups must then run one by one)."""
        import torch
        import torch.nn.functional as F

        peak = 1.0 if x.dtype == np.bool_ else float(np.abs(x).max(initial=0))
        if peak * self.bound >= self.limit:
            return None
        g = self.group
        out = F.conv2d(torch.as_tensor(x, dtype=torch.float32), self.weight, None, g.stride, g.padding,
                       g.dilation, g.groups)
        if self.scale is not None:
            out = out * self.scale
            if self.floor:
                out = torch.floor(out)
        return out.to(torch.int32).numpy()


def conv_runs(groups: Sequence[SynapseGroup], sources: Sequence[int], is_conv: Sequence[bool],
              limit: int) -> list[ConvRun]:
    """The conv runs of a neuron layer's synapse groups: each conv group that no ``exp_class`` group
    follows is a run of one; one followed by ``exp_class`` groups of the same source, geometry and delay
    is a run of all of them.  ``groups``: a neuron layer and its ``extra`` groups; ``is_conv``: which of
    them are conv groups; ``limit``: the accumulator's range."""
    import torch

    runs: list[ConvRun] = []
    k = 0
    while k < len(groups):
        g = groups[k]
        n = 1
        while (k + n < len(groups) and groups[k + n].exp_class and sources[k + n] == sources[k]
               and is_conv[k + n] == is_conv[k] and _same_geometry(groups[k + n], g)):
            n += 1
        if is_conv[k]:
            members = groups[k : k + n]
            w = np.zeros_like(g.weight_array)
            exps = np.zeros(len(w), dtype=np.int64)
            for m in members:
                wm = m.weight_array
                rows = np.abs(wm).reshape(len(wm), -1).sum(axis=1) > 0
                if (rows & (np.abs(w).reshape(len(w), -1).sum(axis=1) > 0)).any():
                    break  # two groups share an output channel: not exponent classes, run them one by one
                w += wm
                exps[rows] = m.weight_exp
            else:
                l1 = np.abs(w).reshape(len(w), -1).sum(axis=1).astype(np.float64)
                bound = float((l1 * 2.0 ** np.maximum(exps, 0)).max(initial=0.0))
                scale = None
                if (exps != 0).any():
                    scale = torch.as_tensor(2.0**exps, dtype=torch.float32).reshape(-1, 1, 1)
                runs.append(ConvRun(first=k, count=n, weight=torch.as_tensor(w, dtype=torch.float32),
                                    scale=scale, floor=bool((exps < 0).any()), bound=bound, group=g,
                                    limit=limit))
        k += n
    return runs


def _same_geometry(a: SynapseGroup, b: SynapseGroup) -> bool:
    return (a.weight_array.shape == b.weight_array.shape and a.stride == b.stride
            and a.padding == b.padding and a.dilation == b.dilation and a.groups == b.groups
            and a.delay == b.delay)
