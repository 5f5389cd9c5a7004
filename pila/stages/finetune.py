"""``WorldFinetune``: the generator's own transformer fine-tuned with a LoRA.

The lab's capacity control (lab.md §5, ``world_finetune`` in ``pila lab ablate``): if a
LoRA with as many trainable parameters as the plain adapter, trained on the same clips,
steps, learning rate and seeds as the adapters' stage C, lowers the violation as much as
an adapter does, the adapter's gain is more training, not physics.

One step: a cached clip gives x0 and its text embeddings; σ is sampled as in the stages
(shift, range); ``x_t = (1 − σ)x0 + σε``; the transformer with its LoRA gives ``v(x_t, σ,
text)``; the loss is the flow-matching loss ``mean(|v − (ε − x0)|²)``, the same as stage C's
without the adapter. Only the LoRA's matrices train (peft, through diffusers'
``add_adapter``); checkpoints hold them alone, and :func:`export_lora` writes them as a
diffusers LoRA folder (``pytorch_lora_weights.safetensors``) that
:func:`load_transformer_lora` puts back into a loaded backbone for generation.

Legend: B batch, C latent channels, T latent frames, H, W latent height and width, L text
tokens, D text width.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from pila.backbone import WanBackbone
from pila.backbone.wan import TRAINING_COMPONENTS
from pila.flow import SigmaSampler, noisy_latent, pad_text, sigma_to_timestep, velocity_target
from pila.io import atomic_folder, write_json_atomic
from pila.stages.safe_load import load_checkpoint_file

log = logging.getLogger(__name__)

LORA_TARGETS: tuple[str, ...] = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ffn.net.0.proj", "ffn.net.2",
)
"""Linear layers of every Wan transformer block that get a LoRA: self- and cross-attention
projections and the feed-forward pair. [ours: every linear map of the blocks, so the
control can change what the adapter's correction could]"""

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""The file name diffusers' ``save_lora_adapter`` / ``load_lora_adapter`` use."""
LORA_METADATA_KEY = "lora_adapter_metadata"
"""The safetensors metadata entry where diffusers keeps the LoRA's peft config
(``diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY``)."""


def lora_config(rank: int, alpha: float | None, targets: Sequence[str]):
    """A peft ``LoraConfig`` for the Wan transformer (Gaussian A, zero B: the LoRA starts at 0)."""
    try:
        from peft import LoraConfig
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ImportError("world_finetune needs peft: pip install 'peft>=0.13'") from err
    return LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),
        target_modules=list(targets),
        init_lora_weights="gaussian",
    )


