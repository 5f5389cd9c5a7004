"""save_pretrained / from_pretrained: identical round trip, clear errors for mismatched folders."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from adapter_helpers import make_batch, randomize_zero_layers, tiny_adapter
from safetensors.torch import load_file, save_file

from pila.adapter import CONFIG_NAME, WEIGHTS_NAME, AdapterLoadError, PILAAdapter


def trained_adapter(**changes) -> PILAAdapter:
    """A tiny adapter with non-trivial weights and running means (one training forward)."""
    adapter = tiny_adapter(**changes).train()
    randomize_zero_layers(adapter, scale=0.1)
    with torch.no_grad():
        adapter(*make_batch())
    return adapter.eval()


@pytest.mark.parametrize("changes", [{}, {"plain_adapter": True}, {"use_afe": False, "top_k": 2}])
def test_round_trip_gives_identical_outputs(tmp_path, changes) -> None:
    adapter = trained_adapter(**changes)
    adapter.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted(
        [CONFIG_NAME, WEIGHTS_NAME]
    )
    loaded = PILAAdapter.from_pretrained(tmp_path / "adapter").eval()
    assert loaded.config == adapter.config
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    batch = make_batch(seed=3)
    a, b = adapter(*batch, residuals=True), loaded(*batch, residuals=True)
    assert torch.equal(a.v_pila, b.v_pila) and torch.equal(a.residual_loss, b.residual_loss)
    assert a.correction.abs().sum() > 0


def test_residual_loss_running_means_are_saved(tmp_path) -> None:
    adapter = trained_adapter()
    running = adapter.residual_loss.running_mean
    assert running.abs().sum() > 0
    adapter.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / WEIGHTS_NAME))
    assert torch.equal(state["residual_loss.running_mean"], running)
    assert "experts.recipe" not in state  # fixed masks are rebuilt, not stored


def test_config_file_holds_what_rebuilds_the_adapter(tmp_path) -> None:
    adapter = tiny_adapter(top_k=3)
    adapter.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / CONFIG_NAME).read_text())
    config = payload["config"]
    assert payload["format_version"] == 1 and payload["num_parameters"] == adapter.num_parameters
    assert config["top_k"] == 3 and config["categories"][0] == "rigid_body"
    assert config["bank_slots"][0] == ["u", 4] and "kinematic_anchor" in config["afe"]


def test_overwriting_a_folder_is_atomic_and_leaves_no_temporaries(tmp_path) -> None:
    tiny_adapter(seed=0).save_pretrained(tmp_path)
    second = tiny_adapter(seed=1)
    second.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    loaded = PILAAdapter.from_pretrained(tmp_path)
    assert torch.equal(loaded.encoder.lift.weight, second.encoder.lift.weight)


def test_mis_shaped_tensors_are_named(tmp_path) -> None:
    tiny_adapter().save_pretrained(tmp_path)
    payload = json.loads((tmp_path / CONFIG_NAME).read_text())
    payload["config"]["expert_width"] = 12  # the saved experts have width 8
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(
        AdapterLoadError,
        match=r"mis-shaped tensors:\n(.|\n)*"
        r"  experts.in_weight: saved \(8, 8, 32\), expected \(8, 12, 32\)",
    ):
        PILAAdapter.from_pretrained(tmp_path)
    with pytest.raises(AdapterLoadError, match="mis-shaped"):
        PILAAdapter.from_pretrained(tmp_path, strict=False)  # never loaded, even non-strictly


def test_missing_and_unexpected_tensors_are_named(tmp_path, caplog) -> None:
    adapter = tiny_adapter()
    adapter.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / WEIGHTS_NAME))
    del state["router.proj.bias"]
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(AdapterLoadError) as err:
        PILAAdapter.from_pretrained(tmp_path)
    assert "missing tensors:\n  router.proj.bias" in str(err.value)
    assert "unexpected tensors:\n  extra.weight" in str(err.value)
    with caplog.at_level(logging.WARNING):
        loaded = PILAAdapter.from_pretrained(tmp_path, strict=False)
    assert "router.proj.bias" in caplog.text and "extra.weight" in caplog.text
    assert torch.equal(loaded.router.proj.weight, adapter.router.proj.weight)


def test_a_folder_of_another_variant_is_refused(tmp_path) -> None:
    tiny_adapter(moe_operator=False).save_pretrained(tmp_path)
    payload = json.loads((tmp_path / CONFIG_NAME).read_text())
    payload["config"]["moe_operator"] = True
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(AdapterLoadError, match="missing tensors:\n  experts.hidden_bias.0"):
        PILAAdapter.from_pretrained(tmp_path)


def test_broken_folders_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        PILAAdapter.from_pretrained(tmp_path)
    tiny_adapter().save_pretrained(tmp_path)
    payload = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(AdapterLoadError, match="not valid JSON"):
        PILAAdapter.from_pretrained(tmp_path)
    payload["config"]["categories"] = ["fluid", "rigid_body"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(AdapterLoadError, match="category order"):
        PILAAdapter.from_pretrained(tmp_path)
    payload["format_version"] = 99
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(AdapterLoadError, match="format_version 99"):
        PILAAdapter.from_pretrained(tmp_path)
    tiny_adapter().save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        PILAAdapter.from_pretrained(tmp_path)


def test_load_casts_dtype(tmp_path) -> None:
    tiny_adapter().save_pretrained(tmp_path)
    loaded = PILAAdapter.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert loaded.residual_loss.num_updates.dtype == torch.long  # integer buffers untouched


# ----------------------------------------------------------------------------- the hub
def _hub_cache(root, repo_id: str, adapter: PILAAdapter, commit: str = "a" * 40):
    """The Hugging Face cache layout snapshot_download leaves behind, built offline."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    adapter.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return root


