"""Passes, the pass registry, pipeline strings and the pass manager (DESIGN.md §4).

A pass is a frozen dataclass whose fields are its options, registered under a kebab-case
name; ``apply(ctx, graph)`` rewrites ``graph`` in place (the manager hands it a copy, so
the input survives for ``--print-ir-after`` and crash reproducers).  Pipelines are strings
``canonicalize,fold-bn{eps=1e-5}`` or lists; they print back canonically.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pkgutil
import re
import time
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, TextIO

from snnc.errors import ParseError, PassError, SnncError, did_you_mean
from snnc.ir import Graph, print_graph, verify
from snnc.ir.op import coerce_value
from snnc.ir.printer import format_value

# ---------------------------------------------------------------------------------------
# passes and the registry


class PassOptionError(PassError, ValueError):
    """A pass option out of its range (a ValueError too, as a dataclass field check is)."""


class Pass:
    """Base of every pass.  Subclasses are frozen dataclasses; fields are options."""

    name: ClassVar[str]
    analysis: ClassVar[bool] = False  # only attaches results; changes nothing else

    def __post_init__(self) -> None:
        problems = self.option_problems()
        if problems:
            raise PassOptionError(f"pass '{self.name}': " + "; ".join(problems))

    def option_problems(self) -> list[str]:
        """Every option whose value is out of range ([] when all are valid).  Checked when the pass
        is built, i.e. when the pipeline string is parsed, not after an hour of calibration."""
        return []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.spec()

    def spec(self, full: bool = False) -> str:
        """The pass as the pipeline grammar writes it: its options that differ from their defaults, or
        with ``full=True`` every option (what ``--print-pipeline`` and ``report.json`` show, so that a
        changed default cannot silently change what a recorded pipeline means)."""
        opts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            if full or value != f.default:
                opts.append(f"{f.name.replace('_', '-')}={_option_text(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _option_text(value: Any) -> str:
    """An option value as the pipeline grammar writes it (lists with ';', enums bare)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ";".join(_option_text(v) for v in value) + "]"
    return format_value(value)


PASSES: dict[str, type[Pass]] = {}
PIPELINES: dict[str, str] = {}
_DISCOVERED = False


def register_pass(name_or_cls: Any = None, *, replace: bool = False) -> Any:
    """Register a pass class, or turn a function ``(ctx, graph) -> None`` into a pass.

    ``@register_pass`` on a class uses its ``name``; ``@register_pass("my-pass")`` on a
    function makes an option-less pass of it (users' passes).  A name already taken is refused
    unless ``replace=True`` (``@register_pass("canonicalize", replace=True)``): silently
    shadowing a built-in pass would change every pipeline that names it.
    """

    def register_class(cls: type[Pass]) -> type[Pass]:
        if not re.match(r"^[a-z][a-z0-9-]*$", cls.name):
            raise ValueError(f"pass name '{cls.name}' must be kebab-case")
        old = PASSES.get(cls.name)
        if old is not None and not replace and _qualified(old) != _qualified(cls):  # a reload is no clash
            raise PassError(f"pass '{cls.name}' is already registered by {_qualified(old)}; "
                            f"use register_pass(..., replace=True) to replace it")
        PASSES[cls.name] = cls
        return cls

    if isinstance(name_or_cls, type):
        return register_class(name_or_cls)

    def decorate(obj: Any) -> Any:
        if isinstance(obj, type):
            if isinstance(name_or_cls, str):
                obj.name = name_or_cls  # type: ignore[attr-defined]
            return register_class(obj)
        fn = obj
        cls: type[Pass] = dataclass(frozen=True)(
            type(
                f"FunctionPass_{fn.__name__}",
                (Pass,),
                {"name": name_or_cls, "__doc__": fn.__doc__, "__module__": fn.__module__,
                 "apply": lambda self, ctx, g: fn(ctx, g)},
            )
        )
        register_class(cls)
        return fn

    return decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_pipeline(name: str, pipeline: str) -> None:
    PIPELINES[name] = pipeline


def _pass_packages() -> list[str]:
    """The built-in pass packages: ``snnc.passes`` and the ``passes`` folder of every backend (target
    passes such as ``loihi-*`` live with the target whose chip they read).  Found by looking at the
    folders, so that no second list of them exists."""
    import snnc.backends as backends

    found = ["snnc.passes"]
    for info in pkgutil.iter_modules(backends.__path__):
        if info.ispkg and (Path(backends.__path__[0]) / info.name / "passes" / "__init__.py").exists():
            found.append(f"snnc.backends.{info.name}.passes")
    return found