def lora_parameter_count(transformer: torch.nn.Module, rank: int, targets: Sequence[str]) -> int:
    """Trainable parameters a rank-``rank`` LoRA on ``targets`` adds to ``transformer``
    (counted on its linear layers, before or after a LoRA wraps them)."""
    total = 0
    for name, module in transformer.named_modules():
        name = name.removesuffix(".base_layer")
        if "lora_" in name or not isinstance(module, torch.nn.Linear):
            continue
        if any(name.endswith(t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total


class WorldFinetune(LightningModule):
    """The backbone's transformer with a trainable LoRA, trained on the flow-matching loss.

    Args:
        backbone: diffusers Wan folder, hub id, ``"tiny"`` or ``"lab"``. Wan 2.1 layout (one
            transformer); a Wan 2.2 backbone is refused.
        lora_rank: the LoRA's rank r. [ours: 19 on the lab world gives 316,160 trainable
            parameters, within 1.3 % of the lab's plain adapter (320,081)]
        lora_alpha: the LoRA's α (scale α/r). [ours: None = r, a scale of 1]
        lora_targets: the transformer's linear layers (name suffixes) that get a LoRA.
        lr, weight_decay, betas: AdamW, as the stages'. [ours: the stage configs set them]
        sigma_shift, sigma_range: σ sampling, as the stages'.
        text_length: text positions fed to the backbone, as the stages'.
    """

    stage_name = "world_finetune"

    def __init__(
        self,
        backbone: str = "lab",
        lora_rank: int = 19,
        lora_alpha: float | None = None,
        lora_targets: Sequence[str] = LORA_TARGETS,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        sigma_shift: float = 3.0,
        sigma_range: tuple[float, float] = (0.0, 1.0),
        text_length: int = 512,
    ) -> None:
        super().__init__()
        if lora_rank < 1 or lr <= 0:
            raise ValueError(f"lora_rank must be >= 1 and lr > 0, got {lora_rank} and {lr}")
        self.save_hyperparameters()
        self.hparams["lora_targets"] = list(lora_targets)
        wan = WanBackbone.from_pretrained(backbone, dtype="float32", components=TRAINING_COMPONENTS)
        if wan.transformer_2 is not None:
            raise ValueError(
                f"world_finetune trains one transformer, but backbone {backbone!r} has two "
                "(Wan 2.2); use a Wan 2.1-layout backbone"
            )
        transformer = wan.transformer
        transformer.requires_grad_(False)
        transformer.add_adapter(lora_config(lora_rank, lora_alpha, lora_targets))
        # A registered submodule, so it moves with the module; checkpoints keep only the LoRA.
        self.transformer = transformer
        self.sigma_sampler = SigmaSampler(sigma_shift, *sigma_range)
        self.strict_loading = False  # the frozen weights are not in checkpoints (on_load checks)

    # ------------------------------------------------------------------ parameters
    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The trainable LoRA matrices, by their name in this module's ``state_dict``."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.lora_parameters().values())

    def configure_optimizers(self):
        return torch.optim.AdamW(
            list(self.lora_parameters().values()),
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = set(self.lora_parameters())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(set(self.lora_parameters()) - set(checkpoint.get("state_dict", {})))
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} LoRA tensors of this world_finetune "
                f"(first: {missing[0]}); was it written with another lora_rank or lora_targets?"
            )

    # ------------------------------------------------------------------ the step
    def velocity(self, x_t: Tensor, sigma: Tensor, text: Tensor) -> Tensor:
        """``v(x_t, σ, text)`` with the LoRA, with autograd: (B, C, T, H, W)."""
        timestep = sigma_to_timestep(sigma.float()).to(x_t.device)  # (B,)
        return self.transformer(
            hidden_states=x_t, timestep=timestep, encoder_hidden_states=text, return_dict=False
        )[0]

    def flow_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        x0 = batch["latents"].float()  # (B, C, T, H, W)
        sigma = self.sigma_sampler.sample(x0.shape[0], generator=generator).to(self.device)  # (B,)
        if generator is None:
            noise = torch.randn_like(x0)
        else:
            noise = torch.randn(x0.shape, generator=generator).to(self.device)
        x_t = noisy_latent(x0, noise, sigma)
        text = pad_text(batch["prompt_embeds"], self.hparams.text_length).float()  # (B, L, D)
        return F.mse_loss(self.velocity(x_t, sigma, text).float(), velocity_target(x0, noise))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.flow_loss(batch)
        size = batch["latents"].shape[0]
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=size)
        self.log("train/flow_loss", loss.detach(), on_step=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # A fixed σ/noise draw per batch, as the stages', so validation losses compare.
        loss = self.flow_loss(batch, generator=torch.Generator().manual_seed(batch_idx))
        size = batch["latents"].shape[0]
        self.log("val/loss", loss, on_epoch=True, batch_size=size, prog_bar=True)
        self.log("val/flow_loss", loss, on_epoch=True, batch_size=size)
        return loss


# ---------------------------------------------------------------------- export and use
def is_world_finetune_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Lightning checkpoint file written by :class:`WorldFinetune`."""
    path = Path(path)
    if not path.is_file():
        return False
    hparams = load_checkpoint_file(path).get("hyper_parameters", {})
    return isinstance(hparams, dict) and "lora_rank" in hparams


def export_lora(ckpt_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a ``WorldFinetune`` checkpoint's LoRA as a diffusers LoRA folder.

    The folder holds ``pytorch_lora_weights.safetensors`` (diffusers' own LoRA layout) and
    ``world_finetune.json`` (the backbone, rank, α and targets it was trained with).
    """
    checkpoint = load_checkpoint_file(Path(ckpt_path))
    log.info("exporting the world_finetune LoRA of %s to %s", ckpt_path, out)
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    if "lora_rank" not in hparams:
        raise ValueError(f"{ckpt_path} is not a world_finetune checkpoint (no lora_rank)")
    # LightningCLI records its own keys (``_class_path``) beside the arguments
    arguments = inspect.signature(WorldFinetune.__init__).parameters
    module = WorldFinetune(**{k: v for k, v in hparams.items() if k in arguments})
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    module.on_load_checkpoint(checkpoint)
    with atomic_folder(out) as folder:
        save_lora(module.transformer, folder)
        write_json_atomic(folder / "world_finetune.json", {k: hparams[k] for k in sorted(hparams)})
    return Path(out)


def save_lora(transformer: torch.nn.Module, folder: Path) -> None:
    """Write ``transformer``'s LoRA into ``folder`` as diffusers does (:data:`LORA_WEIGHTS`),
    the same weights always as the same bytes (:func:`_canonical_lora_metadata`)."""
    transformer.save_lora_adapter(folder, weight_name=LORA_WEIGHTS)
    _canonical_lora_metadata(folder / LORA_WEIGHTS)


def _canonical_lora_metadata(path: Path) -> None:
    """Rewrite a LoRA file with its peft config's keys and target modules sorted.

    peft keeps ``target_modules`` as a set, so diffusers writes it in the order of the
    process's string hashing: the same weights exported twice would carry two texts of one
    config and two identities (:func:`~pila.adapter.loading.safetensors_sha256`), and a
    resumed ``pila lab ablate`` would take them for another adapter.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if LORA_METADATA_KEY in metadata:
        config = json.loads(metadata[LORA_METADATA_KEY])
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        metadata[LORA_METADATA_KEY] = json.dumps(config, indent=2, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)


def load_transformer_lora(backbone: WanBackbone, folder: str | os.PathLike) -> None:
    """Put a :func:`export_lora` folder's LoRA into the backbone's transformer, fused.

    Fused into the weights, the transformer then runs exactly as the baseline's code path
    does (no extra modules on the way), with the fine-tuned weights. A Wan 2.2 backbone
    gets it in both experts (a LoRA trained on a Wan 2.1 transformer of the same shapes,
    moved unchanged, as the adapter is).
    """
    backbone.load_component("transformer")
    for transformer in (backbone.transformer, backbone.transformer_2):
        if transformer is not None:
            fuse_lora(transformer, folder)


def fuse_lora(transformer: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load the LoRA of ``folder`` (diffusers' :data:`LORA_WEIGHTS`) into ``transformer`` and
    fuse it into its weights; the LoRA modules are removed again."""
    folder = Path(folder)
    if not (folder / LORA_WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{folder} holds no {LORA_WEIGHTS}; export a world_finetune checkpoint with "
            "pila.stages.finetune.export_lora"
        )
    transformer.load_lora_adapter(str(folder), weight_name=LORA_WEIGHTS, prefix=None)
    transformer.fuse_lora()
    transformer.unload_lora()
