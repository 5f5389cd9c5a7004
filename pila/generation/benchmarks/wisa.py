"""WISA's prompt-side annotation records as a prompt file (written with the plain layout).

Format ``wisa`` (recognised in a JSON list or JSON Lines file whose every record is a
prompt-side record): ``en_caption``, ``phys_law``, ``q0``–``q4``, ``label``, no video.
``en_caption`` is the prompt; the labels come from the q-answers through the category map,
as relabeling labels a clip (no label: the prompt parser decides). They go to the record's
``labels``, which every video's sidecar keeps.
"""

from __future__ import annotations

from pila.datamodules.prompt_side import wisa_prompt
from pila.datamodules.records import is_prompt_side_record
from pila.generation.readers import (
    PromptReader,
    PromptSource,
    ReadOptions,
    clean,
    fail,
    parse_seed,
    text_field,
)
from pila.generation.records import PromptRecord


class WisaPromptReader(PromptReader):
    """``wisa``: WISA prompt-side records (a JSON list or JSON Lines)."""

    name = "wisa"
    extensions = (".json", ".jsonl")

    def detect(self, source: PromptSource) -> str | None:
        rows = source.json_rows
        if rows and all(is_prompt_side_record(r) for r in rows):
            return "its records' 'en_caption' with no video"
        return None

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        path, category_map = source.path, options.load_category_map()
        key = options.prompt_column or "en_caption"
        records = []
        for i, row in enumerate(source.rows()):
            where = f"entry {i}"
            if not is_prompt_side_record(row):
                raise fail(
                    path,
                    f"{where} is not a WISA prompt record "
                    "(it needs 'en_caption' and names no video)",
                )
            try:
                wisa = wisa_prompt(row, category_map)
            except ValueError as err:
                raise fail(path, f"{where}: {err}") from err
            if not text_field(row, key):
                raise fail(
                    path,
                    f"{where} has no {key!r} (fields: {sorted(row)}); "
                    "fix data.init_args.prompt_column",
                )
            extra = {k: v for k, v in wisa.extra.items() if k not in (key, "seed")}
            if key != "en_caption":
                extra["en_caption"] = wisa.caption
            records.append(PromptRecord(
                index=i,
                prompt=clean(row[key]),
                seed=parse_seed(row.get("seed"), path, where),
                labels=wisa.labels or None,
                extra=extra,
            ))  # fmt: skip
        return records


__all__ = ["WisaPromptReader"]
