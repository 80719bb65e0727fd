"""The toy model's architecture (a small Qwen3) and function-preserving depth growth."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from layerprobe.toy.vocab import TOKEN_IDS_FOR_CONFIG, VOCAB_SIZE


def toy_config(n_layers: int, hidden: int = 128, heads: int = 4, mlp: int = 512):
    """A Qwen3 config for the toy: tied embeddings, 96-token vocabulary, short context."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        **TOKEN_IDS_FOR_CONFIG,
    )


def grow_depth(model: nn.Module) -> nn.Module:
    """A model twice as deep computing the same function: layer i is followed by a copy of itself
    whose attention and MLP output projections are zero, so the copy starts as the identity.
    """
    from transformers import Qwen3ForCausalLM

    cfg = copy.deepcopy(model.config)
    n = cfg.num_hidden_layers
    cfg.num_hidden_layers = 2 * n
    cfg.layer_types = ["full_attention"] * (2 * n)
    grown = Qwen3ForCausalLM(cfg)
    src = model.state_dict()
    dst = {}
    for key, value in src.items():
        if not key.startswith("model.layers."):
            dst[key] = value.clone()
            continue
        _, _, idx, rest = key.split(".", 3)
        i = int(idx)
        dst[f"model.layers.{2 * i}.{rest}"] = value.clone()
        copy_val = value.clone()
        if rest in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            copy_val.zero_()
        dst[f"model.layers.{2 * i + 1}.{rest}"] = copy_val
    grown.load_state_dict(dst, strict=True)
    grown.tie_weights()
    return grown


@torch.no_grad()
def same_function(a: nn.Module, b: nn.Module, ids: torch.Tensor) -> bool:
    return torch.allclose(a(ids).logits, b(ids).logits, atol=1e-4, rtol=1e-4)
