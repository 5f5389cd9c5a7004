"""PhyGenBench: its ``prompts.json`` and the folder its evaluator reads.

Format ``phygenbench`` (recognised in a ``.json`` list whose every entry has
``physical_laws``): a list of 160 objects with ``caption``, ``physical_laws``,
``sub_category``, ``main_category``; ``explicit_prompts.json`` adds ``explicit_caption``,
generated from with ``prompt_column: explicit_caption``. The index is always the position
in the file, the other captions stay in ``extra``.

Layout (:class:`PhyGenBenchLayout`): ``<out>/<model>/output_video_{i+1}.mp4``, what
PhyGenBench's evaluator reads. With N > 1 videos per prompt, sample k > 0 goes to
``<out>/<model>-{k}/``: each folder is a complete run.
"""

from __future__ import annotations

from pathlib import Path

from pila.generation.layouts import OutputLayout, sanitize_filename
from pila.generation.readers import (
    PromptReader,
    PromptSource,
    ReadOptions,
    as_written,
    clean,
    fail,
    text_field,
)
from pila.generation.records import PromptRecord


class PhyGenBenchReader(PromptReader):
    """``phygenbench``: PhyGenBench's ``prompts.json`` / ``explicit_prompts.json``."""

    name = "phygenbench"
    extensions = (".json",)

    def detect(self, source: PromptSource) -> str | None:
        rows = source.json_rows
        if rows and all(isinstance(r, dict) and "physical_laws" in r for r in rows):
            return "its entries' 'physical_laws' field"
        return None

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        """``prompt_column`` (e.g. ``explicit_caption``) picks the generated text; the short
        ``caption`` stays the evaluator's and every other field goes to ``extra``."""
        data = source.json()
        if not isinstance(data, list):
            raise fail(
                source.path,
                "PhyGenBench prompts.json must hold a list of objects with a 'caption'",
            )
        key = options.prompt_column or "caption"
        records = []
        for i, row in enumerate(data):
            if not isinstance(row, dict) or not text_field(row, key):
                fields = sorted(row) if isinstance(row, dict) else type(row).__name__
                fix = "" if key == "caption" else "; fix data.init_args.prompt_column"
                raise fail(
                    source.path,
                    f"entry {i} needs a non-empty {key!r} (PhyGenBench format; "
                    f"fields: {fields}){fix}",
                )
            short = text_field(row, "caption")
            prompt = clean(row[key])
            records.append(PromptRecord(
                index=i,
                prompt=prompt,
                caption=short if short and key != "caption" else as_written(row[key], prompt),
                extra={k: v for k, v in row.items() if k != key and v not in (None, "")},
            ))  # fmt: skip
        return records


class PhyGenBenchLayout(OutputLayout):
    """``<out>/<model>/output_video_{i+1}.mp4``; sample k > 0 in ``<out>/<model>-{k}/``.

    Args:
        model_name: the evaluator's model folder name.
    """

    name = "phygenbench"

    def __init__(self, model_name: str = "pila") -> None:
        super().__init__()
        self.model_name = sanitize_filename(model_name, max_bytes=100)

    def relative_videos(self, records, counts):
        def folder(k: int) -> str:
            return self.model_name if k == 0 else f"{self.model_name}-{k}"

        return {
            (r.index, k): Path(folder(k)) / f"output_video_{r.index + 1}.mp4"
            for r in records
            for k in range(counts[r.index])
        }


__all__ = ["PhyGenBenchLayout", "PhyGenBenchReader"]
