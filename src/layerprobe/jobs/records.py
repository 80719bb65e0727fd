"""A finished trace made into its stored record: its metrics from its text and tokens, its probe arrays
written where the run keeps them, and its samples.jsonl line; one place for `analyze` and `ingest`, so
traces from any engine are recorded the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from layerprobe.data.schema import Mode, Reflections, Repetition, SampleRecord, trace_layers_file
from layerprobe.metrics.selfbleu import STUDY_KEY, self_bleu_within_study
from layerprobe.metrics.summary import trace_metrics
from layerprobe.scaling.traces import Finish


def trace_fields(
    thinking_text: str,
    thinking_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str] | None = None,
    full_text: str | None = None,
) -> dict[str, Any]:
    """reflections, repetition (with the loop onset as a character offset of the thinking text, when
    `decode` maps token ids to text) and self_bleu_within of one thinking trace; with `full_text` (the
    whole response, as the study scored it) also self_bleu_within_study."""
    m = trace_metrics(thinking_text, list(thinking_ids), len(thinking_ids))
    rep = Repetition.model_validate({k: v for k, v in m["repetition"].items() if k in Repetition.model_fields})
    if rep.loop and rep.loop_onset is not None and decode is not None:
        rep.loop_onset_char = len(decode(list(thinking_ids)[: rep.loop_onset]))
    refl = Reflections.model_validate({k: v for k, v in m["reflections"].items() if k in Reflections.model_fields})
    out = {"reflections": refl, "repetition": rep, "self_bleu_within": m["self_bleu_within"]}
    if full_text is not None:
        out[STUDY_KEY] = self_bleu_within_study(full_text)
    return out


def save_layers(out: Path, variant: str, problem_id: str, mode: str, budget: int, sample: int, layers: Any) -> str:
    """Write the probe arrays `layers` (probe.TraceLayers, keyed by its file's stem) of the trace of
    `variant` with this key into the run at `out`, durably; returns the path as the record stores it."""
    from layerprobe.probe.layer_files import save_trace_layers

    rel = trace_layers_file(variant, problem_id, mode, budget, sample)
    layers.key = Path(rel).stem
    save_trace_layers(out / rel, layers)
    return rel


def sample_record(
    variant: str,
    problem_id: str,
    group: str,
    mode: Mode,
    budget: int,
    sample: int,
    *,
    tokens: tuple[int, int, int],
    finish: Finish,
    budget_hit: bool | None,
    grade: Any,
    gold: str,
    graded: bool = True,
    fields: dict[str, Any],
    thinking_text: str,
    text: str,
    **more: Any,
) -> SampleRecord:
    """The samples.jsonl line of one finished trace: `tokens` (prompt, thinking, answer) counted, `grade`
    (tasks.grading.Grade) against `gold` (not graded: `graded` False, correct stays None), `fields` its
    trace metrics (trace_fields); `more` the record's other fields (seed, layers_file, origin, ...)."""
    prompt_tokens, thinking_tokens, answer_tokens = tokens
    return SampleRecord(
        variant=variant,
        problem_id=problem_id,
        group=group,
        mode=mode,
        budget=budget,
        sample=sample,
        prompt_tokens=prompt_tokens,
        thinking_tokens=thinking_tokens,
        answer_tokens=answer_tokens,
        finish=finish,
        budget_hit=budget_hit,
        answer=grade.extracted,
        extraction=grade.rule,
        gold=gold,
        correct=grade.correct if graded else None,
        **fields,
        thinking_text=thinking_text,
        text=text,
        **more,
    )
