"""Everything a run needs before training: manifest, label set, features, folds, labels.

:func:`prepare_experiment` is shared by ``serray train``, ``serray tune`` and
``serray seeds`` so that the three see the same utterances, classes and folds for the
same arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from serray.training.data import TrainingInputs, class_list, make_label_table, pack_features

__all__ = ["Experiment", "prepare_experiment", "feature_tag"]

log = logging.getLogger(__name__)


def feature_tag(features: str, params: Mapping[str, Any] | None = None, cache_key: str = "") -> str:
    """The feature set's name in run and experiment names: ``ssl``, or ``ssl-<hash>`` with parameters.

    With parameters, the hash covers the feature cache's key (which fingerprints the
    extraction parameters, e.g. the SSL model folder's files) and the load-time selection
    (the SSL ``layer``). Runs on another model, other weights or another layer thus get
    other names, so their predictions never mix, while equivalent spellings of the same
    parameters (a relative or absolute model path) share a name.

    Example:
        >>> feature_tag("egemaps")
        'egemaps'
        >>> feature_tag("ssl", {"layer": 6}, "k1") == feature_tag("ssl", {"layer": 6, "model": "./m"}, "k1")
        True
        >>> feature_tag("ssl", {"layer": 6}, "k1") != feature_tag("ssl", {"layer": 9}, "k1")
        True
    """
    if not params:
        return features
    from serray.features.cache import LOAD_PARAMS

    if cache_key:
        what = {"key": cache_key, "select": {k: params[k] for k in LOAD_PARAMS if k in params}}
    else:
        what = dict(params)
    blob = json.dumps(what, sort_keys=True, default=str)
    return f"{features}-{hashlib.sha1(blob.encode()).hexdigest()[:6]}"


@dataclass
class Experiment:
    """Prepared inputs of a run.

    Attributes:
        spec: The model's registry entry.
        features: Feature set name.
        feature_kind: ``vector``, ``sequence`` or ``segments``.
        manifest: Manifest after the label set, without utterances lacking features.
        classes: Class names in logit order.
        folds: Folds (leakage- and class-checked).
        inputs: Packed features and label table, row-aligned with ``manifest``.
        domain_column: Manifest column used as domain label (``None`` without).
        excluded: utt_ids left out for lack of features.
        feature_tag: The features' name in run names (:func:`feature_tag`).
    """

    spec: Any
    features: str
    feature_kind: str
    manifest: pd.DataFrame
    classes: list[str]
    folds: list
    inputs: TrainingInputs
    domain_column: str | None
    excluded: list[str]
    feature_tag: str = ""


def prepare_experiment(
    workdir: str | Path,
    model: str,
    *,
    features: str | None = None,
    protocol: str = "loso",
    labels: str = "native",
    config: Mapping[str, Any] | None = None,
    corpora: Sequence[str] | None = None,
    k: int = 5,
    fold_seed: int = 0,
    train_corpora: Sequence[str] | None = None,
    test_corpora: Sequence[str] | None = None,
    feature_params: Mapping[str, Any] | None = None,
    feature_set: Any | None = None,
) -> Experiment:
    """Load manifests, apply the label set, load features, make and check folds.

    Args:
        workdir: Work directory with manifests and the feature cache.
        model: Registered model name.
        features: Feature set (default: the model's first default).
        protocol, k, fold_seed, train_corpora, test_corpora: Fold construction
            (see :func:`serray.protocols.make_folds`).
        labels: Label set name.
        config: The model config (only ``domain`` is read here).
        corpora: Restrict to these manifests.
        feature_params: Extractor parameters for :func:`serray.features.load_features`.
        feature_set: An already loaded feature set (skips loading).

    Raises:
        ValueError: Feature kind not matching the model, nothing left to train on, or
            errors from the protocol, leakage guard and class check.
    """
    from serray.labels import apply_label_set
    from serray.manifest import load_manifests
    from serray.models import registry
    from serray.protocols import check_fold_classes, check_leakage, make_folds

    spec = registry.get(model)
    features = features or (spec.default_features[0] if spec.default_features else None)
    if not features:
        raise ValueError(f"model {model!r} has no default feature set; pass features=")
    manifest = apply_label_set(load_manifests(workdir, corpora), labels)
    if feature_set is None:
        from serray.features import load_features

        feature_set = load_features(workdir, features, manifest, params=feature_params)
    if feature_set.kind != spec.input_kind:
        raise ValueError(
            f"model {spec.name!r} takes {spec.input_kind} features but {features!r} is {feature_set.kind}; "
            f"use e.g. --features {spec.default_features[0]}"
        )
    have = set(map(str, feature_set.utt_ids))
    missing = [u for u in manifest["utt_id"] if u not in have]
    if missing:
        log.warning("%d utterance(s) have no %s features and are left out, e.g. %s", len(missing), features, missing[:3])
        manifest = manifest[manifest["utt_id"].isin(have)].reset_index(drop=True)
    if manifest.empty:
        raise ValueError(f"no utterance of the manifest has {features!r} features; run `serray features W --set {features}` first")
    classes = class_list(manifest["emotion"])
    folds = make_folds(manifest, protocol, k=k, seed=fold_seed, train_corpora=train_corpora, test_corpora=test_corpora)
    check_leakage(manifest, folds)
    check_fold_classes(manifest, folds, classes)
    cfg = dict(config or {})
    domain_column = cfg.get("domain", spec.domain_column) if spec.backend == "torch" else None
    table = make_label_table(manifest, classes, domain_column=domain_column)
    packed = pack_features(feature_set, manifest["utt_id"].tolist())
    tag = feature_tag(features, feature_params, getattr(feature_set, "key", ""))
    return Experiment(
        spec, features, feature_set.kind, manifest, classes, folds, TrainingInputs(packed, table), domain_column, missing, tag,
    )
