"""Benchmarks as plug-ins: the shipped ones register themselves, and one written outside the
project (a reader and a layout in one file) runs through the data module, the writer and
``pila predict`` without any project file knowing of it."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from pila.generation import benchmarks
from pila.generation.layouts import OutputLayout
from pila.generation.predict import PredictionResult
from pila.generation.prompts import PromptDataModule
from pila.generation.readers import READERS, PromptReader
from pila.generation.sampling import GeneratedVideo
from pila.generation.writer import VideoPredictionWriter

# A whole benchmark in one file: a "#scenes" prompt list ("scene | prompt | labels" per
# line) and a layout putting each scene's videos in its own folder with an index file.
SCENE_BENCH = textwrap.dedent(
    '''
    from pathlib import Path

    from pila.generation.layouts import OutputLayout, write_csv_atomic
    from pila.generation.readers import PromptReader, clean, parse_labels
    from pila.generation.records import PromptRecord


    class SceneListReader(PromptReader):
        name = "scene_list"
        extensions = (".txt",)

        def detect(self, source):
            return "its '#scenes' header" if source.text.startswith("#scenes") else None

        def read(self, source, options):
            lines = source.lines()[1:]
            records = []
            for i, line in enumerate(lines):
                scene, prompt, labels = (part.strip() for part in line.split("|"))
                where = f"line {i + 2}"
                records.append(PromptRecord(
                    index=i, prompt=clean(prompt), labels=parse_labels(labels, source.path, where),
                    extra={"scene": scene},
                ))
            return records


    class SceneFolderLayout(OutputLayout):
        """<out>/<scene>/{i}-{k}.mp4 and <out>/<index_name> listing them."""

        name = "scene_folders"

        def __init__(self, index_name: str = "scenes.csv") -> None:
            super().__init__()
            self.index_name = index_name

        def relative_videos(self, records, counts):
            return {
                (r.index, k): Path(r.extra["scene"]) / f"{r.index}-{k}.mp4"
                for r in records
                for k in range(counts[r.index])
            }

        def index_paths(self):
            return [self.folder / self.index_name]

        def write_indexes(self):
            rows = [
                {"scene": r.extra["scene"], "video": v.relative_to(self.folder).as_posix()}
                for r, _, v in self.complete_outputs()
            ]
            write_csv_atomic(self.index_paths()[0], ["scene", "video"], rows)
            return self.index_paths()
    '''
)
PROMPTS = (
    "#scenes\nbounce | A ball bounces twice. | collision\n"
    "melt | Ice melts in a pan. | phase_change\n"
)
TINY_PREDICT = Path(__file__).resolve().parents[2] / "lightning_configs" / "tiny" / "predict.yaml"
FRAMES = np.zeros((2, 8, 8, 3), dtype=np.float32)


@pytest.fixture
def scene_bench(tmp_path, monkeypatch):
    """The benchmark file, importable as ``scene_bench``; forgotten again afterwards."""
    (tmp_path / "scene_bench.py").write_text(SCENE_BENCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("scene_bench")
    READERS.pop("scene_list", None)
    sys.modules.pop("scene_bench", None)


def test_the_shipped_benchmarks_register_their_readers_and_layouts():
    readers = benchmarks.load()
    shipped = {"txt", "jsonl", "json", "csv", "phygenbench", "videophy", "videophy2", "vbench2"}
    assert shipped | {"wisa"} <= set(readers)
    assert benchmarks.prompt_formats()[0] == "auto"
    layouts = {cls.name for cls in OutputLayout.__subclasses__()}
    assert {"plain", "phygenbench", "vbench2", "videophy2"} <= layouts


def test_a_second_reader_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="prompt format 'vbench2' is defined twice"):
        type("AnotherVBench", (PromptReader,), {"name": "vbench2"})


def test_a_benchmark_written_outside_the_project_runs_through_the_data_module_and_writer(
    tmp_path, scene_bench, caplog
):
    prompts = tmp_path / "list.txt"
    prompts.write_text(PROMPTS)
    dm = PromptDataModule(prompt_file=str(prompts), videos_per_prompt=2)  # no format: detected
    out = tmp_path / "out"
    writer = VideoPredictionWriter(str(out), layout=scene_bench.SceneFolderLayout("index.csv"))
    with caplog.at_level("INFO"):
        writer.setup(SimpleNamespace(datamodule=dm), SimpleNamespace(), "predict")
    assert dm.read_as == "scene_list"
    assert "read as scene_list (detected from its '#scenes' header)" in caplog.text
    for item in dm.items:
        video = GeneratedVideo(frames=FRAMES.copy(), prompt=item.record.prompt, seed=item.seed)
        writer.write_result(PredictionResult(item=item, video=video), SimpleNamespace())
    writer.layout.write_indexes()
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert videos == ["bounce/0-0.mp4", "bounce/0-1.mp4", "melt/1-0.mp4", "melt/1-1.mp4"]
    meta = json.loads((out / "pila_meta" / "melt" / "1-1.json").read_text())
    assert meta["layout"] == "scene_folders" and meta["record"]["labels"] == ["phase_change"]
    assert (out / "index.csv").read_text().splitlines()[1] == '"bounce","bounce/0-0.mp4"'


@pytest.mark.slow
def test_a_benchmark_written_outside_the_project_runs_through_pila_predict(
    tmp_path, scene_bench, small
):
    from pila.cli import main

    prompts = tmp_path / "list.txt"
    prompts.write_text(PROMPTS)
    config = yaml.safe_load(TINY_PREDICT.read_text())
    writer = config["trainer"]["callbacks"][0]["init_args"]
    writer["output_dir"] = str(tmp_path / "out")
    writer["layout"] = {
        "class_path": "scene_bench.SceneFolderLayout",
        "init_args": {"index_name": "all.csv"},
    }
    sampling = config["model"]["init_args"]["sampling"]
    sampling.update({k: small[k] for k in ("num_frames", "height", "width", "max_sequence_length")})
    sampling["num_inference_steps"] = 1
    data = {"prompt_file": str(prompts), "format": "scene_list", "videos_per_prompt": 1}
    config["data"]["init_args"] = data
    config["trainer"].update(
        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False
    )
    path = tmp_path / "scenes.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["predict", "--debug", "--config", str(path)]) == 0
    out = tmp_path / "out"
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert videos == ["bounce/0-0.mp4", "melt/1-0.mp4"]
    assert len((tmp_path / "out" / "all.csv").read_text().splitlines()) == 3
