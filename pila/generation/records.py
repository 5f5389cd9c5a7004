"""What a prompt file holds and what ``pila predict`` makes of it: records and work items.

A :class:`PromptRecord` is one prompt as a reader (:mod:`pila.generation.readers`) found it;
a :class:`PredictItem` is one video to generate from it (a sample number and a seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


__all__ = ["PredictItem", "PromptFileError", "PromptRecord"]
