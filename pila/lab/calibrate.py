"""``pila lab calibrate``: rewrite the ruler's calibration from the renderer.

With no ``--scenes`` every scene's normalisers and the fidelity prototypes are measured
again and the whole file is rewritten; with ``--scenes`` only those scenes' entries are
replaced, the other scenes and the prototypes stay byte for byte as they were (the file
must have been made with the same ``--count``, ``--seed`` and ``--crf``). The default
output is the calibration the ruler ships with
(:data:`~pila.lab.ruler.normalise.CALIBRATION_PATH`). Bad arguments are a one-line error
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pila.lab.cli import ArgumentParser, UsageError, run_command
from pila.lab.ruler.calibration import (
    CALIBRATION_CLIPS,
    CALIBRATION_CRF,
    CALIBRATION_SEED,
    check_scenes,
    write_calibration,
)
from pila.lab.ruler.normalise import CALIBRATION_PATH
from pila.lab.scenes import SCENES

PROG = "pila lab calibrate"


def crf(text: str) -> int | None:
    """``--crf``: an H.264 quality (0–51) or ``none`` (no mp4 round trip)."""
    if text.lower() == "none":
        return None
    value = int(text)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"{text}: an H.264 quality is 0 … 51, or none")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line; its errors raise :class:`~pila.lab.cli.UsageError`."""
    parser = ArgumentParser(
        prog=PROG,
        description="Rewrite the ruler's calibration (normalisers, fidelity prototypes) "
        "from ground-truth clips of the scenes.",
    )
    parser.add_argument(
        "--scenes",
        default=None,
        help=f"comma-separated scenes to recalibrate, the rest kept ({', '.join(SCENES)}); "
        "default: every scene and the fidelity prototypes",
    )
    parser.add_argument(
        "--out",
        default=str(CALIBRATION_PATH),
        help="the calibration file (default: the shipped one)",
    )
    parser.add_argument(
        "--count", type=int, default=CALIBRATION_CLIPS, help="ground-truth clips per scene"
    )
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="the clips' seed")
    parser.add_argument(
        "--crf", type=crf, default=CALIBRATION_CRF, help="mp4 quality of every other clip, or none"
    )
    return parser


def calibrate_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 2:
        raise UsageError(f"--count {args.count}: at least 2 clips per scene")
    scenes = None
    try:
        if args.scenes is not None:
            scenes = check_scenes([s.strip() for s in args.scenes.split(",") if s.strip()])
        path = write_calibration(
            args.out, scenes=scenes, count=args.count, seed=args.seed, crf=args.crf
        )
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    which = "every scene and the fidelity prototypes" if scenes is None else ", ".join(scenes)
    sys.stdout.write(f"wrote {path} ({which})\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pila lab calibrate``: 0, or 2 with a one-line error for a bad command line."""
    return run_command(PROG, calibrate_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
