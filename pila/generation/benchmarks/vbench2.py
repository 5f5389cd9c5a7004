"""VBench-2.0: its prompt lists and its videos' names, byte for byte.

Format ``vbench2``: plain text, one prompt per line, the dimension taken from the file
name (``Mechanics.txt`` → ``Mechanics``) unless ``dimension`` is given. A folder of such
files is read whole (files in name order, indices running on across files); with an
``augmented_file`` folder, each list pairs with the same-named augmented list.

Layout (:class:`VBench2Layout`): ``<out>/<dimension>/{caption[:180]}-{k}.mp4``, VBench-2.0's
own name byte for byte (a trailing space at the cut stays; nothing is normalised or
sanitised). ``caption`` is the record's
:attr:`~pila.generation.records.PromptRecord.evaluator_caption`: the short VBench-2.0
prompt, also when the video is generated from an augmented prompt (``record.prompt``), as
VBench-2.0 asks. A prompt whose name no file system can hold (a ``/`` or NUL, or more than
:data:`~pila.generation.layouts.NAME_MAX_BYTES` bytes with the atomic writer's temporary
sibling) gets no output: the run says so (:attr:`OutputLayout.unnamed`) instead of writing
a name the evaluator will not find. VBench-2.0 expects :meth:`VBench2Layout.required_samples`
videos per prompt (3; 20 for Diversity).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pila.generation.layouts import (
    MAX_NAME_BYTES,
    NAME_MAX_BYTES,
    TEMP_NAME_EXTRA_BYTES,
    OutputLayout,
    sanitize_filename,
    short_hash,
    truncate_bytes,
)
from pila.generation.readers import (
    PromptReader,
    PromptSource,
    ReadOptions,
    fail,
    line_records,
    pair_augmented,
    read_text,
)
from pila.generation.records import PromptRecord

VBENCH_PROMPT_CHARS = 180
"""VBench-2.0 names a video after the first 180 characters of its prompt."""
VBENCH2_SAMPLES = 3
"""Videos per prompt VBench-2.0's evaluator reads (``-0`` … ``-2``)."""
VBENCH2_DIVERSITY_SAMPLES = 20
"""Videos per prompt VBench-2.0's evaluator reads for the Diversity dimension."""


class VBench2Reader(PromptReader):
    """``vbench2``: a ``<Dimension>.txt`` prompt list, or a folder of them."""

    name = "vbench2"
    extensions = (".txt",)

    def read(self, source: PromptSource, options: ReadOptions) -> list[PromptRecord]:
        dimension = options.dimension if options.dimension is not None else source.path.stem
        return line_records(source, options, dimension)

    def read_folder(self, folder: Path, options: ReadOptions) -> list[PromptRecord]:
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise fail(
                folder, "holds no .txt prompt lists; VBench-2.0 prompt files are <Dimension>.txt"
            )
        augmented = options.augmented_file
        aug_folder = Path(augmented).expanduser() if augmented is not None else None
        if aug_folder is not None and not aug_folder.is_dir():
            raise fail(
                folder,
                "is a folder, so augmented_file must be a folder of the same <Dimension>.txt "
                f"files, got {str(aug_folder)!r}",
            )
        records: list[PromptRecord] = []
        for file in files:
            dim = options.dimension if options.dimension is not None else file.stem
            part = line_records(PromptSource(file, read_text(file)), options, dim, len(records))
            if aug_folder is not None and part:
                if not (aug_folder / file.name).is_file():
                    raise fail(
                        aug_folder,
                        f"has no {file.name} to pair with {file}; "
                        "augmented files keep the prompt files' names",
                    )
                part = pair_augmented(part, file, aug_folder / file.name)
            records += part
        if not records:
            raise fail(folder, "its .txt prompt lists are all empty")
        return records


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
        return (
            f"its file name takes {size} UTF-8 bytes; file names hold at most "
            f"{NAME_MAX_BYTES} with the temporary file's {longest - size}"
        )
    return None


class VBench2Layout(OutputLayout):
    """``<out>/<dimension>/{caption[:180]}-{k}.mp4``, VBench-2.0's name byte for byte.

    ``caption`` is the record's ``evaluator_caption`` (the short prompt; the video may be
    generated from an augmented one). Prompts whose name cannot be written are left out
    and listed in :attr:`unnamed`; a prompt whose name an earlier prompt of the same
    dimension already takes gets a hash suffix (:attr:`renamed`).

    Args:
        dimension: the dimension of prompts whose record names none.
    """

    name = "vbench2"

    def __init__(self, dimension: str | None = None) -> None:
        super().__init__()
        self.dimension = dimension

    @staticmethod
    def required_samples(dimension: str | None) -> int:
        """Videos per prompt VBench-2.0 reads for ``dimension`` (20 for Diversity, else 3)."""
        return VBENCH2_DIVERSITY_SAMPLES if dimension == "Diversity" else VBENCH2_SAMPLES

    def _raw_dimension(self, record: PromptRecord) -> str | None:
        return record.dimension or self.dimension

    def samples_for(self, record: PromptRecord, requested: int | None) -> int:
        """``requested``, or VBench-2.0's count for the record's dimension when None."""
        if requested is not None:
            return requested
        return self.required_samples(self._raw_dimension(record))

    def sample_warnings(
        self, records: Sequence[PromptRecord], requested: int | None
    ) -> list[str]:
        """One line per dimension whose prompts get fewer videos than VBench-2.0 reads."""
        if requested is None:
            return []
        dims = sorted({self._raw_dimension(r) or "" for r in records})
        return [
            f"videos_per_prompt {requested} is below the {self.required_samples(d)} videos per "
            f"prompt VBench-2.0 reads for {d or 'its dimension'}; its evaluator stops at the "
            "first missing video (leave videos_per_prompt unset for the evaluator's count)"
            for d in dims
            if requested < self.required_samples(d)
        ]

    def _dimension_of(self, record: PromptRecord) -> str:
        dim = self._raw_dimension(record)
        if not dim:
            raise ValueError(
                f"the vbench2 layout needs a dimension for prompt {record.index} "
                f"({record.prompt[:60]!r}): read a VBench-2.0 prompt list with "
                "data.init_args.format=vbench2 (the file name is the dimension) or set "
                "data.init_args.dimension / the layout's dimension"
            )
        return sanitize_filename(dim, max_bytes=100)

    def relative_videos(self, records, counts):
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
                stem = truncate_bytes(stem, MAX_NAME_BYTES - len(suffix)) + suffix
                self.renamed[r.index] = (
                    f"VBench-2.0's name for it, {names[0]!r}, is prompt {first}'s (same first "
                    f"{VBENCH_PROMPT_CHARS} characters in {dim}); its videos are named "
                    f"{stem!r}-k.mp4"
                )
            else:
                taken[(dim, stem)] = r.index
            for k in range(counts[r.index]):
                out[(r.index, k)] = Path(dim) / f"{stem}-{k}.mp4"
        return out


__all__ = [
    "VBENCH2_DIVERSITY_SAMPLES",
    "VBENCH2_SAMPLES",
    "VBench2Layout",
    "VBench2Reader",
    "vbench2_name_problem",
]
