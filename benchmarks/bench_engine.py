"""Throughput of the scaling engine against a bare `model.generate`, on the toy, on CPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py

Both sides get the same left-padded toy prompts (held-out "long" chains, think-tags chat prompt with
<think> opened), greedy decoding, the model's own KV cache and attention kernel, float32, --threads
torch threads (default 2). For each batch size (default 1, 4, 16):

- engine: `TraceGenerator.generate` with thinking budget --budget, `wait` large enough that every early
  end of thinking becomes "Wait" (so every trace thinks for about the full budget), then the forced
  answer under --answer-max. Tokens = every token after the prompt (`GenResult.all_ids`: thinking,
  Waits, forced text, answer), summed over the batch;
- generate: `model.generate(do_sample=False, max_new_tokens=L, min_new_tokens=L)` with L the longest
  engine trace of that batch (EOS suppressed until L, so every row produces exactly L tokens).
  Tokens = batch x L.

Tokens per second are wall-clock over the whole call (prefill included, tokenisation included on
both sides). Runs are interleaved (engine, generate, engine, ...) over --repeats rounds after one
warm-up round, so that load from other processes hits both alike; medians are reported (and the
median of the per-round engine/generate ratios). The machine's load average is printed before and after. Exits 1 when the engine is below --target
(default 0.80) of generate's throughput at the largest batch size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_avg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--budget", type=int, default=96, help="thinking budget of every engine trace")
    ap.add_argument("--answer-max", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.80)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers

    from layerprobe import load_model
    from layerprobe.scaling.engine import GenRequest, TraceGenerator
    from layerprobe.scaling.formats import FORMATS, Sampling
    from layerprobe.toy.evaluate import toy_prompt
    from layerprobe.toy.tasks import sample_problems

    loaded = load_model("toy", device="cpu", dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    fmt = FORMATS[loaded.reasoning_format or "think-tags"]
    engine = TraceGenerator(model, tok, fmt, Sampling(temperature=0.0))
    problems = sample_problems("long", max(args.batches), seed=0)
    prompts = [toy_prompt(tok, p) for p in problems]
    tok.padding_side = "left"

    def run_engine(b: int) -> tuple[float, int, int]:
        reqs = [
            GenRequest(key=i, prompt=p, budget=args.budget, wait=10**6, answer_max=args.answer_max)
            for i, p in enumerate(prompts[:b])
        ]
        t = time.perf_counter()
        res = engine.generate(reqs, batch_size=b)
        dt = time.perf_counter() - t
        return dt, sum(len(r.all_ids) for r in res), max(len(r.all_ids) for r in res)

    @torch.inference_mode()
    def run_generate(b: int, length: int) -> tuple[float, int]:
        t = time.perf_counter()
        enc = tok(prompts[:b], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=length,
            min_new_tokens=length,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        dt = time.perf_counter() - t
        new = out.shape[1] - enc.input_ids.shape[1]
        assert new == length, (new, length)
        return dt, b * new

    print(
        f"toy: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {model.config.num_hidden_layers} layers; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    print(f"load average before: {load_avg()}")
    lengths = {}
    for b in args.batches:  # warm-up round; fixes the generate length per batch size
        _, _, lengths[b] = run_engine(b)
        run_generate(b, lengths[b])
    eng: dict[int, list[float]] = {b: [] for b in args.batches}
    hf: dict[int, list[float]] = {b: [] for b in args.batches}
    tokens: dict[int, tuple[int, int]] = {}
    for r in range(args.repeats):
        for b in args.batches:
            order = ("engine", "generate") if r % 2 == 0 else ("generate", "engine")
            for side in order:
                if side == "engine":
                    dt, n, longest = run_engine(b)
                    assert longest == lengths[b]  # greedy: the same traces every time
                    eng[b].append(n / dt)
                    te = n
                else:
                    dt, n = run_generate(b, lengths[b])
                    hf[b].append(n / dt)
                    tg = n
            tokens[b] = (te, tg)
            print(
                f"round {r + 1}/{args.repeats} batch {b}: engine {eng[b][-1]:.0f} tok/s, generate {hf[b][-1]:.0f} tok/s "
                f"(load {load_avg()})",
                file=sys.stderr,
                flush=True,
            )
    print(f"load average after:  {load_avg()}")
    print()
    print(
        "| batch | engine tokens/run | generate tokens/run | engine tok/s | generate tok/s | engine / generate | median of paired ratios |"
    )
    print("|---|---|---|---|---|---|---|")
    ratio = {}
    for b in args.batches:
        e, g = statistics.median(eng[b]), statistics.median(hf[b])
        ratio[b] = e / g
        paired = statistics.median(x / y for x, y in zip(eng[b], hf[b]))  # same round: similar load
        print(f"| {b} | {tokens[b][0]} | {tokens[b][1]} | {e:,.0f} | {g:,.0f} | {ratio[b]:.0%} | {paired:.0%} |")
    print()
    for b in args.batches:
        print(
            f"batch {b}: engine tok/s "
            + ", ".join(f"{x:.0f}" for x in eng[b])
            + " | generate tok/s "
            + ", ".join(f"{x:.0f}" for x in hf[b])
        )
    top = max(args.batches)
    ok = ratio[top] >= args.target
    print(f"\nbatch {top}: engine at {ratio[top]:.0%} of generate (target >= {args.target:.0%}): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
