"""Each generated TVM event kernel against a numpy reference on random events.

Densities include no events at all and every input active; the int8 path must be exact.
"""

from __future__ import annotations

import functools
import math
import platform
import re

import numpy as np
import pytest

pytest.importorskip("tvm")
import tvm  # noqa: E402
from tvm_reference import conv2d_hwc, neuron_step, sumpool_hwc, to_csc, to_csr, to_rows  # noqa: E402

from snnc.backends.tvm import kernel_cache, kernels  # noqa: E402
from snnc.backends.tvm.kernels import (  # noqa: E402
    CONV_INT16_CHANNELS,
    INT16_SUM_BOUND,
    MAX_INTERIOR_CLASSES,
    MAXPOOL_DENSE,
    NARROW_MIN_RUN,
    WINNER_WINDOW,
    Conv2dGeometry,
    Current,
    Epilogue,
    Events,
    Layout,
    NeuronSpec,
    Pool2dGeometry,
    Precision,
    add_kernel,
    conv2d_kernel,
    conv_out_size,
    interior_classes,
    linear_kernel,
    pool2d_kernel,
    spike_maxpool2d_kernel,
)
from snnc.errors import UnsupportedError  # noqa: E402
from snnc.ir.ops import Reset  # noqa: E402

pytestmark = pytest.mark.tvm

DENSITIES = (0.0, 0.03, 0.3, 1.0)


def call(kernel, arrays: dict[str, np.ndarray], scalars: dict[str, float] | None = None) -> dict:
    """Run a kernel on numpy arrays (copied into 64-B aligned TVM tensors); return them as numpy."""
    tensors = {name: tvm.runtime.tensor(np.ascontiguousarray(a)) for name, a in arrays.items()}
    args = [tensors[n] if n in tensors else scalars[n] for n in kernel.arg_names()]
    kernel_cache.get_function(kernel)(*args)
    return {name: t.numpy() for name, t in tensors.items()}


def spikes(rng, shape, density, graded_max=1):
    """Random events: each element active with probability ``density`` (counts up to graded_max)."""
    active = rng.random(shape) < density
    return active * rng.integers(1, graded_max + 1, shape)


def weights(rng, shape, precision):
    if precision is Precision.INT8:
        return rng.integers(-128, 128, shape).astype(np.int8)
    return rng.standard_normal(shape).astype(np.float32)


def check(out, ref, precision):
    if precision is Precision.INT8:
        np.testing.assert_array_equal(out, ref.astype(np.int64))
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("precision", list(Precision))
@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("batch", [1, None])
@pytest.mark.parametrize("graded", [False, True])
def test_linear_events(precision, layout, batch, graded):
    rng = np.random.default_rng(7)
    n_in, n_out = 70, 128 if batch == 1 else 83  # 128 splits into channel slices at batch 1
    nb = 1 if batch == 1 else 5
    acc_dt = precision.acc_dtype
    slices = 2 if batch == 1 else None  # force the channel-slice form (automatic only for big layers)
    kernel = linear_kernel(
        n_in, n_out, batch=batch, precision=precision, layout=layout, graded=graded, slices=slices
    )
    w = weights(rng, (n_in, n_out), precision)
    for density in DENSITIES:
        s = spikes(rng, (nb, n_in), density, 3 if graded else 1)
        if layout is Layout.ROWS:
            a, b, val = to_rows(s, acc_dt)
            arrays = {"cnt0": a, "idx0": b}
        else:
            a, b, val = (to_csr if layout is Layout.CSR else to_csc)(s, acc_dt)
            arrays = {"ptr0": a, "idx0": b}
        if graded:
            arrays["val0"] = val
        arrays |= {"weight": w, "acc": np.full((nb, n_out), 99, acc_dt)}
        out = call(kernel, arrays)["acc"]
        check(out, s.astype(np.float64) @ w.astype(np.float64), precision)


# ---------------------------------------------------------------------------------------
# conv2d

