"""Fixtures of the generation tests: small tiny-preset settings and PILA adapters for it."""

from __future__ import annotations

import pytest
import torch

from pila.backbone.tiny import TINY_TEXT_DIM

SMALL = {
    "num_frames": 5,
    "height": 16,
    "width": 16,
    "num_inference_steps": 4,
    "max_sequence_length": 16,
}
"""A few-hundred-millisecond generation on the tiny preset (4 steps: t = 999, 900, 750, 500)."""


def adapter_config(text_dim: int = TINY_TEXT_DIM, **overrides):
    from pila.adapter import AdapterConfig

    sizes = {"hidden": 8, "cond_dim": 8, "sigma_embed_dim": 8, "norm_groups": 4, "expert_width": 4}
    return AdapterConfig(text_dim=text_dim, **{**sizes, **overrides})


def make_adapter(trained: bool = False, seed: int = 0, text_dim: int = TINY_TEXT_DIM, **overrides):
    """A PILA adapter for the tiny preset: fresh (exact identity) or with every weight random.

    ``trained=True`` fills the zero-initialised tensors (decoder head, expert outputs) with
    seeded noise, standing in for a trained adapter whose correction is not zero.
    """
    from pila.adapter import PILAAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = PILAAdapter(adapter_config(text_dim, **overrides))
        if trained:
            with torch.no_grad():
                for parameter in adapter.parameters():
                    if bool((parameter == 0).all()):
                        parameter.normal_(0.0, 0.5)
    return adapter.eval()


@pytest.fixture(scope="session")
def tiny_two_stage_dir(tmp_path_factory):
    """A Wan 2.2-style tiny pipeline (transformer_2, boundary_ratio 0.875) saved as a folder."""
    from pila.backbone import WanBackbone

    path = tmp_path_factory.mktemp("tiny_wan22")
    WanBackbone.tiny(seed=1, two_stage=True).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def trained_adapter_dir(tmp_path_factory):
    """A saved adapter with non-zero correction, matching the tiny preset."""
    path = tmp_path_factory.mktemp("adapter")
    make_adapter(trained=True, seed=3).save_pretrained(path)
    return path


@pytest.fixture
def small() -> dict:
    return dict(SMALL)


@pytest.fixture(scope="session")
def adapter_factory():
    return make_adapter
