"""What a lab world's folder records of its training: the card (``README.md``) and
``training.json``, written by ``pila lab pretrain`` and read back when a later world takes
this one's VAE (``--vae-from``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from pila.io import read_json, write_json_atomic, write_text_atomic
from pila.lab.world import HELDOUT_INDEX_OFFSET, WorldConfig

RECORD_NAME = "training.json"
WEIGHTS_LICENSE = (
    "## License",
    "",
    "The weights and the files beside them are released under the Apache License 2.0",
    "(`Apache-2.0`), as the pila package is (its `LICENSE`). They were trained from scratch by",
    "`pila lab pretrain` on clips the lab renders itself (`pila.lab.scenes`); the text encoder",
    "is a seeded random UMT5 and the tokenizer is built in code: no third-party weights or data",
    "are in them.",
    "",
)
"""The card's license section: the weights are the package's, Apache-2.0 (``pyproject.toml``)."""
PHASES = ("vae_frames", "vae")
"""The VAE's two training phases, as the record names them."""


@dataclass
class PartReport:
    """What a part's training left: steps, wall time, losses."""

    steps: int
    wall_seconds: float
    train_seconds: float
    final_loss: float
    seconds_per_step: float


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 1e6


def write_card(
    world: Path,
    config: WorldConfig,
    *,
    command: str,
    vae_frames: PartReport,
    vae: PartReport,
    transformer: PartReport,
    psnr: dict[str, float],
    vae_config: WorldConfig | None = None,
    heldout_curve: Sequence[tuple[int, float]] = (),
) -> None:
    """Write ``world/README.md`` (how it was trained and how good it is) and
    ``world/training.json`` (the same as data; ``vae_config``: the config the VAE was trained
    with, when it was taken from another world; ``heldout_curve``: the transformer's
    (step, held-out flow loss) measurements)."""
    vc = vae_config or config
    vae_params = sum(p.numel() for p in AutoencoderKLWan(**config.vae_config()).parameters())
    transformer_model = WanTransformer3DModel(**config.transformer_config())
    tr_params = sum(p.numel() for p in transformer_model.parameters())
    latent_t = (config.num_frames - 1) // 4 + 1
    latent_h = config.height // config.spatial_compression
    latent_w = config.width // config.spatial_compression
    bullet, which = ("  - ", "in that run") if config.vae_from is not None else ("- ", "this run")
    taken = []
    if config.vae_from is not None:
        taken = [
            f"- VAE: taken from `{config.vae_from}` (not retrained here); its own training, as "
            "that world recorded it:"
        ]

    def timing(part: PartReport, run: str) -> str:
        return (
            f"wall {part.wall_seconds / 60:.1f} min {run}, {part.train_seconds / 60:.1f} min of "
            f"training steps in all ({part.seconds_per_step:.2f} s/step); "
            f"final loss {part.final_loss:.4f}"
        )

    lines = [
        "# The lab world",
        "",
        "A small Wan trained from scratch on the physics lab's eight procedural scenes",
        "(`pila.lab.scenes`), in the diffusers `WanPipeline` layout. Load it with",
        "`WanBackbone.from_pretrained(\"lab\")` or "
        "`diffusers.WanPipeline.from_pretrained(<this folder>)`.",
        "",
        *WEIGHTS_LICENSE,
        "## Training",
        "",
        f"- Command: `{command}`" if command else "- Command: (called from Python)",
        f"- Seed: {config.seed}; torch threads: {torch.get_num_threads()}",
        f"- Clips: {config.clips_per_scene} per scene × {len(config.scenes)} scenes, "
        f"{config.num_frames} frames at {config.height} × {config.width} (latents 16 × "
        f"{latent_t} × {latent_h} × {latent_w}, {config.spatial_compression}× spatial "
        f"compression); held out: {config.heldout_per_scene} per scene (indices from "
        f"{HELDOUT_INDEX_OFFSET})",
        *taken,
        f"{bullet}VAE (`AutoencoderKLWan`, {vae_params / 1e6:.2f} M parameters), phase 1: "
        f"{vae_frames.steps} steps × {vc.vae_frame_batch} single frames at {vc.height} × "
        f"{vc.width} px, peak lr {vc.vae_frame_lr:g}; {timing(vae_frames, which)}",
        f"{bullet}VAE, phase 2: {vae.steps} steps × {vc.vae_batch} windows of {vc.vae_window} "
        f"frames at {vc.vae_crop} × {vc.vae_crop} px, foreground-weighted (strength "
        f"{vc.foreground_weight:g}) L1 + MSE + {vc.kl_weight:g}·KL, peak lr {vc.vae_lr:g}; "
        f"{timing(vae, which)}",
        f"- Transformer (`WanTransformer3DModel`, {tr_params / 1e6:.2f} M parameters): "
        f"{transformer.steps} steps × {config.transformer_batch} latents, flow matching "
        f"(`pila.flow`, shift {config.shift:g}), {config.prompt_dropout:.0%} empty prompts; "
        f"{timing(transformer, 'this run')}",
        *_curve_lines(heldout_curve),
        "- Text encoder, tokenizer, scheduler: the tiny preset's (`pila.backbone.tiny`): a "
        "frozen seeded UMT5 (not trained), a byte-level tokenizer, UniPC with flow shift 3.",
        f"- Weights: {_size_mb(world):.1f} MB of safetensors.",
        "",
        "## Quality",
        "",
        "VAE reconstruction of held-out clips (PSNR in dB, pixels in [0, 1], mean over clips):",
        "",
        "| scene | PSNR |",
        "|---|---|",
    ]
    lines += [f"| {scene} | {value:.2f} |" for scene, value in psnr.items()]
    lines += [
        "",
        "Ruler-based figures (scene fidelity, violation vs ground truth) are measured with "
        "`pila lab evaluate`.",
        "",
    ]
    write_text_atomic(world / "README.md", "\n".join(lines))
    record = {
        "config": asdict(config),
        "vae_frames": asdict(vae_frames),
        "vae": asdict(vae),
        "vae_config": asdict(vc),
        "transformer": asdict(transformer),
        "heldout_psnr": psnr,
        "heldout_flow_loss": [[step, loss] for step, loss in heldout_curve],
        "heldout_last_fifth_drop": last_fifth_drop(heldout_curve),
    }
    write_json_atomic(world / RECORD_NAME, record)


