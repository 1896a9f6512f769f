"""Large step kernels cut into pieces, and kernels called twice through aliases (``steps.MAX_STEP_PARAMS``, ``compile_artifact(max_step_params=)``).

A run of kernel calls whose buffers exceed the limit becomes several step kernels, called in
order once per timestep.  Here the limit is made small, so that a small network is cut into
several pieces: the artifact must
agree exactly with the same network built without cuts, with one Python call per kernel, and
with the torch simulator (dyadic weights and inputs: every float32 sum is exact).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tvm")
from conversion_util import graph_from_text  # noqa: E402
from tvm_util import assert_spike_counts_equal, dyadic, grid_inputs, reference  # noqa: E402

from snnc.backends.tvm.build import compile_artifact  # noqa: E402
from snnc.backends.tvm.kernels import Device  # noqa: E402
from snnc.backends.tvm.lower import lower  # noqa: E402
from snnc.backends.tvm.plan import plan_graph  # noqa: E402
from snnc.backends.tvm.runtime import EventRuntime  # noqa: E402
from snnc.backends.tvm.steps import MAX_STEP_PARAMS, KernelCall, StepKernel, _split, fuse, step_program  # noqa: E402
from snnc.errors import InputFileError, TargetError  # noqa: E402

pytestmark = pytest.mark.tvm

# two equal convolutions (one kernel, called twice), a residual add, pooling, two linear layers
NET = """
graph @chunks(%x: analog[2,6,6]) attributes {timesteps = 5} {
  %e = encode(%x) : analog[2,6,6]
  %c1 = conv2d(%e) {padding = [1, 1]} params {weight = "c1.weight", bias = "c1.bias"} : analog[6,6,6]
  %n1 = neuron(%c1) {v_init = 0.5} : spike[6,6,6]
  %c2 = conv2d(%n1) {padding = [1, 1]} params {weight = "c2.weight", bias = "c2.bias"} : analog[6,6,6]
  %n2 = neuron(%c2) {v_init = 0.5} : spike[6,6,6]
  %c3 = conv2d(%n2) {padding = [1, 1]} params {weight = "c3.weight", bias = "c3.bias"} : analog[6,6,6]
  %n3a = neuron(%c3) {v_init = 0.5} : spike[6,6,6]
  %a = add(%n3a, %n1) : analog[6,6,6]
  %n3 = neuron(%a) {v_init = 0.5} : spike[6,6,6]
  %p = avgpool2d(%n3) {kernel = [2, 2], stride = [2, 2]} : analog[6,3,3]
  %n4 = neuron(%p) {v_th = 0.25, v_init = 0.5} : spike[6,3,3]
  %f = flatten(%n4) : spike[54]
  %fc = linear(%f) params {weight = "fc.weight", bias = "fc.bias"} : analog[16]
  %n5 = neuron(%fc) {v_init = 0.5} : spike[16]
  %o = linear(%n5) params {weight = "out.weight", bias = "out.bias"} : analog[4]
  %out = readout(%o) : analog[4]
  output %out
}
"""
LIMIT = 20  # values per step kernel: NET's timestep (48 values, 7 calls) is cut into 3 pieces


def _net():
    return dyadic(graph_from_text(NET, seed=11))


def _inputs(n: int) -> np.ndarray:
    return grid_inputs(n, (2, 6, 6), seed=4)


def _assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["logits"], b["logits"])
    assert a["spikes_per_layer"].keys() == b["spikes_per_layer"].keys()
    for layer in a["spikes_per_layer"]:
        np.testing.assert_array_equal(a["spikes_per_layer"][layer], b["spikes_per_layer"][layer], err_msg=layer)
        np.testing.assert_array_equal(a["membrane"][layer], b["membrane"][layer], err_msg=layer)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """NET compiled whole (the default limit: one step kernel per variant) and cut at LIMIT."""
    graph = _net()
    layer_graph, params = lower(graph)
    whole = compile_artifact(layer_graph, params, tmp_path_factory.mktemp("whole"))
    cut = compile_artifact(layer_graph, params, tmp_path_factory.mktemp("cut"), max_step_params=LIMIT)
    return graph, whole, cut


def test_split_keeps_order_and_bounds_each_piece():
    layer_graph, _ = lower(_net())
    plans = plan_graph(layer_graph, Device.CPU)
    for batch in (None, 1):
        program = [c for c in step_program(plans, batch) if isinstance(c, KernelCall)]
        for limit in (1, 5, LIMIT, 40, 10_000):
            pieces = _split(program, limit)
            assert [c for p in pieces for c in p] == program  # every call once, in order
            for i, piece in enumerate(pieces):
                values = {a for c in piece for a in c.args}
                assert len(values) <= limit or len(piece) == 1, (limit, i)
                if i + 1 < len(pieces):  # the longest piece: the next call would not fit
                    assert len(values | set(pieces[i + 1][0].args)) > limit, (limit, i)
        assert _split(program, None) == [tuple(program)]


def test_fuse_cuts_long_runs_only(artifacts):
    layer_graph, _ = lower(_net())
    plans = plan_graph(layer_graph, Device.CPU)
    program = step_program(plans, 1)
    whole = fuse(program, 1)
    assert len(whole) == 1 and len(whole[0].params) > LIMIT  # type: ignore[union-attr]
    assert len(whole[0].params) <= MAX_STEP_PARAMS  # type: ignore[union-attr]
    cut = fuse(program, 1, LIMIT)
    # several pieces, some of several calls
    assert all(isinstance(k, StepKernel) for k in cut) and 3 <= len(cut) < len(whole[0].calls)  # type: ignore[union-attr]
    assert [c for k in cut for c in k.calls] == list(whole[0].calls)  # type: ignore[union-attr]
    assert all(len(k.params) <= LIMIT for k in cut)  # type: ignore[union-attr]
    # c2 and c3 share a kernel: a step kernel holding both calls it the second time through an
    # alias (the whole artifact runs that way below); at LIMIT they are in different pieces
    assert len(whole[0].aliases()) == 1 and not whole[0].chunks  # type: ignore[union-attr]
    assert not any(k.aliases() for k in cut)  # type: ignore[union-attr]
    # graph.json lists each variant's pieces in call order, and the limit they were cut at
    _, whole_dir, cut_dir = artifacts
    raw = json.loads((cut_dir / "graph.json").read_text())
    assert raw["step_kernel_params"] == LIMIT
    assert raw["step_kernels"]["batch1"] == [k.name for k in cut]  # type: ignore[union-attr]
    assert len(json.loads((whole_dir / "graph.json").read_text())["step_kernels"]["batch1"]) == 1


@pytest.mark.parametrize("batch_size", [1, 3])
def test_cut_step_kernels_agree_with_whole_per_kernel_and_simulator(artifacts, batch_size):
    graph, whole_dir, cut_dir = artifacts
    x = _inputs(5)
    cut = EventRuntime(cut_dir)
    assert cut.fused_calls
    a = cut.run(x, batch_size=batch_size, record_state=True)
    buf = cut._by_batch[batch_size]
    # several step kernels: one call each per timestep, no single call for all T steps
    listed = json.loads((cut_dir / "graph.json").read_text())["step_kernels"]
    assert buf.run_all is None and len(buf.steps) == len(listed["batch1" if batch_size == 1 else "any_batch"]) >= 3
    whole = EventRuntime(whole_dir)
    _assert_same(a, whole.run(x, batch_size=batch_size, record_state=True))
    assert whole._by_batch[batch_size].run_all is not None  # one call for all T steps
    _assert_same(a, EventRuntime(cut_dir, fused=False).run(x, batch_size=batch_size, record_state=True))
    ref = reference(graph, x)
    np.testing.assert_array_equal(a["logits"], ref.logits)
    assert_spike_counts_equal(graph, a, ref, len(x))


def _copy(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    raw = json.loads((dst / "graph.json").read_text())
    edit(raw)
    (dst / "graph.json").write_text(json.dumps(raw))


def _legacy_artifact(whole_dir, out) -> None:
    """``whole_dir`` as a file written before ``step_kernel_params``: its step kernels chunked
    where a kernel is called twice (no aliases), the limit absent from graph.json."""
    from snnc.backends.tvm import kernel_cache
    from snnc.backends.tvm.steps import step_kernels

    plans = plan_graph(lower(_net())[0], Device.CPU)
    legacy = step_kernels(plans, Device.CPU, None)
    steps = [c for items in legacy.values() for k in items if isinstance(k, StepKernel) for c in k.compiled()]
    assert any(k.chunks for k in steps)  # c2 and c3 share a kernel

    def edit(raw: dict) -> None:
        raw.pop("step_kernel_params")
        raw["step_kernels"] = {
            key: [k.name for k in legacy[batch] if isinstance(k, StepKernel)]
            for key, batch in (("any_batch", None), ("batch1", 1))
        }

    _copy(whole_dir, out, edit)
    kernel_cache.export_library([k for p in plans for k in p.kernels()] + steps, out / "lib.so")


def test_artifacts_without_the_limit_load_as_before(artifacts, tmp_path):
    """graph.json without ``step_kernel_params`` (written before the limit): its step kernels
    are re-derived as they were then, and run; a cut artifact that lost its limit is refused,
    not run with other kernels; a malformed limit is refused."""
    _, whole_dir, cut_dir = artifacts
    _legacy_artifact(whole_dir, tmp_path / "old")
    rt = EventRuntime(tmp_path / "old")
    assert rt.fused_calls
    x = _inputs(3)
    for batch_size in (1, 3):
        _assert_same(
            rt.run(x, batch_size=batch_size, record_state=True),
            EventRuntime(whole_dir).run(x, batch_size=batch_size, record_state=True),
        )
    _copy(cut_dir, tmp_path / "lost", lambda raw: raw.pop("step_kernel_params"))
    with pytest.raises(InputFileError, match="step kernels differ from this runtime's; recompile it"):
        EventRuntime(tmp_path / "lost")
    for bad in (0, "12", 2.5):
        _copy(cut_dir, tmp_path / f"bad{bad}", lambda raw, bad=bad: raw.update(step_kernel_params=bad))
        with pytest.raises(InputFileError, match="step_kernel_params"):
            EventRuntime(tmp_path / f"bad{bad}")


def test_a_limit_below_one_is_refused(tmp_path):
    layer_graph, params = lower(_net())
    with pytest.raises(TargetError, match="max_step_params must be at least 1"):
        compile_artifact(layer_graph, params, tmp_path / "x", max_step_params=0)
    assert not (tmp_path / "x").exists()


ODD = """
graph @odd(%x: analog[7]) attributes {timesteps = 3} {
  %e = encode(%x) : analog[7]
  %l0 = linear(%e) params {weight = "l0.weight", bias = "l0.bias"} : analog[13]
  %n0 = neuron(%l0) {v_init = 0.5} : spike[13]
  %l1 = linear(%n0) params {weight = "l1.weight", bias = "l1.bias"} : analog[11]
  %n1 = neuron(%l1) {v_init = 0.5} : spike[11]
  %l2 = linear(%n1) params {weight = "l2.weight"} : analog[5]
  %out = readout(%l2) : analog[5]
  output %out
}
"""


def test_workers_share_one_list_of_kernels(tmp_path, monkeypatch):
    """prepare_objects: the worker processes take kernels from one shared list (each claimed
    once); every kernel's object file is in the cache afterwards, none half-written."""
    from snnc.backends.tvm import kernel_cache

    if kernel_cache.default_threads() < 2:
        pytest.skip("one CPU: kernels are compiled in this process")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty disk cache
    layer_graph, _ = lower(graph_from_text(ODD, seed=2))  # shapes no other test compiles
    plans = plan_graph(layer_graph, Device.CPU)
    kernels = [k for p in plans for k in p.kernels()]
    steps = [c for items in fuse_all(plans) for c in items]
    pending = [k for k in kernels + steps if k not in kernel_cache._OBJECTS]
    assert len(pending) >= 4
    kernel_cache.prepare_objects(pending)
    assert all(kernel_cache._object_path(k).exists() for k in pending)
    assert not list((tmp_path / "snnc" / "tvm").glob("*.tmp.o"))


