"""Where ``pila predict`` puts each video: the output layout every benchmark module fills in.

An :class:`OutputLayout` maps each work item to a video path and a JSON sidecar path under
the writer's output folder, and may write index files (CSVs) its evaluator reads. The
writer receives one as an object (``layout: {class_path: …, init_args: …}`` in YAML) and
binds it to its folder (:meth:`OutputLayout.bind`). The benchmarks' layouts live in
:mod:`pila.generation.benchmarks` (plain, PhyGenBench, VBench-2.0, VideoPhy/VideoPhy-2);
a new layout is a subclass that implements :meth:`OutputLayout.relative_videos`.

For the benchmark layouts the sidecars live in a parallel tree, ``<out>/pila_meta/<the
video's relative path>.json``, so the evaluators' folders hold nothing but videos.

An output is complete when its mp4 and its sidecar both exist and the sidecar names the
same prompt and seed (the sidecar is written last, both atomically). CSV indexes are
rebuilt, atomically, from the complete outputs on disk.

Names derived from prompts are one path component under their folder, never ``.``,
``..`` or a path with a separator. Layouts whose names are ours use :func:`slugify`;
other free text (model and dimension folders) goes through :func:`sanitize_filename`: no
path separators, no ``..``, no control characters, no leading dot, at most ``max_bytes``
UTF-8 bytes (longer names are cut and get a short hash). When two different prompts still
map to the same name, the later one (in file order) gets a hash suffix, so no output
overwrites another (:attr:`OutputLayout.renamed`).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pila.generation.records import PredictItem, PromptRecord
from pila.io import read_json, write_text_atomic

META_DIR = "pila_meta"
"""Folder of the sidecars of the benchmark layouts."""
MAX_NAME_BYTES = 200
"""Ours: longest file-name stem (UTF-8 bytes) a layout writes; file systems allow 255."""
NAME_MAX_BYTES = 255
"""Longest file name (UTF-8 bytes) of the usual Linux file systems (ext4, xfs, btrfs)."""
TEMP_NAME_EXTRA_BYTES = 10
"""What :func:`pila.io.atomic_path`'s temporary sibling ``.{name}.{8 hex}{suffix}`` adds
to a name, besides the suffix."""
HASH_CHARS = 8
"""Ours: hex digits of the hash that tells clashing names apart."""

_SEPARATORS = re.compile(r"[/\\]")
_DOT_RUNS = re.compile(r"\.{2,}")


def short_hash(text: str, length: int = HASH_CHARS) -> str:
    """First ``length`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def truncate_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` UTF-8 bytes."""
    data = text.encode("utf-8")[:max_bytes]
    return data.decode("utf-8", errors="ignore")


def sanitize_filename(
    name: str, *, max_bytes: int = MAX_NAME_BYTES, replacement: str = "_"
) -> str:
    """A file name made from free text, safe to join under a folder.

    Path separators and control characters become ``replacement``, runs of dots collapse
    to one, a leading dot becomes ``replacement``, and names longer than ``max_bytes``
    UTF-8 bytes are cut and suffixed with ``~`` and a hash of the whole text (so two long
    prompts with the same beginning keep different names). Everything else is kept as is.

    Args:
        name: the text (e.g. a prompt).
        max_bytes: the longest result in UTF-8 bytes (at least 16).
        replacement: what replaces forbidden characters.

    Returns:
        A non-empty name with no ``/``, ``\\``, ``..`` or control character.
    """
    if max_bytes < 16:
        raise ValueError(f"max_bytes must be at least 16, got {max_bytes}")
    text = unicodedata.normalize("NFC", name)
    text = _SEPARATORS.sub(replacement, text)
    text = "".join(
        replacement if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )
    text = _DOT_RUNS.sub(".", text).strip()
    if text.startswith("."):
        text = replacement + text[1:]
    if not text:
        text = replacement
    if len(text.encode("utf-8")) > max_bytes:
        suffix = "~" + short_hash(name)
        text = truncate_bytes(text, max_bytes - len(suffix)).rstrip() + suffix
    return text


def slugify(text: str, max_chars: int = 48) -> str:
    """Lower-case ASCII slug: alphanumerics kept, everything else folded into ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_chars].rstrip("-") or "prompt"


def indexed_slug(record: PromptRecord, sample: int) -> str:
    """``{i:05d}_{slug}_{k}.mp4``: the name of our own layouts (plain, VideoPhy)."""
    return f"{record.index:05d}_{slugify(record.prompt)}_{sample}.mp4"


@dataclass(frozen=True)
class OutputPaths:
    """The files of one output: the video and its sidecar."""

    video: Path
    sidecar: Path


