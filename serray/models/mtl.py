"""MTL (paper 002): a frame-level DNN or LSTM with emotion, gender and naturalness heads, then an ELM.

Frame stage (trained by the fold trainer): every frame of an utterance carries the
utterance's labels. The shared network is either

* ``arch=dnn``: a context window of ``2 * context + 1`` frames (zero-padded at the
  utterance's ends; after normalisation zero is the feature mean) -> ``dnn_layers`` x
  [FC(hidden), ReLU, dropout], or
* ``arch=lstm``: an ``lstm_layers``-layer LSTM of width ``hidden`` (dropout between the
  layers and on its output).

Linear heads on every frame give emotion, gender and naturalness logits. The loss is
``CE_emotion + lambda_gender CE_gender + lambda_naturalness CE_naturalness``, each a mean
over the valid frames of the batch; an auxiliary term covers only the frames of
utterances whose label the manifest knows (:func:`~serray.models.layers.masked_cross_entropy`).
An auxiliary head exists when its label has >= 2 classes in the run; its term is *active*
in a fold when its lambda is > 0 and the fold's training part holds >= 2 of its classes
(naturalness is constant within an acted corpus, so an acted-only training part trains no
naturalness term). The auxiliary heads are initialised from their own seeded stream, so
with both lambdas 0 training is bit-identical to a model without them (single-task).

Utterance stage: the auxiliary heads are dropped; per utterance and emotion class four
functionals of the frame posteriors over its valid frames (:func:`posterior_functionals`:
max, min, mean and the share of frames above ``threshold``) feed an extreme learning
machine (:class:`~serray.models.elm.ELM`), fitted in the trainer's ``after_training``
hook on the training part only. The utterance logits are its scores as normalised
log-probabilities (:meth:`~serray.models.elm.ELM.log_posteriors`: the least-squares
posterior estimate ``(score + 1) / 2``, floored smoothly and renormalised), so the stored
logits are on the scale of softmax models' log-probabilities for late fusion and their
argmax is the ELM's decision. Before the ELM is fitted (validation during training, early
stopping) the utterance logits are the log of the mean frame posteriors; a search scores a
completed trial by the ELM's validation logits (the spec sets ``fitted_after_training``,
see :mod:`serray.tune.runner`), so ``threshold``, ``elm_hidden`` and ``elm_ridge`` count.

Example:
    >>> import torch
    >>> from serray.models import registry
    >>> from serray.models.contract import Batch, InputInfo
    >>> spec = registry.get("mtl")
    >>> cfg = spec.config(overrides={"hidden": 8, "context": 1})
    >>> model = build(cfg, InputInfo((4,), 3, aux_classes={"gender": 2, "naturalness": 2}))
    >>> b = Batch({"x": torch.randn(2, 5, 4)}, {"x": torch.tensor([5, 3])}, torch.tensor([0, 2]),
    ...           aux={"gender": torch.tensor([0, 1]), "naturalness": torch.tensor([0, 0])},
    ...           aux_mask={"gender": torch.tensor([True, True]), "naturalness": torch.tensor([True, False])})
    >>> out = model.forward_batch(b)
    >>> tuple(out["logits"].shape), tuple(out["functionals"].shape)
    ((2, 3), (2, 12))
    >>> total, parts = model.loss(b, out)
    >>> sorted(parts)
    ['emotion', 'gender', 'naturalness']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serray.models.contract import Batch, InputInfo
from serray.models.elm import ELM
from serray.models.layers import SERModule, emotion_cross_entropy, length_mask, masked_cross_entropy
from serray.models.mtl_spec import check_mtl_config

if TYPE_CHECKING:  # the training package imports the models, not the other way round
    from serray.training.data import SplitData

__all__ = ["AUX_ROLES", "FUNCTIONALS", "context_window", "posterior_functionals", "FrameDNN", "FrameLSTM", "MTLNet", "build"]

#: Auxiliary tasks in head order, and their lambda config keys.
AUX_ROLES: dict[str, str] = {"gender": "lambda_gender", "naturalness": "lambda_naturalness"}
#: Order of the functionals in :func:`posterior_functionals` (each block has C columns).
FUNCTIONALS: tuple[str, ...] = ("max", "min", "mean", "share_above")


def context_window(x: Tensor, context: int) -> Tensor:
    """Stack every frame with ``context`` frames on each side: ``[B, T, D] -> [B, T, (2c+1) D]``.

    Frames outside the sequence are zeros; the centre frame is the middle block.

    Example:
        >>> context_window(torch.tensor([[[1.0], [2.0], [3.0]]]), 1)[0].tolist()
        [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 0.0]]
    """
    if context == 0:
        return x
    b, t, d = x.shape
    padded = F.pad(x, (0, 0, context, context))
    windows = padded.unfold(1, 2 * context + 1, 1)  # [B, T, D, W]
    return windows.permute(0, 1, 3, 2).reshape(b, t, (2 * context + 1) * d)


def posterior_functionals(probs: Tensor, lengths: Tensor, threshold: float) -> Tensor:
    """Per utterance and class: max, min, mean and share of valid frames with posterior > threshold.

    Args:
        probs: Frame posteriors ``[B, T, C]`` (padded frames are ignored).
        lengths: Valid frames per utterance ``[B]`` (>= 1).
        threshold: Posterior threshold of the last functional.

    Returns:
        ``[B, 4 C]``: the blocks ``max | min | mean | share`` (:data:`FUNCTIONALS`), C columns each.

    Example:
        >>> p = torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.0, 0.0]]])
        >>> [round(v, 3) for v in posterior_functionals(p, torch.tensor([2]), 0.2)[0].tolist()]
        [0.9, 0.5, 0.5, 0.1, 0.7, 0.3, 1.0, 0.5]
    """
    valid = length_mask(lengths, probs.shape[1]).unsqueeze(2)  # [B, T, 1]
    n = lengths.clamp(min=1).unsqueeze(1).to(probs.dtype)
    mx = probs.masked_fill(~valid, float("-inf")).amax(dim=1)
    mn = probs.masked_fill(~valid, float("inf")).amin(dim=1)
    mean = (probs * valid).sum(dim=1) / n
    share = ((probs > threshold) & valid).sum(dim=1).to(probs.dtype) / n
    return torch.cat([mx, mn, mean, share], dim=1)


class FrameDNN(nn.Module):
    """Context window -> ``layers`` x [FC(hidden), ReLU, dropout]; frames ``[B, T, D] -> [B, T, hidden]``."""

    def __init__(self, in_dim: int, hidden: int, layers: int, context: int, dropout: float) -> None:
        super().__init__()
        self.context = int(context)
        dims = [in_dim * (2 * self.context + 1)] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # noqa: D102
        outside = ~length_mask(lengths, x.shape[1]).unsqueeze(2)
        h = context_window(x.masked_fill(outside, 0.0), self.context)  # zeros beyond the utterance, whatever the padding
        for layer in self.layers:
            h = self.drop(F.relu(layer(h)))
        return h


class FrameLSTM(nn.Module):
    """Unidirectional LSTM; output dropout; ``[B, T, hidden]``, zeros on the padded frames.

    The LSTM runs over the padded batch, not a packed one: a frame's output depends only on
    the frames before it, so the valid frames' outputs (and their gradients) are those of
    the utterance alone, while torch's CPU kernel for packed batches of unequal lengths is
    10-15 times slower (EMOVO's 1.3-14 s utterances; equal lengths are as fast either way).
    The padded frames are zeroed on the way in and out, as unpacking gave them.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # noqa: D102
        outside = ~length_mask(lengths, x.shape[1]).unsqueeze(2)
        out, _ = self.lstm(x.masked_fill(outside, 0.0))  # finite padding: no NaN reaches the gradients
        return self.drop(out.masked_fill(outside, 0.0))


def _own_stream_linear(n_in: int, n_out: int, offset: int) -> nn.Linear:
    """``nn.Linear`` initialised like torch's default (uniform, bound ``1/sqrt(n_in)``) from its
    own generator seeded ``initial_seed + offset``: the global stream does not advance."""
    with torch.random.fork_rng(devices=[]):
        layer = nn.Linear(n_in, n_out)
    g = torch.Generator().manual_seed(torch.initial_seed() + offset)
    bound = 1.0 / float(np.sqrt(n_in))
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=g)
        layer.bias.uniform_(-bound, bound, generator=g)
    return layer


