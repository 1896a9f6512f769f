"""What the tvm target rewrites before lowering (``snnc/backends/tvm/legalize.py``): pooling of an
analog current (DenseNet's transition: 1x1 conv, then 2x2 average pooling, no ReLU between) composed
into the conv, and an upsample before a linear (VGG's adaptive average pooling of a 1x1 map) folded
into the linear's weights.

Dyadic weights and inputs (tests/tvm_util.py): the composite's weights are the 1x1 conv's divided by
4, the folded linear's sums of nine weights on a 1/8 grid, so every sum stays exact: the artifact
must give the torch simulator's logits and spike counts exactly, on the graph as the passes left it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.legalize import compose_pooled_currents, fold_upsampling, pooling_problems  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.backends.tvm.target import TVMTarget  # noqa: E402
from snnc.ir import Graph, verify  # noqa: E402
from snnc.ir import ops as O  # noqa: E402
from snnc.pass_manager import PassContext  # noqa: E402

pytestmark = pytest.mark.tvm

DENSE = """
graph @dense(%x: analog[3,8,8]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[3,8,8]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,8,8]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,8,8]
  %t = conv2d(%n1) params {weight = "t.weight", bias = "t.bias"} : analog[4,8,8]
  %p = avgpool2d(%t) {kernel = [2, 2], stride = [2, 2]} : analog[4,4,4]
  %bn1 = scale(%p) {factor = 0.5} params {scale = "bn1.scale", bias = "bn1.bias"} : analog[4,4,4]
  %n2 = neuron(%bn1) {v_init = 0.5} : spike[4,4,4]
  %c3 = conv2d(%n2) {padding = [1, 1]} params {weight = "c3.weight"} : analog[4,4,4]
  %cat = concat(%p, %c3) : analog[8,4,4]
  %bn2 = scale(%cat) params {scale = "bn2.scale", bias = "bn2.bias"} : analog[8,4,4]
  %n3 = neuron(%bn2) {v_th = 0.5, v_init = 0.5} : spike[8,4,4]
  %f = flatten(%n3) : spike[128]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[5]
  %out = readout(%fc) : analog[5]
  output %out
}
"""


def _dense(seed: int, text: str = DENSE) -> Graph:
    rng = np.random.default_rng(seed)
    graph = graph_from_text(text, seed=seed, params={"t.weight": rng.standard_normal((4, 8, 1, 1))})
    return dyadic(graph, seed=seed + 1)


def test_the_pool_of_a_current_is_composed_into_its_conv():
    graph = _dense(1)
    log = compose_pooled_currents(graph)
    verify(graph)
    assert log == ["avgpool2d %p: composed into conv2d %t"]
    t = graph.node("t")
    assert t.op == O.Conv2d(stride=(2, 2)) and graph.value_type("t").shape == (4, 4, 4)
    assert not any(isinstance(n.op, O.AvgPool2d) for n in graph.nodes)
    assert [n.name for n in graph.users("t")] == ["bn1", "cat"]


def test_spike_for_spike_with_the_simulator(tmp_path):
    """Compiled by the target (which composes on its own copy) against the simulator on the
    uncomposed graph: the same logits and spike counts, exactly."""
    _assert_target_runs_it_spike_for_spike(_dense(1), (3, 8, 8), tmp_path, "tvm: avgpool2d %p: composed into conv2d %t")


def _assert_target_runs_it_spike_for_spike(graph: Graph, shape: tuple[int, ...], out: Path, note: str) -> None:
    """The target compiles ``graph`` (rewriting its own copy: ``note``) into an artifact that gives the
    simulator's logits and spike counts on the graph as it was, exactly."""
    assert TVMTarget().legality(graph) == []
    before = str(graph)
    ctx = PassContext()
    TVMTarget().compile(graph, out, ctx)
    assert str(graph) == before  # the driver's graph is left as it was
    assert ctx.notes == [note]
    x = grid_inputs(6, shape)
    got = EventRuntime(out / "tvm").run(x, batch_size=4)
    ref = reference(graph, x)
    np.testing.assert_array_equal(got["logits"], ref.logits)
    assert_spike_counts_equal(graph, got, ref, len(x))


def test_a_pool_of_a_current_read_twice_is_refused_with_its_location():
    """The conv's output also read by the concat: composing would change what the concat reads."""
    text = DENSE.replace("%cat = concat(%p, %c3)", "%cat = concat(%t_pooled_elsewhere, %c3)")
    text = text.replace(
        "  %bn1 =", "  %t_pooled_elsewhere = avgpool2d(%t) {kernel = [2, 2], stride = [2, 2]} : analog[4,4,4]\n  %bn1 ="
    )
    graph = _dense(2, text)
    problems = pooling_problems(graph)
    assert len(problems) == 2
    assert problems[0].startswith("avgpool2d %p: pools an analog current")
    assert "keep a ReLU before the pooling" in problems[0]
    refusal = TVMTarget().legality(graph)
    assert len(refusal) == 1 and "2 problems" in refusal[0] and "    avgpool2d %t_pooled_elsewhere" in refusal[0]


VGG = """
graph @vgg(%x: analog[3,4,4]) attributes {timesteps = 8} {
  %e = encode(%x) : analog[3,4,4]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[4,4,4]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[4,4,4]
  %m = spike_maxpool(%n1) {kernel = [4, 4], stride = [4, 4]} : spike[4,1,1]
  %up = upsample(%m) {scale = [3, 3]} : spike[4,3,3]
  %f = flatten(%up) : spike[36]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[6]
  %n2 = neuron(%fc) {v_init = 0.5} : spike[6]
  %o = linear(%n2) params {weight = "o.weight"} : analog[3]
  %out = readout(%o) : analog[3]
  output %out
}
"""


def test_an_upsample_before_a_linear_is_folded_into_its_weights():
    graph = dyadic(graph_from_text(VGG, seed=3), seed=4)
    w = graph.params["fc.weight"].reshape(6, 4, 9)
    folded = graph.copy()
    assert fold_upsampling(folded) == ["upsample %up: folded into linear %fc"]
    verify(folded)
    fc = folded.node("fc")
    assert folded.node(fc.inputs[0]).inputs == ("m",) and folded.value_type(fc.inputs[0]).shape == (4,)
    np.testing.assert_array_equal(folded.params[fc.params["weight"]], w.sum(axis=2))
    assert not any(isinstance(n.op, O.Upsample) for n in folded.nodes)


def test_upsample_spike_for_spike_with_the_simulator(tmp_path):
    graph = dyadic(graph_from_text(VGG, seed=3), seed=4)
    _assert_target_runs_it_spike_for_spike(graph, (3, 4, 4), tmp_path, "tvm: upsample %up: folded into linear %fc")


def test_an_upsample_read_by_a_conv_is_refused():
    text = VGG.replace("%f = flatten(%up) : spike[36]", "%cu = conv2d(%up) params {weight = \"cu.weight\"} : analog[3,1,1]\n"
                       "  %nu = neuron(%cu) {v_init = 0.5} : spike[3,1,1]\n  %f = flatten(%nu) : spike[3]")
    graph = graph_from_text(text, seed=3)
    refusal = TVMTarget().legality(graph)
    assert len(refusal) == 1 and "not supported by the tvm target (1 node):\n    upsample %up" in refusal[0]
