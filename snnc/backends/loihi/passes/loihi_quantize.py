"""loihi-quantize: Loihi's fixed-point formats, written into the graph as integer units.

After this pass the graph *is* the quantised network, in the units of the chip (the convention
``snnc.backends.loihi.lower`` reads; one Loihi layer = a conv2d / linear and the neuron it feeds):

* weights: lava-dl netx's form, even integers in [-256, 254] (an 8-bit mantissa, ``weight-bits``
  fewer for a coarser grid), one float ``unit`` per layer such that the float current is
  ``unit · (W_int · input)`` (``snnc.backends.loihi.fixed_point.quantize_weights``: the largest
  positive or negative weight reaches the end of the range);
* per-channel weight exponents (``channel-exponents=K``, default 4): an output channel whose weights are
  2^k below its population's largest (k <= K) gets a grid 2^k times finer (its own 8-bit mantissa range),
  stored as ``mantissa · 2^(K' − k)`` in a unit 2^K' finer (K' the largest k used); the chip runs each
  exponent as a synapse group of its own with lava's ``weight_exp``.  K' is lowered where the finer unit
  would take the threshold mantissa past 2^11 (a step's input then has 64 thresholds before lava's
  24-bit current wraps), the bias past its 13-bit mantissa or the graded input past 2^17.  Folded
  per-channel thresholds leave some channels (mobilenet_v2's depthwise convs) a few steps of one
  population-wide grid; this gives them 8 bits of their own.  ``netx-chain`` (default) keeps one grid
  on a chain network, which lava-dl netx (one weight exponent per layer) can load;
* the neuron's threshold ``v_th`` becomes its 17-bit mantissa ``vth_mant = round(θ / unit)`` (the chip
  compares ``v << 6`` with ``vth_mant << 6``, so graph voltage = chip voltage / 64);
* the bias becomes the 13-bit mantissa for netx's fixed exponent 6: ``round(b / unit)``;
* the leak becomes its 12-bit decay: ``beta = 1 − dv/4096`` with ``dv = round(4096 (1 − β))``
  (``alpha`` likewise for CUBA neurons, with lava's ``du`` offset of 1);
* a direct-coded input becomes graded spikes: a ``scale{factor=Q}`` after the ``encode`` node, Q the
  largest power of two with ``|Q x| ≤ 2^(input-bits − 1) − 1`` on the calibration data and with the
  first layer's per-step input ``|W_int · round(Q x)|`` below 2^17 (lava's 24-bit current holds
  ``a << 6``); the encoder's ``bits`` attribute records ``input-bits``, the graded-spike width;
* the synapse groups of one population (the operands of a join, ``loihi-legalize``) share one unit:
  the weight grid is set by the largest weight of any of them, since the population has one threshold;
  each keeps its own (corrected) bias, and the chip adds them;
* the last conv2d / linear (read by the readout, no neuron) is quantised the same way and a host-side
  ``scale{factor=unit}`` before the readout turns its integer output back into logits.  On the chip it
  is a non-firing integrator whose voltage sums T steps of its input: that sum must stay within
  ``|v| <= 2^17 - 1`` (graph units; above it the integrator reaches its threshold and resets to 0, below
  it the voltage saturates).  Its unit is made coarser (first fewer channel exponents, then weights on
  2^-j of the mantissa range) until the largest running sum on the calibration data, times
  ``readout-headroom``, fits;

Integer values are stored as float32 (exact below 2^24), so the torch simulator runs the quantised
network; it differs from the chip only where lava truncates (the leak's ``>> 12``), wraps or saturates,
and in the chip's one step of latency per layer (see ``snnc.backends.loihi.target``).

The calibration samples (the first ``samples``) are read one batch at a time, as often as needed (input
range, mean inputs for the bias correction, the graded layer's peak input, accuracy): the pass holds one
batch and per-layer sums, whatever ``samples`` is.

Reports, per layer, the quantisation error of weights, threshold and bias (max, RMS, relative,
saturated count) in ``ctx.results["loihi-quantize"]``, and with labelled
calibration data the float SNN's accuracy before and after on ``samples`` calibration samples.
Lossy: a weight moves by at most half a grid step (``unit``, ≤ 1/254 of the largest |w| at 8 bits; with
channel exponents ≤ 1/254 of its channel's largest |w|, or 2^-K of the population's for smaller ones);
θ and b by at most ``unit / 2``; the input by ``1 / (2Q)``.
Requires: ``loihi-legalize``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from snnc.backends.loihi import fixed_point as fp
from snnc.backends.loihi.bitacc import BIAS_MANT_MAX, BIAS_MANT_MIN
from snnc.backends.loihi.lower import Wiring, WiringIndex, is_join
from snnc.backends.loihi.passes.loihi_legalize import SYNAPSE_OPS, structure_problems
from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._params import store_param
from snnc.passes._refusals import format_refusals
from snnc.passes._samples import sample_batches

INPUT_LIMIT = (1 << 17) - 1  # |a| per step: lava's 24-bit current holds a << 6
MAX_WEIGHT_EXP = 7  # lava's weight_exp is a signed 4-bit field: at most << 7
# with channel exponents the unit gets finer and the threshold mantissa larger; past 2^11 it gains no
# accuracy that matters and leaves a step's input only 2^17 / 2^11 = 64 thresholds before the current wraps
FINE_VTH_LIMIT = 1 << 11
DECAY_UNITY = 4096
# the readout integrator (vth_mant = 2^17 - 1, dv = 0): its voltage v << 6 fires (and resets) above
# vth_mant << 6 and saturates at -(2^23 - 1), so its running sum must stay within +-(2^17 - 1)
READOUT_LIMIT = (1 << 17) - 1
MAX_READOUT_SHRINK = 6  # the readout's weights keep at least 2^(8-6) = 4 steps each side


@register_pass
@dataclass(frozen=True)
class LoihiQuantize(Pass):
    name: ClassVar[str] = "loihi-quantize"
    weight_bits: int = 8
    input_bits: int = 8
    samples: int = 256  # calibration samples for the input range and the accuracy check (0: all)
    bias_correction: bool = True
    # K: up to 2^K finer weight grids for output channels of small weights, one synapse group per
    # weight exponent (0: one grid per population, the netx form)
    channel_exponents: int = 4
    # a chain (no join, fan-out or concat) keeps one grid per population, so that lava-dl netx, which
    # has one weight exponent per layer, loads it; other networks need hand-wired lava processes anyway
    netx_chain: bool = True
    # the readout integrator's largest running sum on the calibration data must fit its voltage range this
    # many times over (unseen inputs sum higher: on mobilenet_v2 at T = 32 the test images went 1.27 x
    # past the calibration images' peak)
    readout_headroom: float = 2.0

    def option_problems(self) -> list[str]:
        problems = []
        if not 1 <= self.weight_bits <= 8:
            problems.append(f"weight-bits={self.weight_bits} must be in 1..8")
        if not 2 <= self.input_bits <= 24:
            problems.append(f"input-bits={self.input_bits} must be in 2..24 (graded spikes)")
        if self.samples < 0:
            problems.append(f"samples={self.samples} must be >= 0 (0: all)")
        if not self.readout_headroom >= 1.0:
            problems.append(f"readout-headroom={self.readout_headroom} must be >= 1")
        if not 0 <= self.channel_exponents <= MAX_WEIGHT_EXP:
            problems.append(f"channel-exponents={self.channel_exponents} must be in 0..{MAX_WEIGHT_EXP} "
                            "(Loihi's weight exponent)")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        problems = structure_problems(graph)
        if problems:
            raise PassError(format_refusals("loihi-quantize: run loihi-legalize first", problems, graph))
        x = None if ctx.calibration is None else _Stream(ctx, self.name, self.samples)
        weighted = [n for n in graph.nodes if isinstance(n.op, SYNAPSE_OPS)]
        # the float graph's accuracy from the run that measures the mean inputs (one simulation, not two)
        if self.bias_correction:
            means, before = _mean_inputs(ctx, graph, weighted, x)
        else:
            means, before = {}, _accuracy(ctx, graph, x)
        enc = _encoder(graph)
        levels = 1.0
        if enc is not None and enc.op.scheme is O.Scheme.DIRECT:  # type: ignore[attr-defined]
            levels = self._input_levels(ctx, graph, x)
        result: dict[str, Any] = {"weight_bits": self.weight_bits, "layers": {}}
        # the readout integrator's largest |running sum| in float units (None: no readout integrator)
        readout_sum = _readout_peak_sum(ctx, graph, weighted, x)
        # who reads whom, looked up once: planning asks it for every plan of every member of a join, and
        # Graph.users scans every node (DenseNet's joins of up to 25 groups: 35 of the pass's 66 s); only
        # _apply's readout scale rewires the graph, and the index is rebuilt after it
        wiring = WiringIndex(graph)
        graded = {n.name for n in weighted if _reads_input(wiring, n)}
        start = levels
        # the graded input's levels: the first layer's input per step must fit lava's 24-bit current, and
        # its bias the 13-bit mantissa (a finer input makes the layer's unit, and so its bias, finer)
        while levels > 1.0 and not all(
            _fits(_plan(fp, graph, n, levels, self.weight_bits, means.get(n.name), x, wiring=wiring), x, levels)
            for n in weighted if n.name in graded
        ):
            levels /= 2
        if levels != start:
            ctx.note(f"loihi-quantize: input levels lowered from {start:g} to {levels:g} so that the first layer's "
                     "input per step stays below 2^17 and its bias fits the 13-bit mantissa")
        fine = 0 if self.netx_chain and _is_chain(graph, wiring) else self.channel_exponents
        result["channel_exponents"] = fine
        for members in _populations(graph, wiring, weighted):
            # the synapse groups of one population share its unit: one weight scale for all of them
            kinds = {m.name in graded for m in members}
            if len(kinds) > 1:
                raise UnsupportedError(f"loihi-quantize: {', '.join('%' + m.name for m in members)}: a join of the "
                                       "graded input and spikes has no common weight unit on Loihi")
            q = levels if members[0].name in graded else 1.0
            span = _span(graph, members) if len(members) > 1 else None
            bits = self.weight_bits

            def plans(bits: int, k: int = 0, q: float = q, span: tuple[float, float] | None = span,
                      members=members, wiring: Wiring = wiring) -> list:
                return [_plan(fp, graph, m, q, bits, means.get(m.name), x, span, k, wiring=wiring) for m in members]

            k = self._unit_exp(graph, members, span, fine)
            group = plans(bits, k)
            # channel exponents only where the threshold mantissa, the bias and a graded input still fit
            while k > 0 and not all(_fine_fits(p, x, q, p.node.name in graded) for p in group):
                k -= 1
                group = plans(bits, k)
            # a coarser grid makes room for a bias (a join's: for the sum of its groups' biases)
            while not (all(_bias_fits(p) for p in group) and _join_bias_fits(group)) and bits > 2:
                bits, k = bits - 1, 0
                group = plans(bits)
            bias_bits = bits
            if not _join_bias_fits(group):  # even the coarsest grid: the sum saturates, as one bias does
                _saturate_join_bias(group)
                ctx.note(f"loihi-quantize: {', '.join('%' + m.name for m in members)}: the summed bias of one "
                         "population's synapse groups saturated at the 13-bit mantissa")
            if readout_sum is not None and readout_sum[0] in {m.name for m in members}:
                # the integrator's voltage: a coarser grid until its running sum fits, with headroom
                need = readout_sum[1] * self.readout_headroom
                lo, hi = span if span is not None else _span(graph, members)
                shrink = 0  # the weights use 2^-shrink of the mantissa range: a unit 2^shrink coarser
                while need / group[0].unit > READOUT_LIMIT and (k > 0 or shrink < MAX_READOUT_SHRINK):
                    k, shrink = (k - 1, shrink) if k > 0 else (0, shrink + 1)
                    wide = (lo * 2.0**shrink, hi * 2.0**shrink) if shrink else span
                    group = plans(bits, k, span=wide)
                for p in group:
                    p.report["readout_peak_sum"] = readout_sum[1] / p.unit
                    p.report["readout_limit"] = READOUT_LIMIT
                    p.report["readout_range_shrink"] = shrink
                if need / group[0].unit > READOUT_LIMIT:
                    ctx.note(f"loihi-quantize: the readout's sum over T steps reaches {readout_sum[1] / group[0].unit:.0f} "
                             f"on the calibration data (x {self.readout_headroom:g} headroom), past the integrator's "
                             f"2^17 - 1 even with weights of 2^-{shrink} of the mantissa range")
                elif shrink:
                    ctx.note(f"loihi-quantize: readout %{members[0].name}: weights on 2^-{shrink} of the mantissa range "
                             f"(a unit 2^{shrink} coarser) so that its sum over T steps ({readout_sum[1] / group[0].unit:.0f}"
                             f" at most on the calibration data, x {self.readout_headroom:g} headroom) stays within the "
                             "integrator's 2^17 - 1")
            for node, plan in zip(members, group, strict=True):
                if bias_bits != self.weight_bits:
                    ctx.note(f"loihi-quantize: {node.op.name} %{node.name}: {bits}-bit weights so that its bias "
                             "fits the 13-bit mantissa of netx's exponent 6")
                if not _bias_fits(plan):
                    ctx.note(f"loihi-quantize: {node.op.name} %{node.name}: bias saturated at the 13-bit mantissa")
                if plan.report.get("vth_mant") == 1 and plan.report["threshold"]["clipped"]:
                    ctx.note(f"loihi-quantize: {node.op.name} %{node.name}: threshold below half a weight step (its "
                             "largest weight is over 500 thresholds); raised to 1 step, the smallest Loihi has")
                peak = _peak_input(node, plan, x, q) if node.name in graded else _worst_input(plan)
                if peak > INPUT_LIMIT:
                    ctx.note(f"loihi-quantize: {node.op.name} %{node.name}: its input per step can reach {peak:.0f} "
                             "> 2^17 - 1; lava's 24-bit current wraps if that many inputs arrive at once")
                _apply(graph, node, plan)
                if plan.neuron is None:  # the readout: _apply may have inserted its host-side scale
                    wiring = WiringIndex(graph)
                result["layers"][node.name] = {**plan.report, "max_abs_input": peak, "input_limit": INPUT_LIMIT}
        if enc is not None and enc.op.scheme is O.Scheme.DIRECT:  # type: ignore[attr-defined]
            _insert_input_scale(graph, enc, levels, self.input_bits)
            result["input"] = {"scheme": "direct", "levels": levels, "message_bits": self.input_bits,
                               "max_abs_x": x.peak_abs if x is not None else None}
        elif enc is not None:
            result["input"] = {"scheme": enc.op.scheme.value, "message_bits": 0}  # type: ignore[attr-defined]
        graph.infer_types()
        if before is not None and x is not None:
            result["accuracy"] = {"split": "calibration", "samples": x.count, "float_snn": before,
                                  "quantised_snn": _accuracy(ctx, graph, x)}
        ctx.results[self.name] = result

    def _unit_exp(self, graph: Graph, members: list[Node], span: tuple[float, float] | None, k_max: int) -> int:
        """K' of a population: the finest (<= ``k_max``) any of its members' channels can use."""
        if k_max == 0:
            return 0
        return max(fp.quantize_weights(np.asarray(m.param(graph, "weight"), dtype=np.float64), self.weight_bits,
                                       span=span, channel_exp_max=k_max).unit_exp for m in members)

    def _input_levels(self, ctx: PassContext, graph: Graph, x: _Stream | None) -> float:
        """The largest power of two Q with |Q x| within the graded-spike range."""
        top = (1 << (self.input_bits - 1)) - 1
        if x is None:
            peak = 1.0
            ctx.note("loihi-quantize: no calibration data; assuming inputs in [-1, 1] for the graded input range")
        else:
            peak = x.peak_abs or 1.0
        return float(2.0 ** np.floor(np.log2(top / peak)))


# ----------------------------------------------------------------------------------------------------
# one layer


@dataclass
class _Plan:
    """The integers of one layer, before they are written into the graph."""

    node: Node
    weight: np.ndarray
    bias: np.ndarray | None
    unit: float
    neuron: Node | None
    neuron_op: O.Neuron | None
    readout_scale: float
    report: dict[str, Any]


def _populations(graph: Graph, wiring: Wiring, weighted: list[Node]) -> list[list[Node]]:
    """The conv2d / linear nodes grouped by the population they feed: a join's operands together (in
    the add's order), every other node alone; in graph order of the first member."""
    out: list[list[Node]] = []
    seen: set[str] = set()
    for node in weighted:
        if node.name in seen:
            continue
        user = wiring.only_user(node.name)
        if user is not None and is_join(wiring, user):
            members = [p for v in user.inputs if (p := wiring.producer(v)) is not None]  # is_join: all are
        else:
            members = [node]
        seen.update(m.name for m in members)
        out.append(members)
    return out


