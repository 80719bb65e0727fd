"""metrics.json from a run's samples (and layers/): accuracy per budget with intervals, parallel
scaling curves, trace behaviour, grading health and the paired base-vs-variant comparisons of
accuracy and of trace behaviour. Works on a run that is still going (marked partial)."""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from layerprobe.data.schema import (
    Accuracy,
    Behaviour,
    Comparison,
    GradingHealth,
    GroupMetrics,
    Interval,
    MetricsFile,
    OutcomeContrast,
    ParallelCurves,
    RunInfo,
    SampleRecord,
    VariantMetrics,
)
from layerprobe.data.store import (
    METRICS_FILE,
    now,
    read_run_info,
    read_samples,
    write_model,
)
from layerprobe.metrics import (
    PairedComparison,
    bootstrap_mean_interval,
    budget_exhausted,
    clustered_difference,
    cov_at_k,
    decide,
    maj_at_k,
    paired_comparison,
    pass_at_k,
    proportion_interval,
)
from layerprobe.metrics.selfbleu import self_bleu_across_samples

ALL = "all"
#: Above this share of traces without an extracted answer, a variant's accuracy is not meaningful.
MISSING_ANSWER_LIMIT = 0.20
DEFINITIONS = 2
"""Version of the definitions below (MetricsFile.definitions). 2: every behaviour number of a variant is
the mean over its problems of the problem's value (reflection words pooled within the problem), the same
per-problem values its paired comparisons and its wrong-against-right contrasts use; the difference rule
(metrics.decide) with its minimum of problems."""


def _mean(values: Sequence[float | None]) -> float:
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


def problem_interval(records: Sequence[SampleRecord], value: Callable[[SampleRecord], float]) -> tuple[float, float]:
    """95 % bootstrap interval of a per-trace value's mean, resampling problems (a problem's traces
    at several budgets and samples are not independent of each other)."""
    per: dict[str, list[float]] = defaultdict(list)
    for r in records:
        per[r.problem_id].append(float(value(r)))
    means = [statistics.fmean(v) for v in per.values()]
    if len(means) < 2:
        return (math.nan, math.nan)
    if all(m == means[0] for m in means) and means[0] in (0.0, 1.0):
        # the bootstrap of identical values is a single point; Wilson over problems is not
        return proportion_interval(int(means[0]) * len(means), len(means))
    return bootstrap_mean_interval(means, seed=0)


def accuracy(records: Sequence[SampleRecord]) -> Accuracy:
    """Share correct with its 95 % Wilson interval, plus the length/outcome rates of the traces."""
    n = len(records)
    c = sum(r.correct is True for r in records)
    lo, hi = proportion_interval(c, n) if n else (math.nan, math.nan)
    return Accuracy(
        n=n,
        correct=c,
        accuracy=c / n if n else None,
        ci=(lo, hi),
        mean_thinking_tokens=_mean([r.thinking_tokens for r in records]),
        budget_exhausted_rate=_mean([float(budget_exhausted(r)) for r in records]),
        answer_missing_rate=_mean([float(r.answer is None) for r in records]),
    )


def parallel_samples(records: Sequence[SampleRecord]) -> list[SampleRecord]:
    """The samples parallel scaling is measured on: the traces at the parallel budget (the largest budget
    that has parallel traces), one per variant, problem and sample index: the parallel ones, and a
    sequential trace at that budget whose index none of its problem's parallel traces has (an ingested
    file's first sample of a problem; `analyze` generates a parallel sample 0 of its own)."""
    par = [r for r in records if r.mode == "parallel"]
    if not par:
        return []
    top = max(r.budget for r in par)
    par = [r for r in par if r.budget == top]
    have = {(r.variant, r.problem_id, r.sample) for r in par}
    problems = {(r.variant, r.problem_id) for r in par}
    first = [
        r
        for r in records
        if r.mode == "sequential"
        and r.budget == top
        and (r.variant, r.problem_id) in problems
        and (r.variant, r.problem_id, r.sample) not in have
    ]
    return first + par


