"""One-fold trainers: torch models epoch by epoch, scikit-learn models in one step.

Both trainers share one interface so that a caller (the fold actors, the tuner) needs no
per-backend code:

* ``step() -> dict``: train one epoch (torch) or fit (scikit-learn) and evaluate on the
  validation part. The dict has ``epoch, train_loss, val_loss, val_ua, val_wa,
  best_epoch, best_val_ua, best_val_loss, stopped, seconds`` (wall) and ``cpu_seconds``
  (CPU time of this process during the step, all its threads); torch trainers add
  ``stage`` and ``loss_parts``. After ``stopped`` is true
  further calls return the last dict unchanged.
* ``finalize() -> FoldResult``: restore the best epoch's weights and return the
  per-utterance logits of the validation and test parts.

Model selection uses the validation part only (never test data): the config key
``early_stop`` picks validation UA (``"ua"``, ties broken by lower loss) or validation
loss (``"loss"``), and training stops after ``patience`` epochs without improvement or
after ``epochs`` epochs. ``val_loss`` is the cross-entropy of the utterance-level logits.

Inputs: the model receives :class:`serray.models.contract.Batch` objects with one tensor
per input role (several feature sets at once are allowed):

* ``vector``: ``[B, D]``.
* ``sequence``: variable-length frame sequences zero-padded to the longest in the
  mini-batch (after normalisation zero is the feature mean), with ``lengths`` ``[B]``;
  models mask or pack with them. With config key ``max_frames > 0`` a random window of at
  most that many frames is cropped from each training utterance (evaluation always sees
  the full utterance), which bounds memory on corpora with long turns.
* ``segments`` (primary input only): every segment ``[C, F, T]`` is one training sample
  carrying its utterance's labels; ``batch.owner`` maps segments to utterances and the
  model's ``utterance_logits`` pools them (by default the log of the mean softmax).

Auxiliary labels arrive with masks (unknown values are left out of their loss). The
model's ``loss(batch, outputs)`` returns the total and its named terms; each epoch's mean
of every term is in the step dict (``loss_parts``). Stages (config key ``stages``) are
described at :class:`TorchFoldTrainer`.

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
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import metrics
from serray.models import registry
from serray.models.contract import Batch, InputInfo, parse_stages, stage_epochs
from serray.models.registry import TORCH_TRAINING_DEFAULTS, ModelSpec
from serray.training.data import FoldData, LazyRows, SplitData, concat_ranges

__all__ = [
    "SAMPLERS",
    "CLASS_WEIGHTS",
    "class_weights",
    "TRAINING_DEFAULTS",
    "epoch_order",
    "FoldResult",
    "FoldTrainer",
    "TorchFoldTrainer",
    "SklearnFoldTrainer",
    "make_trainer",
    "fold_trainer",
    "train_fold",
    "check_config",
    "total_epochs",
    "check_stage_plans",
    "sklearn_logits",
    "resolve_device",
    "softmax",
]

log = logging.getLogger(__name__)

#: Training keys the torch trainer reads (defined in the registry, which validates configs).
TRAINING_DEFAULTS = TORCH_TRAINING_DEFAULTS
_REQUIRED = ("epochs", "batch_size", "lr", "patience")
_OPTIMIZERS = ("sgd", "adam", "adamw")
_FILLED_WHEN_SET = ("stages", "stage_selection", "refit", "sampler", "class_weight")
#: Values of the training key ``sampler`` (:func:`epoch_order`).
SAMPLERS: tuple[str, ...] = ("shuffle", "balanced")
#: Values of the training key ``class_weight`` (:func:`class_weights`).
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")


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
        model_record: What the model reports of this fold (its optional ``fold_record()``,
            JSON-able: e.g. groups found, gate or layer weights); kept in the run record.
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
    model_record: dict = field(default_factory=dict)

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
    _seconds: float

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of set-up done for this fold (e.g. building its data) in its time."""
        self._seconds += seconds

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
    role = data.primary if data.primary in spec.inputs or spec.variadic else spec.primary
    if not spec.input_spec(role).accepts(data.kind):
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


def _val_hits(y: np.ndarray, logits: np.ndarray, n_classes: int) -> list[list[int]]:
    """``[correct per class, utterances per class]`` of a part: what pooling UA over folds needs."""
    hits = np.bincount(y[logits.argmax(axis=1) == y], minlength=n_classes)
    return [hits.astype(int).tolist(), np.bincount(y, minlength=n_classes).astype(int).tolist()]


