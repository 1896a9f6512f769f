"""The TVM event runtime against a plain numpy simulator of DESIGN.md §3.

Small networks (conv and linear; IF soft reset, LIF hard reset, burst; pooling, gated max
pooling, flatten, residual add; event and dense layers): the int8 path must agree spike for spike, the fp32
path in predictions and within 1e-4 in membrane.  One test runs an artifact in a fresh process
in which torch cannot be imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tvm")
from tvm_reference import conv2d_hwc, neuron_step, sumpool_hwc  # noqa: E402

from snnc.backends.tvm import steps  # noqa: E402
from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.layers import LayerGraph, parse_layer_graph  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.errors import InputFileError, TargetError, UnsupportedError  # noqa: E402

pytestmark = pytest.mark.tvm


# ---------------------------------------------------------------------------------------
# the reference: the layer graph evaluated literally, in PyTorch layouts ([B, C, H, W])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_chw(x, w, rec):
    """PyTorch conv2d (w [Co, Ci, KH, KW]) via the channels-last reference."""
    geometry = [
        _pair(rec.get(key, default)) for key, default in (("stride", 1), ("padding", 0), ("dilation", 1))
    ]
    out = conv2d_hwc(x.transpose(0, 2, 3, 1), w.transpose(1, 2, 3, 0), *geometry)
    return out.transpose(0, 3, 1, 2)


def _param(value, params):
    return np.asarray(params[value] if isinstance(value, str) else value, dtype=np.float64).reshape(-1)


def _gated_maxpool(count: np.ndarray, values: list[np.ndarray], rec: dict) -> list[np.ndarray]:
    """Each of ``values`` [B, C, H, W] at every window's winner: the input with the largest
    ``count`` (first in row-major order on ties; padding never wins)."""
    kh, kw = _pair(rec["kernel"])
    (sh, sw), (ph, pw) = _pair(rec.get("stride", rec["kernel"])), _pair(rec.get("padding", 0))
    bsz, c, h, w = count.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    padded = np.pad(count.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    outs = [np.zeros((bsz, c, oh, ow), v.dtype) for v in values]
    for y in range(oh):
        for z in range(ow):
            win = padded[:, :, y * sh : y * sh + kh, z * sw : z * sw + kw].reshape(bsz, c, -1)
            first = np.argmax(win, axis=2)  # the first maximum
            wy, wz = y * sh - ph + first // kw, z * sw - pw + first % kw
            bi, ci = np.indices((bsz, c))
            for out, v in zip(outs, values, strict=True):
                out[:, :, y, z] = v[bi, ci, wy, wz]
    return outs


def reference(graph: dict, params: dict, x: np.ndarray, steps: int, integer: bool):
    """Simulate ``graph`` (format.md) on x; return (logits, spikes per layer, final membranes)."""
    inp = graph["input"]
    if inp.get("quant_scale") is not None:
        x = np.clip(np.rint(x.astype(np.float32) * np.float32(inp["quant_scale"])), -128, 127)
    x = x.astype(np.int64 if integer else np.float64)
    state, spikes, rsum, layers = {}, {}, None, graph["layers"]
    counts: dict[str, np.ndarray] = {}  # gated max pooling: accumulated input spikes
    for rec in layers:
        if rec.get("neuron"):
            n = rec["neuron"]
            vth = _param(n.get("v_th", 1.0), params)
            state[rec["name"]] = None  # v initialised at the first step, once the shape is known
            spikes[rec["name"]] = np.zeros(x.shape[0], np.int64)
    for _ in range(steps):
        values = {inp["name"]: x}
        events = {}  # unscaled spike counts of this step, by layer
        prev = inp["name"]
        for rec in layers:
            ins = [values[s] for s in rec.get("inputs", [prev])]
            op = rec["op"]
            if op == "linear":
                y = ins[0].reshape(len(x), -1) @ params[rec["weight"]].T.astype(ins[0].dtype)
            elif op == "conv2d":
                y = _conv_chw(ins[0], params[rec["weight"]], rec)
            elif op in ("sumpool2d", "avgpool2d"):
                k = _pair(rec["kernel"])
                s = _pair(rec.get("stride", k))
                p = _pair(rec.get("padding", 0))
                h, w = ins[0].shape[2:]
                out_hw = ((h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
                y = sumpool_hwc(ins[0].transpose(0, 2, 3, 1), k, s, p, out_hw).transpose(0, 3, 1, 2)
                if op == "avgpool2d":
                    y = y / (k[0] * k[1])
            elif op == "spike_maxpool":
                src = rec.get("inputs", [prev])[0]
                counts[rec["name"]] = counts.get(rec["name"], 0) + events[src]
                y, events[rec["name"]] = _gated_maxpool(counts[rec["name"]], [ins[0], events[src]], rec)
            elif op == "add":
                y = sum(ins[1:], ins[0])
            else:
                y = ins[0].reshape(len(x), -1)
            if rec.get("bias"):
                b = params[rec["bias"]]
                y = y + (b.reshape(1, -1, 1, 1) if y.ndim == 4 else b)
            y = y.astype(np.int64) if integer else y
            if rec.get("neuron"):
                n = rec["neuron"]
                vth = _param(n.get("v_th", 1.0), params)
                beta = _param(n.get("beta", 1.0), params)
                leak = not np.all(beta == 1.0)
                cl = np.moveaxis(y, 1, -1) if y.ndim == 4 else y  # channels last: params broadcast
                v = state[rec["name"]]
                if v is None:
                    v = np.broadcast_to(n.get("v_init", 0.0) * vth, cl.shape)
                    v = v.astype(np.int32 if integer else np.float32)
                if integer:
                    vth = vth.astype(np.int64)
                    beta = np.rint(beta * 4096).astype(np.int64)
                v, s = neuron_step(
                    v, cl if integer else cl.astype(np.float32), vth, beta=beta if leak else None,
                    reset=n.get("reset", "soft"), v_reset=n.get("v_reset", 0.0), strict=n.get("strict", False),
                    max_spikes=n.get("max_spikes", 1), integer=integer,
                )  # fmt: skip
                state[rec["name"]] = v
                spikes[rec["name"]] += s.reshape(len(x), -1).sum(axis=1)
                s = np.moveaxis(s, -1, 1) if y.ndim == 4 else s
                events[rec["name"]] = s
                y = s * n.get("out_scale", 1.0) if not integer else s
                y = y.astype(np.int64 if integer else np.float64)
            if rec.get("readout"):
                rsum = y.reshape(len(x), -1) if rsum is None else rsum + y.reshape(len(x), -1)
            values[rec["name"]] = y
            prev = rec["name"]
    membranes = {k: (np.moveaxis(v, -1, 1) if v.ndim == 4 else v) for k, v in state.items()}
    return rsum / steps, spikes, membranes


# ---------------------------------------------------------------------------------------
# networks


def conv_net(rng, precision="float32"):
    """conv(dense, IF soft, v_init 0.5) -> pool -> conv(event, burst 2) -> flatten -> linear(LIF hard)
    -> linear readout."""
    integer = precision == "int8"
    pool = "sumpool2d" if integer else "avgpool2d"
    if integer:
        params = {
            "c1.w": rng.integers(-20, 30, (16, 2, 3, 3)).astype(np.int8),
            "c1.b": rng.integers(-4, 8, 16).astype(np.int32),
            "c1.vth": rng.integers(150, 250, 16).astype(np.int32),
            "c2.w": rng.integers(-30, 40, (32, 16, 3, 3)).astype(np.int8),
            "f1.w": rng.integers(-30, 40, (128, 512)).astype(np.int8),
            "f1.b": rng.integers(-5, 10, 128).astype(np.int32),
            "f2.w": rng.integers(-50, 50, (10, 128)).astype(np.int8),
        }
        nc2 = {"v_th": 50, "max_spikes": 2, "reset": "soft"}
        n1 = {"v_th": "c1.vth", "reset": "soft", "v_init": 0.0}
        n2 = {"v_th": 60, "beta": 0.875, "reset": "hard", "v_reset": -2}
    else:
        params = {
            "c1.w": (0.4 * rng.standard_normal((16, 2, 3, 3))).astype(np.float32),
            "c1.b": rng.uniform(0, 0.1, 16).astype(np.float32),
            "c1.vth": rng.uniform(0.8, 1.2, 16).astype(np.float32),
            "c2.w": (0.3 * rng.standard_normal((32, 16, 3, 3))).astype(np.float32),
            "f1.w": (0.2 * rng.standard_normal((128, 512))).astype(np.float32),
            "f1.b": rng.uniform(-0.05, 0.1, 128).astype(np.float32),
            "f2.w": rng.standard_normal((10, 128)).astype(np.float32),
        }
        nc2 = {"v_th": 0.3, "max_spikes": 2, "reset": "soft"}
        n1 = {"v_th": "c1.vth", "reset": "soft", "v_init": 0.5}
        n2 = {"v_th": 0.7, "beta": 0.9, "reset": "hard", "v_reset": 0.0}
    graph = {
        "name": "conv_net",
        "timesteps": 6,
        "input": {"name": "x", "shape": [2, 8, 8], "quant_scale": 16.0 if integer else None},
        "layers": [
            {"name": "c1", "op": "conv2d", "weight": "c1.w", "bias": "c1.b", "padding": 1, "neuron": n1,
             "precision": precision},
            {"name": "p1", "op": pool, "kernel": 2, "precision": precision},
            {"name": "c2", "op": "conv2d", "weight": "c2.w", "padding": 1, "neuron": nc2, "precision": precision},
            {"name": "fl", "op": "flatten"},
            {"name": "f1", "op": "linear", "weight": "f1.w", "bias": "f1.b", "neuron": n2, "precision": precision},
            {"name": "f2", "op": "linear", "weight": "f2.w", "readout": "mean_current", "precision": precision},
        ],
    }  # fmt: skip
    return graph, params


def mlp_net(rng, precision="float32"):
    """linear(burst 3) + linear(IF, dense mode) -> residual add -> linear readout (spike count
    of a last IF layer for int8)."""
    integer = precision == "int8"
    if integer:
        params = {
            "h1.w": rng.integers(-40, 60, (40, 64)).astype(np.int8),
            "h2.w": rng.integers(-40, 60, (40, 40)).astype(np.int8),
            "o.w": rng.integers(-60, 60, (10, 40)).astype(np.int8),
            "o.b": rng.integers(0, 20, 10).astype(np.int32),
        }
        vth1, vth2, vth3 = 80, 90, 100
    else:
        params = {
            "h1.w": (0.25 * rng.standard_normal((40, 64))).astype(np.float32),
            "h2.w": (0.4 * rng.standard_normal((40, 40))).astype(np.float32),
            "o.w": rng.standard_normal((10, 40)).astype(np.float32),
            "o.b": rng.uniform(0, 0.3, 10).astype(np.float32),
        }
        vth1, vth2, vth3 = 0.5, 0.6, 1.0
    out = {
        "name": "o",
        "op": "linear",
        "inputs": ["sum"],
        "weight": "o.w",
        "bias": "o.b",
        "precision": precision,
    }
    if integer:
        out |= {"neuron": {"v_th": vth3, "reset": "soft"}, "readout": "spike_count"}
    else:
        out |= {"readout": "mean_current"}
    graph = {
        "name": "mlp_net",
        "timesteps": 5,
        "input": {"name": "x", "shape": [64], "quant_scale": 8.0 if integer else None},
        "layers": [
            {"name": "h1", "op": "linear", "weight": "h1.w", "precision": precision,
             "neuron": {"v_th": vth1, "max_spikes": 3, "reset": "soft", "out_scale": 1.0}},
            {"name": "h2", "op": "linear", "weight": "h2.w", "mode": "dense", "precision": precision,
             "neuron": {"v_th": vth2, "reset": "soft"}},
            {"name": "sum", "op": "add", "inputs": ["h1", "h2"], "precision": precision},
            out,
        ],
    }  # fmt: skip
    return graph, params


def chain_net(rng, precision="float32"):
    """A current feeding a linear layer (no neuron between: dense), LIF, readout of spikes."""
    integer = precision == "int8"
    if integer:
        params = {
            "a.w": rng.integers(-20, 40, (48, 64)).astype(np.int8),
            "a.b": rng.integers(0, 9, 48).astype(np.int32),
            "b.w": rng.integers(-10, 20, (32, 48)).astype(np.int8),
            "c.w": rng.integers(-40, 40, (10, 32)).astype(np.int8),
        }
        nb, nc = {"v_th": 400, "beta": 0.75, "reset": "hard"}, {"v_th": 30, "reset": "soft"}
    else:
        params = {
            "a.w": (0.3 * rng.standard_normal((48, 64))).astype(np.float32),
            "a.b": np.full(48, 0.1, np.float32),
            "b.w": (0.3 * rng.standard_normal((32, 48))).astype(np.float32),
            "c.w": rng.standard_normal((10, 32)).astype(np.float32),
        }
        nb, nc = {"v_th": 0.8, "beta": 0.75, "reset": "hard"}, {"v_th": 0.5, "reset": "soft"}
    graph = {
        "name": "chain_net", "timesteps": 4,
        "input": {"name": "x", "shape": [64], "quant_scale": 8.0 if integer else None},
        "layers": [
            {"name": "a", "op": "linear", "weight": "a.w", "bias": "a.b", "precision": precision},
            {"name": "b", "op": "linear", "weight": "b.w", "neuron": nb, "precision": precision},
            {"name": "c", "op": "linear", "weight": "c.w", "neuron": nc, "readout": "spike_count", "precision": precision},
        ],
    }  # fmt: skip
    return graph, params


def maxpool_net(rng, precision="float32"):
    """conv(dense, burst 2, out_scale 0.5 in fp32) -> gated maxpool 2x2 -> conv(event, IF) ->
    gated maxpool 3x3/2 pad 1 (overlapping windows) -> flatten -> linear readout."""
    integer = precision == "int8"
    if integer:
        params = {
            "c1.w": rng.integers(-20, 30, (8, 2, 3, 3)).astype(np.int8),
            "c1.b": rng.integers(-4, 8, 8).astype(np.int32),
            "c2.w": rng.integers(-30, 40, (16, 8, 3, 3)).astype(np.int8),
            "f.w": rng.integers(-50, 50, (10, 64)).astype(np.int8),
        }
        n1, n2 = {"v_th": 120, "max_spikes": 2, "v_init": 0.5}, {"v_th": 60}
    else:
        params = {
            "c1.w": (0.4 * rng.standard_normal((8, 2, 3, 3))).astype(np.float32),
            "c1.b": rng.uniform(0, 0.1, 8).astype(np.float32),
            "c2.w": (0.6 * rng.standard_normal((16, 8, 3, 3))).astype(np.float32),
            "f.w": rng.standard_normal((10, 64)).astype(np.float32),
        }
        n1 = {"v_th": 0.5, "max_spikes": 2, "v_init": 0.5, "out_scale": 0.5}
        n2 = {"v_th": 0.6}
    graph = {
        "name": "maxpool_net",
        "timesteps": 6,
        "input": {"name": "x", "shape": [2, 8, 8], "quant_scale": 16.0 if integer else None},
        "layers": [
            {"name": "c1", "op": "conv2d", "weight": "c1.w", "bias": "c1.b", "padding": 1, "neuron": n1,
             "precision": precision},
            {"name": "m1", "op": "spike_maxpool", "kernel": 2, "precision": precision},
            {"name": "c2", "op": "conv2d", "weight": "c2.w", "padding": 1, "neuron": n2, "precision": precision},
            {"name": "m2", "op": "spike_maxpool", "kernel": 3, "stride": 2, "padding": 1, "precision": precision},
            {"name": "fl", "op": "flatten"},
            {"name": "f", "op": "linear", "weight": "f.w", "readout": "mean_current", "precision": precision},
        ],
    }  # fmt: skip
    return graph, params


def inputs(rng, graph, n=6, integer=False):
    shape = graph["input"]["shape"]
    x = rng.uniform(-0.2, 1.0, (n, *shape)).astype(np.float32)
    return x


# ---------------------------------------------------------------------------------------
# tests


def _compare(graph, params, x, out, integer):
    logits, spikes, membranes = reference(graph, params, x, out["timesteps"], integer)
    if integer:
        np.testing.assert_array_equal(out["logits"], logits.astype(np.float32))
        for name, v in membranes.items():
            np.testing.assert_array_equal(out["membrane"][name], v)
    else:
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4)
        for name, v in membranes.items():
            np.testing.assert_allclose(out["membrane"][name], v, atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(out["predictions"], np.argmax(logits, axis=1))
    for name, s in spikes.items():
        np.testing.assert_array_equal(out["spikes_per_layer"][name], s, err_msg=name)
        assert 0 < s.sum(), f"layer {name} never spikes: the test would be vacuous"


@pytest.mark.parametrize("make", [conv_net, mlp_net, chain_net, maxpool_net])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_runtime_matches_reference(tmp_path, make, precision):
    rng = np.random.default_rng(11)
    graph, params = make(rng, precision)
    x = inputs(rng, graph)
    rt = EventRuntime(compile_artifact(graph, params, tmp_path / "art"))
    out = rt.run(x, record_state=True, batch_size=4)  # a batch of 4 and one of 2
    _compare(graph, params, x, out, precision == "int8")
    single = rt.run(x[:2], batch_size=1)  # batch-1 kernels (channel slices)
    np.testing.assert_array_equal(single["predictions"], out["predictions"][:2])
    for name, s in single["spikes_per_layer"].items():
        np.testing.assert_array_equal(s, out["spikes_per_layer"][name][:2])


def residual_net(rng, precision="float32"):
    """IF linear -> linear without a neuron (a current that changes every step) -> add of that
    current and the IF layer's spikes, with an IF neuron (a residual block) -> linear readout."""
    params = {
        "h1.w": (0.25 * rng.standard_normal((40, 64))).astype(np.float32),
        "c.w": (0.4 * rng.standard_normal((40, 40))).astype(np.float32),
        "o.w": rng.standard_normal((10, 40)).astype(np.float32),
    }
    graph = {
        "name": "residual_net", "timesteps": 5,
        "input": {"name": "x", "shape": [64], "quant_scale": None},
        "layers": [
            {"name": "h1", "op": "linear", "weight": "h1.w", "neuron": {"v_th": 0.5, "reset": "soft"}},
            {"name": "c", "op": "linear", "weight": "c.w"},
            {"name": "r", "op": "add", "inputs": ["c", "h1"], "neuron": {"v_th": 0.6, "reset": "soft"}},
            {"name": "o", "op": "linear", "inputs": ["r"], "weight": "o.w", "readout": "mean_current"},
        ],
    }  # fmt: skip
    return graph, params


