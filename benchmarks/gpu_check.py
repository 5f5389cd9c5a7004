"""The GPU check's measurements: stage C steps and generation on the real Wan 2.1-1.3B architecture.

Run by ``benchmarks/gpu_check.sh`` (which also runs ``pytest -m gpu``, whose
``tests/training/test_gpu.py`` holds the DeepSpeed ZeRO-2 + CPU-offload run exported to an
adapter). Everything goes through the project's code: :class:`pila.stages.StageC`'s
``prepare_step`` / ``compute_loss`` and :func:`pila.generation.sampling.generate_video`, on
:func:`pila.backbone.presets.random_wan_backbone` (the published 1.3B transformer config,
random weights, bf16).

1. **Stage C** at the paper's latent size 16 × 21 × 60 × 104, 512 text tokens, the paper's
   adapter, ``compile_residuals=True`` (Triton), λ_phys 0.3 (its stage C end value):
   median over ``--steps`` of the frozen forward (``prepare_step``) and of the adapter's
   forward + backward (``compute_loss`` + ``backward``); target: adapter ≤ 10 % of the
   frozen forward.
2. **Generation** at 81 × 480 × 832, ``--gen-steps`` denoising steps with CFG, without and
   with the paper's adapter (all steps corrected): seconds per denoising step; target:
   with ≤ 1.02 × without.

Each part records ``torch.cuda.max_memory_allocated``. ``--dry-run`` builds everything at a
small size on the CPU (a 2-layer transformer of the same widths, 16 × 3 × 8 × 8 latents,
9 × 64 × 64 frames) so the script is known to run before a GPU is lent.

    python benchmarks/gpu_check.py --out "$OUT"            # on the GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/x  # anywhere, ~1 min on CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pila.adapter import AdapterConfig, PILAAdapter
from pila.backbone.presets import (
    PAPER_LATENT_SHAPE,
    WAN21_T2V_1_3B_TRANSFORMER,
    WAN_TEXT_TOKENS,
    random_wan_backbone,
)
from pila.generation.sampling import as_backbone, check_adapter, generate_video
from pila.generation.settings import SamplingConfig
from pila.io import write_json_atomic, write_text_atomic
from pila.stages import StageC

log = logging.getLogger("gpu_check")

DRY_TRANSFORMER = {**WAN21_T2V_1_3B_TRANSFORMER, "num_layers": 2}
"""Dry run: the 1.3B widths with 2 of its 30 blocks."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def stage_c(
    backbone, device: torch.device, latent: tuple[int, ...], text_tokens: int, steps: int
) -> dict[str, Any]:
    """Frozen forward vs adapter forward + backward of one stage C step (batch 1)."""
    _peak_reset(device)
    module = StageC(text_length=text_tokens, compile_residuals=device.type == "cuda")
    module.attach_backbone(backbone)
    module.to(device)
    module.lambda_phys = 0.3  # stage C's end value (paper, App. B.2)
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(1, 8)
    labels[0, [0, 4]] = 1
    batch = {
        "latents": torch.randn(1, *latent, generator=g).to(device),
        "prompt_embeds": torch.randn(1, text_tokens, 4096, generator=g).to(device),
        "prompt_mask": torch.ones(1, text_tokens, dtype=torch.bool, device=device),
        "pooled": torch.randn(1, 4096, generator=g).to(device),
        "labels": labels.to(device),
        "flow": torch.randn(1, 2, *latent[1:], generator=g).to(device),
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times: dict[str, list[float]] = {"frozen_forward": [], "adapter_forward_backward": []}
    compile_start = time.perf_counter()
    for i in range(steps + 2):  # two warm-up steps (compilation of the residual graphs)
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            step = module.prepare_step(batch)
        _sync(device)
        t1 = time.perf_counter()
        with autocast:
            loss, _ = module.compute_loss(batch, step)
        loss.backward()
        module.adapter.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if i == 1:
            log.info("stage C warm-up (compilation included): %.1f s", t2 - compile_start)
        if i >= 2:
            times["frozen_forward"].append(t1 - t0)
            times["adapter_forward_backward"].append(t2 - t1)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["adapter_forward_backward"] / med["frozen_forward"]
    return {
        "latent": list(latent),
        "text_tokens": text_tokens,
        "steps": steps,
        "seconds": med,
        "adapter_over_frozen_forward": ratio,
        "adapter_share_of_step": med["adapter_forward_backward"] / sum(med.values()),
        "target_adapter_over_frozen": 0.10,
        "meets_target": ratio <= 0.10,
        "loss_finite": bool(torch.isfinite(loss)),
        "max_memory_allocated_gib": _peak_gib(device),
    }


def generation(backbone, device: torch.device, config: SamplingConfig, reps: int) -> dict[str, Any]:
    """Seconds per denoising step without and with the paper's adapter (alternating)."""
    adapter = PILAAdapter(AdapterConfig()).to(device).eval().requires_grad_(False)
    checked = check_adapter(adapter, as_backbone(backbone))  # once per run, as `generate` does
    per_step: dict[str, list[float]] = {"without": [], "with": []}
    adapter_seconds: list[float] = []
    peaks: dict[str, float | None] = {}
    for rep in range(reps + 1):  # the first round warms up
        for name, a in (("without", None), ("with", checked)):
            _peak_reset(device)
            video = generate_video(
                backbone, "a ball falls onto a table", seed=rep, config=config, adapter=a
            )
            t = video.timings
            if rep:
                per_step[name].append(
                    (t["denoise_backbone"] + t["adapter"]) / config.num_inference_steps
                )
                if a is not None:
                    adapter_seconds.append(t["adapter"] / config.num_inference_steps)
            peaks[name] = _peak_gib(device)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    ratio = med["with"] / med["without"]
    return {
        "frames": [config.num_frames, config.height, config.width],
        "denoising_steps": config.num_inference_steps,
        "reps": reps,
        "seconds_per_step": med,
        "adapter_seconds_per_step": statistics.median(adapter_seconds),
        "adapter_share_of_step": statistics.median(adapter_seconds) / med["with"],
        "with_over_without": ratio,
        "target_with_over_without": 1.02,
        "meets_target": ratio <= 1.02,
        "max_memory_allocated_gib": peaks,
    }


def markdown(result: dict[str, Any]) -> str:
    s, g = result["stage_c"], result["generation"]
    mem = g["max_memory_allocated_gib"]
    lines = [
        f"# GPU check ({result['device']}{', dry run' if result['dry_run'] else ''})",
        "",
        f"Command: `{result['command']}`; torch {result['torch']}.",
        "",
        "## Stage C step (real Wan 2.1-1.3B architecture, random weights, bf16, compiled "
        "residuals)",
        "",
        f"latent {s['latent']}, {s['text_tokens']} text tokens, median of {s['steps']} steps",
        "",
        "| part | ms |",
        "|---|---:|",
        f"| frozen forward | {s['seconds']['frozen_forward'] * 1e3:.1f} |",
        f"| adapter forward + backward | {s['seconds']['adapter_forward_backward'] * 1e3:.1f} |",
        "",
        f"adapter / frozen forward = **{s['adapter_over_frozen_forward']:.3f}** (target ≤ 0.10: "
        f"{'met' if s['meets_target'] else 'not met'}); max memory allocated "
        f"{s['max_memory_allocated_gib'] or 0:.2f} GiB",
        "",
        "## Generation",
        "",
        f"{g['frames'][0]} × {g['frames'][1]} × {g['frames'][2]}, {g['denoising_steps']} steps "
        "with CFG, "
        f"median of {g['reps']}",
        "",
        "| | s / step | max memory allocated (GiB) |",
        "|---|---:|---:|",
        f"| without adapter | {g['seconds_per_step']['without']:.3f} | {mem['without'] or 0:.2f} |",
        f"| with adapter | {g['seconds_per_step']['with']:.3f} | {mem['with'] or 0:.2f} |",
        "",
        f"with / without = **{g['with_over_without']:.3f}** (target ≤ 1.02: "
        f"{'met' if g['meets_target'] else 'not met'}); adapter share of a step "
        f"{g['adapter_share_of_step']:.1%}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gpu_check.json and gpu.md"
    )
    parser.add_argument("--dry-run", action="store_true", help="small sizes on the CPU")
    parser.add_argument("--steps", type=int, default=5, help="timed stage C steps")
    parser.add_argument("--gen-steps", type=int, default=3, help="denoising steps per video")
    parser.add_argument("--reps", type=int, default=2, help="timed videos per setting")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    start = time.perf_counter()
    backbone = random_wan_backbone(DRY_TRANSFORMER if dry else None, dtype=dtype, device=device)
    log.info("built the backbone in %.1f s", time.perf_counter() - start)
    latent = (16, 3, 8, 8) if dry else PAPER_LATENT_SHAPE
    text_tokens = 16 if dry else WAN_TEXT_TOKENS
    result: dict[str, Any] = {
        "command": "python benchmarks/gpu_check.py" + (" --dry-run" if dry else ""),
        "dry_run": dry,
        "device": torch.cuda.get_device_name() if not dry else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
    }
    result["stage_c"] = stage_c(backbone, device, latent, text_tokens, 2 if dry else args.steps)
    log.info("stage C: %s", json.dumps(result["stage_c"]))
    frames = (
        dict(num_frames=9, height=64, width=64)
        if dry
        else dict(num_frames=81, height=480, width=832)
    )
    config = SamplingConfig(
        num_inference_steps=2 if dry else args.gen_steps, max_sequence_length=text_tokens, **frames
    )
    result["generation"] = generation(backbone, device, config, 1 if dry else args.reps)
    log.info("generation: %s", json.dumps(result["generation"]))
    result["seconds"] = time.perf_counter() - start
    write_json_atomic(args.out / "gpu_check.json", result)
    write_text_atomic(args.out / "gpu.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
