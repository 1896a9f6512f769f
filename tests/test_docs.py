"""The docs tell the truth about what is registered: every pass and pipeline is documented."""

from __future__ import annotations

from pathlib import Path

from snnc.pass_manager import available_passes, available_pipelines
from snnc.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]


def test_docs_passes_lists_every_pass_and_pipeline():
    text = (ROOT / "docs" / "passes.md").read_text()
    missing = [name for name in list(available_passes()) + list(available_pipelines()) if f"`{name}`" not in text]
    assert missing == [], f"regenerate docs/passes.md with `snnc passes --markdown`: missing {missing}"


def test_readme_names_the_two_commands_and_every_target():
    """The README's targets table has a row for every target (aliases in their main target's row),
    and the docs' CLI summary and `snnc compile --help` list every target name."""
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    rows = [line for line in text.splitlines() if line.startswith("| `--target ")]
    for name in TARGETS:
        assert any(f"`--target {name}`" in row or f"`{name}`" in row for row in rows), name
    cli_line = next(line for line in (ROOT / "docs" / "README.md").read_text().splitlines() if "--target " in line)
    assert "--target " + "|".join(TARGETS) in cli_line.replace(" | ", "|")
    from click.testing import CliRunner

    from snnc.cli import main

    help_text = " ".join(CliRunner().invoke(main, ["compile", "--help"]).output.split())
    assert " | ".join(TARGETS) in help_text


def test_architecture_doc_names_files_that_exist():
    """Every path docs/architecture.md names (`snnc/...`, `tests/...`) exists."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:snnc|tests)/[\w/.]+?\.(?:py|md))(?:::\w+)?`", text))
    assert paths, "the scan found no paths"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == []
