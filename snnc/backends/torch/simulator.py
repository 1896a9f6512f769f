"""The reference simulator: a graph as an ``nn.Module``, in ANN mode or over T steps.

This is the reference every other backend and every pass is checked against
(DESIGN.md §3).  Batched; runs on any torch device.  Runs every registered op, the phase-coding
ops of snnc/ir/ops_phase.py included (a phase-coded graph over its pipelined ``timesteps``).
Loop-invariant nodes (the direct-coded layers before the first neuron) are computed once per run
and their MACs are reported both as written and hoisted (``SimResult.hoisted_macs``).
A feed-forward run goes layer-major (layer_major.py: each node for all T steps at once, the same
step rules; ``layer_major_refusal`` says when the time-major loop below runs instead).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnc.backends.torch.layer_major import layer_major_refusal, loop_invariant_nodes, run_layer_major
from snnc.backends.torch.ops import ANN, adaptive_fanout, channel_view, neuron_param
from snnc.backends.torch.ops import add_events as _add_events
from snnc.backends.torch.ops import count_maxpool_step as _count_maxpool_step
from snnc.backends.torch.ops import emits_events as _emits_events
from snnc.backends.torch.ops import gather_windows as _gather_windows
from snnc.errors import UnsupportedError, UserError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseDecode, PhaseMaxPool2d, PhaseNeuron, phase_levels_midpoint


def _safe(name: str) -> str:
    return name.replace(".", "__")


@dataclass(kw_only=True)
class SimResult:
    """What an SNN run returns (numpy arrays, batch first).

    Counts are per sample (the mean over the batch) and stop at the step a sample exits (an
    early-exit readout): what hardware that stops a sample there would compute.
    """

    logits: np.ndarray  # (N, C): the readout's running mean at the step each sample stopped
    predictions: np.ndarray  # (N,)
    steps_used: np.ndarray  # (N,) timesteps each sample used (T without an exit rule)
    spikes: dict[str, float] = field(default_factory=dict)  # neuron/encoder -> events per sample
    sops: dict[str, float] = field(default_factory=dict)  # synaptic node -> accumulates per sample
    # synaptic node -> multiply-accumulates per sample as written: an analog-input layer multiplies
    # at every step the sample runs
    macs: dict[str, float] = field(default_factory=dict)
    # the same with each loop-invariant layer (``loop_invariant_nodes``) counted once per sample
    hoisted_macs: dict[str, float] = field(default_factory=dict)
    execution: str = ""  # "layer-major" or "time-major (why)": GraphModule.run_snn's choice
    recorded: dict[str, np.ndarray] = field(default_factory=dict)  # value -> mean over time

    @staticmethod
    def merge(parts: Sequence[SimResult]) -> SimResult:
        """One result for the samples of ``parts`` in order (runs on consecutive rows): arrays
        concatenated, each count the mean over all samples, the parts' per-sample means weighted by
        their share and added in order (the same floats wherever the parts were computed)."""
        if len(parts) == 1:
            return parts[0]
        n = sum(len(p.predictions) for p in parts)
        counts: dict[str, dict[str, float]] = {k: {} for k in ("spikes", "sops", "macs", "hoisted_macs")}
        for p in parts:
            for key, dst in counts.items():
                for k, v in getattr(p, key).items():
                    dst[k] = dst.get(k, 0.0) + float(v) * (len(p.predictions) / n)
        logits = np.concatenate([p.logits for p in parts])
        return SimResult(logits=logits, predictions=np.concatenate([p.predictions for p in parts]),
                         steps_used=np.concatenate([p.steps_used for p in parts]),
                         execution=parts[-1].execution,
                         recorded={k: np.concatenate([p.recorded[k] for p in parts]) for k in parts[0].recorded},
                         **counts)


def phase_length(graph: Graph) -> int:
    """Steps a phase-coded graph needs before its output is decoded (0 without ``phase_decode``)."""
    return max((n.op.total for n in graph.nodes if isinstance(n.op, PhaseDecode)), default=0)


class GraphModule(nn.Module):
    """Evaluate a Graph with torch.  Parameters become buffers (or nn.Parameters when trainable)."""

    def __init__(self, graph: Graph, trainable: bool = False):
        super().__init__()
        self.graph = graph
        for node in graph.nodes:
            if type(node.op) not in ANN:
                raise UnsupportedError(f"torch backend: no rule for op '{node.op.name}' (%{node.name})")
        self.tensors = nn.ParameterDict()
        for key, value in graph.params.items():
            t = torch.as_tensor(np.array(value, dtype=np.float32, copy=True))
            self.tensors[_safe(key)] = nn.Parameter(t, requires_grad=trainable)
        self._fanout: dict[tuple[str, int], torch.Tensor] = {}

    def params_of(self, node: Node) -> dict[str, torch.Tensor]:
        return {role: self.tensors[_safe(key)] for role, key in node.params.items()}

    # -- ANN mode ------------------------------------------------------------------------
    def forward(self, *inputs: torch.Tensor, record: Sequence[str] = ()) -> tuple[list[torch.Tensor], dict]:
        env = {name: x for (name, _), x in zip(self.graph.inputs, inputs, strict=True)}
        for node in self.graph.nodes:
            env[node.name] = ANN[type(node.op)](node.op, [env[v] for v in node.inputs], self.params_of(node))
        return [env[v] for v in self.graph.outputs], {v: env[v] for v in record}

    # -- SNN mode ------------------------------------------------------------------------
    def run_snn(
        self,
        x: torch.Tensor,
        timesteps: int,
        record: Sequence[str] = (),
        count: bool = True,
        surrogate: bool = False,
        hoist: bool = True,
        snapshots: Collection[int] = (),
        layer_major: bool = True,
    ) -> dict:
        """Simulate ``timesteps`` steps on one input tensor; returns a dict of tensors.

        ``surrogate``: make spikes differentiable (straight-through on a sigmoid surrogate),
        for passes that fine-tune through the simulator.  ``hoist``: compute the loop-invariant
        nodes (``loop_invariant_nodes``) once at t = 0 and reuse their values (the same floats:
        results do not depend on it).  The counts of a sample stop at the step it exits; once
        every sample has exited (and nothing is recorded) the run stops.  ``snapshots``: step
        counts t <= timesteps at which to also keep the logits, steps used and counts, under
        ``"at"``: {t: {...}}, what a run of t steps returns (a step does not read T, except under
        TTFS coding, which ``TorchSimulator.run_snn_steps`` refuses).

        Runs layer-major (snnc/backends/torch/layer_major.py: each node for all steps at once, the
        same spikes) unless ``layer_major_refusal`` names a reason to step time-major (early exit,
        snapshots, surrogate, ``hoist=False``, a time-coded encoder, phase ops); ``"execution"``
        in the result says which ran and why; ``layer_major=False`` asks for the time-major loop.
        """
        g = self.graph
        needed = phase_length(g)
        if timesteps < needed:
            raise UserError(
                f"graph @{g.name} is phase-coded: its output is decoded at step {needed} (graph timesteps "
                f"{g.attrs.timesteps}); simulate at least {needed} steps, not {timesteps}"
            )
        refusal = layer_major_refusal(g, surrogate=surrogate, hoist=hoist, snapshots=snapshots) if layer_major else (
            "asked for")
        if refusal is None:  # the same spikes, one node for all steps at a time (layer_major.py)
            # a subclass or a caller that replaces ``_neuron`` (to record or to differentiate) gets it called
            plain = type(self)._neuron is GraphModule._neuron and "_neuron" not in vars(self)
            return {**run_layer_major(self, x, timesteps, record, count, plain_neurons=plain), "execution": "layer-major"}
        n = x.shape[0]
        invariant = loop_invariant_nodes(g)
        hoisted: dict[str, torch.Tensor] = {}
        state: dict[str, dict[str, torch.Tensor]] = {}
        sums: dict[str, Any] = {v: 0.0 for v in record}
        zero = torch.zeros((), device=x.device)
        spikes = {nd.name: zero.clone() for nd in g.nodes if _emits_events(nd)}
        synaptic = [nd.name for nd in g.nodes if nd.op.synaptic]
        sops = {v: zero.clone() for v in synaptic}
        macs = {v: zero.clone() for v in synaptic}
        hoisted_macs = {v: zero.clone() for v in synaptic}
        readout = next((nd for nd in g.nodes if isinstance(nd.op, O.Readout)), None)
        rule = readout.op.exit_rule if readout is not None else O.ExitRule.NONE  # type: ignore[attr-defined]
        out_name = g.outputs[0]
        acc = zero
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        steps_used = torch.full((n,), timesteps, dtype=torch.long, device=x.device)
        final = None
        at: dict[int, dict[str, Any]] = {}

        def snapshot(steps: int) -> None:
            at[steps] = {
                "logits": final.clone() if final is not None else acc,
                # a sample still running at this step has used all of them
                "steps_used": torch.where(done, steps_used, torch.full_like(steps_used, steps)),
                "spikes": {k: v.clone() for k, v in spikes.items()},
                "sops": {k: v.clone() for k, v in sops.items()},
                "macs": {k: v.clone() for k, v in macs.items()},
                "hoisted_macs": {k: v.clone() for k, v in hoisted_macs.items()},
            }

        for t in range(timesteps):
            weight = (~done).to(x.dtype) / n  # per-sample means over the samples still running
            env = {g.inputs[0][0]: x}
            # signed event counts (−1..B) of event-typed values: a −1 spike is one event (counts take
            # abs) but takes one back from a spike max pooling's running count
            events: dict[str, torch.Tensor] = {}
            for node in g.nodes:
                ins = [env[v] for v in node.inputs]
                if node.name in hoisted:
                    out = hoisted[node.name]
                else:
                    out = self.step(node, ins, events, state, t, timesteps, surrogate)
                    if hoist and node.name in invariant:
                        hoisted[node.name] = out
                if count:
                    if node.name in events and _emits_events(node):
                        spikes[node.name] += _per_sample(events[node.name].abs()) @ weight
                    if node.op.synaptic:
                        sop, mac = self._count(node, ins, events, weight)
                        sops[node.name] += sop
                        macs[node.name] += mac
                        if t == 0 or node.name not in invariant:
                            hoisted_macs[node.name] += mac
                env[node.name] = out
            for v in record:
                sums[v] = sums[v] + env[v].detach()
            acc = acc + env[readout.inputs[0] if readout else out_name]
            logits_t = acc / (t + 1)
            if readout is not None and rule is not O.ExitRule.NONE:
                thresholds = self.params_of(readout)["exit_thresholds"]
                score = exit_score(rule, logits_t)
                thr = thresholds[min(t, thresholds.numel() - 1)]
                newly = (~done) & (score > thr)
                if final is None:
                    final = logits_t.clone()
                final = torch.where(newly.unsqueeze(1), logits_t, final)
                steps_used = torch.where(newly, torch.full_like(steps_used, t + 1), steps_used)
                done = done | newly
                final = torch.where(done.unsqueeze(1), final, logits_t)
                if not record and bool(done.all()):  # nothing left to compute or count
                    break
            else:
                final = logits_t
            if t + 1 in snapshots:
                snapshot(t + 1)
        for steps in snapshots:  # after every sample exited, nothing changes any more
            if steps not in at:
                snapshot(steps)
        return {
            "execution": f"time-major ({refusal})",
            "at": at,
            "logits": final,
            "steps_used": steps_used,
            "spikes": spikes,
            "sops": sops,
            "macs": macs,
            "hoisted_macs": hoisted_macs,
            "recorded": {v: sums[v] / timesteps for v in record},
        }

    def step(self, node: Node, ins: list[torch.Tensor], events: dict[str, torch.Tensor], state, t: int, T: int,
             surrogate: bool = False) -> torch.Tensor:
        """The value of ``node`` at step ``t`` of ``T`` from its operands' values ``ins`` at that step;
        records the events of event-typed results in ``events`` (gated pooling reads its operand's)
        and keeps the state of stateful nodes in ``state[node.name]``.  Public for the passes that
        sweep a graph node by node or from a recorded prefix (loihi-thresholds, prefix replay)."""
        op = node.op
        p = self.params_of(node)
        if isinstance(op, O.Neuron):
            out, s = self._neuron(node, ins[0], p, state, surrogate)
            if op.emit is O.Emit.SPIKES:  # a membrane readout is analog: its readers do MACs
                events[node.name] = s.detach()  # signed: a −1 spike lowers a gate's running count
            return out
        if isinstance(op, O.Encode):
            out = self._encode(op, ins[0], t, T)
            if op.scheme is not O.Scheme.DIRECT:
                events[node.name] = (out != 0).to(out.dtype)
            return out
        if isinstance(op, O.SpikeMaxPool2d):
            idx = self._spike_maxpool_winners(node, events.get(node.inputs[0], ins[0]), state)
            if node.inputs[0] in events:
                events[node.name] = _gather_windows(events[node.inputs[0]], idx)
            return _gather_windows(ins[0], idx)
        if isinstance(op, O.SpikeCountMaxPool2d):
            st = state.setdefault(node.name, {})
            if node.inputs[0] in events:  # the net event counts, exact integers, for the readers' SOPs
                events[node.name] = _count_maxpool_step(op, events[node.inputs[0]].detach(), st, "events")
            return _count_maxpool_step(op, ins[0], st, "value")
        if isinstance(op, PhaseNeuron):
            out, s = _phase_neuron_step(op, ins[0], p, state.setdefault(node.name, {}), t)
            events[node.name] = s
            return out
        if isinstance(op, PhaseMaxPool2d):
            out, passed = _phase_maxpool_step(op, ins[0], events.get(node.inputs[0]),
                                              state.setdefault(node.name, {}), t)
            if passed is not None:
                events[node.name] = passed
            return out
        if isinstance(op, PhaseDecode):
            return _phase_decode_step(op, ins[0], p, t)
        if isinstance(op, O.Readout):
            return ins[0]
        out = ANN[type(op)](op, ins, p)
        if not op.synaptic and all(v in events for v in node.inputs):
            # a reindexing op copies signed events; any other (an ANN op left on spikes) sees how many
            ev = [events[v] if op.reindexing else events[v].abs() for v in node.inputs]
            events[node.name] = ANN[type(op)](op, ev, {})
        elif isinstance(op, O.Add) and all(v in events for v in node.inputs):  # SEW's ADD: graded events
            events[node.name] = _add_events([events[v] for v in node.inputs])
        return out

    # -- stateful rules --------------------------------------------------------------------
    def _neuron(self, node: Node, current: torch.Tensor, p, state, surrogate: bool):
        """One step of a ``neuron`` node (the equations of ``O.Neuron``); returns (output, spikes).

        Keeps v, u (the CUBA current) and the last spikes in ``state[node.name]``.  The order of
        the float operations is the one the source libraries use, so an imported SNN runs
        spike for spike as its library does.
        """
        op: O.Neuron = node.op  # type: ignore[assignment]
        nd = current.dim()
        vth = neuron_param(op, p, "v_th", nd)
        beta = neuron_param(op, p, "beta", nd)
        st = state.get(node.name)
        if st is None:
            v0 = torch.zeros_like(current) + op.v_init * vth
            st = state[node.name] = {"v": v0, "u": torch.zeros_like(current), "s": torch.zeros_like(current)}
        v = st["v"]
        if op.model is O.NeuronModel.CUBA:
            u = st["u"]
            st["u"] = (u - op.alpha * u if op.leak is O.Leak.RATE else op.alpha * u) + current
            current = st["u"]
        if op.leak is O.Leak.MULTIPLY:
            v = beta * v + current
        else:
            v_rest = op.v_reset if op.reset is O.Reset.HARD else 0.0
            if op.leak is O.Leak.TAU:
                v = v + (current - (v - v_rest)) / op.tau if op.decay_input else v - (v - v_rest) / op.tau + current
            else:  # RATE: multiply by β = 1/τ rather than divide by τ (not the same floats)
                v = v + (current - (v - v_rest)) * beta if op.decay_input else v - (v - v_rest) * beta + current
        if op.reset_delay:  # the previous step's spikes reset now (snnTorch's default)
            v = _reset(op, v, st["s"], vth)
        presubtract = op.presubtract and op.reset is O.Reset.SOFT and not op.reset_delay
        if presubtract:  # snnTorch's reset_delay=False: a reset read from the stored v, undone below
            r = (st["v"] > vth).to(v.dtype)
            v = v - r * vth
        s = _fire(op, v, vth, surrogate)
        if op.negative is not O.Negative.NONE and op.max_spikes > 1:  # a burst of up to B −1 spikes:
            # s = clamp(floor(v / v_th), −B, 0) where v < 0 (rectified: at most the net count so far)
            neg = torch.clamp(torch.floor(v.detach() / vth), -op.max_spikes, 0)
            if op.negative is O.Negative.RECTIFIED:
                neg = torch.maximum(neg, -st.setdefault("n", torch.zeros_like(v)))
            s = s + neg
            if op.negative is O.Negative.RECTIFIED:
                st["n"] = st["n"] + s.detach()
        elif op.negative is not O.Negative.NONE:  # a −1 spike where v < 0; the soft reset raises v by v_th
            below = v < 0
            if op.negative is O.Negative.RECTIFIED:  # only while the net count is positive
                count = st.setdefault("n", torch.zeros_like(v))
                below = below & (count > 0)
            s = s - below.to(v.dtype)
            if op.negative is O.Negative.RECTIFIED:
                st["n"] = st["n"] + s.detach()
        if presubtract:
            v = v - (s - r) * vth
        elif not op.reset_delay:
            v = _reset(op, v, s, vth)
        st["v"], st["s"] = v, s
        if op.emit is O.Emit.MEMBRANE:
            return v, s
        return s * neuron_param(op, p, "out_scale", nd), s

    def _encode(self, op: O.Encode, x: torch.Tensor, t: int, T: int) -> torch.Tensor:
        if op.scheme is O.Scheme.DIRECT:
            return x
        xc = torch.clamp(x, 0.0, 1.0)
        if op.scheme is O.Scheme.RATE:
            gen = torch.Generator(device=x.device).manual_seed(op.seed * 100003 + t)
            return (torch.rand(x.shape, generator=gen, device=x.device) < xc).to(x.dtype)
        if op.scheme is O.Scheme.TTFS:
            t_fire = torch.round((1.0 - xc) * (T - 1))
            return ((t_fire == t) & (xc > 0)).to(x.dtype)
        # phase: bit k = t mod bits of x in binary (MSB first), weighted so a window's mean is x
        k = t % op.bits
        xq = torch.clamp(x, 0.0, 1.0 - 2.0 ** -op.bits)
        bit = torch.remainder(torch.floor(xq * 2.0 ** (k + 1)), 2.0)
        return bit * (op.bits * 2.0 ** -(k + 1))

    def _spike_maxpool_winners(self, node: Node, x: torch.Tensor, state) -> torch.Tensor:
        """Per window, the input with the largest net spike count so far (ties: first in the window).
        A −1 spike (``negative=rectified``) takes one back: a neuron that fired early and then took its
        spikes back has not been the most active input."""
        op: O.SpikeMaxPool2d = node.op  # type: ignore[assignment]
        st = state.setdefault(node.name, {"count": torch.zeros_like(x)})
        st["count"] = st["count"] + x.detach()
        _, idx = F.max_pool2d(st["count"], op.kernel, op.stride, op.padding, 1, op.ceil_mode, return_indices=True)
        return idx

    def _count(self, node: Node, ins: list[torch.Tensor], events, weight: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's (accumulates, multiply-accumulates) of a synaptic node, per sample: the
        mean over the batch with ``weight`` (1/N for a running sample, 0 for one that exited)."""
        sops = torch.zeros((), device=weight.device)
        macs = torch.zeros((), device=weight.device)
        for i, x in enumerate(ins):
            fan = self.fanout(node, i, x)
            v = node.inputs[i]
            if v in events:  # a burst of k spikes counts k accumulates per synapse
                sops = sops + _per_sample(events[v].abs() * fan) @ weight
            else:
                macs = macs + fan.sum() * weight.sum()
        return sops, macs

    def fanout(self, node: Node, operand: int, x: torch.Tensor) -> torch.Tensor:
        """Synapses each input element drives (exact at borders), shape = one sample."""
        key = (node.name, operand)
        if key not in self._fanout:
            with torch.enable_grad():
                self._fanout[key] = self._compute_fanout(node, x)
        return self._fanout[key]

    def _compute_fanout(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        op = node.op
        probe = torch.ones((1,) + tuple(x.shape[1:]), device=x.device, requires_grad=True)
        if isinstance(op, (O.Add, O.Scale)):
            return torch.ones_like(probe).detach()[0]
        if isinstance(op, O.AdaptiveAvgPool2d):  # count windows, not the 1/|window| weights
            return adaptive_fanout(op, x.shape[2], x.shape[3]).expand(probe.shape[1:]).to(x.device)
        ones = {k: torch.ones_like(v) for k, v in self.params_of(node).items() if k == "weight"}
        y = ANN[type(op)](op, [probe], ones)
        if isinstance(op, O.AvgPool2d):  # count windows, not the 1/k weights
            y = y * (op.kernel[0] * op.kernel[1])
        (fan,) = torch.autograd.grad(y.sum(), probe)
        return fan.detach()[0]


class _Parts:
    """The per-batch results of ``GraphModule.run_snn`` gathered into one ``SimResult``: logits
    concatenated, counts as per-sample means (each batch weighted by its share of the samples)."""

    def __init__(self) -> None:
        self.logits: list[np.ndarray] = []
        self.steps: list[np.ndarray] = []
        self.counts: dict[str, dict[str, float]] = {k: {} for k in ("spikes", "sops", "macs", "hoisted_macs")}
        self.execution = ""

    def add(self, out: dict[str, Any], weight: float) -> None:
        self.logits.append(out["logits"].cpu().numpy())
        self.steps.append(out["steps_used"].cpu().numpy())
        self.execution = out.get("execution", self.execution)
        for key, dst in self.counts.items():
            for k, v in out[key].items():
                dst[k] = dst.get(k, 0.0) + float(v) * weight

    def result(self, recorded: dict[str, np.ndarray] | None = None) -> SimResult:
        lg = np.concatenate(self.logits)
        return SimResult(logits=lg, predictions=lg.argmax(axis=1), steps_used=np.concatenate(self.steps),
                         recorded=recorded or {}, execution=self.execution, **self.counts)


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """The sum over each sample's elements, shape (N,)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _fire(op: O.Neuron, v: torch.Tensor, vth, surrogate: bool) -> torch.Tensor:
    if op.max_spikes > 1:
        s = torch.clamp(torch.floor(v / vth), 0, op.max_spikes)
        if surrogate:
            s = s.detach() + (torch.clamp(v / vth, 0, op.max_spikes) - torch.clamp(v / vth, 0, op.max_spikes).detach())
        return s
    s = (v > vth) if op.strict else (v >= vth)
    s = s.to(v.dtype)
    if surrogate:
        sig = torch.sigmoid(4.0 * (v - vth) / (vth if isinstance(vth, float) else vth.abs() + 1e-12))
        s = s.detach() + sig - sig.detach()
    return s


def _reset(op: O.Neuron, v: torch.Tensor, s: torch.Tensor, vth) -> torch.Tensor:
    if op.reset is O.Reset.SOFT:
        return v - s * vth
    if op.reset is O.Reset.HARD:
        return torch.where(s > 0, torch.full_like(v, op.v_reset), v)
    return v


# -- phase coding (snnc/ir/ops_phase.py: the equations are in the op docstrings) -----------------


def _phase_neuron_step(op: PhaseNeuron, current: torch.Tensor, p, st: dict[str, torch.Tensor], t: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a phase neuron: (output s·out_scale, spikes s).  ``st`` keeps the integrated
    value ``x`` and whether the neuron has fired."""
    nd = current.dim()
    if not st:
        st["x"] = torch.zeros_like(current)
        st["fired"] = torch.zeros_like(current, dtype=torch.bool)
    k = t - op.start
    s = torch.zeros_like(current)
    if 0 <= k < op.window:  # integration window
        if not op.constant_input:
            st["x"] = st["x"] + op.base ** (-k) * current
        elif k == 0:  # a constant current is sampled once
            st["x"] = current
        if k == op.window - 1 and "bias" in p:
            st["x"] = st["x"] + channel_view(p["bias"], nd)
    elif op.window <= k < 2 * op.window:  # emission window: one spike at the first level reached
        level = neuron_param(op, p, "v_th", nd) * op.base ** (-(k - op.window))
        fire = ~st["fired"] & (st["x"] >= level * phase_levels_midpoint(op.base))
        st["fired"] = st["fired"] | fire
        s = fire.to(current.dtype)
    return s * neuron_param(op, p, "out_scale", nd), s


def _phase_maxpool_step(op: PhaseMaxPool2d, x: torch.Tensor, x_events: torch.Tensor | None,
                        st: dict[str, torch.Tensor], t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of first-spike max pooling: (output, its events, or None for an analog input).
    ``st["sent"]`` marks the pooling windows that passed a spike in the current phase window."""
    m = F.max_pool2d(x, op.kernel, op.stride, op.padding, 1, op.ceil_mode)
    if "sent" not in st or (t >= op.start and (t - op.start) % op.window == 0):
        st["sent"] = torch.zeros_like(m, dtype=torch.bool)
    sent = st["sent"]
    out = torch.where(sent, torch.zeros_like(m), m)
    passed = None
    if x_events is not None:
        e = F.max_pool2d(x_events, op.kernel, op.stride, op.padding, 1, op.ceil_mode)
        passed = torch.where(sent, torch.zeros_like(e), e)
    st["sent"] = sent | (m > 0)
    return out, passed


def _phase_decode_step(op: PhaseDecode, current: torch.Tensor, p, t: int) -> torch.Tensor:
    """total·(B^(−k)·I[t] + [k = 0]·b) inside the decode window, 0 outside."""
    k = t - op.start
    if not 0 <= k < op.window:
        return torch.zeros_like(current)
    y = current * (op.total * op.base ** (-k))
    if k == 0 and "bias" in p:
        y = y + op.total * channel_view(p["bias"], y.dim())
    return y


def exit_score(rule: O.ExitRule, logits: torch.Tensor) -> torch.Tensor:
    prob = torch.softmax(logits, dim=1)
    if rule is O.ExitRule.CONFIDENCE:
        return prob.max(dim=1).values
    entropy = -(prob * torch.log(prob.clamp_min(1e-12))).sum(dim=1)
    return 1.0 - entropy / math.log(logits.shape[1])


# ---------------------------------------------------------------------------------------


class TorchSimulator:
    """The simulator passes receive through their context (numpy in, numpy out)."""

    def __init__(self, device: str = "cpu", batch_size: int = 256):
        self.device = torch.device(device)
        self.batch_size = batch_size

    def module(self, graph: Graph, trainable: bool = False) -> GraphModule:
        return GraphModule(graph, trainable).to(self.device)

    # -- training: for passes that fine-tune through the simulator (d2e-finetune) -----------
    def trainable(self, graph: Graph, keys: Collection[str]) -> GraphModule:
        """A module of ``graph`` on this device in which exactly the parameters ``keys`` (store
        names) require gradients; ``module.parameters()`` is what an optimiser should get."""
        missing = sorted(set(keys) - set(graph.params))
        if missing:
            raise KeyError(f"no parameters {missing} in graph @{graph.name}")
        m = GraphModule(graph, trainable=True).to(self.device)
        wanted = {_safe(k) for k in keys}
        for name, tensor in m.tensors.items():
            tensor.requires_grad_(name in wanted)
        return m

    def surrogate_run(
        self, module: GraphModule, x, timesteps: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A differentiable SNN-mode run of ``module`` on ``x`` (numpy or tensor) over ``timesteps``
        steps, with straight-through surrogate spikes and no op counting.

        Returns ``(logits, rates)``: the readout's mean (N, C) and, per neuron node, its mean
        spike count per neuron and step as a scalar tensor with gradients (for rate penalties).
        """
        xb = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
        xb = xb.to(self.device, torch.float32)
        rates: dict[str, torch.Tensor] = {}
        fire = module._neuron

        def neuron(node, current, p, state, surrogate):
            out, s = fire(node, current, p, state, surrogate)
            rates[node.name] = rates.get(node.name, 0.0) + s.mean() / timesteps
            return out, s

        module._neuron = neuron  # type: ignore[method-assign]  # shadows the method for this run only
        try:
            out = module.run_snn(xb, timesteps, count=False, surrogate=True)
        finally:
            del module._neuron
        return out["logits"], rates

    def read_params(self, module: GraphModule, keys: Collection[str]) -> dict[str, np.ndarray]:
        """The module's current values of the parameters ``keys`` as new float32 numpy arrays."""
        return {
            k: module.tensors[_safe(k)].detach().cpu().numpy().astype(np.float32, copy=True) for k in keys
        }

    @torch.no_grad()
    def run_ann(self, graph: Graph, x, record: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """ANN mode.  Returns the graph outputs under their names plus the recorded values."""
        m = self.module(graph)
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), self.batch_size):
            xb = torch.as_tensor(np.asarray(x[start : start + self.batch_size]), device=self.device)
            outs, rec = m(xb, record=record)
            for name, value in list(zip(graph.outputs, outs, strict=True)) + list(rec.items()):
                chunks.setdefault(name, []).append(value.cpu().numpy())
        return {k: np.concatenate(v) for k, v in chunks.items()}

    @torch.no_grad()
    def run_snn(self, graph: Graph, x, timesteps: int, record: Sequence[str] = ()) -> SimResult:
        m = self.module(graph)
        parts = _Parts()
        rec: dict[str, list[np.ndarray]] = {v: [] for v in record}
        for start in range(0, len(x), self.batch_size):
            xb = torch.as_tensor(np.asarray(x[start : start + self.batch_size]), device=self.device)
            out = m.run_snn(xb, timesteps, record)
            parts.add(out, xb.shape[0] / len(x))
            for v in record:
                rec[v].append(out["recorded"][v].cpu().numpy())
        return parts.result(recorded={k: np.concatenate(v) for k, v in rec.items()})

    @torch.no_grad()
    def run_snn_steps(self, graph: Graph, x, timesteps: Sequence[int]) -> dict[int, SimResult]:
        """``run_snn`` at each T in ``timesteps`` from one run of max(T) steps: step t of a run
        does not depend on how many follow, so the result at T is the run of T steps (the same
        floats).  TTFS coding places its spikes by T, and is refused."""
        if any(isinstance(n.op, O.Encode) and n.op.scheme is O.Scheme.TTFS for n in graph.nodes):
            raise UnsupportedError(f"graph @{graph.name}: TTFS coding depends on T; run each T with run_snn")
        m = self.module(graph)
        parts = {t: _Parts() for t in timesteps}
        for start in range(0, len(x), self.batch_size):
            xb = torch.as_tensor(np.asarray(x[start : start + self.batch_size]), device=self.device)
            out = m.run_snn(xb, max(timesteps), snapshots=set(timesteps))
            for t, part in parts.items():
                part.add(out["at"][t], xb.shape[0] / len(x))
        return {t: part.result() for t, part in parts.items()}

    # -- prefix replay: sensitivity searches (snnc/backends/torch/replay.py) ----------------
    def record_steps(self, graph: Graph, x, timesteps: int, keep: Collection[str]) -> Any:
        """A whole SNN run of ``graph`` that keeps the values ``keep`` at every step, for
        ``run_snn_from``."""
        from snnc.backends.torch import replay

        return replay.record_steps(self.module(graph), x, timesteps, keep, self.batch_size, self.device)

    def run_snn_from(self, graph: Graph, x, start: int, recording: Any, spikes_of: Sequence[str]
                     ) -> tuple[np.ndarray, dict[str, float]]:
        """(logits, spikes per sample of ``spikes_of``) of ``run_snn`` on ``graph``, computing only
        ``graph.nodes[start:]`` and reading what they need from before from ``recording`` (a run of
        a graph whose nodes before ``start`` are the same); the same floats as ``run_snn``."""
        from snnc.backends.torch import replay

        return replay.run_from(self.module(graph), x, start, recording, spikes_of, self.device)

    def run_variants_from(self, graph: Graph, variants: Sequence[Graph], node: str, x, start: int, recording: Any
                          ) -> list[tuple[np.ndarray, float]]:
        """``run_snn_from(v, x, start, recording, [node])`` for each graph v of ``variants``, which
        differ from ``graph`` only at ``node``, as one simulation with the variants stacked along the
        batch (replay.run_variants_from)."""
        from snnc.backends.torch import replay

        alone = [self.module(replay.one_node(v, node)) for v in variants]  # not a copy of every weight each
        return replay.run_variants_from(self.module(graph), alone, node, x, start, recording, self.device)
