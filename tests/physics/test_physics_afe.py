"""Anchored field estimation: Eqs. 14–20, phases, ablation switches, errors."""

from __future__ import annotations

import math

import pytest
import torch
from physics_helpers import grid

from pila.physics import ops
from pila.physics.afe import (
    AFEConfig,
    AnchoredFieldEstimator,
    active_slots,
    kinematic_descriptors,
    midpoint_displacement,
    stress_closure,
)
from pila.physics.bank import BANK_SLOTS, SLOT_COMPONENTS, read_slot, slot_mask, slot_slice

HIDDEN = 8
B, T, H, W = 2, 5, 6, 7


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, HIDDEN, T, H, W, generator=g), torch.randn(B, 32, T, H, W, generator=g)


def scaffold_with_velocity(v: torch.Tensor) -> torch.Tensor:
    """A scaffold whose velocity slot holds v (x, y, x, y) and noise elsewhere."""
    scaffold = torch.randn(v.shape[0], 32, *v.shape[2:], dtype=v.dtype)
    scaffold[:, slot_slice("v")] = torch.cat([v, v], dim=1)
    return scaffold


def test_output_is_the_bank_contract_in_slot_order():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN, AFEConfig())
    out = afe(*inputs(), phase=4)
    assert out.bank.shape == (B, 32, T, H, W)
    assert list(out.fields) == [name for name, _ in BANK_SLOTS]
    for name, tensor in out.fields.items():
        assert tensor.shape == (B, SLOT_COMPONENTS[name], T, H, W)
        torch.testing.assert_close(read_slot(out.bank, name), tensor)
    torch.testing.assert_close(out.fields["v"], out.v_hat)


def test_fresh_anchor_head_reads_the_velocity_slot():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN)
    h, scaffold = inputs()
    out = afe(h, scaffold, phase=0)
    torch.testing.assert_close(out.v_hat, read_slot(scaffold, "v"))


@pytest.mark.parametrize("phase", range(5))
def test_inactive_slots_are_exactly_zero(phase):
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN)
    out = afe(*inputs(), phase=phase)
    expected = [("u", "v", "p", "rho", "strain", "stress"), ("phi",), ("T",), ("J",), ("w",)]
    active = {name for names in expected[: phase + 1] for name in names}
    assert set(out.active_slots) == active
    on = slot_mask(out.active_slots, dtype=torch.bool)
    assert torch.count_nonzero(out.bank[:, ~on]) == 0
    for name, tensor in out.fields.items():
        if name in active:
            assert tensor.abs().sum() > 0, name
        else:
            assert torch.count_nonzero(tensor) == 0, name


def test_phase_order_and_validation():
    assert active_slots(0) == ("u", "v", "p", "rho", "strain", "stress")
    assert active_slots(2) == ("u", "v", "p", "rho", "T", "phi", "strain", "stress")
    assert active_slots(0, staged_recovery=False) == tuple(name for name, _ in BANK_SLOTS)
    for bad in (-1, 5, 1.0, True):
        with pytest.raises(ValueError, match="recovery phase must be an integer in 0"):
            active_slots(bad)


def test_displacement_integrates_the_velocity_from_the_middle_frame():
    t, y, x = grid(9, 4, 5)
    # v linear in t: the trapezoid rule is exact, u = ∫_{t_m}^{t} v
    a = torch.cat([torch.sin(0.3 * x), torch.cos(0.2 * y)], dim=1)
    b = torch.cat([0.1 + 0 * x, -0.05 + 0 * y], dim=1)
    v = a + b * t
    tm = 4
    exact = a * (t - tm) + 0.5 * b * (t * t - tm * tm)
    torch.testing.assert_close(midpoint_displacement(v), exact)
    # a smooth v: second-order accurate, error ω²/12 of the displacement
    omega = 0.4
    wave = torch.cos(omega * t).expand(1, 2, 9, 4, 5)
    integral = (torch.sin(omega * t) - math.sin(omega * tm)) / omega
    error = (midpoint_displacement(wave) - integral).abs().max()
    assert float(error) < omega**2 / 12 * float(integral.abs().max()) * 1.5
    assert float(error) > 0  # the trapezoid rule is not exact on a cosine


