"""TensorBoard event files read back as a tidy table, and the per-expert / per-term pivots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from pila.analysis import (
    ScalarTable,
    Series,
    align_curves,
    expert_curves,
    gradient_curves,
    read_scalars,
    residual_curves,
)
from pila.stages.metrics import TERM_KEYS

f32 = np.float32  # event files store scalars as float32


def _write(folder, values: dict[str, list[tuple[int, float]]], wall_time: float = 1000.0) -> None:
    """One event file with ``{tag: [(step, value), …]}``, wall times ``wall_time + step``."""
    writer = SummaryWriter(log_dir=str(folder))
    for tag, points in values.items():
        for step, value in points:
            writer.add_scalar(tag, value, global_step=step, walltime=wall_time + step)
    writer.close()


def test_read_scalars_returns_exactly_what_was_written(tmp_path):
    _write(
        tmp_path / "stageA",
        {"train/loss": [(0, 1.5), (1, 0.25), (2, 0.125)], "val/loss": [(2, 0.3)]},
    )
    _write(tmp_path / "stageC", {"train/loss": [(0, 7.0), (3, 1.0 / 3.0)]})
    table = read_scalars(tmp_path)
    assert table.stages == ["stageA", "stageC"]
    assert len(table) == 6
    rows = [(r["stage"], r["tag"], r["step"], r["value"]) for r in table.rows()]
    assert rows == [
        ("stageA", "train/loss", 0, 1.5),
        ("stageA", "train/loss", 1, 0.25),
        ("stageA", "train/loss", 2, 0.125),
        ("stageA", "val/loss", 2, float(f32(0.3))),
        ("stageC", "train/loss", 0, 7.0),
        ("stageC", "train/loss", 3, float(f32(1.0 / 3.0))),
    ]
    assert table.rows()[1]["wall_time"] == pytest.approx(1001.0)
    series = table.series("train/loss", "stageA")
    assert series.steps.tolist() == [0, 1, 2] and series.values.tolist() == [1.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="stage="):
        table.series("train/loss")  # two stages log it
    assert table.series("val/loss").values.tolist() == [float(f32(0.3))]
    with pytest.raises(KeyError, match="train/loss"):
        table.series("train/nope", "stageC")
    # one stage's folder alone: the stage is the folder's name
    assert read_scalars(tmp_path / "stageC").stages == ["stageC"]


def test_a_later_event_file_supersedes_its_folder_from_its_first_step_on(tmp_path):
    stage = tmp_path / "stageB"
    _write(stage, {"train/loss": [(s, 10.0 + s) for s in range(6)]}, wall_time=1000.0)
    # a resumed run redoes steps 3…7
    _write(stage, {"train/loss": [(s, 20.0 + s) for s in range(3, 8)]}, wall_time=2000.0)
    series = read_scalars(tmp_path).series("train/loss", "stageB")
    assert series.steps.tolist() == list(range(8))
    assert series.values.tolist() == [10.0, 11.0, 12.0, 23.0, 24.0, 25.0, 26.0, 27.0]
    # a re-run from scratch that logs fewer steps replaces the whole earlier run
    _write(stage, {"train/loss": [(0, 5.0), (4, 1.0)]}, wall_time=3000.0)
    series = read_scalars(tmp_path).series("train/loss", "stageB")
    assert series.steps.tolist() == [0, 4] and series.values.tolist() == [5.0, 1.0]


def test_residual_and_expert_curves_pivot_the_stage_tags_in_the_fixed_order(tmp_path):
    (cat_a, term_a), (cat_b, term_b) = TERM_KEYS[5], TERM_KEYS[1]
    _write(
        tmp_path / "stageC",
        {
            f"train/residual/{cat_a}/{term_a}": [(1, 0.5), (3, 0.25)],
            f"train/residual/{cat_b}/{term_b}": [(3, 2.0)],
            "train/expert_loss/thermal": [(1, 4.0)],
            "train/expert_loss/rigid_body": [(1, 3.0), (3, 1.0)],
            "train/router/selection_rate/fluid": [(1, 0.75)],
            "val/residual_loss": [(3, 9.0)],
        },
    )
    _write(tmp_path / "stageB", {f"train/residual/{cat_a}/{term_a}": [(0, 100.0)]})
    table = read_scalars(tmp_path)

    curves = residual_curves(table, "stageC")
    assert list(curves) == [(cat_b, term_b), (cat_a, term_a)]  # TERM_KEYS order, not writing order
    assert curves[(cat_a, term_a)].steps.tolist() == [1, 3]
    assert curves[(cat_a, term_a)].values.tolist() == [0.5, 0.25]
    assert residual_curves(table, "stageB")[(cat_a, term_a)].values.tolist() == [100.0]

    losses = expert_curves(table, "expert_loss", "stageC")
    assert list(losses) == ["rigid_body", "thermal"]  # CATEGORIES order
    assert losses["rigid_body"].values.tolist() == [3.0, 1.0]
    assert list(expert_curves(table, "router/selection_rate")) == ["fluid"]
    assert expert_curves(table, "router/mean_weight") == {}
    with pytest.raises(ValueError, match="metric"):
        expert_curves(table, "router/entropy")  # type: ignore[arg-type]


def test_align_curves_puts_curves_on_the_union_of_steps():
    curves = {
        "a": Series(np.array([0, 2]), np.array([1.0, 2.0])),
        "b": Series(np.array([1, 2, 5]), np.array([3.0, 4.0, 5.0])),
    }
    matrix = align_curves(curves, keys=["b", "a"])
    assert matrix.keys == ["b", "a"]
    assert matrix.steps.tolist() == [0, 1, 2, 5]
    expected = [[math.nan, 3.0, 4.0, 5.0], [1.0, math.nan, 2.0, math.nan]]
    np.testing.assert_array_equal(matrix.values, np.array(expected))
    with pytest.raises(KeyError, match="c"):
        align_curves(curves, keys=["c"])


def test_table_from_rows_keeps_the_latest_write_of_a_step():
    table = ScalarTable.from_rows(
        [
            {"stage": "s", "tag": "t", "step": 2, "value": 1.0, "wall_time": 5.0},
            {"stage": "s", "tag": "t", "step": 1, "value": 2.0, "wall_time": 6.0},
            {"stage": "s", "tag": "t", "step": 2, "value": 3.0, "wall_time": 7.0},
        ]
    )
    assert table.step.tolist() == [1, 2] and table.value.tolist() == [2.0, 3.0]
    assert len(table.where(stage="other")) == 0


def test_missing_or_empty_log_folders_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scalars(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path)


@pytest.mark.slow
def test_gradient_curves_pivot_ratios_and_norms_in_the_group_order(tmp_path):
    _write(
        tmp_path / "stageC",
        {
            "train/grad_ratio/decoder": [(4, 0.0)],
            "train/grad_ratio/encoder": [(4, 120.0), (9, 80.0)],
            "train/grad_norm/fm/encoder": [(4, 0.01)],
            "train/grad_norm/residual/encoder": [(4, 1.2)],
        },
    )
    _write(tmp_path / "stageB", {"train/grad_ratio/afe": [(1, 3.0)]})
    table = read_scalars(tmp_path)
    ratios = gradient_curves(table)
    assert list(ratios) == ["encoder", "decoder"]  # PARAMETER_GROUPS order
    assert ratios["encoder"].values.tolist() == [120.0, 80.0]
    assert gradient_curves(table, part="residual")["encoder"].values.tolist() == [f32(1.2)]
    assert gradient_curves(table, "stageB") == {"afe": gradient_curves(table, "stageB")["afe"]}
    assert gradient_curves(table, part="recovery") == {}


def test_the_stage_modules_tags_read_back_from_a_demo_run(tiny_run):
    table = read_scalars(tiny_run)
    assert table.stages == ["stageA", "stageB", "stageC"]
    curves = residual_curves(table, "stageC")
    assert curves and set(curves) <= set(TERM_KEYS)
    assert expert_curves(table, "router/selection_rate")
    fm = table.series("train/fm_loss", "stageC")
    assert np.isfinite(fm.values).all() and (np.diff(fm.steps) > 0).all()
    for stage, parts in (("stageB", ("anchor", "recovery")), ("stageC", ("fm", "residual"))):
        assert "encoder" in gradient_curves(table, stage)
        for part in parts:
            assert np.isfinite(gradient_curves(table, stage, part)["encoder"].values).all()


def test_the_demo_measures_both_video_sets_with_the_ruler(tiny_run):
    """``pila demo`` generates with and without the adapter, then ``pila lab evaluate`` on both."""
    import json

    for label in ("adapter", "baseline"):
        report = json.loads((tiny_run / "report" / label / "report.json").read_text())
        sidecars = sorted(
            (tiny_run / ("videos" if label == "adapter" else "videos_baseline")).rglob("*.mp4")
        )
        assert len(sidecars) == 1
        # the shortened tiny run draws 5-frame videos: reported as too short, not fatal
        assert report["videos"] == [] and len(report["skipped"]) == 1
    assert "| **all** | 0 |" in (tiny_run / "report" / "comparison.md").read_text()
