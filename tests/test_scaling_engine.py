"""Budget forcing, Wait extension, answer caps, seeds and batch invariance of the scaling engine."""

from __future__ import annotations

import pytest
import torch

from layerprobe.errors import UserError
from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt, derive_seed
from layerprobe.scaling.formats import FORMATS, Sampling, detect_format
from tests.helpers import WORDS, tiny_model, tiny_tokenizer
from tests.scripted import ScriptedModel

TOK = tiny_tokenizer()
ID = {w: i for i, w in enumerate(WORDS)}
FMT = FORMATS["think-tags"]
GREEDY = Sampling(temperature=0.0)


def prompts(n: int) -> list[str]:
    return [build_prompt(TOK, FMT, " ".join(f"w{(7 * i + j) % 90 + 10}" for j in range(3 + i % 5))) for i in range(n)]


def script_model(answer_eos: bool = True) -> ScriptedModel:
    # thinking: w10 w11 then </think>; a Wait (an <unk> in this vocabulary) restarts w10 w11 </think>;
    # the answer is w20 then EOS (or w20 forever when answer_eos is False).
    script = {
        ID["<think>"]: ID["w10"],
        ID["w10"]: ID["w11"],
        ID["w11"]: ID["</think>"],
        ID["<unk>"]: ID["w10"],
        ID["</think>"]: ID["w20"],
        ID["w20"]: ID["</s>"] if answer_eos else ID["w20"],
    }
    return ScriptedModel(tiny_model("qwen3"), script).eval()


def test_natural_end_and_wait_exactly_n_times():
    gen = TraceGenerator(script_model(), TOK, FMT, GREEDY)
    reqs = [GenRequest(key=w, prompt=p, budget=100, wait=w) for w, p in zip([0, 1, 2, 3], prompts(4))]
    for req, res in zip(reqs, gen.generate(reqs, batch_size=4)):
        assert res.waits == req.wait
        assert res.thinking_tokens == 2 + 3 * req.wait  # each Wait adds <unk> w10 w11
        assert res.thinking_ids.count(ID["<unk>"]) == req.wait
        assert not res.budget_hit and res.finish == "answered"
        assert res.answer_ids == [ID["w20"]]
        assert res.all_ids[-1] == ID["</s>"]
        assert res.all_ids.count(ID["</think>"]) == 1  # ends replaced by Wait are not in the trace


def expected_script_trace(budget: int, wait: int) -> tuple[int, int, bool]:
    """(thinking tokens, waits, budget hit) for the script model, simulated by hand."""
    thinking, waits = 0, 0
    if budget == 0:
        return 0, 0, True
    cycle = ["w10", "w11"]
    while True:
        for _ in cycle:
            thinking += 1
            if thinking >= budget:
                return thinking, waits, True
        # the model ends thinking here
        if waits < wait and 1 < budget - thinking:
            waits += 1
            thinking += 1  # the Wait token
            if thinking >= budget:
                return thinking, waits, True
        else:
            return thinking, waits, False


def test_wait_never_exceeds_budget():
    gen = TraceGenerator(script_model(), TOK, FMT, GREEDY)
    forced = TOK.encode(FMT.forced_answer, add_special_tokens=False)
    reqs = [GenRequest(key=b, prompt=prompts(1)[0], budget=b, wait=10) for b in range(0, 14)]
    for req, res in zip(reqs, gen.generate(reqs, batch_size=7)):
        thinking, waits, hit = expected_script_trace(req.budget, req.wait)
        assert (res.thinking_tokens, res.waits, res.budget_hit) == (thinking, waits, hit), req.budget
        assert res.thinking_tokens <= req.budget
        n = res.thinking_tokens
        opener = forced if hit else TOK.encode(FMT.answer_open, add_special_tokens=False)
        assert res.all_ids[n : n + len(opener)] == opener  # forced suffix when the budget was hit, else the natural close
        assert res.finish == ("budget" if hit else "answered")


