"""Builders for tiny offline models and tokenizers used across the tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from layerprobe.models.arch import arch_spec_for
from layerprobe.models.loaded import LoadedModel

TINY_FAMILIES = ["qwen2", "qwen3", "llama", "mistral"]
VOCAB = 128
N_LAYERS = 6

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<think>", "</think>"] + [f"w{i}" for i in range(VOCAB - 6)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over WORDS (ids 0..127)."""
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_config(family: str):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    if family == "qwen2":
        # sliding-window layers from index 3 on: exercises slicing of config.layer_types
        return Qwen2Config(**common, use_sliding_window=True, sliding_window=8, max_window_layers=3)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32)
    # random init is near-uniform; scale the embeddings up so greedy decoding is not a flat tie-break
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    return model.eval()


def tiny_loaded(family: str, seed: int = 0) -> LoadedModel:
    model = tiny_model(family, seed)
    return LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        name=f"tiny-{family}",
        source=f"from_config:{family}",
        source_kind="config",
        family=family,
        arch=arch_spec_for(family),
        layer_map=list(range(N_LAYERS)),
        n_layers_original=N_LAYERS,
    )


def make_tiny_checkpoint(path: Path, family: str, seed: int = 0) -> Path:
    model = tiny_model(family, seed)
    model.save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return path
