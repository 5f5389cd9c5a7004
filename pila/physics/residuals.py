"""The 29 category-specific residual constraints (CSRC; pila-method.md §3, paper App. A.3).

Each residual is a pointwise tensor r_{k,j}(F_k) evaluated on the fields of one category
by the fixed finite differences of :mod:`pila.physics.ops`. Every residual lives on the
interior points of the space-time grid: (B, C_r, T−2, H−2, W−2), whatever derivatives it
uses, so one mask cropped with :func:`pila.physics.ops.crop_interior` weights every term.

Terms belong to four families (App. A.3): ``pde_anchor`` (balance and transport
relations), ``kinematic`` (definitional links between slots), ``closure`` (weakly
observed slots tied together up to latent scale) and ``stabilizer`` (priors against
spikes and unsupported side channels). Dropping a family is the paper's "w/o <family>"
ablation (Table 10).

The shared pass :func:`residuals_for_categories` evaluates the terms through one
:class:`FieldDerivatives`, which computes each derivative of each field at most once and
hands the same tensor to every term that asks for it; terms that are the same relation
in two categories (``kinematic``, ``stress_strain``, ``continuity`` and ``∇φ``) are
evaluated once. :func:`residuals_term_by_term` is the naive reference that evaluates each
term on its own, recomputing its derivatives. Training uses the pass through
:class:`pila.physics.fused.ResidualPass`, which can compile it (with the masked means of
Eq. 6 and the backward pass) into a few fused loops.

Fields are component tensors (B, K, T, H, W) keyed by bank slot name (``u, v, p, rho,
T, phi, strain, stress, J, w``; K from :data:`pila.physics.bank.SLOT_COMPONENTS`);
strain and stress are ``(xx, yy, xy)``; vector channel 0 is the x (W) component.

Shapes: B batch, K components, C_r residual channels, T latent frames, H, W latent
height and width; T', H', W' = T−2, H−2, W−2.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.afe import AFEConfig, pressure_identity
from pila.physics.bank import SLOT_COMPONENTS, SLOT_NAMES

FAMILIES: tuple[str, ...] = ("pde_anchor", "kinematic", "closure", "stabilizer")
"""The four residual families of App. A.3."""


READINGS: dict[str, tuple[str, ...]] = {
    "kinematic_reading": ("central", "midpoint"),
    "stress_reading": ("linear", "eq20"),
}
"""The residual readings the paper leaves open (``design/pila-method.md`` §7, R1 and R2): the
first choice of each is the default."""

PRESSURE_STD_EPS = AFEConfig.std_eps
"""ε_p of the ``"eq20"`` stress reading: AFE's ``std_eps`` (so the residual vanishes on AFE's
output)."""


@dataclass(frozen=True)
class ResidualScales:
    """Latent-scale normalisers of the residuals (not material parameters; fixed by default).

    Velocities are in latent cells per latent frame, the grid spacing is 1 in space and
    time. The paper names these scales latent-space normalisers (Sec. 3.2) but their
    values were lost in extraction: every default is our choice, chosen to keep the
    explicit updates the residuals encode stable on the unit grid. Each entry ends with
    its provenance mark.

    Args:
        c: wave speed of the elastic and optical wave anchors (cells/frame). [ours: 0.5
            is inside the 2-D CFL bound c ≤ 1/√2 of the 5-point Laplacian]
        nu: viscosity-like diffusion of the fluid momentum balance. [ours: 0.1, inside
            the explicit 2-D diffusion bound ν ≤ 1/4]
        alpha: thermal diffusivity of heat transport and thermal-phase coupling.
            [ours: 0.1, inside the explicit 2-D diffusion bound α ≤ 1/4]
        kappa: stiffness of the stress-strain closure σ_s − κ·ε and impulse scale of
            J − κ·∂t v (one κ, as in the residual table). [ours: 1.0, matching AFE's κ_ε]
        K: bulk-modulus-like coupling of compression dynamics ∂t p + K·div v. [ours: 1.0,
            unit coupling of proxies of unit scale]
        a: slope of the linear closures p ≈ a·ρ + b and ρ ≈ a·φ + b. [ours: 1.0, unit
            slope]
        b: offset of the same closures. [ours: 0.0, no offset]
        delta: gradient tolerance of the pressure and temperature regularity priors
            relu(|∇·| − δ), per cell. [ours: 0.1 per cell, a tenth of a unit-scale proxy]
        rho_min: density floor of the density-stability prior. [ours: equals AFE's floor,
            1e-3]
        L: latent-heat coupling of the thermal-phase anchor (+L·∂t φ). [ours: 1.0, unit
            coupling]
        kinematic_reading: reading R1 of the kinematic terms (``rigid_body``,
            ``collision``). ``"central"``: ∂t u − v with central differences, which on
            AFE's own output (u the midpoint integral of v̂, Eq. 19) equals ¼·∂tt v̂, a
            smoothness penalty. ``"midpoint"``: the residual of the midpoint rule,
            centred on the interior grid, ∂t u − v − ¼·∂tt v
            (= ½[(u_{t+1} − u_t − ½(v_t + v_{t+1})) + (u_t − u_{t−1} − ½(v_{t−1} + v_t))]),
            exactly 0 on AFE's output, so it constrains only what the experts change.
            [ours: "central" keeps the residual table's ∂t u − v; lab.md §4 measures both]
        stress_reading: reading R2 of the stress–strain closure (``rigid_body``,
            ``elastic``). ``"linear"``: σ_s − κ·ε, which on AFE's output equals −p̃·I.
            ``"eq20"``: σ_s + κ_p·p̃·I − κ·ε with p̃ = p / (std_sample(p) + ε_p), the closure
            Eq. 20 builds σ_s with (0 on AFE's output when κ, κ_p match AFE's κ_ε, κ_p).
            [ours: "linear" keeps the residual table's σ_s − κ·ε; lab.md §4 measures both]
        kappa_p: pressure scale κ_p of the ``"eq20"`` stress reading. [ours: 1.0, matching
            AFE's κ_p]
    """

    c: float = 0.5
    nu: float = 0.1
    alpha: float = 0.1
    kappa: float = 1.0
    K: float = 1.0
    a: float = 1.0
    b: float = 0.0
    delta: float = 0.1
    rho_min: float = 1e-3
    L: float = 1.0
    kinematic_reading: str = "central"
    stress_reading: str = "linear"
    kappa_p: float = 1.0

    def __post_init__(self) -> None:
        for name, choices in READINGS.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"ResidualScales.{name} must be one of {', '.join(map(repr, choices))}, got "
                    f"{getattr(self, name)!r}"
                )
        for field in dataclasses.fields(self):
            if field.name in READINGS:
                continue
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
                raise ValueError(
                    f"ResidualScales.{field.name} must be a finite number, got {value!r}"
                )
        if self.c <= 0:
            raise ValueError(f"ResidualScales.c (wave speed) must be positive, got {self.c}")
        if self.rho_min <= 0:
            raise ValueError(f"ResidualScales.rho_min must be positive, got {self.rho_min}")
        for name in ("nu", "alpha", "kappa", "K", "delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"ResidualScales.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_overrides(cls, **overrides: float) -> ResidualScales:
        """Defaults with some scales replaced; an unknown name is a ``ValueError``."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(
                f"unknown residual scale(s) {', '.join(unknown)}; valid scales are: "
                f"{', '.join(names)}"
            )
        return cls(**overrides)


class FieldDerivatives:
    """Finite differences of named fields on the interior grid, each computed at most once.

    Every accessor returns a tensor on the interior points (B, ·, T', H', W'). With
    ``cache=True`` a derivative is computed on first request and the same tensor is
    returned afterwards; with ``cache=False`` every request recomputes it (the naive
    baseline). ``evaluations`` counts the computations per key.

    Args:
        fields: slot name → component tensor (B, K, T, H, W).
        cache: share computed derivatives between requests.
    """

    def __init__(self, fields: Mapping[str, Tensor], *, cache: bool = True) -> None:
        self.fields = fields
        self.cache = cache
        self.evaluations: Counter[tuple[str, ...]] = Counter()
        self.requests: list[tuple[str, ...]] | None = None
        self._store: dict[tuple[str, ...], Tensor] = {}

    def _get(self, key: tuple[str, ...], compute: Callable[[], Tensor]) -> Tensor:
        if self.requests is not None:
            self.requests.append(key)
        if self.cache and key in self._store:
            return self._store[key]
        value = compute()
        self.evaluations[key] += 1
        if self.cache:
            self._store[key] = value
        return value

    def release(self, keys: Iterable[tuple[str, ...]]) -> None:
        """Forget cached derivatives that no later term needs (frees their memory)."""
        for key in keys:
            self._store.pop(key, None)

    def raw(self, name: str) -> Tensor:
        """The full field (B, K, T, H, W); a missing field is a ``ValueError`` naming it."""
        try:
            return self.fields[name]
        except KeyError:
            raise ValueError(
                f"field {name!r} is missing; fields given: {', '.join(self.fields) or 'none'}"
            ) from None

    def field(self, name: str) -> Tensor:
        """The field on the interior points (B, K, T', H', W') (a view, shared like a derivative:
        one crop per field also means one crop to differentiate in the backward pass)."""
        return self._get(("field", name), lambda: ops.crop_interior(self.raw(name)))

    def dx(self, name: str) -> Tensor:
        """∂x of the field (B, K, T', H', W')."""
        return self._get(("dx", name), lambda: ops.d_dx(self.raw(name)))

    def dy(self, name: str) -> Tensor:
        """∂y of the field (B, K, T', H', W')."""
        return self._get(("dy", name), lambda: ops.d_dy(self.raw(name)))

    def dt(self, name: str) -> Tensor:
        """∂t of the field (B, K, T', H', W')."""
        return self._get(("dt", name), lambda: ops.d_dt(self.raw(name)))

    def dtt(self, name: str) -> Tensor:
        """∂tt of the field (B, K, T', H', W')."""
        return self._get(("dtt", name), lambda: ops.d_dtt(self.raw(name)))

    def lap(self, name: str) -> Tensor:
        """Δ of the field (B, K, T', H', W')."""
        return self._get(("lap", name), lambda: ops.laplacian(self.raw(name)))

    def grad(self, name: str) -> Tensor:
        """∇ of the field (B, 2K, T', H', W'), channel 2k + j = ∂_j f_k."""
        return self._get(
            ("grad", name), lambda: ops.gradient_from_partials(self.dx(name), self.dy(name))
        )

    def grad_norm(self, name: str) -> Tensor:
        """|∇f| of a scalar field (B, 1, T', H', W') (zero gradient where ∇f = 0)."""
        return self._get(("grad_norm", name), lambda: ops.magnitude(self.grad(name)))

    def div(self, name: str) -> Tensor:
        """div of a 2-vector field (B, 1, T', H', W')."""
        return self._get(
            ("div", name), lambda: ops.divergence_from_partials(self.dx(name), self.dy(name))
        )

    def sym_grad(self, name: str) -> Tensor:
        """½(∇f + ∇fᵀ) of a 2-vector field as (xx, yy, xy) (B, 3, T', H', W')."""
        return self._get(
            ("sym_grad", name),
            lambda: ops.sym_gradient_from_partials(self.dx(name), self.dy(name)),
        )

    def grad_div(self, name: str) -> Tensor:
        """∇(div f) of a 2-vector field, compact stencils (B, 2, T', H', W')."""
        return self._get(("grad_div", name), lambda: ops.grad_div(self.raw(name)))

    def advect(self, name: str, by: str = "v") -> Tensor:
        """(v·∇)f with v = field ``by`` (B, K, T', H', W')."""
        return self._get(
            ("advect", name, by),
            lambda: ops.advection_from_partials(self.field(by), self.dx(name), self.dy(name)),
        )

    def flux_div(self, name: str, by: str = "v") -> Tensor:
        """Conservative div(f·v) with v = field ``by`` (B, K, T', H', W')."""
        return self._get(("flux_div", name, by), lambda: ops.div_flux(self.raw(name), self.raw(by)))


# Residual terms: one pure function per relation -------------------------------------------------

Residual = Callable[[FieldDerivatives, ResidualScales], Tensor]


def kinematic_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t u − v, or with ``kinematic_reading="midpoint"`` ∂t u − v − ¼·∂tt v.

    rigid_body, collision: (B, 2, T', H', W').
    """
    central = d.dt("u") - d.field("v")
    if s.kinematic_reading == "midpoint":
        return central - 0.25 * d.dtt("v")
    return central


def low_strain_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """ε (rigid_body low-strain prior): (B, 3, T', H', W')."""
    return d.field("strain")


def stress_strain_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """σ_s − κ·ε, or with ``stress_reading="eq20"`` σ_s + κ_p·p̃·I − κ·ε.

    rigid_body, elastic: (B, 3, T', H', W'). p̃ is normalised by the per-sample standard
    deviation of p over the whole grid, as AFE normalises it (Eq. 20).
    """
    linear = torch.sub(d.field("stress"), d.field("strain"), alpha=s.kappa)
    if s.stress_reading != "eq20":
        return linear
    # over the whole grid
    std = d.raw("p").std(dim=(1, 2, 3, 4), keepdim=True, correction=0)  # (B, 1, 1, 1, 1)
    return linear + s.kappa_p * pressure_identity(d.field("p"), std, PRESSURE_STD_EPS)


def rigid_motion_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """½(∇v + ∇vᵀ) (rigid_body): (B, 3, T', H', W')."""
    return d.sym_grad("v")


def displacement_wave_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂tt u − c²·Δu (elastic): (B, 2, T', H', W')."""
    return torch.sub(d.dtt("u"), d.lap("u"), alpha=s.c**2)


def velocity_wave_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂tt v − c²·Δv (elastic): (B, 2, T', H', W')."""
    return torch.sub(d.dtt("v"), d.lap("v"), alpha=s.c**2)


def compatibility_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """ε − ½(∇u + ∇uᵀ) (elastic): (B, 3, T', H', W')."""
    return d.field("strain") - d.sym_grad("u")


def continuity_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t ρ + div(ρ v) (fluid, compressible_flow): (B, 1, T', H', W')."""
    return d.dt("rho") + d.flux_div("rho", "v")


def momentum_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """ρ(∂t v + (v·∇)v) + ∇p − ν·Δv (fluid): (B, 2, T', H', W')."""
    inertia = d.field("rho") * (d.dt("v") + d.advect("v", "v"))  # (B, 2, T', H', W')
    return torch.sub(inertia + d.grad("p"), d.lap("v"), alpha=s.nu)


def pressure_regularity_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """relu(|∇p| − δ) (fluid): (B, 1, T', H', W')."""
    return torch.relu(d.grad_norm("p") - s.delta)


def density_stability_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """(relu(ρ_min − ρ), |∇ρ|) (fluid): (B, 2, T', H', W')."""
    floor = torch.relu(s.rho_min - d.field("rho"))  # (B, 1, T', H', W')
    return torch.cat([floor, d.grad_norm("rho")], dim=1)


def compression_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t p + K·div v (compressible_flow): (B, 1, T', H', W')."""
    return torch.add(d.dt("p"), d.div("v"), alpha=s.K)


def eos_closure_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """p − (a·ρ + b) (compressible_flow): (B, 1, T', H', W')."""
    return torch.sub(d.field("p"), d.field("rho"), alpha=s.a) - s.b


def gradient_regularity_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∇(div v) (compressible_flow): (B, 2, T', H', W')."""
    return d.grad_div("v")


def phase_transport_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t φ + v·∇φ (phase_change): (B, 1, T', H', W')."""
    return d.dt("phi") + d.advect("phi", "v")


def thermal_phase_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t T + v·∇T − α·ΔT + L·∂t φ (phase_change): (B, 1, T', H', W')."""
    transport = torch.sub(d.dt("T") + d.advect("T", "v"), d.lap("T"), alpha=s.alpha)
    return torch.add(transport, d.dt("phi"), alpha=s.L)


def density_phase_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """ρ − (a·φ + b) (phase_change): (B, 1, T', H', W')."""
    return torch.sub(d.field("rho"), d.field("phi"), alpha=s.a) - s.b


def support_regularity_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∇φ (phase_change support regularity, optical support smoothness): (B, 2, T', H', W')."""
    return d.grad("phi")


def impulse_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """J − κ·∂t v (collision): (B, 2, T', H', W')."""
    return torch.sub(d.field("J"), d.dt("v"), alpha=s.kappa)


def contact_compression_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """relu(−div u) − |J| (collision): (B, 1, T', H', W')."""
    return torch.relu(-d.div("u")) - ops.magnitude(d.field("J"))


def impulse_smoothness_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∇J (collision): (B, 4, T', H', W'), channel 2k + j = ∂_j J_k."""
    return d.grad("J")


def heat_transport_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂t T + div(T v) − α·ΔT (thermal): (B, 1, T', H', W')."""
    return torch.sub(d.dt("T") + d.flux_div("T", "v"), d.lap("T"), alpha=s.alpha)


def thermal_regularity_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """relu(|∇T| − δ) (thermal): (B, 1, T', H', W')."""
    return torch.relu(d.grad_norm("T") - s.delta)


def wave_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """∂tt w − c²·Δw (optical): (B, 1, T', H', W')."""
    return torch.sub(d.dtt("w"), d.lap("w"), alpha=s.c**2)


def support_gating_residual(d: FieldDerivatives, s: ResidualScales) -> Tensor:
    """(1 − sigmoid(φ))·w = sigmoid(−φ)·w (optical): (B, 1, T', H', W')."""
    return torch.sigmoid(-d.field("phi")) * d.field("w")


# The residual table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualTerm:
    """One row of the residual table: the relation, its family and the fields it reads."""

    fn: Residual
    family: str
    fields: tuple[str, ...]


_TABLE: dict[str, dict[str, ResidualTerm]] = {
    "rigid_body": {
        "kinematic": ResidualTerm(kinematic_residual, "kinematic", ("u", "v")),
        "low_strain": ResidualTerm(low_strain_residual, "stabilizer", ("strain",)),
        "stress_strain": ResidualTerm(stress_strain_residual, "closure", ("stress", "strain")),
        "rigid_motion": ResidualTerm(rigid_motion_residual, "stabilizer", ("v",)),
    },
    "elastic": {
        "displacement_wave": ResidualTerm(displacement_wave_residual, "pde_anchor", ("u",)),
        "velocity_wave": ResidualTerm(velocity_wave_residual, "pde_anchor", ("v",)),
        "compatibility": ResidualTerm(compatibility_residual, "kinematic", ("strain", "u")),
        "stress_strain": ResidualTerm(stress_strain_residual, "closure", ("stress", "strain")),
    },
    "fluid": {
        "continuity": ResidualTerm(continuity_residual, "pde_anchor", ("rho", "v")),
        "momentum": ResidualTerm(momentum_residual, "pde_anchor", ("rho", "v", "p")),
        "pressure_regularity": ResidualTerm(pressure_regularity_residual, "stabilizer", ("p",)),
        "density_stability": ResidualTerm(density_stability_residual, "stabilizer", ("rho",)),
    },
    "compressible_flow": {
        "continuity": ResidualTerm(continuity_residual, "pde_anchor", ("rho", "v")),
        "compression": ResidualTerm(compression_residual, "pde_anchor", ("p", "v")),
        "eos_closure": ResidualTerm(eos_closure_residual, "closure", ("p", "rho")),
        "gradient_regularity": ResidualTerm(gradient_regularity_residual, "stabilizer", ("v",)),
    },
    "phase_change": {
        "phase_transport": ResidualTerm(phase_transport_residual, "pde_anchor", ("phi", "v")),
        "thermal_phase": ResidualTerm(thermal_phase_residual, "pde_anchor", ("T", "v", "phi")),
        "density_phase": ResidualTerm(density_phase_residual, "closure", ("rho", "phi")),
        "support_regularity": ResidualTerm(support_regularity_residual, "stabilizer", ("phi",)),
    },
    "collision": {
        "kinematic": ResidualTerm(kinematic_residual, "kinematic", ("u", "v")),
        "impulse": ResidualTerm(impulse_residual, "closure", ("J", "v")),
        "contact_compression": ResidualTerm(contact_compression_residual, "closure", ("u", "J")),
        "impulse_smoothness": ResidualTerm(impulse_smoothness_residual, "stabilizer", ("J",)),
    },
    "thermal": {
        "heat_transport": ResidualTerm(heat_transport_residual, "pde_anchor", ("T", "v")),
        "thermal_regularity": ResidualTerm(thermal_regularity_residual, "stabilizer", ("T",)),
    },
    "optical": {
        "wave": ResidualTerm(wave_residual, "pde_anchor", ("w",)),
        "support_gating": ResidualTerm(support_gating_residual, "stabilizer", ("phi", "w")),
        "support_smoothness": ResidualTerm(support_regularity_residual, "stabilizer", ("phi",)),
    },
}
assert tuple(_TABLE) == CATEGORIES, "the residual table must follow pila.categories.CATEGORIES"

RESIDUAL_TERMS: dict[str, tuple[str, ...]] = {cat: tuple(terms) for cat, terms in _TABLE.items()}
"""Category → its residual term names, categories in ``CATEGORIES`` order (29 terms)."""

TERM_FAMILIES: dict[tuple[str, str], str] = {
    (cat, term): spec.family for cat, terms in _TABLE.items() for term, spec in terms.items()
}
"""(category, term) → family: ``pde_anchor``, ``kinematic``, ``closure`` or ``stabilizer``."""

TERM_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    (cat, term): spec.fields for cat, terms in _TABLE.items() for term, spec in terms.items()
}
"""(category, term) → the fields (bank slot names) its residual reads."""

TERM_KEYS: tuple[tuple[str, str], ...] = tuple(TERM_FAMILIES)
"""All 29 (category, term) pairs in table order."""


# Evaluation --------------------------------------------------------------------------------------


def _check_categories(categories: Iterable[str]) -> tuple[str, ...]:
    if isinstance(categories, str):
        categories = (categories,)
    categories = tuple(categories)
    for category in categories:
        if category not in _TABLE:
            raise ValueError(
                f"unknown physical category {category!r}; valid categories are: "
                f"{', '.join(CATEGORIES)}"
            )
    return categories


def _check_families(families: Iterable[str] | None) -> frozenset[str]:
    if families is None:
        return frozenset(FAMILIES)
    if isinstance(families, str):
        families = (families,)
    chosen = frozenset(families)
    unknown = sorted(chosen - set(FAMILIES))
    if unknown:
        raise ValueError(
            f"unknown residual family {', '.join(map(repr, unknown))}; valid families are: "
            f"{', '.join(FAMILIES)}"
        )
    return chosen


def _selected_terms(
    categories: tuple[str, ...], families: frozenset[str]
) -> list[tuple[str, str, ResidualTerm]]:
    return [
        (cat, term, spec)
        for cat in categories
        for term, spec in _TABLE[cat].items()
        if spec.family in families
    ]


def _check_fields(
    fields: Mapping[str, Tensor], selected: list[tuple[str, str, ResidualTerm]]
) -> None:
    shape: tuple[int, ...] | None = None
    shape_from = ""
    for cat, term, spec in selected:
        for name in spec.fields:
            if name not in fields:
                raise ValueError(
                    f"residual {cat}/{term} needs field {name!r}, which is missing; fields "
                    f"given: {', '.join(fields) or 'none'} (valid names: {', '.join(SLOT_NAMES)})"
                )
            tensor = fields[name]
            comps = SLOT_COMPONENTS[name]
            if not isinstance(tensor, Tensor) or tensor.ndim != 5 or tensor.shape[1] != comps:
                got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(
                    f"field {name!r} must be a (B, {comps}, T, H, W) tensor, got {got}"
                )
            grid = (tensor.shape[0], *tensor.shape[2:])
            if shape is None:
                shape, shape_from = grid, name
            elif grid != shape:
                raise ValueError(
                    f"field {name!r} has (B, T, H, W) = {grid} but field {shape_from!r} has {shape}"
                )
            frames, height, width = grid[1:]
            if min(frames, height, width) < 3:
                raise ValueError(
                    f"residuals use central differences on interior points (∂t and ∂tt need "
                    f"a frame before and after), so T, H and W must each be at least 3; field "
                    f"{name!r} has (T, H, W) = {(frames, height, width)}"
                )


def _as_scales(scales: ResidualScales | Mapping[str, float] | None) -> ResidualScales:
    if scales is None:
        return ResidualScales()
    if isinstance(scales, ResidualScales):
        return scales
    return ResidualScales.from_overrides(**dict(scales))


def check_residual_inputs(
    categories: Iterable[str],
    fields: Mapping[str, Tensor],
    families: Iterable[str] | None = None,
    scales: ResidualScales | Mapping[str, float] | None = None,
) -> ResidualScales:
    """Raise the ``ValueError`` :func:`residuals_for_categories` would raise for these inputs
    (unknown category, family or scale, missing or misshapen field, a grid too small),
    without computing anything; return the scales as a :class:`ResidualScales`."""
    selected = _selected_terms(_check_categories(categories), _check_families(families))
    _check_fields(fields, selected)
    return _as_scales(scales)


def residuals_for_categories(
    categories: Iterable[str],
    fields: Mapping[str, Tensor],
    scales: ResidualScales | Mapping[str, float] | None = None,
    families: Iterable[str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """All residuals of several categories in one shared pass over the same fields.

    Each derivative of each field is computed once (one :class:`FieldDerivatives`), a
    relation that appears in two categories is evaluated once (both entries hold the
    same tensor), and a derivative is dropped as soon as no later relation reads it, so
    the pass holds few intermediates at a time.

    Args:
        categories: category names (any subset of ``CATEGORIES``, in the order wanted).
        fields: slot name → component tensor (B, K, T, H, W); only the fields the
            selected terms read are required.
        scales: latent-scale normalisers (:class:`ResidualScales` or a mapping of
            overrides); ``None`` for the defaults.
        families: keep only terms of these families; ``None`` keeps all four.

    Returns:
        category → term → residual (B, C_r, T−2, H−2, W−2), terms in table order; a
        category whose terms were all dropped maps to an empty dict.
    """
    categories = _check_categories(categories)
    selected = _selected_terms(categories, _check_families(families))
    _check_fields(fields, selected)
    scales = _as_scales(scales)
    derivatives = FieldDerivatives(fields)
    relations = tuple(dict.fromkeys(spec.fn for _, _, spec in selected))
    evaluated: dict[Residual, Tensor] = {}
    # A compiled pass plans its own buffers: no release plan there (its probe is eager code).
    plan = ((),) * len(relations) if torch.compiler.is_compiling() else _release_plan(relations)
    for relation, done in zip(relations, plan, strict=True):
        evaluated[relation] = relation(derivatives, scales)
        derivatives.release(done)  # keep only what a later relation still reads
    out: dict[str, dict[str, Tensor]] = {cat: {} for cat in categories}
    for cat, term, spec in selected:
        out[cat][term] = evaluated[spec.fn]
    return out


_ReleasePlan = tuple[tuple[tuple[str, ...], ...], ...]
_RELEASE_PLANS: dict[tuple[Residual, ...], _ReleasePlan] = {}


def _release_plan(relations: tuple[Residual, ...]) -> _ReleasePlan:
    """For each relation in order, the derivatives last requested by it (cached)."""
    plan = _RELEASE_PLANS.get(relations)
    if plan is None:
        plan = _RELEASE_PLANS[relations] = _probe_release_plan(relations)
    return plan


def _probe_release_plan(relations: tuple[Residual, ...]) -> _ReleasePlan:
    """Evaluate the relations on a tiny probe grid and record which derivatives each asks for."""
    probe_fields = {
        name: torch.zeros(1, SLOT_COMPONENTS[name], 3, 3, 3) for name in SLOT_COMPONENTS
    }
    probe = FieldDerivatives(probe_fields)
    last_use: dict[tuple[str, ...], int] = {}
    for i, relation in enumerate(relations):
        probe.requests = []
        relation(probe, ResidualScales())
        last_use.update((key, i) for key in probe.requests)
    plan: list[list[tuple[str, ...]]] = [[] for _ in relations]
    for key, i in last_use.items():
        plan[i].append(key)
    return tuple(tuple(keys) for keys in plan)


def residuals_term_by_term(
    categories: Iterable[str],
    fields: Mapping[str, Tensor],
    scales: ResidualScales | Mapping[str, float] | None = None,
    families: Iterable[str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Naive reference of :func:`residuals_for_categories`: every term on its own.

    Each term gets a derivative object that caches nothing, so every derivative is
    recomputed for every term (and every use). Same arguments and result; used by the
    tests and the benchmark.
    """
    categories = _check_categories(categories)
    selected = _selected_terms(categories, _check_families(families))
    _check_fields(fields, selected)
    scales = _as_scales(scales)
    out: dict[str, dict[str, Tensor]] = {cat: {} for cat in categories}
    for cat, term, spec in selected:
        out[cat][term] = spec.fn(FieldDerivatives(fields, cache=False), scales)
    return out


def category_residuals(
    category: str, fields: Mapping[str, Tensor], **scales: float
) -> dict[str, Tensor]:
    """Pointwise residuals of one category (pila-method.md §3 table).

    Args:
        category: one of ``CATEGORIES``; anything else is a ``ValueError`` naming them.
        fields: slot name → component tensor (B, K, T, H, W) with K = 2, 2, 1, 1, 1, 1,
            3, 3, 2, 1 for u, v, p, rho, T, phi, strain, stress, J, w; a field the
            category needs but ``fields`` lacks is a ``ValueError`` naming it.
        **scales: overrides of :class:`ResidualScales` (``c``, ``nu``, ``alpha``,
            ``kappa``, ``K``, ``a``, ``b``, ``delta``, ``rho_min``, ``L``).

    Returns:
        term → residual (B, C_r, T−2, H−2, W−2), in ``RESIDUAL_TERMS[category]`` order.
    """
    if not isinstance(category, str) or category not in _TABLE:
        raise ValueError(
            f"unknown physical category {category!r}; valid categories are: {', '.join(CATEGORIES)}"
        )
    return residuals_for_categories((category,), fields, ResidualScales.from_overrides(**scales))[
        category
    ]
