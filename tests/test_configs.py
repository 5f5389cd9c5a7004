"""Every shipped YAML is parsed against the real signatures and instantiated with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pila.cli import PilaCLI
from pila.generation import SamplingConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "lightning_configs"
STAGE_CONFIGS = sorted(p for p in CONFIGS.rglob("stage*.yaml"))
PREDICT_CONFIGS = sorted(p for p in CONFIGS.rglob("predict*.yaml"))
ABLATIONS = sorted((CONFIGS / "ablations").glob("*.yaml"))
READINGS = sorted((CONFIGS / "readings").glob("*.yaml"))
EXPERIMENTS = sorted((CONFIGS / "lab" / "experiments").glob("*.yaml"))

# Paper configs name GPUs, DeepSpeed and real Wan folders; these overrides keep their model,
# data and callbacks but build them for the CPU and the tiny backbone.
CPU_TRAINER = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.logger=false",
]


def _instantiate(args: list[str]) -> PilaCLI:
    return PilaCLI(args=args, run=False)


def test_every_config_is_covered():
    found = set(CONFIGS.rglob("*.yaml"))
    overrides = set(ABLATIONS) | set(READINGS) | set(EXPERIMENTS)
    assert found == set(STAGE_CONFIGS) | set(PREDICT_CONFIGS) | overrides
    # R5: both readings spelled out; R6: three readings of the adaptive weights
    stems = [p.stem[:2] for p in READINGS]
    assert stems == ["r1", "r2", "r3", "r4", "r5", "r5", "r6", "r6", "r6", "r7"]
    assert {p.name for p in STAGE_CONFIGS} >= {"stageA.yaml", "stageB.yaml", "stageC.yaml"}
    assert len(ABLATIONS) >= 20


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_stage_configs_instantiate(path, tmp_path):
    config = yaml.safe_load(path.read_text())
    stage = config["model"]["class_path"].rsplit(".", 1)[1]
    overrides = [
        "--model.init_args.backbone=tiny",
        "--model.init_args.adapter.text_dim=32",
        "--model.init_args.init_from=null",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = _instantiate(["--config", str(path), *CPU_TRAINER, *overrides])
    assert type(cli.model).__name__ == stage
    assert cli.model.adapter.config.text_dim == 32
    assert cli.datamodule is not None
    assert cli.model.hparams.text_length == config["model"]["init_args"]["text_length"]
    callback_names = {type(c).__name__ for c in cli.trainer.callbacks}
    paper = path.parent == CONFIGS
    fused = paper and cli.model.stage_name in ("B", "C")  # the paper's residual stages run it fused
    assert cli.model.adapter.residual_pass.compile is fused
    expected = {
        "A": {"SigmaRangePhases"},
        "B": {"RecoveryPhases"},
        "C": {"PhysicsWarmup", "ConditioningWarmup", "MaskBlend", "EncoderFreeze"},
    }
    assert expected[cli.model.stage_name] <= callback_names


@pytest.mark.parametrize(
    "path", [p for p in STAGE_CONFIGS if p.parent == CONFIGS], ids=lambda p: p.name
)
def test_paper_configs_build_deepspeed_zero2_with_cpu_offload(path):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    trainer = yaml.safe_load(path.read_text())["trainer"]
    assert trainer["devices"] == 8 and trainer["precision"] == "bf16-mixed"
    spec = trainer["strategy"]
    assert spec["class_path"].endswith("DeepSpeedStrategy")
    strategy = DeepSpeedStrategy(**spec["init_args"])
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "cpu"


def test_offloading_deepspeed_gets_deepspeed_cpu_adam():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DeepSpeedStrategy
    from training.helpers import tiny_adapter_config

    from pila.stages import StageC

    module = StageC(adapter=tiny_adapter_config())
    assert module.optimizer_class().__name__ == "AdamW"
    module._trainer = SimpleNamespace(strategy=DeepSpeedStrategy(stage=2, offload_optimizer=True))
    assert module.optimizer_class().__name__ == "DeepSpeedCPUAdam"
    module._trainer = SimpleNamespace(strategy=DeepSpeedStrategy(stage=2))
    assert module.optimizer_class().__name__ == "AdamW"


@pytest.mark.parametrize("path", PREDICT_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_predict_configs_instantiate(path, tmp_path):
    overrides = [
        "--model.init_args.backbone=tiny",
        "--model.init_args.adapter=null",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    config = yaml.safe_load(path.read_text())
    assert (
        config.pop("return_predictions") is False
    )  # a `predict` subcommand option; not parsed without it
    if "prompt_file" in config["data"]["init_args"]:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a ball bounces\n")
        overrides.append(f"--data.init_args.prompt_file={prompts}")
    parser = config["model"]["init_args"].get("parser")
    if parser:  # the LLM parser needs its model folder (loaded only in setup)
        (tmp_path / "llm").mkdir()
        overrides.append(f"--model.init_args.parser.init_args.model_path={tmp_path / 'llm'}")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(config))
    cli = _instantiate(["--config", str(copy), *CPU_TRAINER, *overrides])
    assert type(cli.model).__name__ == "PILAPredictModule"
    assert cli.model.sampling == SamplingConfig(**config["model"]["init_args"]["sampling"])


def test_a_dotted_override_reaches_the_sampling_block(tmp_path):
    path = CONFIGS / "predict.yaml"
    overrides = [
        "--model.init_args.backbone=tiny",
        "--model.init_args.adapter=null",
        "--model.init_args.parser=null",
        f"--trainer.default_root_dir={tmp_path}",
        "--model.init_args.sampling.correction_steps=41-50",
        "--model.init_args.sampling.top_k=2",
    ]
    config = yaml.safe_load(path.read_text())
    config.pop("return_predictions")
    (tmp_path / "prompts.txt").write_text("a ball bounces\n")
    config["data"]["init_args"]["prompt_file"] = str(tmp_path / "prompts.txt")
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(config))
    cli = _instantiate(["--config", str(tmp_path / "predict.yaml"), *CPU_TRAINER, *overrides])
    assert cli.model.sampling.steps == tuple(range(41, 51)) and cli.model.sampling.top_k == 2
    assert cli.model.sampling.num_inference_steps == 50  # the rest of the block is the YAML's


ADAPTER_ABLATIONS = [
    p for p in ABLATIONS if "class_path" not in yaml.safe_load(p.read_text())["model"]
]
"""Overrides of the adapter; world_finetune swaps the model (tests/lab/test_lab_ablate.py)."""


@pytest.mark.parametrize("path", ADAPTER_ABLATIONS, ids=lambda p: p.stem)
def test_ablation_overrides_apply_on_top_of_a_stage(path, tmp_path):
    override = yaml.safe_load(path.read_text())["model"]["init_args"]
    base = CONFIGS / "tiny" / "stageC.yaml"
    cli = _instantiate(
        [
            "--config",
            str(base),
            "--config",
            str(path),
            "--model.init_args.init_from=null",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    config = cli.model.adapter.config
    for key, value in override["adapter"].items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                assert getattr(getattr(config, key), sub) == sub_value
        elif isinstance(value, list):
            assert list(getattr(config, key)) == value
        else:
            assert getattr(config, key) == value
    # everything not named keeps the tiny stage's value
    assert config.text_dim == 32 and config.hidden == 32


@pytest.mark.parametrize("path", PREDICT_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_paper_predict_configs_parse_with_an_llm_and_tiny_ones_with_rules(path, tmp_path):
    """The full model's prompts go through the LLM parser (paper Sec. 3.1, App. A.2); the rule
    parser is Table 4's "w/o Prompt Refine" row and the offline default of the tiny configs."""
    parser = yaml.safe_load(path.read_text())["model"]["init_args"].get("parser")
    if path.parent != CONFIGS:
        assert parser is None
        return
    assert parser["class_path"] == "pila.parser.LLMPromptParser"
    assert parser["init_args"]["model_path"].startswith("checkpoints/")
    assert "Instruct" in path.read_text() and '"w/o Prompt Refine"' in path.read_text()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a ball bounces\n")
    (tmp_path / "llm").mkdir()
    config = yaml.safe_load(path.read_text())
    config.pop("return_predictions")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(config))
    overrides = [
        "--model.init_args.backbone=tiny",
        "--model.init_args.adapter=null",
        f"--data.init_args.prompt_file={prompts}",
    ]
    cli = _instantiate(
        [
            "--config",
            str(copy),
            *CPU_TRAINER,
            *overrides,
            f"--model.init_args.parser.init_args.model_path={tmp_path / 'llm'}",
        ]
    )
    assert type(
        cli.model.parser
    ).__name__ == "LLMPromptParser" and cli.model.parser.model_path == str(tmp_path / "llm")
    # the offline switch the comment names
    cli = _instantiate(
        ["--config", str(copy), *CPU_TRAINER, *overrides, "--model.init_args.parser", "null"]
    )
    assert cli.model.parser is None  # → RuleBasedParser in setup


