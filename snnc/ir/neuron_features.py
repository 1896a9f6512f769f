"""What a ``neuron`` op asks of the hardware or library that runs it, as a set of features.

The ``neuron`` op carries many typed fields (see :class:`snnc.ir.ops.Neuron`); a backend does not
care about fields but about behaviours: does the neuron fire on ``v > v_th`` or ``v >= v_th``,
reset by subtraction or to a potential, leak, send bursts ...  :func:`neuron_features` names the
behaviours a neuron node uses; each backend declares the set it implements and
:func:`unsupported_features` lists the rest, so that the description lives here once instead of
in a hand-written list of flags per backend.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from snnc.ir import ops as O
from snnc.ir.graph import Graph, Node


class NeuronFeature(enum.Enum):
    """One behaviour of a neuron; the value says it in words, for diagnostics."""

    FIRES_AT_THRESHOLD = "fires on v >= v_th (strict=false)"
    FIRES_ABOVE_THRESHOLD = "fires on v > v_th (strict=true)"
    SOFT_RESET = "resets by subtracting v_th (reset=soft)"
    HARD_RESET = "resets to v_reset (reset=hard)"
    NO_RESET = "never resets (reset=none)"
    NONZERO_RESET = "resets to v_reset != 0"
    NONZERO_START = "starts at v_init != 0"
    BURSTS = "sends bursts of several spikes per step (max_spikes > 1)"
    LEAK = "leaks (v = beta*v + I with beta < 1)"
    TAU_LEAK = "leaks towards a resting potential with a time constant (leak=tau)"
    RATE_LEAK = "leaks towards a resting potential at a rate (leak=rate)"
    CURRENT_BASED = "has a decaying synaptic current (model=cuba)"
    DELAYED_RESET = "resets one step late (reset_delay=true)"
    PRESUBTRACT = "subtracts the stored reset before comparing (presubtract=true)"
    EMITS_MEMBRANE = "sends its membrane potential (emit=membrane)"
    OUTPUT_SCALE = "sends spikes worth out_scale != 1"
    PER_CHANNEL = "has per-channel parameters"
    NEGATIVE_SPIKES = "sends negative spikes too (negative=signed or rectified)"


def neuron_features(graph: Graph, node: Node) -> frozenset[NeuronFeature]:
    """The behaviours ``node`` (a ``neuron``) uses."""
    op = node.op
    if not isinstance(op, O.Neuron):
        raise TypeError(f"{op.name} %{node.name} is not a neuron")
    F = NeuronFeature
    found = {F.FIRES_ABOVE_THRESHOLD if op.strict else F.FIRES_AT_THRESHOLD}
    found.add({O.Reset.SOFT: F.SOFT_RESET, O.Reset.HARD: F.HARD_RESET, O.Reset.NONE: F.NO_RESET}[op.reset])
    if op.reset is O.Reset.HARD and op.v_reset != 0.0:
        found.add(F.NONZERO_RESET)
    if op.v_init != 0.0:
        found.add(F.NONZERO_START)
    if op.max_spikes > 1:
        found.add(F.BURSTS)
    if op.leak is O.Leak.TAU:
        found.add(F.TAU_LEAK)
    elif op.leak is O.Leak.RATE:
        found.add(F.RATE_LEAK)
    elif op.beta != 1.0 or "beta" in node.params:
        found.add(F.LEAK)
    if op.model is O.NeuronModel.CUBA:
        found.add(F.CURRENT_BASED)
    if op.reset_delay:
        found.add(F.DELAYED_RESET)
    if op.presubtract:
        found.add(F.PRESUBTRACT)
    if op.emit is O.Emit.MEMBRANE:
        found.add(F.EMITS_MEMBRANE)
    if op.out_scale != 1.0 or "out_scale" in node.params:
        found.add(F.OUTPUT_SCALE)
    if node.params:
        found.add(F.PER_CHANNEL)
    if op.negative is not O.Negative.NONE:
        found.add(F.NEGATIVE_SPIKES)
    return frozenset(found)


def unsupported_features(graph: Graph, node: Node, supported: Collection[NeuronFeature], target: str,
                         fixes: Mapping[NeuronFeature, str] | None = None) -> list[str]:
    """One line per feature of ``node`` that ``target`` does not implement, in the enum's order,
    each with the fix when ``fixes`` knows one: ``neuron %n2: resets by subtracting v_th
    (reset=soft): not supported by the loihi target; run loihi-legalize``."""
    fixes = fixes or {}
    used = neuron_features(graph, node)
    out = []
    for feature in NeuronFeature:
        if feature in used and feature not in supported:
            line = f"neuron %{node.name}: {feature.value}: not supported by the {target} target"
            out.append(line + (f"; {fixes[feature]}" if feature in fixes else ""))
    return out
