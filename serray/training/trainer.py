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
after ``epochs`` epochs; ``"none"`` trains every epoch and keeps the last weights (the
validation part is scored for the curves but chooses nothing, so its logits stay fresh
for ensemble selection). ``val_loss`` is the cross-entropy of the utterance-level logits.

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

Where the parts live: the interface (:class:`FoldTrainer`, :class:`FoldResult`) in
:mod:`serray.training.interface`, config checks in :mod:`serray.training.config`, the
epoch's sample order and class weights in :mod:`serray.training.sampling`, mini-batches in
:mod:`serray.training.batches`, the trainers in :mod:`serray.training.torch_trainer` and
:mod:`serray.training.sklearn_trainer`. This module builds a fold's trainer
(:func:`make_trainer`, :func:`fold_trainer`, :func:`train_fold`) and re-exports the
others' public names.

Example:
    >>> trainer = TorchFoldTrainer("mlp", config, fold_data, seed=0)   # doctest: +SKIP
    >>> while not trainer.step()["stopped"]:                          # doctest: +SKIP
    ...     pass
    >>> result = trainer.finalize()                                   # doctest: +SKIP
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from serray.models.registry import ModelSpec
from serray.training.batches import PartBatches
from serray.training.config import TRAINING_DEFAULTS, _spec, check_config, check_stage_plans, total_epochs
from serray.training.data import FoldData
from serray.training.interface import FoldResult, FoldTrainer, pooled_val_ua, softmax
from serray.training.sampling import CLASS_WEIGHTS, SAMPLERS, class_weights, epoch_order
from serray.training.sklearn_trainer import SklearnFoldTrainer, sklearn_logits
from serray.training.torch_trainer import TorchFoldTrainer, resolve_device

if TYPE_CHECKING:
    from serray.protocols import Fold
    from serray.training.data import TrainingInputs

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
    "pooled_val_ua",
]

#: Former name of :class:`~serray.training.batches.PartBatches` (kept importable).
_PartBatches = PartBatches


def make_trainer(model: ModelSpec | str, config: Mapping[str, Any], data: FoldData, *, seed: int = 0, device: str = "cpu") -> FoldTrainer:
    """The trainer matching the model's backend."""
    spec = _spec(model)
    cls = TorchFoldTrainer if spec.backend == "torch" else SklearnFoldTrainer
    return cls(spec, config, data, seed=seed, device=device)


def fold_trainer(
    model: ModelSpec | str, config: Mapping[str, Any], inputs: TrainingInputs, fold: Fold, *, normalize: str, seed: int,
    device: str,
) -> FoldTrainer:
    """Build one fold's data and its trainer: the one path of in-process runs, fold actors
    and seed tasks. The set-up time is charged to the trainer, so its result's
    ``seconds`` include it. Inputs the model declares ``speaker_norm=False`` are
    standardised with the training part's statistics under ``normalize="speaker"``.
    The config's ``wave_augment`` copies of the fold's training utterances join its
    training part (:func:`serray.training.wave.augmented_fold`).

    Args:
        inputs: :class:`~serray.training.data.TrainingInputs` of the run.
        fold: A fold (``index``, ``name``, ``train``, ``validation``, ``test``).
    """
    from serray.training.data import build_fold_data
    from serray.training.wave import augmented_fold

    t0 = time.perf_counter()
    spec = _spec(model)
    fold = augmented_fold(fold, inputs.table, config)
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
    model: ModelSpec | str, config: Mapping[str, Any], inputs: TrainingInputs, fold: Fold, *, normalize: str, seed: int,
    device: str,
) -> FoldResult:
    """Train one fold to the end (:func:`fold_trainer`, then run)."""
    return fold_trainer(model, config, inputs, fold, normalize=normalize, seed=seed, device=device).run()