def _discover() -> None:
    """Import the built-in passes (every module of every pass package, except the ``_``-prefixed
    helper modules that the passes import themselves) and entry-point plugins."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for package_name in _pass_packages():
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):  # a pass helper (_neurons, _params, ...), not a pass
                continue
            importlib.import_module(f"{package_name}.{info.name}")
    for ep in entry_points(group="snnc.passes"):
        try:
            obj = ep.load()
        except Exception as e:  # name the broken plugin instead of failing somewhere deep inside it
            raise PassError(f"plugin pass '{ep.name}' ({ep.value}) failed to load: {e}") from None
        if isinstance(obj, type) and issubclass(obj, Pass) and obj.name not in PASSES:
            register_pass(obj)


def available_passes() -> dict[str, type[Pass]]:
    _discover()
    return dict(sorted(PASSES.items()))


def available_pipelines() -> dict[str, str]:
    _discover()
    return dict(sorted(PIPELINES.items()))


# ---------------------------------------------------------------------------------------
# pipeline strings

_ITEM_RE = re.compile(r"\s*([A-Za-z0-9_-]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def _parse_option_value(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.startswith("[") and text.endswith("]"):
        return [_parse_option_value(p) for p in text[1:-1].split(";") if p.strip()]
    return text


def make_pass(name: str, options: dict[str, Any]) -> Pass:
    passes = available_passes()
    if name not in passes:
        raise ParseError(f"unknown pass '{name}'{did_you_mean(name, list(passes) + list(PIPELINES))}")
    cls = passes[name]
    kwargs = _coerce_options(name, cls, options)
    try:
        return cls(**kwargs)
    except PassOptionError:
        raise  # already names the pass and every bad option
    except (TypeError, ValueError) as e:
        raise ParseError(f"pass '{name}': {e}") from None


def _coerce_options(name: str, cls: type[Pass], options: dict[str, Any]) -> dict[str, Any]:
    """Options as read from a pipeline string -> keyword arguments of ``cls``, each of its field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in options.items():
        attr = key.replace("-", "_")
        if attr not in fields:
            kebab = [f.replace("_", "-") for f in fields]
            raise ParseError(f"pass '{name}' has no option '{key}'{did_you_mean(key, kebab)}")
        hint = hints[attr]
        if typing.get_origin(hint) is tuple and not isinstance(value, list):
            value = [value]
        try:
            kwargs[attr] = coerce_value(hint, value, f"{name}{{{key}}}")
        except ParseError as e:
            raise ParseError(str(e)) from None
    return kwargs


def parse_pipeline(spec: str | Sequence[str | Pass]) -> list[Pass]:
    """``"a,b{x=1,y=true}"`` or a list of names/strings/Pass objects -> passes.

    Named pipelines (``ann-to-snn``) expand in place.  Options inside ``{}`` are separated
    by commas; a list option is written ``[1;2;4]``.
    """
    if not isinstance(spec, str):
        out: list[Pass] = []
        for item in spec:
            out += [item] if isinstance(item, Pass) else parse_pipeline(item)
        return out
    spec = spec.strip()
    passes: list[Pass] = []
    bad_options: list[str] = []
    pos = 0
    while pos < len(spec):
        m = _ITEM_RE.match(spec, pos)
        if not m or m.end() == pos:
            raise ParseError(f"malformed pipeline at column {pos + 1}: '{spec[pos:]}'")
        name, opts = m.group(1), m.group(2)
        pos = m.end()
        available_passes()
        if name in PIPELINES and name not in PASSES:
            if opts:
                raise ParseError(f"named pipeline '{name}' takes no options; spell out its passes instead")
            passes += parse_pipeline(PIPELINES[name])
            continue
        options: dict[str, Any] = {}
        for item in (opts or "").split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ParseError(f"pass '{name}': option '{item.strip()}' needs a value (name=value)")
            k, v = item.split("=", 1)
            options[k.strip()] = _parse_option_value(v)
        try:
            passes.append(make_pass(name, options))
        except PassOptionError as e:  # go on: report every bad option of the pipeline at once
            bad_options.append(str(e))
    if bad_options:
        raise PassOptionError("; ".join(bad_options))
    return passes


def pipeline_string(passes: Sequence[Pass], full: bool = False) -> str:
    """The canonical string of a pipeline (parses back to the same passes); ``full=True`` writes every
    option of every pass, defaults included."""
    return ",".join(p.spec(full) for p in passes)


