"""Benchmark: mtl's frame LSTM on batches of unequal lengths, padded against packed.

``serray.models.mtl.FrameLSTM`` runs its unidirectional LSTM over the padded batch and
zeroes the padded frames; it used to pack the batch (``pack_padded_sequence``), which gives
the same valid-frame outputs. This times one forward and backward pass of a batch of 16
utterances, 2 x 256 LSTM on 32-d frames (paper 002's size), both ways, in the same
process, with lengths drawn like EMOVO's (1.3-14 s at 100 frames/s, median 2.8 s; training
crops at ``--max-frames``) and with equal lengths (EmoDB's 2 s copy: 199 frames each), and
prints the seconds and the ratio packed / padded, and the largest difference of the
valid-frame outputs.

Usage::

    python bench/lstm.py                 # 5 repeats (~1-2 min on 2 cores)
    python bench/lstm.py --repeats 2 --max-frames 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from serray.models.mtl import FrameLSTM


def packed(lstm: FrameLSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The former forward: pack, run, unpack (zeros on the padded frames)."""
    p = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm.lstm(p)[0], batch_first=True, total_length=x.shape[1])
    return lstm.drop(out)


def seconds(fn, lstm: FrameLSTM, x: torch.Tensor, lengths: torch.Tensor, repeats: int) -> float:
    """Median wall time of one forward + backward pass."""
    times = []
    for _ in range(repeats):
        lstm.zero_grad()
        t0 = time.perf_counter()
        fn(lstm, x, lengths).sum().backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-frames", type=int, default=1400, help="crop (EMOVO's longest utterance: 1398 frames)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lstm = FrameLSTM(32, 256, 2, 0.5)
    emovo = np.clip(np.round(100 * rng.lognormal(np.log(2.8), 0.4, 16)), 130, 1398).astype(int)
    for name, lens in (("EMOVO-like lengths", emovo), ("equal lengths (EmoDB)", np.full(16, 199))):
        lengths = torch.as_tensor(np.minimum(lens, args.max_frames))
        x = torch.randn(16, int(lengths.max()), 32)
        with torch.no_grad():
            lstm.eval()
            valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
            diff = float((lstm(x, lengths) - packed(lstm, x, lengths))[valid].abs().max())
            lstm.train()
        a = seconds(packed, lstm, x, lengths, args.repeats)
        b = seconds(lambda m, xx, ll: m(xx, ll), lstm, x, lengths, args.repeats)
        print(f"{name}: {int(lengths.min())}-{int(lengths.max())} frames; packed {a:.2f} s, padded {b:.2f} s, "
              f"ratio packed/padded {a / b:.1f}x; max |difference| of valid frames {diff:.1e}")


if __name__ == "__main__":
    main()
