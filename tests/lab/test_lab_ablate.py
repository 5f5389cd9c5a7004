"""``pila lab ablate``: variants, derived configs, the statistics, and a short run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pila.lab import ablate, ablate_runs, ablate_variants
from pila.lab.ablate import (
    BASELINE,
    FULL,
    PLAIN,
    UsageError,
    aggregate,
    decide,
    resolve_variant,
    stage_config,
)
from pila.lab.ablate_report import decision_markdown
from pila.lab.ruler import ruler_identity
from pila.lab.stats import interval, two_level_bootstrap

LAB = ablate.LAB_CONFIGS


def _report(values: dict[str, tuple[str, float, float]]) -> dict:
    """A report.json with one entry per video name: (scene, violation, fidelity)."""
    return {
        "videos": [
            {"video": f"videos/{k}", "scene": s, "violation": v, "fidelity": f}
            for k, (s, v, f) in values.items()
        ]
    }


# ------------------------------------------------------------------- variants
def test_variants_resolve_to_their_stages_and_overrides():
    assert resolve_variant("baseline").stages == ()
    assert (
        resolve_variant("full").stages == ablate.STAGES and resolve_variant("full").override is None
    )
    plain = resolve_variant("plain")  # the plain adapter trains stage C only, from scratch
    assert plain.name == PLAIN and plain.stages == ("stageC",)
    wo_afe = resolve_variant("wo_afe")
    assert (
        wo_afe.stages == ablate.STAGES
        and wo_afe.override["model"]["init_args"]["adapter"]["use_afe"] is False
    )
    with pytest.raises(UsageError, match="unknown variant 'volcano'.*baseline, full"):
        resolve_variant("volcano")


def test_stage_configs_chain_the_run_and_share_one_budget(tmp_path):
    base = yaml.safe_load((LAB / "stageB.yaml").read_text())
    run, data = tmp_path / "runs" / "full" / "seed2", tmp_path / "data"
    cfg = stage_config(base, resolve_variant("full"), "stageB", run, data, seed=2, scale=0.5)
    assert cfg["seed_everything"] == 2
    assert cfg["model"]["init_args"]["init_from"] == str(
        run / "stageA" / "checkpoints" / "last.ckpt"
    )
    assert cfg["trainer"]["max_steps"] == base["trainer"]["max_steps"] // 2
    phases = next(
        c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("RecoveryPhases")
    )
    assert (
        phases["init_args"]["steps_per_phase"] == 6
    )  # 12 × 0.5: every schedule shrinks with the steps
    ckpt = next(
        c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")
    )
    assert ckpt["init_args"]["dirpath"] == str(run / "stageB" / "checkpoints")
    assert ckpt["init_args"]["every_n_train_steps"] == cfg["trainer"]["max_steps"]
    assert cfg["data"]["init_args"]["root"] == str(data)

    plain = stage_config(
        yaml.safe_load((LAB / "stageC.yaml").read_text()),
        resolve_variant("plain"),
        "stageC",
        run,
        data,
        seed=0,
        scale=1.0,
    )
    assert plain["model"]["init_args"]["init_from"] is None  # from scratch: there is no stage B
    assert plain["model"]["init_args"]["adapter"]["plain_adapter"] is True
    assert (
        plain["model"]["init_args"]["adapter"]["hidden"] == 32
    )  # the lab's sizes are kept under the override


def test_world_finetune_trains_the_plain_adapters_budget_and_generates_as_the_baseline(tmp_path):
    from pila.cli import PilaCLI
    from pila.stages.finetune import WorldFinetune

    control = resolve_variant("world_finetune")
    assert control.stages == ("stageC",)  # from the shipped world, as the plain adapter
    base = yaml.safe_load((LAB / "stageC.yaml").read_text())
    run, data = tmp_path / "run", tmp_path / "data"
    cfg = stage_config(base, control, "stageC", run, data, seed=1, scale=0.5)
    plain = stage_config(base, resolve_variant("plain"), "stageC", run, data, seed=1, scale=0.5)
    init_args = cfg["model"]["init_args"]
    assert cfg["model"]["class_path"] == "pila.stages.finetune.WorldFinetune"
    assert init_args == {
        "backbone": "lab",
        "lr": plain["model"]["init_args"]["lr"],
        "sigma_shift": 3.0,
        "text_length": 512,
        "lora_rank": 19,
    }
    for key in ("max_steps", "seed_everything"):
        assert cfg["trainer"].get(key, cfg.get(key)) == plain["trainer"].get(key, plain.get(key))
    assert cfg["data"] == plain["data"]  # the same clips
    kinds = [c["class_path"].rsplit(".", 1)[1] for c in cfg["trainer"]["callbacks"]]
    assert kinds == ["ModelCheckpoint", "LearningRateMonitor"]
    ckpt_path = tmp_path / "cfg.yaml"
    ckpt_path.write_text(yaml.safe_dump(cfg))
    cli = PilaCLI(args=["--config", str(ckpt_path), "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, WorldFinetune)

    assert control.retrains_world and not resolve_variant("plain").retrains_world
    lora = tmp_path / "adapter"  # exported after training: the config is made before it exists
    predict = ablate_variants.predict_config(
        yaml.safe_load((LAB / "predict.yaml").read_text()),
        run,
        lora,
        None,
        retrains_world=control.retrains_world,
    )
    assert predict["model"]["init_args"]["adapter"] is None
    assert predict["model"]["init_args"]["transformer_lora"] == str(lora)


def test_readings_are_variants_each_where_it_belongs(tmp_path):
    """R1–R5 resolve from lightning_configs/readings; R4 reaches stage B only; R3 changes
    generation only."""
    readings = {"r1_midpoint_kinematic", "r3_conditional_velocity", "r5_wo_afe_pathway"}
    assert readings <= set(ablate_variants.available_variants())
    run, data = tmp_path / "run", tmp_path / "data"
    r4 = resolve_variant("r4_stage_b_physical_mask")
    configs = {
        stage: stage_config(
            yaml.safe_load((LAB / f"{stage}.yaml").read_text()),
            r4,
            stage,
            run,
            data,
            seed=0,
            scale=2.0,
        )
        for stage in ablate.STAGES
    }
    assert (
        configs["stageB"]["model"]["init_args"]["physical_mask_steps"] == 60
    )  # 30 × 2: scaled with the budget
    assert "physical_mask_steps" not in configs["stageA"]["model"]["init_args"]
    assert "physical_mask_steps" not in configs["stageC"]["model"]["init_args"]
    r3 = resolve_variant("r3_conditional_velocity")
    assert r3.stages == ablate.STAGES and r3.sampling == {"adapter_velocity": "conditional"}
    stage_c = stage_config(
        yaml.safe_load((LAB / "stageC.yaml").read_text()),
        r3,
        "stageC",
        run,
        data,
        seed=0,
        scale=1.0,
    )
    assert "sampling" not in stage_c["model"]["init_args"]
    base = yaml.safe_load((LAB / "predict.yaml").read_text())
    predict = ablate_variants.predict_config(base, run, run / "adapter", 5, sampling=r3.sampling)
    sampling = predict["model"]["init_args"]["sampling"]
    assert sampling["adapter_velocity"] == "conditional" and sampling["num_inference_steps"] == 5
    assert (
        r3.trains_as_full
    )  # its training is full PILA's (shared with the full run of the same seed)
    assert not any(
        resolve_variant(n).trains_as_full
        for n in ("full", "plain", "baseline", "r1_midpoint_kinematic", "r4_stage_b_physical_mask")
    )
    ablate_variants.check_stage_arguments([r3, r4], LAB)  # every key is taken by some stage
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  init_args:\n    physical_mask_stpes: 30\n")
    with pytest.raises(UsageError, match="physical_mask_stpes, which no stage takes"):
        ablate_variants.check_stage_arguments([resolve_variant(str(typo))], LAB)
    r1 = resolve_variant("r1_midpoint_kinematic")
    assert r1.override["model"]["init_args"]["adapter"]["residual_scales"] == {
        "kinematic_reading": "midpoint"
    }


# ----------------------------------------------------------------- statistics
def test_interval_is_students_t():
    s = interval([1.0, 2.0, 3.0])
    half = 4.302652729749 * 1.0 / np.sqrt(3)  # t(0.975, 2 df) · sd / √n
    assert s["mean"] == pytest.approx(2.0) and s["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert interval([5.0])["ci95"] is None and interval([])["mean"] is None


def test_aggregate_pairs_differences_by_seed_and_by_video():
    base = _report({"a.mp4": ("ball_bounce", 2.0, 0.9), "b.mp4": ("smoke_puff", 4.0, 1.0)})
    runs = {
        BASELINE: {None: base},
        PLAIN: {
            s: _report({"a.mp4": ("ball_bounce", 1.5 + s, 1.0), "b.mp4": ("smoke_puff", 4.0, 1.0)})
            for s in range(3)
        },
        FULL: {
            s: _report(
                {"a.mp4": ("ball_bounce", 1.0, 1.0), "b.mp4": ("smoke_puff", 3.0 + 0.5 * s, 1.0)}
            )
            for s in range(3)
        },
    }
    rows = aggregate(runs)["rows"]
    # overall = mean over scenes; full's seeds: (1 + 3)/2, (1 + 3.5)/2, (1 + 4)/2
    full = rows[FULL]
    assert full["interval_over"] == "training seeds and evaluation videos (two-level bootstrap)"
    assert full["violation"]["overall"]["mean"] == pytest.approx(np.mean([2.0, 2.25, 2.5]))
    # against the baseline's one generation (overall 3.0), paired with every seed
    assert full["vs_baseline"]["overall"]["mean"] == pytest.approx(np.mean([2.0, 2.25, 2.5]) - 3.0)
    # against the plain adapter, paired by seed: plain overall per seed (1.5 + s + 4)/2
    diffs = [(1 + 3 + 0.5 * s) / 2 - (1.5 + s + 4) / 2 for s in range(3)]
    assert full["vs_plain"]["overall"]["mean"] == pytest.approx(np.mean(diffs))
    # one video per scene: the bootstrap resamples the seeds only, of the per-seed differences
    seed_level = two_level_bootstrap([[[d] for d in diffs]])["ci95"]
    assert full["vs_plain"]["overall"]["ci95"] == pytest.approx(seed_level)
    assert seed_level[0] < np.mean(diffs) < seed_level[1]
    assert full["vs_baseline"]["ball_bounce"]["mean"] == pytest.approx(-1.0)
    # every other row is also compared with full PILA, paired by seed (the readings' decisions)
    assert (
        rows[PLAIN]["vs_full"]["overall"]["mean"] == pytest.approx(-np.mean(diffs))
        and not full["vs_full"]
    )
    # the baseline (one run) has no seed to resample: one video per scene leaves no interval
    assert rows[BASELINE]["violation"]["overall"]["ci95"] is None
    one_seed = aggregate({BASELINE: {None: base}, FULL: {0: runs[FULL][0]}})["rows"][FULL]
    assert one_seed["vs_baseline"]["overall"]["mean"] == pytest.approx(
        np.mean([1.0 - 2.0, 3.0 - 4.0])
    )


def test_differences_are_paired_by_video_within_a_seed():
    """A row one lower than the baseline on every video differs by exactly −1, however much
    the videos vary; unpaired, the same videos would give a wide interval."""
    videos = {f"{k}.mp4": ("ball_bounce", float(v), 1.0) for k, v in enumerate([1, 5, 2, 8, 3, 9])}
    lower = {k: (s, v - 1.0, f) for k, (s, v, f) in videos.items()}
    rows = aggregate({BASELINE: {None: _report(videos)}, FULL: {0: _report(lower)}})["rows"]
    assert rows[FULL]["vs_baseline"]["overall"]["ci95"] == pytest.approx([-1.0, -1.0])
    low, high = rows[FULL]["violation"]["overall"]["ci95"]
    assert high - low > 3.0  # one training seed: the videos' spread is in the interval


def test_the_decision_keeps_only_candidates_clearly_below_full_and_proposes_the_lowest():
    """The readings' pre-registered rule (lab_readings_plan.md): kept when candidate − full
    is below 0 with its interval below 0; the lowest kept is proposed; controls never are."""
    videos = [f"{k}.mp4" for k in range(6)]
    spread = [1.0, 5.0, 2.0, 8.0, 3.0, 9.0]

    def row(shift: float, jitter: float = 0.0) -> dict:
        return {
            s: _report(
                {
                    v: ("ball_bounce", x + shift + jitter * ((k + s) % 2 - 0.5), 1.0)
                    for k, (v, x) in enumerate(zip(videos, spread, strict=True))
                }
            )
            for s in range(3)
        }

    runs = {
        FULL: row(0.0),
        PLAIN: row(-3.0),  # a control: never proposed, however low
        ablate_variants.WORLD_FINETUNE: row(-2.0),
        "r6_frozen": row(-0.5),  # clearly lower on every video
        "r6_category_mean": row(-1.0),  # lower still: the proposal
        "r6_grad_balanced": row(-0.2, jitter=4.0),  # lower on average, interval across 0
        "wo_flow_correction": row(+1.0),  # higher
    }
    verdict = decide(aggregate(runs))
    assert verdict["reference"] == FULL
    assert set(verdict["candidates"]) == {
        "r6_frozen",
        "r6_category_mean",
        "r6_grad_balanced",
        "wo_flow_correction",
    }
    assert verdict["kept"] == ["r6_category_mean", "r6_frozen"]
    assert verdict["proposed"] == "r6_category_mean"
    noisy = verdict["candidates"]["r6_grad_balanced"]
    assert noisy["mean"] < 0 < noisy["ci95"][1] and not noisy["kept"]
    lines = "\n".join(decision_markdown(verdict))
    assert "| r6_frozen | -0.50 [-0.50, -0.50] | yes |" in lines
    assert "Proposed: `r6_category_mean`." in lines
    assert decide(aggregate({FULL: runs[FULL], "x": row(+0.5)}))["proposed"] is None
    with pytest.raises(ValueError, match="no 'full' row"):
        decide(aggregate({PLAIN: runs[PLAIN]}))


def _finish_runs_at(monkeypatch, tmp_path, level) -> list[tuple[str, int]]:
    """Runs finish at once: variant × seed's 4 videos at ``level(variant, seed)`` + k (k the
    video); returns the list the (variant, seed) of every run is appended to."""
    ran: list[tuple[str, int]] = []

    def finished(out, variant, seed, plan, *rest):
        ran.append((variant.name, seed))
        base = level(variant, seed)
        videos = {f"{k}.mp4": ("ball_bounce", base + k, 1.0) for k in range(4)}
        path = tmp_path / f"{variant.name}{seed}.json"
        path.write_text(json.dumps(_report(videos)))
        return {"report": str(path), "seconds": {"predict": 1.0}}

    monkeypatch.setattr(ablate, "execute_run", finished)
    monkeypatch.setattr(ablate, "evaluation_prompts", lambda out, plan: tmp_path / "p.jsonl")
    return ran


def test_decide_writes_the_verdict_under_the_table(tmp_path, monkeypatch, capsys):
    """``--decide``: the finished runs' table gets the rule's verdict against full PILA."""
    shift = {FULL: 0.0, "r6_frozen": -0.5, "r6_category_mean": +0.5}
    _finish_runs_at(monkeypatch, tmp_path, lambda variant, seed: 2.0 + shift[variant.name])
    out = tmp_path / "out"
    argv = ["--out", str(out), "--variants", ",".join(shift), "--seeds", "2", "--decide"]
    assert ablate.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["decision"]["kept"] == ["r6_frozen"]
    markdown = (out / "report.md").read_text()
    assert "Proposed: `r6_frozen`." in markdown
    # no baseline row: no per-scene Δ-vs-baseline section (an empty table would be left)
    assert "Δ violation vs baseline per scene" not in markdown
    assert "Violation per scene" in markdown
    assert ablate.main(argv[:-1]) == 0  # without the flag: no verdict
    assert "decision" not in json.loads((out / "report.json").read_text())
    capsys.readouterr()


def test_a_seed_range_runs_and_reports_only_those_seeds(tmp_path, monkeypatch, capsys):
    """``--seeds 3-4``: a confirmation on seeds a decision never saw runs seeds 3 and 4 of
    each trained variant (the baseline once) and its table pairs only those seeds."""
    # seed s of full PILA lies s below the baseline: the table's Δ is the mean of 3 and 4
    ran = _finish_runs_at(
        monkeypatch, tmp_path, lambda variant, seed: 10.0 - (seed if variant.trained else 0)
    )
    out = tmp_path / "out"
    assert ablate.main(["--out", str(out), "--variants", "baseline,full", "--seeds", "3-4"]) == 0
    assert ran == [(BASELINE, 3), (FULL, 3), (FULL, 4)]
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["seeds"] == [3, 4] and report["rows"][FULL]["seeds"] == [3, 4]
    assert report["rows"][FULL]["vs_baseline"]["overall"]["mean"] == pytest.approx(-3.5)
    assert "training seeds 3, 4;" in (out / "report.md").read_text()
    capsys.readouterr()


def test_bad_command_lines_are_one_line_and_exit_2(tmp_path, capsys):
    for argv in (
        ["--variants", "baseline,volcano"],
        ["--seeds", "0"],
        ["--seeds", "7-3"],
        ["--seeds", "three"],
        ["--scenes", "lava"],
        ["--variants", "plain,plain_adapter"],
        ["--eval-set", "c"],
        ["--eval-seeds", "17"],
        ["--predict-batch", "0"],
        ["--variants", "plain,r6_frozen", "--decide"],
    ):
        assert ablate.main(["--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pila lab ablate: error:") and len(err.strip().splitlines()) == 1, err


def test_the_evaluation_set_is_the_first_videos_of_each_scene_each_its_own_draw(tmp_path):
    plan = ablate.Plan(
        (BASELINE,), (0,), 3, 1.0, None, str(LAB), ("smoke_puff", "ball_bounce"), "b"
    )
    records = [
        json.loads(line)
        for line in ablate_runs.evaluation_prompts(tmp_path, plan).read_text().splitlines()
    ]
    assert [(r["scene"], r["clip_index"]) for r in records] == [
        ("ball_bounce", i) for i in range(3)
    ] + [("smoke_puff", i) for i in range(3)]
    assert all(r["world_seed"] == 3 for r in records) and len({r["seed"] for r in records}) == 6
    predict = ablate_variants.predict_config(
        yaml.safe_load((LAB / "predict.yaml").read_text()),
        tmp_path,
        None,
        None,
        tmp_path / "eval_prompts.jsonl",
    )
    assert (
        predict["data"]["init_args"]["videos_per_prompt"] == 1
    )  # one video per record, its own seed
    assert plan.budget()["eval_set"] == "b"
    shared = tmp_path / "shared.jsonl"
    shared.write_text('{"prompt": "p", "scene": "ball_bounce", "seed": 1}\n' * 2)
    with pytest.raises(UsageError, match="its own 'seed'"):
        ablate_runs.evaluation_prompts(
            tmp_path, ablate.Plan((BASELINE,), (0,), 2, 1.0, None, str(LAB), None, str(shared))
        )


def test_videos_of_another_predict_config_or_adapter_are_regenerated_and_kept_aside(
    tmp_path, monkeypatch
):
    """Videos made with other sampling settings or another adapter are neither resumed as
    finished nor lost."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "stageC.yaml").write_text((LAB / "stageC.yaml").read_text())
    predict = yaml.safe_load((LAB / "predict.yaml").read_text())
    predict["model"]["init_args"]["sampling"]["guidance_scale"] = 4.0
    (configs / "predict.yaml").write_text(yaml.safe_dump(predict))
    out, plan = tmp_path / "ablate", ablate.Plan((PLAIN,), (0,), 1, 1.0, 2, str(configs))
    folder = out / "runs" / PLAIN / "seed0"
    weights, calls = {"bytes": b"A"}, []

    def fake_run(
        args, threads=None
    ):  # fit: nothing; predict: one "video" naming its guidance and adapter
        if args[0] != "predict":
            return
        cfg = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
        guidance = cfg["model"]["init_args"]["sampling"]["guidance_scale"]
        made = f"{guidance}/{(folder / 'adapter' / 'label.txt').read_text()}"
        calls.append(made)
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        if not (folder / "videos" / "v.mp4").exists():  # the writer resumes: what exists is kept
            (folder / "videos" / "v.mp4").write_text(made)

    def fake_export(ckpt, target):  # weights that say which they are
        from safetensors.torch import save_file

        Path(target).mkdir(parents=True, exist_ok=True)
        label = weights["bytes"].decode()
        save_file({"w": torch.tensor([float(ord(label))])}, str(Path(target) / "model.safetensors"))
        (Path(target) / "label.txt").write_text(label)
        return Path(target)

    monkeypatch.setattr(ablate_runs, "run_pila", fake_run)
    monkeypatch.setattr("pila.stages.export.export_checkpoint", fake_export)
    monkeypatch.setattr(
        "pila.lab.evaluate.evaluate",
        lambda videos, report: {
            "overall": {"video": (videos / "v.mp4").read_text()},
            "ruler": ruler_identity(),
        },
    )

    def run() -> str:
        done = ablate_runs.execute_run(out, resolve_variant(PLAIN), 0, plan, "plain")
        return done["overall"]["video"]

    def superseded() -> list[str]:
        return sorted(p.read_text() for p in (folder / "superseded").glob("*/videos/v.mp4"))

    assert run() == "4.0/A" and calls == ["4.0/A"]
    assert run() == "4.0/A" and calls == ["4.0/A"]  # finished: kept, nothing generated
    predict["model"]["init_args"]["sampling"]["guidance_scale"] = 2.0
    (configs / "predict.yaml").write_text(yaml.safe_dump(predict))
    assert run() == "2.0/A" and superseded() == ["4.0/A"]  # drawn again, the old videos kept aside
    (folder / "done.json").unlink()  # as if killed while generating: the same videos resume
    assert run() == "2.0/A" and superseded() == ["4.0/A"]
    (folder / "done.json").unlink()
    (folder / "stageC" / "finished.json").unlink()  # stage C trains again, to other weights
    weights["bytes"] = b"B"
    assert run() == "2.0/B" and superseded() == ["2.0/A", "4.0/A"]


