"""Model files never run code and never load damaged (issue: reliability).

A torch.export ``.pt2`` holds pickles (the sample inputs, pickled weights); ``torch.export.load`` tries
torch's safe ``weights_only`` loader and, when that refuses, falls back to a full unpickle, which runs
code from the file.  snnc checks every member before torch sees the file: without ``--trust-pickle``
such a file is refused (exit 2, one line naming the member), and a member whose CRC does not match is
refused with or without it.
"""

from __future__ import annotations

import io
import json
import operator
import pathlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from snnc.cli import main
from snnc.errors import InputFileError
from snnc.frontend.files import load_model

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
CNN_PT2 = DIGITS / "cnn.pt2"
SAMPLE_INPUTS = "cnn/data/sample_inputs/model.pt"


class _Touch:
    """Unpickling this creates ``path``: a payload that runs code, without os.system."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


class _EmptyKwargsAfter:
    """Unpickles to ``{}`` (the sample kwargs torch expects) after running ``_Touch``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (operator.getitem, (({}, _Touch(self.path)), 0))


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes], extra: list[tuple[str, bytes]] = ()) -> Path:
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            out.writestr(info.filename, replace.get(info.filename, z.read(info)))
        for name, data in extra:
            out.writestr(name, data)
    return dst


def _sample_args() -> tuple:
    with zipfile.ZipFile(CNN_PT2) as z:
        args, _kwargs = torch.load(io.BytesIO(z.read(SAMPLE_INPUTS)), weights_only=True)
    return args


def _evil_pt2(tmp_path: Path, marker: Path) -> Path:
    """cnn.pt2 whose sample inputs are ``(args, kwargs)`` with kwargs built by code that creates ``marker``."""
    buf = io.BytesIO()
    torch.save((_sample_args(), _EmptyKwargsAfter(marker)), buf)
    return _rewrite(CNN_PT2, tmp_path / "evil.pt2", {SAMPLE_INPUTS: buf.getvalue()})


def _invoke(args: list) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.stderr}\n{result.exception!r}"
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnc: error: "), result.stderr
    return lines[0]


def test_a_pt2_whose_sample_inputs_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = _evil_pt2(tmp_path, marker)
    out = tmp_path / "out"
    line = _one_error_line(_invoke(["compile", evil, "-o", out]))
    assert f"member {SAMPLE_INPUTS} holds pickled Python objects" in line
    assert "--trust-pickle" in line
    assert not marker.exists()
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_the_same_file_loads_with_trust_pickle(tmp_path):
    """The payload is real: trusted, it runs (and the model compiles), with no foreign log output."""
    marker = tmp_path / "marker"
    evil = _evil_pt2(tmp_path, marker)
    result = _invoke(["compile", evil, "--trust-pickle", "-o", tmp_path / "out"])
    assert result.exit_code == 0, result.stderr
    assert marker.exists()
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
    assert "Fallback to weights_only=False" not in result.stderr


