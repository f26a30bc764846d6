"""Fixed-seed outputs of every fold-training driver (not a test module).

Shared by ``tests/data/make_golden_drivers.py`` (which wrote ``golden_drivers_v1.npz``
with the code before the fold executor) and ``tests/test_golden_drivers.py`` (which
compares today's outputs with it). Every function returns ``{key: array}``.

The corpus is tiny (4 speakers x 3 emotions x 3 utterances, speaker-independent 2-fold),
the models are tiny (2 epochs), and the features are synthetic (served by a replaced
``serray.features.load_features``), so every driver runs in seconds.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serray.training.resources import Resources

from _training_helpers import (  # TINY: the conformance tests' settings (2 epochs added below)
    SEGMENT_SHAPE, TINY, segment_features, sequence_features, serve_feature_sets, synth_manifest, vector_features,
)

GOLDEN = Path(__file__).parent / "data" / "golden_drivers_v1.npz"
SEED = 3
#: Feature-set names the replaced loader serves, per kind.
SET_OF_KIND = {"vector": "vec", "sequence": "seq", "segments": "seg"}
#: Models with a slow-accumulating recurrent layer (tolerance on another CPU).
RECURRENT = ("cnn_lstm", "mtl", "mgnas", "dmf_seq", "adarl", "nhnn")


def fingerprint() -> str:
    """What bit-identical floats depend on: torch, its CPU kernels, the machine, the CPU count,
    and the CPU model (the same torch build rounds differently on another CPU model with the
    same kernel level: on an AMD EPYC 3.6e-7 on adarl's logits, 6e-5 on cnn_lstm's)."""
    import torch

    from serray.training.interface import cpu_name

    return (f"torch={torch.__version__} cpu={torch.backends.cpu.get_cpu_capability()} "
            f"machine={platform.machine()} cpus={os.cpu_count()} model={cpu_name()}")


def manifest() -> pd.DataFrame:
    m = synth_manifest(n_speakers=4, per_class=3)
    m["naturalness"] = np.where(m["speaker"].str[-1].astype(int) % 2 == 0, "acted", "natural")  # for mtl
    return m


def feature_sets(m: pd.DataFrame) -> dict[str, Any]:
    return {"vec": vector_features(m), "seq": sequence_features(m), "seg": segment_features(m, shape=SEGMENT_SHAPE)}


def install_loader(m: pd.DataFrame) -> Any:
    """Replace ``serray.features.load_features`` by one serving the synthetic sets; returns the old one."""
    import serray.features

    old = serray.features.load_features
    serray.features.load_features = serve_feature_sets(feature_sets(m))
    return old


def make_workdir(path: Path) -> Path:
    from serray.manifest import write_manifest

    path.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest(), path, "syn")
    return path


def features_text(model: str) -> str:
    """``--features`` of a model: each input role's synthetic set of its kind."""
    from serray.models import registry

    spec = registry.get(model)
    return "+".join(f"{role}={SET_OF_KIND[inp.kinds[0]]}" for role, inp in spec.inputs.items())


def run_spec(w: Path, model: str, overrides: dict[str, Any] | None = None) -> Any:
    """The run of ``model``: tiny config (2 epochs), synthetic features, 2-fold, seed :data:`SEED`."""
    from serray.models import registry
    from serray.training.spec import RunSpec

    spec = registry.get(model)
    config = {**TINY.get(model, {}), **({"epochs": 2} if spec.backend == "torch" else {}), **(overrides or {})}
    return RunSpec(str(w), model, features=features_text(model), protocol="kfold", k=2, seed=SEED, config=config)


def _logits(prefix: str, folds: Any) -> dict[str, np.ndarray]:
    out = {}
    for r in folds:
        out[f"{prefix}/{r.index}/val"] = np.asarray(r.validation_logits)
        out[f"{prefix}/{r.index}/test"] = np.asarray(r.test_logits)
    return out


def train_runs(w: Path, model: str, parallel: bool) -> dict[str, np.ndarray]:
    """``train_run`` of ``model`` in this process, or on one Ray fold actor (1 CPU) hosting both folds."""
    from serray.training.run import train_run

    path = "ray" if parallel else "local"
    kw = {"fold_cpus": 1.0, "folds_per_actor": 2} if parallel else {}
    res = train_run(run_spec(w, model), run_name=f"{model}-{path}", resources=Resources(parallel=parallel, device="cpu", **kw))
    return _logits(f"train/{model}/{path}", res.folds)