def test_a_hub_id_loads_from_the_hugging_face_cache(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    adapter = trained_adapter()
    cache = _hub_cache(tmp_path / "hub", "pila-org/tiny-adapter", adapter)
    loaded = PILAAdapter.from_pretrained(
        "pila-org/tiny-adapter", cache_dir=cache, local_files_only=True
    )
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # HF_HUB_OFFLINE=1 with the default cache: what
    # `pila predict --model.init_args.adapter org/name` does offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert PILAAdapter.from_pretrained("pila-org/tiny-adapter").config == adapter.config
    with pytest.raises(
        FileNotFoundError,
        match=r"could not fetch adapter 'pila-org/missing' from the hub(.|\n)*local folder",
    ):
        PILAAdapter.from_pretrained("pila-org/missing")
    with pytest.raises(FileNotFoundError, match="adapter folder .*does not exist"):
        PILAAdapter.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_a_hub_snapshot_is_checked_like_a_folder(tmp_path) -> None:
    cache = _hub_cache(tmp_path / "hub", "pila-org/bad", tiny_adapter())
    (snapshot,) = (cache / "models--pila-org--bad" / "snapshots").iterdir()
    payload = json.loads((snapshot / CONFIG_NAME).read_text())
    payload["config"]["expert_width"] = 12
    (snapshot / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(AdapterLoadError, match="mis-shaped tensors"):
        PILAAdapter.from_pretrained("pila-org/bad", cache_dir=cache, local_files_only=True)


def test_push_to_hub_uploads_exactly_the_adapter_folder(monkeypatch) -> None:
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls: dict = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(
        self, *, repo_id, folder_path, commit_message, revision=None, allow_patterns=None, **kwargs
    ):
        from pathlib import Path

        folder = Path(folder_path)
        calls["upload"] = {
            "repo_id": repo_id,
            "files": sorted(p.name for p in folder.iterdir()),
            "message": commit_message,
            "revision": revision,
            "allow_patterns": allow_patterns,
            "config": json.loads((folder / CONFIG_NAME).read_text())["config"],
        }
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    adapter = tiny_adapter(top_k=3)
    url = adapter.push_to_hub("pila-org/tiny-adapter", private=True, revision="dev")
    assert url == "https://huggingface.co/pila-org/tiny-adapter/commit/abc"
    assert calls["create"] == {
        "repo_id": "pila-org/tiny-adapter",
        "private": True,
        "exist_ok": True,
    }
    upload = calls["upload"]
    assert upload["files"] == sorted([CONFIG_NAME, WEIGHTS_NAME]) and upload["revision"] == "dev"
    assert (
        sorted(upload["allow_patterns"]) == sorted([CONFIG_NAME, WEIGHTS_NAME])
        and upload["config"]["top_k"] == 3
    )