@pytest.mark.parametrize(
    "make,precision",
    [(conv_net, "float32"), (conv_net, "int8"), (mlp_net, "float32"), (mlp_net, "int8"),
     (maxpool_net, "float32"), (maxpool_net, "int8"), (residual_net, "float32")],
)  # fmt: skip
def test_layer_major_order_equals_step_major(tmp_path, make, precision, monkeypatch):
    """Layer-major order (each layer runs a block of steps before the next) gives the results
    of the step-major order bit for bit: logits, spikes, membranes; at batch 1 and 4, with
    blocks of 2 steps (T = 5 or 6: blocks of 2, 2 and 1 or 2); mlp_net has a dense layer whose
    BLAS product runs per step between kernel calls, maxpool_net gated pooling state,
    residual_net a current that another kernel reads at the same step."""
    monkeypatch.setattr(steps, "LAYER_MAJOR_STEPS", 2)
    monkeypatch.setattr(steps, "LAYER_MAJOR_MIN_WEIGHT_BYTES", 0)  # the artifact gets its kernels
    rng = np.random.default_rng(4)
    graph, params = make(rng, precision)
    x = inputs(rng, graph)
    art = compile_artifact(graph, params, tmp_path / "art")
    has_kernels = "batch1_layer_major" in json.loads((art / "graph.json").read_text())["step_kernels"]
    assert has_kernels == (make is not mlp_net)  # mlp_net's dense layer makes a host call per step
    step = EventRuntime(art, order="step")
    in_library, per_call = EventRuntime(art, order="layer"), EventRuntime(art, order="layer", fused=False)
    assert in_library.layer_major(1) and not step.layer_major(1)
    for batch_size in (1, 4):
        a = step.run(x, batch_size=batch_size, record_state=True)
        for other in (in_library, per_call):
            b = other.run(x, batch_size=batch_size, record_state=True)
            np.testing.assert_array_equal(a["logits"], b["logits"])
            for key in ("spikes_per_layer", "membrane"):
                assert a[key].keys() == b[key].keys()
                for name in a[key]:
                    np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key} {name}")
    assert bool(in_library._by_batch[1].block_calls) == has_kernels and not per_call._by_batch[1].block_calls
    assert sum(s.sum() for s in a["spikes_per_layer"].values()) > 0


