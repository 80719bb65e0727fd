"""Cost of the per-layer probes (layerprobe.probe) during generation, on CPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_probes.py speed --model toy --batch 16
    HF_HUB_OFFLINE=1 python benchmarks/bench_probes.py speed --model smollm2-135m --batch 4
    HF_HUB_OFFLINE=1 python benchmarks/bench_probes.py speed --model s1.1-7b --layers 2 --batch 4 --new-tokens 32
    HF_HUB_OFFLINE=1 python benchmarks/bench_probes.py memory          # toy, trace lengths 512/2048/8192
    HF_HUB_OFFLINE=1 python benchmarks/bench_probes.py tl --model toy  # TransformerLens run_with_cache

speed: greedy generation through the scaling engine with a thinking budget of --new-tokens and an
unlimited number of "Wait" extensions, so every row thinks for exactly --new-tokens tokens (then the
forced answer and at most --answer-max answer tokens): all modes generate the same tokens. Modes, run
interleaved --repeats times (the order rotates), medians reported:
  plain  - no observer;
  bi     - LayerProbe(lens=False): block influence + residual norm;
  lens   - LayerProbe(lens=True): + full logit lens (JSD, entropy, top-1, rank);
  matmul - the bare lens matmul alone: (B·L, H) × (H, V) in the model's dtype, once per forward pass
           with that pass's batch size (the arithmetic floor of the lens).
Targets: bi / plain ≤ 1.05 (a); lens / (plain + matmul) ≤ 1.5 (b). Wall-clock medians are the
targets; process CPU time is reported too (on a machine shared with other jobs it is the steadier of
the two; the CPU-time ratio b counts the matmul as busy on every thread).

memory: one fresh subprocess per (trace length, mode) generating one trace (batch 1, toy) with
MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the RSS; reports the peak RSS during generation
minus the RSS before it, next to the KV cache size at that length (c).

tl: the same statistics for one sequence through TransformerLens (boot on the loaded model, then
run_with_cache on prompt + trace), time and peak RSS growth, against one plain HF forward over the
same sequence and against generating it with the probe attached (d).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from _memory import PeakSampler, rss_mb  # benchmarks/_memory.py (the script's folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load(name: str, threads: int, layers: int | None = None):
    """The model by alias or path, or a shape at `layers` layers with random weights (benchmarks/_shapes.py)."""
    import _shapes
    import torch

    torch.set_num_threads(threads)
    return _shapes.load(name, layers, "cpu", "float32")


def prompts(loaded, n: int, seed: int = 0) -> list[str]:
    """n user texts of 8-20 ordinary vocabulary words (deterministic)."""
    rng = random.Random(seed)
    words = sorted(w for w in loaded.tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 1)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) for _ in range(n)]


def requests(loaded, fmt, n: int, new_tokens: int, answer_max: int):
    from layerprobe.scaling.engine import GenRequest, build_prompt

    return [
        GenRequest(key=i, prompt=build_prompt(loaded.tokenizer, fmt, p), budget=new_tokens, wait=10**9, answer_max=answer_max)
        for i, p in enumerate(prompts(loaded, n))
    ]


class BatchSizes:
    """Observer recording the batch size of every forward pass."""

    def __init__(self):
        self.sizes: list[int] = []

    def on_forward(self, keys, attention_mask, prefill):
        self.sizes.append(len(keys))

    def on_tokens(self, keys, tokens, phases):
        pass

    def on_finish(self, result):
        pass


def bare_matmul_seconds(loaded, sizes: list[int], repeats: int = 30) -> float:
    """Time of the lens matmul alone, once per forward pass of the given batch sizes."""
    import torch

    W = loaded.unembed.weight
    L, H = len(loaded.layers), W.shape[1]
    sync = torch.cuda.synchronize if W.device.type == "cuda" else (lambda: None)
    total = 0.0
    with torch.inference_mode():
        for b in sorted(set(sizes)):
            x = torch.randn(b * L, H, dtype=W.dtype, device=W.device)
            for _ in range(3):
                x @ W.T
            ts = []
            for _ in range(repeats):
                sync()
                t = time.perf_counter()
                x @ W.T
                sync()
                ts.append(time.perf_counter() - t)
            total += statistics.median(ts) * sizes.count(b)
    return total


def _timed_probe_class():
    from layerprobe.probe.hooks import LayerProbe

    class TimedProbe(LayerProbe):
        """LayerProbe that also sums the wall time of its per-step reduction (on_tokens)."""

        spent = 0.0

        def on_tokens(self, keys, tokens, phases):
            t = time.perf_counter()
            super().on_tokens(keys, tokens, phases)
            self.spent += time.perf_counter() - t

    return TimedProbe


def measure_speed(loaded, batch: int, new_tokens: int, answer_max: int, repeats: int, threads: int, fmt_name: str = "s1") -> dict:
    """(a) and (b): greedy generation of `batch` traces of `new_tokens` thinking tokens, plain, with the
    probe without and with the lens, interleaved `repeats` times; medians and ratios."""
    from layerprobe.scaling.engine import TraceGenerator
    from layerprobe.scaling.formats import Sampling, detect_format

    fmt = detect_format(loaded.tokenizer, loaded.reasoning_format or fmt_name)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, fmt, Sampling(temperature=0.0))
    reqs = requests(loaded, fmt, batch, new_tokens, answer_max)
    counter = BatchSizes()
    ref = gen.generate(reqs, batch_size=batch, observers=[counter])  # warm-up, and the forward passes
    lengths = sorted({len(r.all_ids) for r in ref})
    times: dict[str, list[float]] = {"plain": [], "bi": [], "lens": []}
    cpu: dict[str, list[float]] = {"plain": [], "bi": [], "lens": []}
    reduce_s: dict[str, list[float]] = {"bi": [], "lens": []}
    LayerProbe = _timed_probe_class()

    def run(mode: str) -> float:
        t = time.perf_counter()
        c = time.process_time()
        if mode == "plain":
            out = gen.generate(reqs, batch_size=batch)
        else:
            with LayerProbe(loaded, lens=(mode == "lens")) as probe:
                out = gen.generate(reqs, batch_size=batch, observers=[probe])
                for r in out:
                    probe.pop(r.key)
            reduce_s[mode].append(probe.spent)
        dt = time.perf_counter() - t
        cpu[mode].append(time.process_time() - c)
        assert [r.all_ids for r in out] == [r.all_ids for r in ref], "generation differs between modes"
        return dt

    modes = list(times)
    for rep in range(repeats):
        for mode in modes[rep % 3 :] + modes[: rep % 3]:
            times[mode].append(run(mode))
            print(f"  rep {rep} {mode:5s} {times[mode][-1]:.3f} s wall {cpu[mode][-1]:.3f} s cpu", file=sys.stderr, flush=True)
    mm = [bare_matmul_seconds(loaded, counter.sizes) for _ in range(repeats)]
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    ca = cmed["bi"] / cmed["plain"]
    cb = cmed["lens"] / (cmed["plain"] + statistics.median(mm) * threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["matmul"] = statistics.median(mm)
    a = med["bi"] / med["plain"]
    b = med["lens"] / (med["plain"] + med["matmul"])
    W = loaded.unembed.weight
    return {
        "model": loaded.name,
        "batch": batch,
        "threads": threads,
        "forward_passes": len(counter.sizes),
        "trace_lengths": lengths,
        "lens_shape": [batch * len(loaded.layers), W.shape[1], W.shape[0]],
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in {**times, "matmul": mm}.items()},
        "ms_per_forward": {k: round(1000 * v / len(counter.sizes), 3) for k, v in med.items()},
        "ratio_a_bi_over_plain": round(a, 4),
        "ratio_b_lens_over_plain_plus_matmul": round(b, 4),
        "ratio_lens_over_plain": round(med["lens"] / med["plain"], 4),
        "on_tokens_ms_per_forward_median": {
            k: round(1000 * statistics.median(v) / len(counter.sizes), 3) for k, v in reduce_s.items()
        },
        "cpu_seconds_median": {k: round(v, 3) for k, v in cmed.items()},
        "cpu_seconds_all": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "cpu_ratio_a": round(ca, 4),
        "cpu_ratio_b": round(cb, 4),
        "target_a_met": a <= 1.05,
        "target_b_met": b <= 1.5,
        "loadavg_after": os.getloadavg(),
    }


def cmd_speed(args) -> int:
    loaded = load(args.model, args.threads, args.layers)
    report = measure_speed(loaded, args.batch, args.new_tokens, args.answer_max, args.repeats, args.threads, args.format)
    report["model"] = args.model
    print(json.dumps(report, indent=1))
    return 0


def _memory_child(args) -> int:
    """One trace of --new-tokens thinking tokens at batch 1; prints a JSON line."""
    import torch

    from layerprobe.probe.hooks import LayerProbe
    from layerprobe.scaling.engine import TraceGenerator
    from layerprobe.scaling.formats import Sampling, detect_format

    loaded = load(args.model, args.threads, args.layers)
    fmt = detect_format(loaded.tokenizer, loaded.reasoning_format or args.format)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, fmt, Sampling(temperature=0.0))
    reqs = requests(loaded, fmt, 1, args.new_tokens, args.answer_max)
    gen.generate(requests(loaded, fmt, 1, 8, 2))  # warm-up
    before = rss_mb()
    t = time.perf_counter()
    with PeakSampler(0.01) as peak:
        if args.mode == "plain":
            out = gen.generate(reqs, batch_size=1)
            stored = 0
        else:
            with LayerProbe(loaded, lens=True) as probe:
                out = gen.generate(reqs, batch_size=1, observers=[probe])
                tl = probe.pop(0)
            stored = sum(
                getattr(tl, k).nbytes for k in ("block_influence", "norm", "jsd", "entropy", "top1_agree", "rank", "tokens")
            )
    dt = time.perf_counter() - t
    c = loaded.model.config
    n_pos = out[0].prompt_tokens + len(out[0].all_ids)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * n_pos * torch.finfo(loaded.dtype).bits // 8
    print(
        json.dumps(
            {
                "mode": args.mode,
                "new_tokens": args.new_tokens,
                "positions": n_pos,
                "seconds": round(dt, 2),
                "rss_before_mb": round(before, 1),
                "peak_growth_mb": round(peak.peak - before, 1),
                "kv_cache_mb": round(kv / 2**20, 1),
                "probe_arrays_mb": round(stored / 2**20, 2),
                "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )
    return 0


def cmd_memory(args) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    rows = []
    for n in args.lengths:
        for mode in ("plain", "probe"):
            cmd = [
                sys.executable,
                __file__,
                "_memory_child",
                "--model",
                args.model,
                *(["--layers", str(args.layers)] if args.layers is not None else []),
                "--new-tokens",
                str(n),
                "--mode",
                mode,
                "--threads",
                str(args.threads),
                "--answer-max",
                str(args.answer_max),
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return 0


def _tl_child(args) -> int:
    import torch

    from layerprobe.probe.tl import boot_bridge, tl_layer_stats

    loaded = load(args.model, args.threads, args.layers)
    V = loaded.unembed.weight.shape[0]
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, V, (args.new_tokens,), generator=g).tolist()
    with torch.inference_mode():
        loaded.model(torch.tensor([seq[:8]]))  # warm-up
    before = rss_mb()
    with PeakSampler(0.01) as peak:
        t = time.perf_counter()
        if args.mode == "hf":
            with torch.inference_mode():
                loaded.model(torch.tensor([seq]), use_cache=False)
            boot = 0.0
        else:
            bridge = boot_bridge(loaded)
            boot = time.perf_counter() - t
            tl_layer_stats(loaded, seq, bridge=bridge)
        dt = time.perf_counter() - t
    print(
        json.dumps(
            {
                "mode": args.mode,
                "tokens": args.new_tokens,
                "seconds": round(dt, 3),
                "boot_seconds": round(boot, 3),
                "peak_growth_mb": round(peak.peak - before, 1),
            }
        )
    )
    return 0


def cmd_tl(args) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for n in args.lengths:
        for _rep in range(args.repeats):
            for mode in ("hf", "tl"):
                cmd = [
                    sys.executable,
                    __file__,
                    "_tl_child",
                    "--model",
                    args.model,
                    *(["--layers", str(args.layers)] if args.layers is not None else []),
                    "--new-tokens",
                    str(n),
                    "--mode",
                    mode,
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode:
                    print(json.dumps({"mode": mode, "tokens": n, "error": out.stderr.strip().splitlines()[-1:]}))
                    continue
                print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["speed", "memory", "tl", "_memory_child", "_tl_child"])
    ap.add_argument("--model", default="toy")
    ap.add_argument(
        "--layers", type=int, default=None, help="a shape (s1.1-7b, qwen3-8b, smollm2-135m) at this depth, random weights"
    )
    ap.add_argument("--format", default="s1", help="reasoning format when the model has none recorded (smollm2: s1)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--answer-max", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=None)
    ap.add_argument("--mode", default="probe")
    args = ap.parse_args()
    if args.lengths is None:
        args.lengths = [512, 2048, 8192] if args.part == "memory" else [512]
    return {"speed": cmd_speed, "memory": cmd_memory, "tl": cmd_tl, "_memory_child": _memory_child, "_tl_child": _tl_child}[
        args.part
    ](args)


if __name__ == "__main__":
    sys.exit(main())
