"""The ensemble folder's files and plot labels, for `serray ensemble` and `serray demo`."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import serray.commands.ensemble as ens_cmd
from serray.ensemble import Members, run_ensemble_search
from serray.training.resources import Resources

CLASSES = ["neutral", "happy", "angry", "sad"]
FOLDER_FILES = ("leaderboard.csv", "summary.json", "best_per_k.csv", "single_members.csv", "membership_mix.csv",
                "ua_vs_k.png")


def _members(m: int = 5, seed: int = 0) -> Members:
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, len(CLASSES), size=n)
        logits = rng.normal(size=(m, n, len(CLASSES))).astype(np.float32)
        logits[:, np.arange(n), y] += 1.0
        return logits, y

    (lv, yv), (lt, yt) = split(60), split(50)
    return Members.from_arrays(lv, yv, lt, yt, CLASSES, names=[f"r/c0/{i}" for i in range(m)], variant=["r"] * m)


@pytest.mark.parametrize("selection", ["validation", "test-optimistic"])
def test_ua_vs_k_legend_names_the_selection_split(tmp_path, monkeypatch, selection):
    members = _members()
    res = run_ensemble_search(members, [1, 2, 3], selection=selection, resources=Resources(parallel=False), progress=False)
    seen: list[list[str]] = []
    real_plot = ens_cmd.plot_ua_vs_k
    monkeypatch.setattr(ens_cmd, "plot_ua_vs_k", lambda *a, **kw: seen.append(real_plot(*a, **kw)) or seen[-1])
    out, _, _ = ens_cmd.write_ensemble_folder(res, members, tmp_path / "e")
    (labels,) = seen
    for f in FOLDER_FILES:
        assert (out / f).stat().st_size > 0, f
    if selection == "test-optimistic":
        assert "validation UA (selection)" not in labels
        assert any("test UA" in t and "selection" in t and "optimistic" in t for t in labels)
    else:
        assert "validation UA (selection)" in labels and not any("optimistic" in t for t in labels)


def _fake_stages(monkeypatch, workdir_seen: list) -> None:
    """Replace the demo's expensive stages (corpus, Ray, features, tune, seeds, report) with small fakes.

    The fakes return paths the way the real stages do for a relative work directory
    (relative), so the summary's path handling is exercised.
    """
    from serray.predictions import write_predictions

    utts = [f"u{i}" for i in range(24)]
    rng = np.random.default_rng(0)

    def synth(w, seed=0):
        workdir_seen.append(Path(w))
        return pd.DataFrame({"utt_id": utts, "corpus": "syn", "speaker": [f"s{i % 4}" for i in range(24)]})

    def train_seeds(spec, *, seeds, run_prefix, **kw):
        w = spec.workdir
        run = f"{run_prefix}-base"
        for seed in seeds:
            df = pd.DataFrame({"fold": 0, "split": ["validation"] * 12 + ["test"] * 12, "utt_id": utts,
                               "label": [CLASSES[i % 4] for i in range(24)], "pred": "sad",
                               "logits": list(rng.normal(size=(24, 4)))})
            write_predictions(w, df, run=run, config_id="c0", seed=seed, classes=CLASSES)
        return SimpleNamespace(runs={"base": run})

    def tune_model(spec, options, **kw):
        path = Path(spec.workdir) / "tune" / options.name
        board = pd.DataFrame({"trial_id": ["t0"], "val_ua": [0.5], "test_ua": [0.4], "epochs": [3], "status": ["ok"]})
        return SimpleNamespace(leaderboard=board, best={"trial_id": "t0", "config": {}, "val_ua": 0.5, "test_ua": 0.4},
                               path=path, best_yaml=path / "best.yaml")

    monkeypatch.setattr("serray.corpora.synth.generate_synthetic_corpus", synth)
    monkeypatch.setattr("serray.raycluster.start_ray", lambda resources=None: None)
    monkeypatch.setattr("serray.features.extract_features",
                        lambda *a, **kw: {"egemaps": SimpleNamespace(n_extracted=24, n_cached=0, n_failed=0)})
    monkeypatch.setitem(sys.modules, "serray.tune.runner", types.SimpleNamespace(tune_model=tune_model))
    monkeypatch.setitem(sys.modules, "serray.training.seeds", types.SimpleNamespace(train_seeds=train_seeds))
    monkeypatch.setattr("serray.report.write_report", lambda w, runs: Path(w) / "reports" / runs[0])
    monkeypatch.setattr("serray.ensemble.run_ensemble_search",
                        lambda members, ks, **kw: run_ensemble_search(members, ks, resources=Resources(parallel=False), progress=False))


def test_demo_ensemble_folder_and_absolute_summary_paths(tmp_path, monkeypatch):
    from serray.cli import main

    seen: list[Path] = []
    _fake_stages(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["demo", "--workdir", "demo-w", "--seeds", "3", "--max-k", "2"])
    assert r.exit_code == 0, r.output
    assert seen == [Path("demo-w")]  # the demo really ran with a relative work directory
    ens = tmp_path / "demo-w" / "ensemble" / "demo-mlp"
    for f in FOLDER_FILES:  # what the README promises of an ensemble folder
        assert (ens / f).stat().st_size > 0, f
    listed = r.output.split("results in ", 1)[1].splitlines()[1:5]
    assert [line.split()[0] for line in listed] == ["leaderboard", "best", "ensemble", "report"]
    for line in listed:
        path = line.split()[-1]
        assert Path(path).is_absolute() and path.startswith(str(tmp_path.resolve())), line
