"""Targets, the per-process compile cache of layer kernels, and library export.

Each distinct :class:`~snnc.backends.tvm.kernels.LayerKernel` (op, shapes, dtypes, structure)
is compiled once per process and target; an artifact's ``lib.so`` links the cached modules of
its kernels together, so two layers of the same shape share one compiled kernel.

CPU object files are also kept on disk (``object_cache_dir()``), keyed by a hash of the
generated source, the target, the TVM version and the compile options, so that recompiling a
network (a test run, a benchmark, a second model with the same layer shapes) does no TVM work;
the kernels missing from it are compiled in parallel worker processes (TVMScript parsing and
LLVM code generation are single-threaded Python/C++: 0.1-0.4 s per kernel without argument
checks, resnet18's 56 layer kernels 7.8 s, densenet121's 260 40 s of CPU, 2026-12-07).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from snnc.backends.tvm.kernels import Device, LayerKernel
from snnc.backends.tvm.steps import StepKernel
from snnc.errors import TargetError

Kernel = LayerKernel | StepKernel  # what is compiled: layer kernels and the step kernels calling them


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
_STACK_LOCK = threading.Lock()
T_ = TypeVar("T_")
_COMPILED: dict[tuple[Kernel, str, bool], object] = {}
_OBJECTS: dict[Kernel, Path] = {}
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


def _pass_config(kernel: Kernel, checked: bool = True) -> dict[str, bool]:
    """TIR options of a kernel's compilation: ``checked`` keeps the packed function's argument
    checks (type, rank, dtype, shape, strides, alignment, device of each buffer).

    Step kernels never have them: one takes every runtime buffer of the network (resnet18: 191)
    and the checks made LLVM spend ~18 s on one function (0.4 s without).  The layer kernels of
    an artifact (:func:`object_file`) neither: the checks were 60-80 % of their build time
    (densenet121's concat of 25 currents, 81 arguments: 1.78 s CPU with, 0.38 s without; one of
    8: 0.45 s and 0.16 s), and their only caller,
    :class:`~snnc.backends.tvm.runtime.EventRuntime`, allocates every buffer from the plan that
    generated them, checks each call's buffers against the kernel's declared shapes and dtypes
    once when it binds them, and refuses a library whose kernels are not the plan's.  Kernels
    compiled in this process for other callers (:func:`get_function`) and CUDA kernels keep the
    checks.  A callee's error code still stops a step loop (the call's return code is checked
    in code generation, not by an assert)."""
    return {"tirx.disable_assert": True} if isinstance(kernel, StepKernel) or not checked else {}


def compile_kernel(kernel: Kernel, checked: bool = True):
    """The compiled module (``tvm.runtime.Module``) of one kernel, from the cache when possible;
    ``checked``: with argument checks (:func:`_pass_config`)."""
    key = (kernel, kernel.device.value, checked)
    with _LOCK:
        mod = _COMPILED.get(key)
    if mod is not None:
        return mod
    try:
        mod = _on_a_deep_stack(lambda: _compile(kernel, checked))
    except Exception as e:  # TVM raises plain errors; keep the generated source findable
        raise TargetError(f"TVM failed to compile kernel {kernel.name}: {e!r}") from e
    with _LOCK:
        _COMPILED.setdefault(key, mod)
        return _COMPILED[key]


def _compile(kernel: Kernel, checked: bool = True):
    with tvm.transform.PassContext(config=_pass_config(kernel, checked)):
        return tvm.compile(kernel.prim_func(), target=target_for(kernel.device)).mod


# TVM's IR passes recurse once per nested statement, and a step kernel's packed function unpacks
# every buffer of the network into nested bindings: densenet121's (~2,000 buffers) overflowed the
# main thread's 8 MB stack (SIGSEGV) where resnet18's (191) did not.  Compiling on a thread with
# a deep stack costs nothing (the memory is reserved, touched only as deep as the recursion goes).
COMPILE_STACK_BYTES = 1 << 30


def _on_a_deep_stack(work: Callable[[], T_]) -> T_:
    """``work()`` on a thread whose stack is COMPILE_STACK_BYTES; its exception re-raised here."""
    out: list[T_] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(e)

    with _STACK_LOCK:  # threading.stack_size is process-wide: set it only for this thread's start
        previous = threading.stack_size(COMPILE_STACK_BYTES)
        try:
            thread = threading.Thread(target=run, name="snnc-tvm-compile")
            thread.start()
        finally:
            threading.stack_size(previous)
    thread.join()
    if err:
        raise err[0]
    return out[0]


def get_function(kernel: Kernel):
    """The callable kernel (arguments in ``kernel.arg_names()`` order, destination-passing)."""
    return compile_kernel(kernel)[kernel.name]


def object_cache_dir() -> Path:
    """Where compiled CPU kernels are kept between processes: ``$XDG_CACHE_HOME/snnc/tvm`` (by
    default ``~/.cache/snnc/tvm``); a fresh temporary directory when that is not writable."""
    global _OBJECT_DIR
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snnc" / "tvm"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    with _LOCK:
        if _OBJECT_DIR is None:
            _OBJECT_DIR = tempfile.TemporaryDirectory(prefix="snnc-tvm-")
    return Path(_OBJECT_DIR.name)


def _object_path(kernel: Kernel) -> Path:
    """The kernel's object file in the cache: the name carries a hash of everything that makes
    the machine code (source, target, TVM version), so a stale file is never reused."""
    config = sorted(_pass_config(kernel, checked=False).items())
    key = f"{kernel.source()}\n{target_for(kernel.device)}\n{tvm.__version__}\n{config}"
    return object_cache_dir() / f"{kernel.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.o"


def _write_object(kernel: Kernel) -> str:
    """Compile ``kernel`` (without argument checks: :func:`_pass_config`) and write its object
    file atomically (a worker process's task)."""
    path = _object_path(kernel)
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp.o")
        compile_kernel(kernel, checked=False).write_to_file(str(tmp))  # the runtime checks its buffers
        os.replace(tmp, path)  # concurrent compilers of the same kernel write the same bytes
    return str(path)


def object_file(kernel: Kernel) -> Path:
    """The kernel's compiled object file (CPU), from the disk cache when present."""
    path = _OBJECTS.get(kernel)
    if path is None:
        path = _OBJECTS[kernel] = Path(_write_object(kernel))
    return path


_WORKER = "from snnc.backends.tvm.kernel_cache import compile_worker; compile_worker()"


def prepare_objects(kernels: list[Kernel]) -> None:
    """Compile the CPU kernels that neither this process nor the disk cache holds, in parallel
    worker processes, one per CPU (fresh interpreters: TVM's thread pool does not survive a
    fork, and multiprocessing's spawn would re-run an unguarded ``__main__``).  A worker that
    fails leaves its kernels to :func:`object_file`, which reports the error here.

    The workers share one list, largest source first, and each takes the next kernel that no
    other has claimed: kernels differ in build time by 100x (densenet121: a 0.2 s convolution,
    a 2 s concatenation of 24 inputs), and a fixed deal of every other kernel left one worker
    compiling alone at the end."""
    missing = [k for k in dict.fromkeys(kernels) if k.device is Device.CPU and k not in _OBJECTS]
    missing = [k for k in missing if not _object_path(k).exists()]
    workers = min(default_threads(), len(missing))
    if workers < 2:
        return
    missing.sort(key=lambda k: len(k.source()), reverse=True)  # longest first: the shortest tail
    env = dict(os.environ, TVM_NUM_THREADS="1")  # each worker is one of the CPUs already
    with tempfile.TemporaryDirectory(prefix="snnc-tvm-jobs-") as jobs:
        job = Path(jobs) / "kernels.pickle"
        job.write_bytes(pickle.dumps(missing))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(job)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            for _ in range(workers)
        ]
        for p in procs:
            p.wait()


