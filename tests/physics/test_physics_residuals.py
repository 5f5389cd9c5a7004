"""The residual library: table, shapes, closures and stabilisers, shared pass, errors."""

from __future__ import annotations

import pytest
import torch
from physics_helpers import DTYPE, constant, grid

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.bank import SLOT_COMPONENTS
from pila.physics.masks import RECIPE_SLOTS
from pila.physics.residuals import (
    RESIDUAL_TERMS,
    TERM_FAMILIES,
    TERM_FIELDS,
    ResidualScales,
    category_residuals,
    residuals_for_categories,
    residuals_term_by_term,
)

# The residual table of pila-method.md §3, transcribed independently of the code.
TABLE = {
    "rigid_body": {
        "kinematic": ("kinematic", 2),
        "low_strain": ("stabilizer", 3),
        "stress_strain": ("closure", 3),
        "rigid_motion": ("stabilizer", 3),
    },
    "elastic": {
        "displacement_wave": ("pde_anchor", 2),
        "velocity_wave": ("pde_anchor", 2),
        "compatibility": ("kinematic", 3),
        "stress_strain": ("closure", 3),
    },
    "fluid": {
        "continuity": ("pde_anchor", 1),
        "momentum": ("pde_anchor", 2),
        "pressure_regularity": ("stabilizer", 1),
        "density_stability": ("stabilizer", 2),
    },
    "compressible_flow": {
        "continuity": ("pde_anchor", 1),
        "compression": ("pde_anchor", 1),
        "eos_closure": ("closure", 1),
        "gradient_regularity": ("stabilizer", 2),
    },
    "phase_change": {
        "phase_transport": ("pde_anchor", 1),
        "thermal_phase": ("pde_anchor", 1),
        "density_phase": ("closure", 1),
        "support_regularity": ("stabilizer", 2),
    },
    "collision": {
        "kinematic": ("kinematic", 2),
        "impulse": ("closure", 2),
        "contact_compression": ("closure", 1),
        "impulse_smoothness": ("stabilizer", 4),
    },
    "thermal": {
        "heat_transport": ("pde_anchor", 1),
        "thermal_regularity": ("stabilizer", 1),
    },
    "optical": {
        "wave": ("pde_anchor", 1),
        "support_gating": ("stabilizer", 1),
        "support_smoothness": ("stabilizer", 2),
    },
}

B, T, H, W = 2, 5, 6, 7


