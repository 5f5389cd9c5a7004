"""What a prompt parser returns and the interface every parser follows.

At inference the adapter is conditioned on a physics-oriented description of the prompt
(its pooled text embedding feeds the condition vector c) and on the prompt's active
categories (the label prior β·y of the router). A parser produces both from the raw
prompt; the prompt itself still conditions the frozen generator unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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

    def parse_many(self, prompts: list[str]) -> list[ParsedPrompt]:
        return [self.parse(p) for p in prompts]

    def load(self, device: str | None = None) -> None:  # noqa: B027 - optional hook
        """Load whatever the parser needs (a model) before generation starts; no-op by default."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The parser's identity and settings, recorded in every sidecar."""
