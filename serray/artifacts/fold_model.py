"""One kept fold model on disk: everything needed to score new utterances.

A fold model is a folder::

    model.json           what the model is: format, backend, model name, config, seed, fold,
                         classes, input roles (kind, sample shape, feature set and its
                         extractor parameters), normalisation per input, serray and library
                         versions, how it was trained (``training``: the fold's best epoch
                         and epochs, or a refit's epoch count), and the sha256 of the two
                         files below
    weights.safetensors  torch models: the state dict (safetensors: no code runs on load)
    arrays.npz           numeric arrays only (read with allow_pickle=False): the training
                         part's normalisation statistics (``norm.<role>.mean/std``), what the
                         model fitted outside its state dict (``extra.<name>``: an ELM
                         back-end, a mixture), and a scikit-learn estimator's fitted arrays
                         (``est.<attribute>``, rebuilt from an allow-list,
                         :mod:`serray.artifacts.sklearn_arrays`)

Normalisation: ``global`` inputs are standardised with the stored training statistics;
``speaker`` inputs with each speaker's own statistics over the utterances scored
(transductive: it needs a speaker per utterance); ``utterance`` inputs with each
utterance's own frames; ``none`` not at all.

Example:
    >>> from serray.artifacts.fold_model import MODEL_FILE
    >>> MODEL_FILE
    'model.json'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from serray.artifacts.files import ArtifactError, check_files, refuse_code_files, sha256

__all__ = ["FORMAT", "MODEL_FILE", "write_fold_model", "FoldModel", "read_fold_model"]

log = logging.getLogger(__name__)

FORMAT = "serray-fold-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ARRAYS_FILE = "arrays.npz"


def _arrays_of(kept: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The numeric arrays to store and the JSON meta of the estimator (scikit-learn)."""
    arrays: dict[str, np.ndarray] = {}
    for role, norm in kept["norm_stats"].items():
        if norm.get("mean") is not None:
            arrays[f"norm.{role}.mean"] = np.asarray(norm["mean"], dtype=np.float64)
            arrays[f"norm.{role}.std"] = np.asarray(norm["std"], dtype=np.float64)
    for key, value in dict(kept.get("extra") or {}).items():
        arrays[f"extra.{key}"] = np.asarray(value)
    est_meta: dict[str, Any] = {}
    if kept["backend"] == "sklearn":
        from serray.artifacts.sklearn_arrays import estimator_arrays

        est_meta, est_arrays = estimator_arrays(kept["estimator"])
        arrays.update({f"est.{k}": v for k, v in est_arrays.items()})
    return arrays, est_meta


def write_fold_model(folder: str | Path, kept: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]],
                     *, versions: Mapping[str, str] | None = None, run: str | None = None,
                     training: Mapping[str, Any] | None = None) -> Path:
    """Write one fold's kept model (``FoldResult.kept``) to ``folder``; returns ``model.json``'s path.

    Args:
        kept: :meth:`serray.training.interface.FoldTrainer.kept_state`.
        features: Input role -> ``{"set": name, "params": {...}}`` (the run's feature sets).
        versions: Library versions to record (default :func:`serray.training.records.versions`).
        run: The run the model comes from (recorded).
        training: How the model was trained, recorded as ``training`` (a fold model: its
            ``best_epoch`` and ``epochs``; a refit model: ``refit`` and its epoch count).
    """
    from serray import __version__, io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays, est_meta = _arrays_of(kept)
    files = {}
    if kept["backend"] == "torch":
        from safetensors.torch import save_file

        save_file(dict(kept["weights"]), str(folder / WEIGHTS_FILE))
        files[WEIGHTS_FILE] = sha256(folder / WEIGHTS_FILE)
    with open(folder / ARRAYS_FILE, "wb") as f:
        np.savez(f, **arrays)
    files[ARRAYS_FILE] = sha256(folder / ARRAYS_FILE)
    if versions is None:
        from serray.training.records import versions as lib_versions

        versions = lib_versions()
    inputs = {role: {"kind": kind, "shape": kept["shapes"][role], **dict(features.get(role, {})),
                     "normalize": kept["norm_stats"].get(role, {}).get("mode", kept["normalize"])}
              for role, kind in kept["kinds"].items()}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "serray_version": __version__, "run": run,
        **{k: kept[k] for k in ("backend", "model", "config", "seed", "fold", "classes", "aux_names", "normalize", "n_train")},
        "roles": list(kept["kinds"]), "inputs": inputs, "extra": sorted(dict(kept.get("extra") or {})), "estimator": est_meta,
        "versions": dict(versions), "files": files, **({"training": dict(training)} if training is not None else {}),
    }
    io.write_json(meta, folder / MODEL_FILE)
    return folder / MODEL_FILE


def read_fold_model(folder: str | Path) -> "FoldModel":
    """Load a kept fold model (checksums checked, code-executing files refused).

    Raises:
        ArtifactError: Not a fold model, a missing file, a checksum mismatch or a file
            that would execute code, each naming the file.
    """
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {folder} is not a kept fold model (serray train keeps them under W/models/<run>)")
    refuse_code_files(folder)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc}); re-export the model") from None
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(f"{path}: not a {FORMAT} of version <= {FORMAT_VERSION} (got {meta.get('format')!r} "
                            f"{meta.get('format_version')!r}); update serray")
    check_files(folder, meta.get("files", {}))
    _warn_versions(path, meta)
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return FoldModel(folder, meta, arrays)


