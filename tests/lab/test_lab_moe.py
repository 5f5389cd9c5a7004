"""lab-moe: the lab world in Wan 2.2's two-expert layout, built from LoRA experts on first use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pila.adapter.loading import safetensors_sha256
from pila.backbone import WanBackbone
from pila.backbone.folders import LAB_WORLD_FOLDER
from pila.lab import world_moe
from pila.lab.world_moe import BOUNDARY_RATIO, EXPERTS, MOE_RECORD, world_folder
from pila.stages.finetune import LORA_TARGETS, LORA_WEIGHTS, lora_config, save_lora

ROOT = Path(__file__).resolve().parents[2]


def write_experts(folder: Path, rank: int = 4) -> Path:
    """Two LoRA experts on the lab transformer with seeded, non-zero B matrices (what
    ``pila lab pretrain --world lab-moe`` writes, without the training)."""
    from diffusers import WanTransformer3DModel

    for i, name in enumerate(EXPERTS):
        transformer = WanTransformer3DModel.from_pretrained(str(LAB_WORLD_FOLDER / "transformer"))
        transformer.add_adapter(lora_config(rank, None, LORA_TARGETS))
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for key, param in transformer.named_parameters():
                if "lora_B" in key:
                    param.copy_(0.05 * torch.randn(param.shape, generator=gen))
        (folder / name).mkdir(parents=True)
        save_lora(transformer, folder / name)
    (folder / MOE_RECORD).write_text(json.dumps({"boundary_ratio": BOUNDARY_RATIO}))
    return folder


@pytest.fixture(scope="module")
def experts(tmp_path_factory) -> Path:
    return write_experts(tmp_path_factory.mktemp("experts"))


@pytest.fixture
def lab_moe(experts, tmp_path, monkeypatch) -> Path:
    """``lab-moe`` resolving to these experts, built into a fresh cache."""
    monkeypatch.setenv(world_moe.EXPERTS_ENV, str(experts))
    monkeypatch.setenv("PILA_CACHE", str(tmp_path / "cache"))
    return experts


def test_lab_moe_loads_by_name_and_with_diffusers_and_is_built_once(lab_moe, tmp_path):
    from diffusers import WanPipeline

    backbone = WanBackbone.from_pretrained("lab-moe", dtype="float32")
    assert backbone.boundary_ratio == BOUNDARY_RATIO and backbone.transformer_2 is not None
    folder = WanBackbone.named_folder("lab-moe")
    assert folder.parent == tmp_path / "cache" and (folder / "transformer_2").is_dir()
    built = (folder / "model_index.json").stat().st_mtime_ns
    assert world_folder() == folder and (folder / "model_index.json").stat().st_mtime_ns == built

    lab = WanBackbone.from_pretrained("lab", dtype="float32")
    name = "blocks.0.attn1.to_q.weight"
    high, low = (m.state_dict()[name] for m in (backbone.transformer, backbone.transformer_2))
    base = lab.transformer.state_dict()[name]
    assert not torch.equal(high, base) and not torch.equal(low, base) and not torch.equal(high, low)
    # everything else is the lab world's
    for part in ("vae", "text_encoder"):
        for (k, a), (_, b) in zip(
            getattr(backbone, part).state_dict().items(),
            getattr(lab, part).state_dict().items(),
            strict=True,
        ):
            assert torch.equal(a, b), (part, k)

    pipe = WanPipeline.from_pretrained(str(folder))
    assert pipe.config.boundary_ratio == BOUNDARY_RATIO
    assert torch.equal(pipe.transformer_2.state_dict()[name], low)


def test_missing_experts_say_how_to_train_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pila lab pretrain --world lab-moe"):
        world_folder(tmp_path / "none", cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_other_experts_build_another_folder(experts, tmp_path):
    other = write_experts(tmp_path / "other", rank=2)
    first = world_folder(experts, cache=tmp_path / "cache")
    second = world_folder(other, cache=tmp_path / "cache")
    assert first != second and first.parent == second.parent


def test_frames_without_adapter_are_diffusers_own_on_lab_moe_and_the_regimes_split_there(
    lab_moe,
):
    from diffusers import WanPipeline

    from pila.generation import generate_video
    from pila.generation.settings import SamplingConfig

    backbone = WanBackbone.from_pretrained("lab-moe", dtype="float32")
    settings = dict(num_inference_steps=6, guidance_scale=2.0, guidance_scale_2=1.5, shift=3.0)
    config = SamplingConfig(height=64, width=64, num_frames=9, **settings)
    prompt = "a red ball falls under gravity and bounces on a wooden floor"
    ours = generate_video(backbone, prompt, seed=3, config=config)
    pipe = WanPipeline.from_pretrained(str(world_folder()))
    theirs = diffusers_frames(pipe, prompt, seed=3, steps=6, guidance_scale_2=1.5)
    np.testing.assert_array_equal(ours.frames, theirs)
    assert ours.corrected_by_regime is None  # no adapter, nothing corrected

    corrected = generate_video(
        backbone, prompt, seed=3, config=config, adapter=perturbed_lab_adapter(seed=0)
    )
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=3.0)
    scheduler.set_timesteps(6)
    high = [i + 1 for i, t in enumerate(scheduler.timesteps) if t >= BOUNDARY_RATIO * 1000]
    assert 0 < len(high) < 6  # both regimes within six steps
    assert corrected.corrected_by_regime == {
        "high_noise": high,
        "low_noise": [s for s in range(1, 7) if s not in high],
    }
    assert not np.array_equal(corrected.frames, ours.frames)


def diffusers_frames(pipe, prompt: str, *, seed: int, steps: int, guidance_scale_2: float):
    """``WanPipeline.__call__``'s frames (F, H, W, 3) at the lab size (64 × 64, 9 frames),
    guidance 2 on the high-noise expert."""
    frames = pipe(
        prompt=prompt,
        height=64,
        width=64,
        num_frames=9,
        num_inference_steps=steps,
        guidance_scale=2.0,
        guidance_scale_2=guidance_scale_2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames[0]
    return np.asarray(frames, dtype=np.float32)


def perturbed_lab_adapter(seed: int):
    """An adapter of the lab's stage C config with every weight nudged by seeded noise, so
    its correction is not zero (a fresh adapter's last layer is)."""
    import yaml

    from pila.adapter import AdapterConfig, PILAAdapter

    stage_c = yaml.safe_load((ROOT / "lightning_configs/lab/stageC.yaml").read_text())
    adapter = PILAAdapter(AdapterConfig(**stage_c["model"]["init_args"]["adapter"]))
    with torch.no_grad():
        for param in adapter.parameters():
            noise = torch.randn(param.shape, generator=torch.Generator().manual_seed(seed))
            param.add_(0.01 * noise)
    return adapter


@pytest.mark.slow
def test_pila_predict_with_the_lab_moe_config_corrects_both_regimes(lab_moe, tmp_path):
    """``pila predict --config lightning_configs/lab/predict_moe.yaml``: an adapter built for
    the lab world corrects both experts' steps (the sidecar says which), and without it the
    videos are diffusers' own frames of the two-expert folder."""
    from diffusers import WanPipeline

    from pila.cli import main
    from pila.io import read_video, write_video

    adapter_folder = perturbed_lab_adapter(seed=1).save_pretrained(tmp_path / "adapter")
    prompt = "ripples spread across a still pond after a pebble drops in"
    common = [
        "predict", "--config", str(ROOT / "lightning_configs/lab/predict_moe.yaml"),
        "--data.init_args.prompt_file", "null", "--data.init_args.prompts", f"[{prompt!r}]",
        "--model.init_args.sampling.num_inference_steps", "5",
        "--model.init_args.sampling.num_frames", "9",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    runs = {}
    for name, folder in (("corrected", str(adapter_folder)), ("baseline", "null")):
        out = tmp_path / name
        argv = [*common, "--model.init_args.adapter", folder]
        argv += ["--trainer.default_root_dir", str(out)]
        argv += ["--trainer.callbacks.init_args.output_dir", str(out)]
        assert main(argv) == 0
        (sidecar,) = out.glob("*.json")
        record = json.loads(sidecar.read_text())
        runs[name] = (record, out / record["video"])

    record, _ = runs["corrected"]
    regimes = record["corrected_by_regime"]
    assert regimes["high_noise"] and regimes["low_noise"]  # both experts corrected
    assert sorted(regimes["high_noise"] + regimes["low_noise"]) == record["corrected_steps"]
    assert record["corrected_steps"] == [1, 2, 3, 4, 5]
    assert runs["baseline"][0]["corrected_by_regime"] is None

    pipe = WanPipeline.from_pretrained(str(world_folder()))
    seed = runs["baseline"][0]["seed"]
    frames = diffusers_frames(pipe, prompt, seed=seed, steps=5, guidance_scale_2=2.0)
    reference = write_video(tmp_path / "diffusers.mp4", frames, fps=16.0)
    baseline, _ = read_video(runs["baseline"][1])
    corrected, _ = read_video(runs["corrected"][1])
    np.testing.assert_array_equal(baseline, read_video(reference)[0])  # same frames, same codec
    assert not np.array_equal(corrected, baseline)


@pytest.mark.slow
def test_pila_lab_pretrain_trains_both_experts_and_resumes_without_retraining(tmp_path):
    from safetensors.torch import load_file

    from pila.lab import pretrain

    out = tmp_path / "moe"
    argv = [
        "--world", "lab-moe", "--out", str(out), "--expert-steps", "3", "--expert-clips", "1",
        "--expert-rank", "2", "--heldout-every", "3", "--no-progress",
    ]  # fmt: skip
    assert pretrain.main(argv) == 0
    shipped = out / "world_moe"
    record = json.loads((shipped / "training.json").read_text())
    for name, (lo, hi) in EXPERTS.items():
        lora = load_file(str(shipped / name / "pytorch_lora_weights.safetensors"))
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # it trained
        expert = record["experts"][name]
        assert expert["sigma_range"] == [lo, hi] and expert["report"]["steps"] == 3
        assert expert["heldout_curve"][-1][0] == 3 and expert["relative_velocity_change"] > 0
    assert json.loads((shipped / MOE_RECORD).read_text())["boundary_ratio"] == BOUNDARY_RATIO
    assert "| `transformer_2` | low_noise |" in (shipped / "README.md").read_text()
    # built into a loadable two-expert world
    folder = world_folder(shipped, cache=tmp_path / "cache")
    assert json.loads((folder / "model_index.json").read_text())["boundary_ratio"] == BOUNDARY_RATIO

    def identities() -> dict[str, str]:
        return {n: safetensors_sha256(shipped / n / LORA_WEIGHTS) for n in EXPERTS}

    before = identities()
    assert pretrain.main([*argv, "--ckpt_path", "last"]) == 0  # finished: nothing retrained
    assert identities() == before
    again = json.loads((shipped / "training.json").read_text())["experts"]
    assert again == record["experts"] | {
        n: {**record["experts"][n], "report": again[n]["report"]} for n in EXPERTS
    }  # the same curves and measurements (only the wall time of this call differs)
    assert pretrain.main(["--world", "lab-moe", "--out", str(out), "--expert-steps", "0"]) == 2
