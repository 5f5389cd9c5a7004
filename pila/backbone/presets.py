"""Published Wan configurations, for building full-size models without weights.

Benchmarks count parameters and FLOPs, or time a randomly initialised transformer, at the
paper's size; they build it from these dicts (on the meta device or a GPU) rather than
downloading a checkpoint.
"""

from __future__ import annotations

from typing import Any

WAN21_T2V_1_3B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
"""``transformer/config.json`` of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (the paper's backbone)."""

PAPER_LATENT_SHAPE: tuple[int, int, int, int] = (16, 21, 60, 104)
"""(C, T, H, W) of the Wan VAE latent of an 81-frame 480 × 832 clip."""

WAN_TEXT_TOKENS = 512
"""Text positions WanPipeline feeds the transformer."""
