"""The scikit-learn fold trainer: a registered scikit-learn model fitted on one fold in one step."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from serray.models.registry import ModelSpec
from serray.training.config import _check_kind, _input_info, _spec
from serray.training.data import FoldData
from serray.training.interface import FoldResult, FoldTrainer, kept_base, _empty_metrics, _fold_result, _val_hits, _val_scores

__all__ = ["SklearnFoldTrainer", "sklearn_logits"]


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
        self._final: Any = None  # the train+validation refit that scored the test part
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

    @property
    def checkpointable(self) -> bool:
        """True: the state is whether the one fit ran (it is repeated, seeded, on load)."""
        return True

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``({}, meta)``: the model, fold and whether it was fitted."""
        from serray.training.state import STATE_VERSION

        return {}, {"version": STATE_VERSION, "model": self.spec.name, "fold": int(self.data.index), "epoch": int(self._stopped)}

    def load_state_dict(self, state: tuple[Mapping[str, Any], Mapping[str, Any]]) -> None:
        """Fit again (the same seed: the same estimator) when the saved trainer had fitted."""
        meta = state[1]
        if meta["model"] != self.spec.name or int(meta["fold"]) != int(self.data.index):
            raise ValueError(f"trainer state of model {meta['model']!r} fold {meta['fold']} does not fit model "
                             f"{self.spec.name!r} fold {self.data.index}")
        if int(meta["epoch"]) and not self._stopped:
            self.step()

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
            self._final = final
            record = {"refit": "train+validation", "n_fit": int(len(d.train) + len(d.validation))}
        self._seconds += time.perf_counter() - t0
        return _fold_result(d, parts["validation"], parts["test"], self.history, 1, 1, self._seconds, None, record)

    def kept_state(self) -> dict[str, Any]:
        """The fitted estimator that scored the test part (the refit one after a refit) with the
        fold's facts (:func:`~serray.training.interface.kept_base`). A refit fits the
        features as the training part's statistics normalised them, so those stay."""
        base = kept_base(self)
        if self._final is not None:
            base["n_train"] = int(len(self.data.train) + len(self.data.validation))
        return {**base, "estimator": self._final if self._final is not None else self.estimator}
