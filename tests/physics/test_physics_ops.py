"""Finite-difference operators against analytic answers (float64), autograd, dtypes, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from physics_helpers import DTYPE, grid, interior, rms

from pila.physics import ops

SHAPE = (7, 9, 11)  # T, H, W


def quadratic(t, y, x, seed: int = 0):
    """A general quadratic in (t, y, x) with its exact first derivatives."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(10, generator=g, dtype=DTYPE)
    f = (
        c[0]
        + c[1] * x
        + c[2] * y
        + c[3] * t
        + c[4] * x * x
        + c[5] * y * y
        + c[6] * t * t
        + c[7] * x * y
        + c[8] * x * t
        + c[9] * y * t
    )
    fx = c[1] + 2 * c[4] * x + c[7] * y + c[8] * t
    fy = c[2] + 2 * c[5] * y + c[7] * x + c[9] * t
    ft = c[3] + 2 * c[6] * t + c[8] * x + c[9] * y
    return f, fx, fy, ft


def cubic(t, y, x):
    """A cubic in (t, y, x) with its exact second derivatives."""
    f = x**3 - 2 * y**3 + 0.5 * t**3 + x * x * y - 3 * x * y * y + t * t * x + 2 * t * x * y
    fxx = 6 * x + 2 * y + 0 * t
    fyy = -12 * y - 6 * x + 0 * t
    ftt = 3 * t + 2 * x
    fxy = 2 * x - 6 * y + 2 * t
    return f, fxx, fyy, ftt, fxy


def test_first_derivatives_are_exact_on_quadratics():
    t, y, x = grid(*SHAPE)
    f, fx, fy, ft = quadratic(t, y, x)
    torch.testing.assert_close(ops.d_dx(f), interior(fx), rtol=0, atol=1e-11)
    torch.testing.assert_close(ops.d_dy(f), interior(fy), rtol=0, atol=1e-11)
    torch.testing.assert_close(ops.d_dt(f), interior(ft), rtol=0, atol=1e-11)


def test_second_derivatives_are_exact_on_cubics():
    t, y, x = grid(*SHAPE)
    f, fxx, fyy, ftt, fxy = cubic(t, y, x)
    torch.testing.assert_close(ops.d_dxx(f), interior(fxx), rtol=0, atol=1e-9)
    torch.testing.assert_close(ops.d_dyy(f), interior(fyy), rtol=0, atol=1e-9)
    torch.testing.assert_close(ops.d_dtt(f), interior(ftt), rtol=0, atol=1e-9)
    torch.testing.assert_close(ops.d_dxy(f), interior(fxy), rtol=0, atol=1e-9)
    torch.testing.assert_close(ops.laplacian(f), interior(fxx + fyy), rtol=0, atol=1e-9)


def test_vector_operators_on_polynomial_fields():
    t, y, x = grid(*SHAPE)
    # v = (x² + y t, x y − t²): ∂x vx = 2x, ∂y vx = t, ∂x vy = y, ∂y vy = x
    v = torch.cat([x * x + y * t, x * y - t * t], dim=1)
    jac = torch.cat([2 * x, t, y, x], dim=1)  # (∂x vx, ∂y vx, ∂x vy, ∂y vy)
    torch.testing.assert_close(ops.gradient(v), interior(jac), rtol=0, atol=1e-10)
    torch.testing.assert_close(ops.jacobian(v), interior(jac), rtol=0, atol=1e-10)
    torch.testing.assert_close(ops.divergence(v), interior(3 * x), rtol=0, atol=1e-10)
    torch.testing.assert_close(ops.curl2d(v), interior(y - t), rtol=0, atol=1e-10)
    sym = torch.cat([2 * x, x, 0.5 * (t + y)], dim=1)
    torch.testing.assert_close(ops.sym_gradient(v), interior(sym), rtol=0, atol=1e-10)
    # ∇(div v) = ∇(3x) = (3, 0); compact stencils are exact on quadratics
    expected = torch.cat([3 + 0 * x, 0 * x], dim=1)
    torch.testing.assert_close(ops.grad_div(v), interior(expected), rtol=0, atol=1e-10)


def test_rotation_and_dilation_have_the_textbook_descriptors():
    t, y, x = grid(*SHAPE)
    rotation = torch.cat([-(y - 4), x - 5], dim=1) + 0 * t
    torch.testing.assert_close(ops.divergence(rotation), torch.zeros_like(interior(x)))
    torch.testing.assert_close(ops.curl2d(rotation), interior(2 + 0 * x))
    torch.testing.assert_close(ops.sym_gradient(rotation), torch.zeros(1, 3, 5, 7, 9, dtype=DTYPE))
    dilation = torch.cat([x, y], dim=1) + 0 * t
    torch.testing.assert_close(ops.divergence(dilation), interior(2 + 0 * x))
    torch.testing.assert_close(ops.curl2d(dilation), torch.zeros_like(interior(x)))


