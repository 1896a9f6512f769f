"""The Loihi target: the chip's run loop, spike for spike against the quantised graph; the digits CNN and
MLP within 0.3 points of the float SNN; network.net read back with h5py and re-simulated; the CLI end to
end, --board and --target-config; a residual graph that netx cannot express."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner, Result
from conversion_util import DIGITS, SIM, context, digits_model, digits_split, graph_from_text, run

from snnc.backends.loihi.bitacc import LayerKind, LifParams, QLayer, simulate
from snnc.backends.loihi.lower import InputCoding, legality, lower, net_from_layers
from snnc.backends.loihi.mapping import Mapping
from snnc.backends.loihi.netx import read_netx
from snnc.backends.loihi.target import (
    LoihiTarget,
    encode_input,
    run_loihi_artifact,
    run_net,
    simulate_chip,
)
from snnc.cli import main
from snnc.ir import load_graph
from snnc.ir import ops as O
from snnc.targets import TargetOptions

CONVERT = (
    "canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=hard,v-init=0.0},"
    "loihi-thresholds,fold-thresholds,encode-input{scheme=direct},loihi-legalize"
)
T = 8


def _invoke(args: list) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


# ----------------------------------------------------------------------------------------------------
# the chip's run loop


def test_chip_loop_without_resets_is_bitacc_simulate() -> None:
    rng = np.random.default_rng(0)
    layers = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(2, 6, 6), message_bits=8),
        QLayer(name="c", kind=LayerKind.CONV, shape=(4, 6, 6), weight=rng.integers(-60, 60, (4, 2, 3, 3)) * 2,
               padding=(1, 1),
               lif=LifParams(du=4095, dv=0, vth_mant=300, bias_mant=rng.integers(-20, 20, (4, 1, 1)), bias_exp=6)),
        QLayer(name="p", kind=LayerKind.POOL, shape=(4, 3, 3), weight=100, kernel=(2, 2), stride=(2, 2),
               lif=LifParams(du=4095, dv=500, vth_mant=90)),
        QLayer(name="f", kind=LayerKind.FLATTEN, shape=(36,)),
        QLayer(name="d", kind=LayerKind.DENSE, shape=(7,), weight=rng.integers(-128, 127, (7, 36)) * 2,
               lif=LifParams(du=3000, dv=200, vth_mant=150, bias_mant=rng.integers(-5, 5, 7), bias_exp=6)),
    ]
    x = rng.integers(0, 60, (5, 4, 2, 6, 6))
    want = simulate(layers, x, 9)
    got, voltages = simulate_chip(layers, x, 9)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert set(voltages) == {"c", "p", "d"}


SMALL = """
graph @s(%x: analog[1,6,6]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[1,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %m = spike_maxpool(%n) : spike[4,3,3]
  %f = flatten(%m) : spike[36]
  %l = linear(%f) params {weight = "l.weight", bias = "l.bias"} : analog[12]
  %n2 = neuron(%l) {reset = "hard", v_th = 0.3} : spike[12]
  %o = linear(%n2) params {weight = "o.weight", bias = "o.bias"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def test_chip_runs_the_quantised_graph_spike_for_spike() -> None:
    """Inputs on the graded grid: every layer, shifted by its depth and reset when its first input
    arrives, spikes exactly as the torch simulator runs the quantised graph (counts per neuron), and
    the readout voltage gives the same logits."""
    g = graph_from_text(SMALL, seed=8)
    x = (np.random.default_rng(1).integers(0, 17, (40, 1, 6, 6)) / 16).astype(np.float32)
    ctx = context(x, timesteps=6)
    q = run("loihi-legalize,loihi-quantize,loihi-map", g, ctx)
    net = lower(q)
    assert net.latency == 4 and [layer.name for layer in net.layers] == ["x", "n", "m_or", "f", "n2", "o"]
    chip = run_net(net, x, 6, keep=True)
    names = ["n", "m_or", "n2"]
    ref = SIM.run_snn(q, x, 6, record=names)
    for name, depth in zip(names, (1, 2, 3), strict=True):
        counts = chip.outputs[name][:, depth : depth + 6].sum(axis=1)
        np.testing.assert_array_equal(counts, np.rint(ref.recorded[name] * 6), err_msg=name)
    np.testing.assert_allclose(chip.logits, ref.logits, rtol=1e-6, atol=1e-6)
    assert not chip.readout_fired


def test_input_coding_on_the_host() -> None:
    x = np.array([[0.5, 1.0, -0.25, 3.0]])
    spikes = encode_input(InputCoding(scheme=O.Scheme.DIRECT, levels=64.0, message_bits=8), x, 3)
    np.testing.assert_array_equal(spikes[0], [[32, 64, -16, 127]] * 3)  # saturated at the 8-bit payload
    ttfs = encode_input(InputCoding(scheme=O.Scheme.TTFS), np.array([[1.0, 0.5, 0.0]]), 3)
    np.testing.assert_array_equal(ttfs[0].T, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


# ----------------------------------------------------------------------------------------------------
# the digits models: quantised and mapped within 0.3 points of the float SNN


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_digits_within_0_3_points_of_the_float_snn(arch: str) -> None:
    x, y = digits_split("train")
    tx, ty = digits_split("test")
    ctx = context(x, y, timesteps=T, batch_size=256)
    float_snn = run(CONVERT, digits_model(arch), ctx)
    quantised = run("loihi-quantize,loihi-map", float_snn, ctx)
    float_acc = float((SIM.run_snn(float_snn, tx, T).predictions == ty).mean())
    chip = run_net(lower(quantised), tx, T)
    chip_acc = float((chip.predictions == ty).mean())
    print(f"{arch}: float SNN {float_acc:.4f}, Loihi bit-accurate {chip_acc:.4f} (T = {T}, {len(ty)} test images)")
    assert abs(chip_acc - float_acc) <= 0.003 + 1e-9
    assert float_acc >= 0.96
    assert not quantised.analyses.get(Mapping).violations()


# ----------------------------------------------------------------------------------------------------
# the CLI end to end, and network.net read back


@pytest.fixture(scope="module")
def cnn_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loihi") / "out"
    result = _ok(_invoke(["compile", DIGITS / "cnn.pt2", "--calib", DIGITS / "train.npz", "--target", "loihi",
                          "-o", out]))
    assert "runs as OR pooling" in result.stderr
    return out


def test_cli_writes_the_loihi_artifact(cnn_out: Path) -> None:
    names = {p.name for p in cnn_out.iterdir()}
    assert {"network.net", "mapping.json", "report.json", "core_utilisation.png", "graph.snnir"} <= names
    assert (cnn_out / "core_utilisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((cnn_out / "report.json").read_text())
    assert report["pipeline"].startswith("canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=hard")
    assert report["pipeline"].endswith("loihi-legalize,loihi-quantize,loihi-map,count-ops")
    tr = report["target_report"]
    for key in ("cores", "chips", "synaptic_memory_bits", "input_axons", "output_axons", "spikes_per_inference",
                "synaptic_ops_per_inference", "energy", "time"):
        assert key in tr, key
    assert tr["cores"] >= tr["cores_lower_bound"] >= 1 and tr["chips"] == 1
    assert set(tr["energy"]) == {"davies2018", "sanafe"} and tr["time"]["davies2018"]["time_ns_per_step"] > 0
    assert report["energy_pj"]["loihi"] == tr["energy"]["davies2018"]["energy_pj_per_inference"] > 0
    acc = tr["accuracy"]
    assert {"soft_reset_snn", "hard_reset_snn", "hard_reset_cost_points", "quantised_snn",
            "loihi_bit_accurate"} <= set(acc)
    assert tr["measured"]["agreement_with_quantised_snn"] == 1.0
    mapping = json.loads((cnn_out / "mapping.json").read_text())
    assert mapping["cores_used"] == tr["cores"] and [layer["depth"] for layer in mapping["layers"]] == [0, 1, 2, 3, 3, 4]


def test_network_net_read_back_runs_spike_for_spike(cnn_out: Path) -> None:
    """Plain h5py: the file is a chain input, conv, conv (OR pooling), conv, flatten, dense; the layers
    rebuilt from the file alone simulate exactly as snnc's Loihi simulator runs the artifact."""
    with h5py.File(cnn_out / "network.net", "r") as f:
        kinds = [f["layer"][str(i)]["type"][0].decode() for i in range(len(f["layer"]))]
    assert kinds == ["input", "conv", "conv", "conv", "flatten", "dense"]
    report = json.loads((cnn_out / "report.json").read_text())
    tx, ty = digits_split("test")
    tx = tx[:120]
    ours = lower(load_graph(cnn_out))
    coding = InputCoding(scheme=O.Scheme.DIRECT, levels=report["target_report"]["input"]["levels"],
                         message_bits=report["target_report"]["netx"]["input_message_bits"])
    layers = read_netx(cnn_out / "network.net")
    layers[0].message_bits = coding.message_bits  # graded input: a netx loading argument, not in the file
    theirs = net_from_layers(layers, coding)
    a = run_net(ours, tx, T, keep=True)
    b = run_net(theirs, tx, T, keep=True)
    for la, lb in zip(ours.layers, theirs.layers, strict=True):
        np.testing.assert_array_equal(a.outputs[la.name], b.outputs[lb.name], err_msg=la.name)
    np.testing.assert_array_equal(a.voltage, b.voltage)
    np.testing.assert_array_equal(b.predictions, run_loihi_artifact(cnn_out, tx, T)["predictions"])


def test_snnc_run_on_the_loihi_backend(cnn_out: Path, tmp_path: Path) -> None:
    tx, ty = digits_split("test")
    data = tmp_path / "t.npz"
    np.savez(data, x=tx[:60], y=ty[:60])
    result = _ok(_invoke(["run", cnn_out, "--data", data, "--backend", "loihi"]))
    assert result.stdout.startswith("60 samples, accuracy ")


# ----------------------------------------------------------------------------------------------------
# --board and --target-config


@pytest.fixture(scope="module")
def small_calib(tmp_path_factory) -> Path:
    x, y = digits_split("train")
    path = tmp_path_factory.mktemp("calib") / "small.npz"
    np.savez(path, x=x[:128], y=y[:128])
    return path


def test_board_too_small_exits_2_with_what_the_model_needs(tmp_path: Path, small_calib: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[topology]\ncores_per_chip = 1\n\n[core]\nneurons = 128\n\n[boards]\ntiny = 1\n")
    out = tmp_path / "out"
    args = ["compile", DIGITS / "mlp.pt2", "--calib", small_calib, "--target", "loihi", "--target-config", cfg]
    result = _invoke(args + ["--board", "tiny", "-o", out])
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("snnc: error: the model needs ") and " loihi2 chips (1 cores each); board 'tiny' has " \
        "1 chip (1 cores)" in line, line
    assert not out.exists()
    # the same override without --board: it compiles, one core per chip
    _ok(_invoke(args + ["-o", out]))
    mapping = json.loads((out / "mapping.json").read_text())
    assert mapping["cores_per_chip"] == 1 and mapping["capacity"]["neurons"] == 128
    assert mapping["chips_used"] == mapping["cores_used"] >= 2


def test_unknown_board_fails_before_the_pipeline() -> None:
    with pytest.raises(Exception, match=r"unknown board 'kapoho-bay' for loihi2"):
        LoihiTarget("loihi", TargetOptions(board="kapoho-bay"))


# ----------------------------------------------------------------------------------------------------
# what netx cannot express, and what the target refuses

RESIDUAL = """
graph @res(%x: analog[1,6,6]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[1,6,6]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[4,6,6]
  %n = neuron(%c) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %c2 = conv2d(%n) {padding = [1, 1]} params {weight = "c2.weight"} : analog[4,6,6]
  %n2 = neuron(%c2) {reset = "hard", v_th = 0.4} : spike[4,6,6]
  %a = add(%n, %n2) : analog[4,6,6]
  %f = flatten(%a) : analog[144]
  %o = linear(%f) params {weight = "o.weight"} : analog[3]
  %r = readout(%o) : analog[3]
  output %r
}
"""


def test_residual_graph_maps_but_skips_network_net(tmp_path: Path) -> None:
    g = graph_from_text(RESIDUAL, seed=9)
    x = np.random.default_rng(2).random((16, 1, 6, 6)).astype(np.float32)
    ctx = context(x, timesteps=4)
    q = run("loihi-legalize,loihi-quantize,loihi-map", g, ctx)
    report = LoihiTarget("loihi").compile(q, tmp_path, ctx)
    assert not (tmp_path / "network.net").exists() and (tmp_path / "mapping.json").exists()
    assert report["netx"]["written"] is False and "residual add" in report["netx"]["reason"]
    assert any(n.startswith("loihi: network.net not written: layer 'a' is a residual add") for n in ctx.notes)
    assert report["cores"] >= 1 and report["measured"]["spikes_per_inference"] > 0


def test_legality_names_the_pass_that_fixes_it() -> None:
    g = graph_from_text(SMALL, seed=8)
    problems = legality(g)
    assert not any("resets by subtracting v_th" in p for p in problems)
    assert "neuron %n: fires on v >= v_th (strict=false): not supported by the loihi target; run loihi-legalize" \
        in problems
    assert "spike_maxpool %m: no Loihi layer for this op; run loihi-legalize" in problems
    legal = run("loihi-legalize", g, context(np.zeros((2, 1, 6, 6), np.float32)))
    assert "conv2d %c: weight is not integer-valued; run loihi-quantize (the ann-to-loihi pipeline does)" in \
        legality(legal)
