"""Building a trace's stored record fields from its text and tokens: one place for `analyze` and
`ingest`, so traces from any engine get the same metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from layerprobe.data.schema import Reflections, Repetition
from layerprobe.metrics.selfbleu import STUDY_KEY, self_bleu_within_study
from layerprobe.metrics.summary import trace_metrics


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