def test_afe_displacement_is_the_integral_of_the_anchor():
    t, y, x = grid(7, 5, 6)
    v = torch.cat([0.2 * torch.sin(0.5 * t) + 0.1 * x, -0.3 + 0.05 * t * y], dim=1).float()
    afe = AnchoredFieldEstimator(HIDDEN)
    h = torch.randn(1, HIDDEN, 7, 5, 6)
    out = afe(h, scaffold_with_velocity(v), phase=0)
    torch.testing.assert_close(out.fields["u"], midpoint_displacement(v))
    assert torch.count_nonzero(out.fields["u"][:, :, 3]) == 0  # u_{t_m} = 0, t_m = 7 // 2
    torch.testing.assert_close(
        out.fields["u"][:, :, 4] - out.fields["u"][:, :, 3], 0.5 * (v[:, :, 3] + v[:, :, 4])
    )


def test_pressure_is_centred_and_density_is_floored():
    torch.manual_seed(0)
    config = AFEConfig(rho_min=0.05)
    afe = AnchoredFieldEstimator(HIDDEN, config)
    with torch.no_grad():
        afe.density_head[-1].bias.fill_(-60.0)  # push softplus towards 0
        afe.pressure_head[-1].bias.fill_(7.0)  # an offset the centring must remove
    h, scaffold = inputs()
    with torch.no_grad():
        out = afe(h * 10, scaffold, phase=0)
    means = out.fields["p"].mean(dim=(1, 2, 3, 4))
    assert torch.all(means.abs() < 1e-5)
    assert out.fields["p"].abs().max() > 0.01
    assert torch.all(out.fields["rho"] >= config.rho_min)
    assert float(out.fields["rho"].min()) < config.rho_min + 1e-3


def test_strain_and_stress_follow_eqs_16_and_20():
    torch.manual_seed(0)
    config = AFEConfig(kappa_p=0.7, kappa_eps=1.3)
    afe = AnchoredFieldEstimator(HIDDEN, config)
    out = afe(*inputs(), phase=0)
    torch.testing.assert_close(out.fields["strain"], ops.sym_gradient(out.v_hat, boundary="same"))
    p, strain = out.fields["p"], out.fields["strain"]
    p_tilde = p / (p.std(dim=(1, 2, 3, 4), keepdim=True, correction=0) + config.std_eps)
    expected = torch.cat(
        [
            1.3 * strain[:, 0:1] - 0.7 * p_tilde,
            1.3 * strain[:, 1:2] - 0.7 * p_tilde,
            1.3 * strain[:, 2:3],
        ],
        dim=1,
    )
    torch.testing.assert_close(out.fields["stress"], expected)
    torch.testing.assert_close(
        stress_closure(p, strain, kappa_p=0.7, kappa_eps=1.3, eps=config.std_eps), expected
    )


def test_kinematic_descriptors_of_a_rotation():
    t, y, x = grid(3, 5, 5)
    rotation = torch.cat([-(y - 2), x - 2], dim=1) + 0.1 * t
    d = kinematic_descriptors(rotation)
    torch.testing.assert_close(d["div_v"], torch.zeros_like(d["div_v"]))
    torch.testing.assert_close(d["curl_v"], torch.full_like(d["curl_v"], 2.0))
    torch.testing.assert_close(d["dt_v"], torch.full_like(d["dt_v"], 0.1))
    torch.testing.assert_close(d["strain"], torch.zeros_like(d["strain"]))
    assert d["grad_v"].shape == (1, 4, 3, 5, 5)


def test_without_staged_recovery_every_slot_is_active_from_phase_0():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN, AFEConfig(staged_recovery=False))
    out = afe(*inputs(), phase=0)
    assert out.active_slots == tuple(name for name, _ in BANK_SLOTS)
    for name, tensor in out.fields.items():
        assert tensor.abs().sum() > 0, name


def test_without_kinematic_anchor_nothing_is_derived_from_the_velocity():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN, AFEConfig(kinematic_anchor=False))
    assert afe.anchor_head is None
    h, scaffold = inputs()
    out = afe(h, scaffold, phase=4)
    for name in ("v", "u", "strain"):
        torch.testing.assert_close(out.fields[name], read_slot(scaffold, name))
    moved = scaffold.clone()
    moved[:, slot_slice("v")] += torch.randn_like(moved[:, slot_slice("v")])
    again = afe(h, moved, phase=4)
    for name in ("p", "rho", "phi", "T", "J", "w"):
        torch.testing.assert_close(again.fields[name], out.fields[name])

    anchored = AnchoredFieldEstimator(HIDDEN)
    base, shifted = anchored(h, scaffold, phase=4), anchored(h, moved, phase=4)
    for name in ("u", "p", "rho", "phi", "T", "J"):
        assert not torch.allclose(base.fields[name], shifted.fields[name]), name


