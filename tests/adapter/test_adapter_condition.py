"""Condition encoder, random labels and the decoder's zero start."""

from __future__ import annotations

import pytest
import torch

from pila.adapter import AdapterCondition, ConditionEncoder, randomize_labels
from pila.adapter.condition import sinusoidal_embedding
from pila.adapter.decoder import FlowDecoder


def encoder() -> ConditionEncoder:
    torch.manual_seed(0)
    return ConditionEncoder(text_dim=12, cond_dim=6, sigma_embed_dim=8)


def test_condition_depends_on_text_labels_and_sigma() -> None:
    enc = encoder()
    text, labels, sigma = torch.randn(2, 12), torch.zeros(2, 8), torch.tensor([0.2, 0.2])
    base = enc(text, labels, sigma)
    assert base.shape == (2, 6)
    other_labels = labels.clone()
    other_labels[:, 3] = 1
    assert not torch.allclose(enc(text, other_labels, sigma), base)
    assert not torch.allclose(enc(text, labels, torch.tensor([0.7, 0.7])), base)
    assert not torch.allclose(enc(torch.randn(2, 12), labels, sigma), base)


def test_conditioning_scale_ramps_c_linearly() -> None:
    enc = encoder()
    args = (torch.randn(3, 12), torch.ones(3, 8), torch.rand(3))
    full = enc(*args, cond_scale=1.0)
    assert torch.equal(enc(*args, cond_scale=0.0), torch.zeros_like(full))
    torch.testing.assert_close(enc(*args, cond_scale=0.25), 0.25 * full)


def test_sinusoidal_embedding_values() -> None:
    emb = sinusoidal_embedding(torch.tensor([0.0, 500.0]), 4)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(
        emb[1],
        torch.tensor(
            [
                torch.cos(torch.tensor(500.0)),
                torch.cos(torch.tensor(5.0)),
                torch.sin(torch.tensor(500.0)),
                torch.sin(torch.tensor(5.0)),
            ]
        ),
    )
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.zeros(1), 3)


def test_adapter_condition_is_validated() -> None:
    with pytest.raises(ValueError, match="cond_scale"):
        AdapterCondition(torch.zeros(1, 4), torch.zeros(1, 8), cond_scale=1.5)
    with pytest.raises(ValueError, match="mask_blend"):
        AdapterCondition(torch.zeros(1, 4), torch.zeros(1, 8), mask_blend=-0.1)
    with pytest.raises(ValueError, match="labels"):
        AdapterCondition(torch.zeros(1, 4), torch.zeros(1, 7))
    with pytest.raises(ValueError, match="batch"):
        AdapterCondition(torch.zeros(2, 4), torch.zeros(1, 8))


def test_random_labels_keep_the_count_but_change_the_categories() -> None:
    labels = torch.zeros(64, 8)
    labels[:, 0] = 1
    labels[::2, 5] = 1
    random = randomize_labels(labels, torch.Generator().manual_seed(0))
    assert torch.equal(random.sum(1), labels.sum(1))
    assert set(random.unique().tolist()) <= {0.0, 1.0}
    assert random[:, 1:].sum() > 0  # categories other than rigid_body appear
    again = randomize_labels(labels, torch.Generator().manual_seed(0))
    assert torch.equal(random, again)


def test_decoder_starts_at_zero_and_can_ignore_the_bank() -> None:
    torch.manual_seed(0)
    dec = FlowDecoder(32, 6, 16, hidden=8, depth=1)
    v = torch.randn(1, 16, 3, 4, 4)
    assert torch.equal(dec(torch.randn(1, 32, 3, 4, 4), torch.randn(1, 6), v), torch.zeros_like(v))
    blind = FlowDecoder(0, 6, 16, hidden=8, depth=1)
    assert blind.attribute is None
    with torch.no_grad():
        blind.head.weight.normal_()
    c = torch.randn(1, 6)
    assert blind(None, c, v).abs().sum() > 0  # a correction from c and v_θ alone
    with pytest.raises(ValueError, match="attributes"):
        dec(None, c, v)
