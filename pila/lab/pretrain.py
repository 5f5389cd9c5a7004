"""``pila lab pretrain``: train the lab world (VAE, then transformer) and write its folder.

``pila lab pretrain --out DIR`` writes ``DIR/world`` (a diffusers ``WanPipeline`` folder
with its card, ``README.md``), each part's checkpoints and CSV/TensorBoard logs under
``DIR/vae`` and ``DIR/transformer``, and the encoded training latents. ``--ckpt_path
last`` resumes both parts where their last checkpoints left them. The shipped world
(:data:`pila.lab.world.WORLD_FOLDER`) was made this way; its card records the command.

:func:`train_world` is the same from Python: the world's config and clips are
:mod:`pila.lab.world`, its two parts :mod:`pila.lab.world_parts`.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import FrozenDict
from torch import Tensor
from torch.utils.data import DataLoader

from pila import logs
from pila.backbone.folders import LAB_WORLD_FOLDER, WAN22_REGIMES
from pila.backbone.tiny import build_tiny_pipeline
from pila.io import atomic_folder, atomic_path, write_json_atomic, write_text_atomic
from pila.lab.cli import ArgumentParser, UsageError, run_command
from pila.lab.world import ClipSet, WorldConfig, render_clips
from pila.lab.world_card import PartReport, read_record, write_card
from pila.lab.world_moe import (
    BOUNDARY_RATIO,
    EXPERTS,
    MOE_FOLDER,
    MOE_RECORD,
    MoeConfig,
    card,
    lab_world_sha256,
)
from pila.lab.world_parts import (
    LatentData,
    RunKeys,
    TransformerPart,
    VAEPart,
    WindowData,
    WorldPart,
    encode_clips,
    reconstruction_psnr,
)

log = logging.getLogger(__name__)

PROG = "pila lab pretrain"


# ----------------------------------------------------------------- training
def _trainer(out: Path, part: str, max_steps: int, progress: bool, steps_between: int) -> L.Trainer:
    """The part's trainer; a checkpoint every ``steps_between`` steps
    (:attr:`WorldConfig.steps_per_epoch`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    # the newest checkpoint, with last.ckpt linked to it (with save_top_k=0 Lightning
    # writes last.ckpt only when the run ends, so a killed run could not resume)
    checkpoint = ModelCheckpoint(
        dirpath=out / part / "checkpoints",
        filename="{epoch}-{step}",
        save_last="link",
        save_top_k=1,
        every_n_train_steps=steps_between,
    )
    # one log version per run (logs/version_0, version_1 after a resume, ...): none overwritten
    version = len(list((out / part / "logs").glob("version_*")))
    loggers = [
        CSVLogger(out / part, name="logs", version=version),
        TensorBoardLogger(out / part, name="logs", version=version),
    ]
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=loggers,
        callbacks=[checkpoint],
        deterministic=True,
        gradient_clip_val=1.0,  # our choice
        log_every_n_steps=5 if max_steps >= 100 else 1,  # our choice
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out),
    )


def _fit(trainer: L.Trainer, module: WorldPart, loader: DataLoader, ckpt_path: str | None) -> float:
    """Fit; returns the wall seconds of this call."""
    if isinstance(loader.sampler, RunKeys):
        module.keys = loader.sampler  # a restored run restarts the keys at its step
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return time.perf_counter() - start


def _window_loader(
    clips: ClipSet,
    config: WorldConfig,
    *,
    window: int,
    crop: int,
    batch: int,
    seed: int,
    steps: int,
) -> DataLoader:
    """Batches of ``window``-frame, ``crop``-pixel windows of the clips for ``steps`` steps,
    drawn by :class:`~pila.lab.world_parts.RunKeys`."""
    return DataLoader(
        WindowData(clips, window, crop),
        batch_size=batch,
        sampler=RunKeys(
            len(clips.prompts),
            batch,
            config.steps_per_epoch,
            steps,
            seed,
            window=(config.num_frames, window),
            crop=(config.height, config.width, crop),
        ),
        num_workers=0,
    )


