"""Weights a training stage loads: the frozen transformer(s) alone, against the whole pipeline.

A stage reading a ``pila prepare`` cache calls the transformer(s) only (the cache holds
latents and text embeddings), so :class:`pila.stages.module.PILAModule` loads
``components=TRAINING_COMPONENTS`` and leaves the UMT5 text encoder and the VAE on disk.
This script counts the parameter (and buffer) bytes each way:

1. the tiny preset, loaded for real: a stage's backbone after one step against
   ``WanBackbone.from_pretrained("tiny")`` with every component;
2. Wan 2.1-T2V-1.3B and Wan 2.2-T2V-A14B at their published configs, built on the meta
   device (no weights, no memory) in the dtypes ``from_pretrained`` loads them in:
   transformer(s) and UMT5-XXL in bf16 (diffusers keeps the transformer's
   ``_keep_in_fp32_modules`` in float32), the VAE in float32. The same counting applied
   to the tiny configs gives the bytes measured in 1 (checked below).

Run (writes ``benchmarks/results/memory_loading.md``; a few seconds)::

    .venv/bin/python benchmarks/loading.py
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import PreTrainedModel, UMT5Config, UMT5EncoderModel

from pila.backbone import WanBackbone
from pila.backbone.presets import (
    UMT5_XXL_ENCODER,
    WAN21_T2V_1_3B_TRANSFORMER,
    WAN22_A14B_TRANSFORMER,
    WAN_VAE,
)
from pila.backbone.tiny import (
    TINY_TEXT_ENCODER_CONFIG,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    build_tiny_tokenizer,
)
from pila.io import write_text_atomic

log = logging.getLogger("loading")


GIB = 1024**3


def module_bytes(
    module: torch.nn.Module | None, dtype: torch.dtype | None = None
) -> tuple[int, int]:
    """(parameters, bytes of parameters and buffers) of a module; ``dtype`` casts the counted
    floats except the modules kept in float32 at load (diffusers: ``_keep_in_fp32_modules``,
    whatever the dtype; transformers: ``_keep_in_fp32_modules_strict``, for bf16 too)."""
    if module is None:
        return 0, 0
    if isinstance(module, PreTrainedModel):
        keep = tuple(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    else:
        keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    count = size = 0
    for kind, tensors in (
        ("parameter", module.named_parameters()),
        ("buffer", module.named_buffers()),
    ):
        for name, tensor in tensors:
            item = tensor.element_size()
            if (
                dtype is not None
                and tensor.is_floating_point()
                and not any(k in name.split(".") for k in keep)
            ):
                item = torch.empty((), dtype=dtype).element_size()
            count += tensor.numel() if kind == "parameter" else 0
            size += tensor.numel() * item
    return count, size


def meta_components(
    transformer: dict, text_encoder: dict, vae: dict, experts: int
) -> dict[str, torch.nn.Module]:
    """The backbone's components at a config, on the meta device."""
    with torch.device("meta"):
        out = {
            f"transformer{'' if i == 0 else '_2'}": WanTransformer3DModel(**transformer)
            for i in range(experts)
        }
        out["text_encoder"] = UMT5EncoderModel(UMT5Config(**text_encoder))
        out["vae"] = AutoencoderKLWan(**vae)
    return out


def estimate(
    name: str, components: dict[str, torch.nn.Module], dtype: torch.dtype
) -> dict[str, Any]:
    rows = {}
    for part, module in components.items():
        rows[part] = module_bytes(module, torch.float32 if part == "vae" else dtype)
    full = sum(b for _, b in rows.values())
    training = sum(b for part, (_, b) in rows.items() if part.startswith("transformer"))
    return {"name": name, "rows": rows, "full": full, "training": training}


