"""Every PDE anchor and kinematic term against exact solutions and violating fields (float64).

The residuals are central-difference discretisations, so on a smooth exact solution they
do not vanish to round-off but to the truncation error: relative to the size of the
terms that cancel, about (k·h)²/12 to (k·h)²/6 for a wavenumber k on the unit grid. With
wavelengths of ≥ 16 cells (k ≤ 0.4) that is ≤ 3 %. Each violating field breaks the
relation by an O(1) fraction of the same terms (a wrong sign, speed or source). So each
test requires

    rms(r_exact) ≤ TOLERANCE · rms(r_violating),   TOLERANCE = 0.05,

which a correct discretisation meets with a margin (measured ratios are ≈ 0.001–0.02)
while a wrong stencil, sign, scale or missing term lands at O(1). Where the exact
solution is a polynomial the stencils are exact and the residual is round-off (≤ 1e-9).
For the wave and heat anchors we also check the order: doubling the wavelength (the
same as halving h) must cut the relative residual by ≈ 4.
"""

from __future__ import annotations

import math

import pytest
import torch
from physics_helpers import DTYPE, constant, grid, rms

from pila.physics.ops import laplacian
from pila.physics.residuals import ResidualScales, category_residuals

TOLERANCE = 0.05
SCALES = ResidualScales()


def residual(category: str, term: str, **fields) -> torch.Tensor:
    return category_residuals(category, fields)[term]


def assert_vanishes_on_solution(exact: torch.Tensor, violating: torch.Tensor) -> None:
    ratio = rms(exact) / rms(violating)
    assert ratio < TOLERANCE, f"exact-solution residual is {ratio:.3g} of the violating one"
    assert rms(violating) > 1e-3, "the violating field should give a clearly non-zero residual"


def plane_wave(k: float, speed: float, frames: int = 9, size: int = 40) -> torch.Tensor:
    """sin(k·x − speed·|k|·t) travelling along (0.6, 0.8), (1, 1, T, H, W)."""
    t, y, x = grid(frames, size, size)
    return torch.sin(k * (0.6 * x + 0.8 * y) - speed * k * t)


def fields_for_optics(w: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"w": w, "phi": torch.zeros_like(w)}


# Waves: optical wave, elastic displacement and velocity waves ------------------------------------


def test_optical_wave_vanishes_on_a_plane_wave():
    k = 2 * math.pi / 16
    exact = residual("optical", "wave", **fields_for_optics(plane_wave(k, SCALES.c)))
    violating = residual("optical", "wave", **fields_for_optics(plane_wave(k, 2 * SCALES.c)))
    assert_vanishes_on_solution(exact, violating)


def test_wave_residual_converges_at_second_order():
    def relative(k: float) -> float:
        w = plane_wave(k, SCALES.c, frames=9, size=48)
        return rms(residual("optical", "wave", **fields_for_optics(w))) / (SCALES.c * k) ** 2

    assert 3.5 < relative(2 * math.pi / 12) / relative(2 * math.pi / 24) < 4.5


def test_elastic_displacement_and_velocity_waves():
    k, c = 2 * math.pi / 16, SCALES.c
    t, y, x = grid(9, 40, 40)

    def wave_pair(speed: float) -> tuple[torch.Tensor, torch.Tensor]:
        phase = k * (0.6 * x + 0.8 * y) - speed * k * t
        u = torch.cat([0.7 * torch.sin(phase), -0.4 * torch.sin(phase)], dim=1)
        v = torch.cat(
            [-0.7 * speed * k * torch.cos(phase), 0.4 * speed * k * torch.cos(phase)], dim=1
        )
        return u, v

    u, v = wave_pair(c)
    u_bad, v_bad = wave_pair(0.5 * c)
    zeros3 = torch.zeros(1, 3, *u.shape[2:], dtype=DTYPE)
    good = category_residuals("elastic", {"u": u, "v": v, "strain": zeros3, "stress": zeros3})
    bad = category_residuals(
        "elastic", {"u": u_bad, "v": v_bad, "strain": zeros3, "stress": zeros3}
    )
    assert_vanishes_on_solution(good["displacement_wave"], bad["displacement_wave"])
    assert_vanishes_on_solution(good["velocity_wave"], bad["velocity_wave"])


