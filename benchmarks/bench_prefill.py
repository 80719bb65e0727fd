"""Probes by prefill (probe.prefill) against their floor and against probes captured during generation.

(i) One prefill over prompt + trace (T trace tokens), best of --repeats:
    plain    a forward pass, no hooks
    floor    plain + the bare logit-lens matmul: final norm and unembedding of every layer's output at
             every position, L·d·V multiply-adds per token, which any logit lens pays
    full     prefill_trace_layers with the lens (all six statistics); goal <= 1.2 x floor
    bi+norm  prefill_trace_layers without the lens; goal <= 1.1 x plain
    with the peak memory of `full` above the loaded model (CUDA: allocated tensors; CPU: resident set,
    sampled) and the bytes its trace file takes per token and layer.
(ii) Per trace token, a greedy trace of --gen-tokens generated with the engine: without probes, with
    the live probe (lens on / off), and the prefill probe run afterwards on the same trace. The live
    probe's cost is its time minus generation without probes; the prefill probe's cost is its whole
    time (its forward pass is extra). `analyze --probe-mode` chooses from these numbers.
(iii) --memory-lengths: the peak memory of the full-lens prefill of one trace per length, each in a
    fresh process on CPU (so one length's allocations do not hide the next's), next to what
    probe.costs predicts: flat apart from the KV cache, however long the trace.

    python benchmarks/bench_prefill.py --model smollm2-135m --lengths 512,2048 --gen-tokens 256
    python benchmarks/bench_prefill.py --model s1.1-7b --layers 2 --lengths 512,2048 --gen-tokens 32 --repeats 1
    python benchmarks/bench_prefill.py --model smollm2-135m --layers 4 --lengths none --gen-tokens 0 \\
        --memory-lengths 2048,8192,32768

--model s1.1-7b / qwen3-8b / smollm2-135m with --layers N (or s1.1-7b / qwen3-8b alone, full depth)
builds that shape with random weights (benchmarks/_shapes.py); otherwise the real model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _memory import PeakSampler, rss_mb  # benchmarks/_memory.py (the script's folder is on sys.path)


def best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class Peak:
    """Peak memory of a block above what was in use when it began: CUDA allocations, else sampled RSS (MiB)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> Peak:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2**20
        else:
            self.before = rss_mb()
            self.sampler = PeakSampler(0.01).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.sampler.__exit__(*exc)
            self.peak = self.sampler.peak
        self.growth = self.peak - self.before


