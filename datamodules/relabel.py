"""Relabeling WISA-80K into PILA's eight physical categories (paper App. B.1).

The rules are the prompt parser's vocabulary, ``category_map.json``
(:class:`pila.parser.category_map.CategoryMap`, whose module describes the file format;
pass another path to use your own). A record's labels are the union of the map's three
sources (the WISA phenomenon, the answer fields, the caption's keywords), in
:data:`~pila.categories.CATEGORIES` order: mechanism-oriented and multi-label, so a
bouncing ball gets rigid_body + collision and boiling water phase_change + fluid +
thermal. A record that already carries ``pila_labels`` keeps them. A record that gets no
label at all is rejected (reason ``unlabeled``), so every kept clip has at least one.

An external labeler can replace the map: any callable taking the raw record and
returning category names, or a parser's answer (``labels`` and ``refined_prompt``, whose
description then conditions the adapter for that clip); when it returns nothing for a
record, the map's labels are used. :func:`parser_labeler` makes one from a prompt parser
(``pila.parser``), which is how ``pila prepare --llm-labeler MODEL_DIR`` relabels with a
local LLM.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pila.categories import CATEGORIES
from pila.parser.base import ordered_labels
from pila.parser.category_map import CategoryMap, record_field

from .prompt_side import as_wisa_record
from .records import WisaRecord, is_prompt_side_record
from .rejections import Rejection

log = logging.getLogger(__name__)

Labeler = Callable[[dict[str, Any]], Any]
"""An external labeler: raw WISA record → category names, or a parser's answer with
``labels`` and ``refined_prompt`` (a :class:`pila.parser.ParsedPrompt`), whose refined
description then conditions the adapter for that clip."""


def parser_labeler(parser: Any, text_fields: Sequence[str] = ("captions",)) -> Labeler:
    """A labeler that asks a prompt parser about a record's text.

    Args:
        parser: anything with ``parse(text) -> ParsedPrompt`` (``labels`` and
            ``refined_prompt``), such as :class:`pila.parser.LLMPromptParser` or
            :class:`pila.parser.RuleBasedParser`.
        text_fields: dotted record fields joined (space-separated) into the parsed text.

    Returns:
        A labeler answering with the parser's :class:`~pila.parser.ParsedPrompt` (its
        labels and refined description), or ``[]`` for a record without text.
    """

    def label(record: dict[str, Any]) -> Any:
        parts = [record_field(record, f) for f in text_fields]
        text = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        return parser.parse(text) if text else []

    return label


def relabel_records(
    records: Sequence[WisaRecord], category_map: CategoryMap, labeler: Labeler | None = None
) -> tuple[list[WisaRecord], list[Rejection]]:
    """Give every record its category labels; records left without one are rejected.

    Precedence: the record's own ``pila_labels``; else ``labeler(raw record)`` when a
    labeler is given and returns something; else the category map. A labeler answering
    with a parser's refined description (``refined_prompt``) sets the record's
    ``description`` when it differs from the caption.

    Returns:
        (records with ``labels`` set, ``unlabeled`` rejections).

    Raises:
        ValueError: the labeler returned an unknown category name.
    """
    kept: list[WisaRecord] = []
    rejected: list[Rejection] = []
    for record in records:
        # a prompt-side record is read in WISA-80K's shape (en_caption → captions, q0–q4 nested)
        raw = as_wisa_record(record.raw) if is_prompt_side_record(record.raw) else record.raw
        given = raw.get("pila_labels")
        labels: list[str] = list(given) if given else []
        description = record.description
        if not labels and labeler is not None:
            answer = labeler(raw)
            labels = list(getattr(answer, "labels", answer))
            unknown = [name for name in labels if name not in CATEGORIES]
            if unknown:
                raise ValueError(
                    f"labeler returned unknown categories {unknown}; valid: {', '.join(CATEGORIES)}"
                )
            refined = getattr(answer, "refined_prompt", None)
            if isinstance(refined, str):  # the parser's answer replaces any earlier description
                refined = " ".join(refined.split())
                description = (
                    refined if refined and refined != " ".join(record.captions.split()) else ""
                )
        if not labels:
            labels = category_map.labels_for_record(raw)
        if not labels:
            rejected.append(
                Rejection(
                    record.video_name, "unlabeled", f"label={raw.get('label')!r}", record.index
                )
            )
            continue
        kept.append(
            dataclasses.replace(
                record, labels=tuple(ordered_labels(labels)), description=description
            )
        )
    return kept, rejected


def category_distribution(records: Iterable[WisaRecord]) -> dict[str, int]:
    """Clips per category (a multi-label clip counts once in each of its categories)."""
    counts = Counter(label for record in records for label in record.labels)
    return {c: counts.get(c, 0) for c in CATEGORIES}


def format_distribution(counts: dict[str, int], num_clips: int, width: int = 40) -> str:
    """A text bar chart of :func:`category_distribution` (the paper's Fig. 3)."""
    top = max(counts.values(), default=0) or 1
    lines = [
        f"category distribution over {num_clips} clips "
        "(multi-label: a clip counts in each of its categories)"
    ]
    for name, n in counts.items():
        share = 100.0 * n / num_clips if num_clips else 0.0
        lines.append(f"  {name:<18} {n:>8}  {share:5.1f}%  {'#' * round(width * n / top)}")
    return "\n".join(lines)


def relabeled_annotation(records: Iterable[WisaRecord]) -> list[dict[str, Any]]:
    """The records as WISA-format dicts with their labels in ``pila_labels`` (and a parser's
    refined description, if any, in ``pila_description``)."""
    out = []
    for record in records:
        entry = {**record.raw, "pila_labels": list(record.labels)}
        entry.pop("pila_description", None)
        if record.description:
            entry["pila_description"] = record.description
        out.append(entry)
    return out