def test_block_mode_over_a_block_of_steps_equals_step_major(tmp_path, monkeypatch):
    """Mode BLOCK (a linear layer's batch-1 kernels over a block of steps, ``LayerKernel.steps``)
    in layer-major order equals the step-major event kernels: logits, spikes, membranes; a
    neuron layer, a current that an add reads at the same step, and the readout, in blocks of
    2 steps (T = 5: 2, 2 and 1).  Weights are multiples of 1/8 (fp32 sums exact in any order;
    the int8 kernels are compared in test_tvm_tiled.py)."""
    monkeypatch.setattr(steps, "LAYER_MAJOR_STEPS", 2)
    monkeypatch.setattr(steps, "LAYER_MAJOR_MIN_WEIGHT_BYTES", 0)
    rng = np.random.default_rng(4)
    graph, params = residual_net(rng)
    params = {k: (np.round(v * 8) / 8).astype(np.float32) for k, v in params.items()}
    h2 = {"name": "h2", "op": "linear", "inputs": ["h1"], "weight": "h2.w", "neuron": {"v_th": 0.5, "reset": "soft"}}
    params["h2.w"] = (rng.integers(-3, 4, (40, 40)) / 8).astype(np.float32)
    graph["layers"].insert(1, h2)
    graph["layers"][2]["inputs"] = ["h2"]  # c now reads h2's spikes (an event list)
    blocked = ("h2", "c", "o")
    for layer in graph["layers"]:
        if layer["name"] in blocked:
            layer["mode_batch1"] = "block"
    art = compile_artifact(graph, params, tmp_path / "art")
    step, layer = EventRuntime(art, order="step"), EventRuntime(art, order="layer")
    plans = {p.name: p for p in layer.plans}
    assert all(plans[n].block is not None and plans[n].block.steps for n in blocked)
    calls = [c for k in layer._layer_major_kernels for c in k.calls]
    assert {c.layer for c in calls if c.kernel.steps} == set(blocked)
    x = inputs(rng, graph)
    a = step.run(x, batch_size=1, record_state=True)
    b = layer.run(x, batch_size=1, record_state=True)
    assert layer._by_batch[1].block_calls
    np.testing.assert_array_equal(a["logits"], b["logits"])
    for key in ("spikes_per_layer", "membrane"):
        for name in a[key]:
            np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key} {name}")
    assert all(a["spikes_per_layer"][n].sum() > 0 for n in ("h1", "h2", "r"))
    # the step cut into several layer-major step kernels (a block kernel's per-step buffers then
    # cross from one step kernel to the next): the same results
    split = EventRuntime(compile_artifact(graph, params, tmp_path / "split", max_step_params=8), order="layer")
    assert len(split._layer_major_kernels) > 2
    c = split.run(x, batch_size=1, record_state=True)
    np.testing.assert_array_equal(a["logits"], c["logits"])
    for name in a["membrane"]:
        np.testing.assert_array_equal(a["membrane"][name], c["membrane"][name], err_msg=name)
    # without layer-major step kernels (weights under the threshold) no kernel calls the block
    # kernels: the artifact holds none, and forced layer-major order runs the event kernels
    monkeypatch.setattr(steps, "LAYER_MAJOR_MIN_WEIGHT_BYTES", 1 << 40)
    small = compile_artifact(graph, params, tmp_path / "small")
    listed = json.loads((small / "graph.json").read_text())
    names = {k for layer in listed["layers"] for k in layer["kernels"]["batch1"]}
    assert not names & {plans[n].block.name for n in blocked}
    c = EventRuntime(small, order="layer").run(x, batch_size=1, record_state=True)
    np.testing.assert_array_equal(a["logits"], c["logits"])


