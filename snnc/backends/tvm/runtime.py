"""Run a TVM event artifact (``format.md``; compiled by :mod:`snnc.backends.tvm.build`).

:class:`EventRuntime` runs it over T timesteps on batches of samples.  It imports numpy,
safetensors and TVM only (no torch).  Per timestep, an event-mode layer is one kernel call that
reads its input's spike list and writes the next one; a dense-mode layer is a densify kernel, a
BLAS matmul (numpy) and a neuron kernel.  A layer that reads the analog (direct-coded) input
gets the same current every step, so it is computed once per batch.
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
from snnc.backends.tvm.build import GRAPH, LIB, PARAMS
from snnc.backends.tvm.kernels import Device, Events, LayerKernel, conv_out_size
from snnc.backends.tvm.layers import Artifact, LayerOp, Mode, Window
from snnc.backends.tvm.plan import LayerPlan, Value, ValueKind, plan_graph
from snnc.errors import InputFileError, TargetError


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


@dataclass
class _Buffers:
    """Everything a batch size needs: each layer's preallocated (64-B aligned) tensors by role
    (``acc``, ``v``, ``cnt_out``, ...), the calls of one timestep, and the calls made once per
    batch (the direct-coded input currents)."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[Callable[[], None]] = field(default_factory=list)
    per_batch: list[Callable[[np.ndarray], None]] = field(default_factory=list)


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


