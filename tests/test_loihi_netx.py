"""lava-dl netx export: exact layout, and a read-back with plain h5py that simulates spike for spike."""

import h5py
import numpy as np
import pytest

from snnc.backends.loihi.bitacc import LayerKind, LifParams, QLayer, simulate
from snnc.backends.loihi.netx import read_netx, write_netx
from snnc.errors import UnsupportedError

I64 = np.int64


def network(rng):
    per_neuron_bias = rng.integers(-30, 30, (6, 4, 4))
    return [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(2, 8, 8)),
        QLayer(
            name="conv1",
            kind=LayerKind.CONV,
            shape=(4, 8, 8),
            weight=rng.integers(-60, 90, (4, 2, 3, 3)) * 2,
            padding=(1, 1),
            lif=LifParams(
                du=4095, dv=300, vth_mant=150, bias_mant=rng.integers(-10, 10, (4, 1, 1)), bias_exp=6
            ),
        ),
        QLayer(
            name="pool",
            kind=LayerKind.POOL,
            shape=(4, 4, 4),
            weight=40,
            kernel=(2, 2),
            stride=(2, 2),
            lif=LifParams(du=4095, dv=0, vth_mant=60),
        ),
        QLayer(
            name="conv2",
            kind=LayerKind.CONV,
            shape=(6, 4, 4),
            weight=rng.integers(-50, 70, (6, 2, 3, 2)) * 2,
            stride=(1, 1),
            padding=(1, 1),
            dilation=(1, 2),
            groups=2,
            lif=LifParams(du=2000, dv=0, vth_mant=120, bias_mant=per_neuron_bias, bias_exp=6),
        ),
        QLayer(name="flat", kind=LayerKind.FLATTEN, shape=(96,)),
        QLayer(
            name="fc1",
            kind=LayerKind.DENSE,
            shape=(20,),
            weight=rng.integers(-128, 128, (20, 96)) * 2,
            lif=LifParams(du=4095, dv=100, vth_mant=200, bias_mant=rng.integers(-2, 6, 20), bias_exp=7),
        ),
        # small weights: netx rewrites them (left shift, negative weight exponent); the spikes must not change
        QLayer(
            name="fc2",
            kind=LayerKind.DENSE,
            shape=(5,),
            weight=rng.integers(-16, 16, (5, 20)) * 2,
            lif=LifParams(du=4095, dv=0, vth_mant=10),
        ),
    ]


def test_write_read_simulate_identical(tmp_path):
    rng = np.random.default_rng(0)
    layers = network(rng)
    path = tmp_path / "network.net"
    write_netx(path, layers, timesteps=20)
    back = read_netx(path)
    assert [b.kind for b in back] == [
        LayerKind.INPUT,
        LayerKind.CONV,
        LayerKind.CONV,
        LayerKind.CONV,
        LayerKind.FLATTEN,
        LayerKind.DENSE,
        LayerKind.DENSE,
    ]
    assert back[6].weight_exp < 0  # netx's own weight rewrite was applied
    x = (rng.random((3, 20, 2, 8, 8)) < 0.35).astype(I64)
    ours = simulate(layers, x)
    theirs = simulate(back, x)
    for a, b in zip(layers, back, strict=True):
        assert np.array_equal(ours[a.name], theirs[b.name]), a.name
    assert ours["fc2"].any() and ours["conv2"].any() and not ours["fc1"].all()


def all_objects(f):
    found = []
    f.visititems(lambda name, obj: found.append((name, obj)))
    return found