# Transport: continuity (fluid, compressible), phase transport ----------------------------------


def advected_blob(velocity: tuple[float, float], frames: int = 9, size: int = 40) -> torch.Tensor:
    """1 + ½·exp(−|x − x0 − v t|² / (2 s²)), s = 4 cells: a density carried by a constant v."""
    t, y, x = grid(frames, size, size)
    vx, vy = velocity
    r2 = (x - 18 - vx * t) ** 2 + (y - 20 - vy * t) ** 2
    return 1 + 0.5 * torch.exp(-r2 / (2 * 4.0**2))


@pytest.mark.parametrize("category", ["fluid", "compressible_flow"])
def test_continuity_vanishes_for_density_advected_by_a_constant_velocity(category):
    velocity = (0.6, -0.4)
    rho = advected_blob(velocity)
    v = torch.cat([constant(velocity[0], 1, rho), constant(velocity[1], 1, rho)], dim=1)
    rho_backwards = advected_blob((-velocity[0], -velocity[1]))
    p = torch.zeros_like(rho)
    exact = category_residuals(category, {"rho": rho, "v": v, "p": p})["continuity"]
    violating = category_residuals(category, {"rho": rho_backwards, "v": v, "p": p})["continuity"]
    assert_vanishes_on_solution(exact, violating)


def test_continuity_conserves_a_steady_compressible_flux_exactly():
    """ρ·v_x = 1 at every node: the conservative stencil gives div(ρv) = 0 to round-off,
    although ρ and v vary by ±30 % (a non-conservative ρ div v + v·∇ρ would not)."""
    t, y, x = grid(5, 12, 32)
    speed = 1 + 0.3 * torch.sin(2 * math.pi * x / 16) + 0 * t + 0 * y
    v = torch.cat([speed, torch.zeros_like(speed)], dim=1)
    rho = 1 / speed
    r = category_residuals("compressible_flow", {"rho": rho, "v": v, "p": torch.zeros_like(rho)})
    assert float(r["continuity"].abs().max()) < 1e-12
    squeezed = category_residuals("compressible_flow", {"rho": rho * speed, "v": v, "p": rho})
    assert float(squeezed["continuity"].abs().max()) > 0.05


def test_phase_transport_vanishes_for_an_advected_indicator():
    velocity = (0.5, 0.3)
    t, y, x = grid(9, 40, 40)

    def front(vx: float, vy: float) -> torch.Tensor:
        return torch.tanh((0.8 * (x - vx * t - 16) + 0.6 * (y - vy * t - 20)) / 4.0)

    v = torch.cat([constant(velocity[0], 1, t), constant(velocity[1], 1, t)], dim=1)
    fields = {"v": v, "T": torch.zeros_like(t), "rho": torch.ones_like(t)}
    exact = category_residuals("phase_change", {**fields, "phi": front(*velocity)})
    violating = category_residuals(
        "phase_change", {**fields, "phi": front(-velocity[0], -velocity[1])}
    )
    assert_vanishes_on_solution(exact["phase_transport"], violating["phase_transport"])


# Fluid momentum: the decaying Taylor-Green vortex -----------------------------------------------


def taylor_green(k: float, nu: float, pressure_sign: float = 1.0, frames: int = 9, size: int = 64):
    """v = (sin kx cos ky, −cos kx sin ky)·e^{−2νk²t},
    p = (ρ/4)(cos 2kx + cos 2ky)·e^{−4νk²t}, ρ = 1.
    """
    t, y, x = grid(frames, size, size)
    decay = torch.exp(-2 * nu * k * k * t)
    v = torch.cat(
        [torch.sin(k * x) * torch.cos(k * y) * decay, -torch.cos(k * x) * torch.sin(k * y) * decay],
        dim=1,
    )
    p = pressure_sign * 0.25 * (torch.cos(2 * k * x) + torch.cos(2 * k * y)) * decay**2
    return {"v": v, "p": p, "rho": torch.ones_like(t)}


