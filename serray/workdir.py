"""The work directory: the one owner of every path under ``W``.

Every command reads and writes below one folder, the work directory ``W``. Its layout::

    W/
      manifests/<corpus>.parquet          one per prepared corpus (``serray data prepare``)
      manifests/<corpus>.bad.csv          its unusable audio files, when there are any
      audio/<corpus>/                     synthetic corpora's audio (``serray data synth``)
      cache/audio_digests.parquet         audio content digests (duplicate checks)
      features/<set>-<key>/               cached feature sets (``serray features``), with augmented copies
      features/augment/<tag>.json         a waveform augmentation's spec (``serray features --augment``)
      predictions/<run>/                  the predictions store: <config>__seed<s>.parquet (logits)
      runs/<run>/                         record.json, settings.json, folds.parquet, model_records/
      tune/<experiment>/                  a search: best.yaml, trials/<trial>.json, leaderboard.csv, Tune state
      ensemble/<name>/                    ensemble searches (``serray ensemble``)
      fusion/<name>/                      fusion comparisons (``serray fuse``);
      fusion/embeddings/<run>/            cached fold embeddings of intermediate fusion
      crosscorpus/<prefix>/               cross-corpus matrices (``serray crosscorpus``)
      reports/<name>/                     reports (``serray report``)
      tracking/                           the local MLflow store (``--track mlflow``, ``serray track``)
      tracking/wandb/                     W&B's offline runs (``--track wandb``; upload with ``wandb sync``)
      models/<run>/<config>__seed<s>/fold<k>/  kept fold models (serray train/seeds; serray.artifacts)

No other module joins these names: code asks a :class:`Workdir` for the path it needs.

Example:
    >>> w = Workdir("/tmp/w")
    >>> w.manifest("emodb").as_posix()
    '/tmp/w/manifests/emodb.parquet'
    >>> w.run_record("svm-emodb").as_posix()
    '/tmp/w/runs/svm-emodb/record.json'
    >>> w.tune_best("mlp-search").relative_to(w.root).as_posix()
    'tune/mlp-search/best.yaml'
    >>> w.predictions_part("svm-emodb", "c0", 3).relative_to(w.root).as_posix()
    'predictions/svm-emodb/c0__seed3.parquet'
    >>> w.top_level("/tmp/w/features/mfb-1a2b/meta.json")
    'features'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workdir", "LAYOUT"]

#: Top-level folders of a work directory, in the order of the pipeline.
LAYOUT: tuple[str, ...] = (
    "manifests", "audio", "cache", "features", "predictions", "runs", "tune", "ensemble", "fusion",
    "crosscorpus", "reports", "models", "tracking",
)


@dataclass(frozen=True, init=False)
class Workdir:
    """Paths under one work directory (nothing is created until a writer writes).

    Args:
        root: The work directory (``str`` or ``Path``; kept as given, not resolved, so
            relative paths in records stay relative).
    """

    root: Path

    def __init__(self, root: str | os.PathLike | "Workdir") -> None:
        object.__setattr__(self, "root", root.root if isinstance(root, Workdir) else Path(root))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the work directory (as records store it)."""
        return str(Path(path).relative_to(self.root))

    def top_level(self, path: str | os.PathLike) -> str:
        """The top-level folder (one of :data:`LAYOUT`) that ``path`` lies in.

        Raises:
            ValueError: ``path`` is not below the work directory, or lies in a folder
                that is not part of the layout (naming the valid ones).
        """
        parts = Path(path).relative_to(self.root).parts
        if not parts or parts[0] not in LAYOUT:
            raise ValueError(f"{path}: not inside one of the work directory's folders {list(LAYOUT)}")
        return parts[0]

    # ---- corpora and features -------------------------------------------------------
    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def manifest(self, corpus: str) -> Path:
        """``W/manifests/<corpus>.parquet``."""
        return self.manifests_dir / f"{corpus}.parquet"

    def manifest_bad(self, corpus: str) -> Path:
        """``W/manifests/<corpus>.bad.csv``: the corpus's unusable audio files."""
        return self.manifests_dir / f"{corpus}.bad.csv"

    @property
    def audio_dir(self) -> Path:
        return self.root / "audio"

    def audio(self, corpus: str) -> Path:
        """``W/audio/<corpus>``: a synthetic corpus's audio files."""
        return self.audio_dir / corpus

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def audio_digests(self) -> Path:
        """``W/cache/audio_digests.parquet``."""
        return self.cache_dir / "audio_digests.parquet"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def feature_set(self, name: str, key: str) -> Path:
        """``W/features/<name>-<key>`` (``key``: the extractor's parameter fingerprint)."""
        return self.features_dir / f"{name}-{key}"

    def augment_spec(self, tag: str) -> Path:
        """``W/features/augment/<tag>.json``: the spec of a waveform augmentation (its copies
        live in the feature sets' folders, keyed by the tag)."""
        return self.features_dir / "augment" / f"{tag}.json"

    # ---- training -------------------------------------------------------------------
    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def predictions(self, run: str) -> Path:
        """``W/predictions/<run>``: the run's predictions parts."""
        return self.predictions_dir / run

    def predictions_part(self, run: str, config_id: str, seed: int) -> Path:
        """``W/predictions/<run>/<config_id>__seed<seed>.parquet``."""
        return self.predictions(run) / f"{config_id}__seed{int(seed)}.parquet"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> Path:
        """``W/runs/<name>``."""
        return self.runs_dir / name

    def run_record(self, name: str) -> Path:
        """``W/runs/<name>/record.json``."""
        return self.run(name) / "record.json"

    def run_folds(self, name: str) -> Path:
        """``W/runs/<name>/folds.parquet``."""
        return self.run(name) / "folds.parquet"

    def run_settings(self, name: str) -> Path:
        """``W/runs/<name>/settings.json``: the settings the run's results belong to."""
        return self.run(name) / "settings.json"

    def run_model_records(self, name: str, config_id: str, seed: int) -> Path:
        """``W/runs/<name>/model_records/<config_id>__seed<seed>.json``: what the model reported per fold."""
        return self.run(name) / "model_records" / f"{config_id}__seed{int(seed)}.json"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def models(self, run: str) -> Path:
        """``W/models/<run>``: the kept fold models of one run."""
        return self.models_dir / run

    def kept_config(self, run: str, config_id: str, seed: int) -> Path:
        """``W/models/<run>/<config_id>__seed<seed>``: the kept fold models of one config and seed."""
        return self.models(run) / f"{config_id}__seed{int(seed)}"

    def fold_model(self, run: str, config_id: str, seed: int, fold: int) -> Path:
        """``W/models/<run>/<config_id>__seed<seed>/fold<fold>``: one kept fold model."""
        return self.kept_config(run, config_id, seed) / f"fold{int(fold)}"

    # ---- searches, ensembles, fusion, reports ---------------------------------------
    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    def tune(self, experiment: str) -> Path:
        """``W/tune/<experiment>``."""
        return self.tune_dir / experiment

    def tune_best(self, experiment: str) -> Path:
        """``W/tune/<experiment>/best.yaml``."""
        return self.tune(experiment) / "best.yaml"

    def tune_trials(self, experiment: str) -> Path:
        """``W/tune/<experiment>/trials``: one JSON record per trial."""
        return self.tune(experiment) / "trials"

    def tune_leaderboard(self, experiment: str) -> Path:
        """``W/tune/<experiment>/leaderboard.csv``."""
        return self.tune(experiment) / "leaderboard.csv"

    def tune_trial(self, experiment: str, trial_id: str) -> Path:
        """``W/tune/<experiment>/trials/<trial_id>.json``."""
        return self.tune_trials(experiment) / f"{trial_id}.json"

    @property
    def ensemble_dir(self) -> Path:
        return self.root / "ensemble"

    def ensemble(self, name: str) -> Path:
        """``W/ensemble/<name>``."""
        return self.ensemble_dir / name

    @property
    def fusion_dir(self) -> Path:
        return self.root / "fusion"

    def fusion(self, name: str) -> Path:
        """``W/fusion/<name>``."""
        return self.fusion_dir / name

    def fusion_embeddings(self, run: str) -> Path:
        """``W/fusion/embeddings/<run>``: cached fold embeddings of intermediate fusion."""
        return self.fusion_dir / "embeddings" / run

    @property
    def crosscorpus_dir(self) -> Path:
        return self.root / "crosscorpus"

    def crosscorpus(self, prefix: str) -> Path:
        """``W/crosscorpus/<prefix>``."""
        return self.crosscorpus_dir / prefix

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def report(self, name: str) -> Path:
        """``W/reports/<name>``."""
        return self.reports_dir / name

    @property
    def tracking_dir(self) -> Path:
        """``W/tracking``: the local experiment-tracking store (MLflow)."""
        return self.root / "tracking"

    @property
    def wandb_dir(self) -> Path:
        """``W/tracking/wandb``: Weights & Biases' offline runs (``--track wandb``), ``offline-run-*`` folders."""
        return self.tracking_dir / "wandb"
