"""Layer-major execution (snnc/backends/torch/layer_major.py) against the time-major loop.

Where every float is exact (dyadic weights, inputs and thresholds: every sum is exact in any
order), the two runs must agree bit for bit: logits, spikes, SOPs, MACs.  On the digits models
(float weights) the convolutions may round differently in another layout and batch, so they must
agree closely.  Also: which runs refuse layer-major (and say why), chunking, recording.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conversion_util import context, digits_model, digits_split, graph_from_text, run

from snnc.backends.torch import layer_major
from snnc.backends.torch.simulator import GraphModule
from snnc.ir import Graph

T = 6
N = 16  # a power of two: the per-sample means (count / N) stay exact


def dyadic(g: Graph, seed: int = 0) -> Graph:
    """Every parameter rounded to a multiple of 1/8 (weights) or 1/16 (biases); scales and
    thresholds to a multiple of 1/4, at least 1/4."""
    rng = np.random.default_rng(seed)
    for key, value in g.params.items():
        if key.endswith(("w", "weight")):
            g.params[key] = (rng.integers(-4, 5, value.shape) / 8).astype(np.float32)
        elif key.endswith(("b", "bias")):
            g.params[key] = (rng.integers(-2, 3, value.shape) / 16).astype(np.float32)
        else:
            g.params[key] = np.maximum(np.round(value * 4) / 4, 0.25).astype(np.float32)
    return g


def inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).integers(0, 17, (N, *shape)) / 16).astype(np.float32))


def both(g: Graph, x: torch.Tensor, steps: int = T, record: tuple[str, ...] = ()) -> tuple[dict, dict]:
    m = GraphModule(g)
    with torch.no_grad():
        old = m.run_snn(x, steps, record=record, layer_major=False)
        new = m.run_snn(x, steps, record=record)
    assert old["execution"] == "time-major (asked for)" and new["execution"] == "layer-major"
    return old, new


def assert_same(old: dict, new: dict) -> None:
    assert torch.equal(old["logits"], new["logits"])
    assert torch.equal(old["steps_used"], new["steps_used"])
    for key in ("spikes", "sops", "macs", "hoisted_macs"):
        assert old[key].keys() == new[key].keys()
        for k in old[key]:
            assert float(old[key][k]) == float(new[key][k]), (key, k)


STRUCTURE = """
graph @structure(%x: analog[2,8,8]) {
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.w", bias = "c1.b"} : analog[4,8,8]
  %n1 = neuron(%c1) {v_init = 0.5, negative = "rectified"} : spike[4,8,8]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.w", bias = "c2.b"} : analog[4,8,8]
  %s1 = scale(%n1) params {scale = "s1.scale"} : analog[4,8,8]
  %a = add(%c2, %s1) : analog[4,8,8]
  %n2 = neuron(%a) {v_th = 0.5, reset = "hard", strict = true} : spike[4,8,8]
  %cat = concat(%n1, %n2) {axis = 0} : spike[8,8,8]
  %p1 = spike_maxpool(%cat) {kernel = [2, 2], stride = [2, 2]} : spike[8,4,4]
  %p2 = spike_count_maxpool(%cat) {kernel = [2, 2], stride = [2, 2]} : spike[8,4,4]
  %ap = avgpool2d(%p1) {kernel = [2, 2], stride = [2, 2]} : analog[8,2,2]
  %sp = sumpool2d(%p2) {kernel = [2, 2], stride = [2, 2]} : analog[8,2,2]
  %n3 = neuron(%ap) {model = "lif", beta = 0.5, negative = "signed"} : spike[8,2,2]
  %n4 = neuron(%sp) {max_spikes = 3, out_scale = 0.5} : burst<3>[8,2,2]
  %cat2 = concat(%n3, %n4) {axis = 0} : burst<3>[16,2,2]
  %f = flatten(%cat2) : burst<3>[64]
  %l = linear(%f) params {weight = "l.w", bias = "l.b"} : analog[5]
  %r = readout(%l) : analog[5]
  output %r
}
"""


def test_residual_concat_and_every_pooling_give_the_same_spikes_bit_for_bit() -> None:
    g = dyadic(graph_from_text(STRUCTURE))
    old, new = both(g, inputs((2, 8, 8)), record=("n1", "a", "l"))
    assert_same(old, new)
    for v in ("n1", "a", "l"):
        assert torch.equal(old["recorded"][v], new["recorded"][v])
    assert float(new["sops"]["c2"]) > 0 and float(new["spikes"]["n4"]) > 0  # the net does spike
    # the first conv reads the direct-coded input: T MACs as written, one when hoisted
    assert float(new["hoisted_macs"]["c1"]) * T == float(new["macs"]["c1"])


NEURON_NET = """
graph @neurons(%x: analog[3,6,6]) {{
  %e = encode(%x) : analog[3,6,6]
  %c1 = conv2d(%e) {{padding = [1, 1]}} params {{weight = "c1.w", bias = "c1.b"}} : analog[4,6,6]
  %n1 = neuron(%c1) {{{attrs}}} : {kind}[4,6,6]
  %c2 = conv2d(%n1) {{padding = [1, 1]}} params {{weight = "c2.w", bias = "c2.b"}} : analog[4,6,6]
  %n2 = neuron(%c2) {{{attrs}}} : {kind}[4,6,6]
  %f = flatten(%n2) : {kind}[144]
  %l = linear(%f) params {{weight = "l.w"}} : analog[3]
  %r = readout(%l) : analog[3]
  output %r
}}
"""


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ("v_init = 0.5", "spike"),  # the default of a converted SNN
        ("v_init = 0.5, negative = \"rectified\"", "spike"),
        ("negative = \"signed\", v_th = 0.75", "spike"),
        ("reset = \"hard\", v_reset = -0.25, strict = true", "spike"),
        ("reset = \"none\"", "spike"),
        ("model = \"lif\", beta = 0.5, out_scale = 0.5", "spike"),
        ("max_spikes = 3, negative = \"rectified\"", "burst<3>"),  # the general neuron rule
        ("model = \"cuba\", alpha = 0.5, beta = 0.75", "spike"),
        ("reset_delay = true, strict = true", "spike"),
        ("leak = \"tau\", tau = 2.0, reset = \"hard\"", "spike"),
    ],
)
def test_every_neuron_variant_gives_the_same_spikes_bit_for_bit(attrs: str, kind: str) -> None:
    g = dyadic(graph_from_text(NEURON_NET.format(attrs=attrs, kind=kind)), seed=3)
    old, new = both(g, inputs((3, 6, 6)))
    assert_same(old, new)
    assert float(new["spikes"]["n2"]) > 0


def test_per_channel_neuron_parameters() -> None:
    text = NEURON_NET.format(attrs="v_init = 0.5", kind="spike").replace(
        '%n1 = neuron(%c1) {v_init = 0.5}',
        '%n1 = neuron(%c1) {v_init = 0.5} params {v_th = "n1.v_th", out_scale = "n1.out_scale", beta = "n1.beta"}')
    g = dyadic(graph_from_text(text), seed=4)
    g.params["n1.beta"] = np.array([1.0, 0.5, 0.75, 1.0], dtype=np.float32)
    old, new = both(g, inputs((3, 6, 6)))
    assert_same(old, new)


def test_chunks_give_the_same_run(monkeypatch) -> None:
    g = dyadic(graph_from_text(STRUCTURE))
    x = inputs((2, 8, 8))
    m = GraphModule(g)
    with torch.no_grad():
        whole = m.run_snn(x, T, record=("n2",))
        monkeypatch.setattr(layer_major, "CHUNK_BYTES", 4 * T * 8 * 8 * 8 * 5)  # 5 samples a chunk (concat: 8x8x8)
        assert layer_major.chunk_samples(g, T) == 5
        chunked = m.run_snn(x, T, record=("n2",))
    assert_same(whole, chunked)
    assert torch.equal(whole["recorded"]["n2"], chunked["recorded"]["n2"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (('%r = readout(%l) : analog[5]',
          '%r = readout(%l) {exit_rule = "confidence"} params {exit_thresholds = "r.exit"} : analog[5]'),
         "readout %r has an early-exit rule"),
        (('%e = encode(%x) : analog[2,8,8]', '%e = encode(%x) {scheme = "rate"} : spike[2,8,8]'),
         "encode %e is rate-coded (its rule reads t)"),
    ],
)
def test_what_needs_the_step_order_runs_time_major_and_says_why(change: tuple[str, str], reason: str) -> None:
    g = graph_from_text(STRUCTURE.replace(*change))
    assert layer_major.layer_major_refusal(g) == reason
    m = GraphModule(g)
    with torch.no_grad():
        out = m.run_snn(inputs((2, 8, 8)), T)
    assert out["execution"] == f"time-major ({reason})"


def test_surrogate_snapshots_and_no_hoisting_run_time_major() -> None:
    g = graph_from_text(STRUCTURE)
    assert layer_major.layer_major_refusal(g) is None
    assert layer_major.layer_major_refusal(g, surrogate=True) is not None
    assert layer_major.layer_major_refusal(g, snapshots={2, 4}) is not None
    assert layer_major.layer_major_refusal(g, hoist=False) is not None


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_digits_models_agree_closely(arch: str) -> None:
    """Float weights: a spike may flip where a membrane lands within rounding of its threshold."""
    x, y = digits_split("test")
    snn = run("ann-to-snn", digits_model(arch), context(x[:256], y[:256]))
    old, new = both(snn, torch.from_numpy(x[:128]), steps=8)
    agree = (old["logits"].argmax(1) == new["logits"].argmax(1)).float().mean().item()
    assert agree >= 0.97
    for k, v in old["spikes"].items():
        assert float(new["spikes"][k]) == pytest.approx(float(v), rel=0.01, abs=0.5)
    for k, v in old["sops"].items():
        assert float(new["sops"][k]) == pytest.approx(float(v), rel=0.01, abs=1.0)
    assert {k: float(v) for k, v in old["macs"].items()} == pytest.approx({k: float(v) for k, v in new["macs"].items()})
