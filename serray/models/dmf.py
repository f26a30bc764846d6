"""Diverse feature mapping (paper 003): vanilla / MTL / DANN systems and fake-domain remapping.

The input is an utterance vector (``dmf``) or a frame sequence (``dmf_seq``). When it is a
stack of ``n_layers`` SSL layers of equal width (``ssl`` loaded with ``layer=all``, the
layers concatenated), :class:`LayerMix` turns it into one layer: a learnable
softmax-weighted sum (``layer="weighted"``, SUPERB style; the weights are reported per
fold by :meth:`DMF.fold_record`) or one chosen layer (``layer=<position>``).

Then a feature extractor FE maps it to an embedding: an MLP for vectors, a frame MLP with
attention pooling over the valid frames for sequences. The emotion classifier
EC = FC(D, 256) + ReLU + FC(256, C) reads the embedding; the domain classifier DC (the
same shape, one output per domain) reads it through a gradient-scale layer
(:func:`serray.models.layers.grad_scale`), so the gradient of ``w_domain * CE_domain``
reaching FE is multiplied by ``gamma``: 0 vanilla (FE gets nothing from DC), +1 multi-task
(MTL), -1 domain-adversarial (DANN); the config key ``arm`` (vanilla / mtl / dann) sets
the sign of ``gamma`` (see :func:`serray.models.dmf_spec.effective_gamma`). DC itself always learns from its loss; with
``gamma = 0`` it is a probe of how much domain information the embedding carries and
changes nothing upstream (the emotion path trains as without DC). Domain labels that are
unknown are masked out of CE_domain.

Fake-domain remapping (``remap=<domain value>``, e.g. ``fxemodb`` for ``domain=gender*corpus``)
needs a second stage that freezes DC (``stages=remap``: ``all;all-dc*0.1``): from that
stage on every training utterance's domain label is the fixed value d*, so FE is pushed
(through the gradient scale, ``gamma=1`` in the paper) to map every utterance towards
domain d* while EC keeps learning the emotion.

Example:
    >>> import torch
    >>> from serray.models import registry
    >>> spec = registry.get("dmf")
    >>> cfg = spec.config(overrides={"n_layers": 3, "fe_hidden": [8], "head_hidden": 8})
    >>> model = spec.build(cfg, InputInfo((12,), 4, 2))
    >>> out = model(torch.randn(5, 12))
    >>> tuple(out["logits"].shape), tuple(out["domain_logits"].shape), tuple(out["embedding"].shape)
    ((5, 4), (5, 2), (5, 8))
    >>> [round(w, 3) for w in model.fold_record()["layer_weights"]]
    [0.333, 0.333, 0.333]
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from serray.models.contract import Batch, InputInfo, Stage, parse_stages
from serray.models.dmf_spec import DMF_CONFIG as DEFAULT_CONFIG
from serray.models.dmf_spec import DMF_STAGE_PLANS, effective_gamma
from serray.models.layers import SERModule, emotion_cross_entropy, grad_scale, length_mask, masked_cross_entropy

__all__ = ["DEFAULT_CONFIG", "LayerMix", "MLPExtractor", "AttentionExtractor", "Head", "DMF", "FineTunedDMF", "build", "build_seq"]

logger = logging.getLogger(__name__)


class LayerMix(nn.Module):
    """One layer out of a stack ``[..., L * H]``: softmax-weighted sum or a fixed choice.

    Args:
        n_layers: Layers ``L`` in the input (1: the input is one layer; passed through).
        width: Width ``H`` of one layer.
        layer: ``"weighted"`` or a layer position (negative counts from the end).

    Example:
        >>> mix = LayerMix(2, 3, layer=-1)
        >>> mix(torch.arange(6.0).view(1, 6)).tolist()
        [[3.0, 4.0, 5.0]]
    """

    def __init__(self, n_layers: int, width: int, layer: str | int = "weighted") -> None:
        super().__init__()
        self.n_layers, self.width = int(n_layers), int(width)
        self.weighted = self.n_layers > 1 and layer == "weighted"
        self.position: int | None = None
        if self.n_layers > 1 and not self.weighted:
            pos = int(layer)
            if not -self.n_layers <= pos < self.n_layers:
                raise ValueError(f"dmf: layer {layer} is out of range for n_layers={self.n_layers}; use 'weighted' or 0..{self.n_layers - 1}")
            self.position = pos % self.n_layers
        if self.weighted:
            self.logits = nn.Parameter(torch.zeros(self.n_layers))

    def weights(self) -> Tensor:
        """Weight of every layer (softmax of the learnable logits, one-hot for a fixed choice)."""
        if self.weighted:
            return torch.softmax(self.logits, dim=0)
        w = torch.zeros(self.n_layers)
        w[self.position or 0] = 1.0
        return w

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.n_layers == 1:
            return x
        stack = x.reshape(*x.shape[:-1], self.n_layers, self.width)
        if self.position is not None:
            return stack[..., self.position, :]
        return (stack * torch.softmax(self.logits, dim=0).unsqueeze(-1)).sum(dim=-2)


def _mlp(in_dim: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU(), nn.Dropout(dropout)]
        d = int(h)
    return nn.Sequential(*layers), d


class MLPExtractor(nn.Module):
    """FE for vectors: ``[B, D] -> [B, fe_hidden[-1]]`` (Linear + ReLU + dropout per layer)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.net, self.out_dim = _mlp(in_dim, hidden, dropout)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # noqa: D102
        return self.net(x)