def _frame_view(frames: Tensor, valid: Tensor) -> Tensor:
    """The valid frames of ``[B, T, K]`` as ``[N, K]``."""
    return frames[valid]


def _per_frame(values: Tensor, valid: Tensor) -> Tensor:
    """An utterance-level ``[B]`` tensor repeated on its valid frames -> ``[N]``."""
    return values.unsqueeze(1).expand(valid.shape)[valid]


class MTLNet(SERModule):
    """The paper-002 network and its ELM back-end (see the module docstring).

    Args:
        encoder: :class:`FrameDNN` or :class:`FrameLSTM` (output width ``hidden``).
        hidden: Encoder output width.
        n_classes: Emotion classes.
        aux_classes: Auxiliary role -> classes; a head is built for roles with >= 2.
        lambdas: Auxiliary role -> loss weight (>= 0).
        threshold: Threshold of the share-above functional.
        elm_hidden, elm_ridge: Size and ridge strength of the ELM.
    """

    def __init__(
        self, encoder: nn.Module, hidden: int, n_classes: int, aux_classes: Mapping[str, int],
        lambdas: Mapping[str, float], *, threshold: float = 0.2, elm_hidden: int = 120, elm_ridge: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.emotion = nn.Linear(hidden, n_classes)
        self.aux_heads = nn.ModuleDict()
        roles = [r for r in AUX_ROLES if int(aux_classes.get(r, 0)) >= 2]
        for role in roles:  # own streams: the emotion network's init and dropout stay those of STL
            self.aux_heads[role] = _own_stream_linear(hidden, int(aux_classes[role]), offset=1 + list(AUX_ROLES).index(role))
        self.lambdas = {r: float(lambdas.get(r, 0.0)) for r in AUX_ROLES}
        self.active = {r: True for r in roles}
        self.aux_counts: dict[str, dict[str, int]] = {}
        self.threshold, self.n_classes = float(threshold), int(n_classes)
        self.elm_hidden, self.elm_ridge = int(elm_hidden), float(elm_ridge)
        self.elm: ELM | None = None
        self.GROUPS = {"encoder": ("encoder",), "emotion": ("emotion",), **{r: (f"aux_heads.{r}",) for r in roles}}

    # -- trainer hooks -------------------------------------------------------------------
    def prepare(self, part: SplitData) -> None:
        """Which auxiliary terms are active in this fold (>= 2 known classes in the training part)."""
        self.elm = None
        for role in self.aux_heads:
            codes = np.asarray(part.aux.get(role, np.zeros(0, dtype=np.int64)))
            known = codes[codes >= 0]
            self.aux_counts[role] = {"known": int(len(known)), "unknown": int(len(codes) - len(known)),
                                     "classes": int(len(np.unique(known)))}
            self.active[role] = self.aux_counts[role]["classes"] >= 2

    def after_training(self, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Fit the ELM on the training part's functionals (seeded from the trainer's stream)."""
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        x = outputs["functionals"].detach().cpu().double().numpy()
        self.elm = ELM(self.elm_hidden, self.elm_ridge, seed).fit(x, batch.y.cpu().numpy(), n_classes=self.n_classes)

    def kept_arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`after_training` fitted (the ELM's arrays), kept with the fold's model."""
        if self.elm is None or not self.elm.fitted:
            return {}
        return {"elm.weights": self.elm.weights, "elm.bias": self.elm.bias, "elm.beta": self.elm.beta,
                "elm.seed": np.asarray(self.elm.seed, dtype=np.int64)}

    def load_kept_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Install a kept ELM (:meth:`kept_arrays`); nothing when none was fitted."""
        if "elm.beta" not in arrays:
            return
        self.elm = ELM(self.elm_hidden, self.elm_ridge, int(arrays["elm.seed"]))
        self.elm.weights = np.asarray(arrays["elm.weights"], dtype=np.float64)
        self.elm.bias = np.asarray(arrays["elm.bias"], dtype=np.float64)
        self.elm.beta = np.asarray(arrays["elm.beta"], dtype=np.float64)

    def fold_record(self) -> dict[str, Any]:
        """ELM size and every auxiliary task: weight, whether it has a head (>= 2 classes in the
        run), known/unknown training utterances and classes seen there, and whether it was active."""
        tasks = {
            r: {"lambda": self.lambdas[r], "head": r in self.aux_heads, **self.aux_counts.get(r, {}),
                "active": bool(r in self.aux_heads and self.lambdas[r] > 0 and self.active[r])}
            for r in AUX_ROLES
        }
        elm = {"hidden": self.elm_hidden, "ridge": self.elm_ridge, "fitted": self.elm is not None}
        return {"aux_tasks": tasks, "elm": elm, "functionals": list(FUNCTIONALS), "threshold": self.threshold}

    # -- SERModel ----------------------------------------------------------------------
    def forward_batch(self, batch: Batch) -> dict[str, Any]:
        """``logits`` (log mean frame posterior) and ``functionals`` ``[B, 4C]`` per utterance;
        ``frames`` (not a tensor, so never concatenated): padded frame logits per head and the valid mask."""
        x, lengths = batch.x, batch.lengths[batch.primary]
        h = self.encoder(x, lengths)
        frame_logits = self.emotion(h)
        valid = length_mask(lengths, x.shape[1])
        probs = torch.softmax(frame_logits.float(), dim=2)
        functionals = posterior_functionals(probs, lengths, self.threshold)
        mean = functionals[:, 2 * self.n_classes : 3 * self.n_classes]
        frames = {"emotion": frame_logits, "valid": valid, **{r: head(h) for r, head in self.aux_heads.items()}}
        return {"logits": torch.log(mean.clamp(min=1e-12)), "functionals": functionals, "frames": frames}

    def loss(self, batch: Batch, outputs: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Frame-level ``CE_emotion + sum lambda_r CE_r`` (auxiliary frames masked where unknown)."""
        frames = outputs["frames"]
        valid = frames["valid"]
        ce = emotion_cross_entropy(_frame_view(frames["emotion"], valid), _per_frame(batch.y, valid), batch.class_weights)
        total, parts = ce, {"emotion": ce}
        for role in self.aux_heads:
            mask = batch.aux_mask.get(role)
            mask = _per_frame(mask, valid) if mask is not None else None
            term = masked_cross_entropy(_frame_view(frames[role], valid), _per_frame(batch.aux[role], valid), mask)
            weight = self.lambdas[role] if self.active[role] else 0.0
            total = total + weight * term
            parts[role] = term
        return total, parts

    def utterance_logits(self, batch: Batch, outputs: Mapping[str, Any]) -> Tensor:
        """The ELM's log-posteriors of the functionals once fitted, else the log mean frame posteriors."""
        if self.elm is None:
            return outputs["logits"].float()
        logp = self.elm.log_posteriors(outputs["functionals"].detach().cpu().double().numpy())
        return torch.from_numpy(logp).to(outputs["functionals"].device)


def build(config: Mapping[str, Any], info: InputInfo) -> MTLNet:
    """:class:`MTLNet` from the config and the input info (per-frame vectors, e.g. ``lld``)."""
    check_mtl_config(config)
    if len(info.shape) != 1:
        raise ValueError(f"mtl takes per-frame vectors (e.g. lld), got sample shape {info.shape}")
    dim, hidden, dropout = int(info.shape[0]), int(config["hidden"]), float(config["dropout"])
    if config["arch"] == "dnn":
        encoder: nn.Module = FrameDNN(dim, hidden, int(config["dnn_layers"]), int(config["context"]), dropout)
    else:
        encoder = FrameLSTM(dim, hidden, int(config["lstm_layers"]), dropout)
    return MTLNet(
        encoder, hidden, info.n_classes, info.aux_classes, {r: float(config[k]) for r, k in AUX_ROLES.items()},
        threshold=float(config["threshold"]), elm_hidden=int(config["elm_hidden"]), elm_ridge=float(config["elm_ridge"]),
    )
