"""The labels a lab scene trains with are the labels its prompts get at generation.

At generation the adapter's condition comes from the prompt: ``pila predict`` reads the
prompt file (:func:`pila.generation.prompts.read_prompt_file`) and asks the default
parser, the rule-based one, for the labels the file does not give
(:func:`pila.parser.base.parse_with_given`). A scene whose clips train with other labels
than its prompts parse to is conditioned at generation on a label set no training sample
had.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pila.categories import CATEGORIES
from pila.generation.benchmarks import read_prompt_file
from pila.lab.scenes import SCENES, render_indexed
from pila.parser import default_parser, parse_with_given

PROMPTS = Path(__file__).resolve().parents[2] / "lightning_configs" / "lab" / "prompts.jsonl"


def training_labels(scene: str, index: int = 0) -> tuple[str, ...]:
    """The labels a clip of ``scene`` carries into the data module (``pila_labels``)."""
    clip = render_indexed(scene, index, seed=0, num_frames=5, height=16, width=16)
    return tuple(c for c in CATEGORIES if c in clip.labels)


def generation_labels(prompt: str, given=None) -> tuple[str, ...]:
    return parse_with_given(default_parser(), prompt, labels=given).labels


def test_the_lab_prompt_file_parses_to_each_scenes_training_labels():
    records = read_prompt_file(PROMPTS)
    assert sorted(r.extra["scene"] for r in records) == sorted(SCENES)
    for record in records:
        assert generation_labels(record.prompt, record.labels) == training_labels(
            record.extra["scene"]
        ), record.prompt


@pytest.mark.parametrize("scene", list(SCENES))
def test_every_scenes_own_captions_parse_to_its_labels(scene):
    for index in range(3):  # captions vary with the drawn colours
        clip = render_indexed(scene, index, seed=0, num_frames=5, height=16, width=16)
        assert generation_labels(clip.prompt) == training_labels(scene, index), clip.prompt


def test_the_cooling_plate_is_thermal_only():
    # App. C's category table: "glowing heat spread" is Thermal; Optical is light transport
    # (reflections, lenses, rainbows, caustics, interference), which the plate does not show
    assert training_labels("cooling_plate") == ("thermal",)
