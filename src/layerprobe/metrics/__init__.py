"""Trace metrics and paired statistics (docs/definitions.md#trace-metrics, #statistics).

Pure functions over trace texts, token ids and per-problem values; importing this package
does not import torch. Self-BLEU comes in two kinds that are never mixed up:
`self_bleu_across_samples` (alias `self_bleu`, key "self_bleu_across") compares the parallel
samples of one problem; `self_bleu_within_trace` (key "self_bleu_within") compares the
sentences of one trace. See docs/metrics.md for every definition.
"""

from __future__ import annotations

from layerprobe.metrics.paired import (
    HIGHER,
    LOWER,
    MIN_UNITS,
    NO_CLEAR_DIFFERENCE,
    PairedComparison,
    bootstrap_mean_interval,
    bootstrap_means,
    clustered_difference,
    decide,
    mcnemar_exact,
    paired_comparison,
    proportion_interval,
    sign_flip_test,
)
from layerprobe.metrics.passk import cov_at_k, maj_at_k, majority_answer, pass_at_k
from layerprobe.metrics.reflection import (
    DEFAULT_REFLECTION_LEXICON,
    load_lexicon,
    reflection_counts,
    reflection_profile,
    reflection_rate,
    reflection_rates,
    reflection_summary,
    resolve_lexicon,
)
from layerprobe.metrics.repetition import (
    Loop,
    RepeatedSubstring,
    detect_loop,
    longest_repeated_substring,
    repetition_summary,
    seq_rep,
)
from layerprobe.metrics.selfbleu import (
    ACROSS_KEY,
    STUDY_KEY,
    WITHIN_KEY,
    pairwise_self_bleu,
    self_bleu,
    self_bleu_across_samples,
    self_bleu_within_study,
    self_bleu_within_trace,
    split_sentences,
)
from layerprobe.metrics.summary import (
    FINISH_REASONS,
    TraceRecord,
    answer_missing,
    as_trace_record,
    budget_exhausted,
    distinct_answers,
    problem_metrics,
    summarize_samples,
    summarize_trace,
    trace_metrics,
)

__all__ = [
    "ACROSS_KEY",
    "DEFAULT_REFLECTION_LEXICON",
    "FINISH_REASONS",
    "HIGHER",
    "LOWER",
    "MIN_UNITS",
    "NO_CLEAR_DIFFERENCE",
    "STUDY_KEY",
    "WITHIN_KEY",
    "Loop",
    "PairedComparison",
    "RepeatedSubstring",
    "TraceRecord",
    "answer_missing",
    "as_trace_record",
    "bootstrap_mean_interval",
    "bootstrap_means",
    "budget_exhausted",
    "clustered_difference",
    "cov_at_k",
    "decide",
    "detect_loop",
    "distinct_answers",
    "load_lexicon",
    "longest_repeated_substring",
    "maj_at_k",
    "majority_answer",
    "mcnemar_exact",
    "paired_comparison",
    "pairwise_self_bleu",
    "pass_at_k",
    "problem_metrics",
    "proportion_interval",
    "reflection_counts",
    "reflection_profile",
    "reflection_rate",
    "reflection_rates",
    "reflection_summary",
    "repetition_summary",
    "resolve_lexicon",
    "self_bleu",
    "self_bleu_across_samples",
    "self_bleu_within_study",
    "self_bleu_within_trace",
    "seq_rep",
    "sign_flip_test",
    "split_sentences",
    "summarize_samples",
    "summarize_trace",
    "trace_metrics",
]
