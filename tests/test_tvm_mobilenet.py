"""The tvm target on mobilenet_v2's building blocks, differentially against the torch simulator.

Inverted residual blocks as mobilenet_v2 converts: 1x1 expansion, depthwise 3x3 (stride 1 and 2,
padding at the borders, channel counts with vector tails), a linear bottleneck (a 1x1 projection
without a neuron, whose output is a current) and a residual add of two currents.  The
convolutions that read a current (the next block's expansion; here also a 3x3 and a grouped one)
compute their product inside the generated code, so a whole timestep, and all T of them, is one
call into the library.  The depthwise kernel runs a sample as a gather over its densified input
when enough of it spiked, else as the scatter by position; both are checked exactly.  Weights and inputs are dyadic (``tvm_util``): every sum is exact in any
order, so logits and spike counts must equal the simulator's exactly, at batch 1 and 2.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, compile_graph, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.kernels import Conv2dGeometry, Current, Precision, conv2d_kernel  # noqa: E402
from snnc.backends.tvm.lower import legality, lower  # noqa: E402
from snnc.backends.tvm.plan import ValueKind, plan_graph  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.backends.tvm.steps import StepKernel, step_kernels  # noqa: E402
from snnc.ir import Graph  # noqa: E402

pytestmark = pytest.mark.tvm

BLOCKS = """
graph @blocks(%x: analog[3,9,9]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[3,9,9]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[20,9,9]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[20,9,9]
  %dw1 = conv2d(%n1) {padding = [1, 1], groups = 20} params {weight = "dw1.weight", bias = "dw1.bias"} : analog[20,9,9]
  %n2 = neuron(%dw1) {v_init = 0.5} : spike[20,9,9]
  %p1 = conv2d(%n2) params {weight = "p1.weight", bias = "p1.bias"} : analog[6,9,9]
  %x1 = conv2d(%p1) params {weight = "x1.weight", bias = "x1.bias"} : analog[36,9,9]
  %n3 = neuron(%x1) {v_init = 0.5} : spike[36,9,9]
  %dw2 = conv2d(%n3) {padding = [1, 1], groups = 36} params {weight = "dw2.weight"} : analog[36,9,9]
  %n4 = neuron(%dw2) {v_init = 0.5} : spike[36,9,9]
  %p2 = conv2d(%n4) params {weight = "p2.weight", bias = "p2.bias"} : analog[6,9,9]
  %a = add(%p2, %p1) : analog[6,9,9]
  %x3 = conv2d(%a) {padding = [1, 1]} params {weight = "x3.weight", bias = "x3.bias"} : analog[12,9,9]
  %n5 = neuron(%x3) {v_init = 0.5} : spike[12,9,9]
  %dw3 = conv2d(%n5) {stride = [2, 2], padding = [1, 1], groups = 12} params {weight = "dw3.weight"} : analog[12,5,5]
  %n6 = neuron(%dw3) {v_init = 0.5} : spike[12,5,5]
  %p3 = conv2d(%n6) params {weight = "p3.weight"} : analog[8,5,5]
  %g = conv2d(%p3) {stride = [2, 2], padding = [1, 1], groups = 2} params {weight = "g.weight", bias = "g.bias"} : analog[10,3,3]
  %n7 = neuron(%g) {v_init = 0.5} : spike[10,3,3]
  %f = flatten(%n7) : spike[90]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[5]
  %out = readout(%fc) : analog[5]
  output %out
}
"""

CURRENT_CONVS = ("x1", "x3", "g")  # the convolutions that read a current


def _blocks(seed: int) -> Graph:
    """BLOCKS with its 1x1 kernels (graph_from_text makes 3x3 ones), dyadic."""
    rng = np.random.default_rng(seed)
    ones = {"p1": (6, 20), "x1": (36, 6), "p2": (6, 36), "p3": (8, 12)}
    params = {f"{k}.weight": rng.standard_normal((*s, 1, 1)) * 0.6 for k, s in ones.items()}
    return dyadic(graph_from_text(BLOCKS, seed=seed, params=params), seed=seed + 1)


def test_convolutions_on_currents_run_inside_the_step_kernel():
    layer_graph, _ = lower(_blocks(1))
    plans = {p.name: p for p in plan_graph(layer_graph)}
    for name in CURRENT_CONVS:
        assert plans[name].inputs[0].kind is ValueKind.CURRENT, name
        for batch in (1, None):
            assert isinstance(plans[name].main[batch].operands[0], Current), name
            assert not plans[name].host_product(batch), name
    # no host product splits the timestep: one step kernel runs the network, all T steps
    for items in step_kernels(list(plans.values()), plans["c1"].main[None].device).values():
        assert len(items) == 1 and isinstance(items[0], StepKernel)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    graph = _blocks(1)
    assert legality(graph) == []
    out = compile_graph(graph, tmp_path_factory.mktemp("blocks"))
    x = grid_inputs(4, (3, 9, 9))
    return graph, out, x, reference(graph, x)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_spike_for_spike(blocks, batch_size):
    graph, out, x, ref = blocks
    got = EventRuntime(out).run(x, batch_size=batch_size)
    np.testing.assert_array_equal(got["logits"], ref.logits)
    assert_spike_counts_equal(graph, got, ref, len(x))


def test_per_kernel_calls_give_the_same_result(blocks):
    """The step kernel and one Python call per kernel: bit for bit the same."""
    _, out, x, _ = blocks
    fused, per_kernel = EventRuntime(out), EventRuntime(out, fused=False)
    assert fused.fused_calls and not per_kernel.fused_calls
    for batch_size in (1, 4):
        np.testing.assert_array_equal(
            per_kernel.run(x, batch_size=batch_size)["logits"], fused.run(x, batch_size=batch_size)["logits"]
        )


@pytest.mark.parametrize(
    "hwc,stride,padding,batch,graded,precision",
    [
        ((7, 6, 20), 1, 1, None, False, Precision.FLOAT32),
        ((9, 9, 36), 2, 1, 1, True, Precision.FLOAT32),
        ((5, 5, 12), 2, 0, None, False, Precision.FLOAT32),
        ((1, 1, 40), 1, 1, 1, False, Precision.FLOAT32),
        ((7, 6, 20), 1, 1, None, False, Precision.INT8),  # the gather's mask of 0/1 events
        ((9, 9, 36), 2, 1, 1, True, Precision.INT8),  # burst counts: the multiply
    ],
)
def test_depthwise_kernel_exact_at_every_density(hwc, stride, padding, batch, graded, precision):
    """The depthwise kernel, gather (dense samples) and scatter (sparse ones) alike, against an
    exact reference: no events, a few (scatter), half and every input (gather), per sample;
    channel counts with vector tails, stride 2, taps clipped at the borders, batch 1 and 2;
    int8 weights at the ends of their range."""
    import tvm

    h, w, c = hwc
    geometry = Conv2dGeometry(kernel=(3, 3), stride=(stride, stride), padding=(padding, padding), groups=c)
    kernel = conv2d_kernel(hwc, c, geometry, batch=batch, graded=graded, bias=True, precision=precision)
    assert kernel.depthwise
    fn = tvm.compile(kernel.prim_func(), target="llvm")
    rng = np.random.default_rng(0)
    if precision is Precision.INT8:
        weight = rng.choice([-128, -127, -1, 0, 1, 5, 127], (c, 3, 3, 1)).astype(np.int8)
        bias = rng.integers(-1000, 1000, c).astype(np.int32)
    else:
        weight = (rng.integers(-8, 9, (c, 3, 3, 1)) / 8).astype(np.float32)
        bias = (rng.integers(-8, 9, c) / 8).astype(np.float32)
    adt = precision.acc_dtype
    n, (oh, ow, _) = h * w * c, kernel.out_shape
    for density in (0.0, 0.02, 0.5, 1.0):
        samples = 1 if batch == 1 else 2
        x = (rng.random((samples, n)) < density).astype(np.float32)
        if graded:
            x *= rng.integers(1, 4, x.shape)
        cnt = (x != 0).sum(1).astype(np.int32)
        idx = np.zeros((samples, n), np.int32)
        val = np.zeros((samples, n), adt)
        for b in range(samples):
            nz = np.flatnonzero(x[b])
            idx[b, : len(nz)], val[b, : len(nz)] = nz, x[b, nz]
        acc = tvm.runtime.tensor(np.zeros((samples, oh * ow * c), adt))
        args = [
            cnt,
            idx,
            *([val] if graded else []),
            np.ascontiguousarray(kernel.kernel_weight(weight)),
            bias,
        ]
        fn(*[tvm.runtime.tensor(a) for a in args], acc)
        expected = _depthwise_reference(x.reshape(samples, h, w, c), weight, bias, stride, padding)
        np.testing.assert_array_equal(
            acc.numpy().reshape(expected.shape), expected, err_msg=f"density {density}"
        )


def _depthwise_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, padding: int
) -> np.ndarray:
    """[B, OH, OW, C] of a channels-last depthwise 3x3 conv (exact on dyadic values)."""
    b, h, w, c = x.shape
    padded = np.zeros((b, h + 2 * padding, w + 2 * padding, c), np.float64)
    padded[:, padding : padding + h, padding : padding + w] = x
    oh, ow = (h + 2 * padding - 3) // stride + 1, (w + 2 * padding - 3) // stride + 1
    out = np.broadcast_to(bias.astype(np.float64), (b, oh, ow, c)).copy()
    for kh in range(3):
        for kw in range(3):
            window = padded[
                :, kh : kh + (oh - 1) * stride + 1 : stride, kw : kw + (ow - 1) * stride + 1 : stride
            ]
            out += window * weight[:, kh, kw, 0]
    return out.astype(np.float32)


@pytest.mark.parametrize(
    "channels,kernel,current,graded,batch",
    [((96, 160), 1, False, False, 1), ((40, 70), 3, False, True, None), ((24, 36), 1, True, False, None)],
)
def test_conv_on_a_1x1_map_adds_whole_rows_exactly(channels, kernel, current, graded, batch):
    """A conv whose input map is 1x1 (mobilenet_v2's last stages) adds each input's whole weight
    row: exact against the reference for events, graded events and a current."""
    import tvm

    ci, co = channels
    geometry = Conv2dGeometry(kernel=(kernel, kernel), padding=(kernel // 2, kernel // 2))
    k = conv2d_kernel((1, 1, ci), co, geometry, batch=batch, graded=graded, bias=True, current=current)
    fn = tvm.compile(k.prim_func(), target="llvm")
    rng = np.random.default_rng(1)
    samples = 1 if batch == 1 else 2
    x = (rng.random((samples, ci)) < 0.4).astype(np.float32)
    if graded or current:
        x *= rng.integers(1, 4, x.shape).astype(np.float32)
    weight = (rng.integers(-8, 9, (ci, kernel, kernel, co)) / 8).astype(np.float32)
    bias = (rng.integers(-8, 9, co) / 8).astype(np.float32)
    if current:
        args = [x]
    else:
        cnt = (x != 0).sum(1).astype(np.int32)
        idx = np.zeros((samples, ci), np.int32)
        val = np.zeros((samples, ci), np.float32)
        for b in range(samples):
            nz = np.flatnonzero(x[b])
            idx[b, : len(nz)], val[b, : len(nz)] = nz, x[b, nz]
        args = [cnt, idx, *([val] if graded else [])]
    acc = tvm.runtime.tensor(np.zeros((samples, co), np.float32))
    fn(*[tvm.runtime.tensor(a) for a in [*args, weight, bias]], acc)
    centre = weight[:, kernel // 2, kernel // 2, :].astype(np.float64)
    np.testing.assert_array_equal(acc.numpy(), (x.astype(np.float64) @ centre + bias).astype(np.float32))
