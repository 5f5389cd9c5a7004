"""The lab world's two parts (:mod:`pila.lab.world`), each a ``LightningModule``, and the
seeded batches they train on.

Shapes as in :mod:`pila.lab.world`: B batch, F pixel frames, H_px, W_px pixel height and
width, C latent channels, T latent frames, H, W latent height and width, L text tokens,
D text width.

Every draw (a batch's clips, windows, crops and prompt drops; the posterior samples, σ
and noise of a step) is a function of (seed, epoch, step), so a run resumed from an
epoch-end checkpoint draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from pila.flow import SigmaSampler, noisy_latent, sigma_to_timestep, velocity_target
from pila.lab.world import ClipSet


# -------------------------------------------------------------- seeded batches
def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A torch generator fixed by (seed, step, stream): the same draws on a resumed run."""
    mixed = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


class RunKeys(Sampler):
    """A part's dataset keys for its whole run, as one stream of blocks: block ``b`` (the
    keys of ``steps_per_block`` steps) is a pure function of (seed, b).

    Lightning sees a single epoch as long as the run. A restored run starts the stream at
    the key its step count has reached (:meth:`start_at`, called when training starts), so a
    run resumed from any checkpoint draws what the uninterrupted run would have drawn,
    however Lightning counts the epoch's batches on a restart.

    Args:
        num_clips: clips to draw from (each block walks fresh permutations, cycling).
        per_step: keys per optimiser step (the batch size).
        steps_per_block: steps per block of keys.
        total_steps: steps of the run (the stream's length is ``total_steps × per_step``).
        seed: base seed.
        window: (num_frames, window) to draw a window start for each key, or None.
        crop: (height, width, crop) to draw a square crop's corner for each key, or None.
        drop: probability that a key asks for the empty prompt.
    """

    def __init__(
        self,
        num_clips: int,
        per_step: int,
        steps_per_block: int,
        total_steps: int,
        seed: int,
        window: tuple[int, int] | None = None,
        crop: tuple[int, int, int] | None = None,
        drop: float = 0.0,
    ) -> None:
        self.num_clips, self.per_step, self.seed = num_clips, per_step, seed
        self.block = steps_per_block * per_step
        self.total = total_steps * per_step
        self.window, self.crop, self.drop = window, crop, drop
        self.start = 0

    def start_at(self, step: int) -> None:
        """Begin the next iteration with the keys of optimiser step ``step``."""
        self.start = step * self.per_step

    def __len__(self) -> int:
        # the whole run, also after start_at: Lightning reads the length once and counts a
        # restored run's batches as done
        return self.total

    def block_keys(self, block: int) -> list[tuple[int, int, int, int, bool]]:
        """The keys (clip, window start, crop top, crop left, empty prompt) of block ``block``."""
        rng = np.random.default_rng([self.seed, block, 7])
        reps = math.ceil(self.block / self.num_clips)
        cycles = [rng.permutation(self.num_clips) for _ in range(reps)]
        order = np.concatenate(cycles)[: self.block]
        starts = np.zeros(self.block, dtype=np.int64)
        if self.window is not None:
            num_frames, window = self.window
            starts = rng.integers(0, num_frames - window + 1, size=self.block)
        tops = np.zeros(self.block, dtype=np.int64)
        lefts = np.zeros(self.block, dtype=np.int64)
        if self.crop is not None:
            height, width, crop = self.crop
            tops = rng.integers(0, height - crop + 1, size=self.block)
            lefts = rng.integers(0, width - crop + 1, size=self.block)
        drops = rng.random(self.block) < self.drop
        columns = (order, starts, tops, lefts, drops)
        return list(zip(*(c.tolist() for c in columns), strict=True))

    def __iter__(self) -> Iterator[tuple[int, int, int, int, bool]]:
        start, self.start = self.start, 0
        block, offset = divmod(start, self.block)
        left = self.total - start
        while left > 0:
            keys = self.block_keys(block)[offset : offset + left]
            yield from keys
            left -= len(keys)
            block, offset = block + 1, 0


