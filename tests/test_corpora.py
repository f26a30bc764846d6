"""Corpus adapters: fake trees with each corpus's real naming scheme, plus real EmoDB/EMOVO."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serray.corpora import CorpusLayoutError, adapter_names, get_adapter, prepare_corpus
from serray.corpora.info import bad_table, corpus_table, speaker_table, summary_table
from serray.manifest import read_manifest

SR = 16000


def _wav(path: Path, seconds: float = 0.3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).normal(0.0, 0.1, int(SR * seconds)).astype(np.float32)
    sf.write(path, x, SR, subtype="PCM_16")
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    return path


def _empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    return path


# ------------------------------------------------------------------ fake corpora
# Each builder writes a tiny tree and returns (root, expected) with the expected number of
# rows, speakers -> gender, emotion counts and one (utt_id, column, value) spot check.


def build_emodb(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "emodb"
    for i, name in enumerate(["03a01Fa", "03a01Wa", "08a02Tb", "09b01Lc", "16b10Nd", "12a05Ea", "13a04Ab"]):
        _wav(root / "wav" / f"{name}.wav", seed=i)
    (root / "erkennung.txt").write_bytes(
        "Nr.\tSatz\terkannt\tnatuerlich\n1  \t03a01Fa.wav\t90,00     \t75,00     \n2  \t03a01Wa.wav\t95,50\t90,00\n".encode("latin-1")
    )
    return root, {
        "n": 7,
        "speakers": {"emodb_03": "m", "emodb_08": "f", "emodb_09": "f", "emodb_16": "f", "emodb_12": "m", "emodb_13": "f"},
        "emotions": {"happy": 1, "angry": 1, "sad": 1, "boredom": 1, "neutral": 1, "disgust": 1, "fear": 1},
        "checks": [("emodb/03a01Fa", "emotion", "happy"), ("emodb/03a01Wa", "recognition_rate", 95.5),
                   ("emodb/09b01Lc", "text_id", "b01"), ("emodb/03a01Fa", "language", "de")],
    }


def build_emovo(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "EMOVO"
    for i, (spk, emo, sent) in enumerate([("f1", "dis", "b1"), ("f1", "gio", "l2"), ("m2", "pau", "n5"),
                                          ("m3", "rab", "d1"), ("f3", "sor", "b3"), ("m1", "tri", "n1"), ("f2", "neu", "l4")]):
        _wav(root / spk / f"{emo}-{spk}-{sent}.wav", seed=i)
    return root, {
        "n": 7,
        "speakers": {"emovo_f1": "f", "emovo_m2": "m", "emovo_m3": "m", "emovo_f3": "f", "emovo_m1": "m", "emovo_f2": "f"},
        "emotions": {"disgust": 1, "happy": 1, "fear": 1, "angry": 1, "surprise": 1, "sad": 1, "neutral": 1},
        "checks": [("emovo/f1/gio-f1-l2", "emotion", "happy"), ("emovo/m2/pau-m2-n5", "text_id", "n5"),
                   ("emovo/f1/dis-f1-b1", "language", "it")],
    }


def build_ravdess(tmp: Path) -> tuple[Path, dict]:
    top = tmp / "ravdess"
    root = top / "Audio_Speech_Actors_01-24"
    names = ["03-01-01-01-01-01-01", "03-01-02-02-01-02-01", "03-01-05-02-02-01-02", "03-01-08-01-01-01-02",
             "03-01-06-01-02-02-13", "03-01-07-02-01-01-24"]
    for i, n in enumerate(names):
        _wav(root / f"Actor_{n[-2:]}" / f"{n}.wav", seed=i)
    _wav(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: left out, not "bad"
    _wav(root / "Actor_02" / "01-01-03-01-01-01-02.wav")  # audio-visual: left out
    return top, {
        "n": 6,
        "speakers": {"ravdess_01": "m", "ravdess_02": "f", "ravdess_13": "m", "ravdess_24": "f"},
        "emotions": {"neutral": 1, "calm": 1, "angry": 1, "surprise": 1, "fear": 1, "disgust": 1},
        "checks": [("ravdess/Actor_02/03-01-05-02-02-01-02", "intensity", "strong"),
                   ("ravdess/Actor_02/03-01-05-02-02-01-02", "text", "Dogs are sitting by the door"),
                   ("ravdess/Actor_13/03-01-06-01-02-02-13", "repetition", 2)],
    }


_EVAL_1 = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
C-F1:\tNeutral; Frustration;\t(curious)
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[3.5000, 4.0000, 3.0000]
C-E2:\tExcited;\t()
C-E3:\tHappiness;\t()

[14.8872 - 18.0175]\tSes01F_impro01_F002\txxx\t[2.5000, 3.5000, 3.5000]
C-E2:\tAnger;\t()
C-E3:\tSadness;\t()
"""
_EVAL_2 = """[1.0 - 2.5]\tSes02M_script01_1_M000\tang\t[1.5000, 4.5000, 4.0000]
C-E1:\tAnger;\t()
C-E2:\tAnger;\t()
C-E4:\tFrustration;\t()

[3.0 - 4.0]\tSes02M_script01_1_F001\tsad\t[2.0000, 1.5000, 2.0000]
C-E1:\tSadness;\t()
"""


