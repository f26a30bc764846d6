"""Tests for serray.protocols: folds, validation carve-out, leakage guard."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serray.protocols import (
    PROTOCOLS,
    Fold,
    FoldClassError,
    LeakageError,
    check_fold_classes,
    check_leakage,
    folds_from_frame,
    folds_to_frame,
    make_folds,
)

CLASSES = ("neutral", "happy", "sad", "angry", "fear")
EMODB_CODES = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}


def synth_manifest(
    rng: np.random.Generator,
    *,
    n_corpora: int = 1,
    speakers_per_corpus: int = 6,
    n_classes: int = 4,
    sessions: bool = False,
    imbalance: float = 1.0,
    gender: bool = True,
) -> pd.DataFrame:
    """Random manifest: every speaker has every class (>= 1 utt), class sizes skewed by ``imbalance``."""
    classes = CLASSES[:n_classes]
    weights = np.array([imbalance ** -i for i in range(n_classes)])
    rows = []
    for c in range(n_corpora):
        corpus = f"c{c}"
        for s in range(speakers_per_corpus):
            spk = f"{corpus}_s{s}"
            g = "f" if rng.random() < 0.5 else "m"
            session = f"{corpus}_ses{s // 2}"  # two speakers per session
            counts = 1 + rng.poisson(6 * weights / weights.max())
            for emo, n in zip(classes, counts):
                for i in range(int(n)):
                    rows.append({"utt_id": f"{spk}_{emo}_{i}", "path": f"/x/{spk}_{emo}_{i}.wav",
                                 "corpus": corpus, "speaker": spk, "emotion": emo,
                                 "gender": g, "session": session})
    df = pd.DataFrame(rows)
    if not sessions:
        df = df.drop(columns="session")
    if not gender:
        df = df.drop(columns="gender")
    return df.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)


def random_configs(n: int = 12):
    rng = np.random.default_rng(1234)
    for i in range(n):
        cfg = dict(
            n_corpora=int(rng.integers(2, 4)),
            speakers_per_corpus=int(rng.integers(2, 9)),
            n_classes=int(rng.integers(2, 6)),
            sessions=True,
            imbalance=float(rng.choice([1.0, 2.0, 4.0])),
            gender=bool(rng.random() < 0.7),
        )
        yield i, cfg, synth_manifest(np.random.default_rng(i), **cfg), int(rng.integers(0, 1000))


def assert_fold_properties(m: pd.DataFrame, folds: list[Fold], protocol: str) -> None:
    spk = m.set_index("utt_id")["speaker"]
    emo = m.set_index("utt_id")["emotion"]
    for f in folds:
        tr, va, te = (set(f.train), set(f.validation), set(f.test))
        assert not (tr & va) and not (tr & te) and not (va & te), f.name
        assert len(tr) + len(va) + len(te) == len(f.train) + len(f.validation) + len(f.test)
        assert te and tr, f.name
        s_tr, s_va, s_te = (set(spk.loc[list(x)]) for x in (tr, va, te))
        assert not (s_te & (s_tr | s_va)), f"{protocol} {f.name}: test speakers leak"
        if f.validation_mode == "speaker":
            assert va and not (s_va & s_tr), f"{protocol} {f.name}: validation speakers leak"
        # every class of the training part survives the validation carve-out
        assert set(emo.loc[list(tr | va)]) == set(emo.loc[list(tr)]), f.name
        assert f.index == folds.index(f)
    if protocol != "cross-corpus":
        counts = Counter(u for f in folds for u in f.test)
        assert set(counts) == set(m["utt_id"]) and set(counts.values()) == {1}
        assert all(set(f.train) | set(f.validation) | set(f.test) == set(m["utt_id"]) for f in folds)


@pytest.mark.parametrize("protocol", ["loso", "loso-session", "loco", "kfold"])
def test_properties_over_random_manifests(protocol: str) -> None:
    for i, cfg, m, seed in random_configs():
        kw = {"k": min(3, m["speaker"].nunique())} if protocol == "kfold" else {}
        folds = make_folds(m, protocol, seed=seed, **kw)
        expected = {"loso": m["speaker"].nunique(), "loso-session": m["session"].nunique(),
                    "loco": m["corpus"].nunique(), "kfold": kw.get("k")}[protocol]
        assert len(folds) == expected, (i, cfg)
        assert_fold_properties(m, folds, protocol)
        # every speaker has every class here, so every fold's training part has every class
        check_fold_classes(m, folds)
        # deterministic for a fixed seed, independent of row order
        again = make_folds(m.sample(frac=1.0, random_state=i), protocol, seed=seed, **kw)
        assert again == folds, (i, cfg)


def test_cross_corpus_properties() -> None:
    for i, cfg, m, seed in random_configs(6):
        corpora = sorted(m["corpus"].unique())
        folds = make_folds(m, "cross-corpus", train_corpora=corpora[1:], test_corpora=corpora[0], seed=seed)
        assert len(folds) == 1
        f = folds[0]
        assert set(m.set_index("utt_id").loc[list(f.test), "corpus"]) == {corpora[0]}
        assert set(f.train) | set(f.validation) == set(m.loc[m["corpus"] != corpora[0], "utt_id"])
        assert f.name == f"train={'+'.join(corpora[1:])};test={corpora[0]}"
        assert_fold_properties(m, folds, "cross-corpus")


def test_different_seeds_can_differ() -> None:
    m = synth_manifest(np.random.default_rng(0), speakers_per_corpus=12)
    by_seed = [make_folds(m, "kfold", k=4, seed=s) for s in range(5)]
    assert any(by_seed[0] != b for b in by_seed[1:])
    val = [tuple(make_folds(m, "loso", seed=s)[0].validation) for s in range(5)]
    assert len(set(val)) > 1


def test_validation_speaker_count_and_gender_balance() -> None:
    rng = np.random.default_rng(3)
    m = synth_manifest(rng, speakers_per_corpus=21, n_classes=3)
    # 10 f, 10 m speakers in every training part: gender known exactly
    genders = {f"c0_s{i}": ("f" if i % 2 else "m") for i in range(21)}
    m["gender"] = m["speaker"].map(genders)
    folds = make_folds(m, "loso", val_fraction=0.2, seed=5, validation="fraction")
    spk = m.set_index("utt_id")["speaker"]
    for f in folds:
        val_spk = sorted(set(spk.loc[list(f.validation)]))
        assert len(val_spk) == 4  # round(0.2 * 20)
        assert Counter(genders[s] for s in val_spk) == Counter({"f": 2, "m": 2})
    folds = make_folds(m, "loso", val_fraction=0.05, min_val_speakers=3, seed=5, validation="fraction")
    assert all(len(set(spk.loc[list(f.validation)])) == 3 for f in folds)


def test_coverage_validation_holds_the_share_and_every_class() -> None:
    """The default rule: whole speakers until 15 % of the training utterances and every
    class are in validation (where the data allow); never a test utterance."""
    for i, cfg, m, seed in random_configs(8):
        for protocol in ("loso", "kfold"):
            folds = make_folds(m, protocol, seed=seed, k=2)
            emo = m.set_index("utt_id")["emotion"]
            spk = m.set_index("utt_id")["speaker"]
            for f in folds:
                assert not set(f.validation) & set(f.test)
                if f.validation_mode != "speaker":
                    continue
                n_train = len(f.train) + len(f.validation)
                val_classes, train_classes = set(emo.loc[list(f.validation)]), set(emo.loc[list(f.train)])
                removable = [s for s in set(spk.loc[list(f.train)])
                             if all((emo.loc[list(f.train)][spk.loc[list(f.train)] != s] == c).any()
                                    for c in set(emo[spk == s]))]
                if removable:  # another speaker could still be held out: the rule was met
                    assert len(f.validation) >= 0.15 * n_train, (i, protocol, f.name)
                    assert val_classes == train_classes or len(f.validation) >= 0.3 * n_train, (i, protocol, f.name)


def test_balanced_validation_rotates_speakers_across_folds() -> None:
    """``balanced``: the coverage rule's folds (same sizes, same guarantees), with every
    speaker validating about equally often over the folds; coverage itself is unchanged."""
    spread = {"coverage": [], "balanced": []}
    for i in range(6):
        m = synth_manifest(np.random.default_rng(100 + i), speakers_per_corpus=10, n_classes=4)
        spk = m.set_index("utt_id")["speaker"]
        for rule in spread:
            folds = make_folds(m, "loso", seed=i, validation=rule)
            assert_fold_properties(m, folds, "loso")
            used = Counter(s for f in folds for s in set(spk.loc[list(f.validation)]))
            counts = [used[s] for s in m["speaker"].unique()]
            spread[rule].append(max(counts) - min(counts))
            if rule == "balanced":
                assert spread["balanced"][-1] <= spread["coverage"][-1], (i, used)
                cover = make_folds(m, "loso", seed=i, validation="coverage")
                assert [len(set(spk.loc[list(f.validation)])) for f in folds] == \
                       [len(set(spk.loc[list(f.validation)])) for f in cover]
    # gender balance and unequal speaker sizes within a fold can outrank rotation: closer, not always equal
    assert sum(spread["balanced"]) < sum(spread["coverage"]), spread
    assert make_folds(m, "loso", seed=0) == make_folds(m, "loso", seed=0, validation="coverage")


def test_coverage_validation_uses_several_speakers_where_one_is_too_small() -> None:
    m = synth_manifest(np.random.default_rng(7), speakers_per_corpus=10, n_classes=4)
    spk = m.set_index("utt_id")["speaker"]
    new = make_folds(m, "loso", seed=0)
    old = make_folds(m, "loso", seed=0, validation="fraction")
    assert all(len(set(spk.loc[list(f.validation)])) >= 2 for f in new)
    assert all(len(set(spk.loc[list(f.validation)])) == 1 for f in old)  # round(0.15 * 9)
    assert all(set(o.test) == set(n.test) for o, n in zip(old, new))
    with pytest.raises(ValueError, match="coverage"):
        make_folds(m, "loso", validation="speakers")


def test_validation_keeps_rare_class_in_training() -> None:
    m = synth_manifest(np.random.default_rng(4), speakers_per_corpus=5, n_classes=3, gender=False)
    # only speakers s0 and s1 have "fear": whichever is tested, the other must stay in training
    extra = [{"utt_id": f"{s}_fear_x", "path": f"/x/{s}_fear_x.wav", "corpus": "c0", "speaker": s, "emotion": "fear"}
             for s in ("c0_s0", "c0_s1")]
    m = pd.concat([m, pd.DataFrame(extra)], ignore_index=True)
    for seed in range(10):
        folds = make_folds(m, "loso", seed=seed, val_fraction=0.5)
        check_fold_classes(m, folds)
        for f in folds[:2]:
            assert "fear" in set(m.set_index("utt_id").loc[list(f.train), "emotion"])


def test_stratified_validation_when_few_speakers(caplog: pytest.LogCaptureFixture) -> None:
    m = synth_manifest(np.random.default_rng(5), n_corpora=2, speakers_per_corpus=2)
    with caplog.at_level(logging.INFO, logger="serray.protocols"):
        folds = make_folds(m, "loco")
    assert [f.validation_mode for f in folds] == ["stratified", "stratified"]
    assert "stratified" in caplog.text
    emo = m.set_index("utt_id")["emotion"]
    for f in folds:
        assert len(f.validation) > 0
        assert set(emo.loc[list(f.train)]) == set(emo.loc[list(f.train) + list(f.validation)])
    assert_fold_properties(m, folds, "loco")


def test_speaker_dependent_kfold(caplog: pytest.LogCaptureFixture) -> None:
    m = synth_manifest(np.random.default_rng(6), speakers_per_corpus=3)
    with caplog.at_level(logging.WARNING, logger="serray.protocols"):
        folds = make_folds(m, "kfold", k=5, speaker_independent=False, seed=1)
    assert "optimistic" in caplog.text
    assert len(folds) == 5
    assert all("speaker-dependent" in f.name and f.validation_mode == "speaker-dependent" for f in folds)
    counts = Counter(u for f in folds for u in f.test)
    assert set(counts) == set(m["utt_id"]) and set(counts.values()) == {1}
    # the guard refuses these folds unless speaker dependence is explicitly allowed
    with pytest.raises(LeakageError, match="speaker-dependent"):
        check_leakage(m, folds)
    check_leakage(m, folds, allow_speaker_dependent=True)
    with pytest.raises(ValueError, match="only offered for protocol 'kfold'"):
        make_folds(m, "loso", speaker_independent=False)


def test_kfold_speaker_dependent_protocol_is_the_papers_64_16_20_random_split() -> None:
    m = synth_manifest(np.random.default_rng(6), speakers_per_corpus=3)
    folds = make_folds(m, "kfold-speaker-dependent", k=5, seed=1)
    plain = make_folds(m, "kfold", k=5, speaker_independent=False, seed=1)
    assert [sorted(f.test) for f in folds] == [sorted(f.test) for f in plain]
    assert all("speaker-dependent" in f.name and f.validation_mode == "speaker-dependent" for f in folds)
    for f in folds:
        n = len(f.train) + len(f.validation) + len(f.test)
        assert abs(len(f.test) / n - 0.2) < 0.03 and abs(len(f.validation) / n - 0.16) < 0.03
    with pytest.raises(LeakageError, match="speaker-dependent"):
        check_leakage(m, folds)


def test_leakage_guard_refuses_handmade_leaky_folds() -> None:
    m = synth_manifest(np.random.default_rng(7), speakers_per_corpus=4)
    ids = m.set_index("speaker")["utt_id"]
    s0, s1, s2, s3 = (ids.loc[f"c0_s{i}"].tolist() for i in range(4))
    clean = Fold(0, "clean", train=s0 + s1, validation=s2, test=s3, validation_mode="speaker")
    check_leakage(m, [clean])
    # one utterance of the test speaker moved into training
    leaky = Fold(1, "leaky", train=s0 + s1 + s3[:1], validation=s2, test=s3[1:], validation_mode="speaker")
    with pytest.raises(LeakageError, match=r"fold 'leaky'.*c0_s3"):
        check_leakage(m, [clean, leaky])
    val_leak = Fold(2, "val-leak", train=s0 + s1 + s2[:1], validation=s2[1:], test=s3, validation_mode="speaker")
    with pytest.raises(LeakageError, match=r"fold 'val-leak'.*validation speaker.*c0_s2"):
        check_leakage(m, [val_leak])
    # the same split is fine when validation is declared stratified
    check_leakage(m, [Fold(2, "strat", train=s0 + s1 + s2[:1], validation=s2[1:], test=s3,
                           validation_mode="stratified")])
    dup = Fold(3, "dup", train=s0 + s1, validation=s2 + s1[:1], test=s3, validation_mode="stratified")
    with pytest.raises(LeakageError, match="both train and validation"):
        check_leakage(m, [dup])
    with pytest.raises(ValueError, match="not in the manifest"):
        check_leakage(m, [Fold(4, "ghost", train=s0 + ["nope"], validation=s2, test=s3, validation_mode="speaker")])


def test_missing_class_error_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    m = synth_manifest(np.random.default_rng(8), speakers_per_corpus=5, n_classes=3, gender=False)
    only = pd.DataFrame([{"utt_id": "c0_s4_fear_0", "path": "/x", "corpus": "c0", "speaker": "c0_s4",
                          "emotion": "fear"}])
    m = pd.concat([m, only], ignore_index=True)
    folds = make_folds(m, "loso")
    with pytest.raises(FoldClassError, match=r"fold 'test=c0_s4'.*\['fear'\].*--labels 4class"):
        check_fold_classes(m, folds)
    # restricted to classes every training part has: only warnings for test/validation
    with caplog.at_level(logging.WARNING, logger="serray.protocols"):
        check_fold_classes(m, folds, classes=["happy", "neutral", "sad"])
        check_fold_classes(m, [f for f in folds if f.name != "test=c0_s4"])
    assert "test part has no utterances of class(es) ['fear']" in caplog.text


def test_protocol_errors() -> None:
    m1 = synth_manifest(np.random.default_rng(9), n_corpora=1, speakers_per_corpus=4)
    m2 = synth_manifest(np.random.default_rng(9), n_corpora=2, speakers_per_corpus=3)
    with pytest.raises(ValueError, match="needs a 'session' column.*use protocol 'loso'"):
        make_folds(m1, "loso-session")
    with pytest.raises(ValueError, match="at least 2 distinct 'corpus'"):
        make_folds(m1, "loco")
    with pytest.raises(ValueError, match=r"k=5 needs at least 5 distinct 'speaker'.*has 4"):
        make_folds(m1, "kfold", k=5)
    with pytest.raises(ValueError, match="k >= 2"):
        make_folds(m1, "kfold", k=1)
    # one speaker: no k works, so the advice must not be a lower k (k=1 is refused above)
    one = m1[m1["speaker"] == m1["speaker"].iloc[0]]
    for k in (2, 5):
        with pytest.raises(ValueError, match="at least 2 distinct 'speaker' values.*has 1") as err:
            make_folds(one, "kfold", k=k)
        assert "k=1" not in str(err.value) and "lower k" not in str(err.value)
    with pytest.raises(ValueError, match="unknown protocol"):
        make_folds(m1, "holdout")
    with pytest.raises(ValueError, match="val_fraction"):
        make_folds(m1, "loso", val_fraction=0.0)
    with pytest.raises(ValueError, match="needs both train_corpora and test_corpora"):
        make_folds(m2, "cross-corpus", train_corpora="c0")
    with pytest.raises(ValueError, match=r"\['c0'\] are in both"):
        make_folds(m2, "cross-corpus", train_corpora=["c0", "c1"], test_corpora="c0")
    with pytest.raises(ValueError, match=r"\['iemocap'\] are not in the manifest"):
        make_folds(m2, "cross-corpus", train_corpora="c0", test_corpora="iemocap")
    with pytest.raises(ValueError, match="apply only to protocol 'cross-corpus'"):
        make_folds(m2, "loco", train_corpora="c0")
    with pytest.raises(ValueError, match="duplicate utt_id"):
        make_folds(pd.concat([m1, m1.iloc[:1]]), "loso")
    partial = synth_manifest(np.random.default_rng(9), n_corpora=1, speakers_per_corpus=4, sessions=True)
    partial.loc[partial.index[:3], "session"] = None
    with pytest.raises(ValueError, match="have no 'session' value"):
        make_folds(partial, "loso-session")
    assert set(PROTOCOLS) == {"loso", "loso-session", "loco", "kfold", "cross-corpus", "kfold-speaker-dependent", "split"}


def test_split_protocol_uses_predefined_partitions() -> None:
    m = synth_manifest(np.random.default_rng(12), speakers_per_corpus=8)
    part = {"c0_s0": "Train", "c0_s1": "train", "c0_s2": "TRAIN", "c0_s3": "train", "c0_s4": "Development",
            "c0_s5": "Test1", "c0_s6": "test2", "c0_s7": None}
    m["split"] = m["speaker"].map(part)
    folds = make_folds(m, "split")
    assert [f.name for f in folds] == ["test=test1", "test=test2"]
    spk = m.set_index("utt_id")["speaker"]
    for f in folds:
        assert set(spk[f.train]) == {"c0_s0", "c0_s1", "c0_s2", "c0_s3"} and set(spk[f.validation]) == {"c0_s4"}
        assert f.validation_mode == "speaker"
    assert set(spk[folds[0].test]) == {"c0_s5"} and set(spk[folds[1].test]) == {"c0_s6"}
    assert not set(m.loc[m["speaker"] == "c0_s7", "utt_id"]) & {u for f in folds for s in ("train", "validation", "test")
                                                                 for u in f.split(s)}  # no value: left out
    assert folds == make_folds(m.sample(frac=1, random_state=0), "split")  # row order does not matter
    # without a development partition validation is carved out of train (whole speakers)
    carved = make_folds(m.assign(split=m["split"].replace("Development", "train")), "split", seed=3)
    assert carved[0].validation_mode == "speaker" and set(spk[carved[0].validation]) < set(part) - {"c0_s5", "c0_s6"}
    assert make_folds(m.rename(columns={"split": "official"}), "split", group_column="official") == folds
    with pytest.raises(ValueError, match="protocol 'split' needs a 'split' column"):
        make_folds(m.drop(columns="split"), "split")
    with pytest.raises(ValueError, match="needs a 'train' partition and at least one test partition"):
        make_folds(m.assign(split="train"), "split")
    leaky = m.copy()
    leaky.loc[leaky.index[leaky["speaker"] == "c0_s5"][:1], "split"] = "train"
    with pytest.raises(LeakageError, match="c0_s5"):
        make_folds(leaky, "split")


def test_loso_session_names_and_group_column() -> None:
    m = synth_manifest(np.random.default_rng(10), speakers_per_corpus=6, sessions=True)
    folds = make_folds(m, "loso-session")
    assert [f.name for f in folds] == ["test=c0_ses0", "test=c0_ses1", "test=c0_ses2"]
    assert folds == make_folds(m, "loso", group_column="session")
    # a speaker spanning two sessions makes loso-session leak: the guard refuses it
    bad = m.copy()
    bad.loc[(bad["speaker"] == "c0_s0") & (bad["emotion"] == "happy"), "session"] = "c0_ses2"
    with pytest.raises(LeakageError, match="c0_s0"):
        make_folds(bad, "loso-session")


def test_frame_roundtrip(tmp_path: Path) -> None:
    from serray import io

    m = synth_manifest(np.random.default_rng(11), n_corpora=2, speakers_per_corpus=2)
    for folds in (make_folds(m, "loso", seed=3), make_folds(m, "kfold", k=2, speaker_independent=False)):
        df = folds_to_frame(folds)
        assert list(df.columns[:4]) == ["fold", "fold_name", "split", "utt_id"]
        assert len(df) == sum(len(f.train) + len(f.validation) + len(f.test) for f in folds)
        io.write_parquet(df, tmp_path / "folds.parquet")
        back = folds_from_frame(io.read_parquet(tmp_path / "folds.parquet"))
        assert back == folds
    legacy = folds_to_frame(make_folds(m, "loso")).drop(columns="validation_mode")
    assert {f.validation_mode for f in folds_from_frame(legacy)} == {"speaker"}
    with pytest.raises(ValueError, match="unknown split"):
        folds_from_frame(df.assign(split="dev"))


def test_fold_is_immutable() -> None:
    f = Fold(0, "x", train=["a"], validation=[], test=["b"], validation_mode="speaker")
    with pytest.raises(ValueError):
        f.train[0] = "z"
    with pytest.raises(ValueError, match="validation_mode"):
        Fold(0, "x", train=["a"], validation=[], test=["b"], validation_mode="random")


def _data_root() -> Path:
    env = os.environ.get("SERRAY_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.realdata
def test_emodb_loso_gives_ten_folds() -> None:
    wav = _data_root() / "emodb" / "wav"
    if not wav.is_dir():
        pytest.skip(f"EmoDB not found at {wav} (set SERRAY_DATA to the folder holding emodb/)")
    files = sorted(wav.glob("*.wav"))
    m = pd.DataFrame({
        "utt_id": [f"emodb_{p.stem}" for p in files],
        "path": [str(p) for p in files],
        "corpus": "emodb",
        "speaker": [f"emodb_{p.name[:2]}" for p in files],
        "emotion": [EMODB_CODES[p.name[5]] for p in files],
    })
    folds = make_folds(m, "loso", seed=0)
    assert len(folds) == 10
    assert folds[0].name == "test=emodb_03"
    assert_fold_properties(m, folds, "loso")
    check_fold_classes(m, folds)
    assert all(f.validation_mode == "speaker" for f in folds)
    spk = m.set_index("utt_id")["speaker"]
    balanced = make_folds(m, "loso", seed=0, validation="balanced")
    assert_fold_properties(m, balanced, "loso")
    used = Counter(s for f in balanced for s in set(spk.loc[list(f.validation)]))
    assert set(used.values()) == {2} and len(used) == 10  # every speaker validates in two folds
    kf = make_folds(m, "kfold", k=5, seed=0)
    assert_fold_properties(m, kf, "kfold")
