"""Why a record or video was skipped: the reasons, ``rejected.jsonl``, and the advice.

Bad data never stops a run: a record that cannot be used becomes a :class:`Rejection`
with one of the :data:`REJECTION_REASONS`, written to ``rejected.jsonl``
(:func:`write_rejected`). When nothing is left, :func:`nothing_kept_message` names the
rejections per reason and, from :data:`REJECTION_ADVICE`, what to check for each.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pila.io import write_text_atomic

REJECTION_REASONS: dict[str, str] = {
    "malformed_record": "the entry is not a JSON object",
    "missing_field": "a required field (or one a filter needs) is absent or null",
    "no_video": "a prompt-side annotation record (en_caption, no video) while building a cache: "
    "a prompt for `pila predict` (`--relabel-only` labels it), not a clip",
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

REJECTION_ADVICE: dict[str, str] = {
    "malformed_record": "that --annotations is a WISA-format annotation file (a JSON list of "
    "records, or JSON Lines)",
    "missing_field": "that the records have the fields WISA-80K's have (video_name, captions, "
    "duration, …)",
    "no_video": "that --annotations names videos (a WISA prompt file is labeled by "
    "--relabel-only and generated from by `pila predict`)",
    "malformed_field": "the records' field types (see rejected.jsonl for each one)",
    "duplicate_record": "for repeated video_name values in --annotations",
    "duration_out_of_range": "--min-duration / --max-duration ('none' lifts a bound)",
    "too_many_text_boxes": "--max-text-boxes ('none' lifts the filter)",
    "low_motion": "--min-motion-score ('none' lifts the filter)",
    "low_quality": "--min-quality ('none' lifts the filter)",
    "unlabeled": "--category-map (or --llm-labeler): no record got a category",
    "video_missing": "--videos (the folder with the <N>.zip shards, their per-shard folders or "
    "the .mp4 files) and that the video names match",
    "video_empty": "the video files: they are empty",
    "video_undecodable": "the video files: they are truncated, corrupt or not videos",
    "video_too_short": "--num-frames / --fps, or --short-clip loop",
}
"""What to check for each rejection reason when nothing is left."""


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
            raise ValueError(
                f"unknown rejection reason {self.reason!r}; valid: {', '.join(REJECTION_REASONS)}"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RecordError(Exception):
    """A record that cannot be used; carries the :class:`Rejection` that describes why."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.video_name}: {rejection.reason} ({rejection.detail})")
        self.rejection = rejection


class NoUsableRecordsError(ValueError):
    """Every record of the annotation file was rejected: there is nothing to cache or label."""


def rejection_counts(rejections: Iterable[Rejection]) -> dict[str, int]:
    """Number of rejections per reason, most frequent first."""
    return dict(Counter(r.reason for r in rejections).most_common())


def write_rejected(path: str | os.PathLike, rejections: Sequence[dict[str, Any]]) -> None:
    """Write ``rejected.jsonl`` (one :meth:`Rejection.to_json` object a line) atomically."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejections))


def nothing_kept_message(
    annotations: str | os.PathLike, num_entries: int, counts: Counter, rejected_path: Path
) -> str:
    """Why ``pila prepare`` kept no record: the rejections per reason and what to check."""
    reasons = "; ".join(f"{reason}: {count}" for reason, count in counts.most_common())
    checks = "; ".join(
        REJECTION_ADVICE[r] for r, _ in counts.most_common() if r in REJECTION_ADVICE
    )
    return (
        f"no usable records: all {num_entries} entries of {annotations} were rejected "
        f"({reasons or 'the annotation file is empty'}); details in {rejected_path}. "
        f"Check {checks or 'the annotation file'}"
    )