def test_budget_is_exact_on_random_model():
    model = tiny_model("llama")
    gen = TraceGenerator(model, TOK, FMT, GREEDY)
    forced_ids = TOK.encode(FMT.forced_answer, add_special_tokens=False)
    reqs = [GenRequest(key=i, prompt=p, budget=b, answer_max=5) for i, (p, b) in enumerate(zip(prompts(6), [0, 1, 4, 9, 16, 30]))]
    for req, res in zip(reqs, gen.generate(reqs, batch_size=3)):
        assert res.thinking_tokens <= req.budget
        assert res.answer_tokens <= req.answer_max
        if res.budget_hit:
            assert res.thinking_tokens == req.budget
            n = res.thinking_tokens
            assert res.all_ids[n : n + len(forced_ids)] == forced_ids  # forced suffix right after the cap
        else:
            assert res.all_ids[res.thinking_tokens : res.thinking_tokens + len(forced_ids)] != forced_ids or not forced_ids
    assert gen.generate([reqs[0]])[0].budget_hit  # budget 0 forces the answer at once


def test_answer_cap_respected():
    gen = TraceGenerator(script_model(answer_eos=False), TOK, FMT, GREEDY)
    (res,) = gen.generate([GenRequest(key=0, prompt=prompts(1)[0], budget=50, answer_max=7)])
    assert res.finish == "max_tokens" and res.answer_tokens == 7
    assert res.thinking_tokens == 2


def test_greedy_batch_invariance():
    model = tiny_model("qwen2")
    gen = TraceGenerator(model, TOK, FMT, GREEDY)
    reqs = [GenRequest(key=i, prompt=p, budget=12, answer_max=6) for i, p in enumerate(prompts(8))]
    one = [gen.generate([r])[0].all_ids for r in reqs]
    eight = [r.all_ids for r in gen.generate(reqs, batch_size=8)]
    assert one == eight


def test_sampling_seeds():
    model = tiny_model("mistral")
    gen = TraceGenerator(model, TOK, FMT, Sampling(temperature=1.0, top_p=0.95, top_k=20))
    p = prompts(1)[0]
    seeds = [derive_seed(0, "problem-1", s) for s in range(6)]
    assert len(set(seeds)) == 6
    reqs = [GenRequest(key=s, prompt=p, budget=20, seed=seed) for s, seed in enumerate(seeds)]
    together = [r.all_ids for r in gen.generate(reqs, batch_size=6)]
    assert len({tuple(t) for t in together}) > 1  # different seeds, different samples
    alone = [gen.generate([r])[0].all_ids for r in reversed(reqs)][::-1]
    assert alone == together  # the same seed reproduces, whatever the batch


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(temperature=1.0, top_p=0.95, top_k=20)], ids=["greedy", "sampled"])
def test_shared_budget_prefixes_equal_separate_generation(sampling):
    """Budgets of one problem and seed are generated once, at the largest budget, and forked at the
    smaller ones: every trace equals the trace generated on its own."""
    gen = TraceGenerator(tiny_model("qwen3"), TOK, FMT, sampling)
    budgets = [0, 1, 3, 7, 12, 30]
    reqs = [
        GenRequest(key=(p, b), prompt=pr, budget=b, seed=derive_seed(0, str(p), 0), answer_max=5)
        for p, pr in enumerate(prompts(5))
        for b in budgets
    ]
    shared = gen.generate(reqs, batch_size=4)
    alone = [gen.generate([r], share_prefixes=False)[0] for r in reqs]
    forked = 0
    for r, a, b in zip(reqs, shared, alone):
        assert a.key == r.key == b.key
        assert (a.all_ids, a.thinking_ids, a.answer_ids, a.finish, a.budget_hit) == (
            b.all_ids,
            b.thinking_ids,
            b.answer_ids,
            b.finish,
            b.budget_hit,
        )
        assert b.origin == "generated"
        if r.budget in (0, 30):
            assert a.origin == "generated"  # budget 0 has no prefix; 30 leads its group
        else:
            assert a.origin in ("prefix", "copy") and a.origin_key == (r.key[0], 30)
            assert (a.origin == "copy") == (not a.budget_hit)  # a copy: the thinking ended before the budget
            forked += a.origin == "prefix"
    assert forked >= 8  # the random model rarely ends thinking on its own: most budgets are real forks


