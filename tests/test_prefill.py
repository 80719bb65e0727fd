"""Probes by prefill against probes captured during generation on the same traces (tiny models and the
real smollm2-135m with layers removed), batching and chunking, lens_every, out-of-memory halving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerprobe import drop_layers
from layerprobe.probe.hooks import LayerProbe
from layerprobe.probe.prefill import PrefillItem, prefill_many, prefill_trace_layers
from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt
from layerprobe.scaling.formats import FORMATS, Sampling
from tests.probe_ref import lively_loaded

FMT = FORMATS["think-tags"]
FLOATS = ("block_influence", "norm", "jsd", "entropy")


SAMPLED = Sampling(temperature=1.0)


SMALL_RUN = ["--limit", "2", "--budgets", "16,40", "--samples", "2", "--drop", "7,8", "--no-report", "--no-explain"]


def _live(loaded, prompts, budget=12, lens_every=1):
    gen = TraceGenerator(loaded.model, loaded.tokenizer, FMT, SAMPLED)
    reqs = [GenRequest(key=i, prompt=p, budget=budget, seed=7 + i, answer_max=4) for i, p in enumerate(prompts)]
    with LayerProbe(loaded, lens_every=lens_every) as probe:
        results = gen.generate(reqs, batch_size=len(reqs), observers=[probe])
        traces = {r.key: probe.pop(r.key) for r in results}
    return results, traces


def _prompts(tok, n):
    return [build_prompt(tok, FMT, " ".join(f"w{(7 * i + j) % 90 + 10}" for j in range(3 + 5 * i))) for i in range(n)]


def assert_same(a, b, atol=1e-5, near_ties=0.0):
    """Equal probe arrays. `near_ties`: the share of (token, layer) entries whose integer statistics
    (rank, top-1 agreement) may differ by one, for large vocabularies where two logits within float32
    rounding of each other can swap order between a batched and a per-step computation."""
    assert a.tokens.tolist() == b.tokens.tolist()
    assert a.layers.tolist() == b.layers.tolist()
    assert a.lens_positions.tolist() == b.lens_positions.tolist()
    for k in FLOATS:
        x, y = getattr(a, k), getattr(b, k)
        scale = max(1.0, float(np.nanmax(np.abs(y)))) if k == "norm" else 1.0
        np.testing.assert_allclose(x, y, atol=atol * scale, rtol=0, err_msg=k)
    for k in ("top1_agree", "rank"):
        x, y = np.asarray(getattr(a, k), float), np.asarray(getattr(b, k), float)
        both = ~(np.isnan(x) | np.isnan(y))
        off = both & (x != y)
        assert np.array_equal(np.isnan(x), np.isnan(y)), k
        assert np.all(np.abs(x[off] - y[off]) <= 1), k
        assert off.sum() <= near_ties * off.size, (k, int(off.sum()), off.size)


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_prefill_equals_live_capture(family, one_thread):
    loaded = drop_layers(lively_loaded(family), [2])
    prompts = _prompts(loaded.tokenizer, 3)
    results, live = _live(loaded, prompts)
    items = [
        PrefillItem(r.key, loaded.tokenizer.encode(p, add_special_tokens=False), r.all_ids) for p, r in zip(prompts, results)
    ]
    out = {tl.key: tl for tl in prefill_many(loaded, items, batch_size=3)}
    assert sorted(out) == [0, 1, 2]
    for r in results:
        assert len(r.all_ids) > 4
        assert out[r.key].layers.tolist() == [0, 1, 3, 4, 5]  # original indices of the pruned model
        assert_same(out[r.key], live[r.key])


def test_batched_chunked_and_single_agree(one_thread):
    loaded = lively_loaded("qwen2")
    prompts = _prompts(loaded.tokenizer, 4)
    results, _ = _live(loaded, prompts, budget=20)
    items = [
        PrefillItem(r.key, loaded.tokenizer.encode(p, add_special_tokens=False), r.all_ids) for p, r in zip(prompts, results)
    ]
    single = {it.key: prefill_trace_layers(loaded, it.prompt_ids, it.trace_ids, key=it.key) for it in items}
    batched = {tl.key: tl for tl in prefill_many(loaded, items, batch_size=4)}
    chunked = {tl.key: tl for tl in prefill_many(loaded, items, batch_size=4, chunk=5)}  # every trace longer than 5
    for k in single:
        assert_same(batched[k], single[k])
        assert_same(chunked[k], single[k])


def test_lens_every_and_no_lens(one_thread):
    loaded = lively_loaded("llama")
    prompts = _prompts(loaded.tokenizer, 2)
    results, live = _live(loaded, prompts, lens_every=3)
    for p, r in zip(prompts, results):
        tl = prefill_trace_layers(
            loaded, loaded.tokenizer.encode(p, add_special_tokens=False), r.all_ids, lens_every=3, key=r.key
        )
        assert tl.lens_positions.tolist() == list(range(0, len(r.all_ids), 3))
        assert_same(tl, live[r.key])
        bare = prefill_trace_layers(loaded, loaded.tokenizer.encode(p, add_special_tokens=False), r.all_ids, lens=False)
        assert bare.lens == "none" and np.isnan(bare.jsd).all()
        np.testing.assert_allclose(bare.block_influence, tl.block_influence, atol=1e-6)


def test_out_of_memory_halves_batch_then_chunk(one_thread, monkeypatch):
    loaded = lively_loaded("qwen3")
    prompts = _prompts(loaded.tokenizer, 4)
    results, live = _live(loaded, prompts, budget=60)
    items = [
        PrefillItem(r.key, loaded.tokenizer.encode(p, add_special_tokens=False), r.all_ids) for p, r in zip(prompts, results)
    ]
    assert max(len(it.prompt_ids) + len(it.trace_ids) for it in items) > 65
    real_forward = loaded.model.forward
    seen: list[tuple[int, int]] = []

    def forward(*args, **kwargs):  # pretend memory runs out for more than one row or more than 32 positions
        ids = kwargs["input_ids"]
        if ids.shape[0] > 1 or ids.shape[1] > 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", forward)
    monkeypatch.setattr("layerprobe.probe.prefill.MIN_CHUNK", 8)
    out = {tl.key: tl for tl in prefill_many(loaded, items, batch_size=4, chunk=128, on_oom=lambda b, c: seen.append((b, c)))}
    assert seen == [(2, 128), (1, 128), (1, 64), (1, 32)]
    assert sorted(out) == [0, 1, 2, 3]
    for k in out:
        assert_same(out[k], live[k])


def test_out_of_memory_at_the_floor_is_raised(one_thread, monkeypatch):
    loaded = lively_loaded("qwen3")
    monkeypatch.setattr(
        loaded.model, "forward", lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("out of memory"))
    )
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(prefill_many(loaded, [PrefillItem(0, [5, 6], [7, 8])], batch_size=1, chunk=64))


@pytest.mark.slow
def test_prefill_equals_live_on_smollm2_with_layers_removed(smollm2):
    pruned = drop_layers(smollm2, [20, 21])
    tok = pruned.tokenizer
    prompts = ["Question: what is 17 + 25? Think step by step.\nAnswer:", "The capital of France is"]
    gen = TraceGenerator(pruned.model, tok, FORMATS["s1"], Sampling(temperature=0.0))
    reqs = [GenRequest(key=i, prompt=p, budget=24, seed=i, answer_max=6) for i, p in enumerate(prompts)]
    with LayerProbe(pruned) as probe:
        results = gen.generate(reqs, batch_size=2, observers=[probe])
        live = {r.key: probe.pop(r.key) for r in results}
    items = [PrefillItem(r.key, tok.encode(p, add_special_tokens=False), r.all_ids) for p, r in zip(prompts, results)]
    for tl in prefill_many(pruned, items, batch_size=2):
        assert len(tl.tokens) > 20
        assert_same(tl, live[tl.key], atol=1e-4, near_ties=0.01)


def test_analyze_probe_modes_agree(tmp_path, capsys):
    """`analyze --probe-mode prefill` writes the same traces and (to float16 rounding) the same probe
    arrays as live capture; a run may resume in the other mode."""
    from layerprobe.data.reader import load_run
    from layerprobe.probe.layer_files import load_trace_layers
    from tests.cli_utils import run_cli

    runs = {}
    for mode in ("live", "prefill"):
        out = tmp_path / mode
        res = run_cli(capsys, "analyze", "--out", str(out), *SMALL_RUN, "--probe-mode", mode)
        assert res.code == 0, res.err
        runs[mode] = load_run(out)
        assert runs[mode].info.config.probe_mode == mode
    live = {r.key(): r for r in runs["live"].samples}
    pre = {r.key(): r for r in runs["prefill"].samples}
    assert live.keys() == pre.keys()
    n = 0
    for k, r in live.items():
        assert pre[k].text == r.text and pre[k].origin == r.origin
        if r.layers_file:
            a, b = (
                load_trace_layers(tmp_path / "live" / r.layers_file),
                load_trace_layers(tmp_path / "prefill" / pre[k].layers_file),
            )
            assert_same(b, a, atol=2e-3)  # float16 on disk
            n += 1
    assert n >= 8
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "live"), *SMALL_RUN, "--probe-mode", "prefill")
    assert res.code == 0, res.err  # the other mode resumes the same run


def test_bad_probe_mode(tmp_path, capsys):
    from tests.cli_utils import assert_one_line_error, run_cli

    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "r"), "--probe-mode", "later")
    assert_one_line_error(res, "--probe-mode later", "auto, live, prefill")
