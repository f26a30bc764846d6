"""Everything a run needs before training: manifest, label set, features, folds, labels.

:func:`prepare_experiment` is shared by ``serray train``, ``serray tune`` and
``serray seeds`` so that the three see the same utterances, classes and folds for the
same arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from serray.training.data import TrainingInputs, class_list, make_label_table, pack_features
from serray.training.wave import WAVE_AUGMENT_KEY, add_copies, config_tags
from serray.training.resources import Resources

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
        features: Input role -> feature set name.
        feature_kinds: Input role -> ``vector``, ``sequence`` or ``segments``.
        manifest: Manifest after the label set, without utterances lacking features.
        classes: Class names in logit order.
        folds: Folds (leakage- and class-checked).
        inputs: Packed features per role and the label table, row-aligned with ``manifest``.
        aux_columns: Auxiliary-label role -> manifest column.
        excluded: utt_ids left out for lack of features.
        feature_tag: The features' name in run names (:func:`feature_tag` per set, ``+``-joined).
        wave_augment: Augmentation tag -> its spec, options and copies loaded, for the tags
            whose copies ``inputs`` holds after the run's utterances (:mod:`serray.training.wave`).
    """

    spec: Any
    features: dict[str, str]
    feature_kinds: dict[str, str]
    manifest: pd.DataFrame
    classes: list[str]
    folds: list
    inputs: TrainingInputs
    aux_columns: dict[str, str]
    excluded: list[str]
    feature_tag: str = ""
    wave_augment: dict = field(default_factory=dict)

    @property
    def feature_kind(self) -> str:
        """Kind of the primary input."""
        return next(iter(self.feature_kinds.values()))

    @property
    def domain_column(self) -> str | None:
        """Column of the ``domain`` role (``None`` without one)."""
        return self.aux_columns.get("domain")


def _extract(run: Any, name: str, manifest: pd.DataFrame, resources: Resources | None) -> int:
    """Extract set ``name`` for the utterances of ``manifest`` not yet in the cache; files extracted.

    (``extract_features`` drops the load-time parameters, e.g. the SSL ``layer``, itself.)
    """
    from serray.features import extract_features

    params = {name: run.params_for(name) or {}}
    address = resources.address if resources is not None else None
    return int(extract_features(run.workdir, [name], manifest, params=params, address=address)[name].n_extracted)


def _load_one(run: Any, name: str, manifest: pd.DataFrame, extract: bool, resources: Resources | None) -> Any:
    """Load one feature set; with ``extract``, first extract what the cache lacks (on the pool)."""
    from serray.features import load_features
    from serray.features.cache import FeaturesNotExtractedError

    def load() -> Any:
        return load_features(run.workdir, name, manifest, params=run.params_for(name))

    try:
        fs = load()
    except FeaturesNotExtractedError:
        if not extract:
            raise
        log.info("feature set %r is not extracted in %s yet: extracting it now", name, run.workdir)
        _extract(run, name, manifest, resources)
        return load()
    todo = getattr(fs, "not_extracted", None)
    if extract and todo:  # e.g. a corpus prepared after the last extraction
        log.info("feature set %r: %d utterance(s) not extracted yet: extracting them now", name, len(todo))
        if _extract(run, name, manifest[manifest["utt_id"].isin(set(todo))], resources):
            fs = load()
    return fs


def _load_sets(
    run: Any, spec: Any, sets: Mapping[str, str], manifest: pd.DataFrame, given: Mapping[str, Any] | None,
    extract: bool = True, resources: Resources | None = None,
) -> dict[str, Any]:
    """Role -> loaded feature set of ``sets`` (role -> set name), kinds checked against the model's inputs."""
    loaded: dict[str, Any] = {}
    for role, name in sets.items():
        fs = given[role] if given and role in given else _load_one(run, name, manifest, extract, resources)
        inp = spec.input_spec(role)
        if not inp.accepts(fs.kind):
            want = " or ".join(inp.kinds)
            hint = inp.default_features[0] if inp.default_features else f"a {want} set"
            where = f" (input {role!r})" if len(sets) > 1 else ""
            raise ValueError(f"model {spec.name!r} takes {want} features{where} but {name!r} is {fs.kind}; use e.g. --features {hint}")
        loaded[role] = fs
    return loaded


#: A segments input whose frames are more padding than this share gets a warning.
MAX_SEGMENT_PADDING = 0.2


def _warn_segment_padding(name: str, fs: Any, manifest: pd.DataFrame) -> float:
    """Warn when much of a segments set is zero padding (segments long for the corpus); the share."""
    from serray.features.spectral import segment_padding

    share = segment_padding(fs.data)
    if share > MAX_SEGMENT_PADDING:
        seg = fs.params.get("segment_s", "?")
        median = float(manifest["duration_s"].median()) if "duration_s" in manifest else float("nan")
        log.warning(
            "%s: %.0f %% of the segment frames are zero padding (segment %s s, median utterance %.1f s); a shorter "
            "segment wastes less of the input: `serray features W --set %s --param %s.segment_s=S`, then "
            "--feature-param segment_s=S (README, ADARL: on EmoDB's 2 s files, 2 s segments raised ADARL's UA)",
            name, 100 * share, seg, median, name, name,
        )
    return share


