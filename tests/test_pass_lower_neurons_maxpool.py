"""Gated max pooling of neurons that send −1 spikes, and the invariant-maxpool option, as lowered
by lower-neurons and run by the reference simulator."""

from __future__ import annotations

import numpy as np
from conversion_util import SIM, graph_from_text

# n1 turns the input into spike trains: x = 1.0 fires every step, x = 0.5 every other step (v_init
# 0.5: v = 1.0, 0.5, 1.0, ...).  n2 reads 3·s − 1.6: +1.4 every step for the first element (b); +1.4
# then −1.6 alternately for the second (a), whose rectified neuron then fires +1, −1, +1, −1, ...
# (10 spikes, net count 1, 0, 1, 0, ...) and falls silent at net 0 from step 11 on.
GATED = """
graph @gate(%x: analog[1,1,2]) {
  %n1 = neuron(%x) {v_init = 0.5, v_th = 1.0, out_scale = 1.0} : spike[1,1,2]
  %s = scale(%n1) {factor = 3.0} params {bias = "s.bias"} : analog[1,1,2]
  %n2 = neuron(%s) {v_init = 0.5, v_th = 1.0, out_scale = 1.0, negative = "rectified"} : spike[1,1,2]
  %p = spike_maxpool(%n2) {kernel = [1, 2], stride = [1, 2]} : spike[1,1,1]
  %f = flatten(%p) : spike[1]
  %readout = readout(%f) : analog[1]
  output %readout
}
"""


def _gate_graph(a_first: bool):
    g = graph_from_text(GATED, params={"s.bias": np.array([-1.6], np.float32)})
    x = np.array([[[[0.5, 1.0] if a_first else [1.0, 0.5]]]], np.float32)
    return g, x


def test_gate_counts_net_spikes() -> None:
    """The gate compares net counts: −1 spikes take spikes back.  With a first in its window, the
    alternating element wins only step 1 (net 1 = 1, a tie, first in the window); from step 2 the
    steady element b has the larger net count, so 16 of 16 steps pass a +1.  Counting |s| (a −1 as
    one more spike) would let a win steps 1-10 (|count| t = t: ties) and pass 6 net spikes."""
    g, x = _gate_graph(a_first=True)
    run = SIM.run_snn(g, x, 16)
    np.testing.assert_allclose(run.logits, [[1.0]])
    # a −1 spike is still one event for the counts: a sends 10, b 16 (and n1: 8 + 16)
    assert run.spikes["n2"] == 26.0
    assert run.spikes["n1"] == 24.0


def test_gate_order_in_window_does_not_matter_once_counts_differ() -> None:
    g, x = _gate_graph(a_first=False)
    np.testing.assert_allclose(SIM.run_snn(g, x, 16).logits, [[1.0]])


EXIT = """
graph @e(%x: analog[4]) {
  %n0 = neuron(%x) {v_init = 0.5, v_th = 1.0, out_scale = 1.0} : spike[4]
  %l0 = linear(%n0) params {weight = "l0.weight"} : analog[4]
  %n = neuron(%l0) {v_init = 0.5, v_th = 1.0, out_scale = 1.0, negative = "rectified"} : spike[4]
  %l = linear(%n) params {weight = "l.weight"} : analog[2]
  %r = readout(%l) {exit_rule = "confidence"} params {exit_thresholds = "exit"} : analog[2]
  output %r
}
"""


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.steps_used, b.steps_used)
    for key in ("spikes", "sops", "macs", "hoisted_macs"):
        assert getattr(a, key) == getattr(b, key), key


def test_run_snn_steps_equals_one_run_per_t() -> None:
    """The benchmarks read every T from one run (TorchSimulator.run_snn_steps): the same floats as
    a run of each T, gated pooling (stateful) and an early-exit readout (samples that stop at
    different steps, and all of them before the longest T) included."""
    g, x = _gate_graph(a_first=True)
    x = np.concatenate([x, x[..., ::-1]])
    steps = SIM.run_snn_steps(g, x, (1, 3, 16))
    for t, got in steps.items():
        _same(got, SIM.run_snn(g, x, t))
    rng = np.random.default_rng(0)
    params = {"l0.weight": rng.normal(0.0, 1.0, (4, 4)), "l.weight": rng.normal(0.0, 1.0, (2, 4)),
              "exit": np.full(8, 0.8)}
    e = graph_from_text(EXIT, params={k: np.asarray(v, np.float32) for k, v in params.items()})
    xe = rng.uniform(0.0, 1.0, (16, 4)).astype(np.float32)
    steps = SIM.run_snn_steps(e, xe, (2, 5, 8, 12))
    assert 1 < len(set(steps[12].steps_used.tolist()))  # the exit rule has something to do
    for t, got in steps.items():
        _same(got, SIM.run_snn(e, xe, t))