# ------------------------------------------------------------------ end to end
def _short_configs(folder: Path) -> Path:
    """The lab configs with one clip per category, batch 2, so a few-step run fits a test."""
    folder.mkdir(parents=True)
    for name in (*ablate.STAGES, "predict"):
        cfg = yaml.safe_load((LAB / f"{name}.yaml").read_text())
        if name != "predict":
            cfg["data"]["init_args"].update(num_clips_per_category=1, batch_size=2)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return folder


@pytest.mark.slow
def test_ablate_runs_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    configs = _short_configs(tmp_path / "configs")
    out = tmp_path / "ablate"
    argv = [
        "--out", str(out), "--variants", "baseline,plain", "--seeds", "1", "--eval-seeds", "2",
        "--steps-scale", "0.02", "--inference-steps", "2", "--scenes", "ball_bounce,smoke_puff",
        "--configs", str(configs), "--threads", "2",
    ]  # fmt: skip
    assert ablate.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["rows"]) == [BASELINE, PLAIN]
    plain = report["rows"][PLAIN]
    assert plain["seeds"] == [0] and "two-level bootstrap" in plain["interval_over"]
    for key in ("violation", "fidelity", "vs_baseline"):
        assert set(plain[key]) == {"ball_bounce", "smoke_puff", "overall"}
        assert plain[key]["overall"]["n"] == 4 and len(plain[key]["overall"]["ci95"]) == 2
    videos = sorted(p.name for p in (out / "runs" / PLAIN / "seed0" / "videos").rglob("*.mp4"))
    assert (
        videos == sorted(p.name for p in (out / "runs" / BASELINE / "videos").rglob("*.mp4"))
        and len(videos) == 4
    )
    assert (
        report["plan"]["eval_set"] == "a"
        and "evaluation set `a`" in (out / "report.md").read_text()
    )
    assert (out / "runs" / PLAIN / "seed0" / "adapter" / "adapter_config.json").is_file()
    assert not (out / "runs" / PLAIN / "seed0" / "stageA").exists()  # stage C only
    table = (out / "report.md").read_text()
    assert "| baseline |" in table and "| plain_adapter | 1 |" in table and "Δ vs baseline" in table
    assert (out / "report.png").stat().st_size > 0

    # a second invocation keeps both finished runs: nothing is trained or generated again
    def refuse(args, threads=None):
        raise AssertionError(f"ran {args} again")

    monkeypatch.setattr(ablate_runs, "run_pila", refuse)
    assert ablate.main(argv) == 0
    assert (
        json.loads((out / "report.json").read_text())["rows"][PLAIN]["violation"]
        == plain["violation"]
    )
    # another ruler (its code or calibration changed): the kept videos are measured again
    import pila.lab.ruler as ruler_package

    monkeypatch.setattr(ruler_package, "ruler_identity", lambda: "another ruler")
    assert ablate.main(argv) == 0
    for folder in (out / "runs" / PLAIN / "seed0", out / "runs" / BASELINE):
        assert json.loads((folder / "done.json").read_text())["ruler"] == "another ruler"
        assert json.loads((folder / "report" / "report.json").read_text())["ruler"] == (
            "another ruler"
        )
    # --report-only with a seed not yet trained: the finished runs reported, the rest named
    two_seeds = [*argv[: argv.index("--seeds") + 1], "2", *argv[argv.index("--seeds") + 2 :]]
    assert ablate.main([*two_seeds, "--report-only"]) == 0
    partial = json.loads((out / "report.json").read_text())
    assert partial["missing"] == [f"{PLAIN} seed 1"] and partial["rows"][PLAIN]["seeds"] == [0]
    assert f"Not finished, left out: {PLAIN} seed 1." in (out / "report.md").read_text()
    # a changed budget (here the other evaluation set) is a different experiment: not finished
    changed = ablate.Plan(
        (PLAIN,), (0,), 2, 0.02, 2, str(configs), ("ball_bounce", "smoke_puff"), "b"
    )
    assert ablate_runs._done(out / "runs" / PLAIN / "seed0", changed) is None

    # set b in the same folder: the same trained adapter generates set b beside set a
    monkeypatch.undo()  # run_pila and the ruler as shipped again
    original_run_pila, generated = ablate_runs.run_pila, []

    def predict_only(args, threads=None):
        assert args[0] == "predict", f"retrained for another evaluation set: {args}"
        generated.append(args)
        original_run_pila(args, threads)

    monkeypatch.setattr(ablate_runs, "run_pila", predict_only)
    seed0 = out / "runs" / PLAIN / "seed0"
    done_a = (seed0 / "done.json").read_text()
    report_a = (out / "report.json").read_text()
    assert ablate.main([*argv, "--eval-set", "b"]) == 0
    assert len(generated) == 2  # the baseline's and the plain adapter's set b, nothing trained

    def noise_seeds(folder: Path) -> set[int]:
        return {json.loads(p.read_text())["seed"] for p in folder.glob("*.json")}

    assert len(list((seed0 / "videos_b").rglob("*.mp4"))) == 4
    b_seeds, a_seeds = noise_seeds(seed0 / "videos_b"), noise_seeds(seed0 / "videos")
    assert len(b_seeds) == 4 and not b_seeds & a_seeds  # set b: its own noise draws
    assert (seed0 / "done.json").read_text() == done_a and (seed0 / "done_b.json").is_file()
    assert (out / "report.json").read_text() == report_a
    report_b = json.loads((out / "report_b.json").read_text())
    assert report_b["plan"]["eval_set"] == "b" and report_b["rows"][PLAIN]["seeds"] == [0]
    assert (out / "eval_prompts_b.jsonl").is_file() and (out / "report_b.png").is_file()

    # the transfer: the plain adapter trained above, moved unchanged onto lab-moe
    from pila.lab import world_moe
    from tests.lab.test_lab_moe import write_experts

    monkeypatch.setenv(world_moe.EXPERTS_ENV, str(write_experts(tmp_path / "experts")))
    monkeypatch.setenv("PILA_CACHE", str(tmp_path / "cache"))
    moved = tmp_path / "transfer"
    transfer = [
        *argv[2:],
        "--out",
        str(moved),
        "--backbone",
        "lab-moe",
        "--adapters-from",
        str(out),
    ]
    generated.clear()
    assert ablate.main(transfer) == 0
    assert len(generated) == 2  # lab-moe's baseline and the moved plain adapter: no training
    assert not (moved / "runs" / PLAIN / "seed0" / "stageC").exists()
    sidecars = [
        json.loads(p.read_text())
        for p in (moved / "runs" / PLAIN / "seed0" / "videos").glob("*.json")
    ]
    assert len(sidecars) == 4 and all(
        s["corrected_by_regime"]["high_noise"] and s["corrected_by_regime"]["low_noise"]
        for s in sidecars
    )  # both experts corrected
    assert sidecars[0]["adapter"]["folder"] == str((seed0 / "adapter").resolve())
    moved_report = json.loads((moved / "report.json").read_text())
    assert moved_report["plan"]["backbone"] == "lab-moe" and list(moved_report["rows"]) == [
        BASELINE,
        PLAIN,
    ]
    assert (moved / "report.md").read_text().startswith("# Transfer in the lab")
    # a seed the source never trained, and world_finetune trained on two experts: usage errors
    assert (
        ablate.main(
            [
                *transfer[:-4],
                "--out",
                str(moved),
                "--seeds",
                "2",
                "--backbone",
                "lab-moe",
                "--adapters-from",
                str(out),
            ]
        )
        == 2
    )
    assert ablate.main([*transfer[:-2], "--variants", "world_finetune"]) == 2


