"""Training examples for the toy: token ids, loss labels, reflection and re-check variants."""

from __future__ import annotations

import random
from dataclasses import dataclass

from layerprobe.toy.tasks import (
    MAX_STEPS,
    ToyProblem,
    apply_op,
    random_chain,
    random_fact,
)
from layerprobe.toy.vocab import (
    BOXED_CLOSE,
    BOXED_OPEN,
    EOS,
    Q_CLOSE,
    Q_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    VOCAB,
    WAIT,
)

IGNORE = -100
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}


@dataclass(frozen=True)
class DataMix:
    """Shares of the training mixture and the noise of its derivations.

    Chain traces are noisy the way written solutions are: each step writes a wrong value with
    probability `step_error` (a uniformly drawn wrong digit, kept in the loss, so the model learns
    to err at about that rate when sampling at temperature 1). A wrong value is caught with
    probability `caught`: "Wait , v op = right" follows and the chain goes on from the right value;
    otherwise the chain goes on from the wrong value and the boxed answer is the value the trace
    reaches. Greedy decoding still takes the right value at every step.
    """

    facts: float = 0.25
    step_error: float = 0.05
    caught: float = 0.5
    recheck: float = 0.15  # traces whose last step is right end with "let me check" and that step again
    #: Per step, the probability of an extra wrong value that is masked from the loss (so the model
    #: does not learn to write it) and always caught: it teaches noticing a wrong value, not making one.
    masked_error: float = 0.0
    #: False: the non-reasoning twin (`toy-direct`): empty thinking (`<think> </think>`), then the right
    #: answer boxed; the noise and re-check settings above then have nothing to act on.
    thinking: bool = True


def encode_example(problem: ToyProblem, rng: random.Random, mix: DataMix) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one training trace; labels are IGNORE on the prompt and on masked
    (injected, always caught) wrong values."""
    prompt = [Q_OPEN, *problem.prompt.split(), Q_CLOSE, THINK_OPEN]
    think: list[str] = []
    masked: set[int] = set()  # positions within `think` left out of the loss
    answer = problem.answer
    if problem.kind == "chain" and mix.thinking:
        value = problem.start
        assert value is not None
        operand, ok = value, True  # the last step's operand, and whether its written result is right
        for i, op in enumerate(problem.ops):
            right = apply_op(value, op)
            think += [f"s{i + 1}", str(value), op, "="]
            operand = value
            if mix.masked_error and rng.random() < mix.masked_error:
                wrong = rng.choice([d for d in range(10) if d != right])
                masked.add(len(think))
                think += [str(wrong), WAIT, ",", str(value), op, "=", str(right)]
                value, ok = right, True
            elif rng.random() < mix.step_error:
                wrong = rng.choice([d for d in range(10) if d != right])
                think.append(str(wrong))
                if rng.random() < mix.caught:
                    think += [WAIT, ",", str(value), op, "=", str(right)]
                    value, ok = right, True
                else:
                    value, ok = wrong, False
            else:
                think.append(str(right))
                value, ok = right, True
        if ok and rng.random() < mix.recheck:
            think += ["let", "me", "check", f"s{len(problem.ops)}", str(operand), problem.ops[-1], "=", str(value)]
        answer = str(value)
    elif mix.thinking:
        think = problem.thinking.split()
    # without thinking: nothing between <think> and </think>, the right answer boxed
    tail = [THINK_CLOSE, BOXED_OPEN, answer, BOXED_CLOSE, EOS]
    words = prompt + think + tail
    ids = [TOKEN_ID[w] for w in words]
    labels = [IGNORE] * len(prompt) + [IGNORE if j in masked else i for j, i in enumerate(ids[len(prompt) :])]
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
    groups: list[list[tuple[list[int], list[int]]]] = []
    cur: list[tuple[list[int], list[int]]] = []
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