def last_fifth_drop(curve: Sequence[tuple[int, float]]) -> float:
    """How much the last 20 % of the steps lowered the held-out loss, relative to its value
    where they began (the measurement nearest that step); NaN for fewer than 2 points.
    Under 0.02 the loss has levelled off (the lab's criterion, our choice)."""
    if len(curve) < 2:
        return float("nan")
    last_step, last_loss = curve[-1]
    start = 0.8 * last_step
    _, before = min(curve, key=lambda point: abs(point[0] - start))
    return (before - last_loss) / before


def _curve_lines(curve: Sequence[tuple[int, float]]) -> list[str]:
    """The card's sentence on the held-out flow loss."""
    if not curve:
        return []
    shown = ", ".join(f"{step}: {loss:.4f}" for step, loss in curve[:: max(1, len(curve) // 8)])
    return [
        f"- Held-out flow loss (fixed σ and noise on the held-out clips; step: loss): {shown}; "
        f"last {curve[-1][0]}: {curve[-1][1]:.4f}. The last 20 % of the steps lowered it by "
        f"{last_fifth_drop(curve):.1%}.",
    ]


def read_record(world: Path, config: WorldConfig) -> tuple[PartReport, PartReport, WorldConfig]:
    """What ``world/training.json`` recorded of the VAE's training: the two VAE phases'
    reports and the config the VAE was trained with (NaN reports and ``config`` where the
    world recorded none)."""
    record_file = world / RECORD_NAME
    record: dict[str, Any] = read_json(record_file) if record_file.is_file() else {}
    nan = float("nan")
    missing = PartReport(
        steps=0, wall_seconds=nan, train_seconds=nan, final_loss=nan, seconds_per_step=nan
    )
    frames, vae = (PartReport(**record[k]) if k in record else missing for k in PHASES)
    source = config
    # a world that took its VAE recorded the VAE's own config
    recorded = record.get("vae_config", record.get("config"))
    if recorded:
        known = WorldConfig.__dataclass_fields__
        given = {k: v for k, v in recorded.items() if k in known and k != "vae_from"}
        source = WorldConfig(**{**given, "scenes": tuple(given.get("scenes", config.scenes))})
    return frames, vae, source
