"""User mistakes end `pila fit/validate/test/predict` with one message and exit status 2;
`--debug` (or PILA_DEBUG=1) shows the traceback; a bug still raises."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pila.cli import is_user_error, main

sys.path.insert(0, str(Path(__file__).parent / "training"))
from helpers import tiny_fit_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _one_message(capfd, command: str, *needles: str) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"pila {command}:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]), err  # the message is the last thing printed
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fit_config(tmp_path, tiny_data_root):
    return tiny_fit_config(tmp_path / "out", tiny_data_root, steps=2)


def _predict_config(tmp_path) -> Path:
    config = yaml.safe_load((ROOT / "lightning_configs" / "tiny" / "predict.yaml").read_text())
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config["trainer"]["callbacks"][0]["init_args"]["output_dir"] = str(tmp_path / "videos")
    config["trainer"]["enable_progress_bar"] = False
    config["model"]["init_args"]["sampling"].update(
        num_inference_steps=2, height=16, width=16, num_frames=5
    )
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_non_checkpoint_ckpt_path(tmp_path, fit_config, capfd):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    assert main(["fit", "--config", str(fit_config), "--ckpt_path", str(notes)]) == 2
    line = _one_message(capfd, "fit", str(notes), "Lightning .ckpt file")
    assert "weights_only" not in line


@pytest.mark.slow
def test_a_missing_backbone_folder(tmp_path, fit_config, capfd):
    missing = tmp_path / "checkpoints" / "Wan2.1-T2V-1.3B-Diffusers"
    assert (
        main(["fit", "--config", str(fit_config), "--model.init_args.backbone", str(missing)]) == 2
    )
    _one_message(capfd, "fit", "folder not found", str(missing))


@pytest.mark.slow
def test_a_bad_frame_count(fit_config, capfd):
    assert main(["fit", "--config", str(fit_config), "--data.init_args.num_frames", "32"]) == 2
    _one_message(capfd, "fit", "num_frames")


@pytest.mark.slow
def test_a_corrupt_cache_shard(tmp_path, tiny_data_root, capfd):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_root, data)
    shard = sorted((data / "cache").glob("shard-*.safetensors"))[0]
    blob = bytearray(shard.read_bytes())
    blob[-10] ^= 0xFF
    shard.write_bytes(bytes(blob))
    config = tiny_fit_config(tmp_path / "out", data, steps=2)
    assert main(["validate", "--config", str(config)]) == 2
    _one_message(capfd, "validate", str(shard), f"--out {data / 'cache'}")


@pytest.mark.slow
def test_an_empty_prompt_file(tmp_path, capfd):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n")
    args = [
        "predict",
        "--config",
        str(_predict_config(tmp_path)),
        "--data.init_args.prompts",
        "null",
        "--data.init_args.prompt_file",
        str(prompts),
    ]
    assert main(args) == 2
    _one_message(capfd, "predict", str(prompts))


@pytest.mark.slow
def test_a_mismatched_adapter(tmp_path, capfd):
    from pila.adapter import AdapterConfig, PILAAdapter

    wide = PILAAdapter(
        AdapterConfig(
            text_dim=64, hidden=8, cond_dim=8, sigma_embed_dim=8, norm_groups=4, expert_width=4
        )
    )
    folder = wide.save_pretrained(tmp_path / "adapter")
    args = [
        "predict",
        "--config",
        str(_predict_config(tmp_path)),
        "--model.init_args.adapter",
        str(folder),
    ]
    assert main(args) == 2
    _one_message(capfd, "predict", str(folder))


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path, fit_config, monkeypatch):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.ckpt"):
        main(["fit", "--debug", "--config", str(fit_config), "--ckpt_path", str(notes)])
    monkeypatch.setenv("PILA_DEBUG", "1")
    with pytest.raises(ValueError, match="notes.ckpt"):
        main(["fit", "--config", str(fit_config), "--ckpt_path", str(notes)])


def test_a_bug_still_raises(tmp_path, monkeypatch):
    from lightning.pytorch.demos.boring_classes import BoringModel

    def broken_step(self, batch, batch_idx):
        raise ValueError("an internal bug, not a user's mistake")

    monkeypatch.setattr(BoringModel, "training_step", broken_step)
    config = tmp_path / "boring.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_steps": 2,
                    "accelerator": "cpu",
                    "logger": False,
                    "enable_checkpointing": False,
                    "default_root_dir": str(tmp_path),
                },
                "model": {"class_path": "lightning.pytorch.demos.boring_classes.BoringModel"},
                "data": {"class_path": "lightning.pytorch.demos.boring_classes.BoringDataModule"},
            }
        )
    )
    with pytest.raises(ValueError, match="internal bug"):
        main(["fit", "--config", str(config)])


def test_only_the_projects_own_checks_are_user_errors():
    from pila.flow import SigmaSampler

    try:
        SigmaSampler(-1.0, 0.0, 1.0)
    except ValueError as err:
        assert is_user_error(err)
    try:
        int("x")
    except ValueError as err:
        assert not is_user_error(err)  # raised outside the project's code
    try:
        raise RuntimeError("boom")
    except RuntimeError as err:
        assert not is_user_error(err)
