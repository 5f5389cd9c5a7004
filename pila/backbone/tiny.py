"""The embedded tiny Wan preset: every component built in code from config dicts.

A randomly initialised, seeded, few-thousand-parameter stand-in for a diffusers Wan
folder (``WanTransformer3DModel``, ``AutoencoderKLWan``, a UMT5 encoder, a byte-level
tokenizer and the flow-matching UniPC scheduler Wan ships with). It exercises every
code path of the real generator on a CPU in seconds and needs no download. Its outputs
are noise-like; it exists for tests, the demo and debugging, not for quality.

The configs are module-level dicts so a test or a user can build variants
(``build_tiny_pipeline(transformer={"num_layers": 1})``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

TINY_TEXT_DIM = 32

TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": TINY_TEXT_DIM,
    "freq_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 32,
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "d_model": TINY_TEXT_DIM,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "dropout_rate": 0.0,
    "feed_forward_proj": "gated-gelu",
}

TINY_SCHEDULER_CONFIG: dict[str, Any] = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "num_train_timesteps": 1000,
    "flow_shift": 3.0,
}

TINY_BOUNDARY_RATIO = 0.875
"""Wan 2.2-A14B's switch point between its high- and low-noise transformers."""

_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
TINY_MAX_LENGTH = 512


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per UTF-8 byte, ``</s>`` appended) built in code.

    Every string has an exact encoding, so no vocabulary file is needed. Token ids:
    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then the 256 byte symbols.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TINY_MAX_LENGTH,
    )


def _merged(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg.update(overrides or {})
    return cfg


def build_tiny_pipeline(
    *,
    seed: int = 0,
    two_stage: bool = False,
    transformer: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
) -> WanPipeline:
    """Build the tiny ``WanPipeline`` with seeded random weights.

    Args:
        seed: seeds every component's initialisation; the global RNG is left untouched.
        two_stage: also build ``transformer_2`` and set ``boundary_ratio`` (the Wan 2.2-A14B
            layout: ``transformer`` handles t ≥ boundary, ``transformer_2`` the rest).
        transformer: overrides of :data:`TINY_TRANSFORMER_CONFIG`.
        vae: overrides of :data:`TINY_VAE_CONFIG`.
        text_encoder: overrides of :data:`TINY_TEXT_ENCODER_CONFIG`.
        scheduler: overrides of :data:`TINY_SCHEDULER_CONFIG`.
    """
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer_model = WanTransformer3DModel(**_merged(TINY_TRANSFORMER_CONFIG, transformer))
        transformer_2 = None
        if two_stage:
            transformer_2 = WanTransformer3DModel(**_merged(TINY_TRANSFORMER_CONFIG, transformer))
        vae_model = AutoencoderKLWan(**_merged(TINY_VAE_CONFIG, vae))
        te_cfg = _merged(TINY_TEXT_ENCODER_CONFIG, text_encoder)
        te_cfg.update(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        text_encoder_model = UMT5EncoderModel(UMT5Config(**te_cfg))
    sched = UniPCMultistepScheduler(**_merged(TINY_SCHEDULER_CONFIG, scheduler))
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder_model.eval(),
        vae=vae_model.eval(),
        scheduler=sched,
        transformer=transformer_model.eval(),
        transformer_2=None if transformer_2 is None else transformer_2.eval(),
        boundary_ratio=TINY_BOUNDARY_RATIO if two_stage else None,
    )
