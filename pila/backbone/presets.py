"""Published Wan configurations, for building full-size models without weights.

Benchmarks count parameters and FLOPs, or time a randomly initialised transformer, at the
paper's size; they build it from these dicts (on the meta device or a GPU) rather than
downloading a checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

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

WAN22_A14B_TRANSFORMER: dict[str, Any] = {
    **WAN21_T2V_1_3B_TRANSFORMER,
    "num_attention_heads": 40,
    "ffn_dim": 13824,
    "num_layers": 40,
}
"""``transformer/config.json`` (and ``transformer_2/``) of Wan-AI/Wan2.2-T2V-A14B-Diffusers:
5120 wide (40 heads × 128), FFN 13824, 40 blocks; the rest as Wan 2.1."""

UMT5_XXL_ENCODER: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "dropout_rate": 0.0,
}
"""``text_encoder/config.json`` of the Wan Diffusers folders (google/umt5-xxl's encoder)."""

WAN_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
}
"""``vae/config.json`` of Wan 2.1 and Wan 2.2-A14B (the same VAE; ``AutoencoderKLWan``'s
defaults)."""

PAPER_LATENT_SHAPE: tuple[int, int, int, int] = (16, 21, 60, 104)
"""(C, T, H, W) of the Wan VAE latent of an 81-frame 480 × 832 clip."""

WAN_TEXT_TOKENS = 512
"""Text positions WanPipeline feeds the transformer."""


def random_wan_backbone(
    transformer: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
):
    """A :class:`~pila.backbone.WanBackbone` with a full-size transformer and random weights.

    The transformer is built from ``transformer`` (default: the Wan 2.1-1.3B config); the
    VAE, tokenizer and scheduler are the tiny preset's (the VAE's latent has Wan's 16
    channels and 4 × 8 × 8 compression, so shapes are the real ones), and the text encoder
    is a one-layer UMT5 as wide as the transformer's ``text_dim`` (4096, UMT5-XXL's width).
    Benchmarks and the real-architecture tests run the project's code paths on it.

    Args:
        transformer: a ``WanTransformer3DModel`` config (default
            :data:`WAN21_T2V_1_3B_TRANSFORMER`).
        seed: seeds the random initialisation.
        dtype: the transformer's and text encoder's dtype (the VAE stays float32).
        device: where to build the modules (default: the CPU).
    """
    from diffusers import WanTransformer3DModel

    from pila.backbone.tiny import build_tiny_pipeline
    from pila.backbone.wan import WanBackbone

    config = dict(transformer or WAN21_T2V_1_3B_TRANSFORMER)
    text_encoder = {
        "d_model": config["text_dim"],
        "num_layers": 1,
        "num_heads": 2,
        "d_kv": 8,
        "d_ff": 64,
    }
    pipeline = build_tiny_pipeline(seed=seed, text_encoder=text_encoder)
    # The full-size transformer: built without memory, then filled with U(±1/√fan_in)
    # (PyTorch's default Linear range). The values are a seeded block of 2^20 uniforms,
    # rolled per tensor and tiled: drawing 1.3 B fresh numbers takes a minute on two cores.
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    target = torch.device(device or "cpu")
    model.to_empty(device=target)
    generator = torch.Generator().manual_seed(seed)
    block = (torch.rand(1 << 20, generator=generator) * 2 - 1).to(target)  # U(-1, 1)
    with torch.no_grad():
        for k, (name, param) in enumerate(model.named_parameters()):
            flat = param.view(-1)
            if param.ndim >= 2:
                values = block.roll(7919 * k) * param[0].numel() ** -0.5
                for start in range(0, flat.numel(), values.numel()):
                    chunk = flat[start : start + values.numel()]
                    chunk.copy_(values[: chunk.numel()])
            elif "norm" in name:
                flat.fill_(1.0)
            else:
                flat.zero_()
    with target:  # the non-persistent RoPE tables, computed again
        model.rope = type(model.rope)(**_rope_args(model))
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if not any(k in name.split(".") for k in keep):
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
    pipeline.register_modules(transformer=model.eval())
    backbone = WanBackbone(pipeline, source="random-wan")
    backbone.text_encoder.to(device=target, dtype=dtype)
    backbone.vae.to(device=target)
    return backbone


def _rope_args(model: Any) -> dict[str, Any]:
    cfg = model.config
    return {
        "attention_head_dim": cfg.attention_head_dim,
        "patch_size": cfg.patch_size,
        "max_seq_len": cfg.rope_max_seq_len,
    }
