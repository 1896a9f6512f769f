"""The ``snnc`` command line (DESIGN §6, issue 2 "Done when").

Most tests call the click group in-process (CliRunner: fast); one runs the real console script to check
exit codes and that no traceback reaches the user.  A bad input must end with exit status 2, one line on
stderr starting ``snnc: error:``, no traceback, and no output directory (and no temporary one left behind).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import snnc
from snnc.cli import main
from snnc.errors import TargetError
from snnc.ir import load_graph, parse_graph, print_graph, verify

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
CNN_PT2 = DIGITS / "cnn.pt2"
LAYER_KEYS = {"name", "op", "neurons", "macs", "sops", "spikes_per_sample"}
TOTAL_KEYS = {"neurons", "macs", "sops", "spikes_per_sample"}
# The digits CNN, by hand: conv 1->16 3x3 on 8x8 = 16*8*8*9; conv 16->32 3x3 on 4x4 = 32*4*4*16*9;
# avgpool 2x2 -> 32x2x2 = 128*4 adds; linear 128 -> 10.
CNN_MACS = {"conv2d": 9216, "conv2d_1": 73728, "avg_pool2d": 512, "linear": 1280}
CNN_NEURONS = {"relu": 16 * 8 * 8, "relu_1": 32 * 4 * 4}


def _digits_models():
    """examples/digits/models.py under a private name (tests/models.py owns `models`)."""
    spec = importlib.util.spec_from_file_location("digits_example_models_cli", DIGITS / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cnn_module() -> torch.nn.Module:
    model = _digits_models().cnn()
    model.load_state_dict(torch.load(DIGITS / "cnn.pt", weights_only=True))
    return model.eval()


def _test_inputs(n: int = 40) -> np.ndarray:
    with np.load(DIGITS / "test.npz") as f:
        return f["x"][:n]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _invoke(args: list[str | Path]) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def cnn_artifact(tmp_path_factory) -> Path:
    """examples/digits/cnn.pt2 compiled once with the default (analysis-only) pipeline."""
    out = tmp_path_factory.mktemp("artifact") / "out"
    _ok(_invoke(["compile", CNN_PT2, "-o", out]))
    return out


def _leftovers(out: Path) -> list[str]:
    """Temporary or backup siblings the driver may have left next to ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def assert_user_error(result: Result, out: Path, fragment: str) -> str:
    """Exit 2, exactly one stderr line 'snnc: error: ...' holding ``fragment``, no traceback, no output."""
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr:\n{result.stderr}\n{result.exception!r}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("snnc: error: ")
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    assert not out.exists()
    assert _leftovers(out) == []
    return lines[0]


# ---------------------------------------------------------------------------------------
# compile -> artifact


def test_compile_writes_the_artifact_files(cnn_artifact):
    names = {p.name for p in cnn_artifact.iterdir()}
    assert {"graph.snnir", "params.safetensors", "report.json"} <= names
    graph = load_graph(cnn_artifact)
    verify(graph)
    assert _leftovers(cnn_artifact) == []


def test_artifact_modes_follow_the_umask(cnn_artifact):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(cnn_artifact.stat().st_mode) == 0o777 & ~umask
    for path in cnn_artifact.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_report_has_the_design_keys(cnn_artifact):
    report = json.loads((cnn_artifact / "report.json").read_text())
    assert isinstance(report["schema_version"], int) and report["schema_version"] >= 1
    assert report["snnc_version"] == snnc.__version__
    assert report["source"] == {
        "path": str(CNN_PT2),
        "sha256": hashlib.sha256(CNN_PT2.read_bytes()).hexdigest(),
        "kind": "pt2",
    }
    assert report["target"] == "torch"
    assert report["pipeline"] == "canonicalize,fold-bn,count-ops"
    assert isinstance(report["timesteps"], int) and report["timesteps"] >= 0
    for layer in report["layers"]:
        assert LAYER_KEYS <= set(layer), layer
    assert TOTAL_KEYS <= set(report["totals"])


