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
``label``, no video) are prompts, not clips: each is rejected with reason ``no_video``
(:func:`is_prompt_side_record`); :func:`wisa_prompt` turns one into a caption and labels
for generation, through the category map exactly as relabeling labels a clip.

Bad data never stops a run: a record that cannot be used becomes a :class:`Rejection`
with one of the :data:`REJECTION_REASONS`, written to ``rejected.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pila.categories import CATEGORIES

if TYPE_CHECKING:
    from .relabel import CategoryMap

REJECTION_REASONS: dict[str, str] = {
    "malformed_record": "the entry is not a JSON object",
    "missing_field": "a required field (or one a filter needs) is absent or null",
    "no_video": "a prompt-side annotation record (en_caption, no video): a prompt for `pila predict`, not a clip",
    "malformed_field": "a field has the wrong type or an impossible value",
    "duplicate_record": "an earlier record already names this video",
    "duration_out_of_range": "duration outside [min_duration, max_duration]",
    "too_many_text_boxes": "text_bbox_num above max_text_boxes",
    "low_motion": "motion score below min_motion_score",
    "low_quality": "visual_quality_score below min_quality",
    "unlabeled": "the category map (or labeler) gave no category",
    "video_missing": "no video file of that name under the videos folder",
    "video_empty": "the video file has zero bytes",
    "video_undecodable": "the file (or zip member) is truncated, corrupt or not a video",
    "video_too_short": "fewer frames than the clip needs and short_clip='reject'",
}
"""Every reason a record or video can be rejected for, with its meaning."""


@dataclass(frozen=True)
class Rejection:
    """One skipped record: a line of ``rejected.jsonl``.

    Attributes:
        video_name: the record's ``video_name`` (or ``"<record N>"`` when it has none).
        reason: one of :data:`REJECTION_REASONS`.
        detail: a human-readable explanation (which field, which value, the decoder's error).
        index: position of the record in the annotation file.
    """

    video_name: str
    reason: str
    detail: str = ""
    index: int = -1

    def __post_init__(self) -> None:
        if self.reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}; valid: {', '.join(REJECTION_REASONS)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RecordError(Exception):
    """A record that cannot be used; carries the :class:`Rejection` that describes why."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.video_name}: {rejection.reason} ({rejection.detail})")
        self.rejection = rejection


@dataclass(frozen=True)
class WisaRecord:
    """A validated WISA-80K record.

    Attributes:
        video_name: file name of the video (``<sha256>.mp4`` in WISA-80K), from whichever
            of :data:`VIDEO_KEYS` the record uses.
        captions: the text prompt of the clip.
        duration: seconds, as annotated.
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


PROMPT_SIDE_ANNOTATION_KEYS: tuple[str, ...] = ("phys_law", "q0", "q1", "q2", "q3", "q4")
"""Fields of a prompt-side record that a WISA-80K record keeps under ``physical_annotation``."""


@dataclass(frozen=True)
class WisaPrompt:
    """One of WISA's prompt-side annotation records, read for generation.

    Attributes:
        caption: ``en_caption`` as written (the prompt; a reader may normalise whitespace).
        labels: the record's categories in :data:`~pila.categories.CATEGORIES` order, from
            its ``pila_labels`` when given, else from the category map exactly as relabeling
            labels a clip (``CategoryMap.labels_for_record``); empty when neither finds one
            (the prompt parser may then decide).
        extra: the record's other fields (``phys_law``, ``q0``–``q4``, ``label``, …), kept
            for the video's sidecar.
    """

    caption: str
    labels: tuple[str, ...]
    extra: dict[str, Any]


def as_wisa_record(prompt_record: dict[str, Any]) -> dict[str, Any]:
    """A prompt-side record reshaped as a WISA-80K record: ``en_caption`` → ``captions``,
    top-level ``phys_law``/``q0``–``q4`` → ``physical_annotation`` (entries already under
    ``physical_annotation`` win), ``label`` kept."""
    annotation = {k: prompt_record[k] for k in PROMPT_SIDE_ANNOTATION_KEYS if prompt_record.get(k) is not None}
    nested = prompt_record.get("physical_annotation")
    if isinstance(nested, dict):
        annotation.update(nested)
    shaped = {k: v for k, v in prompt_record.items() if k not in (PROMPT_SIDE_KEY, *PROMPT_SIDE_ANNOTATION_KEYS)}
    shaped["captions"] = prompt_record.get(PROMPT_SIDE_KEY)
    shaped["physical_annotation"] = annotation
    return shaped


def wisa_prompt(prompt_record: Any, category_map: CategoryMap) -> WisaPrompt:
    """Caption and labels of one WISA prompt-side annotation record, the relabeling way.

    Args:
        prompt_record: a JSON object with ``en_caption`` and optionally ``phys_law``,
            ``q0``–``q4``, ``label`` and ``pila_labels``.
        category_map: the map relabeling uses (``CategoryMap.load()``); its
            ``labels_for_record`` reads the reshaped record (:func:`as_wisa_record`): the
            q-answers through ``answer_fields``, the phenomenon through ``label_field``,
            the caption through the keyword rules.

    Returns:
        The :class:`WisaPrompt`.

    Raises:
        ValueError: the record is not an object, ``en_caption`` is missing or empty, or
            ``pila_labels`` names an unknown category (the message names the field).
    """
    if not isinstance(prompt_record, dict):
        raise ValueError(f"a WISA prompt record must be a JSON object, got {type(prompt_record).__name__}")
    caption = prompt_record.get(PROMPT_SIDE_KEY)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"a WISA prompt record needs a non-empty {PROMPT_SIDE_KEY!r} (fields: {sorted(prompt_record)})")
    given = prompt_record.get("pila_labels")
    if given:
        unknown = [name for name in given if name not in CATEGORIES] if isinstance(given, list) else [given]
        if unknown:
            raise ValueError(f"pila_labels={given!r} names unknown categories; valid: {', '.join(CATEGORIES)}")
        names = set(given)
    else:
        names = set(category_map.labels_for_record(as_wisa_record(prompt_record)))
    extra = {k: v for k, v in prompt_record.items() if k not in (PROMPT_SIDE_KEY, "pila_labels") and v not in (None, "")}
    return WisaPrompt(caption=caption, labels=tuple(c for c in CATEGORIES if c in names), extra=extra)


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


