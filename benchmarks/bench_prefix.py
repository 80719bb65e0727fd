"""Shared budget prefixes: generating every thinking budget of a problem separately vs once at the
largest budget with forks (scaling.engine). Reports tokens fed to the model (forward-pass rows) and
wall time for both, and checks that the texts are identical.

    python benchmarks/bench_prefix.py --model smollm2-135m --budgets 32,64,128,256,512 --problems 2
    python benchmarks/bench_prefix.py --model toy --budgets 8,16,32,64,128 --problems 30
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch


class Counter:
    """An observer that counts the sequence rows of every forward pass (= tokens processed)."""

    def __init__(self) -> None:
        self.rows = 0
        self.prefill = 0

    def on_forward(self, keys: Any, attention_mask: Any, prefill: bool) -> None:
        if prefill:
            self.prefill += int(attention_mask.sum())
        else:
            self.rows += len(keys)

    def on_tokens(self, keys: Any, tokens: Any, phases: Any) -> None:
        pass

    def on_finish(self, result: Any) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toy")
    ap.add_argument("--budgets", default="8,16,32,64,128")
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from layerprobe import load_model
    from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt, derive_seed
    from layerprobe.scaling.formats import FORMATS, Sampling
    from layerprobe.tasks.registry import load_problems

    loaded = load_model(args.model, device="cpu", dtype="float32")
    fmt = FORMATS["think-tags" if args.model == "toy" else "s1"]
    budgets = [int(b) for b in args.budgets.split(",")]
    if args.model == "toy":
        _, problems, _ = load_problems("toy-long", args.problems, 0)
        questions = [(p.id, p.question) for p in problems]
    else:
        questions = [(f"q{i}", f"What is {17 + 3 * i} times {23 + i}? Think step by step.") for i in range(args.problems)]
    gen = TraceGenerator(loaded.model, loaded.tokenizer, fmt, Sampling(temperature=args.temperature, top_p=0.95, top_k=20))
    reqs = [
        GenRequest(
            key=(pid, b), prompt=build_prompt(loaded.tokenizer, fmt, q), budget=b, seed=derive_seed(0, pid, 0), answer_max=16
        )
        for pid, q in questions
        for b in budgets
    ]
    out = {}
    for share in (False, True):
        c = Counter()
        t0 = time.perf_counter()
        res = gen.generate(reqs, batch_size=args.batch_size, observers=[c], share_prefixes=share)
        out[share] = (
            time.perf_counter() - t0,
            c.rows,
            c.prefill,
            [r.all_ids for r in res],
            sum(r.thinking_tokens for r in res),
            sum(r.origin != "generated" for r in res),
        )
    sep, shr = out[False], out[True]
    same = sep[3] == shr[3]
    print(f"model {args.model}, budgets {budgets}, {len(questions)} problems, temperature {args.temperature}")
    print(f"thinking tokens in the results: {sep[4]} (both; identical texts: {same})")
    print(f"separate: {sep[0]:.1f} s, {sep[1]} decode rows + {sep[2]} prefill tokens")
    print(f"shared:   {shr[0]:.1f} s, {shr[1]} decode rows + {shr[2]} prefill tokens ({shr[5]} traces forked or copied)")
    print(f"decode rows saved {1 - shr[1] / max(1, sep[1]):.1%}, time ratio shared/separate {shr[0] / sep[0]:.3f}")


if __name__ == "__main__":
    main()
