"""The model-family contract: what a model declares, receives and returns (torch-free).

A family is one torch (or scikit-learn) module plus a torch-free ``<family>_spec.py``
module that registers its :class:`~serray.models.registry.ModelSpec`. The spec declares

* its **inputs**: role -> :class:`InputSpec` (feature kind and default feature set);
  several roles are allowed, e.g. log-mel frames for the network plus eGeMAPS vectors for
  a mixture model. The first role is the *primary* input: it decides what one training
  sample is (an utterance for vectors and sequences, a segment for segment stacks; the
  other roles then follow their utterance). A *variadic* input (last) stands for one
  role per feature set the user names (one expert per feature set);
* its **auxiliary labels**: role -> manifest column (``gender``, ``naturalness``,
  ``language``, ``corpus``, ...) or a derived column ``"gender*corpus"`` (values joined
  by ``x``). A config key of the same name as the role overrides the column (ADARL's
  ``domain``). Unknown values are masked, never guessed;
* optional **stage plans** for the ``stages`` config key (see :func:`parse_stages`) and
  an optional **prepare** hook fitted on the training part only.

A torch model follows :class:`SERModel`: it receives a :class:`Batch`, returns a dict of
outputs with at least ``"logits"`` (one row per sample), and computes its own loss with
named parts. Utterance logits come from the model (:meth:`SERModel.utterance_logits`);
the default, in :class:`serray.models.layers.SERModule`, averages the softmax of an
utterance's segments.

Example:
    >>> parse_stages("all;all-conv@10*0.1", groups=("conv", "head"))
    [Stage(train=('conv', 'head'), epochs=None, lr_scale=1.0), Stage(train=('head',), epochs=10, lr_scale=0.1)]
    >>> derived_column_parts("gender*corpus")
    ['gender', 'corpus']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

__all__ = [
    "INPUT_KINDS",
    "InputSpec",
    "InputInfo",
    "Batch",
    "LossTerms",
    "SERModel",
    "Stage",
    "parse_stages",
    "stage_epochs",
    "derived_column_parts",
]

INPUT_KINDS: tuple[str, ...] = ("vector", "sequence", "segments")


@dataclass(frozen=True)
class InputSpec:
    """One named input of a model, or (``variadic``) a list of them.

    Attributes:
        kind: ``"vector"`` (one row per utterance), ``"sequence"`` (frames ``[T, D]``) or
            ``"segments"`` (segment stacks ``[S, C, F, T]``).
        default_features: Feature set(s) used when the user names none (first wins; a
            variadic input takes all of them, one role each).
        other_kinds: Further kinds the input accepts (the loaded feature set decides;
            the model reads each role's kind from :attr:`InputInfo.kinds`).
        variadic: The input stands for one role per feature set the user names (e.g.
            ``--features mfb+mfcc+egemaps``: roles ``mfb``, ``mfcc``, ``egemaps``; or
            ``NAME=SET`` for a role named otherwise). At most one per model, the last.
        speaker_norm: ``False`` for an input whose differences between speakers are what
            the model reads (e.g. NHNN's clustering input, grouping utterances by voice):
            ``--normalize speaker`` then standardises it with the training part's
            statistics (as ``global``) instead of per speaker, which would erase them.
    """

    kind: str
    default_features: tuple[str, ...] = ()
    other_kinds: tuple[str, ...] = ()
    variadic: bool = False
    speaker_norm: bool = True

    def __post_init__(self) -> None:
        bad = [k for k in (self.kind, *self.other_kinds) if k not in INPUT_KINDS]
        if bad:
            raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {bad[0]!r}")
        if self.variadic and not self.default_features:
            raise ValueError("a variadic input needs default_features (the roles used when --features names none)")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind the input accepts (``kind`` first)."""
        return (self.kind, *(k for k in self.other_kinds if k != self.kind))

    def accepts(self, kind: str) -> bool:
        """Whether a feature set of ``kind`` can feed this input.

        Example:
            >>> InputSpec("sequence", ("mfb",), other_kinds=("vector",)).accepts("vector")
            True
        """
        return kind in self.kinds


@dataclass(frozen=True)
class InputInfo:
    """What a model builder needs to know about its inputs and labels.

    Attributes:
        shape: Sample shape of the primary input without the batch axis: ``(dim,)`` for
            vectors and (per frame) sequences, ``(channels, freq, time)`` for segments.
        n_classes: Number of emotion classes.
        n_domains: Classes of the auxiliary role ``domain`` (0 without one).
        shapes: Sample shape of every input role.
        aux_classes: Number of classes of every auxiliary-label role.
        aux_names: Class names of every auxiliary-label role, in index order (e.g. for a
            model's fold record, or a config key that names one domain value).
        kinds: Feature kind of every input role (what a model with variadic inputs or
            ``other_kinds`` builds its parts from).
        layers: Input role -> how many SSL layers its last axis concatenates (``ssl``
            with ``layer="all"``), for roles where that is known to be more than one;
            filled where a run checks its model before training (a fold's info lacks it).
    """

    shape: tuple[int, ...]
    n_classes: int
    n_domains: int = 0
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    aux_classes: Mapping[str, int] = field(default_factory=dict)
    aux_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    layers: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Batch:
    """One mini-batch as a model receives it (tensors; the class itself imports no torch).

    Attributes:
        inputs: Role -> tensor: vectors ``[B, D]``, zero-padded sequences ``[B, T, D]``,
            segments ``[B, C, F, T]`` (``B`` counts samples).
        lengths: Role -> ``LongTensor [B]`` of valid frames, for sequence inputs.
        y: Emotion class of every sample ``LongTensor [B]``.
        aux: Role -> ``LongTensor [B]`` auxiliary class (-1 where unknown).
        aux_mask: Role -> ``BoolTensor [B]``: where the auxiliary label is known.
        owner: ``LongTensor [B]``: utterance (``0 .. n_utterances - 1``) of every sample
            when samples are segments; ``None`` when every sample is one utterance.
        n_utterances: Utterances in the batch.
        primary: Role of the primary input.
        class_weights: ``FloatTensor [n_classes]``: per-class weights of the emotion
            cross-entropy (training key ``class_weight=balanced``), or ``None`` (unweighted).
            Models weight their emotion term with it through
            :func:`serray.models.layers.emotion_cross_entropy`.
    """

    inputs: dict[str, Any]
    lengths: dict[str, Any]
    y: Any
    aux: dict[str, Any] = field(default_factory=dict)
    aux_mask: dict[str, Any] = field(default_factory=dict)
    owner: Any = None
    n_utterances: int = 0
    primary: str = "x"
    class_weights: Any = None

    @property
    def x(self) -> Any:
        """The primary input tensor."""
        return self.inputs[self.primary]

    def args(self, role: str | None = None) -> tuple:
        """``(x,)`` or ``(x, lengths)`` of a role (default the primary): a plain module's call."""
        role = role or self.primary
        return (self.inputs[role], self.lengths[role]) if role in self.lengths else (self.inputs[role],)


#: ``(total, {name: term})``: the loss of a mini-batch and its named parts (unweighted
#: terms; ``total`` is their weighted sum).
LossTerms = tuple  # tuple[Tensor, dict[str, Tensor]]


@runtime_checkable
class SERModel(Protocol):
    """What the torch fold trainer calls (see :class:`serray.models.layers.SERModule`)."""

    def forward_batch(self, batch: Batch) -> dict[str, Any]:
        """Outputs for every sample of ``batch``; at least ``"logits"`` ``[B, C]``."""

    def loss(self, batch: Batch, outputs: Mapping[str, Any]) -> LossTerms:
        """``(total, parts)``: the training loss and its named terms."""

    def utterance_logits(self, batch: Batch, outputs: Mapping[str, Any]) -> Any:
        """``[n_utterances, C]`` logits from the samples' outputs."""

    def parameter_groups(self) -> dict[str, list[str]]:
        """Group name -> parameter names (every parameter in exactly one group)."""


@dataclass(frozen=True)
class Stage:
    """One training stage: which parameter groups train, for how long, at which lr.

    Attributes:
        train: Groups whose parameters train (the rest are frozen, their modules in
            evaluation mode so batch-norm statistics stay too).
        epochs: Epoch budget of the stage (``None``: the config's ``epochs``).
        lr_scale: Factor on the config's ``lr`` for this stage's new optimiser.
    """

    train: tuple[str, ...]
    epochs: int | None = None
    lr_scale: float = 1.0


def _stage(text: str, groups: Sequence[str] | None) -> Stage:
    body, epochs, scale = text.strip(), None, 1.0
    if "*" in body:
        body, _, s = body.partition("*")
        scale = float(s)
    if "@" in body:
        body, _, e = body.partition("@")
        epochs = int(e)
    body = body.strip()
    if (epochs is not None and epochs < 1) or scale <= 0:
        raise ValueError(f"stage {text!r}: epochs must be >= 1 and the lr factor > 0")
    if groups is None:  # syntax only: the groups are checked when the model is built
        if not body or any(not g for g in body.split("+")):
            raise ValueError(f"stage {text!r} names no parameter group")
        return Stage((body,), epochs, scale)
    if body == "all" or body.startswith("all-"):
        drop = [g for g in body.split("-")[1:] if g]
        train = tuple(g for g in groups if g not in drop)
        named = drop
    else:
        named = [g for g in body.split("+") if g]
        train = tuple(g for g in groups if g in named)
    unknown = sorted(set(named) - set(groups))
    if unknown:
        raise ValueError(f"stage {text!r}: unknown parameter group(s) {unknown}; this model has {list(groups)}")
    if not train:
        raise ValueError(f"stage {text!r} trains no parameter group; groups: {list(groups)}")
    return Stage(train, epochs, scale)


def parse_stages(text: str, groups: Sequence[str] | None, plans: Mapping[str, str] | None = None) -> list[Stage]:
    """Parse the ``stages`` config key into :class:`Stage` objects.

    Syntax: stages separated by ``;``; each is ``all``, ``all-G1-G2`` (every group but
    those), or ``G1+G2`` (only those groups), optionally followed by ``@EPOCHS`` and
    ``*LR_FACTOR``. A name in ``plans`` (the spec's named plans) stands for its text.
    Every stage starts from the best weights so far with a new optimiser. With
    ``groups=None`` only the syntax is checked (group names are kept as written).

    Raises:
        ValueError: Unknown group, a stage that trains nothing, or bad numbers; the
            message lists the valid groups and plan names.
    """
    plans = dict(plans or {})
    source = plans.get(text, text)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"stages must be a plan name {sorted(plans)} or text like 'all;all-conv*0.1', got {text!r}")
    try:
        return [_stage(part, groups) for part in source.split(";") if part.strip()]
    except ValueError as exc:
        if str(exc).startswith("stage "):
            raise ValueError(f"{exc} (plans: {sorted(plans) or 'none'})") from None
        raise ValueError(f"stages {text!r}: {exc}; expected e.g. 'all;all-conv@10*0.1'") from None


def stage_epochs(text: str, epochs: int, plans: Mapping[str, str] | None = None) -> int:
    """Total epoch budget of a stage plan (a stage without ``@E`` takes ``epochs``).

    Example:
        >>> stage_epochs("all;all-conv@10", 30)
        40
    """
    return sum(s.epochs or int(epochs) for s in parse_stages(text, None, plans))


def derived_column_parts(column: str) -> list[str]:
    """Manifest columns of a (possibly derived, ``a*b``) auxiliary-label column."""
    return [c.strip() for c in column.split("*") if c.strip()]