_OVERRIDE_RE = re.compile(r"^\s*([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\s*=(.*)$", re.DOTALL)


def override_options(passes: Sequence[Pass], overrides: Sequence[str]) -> list[Pass]:
    """Apply ``--pass-option PASS.OPTION=VALUE`` overrides to a parsed pipeline.

    Each one sets one option of every occurrence of ``PASS`` in ``passes``; the value is read and
    checked as in a pipeline string (``lower-neurons.maxpool=avg``, ``adafire.max-spikes=4``,
    ``phase-coding.periods=[1;2;4]``).  An unknown pass, a pass that the pipeline does not run, an
    unknown option or a bad value is a ParseError / PassOptionError naming the override.
    """
    result = list(passes)
    for text in overrides:
        m = _OVERRIDE_RE.match(text)
        if m is None or not m.group(3).strip():
            raise ParseError(f"--pass-option '{text}': expected PASS.OPTION=VALUE, e.g. lower-neurons.maxpool=avg")
        name, key, raw = m.group(1), m.group(2), m.group(3)
        known = available_passes()
        in_pipeline = list(dict.fromkeys(p.name for p in result))
        if name not in known:
            raise ParseError(f"--pass-option '{text}': unknown pass '{name}'"
                             f"{did_you_mean(name, in_pipeline or list(known))}")
        if name not in in_pipeline:
            raise ParseError(f"--pass-option '{text}': pass '{name}' is not in the pipeline "
                             f"{pipeline_string(result)!r}{did_you_mean(name, in_pipeline)}")
        cls = known[name]
        kebab = [f.name.replace("_", "-") for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        if key.replace("_", "-") not in kebab:
            hint = did_you_mean(key, kebab) or (f"; its options: {', '.join(kebab)}" if kebab else
                                                 "; it has no options")
            raise ParseError(f"--pass-option '{text}': pass '{name}' has no option '{key}'{hint}")
        try:  # read and coerce the value exactly as the pipeline grammar does
            changes = _coerce_options(name, cls, {key: _parse_option_value(raw)})
        except SnncError as e:
            raise ParseError(f"--pass-option '{text}': {e}") from None
        for i, p in enumerate(result):
            if p.name == name:
                try:
                    result[i] = dataclasses.replace(p, **changes)  # type: ignore[type-var]
                except PassOptionError as e:
                    raise PassOptionError(f"--pass-option '{text}': {e}") from None
                except (TypeError, ValueError) as e:
                    raise ParseError(f"--pass-option '{text}': pass '{name}': {e}") from None
    return result


# ---------------------------------------------------------------------------------------
# context and instruments


@dataclass
class CalibrationData:
    """Calibration samples: ``x`` (N, ...) float32, ``y`` (N,) labels or None."""

    x: Any
    y: Any = None
    batch_size: int = 128

    def batches(self, limit: int | None = None):
        n = len(self.x)
        count = 0
        for start in range(0, n, self.batch_size):
            if limit is not None and count >= limit:
                return
            count += 1
            yield self.x[start : start + self.batch_size], (
                None if self.y is None else self.y[start : start + self.batch_size]
            )


class Simulator(typing.Protocol):
    """What passes may ask of a simulator (the driver injects the torch backend's)."""

    def run_ann(self, graph: Graph, x: Any, record: Sequence[str] = ()) -> dict[str, Any]: ...

    def run_snn(self, graph: Graph, x: Any, timesteps: int, record: Sequence[str] = ()) -> Any: ...

    # training (d2e-finetune): a module whose parameters ``keys`` require gradients, a
    # differentiable run (logits, per-neuron spike rates) and the trained values back as arrays
    def trainable(self, graph: Graph, keys: Collection[str]) -> Any: ...

    def surrogate_run(self, module: Any, x: Any, timesteps: int) -> tuple[Any, dict[str, Any]]: ...

    def read_params(self, module: Any, keys: Collection[str]) -> dict[str, Any]: ...


@dataclass(kw_only=True)
class PassContext:
    """What passes receive besides the graph: data, simulator, seed, progress, results."""

    calibration: CalibrationData | None = None
    simulator: Simulator | None = None
    timesteps: int = 8
    seed: int = 0
    device: str = "cpu"
    progress: Callable[[str, int], Any] | None = None  # (description, total) -> context manager with advance()
    notes: list[str] = dataclasses.field(default_factory=list)  # warnings and reports shown to the user
    results: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-pass results for report.json

    def require_calibration(self, pass_name: str, labelled: bool = False) -> CalibrationData:
        if self.calibration is None:
            raise PassError(f"pass '{pass_name}' needs calibration data; pass --calib data.npz")
        if labelled and self.calibration.y is None:
            raise PassError(f"pass '{pass_name}' needs labelled calibration data (a 'y' array in --calib)")
        return self.calibration

    def require_simulator(self, pass_name: str) -> Simulator:
        if self.simulator is None:
            raise PassError(f"pass '{pass_name}' needs a simulator in its context")
        return self.simulator

    def note(self, message: str) -> None:
        self.notes.append(message)

    def track(self, description: str, total: int):
        """A progress bar context (no-op when the driver gave none)."""
        if self.progress is None:
            return _NullProgress()
        return self.progress(description, total)


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int = 1) -> None:
        pass