def random_fields(seed: int = 0, dtype=torch.float32, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    fields = {
        n: torch.randn(B, k, T, H, W, generator=g, dtype=dtype) for n, k in SLOT_COMPONENTS.items()
    }
    fields["rho"] = fields["rho"].abs() + 0.1
    for f in fields.values():
        f.requires_grad_(requires_grad)
    return fields


# The table ---------------------------------------------------------------------------------------


def test_terms_and_families_are_the_method_table():
    assert tuple(RESIDUAL_TERMS) == CATEGORIES
    assert {c: tuple(t) for c, t in TABLE.items()} == RESIDUAL_TERMS
    assert sum(len(t) for t in RESIDUAL_TERMS.values()) == 29
    assert TERM_FAMILIES == {
        (c, t): fam for c, terms in TABLE.items() for t, (fam, _) in terms.items()
    }


def test_every_residual_has_its_channels_on_the_common_interior_crop():
    fields = random_fields()
    out = residuals_for_categories(CATEGORIES, fields)
    for category, terms in TABLE.items():
        assert tuple(out[category]) == tuple(terms)
        for term, (_, channels) in terms.items():
            assert out[category][term].shape == (B, channels, T - 2, H - 2, W - 2), (category, term)


def test_recipe_slots_are_exactly_the_fields_the_residuals_read():
    fields = random_fields()
    for category in CATEGORIES:
        needed = {
            name for (cat, _), names in TERM_FIELDS.items() if cat == category for name in names
        }
        assert needed == set(RECIPE_SLOTS[category]), category
        category_residuals(category, {name: fields[name] for name in needed})
        for missing in needed:
            partial = {name: fields[name] for name in needed - {missing}}
            with pytest.raises(ValueError, match=f"needs field '{missing}'"):
                category_residuals(category, partial)


# The shared pass ---------------------------------------------------------------------------------


def test_shared_pass_equals_term_by_term_evaluation():
    fields = random_fields(seed=3)
    shared = residuals_for_categories(CATEGORIES, fields)
    naive = residuals_term_by_term(CATEGORIES, fields)
    for category in CATEGORIES:
        for term in RESIDUAL_TERMS[category]:
            torch.testing.assert_close(shared[category][term], naive[category][term])
            torch.testing.assert_close(
                category_residuals(category, fields)[term], naive[category][term]
            )


def test_shared_pass_computes_each_derivative_of_each_field_once(monkeypatch):
    """Count stencil applications per (input tensor, stencil): at most one in the shared pass."""
    seen: dict[tuple[int, int], int] = {}
    alive = []  # keep inputs alive so that no id is reused within a count
    original = ops._stencil

    def counting(f, taps, *args, **kwargs):
        alive.append(f)
        key = (id(f), id(taps))
        seen[key] = seen.get(key, 0) + 1
        return original(f, taps, *args, **kwargs)

    monkeypatch.setattr(ops, "_stencil", counting)
    fields = random_fields()
    residuals_for_categories(CATEGORIES, fields)  # builds the release plan on a probe grid
    seen.clear()
    residuals_for_categories(CATEGORIES, fields)
    assert seen and max(seen.values()) == 1
    shared_total = sum(seen.values())
    seen.clear()
    residuals_term_by_term(CATEGORIES, fields)
    assert max(seen.values()) > 1  # the naive reference repeats derivatives
    assert sum(seen.values()) > shared_total


def test_a_relation_shared_by_two_categories_is_evaluated_once():
    out = residuals_for_categories(CATEGORIES, random_fields())
    assert out["rigid_body"]["kinematic"] is out["collision"]["kinematic"]
    assert out["fluid"]["continuity"] is out["compressible_flow"]["continuity"]
    assert out["phase_change"]["support_regularity"] is out["optical"]["support_smoothness"]


def test_families_drop_the_other_terms():
    fields = random_fields()
    for family in ("pde_anchor", "kinematic", "closure", "stabilizer"):
        out = residuals_for_categories(CATEGORIES, fields, families=(family,))
        kept = {(c, t) for c, terms in out.items() for t in terms}
        assert kept == {key for key, fam in TERM_FAMILIES.items() if fam == family}
    without_pde = residuals_for_categories(
        CATEGORIES, fields, families=("kinematic", "closure", "stabilizer")
    )
    assert (
        "momentum" not in without_pde["fluid"] and "eos_closure" in without_pde["compressible_flow"]
    )
    assert residuals_for_categories(("thermal",), fields, families=("closure",)) == {"thermal": {}}
    with pytest.raises(ValueError, match="unknown residual family 'pde'.*pde_anchor, kinematic"):
        residuals_for_categories(CATEGORIES, fields, families=("pde",))


def test_only_the_fields_of_the_selected_families_are_required():
    fields = random_fields()
    closure_fields = {k: fields[k] for k in ("stress", "strain")}
    out = residuals_for_categories(("rigid_body",), closure_fields, families=("closure",))
    assert list(out["rigid_body"]) == ["stress_strain"]
    with pytest.raises(ValueError, match="rigid_body/rigid_motion needs field 'v'"):
        residuals_for_categories(
            ("rigid_body",), closure_fields, families=("closure", "stabilizer")
        )


def test_residuals_are_differentiable():
    fields = random_fields(dtype=DTYPE, requires_grad=True)
    out = residuals_for_categories(CATEGORIES, fields)
    loss = sum(r.square().mean() for terms in out.values() for r in terms.values())
    loss.backward()
    for name, f in fields.items():
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0, name

    small = {
        n: torch.randn(1, k, 3, 4, 4, dtype=DTYPE, requires_grad=True)
        for n, k in SLOT_COMPONENTS.items()
    }
    names = ("u", "v", "strain", "stress")

    def elastic(*tensors):
        r = category_residuals("elastic", dict(zip(names, tensors, strict=True)))
        return tuple(r.values())

    assert torch.autograd.gradcheck(elastic, tuple(small[n] for n in names))


def test_gradients_are_finite_on_constant_fields():
    """Norms in the regularity priors must not produce NaN gradients where ∇ = 0."""
    like = torch.zeros(1, 1, 4, 5, 5, dtype=DTYPE)
    fields = {n: constant(0.5, k, like).requires_grad_() for n, k in SLOT_COMPONENTS.items()}
    out = residuals_for_categories(CATEGORIES, fields)
    sum(r.sum() for terms in out.values() for r in terms.values()).backward()
    for name, f in fields.items():
        assert torch.isfinite(f.grad).all(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_residuals_follow_float64(dtype):
    fields = random_fields(seed=5, dtype=DTYPE)
    reference = residuals_for_categories(CATEGORIES, fields)
    low = residuals_for_categories(CATEGORIES, {k: v.to(dtype) for k, v in fields.items()})
    tol = 1e-4 if dtype == torch.float32 else 0.1
    for category in CATEGORIES:
        for term, r in low[category].items():
            assert r.dtype == dtype
            scale = 1 + float(reference[category][term].abs().max())
            assert float((r.double() - reference[category][term]).abs().max()) < tol * scale, term


# Closures and stabilisers: zero on fields that satisfy them, positive otherwise ---------------


def test_closures_vanish_when_satisfied_and_not_otherwise():
    t, y, x = grid(5, 8, 8)
    s = ResidualScales(kappa=2.0, a=1.5, b=-0.25)
    scales = {"kappa": s.kappa, "a": s.a, "b": s.b}
    strain = torch.cat([torch.sin(0.3 * x), torch.cos(0.2 * y), 0.1 * x * y], dim=1) + 0 * t
    rho = 1 + 0.2 * torch.sin(0.4 * x + 0.1 * t)
    phi = torch.tanh(0.3 * (x - 4))

    def closure(category: str, term: str, **fields) -> float:
        return float(category_residuals(category, fields, **scales)[term].abs().max())

    for category in ("rigid_body", "elastic"):
        base = {
            "u": torch.zeros(1, 2, 5, 8, 8, dtype=DTYPE),
            "v": torch.zeros(1, 2, 5, 8, 8, dtype=DTYPE),
        }
        assert (
            closure(category, "stress_strain", strain=strain, stress=s.kappa * strain, **base)
            < 1e-12
        )
        assert closure(category, "stress_strain", strain=strain, stress=strain, **base) > 0.1
    v0 = torch.zeros(1, 2, 5, 8, 8, dtype=DTYPE)
    assert closure("compressible_flow", "eos_closure", p=s.a * rho + s.b, rho=rho, v=v0) < 1e-12
    assert closure("compressible_flow", "eos_closure", p=rho, rho=rho, v=v0) > 0.1
    temp = torch.zeros_like(rho)
    assert (
        closure("phase_change", "density_phase", rho=s.a * phi + s.b, phi=phi, v=v0, T=temp) < 1e-12
    )
    assert closure("phase_change", "density_phase", rho=phi, phi=phi, v=v0, T=temp) > 0.1


def test_impulse_closure():
    t, y, x = grid(6, 7, 7)
    v = torch.cat(
        [0.3 * t * t + x, -0.2 * t + y], dim=1
    )  # ∂t v = (0.6 t, −0.2), exact on quadratics
    dv = torch.cat([0.6 * t, -0.2 + 0 * t], dim=1)
    u = torch.zeros_like(v)
    good = category_residuals("collision", {"u": u, "v": v, "J": 1.5 * dv}, kappa=1.5)
    assert float(good["impulse"].abs().max()) < 1e-12
    idle = category_residuals("collision", {"u": u, "v": v, "J": torch.zeros_like(v)}, kappa=1.5)
    assert float(idle["impulse"].abs().min()) > 0.2


def test_contact_compression_matches_impulse_to_converging_displacement():
    t, y, x = grid(4, 7, 7)
    squeeze = torch.cat([-0.1 * x, -0.1 * y], dim=1) + 0 * t  # div u = −0.2
    impulse = torch.cat([constant(0.12, 1, t), constant(0.16, 1, t)], dim=1)  # |J| = 0.2
    v = torch.zeros_like(squeeze)
    r = category_residuals("collision", {"u": squeeze, "v": v, "J": impulse})["contact_compression"]
    assert float(r.abs().max()) < 1e-12
    no_impulse = category_residuals("collision", {"u": squeeze, "v": v, "J": 0 * impulse})
    torch.testing.assert_close(no_impulse["contact_compression"], torch.full_like(r, 0.2))
    expanding = category_residuals("collision", {"u": -squeeze, "v": v, "J": 0 * impulse})
    assert float(expanding["contact_compression"].abs().max()) < 1e-12  # relu: no compression


def test_stabilisers_vanish_on_constant_fields_and_grow_otherwise():
    like = torch.zeros(1, 1, 5, 8, 8, dtype=DTYPE)
    fields = {n: constant(0.7, k, like) for n, k in SLOT_COMPONENTS.items()}
    fields["strain"] = torch.zeros(1, 3, 5, 8, 8, dtype=DTYPE)
    out = residuals_for_categories(CATEGORIES, fields, families=("stabilizer",))
    for category, terms in out.items():
        for term, r in terms.items():
            if term == "support_gating":
                continue  # gating is about where w lives, tested below
            assert float(r.abs().max()) < 1e-12, (category, term)

    t, y, x = grid(5, 8, 8)
    ramp = 0.5 * x + 0 * t  # |∇| = 0.5 > δ
    varied = dict(fields)
    varied.update(
        strain=torch.cat([ramp, ramp, ramp], dim=1),
        p=ramp,
        T=ramp,
        phi=ramp,
        J=torch.cat([ramp, -ramp], dim=1),
        v=torch.cat([x * x, 0 * y], dim=1) + 0 * t,  # shearing, compressing, non-uniform div
    )
    out = residuals_for_categories(CATEGORIES, varied, families=("stabilizer",))
    for category, terms in out.items():
        for term, r in terms.items():
            if term in ("support_gating", "density_stability"):
                continue
            assert float(r.square().mean()) > 1e-3, (category, term)
    delta = ResidualScales().delta
    torch.testing.assert_close(
        out["fluid"]["pressure_regularity"],
        torch.full_like(out["fluid"]["pressure_regularity"], 0.5 - delta),
    )
    torch.testing.assert_close(
        out["compressible_flow"]["gradient_regularity"][:, 0],
        torch.full((1, 3, 6, 6), 2.0, dtype=DTYPE),
    )


def test_regularity_priors_tolerate_gradients_below_delta():
    t, y, x = grid(4, 6, 6)
    gentle = 0.05 * x + 0 * t  # |∇p| = 0.05 < δ = 0.1
    fields = {
        "p": gentle,
        "rho": torch.ones_like(gentle),
        "v": torch.zeros(1, 2, 4, 6, 6, dtype=DTYPE),
    }
    assert float(category_residuals("fluid", fields)["pressure_regularity"].abs().max()) == 0.0


def test_density_stability_floors_and_smooths_density():
    like = torch.zeros(1, 1, 4, 6, 6, dtype=DTYPE)
    v = torch.zeros(1, 2, 4, 6, 6, dtype=DTYPE)
    p = torch.zeros_like(like)
    low = category_residuals("fluid", {"rho": constant(1e-4, 1, like), "v": v, "p": p})[
        "density_stability"
    ]
    torch.testing.assert_close(low[:, 0], torch.full_like(low[:, 0], 1e-3 - 1e-4))
    torch.testing.assert_close(low[:, 1], torch.zeros_like(low[:, 1]))
    t, y, x = grid(4, 6, 6)
    slope = category_residuals("fluid", {"rho": 1 + 0.3 * x + 0.4 * y + 0 * t, "v": v, "p": p})
    torch.testing.assert_close(slope["density_stability"][:, 1], torch.full_like(low[:, 1], 0.5))
    torch.testing.assert_close(slope["density_stability"][:, 0], torch.zeros_like(low[:, 0]))


def test_rigid_motion_ignores_rotation_and_penalises_deformation():
    t, y, x = grid(4, 7, 7)
    rigid = torch.cat([-(y - 3) + 1.0, (x - 3) - 0.5], dim=1) + 0 * t
    zero3 = torch.zeros(1, 3, 4, 7, 7, dtype=DTYPE)
    fields = {"u": torch.zeros_like(rigid), "strain": zero3, "stress": zero3}
    r = category_residuals("rigid_body", {**fields, "v": rigid})["rigid_motion"]
    assert float(r.abs().max()) < 1e-12
    shear = torch.cat([y, 0 * x], dim=1) + 0 * t
    r = category_residuals("rigid_body", {**fields, "v": shear})["rigid_motion"]
    torch.testing.assert_close(r[:, 2], torch.full_like(r[:, 2], 0.5))


def test_support_gating_keeps_the_wave_inside_the_support():
    like = torch.zeros(1, 1, 4, 6, 6, dtype=DTYPE)
    w = constant(2.0, 1, like)
    inside = category_residuals("optical", {"w": w, "phi": constant(40.0, 1, like)})[
        "support_gating"
    ]
    outside = category_residuals("optical", {"w": w, "phi": constant(-40.0, 1, like)})[
        "support_gating"
    ]
    assert float(inside.abs().max()) < 1e-12
    torch.testing.assert_close(outside, torch.full_like(outside, 2.0))
    half = category_residuals("optical", {"w": w, "phi": 0 * like})["support_gating"]
    torch.testing.assert_close(half, torch.full_like(half, 1.0))


# Scales and errors -------------------------------------------------------------------------------


def test_scales_are_keyword_overrides():
    fields = random_fields(dtype=DTYPE)
    base = category_residuals("optical", fields)["wave"]
    faster = category_residuals("optical", fields, c=1.0)["wave"]
    lap = ops.laplacian(fields["w"])
    torch.testing.assert_close(base - faster, (1.0 - 0.25) * lap)
    with pytest.raises(ValueError, match="unknown residual scale.*speed.*valid scales are: c, nu"):
        category_residuals("optical", fields, speed=1.0)
    with pytest.raises(ValueError, match="ResidualScales.c"):
        category_residuals("optical", fields, c=0.0)
    with pytest.raises(ValueError, match="ResidualScales.alpha"):
        ResidualScales(alpha=-1.0)
    with pytest.raises(ValueError, match="finite"):
        ResidualScales(nu=float("nan"))
    shared = residuals_for_categories(("optical",), fields, scales={"c": 1.0})
    torch.testing.assert_close(shared["optical"]["wave"], faster)


def test_unknown_category_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown physical category 'plasma'.*rigid_body, elastic"):
        category_residuals("plasma", random_fields())
    with pytest.raises(ValueError, match="unknown physical category"):
        residuals_for_categories(("fluid", "gas"), random_fields())


def test_missing_field_is_named():
    fields = random_fields()
    del fields["rho"]
    with pytest.raises(ValueError, match=r"fluid/continuity needs field 'rho', which is missing"):
        category_residuals("fluid", fields)


def test_shapes_that_do_not_fit_say_what_is_needed():
    short = {n: torch.zeros(1, k, 2, 6, 6) for n, k in SLOT_COMPONENTS.items()}
    with pytest.raises(ValueError, match=r"T, H and W must each be at least 3.*\(2, 6, 6\)"):
        category_residuals("optical", short)
    wrong = random_fields()
    wrong["v"] = torch.zeros(B, 3, T, H, W)
    with pytest.raises(ValueError, match=r"field 'v' must be a \(B, 2, T, H, W\) tensor"):
        category_residuals("fluid", wrong)
    mismatched = random_fields()
    mismatched["p"] = torch.zeros(B, 1, T, H, W + 1)
    with pytest.raises(ValueError, match="field 'p' has"):
        category_residuals("fluid", mismatched)
