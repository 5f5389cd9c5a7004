"""Router statistics: selection rate by category, co-activation correlation, routing collection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from analysis_helpers import clip_items, tiny_adapter

from pila.adapter import AdapterCondition, Routing, routing_statistics
from pila.analysis import (
    RunFolder,
    category_counts,
    check_sigmas,
    coactivation_correlation_matrix,
    coactivation_counts,
    collect_routing,
    mean_weight_by_category,
    read_generated_routing,
    selection_rate_by_category,
)
from pila.datamodules.collate import collate_clips
from pila.flow import noisy_latent
from pila.generation.writer import SIDECAR_FORMAT
from pila.stages.module import pad_text

# four clips: 0 rigid_body+collision, 1 rigid_body, 2 fluid, 3 fluid+thermal; no one else
LABELS = torch.zeros(4, 8)
LABELS[0, [0, 5]] = 1
LABELS[1, 0] = 1
LABELS[2, 2] = 1
LABELS[3, [2, 6]] = 1
SELECTED = torch.zeros(4, 8, dtype=torch.bool)
SELECTED[0, [0, 5, 7]] = True
SELECTED[1, [0, 3, 7]] = True
SELECTED[2, [2, 3, 7]] = True
SELECTED[3, [2, 6, 7]] = True


def test_selection_rate_by_category_on_a_hand_made_example():
    rates = selection_rate_by_category(SELECTED, LABELS)
    assert rates.shape == (8, 8)
    # rigid_body: clips 0 and 1 → expert 0 both times, 3 once, 5 once, 7 both
    assert rates[0].tolist() == [1.0, 0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 1.0]
    # collision: clip 0 alone
    assert rates[5].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    # fluid: clips 2 and 3
    assert rates[2].tolist() == [0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.5, 1.0]
    # thermal: clip 3
    assert rates[6].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    # categories no clip carries are NaN rows, not zeros
    for c in (1, 3, 4, 7):
        assert torch.isnan(rates[c]).all()
    assert category_counts(LABELS).tolist() == [2, 0, 2, 0, 0, 1, 1, 0]


def test_routing_weights_count_as_selections_and_average_by_category():
    weights = torch.zeros(4, 8)
    weights[SELECTED] = torch.tensor([0.5, 0.3, 0.2] * 4)
    torch.testing.assert_close(
        selection_rate_by_category(weights, LABELS),
        selection_rate_by_category(SELECTED, LABELS),
        equal_nan=True,
    )
    mean = mean_weight_by_category(weights, LABELS)
    # rigid_body: clip 0 gives expert 0 weight 0.5, clip 1 gives it 0.5 → 0.5;
    # expert 3 only in clip 1 (0.3) → 0.15
    assert mean[0, 0].item() == pytest.approx(0.5)
    assert mean[0, 3].item() == pytest.approx(0.15)
    assert mean[0, 7].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one row per sample"):
        selection_rate_by_category(SELECTED[:3], LABELS)


def test_coactivation_correlation_is_pearson_of_the_selection_indicators():
    counts = coactivation_counts(SELECTED)
    assert counts[0, 5] == 1 and counts[0, 0] == 2 and counts[7, 7] == 4
    corr = coactivation_correlation_matrix(SELECTED)
    s = SELECTED.double().numpy()
    varying = [k for k in range(8) if 0 < s[:, k].mean() < 1]
    expected = np.corrcoef(s[:, varying].T)
    np.testing.assert_allclose(corr[np.ix_(varying, varying)].numpy(), expected, atol=1e-12)
    # expert 7 (always selected) and never-selected experts have no variance: 0 off the diagonal
    for k in (1, 4, 7):
        assert corr[k, k] == 1.0
        assert torch.all(corr[k, torch.arange(8) != k] == 0)
    # the same matrix training's router statistics would give
    routing = Routing(
        torch.zeros(4, 8),
        torch.zeros(4, 8),
        SELECTED.float().topk(3).indices,
        torch.full((4, 3), 1 / 3),
        SELECTED.float() / 3,
    )
    assert torch.equal(routing_statistics(routing, LABELS).coactivation.double(), counts)


def test_check_sigmas_names_the_bad_value():
    assert check_sigmas(0.5) == (0.5,)
    assert check_sigmas([0, 1]) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"\[1.5\]"):
        check_sigmas([0.5, 1.5])
    with pytest.raises(ValueError, match="empty"):
        check_sigmas([])


def test_collected_routing_equals_calling_the_adapter_directly(tiny_backbone):
    adapter = tiny_adapter(seed=3, beta=0.5)  # a weak label prior: the learned logits matter
    adapter.train()
    items = clip_items([(0, 5), (1,), (2,), (2, 6), (7,)])
    sigmas, seed, batch_size, text_length = (0.3, 0.9), 11, 2, 8
    routing = collect_routing(
        adapter,
        tiny_backbone,
        items,
        sigmas,
        text_length=text_length,
        batch_size=batch_size,
        seed=seed,
    )
    assert adapter.training, "the adapter's mode is restored"
    assert routing.ids == [f"clip{i}" for i in range(5)]
    assert torch.equal(routing.labels, torch.stack([it["labels"] for it in items]))

    adapter.eval()
    for level, sigma in enumerate(sigmas):
        generator = torch.Generator().manual_seed(seed + level)
        weights, indices = [], []
        for start in range(0, len(items), batch_size):
            batch = collate_clips(items[start : start + batch_size])
            x0 = batch["latents"]
            s = torch.full((x0.shape[0],), sigma)
            x_t = noisy_latent(x0, torch.randn(x0.shape, generator=generator), s)
            v = tiny_backbone.velocity(x_t, s, pad_text(batch["prompt_embeds"], text_length))
            with torch.no_grad():
                out = adapter(x_t, s, v, AdapterCondition(batch["pooled"], batch["labels"]))
            weights.append(out.routing.weights)
            indices.append(out.routing.indices)
        torch.testing.assert_close(routing.routing[level].weights, torch.cat(weights))
        assert torch.equal(routing.routing[level].indices, torch.cat(indices))
        assert torch.equal(routing.selected(sigma), routing.routing[level].selected)
    # σ levels stack in order; labels repeat to match
    assert routing.selected().shape == (10, 8)
    assert torch.equal(routing.sample_labels(), routing.labels.repeat(2, 1))
    assert routing.statistics().num_samples == 10
    assert torch.equal(
        routing.statistics(0.3).selection_counts, routing.selected(0.3).sum(0).float()
    )
    with pytest.raises(KeyError, match="0.5"):
        routing.selected(0.5)


def test_the_plain_adapter_has_no_router_to_collect(tiny_backbone):
    with pytest.raises(ValueError, match="plain adapter"):
        collect_routing(
            tiny_adapter(plain_adapter=True), tiny_backbone, clip_items([(0,)]), text_length=8
        )


@pytest.mark.slow
def test_routing_of_a_demo_run(tiny_run):
    run = RunFolder(tiny_run)
    assert run.settings.backbone == "tiny" and run.settings.text_length == 128
    adapter, clips = run.load_adapter(), run.clips()
    routing = collect_routing(
        adapter, run.load_backbone(), clips, (0.5, 1.0), text_length=run.settings.text_length
    )
    assert routing.ids == clips.ids
    assert torch.equal(routing.labels, torch.stack([clips[i]["labels"] for i in range(len(clips))]))
    assert (routing.selected().sum(1) == adapter.config.top_k).all()
    rates = selection_rate_by_category(routing.selected(), routing.sample_labels())
    # every category has a synthetic clip, and the label prior puts each clip's own expert first
    assert not torch.isnan(rates).any()
    assert torch.all(rates.diagonal() == 1.0)
    # the demo's generated video recorded its routing: top-k weights averaged over steps sum to 1
    generated = read_generated_routing(run.generated_dir)
    assert len(generated.prompts) == 1 and (generated.labels.sum(1) > 0).all()
    torch.testing.assert_close(generated.weights.sum(1), torch.ones(1))


def test_generated_routing_is_read_from_the_video_sidecars(tmp_path):
    def sidecar(name: str, prompt: str, labels, routing) -> None:
        meta = {
            "format": SIDECAR_FORMAT,
            "prompt": prompt,
            "labels": labels,
            "video": f"{name}.mp4",
            "routing_weights": routing,
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))

    sidecar(
        "00000_ball",
        "a ball bounces",
        ["rigid_body", "collision"],
        {"rigid_body": 0.25, "collision": 0.75},
    )
    sidecar("00001_base", "no adapter", None, None)  # generated without an adapter: skipped
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.json").write_text(json.dumps({"prompt": "not a sidecar"}))
    sidecar(
        "sub/00002_ice",
        "ice melts",
        ["phase_change"],
        {"phase_change": 0.5, "thermal": 0.5, "fluid": 0.0},
    )
    routing = read_generated_routing(tmp_path)
    assert routing.videos == ["00000_ball.mp4", "sub/00002_ice.mp4"]
    assert routing.prompts == ["a ball bounces", "ice melts"]
    assert routing.labels[0].tolist() == [1, 0, 0, 0, 0, 1, 0, 0]
    assert routing.weights[0].tolist() == [0.25, 0, 0, 0, 0, 0.75, 0, 0]
    assert routing.weights[1].tolist() == [0, 0, 0, 0, 0.5, 0, 0.5, 0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video sidecar"):
        read_generated_routing(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_generated_routing(tmp_path / "nowhere")
