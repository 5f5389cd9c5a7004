"""Cost of the PILA adapter next to one Wan 2.1-T2V-1.3B transformer forward.

At the paper's setting (latent 16 × 21 × 60 × 104, i.e. 81 frames at 480 × 832; hidden
128; bank 32; top-4) this measures

1. parameters and forward FLOPs of the backbone: diffusers' ``WanTransformer3DModel`` with
   the 1.3B config, built on the meta device (no weights, no memory) and run under
   ``torch.utils.flop_counter.FlopCounterMode`` with 512 text tokens;
2. parameters (per group) and forward FLOPs of the adapter, run for real on the CPU at
   batch 1: at inference (no residual objective, the per-denoising-step cost), in training
   mode (with the routed residual objective), for every top-k of Table 14, and for the
   capacity-matched plain adapter;
3. wall-clock time of the two expert dispatch strategies ("gather": only the selected
   experts; "batched": every expert through grouped convolutions, then gather) at the
   same size, forward and forward + backward, on the CPU.

FlopCounterMode counts matrix multiplications, convolutions and attention (2 FLOPs per
multiply-add); element-wise work (finite differences, norms, activations, the residual
objective) is not in it, for the backbone and the adapter alike. To show that work, the
benchmark also counts the elements written by every other non-view operator
(:class:`ElementCounter`), a proxy for memory-bound work.

Run (writes ``benchmarks/results/adapter_cost.json`` and ``.md``)::

    .venv/bin/python benchmarks/adapter_cost.py

``--reps`` sets the timing repetitions, ``--skip-timing`` skips part 3, ``--markdown-only``
re-renders the summary from the JSON. It takes about 8 minutes on 2 CPU cores and peaks
near 5 GB of memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from pila.adapter import AdapterCondition, AdapterConfig, PILAAdapter, describe
from pila.adapter.experts import OperatorExperts
from pila.backbone.presets import PAPER_LATENT_SHAPE, WAN21_T2V_1_3B_TRANSFORMER, WAN_TEXT_TOKENS
from pila.categories import labels_to_multihot
from pila.io import write_text_atomic
from pila.physics.masks import recipe_masks

log = logging.getLogger("adapter_cost")

LATENT_SHAPE = PAPER_LATENT_SHAPE
TEXT_TOKENS = WAN_TEXT_TOKENS
WAN_1_3B_CONFIG = WAN21_T2V_1_3B_TRANSFORMER

EXAMPLE_LABELS = ("rigid_body", "collision")
"""Labels of the benchmark sample (a bouncing ball)."""

TARGET_FLOP_RATIO = 0.02
TARGET_PARAM_RATIO = 0.005


_NOT_WRITES = {
    torch.ops.aten._unsafe_view,  # a view that is not marked as one
    torch.ops.aten.empty_like,
    torch.ops.aten.empty,
    torch.ops.aten.empty_strided,
}
_SOFTMAX = {torch.ops.aten._softmax, torch.ops.aten._safe_softmax}


class ElementCounter(TorchDispatchMode):
    """Counts the output elements of every operator FlopCounterMode does not count.

    Views (reshapes, slices, expands) and allocations write nothing and are skipped;
    copies, arithmetic, reductions, activations and normalisations are counted by the size
    of their outputs. Softmax outputs are kept apart: on the meta device attention runs
    the unfused math path, whose (L × L) score tensors a fused attention kernel never
    writes to memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0
        self.softmax_elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if func.is_view or packet in flop_registry or packet in _NOT_WRITES:
            return out
        n = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        if packet in _SOFTMAX:
            self.softmax_elements += n
        else:
            self.elements += n
        return out