def _span(graph: Graph, members: list[Node]) -> tuple[float, float]:
    """The smallest and largest weight of all ``members``."""
    ws = [np.asarray(m.param(graph, "weight"), dtype=np.float64) for m in members]
    return min(float(w.min(initial=0.0)) for w in ws), max(float(w.max(initial=0.0)) for w in ws)


def _plan(fp, graph: Graph, node: Node, levels: float, weight_bits: int, mean_in: np.ndarray | None = None,
          x: _Stream | None = None, span: tuple[float, float] | None = None, unit_exp: int = 0,
          wiring: Wiring | None = None) -> _Plan:
    w = np.asarray(node.param(graph, "weight"), dtype=np.float64)
    wq = fp.quantize_weights(w, num_bits=weight_bits, span=span, channel_exp_max=unit_exp,
                             channel_exp_top=unit_exp if unit_exp else None)
    unit = wq.scale / levels
    report: dict[str, Any] = {"unit": unit, "weight": wq.error.to_json(), "hw_weight_bits": wq.hw_weight_bits}
    if wq.channel_exp is not None:
        exps, counts = np.unique(wq.channel_exp, return_counts=True)
        report["weight_exponents"] = {str(int(e)): int(c) for e, c in zip(exps, counts, strict=True)}
    b = node.param(graph, "bias")
    if mean_in is not None:
        # bias correction: the rounded weights (and a graded input's rounding) shift each output's mean
        # current by W_q · E[rounded input] − W · E[input]
        mean_q = mean_in
        if levels != 1.0 and x is not None:
            mean_q = x.rounded_mean(levels).reshape(mean_in.shape)
        shift = _mean_current(node, wq.w_int * wq.scale, mean_q) - _mean_current(node, w, mean_in)
        report["bias_correction_max"] = float(np.abs(shift).max(initial=0.0))
        b = (np.zeros(len(shift)) if b is None else np.asarray(b, dtype=np.float64)) - shift
    bias = None
    if b is not None:
        mant, _, err = fp.quantize_bias(np.asarray(b, dtype=np.float64), unit)
        bias = mant.astype(np.float64)
        report["bias"] = err.to_json()
    wiring = graph if wiring is None else wiring
    user = wiring.users(node.name)[0]
    if is_join(wiring, user):  # one synapse group of a population: its neuron is behind the add
        user = wiring.users(user.name)[0]
    if isinstance(user.op, O.Neuron):
        op: O.Neuron = user.op
        vth, err = fp.quantize_threshold(op.v_th, unit)
        report.update(vth_mant=vth, threshold=err.to_json())
        changes: dict[str, Any] = {"v_th": float(vth)}
        if op.model is not O.NeuronModel.IF:
            dv, err = fp.quantize_decay(1.0 - op.beta, offset=0)
            changes["beta"] = 1.0 - dv / DECAY_UNITY
            report.update(dv=int(dv), leak=err.to_json())
        if op.model is O.NeuronModel.CUBA:
            du, err = fp.quantize_decay(1.0 - op.alpha, offset=1)
            changes["alpha"] = 1.0 - (du + 1) / DECAY_UNITY
            report.update(du=int(du), current_decay=err.to_json())
        return _Plan(node, wq.w_int.astype(np.float64), bias, unit, user, dataclasses.replace(op, **changes), 1.0, report)
    return _Plan(node, wq.w_int.astype(np.float64), bias, unit, None, None, unit, report)