def test_momentum_and_continuity_vanish_on_the_taylor_green_vortex():
    k = 2 * math.pi / 32
    exact = category_residuals("fluid", taylor_green(k, SCALES.nu))
    violating = category_residuals("fluid", taylor_green(k, SCALES.nu, pressure_sign=-1.0))
    assert_vanishes_on_solution(exact["momentum"], violating["momentum"])
    # ρ = 1 and div v = 0: the conservative continuity vanishes up to truncation of div v
    assert rms(exact["continuity"]) < TOLERANCE * k


def test_momentum_needs_the_viscous_term():
    """With ν = 1 the viscous force (νk² ≈ 0.04) dwarfs the truncation error (≈ 0.001)."""
    k, nu = 2 * math.pi / 32, 1.0
    exact = category_residuals("fluid", taylor_green(k, nu), nu=nu)["momentum"]
    inviscid = category_residuals("fluid", taylor_green(k, nu), nu=0.0)["momentum"]
    assert rms(exact) < TOLERANCE * rms(inviscid)


# Compressible: compression dynamics ---------------------------------------------------------------


def test_compression_vanishes_for_a_linear_acoustic_pair():
    k, omega, amplitude = 2 * math.pi / 16, 0.3, 0.5
    t, y, x = grid(9, 8, 40)
    phase = k * x - omega * t
    v = torch.cat([amplitude * torch.sin(phase), torch.zeros_like(phase)], dim=1)

    def fields(sign: float) -> dict[str, torch.Tensor]:
        p = sign * SCALES.K * amplitude * k / omega * torch.sin(phase)
        return {"v": v, "p": p, "rho": torch.ones_like(p)}

    exact = category_residuals("compressible_flow", fields(1.0))["compression"]
    violating = category_residuals("compressible_flow", fields(-1.0))["compression"]
    assert_vanishes_on_solution(exact, violating)


# Heat: heat kernel (v = 0 and advected), thermal-phase coupling ---------------------------------


def heat_kernel(
    alpha: float, velocity=(0.0, 0.0), width: float = 4.0, frames: int = 9, size: int = 48
) -> torch.Tensor:
    """The 2-D heat kernel of diffusivity α, of width ``width`` at t = 0, carried by a constant v.

    G = (100 / s²) · exp(−|x − x0 − v t|² / (2 s²)),  s² = width² + 2αt.
    """
    t, y, x = grid(frames, size, size)
    var = width**2 + 2 * alpha * t
    r2 = (x - size / 2 - velocity[0] * t) ** 2 + (y - size / 2 - velocity[1] * t) ** 2
    return 100.0 / var * torch.exp(-r2 / (2 * var))


