"""LPMER routing (Eq. 21–23) against a hand-written reference, and its statistics."""

from __future__ import annotations

import math

import pytest
import torch

from pila.adapter.router import LPMERRouter, dense_routing, route, routing_statistics
from pila.categories import CATEGORIES


def reference_route(logits, labels, beta, top_k, tau):
    """Per-sample reference: sort scores, keep the k best, softmax over them."""
    weights = torch.zeros_like(logits)
    chosen = []
    for b in range(logits.shape[0]):
        scores = [(float(logits[b, k] + beta * labels[b, k]), k) for k in range(logits.shape[1])]
        best = sorted(scores, key=lambda s: -s[0])[:top_k]
        z = sum(math.exp(s / tau) for s, _ in best)
        for s, k in best:
            weights[b, k] = math.exp(s / tau) / z
        chosen.append([k for _, k in best])
    return chosen, weights


@pytest.mark.parametrize("top_k", [1, 2, 4, 8])
def test_topk_selection_and_weights_match_reference(top_k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    labels = (torch.rand(6, 8, generator=gen) < 0.3).double()
    routing = route(logits, labels, beta=2.0, top_k=top_k, tau=0.7)
    chosen, ref_weights = reference_route(logits, labels, 2.0, top_k, 0.7)
    assert routing.indices.tolist() == chosen
    torch.testing.assert_close(routing.weights, ref_weights)
    torch.testing.assert_close(routing.topk_weights.sum(-1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(routing.scores, logits + 2.0 * labels)
    assert routing.selected.sum(-1).tolist() == [top_k] * 6


def test_label_prior_raises_labelled_experts() -> None:
    logits = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]])
    labels = torch.zeros(1, 8)
    labels[0, 6] = labels[0, 7] = 1.0  # the two weakest experts are labelled
    without = route(logits, torch.zeros(1, 8), beta=2.0, top_k=2, tau=1.0)
    with_prior = route(logits, labels, beta=2.0, top_k=2, tau=1.0)
    assert set(without.indices[0].tolist()) == {0, 1}
    assert set(with_prior.indices[0].tolist()) == {6, 7}
    # with k = 8 the labelled experts carry more weight than without the prior
    full_without = route(logits, torch.zeros(1, 8), beta=2.0, top_k=8, tau=1.0)
    full_with = route(logits, labels, beta=2.0, top_k=8, tau=1.0)
    assert (full_with.weights[0, 6:] > full_without.weights[0, 6:]).all()
    assert (full_with.weights[0, :6] < full_without.weights[0, :6]).all()


def test_lower_temperature_sharpens_weights() -> None:
    logits = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(4, 8)
    warm = route(logits, labels, beta=2.0, top_k=4, tau=2.0)
    cold = route(logits, labels, beta=2.0, top_k=4, tau=0.25)
    assert torch.equal(warm.indices, cold.indices)  # τ does not change the selection
    assert (cold.topk_weights[:, 0] > warm.topk_weights[:, 0]).all()
    entropy = lambda w: -(w * w.log()).sum(-1)  # noqa: E731
    assert (entropy(cold.topk_weights) < entropy(warm.topk_weights)).all()


def test_top_k_zero_selects_nothing() -> None:
    routing = route(torch.randn(3, 8), torch.ones(3, 8), beta=2.0, top_k=0, tau=1.0)
    assert routing.indices.shape == (3, 0)
    assert torch.equal(routing.weights, torch.zeros(3, 8))
    assert not routing.selected.any()


def test_bad_routing_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="tau"):
        route(torch.randn(1, 8), torch.zeros(1, 8), beta=2.0, top_k=2, tau=0.0)
    with pytest.raises(ValueError, match="top_k"):
        route(torch.randn(1, 8), torch.zeros(1, 8), beta=2.0, top_k=9, tau=1.0)


def test_dense_routing_uses_every_expert_uniformly() -> None:
    routing = dense_routing(2, 8, device=torch.device("cpu"), dtype=torch.float32)
    assert routing.indices.tolist() == [list(range(8))] * 2
    torch.testing.assert_close(routing.weights, torch.full((2, 8), 1 / 8))


def test_router_module_gradient_reaches_its_weights() -> None:
    router = LPMERRouter(cond_dim=5, num_experts=8, beta=2.0, top_k=3, tau=1.0)
    cond = torch.randn(4, 5)
    routing = router(cond, torch.zeros(4, 8))
    (routing.weights * torch.arange(8.0)).sum().backward()
    assert router.proj.weight.grad is not None and router.proj.weight.grad.abs().sum() > 0


def test_routing_statistics_counts() -> None:
    # sample 0 selects {0, 1}, labelled {0, 2}; sample 1 selects {1, 3}, labelled {1}
    logits = torch.tensor([[5.0, 4.0, -9, -9, -9, -9, -9, -9], [-9, 5.0, -9, 4.0, -9, -9, -9, -9]])
    labels = torch.zeros(2, 8)
    labels[0, 0] = labels[0, 2] = labels[1, 1] = 1.0
    routing = route(logits, labels, beta=0.0, top_k=2, tau=1.0)
    stats = routing_statistics(routing, labels)
    assert stats.selection_counts.tolist() == [1, 2, 0, 1, 0, 0, 0, 0]
    assert stats.label_precision == pytest.approx(2 / 4)  # selected & labelled: (0,0), (1,1)
    assert stats.label_recall == pytest.approx(2 / 3)
    assert (
        stats.coactivation[0, 1] == 1
        and stats.coactivation[1, 3] == 1
        and stats.coactivation[0, 3] == 0
    )
    assert torch.equal(stats.coactivation.diagonal(), stats.selection_counts)
    p, q = torch.softmax(torch.tensor([5.0, 4.0]), 0).tolist()
    h = -(p * math.log(p) + q * math.log(q))
    assert stats.mean_entropy == pytest.approx(h, rel=1e-5)
    torch.testing.assert_close(stats.mean_weight[1], torch.tensor((q + p) / 2))
    merged = stats + stats
    assert merged.num_samples == 4 and merged.label_recall == pytest.approx(2 / 3)
    log = merged.as_log_dict("train/router")
    assert log[f"train/router/selection_rate/{CATEGORIES[1]}"] == pytest.approx(1.0)
