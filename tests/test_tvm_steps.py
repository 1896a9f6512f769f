"""Step kernels (``snnc/backends/tvm/steps.py``): a timestep, or all T, in one call into the library.

The fused runtime must give exactly what one Python call per kernel gives (same kernels, same
buffers, same order) and what the torch simulator gives.  Weights, biases and inputs are
multiples of powers of two, so every sum is exact in float32 whatever its order: logits, spike
counts and final membranes are compared for equality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, compile_graph, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.kernels import Device  # noqa: E402
from snnc.backends.tvm.layers import Mode  # noqa: E402
from snnc.backends.tvm.lower import lower  # noqa: E402
from snnc.backends.tvm.plan import plan_graph  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.backends.tvm.steps import HostCall, KernelCall, StepKernel, fuse, step_program  # noqa: E402
from snnc.errors import InputFileError  # noqa: E402
from snnc.ir import Graph  # noqa: E402

pytestmark = pytest.mark.tvm

NET = """
graph @steps(%x: analog[2,8,8]) attributes {timesteps = 6} {
  %e = encode(%x) : analog[2,8,8]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[8,8,8]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[8,8,8]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[8,8,8]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[8,8,8]
  %p = avgpool2d(%n2) {kernel = [2, 2], stride = [2, 2]} : analog[8,4,4]
  %n3 = neuron(%p) {v_th = 0.25, v_init = 0.5} : spike[8,4,4]
  %f = flatten(%n3) : spike[128]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[16]
  %n4 = neuron(%fc) {v_init = 0.5} : spike[16]
  %out_fc = linear(%n4) params {weight = "out.weight", bias = "out.bias"} : analog[4]
  %out = readout(%out_fc) : analog[4]
  output %out
}
"""


def _net() -> Graph:
    """NET with every parameter a multiple of 1/8 in [-1, 1] (exact float32 sums)."""
    return dyadic(graph_from_text(NET, seed=7))


def _inputs(n: int) -> np.ndarray:
    return grid_inputs(n, (2, 8, 8))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The network compiled twice: every layer in event mode, and with fc dense (a BLAS
    product on the host splits the timestep into two step kernels)."""
    graph = _net()
    out = {"event": compile_graph(graph, tmp_path_factory.mktemp("event"))}
    layer_graph, params = lower(graph, modes={"fc": Mode.DENSE})  # fc is too small for the cost model's dense
    out["dense_fc"] = compile_artifact(layer_graph, params, tmp_path_factory.mktemp("dense_fc"))
    return graph, out


def _assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["logits"], b["logits"])
    assert a["spikes_per_layer"].keys() == b["spikes_per_layer"].keys()
    for layer in a["spikes_per_layer"]:
        np.testing.assert_array_equal(a["spikes_per_layer"][layer], b["spikes_per_layer"][layer], err_msg=layer)
        np.testing.assert_array_equal(a["membrane"][layer], b["membrane"][layer], err_msg=layer)


