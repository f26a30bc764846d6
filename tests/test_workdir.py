"""The work directory's layout (issue 38): one :class:`~serray.workdir.Workdir` owns every
path under W, commands write only below the folders it names, and no other module
joins those names."""

from __future__ import annotations

import json

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.workdir import LAYOUT, Workdir

REPO = Path(__file__).resolve().parents[1]

#: Modules that still join layout names themselves (none: every module asks Workdir).
NOT_YET_CONVERTED: set[str] = set()

_NAMES = "|".join(LAYOUT)
#: A quoted layout name joined to a path: ``x / "runs"``, ``"runs" / x``, ``os.path.join(x, "runs")``,
#: ``f"{w}/runs"``, ``x / "fusion/embeddings"``.
JOINS = [
    re.compile(rf"/\s*f?[\"']({_NAMES})(/[^\"']*)?[\"']"),
    re.compile(rf"[\"']({_NAMES})[\"']\s*/"),
    re.compile(rf"os\.path\.join\([^)]*[\"']({_NAMES})[\"']"),
    re.compile(rf"\}}/({_NAMES})\b"),
]


def layout_joins(text: str) -> list[str]:
    """The lines of ``text`` that join a top-level layout name to a path."""
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in JOINS)]


def test_layout_join_pattern_finds_the_spellings_it_forbids():
    bad = ['p = Path(workdir) / "cache" / "audio_digests.parquet"', "d = workdir / 'runs' / run",
           'x = os.path.join(w, "tune", name)', 'click.echo(f"none in {workdir}/features")',
           'p = w / "fusion/embeddings" / run', 'q = "predictions" / Path(run)']
    good = ['_check_choice("fusion", fusion, FUSIONS)', 'rec["features"] = tag', 'out / "summary.json"',
            '("tune", "serray.commands.tune")', 'Workdir(w).run_record("runs")']
    assert [layout_joins(t) != [] for t in bad] == [True] * len(bad)
    assert [layout_joins(t) for t in good] == [[]] * len(good)


def test_no_module_but_workdir_joins_layout_names():
    """Every path under W is asked of a Workdir: no quoted top-level folder name is joined
    to a path anywhere else in serray/ (except the modules listed as not yet converted)."""
    found = []
    for path in sorted((REPO / "serray").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "serray/workdir.py" or rel in NOT_YET_CONVERTED:
            continue
        found += [f"{rel}: {line}" for line in layout_joins(path.read_text())]
    assert found == [], "join layout names through serray.workdir.Workdir instead:\n" + "\n".join(found)


def test_paths_follow_the_documented_layout(tmp_path):
    w = Workdir(tmp_path)
    rel = {
        "manifest": w.manifest("emodb"), "bad": w.manifest_bad("emodb"), "audio": w.audio("synth_a"),
        "digests": w.audio_digests, "features": w.feature_set("mfb", "1a2b"),
        "part": w.predictions_part("r", "c0", 2), "record": w.run_record("r"), "settings": w.run_settings("r"),
        "folds": w.run_folds("r"), "model_records": w.run_model_records("r", "c0", 2), "kept": w.models("r"),
        "best": w.tune_best("t"), "leaderboard": w.tune_leaderboard("t"), "trial": w.tune_trial("t", "t1"), "ensemble": w.ensemble("e"),
        "fusion": w.fusion("f"), "embeddings": w.fusion_embeddings("r"), "crosscorpus": w.crosscorpus("x"),
        "report": w.report("r"),
    }
    rel = {k: v.relative_to(tmp_path).as_posix() for k, v in rel.items()}
    assert rel == {
        "manifest": "manifests/emodb.parquet", "bad": "manifests/emodb.bad.csv", "audio": "audio/synth_a",
        "digests": "cache/audio_digests.parquet", "features": "features/mfb-1a2b",
        "part": "predictions/r/c0__seed2.parquet", "record": "runs/r/record.json", "settings": "runs/r/settings.json",
        "folds": "runs/r/folds.parquet", "model_records": "runs/r/model_records/c0__seed2.json", "kept": "models/r",
        "best": "tune/t/best.yaml", "leaderboard": "tune/t/leaderboard.csv", "trial": "tune/t/trials/t1.json", "ensemble": "ensemble/e", "fusion": "fusion/f",
        "embeddings": "fusion/embeddings/r", "crosscorpus": "crosscorpus/x", "report": "reports/r",
    }
    assert {w.top_level(tmp_path / v) for v in rel.values()} <= set(LAYOUT)
    with pytest.raises(ValueError, match="not inside one of the work directory's folders"):
        w.top_level(tmp_path / "stray.txt")
    assert Workdir(w) == w and Path(w) == tmp_path  # a Workdir is accepted wherever a path is


def _cli(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def test_pipeline_writes_only_where_workdir_says(synth_copy):
    """train, fuse, report, crosscorpus and features --list on the synthetic corpus: every
    file written lies in a folder of the layout, each command's output where Workdir names it."""
    w = Workdir(synth_copy)
    svm = ("train", "svm", "--workdir", w, "--features", "egemaps", "--protocol", "kfold", "--k", "2", "--sequential")
    _cli(*svm, "--run", "a", "--seed", "0")
    _cli(*svm, "--run", "b", "--seed", "1")
    _cli("fuse", w, "--runs", "a,b", "--mode", "late", "--name", "ab")
    _cli("report", w, "--runs", "a", "--bootstrap", "10")
    _cli("crosscorpus", "svm", "--workdir", w, "--corpora", "synth_a,synth_b", "--features", "egemaps",
         "--labels", "native", "--sequential", "--name", "xc")
    assert "egemaps" in _cli("features", w, "--list")

    files = [p for p in w.root.rglob("*") if p.is_file()]
    assert sorted({w.top_level(p) for p in files}) == sorted(
        ["manifests", "audio", "features", "predictions", "runs", "fusion", "reports", "crosscorpus", "models"])
    for run in ("a", "b"):
        assert w.run_record(run).is_file() and w.run_settings(run).is_file() and w.run_folds(run).is_file()
        cid = json.loads(w.run_record(run).read_text())["config_id"]
        seed = 0 if run == "a" else 1
        assert all((w.fold_model(run, cid, seed, k) / "model.json").is_file() for k in (0, 1))
        assert len(list(w.predictions(run).glob("*__seed*.parquet"))) == 1
    assert (w.fusion("ab") / "summary.json").is_file()
    assert (w.report("a") / "report.md").is_file()
    assert (w.crosscorpus("xc") / "matrix.csv").is_file()
    assert {p.name for p in w.manifests_dir.iterdir()} >= {"synth_a.parquet", "synth_b.parquet"}
