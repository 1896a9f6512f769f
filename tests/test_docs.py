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
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    for name in TARGETS:
        if name not in ("loihi1", "loihi2"):
            assert f"--target {name}" in text or f"`{name}`" in text, name