def parallel_curves(records: Sequence[SampleRecord], self_bleu: dict[tuple[str, str], float]) -> ParallelCurves:
    """pass@k (unbiased), maj@k and cov@k vs k, averaged over problems with bootstrap intervals.

    `self_bleu` maps (variant, problem) to the problem's Self-BLEU across samples (computed once
    per run). Samples that are copies of one trace (greedy decoding) have no Self-BLEU: it would
    only measure that a text equals itself."""
    by_problem: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_problem[r.problem_id].append(r)
    if not by_problem:
        return ParallelCurves()
    groups = [sorted(v, key=lambda r: r.sample) for v in by_problem.values()]
    n = min(len(g) for g in groups)
    out = ParallelCurves(n_problems=len(groups), samples=n, k=_ks(n))
    for k in out.k:
        per: dict[str, list[float]] = {"pass": [], "maj": [], "cov": []}
        for g in groups:
            g = g[:n]
            flags = [r.correct is True for r in g]
            per["pass"].append(pass_at_k(n, sum(flags), k))
            per["maj"].append(float(maj_at_k([r.answer for r in g], flags, k)))
            per["cov"].append(float(cov_at_k(flags, k)))
        for name, vals in per.items():
            lo, hi = bootstrap_mean_interval(vals, seed=0) if len(vals) > 1 else (math.nan, math.nan)
            getattr(out, f"{name}_at_k")[str(k)] = Interval(value=statistics.fmean(vals), ci=(lo, hi))
    out.identical_samples = n > 1 and all(all(r.origin == "copy" for r in g[1:]) for g in groups)
    if not out.identical_samples:
        out.self_bleu_across = _mean([self_bleu.get((g[0].variant, g[0].problem_id)) for g in groups if len(g) > 1])
    return out


def trace_behaviour(records: Sequence[SampleRecord]) -> Behaviour:
    """Loops, repetition, reflection words, lengths and answer extraction over a set of traces. Every
    rate and mean is the mean over problems of the problem's value (`problem_values`): one definition,
    shared with the paired comparisons, so a problem with more traces does not weigh more."""
    n = len(records)
    if n == 0:
        return Behaviour()
    tokens = sum(r.thinking_tokens for r in records)
    loops = [r for r in records if r.repetition.loop]
    lengths = sorted(r.thinking_tokens for r in records)
    extraction: dict[str, int] = defaultdict(int)
    for r in records:
        extraction[r.extraction or ("none" if r.answer is None else "unknown")] += 1
    mean = lambda key: _mean(list(problem_values(records, key).values()))
    return Behaviour(
        n=n,
        n_problems=len({r.problem_id for r in records}),
        thinking_tokens_total=tokens,
        mean_thinking_tokens=mean("thinking_tokens"),
        median_thinking_tokens=float(statistics.median(lengths)),
        loop_rate=mean("loop"),
        loop_ci=problem_interval(records, lambda r: float(r.repetition.loop)),
        mean_loop_onset_fraction=_mean([(r.repetition.loop_onset or 0) / max(1, r.repetition.length or 1) for r in loops]),
        seq_rep=mean("seq_rep"),
        self_bleu_within=mean("self_bleu_within"),
        self_bleu_within_study=mean("self_bleu_within_study"),
        truncated_rate=mean("truncated"),
        reflections_per_1k=mean("reflections_per_1k") if tokens else None,
        reflections_by_word_per_1k=reflections_by_word(records) if tokens else {},
        waits_inserted=sum(r.waits for r in records),
        budget_exhausted_rate=mean("budget_exhausted"),
        answer_missing_rate=mean("answer_missing"),
        extraction=dict(sorted(extraction.items())),
    )


def _group_metrics(records: Sequence[SampleRecord], self_bleu: dict[tuple[str, str], float]) -> GroupMetrics:
    """Accuracy and parallel curves over the graded traces; behaviour over all of them."""
    seq = [r for r in records if r.mode == "sequential" and r.correct is not None]
    par = [r for r in parallel_samples(records) if r.correct is not None]
    budgets = sorted({r.budget for r in seq})
    return GroupMetrics(
        sequential={str(b): accuracy([r for r in seq if r.budget == b]) for b in budgets},
        parallel=parallel_curves(par, self_bleu),
        behaviour=trace_behaviour(records),
    )


