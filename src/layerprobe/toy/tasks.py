"""The toy reasoning task family: step-marked modular-arithmetic chains, plus recall-only facts.

A chain problem lists a start value and k operations, each after a step marker:

    prompt:   x = 7 s1 +5 s2 *3 s3 -2
    thinking: s1 7 +5 = 2 s2 2 *3 = 6 s3 6 -2 = 4
    answer:   \\boxed{ 4 }

Values are digits, operations are +c, -c (c = 1..9) and *3, *7, *9, all mod 10 (each one-to-one, so
chance is 0.10). Each step needs the previous result, the next marker and the operation that follows
that marker in the prompt. Chain length k (1-16) is the difficulty knob. Facts are recall-only
controls: a fixed table maps 200 two-token keys to digits (`fact a3 b7` → 4), learned in training.

Problems are deterministic functions of (kind, k, seed); ids are stable hashes of the prompt, and a
fixed share of prompts (by hash) is held out of training as the test split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

OPS_ADD = [f"+{c}" for c in range(1, 10)]
OPS_SUB = [f"-{c}" for c in range(1, 10)]
OPS_MUL = ["*3", "*7", "*9"]
OPS = OPS_ADD + OPS_SUB + OPS_MUL
MAX_STEPS = 16
MARKERS = [f"s{i}" for i in range(1, MAX_STEPS + 1)]
KEYS_A = [f"a{i}" for i in range(20)]
KEYS_B = [f"b{i}" for i in range(10)]
FACT_SEED = 20261123
TEST_BUCKETS = 10  # 1 in TEST_BUCKETS prompts (by hash) is held out of training

# Task types used for evaluation and by `layerprobe analyze` on the toy.
TASK_TYPES: dict[str, tuple[int, int] | None] = {
    "short": (1, 2),  # shallow control
    "mid": (3, 6),
    "long": (8, 12),  # the long-chain regime
    "xlong": (13, 16),
    "facts": None,  # knowledge control
}


def apply_op(value: int, op: str) -> int:
    """Apply one operation token to a digit, mod 10."""
    c = int(op[1:])
    if op[0] == "+":
        return (value + c) % 10
    if op[0] == "-":
        return (value - c) % 10
    if op[0] == "*":
        return (value * c) % 10
    raise ValueError(f"unknown op {op!r}")


def _fact_table() -> dict[tuple[str, str], int]:
    rng = random.Random(FACT_SEED)
    return {(a, b): rng.randrange(10) for a in KEYS_A for b in KEYS_B}


FACTS = _fact_table()


@dataclass(frozen=True)
class ToyProblem:
    """One toy problem with its gold derivation."""

    id: str
    kind: str  # "chain" or "fact"
    steps: int  # chain length k (0 for facts)
    prompt: str  # user content, without chat markers
    thinking: str  # gold thinking text (between <think> and </think>)
    answer: str  # gold answer digit
    ops: tuple[str, ...] = field(default=())
    start: int | None = None

    @property
    def task_type(self) -> str:
        """'facts', or the chain-length bucket of TASK_TYPES ('other' for k = 7)."""
        if self.kind == "fact":
            return "facts"
        for name, span in TASK_TYPES.items():
            if span and span[0] <= self.steps <= span[1]:
                return name
        return "other"


def problem_id(prompt: str) -> str:
    return "toy-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]


def is_test_prompt(prompt: str) -> bool:
    """True for the held-out share of prompts (never used in training)."""
    return int(hashlib.sha1(prompt.encode()).hexdigest(), 16) % TEST_BUCKETS == 0


def chain_problem(start: int, ops: list[str]) -> ToyProblem:
    """Build a chain problem and its gold derivation from a start digit and operations."""
    if not 1 <= len(ops) <= MAX_STEPS:
        raise ValueError(f"chains have 1..{MAX_STEPS} steps, got {len(ops)}")
    prompt = " ".join(["x", "=", str(start)] + [tok for i, op in enumerate(ops) for tok in (MARKERS[i], op)])
    value, parts = start, []
    for i, op in enumerate(ops):
        new = apply_op(value, op)
        parts += [MARKERS[i], str(value), op, "=", str(new)]
        value = new
    return ToyProblem(
        id=problem_id(prompt),
        kind="chain",
        steps=len(ops),
        prompt=prompt,
        thinking=" ".join(parts),
        answer=str(value),
        ops=tuple(ops),
        start=start,
    )


def fact_problem(a: str, b: str) -> ToyProblem:
    """A recall-only problem: the table value of key (a, b)."""
    prompt = f"fact {a} {b}"
    value = FACTS[(a, b)]
    return ToyProblem(
        id=problem_id(prompt), kind="fact", steps=0, prompt=prompt, thinking=f"{a} {b} = {value}", answer=str(value)
    )


def random_chain(rng: random.Random, k: int) -> ToyProblem:
    return chain_problem(rng.randrange(10), [rng.choice(OPS) for _ in range(k)])


def random_fact(rng: random.Random) -> ToyProblem:
    return fact_problem(rng.choice(KEYS_A), rng.choice(KEYS_B))


def sample_problems(task_type: str, n: int, seed: int = 0, split: str = "test") -> list[ToyProblem]:
    """`n` distinct problems of a task type ('short', 'mid', 'long', 'xlong', 'facts' or 'k=N').

    Deterministic in (task_type, n, seed, split). The test split only holds held-out prompts
    (facts have no held-out split: they can only be recalled, so every key is trained).
    """
    if split not in ("test", "train"):
        raise ValueError("split must be 'test' or 'train'")
    span: tuple[int, int] | None
    if task_type.startswith("k="):
        k = int(task_type[2:])
        span = (k, k)
    elif task_type in TASK_TYPES:
        span = TASK_TYPES[task_type]
    else:
        raise ValueError(f"unknown toy task type {task_type!r} (valid: {', '.join(TASK_TYPES)}, k=N)")
    rng = random.Random(f"{task_type}:{seed}:{split}")
    if span is None:
        keys = sorted(FACTS)
        rng.shuffle(keys)
        if n > len(keys):
            raise ValueError(f"only {len(keys)} facts exist")
        return [fact_problem(a, b) for a, b in keys[:n]]
    out: dict[str, ToyProblem] = {}
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * n + 10000:
            raise ValueError(f"could not draw {n} distinct {task_type} problems")
        p = random_chain(rng, rng.randint(*span))
        if is_test_prompt(p.prompt) == (split == "test"):
            out.setdefault(p.id, p)
    return list(out.values())


def solve(prompt: str) -> str:
    """Recompute the answer of a prompt from its text alone (independent check of the generator)."""
    toks = prompt.split()
    if toks[0] == "fact":
        return str(FACTS[(toks[1], toks[2])])
    value = int(toks[2])
    for marker, op in zip(toks[3::2], toks[4::2]):
        assert marker.startswith("s")
        value = apply_op(value, op)
    return str(value)
