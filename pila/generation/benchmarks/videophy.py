"""VideoPhy and VideoPhy-2: their prompt CSVs and the CSVs their auto-evaluators read.

Formats ``videophy`` / ``videophy2``: the VideoPhy test CSV and the VideoPhy-2 CSV, read
by their ``caption`` column (VideoPhy-2 also has ``upsampled_caption``, ``action``,
``category``, ``is_hard``). ``prompt_column`` chooses what conditions the generator (e.g.
``upsampled_caption``); the short ``caption`` is what the evaluator pairs with each video.
Rows repeating an earlier caption (VideoPhy's test CSV lists each caption once per source
model) are folded into the first
(:func:`~pila.generation.prompts.fold_duplicates`). Without a ``format`` a ``.csv`` is
recognised by its columns: a ``caption`` with VideoPhy-2's ``upsampled_caption`` or
``is_hard`` is ``videophy2``; a ``caption`` with VideoPhy's ``states_of_matter``, or with
both ``video_url`` and ``source``, is ``videophy``.

Layout (:class:`VideoPhy2Layout`): ``<out>/videos/{i:05d}_{slug}_{k}.mp4`` plus the CSV the
auto-evaluator reads: VideoPhy-2 ``videophy2_input.csv`` with columns ``caption,videopath``
(SA and PC tasks) and, when the prompts carry a ``rule``, ``videophy2_rule_input.csv`` with
``videopath,rule``; VideoPhy (v1, ``version: 1``) ``videophy_input.csv`` with
``videopath,caption``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pila.generation.layouts import OutputLayout, indexed_slug, write_csv_atomic
from pila.generation.readers import PromptReader, PromptSource, ReadOptions, csv_records
from pila.generation.records import PromptRecord

VIDEOPHY2_COLUMNS = ("upsampled_caption", "is_hard")
"""Columns of VideoPhy-2's prompt CSV that no VideoPhy (v1) CSV has; any one marks it."""
VIDEOPHY_COLUMNS = ("states_of_matter",)
"""Columns of VideoPhy's test CSV that mark it on their own."""
VIDEOPHY_COLUMN_PAIR = ("video_url", "source")
"""Columns of VideoPhy's test CSV that mark it together."""


def _marked(columns: tuple[str, ...], markers: tuple[str, ...]) -> list[str]:
    return [c for c in markers if c in columns]


class VideoPhyReader(PromptReader):
    """``videophy``: VideoPhy's test CSV (rows repeating a caption folded)."""

    name = "videophy"
    extensions = (".csv",)
    folds_duplicates = True

    def detect(self, source: PromptSource) -> str | None:
        columns = source.csv_columns
        if "caption" not in columns or _marked(columns, VIDEOPHY2_COLUMNS):
            return None
        found = _marked(columns, VIDEOPHY_COLUMNS)
        if not found and set(VIDEOPHY_COLUMN_PAIR) <= set(columns):
            found = list(VIDEOPHY_COLUMN_PAIR)
        return f"its columns caption, {', '.join(found)}" if found else None

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        return csv_records(source, options.prompt_column or "caption", require="caption")


class VideoPhy2Reader(VideoPhyReader):
    """``videophy2``: VideoPhy-2's prompt CSV (rows repeating a caption folded)."""

    name = "videophy2"

    def detect(self, source: PromptSource) -> str | None:
        columns = source.csv_columns
        found = _marked(columns, VIDEOPHY2_COLUMNS)
        if "caption" not in columns or not found:
            return None
        return f"its columns caption, {', '.join(found)}"


class VideoPhy2Layout(OutputLayout):
    """``<out>/videos/…mp4`` plus the VideoPhy-2 (or VideoPhy v1) evaluator CSV.

    Args:
        version: 2 for VideoPhy-2 (``caption,videopath``), 1 for VideoPhy
            (``videopath,caption``).
        csv_paths: write absolute video paths, or paths relative to the CSV's folder.
    """

    name = "videophy2"

    def __init__(
        self,
        version: Literal[1, 2] = 2,
        csv_paths: Literal["absolute", "relative"] = "absolute",
    ) -> None:
        super().__init__()
        if version not in (1, 2):
            raise ValueError(f"videophy version must be 1 or 2, got {version!r}")
        if csv_paths not in ("absolute", "relative"):
            raise ValueError(f"csv_paths must be 'absolute' or 'relative', got {csv_paths!r}")
        self.version = version
        self.csv_paths = csv_paths

    def relative_videos(self, records, counts):
        return {
            (r.index, k): Path("videos") / indexed_slug(r, k)
            for r in records
            for k in range(counts[r.index])
        }

    @property
    def csv_path(self) -> Path:
        name = "videophy2_input.csv" if self.version == 2 else "videophy_input.csv"
        return self.folder / name

    @property
    def rule_csv_path(self) -> Path:
        return self.folder / "videophy2_rule_input.csv"

    def index_paths(self) -> list[Path]:
        return [self.csv_path, self.rule_csv_path]

    def _video_field(self, video: Path) -> str:
        if self.csv_paths == "absolute":
            return str(video.resolve())
        return video.relative_to(self.folder).as_posix()

    def write_indexes(self) -> list[Path]:
        done = self.complete_outputs()
        columns = ["caption", "videopath"] if self.version == 2 else ["videopath", "caption"]
        rows = [
            {"caption": r.evaluator_caption, "videopath": self._video_field(v)}
            for r, _, v in done
        ]
        written = [self.csv_path]
        write_csv_atomic(self.csv_path, columns, rows)
        rules = [(r, v) for r, _, v in done if isinstance(r.extra.get("rule"), str)]
        if self.version == 2 and rules:
            rule_rows = [
                {"videopath": self._video_field(v), "rule": r.extra["rule"]} for r, v in rules
            ]
            write_csv_atomic(self.rule_csv_path, ["videopath", "rule"], rule_rows)
            written.append(self.rule_csv_path)
        return written


__all__ = ["VideoPhy2Layout", "VideoPhy2Reader", "VideoPhyReader"]
