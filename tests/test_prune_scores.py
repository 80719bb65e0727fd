"""Block influence and angular distance (docs/definitions.md#pruning-scores-and-methods) against an independent direct computation.

The reference here runs the model on a LEFT-padded batch with output_hidden_states=True (layer inputs),
takes the last layer's pre-norm output from its own hook, and masks padding by hand; the implementation
uses right padding and its own hooks. Nothing is shared but the model.
"""

from __future__ import annotations

import math

import pytest
import torch

from layerprobe.prune import angular_distances, block_influence, block_influence_by_original, drop_layers, layer_scores
from tests.helpers import tiny_loaded

# documents of very different lengths (1 … 60 words) over the tiny vocabulary
DOCS = [" ".join(f"w{(7 * i + 3 * j) % 120}" for j in range(n)) for i, n in enumerate([23, 1, 60, 7, 41, 3, 15])]


pytestmark = pytest.mark.usefixtures("one_thread")


def scoring_tiny(family: str):
    """A tiny model whose layers change the residual stream noticeably (undo the helper's ×20 embedding
    scale, which makes every layer almost the identity)."""
    loaded = tiny_loaded(family)
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.div_(20.0)
    return loaded


def reference_scores(model, tokenizer, docs, seq_len=256, n_max=1):
    """BI per layer and d(l, n) by direct computation on one left-padded batch."""
    ids = [tokenizer(d, truncation=True, max_length=seq_len)["input_ids"] for d in docs]
    ids = [x for x in ids if x]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    layers = model.model.layers
    last_out = []
    handle = layers[-1].register_forward_hook(lambda m, a, o: last_out.append(o if torch.is_tensor(o) else o[0]))
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, output_hidden_states=True)
    finally:
        handle.remove()
    L = len(layers)
    # x_0 … x_{L-1} are the inputs of the layers; x_L is the last layer's output before the final norm
    xs = [h.double() for h in out.hidden_states[:L]] + [last_out[0].double()]
    real = mask.bool()
    bi = []
    for i in range(L):
        a, b = xs[i], xs[i + 1]
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
        cos = torch.where(real, cos, torch.zeros_like(cos))  # by hand; pad rows may hold anything
        bi.append(1.0 - float(cos.sum() / real.sum()))
    ang = {}
    for n in range(1, n_max + 1):
        vals = []
        for l in range(L - n + 1):
            a, b = xs[l][:, -1], xs[l + n][:, -1]  # left padding: the last real token is the last position
            cos = ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).clamp(-1, 1)
            vals.append(float((torch.arccos(cos) / math.pi).mean()))
        ang[n] = vals
    return bi, ang


def test_scores_match_direct_computation(family):
    loaded = scoring_tiny(family)
    ref_bi, ref_ang = reference_scores(loaded.model, loaded.tokenizer, DOCS, n_max=3)
    scores = layer_scores(loaded, DOCS, n_max=3, batch_size=3)
    assert len(scores.block_influence) == 6
    assert min(ref_bi) > 1e-3  # the test model's layers really do something
    torch.testing.assert_close(
        torch.tensor(scores.block_influence), torch.tensor(ref_bi, dtype=torch.float32), rtol=1e-4, atol=1e-6
    )
    for n in (1, 2, 3):
        assert len(scores.angular[n]) == 6 - n + 1
        torch.testing.assert_close(
            torch.tensor(scores.angular[n]), torch.tensor(ref_ang[n], dtype=torch.float32), rtol=1e-4, atol=1e-6
        )
    assert scores.n_docs == len(DOCS)
    assert scores.n_tokens == sum(len(loaded.tokenizer(d)["input_ids"]) for d in DOCS)


def test_batched_equals_batch_size_one_with_padding(family):
    loaded = scoring_tiny(family)
    one = layer_scores(loaded, DOCS, n_max=2, batch_size=1)
    four = layer_scores(loaded, DOCS, n_max=2, batch_size=4)
    for a, b in zip(one.block_influence, four.block_influence):
        assert abs(a - b) < 1e-5
    for n in (1, 2):
        for a, b in zip(one.angular[n], four.angular[n]):
            assert abs(a - b) < 1e-5


def test_public_wrappers_and_seq_len(tiny):
    bi = block_influence(tiny, DOCS, seq_len=8, batch_size=2)
    assert len(bi) == 6 and all(0.0 <= v <= 2.0 for v in bi)
    ang = angular_distances(tiny, DOCS, n_max=2, seq_len=8, batch_size=2)
    assert sorted(ang) == [1, 2] and len(ang[2]) == 5
    # truncation at seq_len: a long document scores like its first seq_len tokens
    long_doc = [DOCS[2]]
    head = [" ".join(DOCS[2].split()[:8])]
    assert block_influence(tiny, long_doc, seq_len=8) == pytest.approx(block_influence(tiny, head, seq_len=256), abs=1e-6)


def test_pruned_model_scores_are_keyed_by_original_index():
    base = scoring_tiny("llama")
    pruned = drop_layers(base, [1, 3])
    scores = layer_scores(pruned, DOCS)
    assert scores.layer_map == [0, 2, 4, 5]
    by_orig = block_influence_by_original(pruned, DOCS)
    assert sorted(by_orig) == [0, 2, 4, 5]
    assert by_orig[4] == pytest.approx(scores.block_influence[2])
    ref_bi, _ = reference_scores(pruned.model, pruned.tokenizer, DOCS)
    assert by_orig[5] == pytest.approx(ref_bi[3], rel=1e-4, abs=1e-6)


def test_hooks_removed_and_mode_restored_even_on_error():
    loaded = scoring_tiny("qwen3")
    layers = loaded.layers
    loaded.model.train()
    layer_scores(loaded, DOCS[:2])
    assert loaded.model.training  # restored
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)

    def boom(*_):
        raise RuntimeError("boom")

    h = layers[3].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        layer_scores(loaded, DOCS[:2])
    h.remove()
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)
    assert loaded.model.training


def test_empty_documents_are_an_error(tiny):
    from layerprobe.errors import UserError

    with pytest.raises(UserError, match="empty"):
        block_influence(tiny, ["", "   "])
    with pytest.raises(UserError, match="n-max"):
        angular_distances(tiny, DOCS, n_max=7)


def test_token_id_documents_are_used_as_given(tiny):
    ids = [tiny.tokenizer(d)["input_ids"] for d in DOCS]
    assert block_influence(tiny, ids) == pytest.approx(block_influence(tiny, DOCS), abs=1e-7)


SMOL_DOCS = [
    "The capital of France is Paris, a city on the Seine.",
    "Two plus three equals five, and five times four is twenty.",
    "In 1969 astronauts landed on the Moon for the first time, and millions of people watched the broadcast live on television.",
]


@pytest.mark.slow
def test_smollm2_scores_match_direct_computation(smollm2):
    ref_bi, ref_ang = reference_scores(smollm2.model, smollm2.tokenizer, SMOL_DOCS, n_max=2)
    one = layer_scores(smollm2, SMOL_DOCS, n_max=2, batch_size=1)
    three = layer_scores(smollm2, SMOL_DOCS, n_max=2, batch_size=3)
    assert len(one.block_influence) == 30
    for got in (one, three):
        for a, b in zip(got.block_influence, ref_bi):
            assert abs(a - b) < 1e-4
        for n in (1, 2):
            for a, b in zip(got.angular[n], ref_ang[n]):
                assert abs(a - b) < 1e-4
