"""Self-supervised speech model features (HuBERT, wav2vec 2.0, WavLM) with transformers.

The ``ssl`` extractor loads ``AutoModel.from_pretrained(model)`` from a local folder (or
a hub id where a hub is reachable) once per actor, runs utterances in batches of similar
length and returns the hidden states of every requested layer:

* ``pooling="mean"`` (kind ``vector``): ``[L, H]`` per utterance, the mean over the
  utterance's valid frames of each layer (padding frames are excluded using the model's
  own output-length formula).
* ``pooling="frames"`` (kind ``sequence``): ``[L, T, H]`` per utterance, stored as
  ``frames_dtype`` (float16 by default, to halve the disk).

``L`` counts the hidden states the model returns: index 0 is the CNN feature projection
(the transformer input), 1..N the transformer layers; ``layers="all"`` keeps all N+1,
a list such as ``[6, 12]`` keeps those. :func:`serray.features.load_features` picks one
layer (``layer=-1``, the last stored one, by default), the mean over layers
(``layer="mean"``) or all of them concatenated (``layer="all"``), so ``data`` is ``[N, H]``
(or ``[N, L*H]``) for ``vector`` and ``[T, H]`` per utterance for ``sequence``.

Input normalisation: the model folder's feature extractor (``AutoFeatureExtractor``)
when it has a ``preprocessor_config.json``; otherwise each utterance is normalised to
zero mean and unit variance (what wav2vec 2.0 / HuBERT fine-tuning recipes do). The
attention mask is passed when the feature extractor asks for it (or, without one, when
the model's conv front end uses layer norm), and batches are formed from utterances of
similar length. Models without attention-mask support (group norm in the conv front
end: HuBERT / wav2vec 2.0 *base*) would give padded utterances different numbers, so for
them only utterances of exactly equal length share a batch: an utterance's features
never depend on what it was batched with. Utterances longer than ``max_seconds`` are
cropped to their first ``max_seconds``.

The cache key includes the model source and, for a local folder, a fingerprint of its
files (names, sizes, modification times), so replacing the weights invalidates the cache.

Example:
    >>> ext = get_extractor("ssl", model="/path/to/hubert-base-ls960", layers="all")  # doctest: +SKIP
    >>> ext.extract(audio).shape                                                     # doctest: +SKIP
    (13, 768)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from serray.features.base import Extractor, FeatureError, folder_fingerprint, get_extractor, register  # noqa: F401

__all__ = ["SSL"]

log = logging.getLogger(__name__)


@register
class SSL(Extractor):
    """Per-layer hidden states of a transformers speech model, mean-pooled or frame-level.

    Parameters (hashed):
        model: Local model folder or hub id (required).
        revision: Hub revision (ignored for a local folder).
        layers: ``"all"`` or a list of hidden-state indices.
        pooling: ``"mean"`` or ``"frames"``.
        max_seconds: Crop longer utterances to this length (``0``: never crop).
        frames_dtype: Storage dtype of frame-level output.

    Options (not hashed):
        batch_size: Utterances per forward pass.
        max_batch_seconds: Upper bound on padded audio per forward pass.
        device: Force a device (``cpu`` / ``cuda``).
    """

    name = "ssl"
    libraries = ("torch", "transformers")
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000, "model": "", "revision": "main", "layers": "all", "pooling": "mean",
        "max_seconds": 30.0, "frames_dtype": "float16",
    }
    option_defaults: ClassVar[dict[str, Any]] = {"batch_size": 8, "max_batch_seconds": 240.0, "device": None}
    sort_by_length = True
    min_chunk = 8
    single_thread = False

    def _coerce_param(self, name: str, value: Any, default: Any) -> Any:
        if name == "layers":
            if isinstance(value, str):
                if value.strip().lower() == "all":
                    return "all"
                value = [v for v in value.replace(" ", "").strip("[]").split(",") if v]
            if isinstance(value, (int, np.integer)):
                value = [value]
            try:
                return [int(v) for v in value]
            except (TypeError, ValueError):
                raise ValueError(f"extractor 'ssl': layers must be 'all' or a list of integers, got {value!r}") from None
        if name == "model" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        return super()._coerce_param(name, value, default)

    def _validate(self) -> None:
        p = self.params
        if not p["model"]:
            raise ValueError(
                "extractor 'ssl' needs a model: a local folder saved with save_pretrained or a hub id, "
                "e.g. `serray features W --set ssl --param ssl.model=/models/hubert-base-ls960`; train, tune and "
                "seeds take the same model as `--feature-param model=/models/hubert-base-ls960`"
            )
        if Path(p["model"]).expanduser().is_dir():
            p["model"] = str(Path(p["model"]).expanduser().resolve())
        if p["pooling"] not in ("mean", "frames"):
            raise ValueError(f"extractor 'ssl': pooling must be 'mean' or 'frames', got {p['pooling']!r}")
        if p["layers"] != "all" and not p["layers"]:
            raise ValueError("extractor 'ssl': layers must be 'all' or a non-empty list of integers")
        if p["max_seconds"] < 0:
            raise ValueError(f"extractor 'ssl': max_seconds must be >= 0, got {p['max_seconds']}")
        if p["frames_dtype"] not in ("float16", "float32"):
            raise ValueError(f"extractor 'ssl': frames_dtype must be float16 or float32, got {p['frames_dtype']!r}")
        if int(self.options["batch_size"]) < 1:
            raise ValueError(f"extractor 'ssl': batch_size must be >= 1, got {self.options['batch_size']}")
        self.storage_dtype = p["frames_dtype"] if p["pooling"] == "frames" else "float32"

    def _kind(self) -> str:
        return "vector" if self.params["pooling"] == "mean" else "sequence"

    @property
    def is_local(self) -> bool:
        """Whether ``model`` is a local folder."""
        return Path(self.params["model"]).is_dir()

    def versions(self) -> dict[str, str]:
        v = super().versions()
        v["model"] = f"folder:{folder_fingerprint(self.params['model'])}" if self.is_local else f"hub:{self.params['revision']}"
        return v

    def _config(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.params["model"], revision=self.params["revision"])

    def layer_indices(self, n_hidden_states: int) -> list[int]:
        """The hidden-state indices kept, for a model returning ``n_hidden_states``.

        Raises:
            ValueError: An index outside the model's range.
        """
        if self.params["layers"] == "all":
            return list(range(n_hidden_states))
        out = []
        for i in self.params["layers"]:
            j = i + n_hidden_states if i < 0 else i
            if not 0 <= j < n_hidden_states:
                raise ValueError(
                    f"extractor 'ssl': layer {i} is out of range; {self.params['model']} returns {n_hidden_states} "
                    f"hidden states (0 = CNN projection, 1..{n_hidden_states - 1} = transformer layers)"
                )
            out.append(j)
        return out

    def describe(self) -> dict[str, Any]:
        cfg = self._config()
        n = int(cfg.num_hidden_layers) + 1
        return {
            "model_type": getattr(cfg, "model_type", "?"),
            "layers": self.layer_indices(n),
            "hidden_size": int(cfg.hidden_size),
            "layout": "[L, H] per utterance" if self.params["pooling"] == "mean" else "[L, T, H] per utterance",
        }

    # ------------------------------------------------------------------ computation

    def _setup(self) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        src, rev = self.params["model"], self.params["revision"]
        try:
            self._fe = AutoFeatureExtractor.from_pretrained(src, revision=rev)
        except (OSError, ValueError, KeyError) as exc:
            log.info("ssl: no feature extractor for %s (%s); normalising each utterance to zero mean, unit variance", src, exc)
            self._fe = None
        try:
            model = AutoModel.from_pretrained(src, revision=rev)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"extractor 'ssl': cannot load model {src!r} ({exc}); give a folder saved with save_pretrained "
                "(config.json + weights) or a reachable hub id"
            ) from exc
        self._model = model.eval().to(self.device)
        if self._fe is not None:
            self._use_mask = bool(getattr(self._fe, "return_attention_mask", False))
        else:
            self._use_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        self._layers = self.layer_indices(int(model.config.num_hidden_layers) + 1)
        self._torch = torch

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        out = self._forward([self._crop(audio)])[0]
        return out

    def _crop(self, audio: np.ndarray) -> np.ndarray:
        ms = self.params["max_seconds"]
        return audio[: int(ms * self.sample_rate)] if ms > 0 else audio

    def _output_lengths(self, lengths: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        fn = getattr(self._model, "_get_feat_extract_output_lengths", None)
        if fn is not None:
            return fn(lengths).long()
        cfg = self._model.config
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
            lengths = (lengths - k) // s + 1
        return lengths.long()

    def _forward(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        lengths = [len(a) for a in audios]
        if self._fe is not None:
            enc = self._fe(
                list(audios), sampling_rate=self.sample_rate, padding=True, return_tensors="pt", return_attention_mask=True
            )
            values, mask = enc["input_values"], enc["attention_mask"]
        else:
            n = max(lengths)
            values = torch.zeros((len(audios), n), dtype=torch.float32)
            mask = torch.zeros((len(audios), n), dtype=torch.long)
            for i, a in enumerate(audios):
                a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
                values[i, : len(a)] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                mask[i, : len(a)] = 1
        kwargs = {"attention_mask": mask.to(self.device)} if self._use_mask else {}
        with torch.inference_mode():
            out = self._model(values.to(self.device), output_hidden_states=True, **kwargs)
            hs = torch.stack([out.hidden_states[i] for i in self._layers], dim=1)  # [B, L, T, H]
            frames = self._output_lengths(torch.tensor(lengths)).clamp(max=hs.shape[2]).tolist()
            results = []
            for b, n_fr in enumerate(frames):
                if n_fr < 1:
                    raise FeatureError(f"ssl: utterance of {lengths[b]} samples is too short for one model frame")
                seq = hs[b, :, :n_fr].float()
                if self.params["pooling"] == "mean":
                    results.append(seq.mean(dim=1).cpu().numpy().astype(np.float32))
                else:
                    results.append(seq.cpu().numpy().astype(self.params["frames_dtype"]))
        return results

    def extract_batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray | Exception]:
        """Features of several utterances, run in batches of similar length.

        A batch that fails (e.g. out of GPU memory) is retried one utterance at a time, so
        one bad utterance only fails itself.
        """
        self.setup()
        results: list[np.ndarray | Exception | None] = [None] * len(audios)
        ready: list[tuple[int, np.ndarray]] = []
        for i, a in enumerate(audios):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 1 or a.size == 0:
                results[i] = ValueError(f"ssl: audio must be a non-empty 1-D array, got shape {a.shape}")
            else:
                ready.append((i, self._crop(a)))
        ready.sort(key=lambda t: len(t[1]))
        max_samples = float(self.options["max_batch_seconds"]) * self.sample_rate
        batch: list[tuple[int, np.ndarray]] = []
        batches = []
        for item in ready:
            # Without an attention mask, padding would change the numbers (group norm in
            # the conv front end), so only utterances of equal length share a batch.
            other_length = not self._use_mask and bool(batch) and len(batch[0][1]) != len(item[1])
            if batch and (
                other_length
                or len(batch) >= int(self.options["batch_size"])
                or len(item[1]) * (len(batch) + 1) > max_samples
            ):
                batches.append(batch)
                batch = []
            batch.append(item)
        if batch:
            batches.append(batch)
        for batch in batches:
            try:
                outs = self._forward([a for _, a in batch])
                for (i, _), o in zip(batch, outs):
                    results[i] = self._check(o)
            except Exception as exc:
                if len(batch) == 1:
                    results[batch[0][0]] = exc
                    continue
                log.warning("ssl: batch of %d failed (%s); retrying one by one", len(batch), exc)
                for i, a in batch:
                    try:
                        results[i] = self._check(self._forward([a])[0])
                    except Exception as exc1:
                        results[i] = exc1
        return results  # type: ignore[return-value]
