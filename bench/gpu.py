"""GPU paths against the same machine's CPU, in one run, without Ray.

For a machine with a CUDA GPU (it exits with a message on one without). Runs through
the real code paths, on EmoDB (``--data``), each step timed on CUDA and, where it is
affordable, on the CPU of the same machine:

1. ensemble search: exhaustive 30-choose-5 over the IEMOCAP-sized synthetic members of
   ``bench/ensemble.py``, numpy backend on one core vs the torch backend on CUDA; the two
   leaderboards must be identical;
2. SSL features: a HuBERT-base-sized model (random weights, built from transformers'
   ``HubertConfig()`` and saved with ``save_pretrained``: no hub here) through
   ``serray features --set ssl --num-actors 0`` on CUDA for the whole corpus, and the
   extractor on the first ``--ssl-files`` utterances on CPU vs CUDA (max difference printed);
3. training: ``serray train mlp`` on those features (``--sequential``, no Ray) twice on
   CUDA (are the logits bit-identical?) and once on CPU;
4. ADARL, the paper's full model (not ``--preset reduced``), LOSO 4-class, on CUDA.

Usage::

    python bench/gpu.py --data ../shared/data [--workdir W] [--skip-adarl]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def serray(*args: str, timeout: float = 600) -> tuple[float, str]:
    """Run one serray command in a fresh process; (wall seconds, its output)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "serray", *args], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"serray {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall, p.stdout + p.stderr


def pooled_ua(text: str) -> float:
    return float(re.search(r"pooled UA ([0-9.]+)", text).group(1))


def logits(text: str) -> np.ndarray:
    """The logits of the run whose output ``text`` is, in stored order."""
    return np.stack(pd.read_parquet(re.search(r"predictions: (\S+)", text).group(1))["logits"].to_numpy())


def ensemble_step() -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from ensemble import make_members  # bench/ensemble.py

    from serray.ensemble import exhaustive_search

    members = make_members(30)
    exhaustive_search(members, [5], top=10, backend="numpy", rank_range=(0, 20_000))
    exhaustive_search(members, [5], top=10, backend="torch", device="cuda", rank_range=(0, 20_000))
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cpu = exhaustive_search(members, [5], top=10, backend="numpy")
    cpu_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gpu = exhaustive_search(members, [5], top=10, backend="torch", device="cuda")
    gpu_s = time.perf_counter() - t0
    torch.set_num_threads(os.cpu_count() or 1)
    same = cpu["rank"].tolist() == gpu["rank"].tolist() and np.allclose(cpu["score"], gpu["score"], atol=1e-12)
    print(f"ensemble 30C5 (142,506 subsets): numpy 1 core {cpu_s:.2f} s, torch CUDA {gpu_s:.2f} s, "
          f"ratio CPU/GPU {cpu_s / gpu_s:.1f}x; leaderboards identical: {same}")  # fmt: skip


def make_hubert(folder: Path) -> None:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    HubertModel(HubertConfig()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)


def ssl_step(w: Path, model: Path, n_files: int) -> None:
    import soundfile as sf
    import torch

    from serray.features import get_extractor

    wall, out = serray("features", str(w), "--set", "ssl", "--param", f"ssl.model={model}",
                       "--param", "ssl.device=cuda", "--num-actors", "0")  # fmt: skip
    hours = pd.read_parquet(w / "manifests" / "emodb.parquet")["duration_s"].sum() / 3600
    print(f"ssl HuBERT-base on CUDA, whole corpus ({hours * 60:.1f} min of audio): {wall:.1f} s "
          f"(the command, model load included); {out.strip().splitlines()[-1]}")  # fmt: skip
    paths = pd.read_parquet(w / "manifests" / "emodb.parquet")["path"].tolist()[:n_files]
    audios = [sf.read(p, dtype="float32")[0] for p in paths]
    res = {}
    for device in ("cuda", "cpu"):
        ext = get_extractor("ssl", model=str(model))
        ext.setup(device=device)
        ext.extract_batch(audios[:2])
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res[device] = (ext.extract_batch(audios), time.perf_counter() - t0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(res["cpu"][0], res["cuda"][0]))
    scale = max(float(np.abs(a).max()) for a in res["cpu"][0])
    print(f"ssl extractor, {n_files} utterances: CPU ({torch.get_num_threads()} threads) {res['cpu'][1]:.2f} s, "
          f"CUDA {res['cuda'][1]:.2f} s, ratio {res['cpu'][1] / res['cuda'][1]:.1f}x; "
          f"max |CPU - CUDA| {diff:.2e} (values up to {scale:.1f})")  # fmt: skip


def train_step(w: Path, model: Path) -> None:
    args = ["train", "mlp", "-w", str(w), "--features", "ssl", "--feature-param", f"model={model}", "--sequential"]
    g1, o1 = serray(*args, "--device", "cuda")
    g2, o2 = serray(*args, "--device", "cuda", "--run", "mlp-ssl-cuda-again")
    c1, o3 = serray(*args, "--device", "cpu", "--run", "mlp-ssl-cpu")
    l1, l2, l3 = logits(o1), logits(o2), logits(o3)
    same, gap = np.array_equal(l1, l2), float(np.abs(l1 - l3).max())
    print(f"train mlp on ssl (10 LOSO folds, sequential): CUDA {g1:.1f} s and {g2:.1f} s, CPU {c1:.1f} s; "
          f"pooled UA CUDA {pooled_ua(o1):.4f} / {pooled_ua(o2):.4f}, CPU {pooled_ua(o3):.4f}; "
          f"CUDA logits bit-identical across the two runs: {same}; max |CUDA - CPU| logit {gap:.2e}")  # fmt: skip


def adarl_step(w: Path, timeout: float) -> None:
    _, out = serray("features", str(w), "--set", "spectrogram", "--num-actors", "0")
    wall, out = serray("train", "adarl", "-w", str(w), "--protocol", "loso", "--labels", "4class",
                       "--sequential", "--device", "cuda", timeout=timeout)  # fmt: skip
    print(f"train adarl (full model, 50 epochs / patience 10, LOSO 4-class, sequential) on CUDA: {wall:.1f} s, "
          f"pooled UA {pooled_ua(out):.4f}")  # fmt: skip
    print("\n".join(line for line in out.splitlines() if line.startswith(("mean", "pooled"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--ssl-files", type=int, default=24)
    ap.add_argument("--skip-adarl", action="store_true")
    ap.add_argument("--adarl-timeout", type=float, default=300)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU; torch sees none here")
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    w = args.workdir or Path(tempfile.mkdtemp(prefix="serray-gpu-"))
    serray("data", "prepare", "emodb", str(args.data / "emodb" / "wav"), "--workdir", str(w))
    model = w / "hubert-base-random"
    make_hubert(model)
    for name, step in [("ensemble", ensemble_step), ("ssl", lambda: ssl_step(w, model, args.ssl_files)),
                       ("train", lambda: train_step(w, model)),
                       ("adarl", None if args.skip_adarl else lambda: adarl_step(w, args.adarl_timeout))]:  # fmt: skip
        if step is None:
            continue
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # one failing step must not hide the others' figures
            print(f"{name}: FAILED: {exc}")
        print(f"  ({name} step {time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