def build_iemocap(tmp: Path) -> tuple[Path, dict]:
    top = tmp / "IEMOCAP"
    root = top / "IEMOCAP_full_release"
    for sess, dialog, text, utts in [
        (1, "Ses01F_impro01", _EVAL_1, ["Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses01F_impro01_F002"]),
        (2, "Ses02M_script01_1", _EVAL_2, ["Ses02M_script01_1_M000", "Ses02M_script01_1_F001"]),
    ]:
        s = root / f"Session{sess}"
        (s / "dialog" / "EmoEvaluation" / "Categorical").mkdir(parents=True)
        (s / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(text)
        (s / "dialog" / "transcriptions").mkdir(parents=True)
        (s / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            "\n".join(f"{u} [001.0000-002.0000]: words of {u}." for u in utts) + "\n"
        )
        for i, u in enumerate(utts):
            _wav(s / "sentences" / "wav" / dialog / f"{u}.wav", seed=i)
    return top, {
        "n": 4,  # the xxx utterance is dropped
        "speakers": {"iemocap_Ses01_F": "f", "iemocap_Ses01_M": "m", "iemocap_Ses02_M": "m", "iemocap_Ses02_F": "f"},
        "emotions": {"neutral": 1, "excited": 1, "angry": 1, "sad": 1},
        "checks": [
            ("iemocap/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001", "valence", 3.5),
            ("iemocap/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001", "arousal", 4.0),
            ("iemocap/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001", "improvised", True),
            ("iemocap/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001", "session", "Ses01"),
            ("iemocap/Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_M000", "improvised", False),
            ("iemocap/Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_M000", "agreement", 2 / 3),
            ("iemocap/Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_F001", "text",
             "words of Ses02M_script01_1_F001."),
            ("iemocap/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000", "naturalness", "natural"),
            ("iemocap/Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_M000", "naturalness", "acted"),
        ],
    }


def build_cremad(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "CREMA-D"
    for i, n in enumerate(["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO", "1002_IOM_NEU_XX",
                           "1003_ITH_FEA_MD", "1003_IWW_DIS_XX"]):
        _wav(root / "AudioWAV" / f"{n}.wav", seed=i)
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,African American,Not Hispanic\n1003,30,Female,Asian,Hispanic\n"
    )
    return root, {
        "n": 6,
        "speakers": {"cremad_1001": "m", "cremad_1002": "f", "cremad_1003": "f"},
        "emotions": {"angry": 1, "happy": 1, "sad": 1, "neutral": 1, "fear": 1, "disgust": 1},
        "checks": [("cremad/1001_IEO_HAP_HI", "intensity", "high"), ("cremad/1001_DFA_ANG_XX", "text", "Don't forget a jacket"),
                   ("cremad/1003_ITH_FEA_MD", "age", 30)],
    }


def build_tess(tmp: Path) -> tuple[Path, dict]:
    top = tmp / "TESS"
    root = top / "TESS Toronto emotional speech set data"
    for i, (folder, name) in enumerate([("OAF_angry", "OAF_back_angry"), ("OAF_Pleasant_surprise", "OAF_back_ps"),
                                        ("OAF_Fear", "OAF_bar_fear"), ("YAF_pleasant_surprised", "YAF_chair_ps"),
                                        ("YAF_sad", "YAF_dog_sad"), ("YAF_neutral", "YAF_dog_neutral"),
                                        ("YAF_disgust", "YAF_dab_disgust"), ("YAF_happy", "YAF_dab_happy")]):
        _wav(root / folder / f"{name}.wav", seed=i)
    return top, {
        "n": 8,
        "speakers": {"tess_OAF": "f", "tess_YAF": "f"},
        "emotions": {"angry": 1, "surprise": 2, "fear": 1, "sad": 1, "neutral": 1, "disgust": 1, "happy": 1},
        "checks": [("tess/YAF_pleasant_surprised/YAF_chair_ps", "emotion", "surprise"),
                   ("tess/OAF_angry/OAF_back_angry", "word", "back"), ("tess/OAF_angry/OAF_back_angry", "age", 64)],
    }


def build_cafe(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "CaFE_48k"
    # Folder names in decomposed Unicode (as unpacked on macOS): labels come from file names.
    colere = unicodedata.normalize("NFD", "Colère")
    degout = unicodedata.normalize("NFD", "Dégoût")
    for i, rel in enumerate([f"{colere}/Faible/01-C-1-1.wav", f"{colere}/Fort/02-C-2-3.wav", f"{degout}/Fort/03-D-2-6.wav",
                             "Joie/Faible/04-J-1-2.wav", "Neutre/05-N-4.wav", "Peur/Fort/06-P-2-5.wav",
                             "Surprise/Faible/11-S-1-1.wav", "Tristesse/Fort/12-T-2-2.wav"]):
        _wav(root / rel, seed=i)
    return root, {
        "n": 8,
        "speakers": {"cafe_01": "m", "cafe_02": "f", "cafe_03": "m", "cafe_04": "f", "cafe_05": "m", "cafe_06": "f",
                     "cafe_11": "m", "cafe_12": "f"},
        "emotions": {"angry": 2, "disgust": 1, "happy": 1, "neutral": 1, "fear": 1, "surprise": 1, "sad": 1},
        "checks": [("cafe/Colère/Faible/01-C-1-1", "intensity", "low"), ("cafe/Neutre/05-N-4", "intensity", None),
                   ("cafe/Neutre/05-N-4", "text_id", "4"), ("cafe/Colère/Fort/02-C-2-3", "language", "fr")],
    }


def build_table(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "mine"
    for i, n in enumerate(["a/s1_1", "a/s1_2", "b/s2_1"]):
        _wav(root / "audio" / f"{n}.wav", seed=i)
    pd.DataFrame({
        "path": ["audio/a/s1_1.wav", "audio/a/s1_2.wav", str(root / "audio/b/s2_1.wav")],
        "speaker": ["s1", "s1", "s2"],
        "emotion": ["Angry", "hap", "neutral"],
        "gender": ["Female", "F", "male"],
        "score": [1.0, 2.0, 3.0],
        "naturalness": ["acted", " Natural", ""],
    }).to_csv(root / "list.csv", index=False)
    return root / "list.csv", {
        "options": {"corpus": "mine", "label_map": "hap:happy"},
        "n": 3,
        "speakers": {"mine_s1": "f", "mine_s2": "m"},
        "emotions": {"angry": 1, "happy": 1, "neutral": 1},
        "checks": [("mine/audio/a/s1_2", "emotion", "happy"), ("mine/audio/b/s2_1", "score", 3.0),
                   ("mine/audio/a/s1_1", "naturalness", "acted"), ("mine/audio/a/s1_2", "naturalness", "natural"),
                   ("mine/audio/b/s2_1", "naturalness", None)],
    }


def build_msppodcast(tmp: Path) -> tuple[Path, dict]:
    """A replica of the release layout: Audios/ and Labels/labels_consensus.csv (one level down)."""
    root = tmp / "MSP-Podcast"
    rows = [  # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
        ("MSP-PODCAST_0001_0008.wav", "A", 5.2, 2.4, 5.0, "127", "Male", "Train"),
        ("MSP-PODCAST_0001_0011.wav", "H", 4.0, 5.8, 4.2, "Unknown", "Female", "Train"),
        ("MSP-PODCAST_0001_0020.wav", "N", 3.6, 4.0, 4.0, "Unknown", "Female", "Development"),
        ("MSP-PODCAST_0002_0003.wav", "C", 4.4, 2.8, 4.6, "Unknown", "Male", "Test1"),
        ("MSP-PODCAST_0003_0001.wav", "S", 2.0, 2.2, 3.0, "930", "Female", "Test2"),
        ("MSP-PODCAST_0003_0002.wav", "X", 3.0, 3.0, 3.0, "930", "Female", "Train"),
        ("MSP-PODCAST_0004_0005.wav", "O", 3.8, 3.6, 3.4, "455", "Male", "Test1"),
    ]
    for i, r in enumerate(rows):
        _wav(root / "Audios" / r[0], seed=i)
    (root / "Labels").mkdir(parents=True)
    pd.DataFrame(rows, columns=["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
                 ).to_csv(root / "Labels" / "labels_consensus.csv", index=False)
    return tmp, {
        "n": 6,
        "speakers": {"msppodcast_127": "m", "msppodcast_455": "m", "msppodcast_930": "f", "msppodcast_unknown-0001": "f",
                     "msppodcast_unknown-0002": "m"},
        "emotions": {"angry": 1, "happy": 1, "neutral": 1, "contempt": 1, "sad": 1, "other": 1},
        "checks": [("msppodcast/MSP-PODCAST_0001_0008", "arousal", 5.2), ("msppodcast/MSP-PODCAST_0001_0008", "valence", 2.4),
                   ("msppodcast/MSP-PODCAST_0001_0008", "dominance", 5.0), ("msppodcast/MSP-PODCAST_0002_0003", "split", "test1"),
                   ("msppodcast/MSP-PODCAST_0001_0020", "split", "development"),
                   ("msppodcast/MSP-PODCAST_0001_0011", "speaker_id", None),
                   ("msppodcast/MSP-PODCAST_0001_0011", "speaker", "msppodcast_unknown-0001"),
                   ("msppodcast/MSP-PODCAST_0004_0005", "emotion_native", "O"),
                   ("msppodcast/MSP-PODCAST_0003_0001", "naturalness", "natural"),
                   ("msppodcast/MSP-PODCAST_0003_0001", "language", "en")],
    }


def build_audformat(tmp: Path) -> tuple[Path, dict]:
    """A database saved with audformat's API: split tables of emotions, speakers (with gender) in another table."""
    pytest.importorskip("audformat", reason="the audformat adapter needs audformat (pip install 'serray[audformat]')")
    from tests._audformat_db import write_audformat_db

    root = tmp / "db"
    files = {"wav/s1_a.wav": ("s1", "anger", "train"), "wav/s1_b.wav": ("s1", "happiness", "train"),
             "wav/s2_a.wav": ("s2", "neutral", "dev"), "wav/s3_a.wav": ("s3", "sadness", "test"),
             "wav/s3_b.wav": ("s3", "Boredom", None)}
    for i, f in enumerate(files):
        _wav(root / f, seed=i)
    write_audformat_db(root, files, {"s1": "female", "s2": "male", "s3": "male"})
    return tmp, {
        "n": 5, "options": {"naturalness": "acted"},
        "speakers": {"audformat_s1": "f", "audformat_s2": "m", "audformat_s3": "m"},
        "emotions": {"angry": 1, "happy": 1, "neutral": 1, "sad": 1, "boredom": 1},
        "checks": [("audformat/wav/s1_a", "emotion_native", "anger"), ("audformat/wav/s2_a", "split", "development"),
                   ("audformat/wav/s3_a", "split", "test"), ("audformat/wav/s3_b", "split", None),
                   ("audformat/wav/s1_b", "language", "de"), ("audformat/wav/s3_b", "emotion", "boredom")],
    }


BUILDERS = {
    "emodb": build_emodb, "emovo": build_emovo, "ravdess": build_ravdess, "iemocap": build_iemocap,
    "cremad": build_cremad, "tess": build_tess, "cafe": build_cafe, "msppodcast": build_msppodcast, "table": build_table,
    "audformat": build_audformat,
}


def test_adapter_names_cover_every_builder():
    assert adapter_names() == ["emodb", "emovo", "ravdess", "iemocap", "cremad", "tess", "cafe", "msppodcast", "table",
                               "audformat"]
    assert set(BUILDERS) == set(adapter_names())
    assert all(get_adapter(n).name == n for n in adapter_names())


def test_unknown_adapter_and_option_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus adapter 'nope'.*emodb"):
        prepare_corpus("nope", tmp_path)
    with pytest.raises(ValueError, match="no option.*min_agreement.*accepted options: none"):
        prepare_corpus("emodb", tmp_path, min_agreement=0.5)
    with pytest.raises(ValueError, match="corpus_name"):
        prepare_corpus("emodb", tmp_path, corpus_name="../x")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fake_corpus_manifest(name, tmp_path):
    root, exp = BUILDERS[name](tmp_path / "data")
    work = tmp_path / "work"
    res = prepare_corpus(name, root, work, **exp.get("options", {}))
    m = res.manifest
    corpus = "mine" if name == "table" else name
    assert len(m) == exp["n"]
    assert res.bad.empty and res.bad_path is None
    assert res.manifest_path == work / "manifests" / f"{corpus}.parquet"
    assert list(m.columns[:5]) == ["utt_id", "path", "corpus", "speaker", "emotion"]
    assert m["utt_id"].is_unique and m["utt_id"].tolist() == sorted(m["utt_id"])
    assert (m["corpus"] == corpus).all() and m["utt_id"].str.startswith(f"{corpus}/").all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in m["path"])
    assert m.groupby("speaker")["gender"].first().to_dict() == exp["speakers"]
    assert m["emotion"].value_counts().to_dict() == exp["emotions"]
    assert np.allclose(m["duration_s"], 0.3)
    if name != "table":
        assert set(m["naturalness"]) <= {"acted", "natural"} and m["language"].str.len().eq(2).all()
    by_id = m.set_index("utt_id")
    for utt, col, value in exp["checks"]:
        got = by_id.loc[utt, col]
        if value is None:
            assert pd.isna(got), (utt, col, got)
        elif isinstance(value, float):
            assert got == pytest.approx(value), (utt, col)
        else:
            assert got == value, (utt, col, got)
    written = read_manifest(res.manifest_path)
    pd.testing.assert_frame_equal(written, m, check_dtype=False)
    # Idempotent: a second run writes the same manifest.
    again = prepare_corpus(name, root, work, **exp.get("options", {}))
    pd.testing.assert_frame_equal(again.manifest, m)
    pd.testing.assert_frame_equal(read_manifest(res.manifest_path), written)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"table"}))
