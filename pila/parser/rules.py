"""The rule-based prompt parser: the relabeling table applied to the prompt's text.

It needs no model. The description is the prompt itself (whitespace normalised) and the
labels are what :meth:`pila.parser.category_map.CategoryMap.labels_for_text` finds in it:
the same phenomena and keyword rules that relabel the training data, read from the same
editable ``category_map.json``, so training labels and inference labels agree.
"""

from __future__ import annotations

import os
from typing import Any

from pila.parser.base import ParsedPrompt, PromptParser, ordered_labels
from pila.parser.category_map import CategoryMap


class RuleBasedParser(PromptParser):
    """Phenomena and keywords → categories, with the relabeling table.

    Args:
        category_map: a category-map JSON file (default: the one shipped with the package).
    """

    def __init__(self, category_map: str | None = None) -> None:
        self.category_map_path = None if category_map is None else os.fspath(category_map)
        self.category_map = CategoryMap.load(self.category_map_path)

    def labels(self, text: str) -> tuple[str, ...]:
        """Categories the table finds in ``text``."""
        return ordered_labels(self.category_map.labels_for_text(text))

    def parse(self, prompt: str) -> ParsedPrompt:
        text = " ".join(prompt.split())
        return ParsedPrompt(
            prompt=prompt, refined_prompt=text, labels=self.labels(text), source="rules"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": "rules",
            "category_map": self.category_map.source,
            "category_map_sha256": self.category_map.sha256,
        }


def default_parser() -> PromptParser:
    """The parser used wherever none is given: the rule-based one (no model, no download)."""
    return RuleBasedParser()
