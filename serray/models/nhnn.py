"""NHNN (paper 000 sec. 3.2): a shared DCNN, Dirichlet-process groups, per-group heads.

Procedure, one fold (paper 000 sec. 3.2 and 5; docs/models.md):

1. ``prepare(part)`` (training part only): standardise the ``cluster`` input (eGeMAPS)
   with the training part's statistics, fit scikit-learn's ``BayesianGaussianMixture``
   with a dirichlet-process prior, prune: components holding less than ``min_share`` of
   the training utterances (hard assignment) are dropped, posteriors are renormalised over
   the survivors (so a dropped component's members go to the survivor with the highest
   posterior). One head per surviving group is created (a copy of the DCNN's layers that
   the ``freeze`` choice adapts).
2. Stage 1 trains the shared :class:`~serray.models.baselines.DCNN` (built by
   ``build_dcnn`` from the same config keys) on the whole training part. Nothing of the
   mixture touches it, so with the same seed it is the ``dcnn`` model's training
   bit for bit (stage 1 equals a ``dcnn`` run with the same config and seed).
3. ``begin_stage`` of the group stage (a stage that trains only the ``heads`` group)
   copies the trained shared layers into every head. Every training utterance's loss then
   goes through the head of its group (hard assignment): the heads share no parameter and
   the shared layers are frozen, so this is each group's own fine-tuning, run in one loop.
4. Per-group early stopping: after every validation pass of the group stage
   (``after_validation``) each head is scored on the validation utterances assigned to
   its group (the config's ``early_stop`` rule: loss, or UA with ties broken by loss) and
   its best weights are kept; ``after_training`` installs them. A group without
   validation utterances keeps the shared weights, and :meth:`NHNN.fold_record` says so.
   The group stage as a whole ends by the trainer's rule (``patience`` epochs without a
   better validation score of the mixture's predictions, or its epoch budget), counted
   from its own first epoch: it replaces the DCNN (``LATER_STAGES_REPLACE``), so the
   fold's best epoch is one of its epochs, never the DCNN's peak. The shared weights
   before fine-tuning are not a candidate of a group that has validation utterances (the
   trainer shows the model no validation pass of them).
5. Prediction (eq. 7-10): ``P(class | x) = sum_i softmax(head_i(x))[class] * P(group i |
   egemaps)``; the utterance logits are the log of that mixture (their softmax is the
   mixture itself).

Before the group stage (or with ``stages=all``) the model predicts with the shared DCNN.

Example:
    >>> import numpy as np, torch
    >>> from serray.models import registry
    >>> from serray.models.contract import InputInfo
    >>> spec = registry.get("nhnn")
    >>> cfg = spec.config(preset="small")
    >>> model = spec.build(cfg, InputInfo((40,), 4, shapes={"x": (40,), "cluster": (88,)}))
    >>> sorted(model.parameter_groups())
    ['conv1', 'conv2', 'fc', 'heads', 'out']
    >>> mixture_log_probs(torch.zeros(1, 2, 2), torch.tensor([[0.25, 0.75]])).exp().tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serray.models.baselines import DCNN, build_dcnn
from serray.models.contract import Batch, InputInfo, Stage
from serray.models.layers import SERModule, emotion_cross_entropy, length_mask, masked_max, masked_mean
from serray.models.nhnn_spec import COVARIANCES, FREEZE_CHOICES
from serray.models.nhnn_groups import DPGroups, fit_groups

if TYPE_CHECKING:  # the training package imports the models, not the other way round
    from serray.training.data import SplitData

__all__ = ["GroupHead", "NHNN", "build", "mixture_log_probs"]

log = logging.getLogger(__name__)

CLUSTER_ROLE = "cluster"


def mixture_log_probs(head_logits: Tensor, posterior: Tensor) -> Tensor:
    """Log of eq. 7-10: ``log sum_i softmax(head_logits[:, i]) * posterior[:, i]``.

    Args:
        head_logits: ``[B, G, C]`` logits of every group's head.
        posterior: ``[B, G]`` group posteriors (rows sum to one).

    Returns:
        ``[B, C]`` log class probabilities (floored at 1e-12 before the log).
    """
    probs = torch.softmax(head_logits, dim=2)
    return torch.log((probs * posterior.unsqueeze(2)).sum(dim=1).clamp(min=1e-12))


def _conv_stack(convs: Sequence[nn.Module], h: Tensor, mask: Tensor | None) -> Tensor:
    """Convolutions + ReLU over ``h`` ``[B, C, T]``, padded frames kept at zero (as in
    :meth:`DCNN.encode`)."""
    for conv in convs:
        h = F.relu(conv(h))
        if mask is not None:
            h = h * mask
    return h


def _pool(h: Tensor, mask: Tensor | None, lengths: Tensor | None, pooling: str) -> Tensor:
    if lengths is None:
        return h.mean(dim=2) if pooling == "mean" else h.amax(dim=2)
    return masked_mean(h, mask, lengths) if pooling == "mean" else masked_max(h, mask)


class GroupHead(nn.Module):
    """One group's copy of the adapted DCNN layers: convolutions (maybe none), ``fc``, ``out``.

    Args:
        dcnn: The shared network whose layers are copied (weights included).
        first_conv: Index of the first convolution the head owns (``len(dcnn.convs)``:
            none, the ``fc`` choice; 1: all but the first, the ``fc_conv`` choice).
    """

    def __init__(self, dcnn: DCNN, first_conv: int) -> None:
        super().__init__()
        self.first_conv = int(first_conv)
        self.convs = nn.ModuleList(copy.deepcopy(list(dcnn.convs[self.first_conv:])))
        self.fc = copy.deepcopy(dcnn.fc)
        self.out = copy.deepcopy(dcnn.out)

    def load_from(self, dcnn: DCNN) -> None:
        """Copy the shared network's current weights into this head."""
        with torch.no_grad():
            for mine, theirs in zip(self.convs, dcnn.convs[self.first_conv:]):
                mine.load_state_dict(theirs.state_dict())
            self.fc.load_state_dict(dcnn.fc.state_dict())
            self.out.load_state_dict(dcnn.out.state_dict())

    def forward(self, h: Tensor, mask: Tensor | None, lengths: Tensor | None, pooling: str, drop: nn.Module) -> Tensor:
        """Logits ``[B, C]`` from the shared convolutions' output ``h`` ``[B, channels, T]``."""
        h = _conv_stack(self.convs, h, mask)
        e = F.relu(self.fc(_pool(h, mask, lengths, pooling)))
        return self.out(drop(e))


