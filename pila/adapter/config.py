"""``AdapterConfig``: everything needed to rebuild a PILA adapter, ablation switches included.

The config is a validated dataclass; :meth:`AdapterConfig.to_dict` /
:meth:`AdapterConfig.from_dict` round-trip it through the ``adapter_config.json`` that
:meth:`pila.adapter.PILAAdapter.save_pretrained` writes.

Defaults are the full model. Only some of its numbers survive in the paper's text (hidden
width 128, the 32-channel bank, top-4 routing, the motion-mask weights 0.55/0.25/0.20 and
floor 0.08); the rest were lost in extraction or never stated and are our choices. Every
field's ``Args`` entry ends with its provenance, a mark a test checks:

* ``[paper, <where>]``: the paper states the value (section, appendix, table or equation);
* ``[ours: <why>]``: our choice, with the reason.

Every variant of the paper's Tables 4, 9, 10, 11 and 14 is one or two fields here; the
table mapping paper rows to settings is ``docs/ablations.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pila.categories import CATEGORIES
from pila.physics.afe import AFEConfig
from pila.physics.bank import BANK_SLOTS
from pila.physics.loss import LEGACY_WEIGHTINGS, WEIGHTINGS, Weighting, canonical_weighting
from pila.physics.residuals import FAMILIES, ResidualScales

FORMAT_VERSION = 1
"""Version of the saved-adapter format (``adapter_config.json`` + ``model.safetensors``)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class AdapterConfig:
    """Sizes, routing constants, physics settings and ablation switches of the adapter.

    Each entry ends with its provenance: ``[paper, <where>]`` or ``[ours: <why>]``.

    Args:
        latent_channels: channels C of the backbone's latents, v_θ and Δv (16 for Wan).
            [paper, Sec. 4.2: the Wan 2.1 backbone's VAE has 16 latent channels]
        hidden: width of the physical feature h and of the decoder.
            [paper, App. B.2 and B.3: "adapter hidden width is 128"]
        text_dim: width D of the pooled text embedding (4096 for Wan's UMT5-XXL; the
            tiny preset's text width for tests). [paper, Sec. 4.2: the Wan 2.1
            backbone's UMT5-XXL encoder is 4096 wide]
        cond_dim: width of the condition vector c. [ours: equal to the hidden width]
        sigma_embed_dim: size of the sinusoidal embedding of the timestep 1000·σ.
            [ours: half of cond_dim; it embeds a single number]
        encoder_depth: residual conv blocks of the physical encoder E. [ours: small,
            keeping the adapter under 0.5 % of the backbone's parameters
            (``benchmarks/results/adapter_cost.md``: 0.366 %)]
        decoder_depth: residual conv blocks of the decoder D. [ours: as the encoder;
            Sec. 3.3 calls D "a small spatiotemporal projection network"]
        kernel_size: spatiotemporal kernel of every conv block (odd). [ours: the
            smallest odd kernel that mixes each cell with its neighbours in T, H and W]
        norm_groups: GroupNorm groups (divides ``hidden``). [ours: a common setting,
            16 channels per group at hidden 128]
        expert_width: hidden width of each operator expert. [ours: half the hidden
            width, within the same parameter budget as the encoder]
        expert_depth: spatiotemporal conv layers inside each expert. [ours: one layer,
            within the same parameter budget]
        expert_dispatch: ``"gather"`` (run each expert on the samples that selected it)
            or ``"batched"`` (all experts at once, then gather); equal outputs.
            [ours: the faster one at 81 × 480 × 832 (``benchmarks/adapter_cost.py``)]
        top_k: experts selected per sample, 0…8. [paper, Table 14 and Sec. 4.4: k = 4
            is the default (Table 14's 0.615 at k = 4 is the full model's average;
            "adds only 0.008 score … 2.81 s" is k = 4 → 8)]
        beta: label-prior strength β of Eq. (22). [ours: App. A.2 names β, its value was
            lost; a bias of 2 logits puts labeled categories first while the learned
            logits are small, and a strongly learned logit can still outvote a label]
        tau: routing temperature τ of Eq. (23). [ours: value lost; 1 leaves the
            softmax over the selected logits untempered]
        g_min: floor of the σ-gate g(σ) = g_min + (1 − g_min)(1 − σ)² (the quadratic
            gate with a floor is the paper's, App. B.2). [ours: the floor's value was
            lost; 0.1 keeps a tenth of the correction at pure noise]
        categories: expert/category order; must be ``pila.categories.CATEGORIES`` (kept in
            the saved config so a folder from another layout is refused).
            [paper, Table 1 and App. B.1: the eight categories in this order]
        bank_slots: the bank layout; must be ``pila.physics.bank.BANK_SLOTS`` (same
            reason). [paper, App. A.1 (Eq. 12): ten slots in this order, 32 channels,
            u, v and w 4 channels wide; the other widths are ours]
        afe: anchored-field-estimation settings, incl. the ``kinematic_anchor`` and
            ``staged_recovery`` ablation switches (Table 9); each field carries its own
            mark. [paper, App. A.1: the construction; values per field]
        residual_scales: latent-scale normalisers of the residuals; each field carries
            its own mark. [ours: the paper calls them latent-scale normalisers (Sec.
            3.2); their values were lost]
        loss_weighting: the reading of the adaptive weights λ_{k,j} (reading R6,
            :mod:`pila.physics.loss`): ``"inverse_running_mean"`` (λ = 1 / running mean
            of the term; ``"adaptive"`` is its earlier spelling), ``"frozen"`` (scales
            measured over the first ``loss_freeze_steps`` values, then fixed),
            ``"category_mean"`` (L_k the mean over its terms, not the sum),
            ``"grad_balanced"`` (stage C holds the physics gradient on the shared
            parameters at most ``loss_balance_ratio`` times the flow gradient) or
            ``"fixed"``. [paper, Sec. 3.2 (Eq. 6): λ_{k,j} is an adaptive weight; its
            form, the inverse running mean, is ours]
        loss_momentum: momentum of the adaptive weights' running means. [ours: an average
            over about 100 steps]
        loss_fixed_weights: optional ``"category/term"`` → fixed weight w_{k,j}
            (multiplies the adaptive weight; default 1 for every term). [ours: no term
            favoured]
        loss_freeze_steps: ``"frozen"``: the values of a term its scale averages before it
            is fixed. [ours: 100, the running mean's window]
        loss_balance_ratio: ``"grad_balanced"``: ρ, the most the gradient norm of
            λ_phys·L_res may be, as a multiple of the flow-matching one, on each shared
            parameter group (condition, encoder, anchor, AFE, router, experts). [ours: 1,
            the physics never pulls harder than the flow]
        loss_balance_smoothing: ``"grad_balanced"``: weight α of the newest measured
            scale in its moving average, s ← (1 − α)·s + α·ŝ; the scale used never exceeds
            the newest bound. [ours: α = 0.9, Wang et al. 2021's learning-rate annealing]
        mask_weights: motion-mask weights of |∂t v̂|, |∂t x̂0| and |∇v̂|.
            [paper, App. B.3: 55 %, 25 %, 20 %]
        mask_quantile: per-sample quantile the masks are divided by. [ours: App. B.3
            says "a per-sample quantile", its value was lost; 0.9 keeps the top tenth at 1]
        mask_floor: lower clamp of the masks. [paper, App. B.3: "a floor of 0.08"]
        plain_adapter: Table 4 "+ Plain Adapter": a generic conv adapter over
            [x̂0, c, v_θ] with no bank, experts or residuals, capacity-matched to the
            full adapter. Every other physics switch is then irrelevant.
            [paper, Table 4: the full model has the structured adapter]
        plain_hidden: width of the plain adapter; ``None`` picks the width whose parameter
            count is closest to the full adapter's. [ours: Table 4 says
            "capacity-matched"; we match parameter counts]
        use_afe: Table 4 "w/o AFE" when False: no field construction; the 32-channel
            scaffold of a generic branch is used directly as the bank (which branch:
            ``wo_afe_reading``). [paper, Table 4: full model]
        wo_afe_reading: reading R5 (``design/pila-method.md`` §7) of "w/o AFE", used when
            ``use_afe`` is False. ``"pathway"``: Table 12's wording, no physical-encoder
            pathway before AFE: E is replaced by a pointwise linear lift of x̂0, so the
            bank is a linear map of x̂0. ``"fields"``: the physical encoder E is kept and
            only the field construction is dropped (its scaffold is the bank).
            [ours: "pathway", measured 1.89 (1.58 to 2.20) lower in violation than
            "fields" in the lab, paired by seed, benchmarks/results/lab_table4.md]
        moe_operator: Table 4 "w/o MoE operator" when False: no expert updates
            (P̃ = P); routing still weights the residual objective.
            [paper, Table 4: full model]
        expert_routing: Table 4 "w/o Expert Routing" when False: no router; all experts
            are applied with equal weight 1/E (dense, non-routed experts).
            [paper, Table 4: full model]
        residual_constraints: Table 4 "w/o Residual Constraints" when False: the adapter
            computes no routed residual objective (stage C trains on the flow loss only).
            [paper, Table 4: full model]
        flow_correction: Table 4 "w/o Flow correction" when False: the decoder does not
            read the refined bank; Δv comes from c and v_θ alone, while the bank, router
            and experts are still trained by the residual objective.
            [paper, Table 4: full model]
        decoder_reads_feature: reading R7 (``docs/ablations.md``) of Eq. 9's input:
            True gives the decoder the physical feature h beside the refined bank P̃ (the
            paper calls P̃ the decoder's "primary" physical input, Sec. 3.3, which leaves
            room for a second one). [ours: False, P̃ alone, as Eq. 9 is written]
        residual_families: residual families kept in every residual evaluation (Table 10
            "w/o <family>" drops one; the empty tuple is "proxy-only fields").
            [paper, App. A.3 and Table 10: all four families]
        prompt_source: which prompt's pooled embedding feeds c: ``"refined"`` (the
            parser's physics-oriented rewrite) or ``"raw"`` (Table 4 "w/o Prompt Refine").
            Honoured by the data and generation side, which build ``pooled_text``.
            [paper, Sec. 3.1: the refined description is encoded into c]
        label_source: which labels feed y: ``"parsed"`` (annotations in training, the
            parser at inference) or ``"random"`` (Table 11 "w/ Random Label", see
            :func:`pila.adapter.condition.randomize_labels`). Honoured by the data and
            generation side, which build ``labels``. [paper, Table 11: "w/ LLM label"]
    """

    latent_channels: int = 16
    hidden: int = 128
    text_dim: int = 4096
    cond_dim: int = 128
    sigma_embed_dim: int = 64
    encoder_depth: int = 2
    decoder_depth: int = 2
    kernel_size: int = 3
    norm_groups: int = 8
    expert_width: int = 64
    expert_depth: int = 1
    expert_dispatch: Literal["gather", "batched"] = "gather"
    top_k: int = 4
    beta: float = 2.0
    tau: float = 1.0
    g_min: float = 0.1
    categories: tuple[str, ...] = CATEGORIES
    bank_slots: tuple[tuple[str, int], ...] = BANK_SLOTS
    afe: AFEConfig = field(default_factory=AFEConfig)
    residual_scales: ResidualScales = field(default_factory=ResidualScales)
    loss_weighting: Weighting = "inverse_running_mean"
    loss_momentum: float = 0.99
    loss_fixed_weights: dict[str, float] | None = None
    loss_freeze_steps: int = 100
    loss_balance_ratio: float = 1.0
    loss_balance_smoothing: float = 0.9
    mask_weights: tuple[float, float, float] = (0.55, 0.25, 0.20)
    mask_quantile: float = 0.9
    mask_floor: float = 0.08
    plain_adapter: bool = False
    plain_hidden: int | None = None
    use_afe: bool = True
    wo_afe_reading: Literal["fields", "pathway"] = "pathway"
    moe_operator: bool = True
    expert_routing: bool = True
    residual_constraints: bool = True
    flow_correction: bool = True
    decoder_reads_feature: bool = False
    residual_families: tuple[str, ...] = FAMILIES
    prompt_source: Literal["refined", "raw"] = "refined"
    label_source: Literal["parsed", "random"] = "parsed"

    def shape_differences(self, other: AdapterConfig) -> list[str]:
        """``"field: mine vs other"`` for each field that shapes the weights and differs."""
        fields = (
            "latent_channels", "hidden", "text_dim", "cond_dim", "expert_width", "plain_adapter",
            "decoder_reads_feature",
        )
        return [f"{f}: {getattr(other, f)} vs {getattr(self, f)}" for f in fields
                if getattr(other, f) != getattr(self, f)]  # fmt: skip

    def __post_init__(self) -> None:
        # Normalise containers coming from YAML/JSON (lists) before validating.
        self.categories = tuple(self.categories)
        self.bank_slots = tuple((str(name), int(width)) for name, width in self.bank_slots)
        self.mask_weights = tuple(float(w) for w in self.mask_weights)  # type: ignore[assignment]
        self.residual_families = tuple(self.residual_families)
        if isinstance(self.afe, dict):
            self.afe = AFEConfig(**self.afe)
        if isinstance(self.residual_scales, dict):
            self.residual_scales = ResidualScales.from_overrides(**self.residual_scales)
        self._validate()

    def _validate(self) -> None:
        positive = (
            "latent_channels", "hidden", "text_dim", "cond_dim", "sigma_embed_dim",
            "kernel_size", "norm_groups", "expert_width",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"AdapterConfig.{name} must be a positive integer, got {value!r}")
        for name in ("encoder_depth", "decoder_depth", "expert_depth"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(
                    f"AdapterConfig.{name} must be a non-negative integer, got {value!r}"
                )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"AdapterConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.sigma_embed_dim % 2:
            raise ValueError(
                f"AdapterConfig.sigma_embed_dim must be even, got {self.sigma_embed_dim}"
            )
        if self.hidden % self.norm_groups:
            raise ValueError(
                f"AdapterConfig.hidden={self.hidden} must be divisible by "
                f"norm_groups={self.norm_groups}"
            )
        if self.expert_dispatch not in ("gather", "batched"):
            raise ValueError(
                "AdapterConfig.expert_dispatch must be 'gather' or 'batched', got "
                f"{self.expert_dispatch!r}"
            )
        if self.categories != CATEGORIES:
            raise ValueError(
                f"AdapterConfig.categories {list(self.categories)} differ from this version's "
                f"category order {list(CATEGORIES)}; the adapter's experts follow that order"
            )
        if self.bank_slots != BANK_SLOTS:
            raise ValueError(
                f"AdapterConfig.bank_slots {list(self.bank_slots)} differ from this version's "
                f"bank layout {list(BANK_SLOTS)}"
            )
        if not _is_int(self.top_k) or not 0 <= self.top_k <= len(CATEGORIES):
            raise ValueError(
                f"AdapterConfig.top_k must be an integer in [0, {len(CATEGORIES)}], got "
                f"{self.top_k!r}"
            )
        if not self.beta >= 0:
            raise ValueError(
                f"AdapterConfig.beta (label-prior strength) must be >= 0, got {self.beta}"
            )
        if not self.tau > 0:
            raise ValueError(f"AdapterConfig.tau (routing temperature) must be > 0, got {self.tau}")
        if not 0.0 <= self.g_min <= 1.0:
            raise ValueError(f"AdapterConfig.g_min must lie in [0, 1], got {self.g_min}")
        if not isinstance(self.afe, AFEConfig):
            raise ValueError(
                f"AdapterConfig.afe must be an AFEConfig, got {type(self.afe).__name__}"
            )
        if not isinstance(self.residual_scales, ResidualScales):
            raise ValueError(
                "AdapterConfig.residual_scales must be a ResidualScales, got "
                f"{type(self.residual_scales).__name__}"
            )
        if self.wo_afe_reading not in ("fields", "pathway"):
            raise ValueError(
                "AdapterConfig.wo_afe_reading must be 'fields' or 'pathway', got "
                f"{self.wo_afe_reading!r}"
            )
        if LEGACY_WEIGHTINGS.get(self.loss_weighting, self.loss_weighting) not in WEIGHTINGS:
            raise ValueError(
                f"AdapterConfig.loss_weighting must be one of {', '.join(WEIGHTINGS)}, "
                f"got {self.loss_weighting!r}"
            )
        self.loss_weighting = canonical_weighting(self.loss_weighting)
        if not _is_int(self.loss_freeze_steps) or self.loss_freeze_steps < 1:
            raise ValueError(
                "AdapterConfig.loss_freeze_steps must be an integer >= 1, got "
                f"{self.loss_freeze_steps}"
            )
        if not self.loss_balance_ratio > 0:
            raise ValueError(
                f"AdapterConfig.loss_balance_ratio must be > 0, got {self.loss_balance_ratio}"
            )
        if not 0.0 < self.loss_balance_smoothing <= 1.0:
            raise ValueError(
                "AdapterConfig.loss_balance_smoothing must lie in (0, 1], got "
                f"{self.loss_balance_smoothing}"
            )
        if not 0.0 <= self.loss_momentum < 1.0:
            raise ValueError(
                f"AdapterConfig.loss_momentum must lie in [0, 1), got {self.loss_momentum}"
            )
        if len(self.mask_weights) != 3 or min(self.mask_weights) < 0 or sum(self.mask_weights) <= 0:
            raise ValueError(
                f"AdapterConfig.mask_weights must be three non-negative weights, not all zero, "
                f"got {self.mask_weights}"
            )
        if not 0.0 < self.mask_quantile <= 1.0:
            raise ValueError(
                f"AdapterConfig.mask_quantile must lie in (0, 1], got {self.mask_quantile}"
            )
        if not 0.0 < self.mask_floor <= 1.0:
            raise ValueError(f"AdapterConfig.mask_floor must lie in (0, 1], got {self.mask_floor}")
        if self.plain_hidden is not None and (
            not _is_int(self.plain_hidden) or self.plain_hidden < 1
        ):
            raise ValueError(
                "AdapterConfig.plain_hidden must be None or a positive integer, got "
                f"{self.plain_hidden!r}"
            )
        unknown = [f for f in self.residual_families if f not in FAMILIES]
        if unknown or len(set(self.residual_families)) != len(self.residual_families):
            raise ValueError(
                f"AdapterConfig.residual_families {list(self.residual_families)} must be distinct "
                f"names among {list(FAMILIES)}"
            )
        if self.prompt_source not in ("refined", "raw"):
            raise ValueError(
                "AdapterConfig.prompt_source must be 'refined' or 'raw', got "
                f"{self.prompt_source!r}"
            )
        if self.label_source not in ("parsed", "random"):
            raise ValueError(
                "AdapterConfig.label_source must be 'parsed' or 'random', got "
                f"{self.label_source!r}"
            )

    # ---------------------------------------------------------------- derived
    @property
    def num_experts(self) -> int:
        return len(self.categories)

    @property
    def bank_channels(self) -> int:
        return sum(width for _, width in self.bank_slots)

    @property
    def computes_residuals(self) -> bool:
        """Whether the adapter has a routed residual objective at all."""
        return not self.plain_adapter and self.residual_constraints and bool(self.residual_families)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested configs as dicts, tuples as lists)."""
        out = dataclasses.asdict(self)
        out["categories"] = list(self.categories)
        out["bank_slots"] = [[name, width] for name, width in self.bank_slots]
        out["mask_weights"] = list(self.mask_weights)
        out["residual_families"] = list(self.residual_families)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are a ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown AdapterConfig field(s) {', '.join(unknown)}; valid fields are: "
                f"{', '.join(sorted(names))}"
            )
        data = dict(data)
        if isinstance(data.get("afe"), dict):
            afe_names = {f.name for f in dataclasses.fields(AFEConfig)}
            bad = sorted(set(data["afe"]) - afe_names)
            if bad:
                raise ValueError(
                    f"unknown AFEConfig field(s) {', '.join(bad)}; valid fields are: "
                    f"{', '.join(sorted(afe_names))}"
                )
        return cls(**data)

    def replace(self, **changes: Any) -> AdapterConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
