"""d2e-encode: event encodings of a direct-coded SNN's input; the first layer accumulates instead of multiplying."""

from __future__ import annotations

import numpy as np
import pytest
from conversion_util import SIM, context, graph_from_text, ir, run, uniform_inputs
from d2e_util import first_layer_counts, trained_mlp

from snnc.errors import ParseError, PassError
from snnc.ir import ops as O
from snnc.ir import print_graph, verify
from snnc.pass_manager import PassContext
from snnc.passes.d2e_encode import DirectCodedTeacher, is_input_encoder, phase_bits

# as an SNN library's model imports: no encoder, the first linear reads the analog input at every step
SOURCE = """
graph @d(%x: analog[6]) {
  %l = linear(%x) params {weight = "w", bias = "b"} : analog[4]
  %n = neuron(%l) {model = "lif", reset = "hard", beta = 0.9} : spike[4]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""

EXPECTED_IF = """
graph @d(%x: analog[6]) attributes {timesteps = 4} {
  %x_enc = encode(%x) : analog[6]
  %x_enc_if = neuron(%x_enc) {v_init = 0.5} : spike[6]
  %l = linear(%x_enc_if) params {weight = "w", bias = "b"} : analog[4]
  %n = neuron(%l) {model = "lif", reset = "hard", beta = 0.9} : spike[4]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""

EXPECTED_RATE = """
graph @d(%x: analog[6]) attributes {timesteps = 4} {
  %x_enc = encode(%x) {scheme = "rate"} : spike[6]
  %l = linear(%x_enc) params {weight = "w", bias = "b"} : analog[4]
  %n = neuron(%l) {model = "lif", reset = "hard", beta = 0.9} : spike[4]
  %o = linear(%n) params {weight = "o"} : analog[3]
  %readout = readout(%o) : analog[3]
  output %readout
}
"""


def _ctx(x=None, timesteps: int = 4) -> PassContext:
    return context(uniform_inputs((6,), 32) if x is None else x, timesteps=timesteps)


def test_golden_if() -> None:
    x = uniform_inputs((6,), 32)
    x[0, 0] = 1.0  # the calibration maximum becomes input-max: v_th = out_scale = 1 (printed as defaults)
    out = run("d2e-encode{scheme=if}", graph_from_text(SOURCE), _ctx(x))
    assert print_graph(out) == ir(EXPECTED_IF)
    verify(out, require_event=True)


def test_golden_rate() -> None:
    out = run("d2e-encode{scheme=rate}", graph_from_text(SOURCE), _ctx())
    assert print_graph(out) == ir(EXPECTED_RATE)
    verify(out, require_event=True)


def test_teacher_is_the_source_at_the_same_t() -> None:
    g = graph_from_text(SOURCE)
    out = run("d2e-encode", g, _ctx(timesteps=4))
    teacher = out.analyses.get(DirectCodedTeacher).graph
    assert teacher.nodes == g.nodes and teacher.attrs.timesteps == 4
    x = uniform_inputs((6,), 16)
    assert np.array_equal(SIM.run_snn(teacher, x, 4).logits, SIM.run_snn(g, x, 4).logits)


@pytest.mark.parametrize("scheme", ["if", "rate", "phase", "ttfs"])
def test_first_layer_accumulates_instead_of_multiplying(scheme: str) -> None:
    """The trained MLP reads its input through flatten: direct coding multiplies every step, events don't."""
    g = trained_mlp(4)
    x = uniform_inputs((1, 8, 8), 64)
    macs, sops = first_layer_counts(g, x, 4)
    assert macs == 4 * 64 * g.params["fc1.weight"].shape[0] and sops == 0  # T dense evaluations
    assert _analog_synapses(g) == ["fc1"]  # the encoding layer that verify(require_event) exempts
    out = run(f"d2e-encode{{scheme={scheme}}}", g, _ctx(x))
    macs, sops = first_layer_counts(out, x, 4)
    assert macs == 0 and sops > 0
    assert _analog_synapses(out) == []
    verify(out, require_event=True)


def _analog_synapses(graph) -> list[str]:
    return [
        n.name
        for n in graph.nodes
        if n.op.synaptic and not all(graph.value_type(v).is_event for v in n.inputs)
    ]


def test_if_encoder_is_a_deterministic_rate_code() -> None:
    """Each input emits round(x·T/m) spikes (within one), each worth m: the window's mean is x within m/T."""
    T = 8
    x = 2.0 * uniform_inputs((6,), 200)  # inputs beyond 1 are fine: m = their maximum
    out = run("d2e-encode", graph_from_text(SOURCE), _ctx(x, timesteps=T))
    enc = next(n for n in out.nodes if is_input_encoder(out, n))
    m = float(x.max())
    assert enc.op.v_th == enc.op.out_scale == pytest.approx(m)
    mean = SIM.run_snn(out, x, T, record=[enc.name]).recorded[enc.name]
    assert np.abs(mean - x).max() <= m / T + 1e-6
    assert np.abs(mean * T / m - np.round(x * T / m)).max() <= 1.0 + 1e-6


def test_if_bursts_refine_the_code() -> None:
    T = 4
    x = uniform_inputs((6,), 200)
    x[0, 0] = 1.0
    errors = []
    for bursts in (1, 4):
        out = run(f"d2e-encode{{bursts={bursts}}}", graph_from_text(SOURCE), _ctx(x, timesteps=T))
        enc = next(n for n in out.nodes if is_input_encoder(out, n))
        assert str(enc.type) == ("spike[6]" if bursts == 1 else f"burst<{bursts}>[6]")
        mean = SIM.run_snn(out, x, T, record=[enc.name]).recorded[enc.name]
        errors.append(np.abs(mean - x).mean())
    assert errors[1] < errors[0] / 2


def test_rate_and_phase_keep_the_mean_drive() -> None:
    T = 8
    x = uniform_inputs((6,), 300)
    for scheme, tol in (("rate", 0.12), ("phase", 2.0**-8 + 1e-6)):
        out = run(f"d2e-encode{{scheme={scheme}}}", graph_from_text(SOURCE), _ctx(x, timesteps=T))
        mean = SIM.run_snn(out, x, T, record=["x_enc"]).recorded["x_enc"]
        assert np.abs(mean - x).mean() < tol, scheme


def test_ttfs_gain_matches_the_mean_first_layer_drive() -> None:
    T = 4
    x = uniform_inputs((6,), 400)
    x[x < 0.3] = 0.0  # sparse inputs, as images are
    g = graph_from_text(SOURCE)
    ctx = _ctx(x, timesteps=T)
    out = run("d2e-encode{scheme=ttfs}", g, ctx)
    gain = ctx.results["d2e-encode"]["weight_gain"]
    assert gain == pytest.approx(T * x.mean() / (x > 0).mean(), rel=1e-6)
    assert np.allclose(out.params[out.node("l").params["weight"]], g.params["w"] * gain, rtol=1e-6)
    w, b = g.params["w"], g.params["b"]
    direct = (x @ w.T + b).mean(axis=0)
    event = SIM.run_snn(out, x, T, record=["l"]).recorded["l"].mean(axis=0)  # mean over T of W·g·e_t + b
    assert np.abs(event - direct).max() < 0.05 * np.abs(x @ w.T).mean()


def test_phase_bits_tile_t() -> None:
    assert [phase_bits(t) for t in (1, 4, 6, 8, 12, 16)] == [1, 4, 6, 8, 6, 8]
    ctx = _ctx(timesteps=6)
    out = run("d2e-encode{scheme=phase,bits=4}", graph_from_text(SOURCE), ctx)
    assert next(out.ops(O.Encode)).op.bits == 4
    assert any("not a multiple of bits=4" in n for n in ctx.notes)


def test_input_ranges_are_checked() -> None:
    g = graph_from_text(SOURCE)
    with pytest.raises(
        PassError, match=r"scheme=rate reads inputs in \[0, 1\].*spans \[0, 2\].*or use scheme=if"
    ):
        run("d2e-encode{scheme=rate}", g, _ctx(2.0 * np.ones((4, 6), np.float32)))
    with pytest.raises(
        PassError, match=r"scheme=if reads inputs in \[0, inf\), the calibration data spans \[-1, 0\]"
    ):
        run("d2e-encode", g, _ctx(-np.ones((4, 6), np.float32)))


def test_refuses_what_it_cannot_do() -> None:
    g = graph_from_text(SOURCE)
    encoded = run("d2e-encode{scheme=rate}", g, _ctx())
    with pytest.raises(PassError, match="encode %x_enc is already event-coded"):
        run("d2e-encode", encoded, _ctx())
    with pytest.raises(ParseError, match="'direct' is not one of"):
        run("d2e-encode{scheme=direct}", g, _ctx())
    with pytest.raises(PassError, match="bursts=0 >= 1"):
        run("d2e-encode{bursts=0}", g, _ctx())
    no_data = PassContext(timesteps=4)
    run("d2e-encode", g, no_data)
    assert any("no calibration data" in n for n in no_data.notes)
