"""Shared fixtures: paths of the real corpora (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$SERRAY_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("SERRAY_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    d = shared_data_dir() / "emodb" / "wav"
    if not d.is_dir():
        pytest.skip(f"real EmoDB not found at {d} (set SERRAY_DATA to the folder holding emodb/ and emovo/)")
    return d


@pytest.fixture(scope="session")
def emovo_dir() -> Path:
    d = shared_data_dir() / "emovo"
    if not d.is_dir():
        pytest.skip(f"real EMOVO not found at {d} (set SERRAY_DATA to the folder holding emodb/ and emovo/)")
    return d
