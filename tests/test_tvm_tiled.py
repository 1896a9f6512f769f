"""The tiled linear event kernel (``LayerKernel.tiled``): weights pre-tiled [tiles, n_in, 64], read
once per call, against an exact reference and against the untiled kernel.

Weights are multiples of 1/8 in [-1, 1] (int8: integers) and burst counts small integers, so
every sum is exact in float32 whatever the order: results are compared for equality.  Shapes
cover a tail tile (n_out not a multiple of 64, nor of the 16-lane vector), n_in not a multiple
of the 32-row chunk, empty event lists and every input active, batch 1, 2 and 32.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
import tvm  # noqa: E402
from tvm_reference import neuron_step, to_csr, to_rows  # noqa: E402

from snnc.backends.tvm import kernel_cache, kernels  # noqa: E402
from snnc.backends.tvm.kernels import (  # noqa: E402
    LINEAR_TILE,
    Epilogue,
    Layout,
    NeuronSpec,
    Precision,
    linear_kernel,
    padded_row,
    tiled_weight,
)
from snnc.errors import UnsupportedError  # noqa: E402
from snnc.ir.ops import Reset  # noqa: E402

pytestmark = pytest.mark.tvm


def call(kernel, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = {
        name: a if name == "vreset" else tvm.runtime.tensor(np.ascontiguousarray(a)) for name, a in arrays.items()
    }
    kernel_cache.get_function(kernel)(*[tensors[n] for n in kernel.arg_names()])
    return {name: t if name == "vreset" else t.numpy() for name, t in tensors.items()}


def grid_weights(rng, shape, precision: Precision) -> np.ndarray:
    if precision is Precision.INT8:
        return rng.integers(-128, 128, shape).astype(np.int8)
    return (rng.integers(-8, 9, shape) / 8).astype(np.float32)


def events(rng, nb: int, n: int, density: float, graded_max: int) -> np.ndarray:
    x = (rng.random((nb, n)) < density) * rng.integers(1, graded_max + 1, (nb, n))
    if nb > 1:
        x[1] = 0  # one sample with an empty list
    return x


def test_tiled_weight_layout():
    w = np.arange(3 * 70, dtype=np.float32).reshape(3, 70)
    t = tiled_weight(w)
    assert t.shape == (2, 3, LINEAR_TILE) and t.flags.c_contiguous
    np.testing.assert_array_equal(t[0], w[:, :64])
    np.testing.assert_array_equal(t[1, :, :6], w[:, 64:])
    assert not t[1, :, 6:].any()


CASES = [  # (precision, layout, graded, n_in, n_out); each is compiled twice (any batch, batch 1)
    (Precision.FLOAT32, Layout.ROWS, True, 100, 70),  # a 6-column tail tile, 4 row chunks
    (Precision.FLOAT32, Layout.ROWS, False, 64, 200),  # three full tiles and an 8-column tail
    (Precision.FLOAT32, Layout.CSR, False, 33, 64),  # one full tile, a 1-row last chunk
    (Precision.INT8, Layout.ROWS, True, 130, 9),  # a tail tile only
    (Precision.INT8, Layout.CSR, False, 100, 70),
]


@pytest.mark.parametrize(("precision", "layout", "graded", "n_in", "n_out"), CASES)
def test_tiled_linear_exact(precision, layout, graded, n_in, n_out):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    acc_dt = precision.acc_dtype
    w = grid_weights(rng, (n_in, n_out), precision)
    for batch, nb in ((None, 1), (None, 2), (None, 32), (1, 1)):
        kernel = linear_kernel(
            n_in, n_out, batch=batch, precision=precision, layout=layout, graded=graded, tiled=True
        )
        for density in (0.0, 0.05, 0.4, 1.0):
            x = events(rng, nb, n_in, density, 3 if graded else 1)
            a, b, val = (to_rows if layout is Layout.ROWS else to_csr)(x, acc_dt)
            arrays = {"cnt0" if layout is Layout.ROWS else "ptr0": a, "idx0": b}
            if graded:
                arrays["val0"] = val
            arrays |= {"weight": tiled_weight(w), "acc": np.full((nb, n_out), 99, acc_dt)}
            out = call(kernel, arrays)["acc"]
            exact = np.int64 if precision is Precision.INT8 else np.float64
            ref = x.astype(exact) @ w.astype(exact)
            np.testing.assert_array_equal(out, ref.astype(acc_dt), err_msg=f"B={nb} density {density}")


@pytest.mark.parametrize("extreme", [-128, 127])
def test_tiled_int8_chunks_sum_in_int16_up_to_their_bound(extreme):
    """An int8 tiled kernel of 0/1 events sums a chunk of TILE_ROWS rows in int16 (at most one
    event per row: 128 · 128 = 2^14 in magnitude) and the chunks in int32: every weight at an
    int8 extreme and every input active, 300 rows (chunks of 128, 128 and 44) reach 300 · extreme,
    beyond int16; one column is one step away, so that columns stay distinguishable."""
    kernel = linear_kernel(300, 70, batch=None, precision=Precision.INT8, tiled=True)
    assert kernels._Emitter(kernel).narrow_tiles
    w = np.full((300, 70), extreme, np.int8)
    w[:, 5] = extreme - np.sign(extreme)
    x = np.ones((3, 300))
    x[1, ::3] = 0  # chunks of other lengths in one call
    a, b, _ = to_rows(x, "int32")
    out = call(kernel, {"cnt0": a, "idx0": b, "weight": tiled_weight(w), "acc": np.zeros((3, 70), "int32")})["acc"]
    np.testing.assert_array_equal(out, (x.astype(np.int64) @ w.astype(np.int64)).astype(np.int32))
    assert np.abs(out).max() == 300 * abs(extreme)


@pytest.mark.parametrize("nb", [1, 2, 32])
def test_tiled_neuron_epilogue_equals_untiled(nb):
    """Bias, an input scale and a leaky burst neuron with soft reset over a few steps: the tiled
    kernel's membranes, spike lists, counts and statistics equal the untiled kernel's."""
    rng = np.random.default_rng(5)
    n_in, n_out = 96, 150
    nrn = NeuronSpec(max_spikes=2, leak=True)
    common = dict(graded=True, scale=0.5, bias=True, epilogue=Epilogue.NEURON, neuron=nrn)
    kernels = {tiled: linear_kernel(n_in, n_out, tiled=tiled, **common) for tiled in (False, True)}
    w = grid_weights(rng, (n_in, n_out), Precision.FLOAT32)
    fixed = {
        "bias": (rng.integers(-4, 5, n_out) / 4).astype(np.float32),
        "vth": np.full(n_out, 1.0, np.float32),
        "beta": np.full(n_out, 0.5, np.float32),
    }
    state = {
        tiled: {"v": np.zeros((nb, n_out), np.float32), "stats": np.zeros(nb, np.int32)} for tiled in kernels
    }
    v_ref = np.zeros((nb, n_out))
    for _ in range(4):
        x = events(rng, nb, n_in, 0.3, 2)
        cnt, idx, val = to_rows(x, "float32")
        outs = {}
        for tiled, kernel in kernels.items():
            arrays = {"cnt0": cnt, "idx0": idx, "val0": val, "weight": tiled_weight(w) if tiled else w}
            arrays |= fixed | state[tiled]
            arrays |= {"acc": np.zeros((nb, n_out), np.float32), "cnt_out": np.zeros(nb, np.int32)}
            arrays |= {
                "idx_out": np.full((nb, n_out), -1, np.int32),
                "val_out": np.zeros((nb, n_out), np.float32),
            }
            outs[tiled] = call(kernel, arrays)
            state[tiled] = {"v": outs[tiled]["v"], "stats": outs[tiled]["stats"]}
        for name in ("acc", "v", "cnt_out", "idx_out", "val_out", "stats"):
            np.testing.assert_array_equal(outs[True][name], outs[False][name], err_msg=name)
        current = 0.5 * (x @ w.astype(np.float64)) + fixed["bias"]
        v_ref, s_ref = neuron_step(v_ref, current, 1.0, beta=0.5, max_spikes=2)
        np.testing.assert_array_equal(outs[True]["acc"], s_ref.astype(np.float32))


STEP_CASES = [  # (precision, graded, n_in, n_out, neuron or None: a readout current, bias)
    (Precision.FLOAT32, True, 100, 70, NeuronSpec(max_spikes=2, leak=True), True),  # padded rows
    (Precision.FLOAT32, False, 64, 128, NeuronSpec(reset=Reset.HARD), False),  # rows of 64 bytes
    (Precision.FLOAT32, True, 40, 9, None, True),  # a readout: rsum summed step after step
    (Precision.INT8, False, 130, 70, NeuronSpec(leak=True, strict=True), True),
]


@pytest.mark.parametrize(("precision", "graded", "n_in", "n_out", "nrn", "bias"), STEP_CASES)
def test_kernel_over_a_block_of_steps_equals_a_call_per_step(precision, graded, n_in, n_out, nrn, bias):
    """``LayerKernel.steps``: one call over the k steps of a block (per-step rows padded to 64
    bytes, one state row) equals k calls of the batch-1 kernel, step after step: the same
    membranes, spike lists, counts, statistics and readout sums."""
    rng = np.random.default_rng(n_in + n_out)
    adt = precision.acc_dtype
    epilogue = Epilogue.CURRENT if nrn is None else Epilogue.NEURON
    common = dict(precision=precision, graded=graded, bias=bias, epilogue=epilogue, neuron=nrn, readout=nrn is None)
    one = linear_kernel(n_in, n_out, batch=1, slices=1, **common)
    block = linear_kernel(n_in, n_out, tiled=True, steps=True, **common)
    w = grid_weights(rng, (n_in, n_out), precision)
    fixed = {"weight": w}
    if bias:
        fixed["bias"] = (rng.integers(-4, 5, n_out) / (1 if adt == "int32" else 4)).astype(adt)
    if nrn is not None:
        fixed["vth"] = np.full(n_out, 100 if adt == "int32" else 1.0, adt)
        if nrn.leak:
            fixed["beta"] = np.full(n_out, 2048 if adt == "int32" else 0.5, adt)
        if nrn.reset is Reset.HARD:
            fixed["vreset"] = 0.25
    state = {"v": np.zeros((1, n_out), adt), "stats": np.zeros(1, np.int32), "rsum": np.zeros((1, n_out), adt)}
    state = {k: v for k, v in state.items() if k in one.arg_names()}
    steps = 7
    x = events(rng, steps, n_in, 0.3, 3 if graded else 1)
    x[3] = x[5]  # two steps with the same events
    x[6] = 0  # a step without any
    per_step = []
    for t in range(steps):  # the reference: a call per step
        cnt, idx, val = to_rows(x[t : t + 1], adt)
        arrays = fixed | state | {"cnt0": cnt, "idx0": idx, "acc": np.zeros((1, n_out), adt)}
        if graded:
            arrays["val0"] = val
        if nrn is not None:
            arrays |= {"cnt_out": np.zeros(1, np.int32), "idx_out": np.zeros((1, n_out), np.int32)}
            if nrn.max_spikes > 1:
                arrays["val_out"] = np.zeros((1, n_out), adt)
        out = call(one, arrays)
        state = {k: out[k] for k in state}
        per_step.append(out)
    row_in, row_out = padded_row(n_in, "int32"), padded_row(n_out, adt)
    cnt, idx, val = to_rows(x, adt)
    arrays = fixed | {k: np.zeros_like(v) for k, v in state.items()}
    arrays |= {"weight": tiled_weight(w), "cnt0": np.pad(cnt[:, None], ((0, 0), (0, 15)))}
    arrays |= {"idx0": np.pad(idx, ((0, 0), (0, row_in - n_in))), "acc": np.zeros((steps, row_out), adt)}
    if graded:
        arrays["val0"] = np.pad(val, ((0, 0), (0, padded_row(n_in, adt) - n_in)))
    if nrn is not None:
        arrays |= {"cnt_out": np.zeros((steps, 16), np.int32), "idx_out": np.zeros((steps, row_out), np.int32)}
        if nrn.max_spikes > 1:
            arrays["val_out"] = np.zeros((steps, row_out), adt)
    got = call(block, arrays)
    for name in state:
        np.testing.assert_array_equal(got[name], state[name], err_msg=name)
    for t, ref in enumerate(per_step):
        np.testing.assert_array_equal(got["acc"][t, :n_out], ref["acc"][0], err_msg=f"acc, step {t}")
        if nrn is not None:
            count = int(ref["cnt_out"][0])
            assert got["cnt_out"][t, 0] == count, t
            np.testing.assert_array_equal(got["idx_out"][t, :count], ref["idx_out"][0, :count])
            if nrn.max_spikes > 1:
                np.testing.assert_array_equal(got["val_out"][t, :count], ref["val_out"][0, :count])


def test_tiled_refuses_what_it_does_not_do():
    with pytest.raises(UnsupportedError, match="tiled"):
        linear_kernel(64, 64, layout=Layout.CSC, tiled=True)
    with pytest.raises(UnsupportedError, match="tiled"):
        linear_kernel(64, 128, batch=1, slices=2, tiled=True)
    with pytest.raises(UnsupportedError, match="block of steps"):
        linear_kernel(64, 64, batch=1, tiled=True, steps=True)
    with pytest.raises(UnsupportedError, match="block of steps"):
        linear_kernel(64, 64, steps=True)


# ---------------------------------------------------------------------------------------
# the tiled mode in a network: lowering, artifact, runtime

T = 4
# linear layers on a flattened spike map (rows permuted to channels-last), on average-pooled
# graded values, and on an add's graded values; 70 and 3 outputs: tail tiles only
NET = f"""
graph @tiled(%x: analog[2,8,8]) attributes {{timesteps = {T}}} {{
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {{padding = [1, 1]}} params {{weight = "c1.weight", bias = "c1.bias"}} : analog[4,8,8]
  %n1 = neuron(%c1) {{v_init = 0.5}} : spike[4,8,8]
  %f1 = flatten(%n1) : spike[256]
  %fa = linear(%f1) params {{weight = "fa.weight", bias = "fa.bias"}} : analog[70]
  %n2 = neuron(%fa) {{v_init = 0.5}} : spike[70]
  %p = avgpool2d(%n1) {{kernel = [2, 2], stride = [2, 2]}} : analog[4,4,4]
  %fp = flatten(%p) : analog[64]
  %fb = linear(%fp) params {{weight = "fb.weight", bias = "fb.bias"}} : analog[70]
  %n3 = neuron(%fb) {{v_init = 0.5}} : spike[70]
  %s = add(%n2, %n3) : analog[70]
  %out_fc = linear(%s) params {{weight = "out.weight", bias = "out.bias"}} : analog[3]
  %out = readout(%out_fc) : analog[3]
  output %out
}}
"""
LINEAR = ("fa", "fb", "out_fc")


def test_tiled_mode_spike_for_spike(tmp_path):
    """The linear layers' batched kernels tiled (batch-1 kernels event): graph.json records the
    mode, the runtime binds the tiled weights to the batched kernels only, and batches of 1, 2
    and 32 equal the torch simulator spike for spike (dyadic weights: exact sums)."""
    from conversion_util import graph_from_text
    from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, reference

    from snnc.backends.tvm.build import compile_artifact
    from snnc.backends.tvm.layers import Artifact, Mode
    from snnc.backends.tvm.lower import lower
    from snnc.backends.tvm.runtime import EventRuntime

    graph = dyadic(graph_from_text(NET, seed=5))
    x = grid_inputs(34, (2, 8, 8))
    ref = reference(graph, x)
    layer_graph, params = lower(
        graph, modes=dict.fromkeys(LINEAR, Mode.TILED), modes_batch1=dict.fromkeys(LINEAR, Mode.EVENT)
    )
    out = compile_artifact(layer_graph, params, tmp_path / "tiled")
    layers = {layer.name: layer for layer in Artifact.read(out / "graph.json").graph.layers}
    assert all((layers[n].mode, layers[n].mode_batch1) == (Mode.TILED, Mode.EVENT) for n in LINEAR)
    rt = EventRuntime(out)
    plans = {p.name: p for p in rt.plans}
    assert all(plans[n].main[None].tiled and not plans[n].main[1].tiled for n in LINEAR)
    for batch_size in (1, 2, 32):
        got = rt.run(x, batch_size=batch_size)
        np.testing.assert_array_equal(got["logits"], ref.logits)
        assert_spike_counts_equal(graph, got, ref, len(x))


def test_tiled_mode_is_for_linear_layers():
    from conversion_util import graph_from_text

    from snnc.backends.tvm.layers import Mode
    from snnc.backends.tvm.lower import lower
    from snnc.errors import TargetError

    with pytest.raises(TargetError, match="layer 'c1': mode 'tiled' exists for linear layers only"):
        lower(graph_from_text(NET, seed=5), modes={"c1": Mode.TILED})


def test_cost_model_picks_the_tiled_kernel_where_it_pays():
    """At 32 samples: tiled for wide layers whose rows most samples' events cover (the synthetic
    MLP's 2048x2048 at 17 %, 4096x4096 at 20 %), event at low density and for weights that stay
    in the caches; never for a convolution, and at batch 1 only over a block of steps (mode
    block, layer-major order)."""
    from snnc.backends.tvm.cost import MODEL, LayerShape
    from snnc.backends.tvm.layers import Mode
    from snnc.backends.tvm.lower import choose_modes
    from snnc.ir import ops as O

    wide, huge, head = (
        LayerShape.linear(2048, 2048),
        LayerShape.linear(4096, 4096),
        LayerShape.linear(2048, 10),
    )
    assert choose_modes(O.Linear(), wide, 0.17) == (Mode.TILED, Mode.BLOCK)
    assert choose_modes(O.Linear(), huge, 0.2) == (Mode.TILED, Mode.BLOCK)
    assert choose_modes(O.Linear(), wide, 0.02) == (Mode.EVENT, Mode.EVENT)
    assert choose_modes(O.Linear(), head, 0.4) == (Mode.EVENT, Mode.BLOCK)
    assert choose_modes(O.Linear(), head, 0.1) == (Mode.EVENT, Mode.EVENT)
    assert MODEL.tiled_seconds(LayerShape.linear(256, 256), 0.4, 32) == float("inf")  # 256 KB: cached
    assert choose_modes(O.Conv2d(), huge, 0.2)[0] is not Mode.TILED
