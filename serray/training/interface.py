"""The fold-trainer interface: :class:`FoldTrainer`, its step dict and the :class:`FoldResult` it ends with.

Every fold trainer (:mod:`serray.training.torch_trainer`, :mod:`serray.training.sklearn_trainer`)
steps through the same dicts (see :mod:`serray.training.trainer`) and ends with a
:class:`FoldResult`; the helpers here fill both.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import metrics

if TYPE_CHECKING:
    from serray.models.registry import ModelSpec
    from serray.training.data import FoldData

__all__ = ["FoldResult", "FoldTrainer", "cpu_name", "kept_base", "pooled_val_ua", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` logits (numerically stable)."""
    z = logits - np.max(logits, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)



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
        cpu: The CPU the fold trained on (:func:`cpu_name`; ``None`` for scikit-learn): the
            same seed and threads on another CPU model round differently, and a recurrent
            model's training can end elsewhere.
        model_record: What the model reports of this fold (its optional ``fold_record()``,
            JSON-able: e.g. groups found, gate or layer weights); kept in the run record.
        kept: The trained model's state (:meth:`FoldTrainer.kept_state`) when the driver
            asked to keep fold models, else ``None``; written by :mod:`serray.artifacts`.
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
    cpu: str | None = None
    model_record: dict = field(default_factory=dict)
    kept: dict | None = None

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


def kept_base(trainer: "FoldTrainer") -> dict[str, Any]:
    """The part of :meth:`FoldTrainer.kept_state` both backends share: model, config, seed,
    fold, classes, input kinds and shapes, and the fold's normalisation
    (:attr:`serray.training.data.FoldData.norm_stats`)."""
    d = trainer.data
    return {
        "backend": trainer.spec.backend,
        "model": trainer.spec.name,
        "config": dict(trainer.config),
        "seed": int(trainer.seed),
        "fold": {"index": int(d.index), "name": str(d.name)},
        "classes": [str(c) for c in d.classes],
        "aux_names": {k: [str(v) for v in vs] for k, vs in d.aux_names.items()},
        "kinds": dict(d.kinds),
        "shapes": {k: [int(v) for v in shape] for k, shape in d.shapes.items()},
        "normalize": d.normalize,
        "norm_stats": {k: dict(v) for k, v in d.norm_stats.items()},
        "n_train": int(len(d.train)),
    }


class FoldTrainer:
    """Common interface of the fold trainers (see the module docstring)."""

    data: FoldData
    spec: ModelSpec
    config: dict
    seed: int
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

    def kept_state(self) -> dict[str, Any]:  # pragma: no cover - interface
        """After :meth:`finalize`: what scoring new utterances needs of the model that produced
        the test logits (see :func:`serray.artifacts.kept_state_keys`)."""
        raise NotImplementedError

    @property
    def checkpointable(self) -> bool:
        """Whether :meth:`state_dict` captures all of the training state."""
        return False

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:  # pragma: no cover - interface
        """``(tensors, meta)`` to continue training from (:mod:`serray.training.state`)."""
        raise NotImplementedError

    def load_state_dict(self, state: tuple[Mapping[str, Any], Mapping[str, Any]]) -> None:  # pragma: no cover - interface
        """Continue from :meth:`state_dict` of a trainer of the same model, fold and seed."""
        raise NotImplementedError

    def result(self, keep: bool = False) -> FoldResult:
        """:meth:`finalize`, with :meth:`kept_state` in ``FoldResult.kept`` when ``keep``."""
        res = self.finalize()
        if keep:
            res.kept = self.kept_state()
        return res

    def run(self, keep: bool = False) -> FoldResult:
        """Step until stopped, then :meth:`finalize` (and keep the model when ``keep``)."""
        while not self.stopped:
            self.step()
        return self.result(keep)


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
        cpu=None if threads is None else cpu_name(),
        model_record=dict(model_record or {}),
    )


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """This machine's CPU: vendor, model name and torch's CPU kernel level (``/proc/cpuinfo``;
    ``platform.processor()`` where there is none), e.g. ``AuthenticAMD AMD EPYC (AVX512)``.

    Example:
        >>> isinstance(cpu_name(), str) and len(cpu_name()) > 0
        True
    """
    import platform
    import sys

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}
    name = f"{fields.get('vendor_id', '')} {fields.get('model name', '') or platform.processor()}".strip() or "unknown CPU"
    torch = sys.modules.get("torch")  # loaded wherever a torch fold trained; not imported for this
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})" if torch is not None else name