class Instrument:
    """Hooks around every pass; the passes do not know about them."""

    def before(self, p: Pass, graph: Graph) -> None:
        pass

    def after(self, p: Pass, graph: Graph) -> None:
        pass


@dataclass
class PrintIRAfter(Instrument):
    names: Sequence[str]  # pass names, or ["all"]
    stream: TextIO

    def after(self, p: Pass, graph: Graph) -> None:
        if "all" in self.names or p.name in self.names:
            self.stream.write(f"// ----- IR after {p} -----\n{print_graph(graph)}")


@dataclass
class PassTiming(Instrument):
    times: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    _start: float = 0.0

    def before(self, p: Pass, graph: Graph) -> None:
        self._start = time.perf_counter()

    def after(self, p: Pass, graph: Graph) -> None:
        self.times.append((str(p), time.perf_counter() - self._start))

    def render(self) -> str:
        total = sum(t for _, t in self.times) or 1e-12
        lines = ["===== pass execution timing =====", f"{'wall (s)':>10} {'%':>6}  pass"]
        for name, t in self.times:
            lines.append(f"{t:10.4f} {100 * t / total:6.1f}  {name}")
        lines.append(f"{total:10.4f} {100.0:6.1f}  total")
        return "\n".join(lines)


class _FailedPass(Exception):
    """What a failed pipeline carries: the pass, the passes before it and the IR it was given."""

    def __init__(self, message: str, failing: Pass, before: Sequence[Pass], graph: Graph):
        super().__init__(message)
        self.failing = failing
        self.before = list(before)
        self.graph = graph

    def write_reproducer(self, path: Path) -> None:
        """MLIR-style reproducer: the pipeline that failed, then the IR it failed on."""
        error = str(self).replace("\n", " ")
        text = f"// snnc reproducer\n// configuration: -p '{self.failing}'\n// error: {error}\n"
        path.write_text(text + print_graph(self.graph))


class PipelineFailure(_FailedPass, PassError):
    """A pass refused the graph or its inputs (a user error: the message says what to do)."""


class PassCrash(_FailedPass, SnncError):
    """A pass raised something other than an snnc error: a bug in that pass (built-in or a user's).
    Not a UserError: the CLI reports it as an internal error, naming the pass and the reproducer."""


@dataclass
class PassManager:
    passes: list[Pass]
    verify_each: bool = True
    instruments: list[Instrument] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, spec: str | Sequence[str | Pass], **kw: Any) -> PassManager:
        return cls(parse_pipeline(spec), **kw)

    def __str__(self) -> str:
        return pipeline_string(self.passes)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        ctx = ctx or PassContext()
        if self.verify_each:
            verify(graph)
        for i, p in enumerate(self.passes):
            work = graph.copy()
            for ins in self.instruments:
                ins.before(p, work)
            try:
                p.apply(ctx, work)
                if self.verify_each:
                    verify(work)
            except SnncError as e:
                raise PipelineFailure(_context(p, self.passes[:i], e), p, self.passes[:i], graph) from None
            except Exception as e:  # a bug in a pass is exactly when the reproducer is needed
                message = _context(p, self.passes[:i], f"{type(e).__name__}: {e}", verb="crashed")
                raise PassCrash(message, p, self.passes[:i], graph) from e
            for ins in self.instruments:
                ins.after(p, work)
            graph = work
        return graph


def _context(p: Pass, before: Sequence[Pass], e: Exception | str, verb: str = "failed") -> str:
    after = f" (after {pipeline_string(before)})" if before else ""
    return f"pass '{p}'{after} {verb}: {e}"
