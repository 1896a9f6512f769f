"""The compile driver: model file -> IR -> pipeline -> target -> artifact directory.

The artifact appears whole or not at all: everything is written to a temporary sibling
directory that is renamed into place at the end.  That directory is created first, before
any expensive work, so that an output path that cannot be written is reported at once; it
is removed on every failure, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from snnc import distributed
from snnc.data import Data, check_shape, open_data
from snnc.errors import TargetError, UserError
from snnc.frontend.files import load_model
from snnc.ir import Graph, save_graph
from snnc.ir import ops as O
from snnc.pass_manager import (
    CalibrationData,
    Instrument,
    Pass,
    PassContext,
    PassManager,
    PassTiming,
    PrintIRAfter,
    available_pipelines,
    override_options,
    parse_pipeline,
    pipeline_string,
)
from snnc.report import build_report
from snnc.targets import TargetOptions, get_target

ANALYSIS_ONLY = "canonicalize,fold-bn,count-ops"
REPORT_SAMPLES = 256  # = count-ops' default samples: the report then reuses count-ops' simulation


@dataclass(kw_only=True)
class CompileOptions:
    model: Path
    out: Path
    target: str = "torch"
    pipeline: str | None = None
    calib: Any = None  # a .npz, a directory of .npz shards, or (from Python) a torch Dataset / DataLoader
    test_data: Any = None  # the same kinds
    calib_samples: int | None = None  # a seeded subset of the calibration data (--calib-samples)
    report_samples: int = REPORT_SAMPLES  # the seeded sample the report simulates (--report-samples)
    timesteps: int = 8
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust_pickle: bool = False
    print_ir_after: list[str] = field(default_factory=list)
    time_passes: bool = False
    verify_each: bool = True
    seed: int = 0
    device: str = "cpu"
    target_options: TargetOptions = field(default_factory=TargetOptions)
    pass_options: list[str] = field(default_factory=list)  # PASS.OPTION=VALUE overrides (--pass-option)
    depfile: Path | None = None  # a Make/Ninja depfile written once the artifact is in place
    extra_inputs: list[Path] = field(default_factory=list)  # files read besides those named (a config file)


class CompileTiming:
    """``--time-passes``: the whole wall time of a compile, step by step: ``load`` (the model, its
    import, the pipeline), ``read-data`` (opening and checking the data: one streamed read), every
    pass, ``report-simulation``, ``target`` (its compile) and ``write`` (the files, the rename into
    place, the depfile); the total is the wall time from the call of ``compile_model`` (the output
    checks included) to the artifact in place.  Outside it: starting Python and
    importing torch, which any torch program pays (benchmarks/scale.py reports it apart)."""

    def __init__(self) -> None:
        self.passes = PassTiming()
        self.phases: dict[str, float] = {}
        self._start = time.perf_counter()
        self._end: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0
            self._end = time.perf_counter()

    def rows(self) -> list[tuple[str, float]]:
        data = self.phases.get("read-data", 0.0)  # timed inside "load": shown apart
        rows = [("load", self.phases.get("load", 0.0) - data)]
        rows += [("read-data", data)] if "read-data" in self.phases else []
        rows += self.passes.times
        rows += [(k, self.phases[k]) for k in ("report-simulation", "target", "write") if k in self.phases]
        return rows

    def total(self) -> float:
        return (self._end or time.perf_counter()) - self._start

    def render(self) -> str:
        total = self.total() or 1e-12
        lines = ["===== pass execution timing =====", f"{'wall (s)':>10} {'%':>6}  step"]
        for name, t in self.rows():
            lines.append(f"{t:10.4f} {100 * t / total:6.1f}  {name}")
        lines.append(f"{total:10.4f} {100.0:6.1f}  total")
        return "\n".join(lines)


@dataclass(kw_only=True)
class CompileResult:
    graph: Graph
    report: dict[str, Any]
    out: Path
    timing: CompileTiming | None
    notes: list[str]


def is_spiking(graph: Graph) -> bool:
    return any(isinstance(n.op, O.Neuron) for n in graph.nodes)


def default_pipeline(graph: Graph, calibration: CalibrationData | None) -> str:
    """ann-to-snn for an ANN, direct-to-event for a direct-coded SNN; analysis only without data."""
    if calibration is None:
        return "canonicalize,count-ops" if is_spiking(graph) else ANALYSIS_ONLY
    if is_spiking(graph):  # the fine-tune needs labels; without them, stop after calibration
        return "direct-to-event" if calibration.y is not None else "direct-to-event-unlabelled"
    return "ann-to-snn"


def _target_default(target: Any, graph: Graph, has_calibration: bool) -> str | None:
    """The pipeline the target wants when the user names none (Target.default_pipeline, optional)."""
    hook = getattr(target, "default_pipeline", None)
    return hook(graph, has_calibration) if hook is not None else None


def _import_legality(target: Any, graph: Graph) -> list[str]:
    """What the target refuses in the imported graph that no pass can change
    (Target.import_legality, optional): reported before calibration, not after it."""
    hook = getattr(target, "import_legality", None)
    return hook(graph) if hook is not None else []


def make_simulator(device: str) -> Any:
    from snnc.backends.torch.simulator import TorchSimulator  # the driver may use a backend; passes may not

    return TorchSimulator(device)


SYSTEM_DIRS = (Path("/proc"), Path("/dev"), Path("/sys"))  # kernel file systems: never an output
SHARED_MEMORY = Path("/dev/shm")  # a tmpfs: an output may go there


def _system_dir(path: Path) -> Path | None:
    resolved = path.resolve()
    if resolved == SHARED_MEMORY or SHARED_MEMORY in resolved.parents:
        return None
    return next((d for d in SYSTEM_DIRS if resolved == d or d in resolved.parents), None)


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written (its directory is missing or
    not writable, it is a directory, it lies in /proc, /dev or /sys)."""
    system = _system_dir(path)
    if system is not None:
        raise UserError(f"{flag} {path}: lies in {system}, a system directory; write to a file elsewhere")
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; expected a file name")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"{flag} {path}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write in {parent} (permission denied)")