@pytest.mark.parametrize("path", READINGS, ids=lambda p: p.stem)
def test_reading_overrides_apply_where_they_belong(path, tmp_path):
    """R1, R2, R5, R6 change the adapter of every stage; R4 is a stage B argument; R3 a
    generation setting."""
    init_args = yaml.safe_load(path.read_text())["model"]["init_args"]
    if "sampling" in init_args:
        config = yaml.safe_load((CONFIGS / "predict.yaml").read_text())
        config.pop("return_predictions")
        (tmp_path / "prompts.txt").write_text("a ball bounces\n")
        config["data"]["init_args"]["prompt_file"] = str(tmp_path / "prompts.txt")
        (tmp_path / "predict.yaml").write_text(yaml.safe_dump(config))
        overrides = [
            "--model.init_args.backbone=tiny",
            "--model.init_args.adapter=null",
            "--model.init_args.parser=null",
        ]
        cli = _instantiate(
            [
                "--config",
                str(tmp_path / "predict.yaml"),
                "--config",
                str(path),
                *CPU_TRAINER,
                *overrides,
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
        for key, value in init_args["sampling"].items():
            assert getattr(cli.model.sampling, key) == value
        assert (
            cli.model.sampling.num_inference_steps
            == config["model"]["init_args"]["sampling"]["num_inference_steps"]
        )
        return
    stage = "stageB" if "physical_mask_steps" in init_args else "stageC"
    base = CONFIGS / "tiny" / f"{stage}.yaml"
    cli = _instantiate(
        [
            "--config",
            str(base),
            "--config",
            str(path),
            "--model.init_args.init_from=null",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    if stage == "stageB":
        assert cli.model.physical_mask_steps == init_args["physical_mask_steps"] > 0
        return
    config = cli.model.adapter.config
    for key, value in init_args["adapter"].items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                assert getattr(getattr(config, key), sub) == sub_value
        else:
            assert getattr(config, key) == value