def parse_record(raw: Any, index: int) -> WisaRecord:
    """Validate one annotation entry.

    Args:
        raw: the JSON value at position ``index`` of the annotation list.
        index: its position (reported in rejections).

    Returns:
        The :class:`WisaRecord`.

    Raises:
        RecordError: with reason ``malformed_record``, ``missing_field`` or ``malformed_field``.
    """
    placeholder = f"<record {index}>"
    if not isinstance(raw, dict):
        raise RecordError(Rejection(placeholder, "malformed_record", f"got {type(raw).__name__}", index))
    if is_prompt_side_record(raw):
        raise RecordError(Rejection(
            placeholder, "no_video",
            "a prompt-side annotation record (en_caption, phys_law, q0-q4, label; no video_name, file "
            "or video_id): use the file as a prompt file of `pila predict`, not as training annotations",
            index,
        ))  # fmt: skip
    key, name = _video_name(raw)
    if not key:
        raise RecordError(Rejection(placeholder, "missing_field", " or ".join(VIDEO_KEYS), index))
    if name is None:
        raise RecordError(Rejection(placeholder, "malformed_field", f"{key}={raw.get(key)!r}", index))

    def reject(reason: str, detail: str) -> RecordError:
        return RecordError(Rejection(name, reason, detail, index))

    captions = raw.get("captions")
    if captions is None:
        raise reject("missing_field", "captions")
    if not isinstance(captions, str) or not captions.strip():
        raise reject("malformed_field", "captions must be a non-empty string")
    duration = raw.get("duration")
    if duration is None:
        raise reject("missing_field", "duration")
    if not _is_number(duration) or duration <= 0:
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
            raise reject("malformed_field", f"pila_labels={labels!r} (valid: {', '.join(CATEGORIES)})")
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
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise ValueError(f"min_duration {self.min_duration} exceeds max_duration {self.max_duration}")
        if self.max_text_boxes is not None and self.max_text_boxes < 0:
            raise ValueError(f"max_text_boxes must be ≥ 0 or None, got {self.max_text_boxes}")
        if self.motion_score_field not in ("motion_score", "motion_score_v2"):
            raise ValueError(f"motion_score_field must be motion_score or motion_score_v2, got {self.motion_score_field!r}")

    def check(self, record: WisaRecord) -> Rejection | None:
        """The rejection this record earns, or None when it passes every filter."""

        def reject(reason: str, detail: str) -> Rejection:
            return Rejection(record.video_name, reason, detail, record.index)

        d = record.duration
        if (self.min_duration is not None and d < self.min_duration) or (
            self.max_duration is not None and d > self.max_duration
        ):
            return reject("duration_out_of_range", f"duration {d:g} s not in [{self.min_duration}, {self.max_duration}]")
        if self.max_text_boxes is not None:
            boxes = record.text_boxes
            if boxes is None:
                return reject("missing_field", "text_bbox_num (needed by max_text_boxes)")
            if boxes > self.max_text_boxes:
                return reject("too_many_text_boxes", f"text_bbox_num {boxes} > {self.max_text_boxes}")
        if self.min_motion_score is not None:
            score = record.number(self.motion_score_field)
            if score is None:
                return reject("missing_field", f"{self.motion_score_field} (needed by min_motion_score)")
            if score < self.min_motion_score:
                return reject("low_motion", f"{self.motion_score_field} {score:g} < {self.min_motion_score:g}")
        if self.min_quality is not None:
            quality = record.number("visual_quality_score")
            if quality is None:
                return reject("missing_field", "visual_quality_score (needed by min_quality)")
            if quality < self.min_quality:
                return reject("low_quality", f"visual_quality_score {quality:g} < {self.min_quality:g}")
        return None