def test_advection_and_conservative_flux():
    t, y, x = grid(*SHAPE)
    f = 2 * x - 3 * y + t  # linear scalar
    v = torch.cat([0.5 + 0.1 * y, -0.25 + 0.2 * x], dim=1)
    # (v·∇)f = 2 v_x − 3 v_y
    expected_adv = 2 * (0.5 + 0.1 * y) - 3 * (-0.25 + 0.2 * x)
    torch.testing.assert_close(ops.advection(v, f), interior(expected_adv), rtol=0, atol=1e-10)
    # div(f v) = v·∇f + f div v, with div v = 0 here; f·v is quadratic, so exact
    torch.testing.assert_close(ops.div_flux(f, v), interior(expected_adv), rtol=0, atol=1e-10)
    # per channel of a multi-channel f
    two = torch.cat([f, 2 * f], dim=1)
    torch.testing.assert_close(ops.advection(v, two)[:, 1:], 2 * ops.advection(v, f))


@pytest.mark.parametrize(
    ("op", "axis", "order"),
    [
        (ops.d_dx, "x", 1),
        (ops.d_dy, "y", 1),
        (ops.d_dt, "t", 1),
        (ops.d_dxx, "x", 2),
        (ops.d_dyy, "y", 2),
        (ops.d_dtt, "t", 2),
    ],
)
def test_sinusoids_converge_at_second_order(op, axis, order):
    """Halving the wavenumber (= halving h relative to the wavelength) cuts the error 4×."""
    t, y, x = grid(9, 9, 9)
    coord = {"t": t, "y": y, "x": x}[axis]

    def error(k: float) -> float:
        f = torch.sin(k * coord + 0.3)
        exact = (
            k * torch.cos(k * coord + 0.3) if order == 1 else -k * k * torch.sin(k * coord + 0.3)
        )
        return rms(op(f) - interior(exact)) / rms(interior(exact))

    coarse, fine = error(0.8), error(0.4)
    # truncation: relative error k²/6 (first) or k²/12 (second derivative)
    assert coarse == pytest.approx(0.8**2 / (6 if order == 1 else 12), rel=0.1)
    assert 3.6 < coarse / fine < 4.4


def test_laplacian_of_a_plane_wave_converges_at_second_order():
    t, y, x = grid(3, 24, 24)

    def error(k: float) -> float:
        phase = k * (0.6 * x + 0.8 * y)
        return rms(ops.laplacian(torch.sin(phase)) + k * k * interior(torch.sin(phase))) / (k * k)

    assert 3.6 < error(0.6) / error(0.3) < 4.4


def test_slicing_stencils_match_a_conv3d_reference():
    f = torch.randn(2, 3, 5, 6, 7, dtype=DTYPE)
    kernel = torch.zeros(3, 3, 3, dtype=DTYPE)
    kernel[1, 1, 0] = kernel[1, 1, 2] = kernel[1, 0, 1] = kernel[1, 2, 1] = 1.0
    kernel[1, 1, 1] = -4.0
    weight = kernel.expand(3, 1, 3, 3, 3)
    torch.testing.assert_close(ops.laplacian(f), F.conv3d(f, weight, groups=3))
    dx = torch.zeros(3, 3, 3, dtype=DTYPE)
    dx[1, 1, 2], dx[1, 1, 0] = 0.5, -0.5
    torch.testing.assert_close(ops.d_dx(f), F.conv3d(f, dx.expand(3, 1, 3, 3, 3), groups=3))


def test_same_boundary_keeps_the_shape_and_is_exact_for_linear_fields():
    t, y, x = grid(4, 5, 6)
    f = 1.5 * x - 2 * y + 0.5 * t + 3
    assert ops.d_dx(f, boundary="same").shape == f.shape
    torch.testing.assert_close(ops.d_dx(f, boundary="same"), torch.full_like(f, 1.5))
    torch.testing.assert_close(ops.d_dy(f, boundary="same"), torch.full_like(f, -2.0))
    torch.testing.assert_close(ops.d_dt(f, boundary="same"), torch.full_like(f, 0.5))
    torch.testing.assert_close(ops.laplacian(f, boundary="same"), torch.zeros_like(f))
    # interior points of "same" agree with "interior"; edges are one-sided first-order
    g = x * x
    same = ops.d_dx(g, boundary="same")
    torch.testing.assert_close(interior(same), ops.d_dx(g))
    torch.testing.assert_close(same[..., 0], (g[..., 1] - g[..., 0]))
    torch.testing.assert_close(same[..., -1], (g[..., -1] - g[..., -2]))


