"""Bit-accurate Loihi simulator (lava PyLifModelBitAcc + Dense/Conv) and the fixed-point formats."""

import numpy as np
import pytest

from snnc.backends.loihi import bitacc
from snnc.backends.loihi.bitacc import (
    LayerKind,
    LifParams,
    QLayer,
    conv_step,
    dense_step,
    lif_step,
    prepare_dense_weights,
    simulate,
    wrap_signed,
)
from snnc.backends.loihi.fixed_point import (
    netx_weight_format,
    quantize_bias,
    quantize_decay,
    quantize_threshold,
    quantize_weights,
)
from snnc.errors import UserError

I64 = np.int64


def run_lif(params, inputs, u0=0, v0=0):
    """Drive one neuron with the given a_in sequence; return lists of u, v, s."""
    u, v = np.array([u0], I64), np.array([v0], I64)
    us, vs, ss = [], [], []
    for a in inputs:
        u, v, s = lif_step(u, v, np.array([a], I64), params)
        us.append(int(u[0]))
        vs.append(int(v[0]))
        ss.append(bool(s[0]))
    return us, vs, ss


# ---------------------------------------------------------------- hand-computed neuron cases


def test_strict_threshold_equal_does_not_fire():
    # vth_mant 1 -> hardware threshold 64; a_in 1 -> u = 1 << 6 = 64 (du 4095: no current memory)
    us, vs, ss = run_lif(LifParams(du=4095, dv=0, vth_mant=1), [1, 1])
    assert us == [64, 64]
    assert vs == [64, 0]  # step 0: v == 64 does not fire; step 1: v = 128 > 64 fires and resets to 0
    assert ss == [False, True]


def test_voltage_decay_truncates_toward_zero_for_negative_values():
    # bias -101 each step, dv = 2048 (keeps half): step 1: T0(-101 * 2048 / 4096) = -50 (floor would be -51)
    p = LifParams(du=4095, dv=2048, vth_mant=100, bias_mant=-101, bias_exp=0)
    _, vs, _ = run_lif(p, [0, 0, 0])
    assert vs == [-101, -50 - 101, -75 - 101]  # T0(-151 / 2) = -75


def test_current_decay_truncates_toward_zero():
    # du = 2047 -> current keeps (4096 - 2048) / 4096 = 1/2; from u0 = -3: T0(-1.5) = -1, then T0(-0.5) = 0
    us, _, _ = run_lif(LifParams(du=2047, dv=0, vth_mant=1000), [0, 0], u0=-3)
    assert us == [-1, 0]


def test_current_wraps_at_24_bits_with_lava_bounds():
    p = LifParams(du=4095, dv=0, vth_mant=(1 << 17) - 1)
    # a_in << 6 == 2^23 exactly stays (lava wraps only values > 2^23) ...
    assert run_lif(p, [1 << 17])[0] == [1 << 23]
    # ... 2^23 + 64 wraps to -2^23 + 64, and -2^23 wraps to +2^23
    assert run_lif(p, [(1 << 17) + 1])[0] == [-(1 << 23) + 64]
    assert run_lif(p, [-(1 << 17)])[0] == [1 << 23]


def test_voltage_saturates_at_plus_minus_2_23_minus_1():
    p = LifParams(du=4095, dv=0, vth_mant=(1 << 17) - 1, bias_mant=-4096, bias_exp=7)  # -524288 per step
    _, vs, _ = run_lif(p, [0] * 17)
    assert vs[14] == -15 * 524288
    assert vs[15] == -(1 << 23) + 1  # -16 * 524288 = -2^23 saturates
    assert vs[16] == -(1 << 23) + 1
    # on the positive side v saturates at 2^23 - 1, which is above the largest threshold, so it fires
    _, vs, ss = run_lif(LifParams(du=4095, dv=0, vth_mant=(1 << 17) - 1), [1 << 17], v0=(1 << 23) - 1)
    assert ss == [True] and vs == [0]


def test_bias_is_mantissa_shifted_by_exponent():
    _, vs, _ = run_lif(LifParams(du=4095, dv=0, vth_mant=1000, bias_mant=3, bias_exp=5), [0, 0])
    assert vs == [96, 192]