def load_annotations(path: str | os.PathLike) -> list[Any]:
    """Read an annotation file: a JSON list (WISA-80K) or JSON Lines (one record per line).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is neither a JSON list nor JSON Lines.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"annotation file {str(p)!r} does not exist (expected WISA-80K's data/wisa-80k.json)")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        entries: list[Any] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                # One broken line is a malformed record, not a reason to stop.
                entries.append({"__unparsable_line__": n, "error": str(err)})
        return entries
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"annotation file {str(p)!r} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"annotation file {str(p)!r} must hold a JSON list of records, got {type(data).__name__}")
    return data


def select_records(
    entries: Sequence[Any], filters: FilterConfig
) -> tuple[list[WisaRecord], list[Rejection]]:
    """Parse every entry, drop duplicates and apply the filters.

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
            record = parse_record(raw, index)
        except RecordError as err:
            rejected.append(err.rejection)
            continue
        if record.video_name in seen:
            rejected.append(Rejection(record.video_name, "duplicate_record", "an earlier record names this video", index))
            continue
        seen.add(record.video_name)
        problem = filters.check(record)
        if problem is not None:
            rejected.append(problem)
        else:
            kept.append(record)
    return kept, rejected


def rejection_counts(rejections: Iterable[Rejection]) -> dict[str, int]:
    """Number of rejections per reason, most frequent first."""
    return dict(Counter(r.reason for r in rejections).most_common())


# ------------------------------------------------------------------------- split
def split_score(video_name: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the video name and the seed (sha256-based)."""
    digest = hashlib.sha256(f"{seed}:{video_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_names(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/val split by a hash of each video name.

    A name goes to validation when its :func:`split_score` is below ``val_fraction``, so
    a clip's side never depends on which other clips exist. One exception keeps small
    sets usable: if that leaves validation empty while ``val_fraction > 0`` and there are
    at least two names, the name with the lowest score goes to validation.

    Returns:
        (train names, val names), each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    scores = {name: split_score(name, seed) for name in names}
    val = {name for name, s in scores.items() if s < val_fraction}
    if not val and val_fraction > 0 and len(scores) >= 2:
        val = {min(scores, key=scores.__getitem__)}
    return [n for n in names if n not in val], [n for n in names if n in val]