def test_interior_outputs_share_one_crop():
    f = torch.randn(2, 3, 5, 6, 7)
    v = torch.randn(2, 2, 5, 6, 7)
    for out in (
        ops.d_dx(f),
        ops.d_dt(f),
        ops.d_dtt(f),
        ops.laplacian(f),
        ops.crop_interior(f),
        ops.advection(v, f),
        ops.div_flux(f, v),
    ):
        assert out.shape == (2, 3, 3, 4, 5)
    assert ops.gradient(f).shape == (2, 6, 3, 4, 5)
    assert ops.sym_gradient(v).shape == (2, 3, 3, 4, 5)
    assert ops.divergence(v).shape == ops.curl2d(v).shape == (2, 1, 3, 4, 5)


OPERATORS = [
    ops.d_dx,
    ops.d_dy,
    ops.d_dt,
    ops.d_dtt,
    ops.d_dxy,
    ops.laplacian,
    ops.gradient,
    ops.divergence,
    ops.curl2d,
    ops.sym_gradient,
    ops.grad_div,
]


@pytest.mark.parametrize("boundary", ["interior", "same"])
@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.__name__)
def test_gradcheck(op, boundary):
    v = torch.randn(1, 2, 4, 4, 5, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: op(a, boundary=boundary), (v,))


def test_gradcheck_of_products_and_second_order():
    v = torch.randn(1, 2, 3, 4, 4, dtype=DTYPE, requires_grad=True)
    f = torch.randn(1, 1, 3, 4, 4, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(ops.advection, (v, f))
    assert torch.autograd.gradcheck(ops.div_flux, (f, v))
    assert torch.autograd.gradgradcheck(ops.laplacian, (f,))


def test_magnitude_is_the_channel_norm_and_twice_differentiable():
    x = torch.randn(2, 3, 3, 4, 4, dtype=DTYPE, requires_grad=True)
    torch.testing.assert_close(ops.magnitude(x), torch.linalg.vector_norm(x, dim=1, keepdim=True))
    assert torch.autograd.gradcheck(ops.magnitude, (x,))
    assert torch.autograd.gradgradcheck(ops.magnitude, (x,))


def test_magnitude_has_a_zero_gradient_at_zero():
    x = torch.zeros(1, 2, 3, 3, 3, requires_grad=True)
    ops.magnitude(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    y = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1, 1)
    assert float(ops.magnitude(y)) == 5.0


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_matches_float64(dtype, tol):
    t, y, x = grid(5, 8, 8)
    f = torch.sin(0.5 * x) * torch.cos(0.3 * y) + 0.2 * t
    reference = ops.laplacian(f) + ops.d_dt(f) + ops.d_dx(f)
    low = f.to(dtype)
    out = ops.laplacian(low) + ops.d_dt(low) + ops.d_dx(low)
    assert out.dtype == dtype
    assert float((out.double() - reference).abs().max()) < tol * (1 + float(reference.abs().max()))


def test_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match=r"at least 3 points along T, H and W.*\(2, 5, 5\)"):
        ops.d_dtt(torch.zeros(1, 1, 2, 5, 5))
    with pytest.raises(ValueError, match="at least 3"):
        ops.crop_interior(torch.zeros(1, 1, 5, 2, 5))
    with pytest.raises(ValueError, match="at least 2 points along the differentiated axis T"):
        ops.d_dt(torch.zeros(1, 1, 1, 5, 5), boundary="same")
    # "same" only needs the differentiated axis
    assert ops.d_dx(torch.zeros(1, 1, 1, 1, 2), boundary="same").shape == (1, 1, 1, 1, 2)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        ops.d_dx(torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="floating-point"):
        ops.d_dx(torch.zeros(1, 1, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown boundary"):
        ops.d_dx(torch.zeros(1, 1, 4, 4, 4), boundary="periodic")
    with pytest.raises(ValueError, match="2-vector"):
        ops.divergence(torch.zeros(1, 3, 4, 4, 4))


def test_plane_wave_discrete_dispersion_is_the_textbook_one():
    """Central ∂tt of sin(ωt) is −(2 sin(ω/2))²·sin(ωt): checks the 1/h² scaling of the stencil."""
    t, _, _ = grid(9, 3, 3)
    omega = 0.7
    f = torch.sin(omega * t)
    expected = -((2 * math.sin(omega / 2)) ** 2) * interior(f)
    torch.testing.assert_close(ops.d_dtt(f), expected)
