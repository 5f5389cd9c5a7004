"""The residual objective's masked means, eager and compiled (pila.physics.fused).

The compiled tests build real Inductor graphs (C++ on this CPU): tens of seconds each, so
they use a small grid and as few category sets as the property under test needs.
"""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from pila.categories import CATEGORIES
from pila.physics.bank import BANK_CHANNELS, unpack_bank
from pila.physics.fused import ResidualPass, masked_residual_means
from pila.physics.loss import ResidualLoss
from pila.physics.residuals import RESIDUAL_TERMS, residuals_for_categories, residuals_term_by_term

B, T, H, W = 2, 5, 8, 9


def fields_and_mask(seed: int = 0, requires_grad: bool = False):
    gen = torch.Generator().manual_seed(seed)
    bank = torch.randn(B, BANK_CHANNELS, T, H, W, generator=gen)
    fields = {
        name: t.contiguous().requires_grad_(requires_grad) for name, t in unpack_bank(bank).items()
    }
    mask = torch.rand(B, 1, T, H, W, generator=gen)
    return fields, mask


def by_hand(residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over (C, T', H', W') of m·r², mask cropped to the interior: (B,)."""
    return (mask[:, :, 1:-1, 1:-1, 1:-1] * residual.square()).mean(dim=(1, 2, 3, 4))


def test_masked_means_are_mean_of_masked_squares_of_every_residual():
    fields, mask = fields_and_mask()
    means = masked_residual_means(CATEGORIES, fields, mask)
    residuals = residuals_term_by_term(CATEGORIES, fields)
    assert {c: list(t) for c, t in means.items()} == {c: list(t) for c, t in RESIDUAL_TERMS.items()}
    for category, terms in residuals.items():
        for term, residual in terms.items():
            torch.testing.assert_close(means[category][term], by_hand(residual, mask))


def test_weighing_means_equals_the_loss_on_residuals_including_running_means():
    fields, mask = fields_and_mask()
    categories = ("fluid", "optical")
    direct, split = ResidualLoss(momentum=0.5), ResidualLoss(momentum=0.5)
    for step in range(3):  # several updates of the adaptive running means
        scaled = {k: (1.0 + step) * v for k, v in fields.items()}
        a = direct(residuals_for_categories(categories, scaled), mask)
        b = split.weigh(ResidualPass()(categories, scaled, mask))
        for category in categories:
            torch.testing.assert_close(a.per_category[category], b.per_category[category])
        assert a.per_term.keys() == b.per_term.keys()
    torch.testing.assert_close(direct.running_mean, split.running_mean)
    torch.testing.assert_close(direct.num_updates, split.num_updates)


def test_weighing_a_category_without_terms_gives_zeros_per_sample():
    out = ResidualLoss().weigh({"thermal": {}}, batch_size=3)
    assert torch.equal(out.per_category["thermal"], torch.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        ResidualLoss().weigh({"thermal": {}})
    with pytest.raises(ValueError, match="one value per sample"):
        ResidualLoss().weigh({"thermal": {"heat_transport": torch.zeros(2, 3)}})


@pytest.mark.slow
def test_compiled_pass_equals_eager_in_values_and_gradients():
    torch._dynamo.reset()
    fields, mask = fields_and_mask(seed=1, requires_grad=True)
    results = {}
    for compiled in (False, True):
        rp = ResidualPass(compile=compiled)
        means = rp(CATEGORIES, fields, mask)
        values = [v for terms in means.values() for v in terms.values()]  # 29 terms
        loss = sum((i + 1) * v.sum() for i, v in enumerate(values))  # distinct weights per term
        grads = torch.autograd.grad(loss, list(fields.values()))
        results[compiled] = means, grads
        assert rp.compile is compiled  # the compiled pass did not fall back to eager
    (eager, eager_grads), (fused, fused_grads) = results[False], results[True]
    for category, terms in eager.items():
        for term, value in terms.items():
            torch.testing.assert_close(fused[category][term], value, rtol=1e-5, atol=1e-7)
    for name, a, b in zip(fields, fused_grads, eager_grads, strict=True):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"gradient of {name}")


@pytest.mark.slow
def test_each_category_set_compiles_its_own_graph_beyond_the_default_limit():
    torch._dynamo.reset()
    counters.clear()
    fields, mask = fields_and_mask(seed=2)
    rp = ResidualPass(compile=True, recompile_limit=8)
    with torch._dynamo.config.patch(recompile_limit=1):  # a process with a low global limit
        for category in ("thermal", "optical", "thermal"):
            means = rp([category], fields, mask)
            reference = masked_residual_means([category], fields, mask)
            for term, value in reference[category].items():
                torch.testing.assert_close(means[category][term], value, rtol=1e-5, atol=1e-7)
    assert counters["stats"]["unique_graphs"] == 2  # one per category, the repeat is cached
    assert rp.compile


def test_bad_input_is_reported_before_compiling():
    fields, mask = fields_and_mask()
    rp = ResidualPass(compile=True)
    with pytest.raises(ValueError, match="unknown physical category 'gas'"):
        rp(["gas"], fields, mask)
    missing = {k: v for k, v in fields.items() if k != "rho"}
    with pytest.raises(ValueError, match="needs field 'rho'"):
        rp(["fluid"], missing, mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, 1, T, H, W\)"):
        rp(["fluid"], fields, mask[:, 0])
    with pytest.raises(ValueError, match="mask has .* but field 'u' has"):
        rp(["fluid"], fields, mask[:, :, :4])
    with pytest.raises(ValueError, match="floating-point"):
        rp(["fluid"], fields, mask > 0.5)
    with pytest.raises(ValueError, match="unknown residual scale"):
        rp(["fluid"], fields, mask, {"viscosity": 0.1})
    assert rp.compile  # none of these switched the compiled pass off
    with pytest.raises(ValueError, match="recompile_limit"):
        ResidualPass(compile=True, recompile_limit=0)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    fields, mask = fields_and_mask()
    rp = ResidualPass(compile=True)

    class BackendCompilerFailed(RuntimeError):
        pass

    def broken(*args, **kwargs):
        raise BackendCompilerFailed("no working C++ compiler")

    monkeypatch.setattr(rp, "_compiled", broken)
    with caplog.at_level(logging.WARNING, logger="pila.physics.fused"):
        means = rp(["thermal"], fields, mask)
    assert "runs eagerly" in caplog.text and "no working C++ compiler" in caplog.text
    assert not rp.compile
    expected = masked_residual_means(["thermal"], fields, mask)
    torch.testing.assert_close(means, expected)


@pytest.mark.parametrize("error", [KeyError("x"), torch._dynamo.exc.Unsupported("cannot trace")])
def test_other_errors_from_the_compiled_call_propagate(monkeypatch, error):
    """Only a failing toolchain falls back; an untraceable graph is a bug to report."""
    fields, mask = fields_and_mask()
    rp = ResidualPass(compile=True)

    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr(rp, "_compiled", raising)
    with pytest.raises(type(error)):
        rp(["thermal"], fields, mask)
    assert rp.compile


@pytest.mark.parametrize("compiled", [False, True])
def test_residual_pass_pickles_and_copies_for_spawned_workers(compiled):
    fields, mask = fields_and_mask()
    for copied in (
        pickle.loads(pickle.dumps(ResidualPass(compile=compiled))),
        copy.deepcopy(ResidualPass(compiled)),
    ):
        assert copied.compile is compiled and (copied._compiled is not None) is compiled
    eager = pickle.loads(pickle.dumps(ResidualPass(recompile_limit=5)))
    assert eager.recompile_limit == 5
    assert set(eager(["optical"], fields, mask)["optical"]) == set(RESIDUAL_TERMS["optical"])