def write_atomically(path: Path, flag: str, write: Callable[[IO[bytes]], Any]) -> None:
    """``write`` into a temporary sibling of ``path``, then rename it into place: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write ({e.strerror or e})") from None
    finally:
        with _signals_held():
            tmp.unlink(missing_ok=True)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while cleaning up, so that a second Ctrl-C cannot leave half a mess;
    they are delivered when the cleanup is done."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _missing_parents(directory: Path) -> list[Path]:
    """The ancestors of ``directory`` (itself included) that do not exist yet, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    return missing[::-1]


def compile_model(opts: CompileOptions, progress: Callable[[str, int], Any] | None = None) -> CompileResult:
    """Compile into a temporary sibling of ``opts.out``, created before any work and renamed into place
    at the end; on any failure (a signal included) it is removed, with the parents made for it.

    Under torchrun every process runs the pipeline on its share of the calibration batches (the
    statistics merge exactly: snnc.distributed), and on its share of the report's simulation (the
    units merge in order: snnc.distributed.map_units); only rank 0 writes."""
    timing = CompileTiming() if opts.time_passes else None
    distributed.init(opts.device)
    if opts.report_samples < 1:
        raise UserError(f"--report-samples {opts.report_samples}: must be >= 1")
    if not distributed.is_writer():
        result = _compile_into(opts, None, None, timing)
        distributed.barrier()  # return once rank 0 has put the artifact in place (a script may read it next)
        return result
    out = Path(opts.out)
    system = _system_dir(out)
    if system is not None:
        raise UserError(f"-o {out}: lies in {system}, a system directory; choose an output directory elsewhere")
    if opts.depfile is not None:
        check_output_file(Path(opts.depfile), "--depfile")
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: exists and is not a directory")
    try:
        made = _missing_parents(out.parent)
    except UserError as e:
        raise UserError(f"-o {out}: {e}") from None
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    done = False
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir(mode=0o700)
        except OSError as e:
            raise UserError(f"-o {out}: cannot create a directory in {out.parent} ({e.strerror or e})") from None
        result = _compile_into(opts, tmp, progress, timing)
        with _phase(timing, "write"):
            _apply_umask(tmp)
            _replace_dir(tmp, out)
        done = True
    finally:
        with _signals_held():
            shutil.rmtree(tmp, ignore_errors=True)
            if not done:
                for directory in reversed(made):
                    try:
                        directory.rmdir()
                    except OSError:
                        break
    if opts.depfile is not None:
        with _phase(timing, "write"):
            write_depfile(opts.depfile, [out / "report.json"], input_files(opts))
    distributed.barrier()  # the other ranks wait here for the artifact (a no-op in one process)
    return result


