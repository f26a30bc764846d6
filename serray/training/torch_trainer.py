"""The torch fold trainer: a registered torch model trained on one fold, one epoch per step."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from serray.models.contract import Batch, parse_stages
from serray.models.registry import ModelSpec
from serray.training.augment import augment_enabled, check_augment, mask_batch
from serray.training.batches import PartBatches
from serray.training.config import _check_kind, _input_info, _spec, check_config
from serray.training.data import FoldData, SplitData
from serray.training.interface import FoldResult, FoldTrainer, kept_base, _empty_metrics, _fold_result, _val_hits, _val_scores
from serray.training.sampling import class_weights, epoch_order

if TYPE_CHECKING:
    import torch

__all__ = ["TorchFoldTrainer", "resolve_device", "forward_part"]

log = logging.getLogger(__name__)


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


def _stage_selection(model: torch.nn.Module, config: Mapping[str, Any], name: str) -> str:
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


def _frozen_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Sub-modules that have parameters, all frozen (kept in evaluation mode while training)."""
    out = []
    for module in model.modules():
        params = list(module.parameters())
        if module is not model and params and not any(p.requires_grad for p in params):
            out.append(module)
    return out


def forward_part(model: torch.nn.Module, t: PartBatches, batch_size: int) -> tuple[Batch, dict]:
    """Eval-mode outputs of a whole part in mini-batches of ``batch_size`` (per-sample
    tensors concatenated), and the part's whole batch: the trainer's final predictions and
    a kept model's (:mod:`serray.artifacts`) go through this one function."""
    import torch

    model.eval()
    chunks: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, t.n, batch_size):
            idx = np.arange(start, min(start + batch_size, t.n))
            for key, value in model.forward_batch(t.batch(idx, labels=False)).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == len(idx):
                    chunks.setdefault(key, []).append(value)
    return t.whole(), {k: torch.cat(v) for k, v in chunks.items()}


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
      (``batch`` as :meth:`PartBatches.whole`, labels included; e.g. fit a back-end).
    - ``after_validation(batch, outputs)``: after every epoch's validation pass, with the
      validation part's eval-mode outputs (``batch`` as :meth:`PartBatches.whole`,
      labels included), for selection a model makes on its own (e.g. early stopping per
      group of utterances, kept by the model and installed in ``after_training``). Never
      called with training or test data, nor when the validation part is empty.
    - ``after_evaluation(part, batch, outputs)``: once per non-empty part, ``part`` =
      ``"validation"`` then ``"test"``, with the part's final eval-mode outputs (``batch``
      as :meth:`PartBatches.whole`, labels included), after the final logits of *both*
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
        self._augment = check_augment(self.config)
        with self._own_rng():
            self.model = self.spec.build(self.config, _input_info(data.shapes, data.classes, data.aux_names, data.kinds)).to(self.device)
            if hasattr(self.model, "prepare"):
                self.model.prepare(data.train)  # fitted on the training part only
        self.groups = self.model.parameter_groups()
        self.stages = parse_stages(str(self.config.get("stages", "all")), list(self.groups), self.spec.stage_plans)
        self._selection = _stage_selection(self.model, self.config, self.spec.name)
        self._aux_inputs = tuple(getattr(self.model, "AUX_INPUTS", ()))
        self._parts = {"train": PartBatches(data.train, data.kinds, self.device, self._aux_inputs)}
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
        self._refit_trainer: TorchFoldTrainer | None = None  # the refit model that scored the test part
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
        stage = self.stages[i]
        self._stage, self._stage_start, self._stage_best = i, self._epoch, self._epoch
        if i > 0 and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            if self._selection == "last":
                self._best = None  # the final weights come from this stage's epochs (selected on validation)
        if hasattr(self.model, "begin_stage"):
            with self._own_rng():
                self.model.begin_stage(i, stage)
        self._configure_stage(i)
        if len(self.stages) > 1:
            log.debug("fold %s: stage %d/%d trains %s", self.data.name, i + 1, len(self.stages), ", ".join(stage.train))

    def _configure_stage(self, i: int) -> None:
        """Stage ``i``'s frozen parameters, a new optimiser and lr schedule, and its epoch budget."""
        import torch

        stage = self.stages[i]
        train = {n for g in stage.train for n in self.groups[g]}
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in train)
        self._frozen_modules = _frozen_modules(self.model)
        self.optimizer = self._make_optimizer(float(self.config["lr"]) * stage.lr_scale)
        decay = float(self.config["lr_decay"])
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=decay) if decay != 1.0 else None
        self._stage_epochs = int(stage.epochs or self.config["epochs"])

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
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

    def _part(self, part: SplitData) -> PartBatches:
        key = next((k for k in ("train", "validation", "test") if getattr(self.data, k) is part), None)
        if key is None:
            return PartBatches(part, self.data.kinds, self.device, self._aux_inputs)
        if key not in self._parts:
            self._parts[key] = PartBatches(part, self.data.kinds, self.device, self._aux_inputs)
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
            if augment_enabled(self._augment):
                batch.inputs = mask_batch(batch.inputs, batch.lengths, t.kinds, self._augment, self._np_rng)
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
        return forward_part(self.model, self._part(part), int(self.config["eval_batch_size"]))

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
        if math.isnan(val_loss) or self.config["early_stop"] == "none":  # keep the latest weights
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
        self._refit_trainer = TorchFoldTrainer(self.spec, cfg, data, seed=self.seed, device=str(self.device))
        res = self._refit_trainer.run()
        return res.test_logits, {"refit": "train+validation", "refit_epochs": max(1, epochs), "n_fit": int(len(data.train))}

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpointable(self) -> bool:
        """Whether :meth:`state_dict` holds all of the training state (not for a model that
        selects inside training, ``after_validation``: its selection lives outside the state dict)."""
        return not hasattr(self.model, "after_validation")

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tensors, meta)``: everything training goes on from (weights, best weights,
        optimiser, schedule, early stopping, stage, epoch, history, both RNG streams);
        :func:`serray.training.state.pack_state` stores it without pickle."""
        from serray.training.state import trainer_state

        return trainer_state(self)

    def load_state_dict(self, state: tuple[Mapping[str, Any], Mapping[str, Any]]) -> None:
        """Continue from :meth:`state_dict` of a trainer of the same model, fold and seed: the
        next :meth:`step` gives what the saved trainer's next step would have (bit for bit on
        CPU). A config with another ``lr`` (population-based training) rescales the loaded
        optimiser's and schedule's learning rates to it; other keys apply as this trainer's
        model was built with them."""
        from serray.training.state import load_trainer_state

        load_trainer_state(self, *state)

    def kept_state(self) -> dict[str, Any]:
        """After :meth:`finalize`: the weights (CPU tensors of the state dict), what the model
        fitted outside it (its optional ``kept_arrays()``, e.g. an ELM back-end or mixture),
        and the fold's facts (:func:`~serray.training.interface.kept_base`); of the refit
        model, with its own statistics, when a refit scored the test part."""
        if self._refit_trainer is not None:
            return self._refit_trainer.kept_state()
        weights = {k: v.detach().to("cpu").clone().contiguous() for k, v in self.model.state_dict().items()}
        extra = dict(self.model.kept_arrays()) if hasattr(self.model, "kept_arrays") else {}
        return {**kept_base(self), "weights": weights, "extra": extra}
