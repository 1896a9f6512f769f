"""examples/build/ from a build system: Make, Ninja (deps = gcc) and CMake (DEPFILE), each run on a temp
copy of the example and the digits model.

Each test builds twice (the second build rebuilds nothing), touches the calibration data (the next build
compiles again, because ``snnc compile --depfile`` listed it), then builds once more (nothing).  "Rebuilt"
is read off ``out/report.json``: a compile replaces the whole artifact directory, so its inode and
mtime change.  A tool that is not installed skips its test with the reason (``make install`` brings
cmake and ninja through the ``dev`` extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent  # the virtualenv's bin: snnc, and cmake / ninja from the dev extra


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tool(name: str) -> str:
    found = shutil.which(name, path=_env()["PATH"])
    if found is None:
        pytest.skip(f"'{name}' is not installed (pip install {name}, or `make install`: the dev extra has it)")
    return found


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """tmp/examples/build (the build files) beside tmp/examples/digits (the model and the data)."""
    if shutil.which("snnc", path=_env()["PATH"]) is None:
        pytest.skip(f"no snnc console script in {BIN} (pip install -e .)")
    shutil.copytree(EXAMPLES / "build", tmp_path / "examples" / "build")
    (tmp_path / "examples" / "digits").mkdir()
    for name in ("mlp.pt2", "train.npz"):
        shutil.copy2(EXAMPLES / "digits" / name, tmp_path / "examples" / "digits" / name)
    return tmp_path / "examples"


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _stamp(report: Path) -> tuple[int, int]:
    st = report.stat()
    return st.st_ino, st.st_mtime_ns


def _touch_after(path: Path, reference: Path) -> None:
    """``touch path`` (the file system's clock, as a user's touch: setting a time from Python's clock could
    put it ahead of the build tool's), until it is newer than ``reference`` on a coarse file system."""
    path.touch()
    while path.stat().st_mtime_ns <= reference.stat().st_mtime_ns:
        time.sleep(0.01)
        path.touch()


def _cycle(build: Callable[[], str], report: Path, calib: Path, depfile: Path | None) -> None:
    build()
    first = _stamp(report)
    if depfile is not None:
        assert "train.npz" in depfile.read_text()  # the depfile lists the calibration data
    build()
    assert _stamp(report) == first, "the second build recompiled although no input changed"
    _touch_after(calib, report)
    build()
    second = _stamp(report)
    assert second != first, "touching the calibration data did not recompile"
    build()
    assert _stamp(report) == second, "a build after the rebuild recompiled although no input changed"


def test_make_rebuilds_only_when_an_input_changes(example: Path):
    make = _tool("make")
    build = example / "build"
    _cycle(lambda: _run([make, "-C", str(build)], build), build / "out" / "report.json",
           example / "digits" / "train.npz", build / "out.d")


def test_ninja_deps_gcc_rebuilds_only_when_an_input_changes(example: Path):
    ninja = _tool("ninja")
    build = example / "build"
    _cycle(lambda: _run([ninja], build), build / "out" / "report.json", example / "digits" / "train.npz", None)
    deps = _run([ninja, "-t", "deps"], build)  # what ninja read from the depfile (deps = gcc deletes it)
    assert "../digits/train.npz" in deps and "../digits/mlp.pt2" in deps


# the Make generator runs under `make test-all` (each build test compiles twice: ~10 s a compile on a quiet
# machine, almost all of it importing torch.export)
@pytest.mark.parametrize("generator", ["Ninja", pytest.param("Unix Makefiles", marks=pytest.mark.slow)])
def test_cmake_depfile_rebuilds_only_when_an_input_changes(example: Path, generator: str):
    cmake = _tool("cmake")
    _tool("ninja" if generator == "Ninja" else "make")
    binary = example / "cmake-build"
    _run([cmake, "-S", str(example / "build"), "-B", str(binary), "-G", generator], example)
    _cycle(lambda: _run([cmake, "--build", str(binary)], example), binary / "out" / "report.json",
           example / "digits" / "train.npz", binary / "out.d")
