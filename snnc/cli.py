"""The ``snnc`` command line.

Exit status: 0 success, 2 a user error (one line on stderr, no traceback), 1 an internal
error (a bug in snnc: the traceback is printed so that it can be reported), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 141 stdout closed early.  docs/build.md has the flags for
build systems and scripts (--depfile, --quiet, --json-report, --pass-option).
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click
import numpy as np

from snnc.errors import InputFileError, SnncError, Terminated, UserError, first_line
from snnc.targets import TARGETS

EPILOG = ("Exit status: 0 ok, 2 user error, 1 internal error, 130/143 interrupted, 141 closed pipe.  "
          "Docs: README.md, docs/ (docs/build.md: Make, CMake, Ninja, CI) in the snnc repository.")


def _console(stderr: bool = False):
    """A rich console for tables: the terminal's width on a terminal; on a file, a pipe or a CI log
    as wide as each line needs (nothing cut to 80 columns, nothing wrapped)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=100_000, soft_wrap=True, highlight=False)


# --diagnostics-format: "text" (one line `snnc: error: ...`) or "json" (one object a line on stderr).
# Read from the command line before click parses it, so that a usage error is reported in the same form.
_DIAGNOSTICS: contextvars.ContextVar[str] = contextvars.ContextVar("snnc_diagnostics", default="text")
DIAGNOSTICS_HELP = ("How errors and notes are written on stderr: text (one line 'snnc: error: ...') or json "
                    "(one object a line: severity, code, message, location, hint; codes in docs/build.md).")


def _diagnostics_from_args(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--diagnostics-format" and i + 1 < len(args):
            return "json" if args[i + 1] == "json" else "text"
        if arg.startswith("--diagnostics-format="):
            return "json" if arg.split("=", 1)[1] == "json" else "text"
    return "text"


_HINT_START = ("did you mean", "pass ", "use ", "re-run", "compile ", "run ", "replace ", "send ", "write ",
               "choose ", "see ", "expected ", "save ", "spell out ")


def _location(message: str) -> dict[str, object] | None:
    """Where an error points, read off its message: ``at file.py:11`` (a line of the user's model code),
    a leading ``path:`` that exists, or a leading ``--flag``."""
    m = re.search(r"\bat ([^\s:;]+\.py):(\d+)", message)
    if m:
        return {"file": m.group(1), "line": int(m.group(2))}
    m = re.match(r"^(--[a-z][a-z-]*)?\s*'?([^\s:;']+)'?:", message)
    if m and m.group(2) and (Path(m.group(2)).exists() or _looks_like_path(m.group(2))):
        return {"file": m.group(2), **({"option": m.group(1)} if m.group(1) else {})}
    m = re.match(r"^(--[a-z][a-z-]*)\b", message)
    if m:
        return {"option": m.group(1)}
    return None


def _looks_like_path(token: str) -> bool:
    """``dir/x`` or ``name.ext`` (a missing input file), not ``pass.option=value``."""
    return "=" not in token and re.search(r"/|\.[A-Za-z0-9]+$", token) is not None


def _hint(message: str) -> str | None:
    """The what-to-do part of a message (snnc's messages end with it after '; ')."""
    for part in reversed(message.split("; ")[1:]):
        text = part.strip().rstrip(".")
        if text.lower().startswith(_HINT_START):
            return text
    m = re.search(r"(did you mean '[^']+'\?)", message)
    return m.group(1) if m else None


def _diagnostic(severity: str, code: str, message: str, **extra: object) -> None:
    """One error or note on stderr, in the form --diagnostics-format asked for."""
    if _DIAGNOSTICS.get() == "json":
        record = {"severity": severity, "code": code, "message": message, "location": _location(message),
                  "hint": _hint(message), **extra}
        click.echo(json.dumps(record), err=True)
    elif severity == "error":
        click.echo(f"snnc: error: {message}", err=True)
    else:
        click.echo(f"{severity}: {message}", err=True)


def _error_code(e: Exception) -> str:
    """The stable code of a user error (docs/build.md lists them)."""
    from snnc.errors import InputFileError, ParseError, PassError, TargetError, UnsupportedError, VerifyError
    from snnc.pass_manager import PassOptionError, PipelineFailure

    for cls, code in ((PassOptionError, "pass-option"), (PipelineFailure, "pass-failed"),
                      (InputFileError, "input-file"), (ParseError, "parse"), (VerifyError, "verify"),
                      (UnsupportedError, "unsupported"), (TargetError, "target"), (PassError, "pass")):
        if isinstance(e, cls):
            return code
    return "user"


def _fail(message: str, code: str = "user") -> None:
    """One line on stderr: a message of several lines (every unsupported op of a model) joins with '; '."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    message = lines[0]
    for line in lines[1:]:
        message += (" " if message.endswith(":") else "; ") + line
    _diagnostic("error", code, message)
    sys.exit(2)


def _progress_factory(quiet: bool = False):
    """Progress of long steps on stderr (snnc/progress.py): a rich bar on a terminal, a status line
    every 30 s otherwise (JSON with --diagnostics-format json), nothing with --quiet."""
    from snnc.progress import progress_factory

    return progress_factory(quiet=quiet, json_lines=_DIAGNOSTICS.get() == "json")


def _click_fail(e: click.ClickException) -> None:
    """click's usage errors in snnc's one-line form (click prints usage, a hint and the error on four)."""
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.exceptions.NoArgsIsHelpError) and ctx is not None:  # plain `snnc`: help
        click.echo(ctx.get_help())
        sys.exit(0)
    message = e.format_message()
    if isinstance(e, click.UsageError) and ctx is not None:
        message = f"{message.rstrip('.')}; see '{ctx.command_path} --help'"
    _diagnostic("error", "usage", message)
    sys.exit(e.exit_code if isinstance(e, click.UsageError) else 2)


def _option_flags(command: click.Command) -> dict[str, click.Option]:
    """A command's options by their long flag without '--' (what a configuration file calls them)."""
    flags = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "diagnostics_format"):
            for opt in param.opts:
                if opt.startswith("--"):
                    flags[opt[2:]] = param
    return flags