def test_lif_params_are_checked():
    with pytest.raises(UserError, match="vth_mant"):
        LifParams(du=4095, dv=0, vth_mant=1 << 17).verify("layer x")
    with pytest.raises(UserError, match="bias_mant"):
        LifParams(du=4095, dv=0, vth_mant=1, bias_mant=np.array([5000])).verify("layer x")
    with pytest.raises(UserError, match="du"):
        LifParams(du=4096, dv=0, vth_mant=1).verify("layer x")


# ---------------------------------------------------------------- synapses


def test_dense_weight_exponent_shifts_and_floors():
    w = np.array([[-3, 0], [5, 2]])
    s = np.array([[1, 0]])
    assert dense_step(s, w, weight_exp=0).tolist() == [[-3, 5]]
    assert dense_step(s, w, weight_exp=-1).tolist() == [[-2, 2]]  # arithmetic shift: floor(-1.5) = -2
    assert dense_step(s, w, weight_exp=2).tolist() == [[-12, 20]]


def test_dense_weights_clipped_and_truncated_as_lava():
    w = np.array([[3, -3, 300, -300]])
    assert prepare_dense_weights(w, 8).tolist() == [[2, -4, 254, -256]]  # mixed: 1 LSB dropped, clip 8 bits
    assert prepare_dense_weights(np.array([[3, 7, 300]]), 8).tolist() == [[3, 7, 255]]  # excitatory
    assert prepare_dense_weights(np.array([[-3, -7]]), 6).tolist() == [
        [-0, -4]
    ]  # inhibitory: magnitudes >> 2


def test_conv_matches_torch_and_wraps_at_24_bits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (2, 4, 7, 6))
    w = rng.integers(-9, 9, (6, 2, 3, 2))
    ref = torch.nn.functional.conv2d(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64),
        stride=(2, 1),
        padding=(1, 0),
        dilation=(1, 2),
        groups=2,
    ).numpy()
    assert np.array_equal(conv_step(x, w, (2, 1), (1, 0), (1, 2), 2), ref.astype(np.int64))
    big = conv_step(np.array([[[[1 << 20]]]]), np.array([[[[8]]]]))  # 2^23 wraps to -2^23
    assert big.item() == -(1 << 23)
    assert wrap_signed(np.array([(1 << 31) + 5]), 32).item() == -(1 << 31) + 5


# ---------------------------------------------------------------- latency and network simulation


def _relay(n, name, vth=0):
    return QLayer(
        name=name,
        kind=LayerKind.DENSE,
        shape=(n,),
        weight=np.eye(n, dtype=I64) * 2,
        lif=LifParams(du=4095, dv=0, vth_mant=vth),
    )


def test_one_timestep_of_latency_per_synaptic_layer():
    layers = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(1,)),
        _relay(1, "a"),
        _relay(1, "b"),
        _relay(1, "c"),
    ]
    x = np.zeros((1, 6, 1), dtype=np.int64)
    x[0, 0, 0] = 1
    out = simulate(layers, x)
    assert np.flatnonzero(out["in"][0, :, 0]).tolist() == [0]
    assert np.flatnonzero(out["a"][0, :, 0]).tolist() == [1]
    assert np.flatnonzero(out["b"][0, :, 0]).tolist() == [2]
    assert np.flatnonzero(out["c"][0, :, 0]).tolist() == [3]


def test_flatten_add_concat_have_no_latency():
    c = QLayer
    layers = [
        c(name="in", kind=LayerKind.INPUT, shape=(1, 2, 2)),
        c(
            name="p",
            kind=LayerKind.CONV,
            shape=(1, 2, 2),
            weight=np.full((1, 1, 1, 1), 2),
            lif=LifParams(du=4095, dv=0, vth_mant=0),
        ),
        c(name="cat", kind=LayerKind.CONCAT, shape=(2, 2, 2), inputs=(0, 1)),
        c(name="sum", kind=LayerKind.ADD, shape=(1, 2, 2), inputs=(0, 1)),
        c(name="flat", kind=LayerKind.FLATTEN, shape=(8,), inputs=(2,)),
    ]
    x = np.zeros((1, 3, 1, 2, 2), dtype=np.int64)
    x[0, 0, 0, 0, 0] = 1
    out = simulate(layers, x)
    assert (
        out["cat"][0, 0].sum() == 1 and out["cat"][0, 1].sum() == 1
    )  # input now, conv output one step later
    assert out["sum"][0, 0, 0, 0, 0] == 1 and out["sum"][0, 1, 0, 0, 0] == 1
    assert np.array_equal(out["flat"][0, 1], out["cat"][0, 1].reshape(-1))