def test_bad_audio_is_reported_and_excluded(name, tmp_path, caplog):
    root, exp = BUILDERS[name](tmp_path / "data")
    m0 = prepare_corpus(name, root).manifest
    victims = m0["path"].iloc[:2].tolist()
    _corrupt(Path(victims[0]))
    _empty(Path(victims[1]))
    work = tmp_path / "work"
    with caplog.at_level(logging.WARNING, logger="serray.corpora"):
        res = prepare_corpus(name, root, work)
    assert len(res.manifest) == exp["n"] - 2
    assert not set(victims) & set(res.manifest["path"])
    assert sorted(res.bad["path"]) == sorted(victims)
    reasons = dict(zip(res.bad["path"], res.bad["reason"]))
    assert "unreadable" in reasons[victims[0]] and "empty" in reasons[victims[1]]
    assert res.bad_path == work / "manifests" / f"{name}.bad.csv"
    assert sorted(pd.read_csv(res.bad_path)["path"]) == sorted(victims)
    assert any("2 of" in r.getMessage() and "excluded" in r.getMessage() for r in caplog.records)
    assert len(bad_table(work)) == 2
    # Fixing the files and preparing again removes the stale report.
    for i, v in enumerate(victims):
        _wav(Path(v), seed=10 + i)
    res2 = prepare_corpus(name, root, work)
    assert len(res2.manifest) == exp["n"] and res2.bad.empty
    assert res2.bad_path is None and not (work / "manifests" / f"{name}.bad.csv").exists()


