"""The TransformerLens adapter agrees with LayerProbe within 1e-4 (skipped without the extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformer_lens")

from layerprobe import drop_layers
from layerprobe.probe.hooks import capture
from layerprobe.probe.tl import boot_bridge, tl_layer_stats
from layerprobe.scaling.engine import build_prompt
from layerprobe.scaling.formats import FORMATS, Sampling
from tests.probe_ref import lively_loaded

STATS = ("block_influence", "norm", "jsd", "entropy", "top1_agree", "rank")


@pytest.mark.parametrize("family, drop", [("qwen3", []), ("llama", [2])])
def test_tl_agrees_with_the_probe(family, drop, one_thread):
    loaded = lively_loaded(family)
    if drop:
        loaded = drop_layers(loaded, drop)
    fmt = FORMATS["think-tags"]
    texts = ["w10 w11 w12", "w40"]
    pairs = capture(loaded, texts, fmt, budget=8, sampling=Sampling(temperature=1.0), answer_max=2, batch_size=2)
    attn = loaded.model.config._attn_implementation
    bridge = boot_bridge(loaded)
    assert loaded.model.config._attn_implementation == attn  # the caller's model is left as it was
    assert type(loaded.layers[0]).__module__.startswith("transformers.")
    for text, (res, tl) in zip(texts, pairs):
        prompt = loaded.tokenizer.encode(build_prompt(loaded.tokenizer, fmt, text), add_special_tokens=False)
        P, T = len(prompt), len(res.all_ids)
        seq = prompt + res.all_ids[:-1]
        st = tl_layer_stats(loaded, seq, next_ids=seq[1:] + [res.all_ids[-1]], bridge=bridge)
        for k in STATS:
            assert st[k].shape == (len(seq), loaded.n_layers)
            np.testing.assert_allclose(st[k][P - 1 : P - 1 + T], getattr(tl, k), atol=1e-4, rtol=1e-5, err_msg=k)
    # default next_ids: the next input token, none for the last position
    st = tl_layer_stats(loaded, [2, 10, 11], bridge=bridge)
    assert (st["rank"][-1] == -1).all() and (st["rank"][:-1] >= 0).all()
    # the caller's model still generates exactly as before
    again = capture(loaded, texts, fmt, budget=8, sampling=Sampling(temperature=1.0), answer_max=2, batch_size=2)
    assert [r.all_ids for r, _ in again] == [r.all_ids for r, _ in pairs]
    with torch.no_grad():
        assert torch.isfinite(loaded.model(torch.tensor([[2, 10]])).logits).all()