def input_files(opts: CompileOptions) -> list[Path]:
    """Every file a compile reads, as the user named it (for the depfile): the model (and the params
    sidecar of a .snnir), the --arch file, the calibration and test data (a shard directory, and each of
    its shards: a new shard changes the directory), the --target-config, the project configuration."""
    files = [Path(opts.model)]
    model = Path(opts.model)
    if model.suffix == ".snnir":
        for sidecar in (model.with_name("params.safetensors"), model.with_suffix(".safetensors")):
            if sidecar.exists():
                files.append(sidecar)
                break
    if opts.arch and ":" in opts.arch:
        files.append(Path(opts.arch.rsplit(":", 1)[0]))
    for data in (opts.calib, opts.test_data):
        if isinstance(data, (str, Path)):
            data = Path(data)
            files += [data, *sorted(data.glob("*.npz"))] if data.is_dir() else [data]
    if opts.target_options.target_config is not None:
        files.append(Path(opts.target_options.target_config))
    files += [Path(f) for f in opts.extra_inputs]
    return list(dict.fromkeys(files))


def _make_escape(path: Path) -> str:
    """A path as a gcc-style depfile writes it: spaces and '#' behind a backslash, '$' doubled."""
    return str(path).replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")


def depfile_text(targets: list[Path], prerequisites: list[Path]) -> str:
    """``target: prereq \\`` lines, one prerequisite a line, then an empty rule for each prerequisite
    (what ``gcc -MD -MP`` writes: a deleted input, e.g. a calibration shard, then makes Make rebuild
    instead of stopping with "No rule to make target").  Make, Ninja's ``deps = gcc`` and CMake's
    ``DEPFILE`` read it."""
    head = " ".join(_make_escape(t) for t in targets) + ":"
    lines = [f"{head} {_make_escape(prerequisites[0])}" if prerequisites else head,
             *(_make_escape(p) for p in prerequisites[1:])]
    phony = "".join(f"\n{_make_escape(p)}:\n" for p in prerequisites)
    return " \\\n  ".join(lines) + "\n" + phony


def write_depfile(path: Path, targets: list[Path], prerequisites: list[Path]) -> None:
    text = depfile_text(targets, prerequisites)
    write_atomically(Path(path), "--depfile", lambda f: f.write(text.encode()))


@dataclass(kw_only=True)
class _Plan:
    """What a compile reads before any pass runs: the model, the target, the data, the passes."""

    loaded: Any
    target: Any
    calibration: CalibrationData | None
    test: Data | None
    passes: list[Pass]
    # the index of count-ops when its simulation is left to the report (the pipeline's last pass, its
    # samples not set by the user): it runs without data and the report's one simulation of the
    # --report-samples sample gives its SOPs and spikes (None: count-ops simulates as written)
    deferred_counts: int | None = None


def _phase(clock: CompileTiming | None, name: str) -> Any:
    return clock.phase(name) if clock is not None else _Quiet()


def _name(data: Any) -> str:
    return str(data) if isinstance(data, (str, Path)) else type(data).__name__