@pytest.mark.parametrize("kind", ["event", "dense_fc"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_fused_equals_per_kernel_calls_and_the_simulator(artifacts, kind, batch_size):
    graph, dirs = artifacts
    x = _inputs(5)
    fused = EventRuntime(dirs[kind])
    assert fused.fused_calls
    per_kernel = EventRuntime(dirs[kind], fused=False)
    assert not per_kernel.fused_calls
    a = fused.run(x, batch_size=batch_size, record_state=True)
    b = per_kernel.run(x, batch_size=batch_size, record_state=True)
    _assert_same(a, b)
    ref = reference(graph, x)
    np.testing.assert_array_equal(a["logits"], ref.logits)
    assert_spike_counts_equal(graph, a, ref, len(x))
    # another T than the graph's runs through the same step kernels
    _assert_same(
        fused.run(x, timesteps=3, batch_size=batch_size, record_state=True),
        per_kernel.run(x, timesteps=3, batch_size=batch_size, record_state=True),
    )


def test_all_timesteps_in_one_call_without_host_products(artifacts):
    _, dirs = artifacts
    x = _inputs(2)
    for kind, one_call in (("event", True), ("dense_fc", False)):
        rt = EventRuntime(dirs[kind])
        for batch in (1, 2):
            rt.run(x[:batch], batch_size=batch)
            buf = rt._by_batch[batch]
            assert (buf.run_all is not None) is one_call, (kind, batch)
            # fused: the step kernels and host products only; per kernel: one call per kernel
            assert len(buf.steps) == (0 if one_call else 3), (kind, batch)


def test_step_program_and_fusion():
    layer_graph, _ = lower(_net(), modes={"fc": Mode.DENSE})
    plans = plan_graph(layer_graph, Device.CPU)
    program = step_program(plans, 1)
    # c1 reads the analog input: dense, computed once per batch, then its neuron kernel per step
    kinds = [type(item).__name__ for item in program]
    assert kinds == ["KernelCall"] * 4 + ["HostCall", "KernelCall", "KernelCall"]
    host = program[4]
    assert isinstance(host, HostCall) and host.layer == "fc"
    densify = program[3]
    assert isinstance(densify, KernelCall) and densify.args[-1].role == "dense_in"
    assert all(k.kernel.batch == 1 for k in program if isinstance(k, KernelCall))
    fused = fuse(program, 1)
    assert [type(item).__name__ for item in fused] == ["StepKernel", "HostCall", "StepKernel"]
    first = fused[0]
    assert isinstance(first, StepKernel)
    src = first.source()
    assert src.count("T.call_cpacked(") == 4 and "for t in range(steps):" in src
    # the same plan gives the same names (the runtime re-derives them from graph.json)
    again = fuse(step_program(plan_graph(layer_graph, Device.CPU), 1), 1)
    assert [k.name for k in again if isinstance(k, StepKernel)] == [
        k.name for k in fused if isinstance(k, StepKernel)
    ]
    # any-batch step kernels declare a symbolic batch and call the any-batch kernels
    any_batch = fuse(step_program(plans, None), None)
    assert "B = T.int32()" in any_batch[0].source()  # type: ignore[union-attr]


def test_artifact_with_other_step_kernels_is_refused(artifacts, tmp_path):
    _, dirs = artifacts
    src = dirs["event"]
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = json.loads((tmp_path / "graph.json").read_text())
    assert raw["step_kernels"]["batch1"]
    raw["step_kernels"]["batch1"] = ["snnc_step_000000000000"]
    (tmp_path / "graph.json").write_text(json.dumps(raw))
    with pytest.raises(InputFileError, match="batch1 step kernels differ"):
        EventRuntime(tmp_path)
    # an artifact without step kernels (older files) runs one call per kernel
    del raw["step_kernels"]
    (tmp_path / "graph.json").write_text(json.dumps(raw))
    rt = EventRuntime(tmp_path)
    assert not rt.fused_calls
    _assert_same(
        rt.run(_inputs(2), record_state=True), EventRuntime(src).run(_inputs(2), record_state=True)
    )


TWINS = """
graph @twins(%x: analog[12]) attributes {timesteps = 5} {
  %e = encode(%x) : analog[12]
  %l0 = linear(%e) params {weight = "l0.weight", bias = "l0.bias"} : analog[16]
  %n0 = neuron(%l0) {v_init = 0.5} : spike[16]
  %l1 = linear(%n0) params {weight = "l1.weight", bias = "l1.bias"} : analog[16]
  %n1 = neuron(%l1) {v_init = 0.5} : spike[16]
  %l2 = linear(%n1) params {weight = "l2.weight", bias = "l2.bias"} : analog[16]
  %n2 = neuron(%l2) {v_init = 0.5} : spike[16]
  %l3 = linear(%n2) params {weight = "l3.weight"} : analog[3]
  %out = readout(%l3) : analog[3]
  output %out
}
"""


def test_a_kernel_called_twice_goes_through_an_alias(tmp_path):
    """Two layers of one shape share a kernel; TVM's code generation cannot declare one entry
    point twice in a module, so the second call goes through an alias that the library links.
    Files written before ``step_kernel_params`` looped over chunks without repeats instead."""
    graph = dyadic(graph_from_text(TWINS, seed=5))
    layer_graph, params = lower(graph)
    plans = plan_graph(layer_graph, Device.CPU)
    (step,) = fuse(step_program(plans, 1), 1)
    assert isinstance(step, StepKernel)
    names = [c.kernel.name for c in step.calls]
    assert names[1] == names[2]  # l1 and l2: one kernel
    assert not step.chunks and step.compiled() == [step]
    entry = f"__tvm_ffi_{names[1]}"
    assert step.symbols()[1:3] == (entry, f"{entry}__1") and step.aliases() == {f"{entry}__1": entry}
    assert step.source().count("T.call_cpacked(") == 4
    (legacy,) = fuse(step_program(plans, 1), 1, None)
    assert isinstance(legacy, StepKernel) and legacy.name != step.name
    assert [len(c.calls) for c in legacy.chunks] == [2, 2] and len(legacy.compiled()) == 3
    assert legacy.source().count("T.call_cpacked(") == 2 and not legacy.aliases()
    compile_graph(graph, tmp_path)
    x = grid_inputs(4, (12,), seed=1)
    fused = EventRuntime(tmp_path)
    assert fused.fused_calls
    a = fused.run(x, batch_size=1, record_state=True)
    _assert_same(a, EventRuntime(tmp_path, fused=False).run(x, batch_size=1, record_state=True))
    _assert_same(
        fused.run(x, batch_size=4, record_state=True),
        EventRuntime(tmp_path, fused=False).run(x, batch_size=4, record_state=True),
    )
    ref = reference(graph, x)
    np.testing.assert_array_equal(a["logits"], ref.logits)
    assert_spike_counts_equal(graph, a, ref, len(x))
