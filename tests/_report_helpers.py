"""Synthetic predictions stores for the report tests (not a test module)."""

from __future__ import annotations

import pandas as pd

from serray import io, manifest, predictions

from _training_helpers import EMOTIONS, synth_manifest

CLASSES = list(EMOTIONS)


def store_manifest(w, n_speakers: int = 6, per_class: int = 4) -> pd.DataFrame:
    m = synth_manifest(n_speakers=n_speakers, per_class=per_class)
    manifest.write_manifest(m, w, "syn")
    return m


def write_system(w, m: pd.DataFrame, run: str, seeds, acc: float, rng, classes=CLASSES, config_id: str = "c0",
                 val: bool = True) -> None:
    """LOSO-like predictions: fold = speaker index; correct with probability ``acc``."""
    spk = {s: i for i, s in enumerate(sorted(m["speaker"].unique()))}
    for seed in seeds:
        rows = []
        for _, r in m.iterrows():
            fold = spk[r["speaker"]]
            splits = [("test", r["utt_id"])]
            if val:
                splits.append(("validation", r["utt_id"]))
            for split, utt in splits:
                y = r["emotion"] if r["emotion"] in classes else classes[0]
                ok = rng.random() < acc
                p = y if ok else classes[(classes.index(y) + 1 + int(rng.integers(0, len(classes) - 1))) % len(classes)]
                logits = [float(rng.normal()) for _ in classes]
                logits[classes.index(p)] += 5.0
                vfold = (fold + 1) % len(spk) if split == "validation" else fold
                rows.append({"fold": vfold, "split": split, "utt_id": utt, "label": y, "pred": p, "logits": logits})
        predictions.write_predictions(w, pd.DataFrame(rows), run=run, config_id=config_id, seed=seed, classes=classes)


def write_record(w, run: str, **fields) -> dict:
    rec = {"run": run, "model": fields.pop("model", "fake"), "normalize": "global", "protocol": "loso", **fields}
    io.write_json(rec, w / "runs" / run / "record.json")
    return rec
