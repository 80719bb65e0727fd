"""The scaling engine on an s1-format (s1.1, Qwen2.5 ChatML) tokenizer with real special tokens.

test_scaling_engine.py covers the same rules on a word-level think-tags vocabulary; here the
tokenizer is byte-level BPE like Qwen's, so `<|im_start|>` only stays one token because it is a
registered special token, and the forced text mixes special tokens, newlines and words.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from layerprobe.errors import UserError
from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt, format_tokens
from layerprobe.scaling.formats import FORMATS, Sampling, detect_format, sniff_format
from tests.helpers import tiny_tokenizer
from tests.scripted import ScriptedModel
from tests.test_scaling_engine import expected_script_trace

S1 = FORMATS["s1"]
GREEDY = Sampling(temperature=0.0)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ["think", "answer", "Final", "ĠAnswer", "Wait", "system", "user", "assistant", "Ġalpha", "Ġbeta", "Ġ42", "ĠWhat", "Ġis"]

# Qwen2.5-Instruct's template (the one s1.1-7B ships), without tools: default system prompt, ChatML turns.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The same, for an s1-style checkpoint whose template writes the thinking delimiters itself: assistant
# turns as think/answer, and the generation prompt opens thinking.
S1_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n<|im_start|>think\\n' + m['reasoning_content'] + '<|im_start|>answer\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<|im_start|>think\\n' }}{%- endif %}"
)


def chatml_tokenizer(template: str = QWEN25_TEMPLATE, specials: bool = True, think_tags: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE (Qwen's pre-tokenizer and decoder): the 256 byte symbols, a few whole words, and
    the ChatML special tokens registered as special (they are never split)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(alphabet + WORDS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))  # whole words by lookup, else bytes
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    kw = {}
    if specials:
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if think_tags:  # Qwen3: ChatML plus <think> tokens (added, not special)
        tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in ("<think>", "</think>")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **kw)


TOK = chatml_tokenizer()
TOK_S1 = chatml_tokenizer(S1_TEMPLATE)


def enc(text: str, tok: PreTrainedTokenizerFast = TOK) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


ID = {s: TOK.convert_tokens_to_ids(s) for s in SPECIALS + WORDS} | {"\n": enc("\n")[0], ":": enc(":")[0]}


def tiny_chatml_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(TOK),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=ID["<|endoftext|>"],
        bos_token_id=None,
        eos_token_id=ID["<|im_end|>"],
    )
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)  # not a flat tie-break under greedy decoding
    return model.eval()


def script_model(answer_stops: bool = True) -> ScriptedModel:
    # Thinking: " alpha beta" then <|im_start|> (s1's end of thinking); after "Wait" the model restarts
    # " alpha beta". The natural answer opener ends in "\n" like the prompt, so the answer starts the same
    # way; <|im_start|> inside the answer does not stop it, the model then emits <|im_end|>. After the
    # forced "Final Answer:" it says " 42" and stops. With answer_stops False neither answer ever stops.
    script = {
        ID["\n"]: ID["Ġalpha"],
        ID["Ġalpha"]: ID["Ġbeta"],
        ID["Ġbeta"]: ID["<|im_start|>"],
        ID["Wait"]: ID["Ġalpha"],
        ID["<|im_start|>"]: ID["<|im_end|>"] if answer_stops else ID["Ġalpha"],
        ID[":"]: ID["Ġ42"],
        ID["Ġ42"]: ID["<|im_end|>"] if answer_stops else ID["Ġ42"],
    }
    return ScriptedModel(tiny_chatml_model(), script).eval()


def prompts(n: int, tok: PreTrainedTokenizerFast = TOK) -> list[str]:
    return [build_prompt(tok, S1, "What is" + " alpha" * (1 + i % 4) + "?") for i in range(n)]


def contains(seq: list[int], sub: list[int]) -> int:
    return sum(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_forced_text_is_real_special_tokens():
    ft = format_tokens(TOK, tiny_chatml_model(), S1)
    assert ft.end_think == {ID["<|im_start|>"]}
    assert {ID["<|im_end|>"], ID["<|endoftext|>"]} <= ft.answer_stop
    assert ft.answer_open == [ID["<|im_start|>"], ID["answer"], ID["\n"]]
    assert ft.forced_answer == [ID["\n"], ID["<|im_start|>"], ID["answer"], ID["\n"], ID["Final"], ID["ĠAnswer"], ID[":"]]
    assert ft.wait == [ID["Wait"]]
    assert TOK.decode(ft.forced_answer) == S1.forced_answer
    assert ft.pad == ID["<|endoftext|>"]
    # the prompt: ChatML turn, assistant generation prompt, then thinking opened with the special token
    p = prompts(1)[0]
    assert p.endswith("<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n")
    assert enc(p)[-3:] == [ID["<|im_start|>"], ID["think"], ID["\n"]]
    assert enc(p).count(ID["<|im_start|>"]) == 4  # system, user, assistant, think


def test_split_delimiters_are_forced_piecewise():
    # without registered special tokens, "<|im_start|>" is a string of several tokens: the format still
    # works (the end of thinking is matched on the decoded tail, the forced text fed token by token)
    plain = chatml_tokenizer(specials=False)
    assert len(enc("<|im_start|>", plain)) > 1
    gen = TraceGenerator(tiny_chatml_model(), plain, S1, GREEDY)
    prompt = build_prompt(plain, S1, "What is alpha?")
    (res,) = gen.generate([GenRequest(key=0, prompt=prompt, budget=5, answer_max=3)])
    assert res.thinking_tokens == 5 and res.budget_hit
    forced = enc(S1.answer_open, plain)
    after = res.all_ids[5:]
    at = next(i for i in range(len(after)) if after[i : i + len(forced)] == forced)  # the whole opener, every token
    assert at <= 1  # right after the thinking (at most a forced newline before it)
    assert res.answer_tokens <= 3


def test_format_detection():
    # an s1-style template (it writes <|im_start|>think / answer) is detected as s1
    assert detect_format(TOK_S1).name == "s1"
    assert sniff_format(TOK_S1) == "s1"
    # s1.1 ships Qwen2.5's plain ChatML template: indistinguishable from any chat model, so it must be
    # named (the s1.1-7b alias does) rather than guessed
    with pytest.raises(UserError, match="pass --format"):
        detect_format(TOK)
    assert sniff_format(TOK) is None
    assert detect_format(TOK, "s1").name == "s1"
    # ChatML with <think> tokens (Qwen3) is think-tags, never s1 (docs/definitions.md#reasoning-formats), whatever the template
    qwen3 = chatml_tokenizer(S1_TEMPLATE, think_tags=True)
    assert detect_format(qwen3).name == "think-tags" and sniff_format(qwen3) == "think-tags"
    assert detect_format(tiny_tokenizer()).name == "think-tags"


def test_prompt_opened_once_when_the_template_opens_thinking():
    # the s1 template's generation prompt already ends in "<|im_start|>think\n": it must not be doubled
    assert prompts(1, TOK_S1) == prompts(1, TOK)
    assert prompts(1, TOK_S1)[0].count("<|im_start|>think\n") == 1
    r1 = tiny_tokenizer()  # DeepSeek-R1-Distill's template ends its generation prompt in "<think>\n" too
    r1.chat_template = "{{- messages[0]['content'] }}{%- if add_generation_prompt %}{{- ' <s> <think>\n' }}{%- endif %}"
    assert build_prompt(r1, FORMATS["think-tags"], "w10") == "w10 <s> <think>\n"


def test_natural_end_and_wait_exactly_n_times():
    gen = TraceGenerator(script_model(), TOK, S1, GREEDY)
    reqs = [GenRequest(key=w, prompt=p, budget=100, wait=w) for w, p in zip([0, 1, 2, 5], prompts(4))]
    a, b, wait, start, end = ID["Ġalpha"], ID["Ġbeta"], ID["Wait"], ID["<|im_start|>"], ID["<|im_end|>"]
    for req, res in zip(reqs, gen.generate(reqs, batch_size=4)):
        thinking = [a, b] + [wait, a, b] * req.wait
        assert res.waits == req.wait and res.thinking_ids == thinking
        assert not res.budget_hit and res.finish == "answered"
        # the early <|im_start|> is replaced by "Wait"; the last one by the full answer opener
        assert res.all_ids == thinking + [start, ID["answer"], ID["\n"]] + [a, b, start, end]
        assert res.answer_ids == [a, b, start]
        assert res.text.count("<|im_start|>answer\n") == 1 and "Final Answer:" not in res.text
        assert res.thinking_text == " alpha beta" + "Wait alpha beta" * req.wait


def test_budget_exact_and_forced_suffix_exactly_when_hit():
    gen = TraceGenerator(script_model(), TOK, S1, GREEDY)
    forced = enc(S1.forced_answer)
    opener = enc(S1.answer_open)
    reqs = [GenRequest(key=bud, prompt=prompts(1)[0], budget=bud, wait=10) for bud in range(0, 14)]
    for req, res in zip(reqs, gen.generate(reqs, batch_size=5)):
        thinking, waits, hit = expected_script_trace(req.budget, req.wait)  # same script shape: 2 tokens, 1-token Wait
        assert (res.thinking_tokens, res.waits, res.budget_hit) == (thinking, waits, hit), req.budget
        assert res.thinking_tokens <= req.budget
        assert ID["<|im_start|>"] not in res.thinking_ids
        n = res.thinking_tokens
        if hit:
            assert res.thinking_tokens == req.budget
            assert res.all_ids[n:] == forced + [ID["Ġ42"], ID["<|im_end|>"]]
            assert res.text.count(S1.forced_answer) == 1 and res.answer_text == " 42"
            assert res.finish == "budget"
        else:
            assert contains(res.all_ids, forced) == 0 and "Final Answer:" not in res.text
            assert res.all_ids[n : n + len(opener)] == opener
            assert res.finish == "answered"


@pytest.mark.parametrize("budget", [1, 50])  # forced answer, natural answer
def test_answer_cap_respected(budget: int):
    gen = TraceGenerator(script_model(answer_stops=False), TOK, S1, GREEDY)
    prompt = prompts(1)[0]
    (res,) = gen.generate([GenRequest(key=0, prompt=prompt, budget=budget, answer_max=5)])
    assert res.finish == "max_tokens" and res.answer_tokens == 5
    assert res.budget_hit == (budget == 1)
    assert res.all_ids[-len(res.answer_ids) :] == res.answer_ids  # nothing after the cap


def test_random_model_budgets_and_caps():
    gen = TraceGenerator(tiny_chatml_model(seed=3), TOK, S1, GREEDY)
    forced = enc(S1.forced_answer)
    stops = format_tokens(TOK, gen.model, S1).answer_stop | {ID["<|im_start|>"]}
    budgets = [0, 1, 2, 5, 9, 17, 33]
    reqs = [GenRequest(key=i, prompt=p, budget=bud, answer_max=6, wait=2) for i, (p, bud) in enumerate(zip(prompts(7), budgets))]
    results = gen.generate(reqs, batch_size=3)
    assert any(r.budget_hit for r in results)
    for req, res in zip(reqs, results):
        assert res.thinking_tokens <= req.budget and res.answer_tokens <= req.answer_max
        assert not stops & set(res.thinking_ids)  # no delimiter or EOS is ever counted as thinking
        assert res.budget_hit == (contains(res.all_ids, forced) == 1)
        if res.budget_hit:
            assert res.thinking_tokens == req.budget
            assert res.all_ids[res.thinking_tokens : res.thinking_tokens + len(forced)] == forced
        assert res.finish in ("answered", "budget", "max_tokens")
        assert (res.finish == "budget") == (res.budget_hit and res.answer_tokens < req.answer_max)
