"""Generation with the PILA correction, inside diffusers' own Wan denoising loop.

Legend: B batch (1: prompts are generated one at a time), C latent channels, T latent
frames, H, W latent height and width, F pixel frames, E experts (8).

No copy of the sampling loop lives here. :func:`generate_video` calls
``WanPipeline.__call__`` with the pipeline's scheduler temporarily replaced by a
:class:`CorrectingScheduler`, a thin proxy whose ``step(v, t, x_t)`` first turns the
guided velocity (after classifier-free guidance, with the stage's own guidance scale)
into the corrected one, Eq. (10),

    v_PILA = v + g(σ)·Δv(x_t, σ, v, c)            at 1-based steps s ∈ correction_steps,

where σ is the scheduler's current sigma, and then hands it to the real scheduler.
Everything else (text encoding, latent noise, the Wan 2.2 transformer switch at
``boundary_ratio``, VAE decoding, post-processing) is the pipeline's. Consequences:

- without an adapter, or with a freshly built one (its last layer is zero, so Δv = 0),
  the frames are exactly ``WanPipeline.__call__(prompt, …, generator=
  torch.Generator().manual_seed(seed), output_type="np").frames[0]``;
- steps before the first corrected step are untouched;
- on a Wan 2.2-A14B pipeline (``transformer_2``, ``boundary_ratio``) both regimes are
  corrected: the proxy sits after whichever transformer the pipeline chose.

Each prompt is generated on its own with its own ``torch.Generator``, so a video depends
only on its prompt, its seed and the settings, never on the other prompts of a call.

The adapter is conditioned on the parser's description (its pooled text embedding) and
labels (:mod:`pila.parser`; the rule-based parser by default). Its config's
``prompt_source="raw"`` and ``label_source="random"`` ablations are honoured.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pila.backbone import WanBackbone
from pila.categories import CATEGORIES, labels_to_multihot
from pila.parser.base import ParsedPrompt, PromptParser

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCE_LENGTH = 512
"""Text tokens per prompt, as ``WanPipeline``'s default."""

StepRange = tuple[int, int]
StepCallback = Callable[[int, Tensor], None]
"""``(1-based step, latents after that step (B, C, T, H, W))``."""


# ------------------------------------------------------------------------- settings
def resolve_correction_steps(
    spec: StepRange | Iterable[int] | str | None, num_inference_steps: int
) -> tuple[int, ...]:
    """The 1-based denoising steps the adapter corrects, sorted.

    Args:
        spec: None (every step); a ``(first, last)`` tuple, inclusive (``(41, 50)``: the
            last ten of 50); a string ``"41-50"`` or ``"1,3,5"``; or any other iterable
            of step numbers (a list, a range, a set).
        num_inference_steps: N; every step must lie in [1, N].

    Raises:
        ValueError: a step outside [1, N], an empty set, or a reversed range.
    """
    n = num_inference_steps
    if spec is None:
        return tuple(range(1, n + 1))
    if isinstance(spec, str):
        text = spec.replace(" ", "")
        if "-" in text:
            first, _, last = text.partition("-")
            try:
                spec = (int(first), int(last))
            except ValueError:
                raise ValueError(f"correction_steps {spec!r}: write a range as 'first-last', e.g. '41-50'") from None
        else:
            try:
                spec = [int(s) for s in text.split(",") if s]
            except ValueError:
                raise ValueError(f"correction_steps {spec!r}: write steps as '1,3,5' or a range '41-50'") from None
    if isinstance(spec, tuple) and len(spec) == 2:
        first, last = (int(v) for v in spec)
        if first > last:
            raise ValueError(f"correction_steps range {spec} is reversed; write (first, last) with first <= last")
        steps = set(range(first, last + 1))
    else:
        steps = {int(s) for s in spec}
    if not steps:
        raise ValueError("correction_steps is empty; pass None to correct every step")
    bad = sorted(s for s in steps if not 1 <= s <= n)
    if bad:
        raise ValueError(f"correction_steps {bad} outside [1, {n}] (num_inference_steps={n}); steps are 1-based")
    return tuple(sorted(steps))


