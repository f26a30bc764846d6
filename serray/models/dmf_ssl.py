"""Fine-tuning the SSL model inside a DMF system (``dmf_seq`` with ``ssl_finetune=true``).

The input is the ``waveform`` feature set (``[T, 1]`` samples). :class:`SSLFrontEnd` loads
``AutoModel.from_pretrained(ssl_model)`` from a local folder (HuBERT, wav2vec 2.0,
WavLM), standardises every utterance over its valid samples (zero mean, unit variance,
as in :mod:`serray.features.ssl`; a global or per-speaker z-normalisation of the input
therefore changes nothing), runs it with all hidden states and mean-pools every hidden
state over the utterance's valid frames: ``[B, L * H]`` for the layer mix of
:class:`~serray.models.dmf.DMF`. An utterance's output does not depend on the rest of its
batch: the attention mask of the true lengths is passed where the model supports it
(layer norm in the convolutional front-end, e.g. HuBERT-large as in the paper); a
group-norm model (HuBERT / wav2vec 2.0 *base*) runs each group of equal-length utterances
unpadded instead (slower for batches of mixed lengths; ``max_frames`` crops make most
training utterances equal in length).

Only the top ``trainable_layers`` transformer layers are trained: they are registered
(parameter group ``ssl``) and saved with the best weights; the rest of the SSL model
(convolutional front-end, feature projection, positional convolution, lower layers) is
held outside the module's parameters, with ``requires_grad`` off and in evaluation mode,
so no stage plan can train it and no gradient is computed for it.

Example:
    >>> front = SSLFrontEnd("/models/hubert-base", trainable_layers=2)   # doctest: +SKIP
    >>> front(torch.randn(2, 16000, 1), torch.tensor([16000, 8000])).shape  # doctest: +SKIP
    torch.Size([2, 9984])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from serray.models.layers import length_mask

__all__ = ["SSLFrontEnd"]


class SSLFrontEnd(nn.Module):
    """A transformers speech model with its top ``trainable_layers`` layers trainable.

    Args:
        source: Local folder saved with ``save_pretrained``.
        trainable_layers: Top transformer layers to train (``0``: the SSL model is frozen).

    Raises:
        ValueError: A model that cannot be loaded or has no ``encoder.layers``, or a bad layer count.
    """

    def __init__(self, source: str, trainable_layers: int) -> None:
        super().__init__()
        from transformers import AutoModel

        if not source:
            raise ValueError("dmf ssl_finetune needs ssl_model=<local folder saved with save_pretrained>, e.g. --set ssl_model=/models/hubert-base")
        try:
            model = AutoModel.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ValueError(f"dmf: cannot load ssl_model {source!r} ({exc}); give a folder saved with save_pretrained") from exc
        layers = getattr(getattr(model, "encoder", None), "layers", None)
        if layers is None:
            raise ValueError(f"dmf: ssl_model {source!r} ({type(model).__name__}) has no encoder.layers; use a HuBERT / wav2vec 2.0 / WavLM model")
        n = int(trainable_layers)
        if not 0 <= n <= len(layers):
            raise ValueError(f"dmf: trainable_layers must be in 0..{len(layers)} for {source!r}, got {trainable_layers}")
        model.requires_grad_(False)
        model.eval()
        self._model = [model]  # a list: its parameters stay outside this module's (frozen for good)
        self.top = nn.ModuleList(list(layers)[len(layers) - n:])
        self.top.requires_grad_(True)
        self.n_hidden = int(model.config.num_hidden_layers) + 1
        self.hidden = int(model.config.hidden_size)
        self.use_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"

    @property
    def model(self) -> Any:
        """The whole transformers model (its top layers are :attr:`top`)."""
        return self._model[0]

    def _apply(self, fn: Any, recurse: bool = True) -> "SSLFrontEnd":
        self.model._apply(fn)  # .to(device) / .float() reach the frozen part too
        return super()._apply(fn, recurse)

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """``[B, T, 1]`` samples (zero-padded) and their lengths -> ``[B, L * H]`` pooled hidden states.

        An utterance's output never depends on the other utterances of its batch: a model
        whose front-end uses layer norm runs the batch once with the attention mask of the
        true lengths; one with group norm (HuBERT / wav2vec 2.0 *base*, where
        transformers says not to pass a mask, and the normalisation statistics of the first
        convolution would include the padding) runs each group of equal-length utterances
        unpadded, as :mod:`serray.features.ssl` extracts them.
        """
        x = wave.squeeze(-1).float()
        lengths = lengths.to(x.device).long().clamp(1, x.shape[1])
        mask = length_mask(lengths, x.shape[1])
        n = lengths.unsqueeze(1).to(x.dtype)
        mean = (x * mask).sum(1, keepdim=True) / n
        var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
        x = (x - mean) / torch.sqrt(var + 1e-7) * mask
        if self.use_mask:
            return self._pooled(x, lengths, mask.long())
        groups = [(lengths == length).nonzero(as_tuple=True)[0] for length in torch.unique(lengths).tolist()]
        pooled = torch.cat([self._pooled(x[idx, : int(lengths[idx[0]])], lengths[idx], None) for idx in groups])
        return pooled[torch.argsort(torch.cat(groups))]  # back to batch order

    def _pooled(self, x: Tensor, lengths: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Run the model on standardised samples ``[B, T]``; every hidden state mean-pooled over valid frames."""
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        out = self.model(x, output_hidden_states=True, **kwargs)
        hs = torch.stack(out.hidden_states, dim=1)  # [B, L, T', H]
        frames = self.model._get_feat_extract_output_lengths(lengths).long().clamp(1, hs.shape[2])
        fmask = length_mask(frames, hs.shape[2]).to(hs.dtype)[:, None, :, None]
        pooled = (hs * fmask).sum(dim=2) / frames.to(hs.dtype)[:, None, None]
        return pooled.flatten(1)