def _claim(job: Path, index: int) -> bool:
    """Whether this worker is the first to claim kernel ``index`` of ``job`` (an exclusive
    create: atomic across processes)."""
    try:
        os.close(os.open(job.with_name(f"{index}.claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def compile_worker() -> None:
    """A compile worker's main: write the object file of each kernel pickled in the file argv[1]
    (written by :func:`prepare_objects` of this same installation) that no other worker claimed."""
    job = Path(sys.argv[1])
    for i, kernel in enumerate(pickle.loads(job.read_bytes())):
        if not _claim(job, i):
            continue
        try:
            _write_object(kernel)
        except TargetError:  # the parent compiles it again and reports the error
            continue


def export_library(kernels: list[Kernel], path: str | Path) -> list[str]:
    """Write one shared library holding every distinct kernel; return their names.

    CPU kernels: the cached object files are linked together (each kernel is compiled and
    written once per process; the TVM symbols they share are weak).  CUDA kernels carry device
    code, so they go through TVM's exporter, which packs the device modules into the library.
    """
    unique: dict[str, Kernel] = {}
    for k in kernels:
        unique.setdefault(k.name, k)
    if not unique:
        raise ValueError("no kernels to export")
    if all(k.device is Device.CPU for k in unique.values()):
        from tvm.support import cc

        prepare_objects(list(unique.values()))
        aliases = {a: e for k in unique.values() if isinstance(k, StepKernel) for a, e in k.aliases().items()}
        cc.create_shared(str(path), [str(object_file(k)) for k in unique.values()], options=_alias_options(aliases))
        return list(unique)
    # fresh modules: importing into a cached one would change what the cache holds
    mods = [tvm.compile(k.prim_func(), target=target_for(k.device)).mod for k in unique.values()]
    root = mods[0]
    for m in mods[1:]:
        root.import_module(m)
    root.export_library(str(path))
    return list(unique)


def _alias_options(aliases: dict[str, str]) -> list[str]:
    """Linker options that define each alias as another name of its symbol (a step kernel calls
    a kernel's second and later uses through aliases: :meth:`StepKernel.symbols`)."""
    if sys.platform == "darwin":  # ld64: -alias <symbol> <alias>, C names with a leading underscore
        return [f"-Wl,-alias,_{entry},_{alias}" for alias, entry in sorted(aliases.items())]
    return [f"-Wl,--defsym={alias}={entry}" for alias, entry in sorted(aliases.items())]


def cache_size() -> int:
    """How many compiled kernels the process holds (tests check the cache is used)."""
    return len(_COMPILED)
