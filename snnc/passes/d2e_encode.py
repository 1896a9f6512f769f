"""d2e-encode: replace the direct coding of a direct-coded SNN by an event encoding of its input.

A direct-coded SNN feeds the analog input to its first layer at every step, so that layer
multiplies (MACs) T times.  This pass puts an event code in front of it, so the first layer
accumulates the weights of input events instead (SOPs) and every synaptic op of the graph
reads events (``verify(graph, require_event=True)`` passes when the rest of the graph is
event-based).

Schemes (``scheme=``):
* ``if`` (default): an integrate-and-fire encoder layer.  The ``encode{scheme=direct}`` stays
  and a ``neuron`` (IF, soft reset, v_th = out_scale = m, v_init = 0.5) is inserted after it:
  each input element x emits round(x·T/m) spikes (within one), evenly spread over the T
  steps, each worth m.  A deterministic rate code: the first layer's drive per step, W·s_t·m,
  averages W·x over the window (the mean drive of direct coding) and never exceeds W·m, so
  it stays as smooth as the analog input.  m = ``input-max``, or the calibration data's
  maximum (1 without data).  The encoder's T membrane updates per input element are adds
  outside the synapses (not counted, like every neuron update).  Inputs must be >= 0.
* ``rate``: Bernoulli spikes with p = x (``encode{scheme=rate}``, seeded with ``ctx.seed``).
  E[e_t] = x: the mean drive is kept, with sampling noise on top.  Inputs in [0, 1].
* ``phase``: x written in ``bits`` binary digits, one per step, step k weighted by
  bits·2^-(k+1) (graded events: a per-step factor on the accumulated current); a window of ``bits``
  steps averages x quantised to ``bits`` bits, so the mean drive is kept, but front-loaded.
  ``bits=0`` picks the largest divisor of T that is at most 8.  Inputs in [0, 1].
* ``ttfs``: one spike per positive input, earlier for larger values.  Over T steps the first
  layer receives W·1[x > 0], against T·W·x under direct coding: the value survives only in
  the spike time.  To keep the mean drive on the calibration data, the first layer's weights
  are multiplied by g = T·mean(x)/mean(1[x > 0]) (1 without data; the factor is reported).
  This keeps an average, not the function.  Inputs in [0, 1].

Changes: the input encoders (an ``encode`` is inserted after a graph input that has none);
``if`` inserts the encoder neurons ``<encoder>_if``; ``ttfs`` scales the weights of the
first synaptic layers (reached from the encoder through flatten / reshape / identity /
dropout); the graph attribute ``timesteps`` becomes ``ctx.timesteps``.  Keeps the graph as
it found it (the direct-coded teacher, at the same T) in ``graph.analyses`` (a ``DirectCodedTeacher``)
for d2e-calibrate and d2e-finetune.
Preserves: every other node and parameter.  Lossy: ``if`` quantises x to T/m levels,
``rate`` adds sampling noise, ``phase`` quantises to ``bits`` bits, ``ttfs`` keeps only the
spike time; d2e-calibrate and d2e-finetune recover what they can.
Requires: nothing (calibration data, when given, is read once, a batch at a time, and checked
against the scheme's range).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc import distributed
from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._params import store_param


@dataclass(frozen=True, kw_only=True)
class DirectCodedTeacher:
    """What d2e-encode leaves in ``graph.analyses``: the direct-coded graph it started from (at the
    same T), the teacher of d2e-calibrate and d2e-finetune."""

    graph: Graph
_MAX_PHASE_BITS = 8


class EventCode(enum.Enum):
    IF = "if"  # integrate-and-fire encoder neurons: a deterministic rate code
    RATE = "rate"  # Bernoulli spikes
    PHASE = "phase"  # binary phase code, graded by step
    TTFS = "ttfs"  # time to first spike


_ENCODE_SCHEME = {
    EventCode.RATE: O.Scheme.RATE,
    EventCode.PHASE: O.Scheme.PHASE,
    EventCode.TTFS: O.Scheme.TTFS,
}


def teacher_of(graph: Graph, pass_name: str) -> Graph:
    """The direct-coded graph d2e-encode started from (the teacher of calibrate and finetune)."""
    teacher = graph.analyses.get(DirectCodedTeacher)
    if teacher is None:
        raise PassError(
            f"pass '{pass_name}' needs the direct-coded source graph; run d2e-encode earlier in the same pipeline"
        )
    return teacher.graph


def timesteps_of(ctx: PassContext, graph: Graph) -> int:
    """The graph's T (set by d2e-encode), else the context's."""
    t = graph.attrs.timesteps or ctx.timesteps
    if t < 1:
        raise PassError(f"timesteps={t} must be >= 1")
    return t


def is_input_encoder(graph: Graph, node: Node) -> bool:
    """A neuron that reads an ``encode`` node directly: an input encoder (``scheme=if``), not a
    layer of the source network."""
    src = graph.producer(node.inputs[0]) if node.inputs else None
    return isinstance(node.op, O.Neuron) and src is not None and isinstance(src.op, O.Encode)


def network_neurons(graph: Graph) -> list[Node]:
    """The spiking layers of the source network: neurons that emit spikes, encoders excluded."""
    return [
        n
        for n in graph.nodes
        if isinstance(n.op, O.Neuron) and n.op.emit is O.Emit.SPIKES and not is_input_encoder(graph, n)
    ]


def phase_bits(timesteps: int) -> int:
    """The largest divisor of T that is at most 8 (a phase window that tiles T exactly)."""
    return max(b for b in range(1, min(timesteps, _MAX_PHASE_BITS) + 1) if timesteps % b == 0)


@register_pass
@dataclass(frozen=True)
class D2EEncode(Pass):
    name: ClassVar[str] = "d2e-encode"
    scheme: EventCode = EventCode.IF
    bits: int = 0  # phase: digits per window; 0 = the largest divisor of T that is at most 8
    input_max: float = 0.0  # if: the input value that fires every step; 0 = the calibration maximum
    bursts: int = 1  # if: up to this many spikes per step, each worth input-max/bursts

    def option_problems(self) -> list[str]:
        if self.bits < 0 or self.input_max < 0 or self.bursts < 1:
            return [f"bits={self.bits} and input-max={self.input_max} must be >= 0, bursts={self.bursts} >= 1"]
        return []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        timesteps = ctx.timesteps
        if timesteps < 1:
            raise PassError(f"d2e-encode: timesteps={timesteps} must be >= 1")
        x = self._check_range(ctx)
        if DirectCodedTeacher not in graph.analyses:
            teacher = graph.copy()
            teacher.attrs = dataclasses.replace(teacher.attrs, timesteps=timesteps)
            graph.analyses.put(DirectCodedTeacher(graph=teacher))
        result: dict[str, object] = {"scheme": self.scheme.value, "timesteps": timesteps}
        encoders = [_direct_encoder(graph, name) for name, _ in graph.inputs]
        if self.scheme is EventCode.IF:
            top = self.input_max or (x.hi if x is not None and x.hi > 0 else 1.0)
            for encoder in encoders:
                _insert_if_encoder(graph, encoder, top, self.bursts)
            result["input_max"] = top
        else:
            bits = self.bits or phase_bits(timesteps)
            if self.scheme is EventCode.PHASE:
                result["bits"] = bits
                if timesteps % bits:
                    ctx.note(
                        f"d2e-encode: T={timesteps} is not a multiple of bits={bits}; the last window is short"
                    )
            op = O.Encode(
                scheme=_ENCODE_SCHEME[self.scheme],
                seed=ctx.seed,
                bits=bits if self.scheme is EventCode.PHASE else 8,
            )
            for encoder in encoders:
                encoder.op = op
            if self.scheme is EventCode.TTFS:
                gain = x.ttfs_gain(timesteps) if x is not None else 1.0
                for encoder in encoders:
                    for layer in first_layers(graph, encoder):
                        _scale_weights(graph, layer, gain)
                result["weight_gain"] = gain
        graph.attrs = dataclasses.replace(graph.attrs, timesteps=timesteps)
        graph.infer_types()
        ctx.results[self.name] = result

    def _check_range(self, ctx: PassContext) -> InputSummary | None:
        """What the scheme needs of the calibration inputs (None without data), checked against the
        scheme's input range."""
        if ctx.calibration is None:
            top = "input-max (1 by default)" if self.scheme is EventCode.IF else "1"
            ctx.note(f"d2e-encode: no calibration data; assuming inputs in [0, {top}]")
            return None
        x = InputSummary.of(ctx.calibration.x, ctx.calibration.batch_size)
        limit = np.inf if self.scheme is EventCode.IF else 1.0
        if x.lo < 0.0 or x.hi > limit:
            span = "[0, inf)" if self.scheme is EventCode.IF else "[0, 1]"
            raise PassError(
                f"d2e-encode: scheme={self.scheme.value} reads inputs in {span}, the calibration data spans "
                f"[{x.lo:.4g}, {x.hi:.4g}]; rescale the data (folding the normalisation into the first layer)"
                + ("" if self.scheme is EventCode.IF else " or use scheme=if")
            )
        return x


