"""Summaries of traces: lengths, budget exhaustion, missing answers, and the per-trace bundle.

A trace record is a mapping (e.g. one line of samples.jsonl) or an object with the
attributes `thinking_tokens`, `answer_tokens`, `budget` (None = no thinking budget),
`finish` ("answered", "budget" or "max_tokens") and `answer` (the extracted answer or None).
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layerprobe.metrics.reflection import Lexicon, reflection_summary
from layerprobe.metrics.repetition import repetition_summary
from layerprobe.metrics.selfbleu import (
    ACROSS_KEY,
    WITHIN_KEY,
    self_bleu_across_samples,
    self_bleu_within_trace,
)

#: Why generation stopped: the model ended its answer, the thinking budget ran out (the answer was
#: forced), the answer phase hit its own token cap, or the trace was cut before its thinking ended
#: (truncated: no answer at all).
FINISH_REASONS: tuple[str, ...] = ("answered", "budget", "max_tokens", "truncated")


@dataclass(frozen=True)
class TraceRecord:
    """The fields of one trace that the summaries need."""

    thinking_tokens: int
    answer_tokens: int
    budget: int | None
    finish: str
    answer: Any = None
    budget_hit: bool | None = None  # the engine's own record that the budget ran out (wins when known)


def _field(record: Any, name: str, default: Any = ...) -> Any:
    if isinstance(record, Mapping):
        if name in record:
            return record[name]
    elif hasattr(record, name):
        return getattr(record, name)
    if default is ...:
        raise KeyError(f"trace record has no {name!r}")
    return default


def _count(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return count


def answer_missing(answer: Any) -> bool:
    """Whether no answer was extracted: None, or a string that is empty or blank."""
    return answer is None or (isinstance(answer, str) and not answer.strip())


def as_trace_record(record: Any) -> TraceRecord:
    """A validated TraceRecord from a mapping or an object with the same fields.

    Raises KeyError for a missing field and ValueError for a negative length, a bad budget
    or an unknown finish reason. `budget` and `answer` may be absent (None).
    """
    if isinstance(record, TraceRecord):
        rec = record
    else:
        rec = TraceRecord(
            thinking_tokens=_field(record, "thinking_tokens"),
            answer_tokens=_field(record, "answer_tokens"),
            budget=_field(record, "budget", None),
            finish=_field(record, "finish"),
            answer=_field(record, "answer", None),
            budget_hit=_field(record, "budget_hit", None),
        )
    if rec.finish not in FINISH_REASONS:
        raise ValueError(f"finish must be one of {', '.join(FINISH_REASONS)}; got {rec.finish!r}")
    return TraceRecord(
        thinking_tokens=_count(rec.thinking_tokens, "thinking_tokens"),
        answer_tokens=_count(rec.answer_tokens, "answer_tokens"),
        budget=None if rec.budget is None else _count(rec.budget, "budget"),
        finish=rec.finish,
        answer=rec.answer,
        budget_hit=None if rec.budget_hit is None else bool(rec.budget_hit),
    )


def budget_exhausted(record: Any) -> bool:
    """Whether the thinking budget ran out (the answer was forced), whatever then ended the answer:
    the engine's `budget_hit` when the record has it, else finish "budget" or "truncated", or
    thinking_tokens >= budget. The one definition every summary uses."""
    rec = as_trace_record(record)
    if rec.budget_hit is not None:
        return rec.budget_hit
    if rec.finish in ("budget", "truncated"):
        return True
    return rec.budget is not None and rec.thinking_tokens >= rec.budget


def summarize_trace(record: Any) -> dict[str, Any]:
    """Lengths and outcome flags of one trace.

    Keys: "thinking_tokens", "answer_tokens", "total_tokens", "budget", "finish",
    "budget_exhausted", "answer_missing".
    """
    rec = as_trace_record(record)
    return {
        "thinking_tokens": rec.thinking_tokens,
        "answer_tokens": rec.answer_tokens,
        "total_tokens": rec.thinking_tokens + rec.answer_tokens,
        "budget": rec.budget,
        "finish": rec.finish,
        "budget_exhausted": budget_exhausted(rec),
        "answer_missing": answer_missing(rec.answer),
    }


def distinct_answers(answers: Iterable[Any]) -> int:
    """Number of different extracted answers; missing answers (None, blank) are not counted.

    Answers are compared as given (strings after stripping outer whitespace); normalise them
    first (e.g. to the grader's canonical form) if "1/2" and "0.5" should count as one.
    """
    seen = set()
    for answer in answers:
        if answer_missing(answer):
            continue
        seen.add(answer.strip() if isinstance(answer, str) else answer)
    return len(seen)


def summarize_samples(records: Sequence[Any]) -> dict[str, Any]:
    """Summary of the samples of one problem (or any group of traces).

    Keys: "n_samples", "distinct_answers", "answer_missing_rate", "budget_exhausted_rate",
    "mean_thinking_tokens", "median_thinking_tokens", "max_thinking_tokens",
    "mean_answer_tokens". Rates and means are NaN (max None) for an empty group.
    """
    recs = [as_trace_record(r) for r in records]
    n = len(recs)
    if n == 0:
        return {
            "n_samples": 0,
            "distinct_answers": 0,
            "answer_missing_rate": math.nan,
            "budget_exhausted_rate": math.nan,
            "mean_thinking_tokens": math.nan,
            "median_thinking_tokens": math.nan,
            "max_thinking_tokens": None,
            "mean_answer_tokens": math.nan,
        }
    thinking = [r.thinking_tokens for r in recs]
    return {
        "n_samples": n,
        "distinct_answers": distinct_answers(r.answer for r in recs),
        "answer_missing_rate": sum(answer_missing(r.answer) for r in recs) / n,
        "budget_exhausted_rate": sum(budget_exhausted(r) for r in recs) / n,
        "mean_thinking_tokens": statistics.fmean(thinking),
        "median_thinking_tokens": float(statistics.median(thinking)),
        "max_thinking_tokens": max(thinking),
        "mean_answer_tokens": statistics.fmean(r.answer_tokens for r in recs),
    }


def trace_metrics(
    text: str,
    token_ids: Sequence[int] | Any,
    thinking_tokens: int | None = None,
    *,
    lexicon: Lexicon = None,
    seq_rep_n: int = 4,
    min_repeats: int = 3,
) -> dict[str, Any]:
    """All per-trace metrics of one thinking trace, ready for a samples.jsonl line.

    `text` is the thinking text, `token_ids` its token ids; `thinking_tokens` defaults to
    len(token_ids). Keys: "reflections" (reflection_summary), "repetition"
    (repetition_summary over the token ids) and "self_bleu_within" (Self-BLEU of the
    trace's sentences against each other; NaN for fewer than 2 sentences).
    """
    tokens = len(token_ids) if thinking_tokens is None else thinking_tokens
    return {
        "reflections": reflection_summary(text, tokens, lexicon),
        "repetition": repetition_summary(token_ids, n=seq_rep_n, min_repeats=min_repeats),
        WITHIN_KEY: self_bleu_within_trace(text),
    }


def problem_metrics(records: Sequence[Any], texts: Sequence[str] | None = None) -> dict[str, Any]:
    """summarize_samples of a problem's samples plus, given their texts, Self-BLEU across
    them under the key "self_bleu_across" (NaN for fewer than 2 samples)."""
    out = summarize_samples(records)
    if texts is not None:
        out[ACROSS_KEY] = self_bleu_across_samples(texts)
    return out