def _mean_inputs(ctx: PassContext, graph: Graph, weighted: list[Node], x: _Stream | None
                 ) -> tuple[dict[str, np.ndarray], float | None]:
    """Per conv2d / linear, the mean of its input over samples and steps, and the graph's accuracy on
    labelled samples (what ``_accuracy`` gives; None otherwise), from one SNN run of the float graph."""
    if x is None or ctx.simulator is None or not graph.attrs.timesteps:
        return {}, _accuracy(ctx, graph, x)
    sums: dict[str, np.ndarray] = {}
    correct = 0
    for xb, yb in x.batches():
        run = ctx.simulator.run_snn(graph, xb, graph.attrs.timesteps, record=[n.inputs[0] for n in weighted])
        if yb is not None:
            correct += int((run.predictions == yb).sum())
        for n in weighted:
            part = np.asarray(run.recorded[n.inputs[0]], dtype=np.float64).sum(axis=0)
            sums[n.name] = sums[n.name] + part if n.name in sums else part
    return {name: total / x.count for name, total in sums.items()}, correct / x.count if x.labelled else None


@runtime_checkable
class _ReadsSteps(Protocol):
    """A simulator that returns the runs of several step counts from one run of the largest (the torch
    simulator's ``run_snn_steps``)."""

    def run_snn_steps(self, graph: Graph, x: Any, timesteps: Sequence[int]) -> dict[int, Any]: ...


