"""Spec of the diverse-feature-mapping family (paper 003), torch-free; the model is :mod:`serray.models.dmf`.

Two members share one module: ``dmf`` reads one vector per utterance (mean-pooled
``ssl`` layer stacks, or any vector set such as ``egemaps`` / ``compare``) through an MLP
feature extractor; ``dmf_seq`` reads frame sequences (``ssl`` with ``pooling=frames``, or
any sequence set) through a frame MLP and attention pooling, or, with ``ssl_finetune=true``,
the ``waveform`` set through an SSL model whose top ``trainable_layers`` layers are
fine-tuned (:mod:`serray.models.dmf_ssl`). The systems of the paper
are config values, not members: ``gamma`` 0 (vanilla), +1 (MTL), -1 (DANN) (or ``arm``
vanilla / mtl / dann, which signs ``gamma``), and ``remap=<domain value>`` with
``stages=remap`` (fake-domain remapping after MTL); they are named variants of both
members (:class:`DMFArms`): ``serray seeds dmf --variant vanilla --variant mtl --variant
dann --variant remap-fxemodb``.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("dmf")
    >>> spec.input_kind, spec.aux_columns(spec.config()), spec.config()["gamma"]
    ('vector', {'domain': 'gender*corpus'}, 1.0)
    >>> spec.aux_columns(spec.config(overrides={"domain": "gender*language"}))
    {'domain': 'gender*language'}
    >>> spec.variants["remap-mxen"]
    {'arm': 'mtl', 'remap': 'mxen', 'stages': 'remap'}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["DMF_ARMS", "DMF_ARM_SIGNS", "DMF_CONFIG", "DMF_FINETUNE_KEYS", "DMF_SMALL_PRESET", "DMF_STAGE_PLANS", "DMFArms", "effective_gamma"]

#: Values of the config key ``arm`` and the sign they give gamma (paper 003 sec. 2.1:
#: gamma = 0 vanilla, +1 MTL, -1 DANN).
DMF_ARM_SIGNS: dict[str, float] = {"vanilla": 0.0, "mtl": 1.0, "dann": -1.0}


def effective_gamma(config: Mapping[str, Any]) -> float:
    """The gradient-scale factor of a config: ``gamma`` as given, or signed by ``arm``.

    Example:
        >>> effective_gamma({"gamma": 0.4, "arm": ""}), effective_gamma({"gamma": 0.4, "arm": "dann"})
        (0.4, -0.4)
        >>> effective_gamma({"gamma": -0.4, "arm": "mtl"}), effective_gamma({"gamma": 0.4, "arm": "vanilla"})
        (0.4, 0.0)

    Raises:
        ValueError: An unknown arm.
    """
    gamma, arm = float(config["gamma"]), str(config.get("arm") or "")
    if not arm:
        return gamma
    if arm not in DMF_ARM_SIGNS:
        raise ValueError(f"dmf: arm must be one of {sorted(DMF_ARM_SIGNS)} or '' (gamma as given), got {arm!r}")
    return DMF_ARM_SIGNS[arm] * abs(gamma)


class DMFArms(Mapping):
    """The paper's systems as named variants (``serray seeds dmf --variant NAME``).

    ``vanilla``, ``mtl`` and ``dann`` set ``arm`` (gamma 0, +|gamma|, -|gamma|; the defaults
    give the paper's 0, +1, -1, a tuned config keeps its |gamma|); ``remap-<d*>`` for any
    domain value d* (of the ``domain`` column, e.g. ``remap-fxemodb`` for ``gender*corpus``,
    or the paper's four English / Japanese x male / female ones with
    ``domain=gender*language``: ``remap-mxen``, ``remap-fxen``, ``remap-mxja``, ``remap-fxja``)
    is fake-domain remapping into d*: MTL, then the remapping stage (``stages=remap``).
    Iteration lists the fixed names and the pattern ``remap-<domain>``.

    Example:
        >>> arms = DMFArms()
        >>> arms["dann"], arms.get("remap-fxemodb")["remap"], "remap-" in arms, list(arms)
        ({'arm': 'dann'}, 'fxemodb', False, ['vanilla', 'mtl', 'dann', 'remap-<domain>'])
    """

    FIXED: dict[str, dict[str, Any]] = {arm: {"arm": arm} for arm in DMF_ARM_SIGNS}
    PREFIX = "remap-"

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name in self.FIXED:
            return dict(self.FIXED[name])
        if isinstance(name, str) and name.startswith(self.PREFIX) and len(name) > len(self.PREFIX):
            return {"arm": "mtl", "remap": name[len(self.PREFIX):], "stages": "remap"}
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([*self.FIXED, f"{self.PREFIX}<domain>"])

    def __len__(self) -> int:
        return len(self.FIXED) + 1


#: Named variants of ``dmf`` and ``dmf_seq`` (see :class:`DMFArms`).
DMF_ARMS = DMFArms()

#: Defaults (docs/models.md, paper 003; the paper gives no sizes or training settings). Training keys
#: are the torch trainer's; the rest are read by :func:`serray.models.dmf.build`.
DMF_CONFIG: dict[str, Any] = {
    # training (serray's paper-003 default, docs/models.md: AdamW, small-FE lr 1e-3)
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "batch_size": 32,
    "epochs": 50,
    "patience": 10,
    # domain classifier and gradient scale
    "domain": "gender*corpus",  # manifest column or a*b; values joined by "x" (e.g. fxemodb)
    "gamma": 1.0,  # 0 vanilla, +1 MTL, -1 DANN (gradient-scale factor between FE and DC)
    # the system type: "" uses gamma as given; vanilla / mtl / dann set gamma to 0 / +|gamma| /
    # -|gamma| (a search draws |gamma| within an arm; named variants of the spec set it)
    "arm": "",
    "w_domain": 1.0,  # weight of CE_domain in the loss
    "remap": "",  # a domain value d*: from the second stage on every domain label is d*
    # multi-stage plans (remap, heads): the final weights are the best validation epoch of
    # the last stage, so a remapped system is never silently its MTL first stage
    "stage_selection": "last",
    # input: a stack of n_layers layers of equal width, concatenated (ssl with layer=all; a run
    # whose stack has another layer count is refused before training)
    "n_layers": 1,
    "layer": "weighted",  # "weighted" (softmax-weighted sum, SUPERB) or a layer position
    # feature extractor FE and heads (EC / DC = FC(D, head_hidden) + ReLU + FC(head_hidden, n))
    "fe_hidden": [256],
    "head_hidden": 256,
    "dropout": 0.1,
}

#: ``remap``: step 2 of fake-domain remapping (DC frozen; every other group, i.e. EC and the
#: feature extractor, fine-tuned at a tenth of the lr: with ``ssl_finetune`` the feature
#: extractor is the SSL model's ``ssl`` group as well as ``fe``, as in the paper);
#: ``heads``: retrain only the two classifiers on a frozen FE (and SSL model).
DMF_STAGE_PLANS: dict[str, str] = {
    "remap": "all;all-dc*0.1",
    "heads": "all;ec+dc*0.1",
}

#: ``dmf_seq`` only: fine-tune the SSL model itself on the waveform (``--features waveform``;
#: see :mod:`serray.models.dmf_ssl`); ``trainable_layers`` top transformer layers train, the
#: rest (convolutional front-end included) stays frozen. ``max_frames`` crops training
#: waveforms at random (samples: 48000 = 3 s at 16 kHz; 0 = whole utterances).
#: ``ssl_lr_scale``: the SSL layers train at ``lr * ssl_lr_scale`` (an optimizer parameter
#: group), the small FE and the heads at ``lr``: the paper fine-tunes HuBERT far slower than
#: its classifiers; 0.01 gives paper 003's 1e-5 (docs/models.md) for the SSL model at the default lr 1e-3.
DMF_FINETUNE_KEYS: dict[str, Any] = {
    "ssl_finetune": False, "ssl_model": "", "trainable_layers": 2, "max_frames": 0, "ssl_lr_scale": 0.01,
}

#: Short CPU runs.
DMF_SMALL_PRESET: dict[str, Any] = {"fe_hidden": [128], "head_hidden": 128, "epochs": 30, "patience": 6}

register(ModelSpec(
    name="dmf", backend="torch", inputs={"x": InputSpec("vector", ("ssl",))}, default_config=DMF_CONFIG,
    build=Lazy("serray.models.dmf", "build"),
    description="diverse feature mapping: layer-weighted SSL vectors -> FE -> emotion head + gradient-scaled domain head (paper 003)",
    aux_labels={"domain": "gender*corpus"},
    stage_plans=DMF_STAGE_PLANS,
    presets={"small": DMF_SMALL_PRESET},
    variants=DMF_ARMS,
))
register(ModelSpec(
    name="dmf_seq", backend="torch", inputs={"x": InputSpec("sequence", ("ssl",))},
    default_config={**DMF_CONFIG, **DMF_FINETUNE_KEYS},
    build=Lazy("serray.models.dmf", "build_seq"),
    description="diverse feature mapping on SSL frames: layer-weighted frames -> frame MLP + attention pooling -> heads (paper 003)",
    aux_labels={"domain": "gender*corpus"},
    stage_plans=DMF_STAGE_PLANS,
    presets={"small": DMF_SMALL_PRESET},
    variants=DMF_ARMS,
))
