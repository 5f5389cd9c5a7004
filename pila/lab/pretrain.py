"""``pila lab pretrain``: train the lab world (VAE, then transformer) and write its folder.

``pila lab pretrain --out DIR`` writes ``DIR/world`` (a diffusers ``WanPipeline`` folder
with its card, ``README.md``), each part's checkpoints and CSV/TensorBoard logs under
``DIR/vae`` and ``DIR/transformer``, and the encoded training latents. ``--ckpt_path
last`` resumes both parts where their last checkpoints left them. The shipped world
(:data:`pila.lab.world.WORLD_FOLDER`) was made this way; its card records the command.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

import torch

from pila import logs
from pila.lab.world import WorldConfig

PROG = "pila lab pretrain"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    d = WorldConfig()
    p = _Parser(prog=PROG, description="Train the lab world on the scenes: the VAE, then the transformer.")
    p.add_argument("--out", required=True, help="output folder (the world goes to OUT/world)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of rendering, initialisation and data order (default {d.seed})")
    p.add_argument("--vae-frame-steps", type=int, default=d.vae_frame_steps, help=f"VAE steps on single frames before clips (default {d.vae_frame_steps})")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps, help=f"VAE optimiser steps (default {d.vae_steps})")
    p.add_argument("--transformer-steps", type=int, default=d.transformer_steps, help=f"transformer optimiser steps (default {d.transformer_steps})")
    p.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", default=None, help="'last' resumes each part from its last checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clips-per-scene", type=int, default=d.clips_per_scene, help=f"training clips per scene (default {d.clips_per_scene})")
    p.add_argument("--heldout-per-scene", type=int, default=d.heldout_per_scene, help=f"held-out clips per scene (default {d.heldout_per_scene})")
    p.add_argument("--scenes", default=",".join(d.scenes), help="comma-separated scene names (default: all eight)")
    p.add_argument("--num-frames", type=int, default=d.num_frames, help=f"frames per clip, 4k + 1 (default {d.num_frames})")
    p.add_argument("--height", type=int, default=d.height, help=f"pixel height (default {d.height})")
    p.add_argument("--width", type=int, default=d.width, help=f"pixel width (default {d.width})")
    p.add_argument("--vae-batch", type=int, default=d.vae_batch, help=f"clip windows per VAE step (default {d.vae_batch})")
    p.add_argument("--vae-window", type=int, default=d.vae_window, help=f"frames per VAE training window (default {d.vae_window})")
    p.add_argument("--vae-crop", type=int, default=d.vae_crop, help=f"side of the VAE's training crops (default {d.vae_crop})")
    p.add_argument("--foreground-weight", type=float, default=d.foreground_weight, help=f"VAE loss weight of pixels unlike the frame's median colour (default {d.foreground_weight:g})")
    p.add_argument("--transformer-batch", type=int, default=d.transformer_batch, help=f"latents per transformer step (default {d.transformer_batch})")
    p.add_argument("--transformer-layers", type=int, default=None, help="transformer depth (default: the world's)")
    p.add_argument("--vae-from", default=None, help="take the trained VAE of this world folder ('lab': the shipped world) and train only the transformer")
    p.add_argument("--spatial-compression", type=int, default=d.spatial_compression, choices=(4, 8), help=f"pixels per latent side: 4 (the world's) or 8 (Wan's) (default {d.spatial_compression})")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch, help=f"steps between checkpoints (default {d.steps_per_epoch})")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"learning-rate warm-up steps of each part (default {d.warmup_steps})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pila lab pretrain``; bad input is a one-line error and exit status 2."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:  # --help, or a one-line usage error
        return int(exit_.code or 0)
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
        if args.ckpt_path not in (None, "last"):
            from pathlib import Path

            if not Path(args.ckpt_path).is_file():
                raise ValueError(f"--ckpt_path must be 'last' or an existing checkpoint, got {args.ckpt_path!r}")
        config = WorldConfig(
            seed=args.seed,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            clips_per_scene=args.clips_per_scene,
            heldout_per_scene=args.heldout_per_scene,
            scenes=tuple(s.strip() for s in args.scenes.split(",") if s.strip()),
            vae_frame_steps=args.vae_frame_steps,
            vae_steps=args.vae_steps,
            vae_batch=args.vae_batch,
            vae_window=args.vae_window,
            vae_crop=args.vae_crop,
            foreground_weight=args.foreground_weight,
            transformer_steps=args.transformer_steps,
            transformer_batch=args.transformer_batch,
            transformer_layers=args.transformer_layers,
            steps_per_epoch=args.steps_per_epoch,
            warmup_steps=args.warmup_steps,
            vae_from=args.vae_from,
            spatial_compression=args.spatial_compression,
        )
    except ValueError as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logs.configure(fmt="%(levelname)s %(name)s: %(message)s")
    from pila.lab.world import train_world

    command = shlex.join(["pila", "lab", "pretrain", *args_list])
    world = train_world(args.out, config, ckpt_path=args.ckpt_path, progress=not args.no_progress, command=command)
    logging.getLogger(__name__).info("wrote the world to %s", world)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
