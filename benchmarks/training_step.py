"""Where a stage C training step spends its time, measured in one run.

Splits one step of ``StageC`` into

* data: fetching a batch from the cached ``SyntheticPhysicsDataModule`` loader,
* backbone: the frozen ``v_θ`` forward (no autograd),
* adapter: adapter forward + backward with the flow-matching loss alone,
* residuals: the extra cost of the routed residual objective (forward + backward with
  ``λ_phys·L_res`` minus the adapter-only time),

interleaving the measurements over ``--repeats`` rounds and reporting medians and the
shares of the step. On a CUDA machine ``--paper`` also times the adapter forward+backward
against one Wan 2.1-1.3B transformer forward at the paper's latent size (16 × 21 × 60 × 104)
with a randomly initialised full-size transformer.

    python benchmarks/training_step.py                 # tiny preset, CPU
    python benchmarks/training_step.py --paper         # + paper size (needs CUDA)

Results go to ``benchmarks/results/training_step.json`` and ``.md`` (written atomically).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pila.adapter import AdapterConfig
from pila.flow import velocity_target
from pila.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"

TINY_ADAPTER = dict(text_dim=32, hidden=32, cond_dim=32, expert_width=16, sigma_embed_dim=32)


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def tiny_split(repeats: int, batch_size: int, workdir: Path) -> dict:
    from pila.datamodules import SyntheticPhysicsDataModule
    from pila.stages import StageC

    data = SyntheticPhysicsDataModule(
        root=str(workdir / "data"),
        num_clips_per_category=2,
        batch_size=batch_size,
        num_workers=0,
        max_sequence_length=128,
    )
    data.prepare_data()
    data.setup("fit")
    module = StageC(adapter=AdapterConfig(**TINY_ADAPTER), text_length=128)
    module.lambda_phys = 0.3
    module.train()
    loader_iter = iter(data.train_dataloader())

    def next_batch():
        nonlocal loader_iter
        try:
            return next(loader_iter)
        except StopIteration:
            loader_iter = iter(data.train_dataloader())
            return next(loader_iter)

    sync = lambda: None  # noqa: E731 - CPU
    batch = next_batch()
    step = module.prepare_step(batch)  # loads the backbone once
    times = {"data": [], "backbone": [], "adapter": [], "adapter+residuals": []}

    def adapter_only():
        out = module.adapter(
            step["x_t"], step["sigma"], step["v_theta"], module.condition(batch), residuals=False
        )
        F.mse_loss(out.v_pila, velocity_target(step["x0"], step["noise"])).backward()

    def adapter_with_residuals():
        loss, _ = module.compute_loss(batch, step)
        loss.backward()

    for _ in range(repeats):
        times["data"].append(_timed(next_batch, sync))
        times["backbone"].append(_timed(lambda: module.prepare_step(batch), sync))
        module.zero_grad()
        times["adapter"].append(_timed(adapter_only, sync))
        module.zero_grad()
        times["adapter+residuals"].append(_timed(adapter_with_residuals, sync))
    med = {k: statistics.median(v) for k, v in times.items()}
    split = {
        "data": med["data"],
        "backbone_forward": med["backbone"],
        "adapter_forward_backward": med["adapter"],
        "residuals": max(med["adapter+residuals"] - med["adapter"], 0.0),
    }
    total = sum(split.values())
    return {
        "batch_size": batch_size,
        "latent_shape": list(batch["latents"].shape[1:]),
        "seconds": split,
        "share": {k: v / total for k, v in split.items()},
        "step_seconds": total,
        "repeats": repeats,
    }


def paper_split(repeats: int) -> dict:
    """Adapter fwd+bwd vs one Wan 2.1-1.3B transformer forward, 16 × 21 × 60 × 104 (CUDA, bf16)."""
    from diffusers import WanTransformer3DModel

    from pila.adapter import AdapterCondition, PILAAdapter
    from pila.backbone.presets import (
        PAPER_LATENT_SHAPE,
        WAN21_T2V_1_3B_TRANSFORMER,
        WAN_TEXT_TOKENS,
    )

    device = torch.device("cuda")
    transformer = WanTransformer3DModel(**WAN21_T2V_1_3B_TRANSFORMER).to(device, torch.bfloat16)
    transformer.eval().requires_grad_(False)
    adapter = PILAAdapter(AdapterConfig()).to(device).train()
    x = torch.randn(1, *PAPER_LATENT_SHAPE, device=device)
    text = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=torch.bfloat16)
    sigma = torch.tensor([0.5], device=device)
    cond = AdapterCondition(torch.randn(1, 4096, device=device), torch.eye(8, device=device)[:1])
    sync = torch.cuda.synchronize

    def backbone():
        with torch.no_grad():
            return transformer(
                hidden_states=x.bfloat16(),
                timestep=sigma * 1000,
                encoder_hidden_states=text,
                return_dict=False,
            )[0]

    v = backbone().float()

    def adapter_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = adapter(x, sigma, v, cond, residuals=True)
            loss = F.mse_loss(out.v_pila.float(), v) + 0.3 * out.residual_loss
        loss.backward()
        adapter.zero_grad(set_to_none=True)

    for fn in (backbone, adapter_step):  # warm-up
        fn()
    times = {"backbone_forward": [], "adapter_forward_backward": []}
    for _ in range(repeats):
        times["backbone_forward"].append(_timed(backbone, sync))
        times["adapter_forward_backward"].append(_timed(adapter_step, sync))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "device": torch.cuda.get_device_name(),
        "seconds": med,
        "adapter_over_backbone": med["adapter_forward_backward"] / med["backbone_forward"],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--paper", action="store_true", help="also measure at the paper's size (CUDA)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_split(args.repeats, args.batch_size, Path(tmp))
    result = {
        "benchmark": "training_step",
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "tiny_cpu": tiny,
        "paper_gpu": paper_split(args.repeats)
        if args.paper and torch.cuda.is_available()
        else None,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "training_step.json", result)
    lines = [
        "# Stage C training step, tiny preset (CPU)",
        "",
        f"batch {tiny['batch_size']}, latent {tiny['latent_shape']}, median of {tiny['repeats']} "
        "interleaved rounds; "
        f"step {tiny['step_seconds'] * 1000:.1f} ms",
        "",
        "| part | ms | share |",
        "|---|---:|---:|",
    ]
    for k, v in tiny["seconds"].items():
        lines.append(f"| {k} | {v * 1000:.1f} | {tiny['share'][k]:.0%} |")
    lines.append("")
    if result["paper_gpu"]:
        p = result["paper_gpu"]
        lines += [
            f"## Paper size on {p['device']}",
            "",
            f"backbone forward {p['seconds']['backbone_forward'] * 1000:.0f} ms, adapter "
            "forward+backward "
            f"{p['seconds']['adapter_forward_backward'] * 1000:.0f} ms: ratio "
            f"{p['adapter_over_backbone']:.3f}",
        ]
    else:
        lines.append("Paper-size GPU measurement: not run (needs a CUDA machine: `--paper`).")
    write_text_atomic(RESULTS / "training_step.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