def test_a_failing_child_run_is_reported_not_swallowed(tmp_path):
    with pytest.raises(ablate_runs.RunFailed, match="exit status 2.*resume"):
        ablate_runs.run_pila(["fit", "--config", str(tmp_path / "missing.yaml")])


def test_predict_processes_split_the_threads_and_run_lightnings_ddp():
    from pila.lab.ablate_runs import predict_command

    config = Path("run/configs/predict.yaml")
    assert predict_command(config, 2, 1) == (["predict", "--config", str(config)], 2)
    args, threads = predict_command(config, 2, 2)
    assert args[3:] == ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    assert threads == 1  # two processes of one thread on two cores, not four threads
    assert predict_command(config, 3, 2)[1] == 1 and predict_command(config, 1, 4)[1] == 1
    # a batch is a command-line setting of the data module, not part of the recorded config
    args, threads = predict_command(config, 2, 1, batch=4)
    assert args == ["predict", "--config", str(config), "--data.init_args.batch_size", "4"]
    assert threads == 2


def test_experiment_overrides_update_the_stage_callbacks_they_name(tmp_path):
    """The lab's experiment variants (`lightning_configs/lab/experiments/`): a callback of an
    override updates the stage's callback of that class and is not added where a stage has
    none; the stage-C-only architecture trains stage C alone."""
    experiments = LAB / "experiments"
    run, data = tmp_path / "run", tmp_path / "data"

    def configs(name: str) -> dict[str, dict]:
        variant = resolve_variant(str(experiments / f"{name}.yaml"))
        return {
            stage: stage_config(
                yaml.safe_load((LAB / f"{stage}.yaml").read_text()), variant, stage, run, data, 0, 1
            )
            for stage in variant.stages
        }

    def callback(cfg: dict, name: str) -> dict | None:
        found = [c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith(name)]
        return found[0]["init_args"] if found else None

    unfrozen = configs("encoder_unfrozen")
    assert callback(unfrozen["stageC"], "EncoderFreeze") == {"steps": 0, "lr_scale": 1.0}
    assert unfrozen["stageC"]["model"]["init_args"]["encoder_lr_scale"] == 1.0
    assert callback(unfrozen["stageA"], "EncoderFreeze") is None  # not added where absent
    base_c = yaml.safe_load((LAB / "stageC.yaml").read_text())
    assert len(unfrozen["stageC"]["trainer"]["callbacks"]) == len(base_c["trainer"]["callbacks"])

    lam = configs("lambda_phys_0.1")["stageC"]
    assert callback(lam, "PhysicsWarmup")["target"] == 0.1
    assert callback(lam, "PhysicsWarmup")["steps"] == callback(base_c, "PhysicsWarmup")["steps"]

    only_c = configs("architecture_c_only")
    assert list(only_c) == ["stageC"]
    assert only_c["stageC"]["model"]["init_args"]["init_from"] is None
    assert "plain_adapter" not in only_c["stageC"]["model"]["init_args"].get("adapter", {})