# The example file name each layout error must quote.
WRONG_LAYOUT = {
    "emodb": "03a01Fa.wav", "emovo": "dis-f1-b1.wav", "ravdess": "03-01-05-02-01-01-01.wav",
    "iemocap": "Ses01F_impro01_F000.wav", "cremad": "1001_DFA_ANG_XX.wav", "tess": "OAF_back_angry.wav",
    "cafe": "01-C-1-1.wav", "msppodcast": "MSP-PODCAST_0001_0008.wav",
}


@pytest.mark.parametrize("name", sorted(WRONG_LAYOUT))
def test_wrong_layout_names_folder_scheme_and_fix(name, tmp_path):
    wrong = tmp_path / "not_a_corpus"
    _wav(wrong / "sub" / "hello.wav")
    with pytest.raises(CorpusLayoutError) as err:
        prepare_corpus(name, wrong, tmp_path / "work")
    msg = str(err.value)
    assert str(wrong) in msg and WRONG_LAYOUT[name] in msg and "pass" in msg
    assert not (tmp_path / "work" / "manifests").exists()
    with pytest.raises(CorpusLayoutError, match="no such folder"):
        prepare_corpus(name, tmp_path / "missing")


def test_files_off_scheme_are_listed_not_dropped(tmp_path):
    root, exp = build_emovo(tmp_path / "data")
    _wav(root / "f1" / "notes-f1.wav")
    res = prepare_corpus("emovo", root, tmp_path / "work")
    assert len(res.manifest) == exp["n"]
    assert res.bad["path"].tolist() == [str(root / "f1" / "notes-f1.wav")]
    assert "EMOVO scheme" in res.bad["reason"].iloc[0]


