"""One-fold trainers: torch models epoch by epoch, scikit-learn models in one step.

Both trainers share one interface so that a caller (the fold actors, the tuner) needs no
per-backend code:

* ``step() -> dict``: train one epoch (torch) or fit (scikit-learn) and evaluate on the
  validation part. The dict has ``epoch, train_loss, val_loss, val_ua, val_wa,
  best_epoch, best_val_ua, best_val_loss, stopped, seconds`` (wall) and ``cpu_seconds``
  (CPU time of this process during the step, all its threads). After ``stopped`` is true
  further calls return the last dict unchanged.
* ``finalize() -> FoldResult``: restore the best epoch's weights and return the
  per-utterance logits of the validation and test parts.

Model selection uses the validation part only (never test data): the config key
``early_stop`` picks validation UA (``"ua"``, ties broken by lower loss) or validation
loss (``"loss"``), and training stops after ``patience`` epochs without improvement or
after ``epochs`` epochs. ``val_loss`` is the cross-entropy of the utterance-level logits.

Input handling by feature kind (the model's ``input_kind``):

* ``vector``: mini-batches ``[B, D]``; the model is called as ``model(x)``.
* ``sequence``: variable-length frame sequences are zero-padded to the longest in the
  mini-batch (after normalisation zero is the feature mean) and the model is called as
  ``model(x, lengths)`` with ``x`` ``[B, T, D]`` and ``lengths`` ``[B]``; models mask or
  pack with ``lengths``. With config key ``max_frames > 0`` a random window of at most
  that many frames is cropped from each training utterance (evaluation always sees the
  full utterance), which bounds memory on corpora with long turns.
* ``segments``: every segment ``[C, F, T]`` is one training sample carrying its
  utterance's label and domain; ``model(x)``. An utterance's logits are the log of the
  mean of its segments' softmax probabilities.

Randomness: weights, dropout and shuffling come from the trainer's own seeded generators
(the global torch RNG is saved and restored around every use), so a fixed seed gives the
same numbers on CPU whether folds run one after another, interleaved, or in actors.

Example:
    >>> trainer = TorchFoldTrainer("mlp", config, fold_data, seed=0)   # doctest: +SKIP
    >>> while not trainer.step()["stopped"]:                          # doctest: +SKIP
    ...     pass
    >>> result = trainer.finalize()                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from serray import metrics
from serray.models import registry
from serray.models.registry import TORCH_TRAINING_DEFAULTS, InputInfo, ModelSpec
from serray.training.data import FoldData, LazyRows, SplitData, concat_ranges

__all__ = [
    "TRAINING_DEFAULTS",
    "FoldResult",
    "FoldTrainer",
    "TorchFoldTrainer",
    "SklearnFoldTrainer",
    "make_trainer",
    "check_config",
    "sklearn_logits",
    "resolve_device",
    "softmax",
]

log = logging.getLogger(__name__)

#: Training keys the torch trainer reads (defined in the registry, which validates configs).
TRAINING_DEFAULTS = TORCH_TRAINING_DEFAULTS
_REQUIRED = ("epochs", "batch_size", "lr", "patience")
_OPTIMIZERS = ("sgd", "adam", "adamw")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` logits (numerically stable)."""
    z = logits - np.max(logits, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; checks explicit choices.

    Raises:
        ValueError: Unknown device, or ``"cuda"`` without a CUDA device.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device; use --device cpu or auto")
        return device
    raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")


@dataclass
class FoldResult:
    """Outcome of one fold: per-utterance logits of its validation and test parts.

    Attributes:
        index: Fold number.
        name: Fold name.
        classes: Class names in logit order.
        validation_ids, validation_y, validation_logits: Validation utterances, their
            class indices and logits ``[N, C]``.
        test_ids, test_y, test_logits: The same for the test part.
        history: The dict returned by every ``step()``.
        best_epoch: Epoch whose weights produced the logits (1 for scikit-learn).
        epochs: Epochs trained.
        seconds: Wall time of training and inference.
        n_train: Training utterances.
        threads: Torch intra-op threads the fold trained with (``None`` for scikit-learn);
            CPU results are bit-identical for the same seed and the same thread count.
    """

    index: int
    name: str
    classes: tuple[str, ...]
    validation_ids: np.ndarray
    validation_y: np.ndarray
    validation_logits: np.ndarray
    test_ids: np.ndarray
    test_y: np.ndarray
    test_logits: np.ndarray
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    epochs: int = 0
    seconds: float = 0.0
    n_train: int = 0
    threads: int | None = None

    def metrics(self) -> dict[str, float]:
        """UA, WA and macro F1 of the validation and test parts (``val_ua``, ``test_ua``, ...)."""
        out: dict[str, float] = {}
        labels = list(range(len(self.classes)))
        for part, y, logits in (
            ("val", self.validation_y, self.validation_logits),
            ("test", self.test_y, self.test_logits),
        ):
            if len(y) == 0:
                out.update({f"{part}_ua": math.nan, f"{part}_wa": math.nan, f"{part}_f1": math.nan})
                continue
            s = metrics.summary(y, logits.argmax(axis=1), labels=labels)
            out.update({f"{part}_{k}": float(v) for k, v in s.items()})
        return out

    def predictions_frame(self) -> pd.DataFrame:
        """Rows ``fold, split, utt_id, label, pred, logits`` for the predictions store."""
        frames = []
        classes = np.asarray(self.classes, dtype=object)
        for split, ids, y, logits in (
            ("validation", self.validation_ids, self.validation_y, self.validation_logits),
            ("test", self.test_ids, self.test_y, self.test_logits),
        ):
            if len(ids) == 0:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "fold": self.index,
                        "split": split,
                        "utt_id": np.asarray(ids, dtype=object),
                        "label": classes[np.asarray(y, dtype=np.int64)],
                        "pred": classes[logits.argmax(axis=1)],
                        "logits": [row.astype(float).tolist() for row in logits],
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["fold", "split", "utt_id", "label", "pred", "logits"])
        return pd.concat(frames, ignore_index=True)


