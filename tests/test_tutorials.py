"""The tutorials in docs/tutorials/ run as written, and the docs site builds without a warning.

Each tutorial is read as a script: its fenced blocks run in order in a fresh directory, with the
repository's ``.venv/bin`` first on PATH and ``examples`` linked to the repository's, as a reader
who runs the commands from the root of a checkout would see them.

* ```` ```console ````: each ``$ command`` (a trailing ``\\`` continues it on the next line) runs in
  bash (with ``pipefail``) and must exit with status 0.  The lines shown after it are its output: each must appear in
  what the command prints, in the same order within stdout and within stderr, compared with every
  number replaced by ``#`` and runs of blanks or of the same character squeezed (a table's column
  widths and the measured numbers may change; its rows, columns and words may not).  ``cd DIR``
  changes the directory of the commands after it, as in a shell.
* ```` ```python ````: runs as a script (``python -``) in the same directory and must exit with 0;
  a ```` ```text ```` block right after it (nothing but blank lines between) is its output.
* A block whose previous line is ``<!-- file: PATH -->`` (invisible on the site and on GitHub) is
  not run: its text is written to PATH (relative to the commands' current directory), for the
  commands after it to use.

Shell blocks of another kind (```` ```sh ````, ```` ```bash ````) are refused: a command a reader can
copy must be one that this test runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^```(\w*)\s*$")
_FILE = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->$")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*)?\.?\d+(?:[eE][-+]?\d+)?")


@dataclass(frozen=True, kw_only=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    file: str = ""  # where to write it, for a file block
    output: str = ""  # a python block's output (the text block after it)


@dataclass(frozen=True, kw_only=True)
class Command:
    command: str
    output: list[str]
    line: int


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, a python block's output folded into it."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        marker = _FILE.match(lines[start - 1].strip()) if start > 0 else None
        text = "\n".join(body) + "\n"
        previous = found[-1] if found else None
        between = lines[previous.line:start] if previous else []  # from the previous block's fence on
        if (lang == "text" and previous is not None and previous.lang == "python" and not previous.file
                and _only_blank_after_fence(between)):
            found[-1] = Block(lang="python", text=previous.text, line=previous.line, output=text)
            continue
        found.append(Block(lang=lang, text=text, line=start + 1, file=marker.group(1) if marker else ""))
    return found


def _only_blank_after_fence(lines: list[str]) -> bool:
    """True when, after the previous block's closing fence, only blank lines come."""
    closing = max(i for i, line in enumerate(lines) if line.strip() == "```")
    return all(not line.strip() for line in lines[closing + 1:])


def commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block, each with the output lines shown after it."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if not found:
                raise AssertionError(f"line {block.line + 1 + i}: console block text before its first '$ ' command")
            found[-1].output.append(lines[i])
            i += 1
            continue
        line = block.line + 1 + i
        parts = [lines[i][2:]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        found.append(Command(command="\n".join(parts), output=[], line=line))
        i += 1
    return found


def _normal(line: str) -> str:
    line = _NUMBER.sub("#", line)
    line = re.sub(r"\s+", " ", line).strip()
    return re.sub(r"(.)\1+", r"\1", line)


def missing_lines(shown: list[str], *streams: str) -> list[str]:
    """The shown lines (``...`` lines aside) not found among the lines of the actual output streams:
    each in the same order as shown within its stream, the streams in any interleaving (what a
    terminal shows of stdout and stderr depends on buffering)."""
    have = [[_normal(line) for line in stream.splitlines()] for stream in streams]
    pos, missing = [0] * len(have), []
    for line in shown:
        if not line.strip() or line.strip() == "...":
            continue
        pattern = re.compile(".*".join(re.escape(_normal(part)) for part in line.split("...")) + "$")
        for k, lines in enumerate(have):
            j = next((j for j in range(pos[k], len(lines)) if pattern.match(lines[j])), None)
            if j is not None:
                pos[k] = j + 1
                break
        else:
            missing.append(line)
    return missing


def _env() -> dict[str, str]:
    # a reader's shell: not pytest's, and not the `make test` that may run this (a sub-make prints
    # "make[1]: ..." where the tutorial shows "make: ...")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST", "PYTHON", "COV_")) and k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(BIN.parent)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _show(what: str, output: str) -> str:
    tail = "\n".join(output.splitlines()[-40:])
    return f"{what}\n--- output (last 40 lines) ---\n{tail}"


def run_tutorial(path: Path, work: Path) -> None:
    (work / "examples").symlink_to(ROOT / "examples")
    cwd, env = work, _env()
    for block in blocks(path):
        where = f"{path.name}:{block.line}"
        if block.file:
            target = cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        elif block.lang == "console":
            for cmd in commands(block):
                where = f"{path.name}:{cmd.line}"
                cd = re.fullmatch(r"cd\s+(\S+)", cmd.command.strip())
                if cd:
                    cwd = (cwd / cd.group(1)).resolve()
                    assert cwd.is_dir(), f"{where}: no directory {cwd}"
                    continue
                done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd.command], cwd=cwd, env=env, capture_output=True,
                                      text=True, timeout=600)
                output = done.stdout + done.stderr
                assert done.returncode == 0, _show(f"{where}: `{cmd.command}` exited {done.returncode}", output)
                missing = missing_lines(cmd.output, done.stdout, done.stderr)
                assert not missing, _show(f"{where}: `{cmd.command}` did not print {missing}", output)
        elif block.lang == "python":
            done = subprocess.run([str(BIN / "python"), "-"], input=block.text, cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=600)
            output = done.stdout + done.stderr
            assert done.returncode == 0, _show(f"{where}: python block exited {done.returncode}", output)
            missing = missing_lines(block.output.splitlines(), done.stdout, done.stderr)
            assert not missing, _show(f"{where}: python block did not print {missing}", output)


