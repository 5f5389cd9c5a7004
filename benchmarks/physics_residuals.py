"""Benchmark: the shared residual pass against naive per-term evaluation.

All 29 residual terms of the eight categories on fields read from one attribute bank at
the paper's latent size (bank 32 × 21 × 60 × 104, batch 1, CPU float32):

* ``shared``: :func:`pila.physics.residuals.residuals_for_categories`, one pass that
  computes each derivative of each field once, shares it between terms, evaluates a
  relation used by two categories once, and frees a derivative after its last use.
* ``naive``: :func:`pila.physics.residuals.residuals_term_by_term`, the same term
  functions evaluated one term at a time with nothing cached, so every derivative is
  recomputed for every term that needs it.

Both variants run interleaved in one process (the order alternates every repetition);
we report the median and minimum wall time, their ratio, the peak memory of tensors
allocated during each pass (tracked storage by storage, inputs excluded), and the amount
of work (stencil applications; elements written by non-view tensor operations). Forward
alone and forward + backward (a sum of mean squares of all residuals) are both timed.
We also time the stencil implementation (slicing, used by :mod:`pila.physics.ops`)
against ``conv3d`` with the same fixed kernel, and with ``--compile`` both passes under
``torch.compile``.

Usage:
    .venv/bin/python benchmarks/physics_residuals.py [--repeats 15] [--threads 1] [--compile]

Writes ``benchmarks/results/physics_residuals.json`` and ``physics_residuals.md``
(atomically: temporary file, then rename).
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
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.bank import BANK_CHANNELS, unpack_bank
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
Residuals = dict[str, dict[str, Tensor]]


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


def forward(evaluate: Callable[..., Residuals], fields: Fields) -> Callable[[], Residuals]:
    return lambda: evaluate(CATEGORIES, fields)


def forward_backward(evaluate: Callable[..., Residuals], fields: Fields) -> Callable[[], None]:
    def step() -> None:
        residuals = evaluate(CATEGORIES, fields)
        loss = sum(r.square().mean() for terms in residuals.values() for r in terms.values())
        loss.backward()
        for tensor in fields.values():
            tensor.grad = None

    return step


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


class LiveStorage(TorchDispatchMode):
    """Tracks the bytes of tensor storages allocated inside the mode and still alive."""

    def __init__(self, preexisting: list[Tensor]) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in preexisting}
        self.live = 0
        self.peak = 0

    def _free(self, pointer: int, nbytes: int) -> None:
        self.known.discard(pointer)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            pointer, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or pointer in self.known:
                continue
            self.known.add(pointer)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, pointer, nbytes)
        return out


def peak_memory(run: Callable[[], object], inputs: Fields) -> int:
    """Peak bytes of tensors allocated during ``run`` (results included, inputs excluded)."""
    with LiveStorage(list(inputs.values())) as tracker:
        result = run()
        del result
    return tracker.peak


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
    """Stencil applications, non-view tensor operations and elements written by ``run``."""
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


def compiled_passes(fields: Fields, *, repeats: int, warmup: int) -> dict:
    """Both passes under ``torch.compile`` (inductor), timed with the eager naive pass."""
    compiled: dict[str, Callable[[], Residuals]] = {}
    compile_s: dict[str, float] = {}
    for name, evaluate in (("shared", residuals_for_categories), ("naive", residuals_term_by_term)):
        LOG.info("compiling the %s pass …", name)
        fn = torch.compile(lambda f, evaluate=evaluate: evaluate(CATEGORIES, f), dynamic=False)
        start = time.perf_counter()
        fn(fields)
        compile_s[name] = time.perf_counter() - start
        compiled[name] = lambda fn=fn: fn(fields)
    times = time_interleaved(
        {
            "shared": compiled["shared"],
            "naive": compiled["naive"],
            "eager_naive": forward(residuals_term_by_term, fields),
        },
        repeats=repeats,
        warmup=warmup,
    )
    summary = {name: summarise(values) for name, values in times.items()}
    summary["compile_s"] = compile_s
    summary["speedup_vs_eager_naive_median"] = (
        summary["eager_naive"]["median_ms"] / summary["shared"]["median_ms"]
    )
    summary["speedup_vs_compiled_naive_median"] = (
        summary["naive"]["median_ms"] / summary["shared"]["median_ms"]
    )
    return summary


# Reporting ----------------------------------------------------------------------------------------


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
        "| pass | shared median (min) ms | naive median (min) ms | naive / shared (medians) |",
        "|---|---|---|---|",
    ]
    for mode in ("forward", "forward_backward"):
        r = results[mode]
        lines.append(
            f"| {mode.replace('_', ' + ')} | {r['shared']['median_ms']:.1f} "
            f"({r['shared']['min_ms']:.1f}) | {r['naive']['median_ms']:.1f} "
            f"({r['naive']['min_ms']:.1f}) | {r['speedup_median']:.2f}× |"
        )
    mem, work = results["peak_memory_mib"], results["work"]
    lines += [
        "",
        "| | shared | naive |",
        "|---|---|---|",
        f"| peak memory, forward (MiB) | {mem['forward']['shared']:.1f} | {mem['forward']['naive']:.1f} |",
        f"| peak memory, forward + backward (MiB) | {mem['forward_backward']['shared']:.1f} "
        f"| {mem['forward_backward']['naive']:.1f} |",
        f"| stencil applications | {work['shared']['stencils']} | {work['naive']['stencils']} |",
        f"| tensor operations (non-view) | {work['shared']['tensor_ops']} | {work['naive']['tensor_ops']} |",
        f"| elements written (millions) | {work['shared']['elements_written'] / 1e6:.1f} "
        f"| {work['naive']['elements_written'] / 1e6:.1f} |",
        "",
        f"Input fields: {mem['inputs']:.1f} MiB; the residuals themselves (new storage; "
        f"`low_strain` is a view of the input strain): {mem['outputs']:.1f} MiB.",
        "",
        "Stencil implementation (∂x, ∂y, ∂t and Δ of all 32 bank channels):",
        "",
        "| implementation | median (min) ms |",
        "|---|---|",
    ]
    for name, r in results["stencils"].items():
        lines.append(f"| {name} | {r['median_ms']:.1f} ({r['min_ms']:.1f}) |")
    if "compiled" in results:
        c = results["compiled"]
        lines += [
            "",
            "Under `torch.compile` (inductor, CPU), forward only:",
            "",
            "| pass | compile s | median (min) ms |",
            "|---|---|---|",
            f"| shared, compiled | {c['compile_s']['shared']:.0f} | {c['shared']['median_ms']:.2f} "
            f"({c['shared']['min_ms']:.2f}) |",
            f"| naive, compiled | {c['compile_s']['naive']:.0f} | {c['naive']['median_ms']:.2f} "
            f"({c['naive']['min_ms']:.2f}) |",
            f"| naive, eager (same run) | – | {c['eager_naive']['median_ms']:.2f} "
            f"({c['eager_naive']['min_ms']:.2f}) |",
            "",
            f"Compiled shared pass: {c['speedup_vs_eager_naive_median']:.1f}× the eager naive "
            f"pass, {c['speedup_vs_compiled_naive_median']:.2f}× the compiled naive pass.",
        ]
    lines += ["", results["note"], ""]
    return "\n".join(lines)


# Main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--width", type=int, default=104)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--out", type=Path, default=RESULTS / "physics_residuals.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.frames, args.height, args.width)

    fields = make_fields(*shape, seed=0, requires_grad=False)
    trainable = make_fields(*shape, seed=0, requires_grad=True)
    shared, naive = residuals_for_categories, residuals_term_by_term

    reference, candidate = naive(CATEGORIES, fields), shared(CATEGORIES, fields)
    for category, terms in reference.items():
        for term, r in terms.items():
            torch.testing.assert_close(candidate[category][term], r)
    inputs = {t.untyped_storage().data_ptr() for t in fields.values()}
    outputs = {
        r.untyped_storage().data_ptr(): r.untyped_storage().nbytes()
        for terms in candidate.values()
        for r in terms.values()
    }
    output_bytes = sum(n for pointer, n in outputs.items() if pointer not in inputs)
    del reference, candidate, outputs

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
    }
    for mode, build, inputs in (
        ("forward", forward, fields),
        ("forward_backward", forward_backward, trainable),
    ):
        LOG.info("timing %s …", mode)
        times = time_interleaved(
            {"shared": build(shared, inputs), "naive": build(naive, inputs)},
            repeats=args.repeats,
            warmup=args.warmup,
        )
        summary = {name: summarise(values) for name, values in times.items()}
        summary["speedup_median"] = summary["naive"]["median_ms"] / summary["shared"]["median_ms"]
        summary["speedup_min"] = summary["naive"]["min_ms"] / summary["shared"]["min_ms"]
        results[mode] = summary
        LOG.info("  %s", json.dumps(summary))

    mib = 1024.0**2
    results["peak_memory_mib"] = {
        "inputs": sum(t.numel() * t.element_size() for t in fields.values()) / mib,
        "outputs": output_bytes / mib,
        "forward": {
            "shared": peak_memory(forward(shared, fields), fields) / mib,
            "naive": peak_memory(forward(naive, fields), fields) / mib,
        },
        "forward_backward": {
            "shared": peak_memory(forward_backward(shared, trainable), trainable) / mib,
            "naive": peak_memory(forward_backward(naive, trainable), trainable) / mib,
        },
    }
    results["work"] = {
        "shared": count_work(forward(shared, fields)),
        "naive": count_work(forward(naive, fields)),
    }
    bank = torch.randn(args.batch, BANK_CHANNELS, *shape[1:])
    results["stencils"] = stencil_implementations(bank, repeats=max(3, args.repeats // 3))

    if args.compile:
        results["compiled"] = compiled_passes(fields, repeats=args.repeats, warmup=args.warmup)

    work = results["work"]
    results["note"] = (
        f"The naive pass applies {work['naive']['stencils']} stencils where the shared pass "
        f"applies {work['shared']['stencils']}, and writes "
        f"{work['naive']['elements_written'] / work['shared']['elements_written']:.2f}× the "
        "elements: eager PyTorch writes every intermediate to memory, so sharing derivatives "
        "bounds the eager speed-up by that work ratio (memory traffic and allocation dominate "
        "at this size). Fusing the pass into a few loops needs a compiler (--compile); a "
        "compiler also eliminates the naive pass's repeated derivatives by itself."
    )
    out = args.out
    write_atomic(out, json.dumps(results, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(results))
    LOG.info("wrote %s and %s", out, out.with_suffix(".md"))
    return results


if __name__ == "__main__":
    main()