# ------------------------------------------------------- the transfer table benchmark
def _transfer_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "lab_transfer.py"
    spec = importlib.util.spec_from_file_location("lab_transfer_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finished_ablation(folder: Path, levels: dict[tuple[str, int | None], float]) -> None:
    """An ablation folder of finished runs: each run's 4 videos at ``level`` + 0.1·k."""
    budget = {"eval_set": "a", "steps_scale": 4.0, "backbone": "lab-moe"}
    for (variant, seed), level in levels.items():
        run = folder / "runs" / variant / ("" if seed is None else f"seed{seed}")
        (run / "report").mkdir(parents=True)
        videos = {f"{k}.mp4": ("ball_bounce", level + 0.1 * k, 1.0) for k in range(4)}
        (run / "report" / "report.json").write_text(json.dumps(_report(videos)))
        done = {"variant": variant, "seed": seed, "budget": budget, "ruler": "r1"}
        done.update(report=str(run / "report" / "report.json"), seconds={"predict": 60.0})
        (run / "done.json").write_text(json.dumps(done))
    (folder / "report.json").write_text(json.dumps({"plan": {**budget, "seeds": [0, 1]}}))


def test_the_transfer_table_pairs_moved_rows_with_the_baseline_and_their_trained_twins(tmp_path):
    bench = _transfer_module()
    moved, trained = tmp_path / "moved", tmp_path / "trained"
    _finished_ablation(
        moved,
        {(BASELINE, None): 10.0, (FULL, 0): 9.0, (FULL, 1): 8.0, (PLAIN, 0): 9.5, (PLAIN, 1): 9.5},
    )
    _finished_ablation(trained, {(BASELINE, None): 10.0, (FULL, 0): 7.0, (PLAIN, 0): 9.0})
    result = bench.transfer_table(moved, trained)
    primary = result["primary"]
    assert primary["moved full PILA − lab-moe baseline"]["mean"] == pytest.approx(-1.5)
    assert primary["moved full PILA − moved plain adapter"]["mean"] == pytest.approx(-1.0)
    # moving costs: the moved full PILA against the one trained on lab-moe, on seed 0 only
    cost = result["secondary"]["moved full PILA − trained on lab-moe"]
    assert cost["mean"] == pytest.approx(2.0) and cost["seeds"] == 1
    own = result["secondary"]["trained on lab-moe: full PILA − plain adapter"]
    assert own["mean"] == pytest.approx(-2.0)
    # without the reference: the moved rows alone, the same primary comparisons
    alone = bench.transfer_table(moved)
    assert alone["primary"]["moved full PILA − lab-moe baseline"]["mean"] == pytest.approx(-1.5)
    assert not any(k.startswith("trained") or "trained on" in k for k in alone["secondary"])
    # a run of another budget (another evaluation set) is not read
    other = json.loads((trained / "runs" / FULL / "seed0" / "done.json").read_text())
    other["budget"]["eval_set"] = "b"
    (trained / "runs" / FULL / "seed0" / "done.json").write_text(json.dumps(other))
    assert (
        "moved full PILA − trained on lab-moe"
        not in bench.transfer_table(moved, trained)["secondary"]
    )
    # runs scored by two rulers cannot share a table
    done = json.loads((trained / "runs" / PLAIN / "seed0" / "done.json").read_text())
    (trained / "runs" / PLAIN / "seed0" / "done.json").write_text(
        json.dumps({**done, "ruler": "r2"})
    )
    with pytest.raises(SystemExit, match="2 rulers"):
        bench.transfer_table(moved, trained)
    # recorded paths name no machine
    inside = str(bench.REPO / "benchmarks" / "x.md")
    assert bench.portable({"a": [inside, "/srv/ck/lightning_configs/lab", 3]}) == {
        "a": ["benchmarks/x.md", "…/lightning_configs/lab", 3]
    }
