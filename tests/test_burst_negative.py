"""Burst neurons with negative spikes (max_spikes = B > 1, negative = signed | rectified): the
simulator against the reference formula of ``snnc.ir.ops.Neuron``, s[t] = clamp(floor(v/θ), lo, B)
with lo = −B (signed) or −min(B, n[t−1]) (rectified), soft reset; the B = 1 rule as its special
case; the net count of a constant input; ANN mode; and the verifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conversion_util import SIM, graph_from_text

from snnc.errors import VerifyError
from snnc.ir import ops as O
from snnc.ir import parse_graph
from snnc.passes._params import with_attrs

NET = """
graph @b(%x: analog[6]) {
  %n = neuron(%x) {v_th = 0.5, v_init = 0.5, max_spikes = 3, out_scale = 0.5, negative = "NEG"} : burst<3>[6]
  %readout = readout(%n) : analog[6]
  output %readout
}
"""


def _reference(currents: np.ndarray, theta: float, v_init: float, burst: int, negative: str) -> np.ndarray:
    """The equation, element by element, in float64 (the inputs are dyadic: every step is exact)."""
    v = np.full(currents.shape[1:], v_init * theta)
    n = np.zeros(currents.shape[1:])
    out = []
    for current in currents:
        v = v + current
        lo = -burst if negative == "signed" else (-np.minimum(burst, n) if negative == "rectified" else 0)
        s = np.clip(np.floor(v / theta), lo, burst)
        v = v - s * theta
        n = n + s
        out.append(s)
    return np.stack(out)


def _net(negative: str, burst: int = 3):
    text = NET.replace("NEG", negative)
    if burst == 1:
        return graph_from_text(text.replace("max_spikes = 3, ", "").replace("burst<3>", "spike"))
    return graph_from_text(text.replace("3", str(burst)))


def _simulate(graph, currents: np.ndarray) -> np.ndarray:
    """The simulator's neuron rule, step by step, on given per-step currents."""
    m = SIM.module(graph)
    node = graph.node("n")
    state: dict = {}
    spikes = [m._neuron(node, torch.from_numpy(c), m.params_of(node), state, False)[1].numpy() for c in currents]
    return np.stack(spikes)


@pytest.mark.parametrize("negative", ["signed", "rectified"])
@pytest.mark.parametrize("burst", [1, 2, 3, 5])
def test_simulator_fires_the_reference_bursts(negative: str, burst: int) -> None:
    """Random dyadic currents of both signs, up to beyond the burst range: the simulator's spikes are
    the formula's, bursts of −1 spikes included; for B = 1 the spike neuron's ±1 rule (its own code
    path in the simulator) is the formula's special case."""
    g = _net(negative, burst)
    rng = np.random.default_rng(burst)
    currents = (rng.integers(-12 * burst, 12 * burst, size=(20, 4, 6)) / 16).astype(np.float32)
    got = _simulate(g, currents)
    want = _reference(currents.astype(np.float64), 0.5, 0.5, burst, negative)
    np.testing.assert_array_equal(got, want)
    assert got.min() <= -2 if burst > 1 else got.min() == -1  # bursts of −1 spikes do occur
    if negative == "rectified":
        assert np.cumsum(got, axis=0).min() >= 0  # never below zero net spikes


@pytest.mark.parametrize("negative", ["signed", "rectified"])
def test_net_count_of_a_constant_input(negative: str) -> None:
    """A constant current I with |I| ≤ Bθ: after T steps the net count is floor((θ/2 + T·I)/θ)
    (signed), max(0, that) (rectified): the signed rate code at T·B levels."""
    x = (np.arange(-12, 12, 4, dtype=np.float32)[None, :] / 8)  # −1.5 .. 1.0, θ = 0.5, B = 3
    g = graph_from_text(NET.replace("NEG", negative))
    T = 8
    run = SIM.run_snn(g, x, T)
    counts = run.logits[0] * T / 0.5
    want = np.floor((0.25 + T * x[0].astype(np.float64)) / 0.5)
    if negative == "rectified":
        want = np.maximum(want, 0)
    np.testing.assert_allclose(counts, want, atol=1e-4)
    assert run.spikes["n"] >= float(np.abs(want).sum())


def test_ann_mode_clamps_to_the_burst_range() -> None:
    x = np.array([[-3.0, -1.0, -0.2, 0.2, 1.0, 3.0]], np.float32)
    for negative, lo in (("signed", -1.5), ("rectified", 0.0)):
        g = graph_from_text(NET.replace("NEG", negative))
        y = SIM.run_ann(g, x)["readout"]
        np.testing.assert_allclose(y[0], np.clip(x[0], lo, 1.5), rtol=1e-6)


def test_verifier_still_needs_a_soft_reset() -> None:
    g = parse_graph(NET.replace("NEG", "signed").strip())
    g.node("n").op = with_attrs(g.node("n").op, reset=O.Reset.HARD)
    with pytest.raises(VerifyError, match="negative=signed needs reset=soft"):
        g.infer_types()


SIGNED_NET = """
graph @s(%x: analog[2,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[3,4,4]
  %n = neuron(%c) {v_th = 0.8, v_init = 0.5, out_scale = 0.8, negative = "rectified"} : spike[3,4,4]
  %c2 = conv2d(%n) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[3,4,4]
  %s = neuron(%c2) {v_th = 0.7, v_init = 0.5, out_scale = 0.7, negative = "signed"} : spike[3,4,4]
  %f = flatten(%s) : spike[48]
  %l = linear(%f) params {weight = "l.weight"} : analog[3]
  %readout = readout(%l) : analog[3]
  output %readout
}
"""


def test_adafire_keeps_the_negative_rule_and_the_snn_tracks_its_ann() -> None:
    """adafire turns rectified and signed neurons into burst neurons of the same rule; at T = 8 with
    B = 4 the SNN's logits follow the graph's ANN mode, signed values included."""
    from conversion_util import context, run, uniform_inputs

    g = graph_from_text(SIGNED_NET)
    x = uniform_inputs((2, 4, 4), 64, seed=4)
    out = run("adafire{max-spikes=4,min-spikes=4,batches=1}", g, context(x, timesteps=8))
    assert [(n.op.negative.value, n.op.max_spikes) for n in out.ops(O.Neuron)] == [("rectified", 4), ("signed", 4)]
    assert str(out.node("s").type).startswith("burst<4>")
    ann = SIM.run_ann(out, x)["readout"]
    snn = SIM.run_snn(out, x, 8, record=["s"])
    assert snn.recorded["s"].min() < 0  # negative bursts reach the reader
    err = np.linalg.norm(snn.logits - ann) / np.linalg.norm(ann)
    assert err < 0.1, err