#: Speakers with fewer utterances than this get a warning under speaker normalisation.
MIN_SPEAKER_UTTERANCES = 20


def _warn_speaker_normalisation(manifest: pd.DataFrame) -> list[str]:
    """Say that speaker normalisation is transductive; warn about speakers it harms; their names."""
    from serray.training.spec import TRANSDUCTIVE_SPEAKER_NORM

    log.info("%s", TRANSDUCTIVE_SPEAKER_NORM)
    per = manifest.groupby("speaker")["emotion"].agg(["size", "nunique"])
    bad = per[(per["size"] < MIN_SPEAKER_UTTERANCES) | (per["nunique"] < 2)]
    if len(bad):
        shown = ", ".join(f"{spk} ({n} utterance(s), {e} emotion(s))" for spk, (n, e) in bad.head(10).iterrows())
        log.warning(
            "normalize=speaker: %d of %d speakers have fewer than %d utterances or a single emotion, where "
            "per-speaker statistics remove the emotion itself: %s%s; consider --normalize global",
            len(bad), len(per), MIN_SPEAKER_UTTERANCES, shown, " ..." if len(bad) > 10 else "",
        )
    return [str(s) for s in bad.index]


def prepare_experiment(
    run: Any, config: Mapping[str, Any] | None = None, feature_sets: Mapping[str, Any] | None = None,
    *, extract: bool = True, resources: Resources | None = None, wave_augment: Sequence[str] = (),
) -> Experiment:
    """Load manifests, apply the label set, load every input's features, make and check folds.

    Args:
        run: The :class:`~serray.training.spec.RunSpec`.
        config: The resolved model config (its auxiliary-label keys, e.g. ``domain``, are read).
        feature_sets: Role -> already loaded feature set (skips loading those roles).
        extract: Extract a feature set the cache lacks, or its utterances never
            extracted (on the Ray feature pool, with progress; files recorded as failing
            are not retried), instead of failing.
        resources: Where the extraction runs: its ``address`` is the Ray cluster the
            feature pool joins (default a local Ray).
        wave_augment: Augmentation tags whose copies are loaded besides those of
            ``config``'s ``wave_augment`` (e.g. a search space's choices): the copies
            follow the run's utterances in ``inputs`` (:func:`serray.training.wave.add_copies`).

    Raises:
        ValueError: Feature kind not matching the model, nothing left to train on, or
            errors from the protocol, leakage guard and class check.
    """
    from serray.labels import apply_label_set
    from serray.manifest import load_manifests
    from serray.protocols import SPEAKER_DEPENDENT_PROTOCOL, check_fold_classes, check_leakage, make_folds

    spec = run.model_spec()
    sets = run.feature_sets()
    manifest = apply_label_set(load_manifests(run.workdir, run.corpora), run.labels)
    loaded = _load_sets(run, spec, sets, manifest, feature_sets, extract, resources)
    have = set(manifest["utt_id"])
    for fs in loaded.values():
        have &= set(map(str, fs.utt_ids))
    missing = [u for u in manifest["utt_id"] if u not in have]
    names = "+".join(sets.values())
    if missing:
        log.warning("%d utterance(s) have no %s features and are left out, e.g. %s", len(missing), names, missing[:3])
        manifest = manifest[manifest["utt_id"].isin(have)].reset_index(drop=True)
    if manifest.empty:
        raise ValueError(f"no utterance of the manifest has {names!r} features; run `serray features W --set {names.replace('+', ',')}` first")
    for role, fs in loaded.items():
        if fs.kind == "segments":
            _warn_segment_padding(sets[role], fs, manifest)
    if run.normalize == "speaker":
        _warn_speaker_normalisation(manifest)
    classes = class_list(manifest["emotion"])
    folds = make_folds(manifest, run.protocol, k=run.k, seed=run.fold_seed, validation=run.validation,
                       train_corpora=run.train_corpora, test_corpora=run.test_corpora)
    check_leakage(manifest, folds, allow_speaker_dependent=run.protocol == SPEAKER_DEPENDENT_PROTOCOL)
    check_fold_classes(manifest, folds, classes)
    aux = spec.aux_columns(dict(config or {}))
    table = make_label_table(manifest, classes, aux_columns=aux)
    ids = manifest["utt_id"].tolist()
    packed = {role: pack_features(fs, ids) for role, fs in loaded.items()}
    tag = "+".join(feature_tag(sets[r], run.params_for(sets[r]), getattr(fs, "key", "")) for r, fs in loaded.items())
    kinds = {role: fs.kind for role, fs in loaded.items()}
    copies: dict = {}
    tags = config_tags([config, *({WAVE_AUGMENT_KEY: t} for t in wave_augment)])
    if tags:
        packed, table, copies = add_copies(run, sets, manifest, packed, classes, aux, tags, extract=extract,
                                            address=resources.address if resources is not None else None)
    return Experiment(spec, sets, kinds, manifest, classes, folds, TrainingInputs(packed, table), aux, missing, tag, copies)