def measured_tiny() -> dict[str, Any]:
    """The tiny preset: what a stage loads (after one step) against the whole pipeline."""
    from pila.adapter import AdapterConfig
    from pila.stages import StageA

    module = StageA(
        adapter=AdapterConfig(
            text_dim=32, hidden=16, cond_dim=16, expert_width=8, norm_groups=4, sigma_embed_dim=16
        ),
        text_length=16,
    )
    batch = {
        "latents": torch.randn(1, 16, 2, 4, 4),
        "prompt_embeds": torch.randn(1, 8, 32),
        "labels": torch.zeros(1, 8),
        "pooled": torch.randn(1, 32),
    }
    module.prepare_step(batch)
    stage = module.backbone
    full = WanBackbone.from_pretrained("tiny")
    rows = {
        part: module_bytes(getattr(full, part)) for part in ("transformer", "text_encoder", "vae")
    }
    return {
        "name": "tiny preset (loaded)",
        "rows": rows,
        "full": module_bytes(full)[1],
        "training": module_bytes(stage)[1],
        "stage_components": stage.loaded_components,
    }


def render(results: list[dict[str, Any]], tiny_check: tuple[int, int]) -> str:
    lines = [
        "# Weights a training stage loads",
        "",
        "A stage reading the cache calls the frozen transformer(s) only; it now loads them alone",
        '(`WanBackbone.from_pretrained(..., components=("transformer",))`); the UMT5 text encoder',
        "and the VAE load on first use, which training from a cache never makes. Bytes of",
        "parameters and buffers as `from_pretrained` loads them: transformer(s) and UMT5 in bf16",
        "(the transformer's `_keep_in_fp32_modules` in float32), the VAE in float32; the real",
        "sizes are counted on the meta device at the published configs.",
        "Produced by `.venv/bin/python benchmarks/loading.py`.",
        "",
        "| backbone | transformer(s) | text encoder | VAE | whole pipeline | a stage loads | saved "
        "|",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        unit, div = ("GiB", GIB) if r["full"] > GIB else ("KiB", 1024)
        tr = sum(b for part, (_, b) in r["rows"].items() if part.startswith("transformer"))
        te, vae = r["rows"]["text_encoder"][1], r["rows"]["vae"][1]
        saved = r["full"] - r["training"]
        lines.append(
            f"| {r['name']} | {tr / div:.2f} {unit} | {te / div:.2f} {unit} | {vae / div:.2f} "
            f"{unit} | "
            f"{r['full'] / div:.2f} {unit} | {r['training'] / div:.2f} {unit} | {saved / div:.2f} "
            f"{unit} "
            f"({100 * saved / r['full']:.0f} %) |"
        )
    lines += ["", "Parameters:", ""]
    for r in results:
        parts = ", ".join(f"{part} {count:,}" for part, (count, _) in r["rows"].items())
        lines.append(f"- {r['name']}: {parts}")
    lines += [
        "",
        f"Check of the method: the meta-device count at the tiny configs gives {tiny_check[0]:,} "
        "bytes "
        f"for the whole pipeline, the loaded tiny preset {tiny_check[1]:,}.",
        "",
        '`pila prepare` and on-the-fly encoding load the other two (`components=("text_encoder",',
        '"vae")`): no transformer, which for Wan 2.2-A14B is the larger part.',
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "memory_loading.md")
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    tiny = measured_tiny()
    tokenizer = build_tiny_tokenizer()
    tiny_te = {
        **TINY_TEXT_ENCODER_CONFIG,
        "vocab_size": len(tokenizer),
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
    tiny_meta = estimate(
        "tiny (meta)",
        meta_components(TINY_TRANSFORMER_CONFIG, tiny_te, TINY_VAE_CONFIG, 1),
        torch.float32,
    )
    results = [
        tiny,
        estimate(
            "Wan 2.1-T2V-1.3B",
            meta_components(WAN21_T2V_1_3B_TRANSFORMER, UMT5_XXL_ENCODER, WAN_VAE, 1),
            torch.bfloat16,
        ),
        estimate(
            "Wan 2.2-T2V-A14B (two experts)",
            meta_components(WAN22_A14B_TRANSFORMER, UMT5_XXL_ENCODER, WAN_VAE, 2),
            torch.bfloat16,
        ),
    ]
    text = render(results, (tiny_meta["full"], tiny["full"]))
    write_text_atomic(args.out, text)
    log.info("%s", text)
    log.info("stage components on tiny: %s", tiny["stage_components"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
