"""WISA-80K annotation records: parsing, validation, filters, rejections and the split.

The annotation file is a JSON list of records (``data/wisa-80k.json``); the fields this
project reads are the video key, ``captions``, ``duration`` (required), ``label``,
``fps``, ``width``, ``height``, ``motion_score``, ``motion_score_v2``,
``visual_quality_score``, ``text_bbox_num`` and ``physical_annotation`` (optional, but
type-checked when present). The video key is ``video_name`` (the published annotation
file) or, as WISA's released loader spells it, ``file`` (a file name or a relative path:
its last component names the video) or ``video_id`` (the name, ``.mp4`` added when it has
no extension); see :data:`VIDEO_KEYS`. Counts such as ``text_bbox_num`` may be written as
integral floats (``0.0``). ``physical_annotation`` holds ``phys_law``, ``q0``–``q4``,
``n0``–``n2`` and ``quantify_n*``; relabeling reads ``q0``–``q2`` from it. A record may
also carry ``pila_labels``, a list of category names written by ``pila prepare
--relabel-only`` (or by hand); when present it is used as is instead of the category
map. ``pila_description``, a string written next to it when an LLM prompt parser labeled
the record, is the refined description that conditions the adapter (see
:attr:`WisaRecord.description`).

WISA's prompt-side annotation records (``en_caption``, ``phys_law``, ``q0``–``q4``,
``label``, no video; :func:`is_prompt_side_record`) are prompts, not clips: building a cache
rejects each with reason ``no_video``, while relabeling, which needs only the text, keeps
them (``select_records(..., prompts=True)``). :mod:`.prompt_side` reads them for generation.

Bad data never stops a run: a record that cannot be used becomes a
:class:`~.rejections.Rejection` (:mod:`.rejections`), written to ``rejected.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pila.categories import CATEGORIES
from pila.io import read_json

from .rejections import RecordError, Rejection


@dataclass(frozen=True)
class WisaRecord:
    """A validated WISA-80K record.

    Attributes:
        video_name: file name of the video (``<sha256>.mp4`` in WISA-80K), from whichever
            of :data:`VIDEO_KEYS` the record uses.
        captions: the text prompt of the clip.
        duration: seconds, as annotated (0 for a prompt-side record, which has no video).
        index: position in the annotation file.
        raw: the record as read (the category map reads ``label``, ``physical_annotation``
            and the caption from it; relabeled annotations are written from it).
        labels: the eight-category labels, in :data:`~pila.categories.CATEGORIES` order
            (empty until relabeled, see :mod:`pila.datamodules.relabel`).
        description: the prompt parser's refined, physics-oriented description of the
            clip (the paper's "refined prompt feeds c"), set when an LLM parser labeled
            the record; empty when the caption itself conditions the adapter.
        text_boxes: ``text_bbox_num`` as an integer (None when absent).
    """

    video_name: str
    captions: str
    duration: float
    index: int
    raw: dict[str, Any] = field(repr=False, compare=False)
    labels: tuple[str, ...] = ()
    description: str = ""
    text_boxes: int | None = None

    @property
    def condition_text(self) -> str:
        """The text whose pooled embedding conditions the adapter: the refined description,
        or the caption when there is none."""
        return self.description or self.captions

    @property
    def id(self) -> str:
        """Clip id: the video name without its extension."""
        return Path(self.video_name).stem

    def number(self, key: str) -> float | None:
        """An optional numeric field (already type-checked by :func:`parse_record`)."""
        value = self.raw.get(key)
        return None if value is None else float(value)


VIDEO_KEYS: tuple[str, ...] = ("video_name", "file", "video_id")
"""Fields that name a record's video, in order of preference: ``video_name`` (WISA-80K's
annotation file), ``file`` and ``video_id`` (WISA's released loader)."""

PROMPT_SIDE_KEY = "en_caption"
"""The caption field of WISA's prompt-side annotation records (which name no video)."""

DEFAULT_VIDEO_SUFFIX = ".mp4"
"""Added to a ``video_id`` without an extension (WISA-80K's videos are ``<sha256>.mp4``)."""


def is_prompt_side_record(raw: Any) -> bool:
    """Whether ``raw`` is one of WISA's prompt-side annotation records: an object with an
    ``en_caption`` and none of the :data:`VIDEO_KEYS`."""
    return (
        isinstance(raw, dict)
        and PROMPT_SIDE_KEY in raw
        and all(raw.get(key) is None for key in VIDEO_KEYS)
    )


def _video_name(raw: dict[str, Any]) -> tuple[str, Any]:
    """(the key naming the video, the file name it gives); the name is ``None`` when it is
    unusable (not a non-empty string, or a path in ``video_name``/``video_id``)."""
    key = next((k for k in VIDEO_KEYS if raw.get(k) is not None), "")
    value = raw.get(key)
    if key == "video_id" and _is_integral(value):
        value = str(int(value))
    if not isinstance(value, str) or not value.strip():
        return key, None
    value = value.strip()
    if key == "file":  # a relative path in the released loader: the last component names the video
        value = value.replace("\\", "/").rsplit("/", 1)[-1]
    elif "/" in value or "\\" in value:
        return key, None
    if key == "video_id" and not Path(value).suffix:
        value += DEFAULT_VIDEO_SUFFIX
    return key, value or None


_OPTIONAL_NUMBERS = (
    "fps",
    "width",
    "height",
    "motion_score",
    "motion_score_v2",
    "visual_quality_score",
    "text_bbox_ratio",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integral(value: Any) -> bool:
    """An int, or a float with an integral value (``0.0``); never a bool."""
    return _is_number(value) and float(value).is_integer()


def parse_record(raw: Any, index: int, prompts: bool = False) -> WisaRecord:
    """Validate one annotation entry.

    Args:
        raw: the JSON value at position ``index`` of the annotation list.
        index: its position (reported in rejections).
        prompts: keep a prompt-side record (:func:`is_prompt_side_record`) as a record
            named ``<record N>`` with its ``en_caption`` as caption, for relabeling; when
            False it is rejected as ``no_video``.

    Returns:
        The :class:`WisaRecord`.

    Raises:
        RecordError: with reason ``malformed_record``, ``missing_field`` or ``malformed_field``.
    """
    placeholder = f"<record {index}>"
    if not isinstance(raw, dict):
        raise RecordError(
            Rejection(placeholder, "malformed_record", f"got {type(raw).__name__}", index)
        )
    prompt_side = is_prompt_side_record(raw)
    if prompt_side and not prompts:
        raise RecordError(Rejection(
            placeholder, "no_video",
            "a prompt-side annotation record (en_caption, phys_law, q0-q4, label; no "
            "video_name, file or video_id): use the file as a prompt file of `pila predict` "
            "(`pila prepare --relabel-only` labels it), not as training annotations",
            index,
        ))  # fmt: skip
    key, name = ("", placeholder) if prompt_side else _video_name(raw)
    if not key and not prompt_side:
        raise RecordError(Rejection(placeholder, "missing_field", " or ".join(VIDEO_KEYS), index))
    if name is None:
        raise RecordError(
            Rejection(placeholder, "malformed_field", f"{key}={raw.get(key)!r}", index)
        )

    def reject(reason: str, detail: str) -> RecordError:
        return RecordError(Rejection(name, reason, detail, index))

    caption_key = PROMPT_SIDE_KEY if prompt_side else "captions"
    captions = raw.get(caption_key)
    if captions is None:
        raise reject("missing_field", caption_key)
    if not isinstance(captions, str) or not captions.strip():
        raise reject("malformed_field", f"{caption_key} must be a non-empty string")
    duration = 0.0 if prompt_side else raw.get("duration")
    if duration is None:
        raise reject("missing_field", "duration")
    if not prompt_side and (not _is_number(duration) or duration <= 0):
        raise reject("malformed_field", f"duration={duration!r}")
    for key in _OPTIONAL_NUMBERS:
        value = raw.get(key)
        if value is not None and (not _is_number(value) or value < 0):
            raise reject("malformed_field", f"{key}={value!r}")
    boxes = raw.get("text_bbox_num")
    if boxes is not None and (not _is_integral(boxes) or boxes < 0):  # a count; 0.0 is fine
        raise reject("malformed_field", f"text_bbox_num={boxes!r}")
    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        raise reject("malformed_field", f"label={label!r}")
    annotation = raw.get("physical_annotation")
    if annotation is not None and not isinstance(annotation, dict):
        raise reject("malformed_field", "physical_annotation must be an object")
    labels = raw.get("pila_labels")
    if labels is not None:
        if not isinstance(labels, list) or any(lab not in CATEGORIES for lab in labels):
            raise reject(
                "malformed_field", f"pila_labels={labels!r} (valid: {', '.join(CATEGORIES)})"
            )
    description = raw.get("pila_description", "")
    if not isinstance(description, str):
        raise reject("malformed_field", f"pila_description={description!r} (a string)")
    return WisaRecord(
        video_name=name,
        captions=captions.strip(),
        duration=float(duration),
        index=index,
        raw=raw,
        description=description.strip(),
        text_boxes=None if boxes is None else int(boxes),
    )


@dataclass(frozen=True)
class FilterConfig:
    """Which records to keep (WISA's own pipeline keeps 2–10 s clips with ≤ 1 text box).

    Args:
        min_duration: shortest clip in seconds; None disables the bound. [ours: WISA's
            own pipeline keeps 2–10 s clips; the paper names no filter]
        max_duration: longest clip in seconds; None disables the bound. [ours: as
            ``min_duration``]
        max_text_boxes: most ``text_bbox_num`` allowed; None disables the filter. [ours:
            WISA's own pipeline drops clips with more than one text box]
        min_motion_score: least motion score; None disables the filter. [ours: off]
        min_quality: least ``visual_quality_score``; None disables the filter. [ours: off]
        motion_score_field: which annotation field ``min_motion_score`` tests.
    """

    min_duration: float | None = 2.0
    max_duration: float | None = 10.0
    max_text_boxes: int | None = 1
    min_motion_score: float | None = None
    min_quality: float | None = None
    motion_score_field: Literal["motion_score", "motion_score_v2"] = "motion_score"

    def __post_init__(self) -> None:
        for key in ("min_duration", "max_duration"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key} must be ≥ 0 or None, got {value}")
        if (
            self.min_duration is not None
            and self.max_duration is not None
            and self.min_duration > self.max_duration
        ):
            raise ValueError(
                f"min_duration {self.min_duration} exceeds max_duration {self.max_duration}"
            )
        if self.max_text_boxes is not None and self.max_text_boxes < 0:
            raise ValueError(f"max_text_boxes must be ≥ 0 or None, got {self.max_text_boxes}")
        if self.motion_score_field not in ("motion_score", "motion_score_v2"):
            raise ValueError(
                "motion_score_field must be motion_score or motion_score_v2, "
                f"got {self.motion_score_field!r}"
            )

    def check(self, record: WisaRecord) -> Rejection | None:
        """The rejection this record earns, or None when it passes every filter."""

        def reject(reason: str, detail: str) -> Rejection:
            return Rejection(record.video_name, reason, detail, record.index)

        d = record.duration
        if (self.min_duration is not None and d < self.min_duration) or (
            self.max_duration is not None and d > self.max_duration
        ):
            return reject(
                "duration_out_of_range",
                f"duration {d:g} s not in [{self.min_duration}, {self.max_duration}]",
            )
        if self.max_text_boxes is not None:
            boxes = record.text_boxes
            if boxes is None:
                return reject("missing_field", "text_bbox_num (needed by max_text_boxes)")
            if boxes > self.max_text_boxes:
                return reject(
                    "too_many_text_boxes", f"text_bbox_num {boxes} > {self.max_text_boxes}"
                )
        if self.min_motion_score is not None:
            score = record.number(self.motion_score_field)
            if score is None:
                return reject(
                    "missing_field", f"{self.motion_score_field} (needed by min_motion_score)"
                )
            if score < self.min_motion_score:
                return reject(
                    "low_motion", f"{self.motion_score_field} {score:g} < {self.min_motion_score:g}"
                )
        if self.min_quality is not None:
            quality = record.number("visual_quality_score")
            if quality is None:
                return reject("missing_field", "visual_quality_score (needed by min_quality)")
            if quality < self.min_quality:
                return reject(
                    "low_quality", f"visual_quality_score {quality:g} < {self.min_quality:g}"
                )
        return None


def load_annotations(path: str | os.PathLike) -> list[Any]:
    """Read an annotation file: a JSON list (WISA-80K) or JSON Lines (one record per line).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is neither a JSON list nor JSON Lines.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"annotation file {str(p)!r} does not exist (expected WISA-80K's data/wisa-80k.json)"
        )
    if p.suffix == ".jsonl":
        entries: list[Any] = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                # One broken line is a malformed record, not a reason to stop.
                entries.append({"__unparsable_line__": n, "error": str(err)})
        return entries
    try:
        data = read_json(p)
    except json.JSONDecodeError as err:
        raise ValueError(f"annotation file {str(p)!r} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(
            f"annotation file {str(p)!r} must hold a JSON list of records, "
            f"got {type(data).__name__}"
        )
    return data


def select_records(
    entries: Sequence[Any], filters: FilterConfig, prompts: bool = False
) -> tuple[list[WisaRecord], list[Rejection]]:
    """Parse every entry, drop duplicates and apply the filters.

    With ``prompts``, prompt-side records are kept too (see :func:`parse_record`); the
    filters, which are about videos, do not apply to them.

    Returns:
        (kept records in file order, rejections in file order).
    """
    kept: list[WisaRecord] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        if isinstance(raw, dict) and "__unparsable_line__" in raw:
            rejected.append(Rejection(f"<record {index}>", "malformed_record", raw["error"], index))
            continue
        try:
            record = parse_record(raw, index, prompts)
        except RecordError as err:
            rejected.append(err.rejection)
            continue
        if record.video_name in seen:
            rejected.append(
                Rejection(
                    record.video_name,
                    "duplicate_record",
                    "an earlier record names this video",
                    index,
                )
            )
            continue
        seen.add(record.video_name)
        problem = None if is_prompt_side_record(raw) else filters.check(record)
        if problem is not None:
            rejected.append(problem)
        else:
            kept.append(record)
    return kept, rejected