def test_header_only_check_still_excludes_unreadable_files(tmp_path):
    root, exp = build_emovo(tmp_path / "data")
    bad = _corrupt(root / "f1" / "dis-f1-b2.wav")
    res = prepare_corpus("emovo", root, check_audio=False)
    assert len(res.manifest) == exp["n"] and res.bad["path"].tolist() == [str(bad)]
    assert np.allclose(res.manifest["duration_s"], 0.3)


def test_corpus_name_renames_corpus_ids_and_file(tmp_path):
    root, _ = build_emovo(tmp_path / "data")
    res = prepare_corpus("emovo", root, tmp_path / "work", corpus_name="emovo16k")
    assert res.manifest_path.name == "emovo16k.parquet"
    assert (res.manifest["corpus"] == "emovo16k").all()
    assert res.manifest["utt_id"].str.startswith("emovo16k/").all()
    assert res.manifest["speaker"].str.startswith("emovo16k_").all()


def test_ravdess_root_levels_give_the_same_ids(tmp_path):
    top, _ = build_ravdess(tmp_path / "data")
    a = prepare_corpus("ravdess", top).manifest
    b = prepare_corpus("ravdess", top / "Audio_Speech_Actors_01-24").manifest
    pd.testing.assert_frame_equal(a, b)


def test_iemocap_filters_and_counts(tmp_path, caplog):
    top, _ = build_iemocap(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="serray.corpora"):
        res = prepare_corpus("iemocap", top)
    assert any("1 utterance(s) labelled xxx" in r.getMessage() for r in caplog.records)
    assert res.bad.empty  # the xxx file is dropped on purpose, not reported as bad
    m = prepare_corpus("iemocap", top, min_agreement="0.9").manifest
    assert sorted(m["emotion"]) == ["neutral", "sad"]  # exc 1/2 and ang 2/3 agreement dropped
    m = prepare_corpus("iemocap", top, labels="neutral,excited").manifest
    assert sorted(m["emotion"]) == ["excited", "neutral"]
    with pytest.raises(ValueError, match="not canonical"):
        prepare_corpus("iemocap", top, labels="neu")
    with pytest.raises(ValueError, match="min_agreement"):
        prepare_corpus("iemocap", top, min_agreement=2)


