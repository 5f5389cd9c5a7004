"""Seconds per generated video, split by phase, and the adapter's share of a denoising step.

Part 1 (any machine): ``pila.generate``'s per-video time on the embedded tiny preset at
the tiny predict config's settings (17 frames × 64 × 64, 4 steps, CFG), split into

* ``prompt_parsing``: the rule-based parser (refined description and labels),
* ``text_encoding``: the pipeline's prompt encoding plus the adapter's pooled text,
* ``denoise_backbone``: the denoising loop minus the adapter (transformer, CFG, scheduler),
* ``adapter``: every PILA adapter call inside the loop (all steps corrected),
* ``vae_decode``: VAE decoding and post-processing to float frames,
* ``mp4_write``: H.264 encoding through PyAV, atomically,

without an adapter (the baseline) and with a PILA adapter of the paper's widths (hidden
128, bank 32, top-4; text width of the tiny encoder). Every phase boundary is timed inside
the real ``WanPipeline.__call__`` by the scheduler proxy of :mod:`pila.generation.proxy` (CUDA is
synchronised at each mark). Baseline and adapter videos alternate; one warm-up round is
discarded; medians over ``--reps``.

Part 2 (CUDA only): one denoising step at the paper's size, latent 16 × 21 × 60 × 104
(81 frames at 480 × 832) with 512 text tokens: the Wan 2.1-T2V-1.3B transformer (its
published config, random weights, bf16) run twice for classifier-free guidance, against
one forward of the paper-size adapter at inference (no residual objective). The adapter's
share is ``adapter / (2 · transformer + adapter)``. Without CUDA the results say so and
no number is invented.

Run (writes ``benchmarks/results/generation_speed.json`` and ``.md``)::

    .venv/bin/python benchmarks/generation_speed.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pila.adapter import AdapterCondition, AdapterConfig, PILAAdapter
from pila.backbone import WanBackbone
from pila.backbone.presets import PAPER_LATENT_SHAPE, WAN21_T2V_1_3B_TRANSFORMER, WAN_TEXT_TOKENS
from pila.backbone.tiny import TINY_TEXT_DIM
from pila.categories import labels_to_multihot
from pila.generation.sampling import check_adapter, generate_video
from pila.generation.settings import SamplingConfig
from pila.io import write_text_atomic, write_video
from pila.parser import RuleBasedParser

log = logging.getLogger("generation_speed")

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = (
    "A rubber ball falls onto a wooden floor and bounces twice.",
    "Blue dye swirls as it is carried along by flowing water.",
    "An ice cube melts in a warm pan.",
)
TINY_SETTINGS = {
    "num_frames": 17,
    "height": 64,
    "width": 64,
    "num_inference_steps": 4,
    "max_sequence_length": 64,
}
"""The settings of ``lightning_configs/tiny/predict.yaml``."""
TINY_FPS = 8.0
PHASES = (
    "prompt_parsing",
    "text_encoding",
    "denoise_backbone",
    "adapter",
    "vae_decode",
    "mp4_write",
)

PAPER_LATENT = PAPER_LATENT_SHAPE
PAPER_TEXT_TOKENS = WAN_TEXT_TOKENS
WAN21_1_3B_TRANSFORMER = WAN21_T2V_1_3B_TRANSFORMER


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ part 1: tiny preset
def time_tiny(
    reps: int, variants: dict[str, PILAAdapter | None], device: torch.device, workdir: Path
) -> dict[str, dict[str, float]]:
    """Median seconds per video and phase on the tiny preset, for each variant.

    The variants run interleaved (one video of each per repetition), so a busy machine
    slows them alike; one warm-up repetition is discarded. Each adapter is checked against
    the backbone once, as :func:`pila.generate` does for a run.
    """
    backbone = WanBackbone.tiny(seed=0).to(device)
    checked = {
        name: None if adapter is None else check_adapter(adapter, backbone)
        for name, adapter in variants.items()
    }
    parser = RuleBasedParser()
    config = SamplingConfig(**TINY_SETTINGS)
    samples = {name: {phase: [] for phase in (*PHASES, "total")} for name in variants}
    for rep in range(reps + 1):
        prompt = PROMPTS[rep % len(PROMPTS)]
        for name, adapter in checked.items():
            start = time.perf_counter()
            parsed = parser.parse(prompt) if adapter is not None else None
            parse_seconds = time.perf_counter() - start
            video = generate_video(
                backbone, prompt, seed=rep, config=config, adapter=adapter, parsed=parsed
            )
            start = time.perf_counter()
            write_video(workdir / f"{name}_{rep}.mp4", video.frames, fps=TINY_FPS)
            write_seconds = time.perf_counter() - start
            if rep == 0:
                continue  # warm-up
            times = {**video.timings, "prompt_parsing": parse_seconds, "mp4_write": write_seconds}
            times["total"] = video.timings["total"] + parse_seconds + write_seconds
            for phase, values in samples[name].items():
                values.append(times[phase])
    return {
        name: {phase: statistics.median(values) for phase, values in phases.items()}
        for name, phases in samples.items()
    }


def paper_width_adapter(text_dim: int, device: torch.device) -> PILAAdapter:
    """The paper's adapter widths (AdapterConfig defaults) for a given text width."""
    torch.manual_seed(0)
    return PILAAdapter(AdapterConfig(text_dim=text_dim)).to(device).eval().requires_grad_(False)


