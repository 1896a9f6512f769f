"""Pass helpers (not a pass): how far a change moves the network's output, and the Pareto
programme that picks one setting per layer under a budget (AdaFire, compress-spikes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sym_kl(a_logits: np.ndarray, b_logits: np.ndarray) -> float:
    """Symmetric KL divergence KL(p‖q) + KL(q‖p) of the softmaxes, averaged over the batch."""
    p = np.clip(softmax(np.asarray(a_logits, dtype=np.float64)), 1e-12, 1.0)
    q = np.clip(softmax(np.asarray(b_logits, dtype=np.float64)), 1e-12, 1.0)
    return float(np.mean(np.sum((p - q) * (np.log(p) - np.log(q)), axis=1)))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One candidate setting of one layer: ``limited`` counts against the limit, ``objective``
    is minimised."""

    limited: float
    objective: float


def pareto_select(layers: Sequence[Sequence[Choice]], limit: float) -> list[int] | None:
    """Pick one choice per layer minimising Σ objective subject to Σ limited ≤ limit.

    The Pareto programme of burst-ann2snn: extend partial solutions layer by layer, sort by
    the limited quantity, keep a partial solution only if its objective is strictly below every
    cheaper one and its limited total is within the limit.  Returns the choice indices, or
    None when no combination meets the limit.
    """
    frontier: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for options in layers:
        grown = [
            (lim + c.limited, obj + c.objective, picks + (i,))
            for lim, obj, picks in frontier
            for i, c in enumerate(options)
            if lim + c.limited <= limit * (1 + 1e-12)
        ]
        grown.sort(key=lambda s: (s[0], s[1]))
        frontier = []
        for s in grown:
            if not frontier or s[1] < frontier[-1][1]:
                frontier.append(s)
        if not frontier:
            return None
    return list(min(frontier, key=lambda s: s[1])[2])