class NHNN(SERModule):
    """Shared DCNN plus posterior-weighted group heads (see the module docstring).

    Args:
        dcnn: The shared network (its config keys are the ``dcnn`` ones).
        freeze: ``"fc"`` or ``"fc_conv"`` (see :mod:`serray.models.nhnn_spec`).
        mixture: Keyword arguments of :func:`serray.models.nhnn_groups.fit_groups`.
        early_stop: ``"loss"`` or ``"ua"``: the per-group selection rule; ``"none"``: no
            per-group selection (each head keeps its last weights).
        aux_names: Class names of the ``gender`` and ``speaker`` roles (for the record).
    """

    #: The group stage replaces the DCNN (the trainer's ``LATER_STAGES_REPLACE``): it gets
    #: its own patience window, and its best epoch, not the DCNN's, is the fold's.
    LATER_STAGES_REPLACE = True

    def __init__(
        self, dcnn: DCNN, freeze: str = "fc", mixture: Mapping[str, Any] | None = None, early_stop: str = "loss",
        aux_names: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {list(FREEZE_CHOICES)}, got {freeze!r}")
        self.shared = dcnn
        self.freeze = freeze
        self.first_conv = len(dcnn.convs) if freeze == "fc" else 1
        self.mixture_args = dict(mixture or {})
        self.early_stop = early_stop
        self.aux_names = {k: tuple(v) for k, v in (aux_names or {}).items()}
        self.heads = nn.ModuleList()
        self.groups: DPGroups | None = None
        self.grouped = False  # the group stage has begun: predict with the mixture of heads
        self._selection: list[dict] = []
        self._record: dict[str, Any] = {}
        self._epoch = 0

    # -- the contract ------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[str]]:
        """The shared DCNN's groups (``conv1``, ``conv2``, ..., ``fc``, ``out``) and ``heads``."""
        out = {g: [f"shared.{n}" for n in names] for g, names in self.shared.parameter_groups().items()}
        out["heads"] = [f"heads.{n}" for n, _ in self.heads.named_parameters()]
        return out

    def posterior(self, batch: Batch) -> Tensor:
        """``[B, G]`` posteriors of the surviving groups for the batch's ``cluster`` input."""
        if self.groups is None:
            raise RuntimeError("nhnn: the groups are fitted in prepare(part); call it with the training part first")
        x = batch.inputs[CLUSTER_ROLE].detach().cpu().numpy()
        return torch.from_numpy(self.groups.posterior(x)).to(batch.x.device, torch.float32)

    def forward_batch(self, batch: Batch) -> dict[str, Tensor]:
        """Shared DCNN outputs before the group stage; then ``logits`` (log mixture, eq. 7-10),
        ``group_logits`` ``[B, G, C]``, ``posterior`` ``[B, G]`` and ``head_logits`` (the same
        logits as a tuple of ``[B, C]``, one per head)."""
        x, lengths = batch.args()
        if not self.grouped:
            return self.shared(x, lengths)
        h = x.transpose(1, 2)
        mask = None if lengths is None else length_mask(lengths, h.shape[2]).unsqueeze(1)
        h = _conv_stack(self.shared.convs[: self.first_conv], h, mask)
        per_head = [head(h, mask, lengths, self.shared.pooling, self.shared.drop) for head in self.heads]
        group_logits = torch.stack(per_head, dim=1)
        post = self.posterior(batch)
        return {
            "logits": mixture_log_probs(group_logits, post), "group_logits": group_logits, "posterior": post,
            "head_logits": tuple(per_head),  # unstacked, so that the loss reaches only the heads it uses
        }

    def loss(self, batch: Batch, outputs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Stage 1: the DCNN's cross-entropy. Group stage: every utterance's cross-entropy
        through its own group's head (mean over the batch); heads of groups absent from
        the batch get no gradient at all."""
        if not self.grouped:
            return super().loss(batch, outputs)
        group = outputs["posterior"].argmax(dim=1)
        heads = outputs.get("head_logits") or outputs["group_logits"].unbind(dim=1)
        w = batch.class_weights
        terms = [
            emotion_cross_entropy(heads[g][group == g], batch.y[group == g], w, reduction="sum")
            for g in torch.unique(group).tolist()
        ]
        norm = max(len(batch.y), 1) if w is None else w.to(heads[0].device)[batch.y].sum()  # weighted mean with class weights
        total = torch.stack(terms).sum() / norm
        return total, {"emotion": total}

    # -- trainer hooks -----------------------------------------------------------------
    def prepare(self, part: SplitData) -> None:
        """Fit the groups on the training part's ``cluster`` vectors; create one head each."""
        seed = int(torch.initial_seed()) % (2**32 - 1)  # the trainer's seed; no RNG draw
        self.groups = fit_groups(np.asarray(part.inputs[CLUSTER_ROLE].data), random_state=seed, **self.mixture_args)
        device = next(self.shared.parameters()).device
        self.heads = nn.ModuleList([GroupHead(self.shared, self.first_conv) for _ in range(self.groups.n_groups)]).to(device)
        self._record = self.groups.record(part, self.aux_names)

    def begin_stage(self, index: int, stage: Stage) -> None:
        """At the group stage (a stage training only ``heads``) copy the shared layers into the heads."""
        if self.groups is None or index == 0 or set(stage.train) != {"heads"}:
            return
        for head in self.heads:
            head.load_from(self.shared)
        self.grouped = True
        self._selection = [
            {"best": None, "epoch": 0, "state": copy.deepcopy(head.state_dict()), "n_val": None} for head in self.heads
        ]
        self._epoch = 0

    def after_validation(self, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Keep each head's best weights on its own group's validation utterances (none are
        chosen with ``early_stop="none"``: every head keeps its last weights)."""
        if not self.grouped or self.early_stop == "none":
            return
        self._epoch += 1
        group = outputs["posterior"].argmax(dim=1)
        for g, sel in enumerate(self._selection):
            members = group == g
            sel["n_val"] = int(members.sum())
            if sel["n_val"] == 0:
                continue
            score = _score(outputs["group_logits"][members, g], batch.y[members], self.early_stop)
            if sel["best"] is None or score < sel["best"]:
                sel["best"], sel["epoch"] = score, self._epoch
                sel["state"] = {k: v.detach().clone() for k, v in self.heads[g].state_dict().items()}

    def after_training(self, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Install every head's selected weights (the shared copy where none was selected).
        Without any validation pass (a fold without validation part, e.g. ``serray export
        --refit all-data``, which trains the group stage for a fixed epoch count) the heads
        keep their trained weights."""
        if not self.grouped:
            return
        for head, sel in zip(self.heads, self._selection):
            if sel["n_val"] is not None:
                head.load_state_dict(sel["state"])

    def kept_arrays(self) -> dict[str, np.ndarray]:
        """The fitted groups (standardisation, mixture arrays, survivors) and whether the group
        stage ran, kept with the fold's model (the heads' weights are in the state dict)."""
        if self.groups is None:
            return {}
        g, m = self.groups, self.groups.mixture
        return {"groups.mean": np.asarray(g.mean), "groups.scale": np.asarray(g.scale),
                "groups.survivors": np.asarray(g.survivors, dtype=np.int64), "groups.shares": np.asarray(g.shares),
                "mixture.weights": np.asarray(m.weights_), "mixture.means": np.asarray(m.means_),
                "mixture.precisions_cholesky": np.asarray(m.precisions_cholesky_),
                "mixture.covariance_type": np.asarray(str(m.covariance_type)),
                "grouped": np.asarray(bool(self.grouped))}

    def load_kept_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Install kept groups (:meth:`kept_arrays`) and one head per group, before the state
        dict is loaded. The mixture is its arrays only (all that prediction reads)."""
        from types import SimpleNamespace

        if "groups.mean" not in arrays:
            return
        mixture = SimpleNamespace(weights_=arrays["mixture.weights"], means_=arrays["mixture.means"],
                                  precisions_cholesky_=arrays["mixture.precisions_cholesky"],
                                  covariance_type=str(arrays["mixture.covariance_type"]))
        self.groups = DPGroups(arrays["groups.mean"], arrays["groups.scale"], mixture,
                               np.asarray(arrays["groups.survivors"], dtype=np.int64),
                               [float(v) for v in arrays["groups.shares"]], np.zeros(0, dtype=np.int64))
        device = next(self.shared.parameters()).device
        self.heads = nn.ModuleList([GroupHead(self.shared, self.first_conv) for _ in range(self.groups.n_groups)]).to(device)
        self.grouped = bool(arrays["grouped"])

    def fold_record(self) -> dict[str, Any]:
        """Groups of this fold: weights, shares, per group gender counts, speakers, and
        which heads kept the shared weights (JSON-able)."""
        rec = copy.deepcopy(self._record)
        rec["freeze"] = self.freeze
        rec["group_stage"] = bool(self.grouped)
        if not self.grouped:
            return rec
        rec["head_selection"] = "last epoch" if self.early_stop == "none" else f"best validation {self.early_stop}"
        for info, sel in zip(rec.get("groups", []), self._selection):
            info["n_validation"] = int(sel["n_val"] or 0)
            info["kept_shared"] = sel["best"] is None and sel["n_val"] is not None  # no validation pass: trained
            info["best_group_epoch"] = int(sel["epoch"])
        rec["kept_shared"] = [i for i, sel in enumerate(self._selection) if sel["best"] is None and sel["n_val"] is not None]
        return rec


def _score(logits: Tensor, y: Tensor, rule: str) -> tuple[float, ...]:
    """Smaller is better: ``(loss,)`` or ``(-UA over the classes present, loss)``."""
    logits = logits.detach().float()
    loss = float(F.cross_entropy(logits, y))
    if rule != "ua":
        return (loss,)
    pred = logits.argmax(dim=1)
    recalls = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y).tolist()]
    return (-float(np.mean(recalls)), loss)


def build(config: Mapping[str, Any], info: InputInfo) -> NHNN:
    """:class:`NHNN` from the config: the shared DCNN from the ``dcnn`` keys, the mixture keys.

    Raises:
        ValueError: A bad ``freeze``, ``covariance``, ``min_share`` or component count, or
            inputs that are not a frame sequence plus a ``cluster`` vector.
    """
    shapes = dict(info.shapes) or {"x": tuple(info.shape)}
    if CLUSTER_ROLE in shapes and len(shapes[CLUSTER_ROLE]) != 1:
        raise ValueError(f"nhnn: the {CLUSTER_ROLE!r} input must be utterance vectors (e.g. egemaps), got shape {shapes[CLUSTER_ROLE]}")
    if config["covariance"] not in COVARIANCES:
        raise ValueError(f"covariance must be one of {list(COVARIANCES)}, got {config['covariance']!r}")
    if not 0.0 <= float(config["min_share"]) < 1.0:
        raise ValueError(f"min_share must be in [0, 1), got {config['min_share']}")
    if int(config["max_components"]) < 1 or float(config["dp_concentration"]) <= 0:
        raise ValueError(f"max_components must be >= 1 and dp_concentration > 0, got {config['max_components']}, {config['dp_concentration']}")
    mixture = {
        "max_components": int(config["max_components"]), "concentration": float(config["dp_concentration"]),
        "covariance": str(config["covariance"]), "reg_covar": float(config["dp_reg_covar"]),
        "max_iter": int(config["dp_max_iter"]), "min_share": float(config["min_share"]),
    }
    return NHNN(
        build_dcnn(config, info), freeze=str(config["freeze"]), mixture=mixture,
        early_stop=str(config.get("early_stop", "loss")), aux_names=info.aux_names,
    )
