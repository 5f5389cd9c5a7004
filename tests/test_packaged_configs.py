"""The configs shipped in the package: named without a path, listed and copied, read from any
directory (with the files they name) by ``--config``, ``pila demo`` and ``pila lab ablate``."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import yaml
from jsonargparse import Namespace

from pila import configs
from pila.cli import main, settle_data_sources

ROOT = Path(__file__).resolve().parents[1]
LAB_PROMPTS = "lightning_configs/lab/prompts.jsonl"  # as lab/predict.yaml writes it


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory outside the repository."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_the_configs_are_found_through_the_package():
    assert configs.ROOT == importlib.resources.files("pila.lightning_configs")
    shipped = {
        p.relative_to(ROOT / "lightning_configs").as_posix()
        for p in (ROOT / "lightning_configs").rglob("*.yaml")
    }
    assert shipped <= set(configs.available())
    assert "lab/prompts.jsonl" in configs.available()
    assert configs.summary("lab/stageA.yaml").startswith("Stage A on the lab world")


def test_a_config_name_prefers_a_local_file_then_the_package(elsewhere):
    packaged = str(configs.ROOT / "lab" / "stageC.yaml")
    assert configs.config_path("lab/stageC.yaml") == packaged
    assert configs.config_path("lightning_configs/lab/stageC.yaml") == packaged
    for not_a_name in (
        "lab/nope.yaml",
        "../lab/stageC.yaml",
        "{trainer: {max_steps: 2}}",
        "x" * 5000,
    ):
        assert configs.config_path(not_a_name) == not_a_name
    assert configs.config_path("lab") == "lab"  # a folder is no config
    (elsewhere / "lab").mkdir()
    (elsewhere / "lab" / "stageC.yaml").write_text("seed_everything: 1\n")
    assert configs.config_path("lab/stageC.yaml") == "lab/stageC.yaml"  # the local file wins


def test_fit_print_config_of_a_packaged_config_from_another_directory(elsewhere, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "lab/stageC.yaml", "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "pila.stages.StageC"
    assert (
        printed["trainer"]["max_steps"]
        == yaml.safe_load((ROOT / "lightning_configs/lab/stageC.yaml").read_text())["trainer"][
            "max_steps"
        ]
    )


def test_a_config_found_nowhere_is_one_message(elsewhere, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "lab/stageZ.yaml"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "no file lab/stageZ.yaml here and no such config in the package" in err
        and "Traceback" not in err
    )


def _settled(argv: list[str], prompt_file: str) -> str:
    ns = Namespace(prompt_file=prompt_file, prompts=None, augmented_file=None)
    settle_data_sources(ns, argv)
    return ns.prompt_file


def test_a_packaged_config_reads_its_packaged_prompt_file_from_any_directory(elsewhere):
    packaged_prompts = str(configs.ROOT / "lab" / "prompts.jsonl")
    assert _settled(["--config", "lab/predict.yaml"], LAB_PROMPTS) == packaged_prompts
    # even where the current directory has a file of that name: the package's own wins
    (elsewhere / "lightning_configs" / "lab").mkdir(parents=True)
    (elsewhere / LAB_PROMPTS).write_text('{"prompt": "mine"}\n')
    assert _settled(["--config", "lab/predict.yaml"], LAB_PROMPTS) == packaged_prompts
    # a value typed on the command line is the user's, relative to the current directory
    argv = ["--config", "lab/predict.yaml", "--data.init_args.prompt_file", LAB_PROMPTS]
    assert _settled(argv, LAB_PROMPTS) == LAB_PROMPTS


def test_a_copied_config_reads_edited_prompts_and_else_the_packaged_ones(elsewhere):
    assert main(["configs", "copy", "lab/predict.yaml"]) == 0
    copied = "lightning_configs/lab/predict.yaml"
    assert (elsewhere / copied).read_bytes() == (configs.ROOT / "lab" / "predict.yaml").read_bytes()
    assert _settled(["--config", copied], LAB_PROMPTS) == str(
        configs.ROOT / "lab" / "prompts.jsonl"
    )
    assert main(["configs", "copy", "lab/prompts.jsonl"]) == 0
    assert _settled(["--config", copied], LAB_PROMPTS) == LAB_PROMPTS  # the copy in this directory


def test_predict_on_a_packaged_config_builds_its_prompts_from_another_directory(
    elsewhere, monkeypatch
):
    """The whole parse: --config by name, the prompt file through the package, the data module
    built (everything ``pila predict`` does before the trainer runs)."""
    from pila.cli import PilaCLI

    monkeypatch.setattr(PilaCLI, "_run_subcommand", lambda self, subcommand: None)
    cli = PilaCLI(
        args=["predict", "--config", "lab/predict.yaml", "--model.init_args.backbone=tiny"]
    )
    assert cli.config["predict"]["data"]["init_args"]["prompt_file"] == str(
        configs.ROOT / "lab" / "prompts.jsonl"
    )
    cli.datamodule.setup("predict")
    scenes = {record.extra.get("scene") for record in cli.datamodule.records}
    assert len(scenes) == 8  # one held-out prompt per lab scene, read from the package


def test_pila_configs_lists_and_copies(elsewhere, capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert (
        "lab/stageC.yaml" in out and "tiny/predict.yaml" in out and "ablations/wo_afe.yaml" in out
    )
    assert main(["configs", "copy", "lab", "--to", "mine"]) == 0
    written = sorted(
        p.relative_to(elsewhere / "mine").as_posix()
        for p in (elsewhere / "mine").rglob("*")
        if p.is_file()
    )
    assert written == [
        "lab/eval_a.jsonl",
        "lab/eval_b.jsonl",
        "lab/experiments/architecture_c_only.yaml",
        "lab/experiments/encoder_unfrozen.yaml",
        "lab/experiments/lambda_phys_0.1.yaml",
        "lab/predict.yaml",
        "lab/predict_moe.yaml",
        "lab/prompts.jsonl",
        "lab/stageA.yaml",
        "lab/stageB.yaml",
        "lab/stageC.yaml",
    ]
    assert (elsewhere / "mine/lab/stageB.yaml").read_bytes() == (
        configs.ROOT / "lab/stageB.yaml"
    ).read_bytes()
    capsys.readouterr()
    (elsewhere / "mine/lab/stageB.yaml").write_text("# edited\n")
    assert main(["configs", "copy", "lab", "--to", "mine"]) == 2  # nothing overwritten silently
    err = capsys.readouterr().err
    assert (
        err.startswith("pila configs: error:")
        and "stageB.yaml" in err
        and len(err.splitlines()) == 1
    )
    assert (elsewhere / "mine/lab/stageB.yaml").read_text() == "# edited\n"
    assert main(["configs", "copy", "lab", "--to", "mine", "--overwrite"]) == 0
    assert (elsewhere / "mine/lab/stageB.yaml").read_bytes() == (
        configs.ROOT / "lab/stageB.yaml"
    ).read_bytes()
    assert main(["configs", "copy", "nope"]) == 2
    assert "no packaged config 'nope'" in capsys.readouterr().err


def test_every_packaged_file_a_shipped_config_names_exists():
    """A path a shipped config names as ``lightning_configs/…`` (a prompt file) is packaged."""
    named = []

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value.startswith(f"{configs.PREFIX}/"):
            named.append(value)

    for path in (ROOT / "lightning_configs").rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    assert LAB_PROMPTS in named
    for value in named:
        assert configs.packaged(value) is not None and configs.packaged(value).is_file(), value


def test_demo_copies_name_the_packaged_prompts_by_absolute_path(elsewhere):
    from pila import demo

    out = elsewhere / "out"
    made = demo._configs_for(out.resolve(), demo.config_folder(None))
    predict = yaml.safe_load(made["predict"].read_text())
    prompt_file = Path(predict["data"]["init_args"]["prompt_file"])
    assert (
        prompt_file == (configs.ROOT / "lab" / "prompts.jsonl").resolve() and prompt_file.is_file()
    )
    stage_a = yaml.safe_load(made["stageA"].read_text())
    assert stage_a["data"]["init_args"]["root"] == str(out.resolve() / "data")
    assert (
        made["predict"].read_text().startswith("# pila predict on the lab world")
    )  # comments kept
    assert demo.config_folder("tiny") == (configs.ROOT / "tiny").resolve()
    assert demo.config_folder("lightning_configs/tiny") == (configs.ROOT / "tiny").resolve()


def test_demo_with_an_unknown_config_folder_is_one_message(elsewhere, capsys):
    from pila import demo

    assert demo.main(["--configs", "nope", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pila demo: error: --configs nope") and len(err.splitlines()) == 1


def test_ablate_reads_the_packaged_configs_and_prompts_from_any_directory(elsewhere):
    from pila.lab import ablate, ablate_runs, ablate_variants

    assert ablate.LAB_CONFIGS == configs.ROOT / "lab"
    base = yaml.safe_load((ablate.LAB_CONFIGS / "predict.yaml").read_text())
    predict = ablate_variants.predict_config(base, elsewhere / "run", None, 1, None)
    prompt_file = Path(predict["data"]["init_args"]["prompt_file"])
    assert (
        prompt_file == (configs.ROOT / "lab" / "prompts.jsonl").resolve() and prompt_file.is_file()
    )
    plan = ablate.Plan(("baseline",), (0,), 1, 1.0, None, str(ablate.LAB_CONFIGS), ("ball_bounce",))
    assert ablate_runs.evaluation_prompts(elsewhere / "ablate", plan).is_file()
