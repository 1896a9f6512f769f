"""Run a TVM event artifact (``format.md``; compiled by :mod:`snnc.backends.tvm.build`).

:class:`EventRuntime` runs it over T timesteps on batches of samples.  It imports numpy,
safetensors and TVM only (no torch).  Per timestep, an event-mode layer is one kernel call that
reads its input's spike list and writes the next one; a dense-mode layer is a densify kernel, a
BLAS matmul (numpy) and a neuron kernel, except a convolution on a current (a linear
bottleneck's output), whose kernel computes the product itself (no host call).  The mode is
per batch variant: a batch of one sample runs the batch-1 kernels in their own mode
(``LayerSpec.mode_batch1``).  A layer that reads the analog (direct-coded) input gets the same
current every step, so it is computed once per batch.

Order of the calls: step-major (every layer of step t, then step t + 1; through the step
kernels, one call into the library for all T steps where no host call splits a step), or, for
a batch of one sample of a network whose weights exceed ``steps.LAYER_MAJOR_MIN_WEIGHT_BYTES``,
*layer-major*: each layer runs its steps of a block of up to ``steps.LAYER_MAJOR_STEPS`` steps
before the next layer runs them (each step writes its own spike list and current, so the next
layer reads the list of the same step), and its weights stay in the cache for the block instead
of being fetched again at every step.  The per-step buffers are held once per step of a block
(resnet18 at 3x32x32, batch 1: about 1 MB per step).  A step of a layer depends only on its own state and on
its inputs at the same step, so both orders make the same calls with the same arguments: the
results are equal bit for bit (``tests/test_tvm_runtime.py``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from safetensors.numpy import load_file

from snnc.backends.tvm import kernel_cache  # sets TVM_NUM_THREADS (read at TVM's first parallel call)
from snnc.backends.tvm import steps as step_rules  # its LAYER_MAJOR_* constants, read when used
from snnc.backends.tvm.build import GRAPH, LIB, PARAMS
from snnc.backends.tvm.kernels import Device, LayerKernel, conv_out_size
from snnc.backends.tvm.layers import Artifact, LayerOp, Window
from snnc.backends.tvm.plan import LayerPlan, Value, ValueKind, plan_graph
from snnc.backends.tvm.steps import (
    PER_STEP_ROLES,
    HostCall,
    KernelCall,
    StepKernel,
    layer_major_step_kernels,
    step_kernels,
    step_program,
    weight_bytes,
)
from snnc.errors import InputFileError, TargetError

# Layer-major order (module docstring) at batch 1 for networks with more weights than
# steps.LAYER_MAJOR_MIN_WEIGHT_BYTES: a sample's step reads each large layer's weight rows of the
# active inputs from the shared L3 (resnet18's 47 MB) and the next step fetches them again;
# layer-major keeps them in L2 for a block of steps.LAYER_MAJOR_STEPS steps.  Measured (one
# thread, batch 1, T = 16, each kernel called from Python in both orders, CPU time per
# sample-step): resnet18 500 -> 284 µs (1.76x; blocks of 4 steps: 1.47x), mobilenet_v2 (16 MB)
# 645 -> 450 µs (1.43x), the synthetic MLP (36 MB) 263 -> 255 µs; the synthetic CNN (0.4 MB,
# already in cache) 128 -> 134 µs, slower by the extra spike lists it writes.  Batch 32 gains
# only 1.05-1.07x (a batched call already reuses each row across the samples) for T times the
# lists' memory, so batches keep the step-major order.  The artifact's layer-major step kernels
# (steps.layer_major_step_kernels) make a block one call per step kernel; without them (a step
# with a host call, an artifact written before) the runtime makes one call per kernel and step.


def _dense_conv_hwc(x: np.ndarray, w: np.ndarray, g: Window) -> np.ndarray:
    """Dense conv of channels-last x [B, H, W, Ci] with w [Ci, KH, KW, Co/groups] via one BLAS
    product (grouped: one batched product over the groups)."""
    (sh, sw), (ph, pw), (dh, dw) = g.stride, g.padding, g.dilation
    kh, kw = g.kernel
    b, h, wd, ci = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(wd, kw, sw, pw, dw)
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]  # [B, OH, OW, Ci, KH, KW]
    if g.groups == 1:
        return np.tensordot(win, w, axes=([3, 4, 5], [0, 1, 2]))  # [B, OH, OW, Co]
    gs = g.groups
    win = win.reshape(b, oh, ow, gs, ci // gs, kh, kw)
    wg = w.reshape(gs, ci // gs, kh, kw, w.shape[3])
    res = np.einsum("bhwgikl,giklo->bhwgo", win, wg, optimize=True)
    return res.reshape(b, oh, ow, gs * w.shape[3])


def _im2col_index(in_hwc: tuple[int, ...], g: Window) -> np.ndarray:
    """[OH·OW, Ci·KH·KW] indices into a flat channels-last input with one zero appended (index
    H·W·Ci, read by the taps that fall into the padding); columns in the weight's [Ci, KH, KW]
    order."""
    h, w, ci = in_hwc
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(w, kw, sw, pw, dw)
    yy = (np.arange(oh) * sh - ph)[:, None, None, None] + (np.arange(kh) * dh)[None, None, :, None]
    xx = (np.arange(ow) * sw - pw)[None, :, None, None] + (np.arange(kw) * dw)[None, None, None, :]
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)  # [OH, OW, KH, KW]
    idx = ((yy * w + xx) * ci)[:, :, None] + np.arange(ci)[None, None, :, None, None]  # [OH, OW, Ci, KH, KW]
    idx = np.where(inside[:, :, None], idx, h * w * ci)
    return idx.reshape(oh * ow, ci * kh * kw).astype(np.intp)


@dataclass
class _Buffers:
    """Everything a batch size needs: each layer's preallocated (64-B aligned) tensors by role
    (``acc``, ``v``, ``cnt_out``, ...), the calls of one timestep, and the calls made once per
    batch (the direct-coded input currents)."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[Callable[[], None]] = field(default_factory=list)
    per_batch: list[Callable[[np.ndarray], None]] = field(default_factory=list)
    run_all: Callable[[int], None] | None = None  # one step kernel runs all T steps (no ``steps``)
    # batch 1, layer-major: the artifact's layer-major step kernels, each called with a block's steps
    block_calls: list[Callable[[int], None]] = field(default_factory=list)
    resets: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)  # CPU: (view, value)


