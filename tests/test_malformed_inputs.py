"""Every failure of user input: exit 2, one line, nothing left behind (issue: reliability).

One table per loader (model files, data files, artifact directories, textual IR, output paths, command
lines), each row run through every command that reads it.  A row passes when the command exits 2 with
exactly one stderr line ``snnc: error: ...``, no traceback, nothing on stdout, and no output (neither the
output itself nor a ``.NAME.tmp-*`` sibling).  Then: a closed stdout pipe ends quietly, and SIGINT or
SIGTERM in the middle of a compile leaves no temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from snnc.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
CNN_PT2 = DIGITS / "cnn.pt2"


def _invoke(args: list) -> Result:
    """Run a command; when it fails as a user error, run it again with ``--diagnostics-format json``
    and check that the error comes out as the same message in one JSON object (issue: build
    integration: machine-readable diagnostics parse for every error path of this corpus)."""
    args = [str(a) for a in args]
    result = CliRunner().invoke(main, args)
    if result.exit_code == 2 and args and not args[0].startswith("-"):
        _assert_same_error_as_json(result, CliRunner().invoke(main, [args[0], "--diagnostics-format", "json", *args[1:]]))
    return result


def _assert_same_error_as_json(text: Result, as_json: Result) -> None:
    assert as_json.exit_code == 2, as_json.stderr
    lines = as_json.stderr.splitlines()
    assert len(lines) == 1, f"expected one JSON line on stderr, got:\n{as_json.stderr}"
    record = json.loads(lines[0])
    assert record["severity"] == "error" and isinstance(record["code"], str) and record["code"]
    assert {"message", "location", "hint"} <= record.keys(), record
    text_lines = text.stderr.splitlines()
    if len(text_lines) == 1 and text_lines[0].startswith("snnc: error: "):
        assert record["message"] == text_lines[0].removeprefix("snnc: error: "), (record, text_lines)


def _leftovers(out: Path) -> list[str]:
    if not out.parent.is_dir():
        return []
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def assert_one_line_error(result: Result, out: Path | None = None, fragment: str = "") -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr:\n{result.stderr}\n{result.exception!r}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("snnc: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    if out is not None:
        assert not out.exists(), out
        assert _leftovers(out) == []
    return lines[0]


def _digits(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS / "test.npz") as f:
        return f["x"][:n], f["y"][:n]


@pytest.fixture(scope="module")
def ann_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ann") / "out"
    result = _invoke(["compile", CNN_PT2, "-p", "canonicalize,count-ops", "-o", out])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def snn_artifact(tmp_path_factory) -> Path:
    """The smallest spiking artifact (what `snnc eval` accepts): an encoded graph, T = 1."""
    out = tmp_path_factory.mktemp("snn") / "out"
    result = _invoke(
        ["compile", CNN_PT2, "-p", "canonicalize,encode-input{scheme=direct}", "-T", "1", "-o", out]
    )
    assert result.exit_code == 0, result.stderr
    return out


# ---------------------------------------------------------------------------------------
# data files: every command that reads one


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _bad_data(kind: str, d: Path) -> Path:
    x, y = _digits()
    path = d / f"{kind}.npz"
    if kind == "nan":
        x = x.copy()
        x[3, 0, 2, 2] = np.nan
        return _write_npz(path, x=x, y=y)
    if kind == "inf":
        x = x.copy()
        x[0, 0, 0, 0] = np.inf
        return _write_npz(path, x=x, y=y)
    if kind == "object":
        return _write_npz(path, x=np.array([object()] * 8, dtype=object), y=y)
    if kind == "strings":
        return _write_npz(path, x=np.array([["a"] * 64] * 8).reshape(8, 1, 8, 8), y=y)
    if kind == "complex":
        return _write_npz(path, x=x.astype(np.complex64), y=y)
    if kind == "empty":
        return _write_npz(path, x=x[:0], y=y[:0])
    if kind == "flat":
        return _write_npz(path, x=np.zeros(8, np.float32))
    if kind == "no-x":
        return _write_npz(path, inputs=x, y=y)
    if kind == "label-count":
        return _write_npz(path, x=x, y=y[:5])
    if kind == "label-float":
        return _write_npz(path, x=x, y=y + 0.5)
    if kind == "label-2d":
        return _write_npz(path, x=x, y=y.reshape(-1, 1))
    if kind == "label-object":
        return _write_npz(path, x=x, y=np.array([None] * 8, dtype=object))
    if kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"x": x}))
        return path
    if kind == "truncated":
        _write_npz(path, x=x, y=y)
        path.write_bytes(path.read_bytes()[:300])
        return path
    if kind == "crc":
        _write_npz(path, x=x, y=y)
        data = bytearray(path.read_bytes())
        data[200:240] = bytes(40)
        path.write_bytes(bytes(data))
        return path
    if kind == "wrong-shape":
        return _write_npz(path, x=np.zeros((4, 1, 9, 9), np.float32), y=y[:4])
    if kind == "shards-disagree":
        shards = d / "shards"
        shards.mkdir()
        _write_npz(shards / "a.npz", x=x, y=y)
        _write_npz(shards / "b.npz", x=np.zeros((2, 1, 4, 4), np.float32), y=y[:2])
        return shards
    if kind == "shards-half-labelled":
        shards = d / "half"
        shards.mkdir()
        _write_npz(shards / "a.npz", x=x, y=y)
        _write_npz(shards / "b.npz", x=x)
        return shards
    if kind == "empty-dir":
        (d / "nothing").mkdir()
        return d / "nothing"
    if kind == "missing":
        return d / "missing.npz"
    raise AssertionError(kind)


DATA_CASES = {
    "nan": "x holds NaN or infinite values (first in sample 3)",
    "inf": "x holds NaN or infinite values (first in sample 0)",
    "object": "x is an object array (pickled Python objects), which snnc never unpickles",
    "strings": "x has dtype <U1; expected numbers",
    "complex": "x has dtype complex64; expected numbers",
    "empty": "x has shape [0, 1, 8, 8]; expected (N, ...) with at least one sample",
    "flat": "x has shape [8]; expected (N, ...)",
    "no-x": "has no array 'x' (found: inputs, y)",
    "label-count": "x has 8 samples but y has 5",
    "label-float": "y has dtype float64 with non-integer labels",
    "label-2d": "y has shape [8, 1]; expected one integer label per sample",
    "label-object": "y is an object array",
    "pickle": "not a .npz archive",
    "truncated": "not a",
    "crc": "not a readable .npz file",
    "wrong-shape": "samples have shape [1, 9, 9], the model expects [1, 8, 8]",
    "shards-disagree": "samples have shape [1, 4, 4], but",
    "shards-half-labelled": "some shards have labels 'y' and some do not",
    "empty-dir": "directory holds no .npz shards",
    "missing": "no such file or directory",
}


@pytest.mark.parametrize("kind", sorted(DATA_CASES))
def test_data_file_compile_calib(kind, tmp_path):
    bad = _bad_data(kind, tmp_path)
    out = tmp_path / "out"
    assert_one_line_error(_invoke(["compile", CNN_PT2, "--calib", bad, "-o", out]), out, DATA_CASES[kind])


@pytest.mark.parametrize("kind", sorted(DATA_CASES))
def test_data_file_compile_test_data(kind, tmp_path):
    bad = _bad_data(kind, tmp_path)
    out = tmp_path / "out"
    assert_one_line_error(_invoke(["compile", CNN_PT2, "--test-data", bad, "-o", out]), out, DATA_CASES[kind])


@pytest.mark.parametrize("kind", sorted(DATA_CASES))
def test_data_file_run(kind, tmp_path, ann_artifact):
    bad = _bad_data(kind, tmp_path)
    out = tmp_path / "y.npz"
    assert_one_line_error(_invoke(["run", ann_artifact, "--data", bad, "-o", out]), out, DATA_CASES[kind])


@pytest.mark.parametrize("kind", sorted(DATA_CASES))
def test_data_file_eval(kind, tmp_path, snn_artifact):
    bad = _bad_data(kind, tmp_path)
    out = tmp_path / "r.json"
    result = _invoke(["eval", snn_artifact, "--data", bad, "-T", "1", "--json", out])
    assert_one_line_error(result, out, DATA_CASES[kind])


@pytest.mark.parametrize("kind", sorted(set(DATA_CASES) - {"wrong-shape"}))  # opt has no model shape to check
def test_data_file_opt_calib(kind, tmp_path, ann_artifact):
    bad = _bad_data(kind, tmp_path)
    out = tmp_path / "o.snnir"
    result = _invoke(["opt", ann_artifact / "graph.snnir", "-p", "canonicalize", "--calib", bad, "-o", out])
    assert_one_line_error(result, out, DATA_CASES[kind])


# ---------------------------------------------------------------------------------------
# model files (compile's loader)


def _bad_model(kind: str, d: Path) -> Path:
    data = CNN_PT2.read_bytes()
    if kind == "missing":
        return d / "nope.pt2"
    if kind == "directory":
        (d / "m.pt2").mkdir()
        return d / "m.pt2"
    path = d / ("m.snnir" if kind.startswith("snnir") else "m.nir" if kind == "nir" else "m.pt2")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "end-cut":
        path.write_bytes(data[:-200])
    elif kind == "crc":
        with zipfile.ZipFile(CNN_PT2) as z:
            info = z.getinfo("cnn/data/weights/weight_8")
        raw = bytearray(data)
        start = info.header_offset + 30 + len(info.filename) + 64
        raw[start : start + 100] = bytes(100)
        path.write_bytes(bytes(raw))
    elif kind == "snnir-garbage":
        path.write_text("graph @g(%x: analog[1,8,8]) {\n  %0 = nonsense(%x)\n")
    elif kind == "snnir-binary":
        path.write_bytes(b"\xff\xfe\x00garbage" * 20)
    elif kind == "nir":
        path.write_bytes(b"not hdf5" * 20)
    elif kind == "pt-pickle-module":
        import torch

        path = d / "whole.pt"
        torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), path)
    else:
        raise AssertionError(kind)
    return path


MODEL_CASES = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "truncated or corrupt",
    "garbage": "not a PyTorch model file",
    "half": "truncated or corrupt",
    "end-cut": "corrupt or truncated",
    "crc": "member cnn/data/weights/weight_8 fails its CRC check",
    "snnir-garbage": "",
    "snnir-binary": "",
    "nir": "",
    "pt-pickle-module": "pass --trust-pickle if you trust this file",
}


@pytest.mark.parametrize("kind", sorted(MODEL_CASES))
def test_model_file_compile(kind, tmp_path):
    bad = _bad_model(kind, tmp_path)
    out = tmp_path / "out"
    args = ["compile", bad, "-o", out] + (["--input-shape", "1,8,8"] if kind.startswith("pt-") else [])
    assert_one_line_error(_invoke(args), out, MODEL_CASES[kind])


# ---------------------------------------------------------------------------------------
# textual IR (opt's loader)

IR_CASES = {
    "missing": "no such file",
    "garbage": "",
    "binary": "",
    "unknown-op": "",
}


@pytest.mark.parametrize("kind", sorted(IR_CASES))
def test_ir_file_opt(kind, tmp_path):
    path = tmp_path / "g.snnir"
    if kind == "garbage":
        path.write_text("this is not IR\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "unknown-op":
        path.write_text("graph @g(%x: analog[4]) {\n  %0 = frobnicate(%x) : analog[4]\n  output %0\n}\n")
    out = tmp_path / "o.snnir"
    assert_one_line_error(_invoke(["opt", path, "-p", "canonicalize", "-o", out]), out, IR_CASES[kind])


# ---------------------------------------------------------------------------------------
# artifact directories (run's and eval's loader)


def _damaged_artifact(kind: str, src: Path, d: Path) -> Path:
    if kind == "missing":
        return d / "none"
    if kind == "a-file":
        (d / "file").write_text("x")
        return d / "file"
    art = d / "art"
    shutil.copytree(src, art)
    if kind == "empty-dir":
        shutil.rmtree(art)
        art.mkdir()
    elif kind == "graph-garbage":
        (art / "graph.snnir").write_text("graph @x garbage {\n")
    elif kind == "graph-binary":
        (art / "graph.snnir").write_bytes(b"\xff\xfe\x00\x01" * 50)
    elif kind == "params-truncated":
        (art / "params.safetensors").write_bytes((art / "params.safetensors").read_bytes()[:300])
    elif kind == "params-missing":
        (art / "params.safetensors").unlink()
    elif kind == "params-wrong-shape":
        from safetensors.numpy import load_file, save_file

        params = load_file(str(art / "params.safetensors"))
        name = sorted(params)[0]
        params[name] = np.zeros((3, 3), np.float32)
        save_file(params, str(art / "params.safetensors"))
    elif kind == "report-garbage":
        (art / "report.json").write_text("{not json")
    else:
        raise AssertionError(kind)
    return art


ARTIFACT_CASES = {
    "missing": "not an snnc artifact directory",
    "a-file": "not an snnc artifact directory",
    "empty-dir": "not an snnc artifact directory",
    "graph-garbage": "damaged artifact directory",
    "graph-binary": "damaged artifact directory",
    "params-truncated": "not a readable safetensors file",
    "params-missing": "is not in the parameter store",
    "params-wrong-shape": "damaged artifact directory",
    "report-garbage": "damaged artifact directory (JSONDecodeError",
}


@pytest.mark.parametrize("kind", sorted(ARTIFACT_CASES))
def test_artifact_run(kind, tmp_path, ann_artifact):
    art = _damaged_artifact(kind, ann_artifact, tmp_path)
    data = _write_npz(tmp_path / "x.npz", x=_digits()[0])
    out = tmp_path / "y.npz"
    assert_one_line_error(_invoke(["run", art, "--data", data, "-o", out]), out, ARTIFACT_CASES[kind])


@pytest.mark.parametrize("kind", sorted(ARTIFACT_CASES))
def test_artifact_eval(kind, tmp_path, snn_artifact):
    art = _damaged_artifact(kind, snn_artifact, tmp_path)
    x, y = _digits()
    data = _write_npz(tmp_path / "x.npz", x=x, y=y)
    out = tmp_path / "r.json"
    result = _invoke(["eval", art, "--data", data, "-T", "1", "--json", out])
    assert_one_line_error(result, out, ARTIFACT_CASES[kind])


# ---------------------------------------------------------------------------------------
# output paths: refused before any work


def _bad_output(kind: str, d: Path, suffix: str) -> Path:
    if kind == "proc":
        return Path(f"/proc/snnc-test-{os.getpid()}{suffix}")
    if kind == "dev-null-child":
        return Path(f"/dev/null/out{suffix}")
    if kind == "existing-file":
        (d / f"taken{suffix}").write_text("mine")
        return d / f"taken{suffix}"
    if kind == "existing-dir":
        (d / f"adir{suffix}").mkdir()
        return d / f"adir{suffix}"
    if kind == "file-as-parent":
        (d / "plain").write_text("mine")
        return d / "plain" / f"out{suffix}"
    if kind == "missing-parent":
        return d / "no" / "such" / f"out{suffix}"
    raise AssertionError(kind)


OUTPUT_CASES = {  # command -> kinds refused (compile creates missing parents and replaces directories)
    "compile": ["proc", "dev-null-child", "existing-file", "file-as-parent"],
    "run": ["proc", "dev-null-child", "existing-dir", "file-as-parent", "missing-parent"],
    "eval": ["proc", "dev-null-child", "existing-dir", "file-as-parent", "missing-parent"],
    "opt": ["proc", "dev-null-child", "existing-dir", "file-as-parent", "missing-parent"],
}


@pytest.mark.parametrize("command,kind", [(c, k) for c, kinds in OUTPUT_CASES.items() for k in kinds])
def test_output_path(command, kind, tmp_path, monkeypatch, ann_artifact, snn_artifact):
    def no_work(*args, **kwargs):
        raise AssertionError("the output path must be checked before any work")

    suffix = {"compile": "", "run": ".npz", "eval": ".json", "opt": ".snnir"}[command]
    out = _bad_output(kind, tmp_path, suffix)
    x, y = _digits()
    data = _write_npz(tmp_path / "x.npz", x=x, y=y)
    monkeypatch.setattr("snnc.driver.load_model", no_work)
    monkeypatch.setattr("snnc.runner.open_artifact", no_work)
    monkeypatch.setattr("snnc.ir.load_graph", no_work)
    args = {
        "compile": ["compile", CNN_PT2, "-o", out],
        "run": ["run", ann_artifact, "--data", data, "-o", out],
        "eval": ["eval", snn_artifact, "--data", data, "--json", out],
        "opt": ["opt", ann_artifact / "graph.snnir", "-p", "canonicalize", "-o", out],
    }[command]
    result = _invoke(args)
    line = assert_one_line_error(result, None, str(out))
    assert "-o" in line or "--json" in line
    if kind in ("existing-file", "existing-dir"):
        assert out.exists()  # untouched
    elif kind != "proc":
        assert not out.exists()
    assert _leftovers(out) == []


def test_a_missing_parent_made_for_compile_is_removed_on_failure(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(b"garbage" * 100)
    assert_one_line_error(_invoke(["compile", bad, "-o", out]), out, "not a PyTorch model file")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------
# command lines: every command of `snnc --help`

COMMANDS = ["compile", "run", "eval", "opt", "passes", "targets", "ops", "config"]


def test_the_table_covers_every_command():
    listed = set(main.commands)
    assert listed == set(COMMANDS), (
        f"add the new commands to the tables of this file: {listed - set(COMMANDS)}"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option(command):
    line = assert_one_line_error(_invoke([command, "--no-such-option"]), None, "No such option")
    assert line.endswith(f" {command} --help'")


@pytest.mark.parametrize("command", ["compile", "run", "eval", "opt"])
def test_missing_argument(command):
    assert_one_line_error(_invoke([command]), None, "Missing")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["compile", CNN_PT2, "-T", "many"], "'many' is not a valid integer"),
        (["compile", CNN_PT2, "-T", "0"], "--timesteps 0: must be >= 1"),
        (["compile", CNN_PT2, "--input-shape", "1,x"], "--input-shape '1,x'"),
        (["compile", CNN_PT2, "-p", "canonicalise"], "did you mean 'canonicalize'?"),
        (["compile", CNN_PT2, "--target", "tvmm"], "unknown target 'tvmm'"),
        (["run", "art", "--data", "x.npz", "--mode", "fast"], "Invalid value for '--mode'"),
        (["opt", "g.snnir", "-p", "canonicalize{bogus=1}"], "bogus"),
    ],
)
def test_bad_option_values(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(_invoke(args), tmp_path / "out", fragment)


# ---------------------------------------------------------------------------------------
# the real console script: closed pipes and signals


def _snnc() -> list[str]:
    script = Path(sys.executable).parent / "snnc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snnc.cli"]


@pytest.mark.parametrize("args", [["ops"], ["passes"], ["passes", "--markdown"], ["targets"], ["config"]])
def test_a_closed_stdout_pipe_ends_quietly(args):
    """`snnc ops | head -1`: the reader is gone before snnc writes; no traceback, no "internal error"."""
    proc = subprocess.Popen([*_snnc(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away at once: every write meets a broken pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141), err.decode()
    assert err == b"", err.decode()


@pytest.mark.parametrize(
    "signum,status,message",
    [
        (signal.SIGINT, 130, "snnc: interrupted"),
        (signal.SIGTERM, 143, "snnc: terminated (SIGTERM)"),
    ],
)
def test_a_signal_during_compile_leaves_no_temporary_directory(tmp_path, signum, status, message):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*_snnc(), "compile", str(CNN_PT2), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _leftovers(out):  # the temporary directory is made before any work
        assert proc.poll() is None, f"finished before the signal: {proc.returncode}\n{proc.stderr.read()}"
        assert time.monotonic() < deadline, "no temporary directory appeared"
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err == message + "\n"
    assert not out.exists()
    assert _leftovers(out) == []