def resolve_pipeline(opts: CompileOptions) -> str:
    """The pipeline a compile with ``opts`` would run, every option of every pass written out
    (``snnc compile --print-pipeline``): it reads the model and the data, and runs no pass."""
    return pipeline_string(_plan(opts).passes, full=True)


def _step(progress: Callable[[str, int], Any] | None, description: str):
    """One progress step (a bar of one) for the steps of a compile that are not batched."""
    if progress is None:
        return _Quiet()
    return progress(description, 1)


class _Quiet:
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        pass


def _plan(opts: CompileOptions, progress: Callable[[str, int], Any] | None = None,
          clock: CompileTiming | None = None) -> _Plan:
    with _step(progress, f"load {opts.model}") as bar:
        loaded = load_model(opts.model, arch=opts.arch, input_shape=opts.input_shape,
                            trust_pickle=opts.trust_pickle)
        bar.advance()
    source_graph = loaded.graph
    in_shape = source_graph.inputs[0][1].shape
    target = get_target(opts.target, opts.target_options)
    early = _import_legality(target, source_graph)
    if early:
        raise TargetError(f"target '{opts.target}' cannot compile this model (found before any pass ran): "
                          + "; ".join(early))
    calibration = None
    if opts.calib is not None:
        if opts.calib_samples is not None and opts.calib_samples < 1:
            raise UserError(f"--calib-samples {opts.calib_samples}: must be >= 1")
        with _phase(clock, "read-data"), _step(progress, f"read and check {_name(opts.calib)}") as bar:
            calib = open_data(opts.calib).subset(opts.calib_samples, opts.seed)
            bar.advance()
        check_shape(calib.x, in_shape, calib.name)
        calibration = CalibrationData(calib.x, calib.y)
    test: Data | None = None
    if opts.test_data is not None:
        with _phase(clock, "read-data"), _step(progress, f"read and check {_name(opts.test_data)}") as bar:
            test = open_data(opts.test_data)
            bar.advance()
        check_shape(test.x, in_shape, test.name)
    if opts.timesteps < 1:
        raise UserError(f"--timesteps {opts.timesteps}: must be >= 1")
    spec = opts.pipeline or _target_default(target, source_graph, calibration is not None) or default_pipeline(
        source_graph, calibration)
    spec = available_pipelines().get(spec, spec)
    passes = parse_pipeline(spec)
    suffix = target.pipeline_suffix()
    if suffix:  # a target pass the pipeline already runs is not run twice
        names = {p.name for p in passes}
        passes += [p for p in parse_pipeline(suffix) if p.name not in names]
    if opts.pass_options:
        passes = override_options(passes, opts.pass_options)
    return _Plan(loaded=loaded, target=target, calibration=calibration, test=test, passes=passes,
                 deferred_counts=_deferred_counts(passes, f"{spec},{suffix or ''}", opts.pass_options))


_COUNT_SAMPLES_SET = re.compile(r"(^|,)\s*count-ops\s*\{[^}]*\bsamples\s*=")


def _deferred_counts(passes: list[Pass], spec: str, pass_options: list[str]) -> int | None:
    """The index of the count-ops whose simulation the report makes (see ``_Plan.deferred_counts``):
    the pipeline's last pass, if neither the pipeline string nor --pass-option sets its ``samples``.
    Then a compile simulates the converted SNN once, on the report's sample."""
    from snnc.passes.count_ops import CountOps

    if not passes or passes[-1].name != CountOps.name:
        return None
    explicit = _COUNT_SAMPLES_SET.search(spec) is not None or any(
        o.replace(" ", "").replace("_", "-").startswith(f"{CountOps.name}.samples=") for o in pass_options)
    return None if explicit else len(passes) - 1