def _per_problem(records: Sequence[SampleRecord], value: Callable[[SampleRecord], float | None]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for r in records:
        x = value(r)
        if x is not None and not (isinstance(x, float) and math.isnan(x)):
            acc[r.problem_id].append(float(x))
    return {p: statistics.fmean(v) for p, v in acc.items() if v}


#: Bootstrap and permutation resamples behind every stored paired comparison (metrics, compare).
STORED_RESAMPLES = 4000


def stored_paired(a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    """The paired comparison of per-problem values a and b as every stored file computes it."""
    return paired_comparison(a, b, n_boot=STORED_RESAMPLES, n_perm=STORED_RESAMPLES)


def to_comparison(a: Sequence[float], b: Sequence[float], **keys: Any) -> Comparison:
    """The paired comparison of per-problem values a (base) and b (variant) as a stored record."""
    c = stored_paired(a, b)
    return Comparison(
        **keys,
        n_pairs=c.n_pairs,
        mean_a=c.mean_a,
        mean_b=c.mean_b,
        diff=c.diff,
        ci_low=c.ci_low,
        ci_high=c.ci_high,
        ci_method=c.ci_method,
        test=c.test,
        p_value=c.p_value,
        n_discordant=None if c.n01 is None else c.n01 + (c.n10 or 0),
        n_a_only=c.n10,
        n_b_only=c.n01,
        verdict=c.verdict,
        agree=c.agree,
        reason=c.reason,
    )


def comparisons(records: Sequence[SampleRecord], base: str, others: Sequence[str]) -> list[Comparison]:
    """Paired accuracy comparisons of every other variant against the base, problem by problem."""
    out = []
    groups = [ALL] + sorted({r.group for r in records if r.group})
    for variant in others:
        for group in groups:
            sel = [r for r in records if group == ALL or r.group == group]
            settings = sorted({("sequential", r.budget) for r in sel if r.mode == "sequential"})
            settings += sorted({("parallel", r.budget) for r in sel if r.mode == "parallel"})
            for mode, budget in settings:
                a = _per_problem(
                    [r for r in sel if r.variant == base and r.mode == mode and r.budget == budget],
                    lambda r: float(r.correct is True),
                )
                b = _per_problem(
                    [r for r in sel if r.variant == variant and r.mode == mode and r.budget == budget],
                    lambda r: float(r.correct is True),
                )
                common = sorted(set(a) & set(b))
                if not common:
                    continue
                out.append(
                    to_comparison(
                        [a[p] for p in common],
                        [b[p] for p in common],
                        variant=variant,
                        base=base,
                        group=group,
                        mode=mode,
                        budget=budget,
                        metric="accuracy" if mode == "sequential" else "mean accuracy over samples",
                    )
                )
    return out


#: Per-trace quantities of the behaviour comparisons: key -> (label, value of one trace).
TRACE_METRICS: dict[str, tuple[str, Callable[[SampleRecord], float | None]]] = {
    "loop": ("share of traces that end in a loop", lambda r: float(r.repetition.loop)),
    "seq_rep": ("seq-rep-4 (share of repeated 4-grams)", lambda r: r.repetition.seq_rep_4),
    "self_bleu_within": ("within-trace Self-BLEU (0-100, repetition inside one trace)", lambda r: r.self_bleu_within),
    "self_bleu_within_study": (
        "the study's within-response Self-BLEU (0-100, nltk; whole response)",
        lambda r: r.self_bleu_within_study,
    ),
    "reflections_per_1k": ("reflection words per 1k thinking tokens", lambda r: r.reflections.per_1k),
    "thinking_tokens": ("thinking tokens", lambda r: float(r.thinking_tokens)),
    "budget_exhausted": ("share of traces that used up the thinking budget", lambda r: float(budget_exhausted(r))),
    "answer_missing": ("share of traces with no extractable answer", lambda r: float(r.answer is None)),
    "truncated": ("share of traces cut before their thinking ended", lambda r: float(r.finish == "truncated")),
}


def _finite(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def problem_values(records: Sequence[SampleRecord], key: str) -> dict[str, float]:
    """Each problem's value of a behaviour quantity (a key of TRACE_METRICS) over its traces in
    `records`: reflection words per 1k pooled over the problem's traces (1000 × words / thinking tokens,
    traces with thinking only), the study's within-response Self-BLEU over its sample-0 traces (the
    study's choice), every other quantity the mean of the per-trace values. Problems without a value are
    left out. A variant's number is the mean of these over its problems; a paired comparison compares
    them problem by problem."""
    by: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by[r.problem_id].append(r)
    out: dict[str, float] = {}
    value = TRACE_METRICS[key][1]
    for pid, recs in by.items():
        if key == "reflections_per_1k":
            toks = sum(r.thinking_tokens for r in recs if r.thinking_tokens > 0)
            if toks:
                out[pid] = 1000.0 * sum(r.reflections.total for r in recs if r.thinking_tokens > 0) / toks
            continue
        if key == "self_bleu_within_study":
            recs = [r for r in recs if r.sample == 0]
        vals = [float(x) for x in (value(r) for r in recs) if x is not None and _finite(x)]
        if vals:
            out[pid] = statistics.fmean(vals)
    return out


def reflections_by_word(records: Sequence[SampleRecord]) -> dict[str, float | None]:
    """Per lexicon entry, occurrences per 1,000 thinking tokens: pooled within each problem, then the mean
    over problems (so the entries add up to `reflections_per_1k`)."""
    by: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        if r.thinking_tokens > 0:
            by[r.problem_id].append(r)
    words = sorted({w for recs in by.values() for r in recs for w in r.reflections.counts})
    out: dict[str, float | None] = {}
    for w in words:
        rates = [
            1000.0 * sum(r.reflections.counts.get(w, 0) for r in recs) / sum(r.thinking_tokens for r in recs)
            for recs in by.values()
        ]
        out[w] = statistics.fmean(rates)
    return out


def behaviour_comparisons(records: Sequence[SampleRecord], base: str, others: Sequence[str]) -> list[Comparison]:
    """Paired comparisons of trace behaviour: per problem, its value (`problem_values`) over the traces
    (same keys) that both the base and the variant have."""
    by: dict[str, dict[tuple, SampleRecord]] = defaultdict(dict)
    for r in records:
        by[r.variant][r.key()[1:]] = r
    out = []
    for v in others:
        shared = sorted(set(by[base]) & set(by[v]))
        for key in TRACE_METRICS:
            a = problem_values([by[base][k] for k in shared], key)
            b = problem_values([by[v][k] for k in shared], key)
            common = sorted(set(a) & set(b))
            if not common:
                continue
            out.append(
                to_comparison(
                    [a[p] for p in common], [b[p] for p in common], variant=v, base=base, group=ALL, mode="trace", metric=key
                )
            )
    return out


def outcome_contrasts(records: Sequence[SampleRecord], variants: Sequence[str]) -> list[OutcomeContrast]:
    """Every variant's wrong traces against its right ones, per behaviour quantity (TRACE_METRICS but
    the answer rate, which is what separates them by definition). Each side's number is defined as a
    variant's is: per problem, its value over the problem's wrong (right) traces (`problem_values`), then
    the mean over the problems that have such traces; the interval resamples problems. A verdict follows
    the difference rule (metrics.decide): at least MIN_UNITS problems on each side."""
    out = []
    for v in variants:
        recs = [r for r in records if r.variant == v]
        if not any(r.correct for r in recs) or all(r.correct for r in recs):
            continue
        wrong_recs = [r for r in recs if not r.correct]
        right_recs = [r for r in recs if r.correct]
        for key, (_, value) in TRACE_METRICS.items():
            if key == "answer_missing":
                continue
            wrong = problem_values(wrong_recs, key)
            right = problem_values(right_recs, key)
            if not wrong or not right:
                continue
            diff, lo, hi = clustered_difference(
                list(wrong.values()) + list(right.values()), [True] * len(wrong) + [False] * len(right), list(wrong) + list(right)
            )
            mw, mr = statistics.fmean(wrong.values()), statistics.fmean(right.values())
            eps = 1e-9 * max(1.0, abs(mw), abs(mr))  # rounding is not a difference
            verdict, reason = decide(lo, hi, min(len(wrong), len(right)), None, tol=eps)
            out.append(
                OutcomeContrast(
                    variant=v,
                    metric=key,
                    n_wrong=sum(_finite(value(r)) for r in wrong_recs if r.problem_id in wrong),
                    n_right=sum(_finite(value(r)) for r in right_recs if r.problem_id in right),
                    mean_wrong=mw,
                    mean_right=mr,
                    diff=diff,
                    ci_low=lo,
                    ci_high=hi,
                    verdict=verdict,
                    problems_wrong=len(wrong),
                    problems_right=len(right),
                    reason=reason,
                )
            )
    return out


def grading_health(records: Sequence[SampleRecord], base: GradingHealth | None = None) -> GradingHealth:
    """Whether a variant's accuracy means anything: more than MISSING_ANSWER_LIMIT of its traces
    without an extracted answer means the grader, not the model, decides the number. The grader is
    judged on the base model: when `base` (the base model's health in the same run) shows the
    grader reads this model's answers, a pruned variant's missing answers are its own failure
    (counted as wrong), not the grader's."""
    ungraded = sum(r.correct is None for r in records)
    records = [r for r in records if r.correct is not None]
    n = len(records)
    truncated = sum(r.finish == "truncated" for r in records)
    missing = sum(r.answer is None and r.finish != "truncated" for r in records)
    rate = missing / (n - truncated) if n > truncated else None
    own_ok = rate is None or rate <= MISSING_ANSWER_LIMIT
    variant = records[0].variant if records else ""
    # the share is of the graded traces that reached an answer part: said so where it differs from all traces
    of_what = f"{variant} traces"
    if truncated or ungraded:
        of_what = f"the {n - truncated} graded {variant} traces" + (" not cut before answering" if truncated else "")
    ok = own_ok or (base is not None and base.n > 0 and base.meaningful)
    msg = ""
    if rate is not None and not ok:
        empty = sum(r.answer is None and r.answer_tokens == 0 for r in records)
        if 2 * empty >= missing:  # mostly nothing to read: the model does not answer in this format
            why = (
                f"in {empty} of them the model wrote nothing after the end of thinking and stated no answer in it; "
                "read a few traces in samples.jsonl: another --format may suit this model"
            )
        else:
            why = (
                "see docs/grading.md for the extraction rules, or give --answer-type / a task file whose answers "
                "match what the model writes"
            )
        msg = f"accuracy is not meaningful: {100 * rate:.0f} % of {of_what} had no answer the grader could find ({why})"
    elif rate is not None and not own_ok:
        msg = (
            f"{100 * rate:.0f} % of {of_what} have no answer while the base model's answers are "
            "found: the variant stops answering (counted as wrong)"
        )
    return GradingHealth(
        n=n, missing=missing, missing_rate=rate, truncated=truncated, ungraded=ungraded, meaningful=ok, message=msg
    )


def compute_metrics(
    run_dir: str | os.PathLike[str],
    info: RunInfo | None = None,
    records: Sequence[SampleRecord] | None = None,
    map_fn: Callable[[Callable[[list[str]], float], Iterable[list[str]]], Iterable[float]] = map,
) -> MetricsFile:
    """All summaries of a run, from its samples (partial when the run is not complete).

    `records` are the run's samples when the caller has them already (they are read otherwise);
    `map_fn` maps the Self-BLEU across samples over the problems (the builtin map, or a worker pool's)."""
    run_dir = Path(run_dir)
    info = info or read_run_info(run_dir)
    records = list(records) if records is not None else read_samples(run_dir)
    names = [v.name for v in info.variants]
    self_bleu: dict[tuple[str, str], float] = {}
    par: dict[tuple[str, str], list[SampleRecord]] = defaultdict(list)
    by_variant: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_variant[r.variant].append(r)
    for recs in by_variant.values():  # each variant's own parallel budget, as its curves take it
        for r in parallel_samples(recs):
            par[(r.variant, r.problem_id)].append(r)
    keys = [k for k, recs in par.items() if len(recs) > 1 and not all(r.origin == "copy" for r in recs if r.sample > 0)]
    texts = ([r.thinking_text for r in sorted(par[k], key=lambda r: r.sample)] for k in keys)
    self_bleu.update(zip(keys, map_fn(self_bleu_across_samples, texts)))  # once per problem, shared by "all" and its group
    variants: dict[str, VariantMetrics] = {}
    grading: dict[str, GradingHealth] = {}
    for spec in info.variants:
        recs = [r for r in records if r.variant == spec.name]
        groups = {ALL: _group_metrics(recs, self_bleu)}
        for g in sorted({r.group for r in recs if r.group}):
            groups[g] = _group_metrics([r for r in recs if r.group == g], self_bleu)
        variants[spec.name] = VariantMetrics(dropped=spec.dropped, method=spec.method, n_traces=len(recs), groups=groups)
        if recs:
            grading[spec.name] = grading_health(recs, None if spec.name == names[0] else grading.get(names[0]))
    graded = [r for r in records if r.correct is not None]  # traces without a usable gold answer are not graded
    partial = info.status != "complete" or (info.expected_traces is not None and len(records) < info.expected_traces)
    return MetricsFile(
        computed=now(),
        n_samples=len(records),
        partial=partial,
        variants=variants,
        comparisons=comparisons(graded, names[0], names[1:]) if names else [],
        behaviour_comparisons=behaviour_comparisons(records, names[0], names[1:]) if names else [],
        grading=grading,
        outcome_contrasts=outcome_contrasts(graded, names),
        definitions=DEFINITIONS,
    )


def write_metrics(
    run_dir: str | os.PathLike[str],
    info: RunInfo | None = None,
    records: Sequence[SampleRecord] | None = None,
    map_fn: Callable[[Callable[[list[str]], float], Iterable[list[str]]], Iterable[float]] = map,
) -> MetricsFile:
    """compute_metrics and write metrics.json atomically."""
    m = compute_metrics(run_dir, info, records, map_fn)
    write_model(Path(run_dir) / METRICS_FILE, m)
    return m
