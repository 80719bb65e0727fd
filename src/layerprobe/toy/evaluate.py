"""Evaluate a toy checkpoint: accuracy by task type and chain length, greedy and sampled, and what
the "Wait" corrections in its traces actually do."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from layerprobe.toy.tasks import ToyProblem, apply_op, sample_problems
from layerprobe.toy.vocab import THINK_CLOSE, THINK_OPEN

BOXED = re.compile(r"\\boxed\{\s*(\d)\s*\}")
STEP = re.compile(r"s(\d+) (\d) ([+\-*]\d) = (\d)( Wait , (\d) ([+\-*]\d) = (\d))?")


def toy_prompt(tokenizer, problem: ToyProblem) -> str:
    """Chat-formatted prompt with the thinking block opened (the think-tags convention)."""
    chat = tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}], tokenize=False, add_generation_prompt=True)
    return chat + THINK_OPEN


def extract_answer(completion: str) -> str | None:
    """The digit in the first \\boxed{} after the thinking block, or None."""
    tail = completion.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in completion else ""
    m = BOXED.search(tail)
    return m.group(1) if m else None


@dataclass
class TraceAudit:
    """Step-level reading of one toy trace."""

    steps: int = 0
    step_errors: int = 0  # steps whose written result is not op(value)
    waits: int = 0
    waits_after_error: int = 0
    waits_fixing: int = 0  # Wait after a wrong result, followed by the right one
    waits_after_correct: int = 0


def audit_trace(thinking: str) -> TraceAudit:
    """Check every `sN v op = r` step (and its `Wait , v op = r'` correction) for local correctness."""
    a = TraceAudit()
    for m in STEP.finditer(thinking):
        v, op, r = int(m.group(2)), m.group(3), int(m.group(4))
        a.steps += 1
        ok = apply_op(v, op) == r
        if m.group(5):
            a.waits += 1
            if ok:
                a.waits_after_correct += 1
            else:
                a.waits_after_error += 1
                v2, op2, r2 = int(m.group(6)), m.group(7), int(m.group(8))
                if apply_op(v2, op2) == r2:
                    a.waits_fixing += 1
            ok = apply_op(int(m.group(6)), m.group(7)) == int(m.group(8))
        a.step_errors += 0 if ok else 1
    a.waits = thinking.count("Wait")  # Waits outside the step pattern count too
    return a


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 64) -> list[str]:
    """Completions (decoded, special tokens kept) for each prompt; greedy when temperature is 0."""
    outs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        kw = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        if temperature > 0:
            torch.manual_seed(seed + start)
            kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            kw.update(do_sample=False)
        gen = model.generate(**enc.to(model.device), **kw)
        new = gen[:, enc.input_ids.shape[1] :]
        outs += tokenizer.batch_decode(new, skip_special_tokens=False)
    return [o.replace("<pad>", "").strip() for o in outs]


@dataclass
class EvalResult:
    """Accuracy tables of a toy evaluation."""

    greedy: dict[str, float] = field(default_factory=dict)  # task type -> accuracy
    greedy_by_k: dict[int, float] = field(default_factory=dict)
    sampled: dict[str, float] = field(default_factory=dict)  # mean single-sample accuracy
    maj: dict[str, float] = field(default_factory=dict)  # maj@n
    n_problems: dict[str, int] = field(default_factory=dict)
    audit: dict[str, float] = field(default_factory=dict)


def evaluate(model, tokenizer, task_types: list[str], n: int = 100, samples: int = 8, temperature: float = 0.8,
             seed: int = 0, max_new_tokens: int = 200) -> EvalResult:
    """Greedy and sampled accuracy per task type on held-out problems, maj@`samples`, Wait audit."""
    res = EvalResult()
    by_k: dict[int, list[bool]] = {}
    audits = TraceAudit()
    n_traces = 0
    for tt in task_types:
        probs = sample_problems(tt, n, seed=seed)
        res.n_problems[tt] = len(probs)
        prompts = [toy_prompt(tokenizer, p) for p in probs]
        greedy = generate(model, tokenizer, prompts, max_new_tokens)
        ok = [extract_answer(c) == p.answer for c, p in zip(greedy, probs)]
        res.greedy[tt] = sum(ok) / len(ok)
        for p, o in zip(probs, ok):
            if p.kind == "chain":
                by_k.setdefault(p.steps, []).append(o)
        if samples > 0:
            rep = [pr for pr in prompts for _ in range(samples)]
            sampled = generate(model, tokenizer, rep, max_new_tokens, temperature=temperature, seed=seed + 1)
            answers = [extract_answer(c) for c in sampled]
            single, maj = [], []
            for i, p in enumerate(probs):
                mine = answers[i * samples : (i + 1) * samples]
                single += [a == p.answer for a in mine]
                counts = Counter(a for a in mine if a is not None)
                if counts:
                    best = max(counts.values())
                    winner = next(a for a in mine if a is not None and counts[a] == best)  # ties: earliest
                    maj.append(winner == p.answer)
                else:
                    maj.append(False)
            res.sampled[tt] = sum(single) / len(single)
            res.maj[tt] = sum(maj) / len(maj)
            for c in sampled:
                a = audit_trace(c.split(THINK_CLOSE, 1)[0])
                n_traces += 1
                for f in ("steps", "step_errors", "waits", "waits_after_error", "waits_fixing", "waits_after_correct"):
                    setattr(audits, f, getattr(audits, f) + getattr(a, f))
    res.greedy_by_k = {k: sum(v) / len(v) for k, v in sorted(by_k.items())}
    if n_traces:
        res.audit = {
            "sampled_traces": n_traces,
            "steps": audits.steps,
            "step_error_rate": audits.step_errors / max(1, audits.steps),
            "waits_per_trace": audits.waits / n_traces,
            "waits": audits.waits,
            "waits_after_error": audits.waits_after_error,
            "waits_fixing_error": audits.waits_fixing,
            "waits_after_correct_value": audits.waits_after_correct,
        }
    return res


def budget_curve(model, tokenizer, task_type: str, budgets: list[int], n: int = 100, seed: int = 0,
                 batch_size: int = 64) -> dict[int, float]:
    """Greedy accuracy at each thinking budget through the scaling engine (think-tags budget forcing).

    Runs the same code path as `layerprobe analyze`: the thinking block is cut at B tokens and the
    answer forced with the format's suffix.
    """
    from layerprobe.scaling.engine import GenRequest, TraceGenerator
    from layerprobe.scaling.formats import FORMATS, Sampling

    fmt = FORMATS["think-tags"]
    gen = TraceGenerator(model, tokenizer, fmt, Sampling(temperature=0.0))
    probs = sample_problems(task_type, n, seed=seed)
    prompts = [toy_prompt(tokenizer, p) for p in probs]
    out: dict[int, float] = {}
    for b in budgets:
        reqs = [GenRequest(key=i, prompt=pr, budget=b, answer_max=8) for i, pr in enumerate(prompts)]
        res = gen.generate(reqs, batch_size=batch_size)
        out[b] = sum(BOXED.search(r.answer_text) is not None and BOXED.search(r.answer_text).group(1) == p.answer
                     for r, p in zip(res, probs)) / len(probs)
    return out
