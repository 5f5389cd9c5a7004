"""The category vocabulary: ``category_map.json``, the rules that name PILA's eight categories.

The prompt parser owns the vocabulary; relabeling the training data (``pila prepare``,
:mod:`pila.datamodules.relabel`) and the rule-based parser read the same table, so
training labels and inference labels agree.

The rules live in a JSON data file shipped with the package, ``category_map.json`` next to
this module (``CategoryMap.load()`` reads it; pass another path to use your own). Its keys:

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

A record's labels (:meth:`CategoryMap.labels_for_record`) are the union of the three
sources, in :data:`~pila.categories.CATEGORIES` order: mechanism-oriented and
multi-label, so a bouncing ball gets rigid_body + collision and boiling water
phase_change + fluid + thermal.

The same rules label free text (:meth:`CategoryMap.labels_for_text`), which the
rule-based prompt parser uses on prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila.categories import CATEGORIES
from pila.parser.base import ordered_labels

DEFAULT_CATEGORY_MAP = Path(__file__).with_name("category_map.json")
"""The category map shipped with the package."""


def record_field(record: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a (WISA) record, None where the path breaks off."""
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ordered(names: Iterable[str]) -> list[str]:
    return list(ordered_labels(list(names)))


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
                f"category map {str(p)!r} does not exist; omit it to use the shipped one "
                f"({DEFAULT_CATEGORY_MAP})"
            )
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"category map {str(p)!r} is not valid JSON: {err}") from err
        return cls.from_dict(data, source=str(p), sha256=hashlib.sha256(text.encode()).hexdigest())

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "<in-memory>", sha256: str = ""
    ) -> CategoryMap:
        """Build a map from the parsed JSON (validated; errors name ``source`` and the entry)."""

        def fail(what: str) -> ValueError:
            return ValueError(f"category map {source}: {what}")

        def categories(value: Any, where: str) -> tuple[str, ...]:
            if not isinstance(value, list) or not value:
                raise fail(f"{where} must be a non-empty list of categories")
            bad = [v for v in value if v not in CATEGORIES]
            if bad:
                raise fail(
                    f"{where} names unknown categories {bad}; valid: {', '.join(CATEGORIES)}"
                )
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
            str(name).strip().lower(): categories(cats, f"phenomena[{name!r}]")
            for name, cats in raw_phenomena.items()
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
        ignore = tuple(
            compile_(p, f"ignore_answers[{i}]")
            for i, p in enumerate(data.get("ignore_answers", []))
        )
        rules = []
        for i, rule in enumerate(data.get("keywords", [])):
            if not isinstance(rule, dict):
                raise fail(f"keywords[{i}] must be an object with 'pattern' and 'categories'")
            pattern = compile_(rule.get("pattern"), f"keywords[{i}].pattern")
            cats = categories(rule.get("categories"), f"keywords[{i}].categories")
            rules.append(KeywordRule(pattern, cats))
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
            value = record_field(record, path)
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
        label = record_field(record, self.label_field) if self.label_field else None
        keyword_hits: list[str] = []
        for path in self.keyword_fields:
            value = record_field(record, path)
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


__all__ = ["DEFAULT_CATEGORY_MAP", "CategoryMap", "KeywordRule", "record_field"]
