"""Probes by prefill (probe.prefill) against their floor and against probes captured during generation.

(i) One prefill over prompt + trace (T trace tokens), best of --repeats:
    plain    a forward pass, no hooks
    floor    plain + the bare logit-lens matmul: final norm and unembedding of every layer's output at
             every position, L·d·V multiply-adds per token, which any logit lens pays
    full     prefill_trace_layers with the lens (all six statistics); goal <= 1.2 x floor
    bi+norm  prefill_trace_layers without the lens; goal <= 1.1 x plain
(ii) Per trace token, a greedy trace of --gen-tokens generated with the engine: without probes, with
    the live probe (lens on / off), and the prefill probe run afterwards on the same trace. The live
    probe's cost is its time minus generation without probes; the prefill probe's cost is its whole
    time (its forward pass is extra). `analyze --probe-mode` chooses from these numbers.

    python benchmarks/bench_prefill.py --model smollm2-135m --lengths 512,2048 --gen-tokens 256
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch


def best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lengths", default="512,2048")
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from layerprobe import load_model
    from layerprobe.probe.hooks import LayerProbe
    from layerprobe.probe.lens import final_logits
    from layerprobe.probe.prefill import prefill_trace_layers
    from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt
    from layerprobe.scaling.formats import FORMATS, Sampling

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, tok = loaded.model, loaded.tokenizer
    L = len(loaded.layers)
    V = loaded.unembed.weight.shape[0]
    d = loaded.unembed.weight.shape[1]
    device = loaded.device
    fmt = FORMATS["think-tags"]
    prompt = build_prompt(tok, fmt, "A train leaves at 3 pm at 60 km/h; a second at 4 pm at 80 km/h. When does it catch up?")
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    text_ids = tok.encode(
        " ".join(["Let me think about the distance covered by each train, hour by hour."] * 400), add_special_tokens=False
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {
        "model": args.model,
        "layers": L,
        "d": d,
        "vocab": V,
        "device": str(device),
        "dtype": args.dtype,
        "threads": args.threads,
        "prefill": [],
        "generation": {},
    }
    print(f"{args.model}: L={L} d={d} V={V} on {device} ({args.dtype}, {args.threads} threads)")
    print("| trace tokens | plain s | floor s | full s | full / floor | bi+norm s | bi+norm / plain |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for T in [int(x) for x in args.lengths.split(",")]:
        trace = text_ids[:T]
        ids = torch.tensor([prompt_ids + trace[:-1]], device=device)

        @torch.inference_mode()
        def plain(ids: torch.Tensor = ids) -> None:
            model(input_ids=ids, use_cache=False)
            sync()

        @torch.inference_mode()
        def floor(ids: torch.Tensor = ids) -> None:
            hs = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
            P = len(prompt_ids)
            for h in hs[1:]:  # one layer at a time, as memory allows: (T, d) x (d, V)
                final_logits(h[0, P - 1 :], loaded.final_norm, loaded.unembed)
            sync()

        t_plain = best(plain, args.repeats)
        t_floor = best(floor, args.repeats)
        t_full = best(lambda trace=trace: (prefill_trace_layers(loaded, prompt_ids, trace, lens=True), sync()), args.repeats)
        t_bare = best(lambda trace=trace: (prefill_trace_layers(loaded, prompt_ids, trace, lens=False), sync()), args.repeats)
        row = {
            "tokens": T,
            "plain_s": t_plain,
            "floor_s": t_floor,
            "full_s": t_full,
            "bi_norm_s": t_bare,
            "full_over_floor": t_full / t_floor,
            "bi_norm_over_plain": t_bare / t_plain,
        }
        out["prefill"].append(row)
        print(
            f"| {T} | {t_plain:.3f} | {t_floor:.3f} | {t_full:.3f} | {t_full / t_floor:.2f} | {t_bare:.3f} | {t_bare / t_plain:.2f} |"
        )

    # (ii) generation with and without the live probe, and the prefill probe on the same trace
    gen = TraceGenerator(model, tok, fmt, Sampling(temperature=0.0))
    n = args.gen_tokens
    # the thinking budget forces a trace of exactly n thinking tokens (plus the forced end of thinking)
    req = GenRequest(key=0, prompt=prompt, budget=n, seed=0, answer_max=1)

    def generate(observers: list[Any]) -> Any:
        (res,) = gen.generate([req], batch_size=1, observers=observers)
        sync()
        return res

    res = generate([])
    T = len(res.all_ids)
    t_gen = best(lambda: generate([]), 1)

    def live(lens: bool) -> float:
        with LayerProbe(loaded, lens=lens) as probe:
            t = best(lambda: generate([probe]), 1)
            probe.pop(0)
        return t

    t_live = live(True)
    t_live_bare = live(False)
    t_pre = best(lambda: (prefill_trace_layers(loaded, prompt_ids, res.all_ids, lens=True), sync()), args.repeats)
    t_pre_bare = best(lambda: (prefill_trace_layers(loaded, prompt_ids, res.all_ids, lens=False), sync()), args.repeats)
    g = {
        "trace_tokens": T,
        "generate_ms_per_token": 1e3 * t_gen / T,
        "live_probe_ms_per_token": 1e3 * (t_live - t_gen) / T,
        "live_probe_bare_ms_per_token": 1e3 * (t_live_bare - t_gen) / T,
        "prefill_probe_ms_per_token": 1e3 * t_pre / T,
        "prefill_probe_bare_ms_per_token": 1e3 * t_pre_bare / T,
        "analyze_live_s": t_live,
        "analyze_prefill_s": t_gen + t_pre,
    }
    out["generation"] = g
    print(f"\ngreedy trace of {T} tokens (generation without probes {g['generate_ms_per_token']:.2f} ms/token)")
    print("| probe | live ms/token | prefill ms/token | live / prefill |")
    print("|---|---:|---:|---:|")
    for name, a, b in (
        ("lens + BI + norm", g["live_probe_ms_per_token"], g["prefill_probe_ms_per_token"]),
        ("BI + norm", g["live_probe_bare_ms_per_token"], g["prefill_probe_bare_ms_per_token"]),
    ):
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    print(f"generate + probe one trace: live {t_live:.2f} s, generate then prefill {t_gen + t_pre:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
