"""Every ablation switch of the paper's Tables 4, 9, 10, 11 and 14 does what its row says."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import make_batch, randomize_zero_layers, tiny_adapter, tiny_config

from pila.adapter import AdapterConfig, PILAAdapter, describe
from pila.adapter.adapter import plain_width_for
from pila.physics.bank import SLOT_NAMES
from pila.physics.residuals import TERM_FAMILIES


@pytest.mark.parametrize("config", [AdapterConfig(), tiny_config()], ids=["paper", "tiny"])
def test_plain_adapter_is_capacity_matched(config: AdapterConfig) -> None:
    full = describe(config)["total"]
    plain = describe(config.replace(plain_adapter=True))["total"]
    assert abs(plain - full) / full < 0.03, (plain, full)


def test_plain_adapter_has_no_bank_routing_or_residuals() -> None:
    adapter = tiny_adapter(plain_adapter=True).train()
    assert adapter.plain.width == plain_width_for(adapter.config)
    assert adapter.afe is None and adapter.router is None and adapter.experts is None
    assert adapter.residual_loss is None
    randomize_zero_layers(adapter)
    x_t, sigma, v_theta, cond = make_batch()
    out = adapter(x_t, sigma, v_theta, cond)
    assert out.bank is None and out.routing is None and out.residual_loss == 0
    assert out.correction.abs().sum() > 0  # still a trainable correction
    fixed = tiny_adapter(plain_adapter=True, plain_hidden=8)
    assert fixed.plain.width == 8


def test_without_flow_correction_the_bank_does_not_feed_delta_v() -> None:
    adapter = tiny_adapter(flow_correction=False).train()
    randomize_zero_layers(adapter)
    assert adapter.decoder.attribute is None
    batch = make_batch()
    first = adapter(*batch)
    with torch.no_grad():  # change every expert: the refined bank moves, Δv does not
        adapter.experts.out_weight.mul_(3.0)
    second = adapter(*batch)
    assert not torch.allclose(first.refined_bank, second.refined_bank)
    torch.testing.assert_close(first.delta_v, second.delta_v)
    assert first.correction.abs().sum() > 0 and first.residual_loss > 0  # bank still trained


@pytest.mark.parametrize("reads_feature", [False, True])
def test_r7_the_decoder_reads_the_physical_feature_beside_the_refined_bank(reads_feature) -> None:
    adapter = tiny_adapter(decoder_reads_feature=reads_feature).train()
    randomize_zero_layers(adapter)
    seen: dict[str, torch.Tensor] = {}
    adapter.encoder.register_forward_hook(lambda m, a, out: seen.__setitem__("h", out))
    adapter.decoder.register_forward_hook(lambda m, a, out: seen.__setitem__("attributes", a[0]))
    out = adapter(*make_batch())
    expected = [out.refined_bank] + ([seen["h"]] if reads_feature else [])
    torch.testing.assert_close(seen["attributes"], torch.cat(expected, dim=1))
    hidden = adapter.config.hidden if reads_feature else 0
    assert adapter.decoder.attribute.in_channels == adapter.config.bank_channels + hidden
    assert out.delta_v.abs().sum() > 0


def test_without_afe_fields_reading_the_scaffold_is_the_bank() -> None:
    """R5's other reading: the encoder kept, its 32-channel scaffold used as the bank."""
    adapter = tiny_adapter(use_afe=False, wo_afe_reading="fields").eval()
    assert adapter.afe is None
    x_t, sigma, v_theta, cond = make_batch()
    enc = adapter.encode_bank(x_t, sigma, v_theta)
    assert torch.equal(enc.bank, enc.scaffold) and enc.active_slots == SLOT_NAMES
    out = adapter(x_t, sigma, v_theta, cond, residuals=True)
    assert out.residual_loss > 0


