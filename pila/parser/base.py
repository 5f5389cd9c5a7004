"""What a prompt parser returns and the interface every parser follows.

At inference the adapter is conditioned on a physics-oriented description of the prompt
(its pooled text embedding feeds the condition vector c) and on the prompt's active
categories (the label prior β·y of the router). A parser produces both from the raw
prompt; the prompt itself still conditions the frozen generator unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pila.categories import CATEGORIES


@dataclass(frozen=True)
class ParsedPrompt:
    """A parser's answer for one prompt.

    Attributes:
        prompt: the raw prompt.
        refined_prompt: the physics-oriented description that conditions the adapter.
        labels: active category names, in ``CATEGORIES`` order.
        source: who answered: ``"rules"``, ``"llm"``, ``"llm+rules"`` (the LLM's
            description, the rules' labels), ``"rules-fallback"`` (the LLM failed) or
            ``"given"`` (the prompt file supplied them).
    """

    prompt: str
    refined_prompt: str
    labels: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        unknown = [name for name in self.labels if name not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; valid: {', '.join(CATEGORIES)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "refined_prompt": self.refined_prompt,
            "labels": list(self.labels),
            "source": self.source,
        }


def ordered_labels(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Known category names in ``CATEGORIES`` order, duplicates removed."""
    present = set(names)
    return tuple(c for c in CATEGORIES if c in present)


class PromptParser(ABC):
    """Prompt → (refined description, active categories)."""

    @abstractmethod
    def parse(self, prompt: str) -> ParsedPrompt:
        """Parse one prompt."""

    def load(self, device: str | None = None) -> None:  # noqa: B027 - optional hook
        """Load whatever the parser needs (a model) before generation starts; no-op by default."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The parser's identity and settings, recorded in every sidecar."""


def parse_with_given(
    parser: PromptParser,
    prompt: str,
    *,
    labels: Sequence[str] | None = None,
    refined_prompt: str | None = None,
) -> ParsedPrompt:
    """The adapter's description and labels for ``prompt``: what is given, the parser's answer
    for the rest.

    Args:
        parser: asked only when ``labels`` or ``refined_prompt`` is missing.
        prompt: the raw prompt.
        labels: category names given with the prompt (a prompt file's ``labels``).
        refined_prompt: a description given with the prompt.

    Returns:
        The parser's answer when nothing is given; otherwise a ``"given"`` answer holding
        the given parts and the parser's answer for the others.
    """
    if labels is None and refined_prompt is None:
        return parser.parse(prompt)
    parsed = None if labels is not None and refined_prompt is not None else parser.parse(prompt)
    return ParsedPrompt(
        prompt=prompt,
        refined_prompt=refined_prompt if refined_prompt is not None else parsed.refined_prompt,
        labels=tuple(labels) if labels is not None else parsed.labels,
        source="given",
    )
