"""Layer-selection methods: ShortGPT, reverse(-keep-final), angular, drop-one perplexity; the registry."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from layerprobe.errors import UserError
from layerprobe.prune import (
    METHODS,
    angular_distances,
    block_influence,
    drop_layers,
    get_method,
    prune_model,
)
from tests.helpers import tiny_loaded

DOCS = [" ".join(f"w{(5 * i + 11 * j) % 120}" for j in range(n)) for i, n in enumerate([30, 4, 55, 12, 2])]


pytestmark = pytest.mark.usefixtures("one_thread")


def scoring_tiny(family: str):
    loaded = tiny_loaded(family)
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.div_(20.0)
    return loaded


def test_registry_lists_every_method():
    assert set(METHODS) == {
        "shortgpt",
        "reverse",
        "reverse-keep-final",
        "angular",
        "laco",
        "ppl",
        "trace-kl",
        "width",
        "wanda",
        "magnitude",
        "nm",
    }
    with pytest.raises(UserError, match="unknown method.*shortgpt.*reverse-keep-final.*ppl"):
        get_method("shortgtp")


def test_shortgpt_removes_lowest_bi(family):
    loaded = scoring_tiny(family)
    bi = block_influence(loaded, DOCS)
    expected = sorted(sorted(range(6), key=lambda i: bi[i])[:2])
    sel = get_method("shortgpt").select(loaded, 2, DOCS)
    assert sel.drop == expected
    assert sel.method == "shortgpt"
    assert sel.record["block_influence"] == pytest.approx(dict(enumerate(bi)))
    pruned, sel2 = prune_model(loaded, "shortgpt", 2, DOCS)
    assert pruned.dropped == expected and pruned.method == "shortgpt"
    assert pruned.calibration["source"] == "list" and pruned.calibration["n_docs"] == len(DOCS)


def test_shortgpt_on_pruned_model_returns_original_indices():
    base = scoring_tiny("llama")
    pruned = drop_layers(base, [0, 2])
    bi = block_influence(pruned, DOCS)  # positions 0..3 = original 1, 3, 4, 5
    lowest = min(range(4), key=lambda i: bi[i])
    sel = get_method("shortgpt").select(pruned, 1, DOCS)
    assert sel.drop == [pruned.layer_map[lowest]]


def test_reverse_variants(tiny):
    assert get_method("reverse").select(tiny, 2).drop == [4, 5]
    assert get_method("reverse-keep-final").select(tiny, 2).drop == [3, 4]
    assert get_method("reverse-keep-final").select(tiny, 5).drop == [0, 1, 2, 3, 4]
    pruned = drop_layers(tiny, [1])  # layer_map [0, 2, 3, 4, 5]
    assert get_method("reverse").select(pruned, 2).drop == [4, 5]
    assert get_method("reverse-keep-final").select(pruned, 3).drop == [2, 3, 4]
    out, sel = prune_model(tiny, "reverse-keep-final", 1)
    assert out.layer_map == [0, 1, 2, 3, 5] and out.method == "reverse-keep-final" and out.calibration is None


@pytest.mark.parametrize("n", [1, 2, 3])
def test_angular_removes_contiguous_block_at_argmin(n):
    loaded = scoring_tiny("qwen3")
    d = angular_distances(loaded, DOCS, n_max=n)[n]
    start = min(range(len(d)), key=lambda i: d[i])
    sel = get_method("angular").select(loaded, n, DOCS)
    assert sel.drop == list(range(start, start + n))
    assert sel.record["start"] == start
    assert sel.record["angular_distance"][start] == pytest.approx(min(d))


def direct_perplexity_without(model, tokenizer, docs, layer):
    """exp(mean NLL) of the model with one layer deleted by hand, from the model's own loss."""
    m = copy.deepcopy(model)
    del m.model.layers[layer]
    m.config.num_hidden_layers -= 1
    if getattr(m.config, "layer_types", None):
        m.config.layer_types = [t for i, t in enumerate(m.config.layer_types) if i != layer]
    for j, block in enumerate(m.model.layers):
        block.self_attn.layer_idx = j
    total, count = 0.0, 0
    with torch.no_grad():
        for doc in docs:
            ids = torch.tensor([tokenizer(doc, truncation=True, max_length=256)["input_ids"]])
            if ids.shape[1] < 2:
                continue
            loss = m(input_ids=ids, labels=ids, use_cache=False).loss
            total += float(loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return math.exp(total / count)


def test_ppl_method_against_direct_computation():
    loaded = scoring_tiny("llama")
    sel = get_method("ppl").select(loaded, 2, DOCS, batch_size=2)
    ppl = sel.record["perplexity_without"]
    assert sorted(ppl) == list(range(6))
    for layer in (0, 3):
        assert ppl[layer] == pytest.approx(direct_perplexity_without(loaded.model, loaded.tokenizer, DOCS, layer), rel=1e-4)
    assert sel.drop == sorted(sorted(ppl, key=ppl.get)[:2])
    # the base model was left alone
    assert loaded.n_layers == 6 and len(loaded.layers) == 6


@pytest.mark.parametrize("bad, message", [(0, "at least 1"), (6, "at most 5"), (None, "required")])
def test_bad_n_drop(tiny, bad, message):
    with pytest.raises(UserError, match=message):
        prune_model(tiny, "shortgpt", bad, DOCS)


def test_prune_model_defaults_to_embedded_calibration(tiny):
    out, sel = prune_model(tiny, "shortgpt", 1, seq_len=16)
    assert out.calibration["source"] == "embedded" and out.calibration["n_docs"] == 64
    assert out.calibration["seq_len"] == 16 and len(out.calibration["sha1"]) == 40
    assert out.extra["selection"]["method"] == "shortgpt"
    assert out.provenance().calibration == out.calibration
