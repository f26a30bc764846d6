"""The built wheel carries what serray reads at run time: search spaces and py.typed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_every_search_space_and_py_typed(tmp_path):
    pytest.importorskip("setuptools")
    left = [d for d in (ROOT / "build", ROOT / "serray.egg-info") if not d.exists()]  # setuptools writes these
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    for d in left:
        shutil.rmtree(d, ignore_errors=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("serray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = sorted(p.name for p in (ROOT / "serray" / "search_spaces").glob("*.yaml"))
    assert spaces and all(f"serray/search_spaces/{s}" in names for s in spaces)
    assert "serray/py.typed" in names


def test_every_registered_model_has_an_installed_search_space():
    from serray.models import registry
    from serray.tune.space import load_search_space, search_space_path

    for model in registry.names():
        path = search_space_path(model)
        assert path.parent == ROOT / "serray" / "search_spaces", model
        load_search_space(model)  # parses and validates