def _readout_peak_sum(ctx: PassContext, graph: Graph, weighted: list[Node],
                      x: _Stream | None) -> tuple[str, float] | None:
    """The conv2d / linear the readout integrates (through host-side scales, or the join it feeds) and
    the largest |sum over steps 1..t of its output| over t <= T, channels and calibration samples, in
    float units: from the float SNN's running mean logits at every t (one run of T steps)."""
    if x is None or ctx.simulator is None or not graph.attrs.timesteps:
        return None
    readouts = [n for n in graph.nodes if isinstance(n.op, O.Readout)]
    if len(readouts) != 1 or readouts[0].op.mode is not O.ReadoutMode.MEAN_CURRENT:  # type: ignore[attr-defined]
        return None
    factor, prod = 1.0, graph.producer(readouts[0].inputs[0])
    while prod is not None and isinstance(prod.op, O.Scale) and not prod.params:
        factor *= prod.op.factor
        prod = graph.producer(prod.inputs[0])
    if prod is None or factor == 0.0:
        return None
    if is_join(graph, prod):
        prod = graph.producer(prod.inputs[0])
    if prod is None or prod.name not in {n.name for n in weighted}:
        return None
    T = graph.attrs.timesteps
    peak = 0.0
    for xb, _ in x.batches():
        sim = ctx.simulator
        steps = list(range(1, T + 1))
        # the running mean at every t from one run where the simulator can (a step does not read T)
        at = sim.run_snn_steps(graph, xb, steps) if isinstance(sim, _ReadsSteps) else {
            t: sim.run_snn(graph, xb, t) for t in steps}
        peak = max(peak, max(float(np.abs(t * at[t].logits).max(initial=0.0)) for t in at))
    return prod.name, peak / abs(factor)


