"""loihi-thresholds: the hard-reset quantiser, and thresholds / output scales re-tuned for it."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, digits_model, digits_split, graph_from_text, run, uniform_inputs
from loihi_util import assert_spike_for_spike

from snnc.backends.loihi.passes.loihi_thresholds import hard_reset_counts
from snnc.pass_manager import PassManager, PassOptionError, PipelineFailure
from snnc.passes._neurons import neuron_vector
from snnc.passes._samples import channel_values

CONVERT = "canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=hard,v-init=0.0}"


def test_hard_reset_counts_by_hand() -> None:
    """Strict threshold 1, T = 10: a = 0.3 fires at steps 4 and 8 (v = 1.2 > 1), a = 1 every second
    step (v = 1 does not fire, 2 does), a = 1.5 every step, a ≤ 0 never."""
    a = np.array([0.3, 1.0, 1.5, 0.0, -1.0])
    np.testing.assert_array_equal(hard_reset_counts(a, 1.0, 10), [0.2, 0.5, 1.0, 0.0, 0.0])


def test_hard_reset_counts_match_the_simulator() -> None:
    """A strict, hard-reset IF neuron under constant input spikes exactly as the formula says."""
    text = """
    graph @h(%x: analog[5]) {
      %n = neuron(%x) {v_th = 0.7, reset = "hard", strict = true} : spike[5]
      %r = readout(%n) : analog[5]
      output %r
    }
    """
    g = graph_from_text(text)
    x = uniform_inputs((5,), 64, seed=3) * 1.5 - 0.2
    for T in (3, 8, 13):
        got = SIM.run_snn(g, x, T).logits
        np.testing.assert_allclose(got, hard_reset_counts(x, 0.7, T), atol=1e-6)


@pytest.fixture(scope="module")
def cnn_tuned():
    x, y = digits_split("train")
    ctx = context(x[:512], y[:512], timesteps=8, batch_size=256)
    lowered = run(CONVERT, digits_model("cnn"), ctx)
    return lowered, run("loihi-thresholds{samples=512}", lowered, ctx), ctx


def test_tuning_fits_the_ann_better(cnn_tuned) -> None:
    """The re-tuned hard-reset SNN approximates the ANN's activations better than the calibrated one."""
    before, after, ctx = cnn_tuned
    x = digits_split("train")[0][:256]
    for g_name in ("relu", "relu_1"):
        want = SIM.run_ann(before, x, record=[g_name])[g_name]
        err = [np.mean((SIM.run_snn(g, x, 8, record=[g_name]).recorded[g_name] - want) ** 2) for g in (before, after)]
        assert err[1] < 0.8 * err[0], (g_name, err)
    acc = ctx.results["loihi-thresholds"]["accuracy"]
    assert set(acc) == {"split", "soft_reset", "hard_reset_calibrated_thresholds", "hard_reset"}
    assert acc["hard_reset"] >= acc["hard_reset_calibrated_thresholds"]


def test_thresholds_have_a_floor(cnn_tuned) -> None:
    _, after, _ = cnn_tuned
    for name in ("relu", "relu_1"):
        theta = neuron_vector(after, after.node(name), "v_th")
        assert theta.min() >= 0.0625 * np.median(theta) * (1 - 1e-6)


@pytest.fixture(scope="module")
def cnn_uncompensated(cnn_tuned):
    lowered, _, ctx = cnn_tuned
    return run("loihi-thresholds{samples=512,mean-rounds=0}", lowered, ctx)


def test_mean_compensation_moves_channel_means_onto_the_ann(cnn_tuned, cnn_uncompensated) -> None:
    """Hard reset loses the charge above the threshold; the compensation shifts each channel's bias so
    that its mean output is the ANN's.  On the held-out test split the per-channel mean error of every
    tuned neuron is smaller than with the thresholds and scales alone, and the SNN agrees with the ANN
    on at least as many images."""
    lowered, tuned, _ = cnn_tuned
    x = digits_split("test")[0]
    names = ["relu", "relu_1"]
    ann = SIM.run_ann(lowered, x, record=names)
    runs = {k: SIM.run_snn(g, x, 8, record=names) for k, g in (("on", tuned), ("off", cnn_uncompensated))}
    for name in names:
        err = {k: np.abs(channel_values(r.recorded[name] - ann[name]).mean(axis=1)) for k, r in runs.items()}
        assert err["on"].mean() < 0.9 * err["off"].mean(), (name, err["on"].mean(), err["off"].mean())
    want = SIM.run_ann(lowered, x)[lowered.outputs[0]].argmax(1)
    agree = {k: float((r.predictions == want).mean()) for k, r in runs.items()}
    assert agree["on"] >= agree["off"], agree


def test_compensated_chip_runs_the_quantised_graph_spike_for_spike(cnn_tuned) -> None:
    """The compensation only moves biases: the quantised network still fits Loihi's formats, and the
    bit-accurate chip spikes as the torch simulator runs the quantised graph, population by population."""
    _, tuned, ctx = cnn_tuned
    q = run("fold-thresholds,encode-input{scheme=direct},loihi-legalize,loihi-quantize", tuned, ctx)
    levels = ctx.results["loihi-quantize"]["input"]["levels"]
    x = digits_split("test")[0][:48]
    assert_spike_for_spike(q, (np.rint(levels * x) / levels).astype(np.float32), 8)


def test_compensation_options_are_checked_when_parsed() -> None:
    with pytest.raises(PassOptionError, match=r"^pass 'loihi-thresholds': mean-rounds=-1 must be >= 0; z-score=0.0 must be > 0$"):
        PassManager.parse("loihi-thresholds{mean-rounds=-1,z-score=0}")


def test_requires_v_to_start_at_zero() -> None:
    x, y = digits_split("train")
    ctx = context(x[:64], y[:64], timesteps=4)
    g = run("canonicalize,fold-bn,calibrate,lower-neurons{reset=hard,v-init=0.5}", digits_model("mlp"), ctx)
    with pytest.raises(PipelineFailure, match=r"neuron %relu has v_init=0.5; the model assumes v starts at 0"):
        run("loihi-thresholds", g, ctx)
