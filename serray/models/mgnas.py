"""Multi-gating + NAS model of paper 001 (Wang et al.): feature experts, centroid
contrastive loss, per-domain softmax gates and hard-concrete NAS connectivity.

One expert per input role, i.e. per named feature set (:mod:`serray.models.mgnas_experts`):
sequences through CNN + BiLSTM + attention pooling, vectors passed through. Config key ``gating``:

* ``none`` (single-domain model, sec. 4.1; the multi-domain Base): the experts'
  outputs concatenated -> one tower FC(u) -> act -> dropout -> FC(u) -> act -> dropout ->
  FC(C). It never sees the domain: the union of the languages' emotions, no mask.
* ``shared_bottom``: every expert projected to ``proj_dim``, their mean -> the
  utterance's domain tower.
* ``omoe``: one softmax gate ``softmax(W x_sel)`` over the projected experts, shared by
  the domains; ``mmoe``: one gate per domain (eq. 7); ``nas``: a gate per domain over
  ``u_i = sum_j xi_ij W_ij v_j`` with domain-specific hard-concrete ``xi`` (eq. 8-9).

``x_sel`` is the input role named by ``selector`` (default the first vector role; a
sequence role gives the mean of its frames). The domain is the
auxiliary role ``domain`` (config key ``domain``: a manifest column, e.g. ``language``);
it is an *input* (:attr:`MGNAS.AUX_INPUTS`): an utterance goes to its domain's tower at
training and test time, and one of unknown domain to the mean of all towers. With
``domain_classes`` (gated modes) a domain's tower never predicts an emotion absent from
that domain's training utterances (EmoDB has no ``surprise``, EMOVO no ``boredom``).

Loss: ``CE + alpha * contrastive + l0_weight * open NAS connections`` with the
contrastive term of :mod:`serray.models.mgnas_contrastive` on the tower input
(concatenated experts, or the gated mixture); ``domain_alpha`` gives a domain's
utterances their own alpha (the paper's per-language values); batches are class-balanced
(``samples_per_class`` per emotion) through the trainer's ``batch_order`` hook.

:meth:`MGNAS.fold_record` returns the gates' mean weight per domain over the fold's
training, validation and test utterances (the trainer's ``after_training`` and
``after_evaluation`` hooks) and the NAS gates' test-time values (JSON);
:func:`serray.models.mgnas_plots.plot_gate_weights` draws them.

Example:
    >>> import torch
    >>> from serray.models import registry
    >>> from serray.models.contract import Batch, InputInfo
    >>> spec = registry.get("mgnas")
    >>> cfg = spec.config(preset="small", overrides={"gating": "nas", "units": 8, "proj_dim": 8, "att_dim": 8})
    >>> info = InputInfo((6,), 3, n_domains=2, shapes={"mfb": (6,), "mfcc": (4,), "egemaps": (5,)},
    ...                  aux_classes={"domain": 2}, aux_names={"domain": ("de", "it")},
    ...                  kinds={"mfb": "sequence", "mfcc": "sequence", "egemaps": "vector"})
    >>> model = spec.build(cfg, info)
    >>> b = Batch({"mfb": torch.randn(4, 9, 6), "mfcc": torch.randn(4, 9, 4), "egemaps": torch.randn(4, 5)},
    ...           {"mfb": torch.tensor([9, 5, 3, 9]), "mfcc": torch.tensor([9, 5, 3, 9])}, torch.tensor([0, 1, 2, 0]),
    ...           aux={"domain": torch.tensor([0, 1, 1, 0])}, aux_mask={"domain": torch.tensor([True] * 4)})
    >>> out = model.forward_batch(b)
    >>> tuple(out["logits"].shape), tuple(out["gates"].shape), sorted(model.loss(b, out)[1])
    ((4, 3), (4, 3), ['contrastive', 'emotion', 'l0'])
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from serray.models.contract import Batch, InputInfo
from serray.models.layers import SERModule, emotion_cross_entropy, length_mask
from serray.models.mgnas_contrastive import CentroidContrastiveLoss, balanced_batches
from serray.models.mgnas_experts import SequenceExpert, VectorExpert
from serray.models.mgnas_gates import NASConnections, SoftmaxGates
from serray.models.mgnas_spec import ACTIVATIONS, GATING_MODES, MGNAS_CONFIG

if TYPE_CHECKING:  # the training package imports the models, not the other way round
    from serray.training.data import SplitData

__all__ = ["MGNAS", "Tower", "build", "domain_alphas"]

log = logging.getLogger(__name__)

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "mish": nn.Mish}
#: Logit offset of an emotion a domain's training data lacks (never predicted there).
_ABSENT = -1e4
_GROUPS = {"experts": ("experts", "projections"), "gates": ("gates", "nas"), "towers": ("towers",),
           "contrastive": ("contrastive",)}


def _activations(text: str) -> tuple[str, str]:
    parts = [p.strip().lower() for p in str(text).split("+")]
    if len(parts) != 2 or any(p not in ACTIVATIONS for p in parts):
        raise ValueError(f"activations must be two of {ACTIVATIONS} joined by + (e.g. tanh+relu), got {text!r}")
    return parts[0], parts[1]


class Tower(nn.Sequential):
    """FC(units) -> act1 -> dropout -> FC(units) -> act2 -> dropout -> FC(n_classes)."""

    def __init__(self, in_dim: int, units: int, n_classes: int, activations: str = "tanh+relu", dropout: float = 0.1) -> None:
        a1, a2 = _activations(activations)
        super().__init__(nn.Linear(in_dim, units), _ACT[a1](), nn.Dropout(dropout), nn.Linear(units, units),
                         _ACT[a2](), nn.Dropout(dropout), nn.Linear(units, n_classes))


class MGNAS(SERModule):
    """The model of the module docstring; build it with :func:`build`.

    Args:
        experts: Role -> expert module (with ``out_dim``), in input order.
        kinds: Role -> ``"sequence"`` or ``"vector"``.
        n_classes: Emotion classes.
        domains: Domain names (one tower each unless ``gating="none"``).
        gating: One of :data:`~serray.models.mgnas_spec.GATING_MODES`.
        selector: (role, width) of the gates' input.
        config: The model config (tower, loss and NAS keys).
    """

    AUX_INPUTS = ("domain",)

    def __init__(self, experts: Mapping[str, nn.Module], kinds: Mapping[str, str], n_classes: int, domains: Sequence[str],
                 gating: str, selector: tuple[str, int], config: Mapping[str, Any]) -> None:
        super().__init__()
        self.roles, self.kinds = list(experts), dict(kinds)
        self.experts = nn.ModuleDict(experts)
        self.domains, self.gating, self.selector = tuple(domains), gating, selector[0]
        k, m = len(self.domains), len(self.roles)
        units, acts, drop = int(config["units"]), str(config["activations"]), float(config["dropout"])
        if gating == "none":
            width = sum(e.out_dim for e in self.experts.values())
            self.towers = nn.ModuleList([Tower(width, units, n_classes, acts, drop)])
        else:
            d = int(config["proj_dim"])
            self.projections = nn.ModuleDict({r: nn.Linear(e.out_dim, d) for r, e in self.experts.items()})
            self.towers = nn.ModuleList(Tower(d, units, n_classes, acts, drop) for _ in range(k))
            if gating in ("omoe", "mmoe", "nas"):
                self.gates = SoftmaxGates(selector[1], m, 1 if gating == "omoe" else k)
            if gating == "nas":
                self.nas = NASConnections(m, d, k, beta=float(config["nas_beta"]), gamma=float(config["nas_gamma"]),
                                          zeta=float(config["nas_zeta"]), init=float(config["nas_init"]),
                                          lr_scale=float(config["nas_lr_scale"]))
        self.contrastive = CentroidContrastiveLoss(int(config["min_class_samples"]))
        self.alpha, self.l0_weight = float(config["alpha"]), float(config["l0_weight"])
        self.domain_alpha = domain_alphas(config, self.domains)  # alpha of each domain's utterances
        # the Base model (one shared tower) does not know the language: no per-domain class mask
        self.per_class = int(config["samples_per_class"])
        self.domain_classes = bool(config["domain_classes"]) and gating != "none"
        self.register_buffer("class_bias", torch.zeros(k, n_classes))
        self._gates: dict[str, tuple[dict, dict]] = {}

    # -- forward -----------------------------------------------------------------------
    def _domain(self, batch: Batch, n: int, device: torch.device) -> Tensor:
        """Domain code per sample, -1 where unknown (all 0 without a domain role)."""
        if "domain" not in batch.aux:
            return torch.zeros(n, dtype=torch.long, device=device)
        codes = batch.aux["domain"].long()
        return torch.where(batch.aux_mask["domain"], codes, torch.full_like(codes, -1))

    @staticmethod
    def _own(per_domain: Tensor, domain: Tensor) -> Tensor:
        """Row ``domain[b]`` of ``per_domain`` ``[B, K, ...]``; the mean over K where unknown (-1)."""
        if per_domain.shape[1] == 1:
            return per_domain[:, 0]
        own = per_domain[torch.arange(len(domain), device=domain.device), domain.clamp(min=0)]
        unknown = (domain < 0).view(-1, *([1] * (own.dim() - 1)))
        return torch.where(unknown, per_domain.mean(dim=1), own)

    def _selector_input(self, batch: Batch) -> Tensor:
        """The selector role's vector, or the mean of its valid frames."""
        x = batch.inputs[self.selector]
        if self.kinds[self.selector] != "sequence":
            return x
        n = batch.lengths[self.selector]
        valid = length_mask(n, x.shape[1]).unsqueeze(2).to(x.dtype)
        return (x * valid).sum(dim=1) / n.clamp(min=1).unsqueeze(1).to(x.dtype)

    def _mixture(self, batch: Batch, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(h [B, K, d] tower inputs per domain, gates [B, K, M], xi or None)``."""
        v = torch.stack([self.projections[r](f) for r, f in zip(self.roles, feats)], dim=1)  # [B, M, d]
        k, xi = len(self.domains), None
        u = v.unsqueeze(1)
        if self.gating == "nas":
            u, xi = self.nas(v)
        if self.gating == "shared_bottom":
            g = torch.full((v.shape[0], 1, v.shape[1]), 1.0 / v.shape[1], device=v.device, dtype=v.dtype)
        else:
            g = self.gates(self._selector_input(batch))
        g = g.expand(-1, k, -1)
        return torch.einsum("bkm,bkmd->bkd", g, u.expand(-1, k, -1, -1)), g, xi

    def forward_batch(self, batch: Batch) -> dict[str, Tensor]:
        """``{"logits" [B, C], "embedding", "domain" [B] (-1 unknown), "gates" [B, M] (gated modes)}``."""
        feats = [self.experts[r](*batch.args(r)) for r in self.roles]
        domain = self._domain(batch, feats[0].shape[0], feats[0].device)
        out: dict[str, Tensor] = {"domain": domain}
        if self.gating == "none":  # one shared tower that never sees the domain (the paper's Base)
            emb = torch.cat(feats, dim=1)
            out.update(logits=self.towers[0](emb), embedding=emb)
            return out
        h, g, _ = self._mixture(batch, feats)
        logits = torch.stack([t(h[:, i]) for i, t in enumerate(self.towers)], dim=1) + self.class_bias.unsqueeze(0)
        out.update(logits=self._own(logits, domain), embedding=self._own(h, domain), gates=self._own(g, domain))
        return out

    def loss(self, batch: Batch, outputs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``CE + alpha * contrastive + l0_weight * l0`` and the three terms (``contrastive``
        unweighted); with ``domain_alpha`` each utterance's contrastive term has its domain's alpha."""
        ce = emotion_cross_entropy(outputs["logits"], batch.y, batch.class_weights)
        if all(a == self.alpha for a in self.domain_alpha):
            con = self.contrastive(outputs["embedding"], batch.y)
            total = ce + self.alpha * con
        else:  # eq. 6 with each utterance's term weighted by its domain's alpha (unknown domain: alpha)
            per = self.contrastive(outputs["embedding"], batch.y, reduction="none")
            table = torch.tensor((*self.domain_alpha, self.alpha), dtype=per.dtype, device=per.device)
            con = per.sum()
            total = ce + (table[outputs["domain"]] * per).sum()  # domain -1 picks the last entry, alpha
        parts = {"emotion": ce, "contrastive": con}
        if self.gating == "nas":
            parts["l0"] = self.nas.gates.expected_open()
            total = total + self.l0_weight * parts["l0"]
        return total, parts

    # -- trainer hooks -----------------------------------------------------------------
    def batch_order(self, y: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Class-balanced batches (``samples_per_class`` per emotion); a shuffle when it is 0."""
        if self.per_class <= 0:
            order = rng.permutation(len(y))
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return balanced_batches(y, batch_size, self.per_class, rng)

    def prepare(self, part: SplitData) -> None:
        """Which emotions each domain's training utterances have (``domain_classes``)."""
        domain = part.aux.get("domain")
        if not self.domain_classes or domain is None:
            return
        bias = torch.full_like(self.class_bias, _ABSENT)
        for k in range(len(self.domains)):
            present = np.unique(part.y[domain == k])
            bias[k, torch.as_tensor(present, dtype=torch.long)] = 0.0
        bias[bias.eq(_ABSENT).all(dim=1)] = 0.0  # a domain without training data: all emotions allowed
        self.class_bias.copy_(bias)

    def _record_gates(self, part: str, outputs: Mapping[str, Tensor]) -> None:
        """Mean gate weight of every expert per domain over a part's utterances (eval mode)."""
        self._gates.pop(part, None)
        if "gates" not in outputs:
            return
        g, domain = outputs["gates"].detach().float().cpu(), outputs["domain"].cpu()
        means, counts = {}, {}
        for k, name in enumerate(self.domains):
            rows = g[domain == k]
            if len(rows):
                means[name], counts[name] = [float(w) for w in rows.mean(dim=0)], int(len(rows))
        self._gates[part] = (means, counts)

    def after_training(self, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Gate weights over the training utterances (for :meth:`fold_record`)."""
        self._gates = {}
        self._record_gates("train", outputs)

    def after_evaluation(self, part: str, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Gate weights over the validation or test utterances (after their final predictions)."""
        self._record_gates(part, outputs)

    def fold_record(self) -> dict[str, Any]:
        """JSON: gating mode, experts, domains; ``gate_weights[part][domain]`` = mean gate
        weight of each expert (in ``experts`` order) over the part's utterances of that
        domain (parts ``train``, ``validation``, ``test``), ``gate_counts[part][domain]`` =
        those utterances; NAS test-time gates ``nas_gates[domain][to]`` = ``xi`` from each
        expert (``experts`` order) and ``nas_closed[domain]`` = connections exactly 0;
        contrastive ``w, b``."""
        rec: dict[str, Any] = {"gating": self.gating, "experts": list(self.roles), "domains": list(self.domains),
                               "contrastive": {"w": float(self.contrastive.w.detach()), "b": float(self.contrastive.b.detach())}}
        if self._gates:
            rec["gate_weights"] = {part: means for part, (means, _) in self._gates.items()}
            rec["gate_counts"] = {part: counts for part, (_, counts) in self._gates.items()}
        rec["axis_names"] = {"gate_weights": list(self.roles), "nas_gates": list(self.roles)}  # report columns
        if self.gating == "nas":
            was = self.nas.gates.training
            self.nas.gates.eval()
            with torch.no_grad():
                xi = self.nas.gates().cpu()
            self.nas.gates.train(was)
            rec["nas_gates"] = {name: {r: [float(v) for v in xi[k, i]] for i, r in enumerate(self.roles)}
                                for k, name in enumerate(self.domains)}
            rec["nas_closed"] = {name: int((xi[k] == 0).sum()) for k, name in enumerate(self.domains)}
        return rec

    def parameter_groups(self) -> dict[str, list[str]]:
        """``experts`` (and projections), ``gates`` (softmax and NAS), ``towers``, ``contrastive``; empty ones left out."""
        out: dict[str, list[str]] = {}
        for name, _ in self.named_parameters():
            top = name.split(".", 1)[0]
            group = next(g for g, tops in _GROUPS.items() if top in tops)
            out.setdefault(group, []).append(name)
        return out


def domain_alphas(config: Mapping[str, Any], domains: Sequence[str]) -> tuple[float, ...]:
    """The contrastive weight of each domain: ``domain_alpha[name]``, else ``alpha``.

    The paper sets alpha per language (sec. 5.1: English 0.1, German 0.01, French 0.015):
    ``--set domain_alpha='{en: 0.1, de: 0.01, fr: 0.015}'`` with ``--domain language``.

    Example:
        >>> domain_alphas({"alpha": 0.01, "domain_alpha": {"it": 0.015}}, ("de", "it"))
        (0.01, 0.015)

    Raises:
        ValueError: ``domain_alpha`` is not a mapping, names no domain of the run, or
            holds a value that is not a number >= 0.
    """
    given = config.get("domain_alpha") or {}
    if not isinstance(given, Mapping):
        raise ValueError(f"domain_alpha must map domain names to weights, e.g. {{de: 0.01, it: 0.015}}; got {given!r}")
    stray = sorted(str(k) for k in given if str(k) not in domains)
    if stray:
        raise ValueError(f"domain_alpha: {stray} are not domains of this run; its domains: {list(domains)} "
                         "(a per-domain alpha needs --domain COLUMN)")
    bad = {k: v for k, v in given.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0}
    if bad:
        raise ValueError(f"domain_alpha: weights must be numbers >= 0, got {bad}")
    named = {str(k): float(v) for k, v in given.items()}
    return tuple(named.get(d, float(config["alpha"])) for d in domains)


def _experts(config: Mapping[str, Any], info: InputInfo) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """One expert per input role (sequence or vector, from ``info.kinds``), sized from
    ``seq_experts`` (``default`` and per-role entries) and the input shapes."""
    kinds = {r: info.kinds.get(r) for r in info.shapes}
    lacking = [r for r, k in kinds.items() if k not in ("sequence", "vector")]
    if lacking:
        raise ValueError(f"mgnas needs sequence or vector inputs; input(s) {lacking} are {[kinds[r] for r in lacking]}")
    sizes = dict(config["seq_experts"] or {})
    named_vectors = sorted(r for r in sizes if kinds.get(r) == "vector")
    if named_vectors:
        raise ValueError(f"seq_experts: {named_vectors} are vector inputs; sequence roles: "
                         f"{[r for r, k in kinds.items() if k == 'sequence']} (or 'default')")
    stray = sorted(set(sizes) - set(kinds) - {"default"} - set(MGNAS_CONFIG["seq_experts"]))
    if stray:
        log.warning("seq_experts: %s name no input of this run (roles %s); those entries are not used", stray, list(kinds))
    base = {"conv": 64, "hidden": 128, "layers": 1, **dict(sizes.get("default") or {})}
    experts = {}
    for role, kind in kinds.items():
        dim = int(info.shapes[role][0])
        if kind == "vector":
            experts[role] = VectorExpert(dim, int(config["vec_proj"]))
            continue
        s = {**base, **dict(sizes.get(role) or {})}
        experts[role] = SequenceExpert(dim, conv=int(s["conv"]), hidden=int(s["hidden"]), layers=int(s["layers"]),
                                       att_dim=int(config["att_dim"]), kernel_sizes=[int(k) for k in config["kernel_sizes"]],
                                       time_pool=int(config["time_pool"]))
    return experts, kinds


def _selector(config: Mapping[str, Any], info: InputInfo, kinds: Mapping[str, str]) -> tuple[str, int]:
    """(role, width) of the gates' input: ``selector``, or the first vector role, else the first role."""
    name = str(config["selector"] or "")
    if not name:
        name = next((r for r, k in kinds.items() if k == "vector"), next(iter(kinds)))
    if name not in kinds:
        raise ValueError(f"selector must be one of this run's input roles {list(kinds)} (or empty: the first vector), got {name!r}")
    return name, int(info.shapes[name][0])


def build(config: Mapping[str, Any], info: InputInfo) -> MGNAS:
    """:class:`MGNAS` from the config and the input info (``info.aux_names["domain"]``: the domains).

    Raises:
        ValueError: Unknown gating mode or activation, a selector that is not an input
            role, or bad sizes; the message names the key and the valid choices.
    """
    gating = str(config["gating"])
    if gating not in GATING_MODES:
        raise ValueError(f"gating must be one of {GATING_MODES}, got {gating!r}")
    _activations(str(config["activations"]))
    if float(config["alpha"]) < 0 or float(config["l0_weight"]) < 0:
        raise ValueError(f"alpha and l0_weight must be >= 0, got {config['alpha']} and {config['l0_weight']}")
    experts, kinds = _experts(config, info)
    selector = _selector(config, info, kinds)
    domains = tuple(info.aux_names.get("domain", ())) or tuple(f"domain{i}" for i in range(info.n_domains)) or ("all",)
    if gating != "none" and len(domains) < 2:
        log.warning("gating=%s with one domain %s: its towers and gates are not per language; "
                    "set --domain COLUMN (e.g. language) for the multi-domain model", gating, list(domains))
    return MGNAS(experts, kinds, info.n_classes, domains, gating, selector, config)
