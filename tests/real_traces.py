"""Reasoning traces in the shapes real producers publish them, written for these tests (no published
data is copied): long thinking with LaTeX, several "Wait"s and other reflection words, budget cuts,
and the delimiters of each format. Every builder returns the text and what a careful reader finds in
it, so the tests check ingest against values set here, not computed by layerprobe.

Also a small Qwen-like checkpoint: a byte-level BPE tokenizer trained on these texts (with ChatML and
think-tag special tokens) and a tiny random Qwen2 model of the same vocabulary, so the traces are
counted and probed by a real subword tokenizer, offline, in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PROBLEMS = {
    "p-powers": ("Find the remainder when $7^{2024}$ is divided by $100$.", "1"),
    "p-rectangle": ("A rectangle has perimeter $56$ and area $192$. How long is its diagonal?", "20"),
    "p-divisors": ("How many positive divisors does $3600$ have?", "45"),
}
SYSTEM = "<|im_start|>system\nYou are a careful mathematician.<|im_end|>\n"


def chatml(question: str) -> str:
    """The prompt a ChatML model (Qwen2.5, s1.1) is given, up to the assistant turn."""
    return f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class Thinking:
    """A thinking text and what it contains."""

    text: str
    waits: int
    hmms: int
    let_me_check: int


def thinking(pid: str, rounds: int = 40, waits: int = 4) -> Thinking:
    """A long chain of reasoning about problem `pid`: an opening, `rounds` paragraphs of LaTeX-heavy
    computation (each a few hundred characters), `waits` of them followed by a "Wait" reflection, a
    "Hmm" after every third, and a closing check. It never states a final answer phrase or a box."""
    opening = {
        "p-powers": "Okay, so I need the last two digits of $7^{2024}$. Powers of $7$ modulo $100$ should cycle quickly.",
        "p-rectangle": "Okay, let me set the sides to $a$ and $b$. Then $2(a+b) = 56$ and $ab = 192$.",
        "p-divisors": "Okay, I should factor $3600$ into primes first, then use the divisor-count formula.",
    }[pid]
    paras = [opening]
    n_wait = n_hmm = 0
    for r in range(rounds):
        k = r + 2
        paras.append(
            f"Step {k}: consider $x_{{{k}}} = {k}^2 + {3 * k} = {k * k + 3 * k}$, and then "
            f"$\\frac{{x_{{{k}}}}}{{{k}}} = {k + 3}$. So the sequence grows like \\( {k}n + {k * 7 % 11} \\) "
            f"for the terms I care about, and the residue of {k * k * 7} modulo {k + 90} is {(k * k * 7) % (k + 90)}. "
            f"This does not yet settle the question, so I keep going with the next case."
        )
        if r < waits:
            paras.append(
                f"Wait, I should recompute the residue in step {k}: {k * k * 7} = {k + 90} times "
                f"{(k * k * 7) // (k + 90)} plus {(k * k * 7) % (k + 90)}, fine."
            )
            n_wait += 1
        if r % 3 == 2:
            paras.append("Hmm, that matches what I expected so far.")
            n_hmm += 1
    paras.append("Let me check the whole argument once more from the start before writing it up.")
    return Thinking("\n\n".join(paras), n_wait, n_hmm, 1)


def answer(pid: str, style: str = "boxed", wrong: bool = False) -> str:
    """The answer part a model writes after its thinking, stating the gold answer (or a wrong one)."""
    value = PROBLEMS[pid][1] if not wrong else str(int(PROBLEMS[pid][1]) + 7)
    if style == "boxed":
        return f"Putting it together, the computation gives ${value}$.\n\nThe final answer is $\\boxed{{{value}}}$."
    if style == "s1":
        return f"Answer: Combining the steps, the result is ${value}$, so the answer is $\\boxed{{{value}}}$."
    raise ValueError(style)


# ---------------------------------------------------------------------------------------------
# the shapes


def s1_fork_samples(path: Path) -> dict[str, dict]:
    """samples_<task>_<date>.jsonl as the s1 fork of lm-evaluation-harness writes it (budget forcing with
    one "Wait"): every document twice (once per filter, no `filter` key), `resps[0]` holding 3 samples.
    Returns, per problem id, what each sample is."""
    rows, truth = [], {}
    for doc_id, (pid, (question, gold)) in enumerate(PROBLEMS.items()):
        th = thinking(pid)
        natural = f"<|im_start|>think\n{th.text}\n<|im_start|>answer\n{answer(pid, 's1')}"
        # the thinking budget ran out mid-sentence: the fork splices its forced answer in; the model
        # answers, re-opens its thinking, and answers again (the last answer is its final one)
        cut = th.text[: len(th.text) // 2].rsplit(" ", 1)[0]
        forced = (
            f"<|im_start|>think\n{cut}\n<|im_start|>answer\nFinal Answer: $\\boxed{{{int(gold) + 7}}}$\n"
            f"<|im_start|>think\nContinuing from the previous steps, I recheck the last residue.\n\n"
            f"<|im_start|>answer\n{answer(pid, 's1')}"
        )
        # thinking_n_ignore=1: the model's first end of thinking was removed and "Wait" put in its place
        ignored = f"<|im_start|>think\n{th.text}\nWait, let me reconsider the last step.\n<|im_start|>answer\n{answer(pid, 's1', wrong=True)}"
        resps = [natural, forced, ignored]
        truth[f"aime_nofig-{doc_id}"] = {"pid": pid, "thinking": th, "cut": cut, "gold": gold}
        for metric in ({"exact_match": 1, "extracted_answers": [gold, gold, str(int(gold) + 7)]}, {"exact_match": 0}):
            rows.append(
                {
                    "doc_id": doc_id,
                    "doc": {"id": pid, "problem": question, "answer": gold},
                    "target": gold,
                    "arguments": {
                        "gen_args_0": {
                            "arg_0": chatml(question),
                            "arg_1": {
                                "until": [],
                                "do_sample": False,
                                "temperature": 0.0,
                                "max_gen_toks": 32768,
                                "max_tokens_thinking": 8000,
                                "thinking_n_ignore": 1,
                                "thinking_n_ignore_str": "Wait",
                            },
                        }
                    },
                    "resps": [resps],
                    "filtered_resps": [resps[0]],
                    "doc_hash": f"d{doc_id}",
                    "prompt_hash": f"p{doc_id}",
                    "target_hash": f"t{doc_id}",
                    **metric,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {
        "config": {"model": "vllm", "model_args": "pretrained=simplescaling/s1.1-7B,dtype=bfloat16,tensor_parallel_size=1"},
    }
    (path.parent / ("results_" + path.stem.rsplit("_", 1)[-1] + ".json")).write_text(json.dumps(results))
    return truth


def lm_eval_samples(path: Path, completions: dict[str, str], prompt_suffix: str = "", max_gen_toks: int = 32768) -> None:
    """An upstream lm-evaluation-harness 0.4 samples file (one line per document and filter, `filter`
    and `metrics` keys) with one completion per problem."""
    rows = []
    for doc_id, (pid, completion) in enumerate(completions.items()):
        question, gold = PROBLEMS[pid]
        for filt in ("strict-match", "flexible-extract"):
            rows.append(
                {
                    "doc_id": doc_id,
                    "doc": {"question": question},
                    "target": gold,
                    "arguments": {
                        "gen_args_0": {
                            "arg_0": chatml(question) + prompt_suffix,
                            "arg_1": {"until": [], "do_sample": True, "temperature": 0.6, "max_gen_toks": max_gen_toks},
                        }
                    },
                    "resps": [[completion]],
                    "filtered_resps": [completion[-20:]],
                    "filter": filt,
                    "metrics": ["exact_match"],
                    "doc_hash": "h",
                    "prompt_hash": "p",
                    "target_hash": "t",
                    "exact_match": 0.0 if filt == "strict-match" else 1.0,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def vllm_chat_response(
    pid: str, reasoning: str | None, content: str | None, finish: str, field: str = "reasoning_content"
) -> dict:
    """One chat completion as vLLM's OpenAI-compatible server returns it with a reasoning parser
    (`--reasoning-parser deepseek_r1`), saved one response per line: the thinking in
    `message.reasoning_content` (newer servers: `reasoning`), the answer in `message.content`, which is
    null when the length cap stopped the model inside its thinking (`finish_reason: "length"`)."""
    question, _ = PROBLEMS[pid]
    message = {"role": "assistant", "content": content, "tool_calls": [], field: reasoning}
    if field == "reasoning":
        message["reasoning_content"] = None  # servers that renamed the field keep the old one, null
    return {
        "id": pid,
        "messages": [{"role": "user", "content": question}],
        "gold": PROBLEMS[pid][1],
        "response": {
            "id": f"chatcmpl-{pid}",
            "object": "chat.completion",
            "created": 1767225600,
            "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}],
            "usage": {"prompt_tokens": 41, "total_tokens": 8233, "completion_tokens": 8192},
            "prompt_logprobs": None,
        },
    }


def reasoning_record(pid: str, thinking_text: str, content: str | None, finish: str, **extra: object) -> dict:
    """A flat line as a batch script over vLLM's offline reasoning parser writes it: the prompt, then
    `reasoning_content`, `content` (null when the model was cut while thinking) and `finish_reason`."""
    question, gold = PROBLEMS[pid]
    return {
        "id": pid,
        "prompt": chatml(question) + "<think>\n",
        "reasoning_content": thinking_text,
        "content": content,
        "finish_reason": finish,
        "gold": gold,
        **extra,
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------
# a Qwen-like tokenizer and a tiny model with its vocabulary


def corpus() -> list[str]:
    texts = []
    for pid, (q, _) in PROBLEMS.items():
        th = thinking(pid)
        texts += [chatml(q), th.text, answer(pid), answer(pid, "s1"), answer(pid, wrong=True)]
    texts += ["**Final Answer**", '{"answer": "B"}', "Answer: (B)", "#### 72", "think", "answer"]
    return texts


def qwen_like_checkpoint(path: Path, context: int = 32768) -> Path:
    """A checkpoint directory: a byte-level BPE (ChatML and think tags as special tokens, ChatML
    template) and a tiny random Qwen2 model with that vocabulary and `context` positions."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    tok.add_tokens(["<think>", "</think>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=context,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path, safe_serialization=True)
    return path