def _warn_versions(path: Path, meta: Mapping[str, Any]) -> None:
    """Log when the library that computes the scores differs in version from the one that trained them."""
    from importlib import metadata

    dist = "torch" if meta.get("backend") == "torch" else "scikit-learn"
    saved = dict(meta.get("versions") or {}).get(dist)
    try:
        now = metadata.version(dist)
    except metadata.PackageNotFoundError:
        now = "absent"
    if saved and saved != now:
        log.warning("%s: trained with %s %s, loaded with %s; scores may differ slightly", path, dist, saved, now)


class FoldModel:
    """A loaded kept fold model: :meth:`logits` of new utterances' raw features.

    Attributes:
        folder: Where it was loaded from.
        meta: ``model.json``.
        classes: Class names in logit order.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.classes = [str(c) for c in meta["classes"]]
        self._arrays = dict(arrays)
        self._model: Any = None

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        """Input role -> ``kind``, ``shape``, ``set``, ``params``, ``normalize`` (primary input first)."""
        return {role: self.meta["inputs"][role] for role in self.meta["roles"]}

    @property
    def transductive(self) -> bool:
        """Whether some input is standardised with the scored speakers' own statistics."""
        return any(i["normalize"] == "speaker" for i in self.inputs.values())

    def normalized(self, role: str, packed: Any, speakers: Sequence[str] | None = None) -> Any:
        """Raw :class:`~serray.training.packing.PackedFeatures` of ``role`` normalised as in training.

        Raises:
            ValueError: ``speaker`` normalisation without a speaker per utterance.
        """
        from serray.training.normalization import normalize_features
        from serray.training.packing import PackedFeatures

        mode = self.inputs[role]["normalize"]
        if mode == "none":
            return packed
        if mode == "global":
            mean, std = self._arrays[f"norm.{role}.mean"], self._arrays[f"norm.{role}.std"]
            data = ((packed.data.astype(np.float64) - mean) / std).astype(np.float32)
            return PackedFeatures(packed.kind, data, packed.offsets)
        if mode == "speaker" and speakers is None:
            raise ValueError(f"{self.folder}: input {role!r} was normalised per speaker; give a manifest with a "
                             f"'speaker' column (the scores are then transductive)")
        groups = np.asarray(speakers if speakers is not None else np.arange(packed.n)).astype(str)
        return normalize_features(packed, groups, np.ones(packed.n, dtype=bool), mode)

    def _build(self) -> Any:
        """The torch model with its kept weights and fitted extras, or the rebuilt estimator."""
        if self._model is not None:
            return self._model
        est_arrays = {k[4:]: v for k, v in self._arrays.items() if k.startswith("est.")}
        if self.meta["backend"] == "sklearn":
            from serray.artifacts.sklearn_arrays import rebuild_estimator

            self._model = rebuild_estimator(self.meta["estimator"], est_arrays)
        else:
            self._model = self._build_torch()
        return self._model

    def _build_torch(self) -> Any:
        import torch
        from safetensors.torch import load_file

        from serray.models import registry
        from serray.models.contract import InputInfo

        spec = registry.get(self.meta["model"])
        shapes = {r: tuple(i["shape"]) for r, i in self.inputs.items()}
        aux = {r: tuple(v) for r, v in self.meta.get("aux_names", {}).items()}
        info = InputInfo(kinds={r: i["kind"] for r, i in self.inputs.items()}, layers={}, shape=next(iter(shapes.values())),
                         n_classes=len(self.classes), n_domains=len(aux.get("domain", ())), shapes=shapes,
                         aux_classes={r: len(v) for r, v in aux.items()}, aux_names=aux)
        with torch.random.fork_rng(devices=[]):
            model = spec.build(dict(self.meta["config"]), info)
        extra = {k[6:]: v for k, v in self._arrays.items() if k.startswith("extra.")}
        if extra and hasattr(model, "load_kept_arrays"):
            model.load_kept_arrays(extra)
        model.load_state_dict(load_file(str(self.folder / WEIGHTS_FILE)))
        return model.eval()

    def logits(self, packed: Mapping[str, Any], *, speakers: Sequence[str] | None = None,
               aux: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Utterance logits ``[N, C]`` (float32) of raw features per input role.

        Args:
            packed: Role -> raw (not normalised) packed features of the same ``N`` utterances.
            speakers: Speaker per utterance (``speaker`` normalisation only).
            aux: Role -> class codes of auxiliary inputs the model reads at prediction
                time (e.g. ``domain``; -1 = unknown, the default).
        """
        norm = {role: self.normalized(role, packed[role], speakers) for role in self.inputs}
        n = next(iter(norm.values())).n
        model = self._build()
        if self.meta["backend"] == "sklearn":
            from serray.training.sklearn_trainer import sklearn_logits

            return sklearn_logits(model, next(iter(norm.values())).data, len(self.classes))
        return self._torch_logits(model, norm, n, aux or {})

    def _torch_logits(self, model: Any, norm: Mapping[str, Any], n: int, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        from serray.training.batches import PartBatches
        from serray.training.data import SplitData
        from serray.training.torch_trainer import forward_part

        roles = tuple(getattr(model, "AUX_INPUTS", ()))
        codes = {r: np.asarray(aux.get(r, np.full(n, -1)), dtype=np.int64) for r in roles}
        part = SplitData(np.array([f"u{i}" for i in range(n)], dtype=object), dict(norm), np.zeros(n, dtype=np.int64), codes)
        kinds = {r: i["kind"] for r, i in self.inputs.items()}
        t = PartBatches(part, kinds, torch.device("cpu"), roles)
        whole, outputs = forward_part(model, t, int(self.meta["config"].get("eval_batch_size", 256)))
        with torch.no_grad():
            out = model.utterance_logits(whole, outputs).cpu().numpy().astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