# The tutorials, in the order the site lists them.  Each takes 20-30 s of CPU (most of it starting
# torch in each `snnc` process), so that the fast set stays near 90 s two of them are `slow`
# (`make test-all` runs them): the three kept are the everyday uses.
ORDER = ["convert-ann.md", "direct-snn.md", "loihi.md", "custom-pass.md", "build-system.md"]
SLOW = {"direct-snn.md", "loihi.md"}


def test_every_tutorial_is_listed():
    on_disk = sorted(p.name for p in TUTORIALS.glob("*.md") if p.name != "README.md")
    assert on_disk == sorted(ORDER)
    index = (TUTORIALS / "README.md").read_text()
    assert all(f"({name})" in index for name in ORDER), "docs/tutorials/README.md links every tutorial"


@pytest.mark.parametrize("name", ORDER)
def test_tutorial_blocks_are_all_run(name):
    """No command hides from the test: every shell block is a console block with commands, every
    python block runs or is written to a file that a later command uses."""
    for block in blocks(TUTORIALS / name):
        assert block.lang not in ("sh", "bash", "shell", "zsh"), f"{name}:{block.line}: use ```console with '$ '"
        if block.lang == "console":
            assert commands(block), f"{name}:{block.line}: a console block without a '$ ' command"
        if block.file:
            assert ".." not in Path(block.file).parts and not Path(block.file).is_absolute(), block.file


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ORDER])
def test_tutorial_runs_as_written(name, tmp_path):
    run_tutorial(TUTORIALS / name, tmp_path)


def test_output_matching_ignores_numbers_and_widths_but_not_words():
    actual = "┃ layer      ┃ neurons ┃\n│ relu       │   1,024 │\naccuracy 0.9889, mean 8.00\n"
    assert missing_lines(["┃ layer ┃ neurons ┃", "...", "│ relu │ 2,048 │", "accuracy 0.91, mean 4"], actual) == []
    assert missing_lines(["│ relu_1 │ 1,024 │"], actual) == ["│ relu_1 │ 1,024 │"]
    assert missing_lines(["accuracy 0.9, mean 8", "┃ layer ┃ neurons ┃"], actual) == ["┃ layer ┃ neurons ┃"]  # in order
    assert missing_lines(["accuracy 0.9"], actual) == ["accuracy 0.9"]  # whole lines
    assert missing_lines(["accuracy ..., mean 8"], actual) == []
    assert missing_lines(["error: no", "exit status: 2"], "exit status: 2\n", "error: no\n") == []  # two streams


def test_docs_site_builds_without_warnings(tmp_path):
    """`make docs` in short: mkdocs --strict turns every warning (a broken link or anchor, a page
    missing from the nav that the nav names) into a failure."""
    if shutil.which("mkdocs", path=str(BIN)) is None:
        pytest.skip("mkdocs is not installed (the dev extra)")
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert done.returncode == 0, _show("mkdocs build --strict failed", done.stdout)
    assert (tmp_path / "site" / "tutorials" / "convert-ann" / "index.html").exists()