class WindowData(Dataset):
    """Key (clip, start, top, left, _) → a window of the clip: (3, window, crop, crop) in
    [-1, 1]."""

    def __init__(self, clips: ClipSet, window: int, crop: int) -> None:
        self.clips, self.window, self.crop = clips, window, crop

    def __len__(self) -> int:
        return len(self.clips.prompts)

    def __getitem__(self, key: tuple[int, int, int, int, bool]) -> Tensor:
        clip, start, top, left, _ = key
        frames = slice(start, start + self.window)
        rows, cols = slice(top, top + self.crop), slice(left, left + self.crop)
        return self.clips.pixels(clip)[:, frames, rows, cols]


class LatentData(Dataset):
    """Key (clip, _, drop) → (normalised latent (C, T, H, W), prompt embedding (L, D))."""

    def __init__(self, latents: Tensor, prompt_ids: Tensor, embeds: Tensor, empty_id: int) -> None:
        self.latents, self.prompt_ids, self.embeds = latents, prompt_ids, embeds
        self.empty_id = empty_id

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, key: tuple[int, int, int, int, bool]) -> tuple[Tensor, Tensor]:
        clip, _, _, _, drop = key
        prompt = self.empty_id if drop else int(self.prompt_ids[clip])
        return self.latents[clip], self.embeds[prompt]


