"""Shared fixtures: tiny random-initialised models of every supported family, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_FAMILIES, make_tiny_checkpoint, tiny_loaded

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; on a loaded 2-core machine two threads spend most of
    each tiny matmul waiting for each other (0.7 s instead of 5 ms per forward pass)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny(family: str):
    """A LoadedModel wrapping a tiny random model of `family` with a tiny tokenizer."""
    return tiny_loaded(family)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Qwen3 checkpoint (weights, config, tokenizer) usable as --model PATH."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen3", "qwen3")


@pytest.fixture(scope="session")
def smollm2():
    """The real pretrained smollm2-135m, loaded once per session."""
    from layerprobe import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")
