"""ceil_mode pooling as a convolution (snnc/passes/_compose.py): the last window of a ceil_mode pooling
overhangs the input, which a conv with symmetric padding cannot read; a kernel grown by the overhang and
led by zeros, with the padding grown by as much, reads exactly the pooling's windows.  Exact for sums
and for OR pooling of spikes; an average whose overhanging window divides by fewer elements is no conv.
On Loihi this lets googlenet's and squeezenet's ceil_mode max pooling run as OR pooling, spike for spike
on the chip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conversion_util import SIM, context, graph_from_text, rel_diff, run
from loihi_util import assert_spike_for_spike

from snnc.ir import ops as O
from snnc.passes._compose import pool_conv, window_weight, window_with_overhang

T = 6

GEOMETRIES = [  # (size, kernel, stride, padding): each with and without a ceil_mode overhang
    (7, 3, 2, 0), (8, 3, 2, 0), (8, 3, 2, 1), (9, 2, 2, 0), (10, 3, 3, 1), (6, 2, 3, 0), (13, 3, 2, 1), (5, 4, 3, 2),
]


@pytest.mark.parametrize(("size", "k", "s", "p"), GEOMETRIES)
def test_a_zero_led_kernel_reads_the_windows_of_ceil_mode_max_pooling(size: int, k: int, s: int, p: int) -> None:
    op = O.SpikeMaxPool2d(kernel=(k, k), stride=(s, s), padding=(p, p), ceil_mode=True)
    spikes = torch.as_tensor(np.random.default_rng(size * 7 + k).random((3, 2, size, size + 1)) < 0.2,
                             dtype=torch.float32)
    overhang = op.overhang(size, size + 1)
    kernel, padding = window_with_overhang(op.kernel, op.padding, overhang)
    w = torch.as_tensor(window_weight(op.kernel, overhang, 2))
    assert tuple(w.shape[2:]) == kernel
    or_pooled = (F.conv2d(spikes, w, None, op.stride, padding, 1, 2) >= 1).float()
    want = F.max_pool2d(spikes, op.kernel, op.stride, op.padding, 1, ceil_mode=True)
    assert or_pooled.shape == want.shape and tuple(want.shape[2:]) == op.out_size(size, size + 1)
    torch.testing.assert_close(or_pooled, want, rtol=0, atol=0)


def test_the_geometries_include_overhangs() -> None:
    """(the cases above are not all trivially ceil_mode = floor mode)"""
    overhangs = [O.SpikeMaxPool2d(kernel=(k, k), stride=(s, s), padding=(p, p), ceil_mode=True).overhang(n, n)[0]
                 for n, k, s, p in GEOMETRIES]
    assert sum(o > 0 for o in overhangs) >= 4 and 0 in overhangs


@pytest.mark.parametrize(("size", "k", "s", "p"), GEOMETRIES)
def test_ceil_mode_sum_pooling_is_a_conv_and_an_overhanging_average_is_not(size: int, k: int, s: int,
                                                                          p: int) -> None:
    x = torch.as_tensor(np.random.default_rng(size + k).random((2, 3, size, size)))
    geometry = dict(kernel=(k, k), stride=(s, s), padding=(p, p), ceil_mode=True)
    c = pool_conv(O.SumPool2d(**geometry), (3, size, size))
    assert c is not None
    want = F.avg_pool2d(x, k, s, p, ceil_mode=True, divisor_override=1)
    torch.testing.assert_close(c.apply(x), want)
    avg = O.AvgPool2d(**geometry)
    c = pool_conv(avg, (3, size, size))
    if avg.overhang(size, size) != (0, 0):
        assert c is None  # its overhanging windows divide by fewer elements
    else:
        assert c is not None
        torch.testing.assert_close(c.apply(x), F.avg_pool2d(x, k, s, p, ceil_mode=True))


CEIL = """
graph @ceil(%x: analog[2,8,8]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,8,8]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,8,8]
  %m = spike_maxpool(%n) {kernel = [3, 3], stride = [2, 2], ceil_mode = true} : spike[4,4,4]
  %d = conv2d(%m) {padding = [1, 1]} params {weight = "d.weight", bias = "d.bias"} : analog[3,4,4]
  %nd = neuron(%d) {reset = "hard", v_th = 0.5} : spike[3,4,4]
  %f = flatten(%nd) : spike[48]
  %o = linear(%f) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def _inputs(n: int = 48, seed: int = 1) -> np.ndarray:
    # on the quantiser's graded grid: the chip sees exactly these inputs
    return (np.random.default_rng(seed).integers(0, 17, (n, 2, 8, 8)) / 16).astype(np.float32)


def test_loihi_runs_ceil_mode_max_pooling_as_or_pooling_spike_for_spike() -> None:
    """googlenet / squeezenet's MaxPool2d(3, 2, ceil_mode=True) where its last window overhangs (was refused)."""
    g = graph_from_text(CEIL, seed=4)
    x = _inputs()
    ctx = context(x, timesteps=T)
    out = run("loihi-legalize", g, ctx)
    pool = out.node("m")
    assert isinstance(pool.op, O.Conv2d) and pool.op.padding == (1, 1) and pool.op.groups == 4
    weight = out.params[pool.params["weight"]]
    assert weight.shape == (4, 1, 4, 4) and not weight[:, :, :1].any() and not weight[:, :, :, :1].any()
    assert weight[:, :, 1:, 1:].all()
    # OR pooling fires where gated max pooling passes any spike: the same logits on these inputs up to
    # the gating (checked loosely), and exactly the chip's spikes against the quantised graph
    assert rel_diff(SIM.run_snn(g, x, T).logits, SIM.run_snn(out, x, T).logits) < 0.5
    q = run("loihi-legalize,loihi-quantize,loihi-map", g, context(x, timesteps=T))
    assert_spike_for_spike(q, x, T)


SQUEEZE_TAIL = """
graph @tail(%x: analog[2,8,8]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,8,8]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,8,8]
  %m = spike_maxpool(%n) {kernel = [3, 3], stride = [2, 2], ceil_mode = true} : spike[4,4,4]
  %d = conv2d(%m) {stride = [4, 4]} params {weight = "d.weight", bias = "d.bias"} : analog[3,1,1]
  %nd = neuron(%d) {reset = "hard", v_th = 0.5} : spike[3,1,1]
  %f = flatten(%nd) : spike[3]
  %s = scale(%f) params {scale = "s.scale"} : analog[3]
  %r = readout(%s) : analog[3]
  output %r
}
"""


def test_loihi_reads_spike_counts_through_a_flatten() -> None:
    """squeezenet's classifier ends in a ReLU on a 1x1 map, then flatten: the readout counts that
    population's spikes through the flatten (was refused: 'reads %flatten, which holds no neurons')."""
    g = graph_from_text(SQUEEZE_TAIL, seed=5, params={"s.scale": np.array([0.5, 1.0, 2.0], dtype=np.float32)})
    x = _inputs(seed=3)
    q = run("loihi-legalize,loihi-quantize,loihi-map", g, context(x, timesteps=T))
    assert_spike_for_spike(q, x, T)