def token_ids(loaded: Any, n: int, seed: int = 0) -> list[int]:
    """n token ids: text through the model's tokenizer for a real model, random ids below both
    vocabularies for a random-weight shape (its cost does not depend on what the ids are)."""
    tok = loaded.tokenizer
    if "random weights" not in loaded.source:
        ids = tok.encode(" ".join(["Let me think about the distance covered by each train, hour by hour."] * (n // 12 + 2)))
        return ids[:n]
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, min(len(tok), loaded.unembed.weight.shape[0]), (n,), generator=g).tolist()


def prompt_ids(loaded: Any) -> list[int]:
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import FORMATS

    prompt = build_prompt(loaded.tokenizer, FORMATS["think-tags"], "A train leaves at 3 pm at 60 km/h; when does it arrive?")
    return loaded.tokenizer.encode(prompt, add_special_tokens=False)


def measure_prefill(loaded: Any, lengths: list[int], repeats: int) -> list[dict[str, Any]]:
    """(i) for each trace length."""
    from layerprobe.probe.layer_files import save_trace_layers
    from layerprobe.probe.lens import final_logits
    from layerprobe.probe.prefill import prefill_trace_layers

    device = loaded.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    p_ids = prompt_ids(loaded)
    text_ids = token_ids(loaded, max(lengths, default=0))
    L = len(loaded.layers)
    rows = []
    for T in lengths:
        trace = text_ids[:T]
        ids = torch.tensor([p_ids + trace[:-1]], device=device)

        @torch.inference_mode()
        def plain(ids: torch.Tensor = ids) -> None:
            loaded.model(input_ids=ids, use_cache=False)
            sync()

        @torch.inference_mode()
        def floor(ids: torch.Tensor = ids) -> None:
            hs = loaded.model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
            P = len(p_ids)
            for h in hs[1:]:  # one layer at a time, as memory allows: (T, d) x (d, V)
                final_logits(h[0, P - 1 :], loaded.final_norm, loaded.unembed)
            sync()

        t_plain = best(plain, repeats)
        t_floor = best(floor, repeats)
        with Peak(device) as peak:
            tl = prefill_trace_layers(loaded, p_ids, trace, lens=True)
            sync()
        t_full = best(lambda trace=trace: (prefill_trace_layers(loaded, p_ids, trace, lens=True), sync()), repeats)
        t_bare = best(lambda trace=trace: (prefill_trace_layers(loaded, p_ids, trace, lens=False), sync()), repeats)
        with tempfile.TemporaryDirectory() as tmp:
            size = save_trace_layers(Path(tmp) / "t.npz", tl).stat().st_size
        rows.append(
            {
                "tokens": T,
                "plain_s": t_plain,
                "floor_s": t_floor,
                "full_s": t_full,
                "bi_norm_s": t_bare,
                "full_over_floor": t_full / t_floor,
                "bi_norm_over_plain": t_bare / t_plain,
                "full_peak_growth_mib": peak.growth,
                "file_bytes_per_token_layer": size / (T * L),
            }
        )
    return rows


def measure_generation(loaded: Any, gen_tokens: int, repeats: int) -> dict[str, Any]:
    """(ii) on one greedy trace of gen_tokens thinking tokens."""
    from layerprobe.probe.hooks import LayerProbe
    from layerprobe.probe.prefill import prefill_trace_layers
    from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt
    from layerprobe.scaling.formats import FORMATS, Sampling

    device = loaded.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fmt = FORMATS["think-tags"]
    prompt = build_prompt(loaded.tokenizer, fmt, "A train leaves at 3 pm at 60 km/h; when does it arrive?")
    p_ids = loaded.tokenizer.encode(prompt, add_special_tokens=False)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, fmt, Sampling(temperature=0.0))
    # the thinking budget forces a trace of exactly n thinking tokens (plus the forced end of thinking)
    req = GenRequest(key=0, prompt=prompt, budget=gen_tokens, seed=0, wait=10**9, answer_max=1)

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
    t_pre = best(lambda: (prefill_trace_layers(loaded, p_ids, res.all_ids, lens=True), sync()), repeats)
    t_pre_bare = best(lambda: (prefill_trace_layers(loaded, p_ids, res.all_ids, lens=False), sync()), repeats)
    return {
        "trace_tokens": T,
        "generate_ms_per_token": 1e3 * t_gen / T,
        "live_probe_ms_per_token": 1e3 * (t_live - t_gen) / T,
        "live_probe_bare_ms_per_token": 1e3 * (t_live_bare - t_gen) / T,
        "prefill_probe_ms_per_token": 1e3 * t_pre / T,
        "prefill_probe_bare_ms_per_token": 1e3 * t_pre_bare / T,
        "analyze_live_s": t_live,
        "analyze_prefill_s": t_gen + t_pre,
    }


def measure_memory(loaded: Any, trace_tokens: int, chunk: int = 2048) -> dict[str, Any]:
    """(iii) for one length, in this process: peak memory of the full-lens prefill above the loaded
    model, and probe.costs' prediction of it."""
    from layerprobe.probe import costs
    from layerprobe.probe.prefill import prefill_trace_layers

    shape = costs.shape_of(loaded.model.config, loaded.name)
    b = torch.finfo(loaded.dtype).bits // 8
    p_ids = prompt_ids(loaded)
    trace = token_ids(loaded, trace_tokens)
    prefill_trace_layers(loaded, p_ids, trace[:64], lens=True)  # warm-up: kernels, allocator pools
    t0 = time.perf_counter()
    with Peak(loaded.device) as peak:
        prefill_trace_layers(loaded, p_ids, trace, lens=True, chunk=chunk)
    positions = len(p_ids) + trace_tokens - 1
    kv = costs.kv_bytes(shape, positions, 1, b)
    act = costs.prefill_peak_bytes(shape, positions, chunk, 1, b) - costs.weights_bytes(shape, b)
    return {
        "tokens": trace_tokens,
        "chunk": chunk,
        "seconds": time.perf_counter() - t0,
        "peak_growth_mib": peak.growth,
        "kv_cache_mib": kv / 2**20,
        "predicted_growth_mib": act / 2**20,
        "predicted_without_kv_mib": (act - kv) / 2**20,
    }


def _memory_child(args: argparse.Namespace) -> None:
    import _shapes

    torch.set_num_threads(args.threads)
    loaded = _shapes.load(args.model, args.layers, args.device, args.dtype)
    print(json.dumps(measure_memory(loaded, int(args.memory_lengths), args.chunk)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", type=int, default=None, help="a shape at this depth, random weights")
    ap.add_argument("--lengths", default="512,2048", help="(i): trace lengths, or none")
    ap.add_argument("--gen-tokens", type=int, default=256, help="(ii): trace length, 0 to skip")
    ap.add_argument("--memory-lengths", default=None, help="(iii): trace lengths, one process each")
    ap.add_argument(
        "--chunk", type=int, default=2048, help="(iii): positions per chunk of a long trace (probe.prefill's default)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return _memory_child(args)
    torch.set_num_threads(args.threads)
    import _shapes

    out: dict[str, Any] = {"model": args.model, "layers_arg": args.layers, "device": args.device, "dtype": args.dtype}
    out |= {"threads": args.threads, "loadavg_before": os.getloadavg()}
    lengths = [] if args.lengths == "none" else [int(x) for x in args.lengths.split(",")]
    if lengths or args.gen_tokens:
        t0 = time.perf_counter()
        loaded = _shapes.load(args.model, args.layers, args.device, args.dtype)
        L, V, d = len(loaded.layers), loaded.unembed.weight.shape[0], loaded.unembed.weight.shape[1]
        out |= {"layers": L, "d": d, "vocab": V, "load_s": time.perf_counter() - t0}
        print(f"{loaded.name}: L={L} d={d} V={V} on {loaded.device} ({args.dtype}, {args.threads} threads)", flush=True)
    if lengths:
        out["prefill"] = measure_prefill(loaded, lengths, args.repeats)
        print(
            "| trace tokens | plain s | floor s | full s | full / floor | bi+norm s | bi+norm / plain | full: peak MiB | file B/token/layer |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in out["prefill"]:
            print(
                f"| {r['tokens']} | {r['plain_s']:.3f} | {r['floor_s']:.3f} | {r['full_s']:.3f} | {r['full_over_floor']:.2f} "
                f"| {r['bi_norm_s']:.3f} | {r['bi_norm_over_plain']:.2f} | {r['full_peak_growth_mib']:.0f} "
                f"| {r['file_bytes_per_token_layer']:.1f} |"
            )
    if args.gen_tokens:
        g = out["generation"] = measure_generation(loaded, args.gen_tokens, args.repeats)
        print(
            f"\ngreedy trace of {g['trace_tokens']} tokens (generation without probes {g['generate_ms_per_token']:.2f} ms/token)"
        )
        print("| probe | live ms/token | prefill ms/token | live / prefill |")
        print("|---|---:|---:|---:|")
        for name, a, b in (
            ("lens + BI + norm", g["live_probe_ms_per_token"], g["prefill_probe_ms_per_token"]),
            ("BI + norm", g["live_probe_bare_ms_per_token"], g["prefill_probe_bare_ms_per_token"]),
        ):
            print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
        print(
            f"generate + probe one trace: live {g['analyze_live_s']:.2f} s, generate then prefill {g['analyze_prefill_s']:.2f} s"
        )
    if args.memory_lengths:
        if lengths or args.gen_tokens:
            del loaded
        out["memory"] = []
        print(f"\nchunks of {args.chunk} positions")
        print("| trace tokens | seconds | peak growth MiB | predicted MiB | of which KV cache MiB |")
        print("|---:|---:|---:|---:|---:|")
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed tensors leave the resident set
        for n in args.memory_lengths.split(","):
            cmd = [sys.executable, __file__, "--_child", "--model", args.model, "--memory-lengths", n]
            cmd += ["--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype, "--chunk", str(args.chunk)]
            cmd += ["--layers", str(args.layers)] if args.layers is not None else []
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out["memory"].append(r)
            print(
                f"| {r['tokens']} | {r['seconds']:.1f} | {r['peak_growth_mib']:.0f} | {r['predicted_growth_mib']:.0f} "
                f"| {r['kv_cache_mib']:.0f} |",
                flush=True,
            )
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
