"""Arithmetic word problems generated offline: short and long chains for any model, no download.

Each problem starts from a number and applies a chain of operations written in words; the answer is
the integer at the end. `short` problems have 2 operations, `long` ones 8: the same skill at two chain
lengths, so a pruned model's long-chain collapse can be seen on a real model without the hub.
"""

from __future__ import annotations

import random

from layerprobe.tasks.base import Problem

#: Operations per problem in each group.
CHAIN_LENGTHS = {"short": 2, "long": 8}


def _chain(rng: random.Random, steps: int) -> tuple[int, list[str], int]:
    """(start, operation phrases, result); every intermediate value stays in 0..999."""
    value = rng.randint(2, 20)
    start = value
    phrases: list[str] = []
    for _ in range(steps):
        choices = ["add", "subtract"] + (["multiply"] if value <= 99 else [])
        op = rng.choice(choices)
        if op == "add":
            n = rng.randint(2, 30)
            value += n
            phrases.append(f"add {n}")
        elif op == "subtract" and value > 2:
            n = rng.randint(1, min(30, value - 1))
            value -= n
            phrases.append(f"subtract {n}")
        else:
            n = rng.randint(2, 3)
            value *= n
            phrases.append(f"multiply by {n}")
    return start, phrases, value


def arith_problems(limit: int, seed: int) -> list[Problem]:
    """`limit` problems per group (short, then long), the same for the same seed."""
    out = []
    for group, steps in CHAIN_LENGTHS.items():
        for i in range(limit):
            rng = random.Random(f"arith-{seed}-{group}-{i}")
            start, phrases, result = _chain(rng, steps)
            words = ", then ".join(phrases)
            question = (
                f"Start with {start}. In order: {words}. What number do you end with? "
                "Work it out step by step and give the final answer as an integer."
            )
            out.append(Problem(f"arith-{seed}-{group}-{i}", question, str(result), "integer", group=group, meta={"steps": steps}))
    return out