def _compile_into(opts: CompileOptions, tmp: Path | None, progress: Callable[[str, int], Any] | None,
                  timing: CompileTiming | None) -> CompileResult:
    """The compile; ``tmp`` None: a torchrun rank other than 0, which runs the passes (its share of
    the calibration, then of the report's simulation) and writes nothing."""
    clock = timing or CompileTiming()
    with clock.phase("load"):
        plan = _plan(opts, progress, clock)
    loaded, target, calibration, test, passes = plan.loaded, plan.target, plan.calibration, plan.test, plan.passes
    source_graph = loaded.graph
    instruments: list[Instrument] = []
    if opts.print_ir_after and tmp is not None:
        instruments.append(PrintIRAfter(opts.print_ir_after, sys.stdout))
    instruments.append(clock.passes)
    simulator = make_simulator(opts.device)
    ctx = PassContext(calibration=calibration, simulator=simulator, timesteps=opts.timesteps, seed=opts.seed,
                      device=opts.device, progress=progress)
    deferred = plan.deferred_counts is not None
    head = passes[:-1] if deferred else passes
    graph = PassManager(head, verify_each=opts.verify_each, instruments=instruments).run(source_graph, ctx)
    if deferred:  # the last count-ops, without data: its simulation is the report's (below), made once
        tail = PassManager(passes[-1:], verify_each=opts.verify_each, instruments=instruments)
        graph = tail.run(graph, dataclasses.replace(ctx, calibration=None))

    problems = target.legality(graph)
    if problems:
        raise TargetError(f"target '{opts.target}' cannot compile this graph: " + "; ".join(problems))
    with clock.phase("report-simulation"):  # on every rank: they share its units (distributed.map_units)
        counts, accuracy = _report_run(opts, source_graph, graph, passes, ctx, test, deferred=deferred)
    if tmp is None:
        return CompileResult(graph=graph, report={}, out=Path(opts.out), timing=timing, notes=ctx.notes)
    source = {"path": str(opts.model), "sha256": loaded.sha256, "kind": loaded.kind}
    timesteps = graph.attrs.timesteps
    with clock.phase("write"):
        save_graph(graph, tmp)
        _save_source(source_graph, tmp)
    with clock.phase("target"), _step(progress, f"target {opts.target}: build") as bar:  # tvm: minutes, cold
        target_report = target.compile(graph, tmp, ctx)
        bar.advance()
    with clock.phase("write"):
        report = build_report(
            source=source,
            target=opts.target,
            pipeline=pipeline_string(passes),
            pipeline_full=pipeline_string(passes, full=True),
            timesteps=timesteps,
            counts=counts,
            accuracy=accuracy,
            target_report=target_report,
            notes=ctx.notes,
            pass_results=ctx.results,
            source_macs=_dense_macs(source_graph),
        )
        (tmp / "report.json").write_text(report_json(report))
    return CompileResult(graph=graph, report=report, out=Path(opts.out), timing=timing, notes=ctx.notes)


