"""Synthetic reasoning traces in the shapes published reasoning models write them, for the text-only
ingest benchmark (bench_ingest.py) and its exactness test (tests/test_ingest_text.py).

    python benchmarks/make_traces.py --traces 10000 --out traces/     # traces/m0.jsonl … traces/m3.jsonl

The set is the study's protocol as vLLM (or s1's scripts) would write it for `layerprobe ingest`: 4
models × 30 AIME problems × 16 samples × thinking budgets 512, 1,024, 2,048, 4,096 and 8,192 tokens
(9,600 traces, each budget generated separately), then 400 unbudgeted traces (a parallel-scaling
arm, cap 32,768 tokens): 10,000 in all (a smaller --traces draws its traces from those 10,000). Models 0 and 1 write s1's shape (s1.1-7B through the s1 fork of
lm-evaluation-harness: the response opens with `<|im_start|>think`, ends its thinking at
`<|im_start|>answer`, and a budget-forced trace has `Final Answer:` spliced in where the budget ran
out), models 2 and 3 the think-tag shape (Qwen3-8B, DeepSeek-R1 distillations: `<think>` opened in
the prompt, thinking closed by `</think>`). One `--from jsonl` line per trace: id, prompt,
completion, gold, budget, sample, finish_reason; one file per model.

Lengths (decided before any timing): a trace's natural thinking length N is log-uniform between 1k
and 32k tokens; with budget b the thinking is min(N, b) (budget-forced when N > b: cut mid-sentence,
the forced answer spliced in), unbudgeted it ends on its own (an answer with a boxed integer) or, 1
in 10, is truncated by the 32k cap (no answer, its last quarter a repetition loop, finish_reason
"length"). So traces run from ~0.5k to 32k tokens, about 10 % of them 8k or longer. Tokens are
counted as words × 2.07 (what smollm2-135m's tokenizer gives on this LaTeX-heavy text). The text:
sentences of mathematical reasoning with inline LaTeX, numbers, paragraph breaks, and reflection
words ("Wait", "Hmm", "Let me check", "Alternatively") in about one sentence in twelve; no
published text is copied.

`--lengths wide` drops the budgets: every trace's length is N (1k-32k, 40 % of them 8k or longer),
a heavier set for the cost per token.

Every trace is a function of (seed, index, lengths) only, so the same call writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
MODELS, PROBLEMS, SAMPLES = 4, 30, 16
BUDGETS = (512, 1024, 2048, 4096, 8192)
PROTOCOL = MODELS * PROBLEMS * SAMPLES * len(BUDGETS)
MIN_TOKENS, MAX_TOKENS, CAP = 1000, 32000, 32768
TOKENS_PER_WORD = 2.07
P_TRUNCATED = 0.10

_NOUNS = [
    "the sum",
    "the product",
    "the remainder",
    "the area",
    "the triangle",
    "the circle",
    "the sequence",
    "the polynomial",
    "the root",
    "the coefficient",
    "the denominator",
    "the number of ways",
    "the angle",
    "the radius",
    "the side length",
    "the probability",
    "the expected value",
    "the function",
    "the set",
    "the graph",
    "the midpoint",
    "the inequality",
    "the term",
    "the exponent",
    "the base case",
]
_VERBS = ["equals", "is at most", "divides", "is congruent to", "gives", "must be", "simplifies to", "is bounded by"]
_OPENERS = [
    "So",
    "Then",
    "Now",
    "Therefore",
    "Next,",
    "In that case,",
    "This means",
    "Similarly,",
    "Also,",
    "Since",
    "If",
    "Because",
    "From here,",
    "Okay, so",
    "Let's see,",
    "First,",
    "Finally,",
    "Note that",
]
_REFLECT = [
    "Wait,",
    "Wait, but",
    "Hmm,",
    "Hmm.",
    "Let me check.",
    "Let me check that again.",
    "Alternatively,",
    "Actually,",
    "But wait,",
    "Let me verify.",
    "Hold on,",
    "Let me double-check.",
]
_QUESTIONS = [
    "Find the number of ordered pairs $(a, b)$ of positive integers with $a + b \\le {n}$ and $ab$ a perfect square.",
    "Let $N$ be the least positive integer whose digits sum to ${n}$. Find the remainder when $N$ is divided by $1000$.",
    "A sequence satisfies $a_1 = {n}$ and $a_{{k+1}} = a_k^2 - a_k + 1$. Find $a_{{10}} \\bmod 1000$.",
    "Triangle $ABC$ has $AB = {n}$, $BC = 14$ and $CA = 15$. Find the length of the altitude from $A$, as $m/n$.",
    "How many subsets of $\\{{1, 2, \\dots, {n}\\}}$ contain no two consecutive integers?",
]


def _math(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
    return rng.choice(
        [
            f"${a}x^2 + {b}x - {c} = 0$",
            f"$\\frac{{{a}}}{{{b}}}$",
            f"${a} \\cdot {b} = {a * b}$",
            f"$\\binom{{{a}}}{{{b % 7 + 1}}}$",
            f"$x_{{{b}}} = {c}$",
            f"${c} \\equiv {c % a} \\pmod{{{a}}}$",
            f"$\\sqrt{{{c}}}$",
            f"{a} + {b} = {a + b}",
            f"$({a} - {b})^2 = {(a - b) ** 2}$",
        ]
    )


def _sentence(rng: random.Random) -> str:
    parts = [rng.choice(_OPENERS), rng.choice(_NOUNS), rng.choice(_VERBS), _math(rng)]
    if rng.random() < 0.5:
        parts += ["and", rng.choice(_NOUNS), rng.choice(_VERBS), str(rng.randint(0, 2000))]
    if rng.random() < 0.3:
        parts += ["so", rng.choice(_NOUNS), "is", _math(rng)]
    return " ".join(parts) + rng.choice([".", ".", ".", "?", ":"])


def _thinking(rng: random.Random, n_words: int, loop: bool) -> str:
    """About n_words words of reasoning in paragraphs; with `loop` its last quarter repeats one paragraph."""
    paras: list[str] = []
    words = 0
    free = int(n_words * 0.75) if loop else n_words
    while words < free:
        sents = []
        for _ in range(rng.randint(2, 7)):
            s = _sentence(rng)
            if rng.random() < 0.08:
                s = rng.choice(_REFLECT) + " " + s[0].lower() + s[1:]
            sents.append(s)
        para = " ".join(sents)
        paras.append(para)
        words += para.count(" ") + 1
    if loop:
        again = paras[-1]
        while words < n_words:
            paras.append(again)
            words += again.count(" ") + 1
    return "\n\n".join(paras)


def _cut(text: str, rng: random.Random) -> str:
    """The text cut in the middle of a sentence near its end (where a budget runs out)."""
    at = len(text) - rng.randint(1, min(200, max(1, len(text) // 10)))
    return text[:at].rstrip()


def trace(seed: int, index: int, lengths: str = "protocol") -> dict[str, object]:
    """The index-th trace of a set (a function of seed, index and lengths only)."""
    rng = random.Random(seed * 1_000_003 + index)
    per_model = PROBLEMS * SAMPLES * len(BUDGETS)
    if index < PROTOCOL:
        model, rest = divmod(index, per_model)
        problem, rest = divmod(rest, SAMPLES * len(BUDGETS))
        sample, k = divmod(rest, len(BUDGETS))
        budget: int | None = BUDGETS[k] if lengths == "protocol" else None
    else:
        model, rest = (index - PROTOCOL) % MODELS, (index - PROTOCOL) // MODELS
        problem, sample = PROBLEMS + rest // SAMPLES, rest % SAMPLES  # the unbudgeted arm: problems of its own ids
        budget = None
    shape = "s1" if model < 2 else "think"
    pid = f"m{model}-aime-{problem:03d}"
    gold = rng.randint(0, 999)
    q = rng.choice(_QUESTIONS).format(n=rng.randint(10, 99))
    natural = math.exp(rng.uniform(math.log(MIN_TOKENS), math.log(MAX_TOKENS)))
    if budget is not None:
        kind = "forced" if natural > budget else "natural"
    else:
        kind = "truncated" if rng.random() < P_TRUNCATED else "natural"
    n_tokens = CAP if kind == "truncated" else min(natural, budget or natural)
    thinking = _thinking(rng, int(n_tokens / TOKENS_PER_WORD), loop=kind == "truncated")
    guess = gold if rng.random() < 0.6 else rng.randint(0, 999)
    answer = (
        f"The answer follows from the computation above.\n\n**Final Answer**\n\\[\n\\boxed{{{guess}}}\n\\]"
        if kind == "natural"
        else f" $\\boxed{{{guess}}}$"
    )
    prompt = f"{SYSTEM}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    if shape == "s1":
        if kind == "forced":
            completion = f"<|im_start|>think\n{_cut(thinking, rng)}\n<|im_start|>answer\nFinal Answer:{answer}"
        elif kind == "truncated":
            completion = f"<|im_start|>think\n{thinking}"
        else:
            completion = f"<|im_start|>think\n{thinking}\n<|im_start|>answer\nAnswer: {answer}"
    else:
        prompt += "<think>\n"
        if kind == "forced":
            completion = f"{_cut(thinking, rng)}\n</think>\n\n{answer}"
        elif kind == "truncated":
            completion = thinking
        else:
            completion = f"{thinking}\n</think>\n\n{answer}"
    row: dict[str, object] = {
        "id": pid,
        "prompt": prompt,
        "completion": completion,
        "gold": str(gold),
        "sample": sample,
        "finish_reason": "length" if kind == "truncated" else "stop",
    }
    if budget is not None:
        row["budget"] = budget
    return row


def model_of(index: int) -> int:
    """Which of the MODELS wrote the index-th trace."""
    return index // (PROBLEMS * SAMPLES * len(BUDGETS)) if index < PROTOCOL else (index - PROTOCOL) % MODELS


FULL = 10_000
"""The set's size: the protocol's 9,600 traces and 400 unbudgeted ones."""


def indices(n: int) -> list[int]:
    """The traces of an n-trace set: all of them from FULL on, else n drawn at random (seeded by n) from
    the full set, in order (every model, budget and the unbudgeted arm in proportion)."""
    return list(range(n)) if n >= FULL else sorted(random.Random(n).sample(range(FULL), n))


def write(out: Path, n: int, seed: int = 0, lengths: str = "protocol") -> list[Path]:
    """m0.jsonl … m3.jsonl under `out` with the n traces of `indices(n)`; returns the paths of those
    that hold any."""
    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"m{m}.jsonl", "w", encoding="utf-8") for m in range(MODELS)]
    used = set()
    try:
        for i in indices(n):
            files[model_of(i)].write(json.dumps(trace(seed, i, lengths)) + "\n")
            used.add(model_of(i))
    finally:
        for f in files:
            f.close()
    for m in set(range(MODELS)) - used:
        (out / f"m{m}.jsonl").unlink()
    return [out / f"m{m}.jsonl" for m in sorted(used)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=FULL)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lengths", choices=("protocol", "wide"), default="protocol")
    ap.add_argument("--out", type=Path, default=Path("traces"))
    args = ap.parse_args()
    paths = write(args.out, args.traces, args.seed, args.lengths)
    for p in paths:
        print(f"{p}: {p.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
