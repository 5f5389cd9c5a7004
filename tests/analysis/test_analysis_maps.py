"""Expert update maps: mean |ΔP_k| over channels for selected experts, zero elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analysis_helpers import clip_items, tiny_adapter

from pila.adapter import AdapterCondition
from pila.analysis import (
    RunFolder,
    collect_expert_maps,
    expert_update_maps,
    latent_frame_times,
    pick_clips,
)
from pila.datamodules.collate import collate_clips
from pila.flow import noisy_latent
from pila.io import read_video
from pila.stages import StageC
from pila.stages.module import pad_text


def _updates(b: int = 2, k: int = 3, p: int = 5, grid=(2, 3, 4)) -> torch.Tensor:
    return torch.randn(b, k, p, *grid, generator=torch.Generator().manual_seed(0))


def test_maps_are_mean_abs_update_for_selected_experts_and_zero_otherwise():
    updates = _updates()
    indices = torch.tensor([[6, 0, 3], [3, 7, 1]])
    maps = expert_update_maps(updates, indices)
    assert maps.shape == (2, 8, 2, 3, 4)
    for b in range(2):
        for j, k in enumerate(indices[b].tolist()):
            torch.testing.assert_close(maps[b, k], updates[b, j].abs().mean(0))
        unselected = [k for k in range(8) if k not in indices[b].tolist()]
        assert torch.all(maps[b, unselected] == 0)


def test_weighted_maps_scale_each_expert_by_its_routing_weight():
    updates = _updates()
    indices = torch.tensor([[6, 0, 3], [3, 7, 1]])
    pi = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    plain = expert_update_maps(updates, indices)
    weighted = expert_update_maps(updates, indices, topk_weights=pi)
    for b in range(2):
        for j, k in enumerate(indices[b].tolist()):
            torch.testing.assert_close(weighted[b, k], pi[b, j] * plain[b, k])


def test_no_selected_expert_gives_zero_maps_and_bad_shapes_are_named():
    assert torch.all(
        expert_update_maps(torch.zeros(2, 0, 5, 2, 3, 4), torch.zeros(2, 0, dtype=torch.long)) == 0
    )
    with pytest.raises(ValueError, match="indices must have shape"):
        expert_update_maps(_updates(), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="expert_updates"):
        expert_update_maps(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_collected_maps_equal_the_adapter_called_directly_and_the_training_image(tiny_backbone):
    adapter = tiny_adapter(seed=1)
    items = clip_items([(0, 5), (2,), (6, 4)], seed=2)
    sigma, seed, text_length = 0.6, 5, 8
    maps = collect_expert_maps(
        adapter, tiny_backbone, items, sigma, text_length=text_length, seed=seed
    )
    assert maps.maps.shape == (3, 8, 5, 4, 4)

    batch = collate_clips(items)
    s = torch.full((3,), sigma)
    x_t = noisy_latent(
        batch["latents"],
        torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(seed)),
        s,
    )
    v = tiny_backbone.velocity(x_t, s, pad_text(batch["prompt_embeds"], text_length))
    with torch.no_grad():
        out = adapter.eval()(x_t, s, v, AdapterCondition(batch["pooled"], batch["labels"]))
    assert torch.equal(maps.selected, out.routing.selected)
    for b in range(3):
        # the expert image stage C logs to TensorBoard is the same map
        torch.testing.assert_close(maps.maps[b], StageC.expert_maps(out, b))
        assert maps.maps[b][out.routing.selected[b]].abs().sum() > 0
        assert torch.all(maps.maps[b][~out.routing.selected[b]] == 0)
    assert maps.index("clip2") == 2
    with pytest.raises(KeyError, match="clip9"):
        maps.index("clip9")


def test_maps_need_the_moe_operator(tiny_backbone):
    with pytest.raises(ValueError, match="MoE operator"):
        collect_expert_maps(
            tiny_adapter(moe_operator=False), tiny_backbone, clip_items([(0,)]), text_length=8
        )


def test_latent_frame_times_and_clip_picking():
    assert latent_frame_times(5, 4) == [0, 4, 8, 12, 16]
    with pytest.raises(ValueError, match="num_latent_frames"):
        latent_frame_times(0)
    labels = torch.zeros(3, 8)
    labels[0, [0, 5]] = 1
    labels[1, 5] = 1
    labels[2, 2] = 1
    # collision's first clip is a, already picked for rigid_body: b is the next one;
    # nobody is optical
    assert pick_clips(labels, ["a", "b", "c"], [0, 5, 2, 7]) == {0: "a", 5: "b", 2: "c"}


@pytest.mark.slow
def test_clip_frames_are_the_frames_the_cache_encoded(tiny_run):
    run = RunFolder(tiny_run)
    clips = run.clips()
    clip_id = clips.ids[0]
    frames = run.clip_frames(clips, clip_id)
    latent_frames = clips[0]["latents"].shape[1]
    assert frames.shape == (17, 32, 32, 3) and frames.dtype == np.uint8
    assert (
        len(latent_frame_times(latent_frames)) == latent_frames
        and latent_frame_times(latent_frames)[-1] == 16
    )
    # the synthetic videos are rendered at the clip settings, so the clip is the whole video
    video, _ = read_video(run.videos_dir / clips.video_names[0])
    np.testing.assert_array_equal(frames, video)
    with pytest.raises(KeyError, match="nope"):
        run.clip_frames(clips, "nope")