def pooled_val_ua(steps: Sequence[Mapping[str, Any]]) -> float:
    """UA over the pooled validation utterances of several folds (each step dict's ``val_hits``).

    Example:
        >>> pooled_val_ua([{"val_hits": [[1, 0], [2, 1]]}, {"val_hits": [[1, 3], [1, 3]]}])  # (2/3 + 3/4) / 2
        0.7083333333333333
    """
    rows = [np.asarray(s["val_hits"], dtype=np.int64) for s in steps if s.get("val_hits")]
    if not rows:
        return math.nan
    hits, support = np.sum(rows, axis=0)
    seen = support > 0
    return float((hits[seen] / support[seen]).mean()) if seen.any() else math.nan


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
    # Keys added to the defaults later are filled only when set, so that the config ids
    # (hashes of the filled config) of runs made before them stay the same.
    cfg = {**{k: v for k, v in TRAINING_DEFAULTS.items() if k not in _FILLED_WHEN_SET}, **dict(config)}
    if cfg["optimizer"] not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {cfg['optimizer']!r}")
    if cfg["early_stop"] not in ("ua", "loss"):
        raise ValueError(f"early_stop must be 'ua' or 'loss', got {cfg['early_stop']!r}")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {cfg['epochs']} and {cfg['batch_size']}")
    if float(cfg["lr"]) <= 0:
        raise ValueError(f"lr must be > 0, got {cfg['lr']}")
    if cfg.get("sampler", "shuffle") not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {cfg['sampler']!r}")
    if cfg.get("class_weight", "none") not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {cfg['class_weight']!r}")
    if cfg.get("stage_selection", "all") not in ("all", "last"):
        raise ValueError(f"stage_selection must be 'all' or 'last', got {cfg['stage_selection']!r}")
    parse_stages(str(cfg.get("stages", "all")), None, spec.stage_plans)  # syntax; groups are checked on build
    return cfg


def check_stage_plans(model: ModelSpec | str, config: Mapping[str, Any], inputs: Any, plans: Sequence[str]) -> None:
    """Check stage plans against the model's parameter groups before any training starts.

    Builds a torch model once (in this process, on CPU) for the run's input shapes, so a
    value the model's builder refuses (e.g. an unknown architecture) is also found here,
    before Ray starts or a fold trains.

    Raises:
        ValueError: A plan naming an unknown group, listing the model's groups and plans;
            or the builder's error for this config.
    """
    spec = _spec(model)
    todo = sorted({str(p) for p in plans if str(p) != "all"})
    if spec.backend != "torch":
        return
    shapes = {r: tuple(p.sample_shape) for r, p in inputs.packed.items()}
    info = _input_info(shapes, inputs.table.classes, inputs.table.aux_names, {r: p.kind for r, p in inputs.packed.items()},
                       {r: int(p.layers) for r, p in inputs.packed.items() if int(getattr(p, "layers", 1)) > 1})
    try:
        built = spec.build(check_config(spec, config), info)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"model {spec.name!r} cannot be built with this config: {type(exc).__name__}: {exc}") from None
    groups = list(built.parameter_groups())
    for plan in todo:
        parse_stages(plan, groups, spec.stage_plans)


def total_epochs(model: ModelSpec | str, config: Mapping[str, Any]) -> int | None:
    """Epoch budget of a torch config over all its stages (``None`` for scikit-learn).

    Example:
        >>> total_epochs("dcnn", {**registry.get("dcnn").config(), "epochs": 20, "stages": "fc"})
        30
    """
    spec = _spec(model)
    if spec.backend != "torch":
        return None
    cfg = {**TRAINING_DEFAULTS, **dict(config)}
    return stage_epochs(str(cfg["stages"]), int(cfg["epochs"]), spec.stage_plans)


def _input_info(shapes: Mapping[str, tuple[int, ...]], classes: Sequence[str], aux_names: Mapping[str, Sequence[str]],
                kinds: Mapping[str, str] | None = None, layers: Mapping[str, int] | None = None) -> InputInfo:
    """The builder's view of a run or fold: per-role sample shapes and kinds (the first is
    the primary input), stacked SSL layers where known, and the class counts of the
    emotions and every auxiliary label."""
    return InputInfo(
        kinds=dict(kinds or {}),
        layers=dict(layers or {}),
        shape=tuple(next(iter(shapes.values()))),
        n_classes=len(classes),
        n_domains=len(aux_names.get("domain", ())),
        shapes=dict(shapes),
        aux_classes={role: len(names) for role, names in aux_names.items()},
        aux_names={role: tuple(str(n) for n in names) for role, names in aux_names.items()},
    )


