"""Fixtures of the data tests: a WISA-format dataset generated once per session."""

from __future__ import annotations

import pytest
import torch
from data_helpers import build_wisa_fixture, prepare_config

from pila.datamodules.prepare import prepare_cache


@pytest.fixture(scope="session")
def wisa_fixture(tmp_path_factory):
    """The dataset of :func:`data_helpers.build_wisa_fixture` (treat as read-only)."""
    return build_wisa_fixture(tmp_path_factory.mktemp("wisa"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, wisa_fixture, tiny_backbone):
    """(config, summary, cache folder) of a cache built from ``wisa_fixture`` with two
    decoding workers (treat as read-only; copy it to modify it)."""
    out = tmp_path_factory.mktemp("cache")
    config = prepare_config(wisa_fixture, out, workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread
    try:
        summary = prepare_cache(config, backbone=tiny_backbone)
    finally:
        torch.set_num_threads(threads)
    return config, summary, out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny VAE's convolutions are too small to gain from threads, and on a busy
    2-core machine two spinning threads per process run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
