"""The correcting scheduler proxy: Eq. (10) inside diffusers' own Wan denoising loop.

Legend: B batch (the videos of one pipeline call), C latent channels, T latent frames,
H, W latent height and width, E experts (8).

No copy of the sampling loop lives here. :class:`CorrectingScheduler` stands in for the
pipeline's scheduler for one ``WanPipeline.__call__``; its ``step(v, t, x_t)`` first turns
the guided velocity (after classifier-free guidance, with the stage's own guidance scale)
into the corrected one, Eq. (10),

    v_PILA = v + g(σ)·Δv(x_t, σ, v, c)            at 1-based steps s ∈ correction_steps,

where σ is the scheduler's current sigma (:class:`AdapterCorrection`), and then hands it to
the real scheduler. Steps outside ``correction_steps`` pass through untouched. On a Wan
2.2-A14B pipeline (``transformer_2``, ``boundary_ratio``) both regimes are corrected: the
proxy sits after whichever transformer the pipeline chose.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pila.adapter.router import LPMERRouter
from pila.categories import CATEGORIES
from pila.generation.settings import StepCallback


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

    @property
    def steps_done(self) -> int:
        """Denoising steps finished in this call (the step under way is this + 1)."""
        return self._step

    def set_timesteps(self, *args: Any, **kwargs: Any) -> Any:
        self._clock.denoise_start = self._clock.now()
        self._step = 0
        return self._inner.set_timesteps(*args, **kwargs)

    def step(
        self, model_output: Tensor, timestep: Any, sample: Tensor, *args: Any, **kwargs: Any
    ) -> Any:
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


def scheduler_copy(scheduler: Any, shift: float | None) -> Any:
    """A private copy of the scheduler, with its flow shift replaced when ``shift`` is given."""
    if shift is None:
        return copy.deepcopy(scheduler)
    config = scheduler.config
    if "flow_shift" in config:
        return type(scheduler).from_config(config, flow_shift=shift)
    if "shift" in config:
        return type(scheduler).from_config(config, shift=shift)
    raise ValueError(
        f"scheduler {type(scheduler).__name__} has no flow shift to set; leave shift=None"
    )


@contextlib.contextmanager
def expert_record(pipeline: Any, scheduler: CorrectingScheduler) -> Iterator[dict[int, str]]:
    """Record which transformer of a Wan 2.2 pipeline ran each step: yields a dict filled
    during the call, 1-based step → ``"transformer"`` or ``"transformer_2"`` (empty for a
    pipeline with one transformer). Forward pre-hooks, removed on exit."""
    ran: dict[int, str] = {}
    hooks = []
    if getattr(pipeline, "transformer_2", None) is not None:
        for name in ("transformer", "transformer_2"):

            def mark(module: Any, args: Any, name: str = name) -> None:
                ran.setdefault(scheduler.steps_done + 1, name)

            hooks.append(getattr(pipeline, name).register_forward_pre_hook(mark))
    try:
        yield ran
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def patched_pipeline(pipeline: Any, scheduler: Any, progress: bool) -> Iterator[None]:
    """Swap the pipeline's scheduler (bypassing its config registry) and progress bar for one
    call."""
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


@contextlib.contextmanager
def top_k_override(adapter: nn.Module, config: Any, top_k: int | None) -> Iterator[None]:
    """Run the adapter with ``top_k`` experts per sample for the duration of the block.

    Sets ``config.top_k`` (the adapter's ``AdapterConfig``) and the ``top_k`` of every
    ``LPMERRouter`` inside, and restores them. A no-op when ``top_k`` is None.
    """
    if top_k is None:
        yield
        return
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


class ConditionalVelocityTap:
    """Keeps the conditional branch's velocity of the current denoising step (reading R3).

    ``WanPipeline`` calls its transformer with the prompt first and then, under
    classifier-free guidance, with the negative prompt; a forward hook on each transformer
    keeps the first output after every :meth:`take`. Use as a context manager (the hooks
    are removed on exit).

    Args:
        transformers: the pipeline's transformers (Wan 2.2-A14B has two).
    """

    def __init__(self, transformers: Iterable[nn.Module]) -> None:
        self.transformers = [t for t in transformers if t is not None]
        self._handles: list[Any] = []
        self._velocity: Tensor | None = None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._velocity is None:
            self._velocity = (output[0] if isinstance(output, tuple) else output.sample).detach()

    def take(self) -> Tensor | None:
        """The conditional velocity of the step now ending (B, C, T, H, W); the tap resets."""
        velocity, self._velocity = self._velocity, None
        return velocity

    def __enter__(self) -> ConditionalVelocityTap:
        self._handles = [t.register_forward_hook(self._hook) for t in self.transformers]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class AdapterCorrection:
    """The per-step correction the scheduler proxy applies, with routing bookkeeping.

    Args:
        adapter: the PILA adapter (frozen).
        cond: its ``AdapterCondition`` for the call's videos (one row each).
        steps: 1-based steps to correct.
        clock: where adapter time is added up.
        tap: with a :class:`ConditionalVelocityTap` the adapter reads the conditional
            velocity and its correction g(σ)·Δv is added to the guided one (reading R3
            ``"conditional"``); None: it reads and corrects the guided velocity.
    """

    def __init__(
        self,
        adapter: nn.Module,
        cond: Any,
        steps: Iterable[int],
        clock: StepClock,
        tap: ConditionalVelocityTap | None = None,
    ) -> None:
        self.adapter = adapter
        self.cond = cond
        self.steps = frozenset(steps)
        self.clock = clock
        self.tap = tap
        self.weight_sum: Tensor | None = None  # (B, E)
        self.applied: list[int] = []

    @torch.no_grad()
    def __call__(self, step: int, x_t: Tensor, sigma: float, velocity: Tensor) -> Tensor:
        """x_t (B, C, T, H, W), σ, v (B, C, T, H, W) → v_PILA in ``v``'s dtype."""
        conditional = self.tap.take() if self.tap is not None else None  # reset every step
        if step not in self.steps:
            return velocity
        if self.tap is not None and conditional is None:
            raise RuntimeError(
                "the conditional velocity was not seen this step: the pipeline did not call a "
                "tapped transformer"
            )
        start = self.clock.now()
        param = next(self.adapter.parameters())
        batch = x_t.shape[0]
        sigma_b = torch.full((batch,), sigma, device=param.device, dtype=torch.float32)  # (B,)
        read = velocity if conditional is None else conditional
        out = self.adapter(
            x_t.to(param.device, param.dtype),
            sigma_b,
            read.to(param.device, param.dtype),
            self.cond,
            residuals=False,  # sampling never needs the residual objective
        )
        routing = getattr(out, "routing", None)
        if routing is not None:
            weights = routing.weights.detach().float().cpu()  # (B, E)
            self.weight_sum = weights if self.weight_sum is None else self.weight_sum + weights
        self.applied.append(step)
        if conditional is None:
            corrected = out.v_pila.to(velocity.device, velocity.dtype)
        else:  # the guided velocity plus the correction made for the conditional one
            corrected = velocity + out.correction.to(velocity.device, velocity.dtype)
        self.clock.adapter_seconds += self.clock.now() - start
        return corrected

    def mean_routing(self, sample: int = 0) -> dict[str, float] | None:
        """One sample's per-expert routing weight averaged over the corrected steps.

        None when no step ran.
        """
        if self.weight_sum is None or not self.applied:
            return None
        mean = (self.weight_sum / len(self.applied))[sample]  # (E,)
        return {name: float(mean[k]) for k, name in enumerate(CATEGORIES)}


__all__ = [
    "AdapterCorrection",
    "ConditionalVelocityTap",
    "CorrectingScheduler",
    "StepClock",
    "patched_pipeline",
    "scheduler_copy",
    "top_k_override",
]
