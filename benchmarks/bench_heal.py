"""Training throughput of each healing method (`layerprobe.prune.heal`), on the toy or smollm2-135m, on CPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_heal.py --model toy --threads 1
    HF_HUB_OFFLINE=1 python benchmarks/bench_heal.py --model smollm2-135m --threads 2 --steps 3 --batch-size 4 --max-len 256

The pruned model is the base without --drop (toy: 10,11; smollm2: 20,21). Data: for the toy, the base
model's traces on 64 training-split problems (long and short chains, budget 128); for smollm2, the
embedded English calibration text cut into (first 20 words, rest) pairs, every sequence cut to
--max-len tokens, so each step reads batch x max-len tokens. Each method (lora, full, distill,
distill-full; LoRA rank 16, alpha 32, all projections) runs `heal` for --steps steps in every round;
methods alternate within a round (the order rotates), so load from other processes hits them alike.
Tokens/s = tokens read by the student (no padding) / seconds spent in training steps (forward,
backward and optimizer step; distillation includes the teacher's forward pass), as `heal` records
it. Medians over --rounds rounds, and each method's median ratio to LoRA within a round. The load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

METHODS = ("lora", "full", "distill", "distill-full")


def load_avg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from layerprobe import load_model
    from layerprobe.prune.heal import Example, HealConfig, base_traces, heal
    from layerprobe.prune.surgery import drop_layers

    base = load_model(args.model, device="cpu", dtype="float32")
    toy = base.source_kind == "toy"
    pruned = drop_layers(base, [10, 11] if toy else [20, 21])
    if toy:
        from layerprobe.scaling.formats import get_format
        from layerprobe.toy.tasks import sample_problems

        problems = [(p.id, p.prompt) for t in ("long", "short") for p in sample_problems(t, 32, seed=0, split="train")]
        data = base_traces(base, problems, get_format("think-tags"), budget=128, answer_max=8, seed=0, batch_size=64)
    else:
        from layerprobe.prune.calibration import embedded_calibration

        data = []
        for text in embedded_calibration().texts:
            words = text.split()
            if len(words) >= 60:
                data.append(Example(" ".join(words[:20]), " " + " ".join(words[20:])))
    print(
        f"model {args.model}, {pruned.n_layers} layers, {len(data)} sequences, threads {args.threads}, "
        f"{args.steps} steps x batch {args.batch_size}, load before {load_avg()}",
        flush=True,
    )
    speeds: dict[str, list[float]] = {m: [] for m in args.methods}
    ratios: dict[str, list[float]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        order = args.methods[r % len(args.methods) :] + args.methods[: r % len(args.methods)]
        got: dict[str, float] = {}
        for how in order:
            cfg = HealConfig(how=how, steps=args.steps, batch_size=args.batch_size, max_len=args.max_len, seed=r)
            res = heal(pruned, data, cfg, teacher=base if how.startswith("distill") else None)
            got[how] = res.record["tokens_per_s"]
            print(
                f"round {r + 1} {how:12s} {got[how]:9,.1f} tokens/s  ({res.record['tokens_seen']:,} tokens in "
                f"{res.record['seconds']:.1f} s; load {load_avg()})",
                flush=True,
            )
            speeds[how].append(got[how])
        for how in args.methods:
            if "lora" in got:
                ratios[how].append(got[how] / got["lora"])
    print(f"load after {load_avg()}")
    print("| method | tokens/s, median (all rounds) | / lora, median of rounds |")
    print("|---|---|---|")
    for how in args.methods:
        runs = " / ".join(f"{x:,.0f}" for x in speeds[how])
        ratio = f"{statistics.median(ratios[how]):.2f}" if ratios[how] else "—"
        print(f"| {how} | {statistics.median(speeds[how]):,.0f} ({runs}) | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