def _mean_current(node: Node, dw: np.ndarray, mean_in: np.ndarray) -> np.ndarray:
    """Per output channel, the mean of ``dw`` applied to the mean input (over positions for a conv)."""
    if isinstance(node.op, O.Linear):
        return dw @ mean_in.reshape(-1)
    op: O.Conv2d = node.op  # type: ignore[assignment]
    out = F.conv2d(torch.as_tensor(mean_in)[None], torch.as_tensor(dw), None, op.stride, op.padding, op.dilation,
                   op.groups)[0]
    return out.mean(dim=(1, 2)).numpy()


def _apply(graph: Graph, node: Node, plan: _Plan) -> None:
    store_param(graph, node, "weight", plan.weight)
    if plan.bias is not None:
        if "bias" not in node.params:
            node.params["bias"] = graph.fresh_param(f"{node.name}.bias")
            graph.params[node.params["bias"]] = plan.bias.astype(np.float32)
        store_param(graph, node, "bias", plan.bias)
    else:  # a join's bias may all sit on its first group (_saturate_join_bias)
        node.params.pop("bias", None)
    if plan.neuron is not None and plan.neuron_op is not None:
        plan.neuron.op = plan.neuron_op
        return
    # the readout layer: a host-side scale turns the integer output back into logits (after the add of
    # a join into the integrators, once: its members share one unit)
    user = graph.users(node.name)[0]
    if is_join(graph, user):
        if user.inputs[0] != node.name:
            return
        node, user = user, graph.users(user.name)[0]
    if isinstance(user.op, O.Scale):
        user.op = dataclasses.replace(user.op, factor=user.op.factor * plan.readout_scale)
        return
    s = Node(graph.fresh_name(f"{node.name}_unit"), O.Scale(factor=plan.readout_scale), (node.name,))
    graph.replace_uses(node.name, s.name)
    s.inputs = (node.name,)
    graph.insert_after(node, s)


