"""The reference simulator (snnc/backends/torch/simulator.py) against hand-computed numbers.

Neuron dynamics as spike trains worked out by hand (dyadic currents, so the floats are exact), the
phase-coding ops step by step, synaptic-op counts (SOPs at borders and for bursts), the counting of
early-exited samples, and the hoisting of loop-invariant layers (same floats, fewer MACs).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from snnc.backends.torch.simulator import GraphModule, TorchSimulator, loop_invariant_nodes
from snnc.ir import Graph, parse_graph

SIM = TorchSimulator()


def graph(text: str, params: dict[str, list] | None = None) -> Graph:
    g = parse_graph(textwrap.dedent(text).lstrip("\n"))
    g.params = {k: np.asarray(v, dtype=np.float32) for k, v in (params or {}).items()}
    return g


class _Traced(GraphModule):
    """Keeps the graph output of every step."""

    def step(self, node, ins, events, state, t, T, surrogate=False):
        out = super().step(node, ins, events, state, t, T, surrogate)
        if node.name == self.graph.outputs[0]:
            self.trace.append(out.numpy().copy())
        return out


def output_train(g: Graph, x: list, steps: int) -> np.ndarray:
    """The graph output at each step t = 1..steps, shape (steps, N, ...)."""
    m = _Traced(g)
    m.trace = []
    m.run_snn(torch.tensor(x, dtype=torch.float32), steps, count=False, hoist=False)
    return np.stack(m.trace)


NEURON = """
graph @n(%x: analog[1]) {{
  %y = neuron(%x) {{{attrs}}} : {kind}[1]
  output %y
}}
"""


@pytest.mark.parametrize(
    ("attrs", "kind", "current", "expected"),
    [
        # v0 = 0.5: .875, 1.25→.25, .625, 1.0→0 (v ≥ θ fires), .375, .75, 1.125→.125, .5
        ("v_init = 0.5", "spike", 0.375, [0, 1, 0, 1, 0, 0, 1, 0]),
        # strict (v > θ): 1.0 does not fire, 1.375 does
        ("v_init = 0.5, strict = true", "spike", 0.375, [0, 1, 0, 0, 1, 0, 1, 0]),
        # hard reset to 0: .875, 1.25→0, .375, .75, 1.125→0, .375, .75, 1.125→0
        ('reset = "hard", v_init = 0.5', "spike", 0.375, [0, 1, 0, 0, 1, 0, 0, 1]),
        # burst B = 3, soft reset: 1.75→1 (.75), 2.5→2 (.5), 2.25→2 (.25), 2.0→2 (0), 1.75→1
        ("max_spikes = 3", "burst<3>", 1.75, [1, 2, 2, 2, 1]),
        # burst clamped at B: 4.5→3 (1.5), 6.0→3 (3.0), 7.5→3
        ("max_spikes = 3", "burst<3>", 4.5, [3, 3, 3]),
        # LIF β = 0.5: .75, 1.125→.125, .8125, 1.15625→.15625, .828125, 1.1640625→.1640625
        ('model = "lif", beta = 0.5', "spike", 0.75, [0, 1, 0, 1, 0, 1]),
        # out_scale multiplies what is sent
        ("v_init = 0.5, out_scale = 2.5", "spike", 0.375, [0, 2.5, 0, 2.5]),
    ],
)
def test_neuron_spike_trains(attrs: str, kind: str, current: float, expected: list[float]) -> None:
    g = graph(NEURON.format(attrs=attrs, kind=kind))
    got = output_train(g, [[current]], len(expected))[:, 0, 0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_phase_neuron_integrates_one_window_and_fires_once_at_its_level() -> None:
    """θ = 1, B = 2, K = 3: the levels times (1 + 1/2)/2 are 0.75, 0.375, 0.1875 (offsets 0, 1, 2 of the
    emission window, steps 3, 4, 5).  %a samples its constant input once; %b integrates
    x = I·(1 + 1/2 + 1/4) and sends out_scale = 0.5."""
    g = graph("""
    graph @p(%x: analog[2]) {
      %a = phase_neuron(%x) {window = 3, constant_input = true} : spike[2]
      %b = phase_neuron(%x) {window = 3, out_scale = 0.5} : spike[2]
      %y = concat(%a, %b) : spike[4]
      output %y
    }
    """)
    x = [[0.5, 0.0], [0.25, 2.0]]
    expected = np.zeros((7, 2, 4))
    expected[4, 0, 0] = 1.0  # %a: 0.5 ≥ 0.375
    expected[3, 0, 2] = 0.5  # %b: 0.875 ≥ 0.75
    expected[5, 1, 0] = 1.0  # %a: 0.25 ≥ 0.1875
    expected[3, 1, 1] = 1.0  # %a: 2.0, above the top level
    expected[4, 1, 2] = 0.5  # %b: 0.4375 ≥ 0.375
    expected[3, 1, 3] = 0.5  # %b: 3.5
    np.testing.assert_allclose(output_train(g, x, 7), expected, atol=1e-6)
    # ANN mode: out_scale·B^(−k) for the level of I itself
    ann = SIM.run_ann(g, np.array(x, np.float32))["y"]
    np.testing.assert_allclose(ann, [[0.5, 0.0, 0.25, 0.0], [0.25, 1.0, 0.125, 0.5]])


def test_phase_maxpool_passes_the_first_spike_of_each_window() -> None:
    # 1.0 fires at k = 0 (t = 3), 0.5 at k = 1 (t = 4): the pool passes only the first
    g = graph(
        """
    graph @m(%x: analog[1,1,2]) {
      %n = phase_neuron(%x) {window = 3, constant_input = true} : spike[1,1,2]
      %p = phase_maxpool(%n) {kernel = [1, 2], stride = [1, 2], window = 3, start = 3} : spike[1,1,1]
      %f = flatten(%p) : spike[1]
      %l = linear(%f) params {weight = "w"} : analog[3]
      output %l
    }
    """,
        {"w": [[1.0], [2.0], [3.0]]},
    )
    got = output_train(g, [[[[0.5, 1.0]]]], 6)[:, 0]
    np.testing.assert_allclose(got[:, 0], [0, 0, 0, 1, 0, 0])
    run = SIM.run_snn(g, np.array([[[[0.5, 1.0]]]], np.float32), 6)
    assert run.spikes == {"n": 2.0}
    assert run.sops == {"l": 3.0}  # one event through the pool, fan-out 3


def test_phase_decode_weights_its_window_so_the_mean_is_the_decoded_value() -> None:
    g = graph(
        """
    graph @d(%x: analog[2]) attributes {timesteps = 4} {
      %y = phase_decode(%x) {window = 3, start = 1, total = 4} params {bias = "b"} : analog[2]
      %r = readout(%y) : analog[2]
      output %r
    }
    """,
        {"b": [0.5, -1.0]},
    )
    x = [[1.0, 2.0]]
    train = output_train(g, x, 4)[:, 0]
    np.testing.assert_allclose(train, [[0, 0], [4 * 1.5, 4 * 1.0], [2, 4], [1, 2]])
    # mean over the 4 steps: (1 + 1/2 + 1/4)·I + b; ANN mode: I + b
    np.testing.assert_allclose(SIM.run_snn(g, np.array(x, np.float32), 4).logits, [[2.25, 2.5]])
    np.testing.assert_allclose(SIM.run_ann(g, np.array(x, np.float32))["r"], [[1.5, 1.0]])


# -- counting ---------------------------------------------------------------------------------------------

SOPS = """
graph @s(%x: analog[1,4]) {
  %n = neuron(%x) {max_spikes = 2} : burst<2>[1,4]
  %c = conv1d(%n) {padding = 1} params {weight = "c.weight"} : analog[2,4]
  output %c
}
"""


def test_sops_are_events_times_fanout_with_borders_and_bursts() -> None:
    g = graph(SOPS, {"c.weight": np.ones((2, 1, 3))})
    # currents 2.0, 0.5, 0.25, 1.0 over 4 steps: 2+2+2+2, 0+1+0+1, 0+0+0+1, 1+1+1+1 spikes
    # fan-out (2 output channels × taps inside the border): 4, 6, 6, 4
    x = np.array([[[2.0, 0.5, 0.25, 1.0]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
    run = SIM.run_snn(g, x, 4)
    assert run.spikes == {"n": pytest.approx((8 + 2 + 1 + 4) / 2)}  # per sample: the mean over the batch
    assert run.sops == {"c": pytest.approx((8 * 4 + 2 * 6 + 1 * 6 + 4 * 4) / 2)}
    assert run.macs == {"c": 0.0} and run.hoisted_macs == {"c": 0.0}


EXIT = """
graph @e(%x: analog[4]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[4]
  %l0 = linear(%e) params {weight = "l0.weight"} : analog[4]
  %n = neuron(%l0) : spike[4]
  %l = linear(%n) params {weight = "l.weight"} : analog[2]
  %r = readout(%l) {exit_rule = "confidence"} params {exit_thresholds = "exit"} : analog[2]
  output %r
}
"""


@pytest.mark.parametrize("second", ["never exits", "exits too"])
def test_exited_samples_stop_counting_and_keep_their_logits(second: str) -> None:
    params = {"l0.weight": np.eye(4), "l.weight": [[5, 5, 0, 0], [0, 0, 5, 5]], "exit": [0.9] * 4}
    g = graph(EXIT, params)
    # sample A: logits [10, 0] at step 1, confident: exits; sample B: [10, 10] (or [0, 10]) at every step
    b = [1.0, 1.0, 1.0, 1.0] if second == "never exits" else [0.0, 0.0, 1.0, 1.0]
    run = SIM.run_snn(g, np.array([[1.0, 1.0, 0.0, 0.0], b], np.float32), 4)
    b_steps = 4 if second == "never exits" else 1
    b_spikes = sum(b)
    assert run.steps_used.tolist() == [1, b_steps]
    np.testing.assert_allclose(run.logits, [[10.0, 0.0], [10.0 if b[0] else 0.0, 10.0]])
    # A counts its first step only; B every step it ran
    assert run.spikes["n"] == pytest.approx((2 + b_spikes * b_steps) / 2)
    assert run.sops["l"] == pytest.approx(2 * (2 + b_spikes * b_steps) / 2)  # fan-out 2
    assert run.macs["l0"] == pytest.approx(16 * (1 + b_steps) / 2)
    assert run.hoisted_macs["l0"] == pytest.approx(16.0)  # loop-invariant: once per sample
    # without the exit rule every sample counts 4 steps
    plain = graph(EXIT.replace(' {exit_rule = "confidence"} params {exit_thresholds = "exit"}', ""), params)
    full = SIM.run_snn(plain, np.array([[1.0, 1.0, 0.0, 0.0], b], np.float32), 4)
    assert full.spikes["n"] == pytest.approx((2 + b_spikes) * 4 / 2)
    assert full.macs["l0"] == pytest.approx(16 * 4)


# -- loop-invariant layers ---------------------------------------------------------------------------------

HOIST = """
graph @h(%x: analog[1,5,5]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[1,5,5]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,5,5]
  %p = avgpool2d(%c) : analog[2,2,2]
  %n = neuron(%p) {v_init = 0.5} : spike[2,2,2]
  %f = flatten(%n) : spike[8]
  %l = linear(%f) params {weight = "l.weight"} : analog[4]
  %m = neuron(%l) {emit = "membrane"} : analog[4]
  %l2 = linear(%m) params {weight = "l2.weight", bias = "l2.bias"} : analog[3]
  %r = readout(%l2) : analog[3]
  output %r
}
"""


def _hoist_graph() -> Graph:
    rng = np.random.default_rng(0)
    shapes = {
        "c.weight": (2, 1, 3, 3),
        "c.bias": (2,),
        "l.weight": (4, 8),
        "l2.weight": (3, 4),
        "l2.bias": (3,),
    }
    return graph(HOIST, {k: rng.standard_normal(s) for k, s in shapes.items()})


def test_loop_invariant_nodes_are_the_direct_coded_layers_before_the_first_neuron() -> None:
    assert loop_invariant_nodes(_hoist_graph()) == {"e", "c", "p"}


def test_hoisting_gives_the_same_floats_and_counts_invariant_layers_once() -> None:
    g = _hoist_graph()
    x = torch.as_tensor(np.random.default_rng(1).uniform(0, 1, (16, 1, 5, 5)).astype(np.float32))
    m = GraphModule(g)
    hoisted = m.run_snn(x, 6, record=["n", "m"])
    plain = m.run_snn(x, 6, record=["n", "m"], hoist=False)
    assert torch.equal(hoisted["logits"], plain["logits"])
    for v in ("n", "m"):
        assert torch.equal(hoisted["recorded"][v], plain["recorded"][v])
    assert float(hoisted["spikes"]["n"]) > 0
    for key in ("spikes", "sops", "macs", "hoisted_macs"):
        assert {k: float(v) for k, v in hoisted[key].items()} == {k: float(v) for k, v in plain[key].items()}

    run = SIM.run_snn(g, x.numpy(), 6)
    conv = 2 * 13 * 13  # per step: 2 output channels × (5·3 − 2)² taps inside the padding
    pool = 2 * 4 * 4  # 2×2 windows, stride 2: the last row and column are in no window
    dense = 4 * 3  # %l2 reads the analog membrane of %m: it multiplies at every step
    assert run.macs == {"c": 6 * conv, "p": 6 * pool, "l": 0.0, "l2": 6 * dense}
    assert run.hoisted_macs == {"c": conv, "p": pool, "l": 0.0, "l2": 6 * dense}
    assert run.sops["l"] == pytest.approx(4 * run.spikes["n"])  # each spike reaches 4 synapses


def test_sumpool_sums_and_avgpool_averages() -> None:
    """Pinned after a bug: sum pooling once divided by the window size."""
    import numpy as np

    from snnc.backends.torch.simulator import TorchSimulator
    from snnc.ir import Graph, Node, analog, verify
    from snnc.ir import ops as O

    g = Graph("pool", [("x", analog(1, 2, 2))])
    g.nodes = [Node("s", O.SumPool2d(), ("x",)), Node("a", O.AvgPool2d(), ("x",))]
    g.outputs = ["s", "a"]
    g.infer_types()
    verify(g)
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    out = TorchSimulator().run_ann(g, x)
    assert out["s"].reshape(-1).tolist() == [10.0]
    assert out["a"].reshape(-1).tolist() == [2.5]
