"""Layer surgery (docs/definitions.md#layer-indices-and-surgery) on tiny models of every family and on the real smollm2-135m."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from layerprobe import drop_layers, save_model
from layerprobe.errors import UserError

PROMPT = [[2, 10, 11, 12, 13, 14, 15, 16]]


def greedy(model, ids, n=24, use_cache=True):
    with torch.no_grad():
        out = model.generate(
            torch.tensor(ids),
            attention_mask=torch.ones(len(ids), len(ids[0]), dtype=torch.long),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )
    return out[:, len(ids[0]) :].tolist()


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits


def test_drop_layers_map_config_and_layer_idx(tiny):
    pruned = drop_layers(tiny, [1, 3])
    assert pruned.layer_map == [0, 2, 4, 5]
    assert pruned.dropped == [1, 3]
    assert pruned.model.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in pruned.layers] == [0, 1, 2, 3]
    # the input model is untouched
    assert tiny.model.config.num_hidden_layers == 6
    assert [layer.self_attn.layer_idx for layer in tiny.layers] == list(range(6))
    # kept layers share storage with the base model (no second copy of the weights)
    for j, orig in enumerate(pruned.layer_map):
        a = pruned.layers[j].self_attn.q_proj.weight
        b = tiny.layers[orig].self_attn.q_proj.weight
        assert a.data_ptr() == b.data_ptr()
    lt = getattr(tiny.model.config, "layer_types", None)
    if lt is not None:
        assert pruned.model.config.layer_types == [lt[i] for i in pruned.layer_map]


def test_qwen2_sliding_layer_types_are_sliced():
    from tests.helpers import tiny_loaded

    base = tiny_loaded("qwen2")
    assert base.model.config.layer_types[:3] == ["full_attention"] * 3
    assert base.model.config.layer_types[3:] == ["sliding_attention"] * 3
    pruned = drop_layers(base, [0, 4])
    assert pruned.model.config.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    assert [layer.self_attn.layer_type for layer in pruned.layers] == pruned.model.config.layer_types


def test_cached_generation_equals_uncached(tiny):
    pruned = drop_layers(tiny, [2, 3])
    with_cache = greedy(pruned.model, PROMPT, use_cache=True)
    without = greedy(pruned.model, PROMPT, use_cache=False)
    assert with_cache == without
    # and the base model still generates as before the surgery
    assert greedy(tiny.model, PROMPT) == greedy(tiny.model, PROMPT, use_cache=False)


def test_pruned_equals_independently_built_model(tiny):
    """The surgery result equals a fresh model of the smaller config loaded with the kept weights."""
    pruned = drop_layers(tiny, [0, 4])
    cfg = pruned.model.config
    ref = AutoModelForCausalLM.from_config(cfg).eval()
    sd = {}
    for key, value in tiny.model.state_dict().items():
        m = re.match(r"model\.layers\.(\d+)\.(.*)", key)
        if m is None:
            sd[key] = value
        elif int(m.group(1)) in pruned.layer_map:
            sd[f"model.layers.{pruned.layer_map.index(int(m.group(1)))}.{m.group(2)}"] = value
    ref.load_state_dict(sd, strict=True)
    torch.testing.assert_close(logits(pruned.model, PROMPT), logits(ref, PROMPT), rtol=0, atol=0)
    # and it differs from the base model (the layers really are gone)
    assert not torch.allclose(logits(pruned.model, PROMPT), logits(tiny.model, PROMPT))


def test_save_reload_identical(tiny, tmp_path):
    pruned = drop_layers(tiny, [1, 5])
    out = save_model(pruned, tmp_path / "pruned")
    info = json.loads((out / "layerprobe.json").read_text())
    assert info["schema_version"] == 2 and info["compression"] is None  # drop_layers alone records no size
    assert info["layer_map"] == [0, 2, 3, 4]
    assert info["dropped"] == [1, 5]
    assert info["n_layers_original"] == 6
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        layer_ids = {int(m.group(1)) for k in f.keys() if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    assert layer_ids == {0, 1, 2, 3}
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 4
    torch.testing.assert_close(logits(reloaded, PROMPT), logits(pruned.model, PROMPT), rtol=0, atol=0)
    assert greedy(reloaded, PROMPT) == greedy(pruned.model, PROMPT)


def test_reloaded_checkpoint_keeps_original_indices(tiny, tmp_path):
    from layerprobe import load_model

    out = save_model(drop_layers(tiny, [1]), tmp_path / "p1")
    again = load_model(str(out), device="cpu")
    assert again.layer_map == [0, 2, 3, 4, 5]
    # a second drop uses original indices
    twice = drop_layers(again, [4])
    assert twice.layer_map == [0, 2, 3, 5]
    with pytest.raises(UserError, match="already removed"):
        drop_layers(again, [1])


@pytest.mark.parametrize(
    "bad, message",
    [([6], "out of range"), ([-1], "negative"), ([2, 2], "twice"), (list(range(6)), "all 6 layers"), ([], "no layers")],
)
def test_bad_drop_lists(tiny, bad, message):
    with pytest.raises(UserError, match=message):
        drop_layers(tiny, bad)


@pytest.mark.slow
def test_smollm2_drop_save_reload(smollm2, tmp_path):
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids.tolist()
    pruned = drop_layers(smollm2, [20, 21])
    assert pruned.n_layers == 28 and pruned.layer_map == [*range(20), *range(22, 30)]
    cached = greedy(pruned.model, ids, n=20, use_cache=True)
    assert cached == greedy(pruned.model, ids, n=20, use_cache=False)
    out = save_model(pruned, tmp_path / "smol-28")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 28
    torch.testing.assert_close(logits(reloaded, ids), logits(pruned.model, ids), rtol=0, atol=0)
    assert greedy(reloaded, ids, n=20) == cached
