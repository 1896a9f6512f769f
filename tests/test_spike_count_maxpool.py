"""spike_count_maxpool: the output's net spike count is the window's largest net input count, step by
step (−1 spikes, padding and ceil_mode included); its textual form, its verifier, lower-neurons{maxpool=count},
and the targets that refuse it by name (tvm, loihi, nir)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conversion_util import SIM, context, graph_from_text, run

from snnc.backends.torch.simulator import _count_maxpool_step
from snnc.errors import VerifyError
from snnc.ir import ops as O
from snnc.ir import parse_graph, print_graph, verify
from snnc.pass_manager import parse_pipeline
from snnc.passes.lower_neurons import LowerNeurons, MaxPoolRule
from snnc.targets import get_target


def _reference(trains: np.ndarray, op: O.SpikeCountMaxPool2d) -> np.ndarray:
    """max over each window of the cumulative counts, by loops over windows (padding never wins)."""
    T, n, c, h, w = trains.shape
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding
    oh, ow = F.max_pool2d(torch.zeros(1, 1, h, w), op.kernel, op.stride, op.padding, 1, op.ceil_mode).shape[2:]
    counts = np.cumsum(trains, axis=0)
    out = np.empty((T, n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * sh - ph, j * sw - pw
            rows = slice(max(r0, 0), min(r0 + kh, h))
            cols = slice(max(c0, 0), min(c0 + kw, w))
            out[:, :, :, i, j] = counts[:, :, :, rows, cols].max(axis=(3, 4))
    return out


@pytest.mark.parametrize("ceil_mode, padding, kernel, stride", [
    (False, (0, 0), (2, 2), (2, 2)),
    (True, (0, 0), (3, 3), (2, 2)),  # SqueezeNet's poolings: ragged last windows
    (False, (1, 1), (3, 3), (2, 2)),  # ResNet's: padded windows
    (True, (1, 0), (3, 2), (2, 1)),
])
def test_running_output_count_is_the_window_max_of_net_counts(ceil_mode, padding, kernel, stride) -> None:
    """Σ_{τ≤t} y[τ] = max_i C_i[t] at every step on random ±1/0 trains, and each y is a ±1/0 spike."""
    op = O.SpikeCountMaxPool2d(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    rng = np.random.default_rng(0)
    trains = rng.choice([-1.0, 0.0, 1.0], p=[0.2, 0.3, 0.5], size=(24, 3, 2, 7, 6)).astype(np.float32)
    st: dict[str, torch.Tensor] = {}
    ys = np.stack([_count_maxpool_step(op, torch.from_numpy(s), st, "events").numpy() for s in trains])
    assert set(np.unique(ys)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(np.cumsum(ys, axis=0), _reference(trains, op))


# n1 turns x into spike trains (v_init 0.5: x = 1 fires every step, 0.5 every other step, 0.25 every
# 4th); n2 reads 3·s − 1.6, a rectified neuron: an input firing every step sends +1 every step, one
# firing every other step sends +1, −1, +1, ... (net count 1, 0, 1, 0, ...) and one silent input stays 0.
GRAPH = """
graph @count(%x: analog[1,3,3]) {
  %n1 = neuron(%x) {v_init = 0.5, v_th = 1.0, out_scale = 1.0} : spike[1,3,3]
  %s = scale(%n1) {factor = 3.0} params {bias = "s.bias"} : analog[1,3,3]
  %n2 = neuron(%s) {v_init = 0.5, v_th = 1.0, out_scale = 1.0, negative = "rectified"} : spike[1,3,3]
  %p = spike_count_maxpool(%n2) {kernel = [2, 2], stride = [2, 2], padding = [1, 1], ceil_mode = true} : spike[1,2,2]
  %f = flatten(%p) : spike[4]
  %readout = readout(%f) : analog[4]
  output %readout
}
"""


def test_simulator_sends_the_largest_net_count_with_negative_spikes() -> None:
    """Through the simulator: each window's total output (T × the readout's mean) is the largest net
    count of its inputs (T × their recorded mean); with −1 spikes the gated pooling would differ."""
    g = graph_from_text(GRAPH, params={"s.bias": np.array([-1.6], np.float32)})
    x = np.array([[[[0.5, 1.0, 0.0], [0.5, 0.25, 0.5], [1.0, 0.5, 0.0]]],
                  [[[0.0, 0.5, 0.5], [0.25, 0.0, 1.0], [0.5, 0.5, 0.25]]]], np.float32)
    T = 16
    run = SIM.run_snn(g, x, T, record=["n2"])
    counts = np.rint(run.recorded["n2"] * T)
    assert counts.min() < counts.max()  # the inputs differ
    want = F.max_pool2d(torch.from_numpy(counts), (2, 2), (2, 2), (1, 1), 1, True).numpy().reshape(2, 4)
    np.testing.assert_allclose(run.logits * T, want, atol=1e-4)
    # a +1 or −1 of the pooling is one event for the linear layer reading it: no SOPs here (a readout),
    # but n2's −1 spikes are events
    assert run.spikes["n2"] > float(np.abs(counts).sum()) / 2


def test_print_parse_round_trip_and_defaults() -> None:
    g = graph_from_text(GRAPH, params={"s.bias": np.array([-1.6], np.float32)})
    text = print_graph(g)
    assert "%p = spike_count_maxpool(%n2) {padding = [1, 1], ceil_mode = true} : spike[1,2,2]" in text
    again = parse_graph(text)
    assert print_graph(again) == text
    assert again.node("p").op == O.SpikeCountMaxPool2d(kernel=(2, 2), stride=(2, 2), padding=(1, 1), ceil_mode=True)
    assert O.SpikeCountMaxPool2d.stateful and O.SpikeCountMaxPool2d.channelwise
    assert not O.SpikeCountMaxPool2d.synaptic


def test_verifier_rejects_a_window_that_does_not_fit() -> None:
    text = GRAPH.replace("kernel = [2, 2], stride = [2, 2], padding = [1, 1], ceil_mode = true} : spike[1,2,2]",
                         "kernel = [5, 5], stride = [1, 1]} : spike[1,2,2]")
    g = graph_from_text(text, params={"s.bias": np.array([-1.6], np.float32)})
    with pytest.raises(VerifyError, match=r"^spike_count_maxpool %p: window \[5, 5\] does not fit input spike\[1,3,3\]$"):
        verify(g)


MAXPOOL_ANN = """
graph @ann(%x: analog[1,4,4]) {
  %c = conv2d(%x) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[2,4,4]
  %r = relu(%c) : analog[2,4,4]
  %m = maxpool2d(%r) : analog[2,2,2]
  %f = flatten(%m) : analog[8]
  %l = linear(%f) params {weight = "l.weight"} : analog[3]
  output %l
}
"""


def _lowered(maxpool: MaxPoolRule):
    x = np.random.default_rng(1).uniform(0, 1, (32, 1, 4, 4)).astype(np.float32)
    return run(f"calibrate,lower-neurons{{maxpool={maxpool.value}}},fold-thresholds", graph_from_text(MAXPOOL_ANN),
               context(x))


def test_lower_neurons_maxpool_count_option() -> None:
    (count,) = [n for n in _lowered(MaxPoolRule.COUNT).nodes if n.name == "m"]
    assert type(count.op) is O.SpikeCountMaxPool2d
    (gate,) = [n for n in _lowered(MaxPoolRule.GATE).nodes if n.name == "m"]
    assert type(gate.op) is O.SpikeMaxPool2d
    assert parse_pipeline("lower-neurons{maxpool=count}")[0] == LowerNeurons(maxpool=MaxPoolRule.COUNT)


@pytest.mark.parametrize("target", ["tvm", "loihi", "nir"])
def test_targets_refuse_it_by_name(target: str) -> None:
    if target == "tvm":
        pytest.importorskip("tvm")
    g = _lowered(MaxPoolRule.COUNT)
    problems = get_target(target).legality(g)
    assert any("spike_count_maxpool %m" in p for p in problems), problems


def test_only_the_torch_pipelines_pool_by_count() -> None:
    """ann-to-snn and ann-to-snn-fast pool by count; the pipelines of targets without the op (tvm:
    ann-to-snn-unsigned, loihi, nir) keep the gate."""
    from snnc.pass_manager import available_pipelines

    def rule(name: str) -> MaxPoolRule:
        (lower,) = [p for p in parse_pipeline(available_pipelines()[name]) if isinstance(p, LowerNeurons)]
        return lower.maxpool

    assert rule("ann-to-snn") is MaxPoolRule.COUNT and rule("ann-to-snn-fast") is MaxPoolRule.COUNT
    for name in ("ann-to-snn-unsigned", "ann-to-nir", "ann-to-loihi"):
        assert rule(name) is MaxPoolRule.GATE, name
