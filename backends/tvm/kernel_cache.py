"""Targets, the per-process compile cache of layer kernels, and library export.

Each distinct :class:`~snnc.backends.tvm.kernels.LayerKernel` (op, shapes, dtypes, structure)
is compiled once per process and target; an artifact's ``lib.so`` links the cached modules of
its kernels together, so two layers of the same shape share one compiled kernel.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from snnc.backends.tvm.kernels import Device, LayerKernel
from snnc.errors import TargetError


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads() -> None:
    """Give TVM's thread pool every CPU unless the user chose (TVM_NUM_THREADS).

    TVM otherwise takes OMP_NUM_THREADS or half the hardware threads on x86 (one thread on a
    2-vCPU machine, about 2x slower); the variable is read at the first parallel call.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(default_threads()))


configure_threads()

import tvm  # noqa: E402  (after TVM_NUM_THREADS is set)

_LOCK = threading.Lock()
_COMPILED: dict[tuple[LayerKernel, str], object] = {}


def target_for(device: Device):
    """The TVM target of a device: LLVM for this CPU (never "native": the wheel's LLVM falls back
    to generic SSE2 for it), or CUDA with this CPU as host."""
    cpu = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    if device is Device.CPU:
        return tvm.target.Target(cpu)
    return tvm.target.Target({"kind": "cuda", "host": cpu})


def cuda_available() -> bool:
    """Whether a CUDA device is present (the CUDA path is built and run only then)."""
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # a TVM build without CUDA support
        return False


def compile_kernel(kernel: LayerKernel):
    """The compiled module (``tvm.runtime.Module``) of one kernel, from the cache when possible."""
    key = (kernel, kernel.device.value)
    with _LOCK:
        mod = _COMPILED.get(key)
    if mod is not None:
        return mod
    try:
        mod = tvm.compile(kernel.prim_func(), target=target_for(kernel.device)).mod
    except Exception as e:  # TVM raises plain errors; keep the generated source findable
        raise TargetError(f"TVM failed to compile kernel {kernel.name} ({kernel.op.value}): {e!r}") from e
    with _LOCK:
        _COMPILED.setdefault(key, mod)
        return _COMPILED[key]


def get_function(kernel: LayerKernel):
    """The callable kernel (arguments in ``kernel.arg_names()`` order, destination-passing)."""
    return compile_kernel(kernel)[kernel.name]


def export_library(kernels: list[LayerKernel], path: str | Path) -> list[str]:
    """Write one shared library holding every distinct kernel; return their names.

    The cached modules are imported into the first one for the export and detached again, so
    the cache stays reusable.
    """
    unique: dict[str, LayerKernel] = {}
    for k in kernels:
        unique.setdefault(k.name, k)
    if not unique:
        raise ValueError("no kernels to export")
    mods = [compile_kernel(k) for k in unique.values()]
    root, rest = mods[0], mods[1:]
    with _LOCK:
        try:
            for m in rest:
                root.import_module(m)
            root.export_library(str(path))
        finally:
            root.clear_imports()
    return list(unique)


def cache_size() -> int:
    """How many compiled kernels the process holds (tests check the cache is used)."""
    return len(_COMPILED)