def test_report_counts_the_digits_cnn_by_hand(cnn_artifact):
    report = json.loads((cnn_artifact / "report.json").read_text())
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert {name: layers[name]["macs"] for name in CNN_MACS} == CNN_MACS
    assert {name: layers[name]["neurons"] for name in CNN_NEURONS} == CNN_NEURONS
    assert report["totals"]["macs"] == sum(CNN_MACS.values()) == sum(lay["macs"] for lay in report["layers"])
    assert report["totals"]["neurons"] == sum(CNN_NEURONS.values())
    assert report["totals"]["sops"] == 0 and report["totals"]["spikes_per_sample"] == 0  # no spikes yet


def test_compile_prints_a_summary(runner, tmp_path):
    result = _ok(runner.invoke(main, ["compile", str(CNN_PT2), "-o", str(tmp_path / "out")]))
    assert "canonicalize,fold-bn,count-ops" in result.stdout
    assert "73,728" in result.stdout  # conv2d_1's MACs in the table
    assert result.stderr == ""


def test_run_ann_mode_gives_the_source_logits(cnn_artifact, tmp_path):
    x = _test_inputs()
    np.savez(tmp_path / "x.npz", x=x)
    _ok(
        _invoke(
            ["run", cnn_artifact, "--data", tmp_path / "x.npz", "--mode", "ann", "-o", tmp_path / "y.npz"]
        )
    )
    with np.load(tmp_path / "y.npz") as f:
        logits, predictions = f["logits"], f["predictions"]
    with torch.no_grad():
        want = torch.export.load(str(CNN_PT2)).module()(torch.from_numpy(x)).numpy()
    assert logits.shape == want.shape == (len(x), 10)
    assert np.abs(logits - want).max() <= 1e-5
    np.testing.assert_array_equal(predictions, want.argmax(1))


def test_run_reports_accuracy_on_labelled_data(cnn_artifact):
    result = _ok(_invoke(["run", cnn_artifact, "--data", DIGITS / "test.npz", "--mode", "ann"]))
    assert result.stdout.startswith("360 samples, accuracy 0.9")


def test_opt_canonicalize_prints_ir_that_parses_back(cnn_artifact):
    result = _ok(_invoke(["opt", cnn_artifact / "graph.snnir", "-p", "canonicalize"]))
    parsed = parse_graph(result.stdout)
    assert parsed == load_graph(cnn_artifact)
    assert print_graph(parsed) == result.stdout


def test_opt_writes_ir_and_params_with_o(cnn_artifact, tmp_path):
    target = tmp_path / "g.snnir"
    result = _ok(_invoke(["opt", cnn_artifact / "graph.snnir", "-p", "canonicalize,count-ops", "-o", target]))
    assert result.stdout == ""
    graph = load_graph(target)
    verify(graph)  # the params came along in g.safetensors
    assert (tmp_path / "g.safetensors").exists()
    assert graph == load_graph(cnn_artifact)


def test_opt_print_pipeline_is_canonical(runner, cnn_artifact):
    result = _ok(
        runner.invoke(
            main,
            [
                "opt",
                str(cnn_artifact / "graph.snnir"),
                "-p",
                " canonicalize , count-ops{samples=256} ",
                "--print-pipeline",
            ],
        )
    )
    assert result.stdout == "canonicalize,count-ops\n"


def test_opt_unknown_option_is_a_user_error(cnn_artifact, tmp_path):
    result = _invoke(["opt", cnn_artifact / "graph.snnir", "-p", "count-ops{sampels=3}"])
    line = assert_user_error(result, tmp_path / "none", "")
    assert line == "snnc: error: pass 'count-ops' has no option 'sampels'; did you mean 'samples'?"


