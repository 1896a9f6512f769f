"""phase-coding: single-spike phase coding with threshold shift and base manipulation.

The differential tests run the phase-coded graph in the torch simulator over its pipelined timesteps
and compare the decoded output with the simulator's ANN mode (the phase-quantised network), and with
the source ANN; tests/phase_reference.py, an independent sequence-level implementation of the op
docstrings, cross-checks both modes of the simulator.
"""

from __future__ import annotations

import numpy as np
import phase_reference
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, ir, run, uniform_inputs

from snnc.errors import PassError, UnsupportedError, UserError
from snnc.ir import parse_graph, print_graph
from snnc.passes.phase_coding import PhaseCoding, phase_quantise

NET = """
graph @p(%x: analog[1,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,4,4]
  %n = neuron(%c) {v_init = 0.5} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[2,4,4]
  %p = spike_maxpool(%n) : spike[2,2,2]
  %c2 = conv2d(%p) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[3,2,2]
  %n2 = neuron(%c2) {v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[3,2,2]
  %f = flatten(%n2) : spike[12]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[4]
  %readout = readout(%l) : analog[4]
  output %readout
}
"""

EXPECTED = """
graph @p(%x: analog[1,4,4]) attributes {timesteps = 18} {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,4,4]
  %n = phase_neuron(%c) {base = 1.5, window = 6, constant_input = true} params {v_th = "n.v_th", out_scale = "n.out_scale"} : spike[2,4,4]
  %p = phase_maxpool(%n) {window = 6, start = 6} : spike[2,2,2]
  %c2 = conv2d(%p) {padding = [1, 1]} params {weight = "c2.weight"} : analog[3,2,2]
  %n2 = phase_neuron(%c2) {base = 1.5, window = 6, start = 6, v_th = 0.5, out_scale = 0.5} params {bias = "c2.bias"} : spike[3,2,2]
  %f = flatten(%n2) : spike[12]
  %l = linear(%f) params {weight = "l.weight"} : analog[4]
  %l_decode = phase_decode(%l) {base = 1.5, window = 6, start = 12, total = 18} params {bias = "l.bias"} : analog[4]
  %readout = readout(%l_decode) : analog[4]
  output %readout
}
"""


def _net():
    return graph_from_text(NET, params={"n.v_th": [0.8, 1.2], "n.out_scale": [0.8, 1.2]})


def test_golden() -> None:
    """Windows are pipelined (the first neuron samples the direct input in window 0 and emits in
    window 1, ...), biases of spike-reading layers move into the neuron / decoder, the gated max pool
    becomes first-spike pooling, and T = (layers + 1)·K."""
    ctx = context(uniform_inputs((1, 4, 4), 8), timesteps=6)
    out = run("phase-coding{base=1.5}", _net(), ctx)
    assert print_graph(out) == ir(EXPECTED)
    assert parse_graph(print_graph(out)) == out
    assert ctx.results["phase-coding"] == {"base": 1.5, "window": 6, "timesteps": 18, "layers": 2}


def test_time_domain_decodes_to_ann_mode() -> None:
    g = _net()
    x = uniform_inputs((1, 4, 4), 128, seed=1)
    out = run("phase-coding{base=1.3,window=10}", g, context(x))
    snn = SIM.run_snn(out, x, out.attrs.timesteps)
    ann = SIM.run_ann(out, x)[out.outputs[0]]
    np.testing.assert_allclose(snn.logits, ann, atol=5e-6)
    spikes = sum(snn.spikes.values())
    assert 0 < spikes <= 2 * 4 * 4 + 3 * 2 * 2  # at most one spike per neuron
    assert snn.sops["c2"] > 0 and snn.sops["l"] > 0  # the layers after phase neurons accumulate spikes
    # the independent reference agrees with both modes
    ref, ref_spikes = phase_reference.simulate(out, x)
    np.testing.assert_allclose(snn.logits, ref, atol=1e-6)
    assert ref_spikes == pytest.approx(spikes)
    np.testing.assert_allclose(ann, phase_reference.ann_mode(out, x), atol=1e-6)


