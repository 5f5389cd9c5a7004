"""pila.generate: equality with WanPipeline, where the correction acts, per-prompt seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline

import pila
from pila.adapter import load_adapter
from pila.backbone import WanBackbone
from pila.generation.sampling import generate, generate_batch, generate_video
from pila.generation.settings import SamplingConfig, resolve_correction_steps, resolve_seeds
from pila.parser import default_parser, parse_with_given


def reference(pipeline: WanPipeline, prompt: str, seed: int, settings: dict, **extra) -> np.ndarray:
    """What diffusers' own WanPipeline.__call__ produces."""
    return pipeline(
        prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **settings, **extra
    ).frames[0]


def trajectory(
    backbone, prompt, seed, settings, adapter=None, **config
) -> tuple[list[torch.Tensor], object]:
    steps: list[torch.Tensor] = []
    video = generate_video(
        backbone,
        prompt,
        seed=seed,
        config=SamplingConfig(**settings, **config),
        adapter=adapter,
        on_step=lambda step, latents: steps.append(latents.clone()),
    )
    return steps, video


# ----------------------------------------------------------------------- equality
def test_without_adapter_frames_equal_wanpipeline_from_the_same_folder(tiny_backbone_dir, small):
    ours_pipe = WanPipeline.from_pretrained(tiny_backbone_dir)
    ref_pipe = WanPipeline.from_pretrained(tiny_backbone_dir)
    prompts = ["A ball rolls down a ramp.", "Smoke rises from a chimney."]
    frames = pila.generate(
        ours_pipe, prompts, seed=7, guidance_scale=4.0, negative_prompt="blurry", **small
    )
    assert len(frames) == 2
    for i, prompt in enumerate(prompts):
        ref = reference(
            ref_pipe, prompt, 7 + i, small, guidance_scale=4.0, negative_prompt="blurry"
        )
        assert frames[i].shape == (5, 16, 16, 3) and frames[i].dtype == np.float32
        assert np.array_equal(frames[i], ref)
    # the pipeline is handed back untouched: its own scheduler and config
    assert isinstance(ours_pipe.scheduler, UniPCMultistepScheduler)
    assert ours_pipe.config.scheduler == ("diffusers", "UniPCMultistepScheduler")


def test_fresh_adapter_frames_equal_wanpipeline(tiny_backbone, adapter_factory, small):
    adapter = adapter_factory(trained=False)
    frames = generate(
        tiny_backbone.pipeline, "Water pours into a glass.", adapter=adapter, seed=3, **small
    )
    assert np.array_equal(
        frames[0], reference(tiny_backbone.pipeline, "Water pours into a glass.", 3, small)
    )


def test_fresh_adapter_on_wan22_equals_wanpipeline_with_both_guidance_scales(
    tiny_two_stage_dir, adapter_factory, small
):
    pipe = WanPipeline.from_pretrained(tiny_two_stage_dir)
    assert pipe.config.boundary_ratio == 0.875 and pipe.transformer_2 is not None
    frames = generate(
        pipe,
        "A candle burns.",
        adapter=adapter_factory(),
        seed=11,
        guidance_scale=4.0,
        guidance_scale_2=3.0,
        **small,
    )
    ref = reference(pipe, "A candle burns.", 11, small, guidance_scale=4.0, guidance_scale_2=3.0)
    assert np.array_equal(frames[0], ref)
    # the second guidance scale matters (the low-noise stage really runs with it)
    other = reference(pipe, "A candle burns.", 11, small, guidance_scale=4.0, guidance_scale_2=1.5)
    assert not np.array_equal(frames[0], other)


def test_shift_override_equals_a_pipeline_whose_scheduler_has_that_shift(tiny_backbone, small):
    pipe = tiny_backbone.pipeline
    frames = generate(pipe, "A leaf falls.", seed=2, shift=7.0, **small)
    shifted = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=7.0)
    ref_pipe = WanPipeline(**{**pipe.components, "scheduler": shifted})
    assert np.array_equal(frames[0], reference(ref_pipe, "A leaf falls.", 2, small))
    assert pipe.scheduler.config.flow_shift == 3.0  # the caller's scheduler is not changed


