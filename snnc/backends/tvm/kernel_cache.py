"""Targets, the per-process compile cache of layer kernels, and library export.

Each distinct :class:`~snnc.backends.tvm.kernels.LayerKernel` (op, shapes, dtypes, structure)
is compiled once per process and target; an artifact's ``lib.so`` links the cached modules of
its kernels together, so two layers of the same shape share one compiled kernel.
"""

from __future__ import annotations

import os
import tempfile
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

CUDA_FALLBACK_ARCH = "sm_80"  # what kernels are built for when no GPU is present
_LOCK = threading.Lock()
_COMPILED: dict[tuple[LayerKernel, str], object] = {}
_OBJECTS: dict[LayerKernel, Path] = {}
_OBJECT_DIR: tempfile.TemporaryDirectory | None = None


def target_for(device: Device):
    """The TVM target of a device: LLVM for this CPU (never "native": the wheel's LLVM falls back
    to generic SSE2 for it), or CUDA with this CPU as host."""
    cpu = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    if device is Device.CPU:
        return tvm.target.Target(cpu)
    cuda = {"kind": "cuda", "host": cpu}
    if not cuda_available():  # build-only (no GPU to ask for its architecture)
        cuda["arch"] = CUDA_FALLBACK_ARCH
    return tvm.target.Target(cuda)


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


def object_file(kernel: LayerKernel) -> Path:
    """The kernel's compiled object file (CPU), written once per process."""
    global _OBJECT_DIR
    path = _OBJECTS.get(kernel)
    if path is not None:
        return path
    mod = compile_kernel(kernel)
    with _LOCK:
        if _OBJECT_DIR is None:
            _OBJECT_DIR = tempfile.TemporaryDirectory(prefix="snnc-tvm-")
        path = Path(_OBJECT_DIR.name) / f"{kernel.name}.o"
        if kernel not in _OBJECTS:
            mod.write_to_file(str(path))
            _OBJECTS[kernel] = path
        return _OBJECTS[kernel]


def export_library(kernels: list[LayerKernel], path: str | Path) -> list[str]:
    """Write one shared library holding every distinct kernel; return their names.

    CPU kernels: the cached object files are linked together (each kernel is compiled and
    written once per process; the TVM symbols they share are weak).  CUDA kernels carry device
    code, so they go through TVM's exporter, which packs the device modules into the library.
    """
    unique: dict[str, LayerKernel] = {}
    for k in kernels:
        unique.setdefault(k.name, k)
    if not unique:
        raise ValueError("no kernels to export")
    if all(k.device is Device.CPU for k in unique.values()):
        from tvm.support import cc

        cc.create_shared(str(path), [str(object_file(k)) for k in unique.values()])
        return list(unique)
    # fresh modules: importing into a cached one would change what the cache holds
    mods = [tvm.compile(k.prim_func(), target=target_for(k.device)).mod for k in unique.values()]
    root = mods[0]
    for m in mods[1:]:
        root.import_module(m)
    root.export_library(str(path))
    return list(unique)


def cache_size() -> int:
    """How many compiled kernels the process holds (tests check the cache is used)."""
    return len(_COMPILED)
