"""Benchmark: the shared residual pass against naive per-term evaluation.

All 29 residual terms of the eight categories on fields read from one attribute bank at
the paper's latent size (bank 32 × 21 × 60 × 104, batch 1, CPU float32). What training
evaluates is the residual objective: per term the masked mean of r² per sample (the
inner sums of Eq. 6), and its gradient. Variants, all timed interleaved in one process:

* ``naive``: every term on its own, eagerly
  (:func:`pila.physics.residuals.residuals_term_by_term`, then the masked means): each
  term recomputes every derivative it reads.
* ``shared``: :class:`pila.physics.fused.ResidualPass` eager: one pass that computes each
  derivative of each field once, shares it between terms, evaluates a relation used by
  two categories once and frees a derivative after its last use.
* ``fused``: ``ResidualPass(compile=True)``, the same shared pass compiled by
  ``torch.compile`` (Inductor) into a few fused loops, backward included. This is what
  ``compile_residuals: true`` runs in training.
* ``naive_compiled``: the naive evaluation compiled the same way, to show how much of
  the fused speed-up is fusion rather than sharing (a compiler also removes repeated
  subexpressions by itself).
* ``shared_per_category`` and ``fused_per_category``: eight calls, one per category, as
  stage C makes them (each routed expert evaluates its own category on its own fields):
  no sharing across categories, eight calls' overhead, eight compiled graphs.

The headline compares ``fused`` with ``naive`` (the target: the shared pass at
least 3× faster than naive per-term evaluation); the like-for-like ratios (``shared``
vs ``naive``, ``fused`` vs ``naive_compiled``) are reported next to it. The fields are
contiguous copies of one random bank's slots (in stage C they are read out of the bank,
partly as strided views).

Forward alone (no autograd) and forward + backward (the sum of the means, backpropagated
to the fields) are both timed. We also record the forward pass that returns the 29
residual tensors themselves (eager naive, eager shared, compiled shared), the peak
memory of every variant (the profiler's CPU memory timeline: tensors allocated during
the pass, inputs excluded, outputs and gradients included), the work of the eager
passes (stencil applications and elements written), and the stencil implementation
(slicing, as in :mod:`pila.physics.ops`, against a depthwise ``conv3d``).

Usage:
    .venv/bin/python benchmarks/physics_residuals.py [--repeats 15] [--threads 1]

Compiling takes a few minutes on a CPU the first time (Inductor needs a C++ compiler;
its cache makes later runs faster). Writes ``benchmarks/results/physics_residuals.json``
and ``physics_residuals.md`` (atomically: temporary file, then rename).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.bank import BANK_CHANNELS, unpack_bank
from pila.physics.fused import ResidualPass
from pila.physics.loss import masked_means
from pila.physics.residuals import (
    RESIDUAL_TERMS,
    residuals_for_categories,
    residuals_term_by_term,
)

LOG = logging.getLogger("benchmarks.physics_residuals")
RESULTS = Path(__file__).resolve().parent / "results"
VIEW_OPS = {
    "aten::alias",
    "aten::as_strided",
    "aten::detach",
    "aten::expand",
    "aten::permute",
    "aten::select",
    "aten::slice",
    "aten::split",
    "aten::squeeze",
    "aten::t",
    "aten::transpose",
    "aten::unbind",
    "aten::unsqueeze",
    "aten::view",
    "aten::_unsafe_view",
}

Fields = dict[str, Tensor]
Means = dict[str, dict[str, Tensor]]
Objective = Callable[[Fields, Tensor], Means]
TARGET = 3.0  # the speed-up the shared pass must reach over naive per-term evaluation


# Inputs -------------------------------------------------------------------------------------------


def make_fields(
    batch: int, frames: int, height: int, width: int, *, seed: int, requires_grad: bool
) -> Fields:
    """Fields read from a random bank (B, 32, T, H, W); density made positive."""
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randn(batch, BANK_CHANNELS, frames, height, width, generator=generator)
    fields = {name: tensor.contiguous() for name, tensor in unpack_bank(bank).items()}
    fields["rho"] = fields["rho"].abs() + 0.1
    return {name: tensor.requires_grad_(requires_grad) for name, tensor in fields.items()}


def naive_objective(fields: Fields, mask: Tensor) -> Means:
    """Masked means of every term, each term evaluated on its own."""
    return masked_means(residuals_term_by_term(CATEGORIES, fields), mask)


def per_category(residual_pass: ResidualPass) -> Objective:
    """The pass called once per category, as stage C's routed objective calls it."""

    def run(fields: Fields, mask: Tensor) -> Means:
        means: Means = {}
        for category in CATEGORIES:
            means.update(residual_pass([category], fields, mask))
        return means

    return run