# ----------------------------------------------------------------- the correction
def test_trained_adapter_changes_the_trajectory_only_from_the_first_corrected_step(
    tiny_backbone, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    base_steps, base = trajectory(tiny_backbone, "A rubber ball bounces.", 5, small)
    steps, video = trajectory(
        tiny_backbone, "A rubber ball bounces.", 5, small, adapter, correction_steps=(3, 4)
    )
    assert len(steps) == len(base_steps) == 4
    assert torch.equal(steps[0], base_steps[0]) and torch.equal(steps[1], base_steps[1])
    assert not torch.equal(steps[2], base_steps[2])
    assert not np.array_equal(video.frames, base.frames)
    assert video.corrected_steps == (3, 4)
    assert video.parsed.labels == ("rigid_body", "elastic", "collision")  # the rule-based default
    routing = video.routing_weights
    assert list(routing) == list(pila.categories.CATEGORIES)
    assert sum(routing.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(w > 0 for w in routing.values()) >= 1


def test_wan22_both_regimes_are_corrected(tiny_two_stage_dir, adapter_factory, small):
    backbone = WanBackbone.from_pretrained(tiny_two_stage_dir)
    adapter = adapter_factory(trained=True)
    base_steps, _ = trajectory(backbone, "Steam rises.", 1, small)
    # steps 1-2 run transformer (t >= 875), steps 3-4 transformer_2
    high, _ = trajectory(backbone, "Steam rises.", 1, small, adapter, correction_steps=(1, 1))
    low, video = trajectory(backbone, "Steam rises.", 1, small, adapter, correction_steps=[4])
    assert not torch.equal(high[0], base_steps[0])
    assert all(torch.equal(a, b) for a, b in zip(low[:3], base_steps[:3], strict=True))
    assert not torch.equal(low[3], base_steps[3])
    assert video.corrected_steps == (4,)


def test_top_k_overrides_the_adapters_routing_for_one_call_only(
    tiny_backbone, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    seen: list[int] = []
    handle = adapter.router.register_forward_hook(
        lambda m, i, out: seen.append(out.indices.shape[1])
    )
    try:
        generate(tiny_backbone, "Ice melts.", adapter=adapter, top_k=1, **small)
        assert seen == [1, 1, 1, 1]
        seen.clear()
        generate(tiny_backbone, "Ice melts.", adapter=adapter, **small)
        assert seen == [4, 4, 4, 4]
    finally:
        handle.remove()
    assert adapter.router.top_k == 4 and adapter.config.top_k == 4


def test_given_labels_and_description_reach_the_adapter_condition(
    tiny_backbone, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    labels_seen = []
    handle = adapter.condition.register_forward_hook(
        lambda m, args, out: labels_seen.append(args[1].clone())
    )
    try:
        generate(
            tiny_backbone,
            "A scene.",
            adapter=adapter,
            labels=[["optical"]],
            refined_prompts=["light"],
            **small,
        )
    finally:
        handle.remove()
    expected = torch.zeros(1, 8)
    expected[0, 7] = 1
    assert all(torch.equal(y, expected) for y in labels_seen) and len(labels_seen) == 4


# ------------------------------------------------------------------- seeds, batches
def test_a_videos_frames_do_not_depend_on_the_other_prompts(tiny_backbone, adapter_factory, small):
    adapter = adapter_factory(trained=True)
    prompts = ["A ball rolls.", "Water splashes.", "A flame flickers."]
    together = generate(tiny_backbone, prompts, adapter=adapter, seed=[10, 11, 12], **small)
    reordered = generate(
        tiny_backbone, [prompts[2], prompts[1]], adapter=adapter, seed=[12, 11], **small
    )
    assert np.array_equal(together[2], reordered[0])
    assert np.array_equal(together[1], reordered[1])
    assert not np.array_equal(together[0], together[2])


@pytest.mark.parametrize("label_source", ["parsed", "random"])
def test_a_batch_is_its_videos_one_at_a_time(tiny_backbone, adapter_factory, small, label_source):
    adapter = adapter_factory(trained=True, label_source=label_source)
    config = SamplingConfig(**small)
    prompts = ["A ball rolls.", "Water splashes.", "A flame flickers."]
    seeds = [10, 11, 12]
    # each video its own labels: a batch that shared one condition would route them alike
    given = [("rigid_body",), ("fluid", "optical"), ("thermal",)]
    parsed = [
        parse_with_given(default_parser(), p, labels=list(lab), refined_prompt=None)
        for p, lab in zip(prompts, given, strict=True)
    ]
    alone = [
        generate_video(tiny_backbone, p, seed=s, config=config, adapter=adapter, parsed=q)
        for p, s, q in zip(prompts, seeds, parsed, strict=True)
    ]
    batch = generate_batch(
        tiny_backbone, prompts, seeds=seeds, config=config, adapter=adapter, parsed=parsed
    )
    assert [v.prompt for v in batch] == prompts and [v.seed for v in batch] == seeds
    for one, ours in zip(alone, batch, strict=True):
        np.testing.assert_allclose(ours.frames, one.frames, rtol=0, atol=1e-5)
        assert ours.parsed == one.parsed and ours.corrected_steps == one.corrected_steps
        for name, weight in one.routing_weights.items():
            assert ours.routing_weights[name] == pytest.approx(weight, abs=1e-5)
        assert ours.timings["batch"] == 3 and "batch" not in one.timings
    assert alone[0].routing_weights != pytest.approx(alone[2].routing_weights, abs=1e-3)
    assert not np.allclose(batch[0].frames, batch[1].frames, atol=1e-3)


def test_generate_in_batches_equals_one_at_a_time_and_checks_the_size(
    tiny_backbone, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    prompts = ["A ball rolls.", "Water splashes.", "A flame flickers."]
    # per-prompt labels across a batch boundary (batches [0, 1] and [2])
    given = dict(labels=[["rigid_body"], ["fluid"], ["thermal"]], adapter=adapter, seed=4)
    one = generate(tiny_backbone, prompts, **given, **small)
    seen: list[torch.Tensor] = []
    handle = adapter.condition.register_forward_hook(
        lambda m, args, out: seen.append(args[1].clone())
    )
    try:
        two = generate(tiny_backbone, prompts, batch_size=2, **given, **small)
    finally:
        handle.remove()
    assert len(two) == 3
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    # each call's condition holds its own prompts' labels, in order: 4 steps × 2 calls
    names = pila.categories.CATEGORIES
    calls = [[[names[k] for k in row.nonzero().flatten().tolist()] for row in y] for y in seen]
    assert calls == [[["rigid_body"], ["fluid"]]] * 4 + [[["thermal"]]] * 4
    with pytest.raises(ValueError, match="batch_size"):
        generate(tiny_backbone, prompts, batch_size=0, **small)
    with pytest.raises(ValueError, match="one seed"):
        generate_batch(tiny_backbone, prompts, seeds=[1, 2])


def test_settings_are_sampling_config_fields_and_a_typo_is_named(tiny_backbone, small):
    config = SamplingConfig(**small)
    assert config.replace(top_k=2, correction_steps=(3, 4)) == SamplingConfig(
        **small, top_k=2, correction_steps="3-4"
    )
    with pytest.raises(
        TypeError,
        match=r"unknown generation settings \['num_inference_step'\].*num_inference_steps",
    ):
        generate(tiny_backbone, "A leaf falls.", num_inference_step=4)
    with pytest.raises(ValueError, match="num_frames must be 4·k"):
        generate(tiny_backbone, "A leaf falls.", config=config, num_frames=6)


def test_resolve_seeds():
    assert resolve_seeds(3, 3) == [3, 4, 5]
    assert resolve_seeds([9, 1], 2) == [9, 1]
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        resolve_seeds([1, 2], 3)


# ------------------------------------------------------------------ settings errors
def test_correction_steps_forms_and_validation():
    assert resolve_correction_steps(None, 4) == (1, 2, 3, 4)
    assert resolve_correction_steps((41, 50), 50) == tuple(range(41, 51))
    assert resolve_correction_steps("41-50", 50) == tuple(range(41, 51))
    assert resolve_correction_steps([3, 1], 5) == (1, 3)
    assert resolve_correction_steps("2,5", 5) == (2, 5)
    assert resolve_correction_steps(range(2, 4), 5) == (2, 3)
    with pytest.raises(ValueError, match=r"outside \[1, 50\]"):
        resolve_correction_steps((41, 51), 50)
    with pytest.raises(ValueError, match="1-based"):
        resolve_correction_steps([0], 10)
    with pytest.raises(ValueError, match="reversed"):
        resolve_correction_steps((9, 3), 10)
    with pytest.raises(ValueError, match="empty"):
        resolve_correction_steps([], 10)
    # a YAML list of two numbers names two steps; the string form is the range
    assert SamplingConfig(num_inference_steps=50, correction_steps=[41, 50]).steps == (41, 50)
    assert SamplingConfig(num_inference_steps=50, correction_steps="41-50").steps == tuple(
        range(41, 51)
    )
    assert SamplingConfig(num_inference_steps=50, correction_steps=(41, 50)).steps == tuple(
        range(41, 51)
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_frames", 80, "4·k \\+ 1"),
        ("height", 40, "multiple of 16"),
        ("top_k", 9, "top_k"),
        ("shift", 0.0, "shift"),
        ("guidance_scale", -1.0, "guidance_scale"),
        ("correction_steps", (1, 60), "outside"),
    ],
)
def test_sampling_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})


def test_adapter_for_another_text_encoder_is_refused_before_generation(
    tiny_backbone, adapter_factory, small
):
    wrong = adapter_factory(text_dim=48)
    calls = []
    handle = tiny_backbone.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(
            ValueError, match=r"text_dim 48 vs the backbone's text-encoder width 32"
        ) as info:
            generate(tiny_backbone, ["a", "b"], adapter=wrong, **small)
        assert str(info.value).startswith(
            "the adapter does not match the backbone"
        )  # not "adapter the adapter"
    finally:
        handle.remove()
    assert calls == []


def test_an_adapter_folder_can_be_passed_directly(tiny_backbone, trained_adapter_dir, small):
    from pila.adapter import PILAAdapter

    by_path = generate(
        tiny_backbone, "Glass shatters.", adapter=str(trained_adapter_dir), seed=1, **small
    )
    loaded = PILAAdapter.from_pretrained(trained_adapter_dir).eval()
    by_module = generate(tiny_backbone, "Glass shatters.", adapter=loaded, seed=1, **small)
    assert np.array_equal(by_path[0], by_module[0])
    assert not np.array_equal(
        by_path[0], generate(tiny_backbone, "Glass shatters.", seed=1, **small)[0]
    )


def test_load_adapter_checks_the_folder_against_the_backbone(
    tmp_path, tiny_backbone, adapter_factory
):
    folder = tmp_path / "wide_adapter"
    adapter_factory(latent_channels=48, text_dim=32).save_pretrained(folder)
    with pytest.raises(
        ValueError,
        match=r"^adapter '[^']*wide_adapter' does not match"
        r".*latent_channels 48 vs the backbone's 16",
    ):
        load_adapter(folder, tiny_backbone)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(tmp_path / "missing", tiny_backbone)


def test_generate_is_exported_lazily_from_the_package():
    import subprocess
    import sys

    code = (
        "import sys, pila; "
        "assert 'pila.generation' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pila.generate is generate and "generate" in dir(pila)


def test_adapter_identity_hashes_the_weights(adapter_factory, trained_adapter_dir):

    from pila.adapter import PILAAdapter
    from pila.adapter.loading import adapter_identity, safetensors_sha256

    fresh, trained = adapter_factory(), adapter_factory(trained=True)
    assert adapter_identity(fresh)["sha256"] == adapter_identity(adapter_factory())["sha256"]
    assert adapter_identity(fresh)["sha256"] != adapter_identity(trained)["sha256"]
    loaded = PILAAdapter.from_pretrained(trained_adapter_dir)
    identity = adapter_identity(loaded, trained_adapter_dir)
    assert identity["sha256"] == safetensors_sha256(trained_adapter_dir / "model.safetensors")
    assert (
        identity["folder"] == str(trained_adapter_dir.resolve()) and adapter_identity(None) is None
    )


# ---------------------------------------------------- reading R3: which velocity the adapter reads
def _recorded_run(backbone, adapter, small, **config):
    """Every transformer output and every velocity the adapter read, in call order."""
    outputs, read = [], []
    handles = [
        t.register_forward_hook(lambda m, a, out: outputs.append(out[0].detach().clone()))
        for t in (backbone.pipeline.transformer, getattr(backbone.pipeline, "transformer_2", None))
        if t is not None
    ]
    inner = adapter.forward
    adapter.forward = lambda x_t, sigma, v, cond, **kw: (
        read.append(v.detach().clone()) or inner(x_t, sigma, v, cond, **kw)
    )
    try:
        steps, video = trajectory(backbone, "Steam rises.", 2, small, adapter, **config)
    finally:
        adapter.forward = inner
        for handle in handles:
            handle.remove()
    return outputs, read, steps, video


def test_the_weights_hash_reads_what_a_file_holds_not_how_its_writer_laid_it_out(tmp_path):
    """safetensors writes its metadata in hash-map order (another per process): the same
    weights must keep one identity, and any changed value must change it."""
    import json
    import struct

    from safetensors.torch import save_file

    from pila.adapter.loading import safetensors_sha256

    path = tmp_path / "a.safetensors"
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    save_file(tensors, str(path), metadata={"format": "pt", "pila_format_version": "1"})
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    reordered = json.dumps(dict(reversed(list(header.items())))).encode()
    reordered += b" " * (-len(reordered) % 8)
    other = tmp_path / "b.safetensors"
    other.write_bytes(struct.pack("<Q", len(reordered)) + reordered + raw[8 + size :])
    assert other.read_bytes() != raw
    assert safetensors_sha256(other) == safetensors_sha256(path)
    tensors["w"][1, 2] = 5.5
    save_file(tensors, str(other), metadata={"format": "pt", "pila_format_version": "1"})
    assert safetensors_sha256(other) != safetensors_sha256(path)


def test_conditional_reading_feeds_the_adapter_the_conditional_velocity(
    tiny_backbone, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    guidance = 5.0
    outputs, read, _, guided_video = _recorded_run(
        tiny_backbone, adapter, small, guidance_scale=guidance, correction_steps=[1]
    )
    cond, uncond = outputs[0], outputs[1]  # step 1: the prompt first, then the negative prompt
    torch.testing.assert_close(read[0], uncond + guidance * (cond - uncond))
    outputs, read, _, conditional_video = _recorded_run(
        tiny_backbone,
        adapter,
        small,
        guidance_scale=guidance,
        correction_steps=[1],
        adapter_velocity="conditional",
    )
    torch.testing.assert_close(read[0], outputs[0])
    assert not np.array_equal(guided_video.frames, conditional_video.frames)
    assert (
        not tiny_backbone.pipeline.transformer._forward_hooks
    )  # the tap is removed after the call


def test_readings_agree_without_guidance_and_wan22_taps_both_transformers(
    tiny_backbone, tiny_two_stage_dir, adapter_factory, small
):
    adapter = adapter_factory(trained=True)
    _, guided = trajectory(tiny_backbone, "Ice melts.", 4, small, adapter, guidance_scale=1.0)
    _, conditional = trajectory(
        tiny_backbone,
        "Ice melts.",
        4,
        small,
        adapter,
        guidance_scale=1.0,
        adapter_velocity="conditional",
    )
    np.testing.assert_array_equal(guided.frames, conditional.frames)
    backbone = WanBackbone.from_pretrained(tiny_two_stage_dir)
    outputs, read, _, video = _recorded_run(
        backbone, adapter, small, correction_steps=[4], adapter_velocity="conditional"
    )
    assert video.corrected_steps == (4,)
    torch.testing.assert_close(read[0], outputs[6])  # step 4's first call, on transformer_2
    with pytest.raises(ValueError, match="adapter_velocity must be one of"):
        SamplingConfig(adapter_velocity="uncond")


# ------------------------------------------------------------- the adapter, once per run
@pytest.fixture
def adapter_reads(monkeypatch):
    """Counts of the adapter's compatibility checks and config reads, wherever they are called."""
    import sys

    import pila.adapter.loading as loading

    counts = {"check": 0, "config": 0}

    def counting(name, key):
        real = getattr(loading, name)

        def wrapper(*args, **kwargs):
            counts[key] += 1
            return real(*args, **kwargs)

        return wrapper

    wrapped = {
        "check_backbone_sizes": counting("check_backbone_sizes", "check"),
        "check_adapter_compatible": counting("check_adapter_compatible", "check"),
        "adapter_config": counting("adapter_config", "config"),
    }
    modules = [loading] + [m for n, m in sys.modules.items() if n.startswith("pila.generation")]
    for module in modules:
        for name, wrapper in wrapped.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrapper)
    return counts


def test_generate_checks_the_adapter_once_and_reads_its_config_once(
    tiny_backbone, adapter_factory, small, adapter_reads
):
    adapter = adapter_factory(trained=True)
    prompts = ["A ball rolls.", "Water splashes.", "A flame flickers."]
    generate(tiny_backbone, prompts, adapter=adapter, top_k=2, **small)
    assert adapter_reads == {"check": 1, "config": 1}


def test_predict_checks_the_adapter_once_per_run_not_per_video(
    trained_adapter_dir, small, adapter_reads
):
    from pila.generation.predict import PILAPredictModule
    from pila.generation.prompts import build_items
    from pila.generation.records import PromptRecord

    sampling = SamplingConfig(**small, top_k=2)
    module = PILAPredictModule(backbone="tiny", adapter=str(trained_adapter_dir), sampling=sampling)
    module.setup("predict")
    assert adapter_reads["check"] == 1  # load_adapter, from the folder's config
    after_setup = dict(adapter_reads)
    records = [PromptRecord(index=i, prompt=p) for i, p in enumerate(["A ball.", "A wave."])]
    items = build_items(records, videos_per_prompt=2)
    results = module.predict_step(items)
    assert len(results) == 4 and all(r.video.corrected_steps for r in results)
    assert adapter_reads == after_setup  # four videos: no check, no config read
    assert [r.item for r in results] == items  # one call, each video its item's
    assert [r.video.seed for r in results] == [item.seed for item in items]
    assert [r.video.prompt for r in results] == ["A ball.", "A ball.", "A wave.", "A wave."]
    # the writer may drop every item of a batch (held by another run): nothing to generate
    assert module.predict_step([]) == []