def _normalised(mu: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Latents (N, C, T, H, W) with the training latents' per-channel mean and std (C,)
    removed, as the transformer sees them."""
    return (mu - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def _resolve_ckpt(out: Path, part: str, ckpt_path: str | None) -> str | None:
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        last = out / part / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return ckpt_path


def _report(module: WorldPart, trainer: L.Trainer, wall: float) -> PartReport:
    recent = module.recent_losses[-20:]
    steps = int(trainer.global_step)
    return PartReport(
        steps=steps,
        wall_seconds=wall,
        train_seconds=module.train_seconds,
        final_loss=float(np.mean(recent)) if recent else float("nan"),
        seconds_per_step=module.train_seconds / steps if steps else float("nan"),
    )


def _prompt_table(
    backbone: Any, prompts: Sequence[str], max_sequence_length: int
) -> tuple[Tensor, Tensor, int]:
    """What :class:`~pila.lab.world_parts.LatentData` reads a clip's prompt from: each clip's
    row (N,), each distinct prompt's embedding with the empty prompt's last ((U + 1, L, D)),
    and the empty prompt's row."""
    unique = sorted(set(prompts))
    text = backbone.encode_prompt(unique + [""], max_sequence_length=max_sequence_length)
    return torch.tensor([unique.index(p) for p in prompts]), text.embeds, len(unique)


def _fit_transformer(
    base: Path,
    name: str,
    part: TransformerPart,
    data: LatentData,
    batch: int,
    steps_per_epoch: int,
    seed: int,
    drop: float,
    progress: bool,
    ckpt_path: str | None,
) -> PartReport:
    """Fit a transformer part on ``data`` in ``base/name`` (its checkpoints and logs), with
    the seeded keys of :class:`~pila.lab.world_parts.RunKeys`; resumes from ``ckpt_path``."""
    steps = part.total_steps
    keys = RunKeys(len(data), batch, steps_per_epoch, steps, seed, drop=drop)
    loader = DataLoader(data, batch_size=batch, sampler=keys, num_workers=0)
    trainer = _trainer(base, name, steps, progress, steps_per_epoch)
    wall = _fit(trainer, part, loader, _resolve_ckpt(base, name, ckpt_path))
    return _report(part, trainer, wall)


def _vae_part(config: WorldConfig, lr: float, steps: int) -> VAEPart:
    return VAEPart(
        config.vae_config(),
        config.seed,
        lr,
        steps,
        config.warmup_steps,
        config.kl_weight,
        config.foreground_weight,
    )


def _train_vae(
    base: Path, config: WorldConfig, train_clips: ClipSet, ckpt_path: str | None, progress: bool
) -> tuple[AutoencoderKLWan, PartReport, PartReport]:
    """Both VAE phases; returns the trained VAE (eval mode) and each phase's report."""
    frames_part = _vae_part(config, config.vae_frame_lr, config.vae_frame_steps)
    frames_loader = _window_loader(
        train_clips,
        config,
        window=1,
        crop=min(config.height, config.width),
        batch=config.vae_frame_batch,
        seed=config.seed + 2,
        steps=config.vae_frame_steps,
    )
    nan = float("nan")
    frames_report = PartReport(
        steps=0, wall_seconds=0.0, train_seconds=0.0, final_loss=nan, seconds_per_step=nan
    )
    if config.vae_frame_steps:
        trainer = _trainer(
            base, "vae_frames", config.vae_frame_steps, progress, config.steps_per_epoch
        )
        resume = _resolve_ckpt(base, "vae_frames", ckpt_path)
        wall = _fit(trainer, frames_part, frames_loader, resume)
        frames_report = _report(frames_part, trainer, wall)

    vae_part = _vae_part(config, config.vae_lr, config.vae_steps)
    if config.vae_frame_steps:
        # a resumed run restores its checkpoint over this
        vae_part.vae.load_state_dict(frames_part.vae.state_dict())
    vae_loader = _window_loader(
        train_clips,
        config,
        window=config.vae_window,
        crop=config.vae_crop,
        batch=config.vae_batch,
        seed=config.seed,
        steps=config.vae_steps,
    )
    trainer = _trainer(base, "vae", config.vae_steps, progress, config.steps_per_epoch)
    wall = _fit(trainer, vae_part, vae_loader, _resolve_ckpt(base, "vae", ckpt_path))
    return vae_part.vae.eval(), frames_report, _report(vae_part, trainer, wall)


def _taken_vae(
    config: WorldConfig,
) -> tuple[AutoencoderKLWan, PartReport, PartReport, WorldConfig]:
    """The trained VAE of :attr:`WorldConfig.vae_from`, with the phase reports and the config
    its world recorded (:func:`~pila.lab.world_card.read_record`)."""
    folder = config.vae_folder()
    vae = AutoencoderKLWan.from_pretrained(str(folder)).eval()
    # the loaded config names the folder it came from; the world written here must not
    vae._internal_dict = FrozenDict({k: v for k, v in vae.config.items() if k != "_name_or_path"})
    frames_report, vae_report, source = read_record(folder.parent, config)
    log.info("took the trained VAE of %s (not retrained)", folder)
    return vae, frames_report, vae_report, source


def train_world(
    out: str | os.PathLike,
    config: WorldConfig,
    *,
    ckpt_path: str | None = None,
    progress: bool = True,
    command: str = "",
) -> Path:
    """Train the VAE, then the transformer, and write ``out/world`` (a ``WanPipeline`` folder
    + card).

    Args:
        out: the output folder (checkpoints and logs per part, latents, the world).
        config: what to train.
        ckpt_path: ``"last"`` resumes each part from its last checkpoint (a finished part
            is not retrained); a path resumes the part it belongs to; None starts afresh.
        progress: show Lightning's progress bars.
        command: the command line, recorded in the card.

    Returns:
        The world folder.
    """
    from safetensors.torch import load_file, save_file

    from pila.backbone.wan import WanBackbone

    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    write_json_atomic(base / "config.json", asdict(config))
    L.seed_everything(config.seed, workers=True, verbose=False)

    # 1. clips
    train_clips = render_clips(config)
    heldout = render_clips(config, heldout=True)
    log.info(
        "rendered %d training and %d held-out clips", len(train_clips.prompts), len(heldout.prompts)
    )

    # 2. the VAE: single frames first (cheap; the spatial path), then whole clips (temporal)
    if config.vae_from is not None:
        vae, frames_report, vae_report, vae_config = _taken_vae(config)
    else:
        vae, frames_report, vae_report = _train_vae(base, config, train_clips, ckpt_path, progress)
        vae_config = config

    # 3. latent statistics into the VAE config, then the normalised training latents
    latents_file = base / "latents.safetensors"
    vae_ckpt = base / "vae" / "checkpoints" / "last.ckpt"
    latents_current = latents_file.is_file() and (
        not vae_ckpt.is_file() or vae_ckpt.stat().st_mtime <= latents_file.stat().st_mtime
    )
    if ckpt_path is not None and latents_current:
        stored = load_file(str(latents_file))
        mean, std, latents = stored["mean"], stored["std"], stored["latents"]
    else:
        mu = encode_clips(vae, train_clips)  # (N, C, T, H, W)
        mean = mu.mean(dim=(0, 2, 3, 4))  # (C,)
        std = mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)  # (C,)
        latents = _normalised(mu, mean, std)
        with atomic_path(latents_file) as tmp:
            save_file({"mean": mean, "std": std, "latents": latents.contiguous()}, str(tmp))
    vae.register_to_config(
        latents_mean=[round(float(v), 6) for v in mean],
        latents_std=[round(float(v), 6) for v in std],
    )
    psnr = reconstruction_psnr(vae, heldout) if heldout.prompts else {}

    # 4. the pipeline around it: the tiny preset's text encoder, tokenizer and scheduler
    pipe = build_tiny_pipeline(
        seed=config.seed, transformer=config.transformer_config(), vae=config.vae_config()
    )
    pipe.register_modules(vae=vae)
    backbone = WanBackbone(pipe)
    prompts = _prompt_table(backbone, train_clips.prompts, config.max_sequence_length)
    heldout_set = None
    if heldout.prompts and config.heldout_every:
        held_mu = encode_clips(vae, heldout)  # (N, C, T, H, W)
        held_latents = _normalised(held_mu, mean, std)
        held_text = backbone.encode_prompt(
            list(heldout.prompts), max_sequence_length=config.max_sequence_length
        )
        heldout_set = (held_latents, held_text.embeds)

    # 5. the transformer
    tr_part = TransformerPart(
        config.transformer_config(),
        config.seed,
        config.transformer_lr,
        config.transformer_steps,
        config.warmup_steps,
        config.shift,
        heldout=heldout_set,
        heldout_every=config.heldout_every,
    )
    tr_report = _fit_transformer(
        base,
        "transformer",
        tr_part,
        LatentData(latents, *prompts),
        config.transformer_batch,
        config.steps_per_epoch,
        config.seed + 1,
        config.prompt_dropout,
        progress,
        ckpt_path,
    )

    # 6. the world folder and its card
    pipe.register_modules(transformer=tr_part.transformer.eval())
    world = base / "world"
    reports = {"vae_frames": frames_report, "vae": vae_report, "transformer": tr_report}
    with atomic_folder(world) as folder:
        pipe.save_pretrained(str(folder), safe_serialization=True)
        write_card(
            folder,
            config,
            command=command,
            psnr=psnr,
            vae_config=vae_config,
            heldout_curve=tr_part.heldout_curve,
            **reports,
        )
    return world


