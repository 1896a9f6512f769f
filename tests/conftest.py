"""Shared fixtures: where the repository and the digits example lie.

``tests/`` is put on sys.path so that test files can ``import models`` and ``import strategies``
whatever pytest's import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DIGITS = REPO / "examples" / "digits"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds pyproject.toml)."""
    return REPO


@pytest.fixture(scope="session")
def digits_dir() -> Path:
    """examples/digits: cnn.pt2, mlp.pt2, cnn.pt, mlp.pt, models.py, train.npz, test.npz."""
    return DIGITS
