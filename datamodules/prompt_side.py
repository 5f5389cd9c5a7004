"""WISA's prompt-side annotation records, read for generation.

A prompt-side record (``en_caption``, ``phys_law``, ``q0``–``q4``, ``label``; no video) is a
prompt: :func:`wisa_prompt` turns one into a caption and labels through the category map,
exactly as relabeling labels a clip (:func:`as_wisa_record` gives it WISA-80K's shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pila.categories import CATEGORIES
from pila.parser.category_map import CategoryMap

from .records import PROMPT_SIDE_KEY

PROMPT_SIDE_ANNOTATION_KEYS: tuple[str, ...] = ("phys_law", "q0", "q1", "q2", "q3", "q4")
"""Fields of a prompt-side record that a WISA-80K record keeps under ``physical_annotation``."""


@dataclass(frozen=True)
class WisaPrompt:
    """One of WISA's prompt-side annotation records, read for generation.

    Attributes:
        caption: ``en_caption`` as written (the prompt; a reader may normalise whitespace).
        labels: the record's categories in :data:`~pila.categories.CATEGORIES` order, from
            its ``pila_labels`` when given, else from the category map exactly as relabeling
            labels a clip (``CategoryMap.labels_for_record``); empty when neither finds one
            (the prompt parser may then decide).
        extra: the record's other fields (``phys_law``, ``q0``–``q4``, ``label``, …), kept
            for the video's sidecar.
    """

    caption: str
    labels: tuple[str, ...]
    extra: dict[str, Any]


def as_wisa_record(prompt_record: dict[str, Any]) -> dict[str, Any]:
    """A prompt-side record reshaped as a WISA-80K record: ``en_caption`` → ``captions``,
    top-level ``phys_law``/``q0``–``q4`` → ``physical_annotation`` (entries already under
    ``physical_annotation`` win), ``label`` kept."""
    annotation = {
        k: prompt_record[k] for k in PROMPT_SIDE_ANNOTATION_KEYS if prompt_record.get(k) is not None
    }
    nested = prompt_record.get("physical_annotation")
    if isinstance(nested, dict):
        annotation.update(nested)
    shaped = {
        k: v
        for k, v in prompt_record.items()
        if k not in (PROMPT_SIDE_KEY, *PROMPT_SIDE_ANNOTATION_KEYS)
    }
    shaped["captions"] = prompt_record.get(PROMPT_SIDE_KEY)
    shaped["physical_annotation"] = annotation
    return shaped


def wisa_prompt(prompt_record: Any, category_map: CategoryMap) -> WisaPrompt:
    """Caption and labels of one WISA prompt-side annotation record, the relabeling way.

    Args:
        prompt_record: a JSON object with ``en_caption`` and optionally ``phys_law``,
            ``q0``–``q4``, ``label`` and ``pila_labels``.
        category_map: the map relabeling uses (``CategoryMap.load()``); its
            ``labels_for_record`` reads the reshaped record (:func:`as_wisa_record`): the
            q-answers through ``answer_fields``, the phenomenon through ``label_field``,
            the caption through the keyword rules.

    Returns:
        The :class:`WisaPrompt`.

    Raises:
        ValueError: the record is not an object, ``en_caption`` is missing or empty, or
            ``pila_labels`` names an unknown category (the message names the field).
    """
    if not isinstance(prompt_record, dict):
        raise ValueError(
            f"a WISA prompt record must be a JSON object, got {type(prompt_record).__name__}"
        )
    caption = prompt_record.get(PROMPT_SIDE_KEY)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(
            f"a WISA prompt record needs a non-empty {PROMPT_SIDE_KEY!r} "
            f"(fields: {sorted(prompt_record)})"
        )
    given = prompt_record.get("pila_labels")
    if given:
        unknown = (
            [name for name in given if name not in CATEGORIES]
            if isinstance(given, list)
            else [given]
        )
        if unknown:
            raise ValueError(
                f"pila_labels={given!r} names unknown categories; valid: {', '.join(CATEGORIES)}"
            )
        names = set(given)
    else:
        names = set(category_map.labels_for_record(as_wisa_record(prompt_record)))
    extra = {
        k: v
        for k, v in prompt_record.items()
        if k not in (PROMPT_SIDE_KEY, "pila_labels") and v not in (None, "")
    }
    return WisaPrompt(
        caption=caption, labels=tuple(c for c in CATEGORIES if c in names), extra=extra
    )