def _check_component(name: str) -> str:
    """``name`` itself, after checking it is one path component (an internal invariant)."""
    assert name not in ("", ".", "..") and "/" not in name and "\0" not in name, name
    return name


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's JSON object, or None when it cannot be read or parsed."""
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_csv_atomic(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Every field quoted, so captions keep every character (a lone ``\\r`` included)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=columns, lineterminator="\n", quoting=csv.QUOTE_ALL
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


class OutputLayout(ABC):
    """Maps work items to files under ``root`` and writes the layout's index files.

    A layout is built with its options only; the writer gives it its folder with
    :meth:`bind`. Call :meth:`plan` with every record of the run (not only this rank's)
    before asking for paths: names that must not clash are decided over the whole
    prompt list.

    Subclasses set ``name`` (recorded in every sidecar) and implement
    :meth:`relative_videos`; they may override :meth:`sidecar_for`, :meth:`samples_for`,
    :meth:`sample_warnings`, :meth:`index_paths` and :meth:`write_indexes`.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.root: Path | None = None
        self._videos: dict[tuple[int, int], Path] = {}
        self._records: dict[int, PromptRecord] = {}
        self.unnamed: dict[int, str] = {}
        """Prompt index → why its videos cannot get the evaluator's name (they get none)."""
        self.renamed: dict[int, str] = {}
        """Prompt index → the stem used instead of the evaluator's (it clashed with an earlier)."""

    def bind(self, root: str | os.PathLike) -> OutputLayout:
        """A copy of this layout writing under ``root``, with nothing planned yet."""
        bound = copy.copy(self)
        bound.root = Path(root)
        bound._videos, bound._records, bound.unnamed, bound.renamed = {}, {}, {}, {}
        return bound

    @property
    def folder(self) -> Path:
        """The output folder (set by :meth:`bind`)."""
        if self.root is None:
            raise RuntimeError(f"the {self.name} layout has no folder; call bind(output_dir) first")
        return self.root

    # ------------------------------------------------------------------ planning
    def samples_for(self, record: PromptRecord, requested: int | None) -> int:
        """Videos of ``record``: ``requested``, or the layout's default when None (1)."""
        return 1 if requested is None else requested

    def sample_warnings(
        self, records: Sequence[PromptRecord], requested: int | None
    ) -> list[str]:
        """Warnings about a requested sample count the evaluator will not accept (none here)."""
        return []

    def plan(
        self, records: Sequence[PromptRecord], videos_per_prompt: int | Mapping[int, int] = 1
    ) -> None:
        """Decide every output's relative video path.

        Args:
            records: every record of the run (not only this rank's).
            videos_per_prompt: one count for every prompt, or prompt index → count.
        """
        self._records = {r.index: r for r in records}
        if len(self._records) != len(records):
            raise ValueError("prompt records must have distinct indices")
        if isinstance(videos_per_prompt, Mapping):
            counts = {r.index: int(videos_per_prompt[r.index]) for r in records}
        else:
            counts = {r.index: int(videos_per_prompt) for r in records}
        bad = next((c for c in counts.values() if c < 1), None)
        if bad is not None:
            raise ValueError(f"videos_per_prompt must be at least 1, got {bad}")
        self.unnamed, self.renamed = {}, {}
        self._videos = {
            key: Path(*(_check_component(part) for part in rel.parts))
            for key, rel in self.relative_videos(records, counts).items()
        }

    @abstractmethod
    def relative_videos(
        self, records: Sequence[PromptRecord], counts: dict[int, int]
    ) -> dict[tuple[int, int], Path]:
        """(index, sample) → video path relative to ``root``; ``counts``: index → videos.

        A prompt left out gets no video; say why in :attr:`unnamed`.
        """

    def sidecar_for(self, relative_video: Path) -> Path:
        """The sidecar of a video: ``<root>/pila_meta/<relative video>.json``."""
        return self.folder / META_DIR / relative_video.with_suffix(".json")

    def has_output(self, item: PredictItem) -> bool:
        """Whether ``item`` has a planned output (False for :attr:`unnamed` prompts)."""
        return item.key in self._videos

    def planned_paths(self) -> list[OutputPaths]:
        """The files of every planned output."""
        return [
            OutputPaths(self.folder / rel, self.sidecar_for(rel))
            for _, rel in sorted(self._videos.items())
        ]

    def index_paths(self) -> list[Path]:
        """The index files the layout may write (none by default)."""
        return []

    def paths(self, item: PredictItem) -> OutputPaths:
        """The video and sidecar paths of ``item``."""
        try:
            rel = self._videos[item.key]
        except KeyError:
            index = item.record.index
            if index in self.unnamed:
                raise KeyError(f"prompt {index} has no output: {self.unnamed[index]}") from None
            raise KeyError(
                f"no output planned for prompt {index} sample {item.sample}; "
                "call plan() with every record first"
            ) from None
        return OutputPaths(video=self.folder / rel, sidecar=self.sidecar_for(rel))

    # ----------------------------------------------------------------- resuming
    def is_complete(self, item: PredictItem) -> bool:
        """Both files exist and the sidecar names this item's prompt and seed."""
        paths = self.paths(item)
        if not (paths.video.is_file() and paths.sidecar.is_file()):
            return False
        meta = read_sidecar(paths.sidecar)
        return (
            meta is not None
            and meta.get("prompt") == item.record.prompt
            and meta.get("seed") == item.seed
        )

    def complete_outputs(self) -> list[tuple[PromptRecord, int, Path]]:
        """Every complete output of the planned run: (record, sample, video path), in order."""
        out = []
        for (index, sample), rel in sorted(self._videos.items()):
            record = self._records[index]
            video, sidecar = self.folder / rel, self.sidecar_for(rel)
            if video.is_file() and sidecar.is_file():
                meta = read_sidecar(sidecar)
                if meta is not None and meta.get("prompt") == record.prompt:
                    out.append((record, sample, video))
        return out

    def write_indexes(self) -> list[Path]:
        """Rebuild the layout's index files (CSVs) from the complete outputs; none by default."""
        return []


__all__ = [
    "META_DIR",
    "NAME_MAX_BYTES",
    "OutputLayout",
    "OutputPaths",
    "indexed_slug",
    "read_sidecar",
    "sanitize_filename",
    "short_hash",
    "slugify",
    "truncate_bytes",
    "write_csv_atomic",
]