def test_layer_major_kernels_in_graph_json_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "LAYER_MAJOR_MIN_WEIGHT_BYTES", 0)
    graph, params = residual_net(np.random.default_rng(4))
    art = compile_artifact(graph, params, tmp_path / "art")
    raw = json.loads((art / "graph.json").read_text())
    assert raw["layer_major_steps"] == steps.LAYER_MAJOR_STEPS and raw["step_kernels"]["batch1_layer_major"]
    without = dict(raw)
    del without["layer_major_steps"]
    (art / "graph.json").write_text(json.dumps(without))
    with pytest.raises(InputFileError, match="layer_major_steps 0 does not match"):
        EventRuntime(art)
    renamed = json.loads(json.dumps(raw))
    renamed["step_kernels"]["batch1_layer_major"] = ["snnc_step_000000000000"]
    (art / "graph.json").write_text(json.dumps(renamed))
    with pytest.raises(InputFileError, match="batch1_layer_major step kernels differ"):
        EventRuntime(art)


def test_auto_order_is_layer_major_at_batch_1_for_large_weights(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    graph, params = conv_net(rng)
    art = compile_artifact(graph, params, tmp_path / "art")
    small = EventRuntime(art)
    assert small.weight_bytes > 0 and not small.layer_major(1)
    monkeypatch.setattr(steps, "LAYER_MAJOR_MIN_WEIGHT_BYTES", small.weight_bytes - 1)
    assert small.layer_major(1) and not small.layer_major(4)
    with pytest.raises(TargetError, match="order must be"):
        EventRuntime(art, order="layers")


def test_artifact_files_and_graph(tmp_path):
    rng = np.random.default_rng(1)
    graph, params = conv_net(rng)
    d = compile_artifact(graph, params, tmp_path / "art")
    g = json.loads((d / "graph.json").read_text())
    assert g["format"] == "snnc-tvm-events" and g["version"] == 1
    by_name = {r["name"]: r for r in g["layers"]}
    assert by_name["c1"]["mode"] == "dense"  # reads the analog input
    assert by_name["f1"]["mode"] == "event"
    assert by_name["f1"]["source"] == {"weight": "f1.w", "bias": "f1.b"}
    assert by_name["c2"]["mode"] == "event"
    for rec in g["layers"]:  # every CPU kernel has a serial (or channel-sliced) batch-1 variant
        kernels = rec.get("kernels", {"any_batch": [], "batch1": []})
        assert len(kernels["any_batch"]) == len(kernels["batch1"]) == (rec["op"] != "flatten")
    assert by_name["c1"]["shape"] == [16, 8, 8] and by_name["fl"]["shape"] == [512]


def test_errors_name_the_layer(tmp_path):
    rng = np.random.default_rng(2)
    graph, params = mlp_net(rng)
    bad = json.loads(json.dumps(graph))
    bad["layers"][1]["weight"] = "h2.wieght"
    with pytest.raises(
        TargetError, match="layer 'h2': weight parameter 'h2.wieght' is missing; did you mean 'h2.w'"
    ):
        compile_artifact(bad, params, tmp_path / "a")
    bad = json.loads(json.dumps(graph))
    bad["layers"][0]["neuron"]["reset"] = "sofft"
    with pytest.raises(TargetError, match="unknown reset 'sofft'.*did you mean 'soft'"):
        compile_artifact(bad, params, tmp_path / "b")
    graph8, params8 = mlp_net(rng, "int8")
    params8 = dict(params8, **{"h2.w": params8["h2.w"].astype(np.float32) + 0.5})
    with pytest.raises(UnsupportedError, match="layer 'h2': weight must hold integers"):
        compile_artifact(graph8, params8, tmp_path / "c")
    graph8["input"]["quant_scale"] = None
    with pytest.raises(TargetError, match="input.quant_scale"):
        compile_artifact(graph8, params8, tmp_path / "d")


def test_layer_graph_is_typed_and_round_trips(tmp_path):
    """The dict form parses into frozen specs (defaults filled, shapes inferred); graph.json
    holds the same graph, with the modes as they run."""
    from snnc.backends.tvm.layers import Artifact, LayerOp, Mode
    from snnc.ir.ops import ReadoutMode, Reset

    rng = np.random.default_rng(5)
    graph, params = conv_net(rng)
    typed = parse_layer_graph(graph, {k: v.shape for k, v in params.items()})
    c1, p1, fl, f1 = (next(x for x in typed.layers if x.name == n) for n in ("c1", "p1", "fl", "f1"))
    assert c1.op is LayerOp.CONV2D and c1.shape == (16, 8, 8) and c1.geometry.kernel == (3, 3)
    assert c1.neuron is not None and c1.neuron.reset is Reset.SOFT and c1.neuron.v_th == "c1.vth"
    assert p1.geometry.stride == (2, 2) and fl.shape == (512,) and f1.inputs == ("fl",)
    assert typed.output == "f2" and typed.layers[-1].readout is ReadoutMode.MEAN_CURRENT
    with pytest.raises(AttributeError):
        c1.name = "other"  # type: ignore[misc]
    d = compile_artifact(typed, params, tmp_path / "art")
    art = Artifact.read(d / "graph.json")
    assert isinstance(art.graph, LayerGraph)
    assert [x.name for x in art.graph.layers] == [x.name for x in typed.layers]
    assert next(x for x in art.graph.layers if x.name == "c1").mode is Mode.DENSE  # reads the input
    assert art.to_json() == json.loads((d / "graph.json").read_text())


def test_corrupted_graph_json_is_an_input_file_error(tmp_path):
    rng = np.random.default_rng(6)
    graph, params = mlp_net(rng)
    d = compile_artifact(graph, params, tmp_path / "art")
    good = json.loads((d / "graph.json").read_text())

    def broken(edit) -> str:
        g = json.loads(json.dumps(good))
        edit(g)
        (d / "graph.json").write_text(json.dumps(g))
        with pytest.raises(InputFileError) as e:
            EventRuntime(d)
        return str(e.value)

    assert "format 'snnc-tvm-events' v2" in broken(lambda g: g.update(version=2))
    assert "layer 'h1': unknown op 'lienar'" in broken(lambda g: g["layers"][0].update(op="lienar"))
    assert "layer 'h1': shape must be a list of integers" in broken(lambda g: g["layers"][0].pop("shape"))
    assert "input 'h9' is not defined" in broken(lambda g: g["layers"][2].update(inputs=["h1", "h9"]))
    assert "layer 'h2': unknown reset" in broken(lambda g: g["layers"][1]["neuron"].update(reset=3))
    assert "kernels.any_batch must be a list" in broken(
        lambda g: g["layers"][0]["kernels"].update(any_batch=1)
    )
    assert "graph: 'layers' must be a list" in broken(lambda g: g.update(layers={}))
    assert "no parameter for ['v_th']" in broken(lambda g: g["layers"][1]["params"].pop("v_th"))
    (d / "graph.json").write_text("{not json")
    with pytest.raises(InputFileError, match="cannot read the layer graph"):
        EventRuntime(d)


def test_runs_without_torch(tmp_path):
    """The artifact loads and runs in a fresh interpreter where ``import torch`` fails."""
    rng = np.random.default_rng(3)
    graph, params = conv_net(rng)
    d = compile_artifact(graph, params, tmp_path / "art")
    x = inputs(rng, graph, n=3)
    np.save(tmp_path / "x.npy", x)
    expected = EventRuntime(d).run(x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        from snnc.backends.tvm.runtime import EventRuntime
        out = EventRuntime({str(d)!r}).run(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "logits.npy")!r}, out["logits"])
        assert not any(m == "torch" or m.startswith("torch.") for m, v in sys.modules.items() if v is not None)
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected["logits"])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="building CUDA kernels needs nvcc")
def test_cuda_artifact(tmp_path):
    """The CUDA artifact builds without a GPU; with one it must agree with the CPU artifact,
    without one the runtime refuses it by name."""
    from snnc.backends.tvm import kernel_cache

    rng = np.random.default_rng(4)
    graph, params = mlp_net(rng)
    d = compile_artifact(graph, params, tmp_path / "cuda", target="cuda")
    assert json.loads((d / "graph.json").read_text())["target"] == "cuda"
    if not kernel_cache.cuda_available():
        with pytest.raises(TargetError, match="compiled for CUDA"):
            EventRuntime(d)
        return
    x = inputs(rng, graph)
    gpu = EventRuntime(d).run(x)
    cpu = EventRuntime(compile_artifact(graph, params, tmp_path / "cpu")).run(x)
    np.testing.assert_array_equal(gpu["predictions"], cpu["predictions"])
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], rtol=1e-4, atol=1e-4)


def test_kernels_compile_on_a_deep_stack():
    """TVM's passes recurse per nested statement; a step kernel with ~2,000 buffers (densenet121)
    overflowed the main thread's stack.  Compilation runs on its own thread with a deep stack,
    whose result and errors come back to the caller, and the process-wide default is restored."""
    import threading

    from snnc.backends.tvm import kernel_cache

    before = threading.stack_size()
    assert kernel_cache._on_a_deep_stack(lambda: threading.current_thread().name) == "snnc-tvm-compile"
    with pytest.raises(ZeroDivisionError):
        kernel_cache._on_a_deep_stack(lambda: 1 // 0)
    assert threading.stack_size() == before