def test_simulate_rejects_bad_layers():
    bad = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(3,)),
        QLayer(
            name="d",
            kind=LayerKind.DENSE,
            shape=(2,),
            weight=np.zeros((2, 4)),
            lif=LifParams(du=0, dv=0, vth_mant=1),
        ),
    ]
    with pytest.raises(UserError, match="does not read 3 inputs"):
        simulate(bad, np.zeros((1, 2, 3)))
    ok = [QLayer(name="in", kind=LayerKind.INPUT, shape=(3,))]
    with pytest.raises(UserError, match="expected"):
        simulate(ok, np.zeros((1, 2, 4)))
    per_channel = QLayer(
        name="c",
        kind=LayerKind.CONV,
        shape=(2, 3, 3),
        weight=np.ones((2, 1, 1, 1)),
        lif=LifParams(du=0, dv=0, vth_mant=1, bias_mant=np.ones(2, I64)),
    )
    with pytest.raises(UserError, match="same rank"):
        simulate(
            [QLayer(name="in", kind=LayerKind.INPUT, shape=(1, 3, 3)), per_channel], np.zeros((1, 1, 1, 3, 3))
        )


# ---------------------------------------------------------------- independent scalar reference


def _t0(x, shift=12):
    return -((-x) >> shift) if x < 0 else x >> shift


def _wrap(x, bits):
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >= 1 << (bits - 1) else x


def reference(layers, x, steps):
    """Slow, scalar, pure-Python re-statement of lava's equations (written independently of bitacc)."""
    batch = x.shape[0]
    outs = []
    for b in range(batch):
        state, bufs, rec = {}, {}, {}
        for t in range(steps):
            vals = []
            for i, L in enumerate(layers):
                prev = vals[i - 1] if i else None
                if L.kind is LayerKind.INPUT:
                    y = [int(v != 0) for v in np.ravel(x[b, t])] if t < x.shape[1] else [0] * L.neurons
                elif L.kind is LayerKind.FLATTEN:
                    y = list(prev)
                else:
                    acc = _ref_synapse(L, layers[i - 1].shape, prev)
                    a_in = bufs.get(i, [0] * L.neurons)
                    bufs[i] = acc
                    us, vs = state.get(i, ([0] * L.neurons, [0] * L.neurons))
                    bias = np.broadcast_to(np.asarray(L.lif.bias_mant), L.shape).ravel()
                    y, nu, nv = [], [], []
                    for k in range(L.neurons):
                        u = _wrap(_t0(us[k] * (4096 - (L.lif.du + 1))) + (_wrap(a_in[k], 32) << 6), 32)
                        if u > 1 << 23:
                            u -= 1 << 24
                        elif u <= -(1 << 23):
                            u += 1 << 24
                        v = _t0(vs[k] * (4096 - L.lif.dv)) + u + (int(bias[k]) << L.lif.bias_exp)
                        v = max(-(1 << 23) + 1, min((1 << 23) - 1, v))
                        s = v > (L.lif.vth_mant << 6)
                        nu.append(u)
                        nv.append(0 if s else v)
                        y.append(int(s))
                    state[i] = (nu, nv)
                vals.append(y)
                rec.setdefault(L.name, []).append(y)
        outs.append(rec)
    return {L.name: np.array([o[L.name] for o in outs]).reshape(batch, steps, *L.shape) for L in layers}