def zero_velocity(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(1, 2, *like.shape[2:], dtype=DTYPE)


def test_heat_transport_vanishes_on_the_heat_kernel_at_rest():
    temperature = heat_kernel(SCALES.alpha)
    exact = residual("thermal", "heat_transport", T=temperature, v=zero_velocity(temperature))
    frozen = heat_kernel(0.0)  # the same initial blob, not diffusing
    violating = residual("thermal", "heat_transport", T=frozen, v=zero_velocity(frozen))
    assert_vanishes_on_solution(exact, violating)


def test_heat_transport_vanishes_on_an_advected_heat_kernel():
    velocity = (0.5, -0.3)
    temperature = heat_kernel(SCALES.alpha, velocity)
    v = torch.cat(
        [constant(velocity[0], 1, temperature), constant(velocity[1], 1, temperature)], dim=1
    )
    exact = residual("thermal", "heat_transport", T=temperature, v=v)
    static = residual("thermal", "heat_transport", T=heat_kernel(SCALES.alpha), v=v)
    assert_vanishes_on_solution(exact, static)


def test_heat_transport_converges_at_second_order():
    def relative(width: float) -> float:
        temperature = heat_kernel(SCALES.alpha, width=width, size=64)
        r = residual("thermal", "heat_transport", T=temperature, v=zero_velocity(temperature))
        return rms(r) / rms(SCALES.alpha * laplacian(temperature))

    # doubling the kernel's width is halving h relative to it
    assert 3.5 < relative(3.0) / relative(6.0) < 4.5


def test_thermal_phase_balances_latent_heat_against_phase_change():
    """φ = κ0·(x − v_x t) is advected by v, so ∂tφ = −κ0·v_x; T = G + L·κ0·v_x·t with G the
    advected heat kernel then satisfies ∂tT + v·∇T − αΔT + L·∂tφ = 0."""
    velocity, kappa0 = (0.5, 0.0), 0.2
    t, y, x = grid(9, 40, 40)
    g = heat_kernel(SCALES.alpha, velocity, size=40)
    phi = kappa0 * (x - velocity[0] * t - 20)
    v = torch.cat([constant(velocity[0], 1, t), constant(velocity[1], 1, t)], dim=1)
    source = SCALES.L * kappa0 * velocity[0] * t
    fields = {"v": v, "phi": phi, "rho": torch.ones_like(t)}
    exact = category_residuals("phase_change", {**fields, "T": g + source})
    violating = category_residuals("phase_change", {**fields, "T": g - source})
    assert_vanishes_on_solution(exact["thermal_phase"], violating["thermal_phase"])
    assert rms(exact["phase_transport"]) < 1e-12  # linear φ: exact


# Kinematic consistency: u = u0 + v t, deformation compatibility ---------------------------------


@pytest.mark.parametrize("category", ["rigid_body", "collision"])
def test_kinematic_term_vanishes_when_u_integrates_v(category):
    t, y, x = grid(7, 10, 12)
    u0 = torch.cat([torch.sin(0.3 * x), torch.cos(0.2 * y)], dim=1)
    a = torch.cat([0.5 + 0.1 * torch.sin(0.4 * y), -0.3 + 0 * x], dim=1)  # v = a + b t
    b = torch.cat([0.05 * torch.cos(0.3 * x), 0.02 + 0 * y], dim=1)
    v = a + b * t
    u = u0 + a * t + 0.5 * b * t * t  # quadratic in t: central ∂t is exact
    extra = {
        "strain": torch.zeros(1, 3, *t.shape[2:], dtype=DTYPE),
        "stress": torch.zeros(1, 3, *t.shape[2:], dtype=DTYPE),
        "J": torch.zeros(1, 2, *t.shape[2:], dtype=DTYPE),
    }
    exact = category_residuals(category, {"u": u, "v": v, **extra})["kinematic"]
    assert float(exact.abs().max()) < 1e-9
    too_far = category_residuals(category, {"u": u0 + 2 * a * t, "v": v, **extra})["kinematic"]
    assert rms(too_far) > 0.1


def test_compatibility_vanishes_when_strain_is_the_symmetric_gradient_of_u():
    t, y, x = grid(5, 40, 40)
    k = 2 * math.pi / 20
    u = torch.cat([torch.sin(k * x) * torch.cos(k * y), 0.5 * torch.sin(k * y) + 0 * x], dim=1) * (
        1 + 0.1 * t
    )
    grow = 1 + 0.1 * t
    strain = torch.cat(
        [
            k * torch.cos(k * x) * torch.cos(k * y) * grow,
            0.5 * k * torch.cos(k * y) * grow + 0 * x,
            0.5 * (-k * torch.sin(k * x) * torch.sin(k * y)) * grow,
        ],
        dim=1,
    )
    zeros2 = torch.zeros_like(u)
    good = category_residuals("elastic", {"u": u, "v": zeros2, "strain": strain, "stress": strain})
    swapped = strain[:, [1, 0, 2]]  # xx and yy exchanged
    bad = category_residuals("elastic", {"u": u, "v": zeros2, "strain": swapped, "stress": strain})
    assert_vanishes_on_solution(good["compatibility"], bad["compatibility"])
