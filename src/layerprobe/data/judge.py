"""The judge's files in a run directory and their summary (docs/judge.md):

    RUN/judge/state.json     JudgeState: settings, prompts, status, tokens spent per session
    RUN/judge/calls.jsonl    one JudgeCall per (trace, behaviour), appended as each call returns
    RUN/judge.json           JudgeFile: mean counts with intervals, paired differences, agreement

Which traces a judging covers and what text it sends are defined here once (`select_traces`,
`trace_text`), for the job that asks and the summary that reads. The summary is recomputed by the
reader when judge.json does not cover the lines of calls.jsonl (a judge stopped by kill -9).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from layerprobe.data.reader import KNOWLEDGE, LONG, OTHER, SHORT, regime_of
from layerprobe.data.schema import (
    Comparison,
    JudgeAgreement,
    JudgeCall,
    JudgeFile,
    JudgeStat,
    JudgeState,
    RunInfo,
    SampleRecord,
)
from layerprobe.data.store import effective_status, now, write_model
from layerprobe.data.summarize import to_comparison
from layerprobe.errors import UserError
from layerprobe.metrics import bootstrap_mean_interval
from layerprobe.metrics.correlation import spearman_clustered

JUDGE_DIR = "judge"
CALLS_FILE = "calls.jsonl"
STATE_FILE = "state.json"
JUDGE_FILE = "judge.json"
TEXTS = ("response", "thinking")
"""What is sent as the trace: everything the model wrote after the prompt, or its thinking only."""
FINAL = frozenset({"count", "unparsable", "refused", "too_long"})
"""Outcomes that stand: a later run does not ask again (errors and timeouts that may pass are asked again)."""
NOT_ASKED = "not asked"
ALL = "all"
TOTAL = "total"


# ------------------------------------------------------------------------------------ which traces


def trace_text(record: SampleRecord, text: str) -> str:
    """The text of a trace sent to the judge: "thinking" (the thinking only) or "response" (everything
    after the prompt, forced text included)."""
    return record.thinking_text if text == "thinking" else record.text


def text_sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def resolve_budget(samples: Sequence[SampleRecord], budget: int | str | None) -> int | None:
    """The budget a selection keeps: None (every budget), a number, or "max" (the largest in the run)."""
    if budget == "max":
        return max((r.budget for r in samples), default=None)
    return None if budget is None else int(budget)


def select_traces(samples: Sequence[SampleRecord], selection: dict[str, Any]) -> list[SampleRecord]:
    """The traces a judging covers: every trace, or with `first_sample` only sample 0 of each problem
    (the study's choice), with `budget` only those at that thinking budget ("max": the largest)."""
    budget = resolve_budget(samples, selection.get("budget"))
    out = []
    for r in samples:
        if selection.get("first_sample") and r.sample != 0:
            continue
        if budget is not None and r.budget != budget:
            continue
        out.append(r)
    return out


# ------------------------------------------------------------------------------------ the files


def judge_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / JUDGE_DIR


def read_state(run_dir: str | os.PathLike[str]) -> JudgeState | None:
    """judge/state.json, or None when it is missing or cannot be read (a damaged state starts afresh)."""
    path = judge_dir(run_dir) / STATE_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return JudgeState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


@dataclass
class CallsRead:
    """The valid lines of judge/calls.jsonl: the last record of each key, and counts of the rest."""

    records: dict[tuple, JudgeCall] = field(default_factory=dict)
    lines: int = 0
    """Valid lines (superseded ones included)."""
    damaged: int = 0
    """Lines that are not a valid record (skipped)."""
    calls: int = 0
    """Lines of calls made (not filled from an identical request's reply), superseded ones included."""
    prompt_tokens: int = 0
    """Prompt tokens of every valid line."""
    completion_tokens: int = 0
    """Reply tokens of every valid line."""


def _lines(path: Path) -> Iterator[bytes]:
    """Every complete line of a JSONL file (a last line a crash cut short is not yielded)."""
    if not path.is_file() or path.is_symlink():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            if raw.strip():
                yield raw


def read_calls(run_dir: str | os.PathLike[str]) -> CallsRead:
    """Every record of judge/calls.jsonl, the last line of each key kept, damaged lines counted."""
    out = CallsRead()
    for raw in _lines(judge_dir(run_dir) / CALLS_FILE):
        try:
            rec = JudgeCall.model_validate(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, ValidationError):
            out.damaged += 1
            continue
        out.lines += 1
        out.calls += rec.attempts > 0
        out.prompt_tokens += rec.prompt_tokens or 0
        out.completion_tokens += rec.completion_tokens or 0
        out.records[rec.key()] = rec
    return out


class CallLog:
    """Appends records to judge/calls.jsonl, each flushed to disk before the next (a crash loses at most
    the calls in flight; a line it cut short is removed when the log is opened again)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = judge_dir(run_dir) / CALLS_FILE
        self.path.parent.mkdir(exist_ok=True)
        if self.path.is_symlink():
            raise UserError(f"{self.path} is a link; a run directory must hold its own files")
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
        self._fh: Any = None

    def append(self, record: JudgeCall) -> None:
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(record.model_dump_json() + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise UserError(f"{self.path} cannot be written ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ------------------------------------------------------------------------------------ the summary


def _mean_ci(values_by_problem: dict[str, list[float]]) -> tuple[float | None, tuple[float, float]]:
    means = [statistics.fmean(v) for v in values_by_problem.values() if v]
    if not means:
        return None, (math.nan, math.nan)
    ci = bootstrap_mean_interval(means, n_boot=4000, seed=0) if len(means) > 1 else (math.nan, math.nan)
    return statistics.fmean(means), ci


def compute_judge(
    run_dir: str | os.PathLike[str], info: RunInfo, samples: Sequence[SampleRecord], calls: CallsRead | None = None
) -> JudgeFile | None:
    """The summary of a run's judging (None when the run has not been judged)."""
    state = read_state(run_dir)
    if state is None:
        return None
    calls = calls if calls is not None else read_calls(run_dir)
    s, tax = state.settings, state.taxonomy
    behaviours = {str(b["name"]): str(b.get("title") or b["name"]) for b in tax.get("behaviour", [])}
    text = str(s.get("text", "response"))
    selected = select_traces(samples, state.selection)
    counts: dict[tuple, dict[str, int]] = {}  # trace key -> behaviour -> count
    outcome_of: dict[tuple, dict[str, str]] = {}
    stale = 0
    for r in selected:
        sha = text_sha(trace_text(r, text))
        for b in behaviours:
            rec = calls.records.get((*r.key(), b))
            if rec is not None and rec.trace_sha != sha:
                stale += 1
                rec = None
            outcome_of.setdefault(r.key(), {})[b] = rec.outcome if rec is not None else NOT_ASKED
            if rec is not None and rec.outcome == "count" and rec.count is not None:
                counts.setdefault(r.key(), {})[b] = rec.count
    variants = [v.name for v in info.variants]
    rank = {LONG: 0, SHORT: 1, KNOWLEDGE: 2, OTHER: 3}  # long-chain first, as everywhere
    groups = [ALL] + sorted({r.group for r in selected if r.group}, key=lambda g: (rank[regime_of(g, info.task.regime)], g))
    out = JudgeFile(
        computed=now(),
        n_lines=calls.lines,
        n_samples=len(samples),
        status=effective_status(state),  # type: ignore[arg-type]
        judge_model=str(s.get("judge_model", "")),
        served_models=sorted({r.served_model for r in calls.records.values() if r.served_model}),
        endpoint=str(s.get("endpoint", "")),
        taxonomy=str(tax.get("name", "")),
        taxonomy_source=str(s.get("taxonomy_source", "")),
        taxonomy_sha=str(s.get("taxonomy_sha", "")),
        behaviours=behaviours,
        text=text,
        temperature=s.get("temperature"),
        max_tokens=s.get("max_tokens"),
        selection=dict(state.selection),
        n_selected=len(selected),
        expected_calls=len(selected) * len(behaviours),
    )
    for v in variants:
        tally = Counter(o for r in selected if r.variant == v for o in outcome_of[r.key()].values())
        if tally:
            out.outcomes[v] = dict(sorted(tally.items()))
    for v in variants:
        for g in groups:
            recs = [r for r in selected if r.variant == v and (g == ALL or r.group == g)]
            if not recs:
                continue
            for b in behaviours:
                by_problem: dict[str, list[float]] = defaultdict(list)
                missing: Counter[str] = Counter()
                for r in recs:
                    c = counts.get(r.key(), {}).get(b)
                    if c is None:
                        missing[outcome_of[r.key()][b]] += 1
                    else:
                        by_problem[r.problem_id].append(float(c))
                mean, ci = _mean_ci(by_problem)
                out.stats.append(
                    JudgeStat(
                        variant=v,
                        group=g,
                        behaviour=b,
                        n_traces=len(recs),
                        n_counted=sum(len(x) for x in by_problem.values()),
                        n_problems=len(by_problem),
                        mean=mean,
                        ci=ci,
                        missing=dict(sorted(missing.items())),
                    )
                )
    out.comparisons = _paired(selected, counts, variants, groups, list(behaviours))
    out.agreement = _agreement(selected, counts, variants, list(behaviours))
    out.calls, out.prompt_tokens, out.completion_tokens = calls.calls, calls.prompt_tokens, calls.completion_tokens
    out.largest_prompt = max((r.prompt_tokens for r in calls.records.values() if r.prompt_tokens is not None), default=None)
    if calls.damaged:
        out.notes.append(f"{calls.damaged} damaged line{'s' if calls.damaged != 1 else ''} of judge/calls.jsonl skipped")
    if stale:
        out.notes.append(f"{stale} judge records were written for an earlier text of their trace and are not used")
    asked = sum(n for o in out.outcomes.values() for k, n in o.items() if k != NOT_ASKED)
    if asked < out.expected_calls:
        out.notes.append(f"{asked} of {out.expected_calls} (trace, behaviour) pairs judged so far: the numbers will change")
    return out


def _paired(
    selected: Sequence[SampleRecord],
    counts: dict[tuple, dict[str, int]],
    variants: Sequence[str],
    groups: Sequence[str],
    behaviours: Sequence[str],
) -> list[Comparison]:
    """Base against every other variant, per group and behaviour: per problem the mean count over the
    traces (same mode, budget, sample) both sides have counted."""
    if len(variants) < 2:
        return []
    by_variant: dict[str, dict[tuple, SampleRecord]] = defaultdict(dict)
    for r in selected:
        by_variant[r.variant][r.key()[1:]] = r
    base = variants[0]
    out = []
    for v in variants[1:]:
        shared = sorted(set(by_variant[base]) & set(by_variant[v]))
        for g in groups:
            for b in behaviours:
                a_by: dict[str, list[float]] = defaultdict(list)
                b_by: dict[str, list[float]] = defaultdict(list)
                for k in shared:
                    ra, rb = by_variant[base][k], by_variant[v][k]
                    if g != ALL and ra.group != g:
                        continue
                    ca, cb = counts.get(ra.key(), {}).get(b), counts.get(rb.key(), {}).get(b)
                    if ca is None or cb is None:
                        continue
                    a_by[ra.problem_id].append(float(ca))
                    b_by[ra.problem_id].append(float(cb))
                problems = sorted(a_by)
                if not problems:
                    continue
                out.append(
                    to_comparison(
                        [statistics.fmean(a_by[p]) for p in problems],
                        [statistics.fmean(b_by[p]) for p in problems],
                        variant=v,
                        base=base,
                        group=g,
                        mode="judge",
                        metric=b,
                    )
                )
    return out


def _agreement(
    selected: Sequence[SampleRecord], counts: dict[tuple, dict[str, int]], variants: Sequence[str], behaviours: Sequence[str]
) -> list[JudgeAgreement]:
    """Spearman's rho between the judge's count and the trace's reflection words, per variant and over
    every variant, per behaviour and for the total of every behaviour; problems resampled."""
    out = []
    for v in [*variants, ALL] if len(variants) > 1 else list(variants):
        recs = [r for r in selected if v == ALL or r.variant == v]
        for b in [*behaviours, TOTAL] if len(behaviours) > 1 else list(behaviours):
            xs, ys, problems = [], [], []
            for r in recs:
                c = counts.get(r.key(), {})
                if b == TOTAL:
                    if len(c) < len(behaviours):
                        continue
                    x = float(sum(c.values()))
                elif b in c:
                    x = float(c[b])
                else:
                    continue
                xs.append(x)
                ys.append(float(r.reflections.total))
                problems.append(r.problem_id)
            if not xs:
                continue
            rho, lo, hi = spearman_clustered(xs, ys, problems)
            out.append(
                JudgeAgreement(variant=v, behaviour=b, n=len(xs), n_problems=len(set(problems)), spearman=rho, ci=(lo, hi))
            )
    return out


def outcome_totals(j: JudgeFile) -> Counter[str]:
    """(trace, behaviour) pairs by outcome over every variant ("count", "unparsable", ..., "not asked")."""
    return sum((Counter(per) for per in j.outcomes.values()), Counter())


def write_judge(run_dir: str | os.PathLike[str], info: RunInfo, samples: Sequence[SampleRecord]) -> JudgeFile | None:
    """compute_judge and write judge.json atomically (nothing when the run has not been judged)."""
    summary = compute_judge(run_dir, info, samples)
    if summary is not None:
        write_model(Path(run_dir) / JUDGE_FILE, summary)
    return summary


def current_judge(
    run_dir: str | os.PathLike[str], info: RunInfo, samples: Sequence[SampleRecord], notes: list[str]
) -> JudgeFile | None:
    """For the reader: judge.json when it covers judge/calls.jsonl and the samples, else the summary
    recomputed in memory (never written); None when the run has not been judged."""
    if not judge_dir(run_dir).is_dir():
        return None
    path = Path(run_dir) / JUDGE_FILE
    stored = None
    if path.is_file() and not path.is_symlink():
        try:
            stored = JudgeFile.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError):
            notes.append(f"{JUDGE_FILE} could not be read; recomputed from judge/calls.jsonl")
    calls = read_calls(run_dir)
    state = read_state(run_dir)
    if (
        stored is not None
        and stored.n_lines == calls.lines
        and stored.n_samples == len(samples)
        and (state is None or stored.status == effective_status(state))
    ):
        return stored
    return compute_judge(run_dir, info, samples, calls)