def _ref_synapse(L, in_shape, s):
    if L.kind is LayerKind.DENSE:
        w = np.asarray(L.weight).tolist()
        mixed = min(min(r) for r in w) < 0 < max(max(r) for r in w)
        acc = []
        for row in w:
            total = 0
            for wj, sj in zip(row, s, strict=True):
                wj = max(-256, min(255, wj)) if mixed else max(0, min(255, wj))
                wj = (wj >> (8 - L.num_weight_bits + mixed)) << (8 - L.num_weight_bits + mixed)
                total += wj * sj
            acc.append(_wrap(total << L.weight_exp if L.weight_exp >= 0 else total >> -L.weight_exp, 32))
        return acc
    c_in, h, wd = in_shape
    c_out, ho, wo = L.shape
    if L.kind is LayerKind.POOL:
        kh, kw = L.kernel
        groups, w = c_in, np.full((c_in, 1, kh, kw), int(L.weight))
    else:
        w, groups = np.asarray(L.weight), L.groups
        kh, kw = w.shape[2:]
    cg, og = c_in // groups, c_out // groups
    acc = []
    for co in range(c_out):
        for yo in range(ho):
            for xo in range(wo):
                total = 0
                for cj in range(cg):
                    ci = (co // og) * cg + cj
                    for ky in range(kh):
                        for kx in range(kw):
                            yi = yo * L.stride[0] - L.padding[0] + ky * L.dilation[0]
                            xi = xo * L.stride[1] - L.padding[1] + kx * L.dilation[1]
                            if 0 <= yi < h and 0 <= xi < wd:
                                total += int(w[co, cj, ky, kx]) * s[(ci * h + yi) * wd + xi]
                acc.append(_wrap(total, 24))
    return acc


def _random_chain(rng):
    c = QLayer
    layers = [
        c(name="in", kind=LayerKind.INPUT, shape=(2, 6, 6)),
        c(
            name="conv",
            kind=LayerKind.CONV,
            shape=(4, 3, 3),
            weight=rng.integers(-40, 60, (4, 1, 3, 3)) * 2,
            stride=(2, 2),
            padding=(1, 1),
            groups=2,
            lif=LifParams(
                du=3000, dv=500, vth_mant=60, bias_mant=rng.integers(-20, 20, (4, 1, 1)), bias_exp=6
            ),
        ),
        c(
            name="pool",
            kind=LayerKind.POOL,
            shape=(4, 2, 2),
            weight=30,
            kernel=(2, 2),
            stride=(1, 1),
            lif=LifParams(du=4095, dv=100, vth_mant=40),
        ),
        c(name="flat", kind=LayerKind.FLATTEN, shape=(16,)),
        c(
            name="fc",
            kind=LayerKind.DENSE,
            shape=(5,),
            weight=rng.integers(-128, 128, (5, 16)) * 2
            + rng.integers(0, 2, (5, 16)),  # odd values get truncated
            lif=LifParams(du=100, dv=0, vth_mant=50, bias_mant=rng.integers(-9, 9, 5), bias_exp=3),
        ),
        c(
            name="out",
            kind=LayerKind.DENSE,
            shape=(3,),
            weight=rng.integers(0, 90, (3, 5)),
            weight_exp=-1,
            num_weight_bits=6,
            lif=LifParams(du=4095, dv=0, vth_mant=30),
        ),
    ]
    return layers


def test_random_network_matches_scalar_reference():
    rng = np.random.default_rng(7)
    layers = _random_chain(rng)
    x = (rng.random((2, 12, 2, 6, 6)) < 0.4).astype(np.int64)
    got = simulate(layers, x, T=14)
    want = reference(layers, x, 14)
    for layer in layers:
        assert np.array_equal(got[layer.name].astype(int), want[layer.name]), layer.name
    assert got["out"].any() and got["fc"].any() and not got["conv"].all()


@pytest.mark.parametrize("block_elements", [1, 100, 1 << 22])
def test_blocks_of_steps_and_silent_steps_match_scalar_reference(monkeypatch, block_elements):
    """The simulator runs a layer's synapses over blocks of steps and skips steps without input: a block
    of one step, blocks that split the run unevenly, the whole run in one, with silent stretches of input
    (a layer then gets only its bias) give lava's step-by-step integers."""
    monkeypatch.setattr(bitacc, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(11)
    layers = _random_chain(rng)
    x = (rng.random((3, 12, 2, 6, 6)) < 0.4).astype(np.int64)
    x[:, 3:7] = 0  # four silent input steps
    x[1] = 0  # and a sample with none at all
    got = simulate(layers, x, T=16)
    want = reference(layers, x, 16)
    for layer in layers:
        assert np.array_equal(got[layer.name].astype(int), want[layer.name]), layer.name
    assert got["fc"][:, 3:9].any()  # the bias drives a layer through the silence


# ---------------------------------------------------------------- fixed point


def test_quantize_weights_netx_form_uses_the_range():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(20, 30))
    q = quantize_weights(w)
    assert q.w_int.dtype == np.int64
    assert np.all(q.w_int % 2 == 0) and q.w_int.min() >= -256 and q.w_int.max() <= 254
    assert q.w_int.min() == -256 or q.w_int.max() == 254  # the largest |w| reaches an end of the range
    assert q.error.max_abs <= q.scale * 1.0001  # half of the 2-unit grid
    assert np.allclose(q.w_int * q.scale, w, atol=q.scale * 1.0001)
    assert (q.hw_weight_bits, q.hw_weight_exp) == (8, 0)
    q4 = quantize_weights(w, num_bits=4)
    assert np.all(q4.w_int % 32 == 0) and q4.error.max_abs > q.error.max_abs


def test_netx_weight_format_follows_lava_dl():
    assert netx_weight_format(np.array([[-256, 254, 2]])) == (
        8,
        0,
        netx_weight_format(np.array([[-1, 1]]))[2],
    )
    bits, exp, _ = netx_weight_format(np.array([[64, -64, 32]]))  # small mixed weights are shifted up 1 bit
    assert (bits, exp) == (3, -1)
    assert netx_weight_format(np.array([[4, 8]]))[:2] == (2, -4)  # excitatory: shifted up 4, 2 bits kept


def test_threshold_bias_decay_quantisation():
    assert quantize_threshold(1.0, 0.01) == (100, quantize_threshold(1.0, 0.01)[1])
    mant, err = quantize_threshold(1e6, 1.0)
    assert mant == (1 << 17) - 1 and err.clipped == 1
    d, e = quantize_decay(0.1)
    assert d == 410 and e.max_abs < 1 / 8192
    assert quantize_decay(1.0, offset=1)[0] == 4095  # lava du for "no current memory"
    assert quantize_decay(0.0)[0] == 0
    m, exp, _ = quantize_bias(np.array([0.1, -0.3]), 0.01)  # netx convention: exponent 6, b / scale
    assert exp == 6 and m.tolist() == [10, -30]
    m, exp, err = quantize_bias(np.array([0.1, -0.3]), 0.01, bias_exp=None)  # finest exponent that fits
    assert exp == 0 and m.tolist() == [640, -1920] and err.max_abs < 1e-12
    m, exp, err = quantize_bias(np.array([1e3]), 0.01, bias_exp=None)
    assert exp == 7 and err.clipped == 1


def test_quantised_if_layer_tracks_the_float_layer():
    """The documented float -> integer mapping: an IF layer (hard reset, strict threshold) and its
    quantised twin give nearly the same spike counts (shifted by the one-step synaptic latency)."""
    rng = np.random.default_rng(3)
    n_in, n_out, steps = 40, 30, 60
    w = rng.normal(0, 0.3, (n_out, n_in))
    b = rng.normal(0, 0.05, n_out)
    theta = 1.0
    x = (rng.random((4, steps, n_in)) < 0.3).astype(np.int64)
    # float reference, with Loihi's one-step synaptic delay: the input of step t arrives at step t + 1
    v = np.zeros((4, n_out))
    counts_f = np.zeros((4, n_out))
    for t in range(steps):
        v = v + (x[:, t - 1] @ w.T if t else 0) + b
        s = v > theta
        counts_f += s
        v[s] = 0
    q = quantize_weights(w)
    vth, _ = quantize_threshold(theta, q.scale)
    bm, be, _ = quantize_bias(b, q.scale)
    layers = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(n_in,)),
        QLayer(
            name="fc",
            kind=LayerKind.DENSE,
            shape=(n_out,),
            weight=q.w_int,
            lif=LifParams(du=4095, dv=0, vth_mant=vth, bias_mant=bm, bias_exp=be),
        ),
    ]
    counts_q = simulate(layers, x)["fc"].sum(axis=1)
    assert np.abs(counts_q - counts_f).mean() < 0.5
    assert np.corrcoef(counts_q.ravel(), counts_f.ravel())[0, 1] > 0.98


def test_a_threshold_below_half_a_weight_step_becomes_one_not_zero() -> None:
    """vth_mant = 0 would fire at v > 0 (and the graph's v_th would be 0, which no neuron may have): a
    positive threshold keeps the smallest positive mantissa, reported as clipped."""
    mant, err = quantize_threshold(0.2, 1.0)
    assert mant == 1 and err.clipped == 1
    assert quantize_threshold(0.6, 1.0)[0] == 1 and quantize_threshold(0.6, 1.0)[1].clipped == 0
