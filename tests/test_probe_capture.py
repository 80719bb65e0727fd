"""LayerProbe during generation: every statistic against an independent full-sequence forward pass,
batch invariance under left padding, pruned models, lens_every / lens_topk, hook removal, capture()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerprobe import drop_layers
from layerprobe.probe.hooks import LayerProbe, capture
from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt
from layerprobe.scaling.formats import FORMATS, Sampling
from tests.probe_ref import lively_loaded as tiny_loaded
from tests.probe_ref import reference_stats

FMT = FORMATS["think-tags"]
GREEDY = Sampling(temperature=0.0)
STATS = ("block_influence", "norm", "jsd", "entropy")


def _prompts(tok, n: int) -> list[str]:
    # different lengths, so a batch is left-padded
    return [build_prompt(tok, FMT, " ".join(f"w{(11 * i + j) % 90 + 10}" for j in range(2 + 4 * i))) for i in range(n)]


def _generate(loaded, prompts, batch_size, sampling=GREEDY, budget=9, **probe_kw):
    gen = TraceGenerator(loaded.model, loaded.tokenizer, FMT, sampling)
    reqs = [GenRequest(key=i, prompt=p, budget=budget, seed=100 + i, answer_max=3) for i, p in enumerate(prompts)]
    with LayerProbe(loaded, **probe_kw) as probe:
        results = gen.generate(reqs, batch_size=batch_size, observers=[probe])
        traces = [probe.pop(r.key) for r in results]
        assert probe.finished() == []
    return results, traces


def _assert_matches_reference(loaded, prompt, result, tl, atol=1e-4):
    ref = reference_stats(loaded, loaded.tokenizer.encode(prompt, add_special_tokens=False), result.all_ids)
    assert tl.tokens.tolist() == result.all_ids
    assert tl.block_influence.shape == (len(result.all_ids), loaded.n_layers)
    for k in STATS:
        scale = max(1.0, float(np.abs(ref[k]).max())) if k == "norm" else 1.0
        np.testing.assert_allclose(getattr(tl, k), ref[k], atol=atol * scale, rtol=0, err_msg=k)
    np.testing.assert_array_equal(tl.top1_agree, ref["top1_agree"])
    np.testing.assert_array_equal(tl.rank, ref["rank"])
    return ref


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama"])
def test_every_statistic_matches_full_forward(family, one_thread):
    loaded = tiny_loaded(family)
    prompts = _prompts(loaded.tokenizer, 3)
    # sampled, so that the traces visit tokens the lens ranks low at early layers
    results, traces = _generate(loaded, prompts, batch_size=3, sampling=Sampling(temperature=1.0))
    for prompt, res, tl in zip(prompts, results, traces):
        assert len(res.all_ids) > 3
        assert tl.layers.tolist() == list(range(loaded.n_layers))
        assert tl.lens == "full" and tl.lens_positions.tolist() == list(range(len(res.all_ids)))
        _assert_matches_reference(loaded, prompt, res, tl)
        assert np.all(tl.jsd[:, -1] == 0) and np.all(tl.top1_agree[:, -1] == 1)
    # the statistics are not degenerate: ranks above 0 and lens disagreement at early layers occur
    assert max(int(tl.rank.max()) for tl in traces) > 0
    assert max(float(tl.jsd[:, 0].max()) for tl in traces) > 0.1


def test_batch_invariance_with_left_padding(one_thread):
    loaded = tiny_loaded("qwen3")
    prompts = _prompts(loaded.tokenizer, 4)
    batched_res, batched = _generate(loaded, prompts, batch_size=4)
    for i, p in enumerate(prompts):
        alone_res, alone = _generate(loaded, [p], batch_size=1)
        assert alone_res[0].all_ids == batched_res[i].all_ids
        for k in STATS:
            np.testing.assert_allclose(getattr(alone[0], k), getattr(batched[i], k), atol=1e-4, rtol=1e-5, err_msg=k)
        np.testing.assert_array_equal(alone[0].rank, batched[i].rank)
        np.testing.assert_array_equal(alone[0].top1_agree, batched[i].top1_agree)


def test_pruned_model_carries_original_indices(one_thread):
    base = tiny_loaded("llama")
    pruned = drop_layers(base, [1, 4])
    prompts = _prompts(pruned.tokenizer, 2)
    results, traces = _generate(pruned, prompts, batch_size=2)
    for prompt, res, tl in zip(prompts, results, traces):
        assert tl.layers.tolist() == [0, 2, 3, 5]
        assert tl.n_layers_original == 6
        _assert_matches_reference(pruned, prompt, res, tl)


def test_lens_every_k_matches_full_lens_on_its_steps(one_thread):
    loaded = tiny_loaded("qwen2")
    prompts = _prompts(loaded.tokenizer, 2)
    _, full = _generate(loaded, prompts, batch_size=2)
    _, sparse = _generate(loaded, prompts, batch_size=2, lens_every=3)
    for f, s in zip(full, sparse):
        on = np.arange(f.n_tokens) % 3 == 0
        assert s.lens_every == 3 and s.lens_positions.tolist() == np.flatnonzero(on).tolist()
        np.testing.assert_allclose(s.block_influence, f.block_influence, atol=1e-6)
        np.testing.assert_allclose(s.jsd[on], f.jsd[on], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s.rank[on], f.rank[on])
        assert np.isnan(s.jsd[~on]).all() and np.isnan(s.entropy[~on]).all() and (s.rank[~on] == -1).all()


def test_lens_off_keeps_influence_and_norm(one_thread):
    loaded = tiny_loaded("qwen3")
    prompts = _prompts(loaded.tokenizer, 2)
    _, full = _generate(loaded, prompts, batch_size=2)
    _, bare = _generate(loaded, prompts, batch_size=2, lens=False)
    for f, b in zip(full, bare):
        assert b.lens == "none" and b.lens_positions.size == 0
        np.testing.assert_allclose(b.norm, f.norm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.block_influence, f.block_influence, atol=1e-6)
        assert np.isnan(b.jsd).all() and (b.rank == -1).all()


def test_topk_lens_is_the_renormalised_restriction(one_thread):
    loaded = tiny_loaded("llama")
    prompts = _prompts(loaded.tokenizer, 2)
    K = 5
    results, traces = _generate(loaded, prompts, batch_size=2, sampling=Sampling(temperature=1.0), lens_topk=K)
    _, whole = _generate(loaded, prompts, batch_size=2, sampling=Sampling(temperature=1.0), lens_topk=10_000)
    for prompt, res, tl, w in zip(prompts, results, traces, whole):
        assert tl.lens == f"topk:{K}"
        ref = reference_stats(loaded, loaded.tokenizer.encode(prompt, add_special_tokens=False), res.all_ids)
        lp = ref["logprobs"]  # (L, T, V) float64
        idx = lp[-1].topk(K, dim=-1).indices  # the final layer's top K, per step
        sub = torch.log_softmax(lp.gather(-1, idx.unsqueeze(0).expand(lp.shape[0], -1, -1)), -1)
        p, pf = sub.exp(), sub[-1:].exp()
        m = 0.5 * (p + pf)
        jsd = 0.5 * (pf * (sub[-1:] - m.log())).sum(-1) + 0.5 * (p * (sub - m.log())).sum(-1)
        np.testing.assert_allclose(tl.jsd, jsd.T.numpy(), atol=1e-4)
        np.testing.assert_allclose(tl.entropy, (-(p * sub).sum(-1)).T.numpy(), atol=1e-4)
        tok = torch.tensor(res.all_ids)
        for n in range(tl.n_tokens):
            where = (idx[n] == tok[n]).nonzero()
            if where.numel() == 0:
                assert (tl.rank[n] == K).all()
            else:
                expect = (sub[:, n] > sub[:, n, int(where[0])].unsqueeze(-1)).sum(-1)
                assert tl.rank[n].tolist() == expect.tolist()
        # K >= vocabulary: the approximation is the full lens
        np.testing.assert_allclose(w.jsd, ref["jsd"], atol=1e-4)
        np.testing.assert_array_equal(w.rank, ref["rank"])
    assert any((tl.rank == K).any() for tl in traces)


def test_hooks_removed_on_exit_and_on_error(one_thread):
    loaded = tiny_loaded("qwen3")
    count = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in loaded.model.modules())
    with LayerProbe(loaded):
        assert count() == loaded.n_layers + 1
    assert count() == 0
    with pytest.raises(ZeroDivisionError), LayerProbe(loaded):
        _ = 1 / 0
    assert count() == 0
    probe = LayerProbe(loaded)
    with pytest.raises(RuntimeError, match="not attached"):
        probe.on_forward([0], torch.ones(1, 3), True)
    with pytest.raises(KeyError, match="no finished trace"):
        probe.pop("nope")


def test_forward_passes_outside_the_engine_are_ignored(one_thread):
    loaded = tiny_loaded("qwen3")
    prompts = _prompts(loaded.tokenizer, 1)
    _, ref = _generate(loaded, prompts, batch_size=1)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, FMT, GREEDY)
    with LayerProbe(loaded) as probe:
        with torch.no_grad():
            loaded.model(torch.tensor([[2, 10, 11]]))  # not announced: no effect
        res = gen.generate([GenRequest(key="a", prompt=prompts[0], budget=9, answer_max=3)], observers=[probe])
        tl = probe.pop("a")
    assert tl.tokens.tolist() == res[0].all_ids
    np.testing.assert_allclose(tl.jsd, ref[0].jsd, rtol=1e-5, atol=1e-6)


def test_capture_api_returns_traces_in_prompt_order(one_thread):
    loaded = tiny_loaded("qwen2")
    texts = ["w10 w11", "w12 w13 w14 w15 w16 w17", "w20"]
    seen = []
    pairs = capture(
        loaded,
        texts,
        "think-tags",
        budget=6,
        sampling=GREEDY,
        answer_max=2,
        batch_size=2,
        on_result=lambda r, t: seen.append(r.key),
    )
    assert [r.key for r, _ in pairs] == [0, 1, 2] and sorted(seen) == [0, 1, 2]
    for text, (res, tl) in zip(texts, pairs):
        assert tl.key == res.key and tl.tokens.tolist() == res.all_ids
        _assert_matches_reference(loaded, build_prompt(loaded.tokenizer, FMT, text), res, tl)


@pytest.mark.slow
def test_smollm2_statistics_match_full_forward(smollm2, one_thread):
    fmt = FORMATS["s1"]
    texts = ["What is 2 + 3?", "Name a colour."]
    pairs = capture(smollm2, texts, fmt, budget=4, sampling=GREEDY, answer_max=2, batch_size=2)
    for text, (res, tl) in zip(texts, pairs):
        prompt = build_prompt(smollm2.tokenizer, fmt, text)
        ref = reference_stats(smollm2, smollm2.tokenizer.encode(prompt, add_special_tokens=False), res.all_ids)
        for k in STATS:
            scale = float(np.abs(ref[k]).max()) if k == "norm" else 1.0
            np.testing.assert_allclose(getattr(tl, k), ref[k], atol=2e-4 * max(scale, 1.0), rtol=0, err_msg=k)
        # near-ties in a 49k vocabulary can swap neighbours between cached and uncached passes
        assert np.mean(tl.rank == ref["rank"]) > 0.95
        assert np.abs(tl.rank - ref["rank"]).max() <= max(2, 1e-3 * ref["rank"].max())
        assert np.mean(tl.top1_agree == ref["top1_agree"]) > 0.95
        assert tl.layers.tolist() == list(range(30))


def test_package_exports_are_the_functions_not_submodules() -> None:
    """`from layerprobe.probe import capture` must give the function even after the submodules are
    imported (a submodule of the same name used to shadow it)."""
    import importlib

    import layerprobe.probe as probe_pkg

    for name in probe_pkg.__all__:
        importlib.import_module(probe_pkg._LAZY[name])
    from layerprobe.probe import capture as fn
    from layerprobe.probe import teacher_forced as tf

    assert callable(fn) and fn.__module__ == "layerprobe.probe.hooks"
    assert callable(tf)


def test_storage_slabs_across_boundaries_give_the_same_traces_and_are_freed(one_thread, monkeypatch):
    """Per-step results live in shared slabs; with a slab of 5 slots a batch of 3 crosses slab boundaries
    every other step. The traces must equal those stored with the default slab, and every slab but the
    one being filled is released once its traces have finished."""
    from layerprobe.probe import hooks

    loaded = tiny_loaded("qwen3")
    prompts = _prompts(loaded.tokenizer, 3)
    _, ref = _generate(loaded, prompts, batch_size=3)
    monkeypatch.setattr(hooks, "_SLAB", 5)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, FMT, GREEDY)
    reqs = [GenRequest(key=i, prompt=p, budget=9, seed=100 + i, answer_max=3) for i, p in enumerate(prompts)]
    with LayerProbe(loaded) as probe:
        results = gen.generate(reqs, batch_size=3, observers=[probe])
        assert probe._slab >= 3  # the test really spans several slabs
        small = [probe.pop(r.key) for r in results]
        assert set(probe._slabs) <= {probe._slab}
        # a second generation with the same probe: the last slab of the first one is released too
        first_last = probe._slab
        again = gen.generate(
            [GenRequest(key=("again", r.key), prompt=r.prompt, budget=9, seed=r.seed, answer_max=3) for r in reqs],
            batch_size=3,
            observers=[probe],
        )
        assert probe._slab > first_last and set(probe._slabs) <= {probe._slab}
        for a, r in zip(small, again):
            np.testing.assert_array_equal(a.block_influence, probe.pop(r.key).block_influence)
    for a, b in zip(ref, small):
        for k in (*STATS, "top1_agree", "rank", "tokens"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
