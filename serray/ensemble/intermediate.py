"""Intermediate fusion (paper 003, sec. 4.5): a new emotion classifier on concatenated FE outputs.

Late fusion sums the logits of trained systems (:mod:`serray.ensemble.search`); the
predictions store holds everything it needs. Intermediate fusion needs each system's
feature-extractor output (the model's ``"embedding"`` output) for every utterance of
every fold, which the store does not hold. This module gets them by **retraining** each
system exactly as ``serray seeds`` trained it (same config, seed, folds, normalisation
and one torch thread: CPU training is deterministic), and checks that the retrained
system's validation and test logits equal the stored ones (the largest difference is
reported), so the embeddings are those of the systems whose logits late fusion sums.

Per fold, the embeddings of the N chosen systems are concatenated (frozen: they are
inputs) and a new emotion classifier, the registered ``mlp`` with one hidden layer
(FC(N*D, 256) + ReLU + FC(256, C), paper 003's EC shape, docs/models.md), is trained on the
fold's training part, its inputs z-normalised with training statistics, with early
stopping on the fold's validation part. Test data are only predicted.

Example:
    >>> systems = load_systems("W", ["dmf-eg-mtl"])                       # doctest: +SKIP
    >>> emb = [system_embeddings(s) for s in systems]                    # doctest: +SKIP
    >>> res = fuse_intermediate(systems[0], emb, seed=0)                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray.training.executor import torch_threads, train_here
from serray.workdir import Workdir

__all__ = ["EC_CONFIG", "System", "SystemEmbeddings", "torch_threads", "load_systems", "system_embeddings", "fuse_intermediate"]

log = logging.getLogger(__name__)

#: The new emotion classifier (overrides of the ``mlp`` defaults).
EC_CONFIG: dict[str, Any] = {
    "hidden_sizes": [256], "dropout": 0.1, "epochs": 50, "patience": 10, "lr": 1e-3, "batch_size": 32, "early_stop": "ua",
}


@dataclass(frozen=True)
class System:
    """One trained system of the predictions store: ``run/config_id/seed`` and how it was trained."""

    run: str
    config_id: str
    seed: int
    model: str
    config: Mapping[str, Any]
    spec_fields: Mapping[str, Any]

    @property
    def name(self) -> str:
        """``run/config_id/seed`` (the member name of the ensemble search)."""
        return f"{self.run}/{self.config_id}/{self.seed}"


@dataclass
class SystemEmbeddings:
    """A retrained system's FE outputs: fold index -> ``[N_utt, D]`` rows in table order.

    Attributes:
        system: The system.
        utt_ids: Utterances of the experiment (row order of every array).
        folds: Fold index -> embeddings of every utterance in the fold (other rows NaN).
        max_logit_diff: Largest difference between retrained and stored logits.
    """

    system: System
    utt_ids: np.ndarray
    folds: dict[int, np.ndarray] = field(default_factory=dict)
    max_logit_diff: float = 0.0


def load_systems(workdir: str, runs: Sequence[str], stored: pd.DataFrame | None = None) -> list[System]:
    """Every (run, config_id, seed) of ``runs`` in the store, with its run record's settings.

    Raises:
        FileNotFoundError: A run without predictions or without ``record.json``.
    """
    from serray import io
    from serray.predictions import read_predictions

    df = stored if stored is not None else read_predictions(workdir, runs)
    out = []
    for run in runs:
        path = Workdir(workdir).run_record(run)
        if not path.exists():
            raise FileNotFoundError(f"run {run!r} has no record {path}; intermediate fusion retrains from it (runs of serray seeds / train)")
        rec = io.read_json(path)
        keys = ("features", "feature_params", "protocol", "labels", "normalize", "k", "fold_seed", "corpora")
        fields = {k: rec[k] for k in keys if rec.get(k) is not None}
        for (cid, seed), _ in df[df["run"] == run].groupby(["config_id", "seed"]):
            if cid != rec.get("config_id"):
                raise ValueError(f"run {run!r}: predictions of config {cid} but its record describes config {rec.get('config_id')}")
            out.append(System(run, str(cid), int(seed), rec["model"], dict(rec["config"]), fields))
    return out


def _experiment(workdir: str, system: System, corpora: Sequence[str] | None) -> Any:
    from serray.training.experiment import prepare_experiment
    from serray.training.spec import RunSpec

    f = system.spec_fields
    run = RunSpec(workdir, system.model, features=f.get("features"), feature_params=f.get("feature_params") or None,
                  protocol=f.get("protocol", "loso"), labels=f.get("labels", "native"), normalize=f.get("normalize", "global"),
                  corpora=corpora or f.get("corpora"), k=int(f.get("k", 5)), fold_seed=int(f.get("fold_seed", 0)), config=dict(system.config))
    return run, prepare_experiment(run, run.resolved_config())


def _stored_logits(stored: pd.DataFrame, system: System, fold: int) -> dict[str, pd.Series]:
    rows = stored[(stored["run"] == system.run) & (stored["config_id"] == system.config_id) & (stored["seed"] == system.seed)
                  & (stored["fold"] == fold)]
    return {s: rows[rows["split"] == s].set_index("utt_id")["logits"] for s in ("validation", "test")}


def _compare(result: Any, stored: Mapping[str, pd.Series], system: System) -> float:
    worst = 0.0
    for split, ids, logits in (("validation", result.validation_ids, result.validation_logits), ("test", result.test_ids, result.test_logits)):
        ref = stored[split]
        if set(map(str, ids)) != set(ref.index):
            raise ValueError(f"{system.name} fold {result.index}: the retrained {split} part is not the stored one "
                             "(other corpora or folds; pass the run's --corpus)")
        want = np.stack(ref.loc[list(map(str, ids))].to_numpy()) if len(ids) else np.zeros_like(logits)
        worst = max(worst, float(np.abs(want - logits).max()) if len(ids) else 0.0)
    return worst


def _cache_path(workdir: str, system: System) -> Path:
    return Workdir(workdir).fusion_embeddings(system.run) / f"{system.config_id}__seed{system.seed}.npz"


def _read_cache(path: Path, system: System) -> SystemEmbeddings | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        folds = {int(k[len("fold"):]): z[k] for k in z.files if k.startswith("fold")}
        return SystemEmbeddings(system, z["utt_ids"].astype(object), folds, float(z["max_logit_diff"]))


def _write_cache(path: Path, emb: SystemEmbeddings) -> None:
    from serray import io

    arrays = {f"fold{i}": a for i, a in emb.folds.items()}
    with io.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, utt_ids=emb.utt_ids.astype(str), max_logit_diff=np.float64(emb.max_logit_diff), **arrays)


def _embed_part(tr: Any, part: Any) -> np.ndarray:
    _, outputs = tr._forward_part(part)  # eval-mode outputs of the restored best weights
    if "embedding" not in outputs:
        raise ValueError(f"model {tr.spec.name!r} returns no 'embedding' output; intermediate fusion needs the FE output")
    return outputs["embedding"].float().cpu().numpy()


def system_embeddings(
    workdir: str, system: System, stored: pd.DataFrame, *, corpora: Sequence[str] | None = None, threads: int = 1,
) -> tuple[SystemEmbeddings, Any]:
    """Retrain ``system`` on every fold and return its FE outputs (and the experiment).

    The embeddings are cached under ``W/fusion/embeddings/<run>/<config_id>__seed<s>.npz``
    (a system of the store is immutable: its run, config id and seed name it).

    Raises:
        ValueError: A model without an ``"embedding"`` output, or folds that differ from the stored ones.
    """
    from serray.training.trainer import fold_trainer

    run, exp = _experiment(workdir, system, corpora)
    ids = np.asarray(exp.inputs.table.utt_ids, dtype=object)
    path = _cache_path(workdir, system)
    cached = _read_cache(path, system)
    if cached is not None and np.array_equal(cached.utt_ids.astype(str), ids.astype(str)) and sorted(cached.folds) == [f.index for f in exp.folds]:
        log.info("%s: FE outputs from %s", system.name, path)
        return cached, exp
    log.info("%s: retraining %d folds for its FE outputs", system.name, len(exp.folds))
    pos = {u: i for i, u in enumerate(ids)}
    out = SystemEmbeddings(system, ids)

    def build(fold: Any) -> Any:
        return fold_trainer(system.model, run.resolved_config(), exp.inputs, fold, normalize=run.normalize,
                            seed=system.seed, device="cpu")

    def embed(fold: Any, tr: Any, result: Any) -> None:
        out.max_logit_diff = max(out.max_logit_diff, _compare(result, _stored_logits(stored, system, fold.index), system))
        emb = None
        for part in (tr.data.train, tr.data.validation, tr.data.test):
            if len(part):
                z = _embed_part(tr, part)
                emb = np.full((len(ids), z.shape[1]), np.nan, dtype=np.float32) if emb is None else emb
                emb[[pos[u] for u in part.utt_ids]] = z
        out.folds[fold.index] = emb

    train_here(exp.folds, build, threads=threads, after=embed)
    _write_cache(path, out)
    return out, exp


def _fold_features(embeddings: Sequence[SystemEmbeddings], fold: int) -> Any:
    from serray.training.data import PackedFeatures

    data = np.concatenate([e.folds[fold] for e in embeddings], axis=1)
    return PackedFeatures("vector", np.ascontiguousarray(np.nan_to_num(data, nan=0.0)), None)


def fuse_intermediate(
    exp: Any, embeddings: Sequence[SystemEmbeddings], *, seed: int = 0, ec_config: Mapping[str, Any] | None = None,
    threads: int = 1,
) -> tuple[list[Any], float]:
    """Train the new emotion classifier of every fold on the concatenated embeddings.

    Args:
        exp: The experiment of the systems (folds, labels, normalisation from the first).
        embeddings: One :class:`SystemEmbeddings` per system, all of the same experiment.
        seed: Seed of the new classifier.
        ec_config: Overrides of :data:`EC_CONFIG`.
        threads: Torch threads (results are reproducible for the same count).

    Returns:
        ``(fold results, seconds)``; each result's validation and test logits are the fusion's.

    Raises:
        ValueError: Systems of different experiments (utterances or folds).
    """
    from serray.models import registry
    from serray.training.data import build_fold_data
    from serray.training.trainer import make_trainer

    t0 = time.perf_counter()
    first = embeddings[0]
    for e in embeddings[1:]:
        if not np.array_equal(e.utt_ids, first.utt_ids) or sorted(e.folds) != sorted(first.folds):
            raise ValueError(f"{e.system.name} and {first.system.name} are not trained on the same utterances and folds")
    spec = registry.get("mlp")
    cfg = spec.config(overrides={**EC_CONFIG, **dict(ec_config or {})})
    def build(fold: Any) -> Any:
        data = build_fold_data(_fold_features(embeddings, fold.index), exp.inputs.table, fold, "global")
        return make_trainer(spec, cfg, data, seed=seed)

    return train_here(exp.folds, build, threads=threads), time.perf_counter() - t0
