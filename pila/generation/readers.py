"""Prompt readers: one class per prompt-file format, and the parsing they share.

A reader is a :class:`PromptReader` subclass with a ``name`` (the ``format`` a user
writes); defining one registers it. The benchmarks' readers live in
:mod:`pila.generation.benchmarks` (one module per benchmark, beside its output layout),
which also picks a reader for ``format="auto"``: a reader whose :meth:`PromptReader.detect`
recognises the file's content, else the generic reader of the file's extension.

Every problem with a prompt file (missing, unreadable, empty, unknown format, a bad
field) is a :class:`~pila.generation.records.PromptFileError` naming the file, the row and
the fix.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from pila.categories import CATEGORIES
from pila.generation.records import PromptFileError, PromptRecord
from pila.parser.category_map import CategoryMap

log = logging.getLogger(__name__)

PROMPT_KEYS = ("prompt", "caption")
"""Fields a generic record is generated from, in this order."""
NAME_KEYS = ("name_prompt", "caption")
"""Fields naming the evaluator's short prompt when another field is generated from."""
_LABEL_SPLIT = re.compile(r"[,;|]")
INLINE = "the inline prompts list"


# ----------------------------------------------------------------------------- errors
def fail(path: Path, what: str) -> PromptFileError:
    return PromptFileError(f"prompt file {str(path)!r}: {what}")


def source_name(path: str | os.PathLike) -> str:
    return INLINE if str(path) == INLINE else f"prompt file {str(path)!r}"


def read_text(path: Path) -> str:
    """The file's UTF-8 text (a BOM dropped); every failure named with its fix."""
    if not path.exists():
        raise FileNotFoundError(
            f"prompt file {str(path)!r} does not exist; "
            "set data.init_args.prompt_file to an existing file"
        )
    if not path.is_file():
        raise fail(path, "is not a file; pass the prompt file itself, not a folder")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise fail(path, f"is not UTF-8 text ({err}); save it as UTF-8") from err
    except OSError as err:
        reason = err.strerror or err
        raise fail(path, f"cannot be read ({reason}); check the path and its permissions") from err


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class ReadOptions:
    """What a user can say about how to read a prompt file (``PromptDataModule``'s args).

    Attributes:
        prompt_column: the field that conditions the generator (None: the reader's default).
        dimension: the VBench-2.0 dimension of every prompt.
        augmented_file: rewritten prompts paired line by line (:func:`pair_augmented`).
        category_map: the map WISA prompt records are labeled with (a loaded map, its
            file, or None for the shipped one).
    """

    prompt_column: str | None = None
    dimension: str | None = None
    augmented_file: str | os.PathLike | None = None
    category_map: CategoryMap | str | os.PathLike | None = None

    def load_category_map(self) -> CategoryMap:
        if isinstance(self.category_map, CategoryMap):
            return self.category_map
        return CategoryMap.load(self.category_map)


