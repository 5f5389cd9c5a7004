"""Where ``pila predict`` puts each video, so that every benchmark's evaluator finds it.

Layouts (``--layout``; ``<out>`` is the writer's ``output_dir``, ``i`` the prompt's 0-based
index in its file, ``k`` the sample number, N videos per prompt):

``plain``
    ``<out>/{i:05d}_{slug}_{k}.mp4``, the JSON sidecar next to it (``.json``). ``slug`` is
    the prompt lower-cased, non-alphanumerics folded to ``-``, at most 48 characters.
``phygenbench``
    ``<out>/<model>/output_video_{i+1}.mp4`` (what PhyGenBench's evaluator reads). With
    N > 1, sample k > 0 goes to ``<out>/<model>-{k}/``: each folder is a complete run.
``vbench2``
    ``<out>/<dimension>/{caption[:180]}-{k}.mp4``, VBench-2.0's own name byte for byte
    (a trailing space at the cut stays; nothing is normalised or sanitised). ``caption`` is
    the record's :attr:`~pila.generation.prompts.PromptRecord.evaluator_caption`: the short
    VBench-2.0 prompt, also when the video is generated from an augmented prompt
    (``record.prompt``), as VBench-2.0 asks. A prompt whose name no file system can hold
    (a ``/`` or NUL, or more than :data:`NAME_MAX_BYTES` bytes with the atomic writer's
    temporary sibling) gets no output: the run says so (:attr:`OutputLayout.unnamed`)
    instead of writing a name the evaluator will not find. VBench-2.0 expects
    :meth:`VBench2Layout.required_samples` videos per prompt (3; 20 for Diversity).
``videophy2``
    ``<out>/videos/{i:05d}_{slug}_{k}.mp4`` plus the CSV its auto-evaluator reads:
    VideoPhy-2 ``videophy2_input.csv`` with columns ``caption,videopath`` (SA and PC
    tasks) and, when the prompts carry a ``rule``, ``videophy2_rule_input.csv`` with
    ``videopath,rule``; VideoPhy (v1, ``videophy_version=1``) ``videophy_input.csv``
    with ``videopath,caption``.

For the benchmark layouts the sidecars live in a parallel tree, ``<out>/pila_meta/<the
video's relative path>.json``, so the evaluators' folders hold nothing but videos.

An output is complete when its mp4 and its sidecar both exist and the sidecar names the
same prompt and seed (the sidecar is written last, both atomically). CSV indexes are
rebuilt, atomically, from the complete outputs on disk.

Names derived from prompts are one path component under their folder, never ``.``,
``..`` or a path with a separator. The plain and VideoPhy layouts, whose names are ours,
use :func:`slugify`; other free text (model and dimension folders) goes through
:func:`sanitize_filename`: no path separators, no ``..``, no control characters, no
leading dot, at most ``max_bytes`` UTF-8 bytes (longer names are cut and get a short
hash). When two different prompts still map to the same name, the later one (in file
order) gets a hash suffix, so no output overwrites another (:attr:`OutputLayout.renamed`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pila.generation.prompts import PredictItem, PromptRecord
from pila.io import write_text_atomic

LayoutName = Literal["plain", "phygenbench", "vbench2", "videophy2"]
LAYOUTS: tuple[str, ...] = ("plain", "phygenbench", "vbench2", "videophy2")
META_DIR = "pila_meta"
"""Folder of the sidecars of the benchmark layouts."""

VBENCH_PROMPT_CHARS = 180
"""VBench-2.0 names a video after the first 180 characters of its prompt."""
MAX_NAME_BYTES = 200
"""Longest file-name stem (UTF-8 bytes) a layout writes; file systems allow 255."""
NAME_MAX_BYTES = 255
"""Longest file name (UTF-8 bytes) of the usual Linux file systems (ext4, xfs, btrfs)."""
TEMP_NAME_EXTRA_BYTES = 10
"""What :func:`pila.io.atomic_path`'s temporary sibling ``.{name}.{8 hex}{suffix}`` adds
to a name, besides the suffix."""
HASH_CHARS = 8
VBENCH2_SAMPLES = 3
"""Videos per prompt VBench-2.0's evaluator reads (``-0`` … ``-2``)."""
VBENCH2_DIVERSITY_SAMPLES = 20
"""Videos per prompt VBench-2.0's evaluator reads for the Diversity dimension."""