def test_too_few_timesteps_is_an_error() -> None:
    out = run("phase-coding{base=1.5}", _net(), context(uniform_inputs((1, 4, 4), 8), timesteps=6))
    with pytest.raises(UserError, match=r"graph @p is phase-coded: its output is decoded at step 18 "
                                        r"\(graph timesteps 18\); simulate at least 18 steps, not 6"):
        SIM.run_snn(out, uniform_inputs((1, 4, 4), 2), 6)


def test_quantiser_levels_and_threshold_shift() -> None:
    base, window = 1.5, 5
    levels = base ** -np.arange(window)
    np.testing.assert_allclose(phase_quantise(levels, base, window), levels)
    mid = (1 + 1 / base) / 2
    just_above = levels * mid * (1 + 1e-9)
    just_below = levels * mid * (1 - 1e-9)
    np.testing.assert_allclose(phase_quantise(just_above, base, window), levels)  # rounds up to level k
    np.testing.assert_allclose(phase_quantise(just_below[:-1], base, window), levels[1:])  # down to k + 1
    assert phase_quantise(np.array([just_below[-1], 0.0, -1.0]), base, window).tolist() == [0.0, 0.0, 0.0]
    assert phase_quantise(np.array([7.0]), base, window).tolist() == [1.0]  # clipped at θ


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_digits(arch: str) -> None:
    """Differential on the trained models, K = T = 8: the time-domain run equals ANN mode, predictions
    stay within 1.5 points of the ANN, with far fewer spikes than rate coding at the same T."""
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("test")
    ctx = context(xtr[:512], ytr[:512], timesteps=8, batch_size=128)
    lowered = run("canonicalize,fold-bn,calibrate,lower-neurons,encode-input", digits_model(arch), ctx)
    out = run("phase-coding", lowered, ctx)
    got = SIM.run_snn(out, xte, out.attrs.timesteps)
    np.testing.assert_allclose(got.logits, SIM.run_ann(out, xte)[out.outputs[0]], atol=5e-6)
    source = digits_model(arch)
    ann = SIM.run_ann(source, xte)[source.outputs[0]]
    assert float((got.predictions == yte).mean()) >= float((ann.argmax(1) == yte).mean()) - 0.015
    rate = SIM.run_snn(lowered, xte, 8)
    assert sum(got.spikes.values()) < 0.5 * sum(rate.spikes.values())
    assert 1.0 < ctx.results["phase-coding"]["base"] <= 2.0


def test_errors() -> None:
    ctx = context(uniform_inputs((1, 4, 4), 8), timesteps=6)
    with pytest.raises(PassError, match=r"base=2.5 must be in \(1, 2\], or 0 to search"):
        run("phase-coding{base=2.5}", _net(), ctx)
    burst = graph_from_text(NET.replace("v_th = 0.5, v_init = 0.5, out_scale = 0.5} : spike[3,2,2]",
                                        "v_th = 0.5, v_init = 0.5, max_spikes = 2, out_scale = 0.5} : burst<2>[3,2,2]")
                            .replace("spike[12]", "burst<2>[12]"),
                            params={"n.v_th": [0.8, 1.2], "n.out_scale": [0.8, 1.2]})
    with pytest.raises(UnsupportedError, match="neuron %n2 sends bursts"):
        PhaseCoding(base=1.5).apply(ctx, burst)
    residual = graph_from_text("""
    graph @r(%x: analog[4]) {
      %l = linear(%x) params {weight = "w", bias = "b"} : analog[4]
      %n = neuron(%l) {v_init = 0.5} : spike[4]
      %l2 = linear(%n) params {weight = "w2"} : analog[4]
      %n2 = neuron(%l2) {v_init = 0.5} : spike[4]
      %a = add(%n2, %n) : analog[4]
      %readout = readout(%a) : analog[4]
      output %readout
    }
    """)
    with pytest.raises(UnsupportedError, match=r"operands of add %a arrive in windows \[1, 2\]"):
        PhaseCoding(base=1.5).apply(ctx, residual)