def _encoder(graph: Graph) -> Node | None:
    encs = [n for n in graph.nodes if isinstance(n.op, O.Encode)]
    if len(encs) > 1:
        raise UnsupportedError(f"loihi-quantize: graph @{graph.name} has {len(encs)} encoders; Loihi takes one input")
    if encs:
        for user in graph.users(encs[0].name):
            if isinstance(user.op, O.Scale) and not user.params:
                raise PassError(f"loihi-quantize: graph @{graph.name} is already quantised (scale %{user.name})")
    return encs[0] if encs else None


def _reads_input(graph: Wiring, node: Node) -> bool:
    """True if ``node`` reads the direct-coded input (through flatten)."""
    v = node.inputs[0]
    prod = graph.producer(v)
    while prod is not None and isinstance(prod.op, O.Flatten):
        prod = graph.producer(prod.inputs[0])
    return prod is not None and isinstance(prod.op, O.Encode) and prod.op.scheme is O.Scheme.DIRECT


def _is_chain(graph: Graph, wiring: Wiring) -> bool:
    """No join, concat or fan-out: every layer reads the one before it, as a lava-dl netx network."""
    if any(isinstance(n.op, (O.Add, O.Concat)) for n in graph.nodes):
        return False
    return all(len(wiring.users(n.name)) <= 1 for n in graph.nodes)


