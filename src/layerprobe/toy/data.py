"""Training examples for the toy: token ids, loss labels, reflection and re-check variants."""

from __future__ import annotations

import random
from dataclasses import dataclass

from layerprobe.toy.tasks import MAX_STEPS, ToyProblem, apply_op, random_chain, random_fact
from layerprobe.toy.vocab import BOXED_CLOSE, BOXED_OPEN, EOS, Q_CLOSE, Q_OPEN, THINK_CLOSE, THINK_OPEN, VOCAB, WAIT

IGNORE = -100
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}


@dataclass(frozen=True)
class DataMix:
    """Shares of the training mixture."""

    facts: float = 0.25
    wait_correction: float = 0.10  # chain traces with one wrong value, then "Wait" and the right one
    recheck: float = 0.15  # chain traces that end with "let me check" and the last step again


def encode_example(problem: ToyProblem, rng: random.Random, mix: DataMix) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one training trace; labels are IGNORE on the prompt and on injected errors."""
    prompt = [Q_OPEN, *problem.prompt.split(), Q_CLOSE, THINK_OPEN]
    think: list[str] = []
    masked: set[int] = set()  # positions within `think` excluded from the loss
    if problem.kind == "chain":
        value = problem.start
        assert value is not None
        wrong_at = rng.randrange(problem.steps) if rng.random() < mix.wait_correction else -1
        for i, op in enumerate(problem.ops):
            new = apply_op(value, op)
            step = [f"s{i + 1}", str(value), op, "="]
            if i == wrong_at:
                wrong = rng.choice([d for d in range(10) if d != new])
                think += step
                masked.add(len(think))
                think += [str(wrong), WAIT, ",", str(value), op, "=", str(new)]
            else:
                think += [*step, str(new)]
            last_step = (i, value, op, new)
            value = new
        if rng.random() < mix.recheck:
            i, v, op, new = last_step
            think += ["let", "me", "check", f"s{i + 1}", str(v), op, "=", str(new)]
    else:
        think = problem.thinking.split()
    tail = [THINK_CLOSE, BOXED_OPEN, problem.answer, BOXED_CLOSE, EOS]
    words = prompt + think + tail
    ids = [TOKEN_ID[w] for w in words]
    labels = [IGNORE] * len(prompt)
    labels += [IGNORE if j in masked else TOKEN_ID[w] for j, w in enumerate(think)]
    labels += [TOKEN_ID[w] for w in tail]
    # labels are aligned with inputs; the model shifts them internally
    return ids, labels


def sample_training_problem(rng: random.Random, max_k: int, mix: DataMix) -> ToyProblem:
    """A training problem (never from the held-out test split)."""
    from layerprobe.toy.tasks import is_test_prompt

    while True:
        p = random_fact(rng) if rng.random() < mix.facts else random_chain(rng, rng.randint(1, max_k))
        if p.kind == "fact" or not is_test_prompt(p.prompt):
            return p


def batches(rng: random.Random, max_k: int, mix: DataMix, tokens_per_batch: int = 4096, pool: int = 512):
    """Yield (ids, labels, attention_mask) lists of length-grouped, right-padded batches."""
    max_k = max(1, min(MAX_STEPS, max_k))
    examples = [encode_example(sample_training_problem(rng, max_k, mix), rng, mix) for _ in range(pool)]
    examples.sort(key=lambda e: len(e[0]))
    groups, cur = [], []
    for ex in examples:
        width = max(len(ex[0]), max((len(e[0]) for e in cur), default=0))
        if cur and width * (len(cur) + 1) > tokens_per_batch:
            groups.append(cur)
            cur = []
        cur.append(ex)
    if cur:
        groups.append(cur)
    rng.shuffle(groups)
    for group in groups:
        width = max(len(e[0]) for e in group)
        ids = [e[0] + [0] * (width - len(e[0])) for e in group]
        labels = [e[1] + [IGNORE] * (width - len(e[1])) for e in group]
        mask = [[1] * len(e[0]) + [0] * (width - len(e[0])) for e in group]
        yield ids, labels, mask
