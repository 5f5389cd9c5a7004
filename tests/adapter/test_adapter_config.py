"""AdapterConfig: defaults of the paper, validation, JSON round trip, YAML construction."""

from __future__ import annotations

import json

import pytest
from jsonargparse import ArgumentParser

from pila.adapter import AdapterConfig, PILAAdapter
from pila.categories import CATEGORIES
from pila.physics.afe import AFEConfig
from pila.physics.bank import BANK_SLOTS
from pila.physics.residuals import FAMILIES, ResidualScales


def test_defaults_are_the_papers_run() -> None:
    cfg = AdapterConfig()
    assert (cfg.latent_channels, cfg.hidden, cfg.bank_channels, cfg.top_k) == (16, 128, 32, 4)
    assert (cfg.beta, cfg.tau, cfg.g_min) == (2.0, 1.0, 0.1)
    assert cfg.text_dim == 4096 and cfg.categories == CATEGORIES and cfg.bank_slots == BANK_SLOTS
    assert cfg.residual_families == FAMILIES and cfg.computes_residuals


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_k": 9}, "top_k"),
        ({"top_k": -1}, "top_k"),
        ({"tau": 0.0}, "tau"),
        ({"beta": -1.0}, "beta"),
        ({"g_min": 1.5}, "g_min"),
        ({"hidden": 20}, "norm_groups"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"hidden": 0}, "hidden"),
        ({"expert_depth": -1}, "expert_depth"),
        ({"expert_dispatch": "loop"}, "expert_dispatch"),
        ({"categories": tuple(reversed(CATEGORIES))}, "category order"),
        ({"bank_slots": BANK_SLOTS[:-1]}, "bank layout"),
        ({"residual_families": ("pde_anchor", "bogus")}, "residual_families"),
        ({"loss_weighting": "learned"}, "loss_weighting"),
        ({"loss_momentum": 1.0}, "loss_momentum"),
        ({"mask_quantile": 0.0}, "mask_quantile"),
        ({"mask_weights": (1.0, 2.0)}, "mask_weights"),
        ({"plain_hidden": 0}, "plain_hidden"),
        ({"prompt_source": "rewritten"}, "prompt_source"),
        ({"label_source": "noisy"}, "label_source"),
    ],
)
def test_bad_values_are_rejected_by_name(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**changes)


def test_json_round_trip_keeps_every_field() -> None:
    cfg = AdapterConfig(
        hidden=64,
        top_k=2,
        afe=AFEConfig(kinematic_anchor=False, staged_recovery=False),
        residual_scales=ResidualScales(c=0.3),
        residual_families=("closure", "kinematic"),
        loss_fixed_weights={"fluid/momentum": 2.0},
        label_source="random",
    )
    text = json.dumps(cfg.to_dict())
    again = AdapterConfig.from_dict(json.loads(text))
    assert again == cfg
    assert isinstance(again.afe, AFEConfig) and not again.afe.kinematic_anchor
    assert again.residual_scales.c == 0.3


def test_unknown_fields_are_named() -> None:
    data = AdapterConfig().to_dict()
    data["hiden"] = 64
    with pytest.raises(ValueError, match="hiden"):
        AdapterConfig.from_dict(data)
    data = AdapterConfig().to_dict()
    data["afe"]["anchor"] = True
    with pytest.raises(ValueError, match="AFEConfig field.*anchor"):
        AdapterConfig.from_dict(data)
    data = AdapterConfig().to_dict()
    data["residual_scales"]["speed"] = 1.0
    with pytest.raises(ValueError, match="speed"):
        AdapterConfig.from_dict(data)


def test_adapter_builds_from_lightning_style_yaml() -> None:
    parser = ArgumentParser()
    parser.add_argument("--adapter", type=PILAAdapter)
    yaml = """
adapter:
  class_path: pila.adapter.PILAAdapter
  init_args:
    config:
      hidden: 16
      text_dim: 32
      cond_dim: 16
      expert_width: 8
      top_k: 2
      residual_families: [pde_anchor, closure]
      afe:
        kinematic_anchor: false
"""
    adapter = parser.instantiate(parser.parse_string(yaml)).adapter
    assert isinstance(adapter, PILAAdapter)
    assert adapter.config.top_k == 2 and adapter.router.top_k == 2
    assert adapter.config.residual_families == ("pde_anchor", "closure")
    assert adapter.afe.anchor_head is None  # "w/o kinematic anchor" reached the AFE


def test_shape_differences_name_the_fields_that_shape_the_weights():
    mine = AdapterConfig()
    assert mine.shape_differences(AdapterConfig(hidden=64)) == ["hidden: 64 vs 128"]
    # a reading of the adaptive weights changes no tensor: a stage may switch it
    assert mine.shape_differences(AdapterConfig(loss_weighting="grad_balanced")) == []