def _bias_fits(plan: _Plan) -> bool:
    return plan.report.get("bias", {}).get("clipped", 0) == 0


def _join_bias_fits(group: list[_Plan]) -> bool:
    """Whether the bias mantissas of a population's synapse groups, which its neurons add up, stay
    within the 13-bit mantissa (one group: what :func:`_bias_fits` checks)."""
    biases = [p.bias for p in group if p.bias is not None]
    if len(biases) < 2:
        return True
    total = np.sum([np.asarray(b, dtype=np.float64).reshape(-1) for b in biases], axis=0)
    return bool(total.min() >= BIAS_MANT_MIN and total.max() <= BIAS_MANT_MAX)


def _saturate_join_bias(group: list[_Plan]) -> None:
    """The population's whole bias (what its neurons add every step) on its first group, saturated at
    the 13-bit mantissa; none on the others."""
    total = np.sum([np.asarray(p.bias, dtype=np.float64).reshape(-1) for p in group if p.bias is not None], axis=0)
    for p in group:
        p.bias = None
    group[0].bias = np.clip(total, BIAS_MANT_MIN, BIAS_MANT_MAX)
    group[0].report.setdefault("bias", {})["join_saturated"] = True


def _fine_fits(plan: _Plan, x: _Stream | None, levels: float, graded: bool) -> bool:
    """Whether a plan with channel exponents keeps its threshold mantissa within FINE_VTH_LIMIT, its bias
    within the 13-bit mantissa and, for the graded input layer, its input per step within INPUT_LIMIT."""
    if plan.report.get("vth_mant", 0) > FINE_VTH_LIMIT or not _bias_fits(plan):
        return False
    return not graded or _peak_input(plan.node, plan, x, levels) <= INPUT_LIMIT


