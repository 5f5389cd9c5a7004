"""Prompt parsing for inference: a refined description and the active categories.

:class:`RuleBasedParser` (the default, no model) applies the category vocabulary
(:class:`CategoryMap`, ``category_map.json``, which relabeling shares);
:class:`LLMPromptParser` runs a local causal LM over two editable templates and falls
back to the rules when the model's answer cannot be used.
"""

from pila.parser.base import (
    ParsedPrompt,
    PromptParser,
    ordered_labels,
    parse_with_given,
)
from pila.parser.category_map import CategoryMap
from pila.parser.llm import (
    DEFAULT_TEMPLATES,
    LLMPromptParser,
    MalformedAnswer,
    Templates,
    normalise_category,
    parse_json_answer,
    validate_categories,
)
from pila.parser.rules import RuleBasedParser, default_parser

__all__ = [
    "DEFAULT_TEMPLATES",
    "CategoryMap",
    "LLMPromptParser",
    "MalformedAnswer",
    "ParsedPrompt",
    "PromptParser",
    "RuleBasedParser",
    "Templates",
    "default_parser",
    "normalise_category",
    "ordered_labels",
    "parse_json_answer",
    "parse_with_given",
    "validate_categories",
]
