"""Flow-matching math: σ sampling (shift and range), the path, the x̂0 estimate, the gate."""

from __future__ import annotations

import pytest
import torch

from pila.flow import (
    SigmaSampler,
    apply_correction,
    estimate_x0,
    noisy_latent,
    shift_sigma,
    sigma_gate,
    sigma_to_timestep,
    unshift_sigma,
    velocity_target,
)


def test_shift_is_monotone_with_fixed_ends_and_inverts():
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    shifted = shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.all(shifted[1:] > shifted[:-1])
    assert torch.all(shifted[1:-1] > s[1:-1])  # s > 1 moves mass towards noise
    torch.testing.assert_close(unshift_sigma(shifted, 3.0), s)
    torch.testing.assert_close(shift_sigma(s, 1.0), s)


@pytest.mark.parametrize(
    ("shift", "lo", "hi"), [(3.0, 0.0, 1.0), (3.0, 0.0, 0.25), (5.0, 0.2, 0.6), (1.0, 0.0, 0.5)]
)
def test_sigma_sampler_matches_the_shifted_uniform_law_on_its_range(shift, lo, hi):
    sampler = SigmaSampler(shift=shift, sigma_min=lo, sigma_max=hi)
    n = 20000
    sigma = sampler.sample(n, generator=torch.Generator().manual_seed(0)).double()
    assert sigma.shape == (n,)
    assert sigma.min() >= lo and sigma.max() <= hi
    # CDF of shift(U) with U uniform on [unshift(lo), unshift(hi)]: (unshift(x) - a) / (b - a).
    a, b = unshift_sigma(torch.tensor([lo, hi], dtype=torch.float64), shift)
    grid = torch.linspace(lo, hi, 200, dtype=torch.float64)
    expected = (unshift_sigma(grid, shift) - a) / (b - a)
    empirical = (sigma.unsqueeze(0) <= grid.unsqueeze(1)).double().mean(dim=1)
    # Kolmogorov–Smirnov: the 99.9% critical value for n = 20000 is 1.95/sqrt(n) ≈ 0.0138.
    assert (empirical - expected).abs().max() < 1.95 / n**0.5


def test_shift_moves_the_median_of_samples_towards_noise():
    gen = torch.Generator().manual_seed(1)
    plain = SigmaSampler(shift=1.0).sample(10000, generator=gen)
    shifted = SigmaSampler(shift=3.0).sample(10000, generator=gen)
    assert abs(plain.median().item() - 0.5) < 0.02
    # median of shift(U) is shift(0.5) = 0.75 for s = 3
    assert abs(shifted.median().item() - 0.75) < 0.02


def test_sampler_rejects_bad_ranges():
    with pytest.raises(ValueError, match="sigma_min"):
        SigmaSampler(sigma_min=0.5, sigma_max=0.5)
    with pytest.raises(ValueError, match="shift"):
        SigmaSampler(shift=0.0)


def test_path_target_and_x0_estimate_are_consistent():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 16, 2, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(3, 16, 2, 4, 4, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    x_t = noisy_latent(x0, eps, sigma)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], eps[2])
    # with the exact velocity, Eq. (1) recovers the clean latent at every σ
    torch.testing.assert_close(estimate_x0(x_t, sigma, velocity_target(x0, eps)), x0)


def test_gate_and_timestep():
    sigma = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(sigma_gate(sigma, 0.1), torch.tensor([1.0, 0.1 + 0.9 * 0.25, 0.1]))
    torch.testing.assert_close(sigma_to_timestep(sigma), torch.tensor([0.0, 500.0, 1000.0]))
    v = torch.randn(3, 16, 2, 4, 4)
    v_pila, correction = apply_correction(v, sigma, torch.zeros_like(v))
    assert torch.equal(v_pila, v) and not correction.any()
    delta = torch.ones_like(v)
    out, correction = apply_correction(v, sigma, delta, g_min=0.1)
    torch.testing.assert_close((out - v)[:, 0, 0, 0, 0], sigma_gate(sigma, 0.1))
    assert torch.equal(out, v + correction)
