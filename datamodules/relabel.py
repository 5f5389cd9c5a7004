"""Relabeling WISA-80K into PILA's eight physical categories (paper App. B.1).

The rules live in a JSON data file shipped with the package, ``category_map.json``
(``CategoryMap.load()`` reads it; pass another path to use your own). Its keys:

``phenomena``
    WISA phenomenon (lower case) → list of categories. All 17 WISA phenomena are listed.
``label_field``
    the record field holding the clip's WISA phenomenon (``"label"``; lower-cased
    before lookup). Empty string: not used.
``answer_fields``
    dotted paths of answer fields (``physical_annotation.q0`` … ``q2``). Each is split
    at any of ``answer_separators``; pieces matching one of the ``ignore_answers``
    regular expressions (``"no obvious … phenomenon"``) are dropped, and every
    phenomenon name found as a whole phrase in the other pieces contributes its
    categories.
``keyword_fields``
    dotted paths of free-text fields (the caption) searched with the ``keywords`` rules.
``keywords``
    list of ``{"pattern": regex, "categories": [...]}``; a case-insensitive match of
    ``pattern`` anywhere in a keyword field adds ``categories``.

A record's labels are the union of all three sources, in
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

The same rules label free text (:meth:`CategoryMap.labels_for_text`), which the
rule-based prompt parser uses on prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila.categories import CATEGORIES

from .records import Rejection, WisaRecord

log = logging.getLogger(__name__)

DEFAULT_CATEGORY_MAP = Path(__file__).with_name("category_map.json")
"""The category map shipped with the package."""

Labeler = Callable[[dict[str, Any]], Any]
"""An external labeler: raw WISA record → category names, or a parser's answer with
``labels`` and ``refined_prompt`` (a :class:`pila.parser.ParsedPrompt`), whose refined
description then conditions the adapter for that clip."""


def _get_path(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ordered(names: Iterable[str]) -> list[str]:
    present = set(names)
    return [c for c in CATEGORIES if c in present]


@dataclass(frozen=True)
class KeywordRule:
    """A regular expression and the categories a match adds."""

    pattern: re.Pattern[str]
    categories: tuple[str, ...]


@dataclass(frozen=True)
class CategoryMap:
    """The rules of ``category_map.json`` (see the module docstring for the file format).

    Attributes:
        phenomena: WISA phenomenon → categories.
        label_field: record field with the WISA phenomenon ("" to ignore).
        answer_fields: dotted paths of the answer fields.
        answer_separators: characters that split an answer into pieces.
        ignore_answers: compiled patterns of answer pieces that name no phenomenon.
        keyword_fields: dotted paths of free-text fields.
        keywords: keyword rules.
        source: the file the map came from.
        sha256: hash of the file's content (recorded in the cache's manifest).
    """

    phenomena: dict[str, tuple[str, ...]]
    label_field: str
    answer_fields: tuple[str, ...]
    answer_separators: str
    ignore_answers: tuple[re.Pattern[str], ...]
    keyword_fields: tuple[str, ...]
    keywords: tuple[KeywordRule, ...]
    source: str = "<in-memory>"
    sha256: str = ""

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> CategoryMap:
        """Read a category map file (default: the shipped ``category_map.json``).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not valid JSON or breaks the format (the message names
                the file and the entry).
        """
        p = Path(path) if path is not None else DEFAULT_CATEGORY_MAP
        if not p.is_file():
            raise FileNotFoundError(
                f"category map {str(p)!r} does not exist; omit it to use the shipped one ({DEFAULT_CATEGORY_MAP})"
            )
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"category map {str(p)!r} is not valid JSON: {err}") from err
        return cls.from_dict(data, source=str(p), sha256=hashlib.sha256(text.encode()).hexdigest())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<in-memory>", sha256: str = "") -> CategoryMap:
        """Build a map from the parsed JSON (validated; errors name ``source`` and the entry)."""

        def fail(what: str) -> ValueError:
            return ValueError(f"category map {source}: {what}")

        def categories(value: Any, where: str) -> tuple[str, ...]:
            if not isinstance(value, list) or not value:
                raise fail(f"{where} must be a non-empty list of categories")
            bad = [v for v in value if v not in CATEGORIES]
            if bad:
                raise fail(f"{where} names unknown categories {bad}; valid: {', '.join(CATEGORIES)}")
            return tuple(_ordered(value))

        def compile_(pattern: Any, where: str) -> re.Pattern[str]:
            if not isinstance(pattern, str):
                raise fail(f"{where} must be a string regular expression")
            try:
                return re.compile(pattern, re.IGNORECASE)
            except re.error as err:
                raise fail(f"{where} is not a valid regular expression ({err})") from err

        if not isinstance(data, dict):
            raise fail("the file must hold a JSON object")
        if data.get("version") != 1:
            raise fail(f"unsupported version {data.get('version')!r} (this reader knows version 1)")
        raw_phenomena = data.get("phenomena", {})
        if not isinstance(raw_phenomena, dict):
            raise fail("'phenomena' must map phenomenon names to category lists")
        phenomena = {
            str(name).strip().lower(): categories(cats, f"phenomena[{name!r}]") for name, cats in raw_phenomena.items()
        }
        fields = {}
        for key in ("answer_fields", "keyword_fields"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(f"'{key}' must be a list of dotted field paths")
            fields[key] = tuple(value)
        label_field = data.get("label_field", "label")
        if not isinstance(label_field, str):
            raise fail("'label_field' must be a string")
        separators = data.get("answer_separators", ",;\n")
        if not isinstance(separators, str) or not separators:
            raise fail("'answer_separators' must be a non-empty string")
        ignore = tuple(compile_(p, f"ignore_answers[{i}]") for i, p in enumerate(data.get("ignore_answers", [])))
        rules = []
        for i, rule in enumerate(data.get("keywords", [])):
            if not isinstance(rule, dict):
                raise fail(f"keywords[{i}] must be an object with 'pattern' and 'categories'")
            rules.append(
                KeywordRule(compile_(rule.get("pattern"), f"keywords[{i}].pattern"), categories(rule.get("categories"), f"keywords[{i}].categories"))
            )
        return cls(
            phenomena=phenomena,
            label_field=label_field,
            answer_fields=fields["answer_fields"],
            answer_separators=separators,
            ignore_answers=ignore,
            keyword_fields=fields["keyword_fields"],
            keywords=tuple(rules),
            source=source,
            sha256=sha256,
        )

    # ---------------------------------------------------------------- labeling
    def labels_for_phenomenon(self, name: str) -> list[str]:
        """Categories of one WISA phenomenon (case-insensitive; unknown → [])."""
        return list(self.phenomena.get(name.strip().lower(), ()))

    def _phenomena_in(self, text: str) -> list[str]:
        found: list[str] = []
        for name, cats in self.phenomena.items():
            if re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
                found.extend(cats)
        return found

    def labels_from_answers(self, record: dict[str, Any]) -> list[str]:
        """Categories of the phenomena named in the answer fields (q0, q1, q2)."""
        found: list[str] = []
        split = re.compile(f"[{re.escape(self.answer_separators)}]")
        for path in self.answer_fields:
            value = _get_path(record, path)
            if not isinstance(value, str):
                continue
            for piece in split.split(value):
                if not piece.strip() or any(p.search(piece) for p in self.ignore_answers):
                    continue
                found.extend(self._phenomena_in(piece))
        return _ordered(found)

    def labels_for_text(self, text: str) -> list[str]:
        """Categories the keyword rules (and any phenomenon named verbatim) find in ``text``."""
        found = self._phenomena_in(text)
        for rule in self.keywords:
            if rule.pattern.search(text):
                found.extend(rule.categories)
        return _ordered(found)

    def label_sources(self, record: dict[str, Any]) -> dict[str, list[str]]:
        """Categories contributed by each source: ``label``, ``answers``, ``keywords``."""
        label = _get_path(record, self.label_field) if self.label_field else None
        keyword_hits: list[str] = []
        for path in self.keyword_fields:
            value = _get_path(record, path)
            if isinstance(value, str):
                keyword_hits.extend(self.labels_for_text(value))
        return {
            "label": self.labels_for_phenomenon(label) if isinstance(label, str) else [],
            "answers": self.labels_from_answers(record),
            "keywords": _ordered(keyword_hits),
        }

    def labels_for_record(self, record: dict[str, Any]) -> list[str]:
        """The record's categories: the union of :meth:`label_sources`, in CATEGORIES order."""
        return _ordered(c for cats in self.label_sources(record).values() for c in cats)


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
        parts = [_get_path(record, f) for f in text_fields]
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
        given = record.raw.get("pila_labels")
        labels: list[str] = list(given) if given else []
        description = record.description
        if not labels and labeler is not None:
            answer = labeler(record.raw)
            labels = list(getattr(answer, "labels", answer))
            unknown = [name for name in labels if name not in CATEGORIES]
            if unknown:
                raise ValueError(f"labeler returned unknown categories {unknown}; valid: {', '.join(CATEGORIES)}")
            refined = getattr(answer, "refined_prompt", None)
            if isinstance(refined, str):  # the parser's answer replaces any earlier description
                refined = " ".join(refined.split())
                description = refined if refined and refined != " ".join(record.captions.split()) else ""
        if not labels:
            labels = category_map.labels_for_record(record.raw)
        if not labels:
            rejected.append(Rejection(record.video_name, "unlabeled", f"label={record.raw.get('label')!r}", record.index))
            continue
        kept.append(dataclasses.replace(record, labels=tuple(_ordered(labels)), description=description))
    return kept, rejected


def category_distribution(records: Iterable[WisaRecord]) -> dict[str, int]:
    """Clips per category (a multi-label clip counts once in each of its categories)."""
    counts = Counter(label for record in records for label in record.labels)
    return {c: counts.get(c, 0) for c in CATEGORIES}


def format_distribution(counts: dict[str, int], num_clips: int, width: int = 40) -> str:
    """A text bar chart of :func:`category_distribution` (the paper's Fig. 3)."""
    top = max(counts.values(), default=0) or 1
    lines = [f"category distribution over {num_clips} clips (multi-label: a clip counts in each of its categories)"]
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
