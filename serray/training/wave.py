"""Augmented copies in training: the config key ``wave_augment`` and the folds it changes.

``serray features W --set mfb --augment speed=0.9,1.1 --augment noise=5:20 --augment-copies 2``
extracts augmented copies of every utterance and prints their tag (``aug-1a2b3c4d``;
:mod:`serray.features.augment`). The training key ``wave_augment`` (every model, torch and
scikit-learn; default ``none``) names the tags whose copies a config trains on: ``none``,
one tag, or several joined by ``+``. It is a hyperparameter like any other: it changes
the config id (so the run name), goes into the run record with the spec of each tag, and
a search space may search it (``wave_augment: {type: choice, values: [none, aug-...]}``).

What enters a fold (:func:`augmented_fold`): the copies of the fold's *training*
utterances, appended to its training part; never a copy of a validation or test
utterance. The guard :func:`serray.protocols.check_copies` refuses a fold where a copy
is outside training, comes from an utterance outside training, or carries a test
speaker. A refit on training + validation (``refit``) adds no copies of validation
utterances. A config without the key (or ``none``) assembles exactly the folds it did
before copies existed, with the same numbers.

Loading (:func:`add_copies`, called by :func:`serray.training.experiment.prepare_experiment`
with the tags of every config the run can train, e.g. a search space's choices): the
copies' features are appended after the run's utterances in the packed inputs, and the
label table gets their rows (labels and speaker of their source) and
:attr:`~serray.training.label_table.LabelTable.copy_of`. The run's manifest, folds and
leakage check stay those of the corpus utterances.

Example:
    >>> wave_tags("none"), wave_tags("aug-1a2b3c4d+aug-00ff00ff")
    ((), ('aug-1a2b3c4d', 'aug-00ff00ff'))
    >>> wave_tags("speed")
    Traceback (most recent call last):
    ...
    ValueError: wave_augment must be none or augmentation tags joined by '+' (aug- and 8 hex digits, printed by `serray features W --set SET --augment ...`), got 'speed'
"""

from __future__ import annotations

import dataclasses
import logging
import re
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["WAVE_AUGMENT_KEY", "wave_tags", "config_tags", "space_tags", "add_copies", "augmented_fold", "copy_tags"]

log = logging.getLogger(__name__)

#: The training key naming the augmentation tags a config trains on.
WAVE_AUGMENT_KEY = "wave_augment"
_TAG = re.compile(r"aug-[0-9a-f]{8}")


def wave_tags(value: Any) -> tuple[str, ...]:
    """The tags of a ``wave_augment`` value (``none``/empty: none), in order, each once.

    Raises:
        ValueError: A value that is not ``none`` or ``+``-joined tags.
    """
    text = "" if value is None else str(value).strip()
    if text in ("", "none"):
        return ()
    tags = tuple(dict.fromkeys(t.strip() for t in text.split("+")))
    if not all(_TAG.fullmatch(t) for t in tags):
        raise ValueError(f"{WAVE_AUGMENT_KEY} must be none or augmentation tags joined by '+' (aug- and 8 hex digits, "
                         f"printed by `serray features W --set SET --augment ...`), got {value!r}")
    return tags


def config_tags(configs: Iterable[Mapping[str, Any] | None]) -> tuple[str, ...]:
    """Every tag the ``wave_augment`` keys of ``configs`` name (checked), each once."""
    out: dict[str, None] = {}
    for cfg in configs:
        out.update(dict.fromkeys(wave_tags((cfg or {}).get(WAVE_AUGMENT_KEY))))
    return tuple(out)


def space_tags(space: Any) -> tuple[str, ...]:
    """Every tag a search space's ``wave_augment`` parameter can take (its choices or its fixed value)."""
    params = list(getattr(space, "params", ())) + [p for _, ps in getattr(space, "conditional", ()) for p in ps]
    values = []
    for p in params:
        if p.name == WAVE_AUGMENT_KEY:
            values += list(p.values) if p.type == "choice" else [p.value]
    return config_tags({WAVE_AUGMENT_KEY: v} for v in values)


def copy_tags(utt_ids: Iterable[str]) -> np.ndarray:
    """The tag of every copy id ``<utt>@<tag>.<i>`` (``None`` for other ids)."""
    out = []
    for u in utt_ids:
        tail = str(u).rsplit("@", 1)[-1] if "@" in str(u) else ""
        tag = tail.rsplit(".", 1)[0]
        out.append(tag if _TAG.fullmatch(tag) else None)
    return np.asarray(out, dtype=object)


# ---------------------------------------------------------------------- loading


def _load_tag(run: Any, name: str, manifest: pd.DataFrame, tag: str, extract: bool, address: str | None) -> tuple[Any, pd.DataFrame]:
    """Copies of ``tag`` of set ``name``; with ``extract``, the missing ones are extracted first."""
    from serray.features.copies import load_copies

    fs, table = load_copies(run.workdir, name, manifest, tag, run.params_for(name))
    if fs.missing and extract:
        from serray.features import extract_features
        from serray.features.augment import augment_from_spec, read_spec

        aug = augment_from_spec(read_spec(run.workdir, tag)["spec"])
        if aug.tag != tag:
            raise ValueError(f"{WAVE_AUGMENT_KEY}={tag}: its noise folder changed since the copies were extracted "
                             f"(now {aug.tag}); extract again with `serray features {run.workdir} --set {name} {aug.cli()}`")
        todo = manifest[manifest["utt_id"].isin(set(table.loc[table["utt_id"].isin(set(fs.missing)), "source"]))]
        log.info("%s: extracting %d missing copies of %s", name, len(fs.missing), tag)
        extract_features(run.workdir, [name], todo, params={name: run.params_for(name) or {}}, address=address,
                         progress=False, augment=aug)
        fs, table = load_copies(run.workdir, name, manifest, tag, run.params_for(name))
    return fs, table


