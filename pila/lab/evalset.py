"""The lab's data sets by render seed and clip index, and its two evaluation sets.

Clip ``i`` of scene ``s`` in the world of seed ``w`` is rendered with
``default_rng([w, s, i])`` (:func:`pila.lab.scenes.render_indexed`), so a (scene, seed,
index) key names a clip. Three sets of keys must not meet (lab.md, section 5):

- the world's training clips (:func:`world_training_keys`, read from the shipped world's
  record ``pila/lab/world/training.json``: seed 0, indices 0–31 per scene);
- the adapters' training and validation clips (the ``data`` section of
  ``lightning_configs/lab/stage{A,B,C}.yaml``: world seed 1);
- the evaluation prompts: the renderer's caption of clips of world seed 2 (set ``a``) or
  world seed 3 (set ``b``), so set ``b`` words each scene with other clips' captions.

Every evaluation video is its own noise draw: each record carries its own ``seed``, and
no seed is shared between records or between the sets (:data:`EVAL_SETS`). The files
``lightning_configs/lab/eval_{a,b}.jsonl`` are written by :func:`write_eval_sets`
(``python -m pila.lab.evalset [FOLDER]``), never by hand, and so is
``lightning_configs/lab/prompts.jsonl`` (:data:`DEMO_FILE`, ``predict.yaml``'s and ``pila
demo``'s prompts): the first video of every scene of set ``a``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila import configs as packaged_configs
from pila.backbone.folders import LAB_WORLD_FOLDER
from pila.io import read_json, write_text_atomic

WORLD_RECORD = LAB_WORLD_FOLDER / "training.json"
"""The shipped world's training record: its ``config`` names the clips it trained on."""

EVAL_FOLDER = packaged_configs.ROOT / "lab"
"""Where the evaluation set files are shipped (the packaged lab configs)."""


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: ``videos_per_scene`` prompts per scene, each its own noise draw.

    Attributes:
        name: the set's name (``--eval-set``).
        world_seed: the render seed whose clips' captions are the prompts (indices
            0 … videos_per_scene − 1 of every scene).
        first_noise_seed: the noise seed of the set's first video; video k of the set (in
            file order) draws seed ``first_noise_seed + k``.
        videos_per_scene: prompts (and videos) per scene.
    """

    name: str
    world_seed: int
    first_noise_seed: int
    videos_per_scene: int = 16  # ours: each its own noise draw, enough for per-scene intervals

    @property
    def file_name(self) -> str:
        return f"eval_{self.name}.jsonl"

    @property
    def path(self) -> Path:
        return EVAL_FOLDER / self.file_name


EVAL_SETS: dict[str, EvalSet] = {
    "a": EvalSet("a", world_seed=2, first_noise_seed=0),
    "b": EvalSet("b", world_seed=3, first_noise_seed=1_000_000),
}
"""The evaluation sets by name; ``a`` is ``pila lab ablate``'s default. Render seeds 2 and 3
and noise seeds from 0 and from 1 000 000 are ours: any values that meet no other set."""
DEFAULT_EVAL_SET = "a"
DEMO_FILE = "prompts.jsonl"
"""One video per scene (``predict.yaml``'s prompt file): set ``a``'s first of each scene."""


def world_training_keys(record: Path = WORLD_RECORD) -> set[tuple[str, int, int]]:
    """(scene, render seed, index) of every clip the world trained on, from its record."""
    config = read_json(record)["config"]
    seed, count = int(config["seed"]), int(config["clips_per_scene"])
    return {(scene, seed, i) for scene in config["scenes"] for i in range(count)}


def eval_records(spec: EvalSet, num_frames: int = 33, height: int = 64, width: int = 64) -> list[
    dict[str, Any]
]:
    """The set's records in file order: scene by scene (:data:`SCENES` order), clip index
    0 … n − 1, each with the rendered clip's caption and its own noise seed.

    ``num_frames``/``height``/``width``: the lab size the captions are rendered at (ours:
    the world's 33 × 64 × 64).
    """
    from pila.lab.scenes import SCENES, render_indexed

    records = []
    for scene in SCENES:
        for index in range(spec.videos_per_scene):
            clip = render_indexed(scene, index, spec.world_seed, num_frames, height, width)
            records.append(
                {
                    "prompt": clip.prompt,
                    "scene": scene,
                    "seed": spec.first_noise_seed + len(records),
                    "world_seed": spec.world_seed,
                    "clip_index": index,
                }
            )
    return records


def jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_eval_sets(folder: Path = EVAL_FOLDER) -> list[Path]:
    """Write every evaluation set's JSONL file and :data:`DEMO_FILE` into ``folder``;
    returns the paths."""
    paths = []
    for spec in EVAL_SETS.values():
        records = eval_records(spec)
        path = folder / spec.file_name
        write_text_atomic(path, jsonl(records))
        paths.append(path)
        if spec.name == DEFAULT_EVAL_SET:
            write_text_atomic(folder / DEMO_FILE, jsonl(select(records, None, 1)))
            paths.append(folder / DEMO_FILE)
    return paths


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL prompt file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def select(
    records: Sequence[dict[str, Any]], scenes: Sequence[str] | None, per_scene: int
) -> list[dict[str, Any]]:
    """The first ``per_scene`` records of each scene (of ``scenes``; None: all), in file
    order."""
    counts: dict[str, int] = {}
    kept = []
    for record in records:
        scene = record.get("scene")
        if (scenes and scene not in scenes) or counts.get(scene, 0) >= per_scene:
            continue
        counts[scene] = counts.get(scene, 0) + 1
        kept.append(record)
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pila.lab.evalset [FOLDER]``: (re)write the evaluation set files."""
    args = list(sys.argv[1:] if argv is None else argv)
    folder = Path(args[0]) if args else EVAL_FOLDER
    for path in write_eval_sets(folder):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