def _config_defaults(config, group: click.Group) -> dict[str, dict[str, object]]:
    """A project configuration -> click's default_map, every key and value checked as its option
    would check it (an unknown option or a bad value is a ConfigError naming the file)."""
    from snnc.config import ConfigError
    from snnc.errors import did_you_mean

    result: dict[str, dict[str, object]] = {}
    for name, options in config.commands.items():
        command = group.commands[name]
        flags = _option_flags(command)
        values: dict[str, object] = {}
        for key, value in options.items():
            param = flags.get(key)
            if param is None:
                raise ConfigError(f"{config.where(name)}: snnc {name} has no option '--{key}'"
                                  f"{did_you_mean(key, flags)}")
            if param.multiple and not isinstance(value, list):
                value = [value]
            if isinstance(param.type, click.Path) and isinstance(value, str) and value != "-":
                value = os.path.normpath(config.path.parent / value)  # relative to the file, not the cwd
            try:
                param.type_cast_value(click.Context(command), value)
            except click.BadParameter as e:
                raise ConfigError(f"{config.where(name)}: {key} = {value!r}: {e.message}") from None
            values[param.name or key] = value
        result[name] = values
    return result


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``snnc ops | head -1``): stop without a word, as a C tool would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush cannot fail again
    except (OSError, ValueError, AttributeError):  # no real stdout (an in-process test runner)
        pass
    sys.exit(141)  # 128 + SIGPIPE


