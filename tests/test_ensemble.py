"""Ensemble search: combinatorics, exactness against a brute force, ties, greedy, Ray runner."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import recall_score

from serray.ensemble import (
    OPTIMISTIC_WARNING,
    VALIDATION_NOTE,
    Members,
    distributed_search,
    evaluate_subset,
    exhaustive_search,
    greedy_selection,
    members_from_predictions,
    nested_estimate,
    run_ensemble_search,
)
from serray.ensemble import combinatorics as cb
from serray.ensemble.search import merge_top
from serray.training.resources import Resources

CLASSES = ["neutral", "happy", "angry", "sad"]
K_VALUES = [1, 2, 3, 5, 9, 10]


# --------------------------------------------------------------------------- fixtures / brute force


def _split(rng, n, m, p):
    y = rng.choice(len(CLASSES), size=n, p=p)
    common = rng.normal(size=(n, len(CLASSES)))
    common[np.arange(n), y] += 0.8
    logits = common[None] + rng.normal(scale=1.0, size=(m, n, len(CLASSES)))
    return logits.astype(np.float32), y


def make_members(m: int = 10, seed: int = 0) -> Members:
    """Correlated random members with imbalanced labels (class 3 rare)."""
    rng = np.random.default_rng(seed)
    lv, yv = _split(rng, 160, m, [0.45, 0.3, 0.17, 0.08])
    lt, yt = _split(rng, 131, m, [0.35, 0.35, 0.2, 0.1])
    variant = ["vanilla" if i % 3 else "dann" for i in range(m)]
    names = [f"{variant[i]}/c0/{i}" for i in range(m)]
    return Members.from_arrays(lv, yv, lt, yt, CLASSES, names=names, variant=variant)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def brute_force(members: Members, k: int, fusion: str, split: str = "validation", top: int = 10):
    """Plain loop over itertools subsets: float64 sums + sklearn macro recall."""
    logits, y = members.split(split)
    labels = np.unique(y)
    scored = []
    for subset in itertools.combinations(range(members.n_members), k):
        sel = logits[list(subset)].astype(np.float64)
        if fusion == "logits":
            pred = sel.sum(axis=0).argmax(axis=1)
        elif fusion == "prob":
            pred = _softmax(sel).sum(axis=0).argmax(axis=1)
        else:
            am = sel.argmax(axis=2)
            votes = np.stack([(am == c).sum(axis=0) for c in range(members.n_classes)], axis=1)
            summed = sel.sum(axis=0)
            pred = np.where(votes == votes.max(axis=1, keepdims=True), summed, -np.inf).argmax(axis=1)
        scored.append((recall_score(y, pred, labels=labels, average="macro"), subset))
    scored.sort(key=lambda t: -t[0])  # stable: equal scores keep lexicographic order
    return scored[:top]


@pytest.fixture(scope="module")
def members() -> Members:
    return make_members()


@pytest.fixture(scope="module")
def reference(members):
    return {
        fusion: {k: brute_force(members, k, fusion) for k in K_VALUES} for fusion in ("logits", "prob", "vote")
    }


def assert_matches(board: pd.DataFrame, ref: dict, ks=K_VALUES, col: str = "score") -> None:
    for k in ks:
        got = board[board["k"] == k]
        assert [tuple(i) for i in got["indices"]] == [s for _, s in ref[k]], f"k={k}"
        np.testing.assert_allclose(got[col].to_numpy(), [u for u, _ in ref[k]], rtol=0, atol=1e-12)
        assert got["position"].tolist() == list(range(1, len(ref[k]) + 1))


# --------------------------------------------------------------------------- combinatorics


def test_rank_unrank_round_trip_matches_itertools_order():
    for n in range(0, 9):
        for k in range(0, n + 1):
            combos = list(itertools.combinations(range(n), k))
            assert cb.n_choose_k(n, k) == len(combos)
            for r, c in enumerate(combos):
                assert cb.rank(c, n) == r
                assert cb.unrank(r, n, k) == c
                assert cb.next_combination(c, n) == (combos[r + 1] if r + 1 < len(combos) else None)
            block = cb.unrank_block(0, len(combos) + 3, n, k)  # truncated at C(n, k)
            assert [tuple(row) for row in block.tolist()] == combos
            if combos:
                np.testing.assert_array_equal(cb.rank_block(block, n), np.arange(len(combos)))


def test_unrank_block_mid_range_and_large_n():
    n, k = 30, 9
    start = 5_000_000
    block = cb.unrank_block(start, 50, n, k)
    assert [tuple(b) for b in block.tolist()] == [cb.unrank(start + i, n, k) for i in range(50)]
    first = cb.unrank(start, n, k)
    assert cb.next_combination(first, n) == tuple(block[1])
    assert cb.rank(cb.unrank(cb.n_choose_k(60, 30) - 7, 60, 30), 60) == cb.n_choose_k(60, 30) - 7


def test_combinatorics_bad_arguments():
    with pytest.raises(ValueError, match="strictly increasing"):
        cb.rank((2, 1), 5)
    with pytest.raises(ValueError, match="rank must lie"):
        cb.unrank(10, 5, 3)
    with pytest.raises(ValueError, match="int64"):
        cb.unrank_block(0, 1, 80, 40)
    assert cb.split_range(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert cb.split_range(2, 5) == [(0, 1), (1, 2)]


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("fusion", ["logits", "prob", "vote"])
def test_numpy_search_equals_brute_force(members, reference, fusion):
    board = exhaustive_search(members, K_VALUES, fusion=fusion, top=10, backend="numpy")
    assert_matches(board, reference[fusion])
    # reported val_ua is the float64 reference evaluation of the same subsets
    np.testing.assert_allclose(board["val_ua"], board["score"], rtol=0, atol=1e-12)
    assert (board["selection"] == "validation").all()
    assert board.attrs["note"] == VALIDATION_NOTE


@pytest.mark.parametrize("fusion", ["logits", "prob", "vote"])
def test_small_batches_and_torch_backend_equal_numpy(members, reference, fusion):
    cols = ["k", "rank", "score", "val_ua", "test_ua", "test_wa"]
    numpy_small = exhaustive_search(members, K_VALUES, fusion=fusion, backend="numpy", batch=3)
    torch_cpu = exhaustive_search(members, K_VALUES, fusion=fusion, backend="torch", device="cpu", batch=7)
    assert_matches(torch_cpu, reference[fusion])
    pd.testing.assert_frame_equal(numpy_small[cols], torch_cpu[cols])


def test_reported_test_metrics_match_sklearn(members):
    board = exhaustive_search(members, [3], fusion="logits", top=3)
    logits, y = members.split("test")
    for _, row in board.iterrows():
        pred = logits[row["indices"]].astype(np.float64).sum(axis=0).argmax(axis=1)
        assert row["test_ua"] == pytest.approx(recall_score(y, pred, average="macro"), abs=1e-12)
        assert row["test_wa"] == pytest.approx(np.mean(pred == y), abs=1e-12)
        assert row["members"] == [members.names[i] for i in row["indices"]]


def test_test_optimistic_mode_selects_on_test_and_says_so(members):
    ref = {k: brute_force(members, k, "logits", split="test") for k in (2, 3)}
    board = exhaustive_search(members, [2, 3], fusion="logits", selection="test-optimistic")
    assert_matches(board, ref, ks=(2, 3))
    np.testing.assert_allclose(board["test_ua"], board["score"], rtol=0, atol=1e-12)
    assert (board["selection"] == "test-optimistic").all()
    assert board.attrs["note"] == OPTIMISTIC_WARNING
    assert "optimistic" in OPTIMISTIC_WARNING.lower() and "test" in OPTIMISTIC_WARNING.lower()


def test_rank_range_scores_only_that_range(members):
    k, lo, hi = 3, 17, 64
    full = brute_force(members, k, "logits", top=10_000)
    inside = [(u, s) for u, s in full if lo <= cb.rank(s, members.n_members) < hi][:5]
    board = exhaustive_search(members, [k], top=5, backend="numpy", rank_range=(lo, hi), batch=4)
    assert_matches(board, {k: inside}, ks=(k,))


@pytest.mark.parametrize("fusion", ["logits", "vote"])
def test_exact_ties_in_fused_scores_follow_lowest_class_rule(fusion):
    # small-integer logits make exact ties between summed class scores common
    rng = np.random.default_rng(11)
    y = rng.choice(4, size=90, p=[0.4, 0.3, 0.2, 0.1])
    lv = rng.integers(0, 3, size=(7, 90, 4)).astype(np.float32)
    m = Members.from_arrays(lv, y, lv[:, :50], y[:50], CLASSES)
    ks = [2, 3, 4]
    ref = {k: brute_force(m, k, fusion) for k in ks}
    for backend in ("numpy", "torch"):
        assert_matches(exhaustive_search(m, ks, fusion=fusion, backend=backend, device="cpu"), ref, ks=ks)


def test_float32_margins_run_and_agree_on_random_data(members, reference):
    board = exhaustive_search(members, [2, 3], fusion="logits", dtype="float32")
    assert_matches(board, reference["logits"], ks=(2, 3))


# --------------------------------------------------------------------------- ties


def test_ties_are_broken_by_lower_rank_deterministically():
    base = make_members(m=1, seed=3)
    # six identical members: every k-subset scores the same
    dup = Members.from_arrays(
        np.repeat(base.val_logits, 6, axis=0), base.y_val, np.repeat(base.test_logits, 6, axis=0), base.y_test,
        CLASSES,
    )  # fmt: skip
    for backend, batch in (("numpy", 1), ("numpy", 5), ("torch", 4)):
        board = exhaustive_search(dup, [1, 3], top=4, backend=backend, batch=batch, device="cpu")
        assert board.loc[board.k == 1, "rank"].tolist() == [0, 1, 2, 3]
        assert board.loc[board.k == 3, "rank"].tolist() == [0, 1, 2, 3]
        assert board["score"].nunique() == 1
    # merging task results in any order gives the same list
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 1)
    ranks = np.arange(200)
    parts = [(scores[i : i + 20], ranks[i : i + 20]) for i in range(0, 200, 20)]
    want = merge_top(parts, 15)
    rng.shuffle(parts)
    got = merge_top(parts, 15)
    np.testing.assert_array_equal(want[0], got[0])
    np.testing.assert_array_equal(want[1], got[1])
    order = np.lexsort((ranks, -scores))[:15]
    np.testing.assert_array_equal(got[1], ranks[order])


# --------------------------------------------------------------------------- greedy


def test_greedy_first_pick_best_path_and_consistency(members):
    path = greedy_selection(members, max_size=6, fusion="logits")
    best_single = brute_force(members, 1, "logits", top=1)[0]
    assert path["added_index"].iloc[0] == best_single[1][0]
    assert path["score"].iloc[0] == pytest.approx(best_single[0], abs=1e-12)
    assert path["k"].tolist() == list(range(1, 7))
    # returned best = highest validation UA on the path (earliest on ties)
    best = path[path["is_best"]]
    assert len(best) == 1
    assert best["score"].iloc[0] == path["score"].max()
    assert path.attrs["best_step"] == int(path.loc[path["score"] == path["score"].max(), "step"].min())
    # scores are the pooled validation UA of the (multi)set, as sklearn computes it
    logits, y = members.split("validation")
    for _, row in path.iterrows():
        pred = logits[row["indices"]].astype(np.float64).sum(axis=0).argmax(axis=1)
        assert row["score"] == pytest.approx(recall_score(y, pred, average="macro"), abs=1e-12)
        assert row["val_ua"] == pytest.approx(row["score"], abs=1e-12)
    # step 2 took the best possible addition (with replacement) to step 1's ensemble
    cands = [evaluate_subset(members, path["indices"].iloc[0] + [i], "logits")["val_ua"] for i in range(10)]
    assert path["score"].iloc[1] == pytest.approx(max(cands), abs=1e-12)
    assert path["added_index"].iloc[1] == int(np.argmax(cands))


def test_greedy_repeats_a_dominant_member():
    rng = np.random.default_rng(1)
    n = 200
    y = rng.integers(0, 4, n)
    strong = rng.normal(size=(n, 4))
    strong[np.arange(n), y] += 3.0
    noise = rng.normal(scale=3.0, size=(2, n, 4))
    logits = np.concatenate([strong[None], noise]).astype(np.float32)
    m = Members.from_arrays(logits, y, logits, y, CLASSES)
    for fusion in ("logits", "prob", "vote"):
        path = greedy_selection(m, max_size=3, fusion=fusion)
        assert path["added_index"].tolist() == [0, 0, 0], fusion
        assert path["indices"].iloc[-1] == [0, 0, 0]
        assert path["is_best"].tolist() == [True, False, False]


# --------------------------------------------------------------------------- predictions table


def _predictions_frame(members: Members, rng) -> pd.DataFrame:
    rows = []
    for split, (logits, y) in (("validation", members.split("validation")), ("test", members.split("test"))):
        fold = np.arange(y.shape[0]) % 3
        for mi, name in enumerate(members.names):
            run, cfg, seed = name.split("/")
            for n in range(y.shape[0]):
                rows.append((run, cfg, int(seed), int(fold[n]), split, f"u{n:04d}", CLASSES[y[n]],
                             CLASSES[int(logits[mi, n].argmax())], logits[mi, n].tolist()))  # fmt: skip
    df = pd.DataFrame(rows, columns=["run", "config_id", "seed", "fold", "split", "utt_id", "label", "pred", "logits"])
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_members_from_predictions_aligns_rows():
    src = make_members(m=4, seed=5)
    df = _predictions_frame(src, np.random.default_rng(0))
    got = members_from_predictions(df, CLASSES)
    assert got.names == sorted(src.names, key=lambda s: (s.split("/")[0], int(s.split("/")[2])))
    assert got.variant == [n.split("/")[0] for n in got.names]
    order = [src.names.index(n) for n in got.names]
    for split in ("validation", "test"):
        lg, y = got.split(split)
        src_lg, src_y = src.split(split)
        # pooled rows are ordered by (fold, utt_id); map them back to the source rows
        n = src_y.shape[0]
        key = sorted(range(n), key=lambda i: (str(i % 3), f"u{i:04d}"))
        np.testing.assert_array_equal(y, src_y[key])
        np.testing.assert_array_equal(lg, src_lg[order][:, key])
    # the search on the rebuilt members scores the same ensembles
    a = exhaustive_search(got, [2], top=3)
    b = exhaustive_search(src.select(order), [2], top=3)
    pd.testing.assert_frame_equal(a[["rank", "score", "test_ua"]], b[["rank", "score", "test_ua"]])


def test_members_from_predictions_rejects_bad_tables():
    src = make_members(m=3, seed=6)
    df = _predictions_frame(src, np.random.default_rng(1))
    victim = src.names[1]
    run, cfg, seed = victim.split("/")
    drop = df[(df.run == run) & (df.seed == int(seed)) & (df.split == "test")].index[:2]
    with pytest.raises(ValueError, match=f"member '{victim}' does not cover the same test rows"):
        members_from_predictions(df.drop(index=drop), CLASSES)
    with pytest.raises(ValueError, match="logits of length"):
        members_from_predictions(df, CLASSES + ["fear"])
    with pytest.raises(ValueError, match="not in classes"):
        members_from_predictions(df, ["neutral", "happy", "angry", "calm"])
    with pytest.raises(ValueError, match="lacks columns"):
        members_from_predictions(df.drop(columns=["fold"]), CLASSES)
    with pytest.raises(ValueError, match="duplicate rows"):
        members_from_predictions(pd.concat([df, df.iloc[:1]]), CLASSES)


def test_bad_search_arguments(members):
    with pytest.raises(ValueError, match="fusion"):
        exhaustive_search(members, [2], fusion="max")
    with pytest.raises(ValueError, match="outside"):
        exhaustive_search(members, [0, 11])
    with pytest.raises(ValueError, match="selection"):
        exhaustive_search(members, [2], selection="test")
    with pytest.raises(ValueError, match="top"):
        exhaustive_search(members, [2], top=0)
    with pytest.raises(ValueError, match="k_values is required"):
        run_ensemble_search(members, None)


# --------------------------------------------------------------------------- API + Ray


def test_run_ensemble_search_in_process_and_greedy(members, reference, tmp_path):
    res = run_ensemble_search(members, [2, 3], resources=Resources(parallel=False), top=10, selection="validation")
    assert_matches(res.leaderboard, reference["logits"], ks=(2, 3))
    assert res.note == VALIDATION_NOTE
    assert res.best_per_k["k"].tolist() == [2, 3]
    assert tuple(res.best_per_k["indices"].iloc[0]) == reference["logits"][2][0][1]
    res.save(tmp_path / "out")
    meta = pq.read_schema(tmp_path / "out" / "leaderboard.parquet").metadata
    assert meta[b"serray.note"].decode() == VALIDATION_NOTE
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["best"]["val_ua"] == pytest.approx(res.best["val_ua"])
    # what the selection saw is said, not overstated (issue 37, item 6)
    saved = meta[b"serray.note"].decode()
    assert "Not a nested estimate" in saved and "early stopping" in saved
    assert "held-out estimates" not in saved

    opt = run_ensemble_search(members, method="greedy", max_size=4, selection="test-optimistic")
    assert opt.note == OPTIMISTIC_WARNING
    assert opt.greedy_path is not None and len(opt.leaderboard) == 4
    assert (opt.leaderboard["selection"] == "test-optimistic").all()
    opt.save(tmp_path / "opt")
    assert (tmp_path / "opt" / "leaderboard.csv").read_text().startswith(f"# {OPTIMISTIC_WARNING}")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from serray.raycluster import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_distributed_search_equals_brute_force(members, reference, local_ray):
    ks = [3, 5]
    for fusion in ("logits", "vote"):
        board = distributed_search(members, ks, fusion=fusion, top=10, num_tasks=3, progress=False)
        assert_matches(board, reference[fusion], ks=ks)
        assert board.attrs["stats"]["tasks"] == 3 * len(ks)
        assert board.attrs["stats"]["subsets"] == sum(cb.n_choose_k(10, k) for k in ks)
    one_core = distributed_search(members, [3], num_tasks=4, resources=Resources(num_cpus=1), progress=False)
    assert one_core.attrs["stats"]["cores"] == 1
    assert_matches(one_core, reference["logits"], ks=[3])


# --------------------------------------------------------------------------- nested estimate


def _two_speaker_members():
    """Two folds (test speakers a and b); each fold validates on the other speaker. m0 is right
    on b and wrong on a, m1 the reverse, m2 right on half of each."""
    a = [f"a{i}" for i in range(4)]
    b = [f"b{i}" for i in range(4)]
    y = np.array([0, 1, 0, 1])
    right = np.eye(2)[y] * 2.0
    wrong = np.eye(2)[1 - y] * 2.0
    half = np.concatenate([right[:2], wrong[2:]])
    per_speaker = {"m0": {"a": wrong, "b": right}, "m1": {"a": right, "b": wrong}, "m2": {"a": half, "b": half}}
    # validation rows: fold 0 (test a) validates on b, fold 1 (test b) on a; test rows: a then b
    val = np.stack([np.concatenate([per_speaker[m]["b"], per_speaker[m]["a"]]) for m in per_speaker]).astype(np.float32)
    test = np.stack([np.concatenate([per_speaker[m]["a"], per_speaker[m]["b"]]) for m in per_speaker]).astype(np.float32)
    yy = np.concatenate([y, y])
    rows = {"validation": pd.DataFrame({"fold": [0] * 4 + [1] * 4, "utt_id": b + a}),
            "test": pd.DataFrame({"fold": [0] * 4 + [1] * 4, "utt_id": a + b})}
    return Members(list(per_speaker), ["r"] * 3, ["x", "y"], val, yy, test, yy, rows)


def test_nested_estimate_keeps_each_folds_test_speakers_out_of_its_selection():
    members = _two_speaker_members()
    plain = exhaustive_search(members, [1], top=1)
    # the plain search sees both speakers' validation rows: every single member scores 0.5 there
    assert plain["val_ua"].iloc[0] == pytest.approx(0.5)
    est = nested_estimate(members, [1])
    # fold 0 (test a) selects on b's rows only -> m0, which is wrong on a; fold 1 the mirror image
    assert est.per_fold["members"].tolist() == ["m0", "m1"]
    assert est.per_fold["n_validation"].tolist() == [4, 4]
    assert est.per_fold["inner_val_ua"].tolist() == [1.0, 1.0]
    assert est.test_ua == pytest.approx(0.0) and est.test_wa == pytest.approx(0.0)
    assert "Nested estimate" in est.note


def test_nested_estimate_needs_row_keys():
    members = _two_speaker_members()
    bare = Members(members.names, members.variant, members.classes, members.val_logits, members.y_val,
                   members.test_logits, members.y_test)
    with pytest.raises(ValueError, match="fold and utt_id"):
        nested_estimate(bare, [1])


def test_members_from_predictions_names_every_pooled_row():
    src = make_members(m=3, seed=2)
    got = members_from_predictions(_predictions_frame(src, np.random.default_rng(1)), CLASSES)
    for split in ("validation", "test"):
        n = src.split(split)[1].shape[0]
        key = sorted(range(n), key=lambda i: (str(i % 3), f"u{i:04d}"))
        assert got.rows[split]["utt_id"].tolist() == [f"u{i:04d}" for i in key]
        assert got.rows[split]["fold"].tolist() == [i % 3 for i in key]
    assert got.select([1, 0]).rows is got.rows
