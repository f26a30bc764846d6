"""Greedy forward ensemble selection with replacement (Caruana et al., ICML 2004).

Start from the empty ensemble and repeatedly add the member (already chosen members
may be added again) whose addition gives the highest selection UA; stop after
``max_size`` additions. The ensemble returned as best is the step with the highest
selection UA along the path (the earliest such step on ties). Adding a member twice
doubles its weight in the fusion.

Selection uses pooled validation UA unless ``selection="test-optimistic"``; then the
result carries :data:`serray.ensemble.search.OPTIMISTIC_WARNING`.

Example:
    >>> import numpy as np
    >>> from serray.ensemble.search import Members
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 80)
    >>> lg = rng.normal(size=(4, 80, 3)).astype("float32")
    >>> lg[:, np.arange(80), y] += 1.0
    >>> path = greedy_selection(Members.from_arrays(lg, y, lg, y, ["a", "b", "c"]), max_size=3)
    >>> path["k"].tolist()
    [1, 2, 3]
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from serray.ensemble.fusion import FUSIONS, _softmax64, evaluate_subset
from serray.ensemble.members import Members, _check_choice
from serray.ensemble.search import selection_note, selection_split
from serray.metrics import batched_ua

__all__ = ["greedy_selection"]

log = logging.getLogger(__name__)


def _candidate_predictions(
    values: np.ndarray, votes: np.ndarray | None, cur_values: np.ndarray, cur_votes: np.ndarray | None
) -> np.ndarray:
    """Predictions ``[M, N]`` of the current ensemble plus each member in turn."""
    cand = cur_values[None] + values  # [M, N, C]
    if votes is None:
        return cand.argmax(axis=-1)
    cv = cur_votes[None] + votes
    best = cv.max(axis=-1, keepdims=True)
    return np.where(cv == best, cand, -np.inf).argmax(axis=-1)


def greedy_selection(
    members: Members,
    max_size: int | None = None,
    fusion: str = "logits",
    selection: str = "validation",
) -> pd.DataFrame:
    """Caruana-style forward selection with replacement.

    Args:
        members: Ensemble members.
        max_size: Number of additions (ensemble size at the last step, counting
            repeats); default the number of members.
        fusion: ``"logits"``, ``"prob"`` or ``"vote"`` (weights = multiplicities).
        selection: ``"validation"`` or ``"test-optimistic"``.

    Returns:
        The path, one row per step: ``step, k`` (ensemble size), ``added`` (member
        name), ``added_index``, ``indices`` (sorted, with repeats), ``members``,
        ``composition``, ``score`` (selection UA), ``val_ua, val_wa, test_ua, test_wa``,
        ``is_best``, ``fusion``, ``selection``. ``attrs["note"]`` holds the selection
        note and ``attrs["best_step"]`` the chosen step. Ties between candidates go to
        the lowest member index.
    """
    _check_choice("fusion", fusion, FUSIONS)
    split = selection_split(selection)
    if max_size is None:
        max_size = members.n_members
    if int(max_size) < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    logits, y = members.split(split)
    values = _softmax64(logits) if fusion == "prob" else logits.astype(np.float64)
    votes = None
    if fusion == "vote":
        votes = np.zeros(logits.shape, dtype=np.int64)
        np.put_along_axis(votes, logits.argmax(axis=-1)[..., None], 1, axis=-1)
    cur_values = np.zeros(values.shape[1:], dtype=np.float64)
    cur_votes = np.zeros(values.shape[1:], dtype=np.int64) if votes is not None else None
    chosen: list[int] = []
    rows = []
    for step in range(1, int(max_size) + 1):
        preds = _candidate_predictions(values, votes, cur_values, cur_votes)
        scores = batched_ua(y, preds, members.n_classes)
        pick = int(np.argmax(scores))  # first maximum: lowest member index on ties
        chosen.append(pick)
        cur_values = cur_values + values[pick]
        if votes is not None:
            cur_votes = cur_votes + votes[pick]
        rows.append(_step_row(members, step, pick, sorted(chosen), float(scores[pick]), fusion, selection))
        log.debug("greedy step %d: +%s -> %.4f", step, members.names[pick], scores[pick])
    df = pd.DataFrame(rows)
    best = int(df["score"].to_numpy().argmax())
    df["is_best"] = np.arange(len(df)) == best
    df.attrs["note"] = selection_note(selection)
    df.attrs["best_step"] = int(df["step"].iloc[best])
    df.attrs["selection"] = selection
    df.attrs["fusion"] = fusion
    return df


def _step_row(
    members: Members, step: int, pick: int, idx: list[int], score: float, fusion: str, selection: str
) -> dict[str, Any]:
    """One row of :func:`greedy_selection`'s path: the ensemble ``idx`` after adding member ``pick``."""
    comp = Counter(members.variant[i] for i in idx)
    return {
        "step": step,
        "k": len(idx),
        "added": members.names[pick],
        "added_index": pick,
        "indices": idx,
        "members": [members.names[i] for i in idx],
        "composition": ", ".join(f"{v} x{n}" for v, n in sorted(comp.items())),
        "score": score,
        **evaluate_subset(members, idx, fusion),
        "fusion": fusion,
        "selection": selection,
    }