def test_layout_is_lava_dl(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "network.net"
    write_netx(path, network(rng))
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["layer"]
        for name, obj in [("", f)] + all_objects(f):
            assert len(obj.attrs) == 0, f"{name} has attributes"
        layers = f["layer"]
        assert sorted(layers.keys(), key=int) == [str(i) for i in range(7)]
        types = []
        for key in sorted(layers.keys(), key=int):
            g = layers[key]
            assert g["type"].dtype == np.dtype("S10") and g["type"].shape == (1,)
            types.append(g["type"][0].decode())
            assert g["shape"].dtype == np.int64
        assert types == ["input", "conv", "conv", "conv", "flatten", "dense", "dense"]
        assert layers["0"]["shape"][()].tolist() == [2, 8, 8] and "neuron" not in layers["0"]
        conv = layers["3"]
        assert conv["shape"][()].tolist() == [6, 4, 4]
        assert conv["weight"].dtype == np.float32 and conv["weight"].shape == (6, 2, 3, 2)
        for key, want in [
            ("kernelSize", [3, 2]),
            ("stride", [1, 1]),
            ("padding", [1, 1]),
            ("dilation", [1, 2]),
        ]:
            assert conv[key].dtype == np.int64 and conv[key][()].tolist() == want
        assert conv["groups"][()] == 2 and conv["inChannels"][()] == 4 and conv["outChannels"][()] == 6
        assert conv["bias"].shape == (4, 4, 6)  # neuron-wise bias in netx's (x, y, c) order
        assert layers["1"]["bias"].shape == (4,)  # per-channel bias
        pool = layers["2"]
        assert (
            pool["groups"][()] == 4
            and np.all(pool["weight"][()] == 40)
            and pool["weight"].shape == (4, 1, 2, 2)
        )
        dense = layers["5"]
        assert dense["shape"][()].tolist() == [20]
        assert dense["inFeatures"][()] == 96 and dense["outFeatures"][()] == 20
        w = dense["weight"][()]
        assert w.dtype == np.float32 and np.all(w == np.round(w)) and np.all(w % 2 == 0)
        assert np.all(dense["bias"][()] % 2 == 0)  # bias_exp 7 stored as a mantissa for exponent 6
        n = dense["neuron"]
        assert h5py.check_string_dtype(n["type"].dtype) is not None and n["type"][()].decode() == "CUBA"
        assert n["iDecay"][()] == 4096 and n["vDecay"][()] == 100 and n["vThMant"][()] == 200
        assert n["refDelay"][()] == 1 and n["gradedSpike"][()] == np.False_
        assert layers["3"]["neuron"]["iDecay"][()] == 2001  # netx: du = iDecay - 1
        assert layers["4"]["shape"][()].tolist() == [96, 1, 1]


def test_residual_add_and_concat_are_refused_with_a_clear_message(tmp_path):
    lif = LifParams(du=4095, dv=0, vth_mant=1)
    base = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(4,)),
        QLayer(name="a", kind=LayerKind.DENSE, shape=(4,), weight=np.eye(4, dtype=I64) * 2, lif=lif),
    ]
    add = base + [QLayer(name="res", kind=LayerKind.ADD, shape=(4,), inputs=(0, 1))]
    with pytest.raises(
        UnsupportedError, match=r"layer 'res' is a residual add.*mapping.*NIR export still work"
    ):
        write_netx(tmp_path / "a.net", add)
    cat = base + [QLayer(name="cat", kind=LayerKind.CONCAT, shape=(8,), inputs=(0, 1))]
    with pytest.raises(UnsupportedError, match="layer 'cat' is a concatenation"):
        write_netx(tmp_path / "b.net", cat)
    odd = [
        base[0],
        QLayer(name="a", kind=LayerKind.DENSE, shape=(4,), weight=np.eye(4, dtype=I64) * 3 - 1, lif=lif),
    ]  # mixed sign
    with pytest.raises(UnsupportedError, match="even integers"):
        write_netx(tmp_path / "c.net", odd)
    fine_bias = [
        base[0],
        QLayer(
            name="a",
            kind=LayerKind.DENSE,
            shape=(4,),
            weight=np.eye(4, dtype=I64) * 2,
            lif=LifParams(du=4095, dv=0, vth_mant=1, bias_mant=5, bias_exp=0),
        ),
    ]
    with pytest.raises(UnsupportedError, match="bias_exp=6"):
        write_netx(tmp_path / "d.net", fine_bias)