def check_buffers(call: KernelCall, tensors: list, batch: int) -> None:
    """Check, once when a call is bound, that every buffer has the shape (``B`` = ``batch``) and
    dtype its kernel declares: an artifact's kernels are built without per-call argument checks
    (``kernel_cache._pass_config``), so a mismatch here would otherwise go unnoticed."""
    shapes = call.kernel.arg_shapes()
    for name, arg, tensor in zip(call.kernel.arg_names(), call.args, tensors, strict=True):
        if name not in shapes:  # a scalar
            continue
        dims, dtype = shapes[name]
        want = [batch if d == "B" else int(d) for d in dims]
        got = [int(s) for s in tensor.shape]
        if (got, str(tensor.dtype)) != (want, dtype):
            raise TargetError(
                f"layer '{call.layer}': kernel {call.kernel.name} takes {name} as {dtype} {want}, "
                f"the runtime's {arg.layer}.{arg.role} is {tensor.dtype} {got}"
            )


def fn_steps(fn: Callable[..., Any], args: list, steps: int) -> None:
    """Call a step kernel for ``steps`` timesteps."""
    fn(steps, *args)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded (numpy's), found once: 14 µs per use
    instead of ~0.8 ms for a fresh search; None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ModuleNotFoundError:
        return None
    return ThreadpoolController()


def _blas_single_thread() -> contextlib.AbstractContextManager:
    """A context in which numpy's BLAS (the dense-mode layers) runs on one thread.

    Inside the step loop the CPUs belong to TVM's thread pool, whose workers spin between
    kernels; a multi-threaded BLAS call competing with them was measured 6-20x slower
    (synthetic 2048-wide MLP, batch 1, 2 loaded cores: 15 ms instead of 0.8 ms per dense
    layer).  threadpoolctl is optional: without it BLAS keeps its threads (correct, slower)."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


# multiply-accumulates per sample from which a per-batch BLAS product may start threads: OpenBLAS
# threads an im2col product by its rows, so a conv with few weights can start them too (the
# synthetic CNN's 3 -> 32 input conv, 864 weights and 0.9 M MACs: 955 µs of the calling thread's
# CPU per sample with BLAS's threads on the 2 busy cores, 157 µs on one thread)
BLAS_THREADED = 1 << 16


def _competes(plan: LayerPlan, params: dict, files: dict, batch: int | None) -> bool:
    """Whether a layer's BLAS product in the ``batch`` variant (1, or None: any size) may run
    multi-threaded against TVM's pool: every dense layer that reads events or currents (a
    product per step), and a large one on the analog input.  Limiting BLAS costs ~15-300 µs per
    run (threadpoolctl), so small products, and variants without products, skip it."""
    if not plan.host_product(batch):
        return False
    if plan.inputs[0].kind is not ValueKind.ANALOG:
        return True
    pixels = plan.output.n // plan.layer.channels  # a conv's output positions (1: linear)
    return params[files[plan.name].params["weight"]].size * pixels >= BLAS_THREADED


class EventRuntime:
    """Loads an artifact directory and runs it over T timesteps on batches of samples."""

    def __init__(self, artifact_dir: str | Path, fused: bool = True, order: str = "auto") -> None:
        """``fused=False`` calls every layer kernel from Python (one call per kernel per step)
        even where the artifact has step kernels: the baseline the benchmark compares with.
        ``order``: ``"auto"`` (layer-major for a batch of one sample of a network with more than
        LAYER_MAJOR_MIN_WEIGHT_BYTES of weights, else step-major), ``"step"`` or ``"layer"``
        (for every batch size; see the module docstring)."""
        if order not in ("auto", "step", "layer"):
            raise TargetError(f"order must be 'auto', 'step' or 'layer', got {order!r}")
        d = Path(artifact_dir)
        for f in (LIB, GRAPH, PARAMS):
            if not (d / f).is_file():
                raise InputFileError(f"{d}: not a TVM event artifact ({f} is missing)")
        self.artifact = Artifact.read(d / GRAPH)  # checked once, here
        self.graph = self.artifact.graph
        self.device_kind = self.artifact.target
        if self.device_kind is Device.CUDA and not kernel_cache.cuda_available():
            raise TargetError(f"{d}: the artifact was compiled for CUDA and this machine has no CUDA device")
        self.dev = tvm.cuda(0) if self.device_kind is Device.CUDA else tvm.cpu(0)
        self.lib = tvm.runtime.load_module(str(d / LIB))
        self.params = load_file(str(d / PARAMS))
        for name, files in self.artifact.files.items():
            absent = sorted(set(files.params.values()) - set(self.params))
            if absent:
                raise InputFileError(f"{d / PARAMS}: layer '{name}' needs {absent}, which the file lacks")
        self.plans = plan_graph(self.graph, self.device_kind)
        for plan in self.plans:
            layer_files = self.artifact.files.get(plan.name)
            stored = (layer_files.batch1 + layer_files.any_batch) if layer_files is not None else ()
            blocked = [plan.block] if plan.block is not None and self.artifact.layer_major_steps else []
            missing = [k.name for k in plan.kernels() + blocked if k.name not in stored]
            if missing:
                raise InputFileError(
                    f"{d}: layer '{plan.name}' needs kernels {missing} that the artifact lacks; recompile it"
                )
        self._functions = {k.name: self.lib[k.name] for p in self.plans for k in p.kernels()}
        self.fused = fused
        self._layer_major_kernels: list[StepKernel] = []  # batch 1, layer-major (the artifact's)
        self._step_kernels = self._check_step_kernels(d)
        self._out_plan = next(p for p in self.plans if p.name == self.graph.output)
        self._blas_competes = {
            variant: any(_competes(p, self.params, self.artifact.files, variant) for p in self.plans)
            for variant in (None, 1)
        }
        self._by_batch: dict[int, _Buffers] = {}
        self._params_on_device: dict[str, Any] = {}
        self.order = order
        self.weight_bytes = weight_bytes(  # the layers' weights as stored (what order "auto" goes by)
            [self.params[f.params["weight"]] for f in self.artifact.files.values() if "weight" in f.params]
        )
        self._block_sets: dict[int, list[_Buffers]] = {}  # layer-major: a block's buffers, by batch

    def _check_step_kernels(self, d: Path) -> dict[int | None, list[StepKernel | HostCall]]:
        """The step kernels re-derived from the plan, checked against those the artifact lists
        (none listed: an artifact without them, or CUDA; the runtime calls each kernel)."""
        listed = self.artifact.step_kernels
        if not listed:
            return {}
        derived = step_kernels(self.plans, self.device_kind, self.artifact.step_kernel_params)
        for key, variant in (("any_batch", None), ("batch1", 1)):
            names = tuple(k.name for k in derived.get(variant, []) if isinstance(k, StepKernel))
            if listed.get(key, ()) != names:
                raise InputFileError(f"{d}: its {key} step kernels differ from this runtime's; recompile it")
        if self.artifact.layer_major_steps:
            limit = self.artifact.step_kernel_params
            layer_major = layer_major_step_kernels(
                self.plans, self.device_kind, limit if limit is not None else 1 << 30, self.artifact.layer_major_steps
            )
            if listed.get("batch1_layer_major", ()) != tuple(k.name for k in layer_major):
                raise InputFileError(f"{d}: its batch1_layer_major step kernels differ from this runtime's; recompile it")
            self._layer_major_kernels = layer_major
        return derived

    @property
    def fused_calls(self) -> bool:
        """Whether runs go through the step kernels (fewer calls into the library)."""
        return self.fused and bool(self._step_kernels)

    @property
    def timesteps(self) -> int:
        return self.graph.timesteps

    def layer_major(self, batch: int) -> bool:
        """Whether a batch of ``batch`` samples runs in layer-major order (module docstring)."""
        if self.order != "auto" or self.device_kind is not Device.CPU:
            return self.order == "layer"
        return batch == 1 and self.weight_bytes > step_rules.LAYER_MAJOR_MIN_WEIGHT_BYTES

    def _blocks_in_library(self, batch: int) -> bool:
        """Whether a batch runs through the artifact's layer-major step kernels (batch 1 in
        layer-major order, fused calls, an artifact that has them)."""
        return batch == 1 and self.fused and self.layer_major(1) and bool(self._layer_major_kernels)

    # -- buffers and steps of one batch size ----------------------------------------------
    def _tensor(self, shape, dtype, fill=0) -> Any:
        t = tvm.runtime.empty(tuple(int(s) for s in shape), dtype, self.dev)
        t.copyfrom(np.full(tuple(shape), fill, dtype=dtype))
        return t

    def _param_tensor(self, name: str, kernel: LayerKernel | None = None) -> Any:
        """A parameter as a device tensor, shared by every batch size; with ``kernel``, a weight
        in the layout that kernel reads (``LayerKernel.kernel_weight``: a tiled linear or a
        depthwise conv kernel's own, kept beside the plain one that other variants and BLAS read)."""
        key = f"{name}@{kernel.name}" if kernel is not None and kernel.own_weight_layout else name
        t = self._params_on_device.get(key)
        if t is None:
            value = self.params[name] if kernel is None else kernel.kernel_weight(self.params[name])
            t = self._params_on_device[key] = tvm.runtime.tensor(np.ascontiguousarray(value), self.dev)
        return t

    def _build(self, batch: int, shared: _Buffers | None = None) -> _Buffers:
        """Allocate every buffer for ``batch`` samples and bind the calls of one timestep.
        With ``shared`` (another step of a layer-major block): only the per-step buffers are new,
        the state (membranes, counts, readout sums, a direct-coded input's current) is
        ``shared``'s, and every kernel is its own call (the block orders the calls)."""
        buf = _Buffers()
        values: dict[str, dict[str, Any]] = {}
        values[self.graph.input.name] = {}
        host: dict[str, Callable[[], None]] = {}  # dense layers' BLAS products, by layer
        for plan in self.plans:
            layer = plan.layer
            if layer.op is LayerOp.FLATTEN:
                values[plan.name] = values[layer.inputs[0]]
                continue
            out = plan.output
            n = out.n
            adt = layer.precision.acc_dtype
            t: dict[str, Any] = {"acc": self._tensor((batch, n), adt)}
            if out.kind is ValueKind.EVENTS:
                t["cnt_out"] = self._tensor((batch,), "int32")
                t["idx_out"] = self._tensor((batch, n), "int32")
                if out.graded:
                    t["val_out"] = self._tensor((batch, n), adt)
            pnames = self.artifact.files[plan.name].params
            for role in pnames:
                if role in ("weight", "bias", "v_th", "beta") or role.startswith(("map", "mul")):
                    kernel = plan.kernel_for(batch) if role == "weight" else None
                    t["vth" if role == "v_th" else role] = self._param_tensor(pnames[role], kernel)
            if layer.neuron is not None:
                t["v"] = self._tensor((batch, n), adt)
                v0 = self.params[pnames["v_init"]]  # per channel; channels are innermost
                t["v0"] = np.ascontiguousarray(np.broadcast_to(np.tile(v0, n // v0.size), (batch, n)))
                t["stats"] = self._tensor((batch,), "int32")
                v_reset = layer.neuron.v_reset
                t["vreset"] = int(v_reset) if adt == "int32" else float(v_reset)
            if layer.readout is not None:
                t["rsum"] = self._tensor((batch, n), adt)
            if plan.block is not None and shared is None and self._blocks_in_library(batch):
                # mode BLOCK: the tiled weights its kernel over a block of steps reads
                t["tiled_weight"] = self._param_tensor(pnames["weight"], plan.block)
            if plan.op is LayerOp.SPIKE_MAXPOOL:  # accumulated spike counts of its inputs
                t["count"] = self._tensor((batch, plan.inputs[0].n), adt)
                t["win"] = self._tensor((batch, n), "int32")  # each window's winner + 1 (CPU kernels)
            if plan.host_product(batch):  # the batch-1 kernels may run another mode or in-kernel
                self._bind_dense(plan, batch, values, t, buf, host)
            if shared is not None:  # state and per-batch currents: the block's first step's
                mine = shared.layers[plan.name]
                per_step = PER_STEP_ROLES | ({"cur"} if plan.inputs[0].kind is not ValueKind.ANALOG else set())
                t.update({role: value for role, value in mine.items() if role not in per_step})
            values[plan.name] = buf.layers[plan.name] = t
        self._bind_steps(batch, buf, host, fused=self.fused_calls and shared is None and not self.layer_major(batch))
        if shared is None and self._blocks_in_library(batch):
            self._bind_blocks(buf)
        return buf

    def _bind_blocks(self, buf: _Buffers) -> None:
        """Bind the layer-major step kernels of batch 1: each per-step buffer becomes one
        ``[block, row]`` tensor (``StepKernel.block_shape``) whose rows the kernels pass to the
        layer kernels; state and parameters are ``buf``'s."""
        sliced: dict[tuple[str, str], Any] = {}
        for kernel in self._layer_major_kernels:
            args = []
            for a in kernel.params:
                one = buf.layers[a.layer][a.role]
                if kernel.per_step(a):
                    key = (a.layer, a.role)
                    if key not in sliced:
                        sliced[key] = self._tensor(kernel.block_shape(a), str(one.dtype))
                    one = sliced[key]
                args.append(one)
            fn = self.lib[kernel.name]

            def call(n: int, fn=fn, args=args) -> None:
                fn(n, *args)

            buf.block_calls.append(call)

    def _bind_dense(
        self, plan: LayerPlan, batch: int, values: dict, t: dict, buf: _Buffers, host: dict
    ) -> None:
        """A dense layer's buffers (``cur``, ``dense_in``) and its BLAS product: once per batch
        for the analog input, else a host call of every timestep."""
        adt = plan.layer.precision.acc_dtype
        x = plan.inputs[0]
        t["cur"] = self._tensor((batch, plan.output.n), adt)
        weight = self.params[self.artifact.files[plan.name].params["weight"]]
        w_host = weight.astype(np.float64) if adt == "int32" else weight
        compute = self._dense_current(plan, w_host, t["cur"], x)
        if x.kind is ValueKind.ANALOG:
            buf.per_batch.append(compute)  # direct coding: one current for all steps
            return
        if x.kind is ValueKind.CURRENT:  # the producer's current is already dense
            src = values[plan.layer.inputs[0]]["acc"]
        else:
            src = t["dense_in"] = self._tensor((batch, x.n), adt)

        def product(compute=compute, src=src) -> None:
            compute(self._host_view(src))

        host[plan.name] = product

    def _bind_steps(self, batch: int, buf: _Buffers, host: dict, fused: bool) -> None:
        """The calls of one timestep: with ``fused``, the step kernels (one call for all
        timesteps when no host call splits the step), else one call per kernel."""
        variant = 1 if batch == 1 else None
        program = step_program(self.plans, variant)
        for kc in program:
            if isinstance(kc, KernelCall):
                check_buffers(kc, [buf.layers[a.layer][a.role] for a in kc.args], batch)
        items: list[KernelCall | HostCall | StepKernel] = list(program)
        if fused:
            items = list(self._step_kernels[variant])
        for item in items:
            if isinstance(item, HostCall):
                buf.steps.append(host[item.layer])
                continue
            args = [
                buf.layers[a.layer][a.role]
                for a in (item.params if isinstance(item, StepKernel) else item.args)
            ]
            if isinstance(item, StepKernel):
                fn = self.lib[item.name]
                if len(items) == 1:
                    buf.run_all = functools.partial(fn_steps, fn, args)
                    return

                def segment(fn=fn, args=args) -> None:
                    fn(1, *args)

                buf.steps.append(segment)
                continue
            kfn = self._functions[item.kernel.name]

            def call(fn=kfn, args=args) -> None:
                fn(*args)

            buf.steps.append(call)

    def _host_view(self, tensor) -> np.ndarray:
        """A numpy view of a CPU tensor (zero-copy), or a host copy of a device tensor."""
        return np.from_dlpack(tensor) if self.device_kind is Device.CPU else tensor.numpy()

    def _dense_current(self, plan: LayerPlan, w: np.ndarray, cur, x: Value) -> Callable[[np.ndarray], None]:
        """A function that writes W·input (BLAS; exact float64 for int8) into ``cur``.

        A conv without groups is one GEMM over an im2col gather whose indices are computed
        here, once (padding reads a zero appended to the input); the generic sliding-window
        path (grouped convs) costs ~100 µs of numpy overhead per call at batch 1."""
        layer = plan.layer
        integer = cur.dtype == "int32"
        in_hwc = x.hwc or (x.n,)
        on_cpu = self.device_kind is Device.CPU
        cur_view = np.from_dlpack(cur) if on_cpu else None
        gather = None
        if plan.op is LayerOp.CONV2D and layer.geometry.groups == 1:
            gather = _im2col_index(x.hwc or (1, 1, x.n), layer.geometry)
            w = np.ascontiguousarray(w.reshape(-1, w.shape[-1]))  # [Ci·KH·KW, Co]

        def compute(dense: np.ndarray) -> None:
            src = dense.astype(np.float64) if integer else dense
            b = src.shape[0]
            if plan.op is LayerOp.LINEAR:
                res = src.reshape(b, -1) @ w
            elif gather is not None:
                padded = np.zeros((b, x.n + 1), src.dtype)
                padded[:, : x.n] = src.reshape(b, -1)
                res = padded[:, gather].reshape(-1, gather.shape[1]) @ w
            else:
                res = _dense_conv_hwc(src.reshape((b, *in_hwc)), w, layer.geometry)
            res = res.reshape(b, -1)
            if cur_view is not None:
                cur_view[...] = res
            else:
                cur.copyfrom(np.ascontiguousarray(res, dtype=cur.dtype))

        return compute

    # -- running ---------------------------------------------------------------------------
    def _encode_input(self, x: np.ndarray) -> np.ndarray:
        """[B, C, H, W] (or [B, n]) float input -> flat channels-last, quantised for int8 layers."""
        shape = self.graph.input.shape
        if len(shape) == 3 and shape[1] == 1 and x.shape[1:] == (shape[0], shape[2]):
            x = x.reshape(x.shape[0], *shape)  # a [C, L] input (conv1d) runs as [C, 1, L]
        if x.shape[1:] != shape:
            raise TargetError(
                f"input has shape {list(x.shape[1:])} per sample, the network expects {list(shape)}"
            )
        x = np.asarray(x, dtype=np.float32)
        if len(shape) == 3:
            x = x.transpose(0, 2, 3, 1)
        x = x.reshape(x.shape[0], -1)
        qs = self.graph.input.quant_scale
        if qs is not None:
            x = np.clip(np.rint(x * np.float32(qs)), -128, 127)
        return np.ascontiguousarray(x)

    def _reset(self, buf: _Buffers) -> None:
        """Restore the state of a new batch: v = v_init·v_th; counters, readout sums and the
        gated max pooling's spike counts and winners zero (on the CPU through numpy views made once: a
        ``copyfrom`` per buffer cost ~70 µs per batch for the digits CNN)."""
        if self.device_kind is Device.CPU:
            if not buf.resets:
                for t in buf.layers.values():
                    for role in ("count", "win", "v", "stats", "rsum"):
                        if role in t:
                            buf.resets.append((np.from_dlpack(t[role]), t["v0"] if role == "v" else None))
            for view, value in buf.resets:
                if value is None:
                    view.fill(0)
                else:
                    view[...] = value
            return
        for t in buf.layers.values():
            for role in ("count", "win"):
                if role in t:
                    t[role].copyfrom(np.zeros(t[role].shape, t[role].dtype))
            if "v" in t:
                t["v"].copyfrom(t["v0"])
                t["stats"].copyfrom(np.zeros(t["stats"].shape, np.int32))
            if "rsum" in t:
                t["rsum"].copyfrom(np.zeros(t["rsum"].shape, t["rsum"].dtype))

    def run(
        self, x: np.ndarray, timesteps: int | None = None, batch_size: int = 64, record_state: bool = False
    ) -> dict:
        """Simulate ``timesteps`` steps (default: the graph's) on inputs ``x`` [N, *input shape].

        Returns ``logits`` [N, classes] (the readout's running mean at the last step),
        ``predictions`` [N], ``spikes_per_layer`` {layer: [N] spikes per sample over all steps,
        a burst of n counting n}, ``timesteps``; with ``record_state`` also ``membrane``
        {layer: [N, *shape] final v, in the layer's PyTorch (channels-first) layout}.
        """
        steps = self.timesteps if timesteps is None else int(timesteps)
        if steps < 1:
            raise TargetError(f"timesteps must be >= 1, got {steps}")
        if batch_size < 1:
            raise TargetError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x)
        if x.ndim < 2:
            raise TargetError(f"input must be batched [N, ...], got shape {list(x.shape)}")
        enc = self._encode_input(x)
        n = enc.shape[0]
        sizes = {min(batch_size, n), n % batch_size or min(batch_size, n)}  # the chunks' batch sizes
        competes = any(self._blas_competes[1 if b == 1 else None] for b in sizes)
        with _blas_single_thread() if competes else contextlib.nullcontext():
            return self._run(enc, steps, batch_size, record_state)

    def _run(self, enc: np.ndarray, steps: int, batch_size: int, record_state: bool) -> dict:
        out_plan = self._out_plan
        logits: list[np.ndarray] = []
        spikes: dict[str, list[np.ndarray]] = {}
        membranes: dict[str, list[np.ndarray]] = {}
        for start in range(0, enc.shape[0], batch_size):
            chunk = enc[start : start + batch_size]
            batch = chunk.shape[0]
            buf = self._by_batch.get(batch)
            if buf is None:
                buf = self._by_batch[batch] = self._build(batch)
            self._reset(buf)
            for compute in buf.per_batch:
                compute(chunk)
            if self.layer_major(batch):
                self._run_layer_major(buf, batch, steps)
            elif buf.run_all is not None:
                buf.run_all(steps)  # every timestep in one call into the library
            else:
                for _ in range(steps):
                    for step in buf.steps:
                        step()
            rsum = self._host_view(buf.layers[out_plan.name]["rsum"]).astype(np.float64)
            logits.append(self._to_chw(rsum, out_plan.output) / steps)
            for plan in self.plans:
                t = buf.layers.get(plan.name, {})
                if "stats" in t:
                    spikes.setdefault(plan.name, []).append(self._host_view(t["stats"]).astype(np.int64))
                if record_state and "v" in t:
                    v = self._to_chw(self._host_view(t["v"]).copy(), plan.output)
                    membranes.setdefault(plan.name, []).append(v.reshape((batch, *plan.output.shape)))
        lg = np.concatenate(logits).astype(np.float32)
        result = {
            "logits": lg,
            "predictions": np.argmax(lg, axis=1),
            "spikes_per_layer": {k: np.concatenate(v) for k, v in spikes.items()},
            "timesteps": steps,
        }
        if record_state:
            result["membrane"] = {k: np.concatenate(v) for k, v in membranes.items()}
        return result

    def _run_layer_major(self, first: _Buffers, batch: int, steps: int) -> None:
        """``steps`` timesteps in blocks of up to LAYER_MAJOR_STEPS: in a block, each call of
        the timestep (a layer kernel or a host product) runs for every step of the block, step
        k with the k-th step's lists and currents, before the next call runs."""
        if first.block_calls:  # the library's layer-major step kernels: a call each per block
            block = self.artifact.layer_major_steps
            for start in range(0, steps, block):
                for call in first.block_calls:
                    call(min(block, steps - start))
            return
        block = min(steps, step_rules.LAYER_MAJOR_STEPS)
        sets = self._block_sets.setdefault(batch, [first])
        while len(sets) < block:
            sets.append(self._build(batch, shared=first))
        for start in range(0, steps, block):
            span = sets[: min(block, steps - start)]
            for i in range(len(first.steps)):
                for one in span:
                    one.steps[i]()

    @staticmethod
    def _to_chw(flat: np.ndarray, sig: Value) -> np.ndarray:
        """[B, n] in the runtime's order -> [B, n] in PyTorch's (channels-first) order."""
        if sig.hwc is None or len(sig.shape) != 3:
            return flat
        h, w, c = sig.hwc
        return flat.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(flat.shape[0], -1)