def resolve_seeds(seed: int | Sequence[int], num_prompts: int) -> list[int]:
    """``seed`` int → ``seed + i`` for prompt i; a sequence → one seed per prompt."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an int or a list of ints, got {seed!r}")
    if isinstance(seed, int):
        return [seed + i for i in range(num_prompts)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_prompts:
        raise ValueError(f"got {len(seeds)} seeds for {num_prompts} prompts; pass one seed per prompt or a single int")
    return seeds


@dataclass(frozen=True)
class SamplingConfig:
    """Every generation setting (recorded in each sidecar).

    Args:
        num_inference_steps: denoising steps N.
        guidance_scale: classifier-free guidance scale (the high-noise stage's on Wan 2.2).
        guidance_scale_2: Wan 2.2's low-noise stage scale (None: same as ``guidance_scale``).
        negative_prompt: CFG negative prompt (None: the pipeline's default, empty).
        height: frame height in pixels (multiple of 16).
        width: frame width in pixels (multiple of 16).
        num_frames: frames per video, 4·k + 1.
        correction_steps: see :func:`resolve_correction_steps` (None: all N).
        top_k: experts per sample for this run (None: the adapter's own).
        shift: flow-schedule shift (None: the scheduler's configured one).
        max_sequence_length: text tokens per prompt.
        cond_scale: scale of the adapter's condition vector (1 after training).
    """

    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None
    negative_prompt: str | None = None
    height: int = 480
    width: int = 832
    num_frames: int = 81
    correction_steps: StepRange | Iterable[int] | str | None = None
    top_k: int | None = None
    shift: float | None = None
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH
    cond_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")
        for name in ("guidance_scale", "guidance_scale_2"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4·k + 1 (e.g. 17, 81), got {self.num_frames}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                raise ValueError(f"{name} must be a positive multiple of 16, got {value}")
        if self.top_k is not None and not 0 <= self.top_k <= len(CATEGORIES):
            raise ValueError(f"top_k must lie in [0, {len(CATEGORIES)}] or be None, got {self.top_k}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"shift must be positive (or None for the scheduler's own), got {self.shift}")
        if self.max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be at least 1, got {self.max_sequence_length}")
        if not 0.0 <= self.cond_scale <= 1.0:
            raise ValueError(f"cond_scale must lie in [0, 1], got {self.cond_scale}")
        # Canonical, unambiguous form: "first-last" for a range, "a,b,c" for explicit steps.
        spec = self.correction_steps
        if spec is not None and not isinstance(spec, str):
            if isinstance(spec, tuple) and len(spec) == 2:
                spec = f"{int(spec[0])}-{int(spec[1])}"
            else:
                spec = ",".join(str(int(s)) for s in sorted(set(spec)))
            object.__setattr__(self, "correction_steps", spec)
        resolve_correction_steps(spec, self.num_inference_steps)

    @property
    def steps(self) -> tuple[int, ...]:
        """The resolved 1-based corrected steps."""
        return resolve_correction_steps(self.correction_steps, self.num_inference_steps)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["correction_steps"] = list(self.steps)
        return out


# --------------------------------------------------------------------- scheduler proxy
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepClock:
    """Wall-clock marks of one pipeline call (CUDA-synchronised)."""

    device: torch.device
    start: float = 0.0
    denoise_start: float | None = None
    denoise_end: float | None = None
    adapter_seconds: float = 0.0

    def now(self) -> float:
        _sync(self.device)
        return time.perf_counter()


class CorrectingScheduler:
    """Proxy of a diffusers scheduler that corrects the model output before each ``step``.

    Everything but ``set_timesteps`` and ``step`` is forwarded to the wrapped scheduler.

    Args:
        scheduler: the real scheduler (a private copy; its state is reset by
            ``set_timesteps``).
        correct: ``(1-based step, x_t, σ, v) → v_PILA``, or None for no correction.
        clock: timing marks to fill in.
        on_step: called with ``(1-based step, latents after the step)``.
    """

    def __init__(
        self,
        scheduler: Any,
        correct: Callable[[int, Tensor, float, Tensor], Tensor] | None,
        clock: StepClock,
        on_step: StepCallback | None = None,
    ) -> None:
        self._inner = scheduler
        self._correct = correct
        self._clock = clock
        self._on_step = on_step
        self._step = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set_timesteps(self, *args: Any, **kwargs: Any) -> Any:
        self._clock.denoise_start = self._clock.now()
        self._step = 0
        return self._inner.set_timesteps(*args, **kwargs)

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor, *args: Any, **kwargs: Any) -> Any:
        index = self._step
        self._step += 1
        if self._correct is not None:
            sigma = float(self._inner.sigmas[index])
            model_output = self._correct(index + 1, sample, sigma, model_output)
        out = self._inner.step(model_output, timestep, sample, *args, **kwargs)
        if self._on_step is not None:
            latents = out[0] if isinstance(out, tuple) else out.prev_sample
            self._on_step(index + 1, latents)
        if self._step == len(self._inner.timesteps):
            self._clock.denoise_end = self._clock.now()
        return out


def _scheduler_copy(scheduler: Any, shift: float | None) -> Any:
    """A private copy of the scheduler, with its flow shift replaced when ``shift`` is given."""
    if shift is None:
        return copy.deepcopy(scheduler)
    config = scheduler.config
    if "flow_shift" in config:
        return type(scheduler).from_config(config, flow_shift=shift)
    if "shift" in config:
        return type(scheduler).from_config(config, shift=shift)
    raise ValueError(f"scheduler {type(scheduler).__name__} has no flow shift to set; leave shift=None")


@contextlib.contextmanager
def _patched_pipeline(pipeline: Any, scheduler: Any, progress: bool) -> Iterator[None]:
    """Swap the pipeline's scheduler (bypassing its config registry) and progress bar for one call."""
    saved_scheduler = pipeline.__dict__["scheduler"]
    had_bar = "_progress_bar_config" in pipeline.__dict__
    saved_bar = pipeline.__dict__.get("_progress_bar_config")
    pipeline.__dict__["scheduler"] = scheduler
    pipeline.__dict__["_progress_bar_config"] = {**(saved_bar or {}), "disable": not progress}
    try:
        yield
    finally:
        pipeline.__dict__["scheduler"] = saved_scheduler
        if had_bar:
            pipeline.__dict__["_progress_bar_config"] = saved_bar
        else:
            pipeline.__dict__.pop("_progress_bar_config", None)


# ------------------------------------------------------------------------- the adapter
def adapter_config(adapter: nn.Module) -> Any:
    """The adapter's ``AdapterConfig`` (raises a clear error for modules without one)."""
    config = getattr(adapter, "config", None)
    if config is None or not hasattr(config, "latent_channels") or not hasattr(config, "text_dim"):
        raise TypeError(
            f"{type(adapter).__name__} is not a PILA adapter (it has no config with latent_channels and "
            "text_dim); load one with pila.adapter.PILAAdapter.from_pretrained(folder)"
        )
    return config


def check_adapter_compatible(adapter: nn.Module, backbone: WanBackbone, source: str = "the adapter") -> None:
    """Refuse an adapter built for another backbone (latent channels or text width differ).

    Raises:
        ValueError: naming ``source``, both values and the fix.
    """
    _check_sizes(adapter_config(adapter), backbone, source)


def _check_sizes(config: Any, backbone: WanBackbone, source: str) -> None:
    problems = []
    if int(config.latent_channels) != backbone.latent_channels:
        problems.append(f"latent_channels {config.latent_channels} vs the backbone's {backbone.latent_channels}")
    if int(config.text_dim) != backbone.text_dim:
        problems.append(f"text_dim {config.text_dim} vs the backbone's text-encoder width {backbone.text_dim}")
    if problems:
        raise ValueError(
            f"adapter {source} does not match the backbone {backbone.source!r}: {'; '.join(problems)}. "
            "Use an adapter trained (or exported) for a backbone with the same VAE latents and text encoder, "
            "or load the backbone it was trained with."
        )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def adapter_identity(adapter: nn.Module | None, folder: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """What identifies the adapter in a sidecar: its folder and the SHA-256 of its weights.

    For a folder, the hash is that of its ``*.safetensors`` file(s); for an in-memory
    adapter, of its state dict (names and raw bytes).
    """
    if adapter is None:
        return None
    config = adapter_config(adapter)
    identity: dict[str, Any] = {
        "class": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "num_parameters": sum(p.numel() for p in adapter.parameters()),
        "top_k": int(getattr(config, "top_k", -1)),
    }
    if folder is not None:
        root = Path(folder)
        weights = sorted(root.glob("*.safetensors"))
        identity["folder"] = str(root.resolve())
        identity["weights"] = {p.name: _file_sha256(p) for p in weights}
        identity["sha256"] = identity["weights"][weights[0].name] if len(weights) == 1 else _joined(identity["weights"])
    else:
        identity["folder"] = None
        identity["sha256"] = _state_sha256(adapter)
    return identity


def _joined(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}:{v}" for k, v in sorted(hashes.items())).encode()).hexdigest()


def load_adapter(
    folder: str | os.PathLike, backbone: WanBackbone, *, device: torch.device | str | None = None
) -> nn.Module:
    """``PILAAdapter.from_pretrained(folder)``, checked against ``backbone``, frozen, in eval mode.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the adapter does not match the backbone (:func:`check_adapter_compatible`).
    """
    from pila.adapter import PILAAdapter

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"adapter folder {str(path)!r} does not exist; pass a folder written by PILAAdapter.save_pretrained "
            "or `pila export`, or leave the adapter unset to generate the uncorrected baseline"
        )
    config = PILAAdapter.load_config(path)
    _check_sizes(config, backbone, repr(str(path)))  # before reading any weights
    adapter = PILAAdapter.from_pretrained(path)
    adapter.requires_grad_(False).eval()
    return adapter.to(device if device is not None else backbone.device)


@contextlib.contextmanager
def top_k_override(adapter: nn.Module | None, top_k: int | None) -> Iterator[None]:
    """Run the adapter with ``top_k`` experts per sample for the duration of the block.

    Sets ``config.top_k`` and the ``top_k`` of every ``LPMERRouter`` inside, and restores them.
    A no-op when either is None.
    """
    if adapter is None or top_k is None:
        yield
        return
    from pila.adapter.router import LPMERRouter

    config = adapter_config(adapter)
    routers = [m for m in adapter.modules() if isinstance(m, LPMERRouter)]
    saved = (config.top_k, [m.top_k for m in routers])
    config.top_k = top_k
    for m in routers:
        m.top_k = top_k
    try:
        yield
    finally:
        config.top_k = saved[0]
        for m, k in zip(routers, saved[1], strict=True):
            m.top_k = k


class AdapterCorrection:
    """The per-step correction the scheduler proxy applies, with routing bookkeeping.

    Args:
        adapter: the PILA adapter (frozen).
        cond: its ``AdapterCondition`` for this video.
        steps: 1-based steps to correct.
        clock: where adapter time is added up.
    """

    def __init__(self, adapter: nn.Module, cond: Any, steps: Iterable[int], clock: StepClock) -> None:
        self.adapter = adapter
        self.cond = cond
        self.steps = frozenset(steps)
        self.clock = clock
        self.weight_sum: Tensor | None = None  # (B, E)
        self.applied: list[int] = []

    @torch.no_grad()
    def __call__(self, step: int, x_t: Tensor, sigma: float, velocity: Tensor) -> Tensor:
        """x_t (B, C, T, H, W), σ, v (B, C, T, H, W) → v_PILA in ``v``'s dtype."""
        if step not in self.steps:
            return velocity
        start = self.clock.now()
        param = next(self.adapter.parameters())
        sigma_b = torch.full((x_t.shape[0],), sigma, device=param.device, dtype=torch.float32)  # (B,)
        out = self.adapter(
            x_t.to(param.device, param.dtype),
            sigma_b,
            velocity.to(param.device, param.dtype),
            self.cond,
            residuals=False,  # sampling never needs the residual objective
        )
        routing = getattr(out, "routing", None)
        if routing is not None:
            weights = routing.weights.detach().float().cpu()  # (B, E)
            self.weight_sum = weights if self.weight_sum is None else self.weight_sum + weights
        self.applied.append(step)
        corrected = out.v_pila.to(velocity.device, velocity.dtype)
        self.clock.adapter_seconds += self.clock.now() - start
        return corrected

    def mean_routing(self) -> dict[str, float] | None:
        """Per-expert routing weight averaged over the corrected steps (None: no step ran)."""
        if self.weight_sum is None or not self.applied:
            return None
        mean = (self.weight_sum / len(self.applied))[0]  # (E,)
        return {name: float(mean[k]) for k, name in enumerate(CATEGORIES)}


# ----------------------------------------------------------------------------- outputs
@dataclass
class GeneratedVideo:
    """One generated video and everything its sidecar records.

    Attributes:
        frames: (F, H, W, 3) float32 in [0, 1] (None once a writer has released them).
        prompt: the prompt that conditioned the generator.
        seed: the seed of its ``torch.Generator``.
        parsed: the parser's description and labels (None without an adapter).
        routing_weights: per-expert routing weight averaged over the corrected steps.
        corrected_steps: the 1-based steps the adapter actually corrected.
        timings: seconds spent in text encoding, the backbone's denoising, the adapter,
            VAE decoding and in all (``text_encoding``, ``denoise_backbone``, ``adapter``,
            ``vae_decode``, ``total``).
    """

    frames: np.ndarray | None
    prompt: str
    seed: int
    parsed: ParsedPrompt | None = None
    routing_weights: dict[str, float] | None = None
    corrected_steps: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)


def as_backbone(pipeline: Any) -> WanBackbone:
    """A :class:`WanBackbone` for a ``WanPipeline`` (its modules are frozen in place) or itself."""
    if isinstance(pipeline, WanBackbone):
        return pipeline
    from diffusers import WanPipeline

    if not isinstance(pipeline, WanPipeline):
        raise TypeError(f"expected a diffusers WanPipeline or a pila WanBackbone, got {type(pipeline).__name__}")
    return WanBackbone(pipeline)


def _adapter_condition(
    backbone: WanBackbone, adapter: nn.Module, parsed: ParsedPrompt, seed: int, config: SamplingConfig
) -> Any:
    from pila.adapter.condition import AdapterCondition, randomize_labels

    acfg = adapter_config(adapter)
    text = parsed.prompt if getattr(acfg, "prompt_source", "refined") == "raw" else parsed.refined_prompt
    pooled = backbone.encode_prompt([text], max_sequence_length=config.max_sequence_length).pooled  # (1, D)
    labels = labels_to_multihot(list(parsed.labels))[None]  # (1, E)
    if getattr(acfg, "label_source", "parsed") == "random":
        labels = randomize_labels(labels, generator=torch.Generator().manual_seed(seed))
    param = next(adapter.parameters())
    return AdapterCondition(
        pooled_text=pooled.to(param.device, param.dtype),
        labels=labels.to(param.device, param.dtype),
        cond_scale=config.cond_scale,
    )


def generate_video(
    pipeline: Any,
    prompt: str,
    *,
    seed: int,
    config: SamplingConfig | None = None,
    adapter: nn.Module | None = None,
    parsed: ParsedPrompt | None = None,
    parser: PromptParser | None = None,
    on_step: StepCallback | None = None,
    progress: bool = False,
) -> GeneratedVideo:
    """Generate one video with the real ``WanPipeline`` loop, corrected by ``adapter``.

    Args:
        pipeline: a ``WanPipeline`` or :class:`WanBackbone`.
        prompt: the prompt (conditions the generator unchanged).
        seed: seed of the noise generator (``torch.Generator().manual_seed(seed)``).
        config: the settings (default :class:`SamplingConfig`).
        adapter: a PILA adapter, or None for the uncorrected baseline.
        parsed: description and labels for the adapter (default: ``parser``'s answer).
        parser: used when ``parsed`` is None and an adapter is given (default: the
            rule-based parser).
        on_step: called after every denoising step with the new latents.
        progress: show the pipeline's own progress bar.

    Returns:
        The :class:`GeneratedVideo`.
    """
    config = config or SamplingConfig()
    backbone = as_backbone(pipeline)
    pipe = backbone.pipeline
    clock = StepClock(device=backbone.device)
    clock.start = clock.now()
    correction: AdapterCorrection | None = None
    text_seconds = 0.0
    if adapter is not None:
        check_adapter_compatible(adapter, backbone)
        if parsed is None:
            if parser is None:
                from pila.parser.rules import RuleBasedParser

                parser = RuleBasedParser()
            parsed = parser.parse(prompt)
        cond = _adapter_condition(backbone, adapter, parsed, seed, config)
        text_seconds = clock.now() - clock.start
        correction = AdapterCorrection(adapter, cond, config.steps, clock)
    scheduler = CorrectingScheduler(
        _scheduler_copy(pipe.scheduler, config.shift), correction, clock, on_step=on_step
    )
    call_start = clock.now()
    with _patched_pipeline(pipe, scheduler, progress), top_k_override(adapter, config.top_k):
        result = pipe(
            prompt=prompt,
            negative_prompt=config.negative_prompt,
            height=config.height,
            width=config.width,
            num_frames=config.num_frames,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            guidance_scale_2=config.guidance_scale_2,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            max_sequence_length=config.max_sequence_length,
        )
    end = clock.now()
    if len(scheduler.timesteps) != config.num_inference_steps:
        raise RuntimeError(
            f"the scheduler ran {len(scheduler.timesteps)} steps for num_inference_steps="
            f"{config.num_inference_steps}; correction_steps assume one scheduler step per denoising step"
        )
    denoise_start = clock.denoise_start if clock.denoise_start is not None else call_start
    denoise_end = clock.denoise_end if clock.denoise_end is not None else end
    timings = {
        "text_encoding": text_seconds + (denoise_start - call_start),
        "denoise_backbone": (denoise_end - denoise_start) - clock.adapter_seconds,
        "adapter": clock.adapter_seconds,
        "vae_decode": end - denoise_end,
        "total": end - clock.start,
    }
    frames = np.asarray(result.frames[0], dtype=np.float32)  # (F, H, W, 3)
    return GeneratedVideo(
        frames=frames,
        prompt=prompt,
        seed=seed,
        parsed=parsed,
        routing_weights=correction.mean_routing() if correction is not None else None,
        corrected_steps=tuple(correction.applied) if correction is not None else (),
        timings=timings,
    )


def generate(
    pipeline: Any,
    prompts: str | Sequence[str],
    *,
    adapter: nn.Module | str | os.PathLike | None = None,
    seed: int | Sequence[int] = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    guidance_scale_2: float | None = None,
    negative_prompt: str | None = None,
    height: int = 480,
    width: int = 832,
    num_frames: int = 81,
    correction_steps: StepRange | Iterable[int] | str | None = None,
    top_k: int | None = None,
    shift: float | None = None,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    cond_scale: float = 1.0,
    parser: PromptParser | None = None,
    labels: Sequence[Sequence[str]] | None = None,
    refined_prompts: Sequence[str] | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Generate one video per prompt, corrected by a PILA adapter (or not).

    With ``adapter=None``, or a freshly built adapter, prompt i's frames equal
    ``WanPipeline.__call__(prompts[i], …, generator=torch.Generator().manual_seed(seeds[i]),
    output_type="np").frames[0]`` for the same arguments.

    Args:
        pipeline: a diffusers ``WanPipeline`` (Wan 2.1, or Wan 2.2 with ``transformer_2``)
            or a :class:`WanBackbone`.
        prompts: one prompt or a list.
        adapter: a PILA adapter, an adapter folder (loaded with :func:`load_adapter`), or
            None for the uncorrected baseline.
        seed: an int (prompt i gets ``seed + i``) or one seed per prompt.
        num_inference_steps: denoising steps.
        guidance_scale: CFG scale (Wan 2.2: the high-noise stage's).
        guidance_scale_2: Wan 2.2's low-noise stage scale (None: ``guidance_scale``).
        negative_prompt: CFG negative prompt (None: empty).
        height: pixels, multiple of 16.
        width: pixels, multiple of 16.
        num_frames: 4·k + 1.
        correction_steps: steps the adapter corrects: None (all), ``(first, last)``
            inclusive, or an iterable of 1-based step numbers.
        top_k: experts per sample for this call (None: the adapter's).
        shift: flow-schedule shift (None: the pipeline scheduler's).
        max_sequence_length: text tokens per prompt.
        cond_scale: adapter condition scale.
        parser: prompt parser for the adapter's description and labels (default: rules).
        labels: per-prompt category names, overriding the parser's.
        refined_prompts: per-prompt descriptions, overriding the parser's.
        progress: show the pipeline's progress bar.

    Returns:
        One float32 array (F, H, W, 3) in [0, 1] per prompt.
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ValueError("prompts is empty")
    seeds = resolve_seeds(seed, len(prompt_list))
    for name, given in (("labels", labels), ("refined_prompts", refined_prompts)):
        if given is not None and len(given) != len(prompt_list):
            raise ValueError(f"got {len(given)} {name} for {len(prompt_list)} prompts")
    config = SamplingConfig(
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        guidance_scale_2=guidance_scale_2,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
        num_frames=num_frames,
        correction_steps=correction_steps,
        top_k=top_k,
        shift=shift,
        max_sequence_length=max_sequence_length,
        cond_scale=cond_scale,
    )
    backbone = as_backbone(pipeline)
    if isinstance(adapter, (str, os.PathLike)):
        adapter = load_adapter(adapter, backbone)
    if adapter is not None:
        check_adapter_compatible(adapter, backbone)
        parser = parser or _default_parser()
    videos = []
    for i, prompt in enumerate(prompt_list):
        parsed = None
        if adapter is not None:
            given_all = labels is not None and refined_prompts is not None
            parsed = None if given_all else parser.parse(prompt)
            if labels is not None or refined_prompts is not None:
                parsed = ParsedPrompt(
                    prompt=prompt,
                    refined_prompt=refined_prompts[i] if refined_prompts is not None else parsed.refined_prompt,
                    labels=tuple(labels[i]) if labels is not None else parsed.labels,
                    source="given",
                )
        video = generate_video(
            backbone, prompt, seed=seeds[i], config=config, adapter=adapter, parsed=parsed, parser=parser, progress=progress
        )
        videos.append(video.frames)
    return videos


def _default_parser() -> PromptParser:
    from pila.parser.rules import RuleBasedParser

    return RuleBasedParser()


__all__ = [
    "AdapterCorrection",
    "CorrectingScheduler",
    "GeneratedVideo",
    "SamplingConfig",
    "adapter_identity",
    "as_backbone",
    "check_adapter_compatible",
    "generate",
    "generate_video",
    "load_adapter",
    "resolve_correction_steps",
    "resolve_seeds",
    "top_k_override",
]
