"""encode-input: the encoder after the graph input, and the graph's T."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, ir, logits, rel_diff, run, uniform_inputs

from snnc.errors import PassError
from snnc.ir import ops as O
from snnc.ir import print_graph, verify
from snnc.pass_manager import PassContext

NET = """
graph @e(%x: analog[6]) {
  %l = linear(%x) params {weight = "w", bias = "b"} : analog[4]
  %n = neuron(%l) {v_init = 0.5} : spike[4]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""

EXPECTED = """
graph @e(%x: analog[6]) attributes {timesteps = 5} {
  %x_enc = encode(%x) : analog[6]
  %l = linear(%x_enc) params {weight = "w", bias = "b"} : analog[4]
  %n = neuron(%l) {v_init = 0.5} : spike[4]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def test_golden_direct() -> None:
    out = run("encode-input", graph_from_text(NET), context(uniform_inputs((6,), 4), timesteps=5))
    assert print_graph(out) == ir(EXPECTED)
    verify(out, require_event=True)  # the linear after a direct encoder is the marked encoding layer


def test_direct_preserves_the_snn() -> None:
    g = graph_from_text(NET)
    x = uniform_inputs((6,), 64)
    out = run("encode-input", g, context(x, timesteps=8))
    assert rel_diff(logits(g, x, 8), logits(out, x, 8)) == 0.0


def test_scheme_is_replaced_and_spike_codes_approximate_x() -> None:
    g = graph_from_text(NET)
    x = uniform_inputs((6,), 256)
    ctx = context(x, timesteps=64)
    rate = run("encode-input{scheme=rate}", run("encode-input", g, ctx), ctx)
    encoders = list(rate.ops(O.Encode))
    assert len(encoders) == 1 and encoders[0].op.scheme is O.Scheme.RATE and str(encoders[0].type) == "spike[6]"
    assert any("clamps inputs to [0, 1]" in n for n in ctx.notes)
    rec = SIM.run_snn(rate, x, 64, record=[encoders[0].name]).recorded[encoders[0].name]
    assert np.abs(rec - x).mean() < 0.06  # Bernoulli rate code: error ~ sqrt(x(1−x)/T)
    verify(rate, require_event=True)


def test_timesteps_must_be_positive() -> None:
    with pytest.raises(PassError, match="timesteps=0 must be >= 1"):
        run("encode-input", graph_from_text(NET), PassContext(timesteps=0))
