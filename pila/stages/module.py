"""``PILAModule``: the frozen Wan backbone plus the trainable adapter, and the shared step.

Data flow of one step (docs/ARCHITECTURE.md): a cached clip gives x0, text embeddings,
pooled text, labels and the flow target; σ is sampled (shift, the stage's range);
``x_t = (1 − σ)x0 + σε``; the frozen backbone gives ``v_θ(x_t, σ, text)`` without
autograd; then each stage computes its own loss from the adapter (``compute_loss``).

The backbone is *not* a registered submodule: it is loaded on first use, moved to the
module's device, and so never enters ``state_dict``, checkpoints, DDP buckets or DeepSpeed
partitions. It loads the frozen transformer(s) alone: batches bring their latents and text
embeddings (from the cache, or encoded by the data module), so the text encoder and the VAE
never reach the training device. Checkpoints hold the adapter alone (plus the config it was
built with).

Legend: B batch, C latent channels (16), T latent frames, H, W latent height and width,
L text tokens, D text width, E experts.
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from pila.adapter import AdapterConfig, PILAAdapter
from pila.adapter.condition import AdapterCondition, batch_pooled_text, randomize_labels
from pila.backbone import WanBackbone
from pila.backbone.wan import TRAINING_COMPONENTS
from pila.datamodules.resumable import reopen_stopped_epoch
from pila.flow import SigmaSampler, noisy_latent, pad_text
from pila.physics.fused import ResidualPass
from pila.stages.checkpoints import CHECKPOINT_KEY, load_into_adapter, read_adapter_checkpoint
from pila.stages.gradients import gradient_norms, gradient_scalars
from pila.stages.metrics import ResidualMetrics, RouterMetrics
from pila.stages.optim import adamw_class, optimizer_param_groups
from pila.stages.rng import (
    capture_rng_state,
    rank_rng_state,
    restore_rng_state,
    stack_rank_states,
)

log = logging.getLogger(__name__)


class PILAModule(LightningModule, abc.ABC):
    """Shared machinery of the three training stages.

    Args:
        adapter: the adapter's configuration (sizes, routing, physics, ablation switches).
        backbone: diffusers Wan folder, hub id, or ``"tiny"``; loaded on first use.
        backbone_dtype: dtype of the frozen transformer(s): ``auto`` is bf16 on CUDA.
        init_from: checkpoint to start from (a Lightning ``.ckpt``, a DeepSpeed checkpoint
            folder or an adapter folder); only the adapter's weights are read.
        init_strict: refuse an ``init_from`` checkpoint that lacks some adapter tensors.
        lr: AdamW learning rate (constant). [ours: 1e-4; App. B.2 trains with AdamW at a
            constant rate, the same in stages A and C, whose value was lost]
        encoder_lr_scale: learning-rate factor of the ``encoder`` parameter group (physical
            encoder and AFE heads) when :class:`~pila.callbacks.EncoderFreeze` is not used.
            [ours: 1, the encoder trains at the stage's rate; stage C's 0.1 is ours too]
        weight_decay: AdamW weight decay. [ours: 0, no decay; the paper names AdamW (App.
            B.2) but states no weight decay]
        betas: AdamW betas. [ours: PyTorch's defaults]
        sigma_shift: shift s of the training σ distribution. [ours: not stated in the
            paper; diffusers' value for Wan at 480p]
        sigma_range: (σ_min, σ_max) of the training σ (stage A's callback widens it).
            [ours: the full range; stage C's range was lost (App. B.2)]
        text_length: text positions fed to the backbone. [ours: Wan's pipeline uses 512]
        max_nonfinite_steps: consecutive non-finite losses tolerated (each skips its step)
            before the run stops with an error. [ours: a safeguard]
        log_every_n_steps: how often the torchmetrics are computed, logged and reset.
            [ours: metric cadence]
        compile_residuals: fuse the residual objective (stages B and C) with
            ``torch.compile`` (:class:`pila.physics.fused.ResidualPass`): about 2.7×
            faster per category than evaluating each residual term on its own (CPU,
            forward and backward; ``benchmarks/results/physics_residuals.md``), after
            compiling a graph or two per category in the first steps (tens of seconds
            each; a C++ compiler on CPU, Triton on GPU).
        compile_backbone: compile the frozen transformer's repeated blocks
            (``compile_repeated_blocks``, diffusers' regional compilation; one
            ``WanTransformerBlock`` graph serves all blocks); the first step pays the
            compile time, which is logged. [ours: False]
        grad_log_every_n_steps: how often stages B and C log the gradient norm of each
            loss part on each parameter group and their ratio
            (:mod:`pila.stages.gradients`); 0 never. A multiple of the trainer's
            ``log_every_n_steps``, or some are not written. [ours: 50; a diagnostic step
            adds 0.7–0.9 of a step in the lab, so 1.3–1.8 % of training
            (``benchmarks/results/grad_diagnostics_late.md``)]
    """

    #: optimizer parameter groups → the adapter's parameter groups
    #: (:data:`pila.adapter.PARAMETER_GROUPS`) they hold; the group named ``encoder`` runs at
    #: ``lr × encoder_lr_factor``
    optimizer_groups: dict[str, tuple[str, ...]] = {}
    #: name recorded in checkpoints
    stage_name: str = "base"
    #: (main, auxiliary) parts of ``loss_parts`` the gradient diagnostics compare; () none
    grad_parts: tuple[str, ...] = ()

    def __init__(
        self,
        adapter: AdapterConfig | None = None,
        backbone: str = "tiny",
        backbone_dtype: str = "auto",
        init_from: str | None = None,
        init_strict: bool = True,
        lr: float = 1e-4,
        encoder_lr_scale: float = 1.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        sigma_shift: float = 3.0,
        sigma_range: tuple[float, float] = (0.0, 1.0),
        text_length: int = 512,
        max_nonfinite_steps: int = 10,
        log_every_n_steps: int = 10,
        compile_residuals: bool = False,
        compile_backbone: bool = False,
        grad_log_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        config = adapter if adapter is not None else AdapterConfig()
        if isinstance(config, dict):
            config = AdapterConfig.from_dict(config)
        if lr <= 0 or encoder_lr_scale < 0:
            raise ValueError(
                f"lr must be > 0 and encoder_lr_scale >= 0, got {lr}, {encoder_lr_scale}"
            )
        if max_nonfinite_steps < 1 or log_every_n_steps < 1 or grad_log_every_n_steps < 0:
            raise ValueError(
                "max_nonfinite_steps and log_every_n_steps must be >= 1, "
                "grad_log_every_n_steps >= 0"
            )
        # Plain values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["adapter"])
        self.hparams["adapter"] = config.to_dict()
        self.adapter = PILAAdapter(config)
        self.adapter.residual_pass = ResidualPass(compile=compile_residuals)
        self.sigma_sampler = SigmaSampler(sigma_shift, *sigma_range)
        self._backbone: WanBackbone | None = None

        # Knobs the schedule callbacks drive (pila.callbacks.schedules).
        self.lambda_phys = 0.0
        self.cond_scale = 1.0
        self.mask_blend = 0.0
        self.phase = 4
        self.sigma_range = tuple(sigma_range)
        self.encoder_lr_factor = encoder_lr_scale

        self.router_metrics = RouterMetrics()
        self.residual_metrics = ResidualMetrics()
        self._figures: dict[str, Tensor] = {}
        #: the last step's loss parts with their graphs (``grad_parts``), set by compute_loss
        self.loss_parts: dict[str, Tensor] = {}
        self.nonfinite_consecutive = 0
        self.nonfinite_total = 0
        self._rng_after_batch: dict[str, Tensor] | None = None
        if init_from:
            self.load_adapter_from(init_from, strict=init_strict)

    # ------------------------------------------------------------------ backbone
    @property
    def backbone(self) -> WanBackbone:
        """The frozen generator, loaded on first use and kept on this module's device.

        Only its transformer(s) are loaded (:data:`~pila.backbone.wan.TRAINING_COMPONENTS`);
        the text encoder and VAE would load on demand, but no stage calls them.
        """
        if self._backbone is None:
            log.info("loading the frozen transformer(s) of backbone %s", self.hparams.backbone)
            backbone = WanBackbone.from_pretrained(
                self.hparams.backbone, dtype=self.hparams.backbone_dtype, device=self.device,
                components=TRAINING_COMPONENTS,
            )
            self.attach_backbone(backbone)
        if self._backbone.device != self.device:
            self._backbone.to(self.device)
        return self._backbone

    def attach_backbone(self, backbone: WanBackbone) -> None:
        """Use an already loaded backbone (tests, notebooks) instead of loading one."""
        self._check_backbone(backbone)
        if self.hparams.get("compile_backbone", False):
            from pila.backbone.runtime import compile_backbone

            compile_backbone([backbone.transformer, backbone.transformer_2])
        # object.__setattr__ keeps it out of nn.Module's registry: not a submodule, so not in
        # state_dict, checkpoints, DDP buckets or DeepSpeed's partitions.
        object.__setattr__(self, "_backbone", backbone)

    def _check_backbone(self, backbone: WanBackbone) -> None:
        cfg = self.adapter.config
        if backbone.latent_channels != cfg.latent_channels or backbone.text_dim != cfg.text_dim:
            raise ValueError(
                f"the adapter expects latents of {cfg.latent_channels} channels and text of "
                f"width {cfg.text_dim}, but backbone {backbone.source!r} has "
                f"{backbone.latent_channels} and {backbone.text_dim}; "
                "set adapter.latent_channels / adapter.text_dim to match"
            )

    # --------------------------------------------------------------- checkpoints
    def load_adapter_from(self, path: str, *, strict: bool = True) -> None:
        """Load adapter weights from a previous stage (any checkpoint kind), checking the config."""
        ckpt = read_adapter_checkpoint(path)
        saved = AdapterConfig.from_dict(ckpt.config) if ckpt.config is not None else None
        if saved is not None and (differ := self.adapter.config.shape_differences(saved)):
            raise ValueError(
                f"{ckpt.path} was trained with a different adapter ({', '.join(differ)}); "
                "use the same adapter settings as the previous stage"
            )
        missing = load_into_adapter(self.adapter, ckpt, strict=strict)
        log.info(
            "%s: adapter initialised from %s checkpoint %s (stage %s)%s",
            self.stage_name, ckpt.kind, ckpt.path, ckpt.stage or "?",
            f"; {len(missing)} tensors kept at init" if missing else "",
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "adapter_config": self.adapter.config.to_dict(),
            "stage": self.stage_name,
            "nonfinite_total": self.nonfinite_total,
            "rng": self._gather_rng_states(),
        }
        reopen_stopped_epoch(checkpoint, self._trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        self.nonfinite_total = int(meta.get("nonfinite_total", 0))
        trainer = self._trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self._rng_after_batch = rank_rng_state(meta.get("rng"), world, rank)

    # ------------------------------------------------------------ random states
    # Exact resume: every training batch starts from the generators' states at the end of
    # the previous training batch, whatever ran in between (validation, a new epoch's data
    # iterator). Checkpoints store those states per rank, so a resumed run draws the same σ,
    # noise and labels as the run it continues.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_after_batch is not None:
            restore_rng_state(self._rng_after_batch, self.device)
        self._rng_after_batch = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._rng_after_batch is None:  # a checkpoint saved at this batch's end already took it
            self._rng_after_batch = capture_rng_state(self.device)

    def _gather_rng_states(self) -> dict[str, Any]:
        """Every rank's states after its last training batch, stacked (all ranks call this)."""
        if self._rng_after_batch is None:
            self._rng_after_batch = capture_rng_state(self.device)
        world = self._trainer.world_size if self._trainer is not None else 1
        return stack_rank_states(
            self._rng_after_batch, world, lambda v: self.all_gather(v.to(self.device))
        )

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        param_groups = optimizer_param_groups(
            self.adapter.parameter_groups(), self.optimizer_groups,
            lr=self.hparams.lr, encoder_lr_factor=self.encoder_lr_factor, stage=self.stage_name,
        )  # fmt: skip
        optimizer_cls = self.optimizer_class()
        kwargs = {"adamw_mode": True} if optimizer_cls.__name__ == "DeepSpeedCPUAdam" else {}
        return optimizer_cls(
            param_groups,
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
            **kwargs,
        )

    def optimizer_class(self) -> type[torch.optim.Optimizer]:
        """AdamW, or DeepSpeed's CPU AdamW under ZeRO-Offload (:func:`.optim.adamw_class`)."""
        return adamw_class(getattr(self._trainer, "strategy", None))

    # --------------------------------------------------------------- shared step
    def prepare_step(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """σ, noise, x_t and the frozen v_θ for a batch (no autograd through the backbone)."""
        x0 = batch["latents"].float()  # (B, C, T, H, W)
        b = x0.shape[0]
        sampler = self.sigma_sampler.with_range(*self.sigma_range)
        sigma = sampler.sample(b, generator=generator).to(self.device)  # (B,)
        if generator:
            noise = torch.randn(x0.shape, generator=generator).to(self.device)
        else:
            noise = torch.randn_like(x0)
        x_t = noisy_latent(x0, noise, sigma)  # (B, C, T, H, W)
        text = pad_text(batch["prompt_embeds"], self.hparams.text_length)  # (B, L, D)
        with torch.no_grad():
            v_theta = self.backbone.velocity(x_t, sigma, text).float()  # (B, C, T, H, W)
        return {"x0": x0, "noise": noise, "sigma": sigma, "x_t": x_t, "v_theta": v_theta}

    def condition(self, batch: dict[str, Any], phase: int | None = None) -> AdapterCondition:
        """The adapter's condition for a batch, honouring the prompt- and label-source ablations.

        c reads the pooled embedding of the parser's refined description
        (``pooled_refined``, as at generation time) or, with ``prompt_source="raw"``, of the
        caption (``pooled``); batches without ``pooled_refined`` use ``pooled``.
        """
        labels = batch["labels"].float()
        if self.adapter.config.label_source == "random":
            labels = randomize_labels(labels)
        return AdapterCondition(
            pooled_text=batch_pooled_text(batch, self.adapter.config.prompt_source).float(),
            labels=labels,
            cond_scale=float(self.cond_scale),
            phase=int(self.phase if phase is None else phase),
            mask_blend=float(self.mask_blend),
        )

    @abc.abstractmethod
    def compute_loss(
        self, batch: dict[str, Any], step: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The stage's loss and scalars to log (``name → value``) from :meth:`prepare_step`."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        step = self.prepare_step(batch)
        loss, logs = self.compute_loss(batch, step)
        batch_size = step["x0"].shape[0]
        finite = bool(torch.isfinite(loss).all())
        if self.trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            self.nonfinite_consecutive += 1
            self.nonfinite_total += 1
            log.warning(
                "non-finite %s loss at step %d: step skipped (%d in a row, %d in all)",
                self.stage_name, self.global_step, self.nonfinite_consecutive, self.nonfinite_total,
            )
            if self.nonfinite_consecutive >= self.hparams.max_nonfinite_steps:
                raise RuntimeError(
                    f"{self.nonfinite_consecutive} consecutive non-finite losses in "
                    f"{self.stage_name} (last at step {self.global_step}); lower the learning "
                    "rate, check the data cache (`pila prepare` verifies checksums), or resume "
                    "from an earlier checkpoint"
                )
            nonfinite = float(self.nonfinite_total)
            self.log("train/nonfinite_steps", nonfinite, on_step=True, batch_size=batch_size)
            return None
        self.nonfinite_consecutive = 0
        opts = {"on_step": True, "batch_size": batch_size, "sync_dist": True}
        self.log("train/loss", loss.detach(), prog_bar=True, **opts)
        for name, value in logs.items():
            self.log(f"train/{name}", value.detach().float(), **opts)
        self.log("train/lambda_phys", float(self.lambda_phys), on_step=True, batch_size=batch_size)
        self._maybe_log_metrics()
        self._maybe_log_gradients()
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # A fixed σ/noise draw per batch, so validation losses are comparable across epochs.
        generator = torch.Generator().manual_seed(batch_idx)
        step = self.prepare_step(batch, generator=generator)
        loss, logs = self.compute_loss(batch, step)
        batch_size = step["x0"].shape[0]
        opts = {"on_epoch": True, "batch_size": batch_size, "sync_dist": True}
        self.log("val/loss", loss, prog_bar=True, **opts)
        for name, value in logs.items():
            self.log(f"val/{name}", value.float(), **opts)
        return loss

    # ------------------------------------------------------------------- logging
    def _maybe_log_metrics(self) -> None:
        """Every ``log_every_n_steps`` steps: compute (all-reduced), log and reset the metrics."""
        if (self.global_step + 1) % self.hparams.log_every_n_steps:
            return
        values: dict[str, float] = {}
        if self.router_metrics.update_count:
            stats = self.router_metrics.compute()
            values.update(stats.as_log_dict("train/router"))
            self._figures["coactivation"] = stats.coactivation.detach().cpu()
        if self.residual_metrics.update_count:
            values.update(self.residual_metrics.log_dict("train"))
        if values:
            self.log_dict(values, on_step=True, on_epoch=False, rank_zero_only=True)
        self.router_metrics.reset()
        self.residual_metrics.reset()

    def _maybe_log_gradients(self) -> None:
        """Every ``grad_log_every_n_steps`` steps: each loss part's gradient norm per group."""
        every, parts = self.hparams.get("grad_log_every_n_steps", 0), self.loss_parts
        due = every and (self.global_step + 1) % every == 0  # as the metrics: a logged step
        if due and self.grad_parts and set(self.grad_parts) <= set(parts):
            norms = gradient_norms(parts, self.adapter.parameter_groups())
            values = gradient_scalars(norms, *self.grad_parts)
            self.log_dict(values, on_step=True, rank_zero_only=True)
        self.loss_parts = {}

    def latest_figures(self) -> dict[str, Tensor]:
        """The most recent co-activation matrix and expert maps (for ``ExpertImageLogger``)."""
        return dict(self._figures)