# -------------------------------------------------------------- the lab-moe experts
def train_moe_world(
    out: str | os.PathLike,
    config: MoeConfig | None = None,
    *,
    ckpt_path: str | None = None,
    progress: bool = True,
    command: str = "",
) -> Path:
    """Train the two experts of ``lab-moe`` (:mod:`pila.lab.world_moe`) from the lab world
    and write ``OUT/world_moe`` (what :data:`~pila.lab.world_moe.MOE_FOLDER` ships).

    Each expert is a :class:`~pila.lab.world_parts.TransformerPart` started from the lab
    transformer's weights, training a LoRA only, on its σ range (:data:`EXPERTS`), on the
    lab VAE's normalised latents of clips of :attr:`MoeConfig.seed`, with the lab world's
    prompt dropout (so guidance keeps working). ``ckpt_path="last"`` resumes each expert
    from its last checkpoint (a finished one is not retrained).
    """
    from diffusers import WanPipeline

    from pila.backbone.wan import WanBackbone
    from pila.stages.finetune import save_lora

    config = config or MoeConfig()
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    write_json_atomic(base / "config.json", asdict(config))
    L.seed_everything(config.seed, workers=True, verbose=False)
    world = config.world()
    lab = WanPipeline.from_pretrained(str(LAB_WORLD_FOLDER))
    lab.transformer.eval()

    # 1. clips of the experts' own seed, as the lab world's latents and prompt embeddings
    clips, heldout = render_clips(world), render_clips(world, heldout=True)
    mean = torch.tensor(lab.vae.config.latents_mean)  # (C,)
    std = torch.tensor(lab.vae.config.latents_std)  # (C,)
    latents = _normalised(encode_clips(lab.vae, clips), mean, std)  # (N, C, T, H, W)
    held = _normalised(encode_clips(lab.vae, heldout), mean, std)
    backbone = WanBackbone(lab)
    prompts = _prompt_table(backbone, clips.prompts, world.max_sequence_length)
    held_text = backbone.encode_prompt(
        list(heldout.prompts), max_sequence_length=world.max_sequence_length
    ).embeds
    log.info("%d training and %d held-out clips of seed %d", len(latents), len(held), config.seed)

    # 2. the experts
    transformer_config = {k: v for k, v in lab.transformer.config.items() if not k.startswith("_")}
    initial = lab.transformer.state_dict()
    experts: dict[str, Any] = {}
    folder = base / "world_moe"
    parts = {}
    for i, (name, sigma_range) in enumerate(EXPERTS.items()):
        part = TransformerPart(
            transformer_config,
            config.seed + 10 * i,
            config.lr,
            config.steps,
            config.warmup_steps,
            world.shift,
            heldout=(held, held_text),
            heldout_every=config.heldout_every,
            initial=initial,
            lora_rank=config.lora_rank,
            sigma_range=sigma_range,
        )
        lab_loss = part.heldout_loss()  # the LoRA starts at zero: the lab transformer's loss
        report = _fit_transformer(
            base,
            f"expert_{name}",
            part,
            LatentData(latents, *prompts),
            config.batch,
            config.steps_per_epoch,
            config.seed + 10 * i + 1,
            world.prompt_dropout,
            progress,
            ckpt_path,
        )
        final = part.final_heldout()
        experts[name] = {
            "regime": WAN22_REGIMES[name],
            "sigma_range": list(sigma_range),
            "trainable_parameters": sum(
                p.numel() for p in part.transformer.parameters() if p.requires_grad
            ),
            "report": asdict(report),
            "heldout_lab_transformer": lab_loss,
            "heldout_curve": part.heldout_curve,
            "relative_velocity_change": part.lora_velocity_change(),
        }
        parts[name] = part
        log.info("%s: held-out flow loss %.4f (lab transformer %.4f)", name, final, lab_loss)

    # 3. what ships
    record = {
        "boundary_ratio": BOUNDARY_RATIO,
        "lora_rank": config.lora_rank,
        "base": "lab",
        "base_sha256": lab_world_sha256(),
    }
    with atomic_folder(folder) as tmp:
        for name, part in parts.items():
            (tmp / name).mkdir()
            save_lora(part.transformer, tmp / name)
        write_json_atomic(tmp / MOE_RECORD, record)
        training = {"config": asdict(config), "command": command, "experts": experts}
        write_json_atomic(tmp / "training.json", training)
        write_text_atomic(tmp / "README.md", card(training, record))
    return folder