_EVAL_VALENCE = """[1.0 - 2.0]\tSes01F_impro02_F000\tsad\t[2.0000, 2.0000, 2.0000]
C-E1:\tSadness;\t()
A-E1:\tval 2; act 2; dom  2;\t()
A-E2:\tval 2; act 2; dom  2;\t()
A-F1:\tval 4; act 2; dom  2;\t()

[3.0 - 4.0]\tSes01F_impro02_M001\tneu\t[3.3333, 2.0000, 2.0000]
C-E1:\tNeutral;\t()
A-E1:\tval 3; act 2; dom  2;\t()
A-E2:\tval 4; act 2; dom  2;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[5.0 - 6.0]\tSes01F_impro02_F002\thap\t[4.5000, 3.0000, 3.0000]
C-E1:\tHappiness;\t()
A-E1:\tval 4; act 3; dom  3;\t()
A-E2:\tval 5; act 3; dom  3;\t()

[7.0 - 8.0]\tSes01F_impro02_M003\tang\t[3.0000, 4.0000, 4.0000]
C-E1:\tAnger;\t()
A-E1:\tval 2; act 4; dom  4;\t()
A-E2:\tval 4; act 4; dom  4;\t()

[9.0 - 10.0]\tSes01F_impro02_F004\txxx\t[1.2500, 3.0000, 3.0000]
C-E1:\tAnger;\t()
C-E2:\tSadness;\t()
A-E1:\tval 1; act 3; dom  3;\t()
A-E2:\tval 1.5; act 3; dom  3;\t()
"""


