"""Packaging: every module has one import name (everything lives under snnc/), setuptools finds every
package folder, a wheel holds every module and data file, and ``import snnc`` stays light."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
# source folder -> installed package name
ROOTS = {"snnc": "snnc"}
HEAVY = ("tvm", "h5py", "matplotlib", "snntorch", "spikingjelly", "norse")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _package_folders() -> dict[str, Path]:
    """Installed name -> folder, for every folder under the roots that holds an __init__.py."""
    found = {}
    for root, installed in ROOTS.items():
        for init in sorted((REPO / root).rglob("__init__.py")):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / root)
            found[".".join((installed, *rel.parts)) if rel.parts else installed] = init.parent
    return found


def _data_files() -> list[str]:
    """Non-Python files inside package folders, as their installed paths (snnc/backends/tvm/format.md)."""
    packages = _package_folders()
    folders = {folder: name for name, folder in packages.items()}
    out = []
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            # belongs to the innermost package folder above it
            owner = next(p for p in path.parents if p in folders)
            if folders[owner] != name:
                continue
            out.append("/".join((*name.split("."), *path.relative_to(folder).parts)))
    return out


def _marks(installed: str):
    return []


def test_setuptools_finds_every_package_folder():
    from setuptools import find_packages

    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(str(REPO), include=find["include"]))
    assert found == set(_package_folders())


def test_one_import_name_per_module():
    """passes and backends live only under snnc/: no second top-level name can reach them, and no
    source file imports them by one (`backends.loihi.hardware.Resource` would be a different class
    from `snnc.backends.loihi.hardware.Resource`, and isinstance across the two fails silently)."""
    assert not (REPO / "passes").exists() and not (REPO / "backends").exists()
    pattern = re.compile(r"^\s*(from|import)\s+(passes|backends)\b", re.M)
    offenders = []
    for folder in ("snnc", "tests", "benchmarks", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_console_script_is_declared():
    assert _pyproject()["project"]["scripts"] == {"snnc": "snnc.cli:main"}


def test_passes_and_the_torch_backend_import_from_their_folders():
    passes = importlib.import_module("snnc.passes")
    assert Path(passes.__file__).resolve() == REPO / "snnc" / "passes" / "__init__.py"
    torch_backend = importlib.import_module("snnc.backends.torch")
    assert Path(torch_backend.__file__).resolve() == REPO / "snnc" / "backends" / "torch" / "__init__.py"
    simulator = importlib.import_module("snnc.backends.torch.simulator")
    assert hasattr(simulator, "TorchSimulator")
    assert importlib.import_module("snnc.passes.canonicalize").Canonicalize.name == "canonicalize"


def _modules_after(code: str) -> list[str]:
    """Top-level names of HEAVY modules (and snnc.backends.*) loaded after running ``code`` in a fresh
    interpreter."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}"
        " | {m for m in sys.modules if m.startswith('snnc.backends.')})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_snnc_is_light():
    """`import snnc` loads none of TVM, h5py, matplotlib, snnTorch, SpikingJelly, Norse, nor a backend."""
    assert _modules_after("import snnc") == []


def test_builtin_passes_import_no_heavy_library():
    """Loading every built-in pass (those of snnc/passes and the target passes that live with their
    backend) imports no heavy library, and no backend beyond those that own passes."""
    loaded = _modules_after("from snnc.pass_manager import available_passes\navailable_passes()")
    assert [m for m in loaded if not m.startswith("snnc.")] == []
    assert {m.split(".")[2] for m in loaded} <= {"loihi", "nir", "tvm"}


# ---------------------------------------------------------------------------------------
# a real wheel, built by the PEP 517 backend from a copy of the sources (no network, no pip)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ROOTS:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(dist)!r}))"
    result = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (whl,) = dist.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_holds_every_module_under_its_installed_name(wheel_names):
    expected = set()
    for name, folder in _package_folders().items():
        for py in folder.glob("*.py"):
            expected.add("/".join((*name.split("."), py.name)))
    assert sorted(expected - wheel_names) == []


@pytest.mark.parametrize("installed", [pytest.param(f, marks=_marks(f)) for f in _data_files()])
def test_wheel_holds_every_data_file(wheel_names, installed):
    assert installed in wheel_names


def test_wheel_declares_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(name).decode()
    assert "[console_scripts]\nsnnc = snnc.cli:main\n" in text
