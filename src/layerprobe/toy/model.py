"""The toy model's architecture (a small Qwen3) and function-preserving depth growth."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from layerprobe.toy.vocab import TOKEN_IDS_FOR_CONFIG, VOCAB_SIZE

if TYPE_CHECKING:
    from transformers import Qwen3Config, Qwen3ForCausalLM


def toy_config(n_layers: int, hidden: int = 128, heads: int = 4, mlp: int = 512) -> Qwen3Config:
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
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        tie_word_embeddings=True,
        attention_dropout=0.0,
        **TOKEN_IDS_FOR_CONFIG,
    )


@torch.no_grad()
def scale_residual_init(model: Qwen3ForCausalLM) -> Qwen3ForCausalLM:
    """Divide the initial weights of every layer's residual output projections (attention o_proj and
    MLP down_proj) by sqrt(2 L), so that the residual stream starts with the same scale at any depth
    L (GPT-2's depth-aware initialisation). Returns the model, changed in place."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    n = model.config.num_hidden_layers
    for layer in model.model.layers:
        assert isinstance(layer, Qwen3DecoderLayer)  # ModuleList items are typed as plain Modules
        layer.self_attn.o_proj.weight.div_((2 * n) ** 0.5)
        layer.mlp.down_proj.weight.div_((2 * n) ** 0.5)
    return model


def grow_depth(model: Qwen3ForCausalLM) -> Qwen3ForCausalLM:
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
