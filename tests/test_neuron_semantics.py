"""The neuron op's fields are checked against its model: a field the equations never read for this
model / reset / leak is a VerifyError, and the features a backend is asked for are derived once
(snnc/ir/neuron_features.py) instead of in a list per backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from snnc.errors import VerifyError
from snnc.ir import Graph, Node, verify
from snnc.ir import ops as O
from snnc.ir.neuron_features import NeuronFeature as F
from snnc.ir.neuron_features import neuron_features, unsupported_features
from snnc.ir.types import TensorType


def _graph(op: O.Neuron, params: dict | None = None) -> Graph:
    g = Graph("g", [("x", TensorType((4,)))])
    g.nodes = [Node("n", op, ("x",), params=dict(params or {}))]
    g.outputs = ["n"]
    g.params = {name: np.ones(4, np.float32) for name in (params or {}).values()}
    g.infer_types()
    return g


def test_the_issue_example_is_refused_naming_every_meaningless_field():
    op = O.Neuron(model=O.NeuronModel.IF, reset=O.Reset.HARD, presubtract=True, alpha=0.7, tau=9.0,
                  decay_input=False)
    with pytest.raises(VerifyError) as err:
        verify(_graph(op))
    assert str(err.value) == (
        "neuron %n: alpha=0.7 has no effect: only model=cuba has a synaptic current, this is model=if; "
        "tau=9.0 has no effect: only leak=tau reads tau, this is leak=multiply; "
        "decay_input=false has no effect: only leak=tau and leak=rate read decay_input; "
        "presubtract=true has no effect: presubtract is the subtraction of a soft reset applied at once "
        "(reset=soft, reset_delay=false)"
    )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"leak": O.Leak.TAU}, "leak=tau has no effect: an IF neuron has no leak"),
        ({"v_reset": 0.3}, "v_reset=0.3 has no effect: only reset=hard reads v_reset"),
        ({"reset": O.Reset.NONE, "reset_delay": True}, "reset_delay=true has no effect: reset=none never resets"),
        ({"reset_delay": True, "presubtract": True}, "presubtract=true has no effect"),
        ({"emit": O.Emit.MEMBRANE, "out_scale": 2.0}, "out_scale=2.0 has no effect: emit=membrane"),
        ({"model": O.NeuronModel.LIF, "leak": O.Leak.TAU, "beta": 0.5}, "beta=0.5 has no effect: leak=tau"),
    ],
)
def test_meaningless_fields_are_refused(changes, fragment):
    with pytest.raises(VerifyError, match=fragment):
        verify(_graph(dataclasses.replace(O.Neuron(), **changes)))


@pytest.mark.parametrize(
    "op",
    [
        O.Neuron(),
        O.Neuron(model=O.NeuronModel.LIF, beta=0.9, reset=O.Reset.HARD, v_reset=0.2, strict=True),
        O.Neuron(model=O.NeuronModel.LIF, leak=O.Leak.TAU, tau=4.0, decay_input=False, reset=O.Reset.HARD,
                 v_reset=-0.1),
        O.Neuron(model=O.NeuronModel.CUBA, alpha=0.3, beta=0.8, leak=O.Leak.RATE, reset_delay=True),
        O.Neuron(model=O.NeuronModel.LIF, beta=0.9, presubtract=True, strict=True),
        O.Neuron(emit=O.Emit.MEMBRANE, reset=O.Reset.NONE),
    ],
)
def test_meaningful_combinations_verify(op):
    verify(_graph(op))


def test_features_of_a_converted_and_an_imported_neuron():
    converted = _graph(O.Neuron(v_init=0.5, out_scale=2.0))
    assert neuron_features(converted, converted.nodes[0]) == {
        F.FIRES_AT_THRESHOLD, F.SOFT_RESET, F.NONZERO_START, F.OUTPUT_SCALE,
    }
    snntorch = _graph(O.Neuron(model=O.NeuronModel.LIF, beta=0.9, strict=True, reset_delay=True))
    assert neuron_features(snntorch, snntorch.nodes[0]) == {
        F.FIRES_ABOVE_THRESHOLD, F.SOFT_RESET, F.LEAK, F.DELAYED_RESET,
    }
    per_channel = _graph(O.Neuron(), {"v_th": "n.v_th"})
    assert F.PER_CHANNEL in neuron_features(per_channel, per_channel.nodes[0])


def test_unsupported_features_lists_each_with_its_fix():
    g = _graph(O.Neuron(v_init=0.5))
    lines = unsupported_features(g, g.nodes[0], {F.FIRES_AT_THRESHOLD}, "chip",
                                 {F.SOFT_RESET: "run chip-legalize"})
    assert lines == [
        "neuron %n: resets by subtracting v_th (reset=soft): not supported by the chip target; run chip-legalize",
        "neuron %n: starts at v_init != 0: not supported by the chip target",
    ]