class AttentionExtractor(nn.Module):
    """FE for frames: a frame MLP, then attention pooling over the valid frames.

    ``[B, T, D]`` (with ``lengths``) -> ``[B, fe_hidden[-1]]``: the pooled embedding is
    ``sum_t a_t h_t`` with ``a = softmax_t(w . tanh(V h_t))`` over valid frames.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.net, self.out_dim = _mlp(in_dim, hidden, dropout)
        self.score = nn.Sequential(nn.Linear(self.out_dim, self.out_dim), nn.Tanh(), nn.Linear(self.out_dim, 1))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # noqa: D102
        h = self.net(x)
        s = self.score(h).squeeze(-1)
        if lengths is not None:
            s = s.masked_fill(~length_mask(lengths, x.shape[1]), float("-inf"))
        return (torch.softmax(s, dim=1).unsqueeze(-1) * h).sum(dim=1)


class Head(nn.Sequential):
    """FC(D, hidden) + ReLU + FC(hidden, n_out): the paper's classifier shape (EC and DC)."""

    def __init__(self, in_dim: int, hidden: int, n_out: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class DMF(SERModule):
    """FE -> EC, and FE -> gradient scale -> DC (see the module docstring).

    Args:
        in_dim: Input width (``n_layers * H`` for a layer stack).
        n_classes, n_domains: Emotion and domain classes (``n_domains >= 1``).
        sequence: Frame input (attention pooling) instead of vectors.
        gamma: Gradient-scale factor between FE and DC.
        w_domain: Weight of CE_domain.
        remap_index: Domain index d* used from the second stage on (``None``: no remapping).
        n_layers, layer: See :class:`LayerMix`.
        fe_hidden, head_hidden, dropout: Sizes of FE, EC / DC and FE dropout.

    Parameter groups: ``fe`` (the layer weights and FE), ``ec``, ``dc``.
    """

    GROUPS = {"fe": ("mix", "fe"), "ec": ("ec",), "dc": ("dc",)}

    def __init__(
        self, in_dim: int, n_classes: int, n_domains: int, *, sequence: bool = False, gamma: float = 1.0,
        w_domain: float = 1.0, remap_index: int | None = None, n_layers: int = 1, layer: str | int = "weighted",
        fe_hidden: Sequence[int] = (256,), head_hidden: int = 256, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if n_layers < 1 or in_dim % n_layers:
            raise ValueError(f"dmf: input width {in_dim} is not n_layers={n_layers} layers of equal width; set n_layers to the stored layer count (ssl with layer=all) or 1")
        if n_domains < 1:
            raise ValueError("dmf needs domain labels: config key 'domain' names a manifest column or a*b (e.g. gender*corpus)")
        if not fe_hidden:
            raise ValueError("dmf: fe_hidden must list at least one layer width, e.g. [256]")
        self.gamma, self.w_domain, self.remap_index = float(gamma), float(w_domain), remap_index
        self.mix = LayerMix(n_layers, in_dim // n_layers, layer)
        extractor = AttentionExtractor if sequence else MLPExtractor
        self.fe = extractor(in_dim // n_layers, [int(h) for h in fe_hidden], float(dropout))
        self.ec = Head(self.fe.out_dim, int(head_hidden), n_classes)
        self.dc = Head(self.fe.out_dim, int(head_hidden), n_domains)
        self.remapping = False

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """``logits`` (EC), ``domain_logits`` (DC behind the gradient scale), ``embedding`` (FE)."""
        z = self.fe(self.mix(x), lengths)
        return {"logits": self.ec(z), "domain_logits": self.dc(grad_scale(z, self.gamma)), "embedding": z}

    def begin_stage(self, index: int, stage: Stage) -> None:
        """From the second stage on, a remapping model uses the fixed domain label d*.

        Raises:
            ValueError: The remapping stage would train DC (it must stay frozen).
        """
        self.remapping = self.remap_index is not None and index >= 1
        if self.remapping and "dc" in stage.train:
            raise ValueError(f"dmf remap: stage {index + 1} trains the domain classifier; freeze it (stages=remap: {DMF_STAGE_PLANS['remap']})")

    def domain_targets(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Domain labels and mask of a batch: the true ones, or d* for every sample while remapping."""
        if self.remapping:
            n = batch.y.shape[0]
            return torch.full((n,), int(self.remap_index), dtype=torch.long, device=batch.y.device), None
        return batch.aux["domain"], batch.aux_mask.get("domain")

    def loss(self, batch: Batch, out: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``CE_emotion + w_domain * CE_domain`` (unknown domains masked; d* while remapping)."""
        ce = emotion_cross_entropy(out["logits"], batch.y, batch.class_weights)
        if "domain" not in batch.aux:
            raise ValueError("dmf needs domain labels: config key 'domain' names a manifest column or a*b (e.g. gender*corpus)")
        target, mask = self.domain_targets(batch)
        dom = masked_cross_entropy(out["domain_logits"], target, mask)
        return ce + self.w_domain * dom, {"emotion": ce, "domain": dom}

    def fold_record(self) -> dict[str, Any]:
        """Layer weights (softmax, or one-hot for a chosen layer), gamma and the remap target."""
        rec: dict[str, Any] = {"gamma": self.gamma}
        if self.mix.n_layers > 1:
            rec["layer_weights"] = [float(w) for w in self.mix.weights().detach().cpu()]
        if self.remap_index is not None:
            rec["remap_index"] = int(self.remap_index)
        return rec


class FineTunedDMF(DMF):
    """DMF on the waveform through an SSL model whose top layers train (``ssl_finetune=true``).

    :class:`~serray.models.dmf_ssl.SSLFrontEnd` gives the mean-pooled hidden states of every
    layer, mixed by :class:`LayerMix` (``layer``), then the vector FE and both heads.
    Parameter groups: ``ssl`` (the trainable top layers), ``fe``, ``ec``, ``dc``; the
    ``ssl`` group trains at ``ssl_lr_scale`` times every stage's lr (:meth:`lr_scales`).
    The remapping stage (``stages=remap``) trains ``ssl`` too: the paper's feature
    extractor is the SSL model.
    """

    GROUPS = {"ssl": ("ssl",), **DMF.GROUPS}

    def __init__(self, ssl: nn.Module, n_classes: int, n_domains: int, ssl_lr_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(ssl.n_hidden * ssl.hidden, n_classes, n_domains, sequence=False, n_layers=ssl.n_hidden, **kwargs)
        if not float(ssl_lr_scale) > 0:
            raise ValueError(f"dmf: ssl_lr_scale must be > 0 (the SSL layers' lr factor, e.g. 0.01), got {ssl_lr_scale}; freeze them with trainable_layers=0")
        self.ssl = ssl
        self.ssl_lr_scale = float(ssl_lr_scale)

    def lr_scales(self) -> dict[str, float]:
        """The SSL layers' factor on the lr (read by the trainer's optimiser)."""
        return {"ssl": self.ssl_lr_scale}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """``x`` ``[B, T, 1]`` waveform samples with ``lengths``; outputs as :meth:`DMF.forward`."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return super().forward(self.ssl(x, lengths))


def _remap_index(config: Mapping[str, Any], info: InputInfo) -> int | None:
    value = config.get("remap") or ""
    if not value:
        return None
    names = list(info.aux_names.get("domain", ()))
    if str(value) not in names:
        raise ValueError(f"dmf: remap={value!r} is not a domain value of column {config.get('domain')!r}; valid: {names}")
    stages = parse_stages(str(config.get("stages", "all")), None, DMF_STAGE_PLANS)
    if len(stages) < 2:
        raise ValueError(f"dmf: remap={value!r} needs a second stage with the domain classifier frozen; add stages=remap ({DMF_STAGE_PLANS['remap']})")
    return names.index(str(value))


def _layer_choice(layer: Any) -> str | int:
    """``"weighted"`` or an integer position (also written as a string, e.g. ``"-1"`` in a search space).

    Example:
        >>> _layer_choice("-1"), _layer_choice(3), _layer_choice("weighted")
        (-1, 3, 'weighted')
    """
    if layer == "weighted":
        return layer
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        return int(layer)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"dmf: layer must be 'weighted' or an integer position, got {layer!r}")
    return layer


def _checked_n_layers(config: Mapping[str, Any], info: InputInfo) -> int:
    """``n_layers``, refused where the run's input is known to stack another number of layers.

    A concatenation of L SSL layers (``ssl`` with ``layer=all``) read with ``n_layers=1``
    would feed the L * H vector to FE as one layer; the paper's FE reads one SSL
    representation, so the layers must be mixed (``n_layers=L``) or one must be loaded.

    Example:
        >>> info = InputInfo((12,), 4, 2, shapes={"x": (12,)}, layers={"x": 3})
        >>> _checked_n_layers({"n_layers": 3}, info)
        3
        >>> _checked_n_layers({"n_layers": 1}, info)
        Traceback (most recent call last):
        ...
        ValueError: dmf: the input concatenates 3 SSL layers (ssl loaded with layer=all) but n_layers=1; set --set n_layers=3 (a learnable weighted sum of the layers; with --set layer=K one of them), or load one layer (--feature-param layer=-1)
    """
    n_layers = int(config["n_layers"])
    role = next(iter(info.shapes), None)
    stacked = int(info.layers.get(role, 1)) if role is not None else 1
    if stacked > 1 and n_layers != stacked:
        raise ValueError(
            f"dmf: the input concatenates {stacked} SSL layers (ssl loaded with layer=all) but n_layers={n_layers}; set --set "
            f"n_layers={stacked} (a learnable weighted sum of the layers; with --set layer=K one of them), or load one layer "
            "(--feature-param layer=-1)"
        )
    return n_layers


def _build(config: Mapping[str, Any], info: InputInfo, sequence: bool) -> DMF:
    keys = ("gamma", "w_domain", "n_layers", "layer", "fe_hidden", "head_hidden", "dropout")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"dmf config lacks {missing}; start from registry.get('dmf').config()")
    layer = _layer_choice(config["layer"])
    common = dict(
        gamma=effective_gamma(config), w_domain=float(config["w_domain"]), remap_index=_remap_index(config, info), layer=layer,
        fe_hidden=list(config["fe_hidden"]), head_hidden=int(config["head_hidden"]), dropout=float(config["dropout"]),
    )
    if sequence and config.get("ssl_finetune"):
        from serray.models.dmf_ssl import SSLFrontEnd

        if int(info.shape[-1]) != 1:
            raise ValueError(f"dmf ssl_finetune reads the waveform (--features waveform, [T, 1] samples), got {info.shape[-1]}-dim frames")
        model: DMF = FineTunedDMF(SSLFrontEnd(str(config.get("ssl_model", "")), int(config.get("trainable_layers", 0))),
                                  info.n_classes, info.n_domains, ssl_lr_scale=float(config.get("ssl_lr_scale", 1.0)), **common)
    else:
        model = DMF(int(info.shape[-1]), info.n_classes, info.n_domains, sequence=sequence, n_layers=_checked_n_layers(config, info), **common)
    logger.debug("built dmf for input %s: %d trainable parameters", info.shape, sum(p.numel() for p in model.parameters()))
    return model


def build(config: Mapping[str, Any], info: InputInfo) -> DMF:
    """Build the vector member ``dmf`` (MLP feature extractor) from a config and the input info.

    Raises:
        ValueError: A missing key, a bad layer choice or width, or a bad ``remap``.
    """
    return _build(config, info, sequence=False)


def build_seq(config: Mapping[str, Any], info: InputInfo) -> DMF:
    """Build the frame member ``dmf_seq`` (frame MLP + attention pooling); see :func:`build`."""
    return _build(config, info, sequence=True)
