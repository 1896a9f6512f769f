"""Pass helpers (not a pass): how far a change moves the network's output, the Pareto
programme that picks one setting per layer under a budget (AdaFire, compress-spikes), and the
runner of one-layer variants that simulates only from the changed layer on."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O


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


@runtime_checkable
class _Replays(Protocol):
    """A simulator that can run a graph from a position on, reading the rest from a recorded run
    (the torch simulator: snnc/backends/torch/replay.py)."""

    def record_steps(self, graph: Graph, x: Any, timesteps: int, keep: Collection[str]) -> Any: ...

    def run_snn_from(self, graph: Graph, x: Any, start: int, recording: Any, spikes_of: Sequence[str]
                     ) -> tuple[np.ndarray, dict[str, float]]: ...


def crossing_values(graph: Graph, starts: Collection[int]) -> set[str]:
    """The values computed before some position in ``starts`` (graph inputs included) and read at
    or after it: what a run that starts there must be fed."""
    position = {name: -1 for name, _ in graph.inputs}
    position.update({n.name: i for i, n in enumerate(graph.nodes)})
    last_read: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_read[v] = i
    return {v for v, i in last_read.items() for s in starts if position[v] < s <= i}


def first_change(base: Graph, variant: Graph) -> int:
    """The position of the first node of ``variant`` that differs from ``base`` (its op, operands
    or parameter values); len(nodes) when none does."""
    if len(base.nodes) != len(variant.nodes) or base.inputs != variant.inputs:
        return 0
    for i, (a, b) in enumerate(zip(base.nodes, variant.nodes, strict=True)):
        if not _same_node(base, a, variant, b):
            return i
    return len(base.nodes)


@runtime_checkable
class _ReplaysVariants(_Replays, Protocol):
    """A replaying simulator that also runs several variants of one node as one batched simulation."""

    def run_variants_from(self, graph: Graph, variants: Sequence[Graph], node: str, x: Any, start: int,
                          recording: Any) -> list[tuple[np.ndarray, float]]: ...


def changed_positions(base: Graph, variant: Graph) -> list[int]:
    """The positions of every node of ``variant`` that differs from ``base`` (as ``first_change``
    compares them); every position when the two do not have the same nodes."""
    if len(base.nodes) != len(variant.nodes) or base.inputs != variant.inputs:
        return list(range(len(base.nodes)))
    return [i for i, (a, b) in enumerate(zip(base.nodes, variant.nodes, strict=True)) if not _same_node(base, a,
                                                                                                      variant, b)]


def _same_node(base: Graph, a: Node, variant: Graph, b: Node) -> bool:
    if a.name != b.name or a.op != b.op or a.inputs != b.inputs or set(a.params) != set(b.params):
        return False
    pa, pb = base.params, variant.params
    return all(pa[a.params[r]] is pb[b.params[r]] or np.array_equal(pa[a.params[r]], pb[b.params[r]])
               for r in a.params)


# samples per step of one batched simulation of variants (Variants.run_all): the memory of one
# suffix step grows with it; the per-call overhead of the step rules shrinks with it
VARIANT_ROWS = 512


class Variants:
    """SNN runs of one-layer variants of ``base`` on one probe batch: (logits, spikes of the layer).

    With ``cache`` (and a simulator that replays), the base is simulated once, keeping at every step
    the values that cross a layer's position, and a variant runs only from its first changed node
    on (the layers before it compute what the base computed): the same floats as a whole run
    (tests/test_sensitivity_cache.py), about half the work on average.  Without it, or with an
    early-exit readout, every variant is a whole run.  With ``stack`` too, ``run_all`` simulates the
    variants of one layer together, stacked along the batch (each its own slice: samples do not
    interact), up to ``VARIANT_ROWS`` samples at a time: the same work in fewer, larger steps.
    """

    def __init__(self, sim: Any, base: Graph, x: np.ndarray, timesteps: int, layers: Sequence[Node],
                 cache: bool = True, stack: bool = True):
        self.sim, self.base, self.x, self.timesteps = sim, base, x, timesteps
        exits = any(isinstance(n.op, O.Readout) and n.op.exit_rule is not O.ExitRule.NONE for n in base.nodes)
        self.replay = cache and not exits and len(base.inputs) == 1 and isinstance(sim, _Replays)
        self.index = {n.name: i for i, n in enumerate(base.nodes)}
        self.starts = sorted(self.index[n.name] for n in layers)
        self.recording = None
        if self.replay:
            self.recording = sim.record_steps(base, x, timesteps, crossing_values(base, self.starts))
        self.stack = stack and self.replay and isinstance(sim, _ReplaysVariants)

    def run(self, variant: Graph, layer: str) -> tuple[np.ndarray, float]:
        if not self.replay:
            r = self.sim.run_snn(variant, self.x, self.timesteps)
            return r.logits, r.spikes[layer]
        # from the first change, and no later than the layer whose spikes are counted
        changed = min(first_change(self.base, variant), self.index[layer])
        start = max((s for s in self.starts if s <= changed), default=0)
        logits, spikes = self.sim.run_snn_from(variant, self.x, start, self.recording, [layer])
        return logits, spikes[layer]

    def run_all(self, variants: Sequence[Graph], layer: str) -> list[tuple[np.ndarray, float]]:
        """``[self.run(v, layer) for v in variants]``: with ``stack``, the variants that change
        ``layer`` only (or nothing) run together from the layer on, ``VARIANT_ROWS`` samples at a time."""
        out: dict[int, tuple[np.ndarray, float]] = {}
        together = []
        if self.stack:
            at = self.index[layer]
            together = [i for i, v in enumerate(variants) if set(changed_positions(self.base, v)) <= {at}]
        for i, v in enumerate(variants):
            if i not in together:
                out[i] = self.run(v, layer)
        if not together:
            return [out[i] for i in range(len(variants))]
        assert self.recording is not None  # internal: stack implies replay, which recorded the base
        cap = max(1, VARIANT_ROWS // min(len(self.x), self.recording.batch_size))
        groups = -(-len(together) // cap)  # as few simulations as the cap allows, of even sizes
        size = -(-len(together) // groups)
        for lo in range(0, len(together), size):
            idx = together[lo: lo + size]
            runs = self.sim.run_variants_from(self.base, [variants[i] for i in idx], layer, self.x,
                                              self.index[layer], self.recording)
            out.update(zip(idx, runs, strict=True))
        return [out[i] for i in range(len(variants))]
