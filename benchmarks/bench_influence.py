"""Benchmark of the layer scores (layerprobe.prune.scores) on the real smollm2-135m, on CPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_influence.py

For each document count (default 16 and 64 documents of the embedded calibration text, 256 tokens
each) a fresh subprocess loads smollm2-135m in float32, computes block influence and angular distance
d(l, 1) in one streaming pass on --threads CPU threads, and reports:
- wall time of the scoring pass (target: < 60 s for 64 x 256 tokens on 2 threads);
- peak resident memory: the process's ru_maxrss, the peak RSS sampled every 20 ms during the
  scoring pass alone (so that the model-loading peak does not hide growth), and the RSS after each
  batch. Streaming accumulation should make the scoring peak flat in the number of documents.
  With --live-memory the subprocesses run with MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors
  leave the RSS (glibc otherwise keeps freed memory cached, which makes peaks noisy); use it for the
  memory numbers, not for the times.
  --baseline also runs a plain forward pass over the same batches (time and RSS after each batch).
Exits 1 when the time target is missed.

With --traces N it instead compares, for the same model, the block-influence ranking on the embedded
generic text with the ranking on N of the model's own greedy reasoning traces (--trace-tokens new tokens
each): the lowest-BI layers under each and the Spearman correlation of the two BI vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _memory import PeakSampler, rss_mb  # benchmarks/_memory.py (the script's folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TARGET_S = 60.0


def load(threads: int):
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from layerprobe import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")


def child(n_docs: int, threads: int, seq_len: int, batch_size: int, baseline: bool = False) -> dict:
    """One measurement in this process; prints a JSON line."""
    t0 = time.perf_counter()
    loaded = load(threads)
    load_s = time.perf_counter() - t0
    from layerprobe.prune import embedded_calibration, layer_scores

    cal = embedded_calibration(n_docs)
    rss_before = rss_mb()
    trace: list[float] = []  # RSS after each batch: flat when nothing accumulates across documents
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        scores = layer_scores(
            loaded,
            cal,
            n_max=1,
            seq_len=seq_len,
            batch_size=batch_size,
            progress=lambda done, total: trace.append(round(rss_mb(), 1)),
        )
        wall = time.perf_counter() - t0
    extra = {}
    if baseline:  # the same batches through the bare decoder stack, no hooks, no statistics
        import torch

        from layerprobe.prune.scores import encode_documents

        ids = torch.tensor(encode_documents(loaded.tokenizer, cal, seq_len))
        plain: list[float] = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(ids), batch_size):
                chunk = ids[i : i + batch_size]
                loaded.model.model(input_ids=chunk, attention_mask=torch.ones_like(chunk), use_cache=False)
                plain.append(round(rss_mb(), 1))
        extra = {"plain_forward_s": round(time.perf_counter() - t0, 2), "plain_rss_after_each_batch_mb": plain}
    return {
        **extra,
        "n_docs": scores.n_docs,
        "n_tokens": scores.n_tokens,
        "threads": threads,
        "batch_size": batch_size,
        "load_s": round(load_s, 2),
        "score_s": round(wall, 2),
        "rss_before_scoring_mb": round(rss_before, 1),
        "peak_rss_during_scoring_mb": round(sampler.peak, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_each_batch_mb": trace,
        "lowest_bi": scores.bi_ranking()[:4],
    }


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for k, i in enumerate(order):
            r[i] = float(k)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def compare_traces(n_traces: int, trace_tokens: int, threads: int, seq_len: int, batch_size: int, n_docs: int) -> None:
    loaded = load(threads)
    from layerprobe.prune import embedded_calibration, layer_scores, traces_calibration

    generic = embedded_calibration(n_docs)
    t0 = time.perf_counter()
    traces = traces_calibration(loaded, n_traces, trace_tokens)
    gen_s = time.perf_counter() - t0
    s_gen = layer_scores(loaded, generic, seq_len=seq_len, batch_size=batch_size)
    s_tr = layer_scores(loaded, traces, seq_len=seq_len, batch_size=batch_size)
    lengths = [len(ids) for ids in traces.token_ids]
    print(
        f"traces: {n_traces} greedy traces, up to {trace_tokens} new tokens, total lengths {lengths} "
        f"(generated in {gen_s:.1f} s); scored {s_tr.n_tokens} tokens"
    )
    print(f"generic: embedded text, {s_gen.n_docs} docs x {seq_len} tokens = {s_gen.n_tokens} tokens")
    print("layer  BI(generic)  BI(traces)")
    for i in range(loaded.n_layers):
        print(f"{i:5d}  {s_gen.block_influence[i]:11.4f}  {s_tr.block_influence[i]:10.4f}")
    print("lowest-BI 4 (generic):", s_gen.bi_ranking()[:4])
    print("lowest-BI 4 (traces): ", s_tr.bi_ranking()[:4])
    print("lowest-BI 8 (generic):", s_gen.bi_ranking()[:8])
    print("lowest-BI 8 (traces): ", s_tr.bi_ranking()[:8])
    print(f"Spearman(BI generic, BI traces) = {spearman(s_gen.block_influence, s_tr.block_influence):.3f}")
    print("first trace:", repr(traces.texts[0][:600]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="16,64", help="document counts to measure, one subprocess each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--live-memory",
        action="store_true",
        help="run the measurements with MALLOC_MMAP_THRESHOLD_=65536 (RSS = live memory; slower)",
    )
    ap.add_argument(
        "--baseline", action="store_true", help="also time a plain forward pass (no hooks) over the same batches, for comparison"
    )
    ap.add_argument("--traces", type=int, default=None, help="compare generic text with N reasoning traces instead")
    ap.add_argument("--trace-tokens", type=int, default=128)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.threads, args.seq_len, args.batch_size, args.baseline)))
        return 0
    if args.traces is not None:
        compare_traces(args.traces, args.trace_tokens, args.threads, args.seq_len, args.batch_size, 64)
        return 0
    results = []
    for n in [int(x) for x in args.docs.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--threads",
            str(args.threads),
            "--seq-len",
            str(args.seq_len),
            "--batch-size",
            str(args.batch_size),
        ]
        if args.baseline:
            cmd.append("--baseline")
        env = dict(os.environ)
        if args.live_memory:
            # Large allocations through mmap, so that freed tensors leave the RSS and the peak reflects
            # live memory rather than what glibc's heap keeps cached (costs time: page faults).
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res))
    ok = True
    for res in results:
        if res["n_docs"] == 64 and res["score_s"] > TARGET_S:
            ok = False
            print(f"MISSED: {res['n_docs']} docs took {res['score_s']} s (target < {TARGET_S} s)")
    if len(results) > 1:
        growth = results[-1]["peak_rss_during_scoring_mb"] - results[0]["peak_rss_during_scoring_mb"]
        print(f"peak RSS during scoring grows by {growth:+.1f} MB from {results[0]['n_docs']} to {results[-1]['n_docs']} docs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
