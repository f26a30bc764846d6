"""A tune trial's checkpoint: every fold's training state and the trial's own progress.

:class:`serray.tune.trainable.FoldsTrainable` saves one through Tune's class-API
checkpoints (``save_checkpoint`` / ``load_checkpoint``) into the folder Tune gives it::

    trial.json               the trial's progress: the epoch, the per-fold metrics of every
                             epoch so far, the pooled validation curve, the folds still
                             training, the config, and which trial it was saved by
    fold<k>.safetensors      fold position k's tensors: weights, best weights, optimiser
                             moments, torch RNG state (:mod:`serray.training.state`)
    fold<k>.json             the rest of fold k's state: epoch, early stopping, stage, lr
                             schedule, history, numpy RNG state

Nothing is pickled: a checkpoint loads as safetensors and JSON only. When it saves
(:func:`should_checkpoint`): at ASHA's rungs, and at the first report after
``every_s`` seconds (default :data:`CHECKPOINT_EVERY_S`) since the last one; Tune keeps
the last ``CheckpointConfig(num_to_keep=N)`` per trial. A trial retried after a failure
(e.g. its worker node died), a trial of an interrupted search continued with ``--resume``,
and a trial that population-based training points at another trial's checkpoint go on
from the checkpoint's epoch.

Example:
    >>> should_checkpoint(8, (8, 16, 30), since_s=1.0, every_s=300.0)
    True
    >>> should_checkpoint(9, (8, 16, 30), since_s=1.0, every_s=300.0)
    False
    >>> should_checkpoint(9, (8, 16, 30), since_s=400.0, every_s=300.0)
    True
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CHECKPOINT_EVERY_S", "CHECKPOINTS_KEPT", "TRIAL_FILE", "should_checkpoint", "write_checkpoint",
           "read_checkpoint"]

log = logging.getLogger(__name__)

#: A trial saves a checkpoint at least this often (seconds of training), also between rungs.
CHECKPOINT_EVERY_S = 180.0
#: Checkpoints Tune keeps per trial (``serray tune --num-checkpoints``).
CHECKPOINTS_KEPT = 3
TRIAL_FILE = "trial.json"
FORMAT = "serray-trial-checkpoint"
FORMAT_VERSION = 1


def should_checkpoint(epoch: int, rungs: Sequence[int], *, since_s: float, every_s: float) -> bool:
    """Whether the report ending at ``epoch`` saves a checkpoint: at one of ASHA's ``rungs``,
    or ``every_s`` seconds after the last checkpoint (``every_s <= 0``: never for time)."""
    return epoch in set(rungs) or (every_s > 0 and since_s >= every_s)


def write_checkpoint(folder: str | Path, progress: Mapping[str, Any], folds: Sequence[tuple[bytes, str]]) -> None:
    """Write a trial's ``progress`` (JSON-able) and its folds' states (``(safetensors bytes, JSON
    text)`` in fold position order, :meth:`serray.training.executor.FoldActors.save_state`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, (blob, text) in enumerate(folds):
        (folder / f"fold{k}.safetensors").write_bytes(blob)
        (folder / f"fold{k}.json").write_text(text)
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_folds": len(folds), **dict(progress)}
    (folder / TRIAL_FILE).write_text(json.dumps(head))  # last: a folder with it is complete


def read_checkpoint(folder: str | Path, n_folds: int) -> tuple[dict[str, Any], list[tuple[bytes, str]]]:
    """``(progress, fold states)`` of :func:`write_checkpoint`.

    Raises:
        ValueError: Not a serray trial checkpoint, another format version, or another
            number of folds (one line naming the file).
    """
    folder = Path(folder)
    path = folder / TRIAL_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {TRIAL_FILE}; not a serray trial checkpoint")
    head = json.loads(path.read_text())
    if head.get("format") != FORMAT or head.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {head.get('format')!r} v{head.get('format_version')!r}, expected {FORMAT!r} "
                         f"v{FORMAT_VERSION}; start the trial afresh")
    if head.get("finished"):  # saved by a trial that had finished: nothing to go on from
        return head, []
    if int(head["n_folds"]) != int(n_folds):
        raise ValueError(f"{path}: a checkpoint of {head['n_folds']} folds for a search of {n_folds}")
    folds = [((folder / f"fold{k}.safetensors").read_bytes(), (folder / f"fold{k}.json").read_text()) for k in range(n_folds)]
    return head, folds
