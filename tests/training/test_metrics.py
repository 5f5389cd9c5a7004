"""torchmetrics for the logs: router statistics and per-term residual means."""

from __future__ import annotations

import math

import pytest
import torch

from pila.adapter.router import route, routing_statistics
from pila.stages.metrics import ResidualMetrics, RouterMetrics, coactivation_correlation


def _routing(seed: int, batch: int = 6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 8, generator=g)
    labels = (torch.rand(batch, 8, generator=g) > 0.7).float()
    return route(logits, labels, beta=2.0, top_k=3, tau=1.0), labels


def test_router_metrics_accumulate_like_the_summed_statistics():
    metric = RouterMetrics()
    parts = [_routing(s) for s in range(3)]
    for routing, labels in parts:
        metric.update(routing, labels)
    total = (
        routing_statistics(*parts[0])
        + routing_statistics(*parts[1])
        + routing_statistics(*parts[2])
    )
    out = metric.compute()
    torch.testing.assert_close(out.selection_rate.float(), total.selection_rate.float())
    torch.testing.assert_close(out.mean_weight.float(), total.mean_weight.float())
    assert math.isclose(out.label_precision, total.label_precision, rel_tol=1e-9)
    assert math.isclose(out.label_recall, total.label_recall, rel_tol=1e-9)
    assert math.isclose(out.mean_entropy, total.mean_entropy, rel_tol=1e-6)
    torch.testing.assert_close(out.coactivation.float(), total.coactivation.float())
    assert float(out.selection_rate.sum()) == 3.0  # top-3 per sample
    # the tags training logs are the statistics' own log dict, NaN-free
    logged = out.as_log_dict("train/router")
    assert logged == pytest.approx(total.as_log_dict("train/router"), rel=1e-6)
    assert len(logged) == 3 + 2 * 8


def test_router_statistics_without_labels_leave_label_recall_out_of_the_logs():
    metric = RouterMetrics()
    routing, labels = _routing(0)
    metric.update(routing, torch.zeros_like(labels))
    logged = metric.compute().as_log_dict("train/router")
    assert "train/router/label_recall" not in logged
    assert logged["train/router/label_precision"] == 0.0


def test_coactivation_correlation_matches_numpy_on_the_indicators():
    g = torch.Generator().manual_seed(0)
    sel = (torch.rand(200, 8, generator=g) > 0.5).double()
    sel[:, 1] = sel[:, 0]  # expert 1 always with expert 0
    sel[:, 2] = 1 - sel[:, 0]  # expert 2 never with expert 0
    sel[:, 3] = 1.0  # always selected: zero variance
    corr = coactivation_correlation(sel.T @ sel, 200)
    ref = torch.from_numpy(__import__("numpy").corrcoef(sel[:, [0, 1, 2, 4, 5]].T.numpy()))
    idx = [0, 1, 2, 4, 5]
    torch.testing.assert_close(corr[idx][:, idx], ref)
    assert corr[0, 1] == 1.0 and corr[0, 2] == -1.0 and corr[3, 0] == 0.0 and corr[3, 3] == 1.0


def test_residual_metrics_average_only_what_ran():
    metric = ResidualMetrics()
    metric.update(
        {("fluid", "continuity"): torch.tensor(2.0)},
        {"fluid": torch.tensor([1.0, float("nan"), 3.0])},
    )
    metric.update(
        {("fluid", "continuity"): torch.tensor(4.0), ("optical", "wave"): torch.tensor(1.0)}
    )
    logged = metric.log_dict("train")
    assert logged["train/residual/fluid/continuity"] == 3.0
    assert logged["train/residual/optical/wave"] == 1.0
    assert logged["train/expert_loss/fluid"] == 2.0
    assert "train/residual/thermal/heat_transport" not in logged  # never evaluated
    assert len([k for k in logged if k.startswith("train/residual/")]) == 2