def objectives() -> dict[str, Objective]:
    """The executions of the residual objective (see the module docstring)."""
    shared, fused = ResidualPass(compile=False), ResidualPass(compile=True)
    naive_compiled = torch.compile(naive_objective, fullgraph=True)
    return {
        "naive": naive_objective,
        "shared": lambda fields, mask: shared(CATEGORIES, fields, mask),
        "fused": lambda fields, mask: fused(CATEGORIES, fields, mask),
        "naive_compiled": naive_compiled,
        "shared_per_category": per_category(shared),
        "fused_per_category": per_category(fused),
    }


def warm_up_compiler() -> float:
    """Seconds to compile a trivial function: the toolchain's one-time start-up, paid here so
    that the first variant's compile time is not inflated by it."""
    start = time.perf_counter()
    torch.compile(lambda x: (x * 2.0 + 1.0).sum(), fullgraph=True)(torch.ones(8))
    return time.perf_counter() - start


def forward(objective: Objective, fields: Fields, mask: Tensor) -> Callable[[], Means]:
    def run() -> Means:
        with torch.no_grad():
            return objective(fields, mask)

    return run


def forward_backward(objective: Objective, fields: Fields, mask: Tensor) -> Callable[[], None]:
    def run() -> None:
        means = objective(fields, mask)
        loss = torch.stack([v.sum() for terms in means.values() for v in terms.values()]).sum()
        loss.backward()
        for tensor in fields.values():
            tensor.grad = None

    return run


# Measurements -------------------------------------------------------------------------------------