class SnncGroup(click.Group):
    """Turns snnc's user errors into one line and exit 2; bugs into exit 1; SIGINT into exit 130 and
    SIGTERM into exit 143 (after the ``finally`` blocks removed what was half written)."""

    def main(self, args=None, *rest, **kwargs):
        argv = list(sys.argv[1:] if args is None else args)
        token = _DIAGNOSTICS.set(_diagnostics_from_args(argv))
        try:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            return super().main(argv, *rest, **kwargs)
        finally:
            _DIAGNOSTICS.reset(token)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # the group's own options (``snnc --bogus``)
            _click_fail(e)
        try:  # project defaults ([tool.snnc] / snnc.toml): the commands' contexts read ctx.default_map
            from snnc.config import find_config

            config = find_config()
            if config is not None:
                ctx.meta["snnc.config"] = config
                ctx.default_map = {**_config_defaults(config, self), **(ctx.default_map or {})}
        except SnncError as e:
            _fail(str(e), "config")
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return result
        except SnncError as e:
            _fail(str(e), _error_code(e))
        except click.ClickException as e:  # a bad option or argument of a command: one line, like ours
            _click_fail(e)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Terminated:
            if _DIAGNOSTICS.get() == "json":
                _diagnostic("error", "terminated", "terminated (SIGTERM)")
            else:
                click.echo("snnc: terminated (SIGTERM)", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            if _DIAGNOSTICS.get() == "json":
                _diagnostic("error", "interrupted", "interrupted (SIGINT)")
            else:
                click.echo("snnc: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except Exception as e:
            if _DIAGNOSTICS.get() == "json":
                _diagnostic("error", "internal", f"internal error (a bug in snnc; please report it): "
                            f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            else:
                click.echo("snnc: internal error (a bug in snnc; please report it with this trace):", err=True)
                traceback.print_exc()
            sys.exit(1)


def _shape_option(value: str | None):
    from snnc.frontend.files import parse_input_shape

    return parse_input_shape(value)


def _timesteps_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--timesteps '{text}': expected integers like 1,2,4,8") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--timesteps '{text}': expected positive integers like 1,2,4,8")
    return values


@click.group(cls=SnncGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snnc", prog_name="snnc")
def main() -> None:
    """snnc: compile ANNs and direct-coded SNNs into event-based spiking networks.

    \b
    Typical use:
      snnc compile model.pt2 --calib train.npz --timesteps 8 -o out
      snnc eval out --data test.npz --timesteps 1,2,4,8
      snnc run out --data x.npz -o y.npz
    """


@main.command(epilog="Defaults for every option may come from snnc.toml or pyproject.toml [tool.snnc] "
                     "(`snnc config` shows them). Build systems and scripts: docs/build.md.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="Artifact directory (replaced only once the new one is complete).")
@click.option("--target", default="torch", show_default=True,
              help=" | ".join(TARGETS) + " (what each writes: `snnc targets`).")
@click.option("-p", "--pipeline", default=None,
              help="Named pipeline (ann-to-snn, ann-to-snn-fast, ...; `snnc passes`) or a pass string "
                   "'canonicalize,fold-bn,calibrate{method=percentile}'. Default: ann-to-snn with --calib "
                   "(direct-to-event for a spiking model), otherwise analysis only.")
@click.option("--pass-option", "pass_options", multiple=True, metavar="PASS.OPTION=VALUE",
              help="Change one option of a pass of the pipeline (named or default), e.g. "
                   "lower-neurons.maxpool=avg; repeatable; checked like any pipeline option.")
@click.option("--print-pipeline", is_flag=True,
              help="Print the pipeline that would run, every option of every pass written out, and exit "
                   "(reads the model and data; runs no pass, writes nothing).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration data: .npz with x (and y), or a directory of .npz shards.")
@click.option("--test-data", type=click.Path(path_type=Path), default=None,
              help="Labelled .npz for the report's accuracy (default: the calibration data, if labelled).")
@click.option("--calib-samples", type=int, default=None, metavar="N",
              help="Calibrate on N samples of --calib drawn with --seed (default: all of them).")
@click.option("--report-samples", type=int, default=256, show_default=True, metavar="N",
              help="Simulate the converted SNN on N samples (drawn with --seed from --test-data, else --calib) "
                   "for the report's counts and accuracy.")
@click.option("-T", "--timesteps", type=int, default=8, show_default=True, help="Simulation timesteps T.")
@click.option("--input-shape", default=None, help="Input shape without batch, e.g. 1,8,8 (for state dicts).")
@click.option("--arch", default=None, help="path/to/file.py:factory that builds the module of a state dict.")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole-module .pt (runs code from the file).")
@click.option("--print-ir-after", default=None, help="Print the IR after the named passes (comma list) or 'all'.")
@click.option("--time-passes", is_flag=True,
              help="Print the wall time of every step on stderr: load, every pass, the report's simulation, "
                   "the target, writing, and the whole compile.")
@click.option("--no-verify", is_flag=True, help="Do not run the verifier after every pass.")
@click.option("--reproducer", type=click.Path(path_type=Path), default=None,
              help="If a pass fails, write its input IR and pipeline to this file.")
@click.option("--target-config", type=click.Path(path_type=Path), default=None,
              help="TOML overriding the target description (e.g. Loihi limits).")
@click.option("--board", default=None,
              help="Loihi board the model must fit (kapoho-point, hala-point, ...; '_' works for '-').")
@click.option("--device", default="cpu", show_default=True, help="torch device for simulation (cpu, cuda).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the passes that sample (calibration subsets, fine-tuning).")
@click.option("--depfile", type=click.Path(path_type=Path), default=None,
              help="Write a Make/Ninja depfile (gcc format): OUT/report.json depends on every file read "
                   "(model, --arch file, data files and shards, --target-config, the project's snnc.toml "
                   "or pyproject.toml when it sets compile options). Written once the "
                   "artifact is in place; not on failure.")
@click.option("-q", "--quiet", is_flag=True, help="No summary and no notes: errors only (exit status says it all).")
@click.option("--json-report", type=click.Path(path_type=Path, allow_dash=True), default=None,
              metavar="FILE|-", help="Also write report.json to FILE; '-': to stdout, alone (the summary "
                                     "then goes to stderr).")
def compile(model, out, target, pipeline, pass_options, print_pipeline, calib, test_data, calib_samples,
            report_samples, timesteps,
            input_shape, arch, trust_pickle, print_ir_after, time_passes, no_verify, reproducer, target_config,
            board, device, seed, depfile, quiet, json_report) -> None:
    """Compile MODEL (.pt2, state-dict .pt with --arch, .onnx, .snnir, .nir) into an artifact directory OUT
    (graph.snnir, params.safetensors, report.json and the target's files).

    A table of layers, the pipeline, energy and accuracy are printed on stdout (full width when
    stdout is a file or a pipe); notes and timings on stderr.
    """
    from snnc import distributed
    from snnc.driver import CompileOptions, check_output_file, compile_model, resolve_pipeline
    from snnc.pass_manager import PassCrash, PipelineFailure
    from snnc.targets import TargetOptions

    distributed.init(device)  # under torchrun: join the process group (docs/cluster.md)
    json_stdout = json_report is not None and str(json_report) == "-"
    if json_stdout and print_ir_after:
        raise UserError("--json-report - and --print-ir-after both write to stdout; send the report to a file")
    if reproducer is not None:
        check_output_file(reproducer, "--reproducer")
    if json_report is not None and not json_stdout:
        check_output_file(Path(json_report), "--json-report")

    opts = CompileOptions(
        model=model, out=out, target=target, pipeline=pipeline, calib=calib, test_data=test_data,
        calib_samples=calib_samples, report_samples=report_samples,
        timesteps=timesteps, input_shape=_shape_option(input_shape), arch=arch, trust_pickle=trust_pickle,
        print_ir_after=[s.strip() for s in print_ir_after.split(",")] if print_ir_after else [],
        time_passes=time_passes, verify_each=not no_verify, seed=seed, device=device,
        target_options=TargetOptions(target_config=target_config, board=board),
        pass_options=list(pass_options), depfile=depfile, extra_inputs=_config_inputs("compile"),
    )
    if print_pipeline:
        click.echo(resolve_pipeline(opts))
        return
    with _progress_factory(quiet) as progress:
        try:
            result = compile_model(opts, progress if distributed.is_writer() else None)
        except PipelineFailure as e:
            if reproducer is not None:
                e.write_reproducer(reproducer)
                _fail(f"{e} (reproducer written to {reproducer})", "pass-failed")
            _fail(f"{e} (re-run with --reproducer FILE to save the failing IR)", "pass-failed")
        except PassCrash as e:  # a bug in a pass (snnc's or the user's own): exit 1 with its trace
            saved = ""
            if reproducer is not None:
                e.write_reproducer(reproducer)
                saved = f"; reproducer written to {reproducer}"
            message = f"{e}{saved or '; re-run with --reproducer FILE to save the failing IR'}"
            trace = "".join(traceback.format_exception(e.__cause__ or e))
            if _DIAGNOSTICS.get() == "json":
                _diagnostic("error", "pass-crash", f"internal error: {message}", traceback=trace)
            else:
                click.echo(f"snnc: internal error: {message}", err=True)
                click.echo(trace, err=True, nl=False)
            sys.exit(1)
    if not distributed.is_writer():  # torchrun: rank 0 reports
        return
    if result.timing:
        click.echo(result.timing.render(), err=True)
    if not quiet:
        for note in result.notes:
            _diagnostic("note", "note", note)
    if json_report is not None:
        from snnc.driver import report_json, write_atomically

        text = report_json(result.report)
        if json_stdout:
            click.echo(text, nl=False)
        else:
            write_atomically(Path(json_report), "--json-report", lambda f: f.write(text.encode()))
    if not quiet:
        _print_summary(result.report, result.out, stderr=json_stdout)


def _config_inputs(command: str) -> list[Path]:
    """The project configuration file, when it sets options of ``command`` (the depfile lists it)."""
    config = click.get_current_context().find_root().meta.get("snnc.config")
    return [config.path] if config is not None and config.commands.get(command) else []


def _print_summary(report: dict, out: Path, stderr: bool = False) -> None:
    """The layer table, then one line each for the pipeline (every option), energy and accuracy."""
    from rich.table import Table

    console = _console(stderr)

    def echo(text: str) -> None:  # plain lines: never wrapped, no rich markup ('[1;2]' stays)
        click.echo(text, err=stderr)

    echo(f"snnc: {report['source']['path']} -> {out} (target {report['target']})")
    table = Table()
    for col in ("layer", "op", "neurons", "MACs", "SOPs/sample", "spikes/sample"):
        table.add_column(col, justify="right" if col not in ("layer", "op") else "left")
    for layer in report["layers"]:
        table.add_row(layer["name"], layer["op"], f"{layer['neurons']:,}", f"{layer['macs']:,}",
                      f"{layer['sops']:,.0f}", f"{layer['spikes_per_sample']:,.1f}")
    t = report["totals"]
    table.add_row("total", "", f"{t['neurons']:,}", f"{t['macs']:,}", f"{t['sops']:,.0f}",
                  f"{t['spikes_per_sample']:,.1f}")
    console.print(table)
    echo(f"pipeline: {report.get('pipeline_full', report['pipeline'])}")
    energy = ", ".join(f"{k}: {v / 1e3:,.2f} nJ" for k, v in report["energy_pj"].items())
    echo(f"energy per inference: {energy} (ANN reference {report['ann_energy_pj'] / 1e3:,.2f} nJ)")
    if "accuracy" in report:
        acc = report["accuracy"]
        # a seeded sample (--report-samples), not the whole set: `snnc eval` gives that
        sample = f", {acc['samples']} samples" if "samples" in acc else ""
        line = f"accuracy ({acc['split']} data{sample}): source {acc['source']:.4f}, converted {acc['converted']:.4f}"
        if "mean_timesteps_used" in acc:
            line += f", mean timesteps used {acc['mean_timesteps_used']:.2f}"
        echo(line)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help=".npz with x (N, ...).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write logits and predictions to this .npz.")
@click.option("-T", "--timesteps", type=int, default=None, help="Timesteps (default: the artifact's).")
@click.option("--mode", type=click.Choice(["snn", "ann"]), default="snn", show_default=True,
              help="snn: simulate T timesteps; ann: the clipped ANN, i.e. the converted graph evaluated "
                   "once, as an ANN (not the source model).")
@click.option("--backend", default=None, help="Run the IR on another backend (torch, tvm, loihi).")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda).")
def run(artifact, data, out, timesteps, mode, backend, device) -> None:
    """Run an ARTIFACT directory on inputs; writes logits (N, C) and predictions (N,)."""
    from snnc.data import check_shape, open_data
    from snnc.driver import check_output_file, write_atomically
    from snnc.runner import run_artifact

    if out is not None and not str(out).endswith(".npz"):
        out = Path(f"{out}.npz")  # what np.savez would write
    if out is not None:
        check_output_file(out, "-o")
    art = _open_artifact(artifact)
    dataset = open_data(data)
    x: Any = dataset.x  # read in batches by the simulator's slicing
    y = dataset.y
    check_shape(x, art.graph.inputs[0][1].shape, data)
    with _progress_factory() as progress:
        result = run_artifact(art, x, timesteps, mode, backend, device, progress)
    if out is not None:
        arrays = {k: np.asarray(v) for k, v in result.items()}
        write_atomically(out, "-o", lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    msg = f"{len(x)} samples"
    if y is not None:
        msg += f", accuracy {(result['predictions'] == y).mean():.4f}"
    click.echo(msg + (f"; wrote {out}" if out else ""))


@main.command(name="eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Labelled .npz (x and y).")
@click.option("-T", "--timesteps", default=None,
              help="Comma list of T (default: 1,2,4,8,16,32; a phase-coded graph: its own pipelined length).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write results as JSON.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda).")
def eval_cmd(artifact, data, timesteps, json_out, device) -> None:
    """Accuracy, spikes, SOPs and energy of an ARTIFACT for several T."""
    from rich.table import Table

    from snnc import distributed
    from snnc.data import check_shape, open_data
    from snnc.driver import check_output_file, write_atomically
    from snnc.runner import is_spiking

    distributed.init(device)

    if json_out is not None:
        check_output_file(Path(json_out), "--json")
    art = _open_artifact(artifact)
    if not is_spiking(art.graph):
        raise UserError(f"{artifact}: holds an ANN graph (compiled without --calib), not a spiking one; "
                        "compile with --calib DATA to convert it, or use `snnc run --mode ann`")
    dataset = open_data(data)
    x: Any = dataset.x
    y = dataset.y
    if y is None:
        raise UserError(f"{data}: has no labels 'y'; eval needs labelled data")
    check_shape(x, art.graph.inputs[0][1].shape, data)
    if timesteps is None:
        from snnc.backends.torch.simulator import phase_length

        own = phase_length(art.graph)
        timesteps = str(art.graph.attrs.timesteps) if own > 1 else "1,2,4,8,16,32"
    with _progress_factory() as progress:
        result = distributed.evaluate(art, dataset, _timesteps_list(timesteps), device,
                                      progress=progress if distributed.is_writer() else None)
    if not distributed.is_writer():
        return
    table = Table(title=f"snnc eval {artifact} on {data} ({len(x)} samples)")
    for col in ("T", "accuracy", "spikes/sample", "SOPs/sample", "MACs/sample", "E 45nm (nJ)",
                "E 45nm hoisted (nJ)", "E 1pJ/spike (nJ)", "mean T used"):
        table.add_column(col, justify="right")
    if result["source_accuracy"] is not None:
        e = result.get("source_energy_pj", {}).get("45nm", float("nan"))
        table.add_row("ANN", f"{result['source_accuracy']:.4f}", "-", "-", "-", f"{e / 1e3:.2f}", "-", "-", "-")
    for r in result.get("source_results", []):
        # the direct-coded source as run (first layer every step), and hoisted (computed once)
        label = "src" if r["variant"] == "direct" else "src hoisted"
        table.add_row(f"{label} {r['timesteps']}", f"{r['accuracy']:.4f}",
                      f"{r['spikes_per_sample']:,.1f}", f"{r['sops']:,.0f}", f"{r['macs']:,.0f}",
                      f"{r['energy_pj']['45nm'] / 1e3:.2f}", "-",
                      f"{r['energy_pj']['1pj_per_spike'] / 1e3:.2f}", "-")
    for r in result["results"]:
        table.add_row(str(r["timesteps"]), f"{r['accuracy']:.4f}", f"{r['spikes_per_sample']:,.1f}",
                      f"{r['sops']:,.0f}", f"{r['macs']:,.0f}", f"{r['energy_pj']['45nm'] / 1e3:.2f}",
                      f"{r['energy_pj'].get('45nm_hoisted', float('nan')) / 1e3:.2f}",
                      f"{r['energy_pj']['1pj_per_spike'] / 1e3:.2f}", f"{r['mean_timesteps_used']:.2f}")
    _console().print(table)
    if result.get("source_results"):
        click.echo("src: the direct-coded source as its library runs it (analog first layer at every step); "
                   "src hoisted: the same with that loop-invariant layer computed once")
    if json_out:
        text = json.dumps(result, indent=2) + "\n"
        write_atomically(Path(json_out), "--json", lambda f: f.write(text.encode()))


def _open_artifact(path: Path):
    """An artifact directory, checked whole (graph parses, parameters present and of the right shapes):
    a damaged one is a one-line error before any work, not a traceback in the middle of it."""
    from snnc.ir import verify
    from snnc.runner import open_artifact

    try:
        art = open_artifact(path)
        verify(art.graph)
    except InputFileError:
        raise
    except SnncError as e:
        raise InputFileError(f"{path}: damaged artifact directory: {e}; compile it again with `snnc compile`") from None
    except Exception as e:
        first = first_line(e)
        raise InputFileError(f"{path}: damaged artifact directory ({type(e).__name__}: {first}); "
                             "compile it again with `snnc compile`") from None
    return art


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-p", "--pipeline", required=True, help="Pass pipeline string, e.g. 'canonicalize,fold-bn'.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write the result (and its params sidecar) here instead of printing it.")
@click.option("--calib", type=click.Path(path_type=Path), default=None, help="Calibration .npz for passes that need it.")
@click.option("-T", "--timesteps", type=int, default=8, show_default=True, help="Simulation timesteps T.")
@click.option("--print-ir-after", default=None, help="Pass names (comma list) or 'all'.")
@click.option("--time-passes", is_flag=True, help="Print the wall time of every pass (on stderr).")
@click.option("--no-verify", is_flag=True, help="Do not run the verifier after every pass.")
@click.option("--print-pipeline", is_flag=True, help="Print the canonical pipeline string and exit.")
def opt(file, pipeline, out, calib, timesteps, print_ir_after, time_passes, no_verify, print_pipeline) -> None:
    """Run a pass PIPELINE on textual IR FILE (.snnir) and print the result."""
    from snnc.driver import check_output_file, make_simulator, write_atomically
    from snnc.ir import load_graph, print_graph, save_params
    from snnc.pass_manager import (
        CalibrationData,
        Instrument,
        PassContext,
        PassManager,
        PassTiming,
        PrintIRAfter,
        parse_pipeline,
        pipeline_string,
    )

    passes = parse_pipeline(pipeline)
    if print_pipeline:
        click.echo(pipeline_string(passes))
        return
    if out is not None:
        check_output_file(Path(out), "-o")
        check_output_file(Path(out).with_suffix(".safetensors"), "-o")
    graph = load_graph(file)
    instruments: list[Instrument] = []
    if print_ir_after:
        instruments.append(PrintIRAfter([s.strip() for s in print_ir_after.split(",")], sys.stdout))
    timing = PassTiming() if time_passes else None
    if timing:
        instruments.append(timing)
    calibration = None
    if calib is not None:
        from snnc.data import open_data

        dataset = open_data(calib)
        calibration = CalibrationData(dataset.x, dataset.y)
    ctx = PassContext(calibration=calibration, simulator=make_simulator("cpu"), timesteps=timesteps)
    result = PassManager(passes, verify_each=not no_verify, instruments=instruments).run(graph, ctx)
    text = print_graph(result)
    if out is None:
        click.echo(text, nl=False)
    else:
        sidecar = Path(out).with_suffix(".safetensors")
        write_atomically(sidecar, "-o", lambda f: save_params(result.params, Path(f.name)))
        write_atomically(Path(out), "-o", lambda f: f.write(text.encode()))
    if timing:
        click.echo(timing.render(), err=True)


@main.command()
@click.option("--markdown", is_flag=True, help="Print every pass's full documentation as Markdown (docs/passes.md).")
def passes(markdown: bool) -> None:
    """List the registered passes and named pipelines."""
    from snnc.pass_manager import available_passes, available_pipelines

    if markdown:
        click.echo(_passes_markdown(available_passes(), available_pipelines()))
        return
    for name, cls in available_passes().items():
        click.echo(f"{name:22s} {_summary(cls)}")
    click.echo("\nnamed pipelines:")
    for name, spec in available_pipelines().items():
        click.echo(f"{name:22s} {spec}")


def _passes_markdown(passes: dict, pipelines: dict) -> str:
    import dataclasses

    lines = ["# Passes", "", "Generated by `snnc passes --markdown`. Options go in braces: "
             "`calibrate{method=mse,per-channel=true}`.", "", "## Named pipelines", ""]
    lines += [f"* `{name}`: `{spec}`" for name, spec in pipelines.items()]
    for name, cls in passes.items():
        doc = cls.__doc__ or ""
        if doc.startswith(cls.__name__ + "("):
            doc = sys.modules[cls.__module__].__doc__ or ""
        lines += ["", f"## `{name}`", "", doc.strip()]
        fields = dataclasses.fields(cls)
        if fields:
            lines += ["", "| option | default |", "|---|---|"]
            for f in fields:
                default = getattr(f.default, "value", f.default)
                lines.append(f"| `{f.name.replace('_', '-')}` | `{default}` |")
    return "\n".join(lines) + "\n"


def _summary(cls: type) -> str:
    """First line of a pass's docstring (the module's, when the class has only dataclass's)."""
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):
        doc = sys.modules[cls.__module__].__doc__ or ""
    lines = doc.strip().splitlines()
    return lines[0] if lines else ""


@main.command(name="config")
@click.argument("command_name", metavar="[COMMAND]", default="compile",
                type=click.Choice(["compile", "run", "eval", "opt"]))
def config_cmd(command_name: str) -> None:
    """Print the effective defaults of COMMAND (compile) and where each comes from: the nearest
    snnc.toml or pyproject.toml [tool.snnc] (docs/build.md), or snnc's own default."""
    root = click.get_current_context().find_root()
    config = root.meta.get("snnc.config")
    command = main.commands[command_name]
    from_file = (root.default_map or {}).get(command_name, {})
    if config is None:
        click.echo(f"# snnc {command_name}: no snnc.toml or pyproject.toml [tool.snnc] in {Path.cwd()} "
                   "or above; snnc's defaults")
    else:
        click.echo(f"# snnc {command_name}: defaults from {config.where(command_name)}")
    for flag, param in _option_flags(command).items():
        if config is not None and param.name in from_file:
            value, source = from_file[param.name], config.where(command_name)
        else:
            value, source = param.get_default(click.Context(command)), "default"
        if value is None:
            click.echo(f"# {flag} = (not set)  # {source}")
        else:
            click.echo(f"{flag} = {_toml_value(value)}  # {source}")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


@main.command()
def targets() -> None:
    """List the compilation targets."""
    for entry in TARGETS.values():
        click.echo(f"{entry.name:10s} {entry.description}")


@main.command()
def ops() -> None:
    """List the IR ops with their attributes and defaults."""
    from snnc.ir import OPS

    for name, cls in sorted(OPS.items()):
        attrs = ", ".join(f"{f.name}={f.default!r}" if not hasattr(f.default, "value") else
                          f"{f.name}={f.default.value}" for f in cls.attribute_fields())
        params = ", ".join(p.role + ("?" if p.optional else "") for p in cls.params_spec)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name}: {doc}\n    attributes: {attrs or '-'}\n    params: {params or '-'}")


def _add_diagnostics_option(command: click.Command) -> None:
    """--diagnostics-format on the group and on every command (read before parsing: see SnncGroup.main)."""
    command.params.append(click.Option(["--diagnostics-format"], type=click.Choice(["text", "json"]),
                                       default="text", show_default=True, expose_value=False,
                                       help=DIAGNOSTICS_HELP))


_add_diagnostics_option(main)
for _command in main.commands.values():
    _add_diagnostics_option(_command)


if __name__ == "__main__":
    main()