# ------------------------------------------------------------------ the command
def build_parser() -> ArgumentParser:
    d = WorldConfig()
    p = ArgumentParser(
        prog=PROG, description="Train the lab world on the scenes: the VAE, then the transformer "
        "(--world lab-moe: its two Wan 2.2-style experts, fine-tuned from the shipped world).",
    )

    def option(name: str, text: str, **kwargs) -> None:
        """``--name`` for the :class:`WorldConfig` field ``name``, with its default."""
        value = getattr(d, name)
        shown = f"{value:g}" if isinstance(value, float) else value
        flag = "--" + name.replace("_", "-")
        text = f"{text} (default {shown})"
        p.add_argument(flag, type=type(value), default=value, help=text, **kwargs)

    p.add_argument("--out", required=True, help="output folder (the world goes to OUT/world)")
    option("seed", "seed of rendering, initialisation and data order")
    option("vae_frame_steps", "VAE steps on single frames before clips")
    option("vae_steps", "VAE optimiser steps")
    option("transformer_steps", "transformer optimiser steps")
    option("heldout_every", "steps between held-out flow-loss measurements (0: never)")
    p.add_argument(
        "--ckpt_path",
        "--ckpt-path",
        dest="ckpt_path",
        default=None,
        help="'last' resumes each part from its last checkpoint",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    option("clips_per_scene", "training clips per scene")
    option("heldout_per_scene", "held-out clips per scene")
    p.add_argument(
        "--scenes",
        default=",".join(d.scenes),
        help="comma-separated scene names (default: all eight)",
    )
    option("num_frames", "frames per clip, 4k + 1")
    option("height", "pixel height")
    option("width", "pixel width")
    option("vae_batch", "clip windows per VAE step")
    option("vae_window", "frames per VAE training window")
    option("vae_crop", "side of the VAE's training crops")
    option("foreground_weight", "VAE loss weight of pixels unlike the frame's median colour")
    option("transformer_batch", "latents per transformer step")
    p.add_argument(
        "--transformer-layers",
        type=int,
        default=None,
        help="transformer depth (default: the world's)",
    )
    p.add_argument(
        "--vae-from",
        default=None,
        help="take the trained VAE of this world folder ('lab': the shipped world) and train "
        "only the transformer",
    )
    sides = "pixels per latent side: 4 (the world's) or 8 (Wan's)"
    option("spatial_compression", sides, choices=(4, 8))
    option("steps_per_epoch", "steps between checkpoints")
    option("warmup_steps", "learning-rate warm-up steps of each part")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    moe = MoeConfig()
    p.add_argument(
        "--world",
        choices=("lab", "lab-moe"),
        default="lab",
        help="lab: the world from scratch (the options above); lab-moe: its two Wan 2.2-style "
        "experts fine-tuned from the shipped lab world (the --expert-* options), written to "
        "OUT/world_moe (default lab)",
    )
    for flag, field, text in (
        ("--expert-steps", "steps", "steps per expert"),
        ("--expert-rank", "lora_rank", "each expert's LoRA rank"),
        ("--expert-clips", "clips_per_scene", "training clips per scene"),
        ("--expert-seed", "seed", "world seed of the experts' clips and seed of their training"),
    ):
        value = getattr(moe, field)
        p.add_argument(flag, type=int, default=value, help=f"lab-moe: {text} (default {value})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pila lab pretrain``; bad input is a one-line error and exit status 2."""
    return run_command(PROG, _run, argv)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
    if args.ckpt_path not in (None, "last") and not Path(args.ckpt_path).is_file():
        raise UsageError(
            f"--ckpt_path must be 'last' or an existing checkpoint, got {args.ckpt_path!r}"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.world == "lab-moe":
        return _run_moe(args, argv)
    given = {k: v for k, v in vars(args).items() if k in WorldConfig.__dataclass_fields__}
    scenes = tuple(s.strip() for s in args.scenes.split(",") if s.strip())
    try:
        config = WorldConfig(**{**given, "scenes": scenes})
    except ValueError as err:  # the config's own checks name the value and what it must be
        raise UsageError(str(err)) from err
    logs.configure(fmt="%(levelname)s %(name)s: %(message)s")
    command = shlex.join(["pila", "lab", "pretrain", *argv])
    world = train_world(
        args.out, config, ckpt_path=args.ckpt_path, progress=not args.no_progress, command=command
    )
    log.info("wrote the world to %s", world)
    return 0


def _run_moe(args: Any, argv: list[str]) -> int:
    """``pila lab pretrain --world lab-moe``: the two experts (:mod:`pila.lab.world_moe`)."""
    try:
        config = MoeConfig(
            seed=args.expert_seed,
            clips_per_scene=args.expert_clips,
            lora_rank=args.expert_rank,
            steps=args.expert_steps,
            heldout_every=args.heldout_every,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err
    logs.configure(fmt="%(levelname)s %(name)s: %(message)s")
    folder = train_moe_world(
        args.out,
        config,
        ckpt_path=args.ckpt_path,
        progress=not args.no_progress,
        command=shlex.join(["pila", "lab", "pretrain", *argv]),
    )
    log.info("wrote the lab-moe experts to %s (ship them as %s)", folder, MOE_FOLDER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
