"""The audformat adapter on a database built with audformat's API around real EmoDB files, and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.corpora import CorpusLayoutError, prepare_corpus
from serray.manifest import read_manifest
from serray.workdir import Workdir

pytest.importorskip("audformat", reason="the audformat adapter needs audformat (pip install 'serray[audformat]')")

from tests._audformat_db import write_audformat_db  # noqa: E402

#: EmoDB's speakers and their genders (from the corpus documentation), and its emotion codes.
EMODB_GENDER = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male", "13": "female"}
EMODB_CODES = {"W": "anger", "F": "happiness", "N": "neutral", "T": "sadness"}
SPLIT_OF = {"03": "train", "08": "train", "09": "train", "10": "dev", "11": "test", "13": "test"}


def _emodb_db(emodb_dir: Path, root: Path, per_class: int = 1) -> dict[str, tuple[str, str, str]]:
    """A db in ``root`` whose wav/ holds symlinks to real EmoDB files (the corpus is never copied)."""
    files: dict[str, tuple[str, str, str]] = {}
    count: dict[tuple[str, str], int] = {}
    for wav in sorted(emodb_dir.glob("*.wav")):
        spk, code = wav.name[:2], wav.name[5]
        if spk not in EMODB_GENDER or code not in EMODB_CODES or count.get((spk, code), 0) >= per_class:
            continue
        count[(spk, code)] = count.get((spk, code), 0) + 1
        (root / "wav").mkdir(parents=True, exist_ok=True)
        (root / "wav" / wav.name).symlink_to(wav.resolve())
        files[f"wav/{wav.name}"] = (spk, EMODB_CODES[code], SPLIT_OF[spk])
    write_audformat_db(root, files, EMODB_GENDER, name="emodb-af")
    return files


@pytest.mark.realdata
def test_audformat_emodb_prepares_and_trains(emodb_dir, tmp_path):
    files = _emodb_db(emodb_dir, tmp_path / "db")
    w = tmp_path / "w"
    r = CliRunner().invoke(main, ["data", "prepare", "audformat", str(tmp_path / "db"), "-w", str(w), "-o", "naturalness=acted"])
    assert r.exit_code == 0, r.output
    m = read_manifest(Workdir(w).manifest("emodb-af"))
    assert len(m) == len(files) == 24
    assert m.groupby("speaker")["gender"].first().to_dict() == {
        f"emodb-af_{s}": g[0] for s, g in EMODB_GENDER.items()}
    by_id = m.set_index("utt_id")
    assert by_id.loc["emodb-af/wav/03a01Wa", "emotion"] == "angry"
    assert by_id.loc["emodb-af/wav/03a01Wa", "emotion_native"] == "anger"
    assert sorted(m["emotion"].unique()) == ["angry", "happy", "neutral", "sad"]
    assert m.groupby("speaker")["split"].first().to_dict()["emodb-af_10"] == "development"
    assert set(m["split"]) == {"train", "development", "test"} and set(m["language"]) == {"de"}
    assert all(Path(p).resolve().parent == emodb_dir.resolve() for p in m["path"])
    feats = CliRunner().invoke(main, ["features", str(w), "--set", "egemaps", "--num-actors", "0", "--no-progress"])
    assert feats.exit_code == 0, feats.output
    train = CliRunner().invoke(main, ["train", "svm", "-w", str(w), "--features", "egemaps", "--protocol", "split",
                                      "--run", "af", "--sequential", "--no-keep-models"])
    assert train.exit_code == 0, train.output
    from serray import io

    record = io.read_json(Workdir(w).run_record("af"))
    assert [f["name"] for f in record["metrics"]["folds"]] == ["test=test"]
    assert 0.0 <= record["metrics"]["pooled"]["ua"] <= 1.0


def _tiny_db(root: Path, labels: tuple[str, ...] = ("anger", "joy")) -> Path:
    import numpy as np
    import soundfile as sf

    files = {}
    for i, label in enumerate(labels):
        (root / "wav").mkdir(parents=True, exist_ok=True)
        sf.write(root / "wav" / f"u{i}.wav", np.random.default_rng(i).normal(0, 0.1, 4800).astype("float32"), 16000)
        files[f"wav/u{i}.wav"] = ("s1", label, None)
    return write_audformat_db(root, files, {"s1": "f"})


def test_unknown_labels_and_tables_fail_with_the_fix(tmp_path):
    root = _tiny_db(tmp_path / "db", ("anger", "contentment"))
    with pytest.raises(CorpusLayoutError, match=r"\['contentment'\].*-o label_map="):
        prepare_corpus("audformat", root)
    m = prepare_corpus("audformat", root, label_map="contentment:").manifest  # an empty target drops the label
    assert m["emotion"].tolist() == ["angry"] and m["gender"].tolist() == ["f"]
    with pytest.raises(CorpusLayoutError, match=r"no table 'nope' \(tables: \['emotion', 'files'\]\)"):
        prepare_corpus("audformat", root, table="nope")
    with pytest.raises(CorpusLayoutError, match=r"no 'mood' column.*-o emotion_column=COLUMN"):
        prepare_corpus("audformat", root, emotion_column="mood")
    with pytest.raises(CorpusLayoutError, match="no db.yaml found"):
        prepare_corpus("audformat", tmp_path / "db" / "wav")
    r = CliRunner().invoke(main, ["data", "prepare", "audformat", str(root), "-w", str(tmp_path / "w"), "-o", "table=nope"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Traceback" not in r.output


def test_missing_audformat_names_the_extra(tmp_path, monkeypatch):
    root = _tiny_db(tmp_path / "db")
    monkeypatch.setitem(sys.modules, "audformat", None)
    with pytest.raises(ValueError, match=r"pip install 'serray\[audformat\]'"):
        prepare_corpus("audformat", root)
