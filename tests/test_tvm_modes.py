"""The per-layer event/dense choice of the tvm target (``lower.input_densities`` and ``lower``).

A layer's mode comes from its input density per step: the producing neuron's spike rate, or,
for a layer that reads a pooling's, an add's or a concat's graded output (which count-ops counts
as analog), an estimate from the rates of the neurons that value is made of.  Both modes must
stay spike for spike with the torch simulator on such a layer (parameters and inputs on a
power-of-two grid: every sum is exact whatever its order).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.layers import Mode  # noqa: E402
from snnc.backends.tvm.lower import DENSE_CROSSOVER, input_densities, lower  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402

pytestmark = pytest.mark.tvm

T = 4
# fc reads an average pooling's graded output through a flatten; head reads an add of two
# spike maps, then a concat of two spike vectors
NET = f"""
graph @modes(%x: analog[2,8,8]) attributes {{timesteps = {T}}} {{
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {{padding = [1, 1]}} params {{weight = "c1.weight", bias = "c1.bias"}} : analog[4,8,8]
  %n1 = neuron(%c1) {{v_init = 0.5}} : spike[4,8,8]
  %c2 = conv2d(%n1) {{padding = [1, 1]}} params {{weight = "c2.weight", bias = "c2.bias"}} : analog[4,8,8]
  %n2 = neuron(%c2) {{v_init = 0.5}} : spike[4,8,8]
  %p = avgpool2d(%n2) {{kernel = [2, 2], stride = [2, 2]}} : analog[4,4,4]
  %f = flatten(%p) : analog[64]
  %fc = linear(%f) params {{weight = "fc.weight", bias = "fc.bias"}} : analog[8]
  %n3 = neuron(%fc) {{v_init = 0.5}} : spike[8]
  %a = add(%n1, %n2) : analog[4,8,8]
  %fa = flatten(%a) : analog[256]
  %fa_fc = linear(%fa) params {{weight = "fa.weight", bias = "fa.bias"}} : analog[8]
  %n4 = neuron(%fa_fc) {{v_init = 0.5}} : spike[8]
  %cat = concat(%n3, %n4) {{axis = 0}} : spike[16]
  %out_fc = linear(%cat) params {{weight = "out.weight", bias = "out.bias"}} : analog[3]
  %out = readout(%out_fc) : analog[3]
  output %out
}}
"""


def _graph():
    return dyadic(graph_from_text(NET, seed=11))


def _counts(spikes: dict[str, float]) -> dict:
    """count-ops' result as the target reads it: spikes per sample of each neuron, no SOPs."""
    return {
        "simulated": True,
        "layers": [{"name": n, "spikes_per_sample": s, "sops": 0.0, "macs": 0} for n, s in spikes.items()],
    }


def test_densities_of_spikes_and_of_graded_values():
    graph = _graph()
    rates = {"n1": 0.1, "n2": 0.3, "n3": 0.25, "n4": 0.5}  # spikes per neuron per step
    spikes = {n: r * graph.value_type(n).numel * T for n, r in rates.items()}
    d = input_densities(graph, _counts(spikes), T)
    assert d["c2"] == pytest.approx(0.1)  # the spikes of n1: exact
    assert d["fc"] == pytest.approx(1 - 0.7**4)  # a 2x2 window of n2 holds a spike
    assert d["fa_fc"] == pytest.approx(1 - 0.9 * 0.7)  # either operand of the add spikes
    assert d["out_fc"] == pytest.approx((0.25 * 8 + 0.5 * 8) / 16)  # concat: the mean rate
    assert "c1" not in d  # reads the analog input: always dense, no density
    assert input_densities(graph, None, T) == {} and input_densities(graph, _counts(spikes), 0) == {}


def test_mode_follows_the_estimated_density():
    graph = _graph()
    # n2 at 10 %: a pooled value is non-zero with p = 1 - 0.9^4 = 34 % (event); at 20 %: 59 % (dense)
    for rate, mode in ((0.1, Mode.EVENT), (0.2, Mode.DENSE)):
        spikes = {n: rate * graph.value_type(n).numel * T for n in ("n1", "n2", "n3", "n4")}
        d = input_densities(graph, _counts(spikes), T)
        assert (d["fc"] > DENSE_CROSSOVER) == (mode is Mode.DENSE)
        layers = {layer.name: layer for layer in lower(graph, d)[0].layers}
        assert layers["fc"].mode is mode, (rate, d["fc"])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The network compiled twice: every weighted layer that reads events in event mode, then in
    dense mode (densify kernel, BLAS product on the host)."""
    graph = _graph()
    weighted = ("c2", "fc", "fa_fc", "out_fc")
    out = {}
    for mode in (Mode.EVENT, Mode.DENSE):
        layer_graph, params = lower(graph, modes=dict.fromkeys(weighted, mode))
        out[mode] = compile_artifact(layer_graph, params, tmp_path_factory.mktemp(mode.value))
    return graph, weighted, out


@pytest.mark.parametrize("mode", [Mode.EVENT, Mode.DENSE])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_both_modes_spike_for_spike_on_graded_inputs(artifacts, mode, batch_size):
    """fc (pooled graded values), fa_fc (an add's graded values) and out_fc (a concat of spikes)
    in either mode: the same logits and spike counts as the torch simulator."""
    graph, weighted, dirs = artifacts
    x = grid_inputs(6, (2, 8, 8))
    ref = reference(graph, x)
    rt = EventRuntime(dirs[mode])
    modes = {p.name: p.mode for p in rt.plans if p.op.weighted}
    assert all(modes[n] is mode for n in weighted), modes
    got = rt.run(x, batch_size=batch_size)
    np.testing.assert_array_equal(got["logits"], ref.logits)
    assert_spike_counts_equal(graph, got, ref, len(x))


def test_grouped_convolutions_stay_event_at_any_density():
    """Their dense path has no GEMM (a sliding window on the host): event at any density."""
    from snnc.backends.tvm.lower import choose_mode
    from snnc.ir import ops as O

    depthwise, full = O.Conv2d(groups=8), O.Conv2d()
    assert choose_mode(depthwise, 0.9) is Mode.EVENT and choose_mode(O.Conv1d(groups=2), 0.9) is Mode.EVENT
    assert choose_mode(full, 0.9) is Mode.DENSE and choose_mode(O.Linear(), 0.9) is Mode.DENSE
    assert choose_mode(full, DENSE_CROSSOVER) is Mode.EVENT and choose_mode(full, None) is Mode.EVENT
