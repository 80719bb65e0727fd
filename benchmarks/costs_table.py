"""probe.costs evaluated: predicted against measured (from bench_prefill.py's --json files), and the
study's protocol on one 80 GB GPU for s1.1-7B and Qwen3-8B.

    python benchmarks/costs_table.py --measured toy.json smollm2.json s1-2L.json
    python benchmarks/costs_table.py --protocol
    python benchmarks/costs_table.py --protocol --gpu-json gpu_check.json   # decode steps as measured there

Time is predicted from arithmetic (probe.costs' FLOPs) at a rate measured in the same run: the bare lens
matmul (floor − plain, a large matmul of known FLOPs) gives the machine's FLOP/s, from which the plain
prefill's time follows. Memory is predicted in bytes; the measured peak (CPU: resident set, sampled)
includes PyTorch's allocator and kernels' workspaces on top.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layerprobe.probe import costs

GB = 1e9
PROMPT = 200  # positions of an AIME prompt with its chat template
ANSWER = 64  # analyze's answer cap for real models (--answer-max)


def measured_rows(paths: list[Path]) -> None:
    print(
        "| model (shape) | trace tokens | lens FLOPs / forward FLOPs | floor / plain, predicted → measured "
        "| plain s, predicted → measured | full-lens prefill peak MiB, predicted → measured | file B/token/layer (uncompressed bound) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        m = json.loads(path.read_text())
        name, L, H, V = m["model"], m["layers"], m["d"], m["vocab"]
        base = costs.SHAPES.get(name)
        s = base.with_layers(L) if base is not None else None
        if s is None:
            raise SystemExit(f"{path}: no shape for {name}")
        b = 2 if m["dtype"] in ("bfloat16", "float16") else 4
        for r in m.get("prefill", []):
            T = r["tokens"] + 20  # the prompt's positions
            fwd = costs.forward_flops(s, T, T / 2, head=True)
            lens = costs.lens_flops(s, T)
            lens_s = r["floor_s"] - r["plain_s"]  # the bare lens matmul's time: the machine's FLOP/s on it
            # below the timing's noise (the toy's 96-token vocabulary) it gives no rate to predict from
            plain_pred = f"{fwd * lens_s / lens:.2f}" if lens_s > 0.05 * r["plain_s"] else "—"
            mem = costs.prefill_bytes(s, T, 1, b) / 2**20
            bound = costs.STORED_BYTES_PER_TOKEN_LAYER + costs.STORED_BYTES_PER_TOKEN / L
            print(
                f"| {name} ({L} L, H {H}, V {V:,}) | {r['tokens']:,} | {lens / fwd:.2f} | {1 + lens / fwd:.2f} → "
                f"{r['floor_s'] / r['plain_s']:.2f} | {plain_pred} → {r['plain_s']:.2f} | {mem:,.0f} → "
                f"{r['full_peak_growth_mib']:,.0f} | {r['file_bytes_per_token_layer']:.1f} ({bound:.1f}) |"
            )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def protocol(gpu_json: Path | None) -> None:
    dev = costs.H100
    measured_step: dict[int, float] = {}
    if gpu_json is not None:
        g = json.loads(gpu_json.read_text())
        for r in g["parts"].get("live", {}).get("result", []) or []:
            measured_step[int(r["batch"])] = r["ms_per_forward"]["plain"] / 1e3
    budgets = (512, 1024, 2048, 4096, 8192)
    problems, samples, models = 30, 16, 4
    traces = problems * samples
    cols = []
    for name in ("s1.1-7b", "qwen3-8b"):
        s = costs.SHAPES[name]
        b = 2
        pos_study = PROMPT + max(budgets) + ANSWER
        pos_32k = PROMPT + 32768 + ANSWER
        batch = min(16, costs.max_batch(s, pos_study, dev.memory, b))
        batch_32k = costs.max_batch(s, pos_32k, dev.memory, b)
        lo, hi = 1, 1 << 20  # the longest trace 16 fit with (positions)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if costs.generation_bytes(s, mid, 16, b) <= 0.9 * dev.memory else (lo, mid)
        longest16 = lo
        # layerprobe analyze: the budgets of one (problem, sample) share one generation (forks answer
        # the smaller ones), `auto` probes by prefill after each trace on a GPU
        steps = math.ceil(traces / batch) * (max(budgets) + ANSWER)
        step = measured_step.get(batch) or costs.decode_step_seconds(s, batch, PROMPT + max(budgets) / 2, dev, b)
        gen_lp = steps * step
        probed_tokens = traces * sum(PROMPT + bb + ANSWER for bb in budgets)
        pre = traces * sum(costs.prefill_seconds(s, PROMPT + bb + ANSWER, dev) for bb in budgets)  # one trace at a time
        # vLLM: every budget generated on its own, continuous batching as deep as the KV cache allows
        avg_ctx = PROMPT + sum(bb + ANSWER for bb in budgets) / len(budgets) / 2
        kv_room = dev.memory * 0.9 - costs.weights_bytes(s, b)
        depth = max(1, int(kv_room // costs.kv_bytes(s, int(2 * avg_ctx), 1, b)))
        vllm_rows = traces * sum(bb + ANSWER for bb in budgets)
        vllm_step = costs.decode_step_seconds(s, depth, avg_ctx, dev, b) - s.layers * dev.step_overhead_per_layer
        gen_vllm = vllm_rows / depth * vllm_step
        disk_probe = costs.stored_bytes(s, probed_tokens)
        disk_text = (
            traces * len(budgets) * 2 * 4 * (sum(budgets) / len(budgets) + ANSWER)
        )  # thinking_text + text, ~4 chars a token
        cols.append(
            {
                "model": name,
                "weights": f"{costs.weights_bytes(s, b) / GB:.1f} GB",
                "kv": f"{costs.kv_bytes(s, 1, 1, b) / 1024:.0f} KiB",
                "batch": f"{costs.max_batch(s, pos_study, dev.memory, b)} (analyze uses {batch})",
                "batch_32k": f"{batch_32k}",
                "longest16": f"{longest16:,} positions",
                "prefill_32k": f"{costs.prefill_peak_bytes(s, pos_32k, 2048, 1, b) / GB:.1f} GB",
                "step": f"{1e3 * step:.0f} ms" + (" (measured)" if batch in measured_step else " (model)"),
                "gen_lp": _hours(gen_lp),
                "pre": _hours(pre),
                "lp_total": _hours(models * (gen_lp + pre)),
                "vllm_depth": f"{depth}",
                "gen_vllm": _hours(gen_vllm),
                "vllm_total": _hours(models * (gen_vllm + pre)),
                "disk": f"{models * (disk_probe + disk_text) / GB:.0f} GB",
            }
        )
    rows = [
        ("weights, bfloat16", "weights"),
        ("KV cache per position", "kv"),
        (f"largest batch with probes, traces of {PROMPT + max(budgets) + ANSWER:,} positions", "batch"),
        (f"largest batch with probes, 32k-token thinking ({PROMPT + 32768 + ANSWER:,} positions)", "batch_32k"),
        ("longest trace at batch 16 with probes", "longest16"),
        ("peak of the prefill probe on one 32k-token trace (weights included)", "prefill_32k"),
        ("decode step at that batch", "step"),
        ("layerprobe analyze: generation, per model", "gen_lp"),
        ("prefill probes (every budget's trace), per model", "pre"),
        (f"**layerprobe analyze, {models} models of this size**", "lp_total"),
        ("vLLM: sequences in flight (KV-cache bound)", "vllm_depth"),
        ("vLLM generation, per model (every budget on its own; roofline, a lower bound)", "gen_vllm"),
        (f"**vLLM + `ingest` with prefill probes, {models} models of this size**", "vllm_total"),
        ("disk: samples.jsonl and the probe arrays (uncompressed: an upper bound)", "disk"),
    ]
    print(f"| the study's protocol on one {dev.name} | " + " | ".join(c["model"] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in rows:
        print(f"| {label} | " + " | ".join(c[key] for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured", type=Path, nargs="*", default=[])
    ap.add_argument("--protocol", action="store_true")
    ap.add_argument("--gpu-json", type=Path, default=None)
    args = ap.parse_args()
    if args.measured:
        measured_rows(args.measured)
    if args.protocol:
        print()
        protocol(args.gpu_json)


if __name__ == "__main__":
    main()