class EventRuntime:
    """Loads an artifact directory and runs it over T timesteps on batches of samples."""

    def __init__(self, artifact_dir: str | Path) -> None:
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
            missing = [k.name for k in plan.kernels() if k.name not in stored]
            if missing:
                raise InputFileError(
                    f"{d}: layer '{plan.name}' needs kernels {missing} that the artifact lacks; recompile it"
                )
        self._functions = {k.name: self.lib[k.name] for p in self.plans for k in p.kernels()}
        self._by_batch: dict[int, _Buffers] = {}
        self._params_on_device: dict[str, Any] = {}

    @property
    def timesteps(self) -> int:
        return self.graph.timesteps

    # -- buffers and steps of one batch size ----------------------------------------------
    def _tensor(self, shape, dtype, fill=0) -> Any:
        t = tvm.runtime.empty(tuple(int(s) for s in shape), dtype, self.dev)
        t.copyfrom(np.full(tuple(shape), fill, dtype=dtype))
        return t

    def _param_tensor(self, name: str) -> Any:
        """A parameter as a device tensor, shared by every batch size."""
        t = self._params_on_device.get(name)
        if t is None:
            t = self._params_on_device[name] = tvm.runtime.tensor(
                np.ascontiguousarray(self.params[name]), self.dev
            )
        return t

    def _build(self, batch: int) -> _Buffers:
        """Allocate every buffer for ``batch`` samples and bind each layer's kernel calls."""
        buf = _Buffers()
        values: dict[str, dict[str, Any]] = {}
        values[self.graph.input.name] = {}
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
                    t["vth" if role == "v_th" else role] = self._param_tensor(pnames[role])
            if layer.neuron is not None:
                t["v"] = self._tensor((batch, n), adt)
                v0 = self.params[pnames["v_init"]]  # per channel; channels are innermost
                t["v0"] = np.ascontiguousarray(np.broadcast_to(np.tile(v0, n // v0.size), (batch, n)))
                t["stats"] = self._tensor((batch,), "int32")
                v_reset = layer.neuron.v_reset
                t["vreset"] = int(v_reset) if adt == "int32" else float(v_reset)
            if layer.readout is not None:
                t["rsum"] = self._tensor((batch, n), adt)
            if plan.op is LayerOp.SPIKE_MAXPOOL:  # accumulated spike counts of its inputs
                t["count"] = self._tensor((batch, plan.inputs[0].n), adt)
            self._bind_layer(plan, batch, values, t, buf)
            values[plan.name] = buf.layers[plan.name] = t
        return buf

    def _bind_layer(self, plan: LayerPlan, batch: int, values: dict, t: dict, buf: _Buffers) -> None:
        main = plan.kernel_for(batch)
        fn = self._functions[main.name]
        layer = plan.layer
        args_by_name = dict(t)
        x = plan.inputs[0]
        if plan.mode is Mode.DENSE:
            adt = layer.precision.acc_dtype
            cur = self._tensor((batch, plan.output.n), adt)
            args_by_name["cur0"] = cur
            t["cur"] = cur
            weight = self.params[self.artifact.files[plan.name].params["weight"]]
            w_host = weight.astype(np.float64) if adt == "int32" else weight
            compute = self._dense_current(plan, w_host, cur, x)
            if x.kind is ValueKind.ANALOG:
                buf.per_batch.append(compute)  # direct coding: one current for all steps
            elif x.kind is ValueKind.CURRENT:  # the producer's current is already dense
                src = values[layer.inputs[0]]["acc"]

                def from_current(compute=compute, src=src) -> None:
                    compute(self._host_view(src))

                buf.steps.append(from_current)
            else:
                dense_in = self._tensor((batch, x.n), adt)
                dk = plan.densify_for(batch)
                dargs = self._event_args(dk, [values[layer.inputs[0]]]) + [dense_in]
                dfn = self._functions[dk.name]

                def from_events(dfn=dfn, dargs=dargs, compute=compute, dense_in=dense_in) -> None:
                    dfn(*dargs)
                    compute(self._host_view(dense_in))

                buf.steps.append(from_events)

        else:
            for i, src in enumerate(layer.inputs):
                value = values[src]
                if plan.inputs[i].kind is ValueKind.CURRENT:
                    args_by_name[f"cur{i}"] = value["acc"]
                else:
                    args_by_name[f"cnt{i}"] = value["cnt_out"]
                    args_by_name[f"idx{i}"] = value["idx_out"]
                    if plan.inputs[i].graded:
                        args_by_name[f"val{i}"] = value["val_out"]
        args = [args_by_name[a] for a in main.arg_names()]

        def call(fn=fn, args=args) -> None:
            fn(*args)

        buf.steps.append(call)

    def _host_view(self, tensor) -> np.ndarray:
        """A numpy view of a CPU tensor (zero-copy), or a host copy of a device tensor."""
        return np.from_dlpack(tensor) if self.device_kind is Device.CPU else tensor.numpy()

    @staticmethod
    def _event_args(kernel: LayerKernel, sources: list[dict]) -> list:
        args = []
        for i, operand in enumerate(kernel.operands):
            args += [sources[i]["cnt_out"], sources[i]["idx_out"]]
            if isinstance(operand, Events) and operand.graded:
                args.append(sources[i]["val_out"])
        return args

    def _dense_current(self, plan: LayerPlan, w: np.ndarray, cur, x: Value) -> Callable[[np.ndarray], None]:
        """A function that writes W·input (BLAS; exact float64 for int8) into ``cur``."""
        layer = plan.layer
        integer = cur.dtype == "int32"
        in_hwc = x.hwc or (x.n,)

        def compute(dense: np.ndarray) -> None:
            src = dense.astype(np.float64) if integer else dense
            if plan.op is LayerOp.LINEAR:
                res = src.reshape(src.shape[0], -1) @ w
            else:
                res = _dense_conv_hwc(src.reshape((src.shape[0], *in_hwc)), w, layer.geometry)
            res = res.reshape(res.shape[0], -1)
            if self.device_kind is Device.CPU:
                np.from_dlpack(cur)[...] = res
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
        gated max pooling's spike counts zero."""
        for t in buf.layers.values():
            if "count" in t:
                t["count"].copyfrom(np.zeros(t["count"].shape, t["count"].dtype))
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
        with (
            _blas_single_thread()
            if any(p.mode is Mode.DENSE for p in self.plans)
            else contextlib.nullcontext()
        ):
            return self._run(enc, steps, batch_size, record_state)

    def _run(self, enc: np.ndarray, steps: int, batch_size: int, record_state: bool) -> dict:
        out_plan = next(p for p in self.plans if p.name == self.graph.output)
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
            for _ in range(steps):
                for step in buf.steps:
                    step()
            rsum = buf.layers[out_plan.name]["rsum"].numpy().astype(np.float64)
            logits.append(self._to_chw(rsum, out_plan.output) / steps)
            for plan in self.plans:
                t = buf.layers.get(plan.name, {})
                if "stats" in t:
                    spikes.setdefault(plan.name, []).append(t["stats"].numpy().astype(np.int64))
                if record_state and "v" in t:
                    v = self._to_chw(t["v"].numpy(), plan.output)
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

    @staticmethod
    def _to_chw(flat: np.ndarray, sig: Value) -> np.ndarray:
        """[B, n] in the runtime's order -> [B, n] in PyTorch's (channels-first) order."""
        if sig.hwc is None or len(sig.shape) != 3:
            return flat
        h, w, c = sig.hwc
        return flat.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(flat.shape[0], -1)
