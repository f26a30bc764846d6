"""Shared fixtures: paths of the real corpora (skipped with a reason when absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# the key that signs tune's state records (serray.tune.state): the tests' own, never the user's
os.environ.setdefault("SERRAY_STATE_KEY_FILE", os.path.join(tempfile.gettempdir(), f"serray-tests-{os.getuid()}-state.key"))

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


@pytest.fixture(scope="session")
def synth_workdir(tmp_path_factory) -> Path:
    """A small synthetic corpus (2 corpora x 4 speakers x 4 emotions x 3) with eGeMAPS extracted.

    Extraction runs in-process (no Ray) so the fixture is cheap; tests copy it when they
    need to write.
    """
    from serray.corpora.synth import generate_synthetic_corpus
    from serray.features import extract_features

    w = tmp_path_factory.mktemp("synth_w")
    generate_synthetic_corpus(w, n_speakers=4, utterances_per_emotion=3, seed=0)
    extract_features(w, ["egemaps"], num_actors=0, progress=False)
    return w


@pytest.fixture
def synth_copy(synth_workdir, tmp_path) -> Path:
    """A private copy of :func:`synth_workdir` (manifests, audio and feature cache)."""
    import shutil

    dst = tmp_path / "w"
    shutil.copytree(synth_workdir, dst, symlinks=True)
    return dst