def test_without_afe_pathway_reading_the_bank_is_a_linear_map_of_x0() -> None:
    """R5, the default reading of Table 12's "w/o AFE" (no physical-encoder pathway).

    P is a pointwise affine map of x̂0.
    """
    adapter = tiny_adapter(use_afe=False).eval()  # the default reading
    kept = tiny_adapter(use_afe=False, wo_afe_reading="fields").eval()
    assert sum(p.numel() for p in adapter.encoder.parameters()) < sum(
        p.numel() for p in kept.encoder.parameters()
    )
    x_t, sigma, v_theta, cond = make_batch()
    zero = torch.zeros_like(v_theta)
    with torch.no_grad():
        banks = [
            adapter.encode_bank(k * x_t, sigma, zero).bank for k in (0.0, 1.0, 2.0)
        ]  # x̂0 = k·x_t
        torch.testing.assert_close(banks[2] - banks[1], banks[1] - banks[0], atol=1e-5, rtol=1e-4)
        moved = x_t.clone()
        moved[..., 0, 0] += 1.0  # one latent cell: a pointwise map changes that cell only
        delta = adapter.encode_bank(moved, sigma, zero).bank - banks[1]
    assert delta[..., 0, 0].abs().sum() > 0 and delta[..., 1:, 1:].abs().max() < 1e-6
    out = adapter.train()(x_t, sigma, v_theta, cond, residuals=True)
    assert out.residual_loss > 0
    with pytest.raises(ValueError, match="wo_afe_reading"):
        tiny_config(wo_afe_reading="encoder")


def test_without_moe_operator_the_bank_is_not_refined() -> None:
    adapter = tiny_adapter(moe_operator=False).train()
    randomize_zero_layers(adapter)
    out = adapter(*make_batch())
    assert adapter.experts is None and out.expert_updates is None
    assert torch.equal(out.refined_bank, out.bank)
    assert out.residual_loss > 0  # residuals act on P itself, weighted by the routing


def test_without_residual_constraints_no_residual_is_computed() -> None:
    adapter = tiny_adapter(residual_constraints=False).train()
    out = adapter(*make_batch())
    assert out.residual_loss == 0 and not out.per_term and out.mask is None
    assert adapter.residual_loss is not None  # kept for stage B's field recovery


def test_without_expert_routing_every_expert_is_used_equally() -> None:
    adapter = tiny_adapter(expert_routing=False).train()
    randomize_zero_layers(adapter)
    out = adapter(*make_batch())
    assert adapter.router is None
    assert out.routing.indices.tolist() == [list(range(8))] * 2
    torch.testing.assert_close(out.routing.weights, torch.full((2, 8), 1 / 8))
    # label-consistent experts are exactly the labelled ones
    assert torch.equal(out.expert_active, make_batch()[3].labels > 0)


def test_afe_switches_reach_the_estimator() -> None:
    cfg = tiny_config()
    no_anchor = PILAAdapter(cfg.replace(afe=cfg.afe.__class__(kinematic_anchor=False)))
    assert no_anchor.afe.anchor_head is None and not no_anchor.parameter_groups()["anchor"]
    no_stages = PILAAdapter(cfg.replace(afe=cfg.afe.__class__(staged_recovery=False)))
    x_t, sigma, v_theta, _ = make_batch()
    assert no_stages.encode_bank(x_t, sigma, v_theta, phase=0).active_slots == SLOT_NAMES


@pytest.mark.parametrize("dropped", ["pde_anchor", "closure", "kinematic", "stabilizer"])
def test_without_a_residual_family_its_terms_vanish(dropped: str) -> None:
    kept = tuple(f for f in ("pde_anchor", "kinematic", "closure", "stabilizer") if f != dropped)
    adapter = tiny_adapter(residual_families=kept, top_k=8).train()
    labels = torch.ones(2, 8)
    out = adapter(*make_batch(labels=labels))
    families = {TERM_FAMILIES[key] for key in out.per_term}
    assert families == set(kept)


def test_proxy_only_fields_compute_no_residuals() -> None:
    adapter = tiny_adapter(residual_families=()).train()
    assert not adapter.config.computes_residuals
    out = adapter(*make_batch())
    assert out.residual_loss == 0 and not out.per_term
    assert out.bank is not None  # the field proxies are still built


def test_data_side_switches_are_recorded_in_the_config() -> None:
    cfg = tiny_config(prompt_source="raw", label_source="random")
    again = AdapterConfig.from_dict(cfg.to_dict())
    assert (again.prompt_source, again.label_source) == ("raw", "random")