def _stage_selection(model: Any, config: Mapping[str, Any], name: str) -> str:
    """``"all"`` or ``"last"``: the config's ``stage_selection``, ``"last"`` for a model
    whose later stages replace the earlier model (``LATER_STAGES_REPLACE``).

    Raises:
        ValueError: ``stage_selection="all"`` set for such a model.
    """
    if not getattr(model, "LATER_STAGES_REPLACE", False):
        return str(config.get("stage_selection", "all"))
    if config.get("stage_selection", "last") != "last":
        raise ValueError(f"model {name!r}: its later stages replace the earlier model, so stage_selection must be "
                         f"'last' (got {config['stage_selection']!r}); drop the key")
    return "last"


def _fold_result(
    d: FoldData, val: np.ndarray, test: np.ndarray, history: list[dict], best_epoch: int, epochs: int,
    seconds: float, threads: int | None, model_record: dict | None = None,
) -> FoldResult:
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
        history=list(history),
        best_epoch=best_epoch,
        epochs=epochs,
        seconds=seconds,
        n_train=len(d.train),
        threads=threads,
        model_record=dict(model_record or {}),
    )


class _PartBatches:
    """Mini-batches of one fold part as :class:`~serray.models.contract.Batch` objects.

    A sample is an utterance, or a segment when the primary input is a segment stack (the
    other inputs then follow the segment's utterance). Vectors are one host tensor;
    frames and segments a :class:`LazyRows` view gathered (and normalised) per
    mini-batch; mini-batches move to the device.
    """

    def __init__(self, part: SplitData, kinds: Mapping[str, str], device: Any, aux_inputs: Sequence[str] = ()) -> None:
        import torch

        self.kinds, self.device = dict(kinds), device
        self.aux_inputs = tuple(aux_inputs)
        self.primary = next(iter(self.kinds))
        self.n_utt, self.y_utt = len(part), part.y
        self.x: dict[str, Any] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for role, f in part.inputs.items():
            if f.kind == "segments" and role != self.primary:
                raise ValueError(f"input {role!r}: only the primary input may be segments")
            if f.kind == "vector":
                self.x[role] = torch.from_numpy(np.ascontiguousarray(f.data))
            else:
                self.x[role] = f if isinstance(f, LazyRows) else LazyRows(f.kind, f.data, np.arange(f.data.shape[0], dtype=np.int64), f.offsets)
                self.offsets[role] = f.offsets
        segments = self.kinds[self.primary] == "segments"
        self.owner = part.inputs[self.primary].row_owner() if segments else None
        self.y = part.y[self.owner] if segments else part.y
        self.aux = {r: (c[self.owner] if segments else c) for r, c in part.aux.items()}
        self.n = len(self.y)

    def _sequence(self, role: str, utts: np.ndarray, max_frames: int, rng: np.random.Generator) -> tuple:
        import torch

        starts, lengths = [], []
        offsets = self.offsets[role]
        for i in utts:
            a, b = int(offsets[i]), int(offsets[i + 1])
            if max_frames > 0 and b - a > max_frames:
                a += int(rng.integers(0, b - a - max_frames + 1))
                b = a + max_frames
            starts.append(a)
            lengths.append(b - a)
        frames = torch.from_numpy(self.x[role].gather(concat_ranges(starts, lengths)))
        x = torch.nn.utils.rnn.pad_sequence(frames.split(lengths), batch_first=True)
        return x.to(self.device, non_blocking=True), torch.tensor(lengths, dtype=torch.long).to(self.device)

    def batch(self, idx: np.ndarray, max_frames: int = 0, rng: np.random.Generator | None = None, labels: bool = True) -> Batch:
        """The samples ``idx``; ``max_frames > 0`` crops training sequences at random."""
        import torch

        idx = np.asarray(idx, dtype=np.int64)
        utts = idx if self.owner is None else self.owner[idx]
        inputs, lengths = {}, {}
        for role, kind in self.kinds.items():
            if kind == "segments":
                inputs[role] = torch.from_numpy(self.x[role].gather(idx)).to(self.device, non_blocking=True)
            elif kind == "vector":
                inputs[role] = self.x[role][torch.from_numpy(utts)].to(self.device, non_blocking=True)
            else:
                inputs[role], lengths[role] = self._sequence(role, utts, max_frames, rng)
        owner, n_utt = None, len(idx)
        if self.owner is not None:
            uniq, inverse = np.unique(utts, return_inverse=True)
            owner, n_utt = torch.from_numpy(inverse.astype(np.int64)).to(self.device), len(uniq)
        b = Batch(inputs, lengths, None, owner=owner, n_utterances=n_utt, primary=self.primary)
        if labels:
            self._labels(b, idx)
        else:
            self._aux(b, idx, self.aux_inputs)
        return b

    def _labels(self, b: Batch, idx: np.ndarray) -> None:
        import torch

        b.y = torch.from_numpy(self.y[idx]).to(self.device)
        self._aux(b, idx, tuple(self.aux))

    def _aux(self, b: Batch, idx: np.ndarray, roles: Sequence[str]) -> None:
        import torch

        for role in roles:
            if role not in self.aux:
                continue
            codes = self.aux[role]
            c = codes[idx]
            b.aux[role] = torch.from_numpy(np.maximum(c, 0)).to(self.device)
            b.aux_mask[role] = torch.from_numpy(c >= 0).to(self.device)

    def whole(self) -> Batch:
        """A batch without inputs that describes the whole part (for utterance logits)."""
        import torch

        owner = None if self.owner is None else torch.from_numpy(self.owner.astype(np.int64)).to(self.device)
        return Batch({}, {}, torch.from_numpy(self.y_utt).to(self.device), owner=owner, n_utterances=self.n_utt, primary=self.primary)


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Per-class weights of the emotion cross-entropy (training key ``class_weight``).

    ``none``: ``None`` (plain cross-entropy). ``balanced``: ``n / (C * n_c)`` from the
    labels ``y`` of the fold's training part (utterances; ``C`` the run's classes), so each
    class carries the same total weight; a class absent from the training part counts
    as one utterance (a finite weight it never uses there).

    Example:
        >>> class_weights(np.array([0, 0, 0, 1]), 2, "balanced").tolist()
        [0.6666666666666666, 2.0]

    Raises:
        ValueError: Unknown ``mode``.
    """
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {mode!r}")
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1.0))


def epoch_order(y: np.ndarray, sampler: str, rng: np.random.Generator) -> np.ndarray:
    """The training samples of one epoch, in order: a permutation (``shuffle``), or as many
    draws with replacement, each class drawn with equal probability (``balanced``: every
    sample weighted by the inverse of its class count, as torch's ``WeightedRandomSampler``),
    so that small classes are seen as often as large ones.

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> sorted(epoch_order(y, "shuffle", np.random.default_rng(0))) == list(range(100))
        True
        >>> drawn = y[epoch_order(y, "balanced", np.random.default_rng(0))]
        >>> len(drawn), 35 < int((drawn == 1).sum()) < 65
        (100, True)
    """
    if sampler == "shuffle":
        return rng.permutation(len(y))
    if sampler != "balanced":
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return rng.choice(len(y), size=len(y), replace=True, p=weights / weights.sum())


def _frozen_modules(model: Any) -> list[Any]:
    """Sub-modules that have parameters, all frozen (kept in evaluation mode while training)."""
    out = []
    for module in model.modules():
        params = list(module.parameters())
        if module is not model and params and not any(p.requires_grad for p in params):
            out.append(module)
    return out


class TorchFoldTrainer(FoldTrainer):
    """Train a registered torch model on one fold, one epoch per :meth:`step`.

    The model follows :class:`serray.models.contract.SERModel`. Training runs the stages
    of the config key ``stages`` (default one stage training everything; see
    :func:`serray.models.contract.parse_stages`): each stage has its own optimiser, lr
    factor, epoch budget and patience and starts from the best weights so far; frozen
    groups keep their parameters and (their modules in evaluation mode) their batch-norm
    statistics. Epochs count on across stages, one per :meth:`step`. The final weights are
    those of the best validation epoch of any stage, or with ``stage_selection="last"`` of
    the last stage (for plans whose last stage defines the model, e.g. a fine-tuning step).
    With ``refit=True`` (off by default) the test logits come from a fresh model trained
    with the same seed on training + validation for the best epoch count, without early
    stopping, so the validation speakers also train the model that is tested; the
    validation logits stay those of the early-stopped model (out-of-sample for Tune and
    ensemble selection). Refit is skipped, and the fold record says why, for multi-stage
    plans and models that select inside training (``after_validation``). With
    ``sampler="balanced"`` an epoch draws every class about equally often
    (:func:`epoch_order`); the default ``shuffle`` visits every sample once.

    Optional model hooks (all called on this trainer's RNG stream):

    - ``prepare(part)``: once, with the training part, before training (e.g. fit a
      clustering on the training utterances only).
    - ``begin_stage(index, stage)``: at the start of every stage, after the best weights
      so far are restored and before freezing (e.g. copy a trained head into per-group
      heads).
    - ``batch_order(y, batch_size, rng)``: the training mini-batches of one epoch as a
      list of sample-index arrays (e.g. class-balanced batches); default a shuffle.
    - ``after_training(batch, outputs)``: once, after the best weights are restored and
      before the final predictions, with the whole training part's eval-mode outputs
      (``batch`` as :meth:`_PartBatches.whole`, labels included; e.g. fit a back-end).
    - ``after_validation(batch, outputs)``: after every epoch's validation pass, with the
      validation part's eval-mode outputs (``batch`` as :meth:`_PartBatches.whole`,
      labels included), for selection a model makes on its own (e.g. early stopping per
      group of utterances, kept by the model and installed in ``after_training``). Never
      called with training or test data, nor when the validation part is empty.
    - ``after_evaluation(part, batch, outputs)``: once per non-empty part, ``part`` =
      ``"validation"`` then ``"test"``, with the part's final eval-mode outputs (``batch``
      as :meth:`_PartBatches.whole`, labels included), after the final logits of *both*
      parts are computed, so it cannot change any prediction: for what ``fold_record``
      reports about the evaluated utterances (e.g. mean gate weights per domain).
    - ``fold_record()``: a JSON-able dict kept per fold in the run record (called last).
    - ``lr_scales()``: parameter group -> factor on every stage's lr for that group's
      parameters (e.g. a fine-tuned SSL model far slower than the heads).

    Optional model attribute ``LATER_STAGES_REPLACE = True``: every later stage replaces
    the model the earlier ones trained (e.g. NHNN's group stage, after which the model
    predicts with its group heads), so each stage selects among its own epochs, from its
    own start (``stage_selection="last"``, which the config may not contradict).

    Optional model attribute ``AUX_INPUTS``: auxiliary-label roles that are *inputs* known
    at prediction time (metadata such as a ``domain`` = language column, routing each
    utterance to its domain's tower), not targets. Evaluation batches carry these roles in
    ``batch.aux``/``batch.aux_mask`` too; the emotion labels and every other auxiliary
    role stay out of evaluation batches.

    Args:
        model: Registry name or :class:`ModelSpec` (``backend == "torch"``).
        config: Full config (model keys plus the training keys of
            :data:`TRAINING_DEFAULTS`, and ``epochs``, ``batch_size``, ``lr``, ``patience``).
        data: The fold (see :func:`serray.training.data.build_fold_data`).
        seed: Seed of weights, dropout and shuffling.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Raises:
        ValueError: Wrong backend or feature kind, missing or bad training keys, or a
            ``stages`` value naming unknown parameter groups.
    """

    def __init__(self, model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> None:
        import torch

        self.spec = _spec(model)
        if self.spec.backend != "torch":
            raise ValueError(f"model {self.spec.name!r} is a {self.spec.backend} model; use SklearnFoldTrainer")
        _check_kind(self.spec, data)
        self.config = check_config(self.spec, config)
        self.data = data
        self.seed = int(seed)
        self.device = torch.device(resolve_device(device))
        self.n_classes = len(data.classes)
        t_start = time.perf_counter()
        self._rng_state: tuple | None = None
        self._np_rng = np.random.default_rng(self.seed)
        with self._own_rng():
            self.model = self.spec.build(self.config, _input_info(data.shapes, data.classes, data.aux_names, data.kinds)).to(self.device)
            if hasattr(self.model, "prepare"):
                self.model.prepare(data.train)  # fitted on the training part only
        self.groups = self.model.parameter_groups()
        self.stages = parse_stages(str(self.config.get("stages", "all")), list(self.groups), self.spec.stage_plans)
        self._selection = _stage_selection(self.model, self.config, self.spec.name)
        self._aux_inputs = tuple(getattr(self.model, "AUX_INPUTS", ()))
        self._parts = {"train": _PartBatches(data.train, data.kinds, self.device, self._aux_inputs)}
        weights = class_weights(data.train.y, self.n_classes, str(self.config.get("class_weight", "none")))
        self._class_weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        self._epoch = 0
        self._best: dict | None = None
        self._best_state: dict | None = None
        self._last = _empty_metrics(0)
        self._stopped = False
        self.history: list[dict] = []
        #: ``() -> FoldData`` of the fold with validation merged into training (set by
        #: :func:`fold_trainer`; used by ``refit``).
        self.refit_data: Callable[[], FoldData] | None = None
        self._start_stage(0)
        self._seconds = time.perf_counter() - t_start

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

    def _start_stage(self, i: int) -> None:
        """Freeze per stage ``i``, restore the best weights so far, new optimiser and schedule."""
        import torch

        stage = self.stages[i]
        self._stage, self._stage_start, self._stage_best = i, self._epoch, self._epoch
        if i > 0 and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            if self._selection == "last":
                self._best = None  # the final weights come from this stage's epochs (selected on validation)
        if hasattr(self.model, "begin_stage"):
            with self._own_rng():
                self.model.begin_stage(i, stage)
        train = {n for g in stage.train for n in self.groups[g]}
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in train)
        self._frozen_modules = _frozen_modules(self.model)
        self.optimizer = self._make_optimizer(float(self.config["lr"]) * stage.lr_scale)
        decay = float(self.config["lr_decay"])
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=decay) if decay != 1.0 else None
        self._stage_epochs = int(stage.epochs or self.config["epochs"])
        if len(self.stages) > 1:
            log.debug("fold %s: stage %d/%d trains %s", self.data.name, i + 1, len(self.stages), ", ".join(stage.train))

    def _make_optimizer(self, lr: float) -> Any:
        """The stage's optimiser over the trainable parameters, at ``lr``.

        A model with a method ``lr_scales()`` (parameter group -> factor) trains those
        groups at ``lr * factor`` (optimizer parameter groups; e.g. a fine-tuned SSL model
        far slower than the heads); every other parameter at ``lr``.
        """
        import torch

        cfg = self.config
        params = self._param_groups(lr)
        wd = float(cfg["weight_decay"])
        if cfg["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
        if cfg["optimizer"] == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=wd)
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    def _param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Trainable parameters as optimizer groups, one per lr factor of ``model.lr_scales()``.

        Raises:
            ValueError: A factor for an unknown parameter group, or one that is not > 0.
        """
        scales = dict(self.model.lr_scales()) if hasattr(self.model, "lr_scales") else {}
        bad = {g: s for g, s in scales.items() if g not in self.groups or not float(s) > 0}
        if bad:
            raise ValueError(f"{type(self.model).__name__}.lr_scales() {bad}: factors must be > 0 for groups {list(self.groups)}")
        factor = {n: float(scales.get(g, 1.0)) for g, names in self.groups.items() for n in names}
        out: dict[float, list[Any]] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                out.setdefault(factor.get(name, 1.0), []).append(p)
        return [{"params": ps, "lr": lr * f} for f, ps in out.items()]

    def _part(self, part: SplitData) -> _PartBatches:
        key = next((k for k in ("train", "validation", "test") if getattr(self.data, k) is part), None)
        if key is None:
            return _PartBatches(part, self.data.kinds, self.device, self._aux_inputs)
        if key not in self._parts:
            self._parts[key] = _PartBatches(part, self.data.kinds, self.device, self._aux_inputs)
        return self._parts[key]

    # -- training ----------------------------------------------------------------------
    def _train_epoch(self) -> tuple[float, dict[str, float]]:
        import torch

        t = self._parts["train"]
        bs = int(self.config["batch_size"])
        if hasattr(self.model, "batch_order"):
            batches = [np.asarray(b, dtype=np.int64) for b in self.model.batch_order(t.y, bs, self._np_rng)]
        else:
            order = epoch_order(t.y, str(self.config.get("sampler", "shuffle")), self._np_rng)
            batches = [order[start : start + bs] for start in range(0, len(order), bs)]
        self.model.train()
        for m in self._frozen_modules:
            m.eval()
        total, count = 0.0, 0
        parts_sum: dict[str, float] = {}
        clip = float(self.config["grad_clip"])
        max_frames = int(self.config["max_frames"])
        for idx in batches:
            if len(idx) < 2 and t.n > 1:
                continue  # a batch of one breaks batch norm; its sample is seen next epoch
            batch = t.batch(idx, max_frames, self._np_rng)
            batch.class_weights = self._class_weights
            out = self.model.forward_batch(batch)
            loss, parts = self.model.loss(batch, out)
            if not torch.isfinite(loss):
                return math.nan, {}
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + float(value.detach()) * len(idx)
        return total / max(count, 1), {k: v / max(count, 1) for k, v in parts_sum.items()}

    def _forward_part(self, part: SplitData) -> tuple[Batch, dict]:
        """Eval-mode outputs of a whole part (per-sample tensors concatenated), and its batch."""
        import torch

        t = self._part(part)
        bs = int(self.config["eval_batch_size"])
        self.model.eval()
        chunks: dict[str, list] = {}
        with torch.no_grad():
            for start in range(0, t.n, bs):
                idx = np.arange(start, min(start + bs, t.n))
                for key, value in self.model.forward_batch(t.batch(idx, labels=False)).items():
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == len(idx):
                        chunks.setdefault(key, []).append(value)
        return t.whole(), {k: torch.cat(v) for k, v in chunks.items()}

    def predict_logits(self, part: SplitData, *, validation: bool = False) -> np.ndarray:
        """Utterance-level logits ``[N, C]`` of a part with the current weights
        (``validation``: the epoch's validation pass, shown to ``after_validation``)."""
        return self._predict(part, validation=validation)[2]

    def _predict(self, part: SplitData, *, validation: bool = False) -> tuple[Batch | None, dict, np.ndarray]:
        """``(whole batch, eval-mode outputs, utterance logits)`` of a part (``None, {}`` when empty)."""
        import torch

        if len(part) == 0:
            return None, {}, np.zeros((0, self.n_classes), dtype=np.float32)
        whole, outputs = self._forward_part(part)
        with torch.no_grad():
            if validation and hasattr(self.model, "after_validation"):
                self.model.after_validation(whole, outputs)
            logits = self.model.utterance_logits(whole, outputs)
        out = logits.cpu().numpy().astype(np.float32)
        if not np.isfinite(out).all():
            log.warning("fold %s: non-finite logits (diverged training); replaced by 0", self.data.name)
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return whole, outputs, out

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

    def _stage_done(self, diverged: bool) -> bool:
        patience = int(self.config["patience"])
        ran = self._epoch - self._stage_start
        return diverged or ran >= self._stage_epochs or (patience > 0 and self._epoch - self._stage_best >= patience)

    def step(self) -> dict:
        """Train one epoch, evaluate on the validation part, update early stopping and stages."""
        if self._stopped:
            return dict(self._last)
        t0, c0 = time.perf_counter(), time.process_time()
        with self._own_rng():
            train_loss, loss_parts = self._train_epoch()
        if self.scheduler is not None:
            self.scheduler.step()
        self._epoch += 1
        diverged = math.isnan(train_loss)
        val_logits = self.predict_logits(self.data.validation, validation=True)
        val_loss, val_ua, val_wa = _val_scores(self.data.validation.y, val_logits, self.n_classes)
        if not diverged and self._improved(val_loss, val_ua):
            self._best = {"epoch": self._epoch, "val_loss": val_loss, "val_ua": val_ua}
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self._stage_best = self._epoch
        if diverged:
            log.warning("fold %s: training loss is not finite at epoch %d; stopping this fold", self.data.name, self._epoch)
        stage = self._stage
        best = self._best or {"epoch": 0, "val_loss": math.nan, "val_ua": math.nan}  # this epoch's, before a new stage
        if self._stage_done(diverged):
            if diverged or stage + 1 >= len(self.stages):
                self._stopped = True
            else:
                self._start_stage(stage + 1)
        seconds = time.perf_counter() - t0
        self._seconds += seconds
        self._last = {
            "epoch": self._epoch, "train_loss": train_loss, "val_loss": val_loss, "val_ua": val_ua, "val_wa": val_wa,
            "best_epoch": best["epoch"], "best_val_ua": best["val_ua"], "best_val_loss": best["val_loss"],
            "stopped": self._stopped, "seconds": seconds, "cpu_seconds": time.process_time() - c0,
            "stage": stage, "loss_parts": loss_parts, "val_hits": _val_hits(self.data.validation.y, val_logits, self.n_classes),
        }
        self.history.append(dict(self._last))
        log.debug("fold %s epoch %d: %s", self.data.name, self._epoch, self._last)
        return dict(self._last)

    def finalize(self) -> FoldResult:
        """Restore the best epoch's weights; logits of the validation and test parts."""
        import torch

        t0 = time.perf_counter()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        if hasattr(self.model, "after_training") and len(self.data.train):
            with self._own_rng():
                self.model.after_training(*self._forward_part(self.data.train))
        evaluated = {"validation": self._predict(self.data.validation), "test": self._predict(self.data.test)}
        if hasattr(self.model, "after_evaluation"):  # both parts' logits are final: for records only
            with torch.no_grad(), self._own_rng():
                for name, (whole, outputs, _) in evaluated.items():
                    if whole is not None:
                        self.model.after_evaluation(name, whole, outputs)
        val, test = evaluated["validation"][2], evaluated["test"][2]
        record = self.model.fold_record() if hasattr(self.model, "fold_record") else {}
        if self.config.get("refit", False):
            test, info = self._refit_test_logits(test)
            record = {**record, **info}
        self._seconds += time.perf_counter() - t0
        return _fold_result(
            self.data, val, test, self.history, int((self._best or {"epoch": self._epoch})["epoch"]), self._epoch,
            self._seconds, torch.get_num_threads(), record,
        )


    def _refit_blocker(self) -> str | None:
        if self.refit_data is None:
            return "the trainer was not built by fold_trainer"
        if len(self.data.validation) == 0 or len(self.data.test) == 0:
            return "no validation or no test part"
        if len(self.stages) > 1:
            return "a multi-stage plan (its best epoch cannot be replayed without validation)"
        if hasattr(self.model, "after_validation"):
            return f"model {self.spec.name!r} selects by validation inside training (after_validation)"
        return None

    def _refit_test_logits(self, test: np.ndarray) -> tuple[np.ndarray, dict]:
        """Test logits of a fresh model trained on training + validation for the best
        epoch count (same seed, no early stopping); the validation logits stay those of
        the early-stopped model, out-of-sample for selection."""
        reason = self._refit_blocker()
        if reason is not None:
            log.info("fold %s: refit skipped: %s", self.data.name, reason)
            return test, {"refit": f"skipped: {reason}"}
        epochs = int((self._best or {"epoch": self._epoch})["epoch"])
        data = self.refit_data()
        cfg = {**self.config, "epochs": max(1, epochs), "patience": 0, "refit": False}
        res = TorchFoldTrainer(self.spec, cfg, data, seed=self.seed, device=str(self.device)).run()
        return res.test_logits, {"refit": "train+validation", "refit_epochs": max(1, epochs), "n_fit": int(len(data.train))}


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
    ``random_state`` (when it has one) is set to ``seed``. With ``refit`` (config key,
    default in :data:`~serray.models.registry.SKLEARN_TRAINING_DEFAULTS`) the validation
    logits come from the fit on the training part and the test logits from a second fit
    on training + validation; the fold record says so (``refit``, ``n_fit``).

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
        self.estimator = self.spec.build(self.config, _input_info(data.shapes, data.classes, data.aux_names, data.kinds))
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
            "val_hits": _val_hits(val.y, val_logits, self.n_classes),
        }
        self.history.append(dict(self._last))
        return dict(self._last)

    def finalize(self) -> FoldResult:
        """Logits of the validation and test parts (fits first if :meth:`step` was not called)."""
        from serray.models.registry import SKLEARN_TRAINING_DEFAULTS

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
        record: dict[str, Any] = {}
        if bool(self.config.get("refit", SKLEARN_TRAINING_DEFAULTS["refit"])) and len(d.validation) and len(d.test):
            from sklearn.base import clone

            final = clone(self.estimator).fit(
                np.concatenate([d.train.features.data, d.validation.features.data]), np.concatenate([d.train.y, d.validation.y])
            )
            parts["test"] = sklearn_logits(final, d.test.features.data, self.n_classes)
            record = {"refit": "train+validation", "n_fit": int(len(d.train) + len(d.validation))}
        self._seconds += time.perf_counter() - t0
        return _fold_result(d, parts["validation"], parts["test"], self.history, 1, 1, self._seconds, None, record)