class FoldTrainer:
    """Common interface of the fold trainers (see the module docstring)."""

    data: FoldData
    spec: ModelSpec

    def step(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def finalize(self) -> FoldResult:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def stopped(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self) -> FoldResult:
        """Step until stopped, then :meth:`finalize`."""
        while not self.stopped:
            self.step()
        return self.finalize()


def _spec(model: ModelSpec | str) -> ModelSpec:
    return registry.get(model) if isinstance(model, str) else model


def _check_kind(spec: ModelSpec, data: FoldData) -> None:
    if spec.input_kind != data.kind:
        raise ValueError(
            f"model {spec.name!r} takes {spec.input_kind} features but the fold has {data.kind} features; "
            f"use a {spec.input_kind} feature set (default for this model: {', '.join(spec.default_features)})"
        )


def _empty_metrics(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": math.nan,
        "val_loss": math.nan,
        "val_ua": math.nan,
        "val_wa": math.nan,
        "best_epoch": 0,
        "best_val_ua": math.nan,
        "best_val_loss": math.nan,
        "stopped": False,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }


def _val_scores(y: np.ndarray, logits: np.ndarray, n_classes: int) -> tuple[float, float, float]:
    """(cross-entropy, UA, WA) of utterance logits; NaNs for an empty part."""
    if len(y) == 0:
        return math.nan, math.nan, math.nan
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = float(-logp[np.arange(len(y)), y].mean())
    pred = logits.argmax(axis=1)
    labels = list(range(n_classes))
    return ce, metrics.unweighted_average_recall(y, pred, labels), metrics.weighted_accuracy(y, pred)


def check_config(model: ModelSpec | str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the training keys of a config; return it with training defaults filled in.

    Scikit-learn configs are returned unchanged (their estimator validates them).

    Raises:
        ValueError: A missing required key or a bad optimizer/early_stop/epochs/batch_size.
    """
    spec = _spec(model)
    if spec.backend != "torch":
        return dict(config)
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config of {spec.name!r} lacks training key(s) {missing}")
    cfg = {**TRAINING_DEFAULTS, **dict(config)}
    if cfg["optimizer"] not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {cfg['optimizer']!r}")
    if cfg["early_stop"] not in ("ua", "loss"):
        raise ValueError(f"early_stop must be 'ua' or 'loss', got {cfg['early_stop']!r}")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {cfg['epochs']} and {cfg['batch_size']}")
    if float(cfg["lr"]) <= 0:
        raise ValueError(f"lr must be > 0, got {cfg['lr']}")
    return cfg


class TorchFoldTrainer(FoldTrainer):
    """Train a registered torch model on one fold, one epoch per :meth:`step`.

    Args:
        model: Registry name or :class:`ModelSpec` (``backend == "torch"``).
        config: Full config (model keys plus the training keys of
            :data:`TRAINING_DEFAULTS`, and ``epochs``, ``batch_size``, ``lr``, ``patience``).
        data: The fold (see :func:`serray.training.data.build_fold_data`).
        seed: Seed of weights, dropout and shuffling.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Raises:
        ValueError: Wrong backend or feature kind, missing or bad training keys.
    """

    def __init__(self, model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> None:
        import torch

        self.spec = _spec(model)
        if self.spec.backend != "torch":
            raise ValueError(f"model {self.spec.name!r} is a {self.spec.backend} model; use SklearnFoldTrainer")
        _check_kind(self.spec, data)
        self.config = check_config(self.spec, config)
        cfg = self.config
        self.data = data
        self.seed = int(seed)
        self.device = torch.device(resolve_device(device))
        self.n_classes = len(data.classes)
        self._t_start = time.perf_counter()
        self._seconds = 0.0
        self._rng_state: tuple | None = None
        self._np_rng = np.random.default_rng(self.seed)
        info = InputInfo(shape=tuple(data.sample_shape), n_classes=self.n_classes, n_domains=len(data.domains))
        with self._own_rng():
            self.model = self.spec.build(self.config, info).to(self.device)
        self.optimizer = self._make_optimizer()
        self.scheduler = (
            torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=float(cfg["lr_decay"]))
            if float(cfg["lr_decay"]) != 1.0
            else None
        )
        self._train = self._tensors(data.train)
        self._cache: dict[str, dict] = {"train": self._train}
        self._epoch = 0
        self._best: dict | None = None
        self._best_state: dict | None = None
        self._last = _empty_metrics(0)
        self._stopped = False
        self.history: list[dict] = []
        self._seconds += time.perf_counter() - self._t_start

    # -- setup -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run a block on this trainer's torch RNG stream, leaving the global one as it was."""
        import torch

        cuda = self.device.type == "cuda"
        index = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if cuda else None
        devices = [index] if cuda else []
        with torch.random.fork_rng(devices=devices, enabled=True):
            if self._rng_state is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng_state[0])
                if cuda:
                    torch.cuda.set_rng_state(self._rng_state[1], index)
            try:
                yield
            finally:
                self._rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state(index) if cuda else None)

    def _make_optimizer(self) -> Any:
        import torch

        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
        if cfg["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
        if cfg["optimizer"] == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=wd)
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    def _tensors(self, part: SplitData) -> dict:
        """Device tensors of one part; for segments one sample per segment."""
        import torch

        f = part.features
        out: dict[str, Any] = {"n_utt": len(part), "y_utt": part.y}
        # Vectors: one host tensor (shared with numpy on CPU). Frames and segments: a
        # LazyRows view, gathered and normalised per mini-batch (see serray.training.data);
        # a packed copy is read through an unnormalised view. Mini-batches move to the device.
        if f.kind == "vector":
            x = torch.from_numpy(np.ascontiguousarray(f.data))
        elif isinstance(f, LazyRows):
            x = f
        else:
            x = LazyRows(f.kind, f.data, np.arange(f.data.shape[0], dtype=np.int64), f.offsets)
        out["x"] = x
        if f.kind == "segments":  # one sample per segment
            owner = f.row_owner()
            out["owner"] = owner
            out["y"] = part.y[owner]
            out["domain"] = None if part.domain is None else part.domain[owner]
        else:
            out["y"] = part.y
            out["domain"] = part.domain
            if f.kind == "sequence":
                out["offsets"] = f.offsets
        out["n"] = len(out["y"])
        return out

    def _batch_x(self, t: dict, idx: np.ndarray, train: bool) -> tuple:
        """Model inputs for samples ``idx``: ``(x,)`` or ``(x_padded, lengths)``."""
        import torch

        if self.data.kind == "segments":
            return (torch.from_numpy(t["x"].gather(idx)).to(self.device, non_blocking=True),)
        if self.data.kind != "sequence":
            return (t["x"][torch.from_numpy(np.asarray(idx, dtype=np.int64))].to(self.device, non_blocking=True),)
        max_frames = int(self.config["max_frames"]) if train else 0
        starts, lengths = [], []
        for i in idx:
            a, b = int(t["offsets"][i]), int(t["offsets"][i + 1])
            if max_frames > 0 and b - a > max_frames:
                a += int(self._np_rng.integers(0, b - a - max_frames + 1))
                b = a + max_frames
            starts.append(a)
            lengths.append(b - a)
        frames = torch.from_numpy(t["x"].gather(concat_ranges(starts, lengths)))
        x = torch.nn.utils.rnn.pad_sequence(frames.split(lengths), batch_first=True)
        return x.to(self.device, non_blocking=True), torch.tensor(lengths, dtype=torch.long).to(self.device)

    # -- training ----------------------------------------------------------------------
    def _train_epoch(self) -> float:
        import torch

        t = self._train
        bs = int(self.config["batch_size"])
        order = self._np_rng.permutation(t["n"])
        self.model.train()
        total, count = 0.0, 0
        clip = float(self.config["grad_clip"])
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            if len(idx) < 2 and len(order) > 1:
                continue  # a batch of one breaks batch norm; its sample is seen next epoch
            inputs = self._batch_x(t, idx, train=True)
            y = torch.from_numpy(t["y"][idx]).to(self.device)
            dom = None if t["domain"] is None else torch.from_numpy(t["domain"][idx]).to(self.device)
            out = self.model(*inputs)
            loss = self.model.loss(out, y, dom)
            if not torch.isfinite(loss):
                return math.nan
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return total / max(count, 1)

    def predict_logits(self, part: SplitData) -> np.ndarray:
        """Utterance-level logits ``[N, C]`` of a part with the current weights."""
        import torch

        if len(part) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        key = next((k for k in ("train", "validation", "test") if getattr(self.data, k) is part), None)
        if key is None:
            t = self._tensors(part)
        else:
            if key not in self._cache:
                self._cache[key] = self._tensors(part)
            t = self._cache[key]
        bs = int(self.config["eval_batch_size"])
        self.model.eval()
        chunks = []
        with torch.no_grad():
            n = t["n"]
            for start in range(0, n, bs):
                idx = np.arange(start, min(start + bs, n))
                chunks.append(self.model(*self._batch_x(t, idx, train=False))["logits"].float())
            logits = torch.cat(chunks)
            if self.data.kind == "segments":
                probs = torch.softmax(logits, dim=1)
                owner = torch.from_numpy(t["owner"]).to(probs.device)
                summed = torch.zeros((t["n_utt"], self.n_classes), dtype=probs.dtype, device=probs.device)
                summed.index_add_(0, owner, probs)
                counts = torch.bincount(owner, minlength=t["n_utt"]).clamp(min=1).unsqueeze(1)
                logits = torch.log((summed / counts).clamp(min=1e-12))
        out = logits.cpu().numpy().astype(np.float32)
        if not np.isfinite(out).all():
            log.warning("fold %s: non-finite logits (diverged training); replaced by 0", self.data.name)
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def _improved(self, val_loss: float, val_ua: float) -> bool:
        if self._best is None:
            return True
        if math.isnan(val_loss):  # no validation part: keep the latest weights
            return True
        if self.config["early_stop"] == "loss":
            return val_loss < self._best["val_loss"]
        return val_ua > self._best["val_ua"] or (val_ua == self._best["val_ua"] and val_loss < self._best["val_loss"])

    @property
    def stopped(self) -> bool:
        """Whether training has finished (early stop, last epoch or divergence)."""
        return self._stopped

    def step(self) -> dict:
        """Train one epoch, evaluate on the validation part, update early stopping."""
        if self._stopped:
            return dict(self._last)
        t0 = time.perf_counter()
        c0 = time.process_time()
        with self._own_rng():
            train_loss = self._train_epoch()
        if self.scheduler is not None:
            self.scheduler.step()
        self._epoch += 1
        diverged = math.isnan(train_loss)
        val_logits = self.predict_logits(self.data.validation)
        val_loss, val_ua, val_wa = _val_scores(self.data.validation.y, val_logits, self.n_classes)
        if not diverged and self._improved(val_loss, val_ua):
            self._best = {"epoch": self._epoch, "val_loss": val_loss, "val_ua": val_ua}
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if diverged:
            log.warning("fold %s: training loss is not finite at epoch %d; stopping this fold", self.data.name, self._epoch)
        best = self._best or {"epoch": 0, "val_loss": math.nan, "val_ua": math.nan}
        patience = int(self.config["patience"])
        self._stopped = (
            diverged
            or self._epoch >= int(self.config["epochs"])
            or (patience > 0 and self._epoch - best["epoch"] >= patience)
        )
        seconds = time.perf_counter() - t0
        self._seconds += seconds
        self._last = {
            "epoch": self._epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_ua": val_ua,
            "val_wa": val_wa,
            "best_epoch": best["epoch"],
            "best_val_ua": best["val_ua"],
            "best_val_loss": best["val_loss"],
            "stopped": self._stopped,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - c0,
        }
        self.history.append(dict(self._last))
        log.debug("fold %s epoch %d: %s", self.data.name, self._epoch, self._last)
        return dict(self._last)

    def finalize(self) -> FoldResult:
        """Restore the best epoch's weights; logits of the validation and test parts."""
        t0 = time.perf_counter()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        val = self.predict_logits(self.data.validation)
        test = self.predict_logits(self.data.test)
        self._seconds += time.perf_counter() - t0
        d = self.data
        import torch

        return FoldResult(
            index=d.index,
            name=d.name,
            classes=d.classes,
            validation_ids=np.asarray(d.validation.utt_ids, dtype=object),
            validation_y=d.validation.y,
            validation_logits=val,
            test_ids=np.asarray(d.test.utt_ids, dtype=object),
            test_y=d.test.y,
            test_logits=test,
            history=list(self.history),
            best_epoch=int((self._best or {"epoch": self._epoch})["epoch"]),
            epochs=self._epoch,
            seconds=self._seconds,
            n_train=len(d.train),
            threads=torch.get_num_threads(),
        )