def _flop_breakdown(counter: FlopCounterMode) -> dict[str, int]:
    return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def backbone_cost() -> dict[str, Any]:
    """Parameters and forward FLOPs of the 1.3B transformer, on the meta device."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**WAN_1_3B_CONFIG)
        x = torch.empty(1, *LATENT_SHAPE)
        text = torch.empty(1, TEXT_TOKENS, WAN_1_3B_CONFIG["text_dim"])
        timestep = torch.empty(1)
    counter, elements = FlopCounterMode(display=False), ElementCounter()
    with torch.no_grad(), counter, elements:
        model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_flops": int(counter.get_total_flops()),
        "flops_by_op": _flop_breakdown(counter),
        "other_op_output_elements": elements.elements,
        "attention_score_elements": elements.softmax_elements,
        "counted_on": "meta device, FlopCounterMode",
    }


def _inputs(config: AdapterConfig, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(1, *LATENT_SHAPE, generator=gen)
    v_theta = torch.randn(1, *LATENT_SHAPE, generator=gen)
    labels = labels_to_multihot(list(EXAMPLE_LABELS))[None]
    cond = AdapterCondition(torch.randn(1, config.text_dim, generator=gen), labels)
    return x_t, torch.tensor([0.5]), v_theta, cond


def adapter_cost(config: AdapterConfig, *, residuals: bool) -> dict[str, Any]:
    """Forward FLOPs and CPU seconds of one adapter forward at batch 1 (no autograd)."""
    torch.manual_seed(0)
    adapter = PILAAdapter(config).train(residuals)
    x_t, sigma, v_theta, cond = _inputs(config)
    counter, elements = FlopCounterMode(display=False), ElementCounter()
    start = time.perf_counter()
    with torch.no_grad(), counter, elements:
        adapter(x_t, sigma, v_theta, cond, residuals=residuals)
    return {
        "forward_flops": int(counter.get_total_flops()),
        "flops_by_op": _flop_breakdown(counter),
        "other_op_output_elements": elements.elements,
        "cpu_seconds": time.perf_counter() - start,
    }


def time_experts(
    config: AdapterConfig, *, batch: int, reps: int, backward: bool
) -> dict[str, float]:
    """Median CPU seconds of the expert step for each dispatch (top-k of ``config``)."""
    torch.manual_seed(0)
    experts = OperatorExperts(
        recipe_masks(),
        config.cond_dim,
        config.expert_width,
        config.expert_depth,
        config.kernel_size,
    )
    with torch.no_grad():
        experts.out_weight.normal_(std=0.02)
    bank = torch.randn(batch, config.bank_channels, *LATENT_SHAPE[1:])
    cond = torch.randn(batch, config.cond_dim)
    indices = torch.stack(
        [torch.randperm(config.num_experts)[: config.top_k] for _ in range(batch)]
    )
    out: dict[str, float] = {}
    for dispatch in ("gather", "batched"):
        experts.dispatch = dispatch
        samples = []
        for rep in range(reps + 1):  # the first run warms up and is dropped
            experts.zero_grad(set_to_none=True)
            start = time.perf_counter()
            with torch.set_grad_enabled(backward):
                updates = experts(bank, cond, indices)
                if backward:
                    updates.square().mean().backward()
            if rep > 0:
                samples.append(time.perf_counter() - start)
            del updates
        out[dispatch] = sorted(samples)[len(samples) // 2]
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


def run(reps: int, skip_timing: bool) -> dict[str, Any]:
    config = AdapterConfig()
    log.info("backbone: building Wan 2.1-T2V-1.3B on the meta device")
    backbone = backbone_cost()
    log.info(
        "backbone: %.3e parameters, %.3e FLOPs", backbone["parameters"], backbone["forward_flops"]
    )

    groups = describe(config)
    inference = adapter_cost(config, residuals=False)
    training = adapter_cost(config, residuals=True)
    log.info(
        "adapter: %d parameters, %.3e FLOPs at inference",
        groups["total"],
        inference["forward_flops"],
    )
    top_k = {
        k: adapter_cost(config.replace(top_k=k), residuals=False)["forward_flops"]
        for k in range(config.num_experts + 1)
    }
    plain_config = config.replace(plain_adapter=True)
    plain = {
        "parameters": describe(plain_config)["total"],
        **adapter_cost(plain_config, residuals=False),
    }

    results: dict[str, Any] = {
        "setting": {
            "latent_shape": list(LATENT_SHAPE),
            "text_tokens": TEXT_TOKENS,
            "batch": 1,
            "labels": list(EXAMPLE_LABELS),
            "adapter_config": config.to_dict(),
        },
        "backbone": backbone,
        "adapter": {
            "parameters": groups["total"],
            "parameters_by_group": {k: v for k, v in groups.items() if k != "total"},
            "inference": inference,
            "training_forward": training,
            "forward_flops_by_top_k": top_k,
        },
        "plain_adapter": plain,
        "ratios": {
            "parameters": groups["total"] / backbone["parameters"],
            "inference_flops": inference["forward_flops"] / backbone["forward_flops"],
            "training_forward_flops": training["forward_flops"] / backbone["forward_flops"],
            "inference_other_elements": inference["other_op_output_elements"]
            / backbone["other_op_output_elements"],
            "training_other_elements": training["other_op_output_elements"]
            / backbone["other_op_output_elements"],
            "plain_to_full_parameters": plain["parameters"] / groups["total"],
        },
        "targets": {"flops": TARGET_FLOP_RATIO, "parameters": TARGET_PARAM_RATIO},
    }
    results["targets"]["met"] = (
        results["ratios"]["inference_flops"] <= TARGET_FLOP_RATIO
        and results["ratios"]["training_forward_flops"] <= TARGET_FLOP_RATIO
        and results["ratios"]["parameters"] <= TARGET_PARAM_RATIO
    )
    if not skip_timing:
        timing = {}
        for batch in (1, 2):
            for backward in (False, True):
                key = f"batch{batch}_{'forward_backward' if backward else 'forward'}"
                timing[key] = time_experts(config, batch=batch, reps=reps, backward=backward)
                log.info("experts %s: %s", key, timing[key])
        results["expert_dispatch_seconds"] = timing
    results["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "peak_rss_gb": peak_rss_gb(),
        "timing_reps": reps,
    }
    return results


def markdown(results: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run`'s results."""
    bb, ad, ratios = results["backbone"], results["adapter"], results["ratios"]
    lines = [
        "# Adapter cost at the paper's setting",
        "",
        "Latent 16 × 21 × 60 × 104 (81 frames, 480 × 832), batch 1, hidden 128, bank 32, top-4;",
        "backbone: Wan 2.1-T2V-1.3B transformer, 512 text tokens, counted on the meta device.",
        "FLOPs from `torch.utils.flop_counter.FlopCounterMode` (matmul, conv, attention; 2 per",
        "multiply-add; element-wise work uncounted). Produced by `.venv/bin/python "
        "benchmarks/adapter_cost.py`.",
        "",
        "| | parameters | forward FLOPs | other-op output elements |",
        "|---|---:|---:|---:|",
        f"| Wan 2.1-T2V-1.3B transformer | {bb['parameters']:,} | {bb['forward_flops']:.4g} | "
        f"{bb['other_op_output_elements']:.4g} |",
        f"| PILA adapter, inference (per denoising step) | {ad['parameters']:,} | "
        f"{ad['inference']['forward_flops']:.4g} | "
        f"{ad['inference']['other_op_output_elements']:.4g} |",
        f"| PILA adapter, training forward (with L_res) | {ad['parameters']:,} | "
        f"{ad['training_forward']['forward_flops']:.4g} | "
        f"{ad['training_forward']['other_op_output_elements']:.4g} |",
        f"| plain adapter (capacity-matched ablation) | {results['plain_adapter']['parameters']:,} "
        f"| {results['plain_adapter']['forward_flops']:.4g} | "
        f"{results['plain_adapter']['other_op_output_elements']:.4g} |",
        "",
        "The routed residual objective is element-wise work (finite differences), so it adds",
        "no counted FLOPs; the last column shows it (elements written by non-matmul, non-view",
        "operators, softmax excluded: a proxy for memory-bound work; the backbone's unfused",
        f"attention would add {bb['attention_score_elements']:.3g} score elements that a fused "
        "kernel never writes).",
        "",
        f"- adapter / backbone parameters: **{100 * ratios['parameters']:.3f} %** (target ≤ 0.5 %)",
        f"- adapter / backbone FLOPs at inference: **{100 * ratios['inference_flops']:.3f} %** "
        "(target ≤ 2 %)",
        "- adapter / backbone FLOPs, training forward: "
        f"**{100 * ratios['training_forward_flops']:.3f} %**",
        "- adapter / backbone other-op output elements: "
        f"{100 * ratios['inference_other_elements']:.2f} % "
        f"at inference, {100 * ratios['training_other_elements']:.2f} % in training",
        f"- plain / full adapter parameters: {ratios['plain_to_full_parameters']:.4f}",
        "",
        "With classifier-free guidance the backbone runs twice per step and the adapter once,",
        "so the per-step share is half the ratio above.",
        "",
        "Parameters by group: "
        + ", ".join(f"{k} {v:,}" for k, v in ad["parameters_by_group"].items()),
        "",
        "| top-k | " + " | ".join(str(k) for k in ad["forward_flops_by_top_k"]) + " |",
        "|---|" + "---:|" * len(ad["forward_flops_by_top_k"]),
        "| % of backbone | "
        + " | ".join(
            f"{100 * v / bb['forward_flops']:.3f}" for v in ad["forward_flops_by_top_k"].values()
        )
        + " |",
    ]
    timing = results.get("expert_dispatch_seconds")
    if timing:
        lines += [
            "",
            f"Expert step, CPU seconds (median of {results['environment']['timing_reps']}, "
            f"{results['environment']['threads']} threads, shared machine: compare columns, "
            "not rows), top-4 of 8:",
            "",
            "| case | gather | batched |",
            "|---|---:|---:|",
        ]
        for case, t in timing.items():
            lines.append(f"| {case} | {t['gather']:.3f} | {t['batched']:.3f} |")
        faster = {case: min(t, key=t.get) for case, t in timing.items()}
        lines += [
            "",
            "Gather runs B·K expert evaluations, batched B·E (twice as many at top-4) in fewer,",
            "grouped convolutions. Faster here: "
            + ", ".join(f"{case} {name}" for case, name in faster.items())
            + ". Default `expert_dispatch`: "
            f"{results['setting']['adapter_config']['expert_dispatch']}.",
        ]
    lines += [
        "",
        f"Peak memory of the benchmark process: {results['environment']['peak_rss_gb']:.2f} GB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--reps", type=int, default=3, help="timing repetitions (after one warm-up)"
    )
    parser.add_argument(
        "--skip-timing", action="store_true", help="skip the expert dispatch timing"
    )
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="re-render adapter_cost.md from an existing adapter_cost.json without measuring",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.markdown_only:
        results = json.loads((args.out / "adapter_cost.json").read_text(encoding="utf-8"))
        write_text_atomic(args.out / "adapter_cost.md", markdown(results))
        return
    results = run(args.reps, args.skip_timing)
    write_text_atomic(args.out / "adapter_cost.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(args.out / "adapter_cost.md", markdown(results))
    log.info("wrote %s", args.out / "adapter_cost.{json,md}")


if __name__ == "__main__":
    main()
