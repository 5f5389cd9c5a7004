"""The `pila` command: top-level help, LightningCLI subcommands, project subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pila.cli import LIGHTNING_COMMANDS, PROJECT_COMMANDS, main

BORING_CONFIG = {
    "trainer": {
        "max_steps": 2,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
    },
    "model": {"class_path": "lightning.pytorch.demos.boring_classes.BoringModel"},
    "data": {"class_path": "lightning.pytorch.demos.boring_classes.BoringDataModule"},
}


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS]:
        assert f"  {name} " in out
    assert {"fit", "validate", "test", "predict"} <= set(LIGHTNING_COMMANDS)
    assert {"prepare", "export"} <= set(PROJECT_COMMANDS)


def test_console_script_is_installed_and_answers_help():
    exe = Path(sys.executable).with_name("pila")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "fit" in result.stdout and "prepare" in result.stdout


def test_python_dash_m_pila_is_the_pila_command():
    """So launchers that run modules work: ``torchrun --nproc-per-node 8 -m pila prepare …``."""
    result = subprocess.run(
        [sys.executable, "-m", "pila", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in result.stdout and "prepare" in result.stdout


def test_unknown_command_is_an_error_listing_the_valid_ones(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'" in err and "predict" in err


def test_fit_print_config_resolves_the_yaml(tmp_path, capsys):
    config = tmp_path / "boring.yaml"
    config.write_text(yaml.safe_dump(BORING_CONFIG))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith("BoringModel")
    assert printed["trainer"]["max_steps"] == 2


def test_fit_runs_a_lightning_module_from_yaml(tmp_path):
    config = tmp_path / "boring.yaml"
    BORING_CONFIG["trainer"]["default_root_dir"] = str(tmp_path)
    config.write_text(yaml.safe_dump(BORING_CONFIG))
    assert main(["fit", "--config", str(config)]) == 0