def stored_logits(w: Path, run: str) -> dict[str, np.ndarray]:
    """Every logit of a run in the predictions store, keyed by config id position, seed, split, fold
    (rows sorted by utterance)."""
    from serray.predictions import read_predictions

    df = read_predictions(w, [run]).sort_values(["config_id", "seed", "split", "fold", "utt_id"])
    out = {}
    for (cid, seed, split, fold), g in df.groupby(["config_id", "seed", "split", "fold"], sort=True):
        out[f"{cid}/{seed}/{split}/{fold}"] = np.stack(g["logits"].to_numpy())
    return out


def seeds(w: Path) -> dict[str, np.ndarray]:
    """``train_seeds`` of mlp with 2 seeds (Ray tasks, 1 CPU each)."""
    from serray.training.seeds import train_seeds

    res = train_seeds(run_spec(w, "mlp"), seeds=[0, 1], run_prefix="golden", resources=Resources(device="cpu"),
                      progress=False)
    run = res.runs["base"]
    return {f"seeds/{k.split('/', 1)[1]}": v for k, v in stored_logits(w, run).items()}


def tune(w: Path) -> dict[str, np.ndarray]:
    """A fixed-seed search of mlp: 4 trials, 4 epochs, ASHA from epoch 2, one trial at a time.

    Trials are keyed by their configuration's rank in the leaderboard order of the
    (val_ua, learning rate) pairs, which does not depend on the random trial ids.
    """
    from serray.predictions import read_predictions
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    opts = SearchOptions(num_samples=4, max_epochs=4, grace_period=2, name="golden-tune",
                         resources=Resources(fold_cpus=1.0, device="cpu"))
    out = tune_model(run_spec(w, "mlp"), opts, max_concurrent_trials=1, verbose=0)
    board = out.leaderboard.sort_values(["val_ua", "config/lr"], ascending=[False, True]).reset_index(drop=True)
    rank = {tid: i for i, tid in enumerate(board["trial_id"])}
    res = {"tune/board/val_ua": board["val_ua"].to_numpy(float), "tune/board/test_ua": board["test_ua"].to_numpy(float),
           "tune/board/epochs": board["epochs"].to_numpy(float),
           "tune/board/lr": board["config/lr"].to_numpy(float)}
    df = read_predictions(w, ["golden-tune"])
    for (cid, split, fold), g in df.groupby(["config_id", "split", "fold"]):
        res[f"tune/{rank[cid]}/{split}/{fold}"] = np.stack(g.sort_values("utt_id")["logits"].to_numpy())
    return res


def nested(w: Path) -> dict[str, np.ndarray]:
    """Nested search of mlp (2 trials per outer fold), in this process and as Ray tasks."""
    from serray.tune.nested import nested_tune
    from serray.tune.options import SearchOptions

    out = {}
    for path, parallel in (("local", False), ("ray", True)):
        name = f"golden-nested-{path}"
        res = nested_tune(run_spec(w, "mlp"), SearchOptions(num_samples=2, max_epochs=3, grace_period=1, name=name,
                                                            resources=Resources(device="cpu", parallel=parallel)))
        out[f"nested/{path}/val_ua"] = res.table["val_ua"].to_numpy(float)
        out[f"nested/{path}/test_ua"] = res.table["test_ua"].to_numpy(float)
        out[f"nested/{path}/winner"] = res.table["winner"].to_numpy(float)
        out.update({f"nested/{path}/{k.split('/', 2)[2]}": v for k, v in stored_logits(w, name).items()})
    return out


def intermediate(w: Path) -> dict[str, np.ndarray]:
    """Intermediate fusion: dmf systems stored by ``train_seeds`` (2 seeds), retrained for
    their embeddings, and the new classifier on their concatenation."""
    from serray.ensemble.intermediate import fuse_intermediate, load_systems, system_embeddings
    from serray.predictions import read_predictions
    from serray.training.seeds import train_seeds

    res = train_seeds(run_spec(w, "dmf", {"patience": 0}), seeds=[0, 1],
                      run_prefix="golden-dmf", resources=Resources(device="cpu"), progress=False)
    run = res.runs["base"]
    stored = read_predictions(w, [run])
    systems = load_systems(str(w), [run], stored)
    embs = []
    out = {}
    for s in systems:
        emb, exp = system_embeddings(str(w), s, stored)
        embs.append(emb)
        for i, z in emb.folds.items():
            out[f"fusion/emb/{s.seed}/{i}"] = z
    folds, _ = fuse_intermediate(exp, embs, seed=SEED, ec_config={"epochs": 3})
    out.update(_logits("fusion/ec", folds))
    return out

