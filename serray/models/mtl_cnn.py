"""MTL-CNN (paper 000's multi-task baseline): the ``dcnn`` encoder with an emotion and a gender head.

The dilated convolutions and masked pooling of :class:`serray.models.baselines.DCNN` feed
two heads: the emotion head FC(channels, hidden) + ReLU -> dropout -> FC(hidden, C) (the
DCNN's own) and a gender head FC(channels, gender_hidden) + ReLU -> dropout ->
FC(gender_hidden, G). The loss is ``CE_emotion + w_gender * CE_gender``; utterances whose
gender the manifest does not know are left out of the gender term. Only the emotion logits
are predictions; the gender head is a training aid.

Example:
    >>> import torch
    >>> from serray.models import registry
    >>> from serray.models.contract import Batch, InputInfo
    >>> spec = registry.get("mtl_cnn")
    >>> model = spec.build(spec.config(preset="small"), InputInfo((40,), 4, aux_classes={"gender": 2}))
    >>> b = Batch({"x": torch.randn(3, 50, 40)}, {"x": torch.tensor([50, 30, 20])}, torch.tensor([0, 1, 3]),
    ...           aux={"gender": torch.tensor([0, 1, 0])}, aux_mask={"gender": torch.tensor([True, True, False])})
    >>> total, parts = model.loss(b, model.forward_batch(b))
    >>> sorted(parts), bool(torch.isclose(total, parts["emotion"] + parts["gender"]))
    (['emotion', 'gender'], True)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from serray.models.baselines import DCNN, dcnn_conv_args
from serray.models.contract import Batch, InputInfo
from serray.models.layers import emotion_cross_entropy, masked_cross_entropy

__all__ = ["MTLCNN", "build"]


class MTLCNN(DCNN):
    """DCNN with a gender head (see the module docstring).

    Args:
        in_dim, n_classes, channels, kernel_size, dilations, hidden, dropout, pooling,
            first_kernel, conv_bias: as for :class:`~serray.models.baselines.DCNN`.
        n_genders: Gender classes (>= 2).
        gender_hidden: Width of the gender head's hidden layer.
        w_gender: Weight of the gender cross-entropy (>= 0; 0 trains the emotion task only).
    """

    def __init__(
        self, in_dim: int, n_classes: int, n_genders: int, *, channels: int = 128, kernel_size: int = 5,
        dilations: Sequence[int] = (1, 2), hidden: int = 128, dropout: float = 0.3, pooling: str = "mean",
        gender_hidden: int = 128, w_gender: float = 1.0, first_kernel: int | None = 15, conv_bias: bool = False,
    ) -> None:
        super().__init__(in_dim, n_classes, channels, kernel_size, dilations, hidden, dropout, pooling, first_kernel, conv_bias)
        if n_genders < 2:
            raise ValueError(f"mtl_cnn needs >= 2 gender classes in the training data, got {n_genders}; check the manifest's gender column")
        if w_gender < 0:
            raise ValueError(f"w_gender must be >= 0, got {w_gender}")
        self.gender_fc = nn.Linear(channels, gender_hidden)
        self.gender_out = nn.Linear(gender_hidden, n_genders)
        self.w_gender = float(w_gender)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """``{"logits": [B, C], "gender_logits": [B, G], "embedding": [B, hidden]}``."""
        h = self.encode(x, lengths)
        e = F.relu(self.fc(h))
        g = F.relu(self.gender_fc(h))
        return {"logits": self.out(self.drop(e)), "gender_logits": self.gender_out(self.drop(g)), "embedding": e}

    def loss(self, batch: Batch, outputs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``CE_emotion + w_gender * CE_gender`` (gender masked where unknown), with both terms."""
        ce = emotion_cross_entropy(outputs["logits"], batch.y, batch.class_weights)
        gender = masked_cross_entropy(outputs["gender_logits"], batch.aux["gender"], batch.aux_mask.get("gender"))
        return ce + self.w_gender * gender, {"emotion": ce, "gender": gender}


def build(config: Mapping[str, Any], info: InputInfo) -> MTLCNN:
    """:class:`MTLCNN` from the config and the input info (``info.aux_classes["gender"]``)."""
    if len(info.shape) != 1:
        raise ValueError(f"mtl_cnn takes per-frame vectors (e.g. mfb), got sample shape {info.shape}")
    return MTLCNN(
        int(info.shape[0]), info.n_classes, int(info.aux_classes.get("gender", 0)),
        channels=int(config["channels"]), kernel_size=int(config["kernel_size"]),
        dilations=[int(d) for d in config["dilations"]], hidden=int(config["hidden"]),
        dropout=float(config["dropout"]), pooling=str(config["pooling"]),
        gender_hidden=int(config["gender_hidden"]), w_gender=float(config["w_gender"]), **dcnn_conv_args(config),
    )