def test_refusal_in_the_real_console_script(tmp_path):
    """No torch logger, no traceback: one line from the installed ``snnc``, and no code ran."""
    marker = tmp_path / "marker"
    evil = _evil_pt2(tmp_path, marker)
    script = Path(sys.executable).parent / "snnc"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "snnc.cli"]
    done = subprocess.run(
        [*cmd, "compile", str(evil), "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("snnc: error: "), done.stderr
    assert not marker.exists()


def test_a_raw_pickle_as_sample_inputs_is_refused(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps((_sample_args(), _EmptyKwargsAfter(marker)), protocol=2)
    bad = _rewrite(CNN_PT2, tmp_path / "raw.pt2", {SAMPLE_INPUTS: payload})
    with pytest.raises(InputFileError, match="a raw pickle, not a torch.save archive"):
        load_model(bad)
    assert not marker.exists()


def test_a_weight_flagged_as_pickled_is_checked_too(tmp_path):
    """torch.export.load unpickles a ``use_pickle`` weight with weights_only=False, no fallback needed."""
    marker = tmp_path / "marker"
    config_name = "cnn/data/weights/model_weights_config.json"
    with zipfile.ZipFile(CNN_PT2) as z:
        config = json.loads(z.read(config_name))
    entry = next(e for e in config["config"].values() if e["path_name"] == "weight_0")
    entry["use_pickle"] = True
    buf = io.BytesIO()
    torch.save((_Touch(marker), torch.zeros(16, 1, 3, 3)), buf)
    bad = _rewrite(
        CNN_PT2,
        tmp_path / "w.pt2",
        {
            config_name: json.dumps(config).encode(),
            "cnn/data/weights/weight_0": buf.getvalue(),
        },
    )
    with pytest.raises(InputFileError, match="member cnn/data/weights/weight_0 holds pickled Python objects"):
        load_model(bad)
    assert not marker.exists()


def _damage(path: Path, member: str, dst: Path, offset: int = 8, n: int = 100) -> Path:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    local_extra = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + len(info.filename.encode()) + local_extra + offset
    data[start : start + n] = bytes(b ^ 0xFF for b in data[start : start + n])
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("trust", [False, True])
def test_a_weight_with_a_bad_crc_is_refused(tmp_path, trust):
    bad = _damage(CNN_PT2, "cnn/data/weights/weight_4", tmp_path / "crc.pt2")
    out = tmp_path / "out"
    args = ["compile", bad, "-o", out] + (["--trust-pickle"] if trust else [])
    line = _one_error_line(_invoke(args))
    assert line == (
        f"snnc: error: {bad}: cannot read the torch.export archive (corrupt or truncated?): member "
        "cnn/data/weights/weight_4 fails its CRC check; copy or export the file again"
    )
    assert not out.exists()


def test_a_state_dict_pt_with_a_bad_crc_is_refused(tmp_path):
    src = DIGITS / "cnn.pt"
    with zipfile.ZipFile(src) as z:
        member = max(z.infolist(), key=lambda i: i.file_size).filename  # the largest tensor
    bad = _damage(src, member, tmp_path / "crc.pt")
    with pytest.raises(
        InputFileError, match=f"cannot read the torch.save archive .*member {member} fails its CRC"
    ):
        load_model(bad, arch=f"{DIGITS / 'models.py'}:cnn", input_shape=(1, 8, 8))


def test_a_member_stored_twice_is_refused(tmp_path):
    with zipfile.ZipFile(CNN_PT2) as z:
        weight = z.read("cnn/data/weights/weight_0")
    bad = _rewrite(
        CNN_PT2, tmp_path / "dup.pt2", {}, extra=[("cnn/data/weights/weight_0", bytes(len(weight)))]
    )
    with pytest.raises(InputFileError, match="member cnn/data/weights/weight_0 appears twice"):
        load_model(bad)


@pytest.mark.parametrize("name", ["cnn.pt2", "mlp.pt2"])
def test_the_digits_archives_load_unchanged(name):
    loaded = load_model(DIGITS / name)
    assert loaded.kind == "pt2" and loaded.graph.nodes


# ---------------------------------------------------------------------------------------
# crash classes the model-file fuzzer found (tools/fuzz.py --target model, 100,000 inputs)


def test_a_dict_with_non_string_keys_is_not_a_state_dict(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({("0", "weight"): torch.zeros(2)}, path)
    with pytest.raises(InputFileError, match="holds a dict that is not a state dict"):
        load_model(path, arch=f"{DIGITS / 'models.py'}:mlp")


def test_a_zip_of_an_unknown_version_is_not_a_model_file(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", b"x")
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")
    data[central + 6 : central + 8] = (102).to_bytes(2, "little")  # "version needed to extract": 10.2
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError):
        load_model(path, arch=f"{DIGITS / 'models.py'}:mlp")


def test_an_error_without_a_message_still_gives_one_line():
    from snnc.errors import first_line

    assert first_line(IndexError()) == "" and first_line(ValueError("a\nb")) == "a"