def test_iemocap_keeps_valence_ratings_and_valence3_takes_the_majority_bin(tmp_path, caplog):
    """Paper 000's task: every external evaluator's valence rating binned (< 3 low, 3 medium,
    > 3 high), the majority bin as the class, no majority -> excluded; xxx utterances on request."""
    from serray.labels import apply_label_set
    from serray.training.data import class_list

    root = tmp_path / "IEMOCAP_full_release" / "Session1"
    (root / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (root / "dialog" / "EmoEvaluation" / "Ses01F_impro02.txt").write_text(_EVAL_VALENCE)
    utts = [f"Ses01F_impro02_{s}" for s in ("F000", "M001", "F002", "M003", "F004")]
    for i, u in enumerate(utts):
        _wav(root / "sentences" / "wav" / "Ses01F_impro02" / f"{u}.wav", seed=i)
    m = prepare_corpus("iemocap", tmp_path).manifest.set_index("utt_id")
    key = "iemocap/Session1/sentences/wav/Ses01F_impro02/"
    assert m.loc[key + utts[0], "valence_ratings"] == "2;2" and m.loc[key + utts[0], "valence_ratings_actors"] == "4"
    assert m.loc[key + utts[1], "valence_ratings"] == "3;4;3" and m.loc[key + utts[1], "valence_ratings_actors"] == ""
    with caplog.at_level(logging.INFO, logger="serray.labels"):
        v = apply_label_set(m.reset_index(), "valence3").set_index("utt_id")
    assert v["emotion"].to_dict() == {key + utts[0]: "low", key + utts[1]: "medium", key + utts[2]: "high"}
    assert v.loc[key + utts[2], "emotion_native"] == "hap"  # the category stays beside the bin
    assert any("drops 1 utterance(s)" in r.getMessage() for r in caplog.records)  # 2 vs 4: no majority
    assert class_list(v["emotion"]) == ["low", "medium", "high"]
    # the utterance without a consensus category: dropped by default, kept (as other) on request
    kept = prepare_corpus("iemocap", tmp_path, keep_unagreed="true").manifest.set_index("utt_id")
    assert kept.loc[key + utts[4], "emotion"] == "other" and kept.loc[key + utts[4], "emotion_native"] == "xxx"
    assert apply_label_set(kept.reset_index(), "valence3").set_index("utt_id").loc[key + utts[4], "emotion"] == "low"
    with pytest.raises(ValueError, match="needs the manifest column 'valence_ratings'"):
        apply_label_set(m.reset_index().drop(columns="valence_ratings"), "valence3")


def test_msppodcast_speakers_agreement_splits_and_options(tmp_path, caplog):
    root, _ = build_msppodcast(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="serray.corpora"):
        m = prepare_corpus("msppodcast", root).manifest.set_index("utt_id")
    assert "msppodcast/MSP-PODCAST_0003_0002" not in m.index  # X: no agreement, dropped and counted
    assert any("1 utterance(s) labelled X" in r.getMessage() for r in caplog.records)
    # unknown speakers: one pseudo-speaker per episode, never one shared "Unknown" speaker
    unknown = m[~m["speaker_known"]]
    assert unknown["speaker_id"].isna().all() and len(unknown) == 3
    assert sorted(unknown["speaker"].unique()) == ["msppodcast_unknown-0001", "msppodcast_unknown-0002"]
    assert m.loc[m["speaker_known"], "speaker_id"].tolist() == ["127", "930", "455"]
    assert set(m["split"]) == {"train", "development", "test1", "test2"}
    kept = prepare_corpus("msppodcast", root, keep_unagreed="true").manifest.set_index("utt_id")
    assert kept.loc["msppodcast/MSP-PODCAST_0003_0002", ["emotion", "emotion_native"]].tolist() == ["other", "X"]
    some = prepare_corpus("msppodcast", root, labels="angry,sad,contempt", splits="Test1,test2").manifest
    assert sorted(some["emotion"]) == ["contempt", "sad"] and set(some["split"]) == {"test1", "test2"}
    with pytest.raises(ValueError, match="splits.*test4.*not official partitions"):
        prepare_corpus("msppodcast", root, splits="test4")
    with pytest.raises(ValueError, match="labels.*'amused'.*not canonical"):
        prepare_corpus("msppodcast", root, labels="amused")
    # a labelled file without audio is counted; audio without a label row is listed, not dropped silently
    (root / "MSP-Podcast" / "Audios" / "MSP-PODCAST_0004_0005.wav").unlink()
    _wav(root / "MSP-Podcast" / "Audios" / "MSP-PODCAST_0009_0001.wav")
    with caplog.at_level(logging.WARNING, logger="serray.corpora"):
        res = prepare_corpus("msppodcast", root)
    assert len(res.manifest) == 5 and any("have no audio file" in r.getMessage() for r in caplog.records)
    assert res.bad["path"].str.endswith("MSP-PODCAST_0009_0001.wav").tolist() == [True]
    assert "no row for this file" in res.bad["reason"].iloc[0]


def test_msppodcast_official_partitions_drive_protocol_split(tmp_path, caplog):
    from serray.protocols import LeakageError, make_folds

    root, _ = build_msppodcast(tmp_path / "data")
    m = prepare_corpus("msppodcast", root).manifest
    with caplog.at_level(logging.WARNING, logger="serray.protocols"):
        folds = make_folds(m, "split")
    assert [f.name for f in folds] == ["test=test1", "test=test2"]
    pre = "msppodcast/MSP-PODCAST_"
    for f in folds:
        assert sorted(f.train) == [pre + "0001_0008", pre + "0001_0011"] and list(f.validation) == [pre + "0001_0020"]
        # episode 0001's unknown voice is in training and development: validation is not speaker-independent
        assert f.validation_mode == "stratified"
    assert any("shares speakers with training" in r.getMessage() for r in caplog.records)
    assert sorted(folds[0].test) == [pre + "0002_0003", pre + "0004_0005"] and list(folds[1].test) == [pre + "0003_0001"]
    assert [f.name for f in make_folds(prepare_corpus("msppodcast", root, splits="train,development,test1").manifest,
                                       "split")] == ["test=test1"]
    m.loc[m["utt_id"] == pre + "0001_0008", "split"] = "test2"  # speaker 127 now on both sides of test2
    m.loc[m["utt_id"] == pre + "0004_0005", ["speaker", "split"]] = ["msppodcast_127", "train"]
    with pytest.raises(LeakageError, match="msppodcast_127"):
        make_folds(m, "split")


def test_msppodcast_older_label_file_name_and_missing_column(tmp_path):
    root, _ = build_msppodcast(tmp_path / "data")
    labels = root / "MSP-Podcast" / "Labels"
    (labels / "labels_consensus.csv").rename(labels / "labels_concensus.csv")  # spelling of releases before 1.9
    assert len(prepare_corpus("msppodcast", root).manifest) == 6
    pd.read_csv(labels / "labels_concensus.csv").drop(columns=["Split_Set"]).to_csv(labels / "labels_concensus.csv", index=False)
    with pytest.raises(CorpusLayoutError, match=r"labels_concensus.csv.*lacks column\(s\) \['Split_Set'\]"):
        prepare_corpus("msppodcast", root)


def test_cremad_demographics_lookup(tmp_path):
    root, exp = build_cremad(tmp_path / "data")
    # root = AudioWAV itself: the demographics are found in its parent.
    m = prepare_corpus("cremad", root / "AudioWAV").manifest
    assert m.groupby("speaker")["gender"].first().to_dict() == exp["speakers"]
    moved = tmp_path / "elsewhere" / "demo.csv"
    moved.parent.mkdir()
    (root / "VideoDemographics.csv").rename(moved)
    with pytest.raises(CorpusLayoutError, match="VideoDemographics.csv.*demographics=PATH"):
        prepare_corpus("cremad", root)
    assert len(prepare_corpus("cremad", root, demographics=str(moved)).manifest) == exp["n"]


def test_tess_and_cafe_reject_duplicate_copies(tmp_path):
    root, _ = build_cafe(tmp_path / "data")
    _wav(tmp_path / "data" / "copy" / "Joie" / "Faible" / "04-J-1-2.wav")
    with pytest.raises(CorpusLayoutError, match="more than once.*04-J-1-2"):
        prepare_corpus("cafe", tmp_path / "data")
    top, _ = build_tess(tmp_path / "t")
    _wav(top / "second copy" / "OAF_angry" / "OAF_back_angry.wav")
    with pytest.raises(CorpusLayoutError, match="several copies"):
        prepare_corpus("tess", top)


def test_table_errors_name_the_file_and_fix(tmp_path):
    table, _ = build_table(tmp_path)
    with pytest.raises(CorpusLayoutError, match=r"missing column\(s\) \['corpus'\].*-o corpus="):
        prepare_corpus("table", table)
    with pytest.raises(CorpusLayoutError, match=r"\['hap'\] are not canonical.*label_map"):
        prepare_corpus("table", table, corpus="mine")
    with pytest.raises(CorpusLayoutError, match="no such file"):
        prepare_corpus("table", tmp_path / "nope.csv", corpus="mine")
    # An empty target drops the label; utt_id from the table is kept.
    df = pd.read_csv(table).assign(utt_id=["u1", "u2", "u3"])
    df.to_parquet(tmp_path / "list.parquet")
    res = prepare_corpus("table", tmp_path / "list.parquet", corpus="mine", label_map={"hap": None},
                         base_dir=str(table.parent))
    assert res.manifest["utt_id"].tolist() == ["u1", "u3"]
    # naturalness must be acted/natural (a spontaneous corpus says so per row)
    df.assign(naturalness=["acted", "spontaneous", "natural"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CorpusLayoutError, match=r"naturalness values \['spontaneous'\] are not \['acted', 'natural'\]"):
        prepare_corpus("table", tmp_path / "bad.csv", corpus="mine", label_map={"hap": "happy"}, base_dir=str(table.parent))


def test_summary_and_speaker_tables():
    m = pd.DataFrame({
        "corpus": ["a", "a", "a", "b", "b"],
        "speaker": ["a_1", "a_1", "a_2", "b_1", "b_2"],
        "emotion": ["sad", "sad", "angry", "sad", "happy"],
        "gender": ["f", "f", "m", "m", None],
        "duration_s": [60.0, 60.0, 30.0, 6.0, 6.0],
    })
    s = summary_table(m)
    assert list(s.columns) == ["f", "m", "unknown", "total"]
    assert s.loc[("a", "sad")].tolist() == [2, 0, 0, 2]
    assert s.loc[("b", "happy")].tolist() == [0, 0, 1, 1]
    assert s.loc[("total", "")].tolist() == [2, 2, 1, 5]
    sp = speaker_table(m)
    assert sp.set_index("speaker").loc["a_1", ["gender", "utterances", "emotions", "minutes"]].tolist() == ["f", 2, 1, 2.0]
    ct = corpus_table(m).set_index("corpus")
    assert ct.loc["a", ["utterances", "speakers", "female_speakers", "male_speakers"]].tolist() == [3, 2, 1, 1]
    assert ct.loc["b", "emotions"] == "happy,sad"
    assert list(summary_table(m.drop(columns="gender")).columns) == ["f", "m", "unknown", "total"]


# ------------------------------------------------------------------ real corpora


@pytest.mark.realdata
def test_real_emodb(emodb_dir, tmp_path):
    res = prepare_corpus("emodb", emodb_dir, tmp_path)
    m = res.manifest
    assert len(m) == 535 and res.bad.empty
    assert m["emotion"].value_counts().to_dict() == {
        "angry": 127, "boredom": 81, "neutral": 79, "happy": 71, "fear": 69, "sad": 62, "disgust": 46,
    }
    genders = m.groupby("speaker")["gender"].first().to_dict()
    assert genders == {f"emodb_{s}": g for s, g in [("03", "m"), ("08", "f"), ("09", "f"), ("10", "m"), ("11", "m"),
                                                     ("12", "m"), ("13", "f"), ("14", "f"), ("15", "m"), ("16", "f")]}
    assert set(m["language"]) == {"de"} and set(m["naturalness"]) == {"acted"}
    assert np.allclose(m["duration_s"], 2.0)
    # erkennung.txt sits next to wav/: every kept file was recognised by >= 80 % of listeners.
    # (Its naturalness ratings go down to 45 % for 42 kept files, despite the README's >= 60 %.)
    assert m["recognition_rate"].notna().all() and (m["recognition_rate"] >= 80).all()
    assert m["naturalness_rating"].between(0, 100).all()
    assert m.set_index("utt_id").loc["emodb/03a01Fa", ["recognition_rate", "naturalness_rating"]].tolist() == [90.0, 75.0]
    # F is happiness, never disgust.
    assert set(m.loc[m["emotion_native"] == "F", "emotion"]) == {"happy"}
    # The EmoDB folder itself gives the same manifest as its wav/ folder.
    pd.testing.assert_frame_equal(prepare_corpus("emodb", emodb_dir.parent).manifest, m)


@pytest.mark.realdata
def test_real_emovo(emovo_dir, tmp_path):
    res = prepare_corpus("emovo", emovo_dir, tmp_path)
    m = res.manifest
    assert len(m) == 588 and res.bad.empty
    assert m["emotion"].value_counts().to_dict() == {e: 84 for e in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")}
    assert m.groupby("speaker")["gender"].first().to_dict() == {
        "emovo_f1": "f", "emovo_f2": "f", "emovo_f3": "f", "emovo_m1": "m", "emovo_m2": "m", "emovo_m3": "m",
    }
    assert set(m["language"]) == {"it"}
    assert m["duration_s"].between(1.0, 15.0).all()
    s = summary_table(m)
    assert s.loc[("total", ""), "total"] == 588 and s.loc[("emovo", "sad"), "f"] == 42
