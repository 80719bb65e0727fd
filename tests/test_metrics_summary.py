"""Trace summaries: lengths, budget exhaustion, missing answers, distinct answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import layerprobe.metrics as metrics
from layerprobe.metrics import (
    TraceRecord,
    distinct_answers,
    problem_metrics,
    summarize_samples,
    summarize_trace,
    trace_metrics,
)


def rec(thinking=100, answer_tokens=10, budget=256, finish="answered", answer="7"):
    return {"thinking_tokens": thinking, "answer_tokens": answer_tokens, "budget": budget, "finish": finish, "answer": answer}


def test_summarize_trace_flags():
    out = summarize_trace(rec())
    assert out == {
        "thinking_tokens": 100,
        "answer_tokens": 10,
        "total_tokens": 110,
        "budget": 256,
        "finish": "answered",
        "budget_exhausted": False,
        "answer_missing": False,
    }
    assert summarize_trace(rec(finish="budget"))["budget_exhausted"] is True
    assert summarize_trace(rec(thinking=256))["budget_exhausted"] is True
    assert summarize_trace(rec(budget=None, thinking=10**6))["budget_exhausted"] is False
    assert summarize_trace(rec(answer=None))["answer_missing"] is True
    assert summarize_trace(rec(answer="  "))["answer_missing"] is True
    assert summarize_trace(rec(finish="max_tokens"))["finish"] == "max_tokens"


def test_records_as_objects_and_dataclasses():
    obj = SimpleNamespace(thinking_tokens=5, answer_tokens=np.int64(2), budget=None, finish="answered", answer=None)
    assert summarize_trace(obj)["total_tokens"] == 7
    assert summarize_trace(TraceRecord(5, 2, 5, "answered", "x"))["budget_exhausted"] is True


def test_bad_records():
    with pytest.raises(ValueError):
        summarize_trace(rec(finish="stopped"))
    with pytest.raises(ValueError):
        summarize_trace(rec(thinking=-1))
    with pytest.raises(KeyError):
        summarize_trace({"thinking_tokens": 1, "finish": "answered"})


def test_distinct_answers_ignores_missing():
    assert distinct_answers(["7", "7 ", None, "8", "", 7]) == 3  # "7", "8", the int 7
    assert distinct_answers([None, None]) == 0


def test_summarize_samples():
    recs = [
        rec(thinking=100, answer="7"),
        rec(thinking=256, finish="budget", answer=None),
        rec(thinking=50, answer="8"),
        rec(thinking=10, answer="7"),
    ]
    out = summarize_samples(recs)
    assert out["n_samples"] == 4
    assert out["distinct_answers"] == 2
    assert out["answer_missing_rate"] == pytest.approx(0.25)
    assert out["budget_exhausted_rate"] == pytest.approx(0.25)
    assert out["mean_thinking_tokens"] == pytest.approx(104.0)
    assert out["median_thinking_tokens"] == pytest.approx(75.0)
    assert out["max_thinking_tokens"] == 256
    empty = summarize_samples([])
    assert empty["n_samples"] == 0 and math.isnan(empty["answer_missing_rate"])


def test_problem_metrics_names_the_self_bleu_kind():
    out = problem_metrics([rec(), rec()], texts=["a b c", "a b c"])
    assert out["self_bleu_across"] == pytest.approx(100.0)
    assert "self_bleu_within" not in out


def test_trace_metrics_bundle():
    text = "Wait, I add. Wait, I add. Wait, I add."
    ids = [1, 2, 3, 4] * 3
    out = trace_metrics(text, ids)
    assert out["reflections"]["counts"]["wait"] == 3
    assert out["reflections"]["per_1k"] == pytest.approx(250.0)  # 3 per 12 tokens
    assert out["repetition"]["loop"] is True and out["repetition"]["loop_onset"] == 0
    assert out["repetition"]["seq_rep_4"] == pytest.approx(1 - 4 / 9)
    assert out["self_bleu_within"] == pytest.approx(100.0)


def test_public_api_is_complete_and_torch_free():
    for name in [
        "reflection_counts",
        "reflection_rates",
        "DEFAULT_REFLECTION_LEXICON",
        "seq_rep",
        "longest_repeated_substring",
        "detect_loop",
        "self_bleu",
        "self_bleu_across_samples",
        "self_bleu_within_trace",
        "pass_at_k",
        "maj_at_k",
        "cov_at_k",
        "paired_comparison",
        "proportion_interval",
        "summarize_trace",
        "summarize_samples",
    ]:
        assert hasattr(metrics, name), name
    import ast
    from pathlib import Path

    for path in Path(metrics.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "torch" for n in names), path.name
