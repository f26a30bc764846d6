"""Nested estimate of a validation-selected ensemble: every outer fold's selection without
its own test speakers.

A plain ensemble search chooses one subset on the pooled validation rows of all folds; under
LOSO or k-fold those rows include utterances of every speaker (a fold's validation speakers
are other folds' test speakers), so the chosen subset's test UA is not a held-out estimate of
"search, then apply". The nested estimate repeats the search once per outer fold ``f``,
scoring subsets only on the validation rows whose utterances are not in fold ``f``'s test
part (with speaker-independent folds: none of ``f``'s test speakers), applies the subset that
wins there to fold ``f``'s test rows, and pools those predictions over folds. It is what the
whole procedure (search included) would score on speakers it never saw.

What it does not remove: members were trained with the usual folds, so fold ``g``'s member
model (used for other speakers' validation rows) was trained on fold ``f``'s speakers; only
the selection step is nested. A protocol with one fold (cross-corpus) gives the plain
search's figure, since its validation rows never held the test corpus.

Example:
    >>> import numpy as np, pandas as pd
    >>> from serray.ensemble import Members
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 40)
    >>> lg = rng.normal(size=(4, 40, 2)).astype("float32")
    >>> rows = pd.DataFrame({"fold": np.repeat([0, 1], 20), "utt_id": [f"u{i}" for i in range(40)]})
    >>> m = Members.from_arrays(lg, y, lg, y, classes=["neg", "pos"])
    >>> m = Members(m.names, m.variant, m.classes, lg, y, lg, y, {"validation": rows, "test": rows})
    >>> est = nested_estimate(m, [1, 2])
    >>> est.per_fold["fold"].tolist(), 0.0 <= est.test_ua <= 1.0
    ([0, 1], True)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable

import numpy as np
import pandas as pd

from serray import metrics
from serray.ensemble.search import Members, exhaustive_search, fused_predictions

__all__ = ["NESTED_NOTE", "NestedEstimate", "nested_estimate"]

log = logging.getLogger(__name__)

#: Note carried by every nested figure.
NESTED_NOTE = (
    "Nested estimate: for each outer fold the subset was chosen on validation rows without that "
    "fold's test utterances (its speakers), then applied to that fold's test rows; pooled over folds. "
    "Members themselves were trained on the usual folds."
)


@dataclasses.dataclass(frozen=True)
class NestedEstimate:
    """Outcome of :func:`nested_estimate`.

    Attributes:
        per_fold: One row per outer fold: ``fold, n_validation, n_test, k, members,
            inner_val_ua`` (the winning subset's UA on that fold's selection rows) and
            ``test_ua`` (that subset on the fold's test rows alone).
        test_ua: UA of the pooled outer-fold predictions.
        test_wa: WA of the same.
        note: :data:`NESTED_NOTE`.
    """

    per_fold: pd.DataFrame
    test_ua: float
    test_wa: float
    note: str = NESTED_NOTE


def _best_row(board: pd.DataFrame) -> pd.Series:
    """Highest score, then smaller k, then lower rank (the order of ``EnsembleResult.best``)."""
    order = np.lexsort((board["rank"].to_numpy(), board["k"].to_numpy(), -board["score"].to_numpy()))
    return board.iloc[int(order[0])]


def _outer_fold(members: Members, fold: str, k_values: list[int], fusion: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """Select on the rows without ``fold``'s test utterances; predict ``fold``'s test rows."""
    val_rows, test_rows = members.rows["validation"], members.rows["test"]
    tmask = test_rows["fold"].astype(str).to_numpy() == fold
    held = set(test_rows["utt_id"].astype(str).to_numpy()[tmask])
    vmask = ~val_rows["utt_id"].astype(str).isin(held).to_numpy()
    if not vmask.any():
        raise ValueError(f"fold {fold}: every validation row belongs to this fold's test part; nothing to select on")
    sub = Members(members.names, members.variant, members.classes, members.val_logits[:, vmask],
                  members.y_val[vmask], members.test_logits[:, tmask], members.y_test[tmask])
    ks = [k for k in k_values if k <= sub.n_members]
    best = _best_row(exhaustive_search(sub, ks, fusion=fusion, selection="validation", top=1, backend="numpy"))
    pred = fused_predictions(sub, list(best["indices"]), "test", fusion)
    row = {"fold": fold, "n_validation": int(vmask.sum()), "n_test": int(tmask.sum()), "k": int(best["k"]),
           "members": " ".join(best["members"]), "inner_val_ua": float(best["val_ua"]), "test_ua": float(best["test_ua"])}
    return row, sub.y_test, pred


def nested_estimate(members: Members, k_values: Iterable[int], fusion: str = "logits") -> NestedEstimate:
    """Nested (outer-fold) test UA/WA of an exhaustive validation-selected ensemble search.

    Args:
        members: Members with ``rows`` (as :func:`members_from_predictions` builds them).
        k_values: Subset sizes searched in every outer fold.
        fusion: ``"logits"``, ``"prob"`` or ``"vote"``.

    Returns:
        :class:`NestedEstimate`.

    Raises:
        ValueError: Members without row keys, or a fold whose removal leaves no validation rows.
    """
    if members.rows is None:
        raise ValueError("a nested estimate needs each row's fold and utt_id: build the members with "
                         "members_from_predictions")
    ks = sorted({int(k) for k in k_values})
    folds = sorted(members.rows["test"]["fold"].astype(str).unique(), key=lambda f: (len(f), f))
    rows, ys, preds = [], [], []
    for i, fold in enumerate(folds, start=1):
        row, y, pred = _outer_fold(members, fold, ks, fusion)
        log.info("nested ensemble: outer fold %s (%d/%d): k=%d, test UA %.3f", fold, i, len(folds), row["k"], row["test_ua"])
        rows.append(row)
        ys.append(y)
        preds.append(pred)
    y_all, p_all = np.concatenate(ys), np.concatenate(preds)
    labels = list(range(members.n_classes))
    per_fold = pd.DataFrame(rows)
    per_fold["fold"] = [int(f) if f.lstrip("-").isdigit() else f for f in per_fold["fold"]]
    return NestedEstimate(per_fold, float(metrics.unweighted_average_recall(y_all, p_all, labels)),
                          float(metrics.weighted_accuracy(y_all, p_all)))