def test_shared_prefixes_need_the_same_seed_and_no_wait():
    from layerprobe.scaling.engine import _share_prefixes

    p = prompts(1)[0]
    reqs = [
        GenRequest(key=0, prompt=p, budget=5, seed=1),
        GenRequest(key=1, prompt=p, budget=9, seed=1),
        GenRequest(key=2, prompt=p, budget=4, seed=2),
        GenRequest(key=3, prompt=p, budget=3, seed=1, wait=1),
        GenRequest(key=4, prompt=p, budget=9, seed=1),
    ]
    leaders, forks = _share_prefixes(reqs)
    assert leaders == [1, 2, 3, 4] or leaders == [2, 3, 4, 1][:0] or set(leaders) == {1, 2, 3, 4}
    assert forks == {4: [(0, reqs[0])]} or forks == {1: [(0, reqs[0])]}


def test_forked_traces_keep_their_probe_arrays():
    import numpy as np

    from layerprobe.probe.hooks import LayerProbe
    from tests.helpers import tiny_loaded

    loaded = tiny_loaded("qwen3")
    gen = TraceGenerator(loaded.model, loaded.tokenizer, FMT, GREEDY)
    reqs = [GenRequest(key=b, prompt=prompts(1)[0], budget=b, answer_max=3) for b in (4, 9, 20)]
    with LayerProbe(loaded) as probe:
        shared = gen.generate(reqs, observers=[probe])
        together = {r.key: probe.pop(r.key) for r in shared}
    for r in reqs:
        with LayerProbe(loaded) as probe:
            (alone,) = gen.generate([r], observers=[probe], share_prefixes=False)
            tl = probe.pop(r.key)
        assert together[r.key].tokens.tolist() == tl.tokens.tolist() == alone.all_ids
        np.testing.assert_allclose(together[r.key].block_influence, tl.block_influence, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together[r.key].jsd, tl.jsd, rtol=1e-4, atol=1e-5)


def test_derive_seed_stable():
    assert derive_seed(1, "a", 0) == derive_seed(1, "a", 0)
    assert derive_seed(1, "a", 0) != derive_seed(2, "a", 0) != derive_seed(1, "b", 0)


def test_format_detection_and_errors():
    assert detect_format(TOK).name == "think-tags"
    assert detect_format(TOK, "s1").name == "s1"
    with pytest.raises(UserError, match="valid: think-tags, s1"):
        detect_format(TOK, "harmony")
    with pytest.raises(UserError, match="budget must be >= 0"):
        TraceGenerator(tiny_model("llama"), TOK, FMT, GREEDY).generate([GenRequest(key=0, prompt="w1", budget=-1)])
    with pytest.raises(UserError, match="not in this tokenizer"):
        TraceGenerator(tiny_model("llama"), TOK, FORMATS["s1"], GREEDY)  # <|im_start|> is not in this vocabulary


@pytest.fixture(scope="module")
def smol_tokenizer():
    from layerprobe.models.loading import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32").tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("wait", [0, 1])
def test_end_of_thinking_spelled_by_several_tokens(smol_tokenizer, wait: int) -> None:
    """smollm2's tokenizer spells </think> as three tokens: the end of thinking is found by matching the
    decoded tail, stripped from the thinking, and not opened a second time."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smol_tokenizer
    close = tok.encode("</think>", add_special_tokens=False)
    assert len(close) == 3
    so, sp, four, two, dot = tok.encode("So 42.", add_special_tokens=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    ).eval()
    prompt = build_prompt(tok, FMT, "What is 6 times 7?")
    last = tok.encode(prompt, add_special_tokens=False)[-1]
    wait_ids = tok.encode(FMT.wait_text, add_special_tokens=False)
    script = {
        last: so,
        so: sp,
        sp: four,
        four: two,
        two: dot,
        dot: close[0],
        close[0]: close[1],
        close[1]: close[2],
        close[2]: four,
        wait_ids[-1]: so,
    }
    model = ScriptedModel(base, script)
    gen = TraceGenerator(model, tok, FMT, GREEDY)
    (res,) = gen.generate([GenRequest(key=0, prompt=prompt, budget=40, wait=wait, answer_max=2)])
    assert res.thinking_text.replace(FMT.wait_text, "").count("So 42.") == 1 + wait
    assert "</think>" not in res.thinking_text  # the delimiter is not thinking
    assert res.waits == wait and not res.budget_hit
    assert res.answer_ids == [four, two] and res.finish == "max_tokens"
    assert res.text.count("</think>") == 1 + wait  # written by the model; the opener is not fed again after it
