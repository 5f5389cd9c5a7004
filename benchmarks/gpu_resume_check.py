"""How far a resumed stage C run ends from an uninterrupted one on a GPU.

On a CPU a run resumed mid-epoch ends bit-identical to the uninterrupted run
(``tests/training/test_exact_resume.py``). On a GPU, kernels that are not deterministic
(atomic adds in backward passes, algorithm choices) already make two uninterrupted runs
differ, and DeepSpeed's ZeRO-2 with CPU offload adds its own reduction order. This script
runs ``lightning_configs/tiny/stageC.yaml`` (bf16-mixed, on the tiny backbone and tiny
synthetic clips, epochs of 3 batches) four times through ``pila fit``: twice uninterrupted
for ``--steps`` steps, and once stopped at ``--stop`` (inside an epoch) then resumed from
its ``last.ckpt``. It reports the largest absolute difference of the adapter's weights
between the two uninterrupted runs (the GPU's own noise floor) and between an
uninterrupted and the resumed run, and whether the loop progress matches.

With DeepSpeed importable on a CUDA machine it uses the paper's strategy (ZeRO-2, optimizer
offloaded to the CPU); ``--dry-run`` runs the same on the CPU, where both differences are 0.

    python benchmarks/gpu_resume_check.py --out "$OUT"             # on the GPU
    python benchmarks/gpu_resume_check.py --dry-run --out /tmp/x   # anywhere
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from pila.cli import main as pila_main
from pila.io import write_json_atomic, write_text_atomic
from pila.stages.checkpoints import read_adapter_checkpoint

log = logging.getLogger("gpu_resume_check")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "lightning_configs" / "tiny" / "stageC.yaml"
DATA = {"num_clips_per_category": 1, "batch_size": 2, "num_frames": 17, "height": 32, "width": 32}
"""The test clips: 8 clips, 6 for training, epochs of 3 batches."""


def _fit(
    out: Path,
    steps: int,
    *,
    device: str,
    deepspeed: bool,
    data_root: Path,
    ckpt: Path | None = None,
) -> None:
    config = out / "stageC.yaml"
    if not config.exists():
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(config, CONFIG.read_text().replace("outputs/demo", str(out)))
    argv = [
        "fit",
        "--config",
        str(config),
        "--trainer.max_steps",
        str(steps),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.val_check_interval",
        "null",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.accelerator",
        device,
        "--model.init_args.init_from",
        "null",
        "--data.init_args.root",
        str(data_root),
        *[arg for key, value in DATA.items() for arg in (f"--data.init_args.{key}", str(value))],
    ]
    if deepspeed:
        argv += ["--trainer.strategy", "deepspeed_stage_2_offload"]
    if ckpt is not None:
        argv += ["--ckpt_path", str(ckpt)]
    if pila_main(argv) != 0:
        raise RuntimeError(f"pila fit failed in {out}")


def _last(out: Path) -> Path:
    return out / "stageC" / "checkpoints" / "last.ckpt"


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = read_adapter_checkpoint(str(a)).state_dict, read_adapter_checkpoint(str(b)).state_dict
    if wa.keys() != wb.keys():
        raise ValueError(f"{a} and {b} hold different adapter tensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _progress(path: Path) -> dict[str, Any] | None:
    """Global step and epoch of a file checkpoint (None for a DeepSpeed folder)."""
    if path.is_dir():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {"global_step": ckpt["global_step"], "epoch": ckpt["epoch"]}


def run(out: Path, steps: int, stop: int, dry: bool) -> dict[str, Any]:
    from pila.datamodules import SyntheticPhysicsDataModule

    device = "cpu" if dry else "gpu"
    deepspeed = not dry and importlib.util.find_spec("deepspeed") is not None
    data_root = out / "data"
    SyntheticPhysicsDataModule(root=str(data_root), max_sequence_length=128, **DATA).prepare_data()
    start = time.perf_counter()
    runs = {name: out / name for name in ("straight", "straight_again", "resumed")}
    kwargs = dict(device=device, deepspeed=deepspeed, data_root=data_root)
    _fit(runs["straight"], steps, **kwargs)
    _fit(runs["straight_again"], steps, **kwargs)
    _fit(runs["resumed"], stop, **kwargs)
    _fit(runs["resumed"], steps, ckpt=_last(runs["resumed"]), **kwargs)
    return {
        "config": str(CONFIG.relative_to(ROOT)),
        "device": "cpu" if dry else torch.cuda.get_device_name(),
        "strategy": "deepspeed_stage_2_offload" if deepspeed else "auto",
        "precision": "bf16-mixed",
        "steps": steps,
        "stop": stop,
        "max_abs_weight_difference": {
            "straight_vs_straight": _max_difference(
                _last(runs["straight"]), _last(runs["straight_again"])
            ),
            "straight_vs_resumed": _max_difference(_last(runs["straight"]), _last(runs["resumed"])),
        },
        "progress": {
            "straight": _progress(_last(runs["straight"])),
            "resumed": _progress(_last(runs["resumed"])),
        },
        "seconds": time.perf_counter() - start,
    }


def markdown(result: dict[str, Any]) -> str:
    d = result["max_abs_weight_difference"]
    return (
        f"## Resume ({result['device']}, {result['strategy']}, {result['precision']})\n\n"
        f"`{result['config']}`, {result['steps']} steps; the resumed run stopped at step "
        f"{result['stop']}.\n\n"
        "| adapter weights | max abs difference |\n|---|---:|\n"
        f"| uninterrupted vs uninterrupted | {d['straight_vs_straight']:.3g} |\n"
        f"| uninterrupted vs resumed | {d['straight_vs_resumed']:.3g} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for resume.json, resume.md and the runs"
    )
    parser.add_argument("--dry-run", action="store_true", help="on the CPU")
    parser.add_argument(
        "--steps", type=int, default=8, help="steps of each run (ours: 2 epochs and a bit)"
    )
    parser.add_argument(
        "--stop", type=int, default=4, help="where the interrupted run stops (inside epoch 1)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dry = args.dry_run or not torch.cuda.is_available()
    result = run(args.out / "resume", args.steps, args.stop, dry)
    log.info("resume: %s", json.dumps(result))
    write_json_atomic(args.out / "resume.json", result)
    write_text_atomic(args.out / "resume.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
