"""Layer-major execution of the reference simulator: one node for all T steps, then the next node.

The time-major loop of ``GraphModule.run_snn`` evaluates every node at step t before any node at
step t + 1.  In a graph whose only state lives in its stateful nodes (neurons, spike max pooling,
the readout), a stateless node at step t reads only values of step t, so the order of the steps
between nodes does not matter: this module runs each stateless node once on a batch of T·N (the
N samples at every step, step-major: rows t·N .. t·N + N − 1 are step t), and each stateful node
over its T steps with the time-major rules (``GraphModule._neuron`` and the pooling steps of
simulator.py), on views of that batch.  Loop-invariant nodes (``loop_invariant_nodes``) run once
on the N samples, as the time-major run hoists them.

What it keeps: every neuron's state update runs the same float operations in the same order as
time-major, so a neuron that receives the same current fires the same spikes.  A stateless op
computes each sample and step as before, on a larger batch; torch may pick another kernel for
another batch size, so a float result (not a spike count over integer or dyadic weights) may
differ in its last bits (tests/test_simulator_layer_major.py checks both).  Counts are taken
once, from the per-element totals over T: spikes = Σ|events|, SOPs = Σ_elements (Σ_t |events|)
× fan-out, summed in float64 (exact integers, in any order), MACs = the dense MACs × T (× 1 for
a loop-invariant node in ``hoisted_macs``).

What it needs (``layer_major_refusal`` says why not, and ``GraphModule.run_snn`` then steps
time-major): no early-exit readout (a sample's counts stop at its exit step), no snapshots, no
surrogate gradients (fine-tuning), ``hoist`` on, a direct-coded (or no) encoder, and no op with
a time-dependent rule other than ``neuron``, ``spike_maxpool``, ``spike_count_maxpool`` and
``readout`` (the phase-coding ops, rate / TTFS / phase encoders).

Memory: the T·N batch of each value lives from the node that makes it to its last reader; the
samples are cut into chunks so that one value of the chunk stays under ``CHUNK_BYTES``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

import torch

from snnc.backends.torch.ops import (
    ANN,
    add_events,
    count_maxpool_step,
    emits_events,
    gather_windows,
    neuron_param,
)
from snnc.ir import Graph, Node
from snnc.ir import ops as O

CHUNK_BYTES = 32 * 2**20  # the largest value of one chunk (T x samples x elements x 4 bytes): glibc serves larger blocks
# with fresh mappings, page faults on every allocation
_STATEFUL = (O.Neuron, O.SpikeMaxPool2d, O.SpikeCountMaxPool2d, O.Readout)


class GraphModule(Protocol):
    """What a layer-major run asks of ``snnc.backends.torch.simulator.GraphModule``."""

    graph: Graph

    def params_of(self, node: Node) -> dict[str, torch.Tensor]: ...
    def fanout(self, node: Node, operand: int, x: torch.Tensor) -> torch.Tensor: ...
    def _neuron(self, node: Node, current: torch.Tensor, p: Any, state: Any, surrogate: bool) -> Any: ...
    def _spike_maxpool_winners(self, node: Node, x: torch.Tensor, state: Any) -> torch.Tensor: ...


def loop_invariant_nodes(graph: Graph) -> set[str]:
    """Nodes whose value is the same at every timestep: stateless ops (structure, synaptic and
    ANN-only ops, ``encode{direct}``) all of whose operands are graph inputs or such nodes.

    Under direct coding the first layers read the same input at every step, so they compute the
    same current every step; the simulator computes them once (``run_snn(hoist=True)``).  A
    neuron, a stateful pool, a readout, a time-coded encoder or a phase op ends the chain.
    """
    invariant = {name for name, _ in graph.inputs}
    for node in graph.nodes:
        if _stateless(node.op) and all(v in invariant for v in node.inputs):
            invariant.add(node.name)
    return invariant - {name for name, _ in graph.inputs}


def _stateless(op) -> bool:
    if isinstance(op, O.Encode):
        return op.scheme is O.Scheme.DIRECT
    return not op.stateful


def layer_major_refusal(graph: Graph, *, surrogate: bool = False, hoist: bool = True,
                        snapshots: Collection[int] = ()) -> str | None:
    """Why a run of ``graph`` must step time-major, or None when it may run layer-major."""
    if surrogate:
        return "surrogate gradients (fine-tuning) step time-major"
    if not hoist:
        return "hoist=False evaluates every node at every step"
    if snapshots:
        return "snapshots at several step counts"
    if len(graph.inputs) != 1:
        return f"{len(graph.inputs)} graph inputs"
    for node in graph.nodes:
        op = node.op
        if isinstance(op, O.Readout) and op.exit_rule is not O.ExitRule.NONE:
            return f"readout %{node.name} has an early-exit rule"
        if isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT:
            return f"encode %{node.name} is {op.scheme.value}-coded (its rule reads t)"
        if type(op) not in ANN:
            return f"no rule for op '{op.name}' (%{node.name})"
        if op.stateful and not isinstance(op, _STATEFUL):
            return f"%{node.name}: '{op.name}' keeps state with a time-major rule only"
    return None


def chunk_samples(graph: Graph, timesteps: int) -> int:
    """Samples per chunk: the largest value of a chunk (T steps, or one for a loop-invariant node)
    stays under ``CHUNK_BYTES``."""
    invariant = loop_invariant_nodes(graph)
    largest = max((n.type.numel * (1 if n.name in invariant else timesteps) for n in graph.nodes
                   if n.type is not None), default=1)
    return max(1, CHUNK_BYTES // (4 * max(largest, 1)))


def run_layer_major(m: GraphModule, x: torch.Tensor, timesteps: int, record: Sequence[str] = (),
                    count: bool = True, plain_neurons: bool = True) -> dict[str, Any]:
    """``GraphModule.run_snn`` for a graph ``layer_major_refusal`` accepts: the same dict (without
    early exit every sample uses all ``timesteps``; ``at`` is empty), chunk by chunk.
    ``plain_neurons``: run the common neurons in place (``_plain_neuron``, the same floats) rather
    than through ``m._neuron`` step by step (False when ``_neuron`` is replaced)."""
    n = x.shape[0]
    size = chunk_samples(m.graph, timesteps)
    weights: dict[str, torch.Tensor] = {}
    if n <= size:
        return _run(m, x, timesteps, record, count, weights, plain_neurons)
    outs = [_run(m, x[i : i + size], timesteps, record, count, weights, plain_neurons) for i in range(0, n, size)]
    shares = [o["logits"].shape[0] / n for o in outs]
    merged: dict[str, Any] = {
        "at": {},
        "logits": torch.cat([o["logits"] for o in outs]),
        "steps_used": torch.cat([o["steps_used"] for o in outs]),
        "recorded": {v: torch.cat([o["recorded"][v] for o in outs]) for v in record},
    }
    for key in ("spikes", "sops", "macs", "hoisted_macs"):
        merged[key] = {k: sum(o[key][k] * s for o, s in zip(outs, shares, strict=True)) for k in outs[0][key]}
    return merged


class _Values:
    """The values of one layer-major run: a loop-invariant value as its N rows, any other as its
    T·N rows (step-major), each dropped after its last reader."""

    def __init__(self, graph: Graph, timesteps: int, n: int, invariant: set[str], keep: set[str]):
        self.T, self.n, self.invariant = timesteps, n, invariant
        self.values: dict[str, torch.Tensor] = {}
        self.events: dict[str, torch.Tensor] = {}  # signed event counts (−1..B) of event-typed values
        self.last = {v: i for i, node in enumerate(graph.nodes) for v in node.inputs}
        self.keep = keep
        self._totals: dict[str, torch.Tensor] = {}

    def step(self, v: str, t: int) -> torch.Tensor:
        x = self.values[v]
        return x if v in self.invariant else x[t * self.n : (t + 1) * self.n]

    def steps(self, v: str) -> torch.Tensor:
        """All T steps of ``v`` as one T·N batch (a loop-invariant value repeated)."""
        x = self.values[v]
        if v not in self.invariant:
            return x
        return x.unsqueeze(0).expand((self.T,) + tuple(x.shape)).reshape((self.T * self.n,) + tuple(x.shape[1:]))

    def totals(self, v: str) -> torch.Tensor:
        """Per element of ``v``, its events over all steps and samples, Σ|events| (float32: exact
        while below 2**24, i.e. T·N·B < 16,777,216)."""
        if v not in self._totals:
            e = self.events[v]
            if e.dim() == 4 and not e.is_contiguous():  # channels-last: reduce rows of (H·W·C) columns
                _, c, h, w = e.shape
                self._totals[v] = e.permute(0, 2, 3, 1).reshape(e.shape[0], -1).abs().sum(0).reshape(h, w, c).permute(2, 0, 1)
            else:  # rows of contiguous columns: the reduction over dim 0 of a 4-d layout is several times slower
                self._totals[v] = e.reshape(e.shape[0], -1).abs().sum(0).reshape(e.shape[1:])
        return self._totals[v]

    def release(self, i: int, node: Node) -> None:
        for v in set(node.inputs):
            if self.last.get(v) == i and v not in self.keep:
                self.values.pop(v, None)
                self.events.pop(v, None)
                self._totals.pop(v, None)


def _run(m: GraphModule, x: torch.Tensor, T: int, record: Sequence[str], count: bool,
         weights: dict[str, torch.Tensor], plain_neurons: bool) -> dict[str, Any]:
    g = m.graph
    n = x.shape[0]
    readout = next((nd for nd in g.nodes if isinstance(nd.op, O.Readout)), None)
    source = readout.inputs[0] if readout is not None else g.outputs[0]
    invariant = loop_invariant_nodes(g) | {g.inputs[0][0]}
    vals = _Values(g, T, n, invariant, keep=set(g.outputs))
    x = _channels_last(x)
    vals.values[g.inputs[0][0]] = x
    f64 = torch.float64
    zero = torch.zeros((), dtype=f64, device=x.device)
    spikes = {nd.name: zero.clone() for nd in g.nodes if emits_events(nd)}
    synaptic = [nd.name for nd in g.nodes if nd.op.synaptic]
    sops = {v: zero.clone() for v in synaptic}
    macs = {v: zero.clone() for v in synaptic}
    hoisted_macs = {v: zero.clone() for v in synaptic}
    sums: dict[str, Any] = {}
    acc: Any = torch.zeros((), device=x.device)

    def over_time(v: str) -> None:
        """The running sums a time-major run keeps of ``v``: the readout's and the recorded ones,
        added step by step in the same order."""
        nonlocal acc
        if v == source:
            for t in range(T):
                acc = acc + vals.step(v, t)
        if v in record:
            s: Any = 0.0
            for t in range(T):
                s = s + vals.step(v, t).detach()
            sums[v] = s

    over_time(g.inputs[0][0])
    for i, node in enumerate(g.nodes):
        op = node.op
        p = m.params_of(node)
        if isinstance(op, O.Conv2d):  # both operands channels-last: oneDNN's fastest layout
            if node.name not in weights:
                weights[node.name] = _channels_last(p["weight"])
            p = {**p, "weight": weights[node.name]}
        if node.name in invariant:  # computed once, as the time-major run hoists it
            vals.values[node.name] = ANN[type(op)](op, [vals.values[v] for v in node.inputs], p)
        elif isinstance(op, _STATEFUL):
            _stateful(m, node, vals, p, plain_neurons)
        else:
            vals.values[node.name] = ANN[type(op)](op, [vals.steps(v) for v in node.inputs], p)
            if not op.synaptic and all(v in vals.events for v in node.inputs):
                # a reindexing op copies signed events; any other (an ANN op left on spikes) sees how many
                ev = [vals.events[v] if op.reindexing else vals.events[v].abs() for v in node.inputs]
                vals.events[node.name] = ANN[type(op)](op, ev, {})
            elif isinstance(op, O.Add) and all(v in vals.events for v in node.inputs):  # SEW's ADD: graded events
                vals.events[node.name] = add_events([vals.events[v] for v in node.inputs])
        if count:
            if node.name in spikes and node.name in vals.events:
                spikes[node.name] += vals.totals(node.name).sum(dtype=f64) / n
            if op.synaptic:
                for k, v in enumerate(node.inputs):
                    fan = m.fanout(node, k, vals.step(v, 0))
                    if v in vals.events:  # a burst of k spikes counts k accumulates per synapse
                        sops[node.name] += (vals.totals(v).to(f64) * fan.to(f64)).sum() / n
                    else:
                        mac = fan.sum(dtype=f64)
                        macs[node.name] += mac * T
                        hoisted_macs[node.name] += mac * (1 if node.name in invariant else T)
        over_time(node.name)
        vals.release(i, node)
    return {
        "at": {},
        "logits": acc / T,
        "steps_used": torch.full((n,), T, dtype=torch.long, device=x.device),
        "spikes": spikes,
        "sops": sops,
        "macs": macs,
        "hoisted_macs": hoisted_macs,
        "recorded": {v: sums[v] / T for v in record},
    }


def _stateful(m: GraphModule, node: Node, vals: _Values, p: dict[str, torch.Tensor], plain_neurons: bool) -> None:
    """A stateful node over its T steps with the time-major rules; its value and events as T·N
    batches."""
    op = node.op
    src = node.inputs[0]
    if isinstance(op, O.Readout):
        vals.values[node.name] = vals.steps(src)
        return
    if plain_neurons and isinstance(op, O.Neuron) and _plain(op):
        _plain_neuron(op, node.name, vals, src, p)
        return
    T, n = vals.T, vals.n
    state: dict[str, dict[str, torch.Tensor]] = {}
    has_events = src in vals.events
    out: torch.Tensor | None = None
    ev: torch.Tensor | None = None
    for t in range(T):
        rows = slice(t * n, (t + 1) * n)
        e_t = vals.events[src][rows] if has_events else None
        if isinstance(op, O.Neuron):
            y, s = m._neuron(node, vals.step(src, t), p, state, False)
            s_t: torch.Tensor | None = s if op.emit is O.Emit.SPIKES else None
        elif isinstance(op, O.SpikeMaxPool2d):
            idx = m._spike_maxpool_winners(node, e_t if e_t is not None else vals.step(src, t), state)
            y = gather_windows(vals.step(src, t), idx)
            s_t = gather_windows(e_t, idx) if e_t is not None else None
        else:  # SpikeCountMaxPool2d: the net event counts run apart from the values, exact integers
            st = state.setdefault(node.name, {})
            s_t = count_maxpool_step(op, e_t, st, "events") if e_t is not None else None  # type: ignore[arg-type]
            y = count_maxpool_step(op, vals.step(src, t), st, "value")  # type: ignore[arg-type]
        if out is None:
            out = _empty_steps(y, T)
            ev = None if s_t is None else _empty_steps(s_t, T)
        out[rows] = y
        if ev is not None and s_t is not None:
            ev[rows] = s_t
    assert out is not None  # T >= 1
    vals.values[node.name] = out
    if ev is not None:
        vals.events[node.name] = ev


def _plain(op: O.Neuron) -> bool:
    """A neuron ``_plain_neuron`` runs: integrate (IF / LIF by β), fire one spike at v_th, reset at
    once; any reset and negative rule."""
    return (op.model is not O.NeuronModel.CUBA and op.leak is O.Leak.MULTIPLY and op.max_spikes == 1
            and not op.reset_delay and not op.presubtract and op.emit is O.Emit.SPIKES)


def _plain_neuron(op: O.Neuron, name: str, vals: _Values, src: str, p: dict[str, torch.Tensor]) -> None:
    """``GraphModule._neuron`` over T steps for a ``_plain`` neuron, in place in preallocated
    T-step buffers: the same float operations in the same order (v = β·v + I; s = 1[v ≥ v_th]
    (> if strict); a −1 spike where v < 0 (rectified: while the net count is positive); soft
    reset v − s·v_th, hard reset to v_reset; out = s·out_scale), so the same spikes."""
    T, n = vals.T, vals.n
    first = vals.step(src, 0)
    nd = first.dim()
    vth = neuron_param(op, p, "v_th", nd)
    beta = neuron_param(op, p, "beta", nd)
    scale = neuron_param(op, p, "out_scale", nd)
    v = torch.zeros_like(first) + op.v_init * vth
    ev = _empty_steps(v, T)
    out = ev if isinstance(scale, float) and scale == 1.0 else _empty_steps(v, T)  # s·1.0 is s
    net = torch.zeros_like(v) if op.negative is O.Negative.RECTIFIED else None
    for t in range(T):
        rows = slice(t * n, (t + 1) * n)
        if isinstance(beta, float) and beta == 1.0:  # 1.0·v is v
            v.add_(vals.step(src, t))
        else:
            v.mul_(beta).add_(vals.step(src, t))
        s = ev[rows]
        s.copy_(v > vth if op.strict else v >= vth)
        if op.negative is not O.Negative.NONE:
            below = v < 0
            if net is not None:
                below &= net > 0
            s.sub_(below.to(s.dtype))
            if net is not None:
                net.add_(s)
        if op.reset is O.Reset.SOFT:
            v.sub_(s * vth)
        elif op.reset is O.Reset.HARD:
            v.masked_fill_(s > 0, op.v_reset)
        if out is not ev:
            torch.mul(s, scale, out=out[rows])
    vals.values[name] = out
    vals.events[name] = ev


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d tensor channels-last (N, H, W, C in memory); others as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _empty_steps(y: torch.Tensor, T: int) -> torch.Tensor:
    """An uninitialised T-step batch for the one-step value ``y``, in its layout."""
    fmt = torch.channels_last if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last) else (
        torch.contiguous_format)
    return torch.empty((T * y.shape[0],) + tuple(y.shape[1:]), dtype=y.dtype, device=y.device, memory_format=fmt)