_SEPARATORS = re.compile(r"[/\\]")
_DOT_RUNS = re.compile(r"\.{2,}")


def short_hash(text: str, length: int = HASH_CHARS) -> str:
    """First ``length`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _truncate_bytes(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")[:max_bytes]
    return data.decode("utf-8", errors="ignore")


def sanitize_filename(name: str, *, max_bytes: int = MAX_NAME_BYTES, replacement: str = "_") -> str:
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
    text = "".join(replacement if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)
    text = _DOT_RUNS.sub(".", text).strip()
    if text.startswith("."):
        text = replacement + text[1:]
    if not text:
        text = replacement
    if len(text.encode("utf-8")) > max_bytes:
        suffix = "~" + short_hash(name)
        text = _truncate_bytes(text, max_bytes - len(suffix)).rstrip() + suffix
    return text


def slugify(text: str, max_chars: int = 48) -> str:
    """Lower-case ASCII slug: alphanumerics kept, everything else folded into ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_chars].rstrip("-") or "prompt"


@dataclass(frozen=True)
class OutputPaths:
    """The files of one output: the video and its sidecar."""

    video: Path
    sidecar: Path


def vbench2_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name written as is (None: it can).

    Only ``/`` and NUL are forbidden in a POSIX file name; the name, and the atomic
    writer's temporary sibling of its sidecar, must also fit in :data:`NAME_MAX_BYTES`.
    """
    if "/" in name:
        return "it holds '/', a path separator"
    if "\0" in name:
        return "it holds a NUL character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    # The sidecar's name is one byte longer (.json vs .mp4), and is written atomically.
    longest = size + 1 + TEMP_NAME_EXTRA_BYTES + len(".json")
    if longest > NAME_MAX_BYTES:
        return f"its file name takes {size} UTF-8 bytes; file names hold at most {NAME_MAX_BYTES} with the temporary file's {longest - size}"
    return None


def _check_component(name: str) -> str:
    """``name`` itself, after checking it is one path component (an internal invariant)."""
    assert name not in ("", ".", "..") and "/" not in name and "\0" not in name, name
    return name


class OutputLayout(ABC):
    """Maps work items to files under ``root`` and writes the layout's index files.

    Call :meth:`plan` with every record of the run (not only this rank's) before asking
    for paths: names that must not clash are decided over the whole prompt list.

    Args:
        root: the output folder.
    """

    name: ClassVar[str]

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._videos: dict[tuple[int, int], Path] = {}
        self._records: dict[int, PromptRecord] = {}
        self._counts: dict[int, int] = {}
        self.unnamed: dict[int, str] = {}
        """Prompt index → why its videos cannot get the evaluator's name (they get none)."""
        self.renamed: dict[int, str] = {}
        """Prompt index → the stem used instead of the evaluator's (a clash with an earlier prompt)."""

    # ------------------------------------------------------------------ planning
    def samples_for(self, record: PromptRecord, requested: int | None) -> int:
        """Videos of ``record``: ``requested``, or the layout's default when None (1)."""
        return 1 if requested is None else requested

    def sample_warnings(self, records: Sequence[PromptRecord], requested: int | None) -> list[str]:
        """Warnings about a requested sample count the evaluator will not accept (none here)."""
        return []

    def plan(self, records: Sequence[PromptRecord], videos_per_prompt: int | Mapping[int, int] = 1) -> None:
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
        self._counts = counts
        self.unnamed, self.renamed = {}, {}
        self._videos = {
            key: Path(*(_check_component(part) for part in rel.parts))
            for key, rel in self._relative_videos(records, counts).items()
        }

    @abstractmethod
    def _relative_videos(self, records: Sequence[PromptRecord], counts: dict[int, int]) -> dict[tuple[int, int], Path]:
        """(index, sample) → video path relative to ``root``; ``counts``: index → videos."""

    def has_output(self, item: PredictItem) -> bool:
        """Whether ``item`` has a planned output (False for :attr:`unnamed` prompts)."""
        return item.key in self._videos

    def planned_paths(self) -> list[OutputPaths]:
        """The files of every planned output."""
        return [OutputPaths(self.root / rel, self._sidecar_for(rel)) for _, rel in sorted(self._videos.items())]

    def index_paths(self) -> list[Path]:
        """The index files the layout may write (none by default)."""
        return []

    def _sidecar_for(self, relative_video: Path) -> Path:
        return self.root / META_DIR / relative_video.with_suffix(".json")

    def paths(self, item: PredictItem) -> OutputPaths:
        """The video and sidecar paths of ``item``."""
        try:
            rel = self._videos[item.key]
        except KeyError:
            if item.record.index in self.unnamed:
                raise KeyError(
                    f"prompt {item.record.index} has no output: {self.unnamed[item.record.index]}"
                ) from None
            raise KeyError(
                f"no output planned for prompt {item.record.index} sample {item.sample}; call plan() with every record first"
            ) from None
        return OutputPaths(video=self.root / rel, sidecar=self._sidecar_for(rel))

    # ----------------------------------------------------------------- resuming
    def is_complete(self, item: PredictItem) -> bool:
        """Both files exist and the sidecar names this item's prompt and seed."""
        paths = self.paths(item)
        if not (paths.video.is_file() and paths.sidecar.is_file()):
            return False
        meta = read_sidecar(paths.sidecar)
        return meta is not None and meta.get("prompt") == item.record.prompt and meta.get("seed") == item.seed

    def complete_outputs(self) -> list[tuple[PromptRecord, int, Path]]:
        """Every complete output of the planned run: (record, sample, video path), in order."""
        out = []
        for (index, sample), rel in sorted(self._videos.items()):
            record = self._records[index]
            paths = OutputPaths(self.root / rel, self._sidecar_for(rel))
            if paths.video.is_file() and paths.sidecar.is_file():
                meta = read_sidecar(paths.sidecar)
                if meta is not None and meta.get("prompt") == record.prompt:
                    out.append((record, sample, paths.video))
        return out

    def write_indexes(self) -> list[Path]:
        """Rebuild the layout's index files (CSVs) from the complete outputs; none by default."""
        return []


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's JSON object, or None when it cannot be read or parsed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class PlainLayout(OutputLayout):
    """``<out>/{i:05d}_{slug}_{k}.mp4`` with the sidecar next to the video."""

    name = "plain"

    def _relative_videos(self, records, counts):
        return {
            (r.index, k): Path(f"{r.index:05d}_{slugify(r.prompt)}_{k}.mp4")
            for r in records
            for k in range(counts[r.index])
        }

    def _sidecar_for(self, relative_video: Path) -> Path:
        return self.root / relative_video.with_suffix(".json")


class PhyGenBenchLayout(OutputLayout):
    """``<out>/<model>/output_video_{i+1}.mp4``; sample k > 0 in ``<out>/<model>-{k}/``.

    Args:
        root: the output folder.
        model_name: the evaluator's model folder name.
    """

    name = "phygenbench"

    def __init__(self, root: str | os.PathLike, model_name: str = "pila") -> None:
        super().__init__(root)
        self.model_name = sanitize_filename(model_name, max_bytes=100)

    def _relative_videos(self, records, counts):
        def folder(k: int) -> str:
            return self.model_name if k == 0 else f"{self.model_name}-{k}"

        return {
            (r.index, k): Path(folder(k)) / f"output_video_{r.index + 1}.mp4"
            for r in records
            for k in range(counts[r.index])
        }


class VBench2Layout(OutputLayout):
    """``<out>/<dimension>/{caption[:180]}-{k}.mp4``, VBench-2.0's name byte for byte.

    ``caption`` is the record's ``evaluator_caption`` (the short prompt; the video may be
    generated from an augmented one). Prompts whose name cannot be written are left out
    and listed in :attr:`unnamed`; a prompt whose name an earlier prompt of the same
    dimension already takes gets a hash suffix (:attr:`renamed`).

    Args:
        root: the output folder.
        dimension: the dimension of prompts whose record names none.
    """

    name = "vbench2"

    def __init__(self, root: str | os.PathLike, dimension: str | None = None) -> None:
        super().__init__(root)
        self.dimension = dimension

    @staticmethod
    def required_samples(dimension: str | None) -> int:
        """Videos per prompt VBench-2.0's evaluator reads for ``dimension`` (20 for Diversity, else 3)."""
        return VBENCH2_DIVERSITY_SAMPLES if dimension == "Diversity" else VBENCH2_SAMPLES

    def _raw_dimension(self, record: PromptRecord) -> str | None:
        return record.dimension or self.dimension

    def samples_for(self, record: PromptRecord, requested: int | None) -> int:
        """``requested``, or VBench-2.0's count for the record's dimension when None."""
        return self.required_samples(self._raw_dimension(record)) if requested is None else requested

    def sample_warnings(self, records: Sequence[PromptRecord], requested: int | None) -> list[str]:
        """One line per dimension whose prompts get fewer videos than VBench-2.0 reads."""
        if requested is None:
            return []
        dims = sorted({self._raw_dimension(r) or "" for r in records})
        return [
            f"videos_per_prompt {requested} is below the {self.required_samples(d)} videos per prompt "
            f"VBench-2.0 reads for {d or 'its dimension'}; its evaluator stops at the first missing video "
            "(leave videos_per_prompt unset for the evaluator's count)"
            for d in dims
            if requested < self.required_samples(d)
        ]

    def _dimension_of(self, record: PromptRecord) -> str:
        dim = self._raw_dimension(record)
        if not dim:
            raise ValueError(
                f"the vbench2 layout needs a dimension for prompt {record.index} ({record.prompt[:60]!r}): "
                "read a VBench-2.0 prompt list with data.init_args.format=vbench2 (the file name is the "
                "dimension) or set data.init_args.dimension / the writer's dimension"
            )
        return sanitize_filename(dim, max_bytes=100)

    def _relative_videos(self, records, counts):
        out: dict[tuple[int, int], Path] = {}
        taken: dict[tuple[str, str], int] = {}
        for r in records:
            dim = self._dimension_of(r)
            stem = r.evaluator_caption[:VBENCH_PROMPT_CHARS]
            names = [f"{stem}-{k}.mp4" for k in range(counts[r.index])]
            problem = next((p for p in map(vbench2_name_problem, names) if p is not None), None)
            if problem is not None:
                self.unnamed[r.index] = f"VBench-2.0 names its videos {names[0]!r} but {problem}"
                continue
            if (dim, stem) in taken:
                first = taken[(dim, stem)]
                suffix = "~" + short_hash(f"{r.index}:{r.prompt}")
                stem = _truncate_bytes(stem, MAX_NAME_BYTES - len(suffix)) + suffix
                self.renamed[r.index] = (
                    f"VBench-2.0's name for it, {names[0]!r}, is prompt {first}'s (same first "
                    f"{VBENCH_PROMPT_CHARS} characters in {dim}); its videos are named {stem!r}-k.mp4"
                )
            else:
                taken[(dim, stem)] = r.index
            for k in range(counts[r.index]):
                out[(r.index, k)] = Path(dim) / f"{stem}-{k}.mp4"
        return out


class VideoPhy2Layout(OutputLayout):
    """``<out>/videos/…mp4`` plus the VideoPhy-2 (or VideoPhy v1) evaluator CSV.

    Args:
        root: the output folder.
        version: 2 for VideoPhy-2 (``caption,videopath``), 1 for VideoPhy (``videopath,caption``).
        csv_paths: write absolute video paths, or paths relative to the CSV's folder.
    """

    name = "videophy2"

    def __init__(
        self, root: str | os.PathLike, version: Literal[1, 2] = 2, csv_paths: Literal["absolute", "relative"] = "absolute"
    ) -> None:
        super().__init__(root)
        if version not in (1, 2):
            raise ValueError(f"videophy version must be 1 or 2, got {version!r}")
        if csv_paths not in ("absolute", "relative"):
            raise ValueError(f"csv_paths must be 'absolute' or 'relative', got {csv_paths!r}")
        self.version = version
        self.csv_paths = csv_paths

    def _relative_videos(self, records, counts):
        return {
            (r.index, k): Path("videos") / f"{r.index:05d}_{slugify(r.prompt)}_{k}.mp4"
            for r in records
            for k in range(counts[r.index])
        }

    @property
    def csv_path(self) -> Path:
        return self.root / ("videophy2_input.csv" if self.version == 2 else "videophy_input.csv")

    @property
    def rule_csv_path(self) -> Path:
        return self.root / "videophy2_rule_input.csv"

    def index_paths(self) -> list[Path]:
        return [self.csv_path, self.rule_csv_path]

    def _video_field(self, video: Path) -> str:
        return str(video.resolve()) if self.csv_paths == "absolute" else video.relative_to(self.root).as_posix()

    def write_indexes(self) -> list[Path]:
        done = self.complete_outputs()
        columns = ["caption", "videopath"] if self.version == 2 else ["videopath", "caption"]
        rows = [{"caption": r.evaluator_caption, "videopath": self._video_field(v)} for r, _, v in done]
        written = [self.csv_path]
        _write_csv_atomic(self.csv_path, columns, rows)
        rules = [(r, v) for r, _, v in done if isinstance(r.extra.get("rule"), str)]
        if self.version == 2 and rules:
            rule_rows = [{"videopath": self._video_field(v), "rule": r.extra["rule"]} for r, v in rules]
            _write_csv_atomic(self.rule_csv_path, ["videopath", "rule"], rule_rows)
            written.append(self.rule_csv_path)
        return written


def _write_csv_atomic(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Every field quoted, so captions keep every character (a lone ``\\r`` included)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def make_layout(
    name: LayoutName,
    root: str | os.PathLike,
    *,
    model_name: str = "pila",
    dimension: str | None = None,
    videophy_version: Literal[1, 2] = 2,
    csv_paths: Literal["absolute", "relative"] = "absolute",
) -> OutputLayout:
    """Build a layout by name (options that a layout does not use are ignored)."""
    if name == "plain":
        return PlainLayout(root)
    if name == "phygenbench":
        return PhyGenBenchLayout(root, model_name=model_name)
    if name == "vbench2":
        return VBench2Layout(root, dimension=dimension)
    if name == "videophy2":
        return VideoPhy2Layout(root, version=videophy_version, csv_paths=csv_paths)
    raise ValueError(f"unknown layout {name!r}; valid: {', '.join(LAYOUTS)}")


__all__ = [
    "LAYOUTS",
    "META_DIR",
    "NAME_MAX_BYTES",
    "VBENCH2_DIVERSITY_SAMPLES",
    "VBENCH2_SAMPLES",
    "OutputLayout",
    "OutputPaths",
    "PhyGenBenchLayout",
    "PlainLayout",
    "VBench2Layout",
    "VideoPhy2Layout",
    "make_layout",
    "read_sidecar",
    "vbench2_name_problem",
    "sanitize_filename",
    "short_hash",
    "slugify",
]
