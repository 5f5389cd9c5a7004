"""Shared fixtures: tiny backbones built in code, nothing downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_backbone():
    """The embedded tiny Wan 2.1-style backbone (one transformer), seed 0."""
    from pila.backbone import WanBackbone

    return WanBackbone.tiny(seed=0)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory, tiny_backbone):
    """The tiny backbone saved as a diffusers folder."""
    path = tmp_path_factory.mktemp("tiny_wan")
    tiny_backbone.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """Synthetic clips (one per category, 17 × 32 × 32) and their cache, as the tiny configs' data
    module writes them; shared read-only by the tests that run `pila fit` on the tiny preset."""
    from pila.datamodules import SyntheticPhysicsDataModule

    root = tmp_path_factory.mktemp("tiny_data")
    SyntheticPhysicsDataModule(**tiny_data_args(root)).prepare_data()
    return root


def tiny_data_args(root) -> dict:
    """Init args of the tiny configs' data module, shrunk for tests."""
    return {
        "root": str(root),
        "num_clips_per_category": 1,
        "batch_size": 2,
        "num_frames": 17,
        "height": 32,
        "width": 32,
        "max_sequence_length": 128,
    }
