"""Synthetic manifests and feature sets for the training tests (not a test module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EMOTIONS = ("neutral", "happy", "sad")


@dataclass
class FakeFeatureSet:
    """Same attributes as ``serray.features.FeatureSet``."""

    kind: str
    utt_ids: list
    data: Any
    missing: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.data[0]
        return tuple(np.asarray(first).shape[1:]) if self.kind != "vector" else (np.asarray(self.data).shape[1],)


def synth_manifest(n_speakers: int = 6, per_class: int = 6, corpus: str = "syn") -> pd.DataFrame:
    """``n_speakers`` speakers (alternating f/m) x 3 emotions x ``per_class`` utterances."""
    rows = []
    for s in range(n_speakers):
        for emo in EMOTIONS:
            for i in range(per_class):
                rows.append(
                    {
                        "utt_id": f"{corpus}/s{s}_{emo}_{i}",
                        "path": f"/nonexistent/{corpus}/s{s}_{emo}_{i}.wav",
                        "corpus": corpus,
                        "speaker": f"{corpus}_s{s}",
                        "emotion": emo,
                        "gender": "fm"[s % 2],
                    }
                )
    return pd.DataFrame(rows)


def _class_index(manifest: pd.DataFrame) -> np.ndarray:
    return manifest["emotion"].map({e: i for i, e in enumerate(EMOTIONS)}).to_numpy()


def vector_features(manifest: pd.DataFrame, dim: int = 12, seed: int = 0, sep: float = 1.5) -> FakeFeatureSet:
    """Class-dependent means plus a per-speaker offset and noise."""
    rng = np.random.default_rng(seed)
    y = _class_index(manifest)
    spk = pd.factorize(manifest["speaker"])[0]
    offsets = rng.normal(scale=2.0, size=(spk.max() + 1, dim))
    x = rng.normal(size=(len(manifest), dim)) + sep * np.eye(len(EMOTIONS), dim)[y] + offsets[spk]
    return FakeFeatureSet("vector", manifest["utt_id"].tolist(), x.astype(np.float32))


def sequence_features(manifest: pd.DataFrame, dim: int = 8, seed: int = 0, t_range: tuple[int, int] = (12, 30)) -> FakeFeatureSet:
    """Variable-length frame sequences with class-dependent means."""
    rng = np.random.default_rng(seed)
    y = _class_index(manifest)
    data = [
        (rng.normal(size=(int(rng.integers(*t_range)), dim)) + 1.5 * np.eye(len(EMOTIONS), dim)[c]).astype(np.float32)
        for c in y
    ]
    return FakeFeatureSet("sequence", manifest["utt_id"].tolist(), data)


def segment_features(manifest: pd.DataFrame, shape: tuple[int, int, int] = (1, 6, 10), seed: int = 0) -> FakeFeatureSet:
    """1-3 segments ``[S, C, F, T]`` per utterance with class-dependent means."""
    rng = np.random.default_rng(seed)
    y = _class_index(manifest)
    data = []
    for c in y:
        s = int(rng.integers(1, 4))
        a = rng.normal(size=(s, *shape))
        a[:, :, c] += 1.5
        data.append(a.astype(np.float32))
    return FakeFeatureSet("segments", manifest["utt_id"].tolist(), data)


#: Small settings per model so that every conformance check trains in well under a second
#: (also the golden driver outputs' and the kept-model tests' settings).
TINY = {
    "mlp": {"hidden_sizes": [8]},
    "dcnn": {"channels": 8, "hidden": 8},
    "mtl_cnn": {"channels": 8, "hidden": 8, "gender_hidden": 8},
    "cnn_lstm": {"channels": [4, 4], "lstm_hidden": 6},
    "adarl": {"conv_channels": [2, 2, 2, 4], "pool_sizes": [2, 2, 1, 1], "embedding_dim": 8},
    "nhnn": {"channels": 8, "hidden": 8, "max_components": 3, "dp_max_iter": 100},
    "mtl": {"hidden": 8, "context": 2, "dnn_layers": 1, "elm_hidden": 8},
    "dmf": {"fe_hidden": [8], "head_hidden": 8},
    "dmf_seq": {"fe_hidden": [8], "head_hidden": 8},
    "mgnas": {"seq_experts": {"default": {"conv": 2, "hidden": 3}}, "att_dim": 4,
              "proj_dim": 4, "units": 6, "gating": "nas", "batch_size": 12, "samples_per_class": 4},
}
SEGMENT_SHAPE = (2, 8, 12)


def features_of_kind(manifest: pd.DataFrame, kind: str) -> FakeFeatureSet:
    """Synthetic features of one input kind (``vector``, ``sequence`` or segments of :data:`SEGMENT_SHAPE`)."""
    if kind == "vector":
        return vector_features(manifest)
    if kind == "sequence":
        return sequence_features(manifest)
    return segment_features(manifest, shape=SEGMENT_SHAPE)


def serve_feature_sets(sets: dict[str, FakeFeatureSet]) -> Any:
    """A stand-in for ``serray.features.load_features`` serving ``sets`` by name (restricted to the manifest)."""

    def load(workdir, set_name, manifest, params=None):
        fs = sets[set_name]
        keep = set(manifest["utt_id"])
        idx = [i for i, u in enumerate(fs.utt_ids) if u in keep]
        data = fs.data[idx] if fs.kind == "vector" else [fs.data[i] for i in idx]
        return type(fs)(fs.kind, [fs.utt_ids[i] for i in idx], data, missing=sorted(keep - set(fs.utt_ids)))

    return load

