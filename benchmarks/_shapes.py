"""Models of a real shape with random weights, built from a config (no download): the study's
s1.1-7B (Qwen2.5-7B) and Qwen3-8B, or smollm2-135m's shape, at full or reduced depth. Cost and memory
per layer add up, so a 2-layer model of the real width shows what the full depth does per layer
(probe.costs has the formulas).

The tokenizer is the shipped toy's (always at hand, 96 tokens): the benchmarks feed token ids, and a
random model's generations are only timed, never read.
"""

from __future__ import annotations

from typing import Any

import torch

from layerprobe.probe.costs import SHAPES, ModelShape


def hf_config(shape: ModelShape, layers: int | None = None) -> Any:
    """A transformers config of `shape` (at `layers` decoder layers when given)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=layers or shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
    )
    if shape.name in ("s1.1-7b", "tiny"):
        return Qwen2Config(**common, rope_theta=1e6)
    if shape.name == "qwen3-8b":
        return Qwen3Config(**common, head_dim=shape.head_dim, rope_theta=1e6)
    if shape.name == "smollm2-135m":
        return LlamaConfig(**common, head_dim=shape.head_dim, rope_theta=1e5)
    raise ValueError(f"no config for shape {shape.name} (valid: s1.1-7b, qwen3-8b, smollm2-135m, tiny)")


def build(name: str, layers: int | None = None, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Any:
    """A LoadedModel of shape `name` with random weights (std 0.02, as the families initialise) at
    `layers` decoder layers (all when None), on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    from layerprobe.models.aliases import ALIASES, shipped_dir
    from layerprobe.models.arch import arch_spec_for
    from layerprobe.models.loaded import LoadedModel
    from layerprobe.models.loading import DTYPES, _load_tokenizer

    shape = SHAPES[name]
    config = hf_config(shape, layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    model.eval()
    n = int(config.num_hidden_layers)
    tokenizer = _load_tokenizer(str(shipped_dir(ALIASES["toy"])))
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=f"{name}-shape" + (f"-{n}L" if layers else ""),
        source=f"random weights, {name}'s shape",
        family=config.model_type,
        arch=arch_spec_for(config.model_type),
        layer_map=list(range(n)),
        n_layers_original=n,
        source_kind="local",
    )
    loaded.reasoning_format = "think-tags"
    return loaded


def load(name: str, layers: int | None, device: str, dtype: str) -> Any:
    """A shape (`name` in probe.costs.SHAPES other than the toy) with random weights, else the real
    model by alias or path (layers must then be None)."""
    if name in SHAPES and name != "toy" and (layers is not None or name not in ("smollm2-135m",)):
        return build(name, layers, device, dtype)
    if layers is not None:
        raise SystemExit(f"--layers needs a shape ({', '.join(n for n in SHAPES if n != 'toy')})")
    from layerprobe import load_model

    return load_model(name, device=device, dtype=dtype)
