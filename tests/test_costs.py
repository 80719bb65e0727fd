"""probe.costs against the real thing: parameter counts of the study's models built (on the meta device)
from their published configs, the KV cache a forward pass leaves, the bytes a probe file holds, and the
batch sizes analyze picks on a GPU of a given memory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from layerprobe.probe import costs


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _configs():
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    qwen25_7b = Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    )
    qwen3_8b = Qwen3Config(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
    )
    smollm2 = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    return {"s1.1-7b": qwen25_7b, "qwen3-8b": qwen3_8b, "smollm2-135m": smollm2}


@pytest.mark.parametrize("name", ["s1.1-7b", "qwen3-8b", "smollm2-135m"])
def test_parameter_counts_match_the_models(name: str) -> None:
    config = _configs()[name]
    model = _meta_model(config)
    n = sum(p.numel() for p in model.parameters())
    assert costs.SHAPES[name].params == n
    assert costs.shape_of(config, name) == costs.SHAPES[name]
    # the published sizes: 7.62 B (Qwen2.5-7B), 8.19 B (Qwen3-8B), 135 M
    assert round(n / 1e9, 2) == {"s1.1-7b": 7.62, "qwen3-8b": 8.19, "smollm2-135m": 0.13}[name]


def test_kv_cache_formula_matches_a_forward_pass() -> None:
    from transformers import AutoModelForCausalLM, DynamicCache, Qwen2Config

    from layerprobe.models.hooks import cache_kwarg

    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    cache = DynamicCache(config=config)
    with torch.inference_mode():
        model(input_ids=torch.randint(0, 300, (3, 37)), use_cache=True, **cache_kwarg(model, cache))
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == costs.kv_bytes(costs.shape_of(config), 37, 3, 4)


def test_stored_bytes_bound_a_real_probe_file(tmp_path) -> None:
    from layerprobe.probe.layer_files import TraceLayers, save_trace_layers

    T, L = 500, 7
    rng = np.random.default_rng(0)
    stats = rng.random((4, T, L)).astype(np.float32)
    tl = TraceLayers(
        key="k",
        layers=np.arange(L, dtype=np.int16),
        tokens=rng.integers(0, 1000, T).astype(np.int32),
        block_influence=stats[0],
        norm=stats[1] * 100,
        jsd=stats[2],
        entropy=stats[3],
        top1_agree=(stats[0] > 0.5).astype(np.float32),
        rank=rng.integers(0, 5000, (T, L)).astype(np.int32),
        lens="full",
        lens_every=1,
        lens_positions=np.arange(T, dtype=np.int32),
        n_layers_original=L,
    )
    size = save_trace_layers(tmp_path / "t.npz", tl).stat().st_size
    shape = costs.ModelShape("x", L, 8, 8, 1, 1, 8, 10, tied=True)
    # compressed random statistics come close to the uncompressed bound, never above it (plus the zip's headers)
    assert 0.5 * costs.stored_bytes(shape, T) < size < costs.stored_bytes(shape, T) + 4096


def test_max_batch_by_hand() -> None:
    """Qwen3-8B in bfloat16 on 80 GB, 32k-token traces: the KV cache is 2·36·8·128·2 = 147,456 bytes a
    position, about 5 GB a trace, so at most 10 traces fit beside the 16.4 GB of weights (10 % kept
    free) — batch 16 would need 93 GB. s1.1-7B (57,344 bytes a position) fits 16 at the same length."""
    q3, s1 = costs.SHAPES["qwen3-8b"], costs.SHAPES["s1.1-7b"]
    positions = 32768 + 64 + 1024
    per_trace = 147_456 * positions + positions * 6 * 36 * 4 + q3.vocab * 4
    probe = 1 * 37 * 4096 * 2  # per row: the last positions of every layer
    lens = (
        36 * q3.vocab * 6 + 2 * q3.vocab * 4
    )  # per row: the lens's bf16 and float32 logits, the final layer's distribution twice
    by_hand = int((0.9 * 80e9 - q3.params * 2) // (per_trace + probe + lens))
    assert by_hand == 10
    assert costs.max_batch(q3, positions, int(80e9), 2) == by_hand
    assert costs.generation_bytes(q3, positions, 16, 2) > 80e9
    assert costs.max_batch(s1, positions, int(80e9), 2) >= 16


def test_auto_batch_size_on_a_gpu_follows_the_memory(monkeypatch) -> None:
    from layerprobe.jobs.variants import auto_batch_size

    config = _configs()["qwen3-8b"]
    loaded = SimpleNamespace(source_kind="hub", model=SimpleNamespace(config=config), dtype=torch.bfloat16)
    gpu = SimpleNamespace(type="cuda")
    weights = costs.weights_bytes(costs.SHAPES["qwen3-8b"], 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(80e9) - weights, int(80e9)))
    assert auto_batch_size(loaded, gpu, 32768 + 64 + 1024) == 10
    assert auto_batch_size(loaded, gpu, 8192 + 64 + 1024) == 16  # the study's budgets: 16 fit
    assert auto_batch_size(loaded, SimpleNamespace(type="cpu"), 32768) == 4