# ------------------------------------------------------------------ part 2: paper step
def time_paper_step(reps: int, device: torch.device) -> dict[str, Any]:
    """One CFG denoising step of Wan 2.1-1.3B vs one adapter forward at the paper's size."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**WAN21_1_3B_TRANSFORMER).to(device, torch.bfloat16).eval()
    adapter = paper_width_adapter(4096, device)
    x_t = torch.randn(1, *PAPER_LATENT, device=device)  # (B, C, T, H, W)
    text = torch.randn(1, PAPER_TEXT_TOKENS, 4096, device=device, dtype=torch.bfloat16)  # (B, L, D)
    timestep = torch.full((1,), 500.0, device=device)
    cond = AdapterCondition(
        pooled_text=torch.randn(1, 4096, device=device),
        labels=labels_to_multihot(["rigid_body", "collision"])[None].to(device),
    )

    def transformer_forward() -> torch.Tensor:
        return transformer(
            hidden_states=x_t.to(torch.bfloat16),
            timestep=timestep,
            encoder_hidden_states=text,
            return_dict=False,
        )[0]

    def timed(fn) -> list[float]:
        out = []
        for _ in range(reps + 1):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
        return out[1:]

    with torch.no_grad():
        v = transformer_forward().float()
        backbone_times = timed(transformer_forward)
        adapter_times = timed(lambda: adapter(x_t, torch.full((1,), 0.5, device=device), v, cond))
    backbone = statistics.median(backbone_times)
    adapter_s = statistics.median(adapter_times)
    return {
        "latent": list(PAPER_LATENT),
        "text_tokens": PAPER_TEXT_TOKENS,
        "transformer_forward_s": backbone,
        "cfg_step_backbone_s": 2 * backbone,
        "adapter_forward_s": adapter_s,
        "adapter_share_of_step": adapter_s / (2 * backbone + adapter_s),
        "adapter_parameters": adapter.num_parameters,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
    }


# ----------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Generation speed",
        "",
        f"Command: `{result['command']}`",
        f"Machine: {result['machine']}; torch {result['torch']}; {result['threads']} CPU threads; "
        f"device {result['device']}; "
        f"1-minute load average at start {result['load_average_at_start']} (other processes share "
        "the CPU).",
        "",
        "## Seconds per video on the tiny preset",
        "",
        f"Settings: {result['tiny_settings']}, all steps corrected, fps {TINY_FPS}; median of "
        f"{result['reps']} videos each (baseline and adapter alternating) after one warm-up round.",
        "",
        "| phase | baseline (no adapter) | with PILA adapter |",
        "|---|---:|---:|",
    ]
    base, pila = result["tiny"]["baseline"], result["tiny"]["adapter"]
    for phase in (*PHASES, "total"):
        lines.append(f"| {phase} | {base[phase]:.4f} | {pila[phase]:.4f} |")
    share = pila["adapter"] / (pila["adapter"] + pila["denoise_backbone"])
    lines += [
        "",
        f"Adapter: paper widths (hidden 128, bank 32, top-4), text width {TINY_TEXT_DIM}, "
        f"{result['tiny']['adapter_parameters']:,} parameters, against a tiny transformer of "
        f"{result['tiny']['transformer_parameters']:,}: here the adapter takes {share * 100:.0f} % "
        "of the "
        "denoising time, which says nothing about the paper's size (next section).",
        "",
        "## Adapter share of a denoising step at the paper's size (GPU)",
        "",
    ]
    paper = result.get("paper_step")
    if paper is None:
        lines.append(
            "Not measured: this run had no CUDA device. The measurement (Wan 2.1-1.3B transformer "
            "×2 for "
            "CFG vs one adapter forward at latent 16 × 21 × 60 × 104, 512 text tokens) awaits a "
            "machine "
            "with a GPU; run the same command there."
        )
    else:
        lines += [
            f"Device: {paper['device_name']}; latent {paper['latent']}, {paper['text_tokens']} "
            "text tokens; "
            f"median of {result['reps']}.",
            "",
            "| quantity | value |",
            "|---|---:|",
            f"| transformer forward (bf16) | {paper['transformer_forward_s'] * 1e3:.1f} ms |",
            f"| CFG step, backbone (2 forwards) | {paper['cfg_step_backbone_s'] * 1e3:.1f} ms |",
            f"| adapter forward (fp32, inference) | {paper['adapter_forward_s'] * 1e3:.1f} ms |",
            f"| adapter share of a corrected step | {paper['adapter_share_of_step'] * 100:.1f} % |",
            f"| peak GPU memory | {paper['peak_memory_gib']:.1f} GiB |",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=5, help="timed videos (and paper steps) per setting"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "command": f"python benchmarks/generation_speed.py --reps {args.reps}"
        + (f" --threads {args.threads}" if args.threads else ""),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "reps": args.reps,
        "tiny_settings": TINY_SETTINGS,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    adapter = paper_width_adapter(TINY_TEXT_DIM, device)
    with tempfile.TemporaryDirectory() as tmp:
        log.info("tiny preset: baseline and adapter, interleaved")
        tiny = time_tiny(args.reps, {"baseline": None, "adapter": adapter}, device, Path(tmp))
    transformer_parameters = sum(
        p.numel() for p in WanBackbone.tiny(seed=0).transformer.parameters()
    )
    result["tiny"] = {
        **tiny,
        "adapter_parameters": adapter.num_parameters,
        "transformer_parameters": transformer_parameters,
    }
    if device.type == "cuda":
        log.info("paper-size denoising step")
        result["paper_step"] = time_paper_step(args.reps, device)
    else:
        result["paper_step"] = None
        result["paper_step_note"] = "needs a CUDA device; not measured on this machine"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "generation_speed.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out / "generation_speed.md", markdown(result))
    log.info("%s", markdown(result))


if __name__ == "__main__":
    main()
