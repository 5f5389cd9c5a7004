"""Collation: prompts of different lengths are zero-padded with a False mask."""

from __future__ import annotations

import pytest
import torch

from pila.datamodules.collate import ClipCollator, collate_clips, pad_prompts


def item(length: int, key: str, dim: int = 4) -> dict:
    return {
        "latents": torch.randn(16, 3, 2, 2),
        "flow": torch.randn(2, 3, 2, 2),
        "prompt_embeds": torch.arange(1, length * dim + 1, dtype=torch.float32).view(length, dim),
        "prompt_mask": torch.ones(length, dtype=torch.bool),
        "pooled": torch.randn(dim),
        "labels": torch.tensor([1, 0, 0, 0, 0, 1, 0, 0], dtype=torch.float32),
        "prompt": f"prompt {key}",
        "id": key,
    }


def test_prompts_of_different_lengths_pad_to_the_longest():
    items = [item(3, "a"), item(7, "b"), item(1, "c")]
    batch = collate_clips(items)
    assert batch["prompt_embeds"].shape == (3, 7, 4)
    assert batch["prompt_mask"].tolist() == [
        [True] * 3 + [False] * 4,
        [True] * 7,
        [True] + [False] * 6,
    ]
    for i, it in enumerate(items):
        n = it["prompt_embeds"].shape[0]
        torch.testing.assert_close(batch["prompt_embeds"][i, :n], it["prompt_embeds"])
        assert torch.all(batch["prompt_embeds"][i, n:] == 0)
    assert batch["latents"].shape == (3, 16, 3, 2, 2) and batch["flow"].shape == (3, 2, 3, 2, 2)
    assert batch["pooled"].shape == (3, 4) and batch["labels"].shape == (3, 8)
    assert batch["prompt"] == ["prompt a", "prompt b", "prompt c"] and batch["id"] == [
        "a",
        "b",
        "c",
    ]
    torch.testing.assert_close(batch["latents"][1], items[1]["latents"])


def test_a_fixed_length_pads_every_batch_alike_and_refuses_longer_prompts():
    collate = ClipCollator(pad_to=10)
    assert collate([item(2, "a")])["prompt_embeds"].shape == (1, 10, 4)
    assert collate([item(2, "a"), item(9, "b")])["prompt_mask"].sum(dim=1).tolist() == [2, 9]
    with pytest.raises(ValueError, match="max_sequence_length"):
        collate([item(11, "a")])


def test_a_partial_mask_is_kept():
    embeds, mask = pad_prompts([torch.ones(3, 2)], [torch.tensor([True, True, False])], pad_to=5)
    assert mask.tolist() == [[True, True, False, False, False]]
    assert embeds.shape == (1, 5, 2)


def test_raw_video_items_stack_without_prompt_embeddings():
    raw = [
        {
            "video": torch.zeros(3, 5, 8, 8, dtype=torch.uint8),
            "flow": torch.zeros(2, 2, 1, 1),
            "labels": torch.zeros(8),
            "prompt": "p",
            "id": str(i),
        }
        for i in range(2)
    ]
    batch = collate_clips(raw)
    assert batch["video"].shape == (2, 3, 5, 8, 8) and batch["video"].dtype == torch.uint8
    assert "prompt_embeds" not in batch
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])