@dataclass(frozen=True, kw_only=True)
class InputSummary:
    """The calibration inputs as d2e-encode needs them: range, sum and number of positive values."""

    lo: float  # min(0, every value)
    hi: float  # max(0, every value)
    total: float  # the sum of every value (float64, added batch by batch in order)
    positive: int  # how many values are > 0

    @staticmethod
    def of(x, batch_size: int) -> InputSummary:
        """Read ``x`` a batch at a time (memory: one batch).  Under torchrun each rank reads its
        batches and the per-batch figures are gathered and added in batch order, so every rank,
        and any number of them, gets the same summary."""
        rows = {}
        for i, xb, _ in distributed.my_batches(x, None, batch_size):
            xb = np.asarray(xb, dtype=np.float32)
            rows[i] = (float(xb.min(initial=0.0)), float(xb.max(initial=0.0)), float(xb.sum(dtype=np.float64)),
                       int(np.count_nonzero(xb > 0)))
        parts = distributed.gather_rows(rows)
        total = 0.0
        for part in parts:  # batch order
            total += part[2]
        return InputSummary(lo=min((p[0] for p in parts), default=0.0), hi=max((p[1] for p in parts), default=0.0),
                            total=total,
                            positive=sum(p[3] for p in parts))

    def ttfs_gain(self, timesteps: int) -> float:
        """g with g·mean(1[x > 0]) = T·mean(x): TTFS's total drive per window matched to direct coding's."""
        return float(timesteps * self.total / self.positive) if self.positive > 0 else 1.0