def _concat_packed(a: Any, b: Any) -> Any:
    """Two packed feature arrays one after the other."""
    from serray.training.packing import PackedFeatures

    data = np.concatenate([a.data, b.data])
    offsets = None if a.offsets is None else np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]).astype(np.int64)
    return PackedFeatures(a.kind, np.ascontiguousarray(data), offsets, a.layers)


def add_copies(
    run: Any, sets: Mapping[str, str], manifest: pd.DataFrame, packed: Mapping[str, Any], classes: Any,
    aux: Mapping[str, str], tags: Iterable[str], *, extract: bool = True, address: str | None = None,
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The run's inputs with the copies of ``tags`` of ``manifest``'s utterances appended.

    Returns:
        ``(role -> packed features, label table, record)``; the record maps each tag to
        its spec, its ``serray features`` options and how many copies were loaded.

    Raises:
        FeaturesNotExtractedError: A tag never extracted in the work directory.
        ValueError: A tag with no copy of any utterance for some feature set.
    """
    from serray.features.augment import read_spec
    from serray.training.data import make_label_table, pack_features

    packed, rows, record = dict(packed), [], {}
    for tag in tags:
        loaded = {role: _load_tag(run, name, manifest, tag, extract, address) for role, name in sets.items()}
        have = set.intersection(*(set(fs.utt_ids) for fs, _ in loaded.values()))
        table = next(iter(loaded.values()))[1]
        table = table[table["utt_id"].isin(have)]
        if table.empty:
            raise ValueError(f"{WAVE_AUGMENT_KEY}={tag}: no utterance of this run has copies for {'+'.join(sets.values())}; "
                             f"extract them: `serray features {run.workdir} --set {','.join(sets.values())} {read_spec(run.workdir, tag)['cli']}`")
        ids = table["utt_id"].tolist()
        for role, (fs, _) in loaded.items():
            packed[role] = _concat_packed(packed[role], pack_features(fs, ids))
        rows.append(table[["utt_id", "source"]])
        record[tag] = {**{k: v for k, v in read_spec(run.workdir, tag).items() if k != "tag"}, "n_copies": len(ids)}
    copies = pd.concat(rows, ignore_index=True)
    extra = manifest.set_index("utt_id").loc[copies["source"]].reset_index()
    extra["utt_id"] = copies["utt_id"].to_numpy()
    table = make_label_table(pd.concat([manifest, extra], ignore_index=True), classes, aux_columns=aux)
    copy_of = np.asarray([None] * len(manifest) + copies["source"].tolist(), dtype=object)
    return packed, dataclasses.replace(table, copy_of=copy_of), record


# ---------------------------------------------------------------------- folds


def _with_train(fold: Any, train: np.ndarray) -> Any:
    """``fold`` with another training part (a dataclass copy, else a namespace)."""
    if dataclasses.is_dataclass(fold):
        return dataclasses.replace(fold, train=train)
    return SimpleNamespace(index=fold.index, name=fold.name, train=train, validation=fold.validation, test=fold.test,
                           validation_mode=getattr(fold, "validation_mode", "speaker"))


def augmented_fold(fold: Any, table: Any, config: Mapping[str, Any]) -> Any:
    """``fold`` with the copies (of the config's ``wave_augment`` tags) of its training
    utterances appended to its training part; ``fold`` itself without tags (checked by
    :func:`serray.protocols.check_copies`).

    Raises:
        ValueError: Tags whose copies the run did not load (the run was prepared for
            other configs).
        serray.protocols.LeakageError: A copy outside training or of a non-training utterance.
    """
    from serray.protocols import check_copies

    tags = wave_tags(config.get(WAVE_AUGMENT_KEY))
    if not tags:
        return fold
    copy_of = getattr(table, "copy_of", None)
    ids = np.asarray(table.utt_ids, dtype=object)
    row_tags = copy_tags(ids) if copy_of is not None else np.full(len(ids), None, dtype=object)
    absent = [t for t in tags if not (row_tags == t).any()]
    if absent:
        raise ValueError(f"{WAVE_AUGMENT_KEY}: the run's inputs hold no copies of {absent}; they are loaded for the "
                         "configs the run was prepared with (train: its config; tune: the search space's values)")
    train = np.asarray(fold.train, dtype=object)
    sources = pd.Series(copy_of, dtype=object).fillna("")
    mask = pd.Index(row_tags).isin(list(tags)) & sources.isin(set(train)).to_numpy()
    out = _with_train(fold, np.concatenate([train, ids[mask]]))
    check_copies(out, ids, copy_of, table.speaker)
    return out
