"""What ``snnc compile`` prints and writes for logs, scripts and build systems (docs/build.md).

The summary is whole when stdout is a file (no column cut to 80, no wrapped pipeline line, every pass
option); ``--quiet`` prints nothing; ``--json-report -`` puts report.json alone on stdout; ``--pass-option``
changes one option of a named or default pipeline and is checked like a pipeline option;
``--print-pipeline`` and report.json's ``pipeline_full`` write every option of every pass; ``--depfile``
lists every file read.  Most tests run in-process (CliRunner) on the digits MLP with a small calibration
set and a short pipeline; one runs the console script with stdout redirected to a file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from snnc.cli import main
from snnc.pass_manager import available_passes, parse_pipeline

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
MLP = DIGITS / "mlp.pt2"
FAST = "canonicalize,fold-bn,calibrate{batches=1},lower-neurons,count-ops{samples=16}"
FAST_T = "canonicalize,fold-bn,calibrate{batches=1},lower-neurons,encode-input,count-ops{samples=16}"  # sets T


def _invoke(args: list[str | Path]) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _user_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    """The first 64 labelled digits (a calibration file that makes a compile take about a second)."""
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    with np.load(DIGITS / "train.npz") as f:
        np.savez(path, x=f["x"][:64], y=f["y"][:64])
    return path


def _compile(calib: Path, out: Path, *extra: str | Path) -> Result:
    return _invoke(["compile", MLP, "--calib", calib, "-T", "2", "-o", out, *extra])


# --------------------------------------------------------------------------------------------------
# output for logs


def test_summary_is_whole_when_stdout_is_a_file(tmp_path, calib):
    """A long model name, stdout redirected to a file (as in CI): nothing cut at 80 columns, the table's
    header whole, the pipeline on one line with every option of every pass."""
    model = tmp_path / ("a_model_with_a_name_long_enough_to_be_cut_at_eighty_columns_" * 2 + "mlp.pt2")
    model.write_bytes(MLP.read_bytes())
    out = tmp_path / "out"
    log = tmp_path / "log.txt"
    script = Path(sys.executable).parent / "snnc"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "snnc.cli"]
    with open(log, "w") as f:
        proc = subprocess.run([*cmd, "compile", str(model), "--calib", str(calib), "-T", "2", "-p", "ann-to-snn",
                               "-o", str(out)], stdout=f, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "TERM": "xterm"})
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    lines = text.splitlines()
    report = json.loads((out / "report.json").read_text())
    assert "…" not in text
    assert f"snnc: {model} -> {out} (target torch)" in lines
    assert any("spikes/sample" in line and "SOPs/sample" in line for line in lines)
    assert f"pipeline: {report['pipeline_full']}" in lines
    for p in parse_pipeline(report["pipeline_full"]):
        assert p.spec(full=True) in report["pipeline_full"]
    assert "lower-neurons{model=" in report["pipeline_full"]  # a named pipeline's defaults written out
    assert any(line.startswith("energy per inference: ") and line.endswith("nJ)") for line in lines)


def test_quiet_prints_nothing(tmp_path, calib):
    result = _ok(_compile(calib, tmp_path / "out", "-p", FAST, "--quiet"))
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "out" / "report.json").exists()


def test_json_report_dash_puts_the_report_alone_on_stdout(tmp_path, calib):
    result = _ok(_compile(calib, tmp_path / "out", "-p", FAST, "--json-report", "-"))
    assert json.loads(result.stdout) == json.loads((tmp_path / "out" / "report.json").read_text())
    assert "pipeline: canonicalize" in result.stderr  # the summary moved to stderr


def test_json_report_file_and_quiet(tmp_path, calib):
    report = tmp_path / "r.json"
    result = _ok(_compile(calib, tmp_path / "out", "-p", FAST, "-q", "--json-report", report))
    assert result.stdout == ""
    assert json.loads(report.read_text()) == json.loads((tmp_path / "out" / "report.json").read_text())


# --------------------------------------------------------------------------------------------------
# pipelines: overrides and the full canonical string


def test_pass_option_changes_one_option_of_a_named_pipeline(tmp_path, calib):
    result = _ok(_compile(calib, tmp_path / "out", "-p", "ann-to-snn", "--pass-option", "lower-neurons.maxpool=avg",
                          "--pass-option", "calibrate.batches=1", "--print-pipeline"))
    line = result.stdout.strip()
    got, named = parse_pipeline(line), parse_pipeline("ann-to-snn")
    assert [p.name for p in got] == [p.name for p in named]
    for g, p in zip(got, named, strict=True):
        changes = {"lower-neurons": {"maxpool": "avg"}, "calibrate": {"batches": 1}}.get(p.name, {})
        if "maxpool" in changes:
            changes = {"maxpool": type(p.maxpool)("avg")}  # type: ignore[attr-defined]
        assert g == dataclasses.replace(p, **changes)  # type: ignore[type-var]
        assert g.spec(full=True) in line  # every option written out
    assert "maxpool=avg" in line and "batches=1" in line
    assert not (tmp_path / "out").exists()  # --print-pipeline writes nothing


def test_pass_option_applies_to_the_default_pipeline_and_reaches_the_report(tmp_path, calib):
    out = tmp_path / "out"
    _ok(_compile(calib, out, "--pass-option", "calibrate.batches=1", "--pass-option", "count-ops.samples=8", "-q"))
    report = json.loads((out / "report.json").read_text())
    passes = {p.name: p for p in parse_pipeline(report["pipeline_full"])}
    assert passes["calibrate"].batches == 1 and passes["count-ops"].samples == 8  # type: ignore[attr-defined]
    assert "lower-neurons" in passes  # the default with --calib: ann-to-snn


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        ("lower-neuron.maxpool=avg", ["unknown pass 'lower-neuron'", "did you mean 'lower-neurons'?"]),
        ("lower-neurons.maxpol=avg", ["has no option 'maxpol'", "did you mean 'maxpool'?"]),
        ("lower-neurons.maxpool=bogus", ["'bogus' is not one of ['gate', 'count', 'avg']"]),
        ("adafire.max-spikes=4", ["pass 'adafire' is not in the pipeline"]),
        ("calibrate.percentile=250", ["--pass-option 'calibrate.percentile=250'", "percentile"]),
        ("lower-neurons=avg", ["expected PASS.OPTION=VALUE"]),
    ],
)
def test_pass_option_errors_are_one_line_exit_2(tmp_path, calib, option, fragments):
    out = tmp_path / "out"
    _user_error(_compile(calib, out, "-p", "ann-to-snn", "--pass-option", option), *fragments)
    assert not out.exists()


def test_report_pipeline_full_carries_every_option(tmp_path, calib):
    out = tmp_path / "out"
    _ok(_compile(calib, out, "-p", FAST, "-q"))
    report = json.loads((out / "report.json").read_text())
    assert report["pipeline"] == FAST
    passes = parse_pipeline(report["pipeline_full"])
    assert passes == parse_pipeline(report["pipeline"])
    for p in passes:
        for f in dataclasses.fields(p):  # type: ignore[arg-type]
            if f.init:
                assert f"{f.name.replace('_', '-')}=" in p.spec(full=True), (p.name, f.name)
                assert p.spec(full=True) in report["pipeline_full"]


@pytest.mark.parametrize("name", sorted(available_passes()))
def test_full_spec_of_every_pass_parses_back(name):
    cls = available_passes()[name]
    try:
        p = cls()
    except Exception:
        pytest.skip(f"{name} has required options")
    assert parse_pipeline(p.spec(full=True)) == [p]


# --------------------------------------------------------------------------------------------------
# the depfile


def test_depfile_lists_every_input(tmp_path, calib):
    shards = tmp_path / "calib shards"  # a space: escaped as Make and Ninja read it
    shards.mkdir()
    with np.load(calib) as f:
        np.savez(shards / "a.npz", x=f["x"][:32], y=f["y"][:32])
        np.savez(shards / "b.npz", x=f["x"][32:], y=f["y"][32:])
    out = tmp_path / "out"
    dep = tmp_path / "out.d"
    _ok(_invoke(["compile", MLP, "--calib", shards, "--test-data", calib, "-T", "2", "-p", FAST, "-o", out,
                 "--depfile", dep, "-q"]))
    esc = str(shards).replace(" ", "\\ ")
    assert dep.read_text() == (
        f"{out}/report.json: {MLP} \\\n  {esc} \\\n  {esc}/a.npz \\\n  {esc}/b.npz \\\n  {calib}\n"
        + "".join(f"\n{p}:\n" for p in (MLP, esc, f"{esc}/a.npz", f"{esc}/b.npz", calib))  # as gcc -MP
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.d")] == []  # written atomically


def test_depfile_is_not_written_on_failure(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 3), dtype=np.float32))
    out, dep = tmp_path / "out", tmp_path / "out.d"
    _user_error(_invoke(["compile", MLP, "--calib", bad, "-o", out, "--depfile", dep]), str(bad))
    assert not dep.exists() and not out.exists()


def test_depfile_path_is_checked_before_any_work(tmp_path, calib):
    out = tmp_path / "out"
    _user_error(_compile(calib, out, "--depfile", tmp_path / "missing" / "out.d"), "--depfile", "does not exist")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# help texts


def test_compile_help_describes_every_option():
    command = main.commands["compile"]
    undocumented = [p.name for p in command.params if isinstance(p, __import__("click").Option) and not p.help]
    assert undocumented == []
    help_text = _ok(_invoke(["compile", "--help"])).stdout
    for flag in ("--depfile", "--pass-option", "--print-pipeline", "--quiet", "--json-report"):
        assert flag in help_text


def test_run_mode_ann_is_the_clipped_ann():
    help_text = " ".join(_ok(_invoke(["run", "--help"])).stdout.split())
    assert "the clipped ANN" in help_text and "evaluated once, as an ANN" in help_text


# --------------------------------------------------------------------------------------------------
# benchmarks/event_kernels.py --networks-only --json NEW.json


def test_event_kernels_networks_only_reads_a_new_json_from_the_default(tmp_path):
    pytest.importorskip("tvm")
    spec = importlib.util.spec_from_file_location("event_kernels_bench", ROOT / "benchmarks" / "event_kernels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"layers": [{"n": 1}], "bandwidth": {"median_Bps": 1.0}}))
    assert module.previous_results(tmp_path / "NEW.json", old)["layers"] == [{"n": 1}]
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"layers": [], "bandwidth": {}}))
    assert module.previous_results(new, old)["layers"] == []  # an existing --json file wins
    with pytest.raises(SystemExit, match="run without --networks-only first"):
        module.previous_results(tmp_path / "NEW.json", tmp_path / "none.json")


# --------------------------------------------------------------------------------------------------
# --diagnostics-format json


def _json_error(result: Result, code: str) -> dict:
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    record = json.loads(lines[0])
    assert set(record) == {"severity", "code", "message", "location", "hint"}
    assert record["severity"] == "error" and record["code"] == code
    return record


def test_diagnostics_json_for_a_bad_pass_option(tmp_path, calib):
    record = _json_error(_compile(calib, tmp_path / "out", "--pass-option", "lower-neurons.maxpol=avg",
                                  "--diagnostics-format", "json"), "parse")
    assert record["hint"] == "did you mean 'maxpool'?"
    assert record["location"] == {"option": "--pass-option"}
    assert not (tmp_path / "out").exists()


def test_diagnostics_json_for_a_missing_file_and_a_usage_error(tmp_path):
    missing = tmp_path / "missing.pt2"
    record = _json_error(_invoke(["--diagnostics-format", "json", "compile", missing]), "input-file")
    assert record["location"] == {"file": str(missing)} and record["message"] == f"{missing}: no such file"
    record = _json_error(_invoke(["compile", MLP, "--bogus", "--diagnostics-format=json"]), "usage")
    assert "--bogus" in record["message"]
    record = _json_error(_invoke(["eval", tmp_path, "--data", missing, "--diagnostics-format", "json"]), "input-file")
    assert record["hint"] == "run `snnc compile` first"


def test_diagnostics_text_is_the_default(tmp_path):
    result = _invoke(["compile", tmp_path / "missing.pt2"])
    assert result.exit_code == 2 and result.stderr == f"snnc: error: {tmp_path / 'missing.pt2'}: no such file\n"


# --------------------------------------------------------------------------------------------------
# project configuration: [tool.snnc] / snnc.toml, `snnc config`


def test_tool_snnc_gives_compile_defaults_and_the_command_line_wins(tmp_path, calib, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.npz").write_bytes(calib.read_bytes())
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.snnc]\ntimesteps = 3\ncalib = "data/c.npz"\n'
        f'pipeline = "{FAST_T}"\nquiet = true\n\n[tool.snnc.eval]\ntimesteps = "1,2"\n'
    )
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # found in a parent directory; paths relative to the file
    result = _ok(_invoke(["compile", MLP, "-o", "out", "--depfile", "out.d"]))
    assert result.stdout == ""  # quiet = true
    report = json.loads(Path("out/report.json").read_text())
    assert report["timesteps"] == 3 and report["pipeline"] == FAST_T
    dep = Path("out.d").read_text()
    assert str(tmp_path / "data" / "c.npz") in dep and str(tmp_path / "pyproject.toml") in dep
    _ok(_invoke(["compile", MLP, "-o", "out2", "-T", "2"]))
    assert json.loads(Path("out2/report.json").read_text())["timesteps"] == 2

    shown = _ok(_invoke(["config"])).stdout.splitlines()
    where = f"{tmp_path / 'pyproject.toml'} [tool.snnc]"
    assert shown[0] == f"# snnc compile: defaults from {where}"
    assert f"timesteps = 3  # {where}" in shown
    assert f'calib = "{tmp_path / "data" / "c.npz"}"  # {where}' in shown
    assert 'target = "torch"  # default' in shown and "# arch = (not set)  # default" in shown
    assert f'timesteps = "1,2"  # {tmp_path / "pyproject.toml"} [tool.snnc.eval]' in _invoke(["config", "eval"]).stdout


def test_snnc_toml_nearer_than_pyproject_wins(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.snnc]\ntimesteps = 3\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "snnc.toml").write_text("seed = 7\n")
    monkeypatch.chdir(tmp_path / "sub")
    shown = _ok(_invoke(["config"])).stdout.splitlines()
    assert f"seed = 7  # {tmp_path / 'sub' / 'snnc.toml'}" in shown
    assert "timesteps = 8  # default" in shown


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("timestep = 4\n", "snnc compile has no option '--timestep'; did you mean 'timesteps'?"),
        ('timesteps = "x"\n', "timesteps = 'x': 'x' is not a valid integer"),
        ("timesteps = \n", "not valid TOML"),
        ("[evl]\ntimesteps = '1'\n", "no command 'evl'; did you mean 'eval'?"),
    ],
)
def test_a_bad_configuration_is_one_line_exit_2(tmp_path, monkeypatch, text, fragment):
    (tmp_path / "snnc.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    line = _user_error(_invoke(["config"]), fragment)
    assert str(tmp_path / "snnc.toml") in line
    record = _json_error(_invoke(["config", "--diagnostics-format", "json"]), "config")
    assert record["location"] == {"file": str(tmp_path / "snnc.toml")}
