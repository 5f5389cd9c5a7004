"""Peak memory of a stage C step and of ``pila predict``, at the paper's size, without a GPU.

Method (what is measured and what is computed):

* **Adapter, stage C (measured, CPU, fp32)**: one forward + backward of the paper-size
  adapter with the routed residual objective; the bytes it keeps for backward are summed
  with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once), at two smaller
  latents and at the full 16 × 21 × 60 × 104 when ``--full`` is given (minutes on 2 cores).
  bf16 halves it (autocast saves bf16 copies; the estimate takes half).
* **Frozen transformer, UMT5-XXL, VAE (fake-tensor runs)**: each module is built on the
  meta device from its published config and run on meta inputs at the real sizes under a
  ``TorchDispatchMode`` that adds up the bytes of every non-view op output while it is
  alive (a weakref finaliser subtracts it): the peak of live activations, exactly what a
  caching allocator must hold at least, minus fragmentation and kernel workspaces. The
  transformer's attention is counted as a fused kernel (output only), as on a GPU. The
  tracker is checked against a real CPU run of the same modules at a small size (same
  counter on real tensors; it must agree with the meta run).
* **Totals (computed)**: weights (parameter bytes per component, bf16 transformer and
  UMT5, fp32 VAE) + the peak of the activations of whatever runs at that moment; the
  offload modes change only which weights are on the device at once: ``none`` all,
  ``model`` the largest component, ``group`` one transformer block + the transformer's
  non-block weights, ``sequential`` the largest leaf module. A 10 % allowance covers the
  allocator and CUDA context (ours; the CUDA context itself is ~0.5 GiB).

    python benchmarks/memory.py            # two small adapter sizes (about a minute)
    python benchmarks/memory.py --full     # + the full adapter size

Writes ``benchmarks/results/memory.json`` and ``memory.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pila.adapter import AdapterCondition, AdapterConfig, PILAAdapter
from pila.backbone.presets import (
    PAPER_LATENT_SHAPE,
    UMT5_XXL_ENCODER,
    WAN21_T2V_1_3B_TRANSFORMER,
    WAN22_A14B_TRANSFORMER,
    WAN_TEXT_TOKENS,
    WAN_VAE,
)
from pila.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30


ALLOWANCE = 1.10
"""Allocator fragmentation and workspaces on top of the counted bytes (ours)."""


# ----------------------------------------------------------------------------- counters
class LiveBytes(TorchDispatchMode):
    """Peak bytes of live non-view op outputs (meta or real tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.returns and any(r.alias_info is not None for r in func._schema.returns):
            return out  # views and in-place ops allocate nothing
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                nbytes = t.numel() * t.element_size()
                self.live += nbytes
                weakref.finalize(t, self._free, nbytes)
        self.peak = max(self.peak, self.live)
        return out


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Count attention as a fused (flash) kernel does: its output only, no score matrix.

    On the meta device and the CPU, ``scaled_dot_product_attention`` decomposes into the
    math path that materialises (B, heads, L, L) scores; on a GPU it does not.
    """
    original = F.scaled_dot_product_attention

    def flash(query, key, value, *args, **kwargs):  # (B, heads, L, d)
        return query.new_empty((*query.shape[:-1], value.shape[-1]))

    F.scaled_dot_product_attention = flash
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def largest_block_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the largest transformer block, bytes outside the blocks)."""
    blocks = [param_bytes(b) for b in model.blocks]
    return max(blocks), param_bytes(model) - sum(blocks)


def largest_leaf_bytes(module: torch.nn.Module) -> int:
    return max(param_bytes(m) for m in module.modules() if not list(m.children()))


# ------------------------------------------------------------------------- the pieces
def adapter_saved_bytes(latent: tuple[int, ...]) -> dict[str, Any]:
    """Bytes the paper-size adapter saves for backward in one stage C forward (fp32, CPU)."""
    torch.manual_seed(0)
    adapter = PILAAdapter(AdapterConfig()).train()
    x = torch.randn(1, *latent)
    v = torch.randn(1, *latent)
    sigma = torch.tensor([0.5])
    labels = torch.zeros(1, 8)
    labels[0, [0, 4]] = 1
    cond = AdapterCondition(torch.randn(1, 4096), labels)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = adapter(x, sigma, v, cond, residuals=True)
        loss = F.mse_loss(out.v_pila, v) + 0.3 * out.residual_loss
    loss.backward()
    seconds = time.perf_counter() - start
    saved = sum(seen.values())
    voxels = latent[1] * latent[2] * latent[3]
    return {
        "latent": list(latent),
        "saved_gib_fp32": saved / GIB,
        "saved_bytes_per_voxel": saved / voxels,
        "forward_backward_s": seconds,
        "adapter_parameters": adapter.num_parameters,
    }


def transformer_forward(
    config: dict[str, Any], latent: tuple[int, ...], text_tokens: int, device: str
) -> dict[str, Any]:
    """Weights and the activation peak of one no-grad transformer forward (bf16)."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        model = WanTransformer3DModel(**config).to(torch.bfloat16).eval()
        x = torch.randn(1, *latent, dtype=torch.bfloat16)
        text = torch.randn(1, text_tokens, config["text_dim"], dtype=torch.bfloat16)
        t = torch.tensor([500.0])
    counter = LiveBytes()
    with torch.no_grad(), fused_attention(), counter:
        model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
    block, rest = largest_block_bytes(model)
    return {
        "weights_gib": param_bytes(model) / GIB,
        "parameters": sum(p.numel() for p in model.parameters()),
        "activation_peak_gib": counter.peak / GIB,
        "largest_block_gib": block / GIB,
        "non_block_gib": rest / GIB,
        "largest_leaf_gib": largest_leaf_bytes(model) / GIB,
    }


def umt5_forward(config: dict[str, Any], tokens: int, device: str) -> dict[str, Any]:
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        model = UMT5EncoderModel(UMT5Config(**config)).to(torch.bfloat16).eval()
        ids = torch.zeros(1, tokens, dtype=torch.long)
    counter = LiveBytes()
    with torch.no_grad(), counter:
        model(ids)  # no padding: the mask check would read a meta value
    return {
        "weights_gib": param_bytes(model) / GIB,
        "parameters": sum(p.numel() for p in model.parameters()),
        "activation_peak_gib": counter.peak / GIB,
        "largest_leaf_gib": largest_leaf_bytes(model) / GIB,
    }


def vae_decode(
    config: dict[str, Any], latent: tuple[int, ...], device: str, tiled: bool
) -> dict[str, Any]:
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        vae = AutoencoderKLWan(**config).eval()
        z = torch.randn(1, *latent)
    if tiled:
        vae.enable_tiling()
    counter = LiveBytes()
    with torch.no_grad(), counter:
        vae.decode(z, return_dict=False)
    return {
        "weights_gib": param_bytes(vae) / GIB,
        "parameters": sum(p.numel() for p in vae.parameters()),
        "activation_peak_gib": counter.peak / GIB,
    }


# ------------------------------------------------------------------------------ totals
def predict_totals(
    tr: dict[str, Any],
    experts: int,
    umt5: dict[str, Any],
    vae: dict[str, Any],
    vae_tiled: dict[str, Any],
    adapter_gib: float,
) -> dict[str, float]:
    """Estimated peak GiB of ``pila predict`` per offload mode (VAE tiled from ``model`` on)."""
    den = tr["activation_peak_gib"] + adapter_gib
    txt = umt5["activation_peak_gib"]
    dec, dec_tiled = vae["activation_peak_gib"], vae_tiled["activation_peak_gib"]
    all_weights = (
        experts * tr["weights_gib"] + umt5["weights_gib"] + vae["weights_gib"] + adapter_gib
    )
    out = {
        "none": all_weights + max(den, txt, dec),
        "model": max(
            umt5["weights_gib"] + txt, tr["weights_gib"] + den, vae["weights_gib"] + dec_tiled
        )
        + adapter_gib,
        "group": max(
            umt5["weights_gib"] / UMT5_XXL_ENCODER["num_layers"] + txt,
            tr["largest_block_gib"] + tr["non_block_gib"] + den,
            vae["weights_gib"] + dec_tiled,
        )
        + adapter_gib,
        "sequential": max(umt5["largest_leaf_gib"] + txt, tr["largest_leaf_gib"] + den, dec_tiled)
        + adapter_gib,
    }
    return {k: v * ALLOWANCE for k, v in out.items()}


def markdown(r: dict[str, Any]) -> str:
    fr = r["fake_vs_real"]
    lines = [
        "# Peak memory at the paper's size (81 × 480 × 832, latent 16 × 21 × 60 × 104)",
        "",
        f"Produced by `{r['command']}` (CPU only; method in the script's docstring). "
        "**Measured**: the adapter's saved tensors (CPU, real tensors) and the fake-tensor "
        "activation peaks. "
        "**Estimated**: every total (weights + peak activations + 10 % allowance), bf16 halving of "
        "the adapter's "
        "saved bytes, and nothing here ran on a GPU.",
        "",
        "## Adapter, one stage C forward + backward (measured, fp32, saved-tensor hooks)",
        "",
        "| latent | saved for backward (GiB) | bytes / voxel | seconds (2 shared cores) |",
        "|---|---:|---:|---:|",
    ]
    for a in r["adapter"]:
        lines.append(
            f"| {' × '.join(map(str, a['latent']))} | {a['saved_gib_fp32']:.3f} | "
            f"{a['saved_bytes_per_voxel']:.0f} | {a['forward_backward_s']:.1f} |"
        )
    full = (
        "measured"
        if r["adapter_full_measured"]
        else "extrapolated linearly in T·H·W from the largest size"
    )
    lines += [
        "",
        f"Full latent: **{r['adapter_full_fp32_gib']:.2f} GiB** fp32 ({full}); ≈ "
        f"{r['adapter_full_fp32_gib'] / 2:.2f} GiB in bf16.",
        "",
        "## Frozen modules (fake-tensor runs on the meta device, bf16; VAE fp32)",
        "",
        "| module | parameters | weights (GiB) | activation peak (GiB) |",
        "|---|---:|---:|---:|",
    ]
    for key, name in (
        ("wan21_1_3b", "Wan 2.1-1.3B transformer, one forward"),
        ("wan22_a14b_expert", "Wan 2.2-A14B, one expert, one forward"),
        ("umt5_xxl", "UMT5-XXL encoder, 512 tokens"),
        ("vae_decode", "Wan VAE decode"),
        ("vae_decode_tiled", "Wan VAE decode, tiled"),
    ):
        m = r[key]
        lines.append(
            f"| {name} | {m['parameters']:,} | {m['weights_gib']:.2f} | "
            f"{m['activation_peak_gib']:.2f} |"
        )
    lines += [
        "",
        "Check of the fake-tensor counter against real CPU runs at a small size (same counter): "
        "transformer (2 blocks, 16 × 3 × 16 × 16) "
        f"{fr['transformer_2_blocks_meta_gib'] * 1024:.2f} MiB on meta vs "
        f"{fr['transformer_2_blocks_cpu_gib'] * 1024:.2f} MiB real; VAE (base 16) "
        f"{fr['vae_base16_meta_gib'] * 1024:.2f} MiB vs {fr['vae_base16_cpu_gib'] * 1024:.2f} MiB.",
        "",
        "## Stage C on Wan 2.1-1.3B (estimated, per GPU, batch 1, bf16)",
        "",
        "- from the cache (transformer only on the device): "
        f"**{r['stage_c_1_3b']['from_cache_gib']:.1f} GiB**",
        "- with UMT5-XXL and the VAE also on the device: "
        f"{r['stage_c_1_3b']['with_text_encoder_and_vae_gib']:.1f} GiB",
        "- adapter training state (weights, grads, Adam, bf16 saved tensors): "
        f"{r['stage_c_1_3b']['adapter_training_gib']:.2f} GiB",
        "",
        "## `pila predict` (estimated peak GiB; VAE tiled from `model` on)",
        "",
        "| backbone | none | model | group | sequential |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, name in (
        ("wan21_1_3b", "Wan 2.1-1.3B + adapter"),
        ("wan22_a14b", "Wan 2.2-A14B + adapter"),
    ):
        p = r["predict"][key]
        lines.append(
            f"| {name} | {p['none']:.1f} | {p['model']:.1f} | {p['group']:.1f} | "
            f"{p['sequential']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="also measure the adapter at the full latent size"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    c, t, h, w = PAPER_LATENT_SHAPE
    result: dict[str, Any] = {
        "command": "python benchmarks/memory.py" + (" --full" if args.full else "")
    }

    # 1. adapter (measured)
    sizes = [(c, 6, 30, 52), (c, 11, 30, 52)] + ([PAPER_LATENT_SHAPE] if args.full else [])
    result["adapter"] = [adapter_saved_bytes(s) for s in sizes]
    per_voxel = result["adapter"][-1]["saved_bytes_per_voxel"]
    full_fp32 = per_voxel * t * h * w / GIB
    result["adapter_full_fp32_gib"] = full_fp32
    result["adapter_full_measured"] = args.full

    # 2. the fake-tensor runs, checked against a real CPU run at a small size
    small_tr = {**WAN21_T2V_1_3B_TRANSFORMER, "num_layers": 2}
    check_latent, check_tokens = (16, 3, 16, 16), 32
    meta = transformer_forward(small_tr, check_latent, check_tokens, "meta")["activation_peak_gib"]
    real = transformer_forward(small_tr, check_latent, check_tokens, "cpu")["activation_peak_gib"]
    small_vae = {**WAN_VAE, "base_dim": 16}
    vmeta = vae_decode(small_vae, (16, 3, 8, 8), "meta", tiled=False)["activation_peak_gib"]
    vreal = vae_decode(small_vae, (16, 3, 8, 8), "cpu", tiled=False)["activation_peak_gib"]
    result["fake_vs_real"] = {
        "transformer_2_blocks_meta_gib": meta,
        "transformer_2_blocks_cpu_gib": real,
        "vae_base16_meta_gib": vmeta,
        "vae_base16_cpu_gib": vreal,
    }
    latent = PAPER_LATENT_SHAPE
    result["wan21_1_3b"] = transformer_forward(
        WAN21_T2V_1_3B_TRANSFORMER, latent, WAN_TEXT_TOKENS, "meta"
    )
    result["wan22_a14b_expert"] = transformer_forward(
        WAN22_A14B_TRANSFORMER, latent, WAN_TEXT_TOKENS, "meta"
    )
    result["umt5_xxl"] = umt5_forward(UMT5_XXL_ENCODER, WAN_TEXT_TOKENS, "meta")
    result["vae_decode"] = vae_decode(WAN_VAE, latent, "meta", tiled=False)
    result["vae_decode_tiled"] = vae_decode(WAN_VAE, latent, "meta", tiled=True)

    # 3. totals
    adapter_weights = result["adapter"][0]["adapter_parameters"] * 4 / GIB  # fp32
    adapter_train = (
        adapter_weights * 4 + full_fp32 / 2
    )  # weights, grads, Adam m and v; bf16 saved tensors
    tr = result["wan21_1_3b"]
    result["stage_c_1_3b"] = {
        "from_cache_gib": (tr["weights_gib"] + max(tr["activation_peak_gib"], adapter_train))
        * ALLOWANCE,
        "with_text_encoder_and_vae_gib": (
            tr["weights_gib"]
            + result["umt5_xxl"]["weights_gib"]
            + result["vae_decode"]["weights_gib"]
            + max(tr["activation_peak_gib"], adapter_train)
        )
        * ALLOWANCE,
        "adapter_training_gib": adapter_train,
    }
    result["predict"] = {
        "wan21_1_3b": predict_totals(
            tr,
            1,
            result["umt5_xxl"],
            result["vae_decode"],
            result["vae_decode_tiled"],
            adapter_weights,
        ),
        "wan22_a14b": predict_totals(
            result["wan22_a14b_expert"],
            2,
            result["umt5_xxl"],
            result["vae_decode"],
            result["vae_decode_tiled"],
            adapter_weights,
        ),
    }
    write_json_atomic(args.out / "memory.json", result)
    write_text_atomic(args.out / "memory.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
