"""The benchmarks ``pila predict`` writes for: one module each, holding its prompt reader
(a :class:`~pila.generation.readers.PromptReader`) and its output layout (an
:class:`~pila.generation.layouts.OutputLayout`).

- :mod:`.plain` plain text, JSON Lines, JSON and CSV prompt files; ``<out>/{i:05d}_{slug}_{k}.mp4``
- :mod:`.phygenbench` PhyGenBench's ``prompts.json``; ``<out>/<model>/output_video_{i+1}.mp4``
- :mod:`.vbench2` VBench-2.0's prompt lists; ``<out>/<dimension>/{prompt[:180]}-{k}.mp4``
- :mod:`.videophy` VideoPhy's and VideoPhy-2's CSVs; ``<out>/videos/`` and the evaluator's CSV
- :mod:`.wisa` WISA's prompt-side records (written with the plain layout)

A new benchmark is one new module here: its reader registers itself under its ``name``
(every module of this package is imported by :func:`load`), and its layout is named in
the writer's YAML (``layout: {class_path: …, init_args: …}``).

:func:`read_prompts` reads a prompt file with a named reader or, for ``format="auto"``,
with the reader that recognises the file (:meth:`PromptReader.detect`, tried in name
order), else the generic reader of the file's extension; the log says which.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from dataclasses import dataclass, replace
from pathlib import Path

from pila.generation.readers import (
    READERS,
    PromptReader,
    PromptSource,
    ReadOptions,
    fail,
    pair_augmented,
    read_text,
)
from pila.generation.records import PromptFileError, PromptRecord
from pila.parser.category_map import CategoryMap

log = logging.getLogger(__name__)


def load() -> dict[str, type[PromptReader]]:
    """Import every benchmark module of this package; format name → reader class."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(READERS.items()))


def prompt_formats() -> tuple[str, ...]:
    """``auto`` and every registered format name."""
    return ("auto", *load())


def reader_for(format: str) -> PromptReader:
    """The reader of ``format`` (a registered name)."""
    readers = load()
    if format not in readers:
        raise PromptFileError(
            f"unknown prompt format {format!r}; valid: {', '.join(prompt_formats())}"
        )
    return readers[format]()


def detect(source: PromptSource) -> tuple[PromptReader, str]:
    """The reader for ``source`` when no format is named, and why (for the log)."""
    readers = [cls() for cls in load().values()]
    for reader in readers:
        if not reader.generic and source.suffix in reader.extensions:
            reason = reader.detect(source)
            if reason is not None:
                return reader, reason
    for reader in readers:
        if reader.generic and source.suffix in reader.extensions:
            return reader, f"its extension {source.suffix}"
    generic = sorted({e for r in readers if r.generic for e in r.extensions})
    raise fail(
        source.path,
        f"unknown prompt-file format (extension {source.suffix or '<none>'!r}); use one of "
        f"{', '.join(generic)} or name the format with data.init_args.format "
        f"(one of {', '.join(prompt_formats()[1:])})",
    )


@dataclass(frozen=True)
class PromptFile:
    """A prompt file as read: its records and the reader (format) that read them."""

    records: list[PromptRecord]
    reader: PromptReader

    @property
    def format(self) -> str:
        return self.reader.name


def read_prompts(
    path: str | os.PathLike, format: str = "auto", options: ReadOptions | None = None
) -> PromptFile:
    """Read a prompt file (or a folder, for formats that read one) into records.

    Raises:
        FileNotFoundError: the file does not exist.
        PromptFileError: unreadable, empty, unknown format, or a bad record.
    """
    p = Path(path).expanduser()
    options = options or ReadOptions()
    if format != "auto":
        reader = reader_for(format)
        if p.is_dir():
            return PromptFile(reader.read_folder(p, options), reader)
    text = read_text(p)
    if not text.strip():
        raise fail(p, "is empty; write one prompt per line (.txt) or records with a 'prompt' field")
    source = PromptSource(p, text)
    if format == "auto":
        reader, reason = detect(source)
        log.info("prompt file %s: read as %s (detected from %s)", p, reader.name, reason)
    records = reader.read(source, options)
    if not records:
        raise fail(
            p, "holds no prompts; write one prompt per line (.txt) or records with a 'prompt' field"
        )
    if options.dimension is not None:
        records = [replace(r, dimension=options.dimension) for r in records]
    if options.augmented_file is not None:
        records = pair_augmented(records, p, options.augmented_file)
    return PromptFile(records, reader)


def read_prompt_file(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    prompt_column: str | None = None,
    dimension: str | None = None,
    augmented_file: str | os.PathLike | None = None,
    category_map: CategoryMap | str | os.PathLike | None = None,
) -> list[PromptRecord]:
    """The records of a prompt file (:func:`read_prompts` with its options as keywords).

    Args:
        path: the prompt file.
        format: a registered format name; ``"auto"`` picks by content and extension.
        prompt_column: the field that conditions the generator (default ``prompt``, then
            ``caption``); e.g. ``upsampled_caption`` for VideoPhy-2's long prompts or
            ``explicit_caption`` for PhyGenBench's ``explicit_prompts.json``.
        dimension: the VBench-2.0 dimension of every prompt (default for ``vbench2``: the
            file's stem).
        augmented_file: rewritten prompts paired line by line with ``path`` (a folder of
            them when ``path`` is a folder): line i is generated from, record i's own
            text stays the evaluator's name (:func:`~pila.generation.readers.pair_augmented`).
        category_map: the category map WISA prompt records are labeled with (a loaded
            ``CategoryMap`` or its file; None: the shipped ``category_map.json``).
    """
    options = ReadOptions(prompt_column, dimension, augmented_file, category_map)
    return read_prompts(path, format, options).records


__all__ = [
    "PromptFile",
    "detect",
    "load",
    "prompt_formats",
    "read_prompt_file",
    "read_prompts",
    "reader_for",
]