def test_state_dict_with_arch_compiles_and_runs(tmp_path):
    out = tmp_path / "out"
    _ok(
        _invoke(
            [
                "compile",
                DIGITS / "cnn.pt",
                "--arch",
                f"{DIGITS / 'models.py'}:cnn",
                "--input-shape",
                "1,8,8",
                "-o",
                out,
            ]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["kind"] == "state_dict"
    # fx names nodes after the Sequential's children (0, 4, 7, 9)
    assert {layer["name"]: layer["macs"] for layer in report["layers"] if layer["macs"]} == {
        "_0": 9216,
        "_4": 73728,
        "_7": 512,
        "_9": 1280,
    }
    x = _test_inputs(16)
    np.savez(tmp_path / "x.npz", x=x)
    _ok(_invoke(["run", out, "--data", tmp_path / "x.npz", "--mode", "ann", "-o", tmp_path / "y.npz"]))
    with torch.no_grad():
        want = _cnn_module()(torch.from_numpy(x)).numpy()
    with np.load(tmp_path / "y.npz") as f:
        assert np.abs(f["logits"] - want).max() <= 1e-5


def test_pickled_module_compiles_with_trust_pickle(tmp_path):
    torch.save(_cnn_module(), tmp_path / "whole.pt")
    out = tmp_path / "out"
    _ok(_invoke(["compile", tmp_path / "whole.pt", "--trust-pickle", "--input-shape", "1,8,8", "-o", out]))
    assert json.loads((out / "report.json").read_text())["source"]["kind"] == "pickle"


def test_print_ir_after_all_and_time_passes(runner, tmp_path):
    result = _ok(
        runner.invoke(
            main,
            ["compile", str(CNN_PT2), "-o", str(tmp_path / "out"), "--print-ir-after=all", "--time-passes"],
        )
    )
    for name in ("canonicalize", "fold-bn", "count-ops"):
        assert f"// ----- IR after {name} -----\ngraph @cnn(" in result.stdout
    # after fold-bn no batchnorm is left
    after_fold = result.stdout.split("// ----- IR after fold-bn -----\n")[1].split("// -----")[0]
    assert "batchnorm" not in after_fold and "conv2d" in after_fold
    timing = result.stderr.splitlines()
    assert timing[0] == "===== pass execution timing ====="
    assert [line.split()[-1] for line in timing[2:]] == ["load", "canonicalize", "fold-bn", "count-ops",
                                                          "report-simulation", "target", "write", "total"]


def test_print_ir_after_one_pass(runner, tmp_path):
    result = _ok(
        runner.invoke(
            main, ["compile", str(CNN_PT2), "-o", str(tmp_path / "out"), "--print-ir-after", "fold-bn"]
        )
    )
    assert result.stdout.count("// ----- IR after") == 1
    assert "// ----- IR after fold-bn -----" in result.stdout


# ---------------------------------------------------------------------------------------
# the artifact directory appears whole or not at all


def test_a_failed_compile_keeps_an_existing_output_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"\x00not a model" * 100)
    result = _invoke(["compile", garbage, "-o", out])
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert _leftovers(out) == []


def test_a_late_internal_error_leaves_no_partial_directory(tmp_path, monkeypatch):
    """A bug after the files are being written: exit 1, the old directory intact, no temp left."""

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("snnc.driver.build_report", broken)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _invoke(["compile", CNN_PT2, "-o", out])
    assert result.exit_code == 1
    assert result.stderr.startswith("snnc: internal error")
    assert "RuntimeError: boom" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert _leftovers(out) == []


def test_a_target_error_while_writing_leaves_no_directory(tmp_path, monkeypatch):
    def refuse(self, graph, out_dir, ctx):
        (Path(out_dir) / "half-written.bin").write_bytes(b"x")
        raise TargetError("the torch target refuses (test)")

    monkeypatch.setattr("snnc.backends.torch.target.TorchTarget.compile", refuse)
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", CNN_PT2, "-o", out]), out, "")
    assert line == "snnc: error: the torch target refuses (test)"


def test_a_successful_compile_replaces_an_existing_directory_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    _ok(_invoke(["compile", CNN_PT2, "-o", out]))
    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names and "graph.snnir" in names
    assert _leftovers(out) == []


# ---------------------------------------------------------------------------------------
# bad inputs: exit 2, one line, no traceback, no output directory

SIGMOID_ARCH = """\
import torch
from torch import nn


class Sig(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


def sig():
    return Sig()
"""


def test_missing_file(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", tmp_path / "nope.pt2", "-o", out]), out, "")
    assert line == f"snnc: error: {tmp_path / 'nope.pt2'}: no such file"


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", bad, "-o", out]), out, "")
    assert line == (
        f"snnc: error: {bad}: not a PyTorch model file "
        "(expected a torch.export .pt2 archive or a torch.save .pt zip)"
    )


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.pt2"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    assert_user_error(_invoke(["compile", bad, "-o", out]), out, "truncated or corrupt")


def test_directory_as_model(tmp_path):
    out = tmp_path / "out"
    assert_user_error(_invoke(["compile", tmp_path, "-o", out]), out, "is a directory")


def test_truncated_pt2_first_half(tmp_path):
    data = CNN_PT2.read_bytes()
    bad = tmp_path / "cnn.pt2"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_user_error(_invoke(["compile", bad, "-o", out]), out, "truncated or corrupt")


def test_truncated_pt2_end_cut(tmp_path):
    data = CNN_PT2.read_bytes()
    bad = tmp_path / "cnn.pt2"
    bad.write_bytes(data[:-200])  # the zip's central directory is damaged
    out = tmp_path / "out"
    assert_user_error(_invoke(["compile", bad, "-o", out]), out, "corrupt or truncated")


def test_corrupt_member_in_pt2(tmp_path):
    """A whole zip whose model.json is damaged: torch.export cannot read it."""
    import zipfile

    data = bytearray(CNN_PT2.read_bytes())
    with zipfile.ZipFile(CNN_PT2) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("models/model.json"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # local header is 30 bytes + name
    data[start : start + 64] = b"#" * 64
    bad = tmp_path / "cnn.pt2"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_user_error(
        _invoke(["compile", bad, "-o", out]),
        out,
        "cannot read the torch.export archive (corrupt or truncated?)",
    )


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_torchscript_archive(tmp_path, suffix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated: that is the user's point here
        scripted = torch.jit.script(_cnn_module())
    path = tmp_path / f"scripted{suffix}"
    scripted.save(str(path))
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", path, "-o", out]), out, "")
    assert line == (
        f"snnc: error: {path}: a TorchScript archive; snnc reads torch.export (.pt2) archives: "
        "re-export with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')"
    )


def test_wrong_input_shape_for_pt2(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", CNN_PT2, "--input-shape", "1,9,9", "-o", out]), out, "")
    assert line == (
        "snnc: error: --input-shape 1,9,9 does not match the model's input shape 1,8,8 stored in cnn.pt2"
    )


def test_malformed_input_shape(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", CNN_PT2, "--input-shape", "1,a,8", "-o", out]), out, "")
    assert line == "snnc: error: --input-shape '1,a,8': expected comma-separated positive integers like 1,8,8"


def test_unsupported_op_in_state_dict_model(tmp_path):
    arch = tmp_path / "sigmoid_arch.py"
    arch.write_text(SIGMOID_ARCH)
    spec = importlib.util.spec_from_file_location("sigmoid_arch_for_test", arch)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.sig().state_dict(), tmp_path / "sig.pt")
    out = tmp_path / "out"
    result = _invoke(
        ["compile", tmp_path / "sig.pt", "--arch", f"{arch}:sig", "--input-shape", "1,8,8", "-o", out]
    )
    line = assert_user_error(result, out, "")
    assert line == (
        "snnc: error: unsupported op 'torch.sigmoid' at sigmoid_arch.py:11 in forward: "
        "`return torch.sigmoid(self.fc(torch.flatten(x, 1)))`; Sigmoid has no ReLU form: replace it with nn.ReLU "
        "(or nn.ReLU6 / nn.Hardtanh) and retrain, or use a ReLU-family model"
    )


def test_state_dict_without_arch(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", DIGITS / "cnn.pt", "-o", out]), out, "")
    assert line.endswith(
        "is a state dict (weights only); say which architecture builds it with --arch path/to/file.py:factory"
    )


def test_arch_without_the_factory(tmp_path):
    out = tmp_path / "out"
    result = _invoke(
        [
            "compile",
            DIGITS / "cnn.pt",
            "--arch",
            f"{DIGITS / 'models.py'}:resnet",
            "--input-shape",
            "1,8,8",
            "-o",
            out,
        ]
    )
    assert_user_error(result, out, "has no function 'resnet'")


def test_pickled_module_without_trust_pickle(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_cnn_module(), path)
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", path, "--input-shape", "1,8,8", "-o", out]), out, "")
    assert line == (
        f"snnc: error: {path}: holds a pickled Python object (a whole module), and unpickling runs "
        "arbitrary code; pass --trust-pickle if you trust this file, or save a state dict and use "
        "--arch file.py:factory, or export with torch.export to .pt2"
    )


def test_unknown_pass(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", CNN_PT2, "-p", "canonicalise,fold-bn", "-o", out]), out, "")
    assert line == "snnc: error: unknown pass 'canonicalise'; did you mean 'canonicalize'?"


def test_unknown_target(tmp_path):
    out = tmp_path / "out"
    line = assert_user_error(_invoke(["compile", CNN_PT2, "--target", "tvmm", "-o", out]), out, "")
    assert line.startswith("snnc: error: unknown target 'tvmm'; did you mean 'tvm'?")


def test_run_on_a_directory_that_is_not_an_artifact(tmp_path):
    np.savez(tmp_path / "x.npz", x=_test_inputs(2))
    result = _invoke(["run", tmp_path, "--data", tmp_path / "x.npz"])
    line = assert_user_error(result, tmp_path / "none", "")
    assert (
        line
        == f"snnc: error: {tmp_path}: not an snnc artifact directory (no graph.snnir); run `snnc compile` first"
    )


def test_run_with_data_of_the_wrong_shape(cnn_artifact, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 1, 9, 9), np.float32))
    result = _invoke(["run", cnn_artifact, "--data", tmp_path / "x.npz", "-o", tmp_path / "y.npz"])
    line = assert_user_error(result, tmp_path / "y.npz", "")
    assert (
        line
        == f"snnc: error: {tmp_path / 'x.npz'}: samples have shape [1, 9, 9], the model expects [1, 8, 8]"
    )


# ---------------------------------------------------------------------------------------
# listing commands


def test_passes_lists_the_builtin_passes(runner):
    result = _ok(runner.invoke(main, ["passes"]))
    names = {line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")}
    assert {"canonicalize", "fold-bn", "count-ops"} <= names
    fold = next(line for line in result.stdout.splitlines() if line.startswith("fold-bn "))
    assert "batch normalisation" in fold


def test_targets_lists_the_targets(runner):
    result = _ok(runner.invoke(main, ["targets"]))
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"torch", "tvm", "loihi"} <= set(names)


def test_ops_lists_ops_with_attributes(runner):
    result = _ok(runner.invoke(main, ["ops"]))
    assert "conv2d: " in result.stdout
    assert "stride=(1, 1)" in result.stdout
    assert "batchnorm: " in result.stdout


def test_version(runner):
    result = _ok(runner.invoke(main, ["--version"]))
    assert result.stdout == f"snnc, version {snnc.__version__}\n"


# ---------------------------------------------------------------------------------------
# the real console script


def _snnc_command() -> list[str]:
    script = Path(sys.executable).parent / "snnc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snnc.cli"]


def test_console_script_exit_codes_and_no_traceback(tmp_path):
    version = subprocess.run([*_snnc_command(), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0
    assert version.stdout.strip() == f"snnc, version {snnc.__version__}"

    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(b"garbage" * 50)
    out = tmp_path / "out"
    failed = subprocess.run(
        [*_snnc_command(), "compile", str(bad), "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("snnc: error: ")
    assert not out.exists()


def test_eval_refuses_an_ann_artifact(cnn_artifact, tmp_path):
    out = tmp_path / "never"
    line = assert_user_error(_invoke(["eval", cnn_artifact, "--data", DIGITS / "test.npz", "-T", "4"]), out,
                             "holds an ANN graph (compiled without --calib), not a spiking one")
    assert line.endswith("compile with --calib DATA to convert it, or use `snnc run --mode ann`")


def test_data_file_that_is_not_an_npz_is_never_unpickled(cnn_artifact, tmp_path):
    import pickle

    bad = tmp_path / "x.npz"
    bad.write_bytes(pickle.dumps({"x": 1}))
    line = assert_user_error(_invoke(["run", cnn_artifact, "--data", bad]), tmp_path / "never",
                             "not a .npz archive")
    assert "allow_pickle" not in line