def _direct_encoder(graph: Graph, value: str) -> Node:
    """The direct encoder reading graph input ``value`` (inserted if there is none)."""
    encoders = [u for u in graph.users(value) if isinstance(u.op, O.Encode)]
    others = [u for u in graph.users(value) if not isinstance(u.op, O.Encode)]
    if len(encoders) > 1 or (encoders and others):
        raise UnsupportedError(
            f"d2e-encode: input %{value} is read by {len(encoders)} encoders and {len(others)} other nodes; "
            "expected one encoder"
        )
    if encoders:
        enc = encoders[0]
        scheme = enc.op.scheme  # type: ignore[attr-defined]
        if scheme is not O.Scheme.DIRECT:
            raise PassError(f"d2e-encode: encode %{enc.name} is already event-coded (scheme={scheme.value})")
        if any(is_input_encoder(graph, u) for u in graph.users(enc.name)):
            raise PassError(f"d2e-encode: encode %{enc.name} already feeds an encoder neuron")
        return enc
    enc = Node(graph.fresh_name(f"{value}_enc"), O.Encode(), (value,))
    graph.replace_uses(value, enc.name)
    graph.nodes.insert(0, enc)
    return enc


def _insert_if_encoder(graph: Graph, encoder: Node, top: float, bursts: int) -> None:
    """encode{direct} -> neuron{if, soft reset, v_init 0.5, v_th = out_scale = top/bursts} -> users."""
    q = top / bursts
    op = O.Neuron(
        model=O.NeuronModel.IF, v_th=q, reset=O.Reset.SOFT, v_init=0.5, out_scale=q, max_spikes=bursts
    )
    node = Node(graph.fresh_name(f"{encoder.name}_if"), op, (encoder.name,), loc=encoder.loc)
    graph.replace_uses(encoder.name, node.name)
    graph.insert_after(encoder, node)


def first_layers(graph: Graph, encoder: Node) -> list[Node]:
    """The synaptic ops that read ``encoder``'s value, directly or through structure ops."""
    found: list[Node] = []
    frontier = [encoder]
    while frontier:
        node = frontier.pop()
        for user in graph.users(node.name):
            if user.op.shape_only:
                frontier.append(user)
            elif user.op.synaptic:
                found.append(user)
            else:
                raise UnsupportedError(
                    f"d2e-encode: encode %{encoder.name} reaches {user.op.name} %{user.name} before any synaptic "
                    "layer; the input scale cannot be folded"
                )
    return found


def _scale_weights(graph: Graph, layer: Node, gain: float) -> None:
    if layer.op.weighted:
        store_param(graph, layer, "weight", np.asarray(graph.params[layer.params["weight"]]) * gain)
    elif isinstance(layer.op, O.Scale):
        layer.op = dataclasses.replace(layer.op, factor=layer.op.factor * gain)
    else:
        raise UnsupportedError(
            f"d2e-encode: the input's first layer {layer.op.name} %{layer.name} has no weights to carry the "
            f"TTFS gain {gain:.4g}; use scheme=if, rate or phase"
        )