def test_only_the_heads_of_the_active_phase_get_gradients():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN)
    afe(*inputs(), phase=0).bank.square().sum().backward()
    assert afe.pressure_head[0].weight.grad is not None
    assert afe.anchor_head.weight.grad is not None
    assert afe.wave_head[0].weight.grad is None and afe.phase_head[0].weight.grad is None
    afe.zero_grad(set_to_none=True)
    afe(*inputs(), phase=4).bank.square().sum().backward()
    for head in (afe.phase_head, afe.temperature_head, afe.impulse_head, afe.wave_head):
        assert head[0].weight.grad is not None and head[0].weight.grad.abs().sum() > 0


def test_bad_inputs_are_clear_errors():
    afe = AnchoredFieldEstimator(HIDDEN)
    h, scaffold = inputs()
    with pytest.raises(ValueError, match=r"h must have shape \(B, 8, T, H, W\)"):
        afe(torch.zeros(B, 4, T, H, W), scaffold, phase=0)
    with pytest.raises(ValueError, match=r"scaffold must have shape \(B, 32"):
        afe(h, torch.zeros(B, 30, T, H, W), phase=0)
    with pytest.raises(ValueError, match="share"):
        afe(h, torch.zeros(B, 32, T, H, W + 1), phase=0)
    with pytest.raises(ValueError, match="recovery phase"):
        afe(h, scaffold, phase=7)
    with pytest.raises(ValueError, match="at least 2 points along T, H and W"):
        afe(torch.zeros(1, HIDDEN, 1, 4, 4), torch.zeros(1, 32, 1, 4, 4), phase=0)
    with pytest.raises(ValueError, match="AFEConfig.rho_min"):
        AFEConfig(rho_min=0.0)
    with pytest.raises(ValueError, match="AFEConfig.head_width"):
        AFEConfig(head_width=0)


# Readings R1 and R2 (design/pila-method.md §7) on AFE's own output -----------------------------


def _afe_terms(scales_kwargs: dict) -> dict[str, dict[str, torch.Tensor]]:
    from pila.physics.residuals import ResidualScales, residuals_for_categories

    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(HIDDEN)
    h, scaffold = inputs(3)
    with torch.no_grad():
        out = afe(h, scaffold, phase=4)
    scales = ResidualScales(**scales_kwargs)
    return residuals_for_categories(("rigid_body", "elastic"), out.fields, scales), out.fields


def test_midpoint_kinematic_reading_vanishes_on_afe_output_and_central_is_a_smoothness_penalty():
    central, fields = _afe_terms({})
    midpoint, _ = _afe_terms({"kinematic_reading": "midpoint"})
    v = fields["v"]
    torch.testing.assert_close(
        central["rigid_body"]["kinematic"], 0.25 * ops.d_dtt(v), atol=1e-5, rtol=1e-5
    )
    assert central["rigid_body"]["kinematic"].abs().max() > 1e-2
    assert midpoint["rigid_body"]["kinematic"].abs().max() < 1e-5
    # the experts' changes are what the midpoint reading sees: u moved alone is a violation
    from pila.physics.residuals import FieldDerivatives, ResidualScales, kinematic_residual

    moved = dict(fields, u=fields["u"] + 0.1 * torch.randn_like(fields["u"]))
    assert (
        kinematic_residual(FieldDerivatives(moved), ResidualScales(kinematic_reading="midpoint"))
        .abs()
        .mean()
        > 0.01
    )


def test_eq20_stress_reading_vanishes_on_afe_output_and_linear_is_the_pressure_term():
    linear, fields = _afe_terms({})
    eq20, _ = _afe_terms({"stress_reading": "eq20"})
    p = fields["p"]
    p_tilde = ops.crop_interior(p / (p.std(dim=(1, 2, 3, 4), keepdim=True, correction=0) + 1e-6))
    expected = -torch.cat([p_tilde, p_tilde, torch.zeros_like(p_tilde)], dim=1)
    torch.testing.assert_close(linear["elastic"]["stress_strain"], expected, atol=1e-5, rtol=1e-5)
    assert eq20["elastic"]["stress_strain"].abs().max() < 1e-4


def test_unknown_reading_is_a_clear_error():
    from pila.physics.residuals import ResidualScales

    with pytest.raises(ValueError, match="kinematic_reading must be one of"):
        ResidualScales(kinematic_reading="forward")
    assert ResidualScales.from_overrides(stress_reading="eq20").stress_reading == "eq20"
