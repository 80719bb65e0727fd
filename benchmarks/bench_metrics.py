"""Benchmark of the trace metrics (layerprobe.metrics) on synthetic traces.

Run on one core:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_metrics.py

Times every per-trace metric on one 100k-token trace (targets: < 2 s in total; the study's nltk
Self-BLEU is timed beside them and kept out of the target, which predates it) and Self-BLEU
across 16 samples of 8k tokens (target: < 5 s). Prints one line per measurement (best of
--repeat runs, each with sacrebleu's tokenizer cache emptied first) and exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from layerprobe.metrics import (  # noqa: E402
    detect_loop,
    longest_repeated_substring,
    reflection_counts,
    reflection_profile,
    self_bleu_across_samples,
    self_bleu_within_study,
    self_bleu_within_trace,
    seq_rep,
)

REFLECTIONS = ["Wait,", "Hmm.", "Alternatively,", "Actually,", "Let me check.", "hold on."]


def synthetic_trace(n_tokens: int, seed: int, loop_fraction: float = 0.3) -> tuple[str, np.ndarray]:
    """A word-level trace of n_tokens words: Zipf-distributed words in sentences, with
    reflection words, ending in a loop (a 150-word passage repeated) over loop_fraction."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)] + REFLECTIONS
    n_loop = int(n_tokens * loop_fraction)
    n_free = n_tokens - n_loop
    ids = np.minimum(rng.zipf(1.3, size=n_free) - 1, 4999)
    refl = rng.random(n_free) < 0.01
    ids[refl] = 5000 + rng.integers(0, len(REFLECTIONS), size=int(refl.sum()))
    segment = ids[-150:].copy() if n_free >= 150 else np.arange(150)
    reps = -(-n_loop // segment.shape[0])
    tokens = np.concatenate([ids, np.tile(segment, reps)[:n_loop]]).astype(np.int64)
    words = [vocab[t] for t in tokens.tolist()]
    for i in range(0, len(words), 17):  # sentence ends
        words[i] = words[i] + "."
    return " ".join(words), tokens


def clear_sacrebleu_caches() -> None:
    """Empty sacrebleu's tokenizer memo caches so that every timed call starts cold."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    Tokenizer13a.__call__.cache_clear()
    TokenizerRegexp.__call__.cache_clear()


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Smallest wall time over `repeat` cold calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        clear_sacrebleu_caches()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-tokens", type=int, default=8_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    text, tokens = synthetic_trace(args.tokens, seed=0)
    token_list = tokens.tolist()
    print(f"one trace: {len(token_list)} tokens, {len(text)} characters")
    total = 0.0
    rows: list[tuple[str, float, Any]] = [
        ("reflection_counts(text)", *best_of(lambda: reflection_counts(text), args.repeat)),
        ("reflection_profile(text)", *best_of(lambda: reflection_profile(text), args.repeat)),
        ("seq_rep(tokens, n=4)", *best_of(lambda: seq_rep(token_list, 4), args.repeat)),
        ("longest_repeated_substring(tokens)", *best_of(lambda: longest_repeated_substring(token_list), args.repeat)),
        ("detect_loop(tokens)", *best_of(lambda: detect_loop(token_list), args.repeat)),
        ("self_bleu_within_trace(text)", *best_of(lambda: self_bleu_within_trace(text), args.repeat)),
        ("self_bleu_within_study(text)", *best_of(lambda: self_bleu_within_study(text), args.repeat)),
    ]
    for name, seconds, result in rows:
        total += seconds if "study" not in name else 0.0
        shown = (
            result
            if not hasattr(result, "segment")
            else (f"Loop(period={result.period}, repeats={result.repeats}, onset={result.onset})")
        )
        print(f"  {name:<38} {seconds:7.3f} s   -> {shown}")
    print(f"  {'all trace metrics':<38} {total:7.3f} s   (target < 2 s)")

    samples = [synthetic_trace(args.sample_tokens, seed=1 + i, loop_fraction=0.0)[0] for i in range(args.samples)]
    seconds, value = best_of(lambda: self_bleu_across_samples(samples), args.repeat)
    print(
        f"Self-BLEU across {args.samples} samples of {args.sample_tokens} tokens: {seconds:.3f} s -> {value:.3f}   (target < 5 s)"
    )
    ok = total < 2.0 and seconds < 5.0
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
