"""Prompt files for ``pila predict``: readers, work items, the per-rank split and a DataModule.

Formats (``format=``; ``"auto"`` picks by extension and content):

``txt``
    one prompt per line (blank lines skipped; a line's 0-based position among the kept
    lines is its index).
``jsonl`` / ``json`` / ``csv``
    records with a ``prompt`` or ``caption`` field and optional ``seed`` (int),
    ``labels`` (a list of category names, or one string split at ``,``, ``;`` or ``|``),
    ``refined_prompt``, ``dimension`` and ``id``. A record that generates from another
    field than its evaluator's name gives the name in ``name_prompt`` (or ``caption``),
    which becomes :attr:`PromptRecord.caption`. A ``.json`` file holds a list of records
    (or of plain strings), or an object with such a list under ``"prompts"``.
``phygenbench``
    PhyGenBench's ``prompts.json``: a list of objects with ``caption``,
    ``physical_laws``, ``sub_category``, ``main_category`` (auto-detected for ``.json``);
    ``explicit_prompts.json`` adds ``explicit_caption``, generated from with
    ``prompt_column: explicit_caption``. The index is always the position in the file,
    the other captions stay in ``extra``.
``videophy`` / ``videophy2``
    the VideoPhy test CSV and the VideoPhy-2 CSV: a ``caption`` column (VideoPhy-2 also
    ``upsampled_caption``, ``action``, ``category``, ``is_hard``). ``prompt_column``
    chooses what conditions the generator (e.g. ``upsampled_caption``); the short
    ``caption`` is what the evaluator pairs with each video. Rows repeating an earlier
    caption (VideoPhy's test CSV lists each caption once per source model) are folded
    into the first (:func:`fold_duplicates`; the count is ``PromptDataModule.folded_duplicates``).
``vbench2``
    a VBench-2.0 prompt list: plain text, one prompt per line, the dimension taken from the
    file name (``Mechanics.txt`` → ``Mechanics``) unless ``dimension`` is given. A folder of
    such files is read whole (files in name order, indices running on across files).
``wisa``
    WISA's prompt-side annotation records (``en_caption``, ``phys_law``, ``q0``–``q4``,
    ``label``, no video; a JSON list or JSON Lines, auto-detected): ``en_caption`` is the
    prompt, the labels come from the q-answers through the category map, as relabeling
    labels a clip (no label: the prompt parser decides).

Augmented prompts (``augmented_file``): a second file, one prompt per line in the same
order, whose text is generated from while each record's own text stays the name the
evaluator looks for (VBench-2.0 asks for videos from its augmented lists to be named by
the short prompts).

Every problem with a prompt file (missing, unreadable, empty, unknown format, a bad
field) is a :class:`PromptFileError` naming the file, the row and the fix, raised in
``setup()`` before any video is generated.

Work is split into :class:`PredictItem` s, one per (prompt, sample). Sample ``k`` of the
prompt with index ``i`` gets seed ``record.seed + k`` when the file gives the prompt a
seed, else ``seed + i·N + k`` (N videos per prompt), so every video has its own seed and
``pila.generate``'s "prompt i gets seed + i" holds for N = 1.

Several GPUs: :func:`shard_indices` gives rank ``r`` of ``W`` the items ``r, r + W, …``
(no padding, so no duplicates and no gaps), wrapped in :class:`RankShardSampler` so
Lightning keeps it as is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from pila.categories import CATEGORIES
from pila.datamodules.prompt_side import wisa_prompt
from pila.datamodules.records import is_prompt_side_record
from pila.parser.category_map import CategoryMap

log = logging.getLogger(__name__)

PromptFormat = Literal["auto", "txt", "jsonl", "json", "csv", "phygenbench", "videophy", "videophy2", "vbench2", "wisa"]
PROMPT_FORMATS: tuple[str, ...] = (
    "auto",
    "txt",
    "jsonl",
    "json",
    "csv",
    "phygenbench",
    "videophy",
    "videophy2",
    "vbench2",
    "wisa",
)
_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
_PROMPT_KEYS = ("prompt", "caption")
_NAME_KEYS = ("name_prompt", "caption")
"""Fields naming the evaluator's short prompt when another field is generated from."""
_FOLDED_FORMATS = ("videophy", "videophy2")
"""Formats whose evaluators pair videos with captions, so a repeated caption is one prompt."""
_LABEL_SPLIT = re.compile(r"[,;|]")


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompt file.

    Attributes:
        index: 0-based position in the file (PhyGenBench's ``i`` in ``output_video_{i+1}``).
        prompt: the text that conditions the generator.
        seed: the prompt's own base seed, if the file gives one.
        labels: category names given by the file (None: the prompt parser decides).
        refined_prompt: a physics-oriented description given by the file (None: the parser).
        dimension: VBench-2.0 dimension (the folder its videos go to).
        caption: the short caption an evaluator pairs with the video (VideoPhy's SA task);
            None means ``prompt``.
        extra: other fields of the record, kept for the sidecar.
    """

    index: int
    prompt: str
    seed: int | None = None
    labels: tuple[str, ...] | None = None
    refined_prompt: str | None = None
    dimension: str | None = None
    caption: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluator_caption(self) -> str:
        return self.caption if self.caption is not None else self.prompt


@dataclass(frozen=True)
class PredictItem:
    """One video to generate: sample ``sample`` of ``record``, with its seed."""

    record: PromptRecord
    sample: int
    seed: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.record.index, self.sample)


# ----------------------------------------------------------------------------- reading
def _fail(path: Path, what: str) -> PromptFileError:
    return PromptFileError(f"prompt file {str(path)!r}: {what}")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"prompt file {str(path)!r} does not exist; set data.init_args.prompt_file to an existing file"
        )
    if not path.is_file():
        raise _fail(path, "is not a file; pass the prompt file itself, not a folder")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise _fail(path, f"is not UTF-8 text ({err}); save it as UTF-8") from err
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror or err}); check the path and its permissions") from err


def _detect_format(path: Path, text: str) -> str:
    ext = path.suffix.lower()
    if ext not in _EXTENSIONS:
        raise _fail(
            path,
            f"unknown prompt-file format (extension {ext or '<none>'!r}); use one of "
            f"{', '.join(_EXTENSIONS)} or name the format with data.init_args.format "
            f"(one of {', '.join(PROMPT_FORMATS[1:])})",
        )
    fmt = _EXTENSIONS[ext]
    if fmt in ("json", "jsonl"):
        try:
            data = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return fmt  # the reader reports the error with its position
        if not isinstance(data, list) or not data:
            return fmt
        if fmt == "json" and all(isinstance(d, dict) and "physical_laws" in d for d in data):
            return "phygenbench"
        if all(is_prompt_side_record(d) for d in data):
            return "wisa"
    return fmt


def _parse_labels(value: Any, path: Path, where: str) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        names = [v.strip() for v in _LABEL_SPLIT.split(value) if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise _fail(path, f"{where}: 'labels' must be a list of category names or a string like 'fluid;thermal'")
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise _fail(path, f"{where}: unknown categories {unknown}; valid: {', '.join(CATEGORIES)}")
    return tuple(c for c in CATEGORIES if c in names)


def _parse_seed(value: Any, path: Path, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _fail(path, f"{where}: 'seed' must be an integer, got {value!r}")
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise _fail(path, f"{where}: 'seed' must be an integer, got {value!r}") from None
    if isinstance(value, float) and value != seed:
        raise _fail(path, f"{where}: 'seed' must be an integer, got {value!r}")
    return seed


def _clean(value: Any) -> str:
    return " ".join(str(value).split())


def _as_written(raw: Any, prompt: str) -> str | None:
    """The source text as the file wrote it, when cleaning changed it (else None).

    The prompt that conditions the generator is cleaned (whitespace runs collapsed); what
    an evaluator matches (VBench-2.0's ``prompt[:180]`` names, the captions of VideoPhy's
    CSVs) must be the source text byte for byte, so it is kept as the record's caption.
    """
    text = str(raw)
    return text if text != prompt else None


def _line_record(index: int, line: str, dimension: str | None) -> PromptRecord:
    prompt = _clean(line)
    return PromptRecord(index=index, prompt=prompt, dimension=dimension, caption=_as_written(line, prompt))


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _record_from_mapping(
    row: dict[str, Any], index: int, path: Path, where: str, prompt_column: str | None
) -> PromptRecord:
    keys = (prompt_column,) if prompt_column else _PROMPT_KEYS
    key = next((k for k in keys if _text(row, k)), None)
    if key is None:
        wanted = f"a non-empty {prompt_column!r}" if prompt_column else "a non-empty 'prompt' or 'caption'"
        raise _fail(path, f"{where} has no prompt: every record needs {wanted} field (fields: {sorted(row)})")
    # The evaluator's short prompt, when the record generates from another field.
    name_key = next((k for k in _NAME_KEYS if k != key and _text(row, k)), None)
    refined = _text(row, "refined_prompt")
    dimension = _text(row, "dimension")
    known = {key, "seed", "labels", "refined_prompt", "dimension", *([name_key] if name_key else [])}
    prompt = _clean(row[key])
    return PromptRecord(
        index=index,
        prompt=prompt,
        seed=_parse_seed(row.get("seed"), path, where),
        labels=_parse_labels(row.get("labels"), path, where),
        refined_prompt=_clean(refined) if refined else None,
        dimension=dimension.strip() if dimension else None,
        caption=str(row[name_key]) if name_key else _as_written(row[key], prompt),
        extra={k: v for k, v in row.items() if isinstance(k, str) and k not in known and v not in (None, "")},
    )


def _read_lines(path: Path, text: str) -> list[str]:
    """The non-blank lines as written (line endings removed, nothing else)."""
    return [line for line in text.splitlines() if line.strip()]


def _read_jsonl(path: Path, text: str, prompt_column: str | None) -> list[PromptRecord]:
    records: list[PromptRecord] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(path, f"line {lineno} is not valid JSON ({err.msg}); write one JSON object per line") from err
        where = f"line {lineno}"
        if isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict):
            raise _fail(path, f"{where} must be a JSON object with a 'prompt' field")
        records.append(_record_from_mapping(row, len(records), path, where, prompt_column))
    return records


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err


def _read_json(path: Path, text: str, prompt_column: str | None) -> list[PromptRecord]:
    data = _load_json(path, text)
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise _fail(path, "must hold a list of records (or an object with a 'prompts' list)")
    records = []
    for i, row in enumerate(data):
        if isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict):
            raise _fail(path, f"entry {i} must be an object with a 'prompt' field or a string")
        records.append(_record_from_mapping(row, i, path, f"entry {i}", prompt_column))
    return records


def _read_phygenbench(path: Path, text: str, prompt_column: str | None) -> list[PromptRecord]:
    """PhyGenBench's ``prompts.json`` / ``explicit_prompts.json``: the index is the position
    in the file; ``prompt_column`` (e.g. ``explicit_caption``) picks the generated text, the
    short ``caption`` stays the evaluator's and every other field goes to ``extra``."""
    data = _load_json(path, text)
    if not isinstance(data, list):
        raise _fail(path, "PhyGenBench prompts.json must hold a list of objects with a 'caption'")
    key = prompt_column or "caption"
    records = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not _text(row, key):
            fields = sorted(row) if isinstance(row, dict) else type(row).__name__
            fix = "" if key == "caption" else "; fix data.init_args.prompt_column"
            raise _fail(path, f"entry {i} needs a non-empty {key!r} (PhyGenBench format; fields: {fields}){fix}")
        short = _text(row, "caption")
        records.append(PromptRecord(
            index=i,
            prompt=_clean(row[key]),
            caption=short if short and key != "caption" else _as_written(row[key], _clean(row[key])),
            extra={k: v for k, v in row.items() if k != key and v not in (None, "")},
        ))  # fmt: skip
    return records


def _read_wisa(path: Path, rows: list[Any], prompt_column: str | None, category_map: CategoryMap) -> list[PromptRecord]:
    """WISA's prompt-side annotation records: ``en_caption`` is the prompt, the labels come
    from the q-answers through the category map (as relabeling labels a clip); no label
    leaves the choice to the prompt parser."""
    records = []
    for i, row in enumerate(rows):
        where = f"entry {i}"
        if not is_prompt_side_record(row):
            raise _fail(path, f"{where} is not a WISA prompt record (it needs 'en_caption' and names no video)")
        try:
            wisa = wisa_prompt(row, category_map)
        except ValueError as err:
            raise _fail(path, f"{where}: {err}") from err
        key = prompt_column or "en_caption"
        if not _text(row, key):
            raise _fail(path, f"{where} has no {key!r} (fields: {sorted(row)}); fix data.init_args.prompt_column")
        extra = {k: v for k, v in wisa.extra.items() if k not in (key, "seed")}
        if key != "en_caption":
            extra["en_caption"] = wisa.caption
        records.append(PromptRecord(
            index=i,
            prompt=_clean(row[key]),
            seed=_parse_seed(row.get("seed"), path, where),
            labels=wisa.labels or None,
            extra=extra,
        ))  # fmt: skip
    return records


def _read_csv(path: Path, text: str, prompt_column: str | None, require: str | None = None) -> list[PromptRecord]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if require and require not in columns:
        raise _fail(path, f"needs a {require!r} column (columns: {columns})")
    if prompt_column and prompt_column not in columns:
        raise _fail(path, f"has no column {prompt_column!r} (columns: {columns}); fix data.init_args.prompt_column")
    if not prompt_column and not any(k in columns for k in _PROMPT_KEYS):
        raise _fail(path, f"needs a 'prompt' or 'caption' column (columns: {columns})")
    records = []
    for rowno, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        records.append(_record_from_mapping(dict(row), len(records), path, f"row {rowno}", prompt_column))
    return records


def read_prompt_file(
    path: str | os.PathLike,
    format: PromptFormat = "auto",
    *,
    prompt_column: str | None = None,
    dimension: str | None = None,
    augmented_file: str | os.PathLike | None = None,
    category_map: CategoryMap | str | os.PathLike | None = None,
) -> list[PromptRecord]:
    """Read a prompt file into records (see the module docstring for the formats).

    Args:
        path: the prompt file.
        format: one of :data:`PROMPT_FORMATS`; ``"auto"`` picks by extension and content.
        prompt_column: the field that conditions the generator (default ``prompt``, then
            ``caption``); e.g. ``upsampled_caption`` for VideoPhy-2's long prompts or
            ``explicit_caption`` for PhyGenBench's ``explicit_prompts.json``.
        dimension: the VBench-2.0 dimension of every prompt (default for ``vbench2``: the
            file's stem).
        augmented_file: rewritten prompts paired line by line with ``path`` (a folder of
            them when ``path`` is a folder): line i is generated from, record i's own
            text stays the evaluator's name (:func:`pair_augmented`).
        category_map: the category map WISA prompt records are labeled with (a loaded
            map or its file; None: the shipped ``category_map.json``).

    Raises:
        FileNotFoundError: the file does not exist.
        PromptFileError: unreadable, empty, unknown format, or a bad record.
    """
    p = Path(path).expanduser()
    if format not in PROMPT_FORMATS:
        raise PromptFileError(f"unknown prompt format {format!r}; valid: {', '.join(PROMPT_FORMATS)}")
    if format == "vbench2" and p.is_dir():
        return _read_vbench2_folder(p, dimension, augmented_file)
    text = _read_text(p)
    if not text.strip():
        raise _fail(p, "is empty; write one prompt per line (.txt) or records with a 'prompt' field")
    fmt = _detect_format(p, text) if format == "auto" else format
    if prompt_column and fmt in ("txt", "vbench2"):
        log.warning("prompt file %s is plain text (one prompt per line): prompt_column %r does not apply", p, prompt_column)
    if fmt in ("txt", "vbench2"):
        dim = dimension if dimension is not None else (p.stem if fmt == "vbench2" else None)
        records = [_line_record(i, line, dim) for i, line in enumerate(_read_lines(p, text))]
    elif fmt == "jsonl":
        records = _read_jsonl(p, text, prompt_column)
    elif fmt == "json":
        records = _read_json(p, text, prompt_column)
    elif fmt == "phygenbench":
        records = _read_phygenbench(p, text, prompt_column)
    elif fmt == "wisa":
        records = _read_wisa(p, _load_rows(p, text), prompt_column, _category_map(category_map))
    elif fmt == "csv":
        records = _read_csv(p, text, prompt_column)
    else:  # videophy, videophy2
        records = _read_csv(p, text, prompt_column or "caption", require="caption")
    if not records:
        raise _fail(p, "holds no prompts; write one prompt per line (.txt) or records with a 'prompt' field")
    if dimension is not None and fmt not in ("txt", "vbench2"):
        records = [replace(r, dimension=dimension) for r in records]
    if augmented_file is not None:
        records = pair_augmented(records, p, augmented_file)
    return records


def _load_rows(path: Path, text: str) -> list[Any]:
    """The records of a JSON list or a JSON Lines file."""
    if path.suffix.lower() == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise _fail(path, f"line {lineno} is not valid JSON ({err.msg}); write one JSON object per line") from err
        return rows
    data = _load_json(path, text)
    if not isinstance(data, list):
        raise _fail(path, "must hold a JSON list of records")
    return data


def _category_map(category_map: CategoryMap | str | os.PathLike | None) -> CategoryMap:
    if isinstance(category_map, CategoryMap):
        return category_map
    return CategoryMap.load(category_map)


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
    text = _read_text(aug)
    lines = _read_lines(aug, text)
    if len(lines) != len(records):
        raise PromptFileError(
            f"augmented prompt file {str(aug)!r} has {len(lines)} prompts but {_source(path)} has "
            f"{len(records)}; they pair line by line, so give the augmented file of the same prompt list"
        )
    return [replace(r, prompt=_clean(line), caption=r.evaluator_caption) for r, line in zip(records, lines, strict=True)]


_INLINE = "the inline prompts list"


def _source(path: str | os.PathLike) -> str:
    return _INLINE if str(path) == _INLINE else f"prompt file {str(path)!r}"


def fold_duplicates(records: Sequence[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """One record per distinct (prompt, evaluator caption), first occurrence first.

    VideoPhy's test CSV lists each caption once per source model (3,360 rows for 344
    captions); its evaluator pairs videos with captions, so each caption is generated once
    (``videos_per_prompt`` times). Indices are renumbered over the kept records.

    Returns:
        (kept records, number of rows folded into an earlier one).
    """
    seen: set[tuple[str, str]] = set()
    kept: list[PromptRecord] = []
    for record in records:
        key = (record.prompt, record.evaluator_caption)
        if key not in seen:
            seen.add(key)
            kept.append(replace(record, index=len(kept)))
    return kept, len(records) - len(kept)


def _read_vbench2_folder(folder: Path, dimension: str | None, augmented: str | os.PathLike | None) -> list[PromptRecord]:
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise _fail(folder, "holds no .txt prompt lists; VBench-2.0 prompt files are <Dimension>.txt")
    aug_folder = Path(augmented).expanduser() if augmented is not None else None
    if aug_folder is not None and not aug_folder.is_dir():
        raise _fail(folder, f"is a folder, so augmented_file must be a folder of the same <Dimension>.txt files, got {str(aug_folder)!r}")
    records: list[PromptRecord] = []
    for file in files:
        text = _read_text(file)
        dim = dimension if dimension is not None else file.stem
        part = [_line_record(len(records) + i, line, dim) for i, line in enumerate(_read_lines(file, text))]
        if aug_folder is not None and part:
            if not (aug_folder / file.name).is_file():
                raise _fail(aug_folder, f"has no {file.name} to pair with {file}; augmented files keep the prompt files' names")
            part = pair_augmented(part, file, aug_folder / file.name)
        records += part
    if not records:
        raise _fail(folder, "its .txt prompt lists are all empty")
    return records


# -------------------------------------------------------------------------- work items
def build_items(records: Sequence[PromptRecord], videos_per_prompt: int = 1, seed: int = 0) -> list[PredictItem]:
    """One :class:`PredictItem` per (record, sample), in file order.

    Seeds: ``record.seed + k`` when the record has a seed, else ``seed + index·N + k``.
    """
    if videos_per_prompt < 1:
        raise ValueError(f"videos_per_prompt must be at least 1, got {videos_per_prompt}")
    items = []
    for record in records:
        for k in range(videos_per_prompt):
            base = record.seed if record.seed is not None else seed + record.index * videos_per_prompt
            items.append(PredictItem(record=record, sample=k, seed=base + k))
    return items


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank`` of ``world_size`` takes items ``rank, rank + W, rank + 2W, …``.

    The shares are disjoint and cover ``range(num_items)``; ranks differ by at most one
    item. Nothing is padded or repeated.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    if num_items < 0:
        raise ValueError(f"num_items must be non-negative, got {num_items}")
    return list(range(rank, num_items, world_size))


class PromptItemDataset(Dataset):
    """A map-style dataset over :class:`PredictItem` s."""

    def __init__(self, items: Sequence[PredictItem]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PredictItem:
        return self.items[index]


class RankShardSampler(DistributedSampler):
    """This rank's share (:func:`shard_indices`), minus the items ``skip`` says are done.

    A ``DistributedSampler`` subclass, so Lightning neither wraps nor replaces it. The
    share is fixed before filtering, so what one rank has finished never moves work
    between ranks.

    Args:
        dataset: the items.
        rank: this process's global rank.
        world_size: number of processes.
        skip: ``item → True`` for items that need no work (complete outputs).
    """

    def __init__(
        self,
        dataset: PromptItemDataset,
        rank: int,
        world_size: int,
        skip: Callable[[PredictItem], bool] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        share = shard_indices(len(dataset), rank, world_size)
        self.indices = [i for i in share if skip is None or not skip(dataset[i])]
        self.skipped = len(share) - len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_items(items: list[PredictItem]) -> list[PredictItem]:
    """Batches stay lists of items (the prompts are strings, nothing to stack)."""
    return list(items)


class PromptDataModule(pl.LightningDataModule):
    """Prompts for ``pila predict``: one batch of :class:`PredictItem` s per step.

    Give exactly one of ``prompt_file`` and ``prompts``. On the command line the later
    source wins: ``--data.init_args.prompt_file F`` replaces a config's inline ``prompts``
    and ``--data.init_args.prompts [...]`` a config's ``prompt_file`` (``pila.cli``
    settles it before this class is built). A relative ``prompt_file`` or
    ``augmented_file`` written in a config file is looked up next to that config file
    first, then in the current directory; one typed on the command line is relative to
    the current directory.

    Args:
        prompt_file: the prompt file (see the module docstring for the formats).
        prompts: prompts written inline instead of a file (one record each).
        format: the file's format; ``"auto"`` picks by extension and content.
        videos_per_prompt: N videos per prompt; None lets the writer's layout decide: VBench-2.0's
            own count per dimension under ``vbench2`` (3; 20 for Diversity), else 1. [ours]
        seed: base seed; sample k of prompt i gets ``seed + i·N + k`` unless the file
            gives the prompt its own seed. [ours: any fixed seed]
        prompt_column: the field that conditions the generator (default ``prompt``, then
            ``caption``; ``en_caption`` for WISA prompt records).
        dimension: VBench-2.0 dimension for every prompt (default for ``vbench2``: the
            file's stem).
        augmented_file: rewritten prompts paired line by line with the prompt list (a
            folder of same-named files for a folder of VBench-2.0 lists): the videos are
            generated from them and still named and captioned by the original prompts.
        category_map: the category map file that labels WISA prompt records (None: the
            shipped one; a relative path is relative to the current directory).
        limit: only the first ``limit`` prompts (None: all).
        batch_size: items per predict step. [ours: 1, as videos are generated one at a time anyway]
    """

    def __init__(
        self,
        prompt_file: str | None = None,
        prompts: list[str] | None = None,
        format: PromptFormat = "auto",
        videos_per_prompt: int | None = None,
        seed: int = 0,
        prompt_column: str | None = None,
        dimension: str | None = None,
        augmented_file: str | None = None,
        category_map: str | None = None,
        limit: int | None = None,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        if (prompt_file is None) == (prompts is None):
            raise ValueError(
                "PromptDataModule needs exactly one of prompt_file (a file) or prompts (a list); "
                + ("got both: drop one (on the command line the later of the two wins)" if prompts is not None else "got neither")
            )
        if prompts is not None and not [p for p in prompts if p.strip()]:
            raise ValueError("PromptDataModule: the prompts list is empty; give at least one non-empty prompt")
        if videos_per_prompt is not None and videos_per_prompt < 1:
            raise ValueError(f"videos_per_prompt must be at least 1, got {videos_per_prompt}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for all prompts), got {limit}")
        if format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt format {format!r}; valid: {', '.join(PROMPT_FORMATS)}")
        self.prompt_file = prompt_file
        self.prompts = prompts
        self.format = format
        self.videos_per_prompt = videos_per_prompt
        self.seed = seed
        self.prompt_column = prompt_column
        self.dimension = dimension
        self.augmented_file = augmented_file
        self.category_map = category_map
        self.limit = limit
        self.batch_size = batch_size
        self.records: list[PromptRecord] = []
        self.items: list[PredictItem] = []
        self.folded_duplicates = 0
        """Rows folded into an earlier one with the same caption (VideoPhy's repeated rows)."""
        self.skip: Callable[[PredictItem], bool] | None = None
        """Set by the prediction writer: items it already has complete outputs for."""
        # On a resumed run one rank may have nothing left while the others still work.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: str | None = None) -> None:
        """Read and check the prompt file (every error is raised here, before generation)."""
        if self.records:
            return
        if self.prompts is not None:
            records = [_line_record(i, p, self.dimension) for i, p in enumerate(q for q in self.prompts if q.strip())]
            if self.augmented_file is not None:
                records = pair_augmented(records, _INLINE, self.augmented_file)
        else:
            records = read_prompt_file(
                self.prompt_file,
                self.format,
                prompt_column=self.prompt_column,
                dimension=self.dimension,
                augmented_file=self.augmented_file,
                category_map=self.category_map,
            )
        if self.format in _FOLDED_FORMATS:
            records, self.folded_duplicates = fold_duplicates(records)
            if self.folded_duplicates:
                log.info(
                    "%s: %d rows repeat an earlier caption and were folded; %d distinct captions remain",
                    self.prompt_file, self.folded_duplicates, len(records),
                )  # fmt: skip
        self.records = records[: self.limit] if self.limit is not None else records
        self.items = build_items(self.records, self.videos_per_prompt or 1, self.seed)
        source = self.prompt_file if self.prompt_file is not None else "the inline list"
        count = self.videos_per_prompt or "the layout's count of"  # None: the writer sets it per prompt
        log.info("%d prompts × %s videos from %s", len(self.records), count, source)

    def summary(self) -> dict[str, Any]:
        """What was read, for a run's summary: source, counts and folded duplicate rows."""
        return {
            "prompt_file": self.prompt_file,
            "augmented_file": self.augmented_file,
            "format": self.format,
            "prompts": len(self.records),
            "videos_per_prompt": self.videos_per_prompt,
            "videos": len(self.items),
            "folded_duplicates": self.folded_duplicates,
        }

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Batches are work items (strings and ints): nothing to move."""
        return batch

    def predict_dataloader(self) -> DataLoader:
        if not self.items:
            self.setup("predict")
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        dataset = PromptItemDataset(self.items)
        sampler = RankShardSampler(dataset, rank, world, skip=self.skip)
        if sampler.skipped:
            log.info("rank %d: %d of its videos are already complete and are skipped", rank, sampler.skipped)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_items)


__all__ = [
    "PROMPT_FORMATS",
    "PredictItem",
    "PromptDataModule",
    "PromptFileError",
    "PromptItemDataset",
    "PromptRecord",
    "RankShardSampler",
    "build_items",
    "collate_items",
    "fold_duplicates",
    "pair_augmented",
    "read_prompt_file",
    "shard_indices",
]
