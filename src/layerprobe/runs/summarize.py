"""metrics.json from a run directory: accuracy per budget with intervals, parallel scaling curves,
trace behaviour and paired base-vs-pruned comparisons. Reads samples.jsonl (and the per-layer
aggregates in layers/<variant>.json); works on a run that is still going (marked partial)."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerprobe.metrics import (
    bootstrap_mean_interval,
    cov_at_k,
    maj_at_k,
    paired_comparison,
    pass_at_k,
    proportion_interval,
)
from layerprobe.metrics.selfbleu import self_bleu_across_samples
from layerprobe.runs.schema import MetricsFile, RunInfo, SampleRecord
from layerprobe.runs.store import (
    LAYERS_DIR,
    METRICS_FILE,
    now,
    read_run_info,
    read_samples,
    write_json_atomic,
)

ALL = "all"


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else math.nan


def _ks(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    if n >= 1:
        ks.append(n)
    return ks


def exhausted(r: SampleRecord) -> bool:
    """The trace used up its thinking budget (its answer was forced), whatever ended the answer."""
    if r.budget_hit is not None:
        return r.budget_hit
    return r.finish == "budget" or r.thinking_tokens >= r.budget


def problem_interval(records: Sequence[SampleRecord], value: Any) -> list[float]:
    """95 % bootstrap interval of a per-trace value's mean, resampling problems (a problem's traces
    at several budgets and samples are not independent of each other)."""
    per: dict[str, list[float]] = defaultdict(list)
    for r in records:
        per[r.problem_id].append(float(value(r)))
    means = [statistics.fmean(v) for v in per.values()]
    if len(means) < 2:
        return [math.nan, math.nan]
    if all(m == means[0] for m in means) and means[0] in (0.0, 1.0):
        # the bootstrap of identical values is a single point; Wilson over problems is not
        return list(proportion_interval(int(means[0]) * len(means), len(means)))
    return list(bootstrap_mean_interval(means, seed=0))


def accuracy(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """Share correct with its 95 % Wilson interval, plus the length/outcome rates of the group."""
    n = len(records)
    c = sum(r.correct for r in records)
    lo, hi = proportion_interval(c, n) if n else (math.nan, math.nan)
    return {
        "n": n,
        "correct": c,
        "accuracy": c / n if n else math.nan,
        "ci": [lo, hi],
        "mean_thinking_tokens": _mean([r.thinking_tokens for r in records]),
        "budget_exhausted_rate": _mean([float(exhausted(r)) for r in records]),
        "answer_missing_rate": _mean([float(r.answer is None) for r in records]),
    }


def parallel_curves(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """pass@k (unbiased), maj@k and cov@k vs k, averaged over problems with bootstrap intervals."""
    by_problem: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_problem[r.problem_id].append(r)
    if not by_problem:
        return {"n_problems": 0}
    groups = [sorted(v, key=lambda r: r.sample) for v in by_problem.values()]
    n = min(len(g) for g in groups)
    out: dict[str, Any] = {"n_problems": len(groups), "samples": n, "k": _ks(n)}
    for name in ("pass", "maj", "cov"):
        out[f"{name}_at_k"] = {}
    for k in out["k"]:
        per = {"pass": [], "maj": [], "cov": []}
        for g in groups:
            g = g[:n]
            flags = [r.correct for r in g]
            per["pass"].append(pass_at_k(n, sum(flags), k))
            per["maj"].append(float(maj_at_k([r.answer for r in g], flags, k)))
            per["cov"].append(float(cov_at_k(flags, k)))
        for name, vals in per.items():
            lo, hi = bootstrap_mean_interval(vals, seed=0) if len(vals) > 1 else (math.nan, math.nan)
            out[f"{name}_at_k"][str(k)] = {"value": statistics.fmean(vals), "ci": [lo, hi]}
    sb = [self_bleu_across_samples([r.thinking_text for r in g]) for g in groups if len(g) > 1]
    out["self_bleu_across"] = _mean(sb)
    return out


def trace_behaviour(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """Loops, repetition, reflection words and lengths over a set of traces."""
    n = len(records)
    if n == 0:
        return {"n": 0}
    tokens = sum(r.thinking_tokens for r in records)
    by_word: dict[str, int] = defaultdict(int)
    for r in records:
        for w, c in r.reflections.get("counts", {}).items():
            by_word[w] += c
    loops = [r for r in records if r.repetition.get("loop")]
    seq_key = next((k for k in records[0].repetition if k.startswith("seq_rep_")), None)
    lengths = sorted(r.thinking_tokens for r in records)
    return {
        "n": n,
        "thinking_tokens_total": tokens,
        "mean_thinking_tokens": statistics.fmean(lengths),
        "median_thinking_tokens": float(statistics.median(lengths)),
        "loop_rate": len(loops) / n,
        "loop_ci": problem_interval(records, lambda r: bool(r.repetition.get("loop"))),
        "n_problems": len({r.problem_id for r in records}),
        "mean_loop_onset_fraction": _mean(
            [r.repetition["loop_onset"] / max(1, r.repetition.get("length") or 1) for r in loops]
        ),
        "seq_rep": _mean([r.repetition.get(seq_key) for r in records]) if seq_key else math.nan,
        "seq_rep_key": seq_key,
        "self_bleu_within": _mean([r.self_bleu_within for r in records]),
        "reflections_per_1k": 1000.0 * sum(by_word.values()) / tokens if tokens else math.nan,
        "reflections_by_word_per_1k": {w: 1000.0 * c / tokens for w, c in sorted(by_word.items())} if tokens else {},
        "waits_inserted": sum(r.waits for r in records),
        "budget_exhausted_rate": _mean([float(exhausted(r)) for r in records]),
        "answer_missing_rate": _mean([float(r.answer is None) for r in records]),
    }


def _group_metrics(records: Sequence[SampleRecord]) -> dict[str, Any]:
    seq = [r for r in records if r.mode == "sequential"]
    par = [r for r in records if r.mode == "parallel"]
    budgets = sorted({r.budget for r in seq})
    return {
        "sequential": {str(b): accuracy([r for r in seq if r.budget == b]) for b in budgets},
        "parallel": parallel_curves(par),
        "behaviour": trace_behaviour(records),
    }


def _per_problem(records: Sequence[SampleRecord]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for r in records:
        acc[r.problem_id].append(float(r.correct))
    return {p: statistics.fmean(v) for p, v in acc.items()}


def comparisons(records: Sequence[SampleRecord], base: str, others: Sequence[str]) -> list[dict[str, Any]]:
    """Paired comparisons of every other variant against the base, problem by problem."""
    out = []
    groups = [ALL] + sorted({r.group for r in records if r.group})
    for variant in others:
        for group in groups:
            sel = [r for r in records if group == ALL or r.group == group]
            settings = sorted({("sequential", r.budget) for r in sel if r.mode == "sequential"})
            settings += sorted({("parallel", r.budget) for r in sel if r.mode == "parallel"})
            for mode, budget in settings:
                a = _per_problem([r for r in sel if r.variant == base and r.mode == mode and r.budget == budget])
                b = _per_problem([r for r in sel if r.variant == variant and r.mode == mode and r.budget == budget])
                common = sorted(set(a) & set(b))
                if not common:
                    continue
                cmp = paired_comparison([a[p] for p in common], [b[p] for p in common], n_boot=4000, n_perm=4000)
                out.append(
                    {"variant": variant, "base": base, "group": group, "mode": mode, "budget": budget,
                     "metric": "accuracy" if mode == "sequential" else "mean accuracy over samples",
                     **cmp.as_dict()}
                )
    return out


def _layer_aggregates(run_dir: Path, variant: str) -> dict[str, Any] | None:
    path = run_dir / LAYERS_DIR / f"{variant}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def compute_metrics(run_dir: str | os.PathLike[str], info: RunInfo | None = None) -> MetricsFile:
    """All summaries of a run directory, from its samples (partial when the run is not complete)."""
    run_dir = Path(run_dir)
    info = info or read_run_info(run_dir)
    records = read_samples(run_dir)
    names = [v.name for v in info.variants]
    variants: dict[str, dict[str, Any]] = {}
    for spec in info.variants:
        recs = [r for r in records if r.variant == spec.name]
        groups = {ALL: _group_metrics(recs)}
        for g in sorted({r.group for r in recs if r.group}):
            groups[g] = _group_metrics([r for r in recs if r.group == g])
        variants[spec.name] = {
            "dropped": spec.dropped,
            "method": spec.method,
            "n_traces": len(recs),
            "groups": groups,
            "layers": _layer_aggregates(run_dir, spec.name),
        }
    partial = info.status != "complete" or (
        info.expected_traces is not None and len(records) < info.expected_traces
    )
    return MetricsFile(
        computed=now(),
        n_samples=len(records),
        partial=partial,
        variants=variants,
        comparisons=comparisons(records, names[0], names[1:]) if names else [],
    )


def write_metrics(run_dir: str | os.PathLike[str], info: RunInfo | None = None) -> MetricsFile:
    """compute_metrics and write metrics.json atomically."""
    m = compute_metrics(run_dir, info)
    write_json_atomic(Path(run_dir) / METRICS_FILE, m.model_dump(mode="json"))
    return m
