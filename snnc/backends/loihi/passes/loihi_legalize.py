"""loihi-legalize: rewrite a converted SNN into what Loihi's CUBA neuron and synapses can run.

Loihi's neuron (lava ``LIF``, DESIGN §5) resets to 0 when it fires, fires on ``v > vth`` (strict),
starts at ``v = 0`` and has one threshold and one leak per population; between two populations
there is one synaptic layer (dense or conv).  This pass rewrites what it can and refuses the rest,
listing every illegal node with the reason and the pass that would fix it.

Rewrites (each listed in ``ctx.results["loihi-legalize"]``):

* ``identity`` / ``dropout`` are removed;
* ``neuron{model=if}`` → ``model=lif, beta=1`` (Loihi's LIF with ``dv = 0``);
* ``neuron{reset=hard, v_reset=0}`` → ``strict=true``: ``v ≥ θ`` and ``v > θ`` differ only when v
  hits θ exactly;
* ``spike_maxpool`` (gated max pooling, which Loihi cannot run) → **OR pooling**: a depthwise
  ``conv2d`` with unit weights into a ``neuron{model=lif, beta=1, v_th=0.5, hard, strict}``, which
  fires when any input of its window spiked in that step.  Its rate lies between the largest and
  the summed input rate: a different function from gated max pooling (a note says so).  The digits
  CNN keeps its accuracy with it (99.2 % on the test split at T = 8, against 99.4 % with gated max
  pooling and soft reset), where average pooling instead (``lower-neurons{maxpool=avg}``) gives 26 %
  with hard reset and 58 % with soft reset at T = 16;
* a pooling op next to a ``conv2d`` or before ``flatten`` → ``linear`` is **composed** into that
  op (one exact linear map: e.g. ``avgpool 2x2`` then ``linear`` = ``linear`` on the unpooled input;
  ``avgpool`` then ``conv 3x3`` = one ``conv 6x6 stride 2``).  The composite is checked against the
  two ops on a random input; where borders would differ (padding over a partial window) it is
  refused.  A pooling op that cannot be composed becomes the depthwise ``conv2d`` it is (a Loihi
  layer of its own, so a neuron must follow it);
* a per-channel ``scale`` op (no bias) next to a ``conv2d`` / ``linear`` is folded into its weights;
  one right before the ``readout`` is kept (the host applies it when it reads the logits);
* a neuron with per-channel ``v_th`` or ``beta`` is split into populations, one per run of channels
  with equal values: its conv2d / linear is cut into row blocks, and a ``concat`` joins the parts;
* a conv2d / linear that reads an **analog value** (a linear bottleneck: MobileNetV2's projection conv
  has no ReLU, so its output, read by the next expansion conv and by the residual add, is no spike
  train) is **folded**: the value is a sum of synaptic maps of spike trains (``add`` of conv2d /
  linear outputs, spikes, per-channel scales of spikes), and the reader ``R`` becomes one synapse
  group per summand, ``R∘P_k`` reading ``P_k``'s spikes (composed exactly as above), summed in ``R``'s
  population.  The analog value never exists on the chip; the projections disappear.  Chosen over
  carrying the value in signed (paired ±) neuron populations because it is exact (no rate coding of
  the bottleneck, no extra neurons, no extra step of latency per bottleneck); it costs synaptic memory
  where ``R∘P_k`` is larger than ``P_k`` plus ``R`` (a 1x1 expansion after a 1x1 projection: Cout×Cin_k
  instead of Cmid×(Cin_k + Cout)) and one synapse group per block the residual stream has summed;
* a conv2d / linear that reads spikes through **re-indexing** (reshape, permute, slice: ShuffleNet's
  channel shuffle and split) becomes one synapse group per spiking source, its weights gathered into
  the source's neuron order (``_fold_reindexing``): the chip routes spikes only along synapses.  A
  linear takes any map; a conv2d a map of whole channels at unmoved positions.  Exact; a source
  channel the reader skips gets zero weights (the group spans the whole source population); a
  synapse that reads a ``concat`` of populations at different synaptic depths is split the same
  way, so that the join delays the shallower groups (Inception's branches, a DenseNet block);
* a neuron over a (per-channel ``scale`` of a) ``concat`` of currents, or over a current other
  layers read too (DenseNet's BN-ReLU over its block's features), becomes one population per part,
  each with its own copy of the part's synapses, the scale folded in (``_neurons_over_concats``);
  a depthwise conv2d over a ``concat`` becomes one per part (``_depthwise_over_concats``).  Exact;
* an ``add`` read by one neuron (a residual block's output) becomes a **join**, one population fed by
  several synapse groups (``is_join``): nested adds merge, and an operand that is spikes, or a
  per-channel ``scale`` of spikes, enters through a one-to-one synapse (a depthwise 1x1 ``conv2d``, a
  diagonal ``linear`` for flat values) of weight 1 or the scale.  Exact.

Refused (with the node and the reason): soft reset or no reset (convert with
``lower-neurons{reset=hard}``: the ``ann-to-loihi`` pipeline), ``v_reset ≠ 0``, ``v_init ≠ 0``,
bursts (``max_spikes > 1``), the tau/rate leak forms, reset delay, membrane outputs, ``out_scale ≠ 1``
(run ``fold-thresholds``), phase coding, early exit, ANN ops, ``conv1d``, re-indexing no synapse group can
carry (of analog values, or moving positions into a conv2d), an analog value
whose readers cannot be folded (a padded reader after a biased projection: the composite is no single
conv at the border; a reader through ``flatten``), and a sum of analog values that are not currents into
one neuron.  The
refusal lists each reason once with its fix, then the offending nodes one a line (``snnc/passes/_refusals.py``).

Preserves: the SNN's function exactly, except the OR pooling above and ties at threshold.
Requires: a converted SNN (``lower-neurons``), thresholds folded (``fold-thresholds``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.backends.loihi.lower import LOIHI_SYNAPSE_OPS, is_join
from snnc.errors import UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._compose import (
    POOLS,
    compose_convs,
    compose_into_linear,
    node_conv,
    set_param,
    window_weight,
    window_with_overhang,
    write_conv,
)
from snnc.passes._neurons import neuron_vector
from snnc.passes._refusals import format_refusals
from snnc.passes._reindex import gather_columns, reindex

SYNAPSE_OPS = LOIHI_SYNAPSE_OPS  # the weighted ops Loihi has synapses for (declared by the lowering)
OR_THRESHOLD = 0.5  # half a spike: the OR neuron fires when one input of its window spiked


@register_pass
@dataclass(frozen=True)
class LoihiLegalize(Pass):
    name: ClassVar[str] = "loihi-legalize"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        ann = [f"{n.op.name} %{n.name}: an ANN op; convert the network first (the ann-to-loihi pipeline, which "
               "needs --calib data)" for n in graph.nodes if n.op.ann_only]
        if ann:  # an unconverted network: the other problems would only repeat this one
            raise UnsupportedError(format_refusals("loihi-legalize", ann, graph))
        problems = _neuron_problems(graph)
        if problems:
            raise UnsupportedError(format_refusals("loihi-legalize", problems, graph))
        log: list[str] = []
        for node in list(graph.nodes):
            if isinstance(node.op, (O.Identity, O.Dropout)):
                graph.remove(node)
        _neurons(graph, log)
        _or_pooling(ctx, graph, log)
        graph.infer_types()
        _compose(graph, log)
        _pools_to_convs(graph, log)
        _depthwise_over_concats(graph, log)
        _neurons_over_concats(graph, log)
        _split_channels(graph, log)
        _fold_analog_reads(graph, log)
        _joins(graph, log)
        if _fold_reindexing(graph, log):  # its groups into a join are nested adds: merged
            _joins(graph, log)
        graph.drop_unused_params()
        graph.infer_types()
        problems = structure_problems(graph)
        if problems:
            raise UnsupportedError(format_refusals("loihi-legalize", problems, graph))
        ctx.results[self.name] = {"rewrites": log}


# ----------------------------------------------------------------------------------------------------
# checks


def _neuron_problems(graph: Graph) -> list[str]:
    """Neuron features no rewrite gives Loihi, as ``"neuron %n (detail): reason; fix"``."""
    out = []
    for node in graph.nodes:
        if not isinstance(node.op, O.Neuron):
            continue
        op: O.Neuron = node.op
        where = f"neuron %{node.name}"
        if op.reset is O.Reset.SOFT:
            out.append(f"{where}: soft reset; Loihi's CUBA neuron resets to 0: convert with "
                       "lower-neurons{reset=hard} (the ann-to-loihi pipeline does)")
        elif op.reset is O.Reset.NONE:
            out.append(f"{where}: reset=none; Loihi's CUBA neuron always resets to 0 when it fires: convert with "
                       "lower-neurons{reset=hard}")
        elif op.v_reset != 0.0:
            out.append(f"{where} (v_reset={op.v_reset}): a reset to a value other than 0; Loihi resets to 0: "
                       "convert with lower-neurons{reset=hard}")
        if op.v_init != 0.0:
            out.append(f"{where} (v_init={op.v_init}): v starts above 0; Loihi starts at v = 0: convert with "
                       "lower-neurons{v-init=0}")
        if op.max_spikes > 1:
            out.append(f"{where} (max_spikes={op.max_spikes}): bursts; Loihi's CUBA LIF sends one spike per step: "
                       "convert without burst neurons")
        if op.leak is not O.Leak.MULTIPLY:
            out.append(f"{where} (leak={op.leak.value}): a leak form Loihi lacks; Loihi leaks as "
                       "v = (1 - dv/4096) v + u: import or convert with leak=multiply")
        if op.reset_delay or op.presubtract:
            out.append(f"{where}: a delayed reset is not Loihi's neuron; import without reset_delay")
        if op.emit is not O.Emit.SPIKES:
            out.append(f"{where} (emit={op.emit.value}): a membrane output; a Loihi neuron sends spikes only: "
                       "read spikes")
        if "out_scale" in node.params or op.out_scale != 1.0:
            out.append(f"{where}: out_scale ≠ 1; Loihi spikes carry no value: run fold-thresholds first")
    return out


def structure_problems(graph: Graph) -> list[str]:
    """What remains illegal once every rewrite ran (also what the Loihi target's legality reports)."""
    out: list[str] = []
    for node in graph.nodes:
        op = node.op
        where = f"{op.name} %{node.name}"
        if op.ann_only:
            out.append(f"{where}: ANN op; convert first (the ann-to-loihi pipeline, which needs --calib data)")
        elif isinstance(op, O.Encode):
            if op.scheme is O.Scheme.PHASE:
                out.append(f"{where}: phase coding weights each step differently; Loihi synapses cannot")
        elif isinstance(op, O.Neuron):
            src = graph.producer(node.inputs[0])
            joined = src is not None and isinstance(src.op, O.Add)  # a join, or an add refused below
            if not joined and (
                src is None or not isinstance(src.op, SYNAPSE_OPS) or len(graph.users(src.name)) != 1
            ):
                out.append(f"{where}: must read a conv2d / linear (or a sum of them) that feeds only it; one "
                           "synaptic layer between two Loihi populations")
        elif isinstance(op, SYNAPSE_OPS):
            users = graph.users(node.name)
            ok = len(users) == 1 and (
                isinstance(users[0].op, (O.Neuron, O.Readout, O.Add))  # an add that is no join is refused
                or _is_readout_scale(graph, users[0])
            )
            if not ok:
                fed = ", ".join("%" + u.name for u in users) or "the output"
                out.append(f"{where} (feeds {fed}): a Loihi synaptic layer feeds exactly one population (or "
                           "the readout); an analog value read twice needs a neuron of its own (convert with "
                           "signed-neurons, or keep a ReLU there)")
        elif isinstance(op, O.Add) and is_join(graph, node):
            pass
        elif isinstance(op, (O.Add, O.Concat)):
            for v in node.inputs:
                src = graph.producer(v)
                current = src is not None and isinstance(src.op, SYNAPSE_OPS) and graph.only_user(v) is node
                if not graph.value_type(v).is_event and not current:
                    out.append(f"{where} (reads %{v}): a sum of analog values that are not conv2d / linear "
                               "currents feeding one neuron; Loihi adds synaptic currents into a population, "
                               "or spikes")
                    break
            else:
                if not all(graph.value_type(v).is_event for v in node.inputs):
                    out.append(f"{where}: a sum of currents that no single neuron reads; Loihi sums synaptic "
                               "currents only in the population they feed")
            if isinstance(op, O.Concat) and op.axis != 0:
                out.append(f"{where} (axis {op.axis}): concatenation along another axis than channels; Loihi "
                           "concatenates channels only")
        elif isinstance(op, O.Scale):
            prod = graph.producer(node.inputs[0])
            input_scale = prod is not None and isinstance(prod.op, O.Encode)
            if not (_is_readout_scale(graph, node) or input_scale):
                out.append(f"{where}: a per-channel scale that could not be folded into a conv2d / linear")
        elif isinstance(op, O.Readout):
            if op.exit_rule is not O.ExitRule.NONE:
                out.append(f"{where}: early exit needs the host to stop the chip; not supported on Loihi")
        elif op.reindexing and not isinstance(op, O.Flatten):
            out.append(f"{where}: re-indexes values on their way to a synapse that cannot carry the map (spikes "
                       "only; a conv2d reads them only through whole channels at unmoved positions, a linear "
                       "through any map)")
        elif not isinstance(op, O.Flatten):
            out.append(f"{where}: no Loihi equivalent")
    return out


def _is_readout_scale(graph: Graph, node: Node) -> bool:
    users = graph.users(node.name)
    return (
        isinstance(node.op, O.Scale)
        and len(users) == 1
        and isinstance(users[0].op, O.Readout)
        and "bias" not in node.params
    )


# ----------------------------------------------------------------------------------------------------
# neurons


def _neurons(graph: Graph, log: list[str]) -> None:
    for node in graph.nodes:
        if not isinstance(node.op, O.Neuron):
            continue
        op: O.Neuron = node.op
        changes: dict = {}
        if op.model is O.NeuronModel.IF:
            changes.update(model=O.NeuronModel.LIF, beta=1.0)
        if not op.strict:
            changes["strict"] = True
        if changes:
            node.op = dataclasses.replace(op, **changes)
            log.append(f"neuron %{node.name}: " + ", ".join(f"{k}={_text(v)}" for k, v in changes.items()))


def _text(v) -> str:
    return str(v.value) if hasattr(v, "value") else str(v).lower() if isinstance(v, bool) else str(v)


def _or_pooling(ctx: PassContext, graph: Graph, log: list[str]) -> None:
    for node in list(graph.nodes):
        if not isinstance(node.op, O.SpikeMaxPool2d):
            continue
        op: O.SpikeMaxPool2d = node.op
        t = graph.value_type(node.inputs[0])
        if not t.is_event:
            raise UnsupportedError(f"loihi-legalize: spike_maxpool %{node.name}: reads analog %{node.inputs[0]}")
        channels = t.shape[0]
        # ceil_mode's last window overhangs the input: a larger kernel led by zeros and more padding
        overhang = op.overhang(*t.shape[1:])
        _, padding = window_with_overhang(op.kernel, op.padding, overhang)
        key = graph.fresh_param(f"{node.name}.weight")
        graph.params[key] = window_weight(op.kernel, overhang, channels)
        node.op = O.Conv2d(stride=op.stride, padding=padding, groups=channels)
        node.params = {"weight": key}
        gate = Node(
            graph.fresh_name(f"{node.name}_or"),
            O.Neuron(model=O.NeuronModel.LIF, v_th=OR_THRESHOLD, reset=O.Reset.HARD, beta=1.0, strict=True),
            (node.name,),
            loc=node.loc,
        )
        graph.replace_uses(node.name, gate.name)
        gate.inputs = (node.name,)
        graph.insert_after(node, gate)
        graph.infer_types()  # a pooling of this pooling (googlenet) reads the gate's type
        log.append(f"spike_maxpool %{node.name}: OR pooling (depthwise conv2d + neuron %{gate.name})")
        ctx.note(f"loihi-legalize: max pooling %{node.name} runs as OR pooling on Loihi (a neuron fires when any "
                 "input of its window spiked); gated spike max pooling has no Loihi equivalent")


# ----------------------------------------------------------------------------------------------------
# linear maps: pooling and scale ops composed into their conv2d / linear


def _compose(graph: Graph, log: list[str]) -> None:
    """Fold pooling and scale ops into the conv2d / linear next to them until nothing changes."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node not in graph.nodes:
                continue
            if isinstance(node.op, POOLS + (O.Conv2d,)) and _compose_forward(graph, node, log):
                changed = True
            elif isinstance(node.op, O.Scale) and _fold_scale(graph, node, log):
                changed = True
        graph.infer_types()


def _compose_forward(graph: Graph, first: Node, log: list[str]) -> bool:
    """``first`` (a pool or conv) composed into its only user: a conv2d, a pool, or flatten → linear.
    Only where a pool is involved: two convs stay two layers (each has its neurons)."""
    user = graph.only_user(first.name)
    if user is None:
        return False
    in_shape = graph.value_type(first.inputs[0]).shape
    a = node_conv(graph, first)
    if a is None:
        return False
    pool_first = isinstance(first.op, POOLS)
    if isinstance(user.op, (O.Conv2d, *POOLS)) and (pool_first or isinstance(user.op, POOLS)):
        b = node_conv(graph, user)
        c = None if b is None else compose_convs(a, b, in_shape)
        if c is None:
            return False
        target = user if isinstance(user.op, O.Conv2d) else first
        write_conv(graph, target, c)
        if target is user:
            user.inputs = first.inputs
            graph.nodes.remove(first)
        else:  # conv then pool: the conv takes the pool's place
            graph.replace_uses(user.name, first.name)
            graph.nodes.remove(user)
        log.append(f"{first.op.name} %{first.name} and {user.op.name} %{user.name}: composed into conv2d %{target.name}")
        return True
    if pool_first and isinstance(user.op, O.Flatten):
        lin = graph.only_user(user.name)
        if lin is None or not isinstance(lin.op, O.Linear):
            return False
        w, bias = lin.param(graph, "weight"), lin.param(graph, "bias")
        assert w is not None
        res = compose_into_linear(a, in_shape, np.asarray(w), bias)
        if res is None:
            return False
        set_param(graph, lin, "weight", res[0])
        set_param(graph, lin, "bias", res[1])
        user.inputs = first.inputs
        graph.nodes.remove(first)
        log.append(f"{first.op.name} %{first.name}: composed into linear %{lin.name}")
        return True
    return False


def _fold_scale(graph: Graph, node: Node, log: list[str]) -> bool:
    """A per-channel scale (no bias) folded into the conv2d / linear before or after it."""
    if _is_readout_scale(graph, node) or "bias" in node.params:
        return False
    prod = graph.producer(node.inputs[0])
    if prod is not None and isinstance(prod.op, O.Encode):
        return False  # the input quantiser (loihi-quantize)
    t = graph.value_type(node.name)
    s = node.op.factor * np.ones(t.channels)  # type: ignore[attr-defined]
    p = node.param(graph, "scale")
    if p is not None:
        s = s * np.asarray(p, dtype=np.float64).reshape(-1)
    if prod is not None and isinstance(prod.op, SYNAPSE_OPS) and graph.only_user(prod.name) is node:
        w = np.asarray(prod.param(graph, "weight"), dtype=np.float64)
        set_param(graph, prod, "weight", w * s.reshape((-1,) + (1,) * (w.ndim - 1)))
        b = prod.param(graph, "bias")
        if b is not None:
            set_param(graph, prod, "bias", np.asarray(b, dtype=np.float64) * s)
        graph.remove(node)
        log.append(f"scale %{node.name}: folded into {prod.op.name} %{prod.name}")
        return True
    user = graph.only_user(node.name)
    reader, via_flatten = user, False
    if user is not None and isinstance(user.op, O.Flatten):
        reader, via_flatten = graph.only_user(user.name), True
    if reader is None or not isinstance(reader.op, SYNAPSE_OPS):
        return False
    w = np.asarray(reader.param(graph, "weight"), dtype=np.float64)
    if isinstance(reader.op, O.Linear):
        per_input = np.repeat(s, t.numel // t.channels) if via_flatten else np.broadcast_to(s, (w.shape[1],))
        w = w * per_input.reshape(1, -1)
    else:
        groups, cig = reader.op.groups, w.shape[1]  # type: ignore[attr-defined]
        idx = (np.arange(w.shape[0]) // (w.shape[0] // groups))[:, None] * cig + np.arange(cig)[None, :]
        w = w * s[idx][:, :, None, None]
    set_param(graph, reader, "weight", w)
    graph.remove(node)
    log.append(f"scale %{node.name}: folded into {reader.op.name} %{reader.name}")
    return True


def _pools_to_convs(graph: Graph, log: list[str]) -> None:
    for node in graph.nodes:
        if not isinstance(node.op, POOLS):
            continue
        c = node_conv(graph, node)
        if c is None:
            raise UnsupportedError(
                f"loihi-legalize: {node.op.name} %{node.name}: an average whose divisor changes at the border "
                "(padding it excludes, or a ceil_mode window past the input) has no Loihi synapse"
            )
        write_conv(graph, node, c)
        log.append(f"{node.op.name} %{node.name}: depthwise conv2d")
    graph.infer_types()


# ----------------------------------------------------------------------------------------------------
# residual joins: several synapse groups into one population


def _joins(graph: Graph, log: list[str]) -> None:
    """An ``add`` read by one neuron becomes a join (``is_join``): a nested add feeding only it is merged
    into it, and an operand that is not a conv2d / linear current feeding only it becomes one: spikes
    (``x``) or a per-channel ``scale`` of spikes (``s·x``) pass through a one-to-one synapse (a depthwise
    1x1 conv2d, or a diagonal linear for flat values) of weight 1 or ``s``.  Exact: the same sum."""
    for node in list(graph.nodes):
        user = graph.only_user(node.name)
        if not isinstance(node.op, O.Add) or user is None or not isinstance(user.op, O.Neuron):
            continue
        changed = True
        while changed:  # add(add(a, b), c) -> add(a, b, c)
            changed = False
            for v in node.inputs:
                src = graph.producer(v)
                if src is not None and isinstance(src.op, O.Add) and graph.only_user(v) is node:
                    node.inputs = tuple(w for u in node.inputs for w in (src.inputs if u == v else (u,)))
                    graph.nodes.remove(src)
                    changed = True
                    break
        inputs = list(node.inputs)
        for k, v in enumerate(inputs):
            src = graph.producer(v)
            if src is not None and isinstance(src.op, SYNAPSE_OPS) and graph.only_user(v) is node:
                continue
            t = graph.value_type(v)
            factor = np.ones(t.channels)
            if (
                src is not None
                and isinstance(src.op, O.Scale)
                and "bias" not in src.params
                and graph.only_user(v) is node
                and graph.value_type(src.inputs[0]).is_event
            ):
                p = src.param(graph, "scale")
                factor = src.op.factor * (factor if p is None else np.asarray(p, dtype=np.float64).reshape(-1))
                spikes = src.inputs[0]
                graph.nodes.remove(src)
            elif t.is_event:
                spikes = v
            else:
                continue  # refused by structure_problems: an analog value that is no synapse's current
            inputs[k] = _one_to_one(graph, node, spikes, factor)
            log.append(f"add %{node.name}: %{v} enters through a one-to-one synapse %{inputs[k]}")
        node.inputs = tuple(inputs)
    graph.infer_types()


def _one_to_one(graph: Graph, before: Node, value: str, factor: np.ndarray) -> str:
    """A new synapse ``factor[c] · value[c]`` inserted before ``before``; returns its name."""
    t = graph.value_type(value)
    name = graph.fresh_name(f"{value}_syn")
    key = graph.fresh_param(f"{name}.weight")
    if len(t.shape) == 3:
        c = t.shape[0]
        graph.params[key] = factor.reshape(c, 1, 1, 1).astype(np.float32)
        op: O.Op = O.Conv2d(groups=c)
    elif len(t.shape) == 1:
        graph.params[key] = np.diag(np.broadcast_to(factor, (t.shape[0],))).astype(np.float32)
        op = O.Linear()
    else:
        raise UnsupportedError(f"loihi-legalize: add %{before.name}: a {len(t.shape)}-D residual operand %{value} "
                               "has no Loihi synapse")
    graph.nodes.insert(graph.nodes.index(before), Node(name, op, (value,), params={"weight": key}, loc=before.loc))
    return name


# ----------------------------------------------------------------------------------------------------
# analog values read by synapses: the producing synapses folded into each reader


@dataclass(frozen=True)
class _Term:
    """One summand of an analog value: ``node`` (a conv2d / linear) applied to ``source``, or, with no
    node, ``source`` itself times the per-channel ``factor`` (None: 1)."""

    source: str
    node: Node | None = None
    factor: np.ndarray | None = None


def _terms(graph: Graph, value: str) -> list[_Term] | None:
    """``value`` as a sum of synaptic maps of other values (looking through ``add``), or None where it
    is not one (the direct-coded input, a neuron's membrane, ...)."""
    if graph.value_type(value).is_event:
        return [_Term(value)]
    src = graph.producer(value)
    if src is None:
        return None
    if isinstance(src.op, O.Add):
        out: list[_Term] = []
        for v in src.inputs:
            sub = _terms(graph, v)
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(src.op, SYNAPSE_OPS):
        return [_Term(src.inputs[0], src)]
    if isinstance(src.op, O.Scale) and "bias" not in src.params and graph.value_type(src.inputs[0]).is_event:
        p = src.param(graph, "scale")
        factor = src.op.factor * np.ones(graph.value_type(value).channels)  # type: ignore[attr-defined]
        return [_Term(src.inputs[0], None, factor if p is None else factor * np.asarray(p).reshape(-1))]
    return None


def _fold_analog_reads(graph: Graph, log: list[str]) -> None:
    """A conv2d / linear ``R`` that reads an analog value ``v = Σ_k P_k(s_k) + Σ_j f_j·s_j`` (``P_k``
    conv2d / linear synapses, ``s`` spikes, through any tree of ``add``) becomes one synapse group per
    summand, ``(R∘P_k)(s_k)`` and ``(R·f_j)(s_j)``, summed by an ``add`` that keeps ``R``'s name (a join
    when a neuron reads it; ``R``'s bias goes to the first group).  This is how the chip runs a linear
    bottleneck (MobileNetV2's projection conv has no ReLU: its output is read by the next block's
    expansion conv and by the residual add, and the add again by the next expansion): the analog value
    never exists on the chip; each reader's population receives the projection folded into its own
    synapses, one group per spiking source.  Exact (composition of linear maps, checked on a random
    input as ``compose_convs`` does); where a composite is not one conv (a padded reader after a biased
    map) the reader is left as it is and refused.  The producers no longer read are removed."""
    graph.infer_types()  # the populations _split_channels made
    changed = True
    while changed:
        changed = False
        for reader in list(graph.nodes):
            if not isinstance(reader.op, SYNAPSE_OPS) or graph.value_type(reader.inputs[0]).is_event:
                continue
            terms = _terms(graph, reader.inputs[0])
            parts = None if terms is None else [_composite(graph, reader, t) for t in terms]
            if parts is None or any(p is None for p in parts):
                continue
            _replace_by_groups(graph, reader, terms, parts, log)  # type: ignore[arg-type]
            changed = True
        _drop_dead(graph)
        graph.infer_types()


def _composite(graph: Graph, reader: Node, term: _Term) -> tuple[O.Op, np.ndarray, np.ndarray | None] | None:
    """(op, weight, bias) of ``reader`` after ``term``'s map, reading ``term.source``; the reader's own
    bias left out.  None where no single conv2d / linear is that map."""
    w = np.asarray(reader.param(graph, "weight"), dtype=np.float64)
    src_shape = graph.value_type(term.source).shape
    if term.node is None:  # (R·f)(s): the reader's weights scaled per input channel
        f = np.ones(src_shape[0]) if term.factor is None else np.asarray(term.factor, dtype=np.float64)
        if isinstance(reader.op, O.Linear):
            if len(src_shape) != 1:
                return None
            return reader.op, w * f.reshape(1, -1), None
        groups, cig = reader.op.groups, w.shape[1]  # type: ignore[attr-defined]
        idx = (np.arange(w.shape[0]) // (w.shape[0] // groups))[:, None] * cig + np.arange(cig)[None, :]
        return reader.op, w * f[idx][:, :, None, None], None
    inner = term.node
    if isinstance(reader.op, O.Linear) and isinstance(inner.op, O.Linear):
        wi = np.asarray(inner.param(graph, "weight"), dtype=np.float64)
        bi = inner.param(graph, "bias")
        return reader.op, w @ wi, None if bi is None else w @ np.asarray(bi, dtype=np.float64)
    if isinstance(reader.op, O.Conv2d) and isinstance(inner.op, O.Conv2d):
        a, r = node_conv(graph, inner), node_conv(graph, reader)
        assert a is not None and r is not None
        r.bias = None
        c = compose_convs(a, r, src_shape)
        if c is None:
            return None
        op = O.Conv2d(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)
        return op, c.weight, c.bias
    return None


def _replace_by_groups(graph: Graph, reader: Node, terms: list[_Term],
                       parts: list[tuple[O.Op, np.ndarray, np.ndarray | None]], log: list[str],
                       what: str = "reads an analog value") -> None:
    bias = reader.param(graph, "bias")
    names = []
    for k, (term, (op, w, b)) in enumerate(zip(terms, parts, strict=True)):
        if k == 0 and bias is not None:
            b = np.asarray(bias, dtype=np.float64) + (0.0 if b is None else b)
        via = term.node.name if term.node is not None else term.source
        node = Node(graph.fresh_name(f"{reader.name}_{via}"), op, (term.source,), params={}, loc=reader.loc)
        graph.nodes.insert(graph.nodes.index(reader), node)
        set_param(graph, node, "weight", w)
        set_param(graph, node, "bias", b)
        names.append(node.name)
    if len(names) == 1:  # one group: it takes the reader's place (and name)
        only = graph.node(names[0])
        graph.nodes.remove(only)
        reader.op, reader.params, reader.inputs = only.op, only.params, only.inputs
    else:
        reader.op, reader.params, reader.inputs = O.Add(), {}, tuple(names)
    log.append(f"{'conv2d' if isinstance(parts[0][0], O.Conv2d) else 'linear'} %{reader.name}: {what}; "
               f"folded into {len(names)} synapse group{'s' if len(names) > 1 else ''} from "
               + ", ".join("%" + t.source for t in terms))


def _drop_dead(graph: Graph) -> None:
    """Remove synapses, adds and scales nothing reads any more (what ``_fold_analog_reads`` bypassed)."""
    dead = True
    while dead:
        read = {v for n in graph.nodes for v in n.inputs} | set(graph.outputs)
        gone = [n for n in graph.nodes
                if n.name not in read and (n.op.reindexing or isinstance(n.op, (O.Add, O.Scale, *SYNAPSE_OPS)))]
        dead = bool(gone)
        for n in gone:
            graph.nodes.remove(n)


# ----------------------------------------------------------------------------------------------------
# spikes re-indexed on their way to a synapse: the index map folded into the synapse's weights


def _fold_reindexing(graph: Graph, log: list[str]) -> bool:
    """A conv2d / linear ``R`` that reads spikes through re-indexing ops (reshape, permute, slice,
    concat, flatten: ShuffleNet's channel shuffle and split) becomes one synapse group per spiking
    source, each with ``R``'s weights gathered into the source's own neuron order: the chip routes
    spikes only along synapses, so the index map must live in them.  For a linear reader any map
    folds (the source is flattened); for a conv2d, only a map of channels that keeps every spatial
    position (each of ``R``'s input channels is one channel of one source); a source channel read
    twice gets the sum of both weights, one not read gets zero weights (the group spans the whole
    source population: synaptic memory grows by the unread share).  The groups are summed by an
    ``add`` that keeps ``R``'s name (a join, see ``_joins``).  Exact: the same sum of the same
    spikes times the same weights.  Only trees with an op the lowering does not route are folded
    (a concat of populations along channels, and flatten → linear, are lowered as they are), or
    whose populations lie at different synaptic depths (DenseNet's concat of a block's layers: one
    synapse group would deliver their spikes in different steps; as groups of a join, into a
    population or the readout's integrators, the shallower are delayed).  Returns whether it
    folded any."""
    graph.infer_types()
    folded = False
    depth = _depths(graph)
    for reader in list(graph.nodes):
        if not isinstance(reader.op, SYNAPSE_OPS):
            continue
        tree, sources = _reindex_tree(graph, reader.inputs[0])
        if all(_routed(n) for n in tree) and len({depth[v] for v in sources}) <= 1:
            continue
        if not all(graph.value_type(v).is_event for v in sources):
            continue  # an analog value re-indexed: refused by structure_problems
        index = _index_map(graph, tree, sources, reader.inputs[0])
        groups = (_linear_groups if isinstance(reader.op, O.Linear) else _conv_groups)(graph, reader, sources, index)
        if groups is None:
            continue
        terms = []
        for v in [v for v, _ in groups]:
            if isinstance(reader.op, O.Linear) and len(graph.value_type(v).shape) != 1:
                flat = Node(graph.fresh_name(f"{v}_flat"), O.Flatten(), (v,), loc=reader.loc)
                graph.nodes.insert(graph.nodes.index(reader), flat)
                v = flat.name
            terms.append(_Term(v))
        op = dataclasses.replace(reader.op, groups=1) if isinstance(reader.op, O.Conv2d) else reader.op
        parts: list[tuple[O.Op, np.ndarray, np.ndarray | None]] = [(op, w, None) for _, w in groups]
        _replace_by_groups(graph, reader, terms, parts, log, what="reads re-indexed spikes")
        folded = True
    _drop_dead(graph)
    graph.infer_types()
    return folded


def _depths(graph: Graph) -> dict[str, int]:
    """Synaptic depth of every value: the steps after which input step 0 first reaches it on the chip
    (each population adds one: its synapses deliver in the next step)."""
    out: dict[str, int] = {v: 0 for v, _ in graph.inputs}
    for node in graph.nodes:
        base = max((out[v] for v in node.inputs), default=0)
        out[node.name] = base + 1 if isinstance(node.op, O.Neuron) else base
    return out


def _routed(node: Node) -> bool:
    """Re-indexing the Loihi lowering routes as it is: flatten, and concat along channels."""
    return isinstance(node.op, O.Flatten) or (isinstance(node.op, O.Concat) and node.op.axis == 0)


def _reindex_tree(graph: Graph, value: str) -> tuple[list[Node], list[str]]:
    """The re-indexing nodes that compute ``value`` (in graph order) and the values they start from."""
    tree: list[Node] = []
    sources: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        src = graph.producer(v)
        if src is not None and src.op.reindexing:
            if src not in tree:
                tree.append(src)
                stack.extend(src.inputs)
        elif v not in sources:
            sources.append(v)
    order = {n.name: i for i, n in enumerate(graph.nodes)}  # graph inputs (no node) first
    return sorted(tree, key=lambda n: order[n.name]), sorted(sources, key=lambda v: order.get(v, -1))


def _index_map(graph: Graph, tree: list[Node], sources: list[str], value: str) -> np.ndarray:
    """For each element of ``value``, the global id of the source element it copies: ids count the
    sources' elements (C order) one source after another."""
    ids: dict[str, np.ndarray] = {}
    offset = 0
    for v in sources:
        shape = graph.value_type(v).shape
        ids[v] = offset + np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        offset += ids[v].size
    for node in tree:
        ids[node.name] = reindex(node, [ids[v] for v in node.inputs], graph.value_type(node.name).shape)
    return ids[value]


def _linear_groups(graph: Graph, reader: Node, sources: list[str], index: np.ndarray
                   ) -> list[tuple[str, np.ndarray]]:
    """Per source read: (source, the linear weight over its flattened neurons)."""
    w = np.asarray(reader.param(graph, "weight"), dtype=np.float64)
    flat = index.reshape(-1)
    out, offset = [], 0
    for v in sources:
        n = int(np.prod(graph.value_type(v).shape))
        mine = (flat >= offset) & (flat < offset + n)
        if mine.any():
            out.append((v, gather_columns(w[:, mine], flat[mine] - offset, n)))
        offset += n
    return out


def _conv_groups(graph: Graph, reader: Node, sources: list[str], index: np.ndarray
                 ) -> list[tuple[str, np.ndarray]] | None:
    """Per source read: (source, the conv weight over its channels); None where the map moves a
    spatial position or mixes sources within a channel."""
    c = node_conv(graph, reader)
    assert c is not None
    w = c.dense_weight()  # [Co, C, kh, kw]
    channels, hw = index.shape[0], int(np.prod(index.shape[1:]))
    rows = index.reshape(channels, hw)
    starts = np.cumsum([0] + [int(np.prod(graph.value_type(v).shape)) for v in sources])
    weights: dict[int, np.ndarray] = {}
    for ch in range(channels):
        k = int(np.searchsorted(starts, rows[ch, 0], side="right")) - 1
        shape = graph.value_type(sources[k]).shape
        if tuple(shape[1:]) != tuple(index.shape[1:]):
            return None
        local = rows[ch] - starts[k]
        source_channel = int(local[0]) // hw
        if not np.array_equal(local, source_channel * hw + np.arange(hw)):
            return None
        if k not in weights:
            weights[k] = np.zeros((w.shape[0], shape[0], *w.shape[2:]))
        weights[k][:, source_channel] += w[:, ch]
    return [(sources[k], weights[k]) for k in sorted(weights)]


# ----------------------------------------------------------------------------------------------------
# a neuron over concatenated currents: one population per part, each with its own synapse copy


def _depthwise_over_concats(graph: Graph, log: list[str]) -> None:
    """A depthwise conv2d (an OR or average pooling, a depthwise layer) that reads a channel ``concat``
    becomes a concat of one depthwise conv per part: each output channel reads only its own input
    channel, so the conv commutes with the concat (Inception's max pooling after a concat of
    branches).  The mapper places a population's channels on cores by slices, which a depthwise
    group across a concat's parts would straddle; the neuron after it splits next
    (``_neurons_over_concats``).  Exact."""
    for node in list(graph.nodes):
        src = graph.producer(node.inputs[0]) if node.inputs else None
        if (
            not isinstance(node.op, O.Conv2d)
            or src is None
            or not isinstance(src.op, O.Concat)
            or src.op.axis != 0
            or node.op.groups != graph.value_type(src.name).channels
            or node.op.groups != graph.value_type(node.name).channels
        ):
            continue
        w = np.asarray(node.param(graph, "weight"))
        b = node.param(graph, "bias")
        names, lo = [], 0
        for k, v in enumerate(src.inputs):
            hi = lo + graph.value_type(v).channels
            part = Node(graph.fresh_name(f"{node.name}_part{k}"), dataclasses.replace(node.op, groups=hi - lo), (v,),
                        params={}, loc=node.loc)
            graph.nodes.insert(graph.nodes.index(node), part)
            set_param(graph, part, "weight", w[lo:hi])
            set_param(graph, part, "bias", None if b is None else np.asarray(b)[lo:hi])
            names.append(part.name)
            lo = hi
        node.op, node.params, node.inputs = O.Concat(axis=0), {}, tuple(names)
        log.append(f"conv2d %{node.name}: depthwise over a concat; one depthwise conv per part, concatenated")
    _drop_dead(graph)
    graph.infer_types()


def _neurons_over_concats(graph: Graph, log: list[str]) -> None:
    """A neuron that reads a per-channel ``scale`` (with bias) of a channel ``concat`` of conv2d /
    linear currents, or such a current that other layers read too, becomes one population per part:

        neuron(scale(concat(P_1(s_1), …, P_K(s_K)))) = concat(neuron_1(P'_1(s_1)), …, neuron_K(P'_K(s_K)))

    ``P'_k`` a copy of ``P_k`` with the scale's slice folded into its weights and bias, ``neuron_k``
    the neuron's slice (per-channel thresholds and leaks sliced with it).  This is DenseNet's BN-ReLU
    on the concatenated features: each feature (a 3x3 conv's current, no ReLU) is read by every later
    layer of its block.  A chip has no shared analog values: each reading population gets its own
    synapse group from the spikes the feature was computed from.  Exact (elementwise ops commute
    with a concat; a scale folds into the synapse before it).  Costs synaptic memory: one copy of a
    feature's synapses per reader, which is what the ANN's multiply-accumulates are too."""
    for neuron in list(graph.nodes):
        if not isinstance(neuron.op, O.Neuron):
            continue
        value, scale = neuron.inputs[0], None
        src = graph.producer(value)
        if src is not None and isinstance(src.op, O.Scale) and graph.only_user(value) is neuron:
            scale, value = src, src.inputs[0]
            src = graph.producer(value)
        concat = src is not None and isinstance(src.op, O.Concat) and src.op.axis == 0
        parts = list(src.inputs) if concat else [value]  # type: ignore[union-attr]
        makers = [graph.producer(v) for v in parts]
        spikes = [graph.value_type(v).is_event for v in parts]
        if not all(e or (m is not None and isinstance(m.op, SYNAPSE_OPS)) for m, e in zip(makers, spikes, strict=True)):
            continue
        if not concat and scale is None and (spikes[0] or graph.only_user(value) is neuron):
            continue  # already one synapse feeding one population (or spikes: refused)
        factor, shift = _affine(graph, scale, graph.value_type(neuron.name).channels)
        names, lo = [], 0
        for k, (v, maker) in enumerate(zip(parts, makers, strict=True)):
            hi = lo + graph.value_type(v).channels
            if spikes[k]:  # spikes enter through a one-to-one synapse of the scale's weights
                copy = graph.node(_one_to_one(graph, neuron, v, factor[lo:hi]))
                w, b = np.asarray(graph.params[copy.params["weight"]], dtype=np.float64), None
                scaled = w
            else:
                assert maker is not None
                copy = Node(graph.fresh_name(f"{maker.name}_{neuron.name}"), maker.op, maker.inputs, params={},
                            loc=maker.loc)
                graph.nodes.insert(graph.nodes.index(neuron), copy)
                w, b = np.asarray(maker.param(graph, "weight"), dtype=np.float64), maker.param(graph, "bias")
                scaled = w * factor[lo:hi].reshape((-1,) + (1,) * (w.ndim - 1))
            bias = (0.0 if b is None else np.asarray(b, dtype=np.float64) * factor[lo:hi]) + shift[lo:hi]
            set_param(graph, copy, "weight", scaled)
            set_param(graph, copy, "bias", bias if np.any(bias) else None)
            if len(parts) == 1:
                neuron.inputs = (copy.name,)
                names.append(neuron.name)
                break
            part = Node(graph.fresh_name(f"{neuron.name}_part{k}"), neuron.op, (copy.name,), params={},
                        loc=neuron.loc)
            graph.nodes.insert(graph.nodes.index(neuron), part)
            for role, key in neuron.params.items():  # per-channel v_th / beta: this part's slice
                per = np.asarray(graph.params[key]).reshape(-1)
                set_param(graph, part, role, per if per.size == 1 else per[lo:hi])
            names.append(part.name)
            lo = hi
        if len(names) > 1:
            neuron.op, neuron.params, neuron.inputs = O.Concat(axis=0), {}, tuple(names)
        log.append(f"neuron %{neuron.name}: reads {'a concat of ' if concat else 'a shared '}current"
                   f"{'s' if concat else ''}; {len(names)} population{'s' if len(names) > 1 else ''}, "
                   "each with its own synapses from " + ", ".join("%" + v for v in parts))
    _drop_dead(graph)
    graph.infer_types()


def _affine(graph: Graph, scale: Node | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(factor, shift) per channel of a ``scale`` op (identity for None)."""
    if scale is None:
        return np.ones(channels), np.zeros(channels)
    s = scale.param(graph, "scale")
    b = scale.param(graph, "bias")
    factor = scale.op.factor * (1.0 if s is None else np.asarray(s, dtype=np.float64).reshape(-1))  # type: ignore[attr-defined]
    shift = 0.0 if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
    return np.broadcast_to(factor, (channels,)), np.broadcast_to(shift, (channels,))


# ----------------------------------------------------------------------------------------------------
# per-channel parameters


def _split_channels(graph: Graph, log: list[str]) -> None:
    for node in list(graph.nodes):
        if not isinstance(node.op, O.Neuron) or not ({"v_th", "beta"} & set(node.params)):
            continue
        vth = neuron_vector(graph, node, "v_th")
        beta = neuron_vector(graph, node, "beta")
        runs = _runs(np.stack([vth, beta], axis=1))
        if len(runs) == 1:
            node.op = dataclasses.replace(node.op, v_th=float(vth[0]), beta=float(beta[0]))
            node.params = {k: v for k, v in node.params.items() if k not in ("v_th", "beta")}
            continue
        src = graph.producer(node.inputs[0])
        if (
            src is None
            or not isinstance(src.op, SYNAPSE_OPS)
            or graph.only_user(src.name) is not node
            or (isinstance(src.op, O.Conv2d) and src.op.groups != 1)
        ):
            raise UnsupportedError(
                f"loihi-legalize: neuron %{node.name}: per-channel thresholds or leaks need one population per "
                "value, which needs the conv2d / linear before it to feed only it (and no groups)"
            )
        _split(graph, src, node, runs, vth, beta)
        log.append(f"neuron %{node.name}: split into {len(runs)} populations (per-channel v_th / beta)")


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of equal rows."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or not np.array_equal(values[i], values[start]):
            out.append((start, i))
            start = i
    return out


def _split(graph: Graph, src: Node, node: Node, runs: list[tuple[int, int]], vth: np.ndarray, beta: np.ndarray
           ) -> None:
    """Replace ``src`` → ``node`` by one (row block → neuron) pair per run, joined by a concat that
    takes ``node``'s name (its readers are unchanged)."""
    w = np.asarray(src.param(graph, "weight"))
    b = src.param(graph, "bias")
    pos = graph.nodes.index(src)
    graph.nodes.remove(src)
    graph.nodes.remove(node)
    parts: list[str] = []
    for j, (lo, hi) in enumerate(runs):
        p = Node(graph.fresh_name(f"{src.name}_part{j}"), src.op, src.inputs, params={}, loc=src.loc)
        graph.nodes.insert(pos, p)
        set_param(graph, p, "weight", w[lo:hi])
        if b is not None:
            set_param(graph, p, "bias", np.asarray(b)[lo:hi])
        neuron: O.Neuron = node.op  # type: ignore[assignment]
        op = dataclasses.replace(neuron, v_th=float(vth[lo]), beta=float(beta[lo]))
        n = Node(graph.fresh_name(f"{node.name}_part{j}"), op, (p.name,), loc=node.loc)
        graph.nodes.insert(pos + 1, n)
        pos += 2
        parts.append(n.name)
    graph.nodes.insert(pos, Node(node.name, O.Concat(axis=0), tuple(parts), loc=node.loc))
