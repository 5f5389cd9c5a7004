"""Generation settings: which steps the adapter corrects, per-prompt seeds, :class:`SamplingConfig`.

Every setting that shapes a video lives in :class:`SamplingConfig` once: ``pila.generate``
builds one from its keyword arguments, ``pila predict`` reads one from YAML
(``model.init_args.sampling``), and every sidecar records it (:meth:`SamplingConfig.to_json`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import Tensor

from pila.categories import CATEGORIES

DEFAULT_MAX_SEQUENCE_LENGTH = 512
"""Text tokens per prompt, as ``WanPipeline``'s default."""

StepRange = tuple[int, int]
StepCallback = Callable[[int, Tensor], None]
"""``(1-based step, latents after that step (B, C, T, H, W))``."""


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
                raise ValueError(
                    f"correction_steps {spec!r}: write a range as 'first-last', e.g. '41-50'"
                ) from None
        else:
            try:
                spec = [int(s) for s in text.split(",") if s]
            except ValueError:
                raise ValueError(
                    f"correction_steps {spec!r}: write steps as '1,3,5' or a range '41-50'"
                ) from None
    if isinstance(spec, tuple) and len(spec) == 2:
        first, last = (int(v) for v in spec)
        if first > last:
            raise ValueError(
                f"correction_steps range {spec} is reversed; write (first, last) with "
                "first <= last"
            )
        steps = set(range(first, last + 1))
    else:
        steps = {int(s) for s in spec}
    if not steps:
        raise ValueError("correction_steps is empty; pass None to correct every step")
    bad = sorted(s for s in steps if not 1 <= s <= n)
    if bad:
        raise ValueError(
            f"correction_steps {bad} outside [1, {n}] (num_inference_steps={n}); "
            "steps are 1-based"
        )
    return tuple(sorted(steps))


def resolve_seeds(seed: int | Sequence[int], num_prompts: int) -> list[int]:
    """``seed`` int → ``seed + i`` for prompt i; a sequence → one seed per prompt."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an int or a list of ints, got {seed!r}")
    if isinstance(seed, int):
        return [seed + i for i in range(num_prompts)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_prompts:
        raise ValueError(
            f"got {len(seeds)} seeds for {num_prompts} prompts; pass one seed per prompt "
            "or a single int"
        )
    return seeds


ADAPTER_VELOCITIES = ("guided", "conditional")
"""The velocities the adapter may read at sampling (:attr:`SamplingConfig.adapter_velocity`)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Every generation setting (recorded in each sidecar).

    The defaults are the paper's Wan 2.1-T2V-1.3B setting (50 steps, 81 × 480 × 832) with
    the Wan pipeline's own guidance scale and text length.

    Args:
        num_inference_steps: denoising steps N (paper: 50).
        guidance_scale: classifier-free guidance scale; on Wan 2.2 the high-noise stage's
            (``transformer``) (5.0: WanPipeline's default).
        guidance_scale_2: Wan 2.2's low-noise stage (``transformer_2``) scale (None: the
            same as ``guidance_scale``).
        negative_prompt: CFG negative prompt (None: the pipeline's default, empty).
        height: frame height in pixels, a multiple of 16 (paper: 480).
        width: frame width in pixels, a multiple of 16 (paper: 832).
        num_frames: frames per video, 4·k + 1 (paper: 81).
        correction_steps: steps the adapter corrects: None (all N, the paper's default),
            a range ``"41-50"`` or ``(41, 50)`` (1-based, inclusive), or step numbers
            ``"1,3,5"`` / ``[1, 3, 5]`` (see :func:`resolve_correction_steps`).
        top_k: experts per sample for this run (None: the adapter's own).
        shift: flow-schedule shift (None: the scheduler's configured one).
        max_sequence_length: text tokens per prompt (512: WanPipeline's default).
        cond_scale: scale of the adapter's condition vector (1 after training).
        adapter_velocity: reading R3 (``design/pila-method.md`` §7), the velocity the
            adapter reads at sampling. ``"guided"``: the velocity after classifier-free
            guidance, corrected into v_PILA. ``"conditional"``: the conditional branch's
            velocity (what training feeds the adapter); its correction g(σ)·Δv is added to
            the guided velocity. Without guidance (scale ≤ 1) both are the same.
            [ours: "guided"; the paper does not say; lab.md §4 measures both]
    """

    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None
    negative_prompt: str | None = None
    height: int = 480
    width: int = 832
    num_frames: int = 81
    correction_steps: str | StepRange | list[int] | None = None
    top_k: int | None = None
    shift: float | None = None
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH
    cond_scale: float = 1.0
    adapter_velocity: str = "guided"

    def __post_init__(self) -> None:
        if self.adapter_velocity not in ADAPTER_VELOCITIES:
            raise ValueError(
                f"adapter_velocity must be one of {', '.join(ADAPTER_VELOCITIES)}, "
                f"got {self.adapter_velocity!r}"
            )
        if self.num_inference_steps < 1:
            raise ValueError(
                f"num_inference_steps must be at least 1, got {self.num_inference_steps}"
            )
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
            raise ValueError(
                f"top_k must lie in [0, {len(CATEGORIES)}] or be None, got {self.top_k}"
            )
        if self.shift is not None and not self.shift > 0:
            raise ValueError(
                f"shift must be positive (or None for the scheduler's own), got {self.shift}"
            )
        if self.max_sequence_length < 1:
            raise ValueError(
                f"max_sequence_length must be at least 1, got {self.max_sequence_length}"
            )
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

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with ``changes`` applied (validated again).

        Raises:
            TypeError: a name that is no field, listing the fields.
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"unknown generation settings {unknown}; "
                f"the settings are {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)

    @property
    def steps(self) -> tuple[int, ...]:
        """The resolved 1-based corrected steps."""
        return resolve_correction_steps(self.correction_steps, self.num_inference_steps)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values, with the corrected steps resolved to a list."""
        out = asdict(self)
        out["correction_steps"] = list(self.steps)
        return out



__all__ = [
    "DEFAULT_MAX_SEQUENCE_LENGTH",
    "SamplingConfig",
    "StepCallback",
    "StepRange",
    "resolve_correction_steps",
    "resolve_seeds",
]
