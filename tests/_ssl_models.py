"""A tiny random-init HuBERT saved with ``save_pretrained``: a local ssl model folder for tests
(no model hub is reachable)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_hubert(folder: Path) -> Path:
    """Write a 2-layer, 32-wide HuBERT (seed 0) to ``folder``; returns it. Its front end
    strides 320 samples (50 frames a second at 16 kHz, as HuBERT base), so it is fast."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    transformers.HubertModel(cfg).save_pretrained(folder)
    return Path(folder)