class PromptSource:
    """A prompt file's text, with its JSON or CSV view parsed once for every reader."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    def lines(self) -> list[str]:
        """The non-blank lines as written (line endings removed, nothing else)."""
        return [line for line in self.text.splitlines() if line.strip()]

    def json(self) -> Any:
        """The whole file as one JSON value."""
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as err:
            where = f"line {err.lineno}, column {err.colno}: {err.msg}"
            raise fail(self.path, f"is not valid JSON ({where})") from err

    def json_lines(self) -> list[tuple[int, Any]]:
        """(line number, value) of every non-blank line of a JSON Lines file."""
        rows = []
        for lineno, line in enumerate(self.text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise fail(
                    self.path,
                    f"line {lineno} is not valid JSON ({err.msg}); write one JSON object per line",
                ) from err
        return rows

    def rows(self) -> list[Any]:
        """The records of a JSON list or (``.jsonl``) a JSON Lines file."""
        if self.suffix == ".jsonl":
            return [row for _, row in self.json_lines()]
        data = self.json()
        if not isinstance(data, list):
            raise fail(self.path, "must hold a JSON list of records")
        return data

    @cached_property
    def json_rows(self) -> list[Any] | None:
        """:meth:`rows` for content detection: None when the file is no JSON list."""
        if self.suffix not in (".json", ".jsonl"):
            return None
        try:
            rows = self.rows()
        except PromptFileError:
            return None  # the reader reports the error with its position
        return rows or None

    @cached_property
    def csv_columns(self) -> tuple[str, ...]:
        """The header of a ``.csv`` file (empty for other files)."""
        if self.suffix != ".csv":
            return ()
        return tuple(csv.DictReader(io.StringIO(self.text)).fieldnames or ())


# ----------------------------------------------------------------------------- fields
def clean(value: Any) -> str:
    """Whitespace runs collapsed to one space, ends stripped."""
    return " ".join(str(value).split())


def as_written(raw: Any, prompt: str) -> str | None:
    """The source text as the file wrote it, when cleaning changed it (else None).

    The prompt that conditions the generator is cleaned (whitespace runs collapsed); what
    an evaluator matches (VBench-2.0's ``prompt[:180]`` names, the captions of VideoPhy's
    CSVs) must be the source text byte for byte, so it is kept as the record's caption.
    """
    text = str(raw)
    return text if text != prompt else None


def text_field(row: dict[str, Any], key: str) -> str | None:
    """``row[key]`` when it is a non-blank string."""
    value = row.get(key)
    return value if isinstance(value, str) and value.strip() else None


def parse_labels(value: Any, path: Path, where: str) -> tuple[str, ...] | None:
    """Category names from a list or a string split at ``,``, ``;`` or ``|`` (None: none)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        names = [v.strip() for v in _LABEL_SPLIT.split(value) if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise fail(
            path,
            f"{where}: 'labels' must be a list of category names or a string like 'fluid;thermal'",
        )
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise fail(path, f"{where}: unknown categories {unknown}; valid: {', '.join(CATEGORIES)}")
    return tuple(c for c in CATEGORIES if c in names)


def parse_seed(value: Any, path: Path, where: str) -> int | None:
    """An integer seed, or None when the field is empty."""
    if value is None or value == "":
        return None
    bad = fail(path, f"{where}: 'seed' must be an integer, got {value!r}")
    if isinstance(value, bool):
        raise bad
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise bad from None
    if isinstance(value, float) and value != seed:
        raise bad
    return seed


def record_from_mapping(
    row: dict[str, Any], index: int, path: Path, where: str, prompt_column: str | None
) -> PromptRecord:
    """A generic record: ``prompt`` (or ``caption``, or ``prompt_column``), ``seed``,
    ``labels``, ``refined_prompt``, ``dimension``, ``name_prompt``; the rest in ``extra``."""
    keys = (prompt_column,) if prompt_column else PROMPT_KEYS
    key = next((k for k in keys if text_field(row, k)), None)
    if key is None:
        wanted = (
            f"a non-empty {prompt_column!r}" if prompt_column
            else "a non-empty 'prompt' or 'caption'"
        )
        raise fail(
            path,
            f"{where} has no prompt: every record needs {wanted} field (fields: {sorted(row)})",
        )
    # The evaluator's short prompt, when the record generates from another field.
    name_key = next((k for k in NAME_KEYS if k != key and text_field(row, k)), None)
    refined = text_field(row, "refined_prompt")
    dimension = text_field(row, "dimension")
    known = {key, "seed", "labels", "refined_prompt", "dimension"} | ({name_key} - {None})
    prompt = clean(row[key])
    return PromptRecord(
        index=index,
        prompt=prompt,
        seed=parse_seed(row.get("seed"), path, where),
        labels=parse_labels(row.get("labels"), path, where),
        refined_prompt=clean(refined) if refined else None,
        dimension=dimension.strip() if dimension else None,
        caption=str(row[name_key]) if name_key else as_written(row[key], prompt),
        extra={
            k: v for k, v in row.items()
            if isinstance(k, str) and k not in known and v not in (None, "")
        },
    )


def line_record(index: int, line: str, dimension: str | None) -> PromptRecord:
    """A record of one line of a plain-text prompt list."""
    prompt = clean(line)
    return PromptRecord(
        index=index, prompt=prompt, dimension=dimension, caption=as_written(line, prompt)
    )


def line_records(
    source: PromptSource, options: ReadOptions, dimension: str | None, start: int = 0
) -> list[PromptRecord]:
    """One record per non-blank line (indices from ``start``)."""
    if options.prompt_column:
        log.warning(
            "prompt file %s is plain text (one prompt per line): prompt_column %r does not apply",
            source.path, options.prompt_column,
        )  # fmt: skip
    return [line_record(start + i, line, dimension) for i, line in enumerate(source.lines())]


def csv_records(
    source: PromptSource, prompt_column: str | None, require: str | None = None
) -> list[PromptRecord]:
    """One generic record per non-blank CSV row (:func:`record_from_mapping`)."""
    path, columns = source.path, list(source.csv_columns)
    if require and require not in columns:
        raise fail(path, f"needs a {require!r} column (columns: {columns})")
    if prompt_column and prompt_column not in columns:
        raise fail(
            path,
            f"has no column {prompt_column!r} (columns: {columns}); "
            "fix data.init_args.prompt_column",
        )
    if not prompt_column and not any(k in columns for k in PROMPT_KEYS):
        raise fail(path, f"needs a 'prompt' or 'caption' column (columns: {columns})")
    records = []
    for rowno, row in enumerate(csv.DictReader(io.StringIO(source.text)), start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        where = f"row {rowno}"
        records.append(record_from_mapping(dict(row), len(records), path, where, prompt_column))
    return records


# ----------------------------------------------------------------------------- readers
READERS: dict[str, type[PromptReader]] = {}
"""Format name → reader class; a :class:`PromptReader` subclass with a ``name`` adds itself."""


class PromptReader:
    """How one prompt-file format is read; subclasses are registered under their ``name``.

    Attributes:
        name: the format's name (``data.init_args.format``).
        extensions: file suffixes the format is found in; for a ``generic`` reader, the
            suffixes ``format="auto"`` gives it when no other reader recognises the file.
        generic: picked by extension alone (``txt``, ``jsonl``, ``json``, ``csv``).
        folds_duplicates: the evaluator pairs videos with captions, so rows repeating a
            caption are one prompt (:func:`pila.generation.prompts.fold_duplicates`).
    """

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    generic: ClassVar[bool] = False
    folds_duplicates: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # a shared base, not a format
        known = READERS.get(cls.name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"prompt format {cls.name!r} is defined twice ({known.__module__}."
                f"{known.__qualname__} and {cls.__module__}.{cls.__qualname__}); rename one"
            )
        READERS[cls.name] = cls

    def detect(self, source: PromptSource) -> str | None:
        """Why ``source`` is in this format (for the log), or None when it is not."""
        return None

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        """The file's records, indices 0, 1, …"""
        raise NotImplementedError

    def read_folder(self, folder: Path, options: ReadOptions) -> list[PromptRecord]:
        """A folder of prompt files read whole (only formats that say how)."""
        raise fail(folder, "is not a file; pass the prompt file itself, not a folder")


# ----------------------------------------------------------------------------- pairing
def pair_augmented(
    records: Sequence[PromptRecord], path: str | os.PathLike, augmented_file: str | os.PathLike
) -> list[PromptRecord]:
    """Generate from rewritten prompts, name by the originals (VBench-2.0's augmented prompts).

    Line i of ``augmented_file`` (one prompt per line, blank lines skipped, as the
    benchmark's own prompt lists) becomes record i's ``prompt``; the record's evaluator
    caption (its ``caption``, else its original ``prompt``) becomes its ``caption``, which
    names the video and pairs it in the evaluator's CSV.

    Raises:
        PromptFileError: the files hold different numbers of prompts.
    """
    aug = Path(augmented_file).expanduser()
    lines = PromptSource(aug, read_text(aug)).lines()
    if len(lines) != len(records):
        raise PromptFileError(
            f"augmented prompt file {str(aug)!r} has {len(lines)} prompts but "
            f"{source_name(path)} has {len(records)}; they pair line by line, so give the "
            "augmented file of the same prompt list"
        )
    return [
        replace(r, prompt=clean(line), caption=r.evaluator_caption)
        for r, line in zip(records, lines, strict=True)
    ]


__all__ = [
    "INLINE",
    "READERS",
    "PromptReader",
    "PromptSource",
    "ReadOptions",
    "as_written",
    "clean",
    "csv_records",
    "fail",
    "line_record",
    "line_records",
    "pair_augmented",
    "parse_labels",
    "parse_seed",
    "read_text",
    "record_from_mapping",
    "source_name",
    "text_field",
]