def fuse_all(plans) -> list[list]:
    """Every step kernel (and chunk) to compile, per batch variant."""
    from snnc.backends.tvm.steps import step_kernels

    return [
        [c for k in items if isinstance(k, StepKernel) for c in k.compiled()]
        for items in step_kernels(plans, Device.CPU).values()
    ]


def test_the_runtime_checks_every_buffer_once(artifacts):
    """An artifact's kernels are built without per-call argument checks; the runtime checks each
    call's buffers against the kernel's declared shapes and dtypes when it binds them."""
    import tvm

    from snnc.backends.tvm.runtime import check_buffers

    _, whole_dir, _ = artifacts
    rt = EventRuntime(whole_dir)
    for batch in (1, 3):
        layers = rt._build(batch).layers
        calls = [c for c in step_program(rt.plans, 1 if batch == 1 else None) if isinstance(c, KernelCall)]
        for call in calls:
            check_buffers(call, [layers[a.layer][a.role] for a in call.args], batch)
    call = calls[1]
    tensors = [layers[a.layer][a.role] for a in call.args]
    at = [a.role for a in call.args].index("acc")
    n = int(tensors[at].shape[1])
    for wrong in (tvm.runtime.empty((2, n), "float32"), tvm.runtime.empty((3, n), "int32")):
        bad = tensors[:at] + [wrong] + tensors[at + 1 :]
        with pytest.raises(TargetError, match=f"layer '{call.layer}': kernel .* takes acc as float32 \\[3, {n}\\]"):
            check_buffers(call, bad, 3)