def _fits(plan: _Plan, x: _Stream | None, levels: float) -> bool:
    return _bias_fits(plan) and _peak_input(plan.node, plan, x, levels) <= INPUT_LIMIT


def _peak_input(node: Node, plan: _Plan, x: _Stream | None, levels: float) -> float:
    """Largest |W_int · round(Q x)| over the calibration samples (the worst case without data)."""
    if x is None:
        return _worst_input(plan, levels)
    w = torch.as_tensor(plan.weight)
    peak = 0.0
    for xb, _ in x.batches():
        xi = torch.as_tensor(np.rint(levels * np.asarray(xb, dtype=np.float64)))
        if isinstance(node.op, O.Linear):
            a = xi.reshape(len(xi), -1) @ w.T
        else:
            op: O.Conv2d = node.op  # type: ignore[assignment]
            a = F.conv2d(xi, w, None, op.stride, op.padding, op.dilation, op.groups)
        peak = max(peak, float(a.abs().max()))
    return peak


def _worst_input(plan: _Plan, levels: float = 1.0) -> float:
    """The largest |a| one step can bring: every input that adds to one sign at once, at full value."""
    w = plan.weight.reshape(plan.weight.shape[0], -1)
    return float(max(np.clip(w, 0, None).sum(axis=1).max(), (-np.clip(w, None, 0)).sum(axis=1).max()) * levels)


def _insert_input_scale(graph: Graph, enc: Node, levels: float, bits: int) -> None:
    encode: O.Encode = enc.op  # type: ignore[assignment]
    enc.op = dataclasses.replace(encode, bits=bits)
    s = Node(graph.fresh_name(f"{enc.name}_levels"), O.Scale(factor=float(levels)), (enc.name,))
    graph.replace_uses(enc.name, s.name)
    s.inputs = (enc.name,)
    graph.insert_after(enc, s)


def _accuracy(ctx: PassContext, graph: Graph, x: _Stream | None) -> float | None:
    if x is None or not x.labelled or ctx.simulator is None or not graph.attrs.timesteps:
        return None
    correct = 0
    for xb, yb in x.batches():
        correct += int((ctx.simulator.run_snn(graph, xb, graph.attrs.timesteps).predictions == yb).sum())
    return correct / x.count


class _Stream:
    """The calibration samples the pass reads (the first ``samples``), one batch at a time and as often as
    it needs: its memory is one batch and the per-layer sums, not the samples."""

    def __init__(self, ctx: PassContext, pass_name: str, samples: int) -> None:
        self._args = (ctx, pass_name, samples)
        self._rounded: dict[float, np.ndarray] = {}
        self.count = 0
        self.labelled = True
        self.peak_abs = 0.0
        for xb, yb in self.batches():  # one pass for what every later use needs to know
            self.count += len(xb)
            self.labelled &= yb is not None
            self.peak_abs = max(self.peak_abs, float(np.abs(xb).max(initial=0.0)))
        if self.count == 0:
            raise PassError(f"pass '{pass_name}': the calibration data is empty")

    def batches(self):
        return sample_batches(*self._args)

    def rounded_mean(self, levels: float) -> np.ndarray:
        """The mean over the samples of the graded input ``round(Q x) / Q`` (Q = ``levels``)."""
        if levels not in self._rounded:
            total = sum((np.rint(levels * xb.astype(np.float64)) / levels).sum(axis=0) for xb, _ in self.batches())
            self._rounded[levels] = np.asarray(total) / self.count
        return self._rounded[levels]