def _warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up, then cosine to ``floor`` (our choice: 10 %)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------- the parts
class WorldPart(L.LightningModule):
    """What both parts share: the step-seeded draws, the schedule and wall-time bookkeeping."""

    def __init__(self, seed: int, lr: float, total_steps: int, warmup_steps: int) -> None:
        super().__init__()
        self.seed, self.lr = seed, lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.train_seconds = 0.0  # summed over resumed runs (kept in the checkpoint)
        self.recent_losses: list[float] = []
        self._tick = 0.0
        self.keys: RunKeys | None = None  # the sampler of the part's loader, set by its caller

    def on_train_start(self) -> None:
        if self.keys is not None:  # a restored run goes on with the keys of its next step
            self.keys.start_at(self.global_step)

    def configure_optimizers(self):
        # each part holds exactly the model it trains (the VAE, the transformer or its LoRA)
        trained = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=self.lr, weight_decay=0.01, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: _warmup_cosine(s, self.warmup_steps, self.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._tick = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._tick
        self.recent_losses = (self.recent_losses + [float(outputs["loss"])])[-50:]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["world_part"] = {
            "train_seconds": self.train_seconds,
            "recent_losses": self.recent_losses,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("world_part", {})
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.recent_losses = list(state.get("recent_losses", []))


def decode_unclamped(vae: AutoencoderKLWan, z: Tensor) -> Tensor:
    """``AutoencoderKLWan``'s frame-by-frame decode without its final clamp to [-1, 1].

    The clamp has no gradient where the output leaves [-1, 1], which stalls training
    from a random start; the loss is taken on the raw output instead.

    Args:
        z: (B, C, T, H, W) raw (not normalised) latents.

    Returns:
        (B, 3, F, H_px, W_px).
    """
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frame = vae.decoder(
            x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0
        )
        frames.append(frame)
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def foreground_weights(x: Tensor, strength: float) -> Tensor:
    """Per-pixel loss weights ``1 + strength·Σ_c |x − median colour of the frame|``.

    Args:
        x: (B, 3, F, H_px, W_px) in [-1, 1].

    Returns:
        (B, 1, F, H_px, W_px).
    """
    background = x.flatten(3).median(dim=3).values[..., None, None]  # (B, 3, F, 1, 1)
    return 1.0 + strength * (x - background).abs().sum(dim=1, keepdim=True)


def frame_by_frame_init(vae: AutoencoderKLWan) -> None:
    """Start ``vae`` as a per-frame codec, so its clip path begins where its frame path is.

    A single frame (the first of every clip, and every sample of the first training phase)
    reaches only the last temporal tap of each causal 3-D convolution and skips the
    temporal resamplers: the other taps and the resamplers' ``time_conv`` get no gradient
    from frames, and at their random initialisation they mix every later frame with noise.
    So (our choice) those earlier taps start at zero and each ``time_conv`` starts as the
    identity on its last tap: the encoder keeps the last frame of each temporal stride, the
    decoder repeats each latent frame. Latent frame k is then the single-frame code of pixel
    frame 4k, and decoding repeats it; the clip phase learns the temporal mixing from there.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample

    time_convs = {
        id(m.time_conv)
        for m in vae.modules()
        if isinstance(m, WanResample) and hasattr(m, "time_conv")
    }
    with torch.no_grad():
        for module in vae.modules():
            if not isinstance(module, WanCausalConv3d) or module.kernel_size[0] == 1:
                continue
            weight = module.weight  # (out, in, kt, kh, kw)
            if id(module) in time_convs:  # kernel (3, 1, 1); out = in (encoder) or 2 × in (decoder)
                weight.zero_()
                module.bias.zero_()
                eye = torch.eye(weight.shape[1], dtype=weight.dtype)
                for half in range(weight.shape[0] // weight.shape[1]):
                    weight[half * weight.shape[1] : (half + 1) * weight.shape[1], :, -1, 0, 0] = eye
            else:
                weight[:, :, :-1].zero_()


LOGVAR_INIT = -6.0
"""Initial posterior log-variance (our choice): σ ≈ 0.05 at the start, so the sampled latent
carries the encoder's signal from the first step (a unit σ drowns it and the decoder learns
only the mean colour)."""


class VAEPart(WorldPart):
    """Part 1: ``AutoencoderKLWan`` trained on clip windows (reconstruction + small KL).

    Args:
        vae_config: the ``AutoencoderKLWan`` config.
        seed: seeds initialisation and the posterior samples.
        lr: peak learning rate.
        total_steps: steps of the schedule.
        warmup_steps: warm-up steps.
        kl_weight: weight of the mean KL.
        foreground_weight: strength of :func:`foreground_weights` (0: a plain mean).
    """

    def __init__(
        self,
        vae_config: dict[str, Any],
        seed: int,
        lr: float,
        total_steps: int,
        warmup_steps: int,
        kl_weight: float,
        foreground_weight: float = 0.0,
    ) -> None:
        super().__init__(seed, lr, total_steps, warmup_steps)
        self.save_hyperparameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vae = AutoencoderKLWan(**vae_config)
        frame_by_frame_init(self.vae)
        z_dim = int(self.vae.config.z_dim)
        with torch.no_grad():
            self.vae.quant_conv.bias[z_dim:].fill_(LOGVAR_INIT)  # the log-variance half
        self.kl_weight, self.foreground_weight = kl_weight, foreground_weight

    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        """``batch``: (B, 3, F, H_px, W_px) in [-1, 1]."""
        # 1. encode to the posterior and draw from it
        dist = self.vae.encode(batch).latent_dist
        gen = step_generator(self.seed, self.global_step, 1)
        noise = torch.randn(dist.mean.shape, generator=gen).to(dist.mean)
        z = dist.mean + dist.std * noise  # (B, C, T, H, W)
        # 2. decode and compare
        recon = decode_unclamped(self.vae, z)  # (B, 3, F, H_px, W_px)
        err = recon - batch
        weights = foreground_weights(batch, self.foreground_weight)  # (B, 1, F, H_px, W_px)
        l1 = (err.abs() * weights).mean() / weights.mean()  # weighted means over all pixels
        wmse = (err.pow(2) * weights).mean() / weights.mean()
        mse = err.detach().pow(2).mean()
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        loss = l1 + wmse + self.kl_weight * kl
        psnr = 10.0 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range [-1, 1] → peak² = 4
        logged = {"loss": loss, "l1": l1, "mse": mse, "kl": kl, "psnr": psnr}
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=True)
        return {"loss": loss}


class TransformerPart(WorldPart):
    """Part 2: ``WanTransformer3DModel`` trained with :mod:`pila.flow`'s objective on
    normalised latents.

    Args:
        transformer_config: the ``WanTransformer3DModel`` config.
        seed: seeds initialisation, σ and noise.
        lr: peak learning rate.
        total_steps: steps of the schedule.
        warmup_steps: warm-up steps.
        shift: σ shift of the training schedule.
        heldout: held-out latents (N, C, T, H, W) and their prompt embeddings (N, L, D), on
            which the flow loss is measured every ``heldout_every`` steps and at the last
            step (:attr:`heldout_curve`), or None.
        heldout_every: steps between two held-out measurements.
        initial: weights to start from (a trained transformer's state dict; None: the
            seeded initialisation).
        lora_rank: train a LoRA of this rank on the blocks' linear layers
            (:data:`~pila.stages.finetune.LORA_TARGETS`) and nothing else (None: every weight).
        sigma_range: the (shifted) σ range trained and held out (an expert's regime).
    """

    HELDOUT_DRAWS = 4
    """σ and noise draws per held-out latent (our choice; 4 × 16 clips = 64 samples)."""

    def __init__(
        self,
        transformer_config: dict[str, Any],
        seed: int,
        lr: float,
        total_steps: int,
        warmup_steps: int,
        shift: float,
        heldout: tuple[Tensor, Tensor] | None = None,
        heldout_every: int = 0,
        initial: dict[str, Tensor] | None = None,
        lora_rank: int | None = None,
        sigma_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(seed, lr, total_steps, warmup_steps)
        self.save_hyperparameters(ignore=["heldout", "initial"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.transformer = WanTransformer3DModel(**transformer_config)
            if initial is not None:
                self.transformer.load_state_dict(initial)
            if lora_rank is not None:
                from pila.stages.finetune import LORA_TARGETS, lora_config

                self.transformer.requires_grad_(False)
                self.transformer.add_adapter(lora_config(lora_rank, None, LORA_TARGETS))
        self.sigmas = SigmaSampler(shift, *sigma_range)
        self.heldout_every = heldout_every
        self.heldout_curve: list[tuple[int, float]] = []  # (step, held-out flow loss)
        self._heldout = self._heldout_draws(heldout) if heldout is not None else None

    def _heldout_draws(self, heldout: tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
        """The held-out set's fixed samples: every latent with :attr:`HELDOUT_DRAWS` σ and
        noise draws, drawn once from the seed, so the curve moves only with the weights."""
        latents, embeds = heldout
        x0 = latents.repeat_interleave(self.HELDOUT_DRAWS, dim=0)  # (N·k, C, T, H, W)
        text = embeds.repeat_interleave(self.HELDOUT_DRAWS, dim=0)  # (N·k, L, D)
        gen = step_generator(self.seed, 0, 3)
        sigma = self.sigmas.sample(x0.shape[0], generator=gen)  # (N·k,)
        noise = torch.randn(x0.shape, generator=gen)
        return noisy_latent(x0, noise, sigma), velocity_target(x0, noise), sigma, text

    @torch.no_grad()
    def heldout_loss(self, batch: int = 8) -> float:
        """The flow loss on the held-out samples (mean squared velocity error)."""
        assert self._heldout is not None
        x_t, target, sigma, text = self._heldout
        was_training = self.transformer.training
        self.transformer.eval()
        total = 0.0
        for i in range(0, x_t.shape[0], batch):
            pred = self.transformer(
                hidden_states=x_t[i : i + batch],
                timestep=sigma_to_timestep(sigma[i : i + batch]),
                encoder_hidden_states=text[i : i + batch],
                return_dict=False,
            )[0]
            total += F.mse_loss(pred, target[i : i + batch], reduction="sum").item()
        self.transformer.train(was_training)
        return total / target.numel()

    def _measure_heldout(self, log: bool) -> None:
        """Append the held-out loss of the weights after :attr:`global_step` steps when due.

        Measured before the next step rather than after this one: Lightning writes a step's
        checkpoint before the module's end-of-step hook, so a point taken there would be
        missing from the checkpoint and lost on a resume.
        """
        step = self.global_step
        due = self.heldout_every and (step % self.heldout_every == 0 or step == self.total_steps)
        if self._heldout is None or not due or step == 0:
            return
        if self.heldout_curve and self.heldout_curve[-1][0] == step:
            return  # measured before a resume
        loss = self.heldout_loss()
        self.heldout_curve.append((step, loss))
        if log:
            self.log("heldout/flow_loss", loss)

    @torch.no_grad()
    def lora_velocity_change(self) -> float:
        """‖v − v_base‖ / ‖v_base‖ on the held-out samples, v_base with the LoRA switched
        off: how far a LoRA part moved from the transformer it started from."""
        assert self._heldout is not None
        x_t, _, sigma, text = self._heldout
        was_training = self.transformer.training
        self.transformer.eval()

        def velocity() -> Tensor:
            return self.transformer(
                hidden_states=x_t,
                timestep=sigma_to_timestep(sigma),
                encoder_hidden_states=text,
                return_dict=False,
            )[0]

        moved = velocity()
        self.transformer.disable_adapters()
        base = velocity()
        self.transformer.enable_adapters()
        self.transformer.train(was_training)
        return float((moved - base).norm() / base.norm().clamp_min(1e-12))

    def final_heldout(self) -> float:
        """The held-out loss of the weights after the last step (measured now if the curve
        lacks it: a finished run restored from its checkpoint runs no step to measure at)."""
        if self._heldout is None:
            return float("nan")
        if not self.heldout_curve or self.heldout_curve[-1][0] != self.global_step:
            self.heldout_curve.append((self.global_step, self.heldout_loss()))
        return self.heldout_curve[-1][1]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._measure_heldout(log=True)
        super().on_train_batch_start(batch, batch_idx)

    def on_train_end(self) -> None:
        self._measure_heldout(log=False)  # the last step's weights

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["world_part"]["heldout_curve"] = self.heldout_curve

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        curve = checkpoint.get("world_part", {}).get("heldout_curve", [])
        self.heldout_curve = [(int(step), float(loss)) for step, loss in curve]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``batch``: latents (B, C, T, H, W), prompt embeddings (B, L, D)."""
        x0, text = batch
        gen = step_generator(self.seed, self.global_step, 2)
        # 1. noise level and noise
        sigma = self.sigmas.sample(x0.shape[0], generator=gen)  # (B,)
        noise = torch.randn(x0.shape, generator=gen).to(x0)  # (B, C, T, H, W)
        # 2. the straight path and its velocity
        x_t = noisy_latent(x0, noise, sigma)
        target = velocity_target(x0, noise)
        # 3. predict
        pred = self.transformer(
            hidden_states=x_t,
            timestep=sigma_to_timestep(sigma),
            encoder_hidden_states=text,
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, target)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss}


# ------------------------------------------------------- the VAE on whole clips
@torch.no_grad()
def encode_clips(vae: AutoencoderKLWan, clips: ClipSet, batch: int = 4) -> Tensor:
    """Posterior means of the clips: (N, C, T, H, W) float32 (not normalised)."""
    out = []
    for i in range(0, len(clips.prompts), batch):
        out.append(vae.encode(clips.pixels(slice(i, i + batch))).latent_dist.mode().float())
    return torch.cat(out)


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, clips: ClipSet, batch: int = 4) -> dict[str, float]:
    """PSNR (dB, pixels in [0, 1]) of the VAE's reconstructions: per scene and overall (mean
    of per-clip PSNRs)."""
    per_clip = []
    for i in range(0, len(clips.prompts), batch):
        x = clips.pixels(slice(i, i + batch))
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((y - x) / 2.0).pow(2).flatten(1).mean(1)  # (B,) on the [0, 1] scale
        per_clip += (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    result: dict[str, float] = {}
    for scene in dict.fromkeys(clips.scenes):
        values = [p for p, s in zip(per_clip, clips.scenes, strict=True) if s == scene]
        result[scene] = float(np.mean(values))
    result["overall"] = float(np.mean(per_clip)) if per_clip else float("nan")
    return result
