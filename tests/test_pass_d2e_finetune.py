"""d2e-finetune: distillation from the direct-coded teacher with the event-driven forward."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, run, uniform_inputs
from d2e_util import accuracy, digits_context, trained_mlp

from snnc.errors import PassError
from snnc.ir import print_graph
from snnc.passes.d2e_finetune import synapse_load, trainable_keys

T = 4
SHORT = "d2e-finetune{epochs=3,lr=3e-3}"


@pytest.fixture(scope="module")
def encoded():
    """The trained direct-coded MLP under TTFS input, which loses most of what direct coding gave."""
    return run("d2e-encode{scheme=ttfs}", trained_mlp(T), digits_context(T))


def _params(graph) -> dict[str, np.ndarray]:
    return {k: graph.params[k] for k in trainable_keys(graph)}


def test_golden_structure_is_kept(encoded) -> None:
    """Only tensors change: the printed IR (which names them) is the same, the weights are not."""
    tuned = run(SHORT, encoded, digits_context(T, n=256))
    assert print_graph(tuned) == print_graph(encoded)
    assert trainable_keys(tuned) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert all(not np.array_equal(tuned.params[k], encoded.params[k]) for k in trainable_keys(tuned))


def test_improves_held_out_accuracy(encoded) -> None:
    before = accuracy(encoded)
    tuned = run(SHORT, encoded, digits_context(T))
    after = accuracy(tuned)
    assert after > before + 0.02, (before, after)  # 3 epochs win back part of what TTFS input lost


def test_deterministic_for_a_seed(encoded) -> None:
    ctx = digits_context(T, n=320)
    a = _params(run("d2e-finetune{epochs=2,seed=3}", encoded, ctx))
    b = _params(run("d2e-finetune{epochs=2,seed=3}", encoded, ctx))
    c = _params(run("d2e-finetune{epochs=2,seed=4}", encoded, ctx))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_rate_penalty_cuts_spikes(encoded) -> None:
    ctx = digits_context(T)
    x = ctx.calibration.x
    free = run("d2e-finetune{epochs=3,rate-l1=0}", encoded, ctx)
    sparse = run("d2e-finetune{epochs=3,rate-l1=8}", encoded, ctx)
    spikes = [SIM.run_snn(g, x, T).spikes["lif1"] for g in (free, sparse)]
    assert spikes[1] < 0.8 * spikes[0]
    history = ctx.results["d2e-finetune"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[-1]["spike_cost"] < history[0]["spike_cost"]


def test_synapse_load_counts_what_spikes_drive() -> None:
    g = graph_from_text(
        """
        graph @s(%x: analog[1,6,6]) {
          %c = conv2d(%x) {padding = [1, 1]} params {weight = "w"} : analog[4,6,6]
          %n = neuron(%c) : spike[4,6,6]
          %p = maxpool2d(%n) : analog[4,3,3]
          %f = flatten(%p) : analog[36]
          %l = linear(%f) params {weight = "v"} : analog[5]
          %m = neuron(%l) : spike[5]
          %r = readout(%m) : analog[5]
          output %r
        }
        """
    )
    assert synapse_load(g, g.node("n")) == 36 * 5  # through pooling and flatten to the linear
    assert synapse_load(g, g.node("m")) == 0  # read only by the readout: not penalised


def test_needs_labels_and_sane_options(encoded) -> None:
    with pytest.raises(PassError, match=r"needs labelled calibration data \(a 'y' array in --calib\)"):
        run(SHORT, encoded, digits_context(T, labelled=False, n=64))
    with pytest.raises(PassError, match=r"kd-alpha=1.5 must be in \[0, 1\]; temperature=0.0 must be > 0"):
        run("d2e-finetune{kd-alpha=1.5,temperature=0}", encoded, digits_context(T, n=64))
    plain = trained_mlp(T)  # no d2e-encode: no teacher, unless kd-alpha = 1 (cross-entropy alone)
    with pytest.raises(PassError, match="needs the direct-coded source graph"):
        run(SHORT, plain, digits_context(T, n=64))
    x = uniform_inputs((1, 8, 8), 64)
    y = np.arange(64) % 10
    run("d2e-finetune{epochs=1,kd-alpha=1}", plain, context(x, y, timesteps=T))