def _report_run(opts: CompileOptions, source: Graph, graph: Graph, passes: list[Pass], ctx: PassContext,
                test: Data | None, deferred: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The report's counts and accuracy from one simulation of the final graph on a seeded sample of
    ``--report-samples`` of the test data (else of the calibration data).  ``deferred``: the
    pipeline's last pass, count-ops, ran without data (``_Plan.deferred_counts``); this simulation's
    counts become its result (``graph.analyses`` and the pass results, which a target may read).
    Otherwise, without test data, when the pipeline ends with count-ops (nothing but analyses after
    it) on the same number of samples, its simulation is the report's: the graph is not simulated
    again."""
    from snnc.passes._samples import sample_rows
    from snnc.passes.count_ops import CountOps, OpCounts

    calibration = ctx.calibration
    data = (test.x, test.y) if test is not None else (
        (calibration.x, calibration.y) if calibration is not None else None)
    rows = sample_rows(len(data[0]), opts.report_samples, opts.seed) if data is not None else None
    fresh = graph.analyses.get(OpCounts)
    last = max((i for i, p in enumerate(passes) if p.name == CountOps.name), default=-1)
    reusable = (not deferred and fresh is not None and test is None and last >= 0 and all(p.analysis for p in passes[last + 1:])
                and getattr(passes[last], "samples", None) == opts.report_samples
                and (fresh.rows is not None or calibration is None or not is_spiking(graph)))
    if reusable and fresh is not None:
        counts, predictions, steps = fresh, fresh.predictions, fresh.steps_used
    else:
        work = graph.copy()
        sample_ctx = dataclasses.replace(ctx, results={}, notes=[], calibration=None if data is None else
                                         CalibrationData(data[0], data[1]))
        CountOps(samples=opts.report_samples).apply(sample_ctx, work)
        made = work.analyses.get(OpCounts)
        assert made is not None  # count-ops always leaves its result
        counts, predictions, steps = made, made.predictions, made.steps_used
        if deferred:
            graph.analyses.put(made)
            ctx.results[CountOps.name] = made.as_dict()
    accuracy = None
    if data is not None and data[1] is not None and rows is not None:
        x, y = data[0][rows], data[1][rows]
        accuracy = _accuracy(source, graph, ctx.simulator, x, y, (predictions, steps), ctx.timesteps,
                             "test" if test is not None else "calibration")
    return counts.as_dict(), accuracy


def report_json(report: dict[str, Any]) -> str:
    """report.json's text (numpy scalars and paths made plain)."""
    return json.dumps(report, indent=2, default=_json_default) + "\n"


def _dense_macs(graph: Graph) -> float:
    from snnc.passes.count_ops import dense_macs

    return float(sum(dense_macs(graph, n) for n in graph.nodes if n.op.synaptic))


def _save_source(graph: Graph, directory: Path) -> None:
    """The imported source graph, so that ``snnc eval`` can show the source's accuracy."""
    from snnc.ir import print_graph, save_params

    (directory / "source.snnir").write_text(print_graph(graph))
    save_params(graph.params, directory / "source.safetensors")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _apply_umask(directory: Path) -> None:
    """mkdtemp and safetensors create private files; an artifact gets the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.rglob("*"):
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is replaced only once ``tmp`` is complete."""
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: exists and is not a directory")
    with _signals_held():  # a signal between the two renames would leave no ``out`` at all
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)


def _merged(parts: list[Any]) -> Any:
    """The simulator's results of consecutive units as one (``SimResult.merge``)."""
    return type(parts[0]).merge(parts)


def _accuracy(source: Graph, graph: Graph, simulator: Any, x: Any, y: np.ndarray, run: tuple[Any, Any],
              timesteps: int, split: str) -> dict[str, Any]:
    """Source and converted accuracy on the report sample (``run``: the converted graph's predictions
    and steps used, when the counts' simulation already made them, else None, None)."""
    def shared(fn: Callable[[slice], np.ndarray]) -> np.ndarray:
        """``fn`` on units of the sample, shared over the torchrun ranks, concatenated in order."""
        return np.concatenate(distributed.map_units(fn, len(y)))

    if is_spiking(source):  # a direct-coded SNN: its accuracy is its own T-step simulation
        src_t = source.attrs.timesteps or timesteps
        src_pred = shared(lambda r: simulator.run_snn(source, x[r], src_t).predictions)
    else:
        src_pred = shared(lambda r: simulator.run_ann(source, x[r])[source.outputs[0]].argmax(1))
    result: dict[str, Any] = {"source": float((src_pred == y).mean()), "split": split, "samples": len(y)}
    if is_spiking(graph):
        t = graph.attrs.timesteps or timesteps
        predictions, steps = run
        if predictions is None:
            sim = _merged(distributed.map_units(lambda r: simulator.run_snn(graph, x[r], t), len(y)))
            predictions, steps = sim.predictions, sim.steps_used
        result["converted"] = float((predictions == y).mean())
        result["mean_timesteps_used"] = float(np.mean(steps))
    else:
        predicted = shared(lambda r: simulator.run_ann(graph, x[r])[graph.outputs[0]].argmax(1))
        result["converted"] = float((predicted == y).mean())
    return result
