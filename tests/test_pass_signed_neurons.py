"""signed-neurons: analog values that a conv / linear reads get a signed neuron; currents stay.

Also the negative spikes of the neuron op (negative=signed / rectified) in the reference simulator.
"""

from __future__ import annotations

import numpy as np
import torch
from conversion_util import SIM, context, graph_from_text, run, uniform_inputs

from snnc.ir import ops as O
from snnc.ir.neuron_features import NeuronFeature, neuron_features
from snnc.passes.signed_neurons import analog_reads

CHAIN = """
graph @c(%x: analog[2,4,4]) {
  %c1 = conv2d(%x) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[2,4,4]
  %r1 = relu(%c1) : analog[2,4,4]
  %c2 = conv2d(%r1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[2,4,4]
  %c3 = conv2d(%c2) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[2,4,4]
  %a = add(%c3, %r1) : analog[2,4,4]
  %r2 = relu(%a) : analog[2,4,4]
  %f = flatten(%r2) : analog[32]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  output %l
}
"""


def test_codes_only_what_a_weighted_op_reads() -> None:
    g = graph_from_text(CHAIN)
    x = uniform_inputs((2, 4, 4), 32)
    ctx = context(x, timesteps=64)
    lowered = run("calibrate,lower-neurons", g, ctx)
    # c3 reads c2's analog output; the add (-> r2) is a current; c1 reads the input; l reads spikes
    assert {v: [n.name for n in r] for v, r in analog_reads(lowered).items()} == {"c2": ["c3"]}
    out = run("signed-neurons", lowered, ctx)
    signed = out.node("c2_signed")
    assert isinstance(signed.op, O.Neuron) and signed.op.negative is O.Negative.SIGNED
    assert out.node("c3").inputs == ("c2_signed",)
    assert analog_reads(out) == {}
    assert NeuronFeature.NEGATIVE_SPIKES in neuron_features(out, signed)
    # the SNN converges to the graph's ANN mode (where c2 is clipped to ±θ)
    ann = SIM.run_ann(out, x)[out.outputs[0]]
    errors = [np.abs(SIM.run_snn(out, x, t).logits - ann).mean() for t in (8, 64, 256)]
    assert errors[2] < errors[1] < errors[0], errors


def _neuron(negative: O.Negative):
    g = graph_from_text(f"""
    graph @n(%x: analog[3]) {{
      %n = neuron(%x) {{v_init = 0.5, negative = "{negative.value}"}} : spike[3]
      output %n
    }}
    """)
    return SIM.module(g)


def test_signed_neuron_counts_round_the_signed_sum() -> None:
    m = _neuron(O.Negative.SIGNED)
    currents = torch.tensor([[-0.3, 0.3, -0.05]])
    state: dict = {}
    total = torch.zeros(1, 3)
    for _ in range(20):
        _, s = m._neuron(m.graph.nodes[0], currents, {}, state, False)
        total += s
    np.testing.assert_array_equal(total.numpy(), np.floor(0.5 + 20 * currents.numpy()))


def test_rectified_neuron_takes_spikes_back() -> None:
    m = _neuron(O.Negative.RECTIFIED)
    state: dict = {}
    total = torch.zeros(1, 3)
    for t in range(20):  # +1 for 5 steps, then -0.5: a plain IF neuron would keep its 5 spikes
        current = torch.full((1, 3), 1.0 if t < 5 else -0.5)
        _, s = m._neuron(m.graph.nodes[0], current, {}, state, False)
        total += s
        assert float(total.min()) >= 0.0
    np.testing.assert_array_equal(total.numpy(), np.zeros((1, 3)))  # max(0, floor(0.5 + 5 - 7.5))
