"""tune --resume reads no Tune state file serray did not record, and keeps the search's settings (issue 40 item 5)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from serray.training.spec import RunSpec
from serray.tune import state
from serray.tune.options import SearchOptions, load_search
from serray.training.resources import Resources


@pytest.fixture(autouse=True)
def _key(tmp_path, monkeypatch):
    """A signing key of this test only (never the user's)."""
    monkeypatch.setenv(state.KEY_ENV, str(tmp_path / "state.key"))


class _Planted:
    """A pickle that, when loaded, creates the file ``marker`` (as a planted payload would run a command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _run(w: Path, **kw) -> RunSpec:
    return RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=kw.pop("k", 2), seed=0, **kw)


def _recorded_experiment(w: Path, run: RunSpec, options: SearchOptions) -> Path:
    """A fake experiment folder as serray leaves it: Tune's state files recorded, the settings stored."""
    exp = w / "tune" / "exp"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"state": 1}))
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": []}')
    state.record_files(exp)
    state.write_search(exp, state.search_settings(load_search(run, options, "tune"), options, "common-epoch"))
    return exp


def _no_ray_left_running() -> None:
    """An earlier test of the session may have left Ray initialised in this process; the
    tests below check that the refusal comes before Ray starts, so they start without it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_planted_pickle_is_refused_before_ray_starts(synth_copy, tmp_path):
    import ray

    from serray.tune.runner import tune_model

    _no_ray_left_running()

    w, marker = synth_copy, tmp_path / "payload-ran"
    options = SearchOptions(num_samples=2, name="exp", resume=True, resources=Resources(device="cpu"))
    exp = _recorded_experiment(w, _run(w), options)
    (exp / "tuner.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(ValueError, match=r"tuner\.pkl: differs from the checksum serray recorded.*--name NEW"):
        tune_model(_run(w), options)
    assert not marker.exists() and not ray.is_initialized()


@pytest.mark.parametrize(("change", "expected"), [
    ({"k": 4}, "k: 2 -> 4"),
    ({"num_samples": 4}, "num_samples: 2 -> 4"),
    ({"objective": "fold-best"}, "objective: common-epoch -> fold-best"),
])
def test_resume_with_other_settings_is_refused_before_ray_starts(synth_copy, change, expected):
    import ray

    from serray.tune.runner import tune_model

    _no_ray_left_running()

    w = synth_copy
    options = SearchOptions(num_samples=2, name="exp", resume=True, resources=Resources(device="cpu"))
    _recorded_experiment(w, _run(w), options)
    run = _run(w, **{k: v for k, v in change.items() if k in ("k", "validation")})
    new = SearchOptions(num_samples=change.get("num_samples", 2), name="exp", resume=True, resources=Resources(device="cpu"))
    with pytest.raises(ValueError, match=f"started with other settings \\({expected}\\).*--name NEW"):
        tune_model(run, new, objective=change.get("objective", "common-epoch"))
    assert not ray.is_initialized()


def test_unrecorded_missing_record_and_forged_record_are_refused(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"tune")
    with pytest.raises(state.StateError, match="no valid record"):
        state.verify_state(exp)
    state.record_files(exp)
    state.verify_state(exp)
    (exp / "callback-states-x.pkl").write_bytes(b"planted")
    with pytest.raises(state.StateError, match=r"callback-states-x\.pkl: not a file serray let Tune write"):
        state.verify_state(exp)
    (exp / "callback-states-x.pkl").unlink()
    # a record rewritten without serray's key (e.g. planted together with the pickle)
    (exp / "tuner.pkl").write_bytes(b"planted")
    rec = (exp / state.STATE_RECORD).read_text()
    import hashlib

    old, new = hashlib.sha256(b"tune").hexdigest(), hashlib.sha256(b"planted").hexdigest()
    (exp / state.STATE_RECORD).write_text(rec.replace(old, new))
    with pytest.raises(state.StateError, match="invalid"):
        state.verify_state(exp)


def test_state_saved_while_tune_runs_is_accepted_at_every_point_of_its_copy(tmp_path):
    """Tune writes its state to a staging folder, then copies it: a kill before, during
    (the old file still there) or after the copy leaves files the record accepts."""
    exp, staging = tmp_path / "exp", tmp_path / "staging"
    exp.mkdir()
    staging.mkdir()
    name = "experiment_state-a.json"
    (exp / name).write_text("old")
    state.record_files(exp)
    (staging / name).write_text("new")
    shutil.copy(exp / state.STATE_RECORD, staging / state.STATE_RECORD)  # Tune's restore copies it there
    state.add_pending(exp, staging)
    assert not (staging / state.STATE_RECORD).exists()  # so Tune's copy back cannot replace the live record
    state.verify_state(exp)  # killed before the copy
    shutil.copy(staging / name, exp / name)
    state.verify_state(exp)  # killed after the copy, before serray settled
    state.settle(exp)
    state.verify_state(exp)
    (exp / name).write_text("old")  # the superseded content is no longer accepted
    with pytest.raises(state.StateError, match="differs"):
        state.verify_state(exp)