def make_trainer(model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> FoldTrainer:
    """The trainer matching the model's backend."""
    spec = _spec(model)
    cls = TorchFoldTrainer if spec.backend == "torch" else SklearnFoldTrainer
    return cls(spec, config, data, seed=seed, device=device)


def fold_trainer(
    model: ModelSpec | str, config: Mapping[str, Any], inputs: Any, fold: Any, *, normalize: str, seed: int, device: str
) -> FoldTrainer:
    """Build one fold's data and its trainer: the one path of in-process runs, fold actors
    and seed tasks. The set-up time is charged to the trainer, so its result's
    ``seconds`` include it. Inputs the model declares ``speaker_norm=False`` are
    standardised with the training part's statistics under ``normalize="speaker"``.

    Args:
        inputs: :class:`~serray.training.data.TrainingInputs` of the run.
        fold: A fold (``index``, ``name``, ``train``, ``validation``, ``test``).
    """
    from serray.training.data import build_fold_data

    t0 = time.perf_counter()
    spec = _spec(model)
    kept = tuple(r for r in inputs.packed if (r in spec.inputs or spec.variadic) and not spec.input_spec(r).speaker_norm)
    data = build_fold_data(inputs.packed, inputs.table, fold, normalize, global_roles=kept)
    built = time.perf_counter() - t0  # the trainer counts its own construction
    trainer = make_trainer(model, config, data, seed=seed, device=device)
    if isinstance(trainer, TorchFoldTrainer):
        merged = SimpleNamespace(index=fold.index, name=fold.name, test=fold.test, validation=np.array([], dtype=object),
                                 train=np.concatenate([np.asarray(fold.train, dtype=object), np.asarray(fold.validation, dtype=object)]))
        trainer.refit_data = lambda: build_fold_data(inputs.packed, inputs.table, merged, normalize, global_roles=kept)
    trainer.charge(built)
    return trainer


def train_fold(
    model: ModelSpec | str, config: Mapping[str, Any], inputs: Any, fold: Any, *, normalize: str, seed: int, device: str
) -> FoldResult:
    """Train one fold to the end (:func:`fold_trainer`, then run)."""
    return fold_trainer(model, config, inputs, fold, normalize=normalize, seed=seed, device=device).run()
