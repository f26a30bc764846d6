"""The built wheel carries what serray reads at run time (search spaces, py.typed) and runs
`serray tune` outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the checkout (setuptools' build folders it leaves are removed)."""
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    left = [d for d in (ROOT / "build", ROOT / "serray.egg-info") if not d.exists()]  # setuptools writes these
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, cwd=out,
    )
    for d in left:
        shutil.rmtree(d, ignore_errors=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = out.glob("serray-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_every_search_space_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = sorted(p.name for p in (ROOT / "serray" / "search_spaces").glob("*.yaml"))
    assert spaces and all(f"serray/search_spaces/{s}" in names for s in spaces)
    assert "serray/py.typed" in names


@pytest.mark.slow
def test_the_unpacked_wheel_tunes_outside_the_checkout(wheel, synth_copy, tmp_path):
    """The wheel, first on the path in a folder without search_spaces/, runs `serray tune mlp`."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "RAY_AUTH_MODE": "disabled"}
    where = subprocess.run([sys.executable, "-c", "import serray; print(serray.__file__)"], capture_output=True,
                           text=True, cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    tune = subprocess.run(
        [sys.executable, "-m", "serray", "tune", "mlp", "--workdir", str(synth_copy), "--features", "egemaps",
         "--protocol", "kfold", "--k", "2", "--num-samples", "1", "--max-epochs", "2", "--name", "from-wheel"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600,
    )
    assert tune.returncode == 0, (tune.stdout + tune.stderr)[-3000:]
    assert (synth_copy / "tune" / "from-wheel" / "best.yaml").exists()
    assert not (elsewhere / "search_spaces").exists()


def test_every_registered_model_has_an_installed_search_space():
    from serray.models import registry
    from serray.tune.space import load_search_space, search_space_path

    for model in registry.names():
        path = search_space_path(model)
        assert path.parent == ROOT / "serray" / "search_spaces", model
        load_search_space(model)  # parses and validates
