"""serray tune --resume after SIGKILL of the driver: one record and one prediction set per trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from serray import io
from serray.tune.outputs import reconcile_for_resume

from _tune_pause import PAUSE_ENV

#: ``serray`` with the result-write pause of :mod:`_tune_pause` in every tune trial.
SERRAY_PAUSED = [sys.executable, str(Path(__file__).parent / "_tune_pause.py")]

N_TRIALS = 6
TUNE = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--max-epochs", "3", "--seed", "0",
        "--num-samples", str(N_TRIALS), "--max-concurrent-trials", "1", "--name", "exp"]


def _records(w: Path) -> dict[str, dict]:
    d = w / "tune" / "exp" / "trials"
    return {p.stem: io.read_json(p) for p in d.glob("*.json")} if d.exists() else {}


def _files(w: Path) -> dict[str, bytes]:
    """Every finished trial's record and prediction files, as bytes."""
    out = {}
    for tid in _records(w):
        out[f"trials/{tid}.json"] = (w / "tune" / "exp" / "trials" / f"{tid}.json").read_bytes()
        for part in (w / "predictions" / "exp").glob(f"{tid}__seed*.parquet"):
            out[f"predictions/{part.name}"] = part.read_bytes()
    return out


def _kill(p: subprocess.Popen, pause_dir: Path) -> None:
    """SIGKILL the driver's whole process group, and a worker paused inside a result write."""
    os.killpg(p.pid, signal.SIGKILL)
    for marker in pause_dir.glob("*.paused"):
        try:
            os.kill(int(marker.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        marker.unlink()
    p.wait(timeout=60)
    time.sleep(2)  # let the killed session's Ray processes go


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(p: subprocess.Popen, cond, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None and not cond():
        time.sleep(0.2)
    assert p.poll() is None, "run ended before the kill point:\n" + log.read_text()[-3000:]
    assert cond(), "kill point not reached in time:\n" + log.read_text()[-3000:]


@pytest.mark.slow
def test_sigkill_of_the_driver_at_three_points_then_resume(synth_copy, tmp_path):
    w = synth_copy
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, PAUSE_ENV: str(pause), "PYTHONUNBUFFERED": "1"}
    args = [*SERRAY_PAUSED, *TUNE, "--workdir", str(w)]
    seen: dict[str, bytes] = {}

    def check_unchanged() -> None:
        now = _files(w)
        for name, data in seen.items():
            if name.startswith("trials/"):
                assert now.get(name) == data, f"finished trial's {name} changed or vanished after resume"
        seen.update(now)

    # 1: right after the first trial's record is written
    p = _start(args, env, tmp_path / "run1.log")
    _wait(p, lambda: len(_records(w)) >= 1, tmp_path / "run1.log")
    _kill(p, pause)
    check_unchanged()
    # 2: during a trial's result write (predictions written, record not yet)
    (pause / "finalised").unlink(missing_ok=True)
    (pause / "pause_trial").write_text("2")
    p = _start([*args, "--resume"], env, tmp_path / "run2.log")
    _wait(p, lambda: any(pause.glob("*.paused")), tmp_path / "run2.log")
    paused = next(pause.glob("*.paused")).stem
    assert paused not in _records(w) and list((w / "predictions" / "exp").glob(f"{paused}__seed*.parquet"))
    _kill(p, pause)
    (pause / "pause_trial").unlink()
    check_unchanged()
    # 3: in the middle of training, 1.5 s after another trial finished
    n = len(_records(w))
    p = _start([*args, "--resume"], env, tmp_path / "run3.log")
    _wait(p, lambda: len(_records(w)) > n, tmp_path / "run3.log")
    time.sleep(1.5)
    _kill(p, pause)
    check_unchanged()

    r = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "finished trial(s) kept" in out and "from their first epoch" in out
    assert "already reported" not in out and "FileNotFoundError" not in out
    check_unchanged()
    board = pd.read_csv(w / "tune" / "exp" / "leaderboard.csv")
    records = _records(w)
    # a trial that ended after Tune's last saved state is kept beside the N Tune ran
    assert len(board) >= N_TRIALS and board["trial_id"].is_unique
    assert set(board["trial_id"].astype(str)) == set(records)
    parts = sorted((w / "predictions" / "exp").glob("*.parquet"))
    assert sorted(p.name.split("__")[0] for p in parts) == sorted(records)  # one prediction set per trial
    assert not board["status"].str.startswith(("error", "incomplete")).any(), board.to_string()
    assert len(board) - N_TRIALS <= board["status"].str.endswith("before an interruption").sum()


def test_resume_keeps_finished_trials_unknown_to_tunes_state(tmp_path):
    """A finished trial Tune's saved state does not know is kept; predictions without a record are set aside."""
    import json

    exp = tmp_path / "tune" / "exp"
    (exp / "trials").mkdir(parents=True)
    state = {"trial_data": [[json.dumps({"trial_id": "aaa", "status": "TERMINATED"}), "{}"],
                            [json.dumps({"trial_id": "bbb", "status": "RUNNING"}), "{}"]]}
    (exp / "experiment_state-x.json").write_text(json.dumps(state))
    for tid in ("aaa", "ccc"):
        io.write_json({"trial_id": tid}, exp / "trials" / f"{tid}.json")
        io.write_text("x", tmp_path / "predictions" / "exp" / f"{tid}__seed0.parquet")
    io.write_text("x", tmp_path / "predictions" / "exp" / "bbb__seed0.parquet")  # cut short before its record
    line, unknown = reconcile_for_resume(exp, exp / "trials", tmp_path, "exp")
    assert "2 finished trial(s) kept, 1 restart" in line and "ccc" in line and unknown == ["ccc"]
    assert sorted(p.name for p in (exp / "trials").glob("*.json")) == ["aaa.json", "ccc.json"]
    assert sorted(p.name for p in (tmp_path / "predictions" / "exp").iterdir()) == ["aaa__seed0.parquet", "ccc__seed0.parquet"]
    assert sorted(p.name for p in (exp / "orphaned").iterdir()) == ["bbb__seed0.parquet"]


@pytest.mark.slow
def test_trials_stopped_as_the_search_ends_keep_their_results(synth_copy, tmp_path):
    """Every trial's result write takes 12 s; trials that ASHA stops last still get theirs
    (Tune kills a stopping actor after 10 s unless serray gives it longer)."""
    w = synth_copy
    pause = tmp_path / "pause"
    pause.mkdir()
    (pause / "pause_trial").write_text("all")
    (pause / "pause_seconds").write_text("12")
    args = [*SERRAY_PAUSED, "tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "3",
            "--max-epochs", "4", "--seed", "0", "--num-samples", "4", "--max-concurrent-trials", "1",
            "--grace-period", "1", "--reduction-factor", "4", "--name", "exp", "--workdir", str(w)]
    r = subprocess.run(args, env={**os.environ, PAUSE_ENV: str(pause)}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    board = pd.read_csv(w / "tune" / "exp" / "leaderboard.csv")
    assert board["status"].str.startswith("stopped by ASHA").any(), board.to_string()
    assert not board["status"].str.startswith("incomplete").any(), board.to_string()
    assert set(board["trial_id"].astype(str)) == set(_records(w))