def sklearn_logits(estimator: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores ``[N, n_classes]`` of a fitted scikit-learn classifier trained on class indices.

    ``decision_function`` is used when the estimator has one (SVC's one-vs-rest scores,
    logistic regression's multinomial logits, whose softmax is ``predict_proba``), else
    ``log(predict_proba)``. A binary ``decision_function`` ``s`` becomes ``[0, s]``. A class
    missing from the training part gets -1e4 (never predicted).
    """
    if hasattr(estimator, "decision_function"):
        s = np.asarray(estimator.decision_function(x), dtype=np.float64)
        if s.ndim == 1:
            s = np.stack([np.zeros_like(s), s], axis=1)
    else:
        s = np.log(np.clip(estimator.predict_proba(x), 1e-12, None))
    fitted = np.asarray(estimator.classes_, dtype=np.int64)
    if len(fitted) == n_classes and (fitted == np.arange(n_classes)).all():
        return s.astype(np.float32)
    out = np.full((len(x), n_classes), -1e4, dtype=np.float64)
    out[:, fitted] = s
    return out.astype(np.float32)


class SklearnFoldTrainer(FoldTrainer):
    """Fit a registered scikit-learn model on one fold; :meth:`step` fits once.

    Logits are :func:`sklearn_logits` of the fitted estimator. The estimator's
    ``random_state`` (when it has one) is set to ``seed``.

    Args:
        model: Registry name or :class:`ModelSpec` (``backend == "sklearn"``).
        config: The model's config.
        data: The fold (vector features).
        seed: Random state.
        device: Ignored (scikit-learn runs on CPU); accepted for a uniform interface.
    """

    def __init__(self, model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> None:
        self.spec = _spec(model)
        if self.spec.backend != "sklearn":
            raise ValueError(f"model {self.spec.name!r} is a {self.spec.backend} model; use TorchFoldTrainer")
        _check_kind(self.spec, data)
        self.config = dict(config)
        self.data = data
        self.seed = int(seed)
        self.n_classes = len(data.classes)
        info = InputInfo(shape=tuple(data.sample_shape), n_classes=self.n_classes, n_domains=len(data.domains))
        self.estimator = self.spec.build(self.config, info)
        params = self.estimator.get_params()
        for key in [k for k in params if k == "random_state" or k.endswith("__random_state")]:
            if params[key] is None:
                self.estimator.set_params(**{key: self.seed})
        self._last = _empty_metrics(0)
        self._stopped = False
        self._seconds = 0.0
        self.history: list[dict] = []

    @property
    def stopped(self) -> bool:
        """True after the one fit."""
        return self._stopped

    def step(self) -> dict:
        """Fit on the training part and score the validation part."""
        if self._stopped:
            return dict(self._last)
        t0 = time.perf_counter()
        c0 = time.process_time()
        tr = self.data.train
        self.estimator.fit(tr.features.data, tr.y)
        val = self.data.validation
        val_logits = sklearn_logits(self.estimator, val.features.data, self.n_classes) if len(val) else np.zeros((0, self.n_classes), np.float32)
        val_loss, val_ua, val_wa = _val_scores(val.y, val_logits, self.n_classes)
        train_pred = sklearn_logits(self.estimator, tr.features.data, self.n_classes)
        train_loss, _, _ = _val_scores(tr.y, train_pred, self.n_classes)
        self._stopped = True
        seconds = time.perf_counter() - t0
        self._seconds += seconds
        self._last = {
            "epoch": 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_ua": val_ua,
            "val_wa": val_wa,
            "best_epoch": 1,
            "best_val_ua": val_ua,
            "best_val_loss": val_loss,
            "stopped": True,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - c0,
        }
        self.history.append(dict(self._last))
        return dict(self._last)

    def finalize(self) -> FoldResult:
        """Logits of the validation and test parts (fits first if :meth:`step` was not called)."""
        if not self._stopped:
            self.step()
        t0 = time.perf_counter()
        d = self.data
        parts = {}
        for name, part in (("validation", d.validation), ("test", d.test)):
            parts[name] = (
                sklearn_logits(self.estimator, part.features.data, self.n_classes)
                if len(part)
                else np.zeros((0, self.n_classes), np.float32)
            )
        self._seconds += time.perf_counter() - t0
        return FoldResult(
            index=d.index,
            name=d.name,
            classes=d.classes,
            validation_ids=np.asarray(d.validation.utt_ids, dtype=object),
            validation_y=d.validation.y,
            validation_logits=parts["validation"],
            test_ids=np.asarray(d.test.utt_ids, dtype=object),
            test_y=d.test.y,
            test_logits=parts["test"],
            history=list(self.history),
            best_epoch=1,
            epochs=1,
            seconds=self._seconds,
            n_train=len(d.train),
        )


def make_trainer(model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> FoldTrainer:
    """The trainer matching the model's backend."""
    spec = _spec(model)
    cls = TorchFoldTrainer if spec.backend == "torch" else SklearnFoldTrainer
    return cls(spec, config, data, seed=seed, device=device)
