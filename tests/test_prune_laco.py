"""LaCo: the RDSC merge (paper) vs the public code's replacement (reference), the loop, and the surgery
checks on merged models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM

from layerprobe.errors import UserError
from layerprobe.prune import laco, merge_layers, prune_model, save_model
from layerprobe.prune.laco import check_laco_params, merge_tensors
from tests.helpers import tiny_loaded

PROMPT = [[2, 10, 11, 12, 13, 14, 15, 16]]
DOCS = [" ".join(f"w{(3 * i + 7 * j) % 120}" for j in range(n)) for i, n in enumerate([20, 9, 33, 5])]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_merge_arithmetic_check_value():
    base = torch.tensor([1.0])
    followers = [torch.tensor([2.0]), torch.tensor([5.0]), torch.tensor([7.0])]
    assert merge_tensors(base, followers, "paper").item() == 12.0  # 1 + (1 + 4 + 6)
    assert merge_tensors(base, followers, "reference").item() == 7.0  # in-place update = last follower
    assert base.item() == 1.0


def _fill_layer(layer: nn.Module, linear_value: float, norm_value: float) -> None:
    with torch.no_grad():
        for module in layer.modules():
            for p in module.parameters(recurse=False):
                p.fill_(linear_value if isinstance(module, nn.Linear) else norm_value)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama"])
@pytest.mark.parametrize("mode, expected", [("paper", 12.0), ("reference", 7.0)])
def test_constructed_merge(family, mode, expected):
    loaded = tiny_loaded(family)
    for pos, (lin, norm) in enumerate([(1.0, 0.5), (2.0, 2.5), (5.0, 5.5), (7.0, 7.5)], start=1):
        _fill_layer(loaded.layers[pos], lin, norm)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    merged, info = merge_layers(loaded, 1, 3, mode)
    assert merged.layer_map == [0, 1, 5] and merged.dropped == [2, 3, 4]
    assert merged.model.config.num_hidden_layers == 3
    assert [b.self_attn.layer_idx for b in merged.layers] == [0, 1, 2]
    layer = merged.layers[1]
    n_linear = 0
    for name, module in layer.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.Linear):
                n_linear += 1
                assert torch.all(p == expected), (name, pname)
            else:  # norms (input/post-attention, Qwen3 q_norm/k_norm) come from layer l unchanged
                assert torch.all(p == 0.5), (name, pname)
    if family == "qwen2":  # q/k/v biases are merged like weights
        assert layer.self_attn.q_proj.bias is not None and torch.all(layer.self_attn.q_proj.bias == expected)
        assert "self_attn.q_proj.bias" in info["merged_params"]
    if family == "qwen3":
        assert {"self_attn.q_norm.weight", "self_attn.k_norm.weight"} <= set(info["kept_params"])
    assert n_linear == len(info["merged_params"])
    # the input model is untouched; merged layer has its own tensors, unmerged layers are shared
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert layer.self_attn.q_proj.weight.data_ptr() != loaded.layers[1].self_attn.q_proj.weight.data_ptr()
    assert merged.layers[0].mlp.up_proj.weight.data_ptr() == loaded.layers[0].mlp.up_proj.weight.data_ptr()
    assert merged.layers[2].mlp.up_proj.weight.data_ptr() == loaded.layers[5].mlp.up_proj.weight.data_ptr()


def greedy(model, ids, n=16, use_cache=True):
    with torch.no_grad():
        out = model.generate(
            torch.tensor(ids),
            attention_mask=torch.ones(1, len(ids[0]), dtype=torch.long),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )
    return out[:, len(ids[0]) :].tolist()


def test_merged_model_passes_surgery_checks(family, tmp_path):
    loaded = tiny_loaded(family)
    merged, _ = merge_layers(loaded, 2, 2, "paper")
    assert merged.layer_map == [0, 1, 2, 5]
    lt = getattr(loaded.model.config, "layer_types", None)
    if lt is not None:
        assert merged.model.config.layer_types == [lt[i] for i in merged.layer_map]
    assert greedy(merged.model, PROMPT, use_cache=True) == greedy(merged.model, PROMPT, use_cache=False)
    out = save_model(merged, tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 4
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(torch.tensor(PROMPT)).logits, merged.model(torch.tensor(PROMPT)).logits, rtol=0, atol=0
        )
    assert greedy(reloaded, PROMPT) == greedy(merged.model, PROMPT)


def _last_hidden_similarity(original, candidate, tokenizer, docs):
    """Independent check: mean over documents of cos(flatten(h_orig), flatten(h_cand)), h = hidden_states[-1]."""
    sims = []
    with torch.no_grad():
        for d in docs:
            ids = torch.tensor([tokenizer(d)["input_ids"]])
            a = original(ids, output_hidden_states=True).hidden_states[-1].flatten().double()
            b = candidate(ids, output_hidden_states=True).hidden_states[-1].flatten().double()
            sims.append(float(a @ b / (a.norm() * b.norm())))
    return sum(sims) / len(sims)


def test_laco_loop_walks_down_and_compares_with_original():
    loaded = tiny_loaded("qwen3")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.div_(20.0)
    # T = 1 rejects everything: candidates start at H - C + 1 and move down one layer at a time
    none = laco(loaded, DOCS, c=3, interval=2, threshold=1.0)
    assert [s["position"] for s in none.steps] == [3, 2, 1, 0]
    assert none.model.n_layers == 6 and none.model.method == "laco-paper" and none.merges == []
    # a low threshold accepts: move down I after each merge
    res = laco(loaded, DOCS, c=3, interval=2, low=1, high=5, threshold=0.01, mode="reference")
    assert [s["position"] for s in res.steps] == [3, 1]
    assert all(s["accepted"] for s in res.steps)
    assert res.model.layer_map == [0, 1] and res.removed == [2, 3, 4, 5]
    assert res.merges[0]["absorbs"] == [3, 4, 5] and res.merges[1]["absorbs"] == [1, 2, 3, 4, 5]
    assert res.model.method == "laco-reference"
    # the similarity of the last accepted merge is the final model's similarity to the ORIGINAL model
    direct = _last_hidden_similarity(loaded.model, res.model.model, loaded.tokenizer, DOCS)
    assert res.merges[-1]["similarity"] == pytest.approx(direct, abs=1e-5)
    assert loaded.n_layers == 6  # input unchanged


def test_laco_through_prune_model_records_mode_and_calibration():
    loaded = tiny_loaded("llama")
    out, sel = prune_model(loaded, "laco", None, DOCS, c=2, interval=1, threshold=0.5)
    assert sel.method == "laco-paper" and out.method == "laco-paper"
    assert sel.record["n_removed"] == len(out.dropped) == 6 - out.n_layers
    assert out.calibration["n_docs"] == len(DOCS)
    with pytest.raises(UserError, match="--n-drop does not apply"):
        prune_model(loaded, "laco", 2, DOCS)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(c=1), "--laco-c 1"),
        (dict(interval=0), "--laco-i 0"),
        (dict(low=-1), "--laco-low -1"),
        (dict(high=6), "--laco-high 6"),
        (dict(low=4, high=2), "above"),
        (dict(threshold=0.0), "--laco-threshold"),
        (dict(threshold=1.5), "--laco-threshold"),
        (dict(mode="fancy"), "--laco-mode"),
        (dict(c=5, low=3), "fewer than one merge"),
    ],
)
def test_bad_laco_parameters(kw, message):
    args = dict(c=4, interval=2, low=None, high=None, threshold=0.45, mode="paper") | kw
    with pytest.raises(UserError, match=message):
        check_laco_params(6, args["c"], args["interval"], args["low"], args["high"], args["threshold"], args["mode"])