def time_interleaved(
    variants: dict[str, Callable[[], object]], *, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Wall time of each variant, run in alternating order, ``repeats`` times each."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            result = variants[name]()
            times[name].append(time.perf_counter() - start)
            del result
    return times


def peak_memory(run: Callable[[], object]) -> float:
    """Peak MiB of tensors allocated while ``run`` runs (its result and gradients included),
    from the profiler's CPU memory timeline; sees compiled kernels' buffers too."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with tempfile.TemporaryDirectory() as tmp:
        with torch.profiler.profile(
            activities=activities, profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            result = run()
            del result
        path = Path(tmp) / "timeline.json"
        with warnings.catch_warnings():
            # deprecated in favour of CUDA-only snapshots; still the CPU timeline we need
            warnings.simplefilter("ignore", FutureWarning)
            prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max((sum(row) for row in sizes), default=0) / 1024.0**2


class WorkCounter(TorchDispatchMode):
    """Counts non-view tensor operations and the elements they write."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.name not in VIEW_OPS:
            written = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
            self.ops += 1
            self.elements += sum(t.numel() for t in written)
        return out


def count_work(run: Callable[[], object]) -> dict[str, int]:
    """Stencil applications, non-view tensor operations and elements written by ``run`` (eager)."""
    stencils = 0
    original = ops._stencil

    def counting(*args, **kwargs):
        nonlocal stencils
        stencils += 1
        return original(*args, **kwargs)

    ops._stencil = counting
    try:
        with WorkCounter() as counter:
            run()
    finally:
        ops._stencil = original
    return {"stencils": stencils, "tensor_ops": counter.ops, "elements_written": counter.elements}


def check_agreement(variants: Mapping[str, Objective], fields: Fields, mask: Tensor) -> None:
    """Every variant computes the same means (float32 round-off apart)."""
    reference = forward(variants["naive"], fields, mask)()
    for name, objective in variants.items():
        candidate = forward(objective, fields, mask)()
        for category, terms in reference.items():
            for term, value in terms.items():
                torch.testing.assert_close(
                    candidate[category][term],
                    value,
                    rtol=1e-4,
                    atol=1e-6,
                    msg=lambda m, name=name, c=category, t=term: f"{name} {c}/{t}: {m}",
                )


def compile_time(run: Callable[[], object]) -> float:
    """Seconds of the first call (compilation included)."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def stencil_implementations(bank: Tensor, *, repeats: int) -> dict[str, dict[str, float]]:
    """∂x, ∂y, ∂t and Δ of every bank channel: slicing (ops) against depthwise conv3d."""
    channels = bank.shape[1]
    kernels = torch.zeros(4, 3, 3, 3)
    kernels[0, 1, 1, 2], kernels[0, 1, 1, 0] = 0.5, -0.5  # ∂x
    kernels[1, 1, 2, 1], kernels[1, 1, 0, 1] = 0.5, -0.5  # ∂y
    kernels[2, 2, 1, 1], kernels[2, 0, 1, 1] = 0.5, -0.5  # ∂t
    kernels[3, 1, 1, 0] = kernels[3, 1, 1, 2] = kernels[3, 1, 0, 1] = kernels[3, 1, 2, 1] = 1.0
    kernels[3, 1, 1, 1] = -4.0  # Δ
    weights = [k.expand(channels, 1, 3, 3, 3).contiguous() for k in kernels]

    def slicing() -> list[Tensor]:
        return [ops.d_dx(bank), ops.d_dy(bank), ops.d_dt(bank), ops.laplacian(bank)]

    def conv() -> list[Tensor]:
        return [F.conv3d(bank, w, groups=channels) for w in weights]

    for a, b in zip(slicing(), conv(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    times = time_interleaved({"slicing": slicing, "conv3d": conv}, repeats=repeats, warmup=1)
    return {name: summarise(values) for name, values in times.items()}


def summarise(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1e3 * s for s in seconds)
    return {
        "median_ms": statistics.median(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "repeats": len(ms),
    }


# Reporting ---------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15min": list(os.getloadavg()),
    }


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown(results: dict) -> str:
    shape = results["config"]["shape"]
    m = results["machine"]
    obj, tensors, mem = (
        results["objective"],
        results["residual_tensors"],
        results["peak_memory_mib"],
    )
    headline = results["headline"]
    lines = [
        "# Shared residual pass vs naive per-term evaluation",
        "",
        f"All {results['config']['terms']} residual terms, fields of a bank "
        f"{shape['batch']} × 32 × {shape['frames']} × {shape['height']} × {shape['width']}, "
        f"CPU float32, {m['torch_threads']} torch thread(s) on {m['logical_cores']} logical "
        f"cores ({m['cpu']}), torch {m['torch']}; load average at the start "
        f"{m['load_average_1_5_15min'][0]:.1f} (the cores are shared). Interleaved, "
        f"{results['config']['repeats']} repetitions each. Recorded {results['recorded_at']}.",
        "",
        f"**Shared pass, fused (`compile_residuals: true`), vs naive per-term evaluation "
        f"(eager): {headline['forward']:.1f}× forward, {headline['forward_backward']:.1f}× "
        f"forward + backward (target {TARGET:.0f}×: {'met' if headline['met'] else 'not met'}); "
        "called per category as stage C does: "
        f"{obj['forward']['speedup']['fused_per_category']:.1f}× / "
        f"{obj['forward_backward']['speedup']['fused_per_category']:.1f}×.** Like for like, "
        f"sharing alone gains less: eager shared vs eager naive "
        f"{obj['forward']['speedup']['shared']:.2f}× / "
        f"{obj['forward_backward']['speedup']['shared']:.2f}×, "
        f"fused vs compiled naive {headline['like_for_like_compiled']['forward']:.2f}× / "
        f"{headline['like_for_like_compiled']['forward_backward']:.2f}×.",
        "",
        "Residual objective (masked mean of r² per term and sample, what training evaluates):",
        "",
        "| variant | forward median (min) ms | × naive | forward + backward median (min) ms "
        "| × naive | peak MiB fwd / fwd+bwd | compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in obj["forward"]["times"]:
        f, fb = obj["forward"], obj["forward_backward"]
        lines.append(
            f"| {name} | {f['times'][name]['median_ms']:.1f} ({f['times'][name]['min_ms']:.1f}) "
            f"| {f['speedup'][name]:.2f}× | {fb['times'][name]['median_ms']:.1f} "
            f"({fb['times'][name]['min_ms']:.1f}) | {fb['speedup'][name]:.2f}× "
            f"| {mem['objective_forward'][name]:.1f} / "
            f"{mem['objective_forward_backward'][name]:.1f} "
            f"| {results['compile_s'].get(name, 0.0):.0f} |"
        )
    lines += [
        "",
        f"Compile times cover the no-grad and the autograd graphs of a variant (cold Inductor "
        f"cache unless run before); the toolchain's one-time start-up "
        f"({results['compile_s']['toolchain_start_up']:.0f} s) was paid before them.",
        "",
        "The 29 residual tensors themselves (forward, no autograd):",
        "",
        "| variant | median (min) ms | × naive | peak MiB |",
        "|---|---|---|---|",
    ]
    for name, t in tensors["times"].items():
        lines.append(
            f"| {name} | {t['median_ms']:.1f} ({t['min_ms']:.1f}) | "
            f"{tensors['speedup'][name]:.2f}× "
            f"| {mem['residual_tensors'][name]:.1f} |"
        )
    work = results["work"]
    lines += [
        "",
        "Work of the eager passes (residual tensors):",
        "",
        "| | shared | naive |",
        "|---|---|---|",
        f"| stencil applications | {work['shared']['stencils']} | {work['naive']['stencils']} |",
        f"| tensor operations (non-view) | {work['shared']['tensor_ops']} | "
        f"{work['naive']['tensor_ops']} |",
        f"| elements written (millions) | {work['shared']['elements_written'] / 1e6:.1f} "
        f"| {work['naive']['elements_written'] / 1e6:.1f} |",
        "",
        f"Input fields: {mem['inputs']:.1f} MiB.",
        "",
        "Stencil implementation (∂x, ∂y, ∂t and Δ of all 32 bank channels):",
        "",
        "| implementation | median (min) ms |",
        "|---|---|",
    ]
    for name, r in results["stencils"].items():
        lines.append(f"| {name} | {r['median_ms']:.1f} ({r['min_ms']:.1f}) |")
    lines += ["", results["note"], ""]
    return "\n".join(lines)


# Main ---------------------------------------------------------------------------------------------


def speedups(times: dict[str, dict[str, float]]) -> dict[str, float]:
    naive = times["naive"]["median_ms"]
    return {name: naive / t["median_ms"] for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--width", type=int, default=104)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "physics_residuals.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.frames, args.height, args.width)

    fields = make_fields(*shape, seed=0, requires_grad=False)
    trainable = make_fields(*shape, seed=0, requires_grad=True)
    mask = torch.rand(args.batch, 1, *shape[1:], generator=torch.Generator().manual_seed(1))
    variants = objectives()

    results: dict = {
        "benchmark": "physics_residuals",
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/physics_residuals.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {
            "shape": dict(zip(("batch", "frames", "height", "width"), shape, strict=True)),
            "dtype": "float32",
            "repeats": args.repeats,
            "warmup": args.warmup,
            "terms": sum(len(t) for t in RESIDUAL_TERMS.values()),
        },
        "compile_s": {},
    }
    LOG.info(
        "compiling the fused and the compiled naive passes (minutes on a CPU the first time) …"
    )
    results["compile_s"]["toolchain_start_up"] = warm_up_compiler()
    for name in ("fused", "naive_compiled", "fused_per_category"):
        results["compile_s"][name] = compile_time(
            forward_backward(variants[name], trainable, mask)
        ) + compile_time(forward(variants[name], fields, mask))
    check_agreement(variants, fields, mask)

    results["objective"] = {}
    for mode, build, inputs in (
        ("forward", forward, fields),
        ("forward_backward", forward_backward, trainable),
    ):
        LOG.info("timing the residual objective, %s …", mode)
        times = time_interleaved(
            {name: build(objective, inputs, mask) for name, objective in variants.items()},
            repeats=args.repeats,
            warmup=args.warmup,
        )
        summary = {name: summarise(values) for name, values in times.items()}
        results["objective"][mode] = {"times": summary, "speedup": speedups(summary)}
        LOG.info("  %s", json.dumps(results["objective"][mode]["speedup"]))

    LOG.info("timing the residual tensors …")
    compiled_tensors = torch.compile(residuals_for_categories, fullgraph=True)
    tensor_passes: dict[str, Callable[[], object]] = {
        "naive": lambda: residuals_term_by_term(CATEGORIES, fields),
        "shared": lambda: residuals_for_categories(CATEGORIES, fields),
        "fused": lambda: compiled_tensors(CATEGORIES, fields),
    }
    results["compile_s"]["fused_tensors"] = compile_time(tensor_passes["fused"])
    times = time_interleaved(tensor_passes, repeats=args.repeats, warmup=args.warmup)
    summary = {name: summarise(values) for name, values in times.items()}
    results["residual_tensors"] = {"times": summary, "speedup": speedups(summary)}

    LOG.info("measuring peak memory …")
    results["peak_memory_mib"] = {
        "inputs": sum(t.numel() * t.element_size() for t in fields.values()) / 1024.0**2,
        "objective_forward": {
            name: peak_memory(forward(objective, fields, mask))
            for name, objective in variants.items()
        },
        "objective_forward_backward": {
            name: peak_memory(forward_backward(objective, trainable, mask))
            for name, objective in variants.items()
        },
        "residual_tensors": {name: peak_memory(run) for name, run in tensor_passes.items()},
    }
    results["work"] = {
        "shared": count_work(tensor_passes["shared"]),
        "naive": count_work(tensor_passes["naive"]),
    }
    bank = torch.randn(args.batch, BANK_CHANNELS, *shape[1:])
    results["stencils"] = stencil_implementations(bank, repeats=max(3, args.repeats // 3))

    objective = results["objective"]
    headline = {
        "forward": objective["forward"]["speedup"]["fused"],
        "forward_backward": objective["forward_backward"]["speedup"]["fused"],
    }
    headline["met"] = min(headline["forward"], headline["forward_backward"]) >= TARGET
    headline["like_for_like_compiled"] = {
        mode: objective[mode]["times"]["naive_compiled"]["median_ms"]
        / objective[mode]["times"]["fused"]["median_ms"]
        for mode in ("forward", "forward_backward")
    }
    results["headline"] = headline
    work = results["work"]
    fused_vs_compiled_naive = (
        objective["forward_backward"]["times"]["naive_compiled"]["median_ms"]
        / objective["forward_backward"]["times"]["fused"]["median_ms"]
    )
    results["note"] = (
        f"Eagerly, the naive pass applies {work['naive']['stencils']} stencils where the shared "
        f"pass applies {work['shared']['stencils']}, but writes only "
        f"{work['naive']['elements_written'] / work['shared']['elements_written']:.2f}× the "
        "elements: eager PyTorch writes every intermediate of the 29 terms' pointwise algebra "
        "to memory, and that traffic, the same in both passes, dominates. The fused pass keeps "
        "the sharing and removes that traffic: it reads the fields and writes the means (and, "
        "backward, the gradients) in a few loops. Compiling the naive evaluation as well gives "
        f"about the same speed (compiled naive time / fused time = {fused_vs_compiled_naive:.2f}, "
        "forward + backward), because the compiler removes repeated "
        "derivatives by itself: the speed-up over per-term evaluation comes from fusion, with "
        "sharing built in."
    )
    out = args.out
    write_atomic(out, json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))
    LOG.info("wrote %s and %s", out, out.with_suffix(".md"))
    return results


if __name__ == "__main__":
    main()
