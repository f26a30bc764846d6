"""The label table of a run: emotion class indices and auxiliary labels, row-aligned with its features."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["LabelTable", "make_label_table", "aux_values", "class_list"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelTable:
    """Per-utterance labels aligned with the packed features of a run.

    Attributes:
        utt_ids: Utterance ids ``[N]``.
        y: Class index per utterance ``[N]`` (into :attr:`classes`).
        speaker: Speaker per utterance ``[N]`` (used by speaker normalisation).
        classes: Class names in logit order.
        aux: Auxiliary-label role -> class index per utterance ``[N]`` (-1: unknown).
        aux_names: Role -> class names in index order.
        aux_columns: Role -> the manifest column (or ``a*b`` derivation) it came from.
        groups: Extra per-utterance grouping columns reported as per-group UA
            (``gender``, ``corpus`` when present).
        copy_of: Per row, the source utterance of an augmented copy (config key
            ``wave_augment``, :mod:`serray.training.wave`) and ``None`` for an utterance
            of the manifest; ``None`` when the table holds no copies.
    """

    utt_ids: np.ndarray
    y: np.ndarray
    speaker: np.ndarray
    classes: tuple[str, ...]
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    aux_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aux_columns: dict[str, str] = field(default_factory=dict)
    groups: dict[str, np.ndarray] | None = None
    copy_of: np.ndarray | None = None

    @property
    def domain(self) -> np.ndarray | None:
        """Class indices of the ``domain`` role (``None`` without one)."""
        return self.aux.get("domain")

    @property
    def domains(self) -> tuple[str, ...]:
        """Class names of the ``domain`` role (empty without one)."""
        return self.aux_names.get("domain", ())

    def index_of(self, utt_ids: Iterable[str], what: str = "fold") -> np.ndarray:
        """Positions of ``utt_ids`` in this table.

        Raises:
            ValueError: An id that is not in the table (e.g. one without features).
        """
        ids = np.asarray(list(utt_ids), dtype=object)
        pos = pd.Index(self.utt_ids).get_indexer(ids)
        if (pos < 0).any():
            bad = ids[pos < 0][:3].tolist()
            raise ValueError(f"{what} names {int((pos < 0).sum())} utterance(s) without features/labels, e.g. {bad}")
        return pos.astype(np.int64)


def class_list(labels: Iterable[str]) -> list[str]:
    """Classes present in ``labels`` in :data:`serray.labels.LABEL_ORDER` (canonical, extra,
    valence bins), then any others, sorted."""
    from serray.labels import LABEL_ORDER

    present = set(labels)
    order = [c for c in LABEL_ORDER if c in present]
    return order + sorted(present - set(order))


def aux_values(manifest: pd.DataFrame, column: str) -> pd.Series:
    """Values of a manifest column, or of a derived ``a*b`` column (joined by ``x``), as strings.

    Unknown values (missing, empty, or ``unknown``) are ``None``; a derived value is
    unknown when any part is.

    Raises:
        ValueError: A column that is not in the manifest, naming the columns there.

    Example:
        >>> m = pd.DataFrame({"gender": ["f", "m", None], "corpus": ["emodb", "emovo", "emodb"]})
        >>> aux_values(m, "gender*corpus").tolist()
        ['fxemodb', 'mxemovo', None]
    """
    from serray.models.contract import derived_column_parts

    parts = derived_column_parts(column)
    missing = [c for c in parts if c not in manifest.columns]
    if not parts or missing:
        raise ValueError(
            f"label column {column!r}: {missing or column!r} not in the manifest (columns: {list(manifest.columns)}); "
            "name an existing column or a derived one like gender*corpus"
        )
    known = pd.Series(True, index=manifest.index)
    values = None
    for c in parts:
        col = manifest[c]
        text = col.astype(str)
        known &= col.notna() & ~text.str.strip().str.lower().isin(["", "unknown", "nan", "none"])
        values = text if values is None else values + "x" + text
    return values.astype(object).where(known, None)


def make_label_table(
    manifest: pd.DataFrame,
    classes: Sequence[str] | None = None,
    domain_column: str | None = None,
    group_columns: Sequence[str] = ("gender", "corpus"),
    aux_columns: Mapping[str, str] | None = None,
) -> LabelTable:
    """Integer labels (and auxiliary labels) for the rows of ``manifest``, in its order.

    Args:
        manifest: Manifest rows (``utt_id``, ``speaker``, ``emotion`` at least).
        classes: Class order; default :func:`class_list` of the emotions.
        domain_column: Shorthand for ``aux_columns={"domain": domain_column}``.
        group_columns: Columns kept for per-group UA when present.
        aux_columns: Auxiliary-label role -> manifest column (or ``a*b``); unknown
            values get index -1 (masked out of that loss).

    Raises:
        ValueError: A missing label column, or emotions outside ``classes``.
    """
    classes = tuple(classes) if classes is not None else tuple(class_list(manifest["emotion"]))
    lut = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(manifest["emotion"]) - set(lut))
    if unknown:
        raise ValueError(f"emotions {unknown} are not in the class list {list(classes)}")
    y = manifest["emotion"].map(lut).to_numpy(dtype=np.int64)
    columns = dict(aux_columns or {})
    if domain_column is not None:
        columns.setdefault("domain", domain_column)
    aux, names = {}, {}
    for role, column in columns.items():
        values = aux_values(manifest, column)
        names[role] = tuple(sorted(values.dropna().unique()))
        codes = {d: i for i, d in enumerate(names[role])}
        aux[role] = values.map(codes).fillna(-1).to_numpy(dtype=np.int64)
        n_unknown = int((aux[role] < 0).sum())
        if n_unknown:
            log.info("label %r (column %s) is unknown for %d of %d utterances; they are left out of its loss",
                     role, column, n_unknown, len(values))
    groups = {c: manifest[c].astype(str).to_numpy() for c in group_columns if c in manifest.columns}
    return LabelTable(
        utt_ids=manifest["utt_id"].astype(str).to_numpy(dtype=object),
        y=y,
        speaker=manifest["speaker"].astype(str).to_numpy(dtype=object),
        classes=classes,
        aux=aux,
        aux_names=names,
        aux_columns=columns,
        groups=groups,
    )