CONV_CASES = [
    Conv2dGeometry(kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    Conv2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
    Conv2dGeometry(kernel=(5, 3), stride=(1, 1), padding=(2, 0), dilation=(2, 1)),  # dilation with stride 1
    Conv2dGeometry(
        kernel=(2, 3), stride=(2, 1), padding=(0, 2), dilation=(1, 2)
    ),  # stride on one axis, dilation on the other
]


@pytest.mark.parametrize(
    "geometry", CONV_CASES, ids=lambda g: f"k{g.kernel}s{g.stride}p{g.padding}d{g.dilation}"
)
@pytest.mark.parametrize("batch", [1, None])
@pytest.mark.parametrize("precision", list(Precision))
def test_conv2d_events(geometry, batch, precision):
    rng = np.random.default_rng(3)
    in_shape, co = (9, 7, 3), 128  # 128 channels: two 64-wide slices at batch 1
    nb = 1 if batch == 1 else 3
    graded = precision is Precision.FLOAT32
    kernel = conv2d_kernel(
        in_shape,
        co,
        geometry,
        batch=batch,
        precision=precision,
        graded=graded,
        slices=2 if batch == 1 else None,
    )
    w = weights(rng, (3, *geometry.kernel, co), precision)
    for density in DENSITIES:
        x = spikes(rng, (nb, *in_shape), density, 2 if graded else 1)
        cnt, idx, val = to_rows(x, precision.acc_dtype)
        arrays = {"cnt0": cnt, "idx0": idx} | ({"val0": val} if graded else {})
        arrays |= {"weight": w, "acc": np.zeros((nb, kernel.n_out), precision.acc_dtype)}
        out = call(kernel, arrays)["acc"]
        ref = conv2d_hwc(x, w, geometry.stride, geometry.padding, geometry.dilation)
        check(out, ref.reshape(nb, -1), precision)


def test_conv2d_bias_and_odd_channels():
    """A channel count that is not a multiple of the vector width, with bias and an input scale."""
    rng = np.random.default_rng(4)
    g = Conv2dGeometry(kernel=(3, 3), stride=(1, 1), padding=(1, 1))
    kernel = conv2d_kernel((6, 6, 2), 10, g, batch=None, bias=True, scale=0.5)
    w, bias = weights(rng, (2, 3, 3, 10), Precision.FLOAT32), rng.standard_normal(10).astype(np.float32)
    x = spikes(rng, (2, 6, 6, 2), 0.2)
    cnt, idx, _ = to_rows(x)
    out = call(
        kernel, {"cnt0": cnt, "idx0": idx, "weight": w, "bias": bias, "acc": np.zeros((2, 360), "float32")}
    )
    ref = 0.5 * conv2d_hwc(x, w, g.stride, g.padding, g.dilation) + bias
    check(out["acc"], ref.reshape(2, -1), Precision.FLOAT32)


@pytest.mark.parametrize("batch", [1, None])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv2d_positions_with_many_channels(batch, groups):
    """The scatter by input position (one decode and tap clipping per position, a block of output
    channels summed over the position's events): positions of 24 channels, whose runs reach the
    list's end at 100 % density; 160 output channels (two 64-wide blocks and a 32-wide tail) and
    a grouped conv.  Dyadic weights and counts: every sum is exact, so equality is asserted."""
    rng = np.random.default_rng(11)
    in_shape, co = (5, 6, 24), 160
    nb = 1 if batch == 1 else 3
    g = Conv2dGeometry(kernel=(3, 3), stride=(2, 1), padding=(1, 1), groups=groups)
    kernel = conv2d_kernel(in_shape, co, g, batch=batch, graded=True)
    w = (rng.integers(-8, 9, (24, 3, 3, co // groups)) / 8).astype(np.float32)
    dense_w = np.zeros((24, 3, 3, co), np.float32)  # the grouped weight as a full one, for the reference
    for ci in range(24):
        grp = ci // (24 // groups)
        dense_w[ci, :, :, grp * (co // groups) : (grp + 1) * (co // groups)] = w[ci]
    for density in (0.0, 0.1, 0.6, 1.0):
        x = spikes(rng, (nb, *in_shape), density, 3)
        cnt, idx, val = to_rows(x, "float32")
        arrays = {"cnt0": cnt, "idx0": idx, "val0": val, "weight": w, "acc": np.zeros((nb, kernel.n_out), "float32")}
        out = call(kernel, arrays)["acc"]
        ref = conv2d_hwc(x, dense_w, g.stride, g.padding, g.dilation)
        np.testing.assert_array_equal(out, ref.reshape(nb, -1).astype(np.float32), err_msg=f"density {density}")


STEM = Conv2dGeometry(kernel=(7, 7), stride=(2, 2), padding=(3, 3))  # resnet's stem: classes of 16, 12, 12, 9 taps
INTERIOR_CASES = [
    *CONV_CASES,
    Conv2dGeometry(kernel=(3, 3), stride=(3, 3), padding=(2, 0)),
    STEM,
    Conv2dGeometry(kernel=(1, 1), stride=(2, 2)),
    Conv2dGeometry(kernel=(5, 5), stride=(4, 4), padding=(2, 2)),  # beyond MAX_INTERIOR_CLASSES
]


@pytest.mark.parametrize("geometry", INTERIOR_CASES, ids=lambda g: f"k{g.kernel}s{g.stride}p{g.padding}d{g.dilation}")
def test_interior_classes_are_the_positions_whose_taps_all_reach_the_output(geometry):
    """Each input position of a class (by its condition) reaches, through the class's taps, the
    outputs that the literal definition says; every position whose taps all reach the output
    and which has at least two of them is in exactly one class (none beyond a 2 x 2 stride)."""
    h, wd = 13, 11
    oh = conv_out_size(h, geometry.kernel[0], geometry.stride[0], geometry.padding[0], geometry.dilation[0])
    ow = conv_out_size(wd, geometry.kernel[1], geometry.stride[1], geometry.padding[1], geometry.dilation[1])
    kernel = conv2d_kernel((h, wd, 2), 16, geometry, batch=1)
    classes = interior_classes(kernel)
    (sy, sx), (py, px), (dy_, dx_) = geometry.stride, geometry.padding, geometry.dilation
    covered = 0
    for iy in range(h):
        for ix in range(wd):
            reached, clipped = set(), False
            for kh in range(geometry.kernel[0]):
                for kw in range(geometry.kernel[1]):
                    ny, nx = iy + py - kh * dy_, ix + px - kw * dx_
                    if ny % sy or nx % sx:
                        continue
                    if 0 <= ny // sy < oh and 0 <= nx // sx < ow:
                        reached.add((kh, kw, ny // sy, nx // sx))
                    else:
                        clipped = True
            holds = [c for c in classes if eval(c.condition(), {"T": _Floormod}, {"iy": iy, "ix": ix})]
            assert len(holds) <= 1
            if clipped or len(reached) < 2 or sy * sx > MAX_INTERIOR_CLASSES:
                assert not holds, (iy, ix)
                continue
            assert len(holds) == 1, (iy, ix, reached)
            qy, qx = (iy + py) // sy, (ix + px) // sx
            assert {(kh, kw, qy - dy, qx - dx) for kh, kw, dy, dx in holds[0].taps} == reached
            covered += 1
    assert (covered > 0) == bool(classes)  # no class without a position


class _Floormod:
    """Evaluates a class condition's ``T.floormod`` in Python (operands are non-negative here)."""

    @staticmethod
    def floormod(a: int, b: int) -> int:
        return a % b


@pytest.mark.parametrize("geometry", [*CONV_CASES, STEM], ids=lambda g: f"k{g.kernel}s{g.stride}p{g.padding}d{g.dilation}")
@pytest.mark.parametrize("precision", list(Precision))
def test_conv_interior_pass_equals_the_clipped_taps_bit_for_bit(geometry, precision, monkeypatch):
    """Summing an interior position's taps in one pass over its events keeps every output's
    order of sums: the kernel equals the same kernel without interior classes exactly, on
    Gaussian float weights (where another order would round differently) and graded events;
    160 output channels: two blocks of 64 channels and a tail of 32; 9 taps: passes of 6 and 3."""
    rng = np.random.default_rng(21)
    in_shape, co, nb = (16, 12, 5), 160, 2
    kernel = conv2d_kernel(in_shape, co, geometry, batch=None, precision=precision, graded=True)
    assert interior_classes(kernel)
    built = {}
    for name, classes in (("interior", kernels.interior_classes), ("clipped", lambda k: [])):
        monkeypatch.setattr(kernels, "interior_classes", classes)
        built[name] = tvm.compile(kernel.prim_func(), target=kernel_cache.target_for(kernel.device))[kernel.name]
    w = weights(rng, (5, *geometry.kernel, co), precision)
    for density in (0.05, 0.4, 1.0):
        x = spikes(rng, (nb, *in_shape), density, 3)
        cnt, idx, val = to_rows(x, precision.acc_dtype)
        out = {}
        for name, fn in built.items():
            arrays = {"cnt0": cnt, "idx0": idx, "val0": val, "weight": w, "acc": np.zeros((nb, kernel.n_out), precision.acc_dtype)}
            tensors = {n: tvm.runtime.tensor(np.ascontiguousarray(a)) for n, a in arrays.items()}
            fn(*[tensors[n] for n in kernel.arg_names()])
            out[name] = tensors["acc"].numpy()
        np.testing.assert_array_equal(out["interior"], out["clipped"], err_msg=f"density {density}")
        ref = conv2d_hwc(x, w, geometry.stride, geometry.padding, geometry.dilation)
        check(out["interior"], ref.reshape(nb, -1), precision)


@pytest.mark.parametrize("channels", [CONV_INT16_CHANNELS, CONV_INT16_CHANNELS + 1])
@pytest.mark.parametrize("extreme", [-128, 127])
def test_int8_conv_sums_in_int16_up_to_its_bound(channels, extreme):
    """An int8 conv of 0/1 events sums a position's events in int16 when it has at most
    CONV_INT16_CHANNELS input channels: with every input spiking and every weight at an int8
    extreme, a position's partial sum reaches -2^15 (or 127·256) and must not wrap; one channel
    more takes the int32 sums.  Interior positions (3x3, stride 1) and edges, exact."""
    g = Conv2dGeometry(kernel=(3, 3), stride=(1, 1), padding=(1, 1))
    kernel = conv2d_kernel((4, 5, channels), 16, g, batch=1, precision=Precision.INT8)
    assert kernels._Emitter(kernel).narrow_sums == (channels <= CONV_INT16_CHANNELS)
    w = np.full((channels, 3, 3, 16), extreme, np.int8)
    w[:, 1, 2, 5] = 3  # one tap and channel away from the extreme: taps stay distinguishable
    x = np.ones((1, 4, 5, channels))
    cnt, idx, _ = to_rows(x, "int32")
    out = call(kernel, {"cnt0": cnt, "idx0": idx, "weight": w, "acc": np.zeros((1, kernel.n_out), "int32")})["acc"]
    ref = conv2d_hwc(x, w, g.stride, g.padding, g.dilation)
    np.testing.assert_array_equal(out, ref.reshape(1, -1).astype(np.int64))


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_conv_int16_and_int32_passes_agree_with_the_reference(stride):
    """Positions with few events (int32 sums) and with NARROW_MIN_RUN or more (int16 partial
    sums) side by side in one kernel, interior and edge positions, against the exact reference."""
    rng = np.random.default_rng(23)
    g = Conv2dGeometry(kernel=(3, 3), stride=(stride, stride), padding=(1, 1))
    kernel = conv2d_kernel((9, 8, 48), 80, g, batch=None, precision=Precision.INT8)
    assert kernels._Emitter(kernel).narrow_sums
    w = weights(rng, (48, 3, 3, 80), Precision.INT8)
    runs = []
    for density in (0.03, 0.08, 0.3, 1.0):
        x = spikes(rng, (3, 9, 8, 48), density)
        runs.extend((x != 0).sum(axis=-1).ravel())
        cnt, idx, _ = to_rows(x, "int32")
        out = call(kernel, {"cnt0": cnt, "idx0": idx, "weight": w, "acc": np.zeros((3, kernel.n_out), "int32")})["acc"]
        ref = conv2d_hwc(x, w, g.stride, g.padding, g.dilation)
        np.testing.assert_array_equal(out, ref.reshape(3, -1).astype(np.int64), err_msg=f"density {density}")
    runs = np.array(runs)
    assert ((runs > 0) & (runs < NARROW_MIN_RUN)).any() and (runs >= NARROW_MIN_RUN).any()


def sums16_conv(in_shape, out_channels, stride: int, batch: int | None):
    """An int8 3x3 conv (padding 1) with bias and a soft-reset IF neuron, its sums in int16."""
    g = Conv2dGeometry(kernel=(3, 3), stride=(stride, stride), padding=(1, 1))
    return g, conv2d_kernel(
        in_shape, out_channels, g, batch=batch, precision=Precision.INT8, bias=True, epilogue=Epilogue.NEURON,
        neuron=NeuronSpec(reset=Reset.SOFT), sums16=True,
    )  # fmt: skip


def run_sums16(kernel, x, w, bias, v_th):
    """One step of ``kernel`` from v = 0: (membrane, spike counts as acc holds them)."""
    cnt, idx, _ = to_rows(x, "int32")
    batch = x.shape[0]
    out = call(kernel, {
        "cnt0": cnt, "idx0": idx, "weight": kernel.kernel_weight(w), "bias": bias,
        "acc": np.zeros((batch, kernel.n_out), "int32"), "v": np.zeros((batch, kernel.n_out), "int32"),
        "vth": v_th, "cnt_out": np.zeros(batch, "int32"), "idx_out": np.zeros((batch, kernel.n_out), "int32"),
        "stats": np.zeros(batch, "int32"),
    })  # fmt: skip
    return out["v"], out["acc"]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("extreme", [-127, 127])
def test_int8_conv_sums_a_whole_step_in_int16_up_to_its_bound(stride, extreme):
    """A ``sums16`` conv keeps the step's sums in int16 (``LayerSpec.int16_sums``: |bias| plus
    the sum of |W| of every output channel at most INT16_SUM_BOUND).  With every input spiking,
    channel 3's weights all at an int8 extreme and its bias making up the rest, its interior
    outputs reach ±32767 exactly and must not wrap; the other channels' random weights and the
    edges (fewer taps) come out as the reference's.  The threshold is above every sum, so the
    membrane is the sum."""
    rng = np.random.default_rng(7)
    channels = 28  # 28 · 9 · 127 = 32004, the bias brings channel 3 to 32767
    g, kernel = sums16_conv((6, 7, channels), 16, stride, batch=1)
    w = rng.integers(-8, 9, (channels, 3, 3, 16)).astype(np.int8)
    w[..., 3] = extreme
    bias = rng.integers(-50, 51, 16).astype(np.int32)
    bias[3] = np.sign(extreme) * (INT16_SUM_BOUND - channels * 9 * 127)
    x = np.ones((1, 6, 7, channels))
    v, spikes_ = run_sums16(kernel, x, w, bias, np.full(16, 1 << 20, np.int32))
    ref = conv2d_hwc(x, w, g.stride, g.padding, g.dilation) + bias
    np.testing.assert_array_equal(v, ref.reshape(1, -1).astype(np.int64))
    assert np.abs(ref[..., 3]).max() == INT16_SUM_BOUND
    assert not spikes_.any()


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_conv_int16_sums_agree_with_the_int32_kernel(stride):
    """The ``sums16`` kernel against the same conv with int32 sums, at every density, batched:
    membranes and spikes equal (integers in any order), thresholds crossed by some outputs."""
    rng = np.random.default_rng(29)
    g, kernel = sums16_conv((9, 8, 48), 80, stride, batch=None)
    wide = conv2d_kernel(
        (9, 8, 48), 80, g, batch=None, precision=Precision.INT8, bias=True, epilogue=Epilogue.NEURON,
        neuron=NeuronSpec(reset=Reset.SOFT),
    )  # fmt: skip
    assert kernel.name != wide.name and kernel.arg_shapes()["weight"][1] == "int16"
    w = rng.integers(-40, 41, (48, 3, 3, 80)).astype(np.int8)
    bias = rng.integers(-100, 101, 80).astype(np.int32)
    v_th = rng.integers(50, 400, 80).astype(np.int32)
    fired = 0
    for density in DENSITIES:
        x = spikes(rng, (3, 9, 8, 48), density)
        v16, s16 = run_sums16(kernel, x, w, bias, v_th)
        v32, s32 = run_sums16(wide, x, w, bias, v_th)
        np.testing.assert_array_equal(v16, v32, err_msg=f"density {density}")
        np.testing.assert_array_equal(s16, s32, err_msg=f"density {density}")
        fired += int(s16.sum())
    assert fired > 0


def test_int16_sums_belong_to_int8_convs_of_spikes_that_end_in_a_neuron():
    g = Conv2dGeometry(kernel=(3, 3), stride=(1, 1), padding=(1, 1))
    with pytest.raises(UnsupportedError, match="int16 sums"):
        conv2d_kernel((4, 4, 8), 8, g, precision=Precision.FLOAT32, epilogue=Epilogue.NEURON,
                      neuron=NeuronSpec(), sums16=True)  # fmt: skip
    with pytest.raises(UnsupportedError, match="int16 sums"):  # a current: no neuron to widen in
        conv2d_kernel((4, 4, 8), 8, g, precision=Precision.INT8, sums16=True)
    with pytest.raises(UnsupportedError, match="int16 sums"):  # burst spikes: a bound of 0/1 inputs
        conv2d_kernel((4, 4, 8), 8, g, precision=Precision.INT8, graded=True, epilogue=Epilogue.NEURON,
                      neuron=NeuronSpec(), sums16=True)  # fmt: skip


def call_built_for(mcpu: str, kernel, arrays: dict[str, np.ndarray]) -> dict:
    """:func:`call`, with the kernel built for another x86 CPU than this host's (an older one,
    whose code this host runs too)."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    fn = tvm.compile(kernel.prim_func(), target=target)[kernel.name]
    tensors = {name: tvm.runtime.tensor(np.ascontiguousarray(a)) for name, a in arrays.items()}
    fn(*[tensors[n] for n in kernel.arg_names()])
    return {name: t.numpy() for name, t in tensors.items()}


X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.mark.parametrize(
    "mcpu",
    ["host", pytest.param("haswell", marks=pytest.mark.skipif(not X86, reason="x86 only")),
     pytest.param("x86-64", marks=pytest.mark.skipif(not X86, reason="x86 only"))],
)  # fmt: skip
@pytest.mark.parametrize("precision", [Precision.FLOAT32, Precision.INT8])
@pytest.mark.parametrize("graded", [False, True])
def test_compaction_at_every_density(graded, precision, mcpu):
    """The compaction of a neuron epilogue (16 outputs at a time by a masked compress-store, then
    a scalar tail: 70 = 4 x 16 + 6): the list, the values of a burst neuron and the spike
    statistics equal the reference at no spike, some, and every neuron spiking.  Built for this
    host (AVX-512's vpcompressd where it has it) and, on x86, for CPUs without that instruction
    (AVX2 ``haswell``, baseline ``x86-64``), where LLVM expands the compress-store."""
    rng = np.random.default_rng(12)
    n, nb = 70, 2
    adt = precision.acc_dtype
    nrn = NeuronSpec(max_spikes=3 if graded else 1)
    kernel = add_kernel((n,), (Current(),), batch=None, precision=precision, epilogue=Epilogue.NEURON, neuron=nrn)
    run = call if mcpu == "host" else functools.partial(call_built_for, mcpu)
    for level in (-1.0, 0.6, 5.0):  # currents: none reaches v_th, some do, all do (bursts of 3)
        cur = level + rng.integers(-1, 2, (nb, n)) * 0.5 * (level == 0.6)
        vth = np.ones(n)
        if adt == "int32":  # integer units: v_th 4
            cur, vth = np.rint(cur * 4), vth * 4
        cur, vth = cur.astype(adt), vth.astype(adt)
        arrays = {"cur0": cur, "acc": np.zeros((nb, n), adt), "v": np.zeros((nb, n), adt),
                  "vth": vth, "cnt_out": np.zeros(nb, "int32"),
                  "idx_out": np.full((nb, n), -7, "int32"), "stats": np.full(nb, 5, "int32")}  # fmt: skip
        if graded:
            arrays["val_out"] = np.zeros((nb, n), adt)
        out = run(kernel, arrays)
        _, s = neuron_step(np.zeros((nb, n), adt), cur, vth, max_spikes=nrn.max_spikes, integer=adt == "int32")
        cnt, idx, val = to_rows(s, adt)
        np.testing.assert_array_equal(out["cnt_out"], cnt)
        np.testing.assert_array_equal(out["stats"], 5 + s.sum(axis=1))
        for b in range(nb):
            np.testing.assert_array_equal(out["idx_out"][b, : cnt[b]], idx[b, : cnt[b]])
            if graded:
                np.testing.assert_array_equal(out["val_out"][b, : cnt[b]], val[b, : cnt[b]])


def test_conv2d_rejects_stride_with_dilation():
    with pytest.raises(UnsupportedError, match="dilation"):
        conv2d_kernel(
            (8, 8, 2), 16, Conv2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2))
        )


# ---------------------------------------------------------------------------------------
# pooling and add


@pytest.mark.parametrize(
    "geometry",
    [
        Pool2dGeometry(kernel=(2, 2), stride=(2, 2)),
        Pool2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
    ],
    ids=["k2s2", "k3s2p1"],
)
@pytest.mark.parametrize("avg", [False, True])
def test_pool_compacts_graded_events(geometry, avg):
    rng = np.random.default_rng(5)
    in_shape = (7, 8, 4)
    oh = conv_out_size(7, geometry.kernel[0], geometry.stride[0], geometry.padding[0])
    ow = conv_out_size(8, geometry.kernel[1], geometry.stride[1], geometry.padding[1])
    scale = 1.0 / (geometry.kernel[0] * geometry.kernel[1]) if avg else 1.0
    kernel = pool2d_kernel(in_shape, (oh, ow), geometry, scale=scale, graded=True)
    n = oh * ow * 4
    for density in DENSITIES:
        x = spikes(rng, (3, *in_shape), density, 2)
        cnt, idx, val = to_rows(x, "float32")
        arrays = {"cnt0": cnt, "idx0": idx, "val0": val, "acc": np.zeros((3, n), "float32")}
        arrays |= {
            "cnt_out": np.zeros(3, "int32"),
            "idx_out": np.zeros((3, n), "int32"),
            "val_out": np.zeros((3, n), "float32"),
        }
        out = call(kernel, arrays)
        ref = (scale * sumpool_hwc(x, geometry.kernel, geometry.stride, geometry.padding, (oh, ow))).reshape(
            3, -1
        )
        ref_cnt, ref_idx, ref_val = to_rows(ref)
        np.testing.assert_array_equal(out["cnt_out"], ref_cnt)
        for b in range(3):
            k = ref_cnt[b]
            np.testing.assert_array_equal(out["idx_out"][b, :k], ref_idx[b, :k])
            np.testing.assert_allclose(out["val_out"][b, :k], ref_val[b, :k], rtol=1e-6)


def test_add_events_and_current_int():
    """Residual add of a spike list, a graded list and a dense current, exact in int32."""
    rng = np.random.default_rng(6)
    shape, nb = (5, 5, 16), 4
    n = 5 * 5 * 16
    ops = (Events(cap=n), Events(cap=n, graded=True, val_dtype="int32"), Current())
    kernel = add_kernel(shape, ops, precision=Precision.INT8, epilogue=Epilogue.CURRENT)
    a, g = spikes(rng, (nb, n), 0.2), spikes(rng, (nb, n), 0.3, 3)
    cur = rng.integers(-50, 50, (nb, n)).astype(np.int32)
    ca, ia, _ = to_rows(a)
    cg, ig, vg = to_rows(g, "int32")
    arrays = {
        "cnt0": ca,
        "idx0": ia,
        "cnt1": cg,
        "idx1": ig,
        "val1": vg,
        "cur2": cur,
        "acc": np.zeros((nb, n), "int32"),
    }
    np.testing.assert_array_equal(call(kernel, arrays)["acc"], a + g + cur)


def maxpool_winners_hwc(count: np.ndarray, x: np.ndarray, geometry, out_hw) -> np.ndarray:
    """Gated max pooling, literally: per window, x at the input with the largest count (first in
    row-major order on ties; padding never wins).  count and x are channels-last [B, H, W, C]."""
    bsz, h, wd, c = count.shape
    (kh, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
    # ceil_mode: the last windows may overhang the padded input (more padding that never wins)
    size = (max(h + 2 * ph, (out_hw[0] - 1) * sh + kh), max(wd + 2 * pw, (out_hw[1] - 1) * sw + kw))
    padded = np.full((bsz, *size, c), -np.inf)
    padded[:, ph : ph + h, pw : pw + wd] = count
    xp = np.zeros(padded.shape)
    xp[:, ph : ph + h, pw : pw + wd] = x
    out = np.zeros((bsz, *out_hw, c))
    for y in range(out_hw[0]):
        for z in range(out_hw[1]):
            win = padded[:, y * sh : y * sh + kh, z * sw : z * sw + kw].reshape(bsz, kh * kw, c)
            first = np.argmax(win, axis=1)  # np.argmax keeps the first maximum
            vals = xp[:, y * sh : y * sh + kh, z * sw : z * sw + kw].reshape(bsz, kh * kw, c)
            out[:, y, z] = np.take_along_axis(vals, first[:, None, :], axis=1)[:, 0]
    return out


@pytest.mark.parametrize(
    "geometry,graded,batch,precision,channels",
    [
        (Pool2dGeometry(kernel=(2, 2), stride=(2, 2)), False, None, Precision.FLOAT32, 3),
        (Pool2dGeometry(kernel=(2, 2), stride=(2, 2)), False, 1, Precision.FLOAT32, 3),
        (Pool2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)), True, None, Precision.FLOAT32, 3),
        (Pool2dGeometry(kernel=(3, 2), stride=(1, 2), padding=(1, 0)), True, None, Precision.INT8, 3),
        (Pool2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)), False, None, Precision.FLOAT32, 24),
        (Pool2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)), False, 1, Precision.FLOAT32, 5),
        (Pool2dGeometry(kernel=(3, 2), stride=(1, 2), padding=(1, 0)), False, None, Precision.INT8, 3),
        (Pool2dGeometry(kernel=(3, 2), stride=(2, 2), ceil_mode=True), False, None, Precision.FLOAT32, 3),
    ],
    ids=["k2s2", "k2s2-batch1", "k3s2p1-graded", "k3x2-overlap-int8-graded", "k3s2p1-24-channels",
         "k3s2p1-batch1", "k3x2-overlap-int8", "k3x2s2-ceil"],
)
def test_spike_maxpool_forwards_the_winners_events(geometry, graded, batch, precision, channels):
    """Over several steps (small counts: many ties), the forwarded list and the counts equal the
    literal definition, for samples run as the scatter and as the dense gather
    (``MAXPOOL_DENSE``) in turn; windows overlap in five cases; with 24 channels a position's events form
    long runs (the kernel walks the list by position).  On 0/1 spikes and windows of 6 or 9
    inputs the kernel keeps each window's winner (``win``) from step to step: a wrong winner
    shows as a wrong event later."""
    rng = np.random.default_rng(13)
    in_shape, nb = (7, 9, channels), (1 if batch == 1 else 3)
    oh = conv_out_size(7, geometry.kernel[0], geometry.stride[0], geometry.padding[0], ceil_mode=geometry.ceil_mode)
    ow = conv_out_size(9, geometry.kernel[1], geometry.stride[1], geometry.padding[1], ceil_mode=geometry.ceil_mode)
    adt = precision.acc_dtype
    kernel = spike_maxpool2d_kernel(
        in_shape, (oh, ow), geometry, batch=batch, precision=precision, graded=graded
    )
    assert kernel.out_graded == graded
    assert kernel.keeps_winners == (not graded and math.prod(geometry.kernel) >= WINNER_WINDOW)
    n, n_out = 7 * 9 * channels, oh * ow * channels
    state = np.zeros((nb, n), adt)
    winners = np.zeros((nb, n_out), "int32")
    total = np.zeros((nb, *in_shape))
    forwarded = 0
    paths = set()
    for density in (0.2, 0.0, 0.3, 0.04, 1.0, 0.1, 0.02, 0.25):
        x = spikes(rng, (nb, *in_shape), density, 3 if graded else 1)
        total += x
        cnt, idx, val = to_rows(x, adt)
        paths |= {"dense" if c * MAXPOOL_DENSE >= n else "scatter" for c in cnt if c}
        arrays = {"cnt0": cnt, "idx0": idx, "count": state, "acc": np.zeros((nb, n_out), adt)}
        arrays |= {"cnt_out": np.zeros(nb, "int32"), "idx_out": np.zeros((nb, n_out), "int32")}
        if graded:
            arrays |= {"val0": val, "val_out": np.zeros((nb, n_out), adt)}
        if kernel.keeps_winners:
            arrays |= {"win": winners}
        out = call(kernel, arrays)
        state = out["count"]
        winners = out.get("win", winners)
        np.testing.assert_array_equal(state, total.reshape(nb, n))
        ref = maxpool_winners_hwc(total, x, geometry, (oh, ow)).reshape(nb, -1)
        ref_cnt, ref_idx, ref_val = to_rows(ref)
        np.testing.assert_array_equal(out["cnt_out"], ref_cnt)
        for b in range(nb):
            k = ref_cnt[b]
            np.testing.assert_array_equal(out["idx_out"][b, :k], ref_idx[b, :k])
            if graded:
                np.testing.assert_array_equal(out["val_out"][b, :k], ref_val[b, :k])
        forwarded += ref_cnt.sum()
    assert 0 < forwarded  # the case is not vacuous
    assert paths == {"dense", "scatter"}  # both ways of sample b, and winners kept across them


def test_int8_rejects_fractional_scale():
    with pytest.raises(UnsupportedError, match="sumpool"):
        pool2d_kernel(
            (4, 4, 2),
            (2, 2),
            Pool2dGeometry(kernel=(2, 2), stride=(2, 2)),
            scale=0.25,
            precision=Precision.INT8,
        )


# ---------------------------------------------------------------------------------------
# fused neuron epilogue

NEURONS = [
    ("if-soft", NeuronSpec(reset=Reset.SOFT), None),
    ("lif-hard", NeuronSpec(reset=Reset.HARD, leak=True), 0.8),
    ("strict-none", NeuronSpec(reset=Reset.NONE, strict=True, leak=True), 0.9),
    ("burst4-soft", NeuronSpec(reset=Reset.SOFT, max_spikes=4), None),
    ("burst3-strict-hard", NeuronSpec(reset=Reset.HARD, strict=True, max_spikes=3, leak=True), 0.75),
]


@pytest.mark.parametrize("name,spec,beta", NEURONS, ids=[n[0] for n in NEURONS])
@pytest.mark.parametrize("precision", list(Precision))
def test_neuron_epilogue(name, spec, beta, precision):
    """Neuron-only kernel (dense current + bias) over several steps: spikes, lists and v exact."""
    rng = np.random.default_rng(8)
    integer = precision is Precision.INT8
    shape, nb = (3, 2, 8), 4  # a channels-last map: per-channel thresholds index the last axis
    n, c = 48, 8
    kernel = add_kernel(
        shape, (Current(),), precision=precision, bias=True, epilogue=Epilogue.NEURON, neuron=spec
    )
    adt = precision.acc_dtype
    if integer:
        vth = rng.integers(20, 60, c).astype(np.int32)
        bias = rng.integers(-5, 6, c).astype(np.int32)
        beta_arr = np.full(c, round(beta * 4096) if beta else 4096, np.int32)
        v = (vth // 2 * np.ones((nb, 6, 1), np.int32)).reshape(nb, n).astype(np.int32)
        v_reset = -3
    else:
        vth = rng.uniform(0.5, 1.5, c).astype(np.float32)
        bias = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        beta_arr = np.full(c, beta or 1.0, np.float32)
        v = np.tile(0.5 * vth, (nb, 6)).astype(np.float32)
        v_reset = -0.25
    state = {"v": v, "stats": np.zeros(nb, np.int32)}
    ref_v, total = v.reshape(nb, 6, c).copy(), np.zeros(nb, np.int64)
    for _ in range(4):
        if integer:
            cur = rng.integers(-40, 120, (nb, n)).astype(np.int32)
        else:
            cur = rng.uniform(-0.5, 2.5, (nb, n)).astype(np.float32)
        arrays = {"cur0": cur, "bias": bias, "acc": np.zeros((nb, n), adt), "v": state["v"], "vth": vth}
        if spec.leak:
            arrays["beta"] = beta_arr
        arrays |= {
            "cnt_out": np.zeros(nb, "int32"),
            "idx_out": np.zeros((nb, n), "int32"),
            "stats": state["stats"],
        }
        if spec.max_spikes > 1:
            arrays["val_out"] = np.zeros((nb, n), adt)
        out = call(kernel, arrays, {"vreset": v_reset})
        ref_v, s = neuron_step(
            ref_v, cur.reshape(nb, 6, c) + bias, vth, beta=beta_arr if spec.leak else None, reset=spec.reset.value,
            v_reset=v_reset, strict=spec.strict, max_spikes=spec.max_spikes, integer=integer,
        )  # fmt: skip
        s = s.reshape(nb, n)
        total += s.sum(axis=1)
        cnt, idx, val = to_rows(s)
        np.testing.assert_array_equal(out["cnt_out"], cnt)
        for b in range(nb):
            np.testing.assert_array_equal(out["idx_out"][b, : cnt[b]], idx[b, : cnt[b]])
            if spec.max_spikes > 1:
                np.testing.assert_array_equal(out["val_out"][b, : cnt[b]], val[b, : cnt[b]])
        if integer:
            np.testing.assert_array_equal(out["v"], ref_v.reshape(nb, n))
        else:
            np.testing.assert_allclose(out["v"], ref_v.reshape(nb, n), atol=1e-5)
        np.testing.assert_array_equal(out["stats"], total)
        state = {"v": out["v"], "stats": out["stats"]}


@pytest.mark.parametrize("batch", [1, None])
def test_linear_with_fused_neuron_and_readout(batch):
    """Event linear + LIF epilogue + spike-count readout in one kernel; batch 1 uses the
    channel-slice accumulation with a separate epilogue loop."""
    rng = np.random.default_rng(9)
    nb, n_in, n_out = (1 if batch == 1 else 3), 50, 128
    spec = NeuronSpec(reset=Reset.SOFT, leak=True)
    kernel = linear_kernel(
        n_in, n_out, batch=batch, bias=True, epilogue=Epilogue.NEURON, neuron=spec, readout=True,
        slices=2 if batch == 1 else None,
    )  # fmt: skip
    w = (0.3 * rng.standard_normal((n_in, n_out))).astype(np.float32)
    bias = rng.uniform(0, 0.2, n_out).astype(np.float32)
    vth, beta = np.full(n_out, 1.0, np.float32), np.full(n_out, 0.9, np.float32)
    x = spikes(rng, (nb, n_in), 0.4)
    cnt, idx, _ = to_rows(x)
    arrays = {"cnt0": cnt, "idx0": idx, "weight": w, "bias": bias, "acc": np.zeros((nb, n_out), "float32")}
    arrays |= {"v": np.zeros((nb, n_out), "float32"), "vth": vth, "beta": beta}
    arrays |= {"cnt_out": np.zeros(nb, "int32"), "idx_out": np.zeros((nb, n_out), "int32")}
    arrays |= {"stats": np.zeros(nb, "int32"), "rsum": np.zeros((nb, n_out), "float32")}
    out = call(kernel, arrays)
    ref_v, s = neuron_step(
        np.zeros((nb, n_out)), (x @ w.astype(np.float64) + bias).astype(np.float32), vth, beta=beta
    )
    np.testing.assert_array_equal(out["acc"], s)  # after a neuron epilogue, acc holds the spike counts
    np.testing.assert_allclose(out["v"], ref_v, atol=1e-5)
    np.testing.assert_array_equal(out["rsum"], s)
    assert s.sum() > 0 and s.sum() < s.size  # the case is not trivial


def test_channel_slices_give_each_core_one_slice(monkeypatch):
    """Batch-1 channel slices: the fewest that give every core one (each slice repeats the
    per-event work), none on a host with fewer than SLICE_CORES cores."""
    from snnc.backends.tvm import kernels as K

    assert K.channel_slices(1280, K.MIN_SLICE, cores=2) == (2, 640)
    assert K.channel_slices(1280, K.MIN_SLICE, cores=6) == (8, 160)
    assert K.channel_slices(1280, K.MIN_SLICE, cores=32) == (16, 80)  # the most that fit
    assert K.channel_slices(1000, K.MIN_SLICE, cores=4) == (1, 1000)  # no split into whole vectors
    big = linear_kernel(2048, 2048, batch=1)
    assert big.work >= K.PARALLEL_WORK
    monkeypatch.setattr(K.os, "cpu_count", lambda: K.SLICE_CORES - 1)
    assert big.slice_plan() == (1, 2048)
    assert linear_kernel(2048, 2048, batch=1, slices=2).slice_plan() == (2, 1024)  # forced
    monkeypatch.setattr(K.os, "cpu_count", lambda: K.SLICE_CORES)
    assert big.slice_plan() == (4, 512)
    assert linear_kernel(2048, 2048).slice_plan() == (1, 2048)  # any batch: parallel over samples


def test_kernels_are_cached_per_spec():
    before = kernel_cache.cache_size()
    a = linear_kernel(70, 83, layout=Layout.ROWS)
    kernel_cache.get_function(a)
    after_first = kernel_cache.cache_size()
    kernel_cache.get_function(linear_kernel(70, 83, layout=Layout.ROWS))
    assert kernel_cache.cache_size() == after_first <= before + 1


# ---------------------------------------------------------------------------------------
# the CUDA form, checked on the CPU: its thread loops run as serial loops


def _cuda_logic_on_cpu(kernel):
    """Compile the CUDA kernel's TIR for the CPU with every thread binding made a serial loop:
    checks the GPU kernel's phases and index arithmetic without a GPU."""
    from tvm.script import parser
    from tvm.script import tirx as T

    src = re.sub(r'T\.thread_binding\(([^,]+), thread="[^"]+"\)', r"range(\1)", kernel.source())
    return tvm.compile(parser.parse(src, extra_vars={"T": T}), target="llvm")[kernel.name]


def _random_args(kernel, rng, nb):
    """Consistent random arguments for any layer kernel (events built from dense draws)."""
    integer = kernel.precision is Precision.INT8
    adt = kernel.precision.acc_dtype
    n, c = kernel.n_out, kernel.channels
    arrays, scalars = {}, {"vreset": -1 if integer else -0.25}
    for i, op in enumerate(kernel.operands):
        if isinstance(op, Current):
            arrays[f"cur{i}"] = (
                rng.integers(-30, 60, (nb, n)) if integer else rng.uniform(-0.5, 1.5, (nb, n))
            ).astype(adt)
            continue
        dense = spikes(rng, (nb, op.cap), 0.3, 3 if op.graded else 1)
        if op.layout is Layout.ROWS:
            arrays[f"cnt{i}"], arrays[f"idx{i}"], val = to_rows(dense, op.val_dtype)
        else:
            arrays[f"ptr{i}"], arrays[f"idx{i}"], val = to_csr(dense, op.val_dtype)
        if op.graded:
            arrays[f"val{i}"] = val
    if "weight" in kernel.arg_names():
        shape = (
            (kernel.in_shape[0], n)
            if kernel.op.value == "linear"
            else (kernel.in_shape[2], *kernel.geometry.kernel, c)
        )
        arrays["weight"] = weights(rng, shape, kernel.precision)
    if kernel.bias:
        arrays["bias"] = (rng.integers(-5, 5, c) if integer else rng.uniform(-0.1, 0.1, c)).astype(adt)
    if "count" in kernel.arg_names():  # gated max pooling state: small counts, many ties
        arrays["count"] = rng.integers(0, 3, (nb, kernel.events(0).cap)).astype(adt)
    arrays["acc"] = np.zeros((nb, n), adt)
    if kernel.neuron is not None:
        arrays["v"] = (rng.integers(-20, 40, (nb, n)) if integer else rng.uniform(-0.5, 1.0, (nb, n))).astype(
            adt
        )
        arrays["vth"] = (rng.integers(20, 50, c) if integer else rng.uniform(0.5, 1.5, c)).astype(adt)
        if kernel.neuron.leak:
            arrays["beta"] = (np.full(c, 3500) if integer else rng.uniform(0.7, 1.0, c)).astype(adt)
        arrays["stats"] = np.zeros(nb, np.int32)
    if "cnt_out" in kernel.arg_names():
        arrays["cnt_out"], arrays["idx_out"] = np.zeros(nb, np.int32), np.zeros((nb, n), np.int32)
        if kernel.out_graded:
            arrays["val_out"] = np.zeros((nb, n), adt)
    if kernel.readout:
        arrays["rsum"] = np.zeros((nb, n), adt)
    return arrays, scalars


CUDA_CASES = [
    dict(
        op="linear",
        precision=Precision.FLOAT32,
        layout=Layout.ROWS,
        neuron=NeuronSpec(reset=Reset.SOFT, leak=True, max_spikes=3),
    ),
    dict(
        op="linear",
        precision=Precision.INT8,
        layout=Layout.CSR,
        neuron=NeuronSpec(reset=Reset.HARD, leak=True),
    ),
    dict(op="conv", precision=Precision.FLOAT32, neuron=NeuronSpec(reset=Reset.HARD)),
    dict(op="conv", precision=Precision.INT8, neuron=None),
    dict(op="pool", precision=Precision.FLOAT32, neuron=None),
    dict(op="maxpool", precision=Precision.FLOAT32, neuron=None),
    dict(op="add", precision=Precision.INT8, neuron=NeuronSpec(reset=Reset.SOFT, max_spikes=2)),
]


def _make(case, device):
    from snnc.backends.tvm.kernels import Device

    dev = Device.CUDA if device == "cuda" else Device.CPU
    nrn = case["neuron"]
    epi = Epilogue.NEURON if nrn else Epilogue.CURRENT
    p = case["precision"]
    if case["op"] == "linear":
        return linear_kernel(70, 83, precision=p, layout=case["layout"], graded=True, bias=True, epilogue=epi,
                             neuron=nrn, readout=True, device=dev)  # fmt: skip
    if case["op"] == "conv":
        g = Conv2dGeometry(kernel=(3, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
        return conv2d_kernel(
            (9, 7, 3), 20, g, precision=p, graded=True, bias=True, epilogue=epi, neuron=nrn, device=dev
        )
    if case["op"] == "maxpool":
        return spike_maxpool2d_kernel(
            (7, 8, 4),
            (4, 4),
            Pool2dGeometry(kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
            graded=True,
            device=dev,
        )
    if case["op"] == "pool":
        return pool2d_kernel(
            (7, 8, 4),
            (3, 4),
            Pool2dGeometry(kernel=(3, 2), stride=(2, 2), padding=(1, 0)),
            scale=0.5,
            graded=True,
            device=dev,
        )
    ops = (Events(cap=100), Events(cap=100, graded=True, val_dtype="int32"), Current())
    return add_kernel((5, 5, 4), ops, precision=p, bias=True, epilogue=epi, neuron=nrn, device=dev)


@pytest.mark.parametrize("case", CUDA_CASES, ids=[f"{c['op']}-{c['precision'].value}" for c in CUDA_CASES])
def test_cuda_kernel_logic_matches_cpu_kernel(case):
    rng = np.random.default_rng(12)
    cpu, gpu = _make(case, "cpu"), _make(case, "cuda")
    assert "blockIdx.x" in gpu.source()
    arrays, scalars = _random_args(cpu, rng, nb=3)
    ref = call(cpu, arrays, scalars)
    tensors = {k: tvm.runtime.tensor(np.ascontiguousarray(a)) for k, a in arrays.items()}
    _cuda_logic_on_cpu(gpu)(*[tensors[a] if a in tensors else scalars[a] for a in gpu.arg_names()])
    for name, t in tensors.items():
        if name == "acc" and cpu.neuron is not None:
            continue  # the GPU form keeps spike counts in its scratch accumulator
        out = t.numpy()
        if name in ("idx_out", "val_out"):  # compare each sample's list up to its count
            out, ref_out = [
                [row[:k] for row, k in zip(x, ref["cnt_out"], strict=True)] for x in (out, ref[name])
            ]
            for a, b in zip(out, ref_out, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_allclose(out, ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
