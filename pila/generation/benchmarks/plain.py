"""Plain prompt files and the plain layout: any prompt list, no evaluator's conventions.

Formats:

``txt``
    one prompt per line (blank lines skipped; a line's 0-based position among the kept
    lines is its index).
``jsonl`` / ``json`` / ``csv``
    records with a ``prompt`` or ``caption`` field and optional ``seed`` (int),
    ``labels`` (a list of category names, or one string split at ``,``, ``;`` or ``|``),
    ``refined_prompt``, ``dimension`` and ``id``. A record that generates from another
    field than its evaluator's name gives the name in ``name_prompt`` (or ``caption``),
    which becomes :attr:`~pila.generation.records.PromptRecord.caption`. A ``.json`` file
    holds a list of records (or of plain strings), or an object with such a list under
    ``"prompts"``.

Layout (:class:`PlainLayout`): ``<out>/{i:05d}_{slug}_{k}.mp4`` with the JSON sidecar
next to it (``.json``); ``slug`` is the prompt lower-cased, non-alphanumerics folded to
``-``, at most 48 characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pila.generation.layouts import OutputLayout, indexed_slug
from pila.generation.readers import (
    PromptReader,
    PromptSource,
    ReadOptions,
    csv_records,
    fail,
    line_records,
    record_from_mapping,
)
from pila.generation.records import PromptRecord


class TextReader(PromptReader):
    """``txt``: one prompt per line."""

    name = "txt"
    extensions = (".txt",)
    generic = True

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        return line_records(source, options, options.dimension)


def _mapping_records(
    source: PromptSource, rows: list[tuple[str, Any]], options: ReadOptions, shape: str
) -> list[PromptRecord]:
    """Records of (where, row) pairs: a string is a prompt, an object a record."""
    records = []
    for i, (where, row) in enumerate(rows):
        if isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict):
            raise fail(source.path, f"{where} must be {shape}")
        records.append(record_from_mapping(row, i, source.path, where, options.prompt_column))
    return records


class JsonLinesReader(PromptReader):
    """``jsonl``: one record (or one prompt string) per line."""

    name = "jsonl"
    extensions = (".jsonl",)
    generic = True

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        rows = [(f"line {lineno}", row) for lineno, row in source.json_lines()]
        return _mapping_records(source, rows, options, "a JSON object with a 'prompt' field")


class JsonReader(PromptReader):
    """``json``: a list of records or prompt strings, or ``{"prompts": [...]}``."""

    name = "json"
    extensions = (".json",)
    generic = True

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        data = source.json()
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            data = data["prompts"]
        if not isinstance(data, list):
            raise fail(
                source.path, "must hold a list of records (or an object with a 'prompts' list)"
            )
        rows = [(f"entry {i}", row) for i, row in enumerate(data)]
        shape = "an object with a 'prompt' field or a string"
        return _mapping_records(source, rows, options, shape)


class CsvReader(PromptReader):
    """``csv``: a header row with a ``prompt`` or ``caption`` column."""

    name = "csv"
    extensions = (".csv",)
    generic = True

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        return csv_records(source, options.prompt_column)


class PlainLayout(OutputLayout):
    """``<out>/{i:05d}_{slug}_{k}.mp4`` with the sidecar next to the video."""

    name = "plain"

    def relative_videos(self, records, counts):
        return {
            (r.index, k): Path(indexed_slug(r, k)) for r in records for k in range(counts[r.index])
        }

    def sidecar_for(self, relative_video: Path) -> Path:
        return self.folder / relative_video.with_suffix(".json")


__all__ = ["CsvReader", "JsonLinesReader", "JsonReader", "PlainLayout", "TextReader"]
