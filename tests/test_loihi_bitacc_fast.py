"""The bit-accurate simulator's fast paths give the integers of its general path.

Two shortcuts, both taken only where a bound says no wrap can act: the integrate-and-fire neuron
(``du = 4095``, ``dv = 0``) stepped in int32 (``bitacc._if_steps``), and a conv synapse group with its
per-channel exponent classes run as one float32 conv (``conv_runs.ConvRun``).  Each test runs a network
where the bounds hold on some steps and fail on others, with and without the shortcuts, and asks for the
same spikes and voltages; the scalar re-statement of lava in test_loihi_bitacc.py checks the IF chain.
"""

import dataclasses

import numpy as np
import pytest

from snnc.backends.loihi import bitacc, conv_runs
from snnc.backends.loihi.bitacc import IF_INPUT_LIMIT, LayerKind, LifParams, QLayer, simulate_with_state


def _split(w: np.ndarray, exps: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Per exponent the mantissas of its channels (zeros elsewhere), as lower.synapses makes them."""
    return [(np.where((exps == e).reshape(-1, 1, 1, 1), w, 0), int(e)) for e in np.unique(exps)]


def _conv_groups(name, w, exps, lif, **geometry):
    return [QLayer(name=name, kind=LayerKind.CONV, weight=m, weight_exp=e, exp_class=k > 0,
                   lif=lif if k == 0 else None, **geometry)
            for k, (m, e) in enumerate(_split(w, exps))]


def _net(rng: np.random.Generator) -> list[QLayer]:
    """Graded input -> conv with exponents -2, -1, 0, 2, 4 (IF) -> depthwise conv with exponents 0, 3 (IF) joined
    with a 1x1 conv of the first layer -> a leaky layer (general path) -> dense integrator."""
    inp = QLayer(name="in", kind=LayerKind.INPUT, shape=(3, 6, 6), message_bits=8)
    if_params = LifParams(du=4095, dv=0, vth_mant=300, bias_mant=rng.integers(-40, 40, (8, 1, 1)), bias_exp=6)
    w1 = rng.integers(-128, 127, (8, 3, 5, 5)) * 2
    g1 = _conv_groups("a", w1, np.array([0, 0, 4, -2, 0, 2, -1, 0]), if_params, shape=(8, 6, 6),
                      padding=(2, 2))
    a = dataclasses.replace(g1[0], extra=tuple(g1[1:]), inputs=(0,) * len(g1))
    w2 = rng.integers(-128, 127, (8, 1, 3, 3)) * 2
    g2 = _conv_groups("b", w2, np.array([0, 3, 0, 3, 3, 0, 0, 3]),
                      LifParams(du=4095, dv=0, vth_mant=90, bias_mant=5, bias_exp=3), shape=(8, 6, 6),
                      padding=(1, 1), groups=8)
    skip = QLayer(name="b", kind=LayerKind.CONV, shape=(8, 6, 6), weight=rng.integers(-60, 60, (8, 8, 1, 1)) * 2,
                  delay=0)
    b = dataclasses.replace(g2[0], extra=(*g2[1:], skip), inputs=(1,) * len(g2) + (1,))
    leaky = QLayer(name="c", kind=LayerKind.CONV, shape=(4, 6, 6), weight=rng.integers(-100, 100, (4, 8, 3, 3)) * 2,
                   padding=(1, 1), lif=LifParams(du=3000, dv=200, vth_mant=200))
    flat = QLayer(name="f", kind=LayerKind.FLATTEN, shape=(144,))
    out = QLayer(name="o", kind=LayerKind.DENSE, shape=(5,), weight=rng.integers(-128, 127, (5, 144)) * 2,
                 lif=LifParams(du=4095, dv=0, vth_mant=(1 << 17) - 1))
    return [inp, a, b, leaky, flat, out]


def test_fast_paths_equal_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    layers = _net(rng)
    x = rng.integers(-3, 4, (4, 10, 3, 6, 6))
    x[:, 4] = rng.integers(-127, 128, (4, 3, 6, 6))  # one loud step: past both bounds
    x[1, 6:] = 0
    taken = {"if": 0, "if_skipped": 0, "run": 0, "run_refused": 0}
    if_steps, lif_step, apply = bitacc._if_steps, bitacc.lif_step, conv_runs.ConvRun.apply

    def spy_if(v, a_in, *args):
        taken["if"] += 1
        return if_steps(v, a_in, *args)

    def spy_lif(u, v, a_in, params):
        taken["if_skipped"] += bitacc._is_if(params)
        return lif_step(u, v, a_in, params)

    def spy_apply(self, xs):
        got = apply(self, xs)
        taken["run" if got is not None else "run_refused"] += 1
        return got

    monkeypatch.setattr(bitacc, "_BLOCK_ELEMENTS", 4 * 8 * 36 * 2)  # blocks of two steps
    monkeypatch.setattr(bitacc, "_if_steps", spy_if)
    monkeypatch.setattr(bitacc, "lif_step", spy_lif)
    monkeypatch.setattr(conv_runs.ConvRun, "apply", spy_apply)
    fast, fast_v = simulate_with_state(layers, x, 14, resets=[None, 1, 2, 3, None, 4])
    monkeypatch.setattr(bitacc, "_is_if", lambda params: False)
    monkeypatch.setattr(conv_runs, "conv_runs", lambda *args: [])
    slow, slow_v = simulate_with_state(layers, x, 14, resets=[None, 1, 2, 3, None, 4])
    for name in fast:
        assert np.array_equal(fast[name], slow[name]), name
    for name in fast_v:
        assert np.array_equal(fast_v[name], slow_v[name]), name
    # both ways were exercised: the shortcuts where the bounds hold, the general path where they fail
    assert min(taken.values()) > 0, taken
    assert fast["a"].any() and fast["b"].any() and fast["c"].any() and not fast["a"].all()


def test_if_bound_is_where_lava_wraps() -> None:
    """Below IF_INPUT_LIMIT the int32 step equals lava's; just past it lava's 24-bit wrap of u acts."""
    params = LifParams(du=4095, dv=0, vth_mant=(1 << 17) - 1)
    for a in (IF_INPUT_LIMIT - 1, -(IF_INPUT_LIMIT - 1), 17, -5):
        out = np.zeros((1, 3, 1), dtype=bool)
        v = bitacc._if_steps(np.zeros((1, 1), np.int32), np.full((3, 1, 1), a, np.int64), params, out, 0, None)
        u_ref = v_ref = np.zeros((1, 1), np.int64)
        for t in range(3):
            u_ref, v_ref, s = bitacc.lif_step(u_ref, v_ref, np.full((1, 1), a, np.int64), params)
            assert out[0, t, 0] == s[0, 0]
        assert int(v[0, 0]) == int(v_ref[0, 0])
    past = np.array([IF_INPUT_LIMIT + 1])
    _, v_wrap, _ = bitacc.lif_step(np.zeros(1, np.int64), np.zeros(1, np.int64), past, params)
    assert int(v_wrap[0]) == -(1 << 23) + 64  # u wrapped past 2^23 to a negative voltage: no shortcut here
