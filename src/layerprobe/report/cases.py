"""Case studies: paired base vs pruned traces of the same problem, chosen by a stated rule, with
loops highlighted and long texts truncated (the full traces stay in samples.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.metrics import detect_loop
from layerprobe.report.load import RunData, load_trace_arrays
from layerprobe.report.numbers import is_num

RULE = ("For each pruned variant: problems where the base answered correctly and the pruned variant did not come "
        "first, then problems ordered by the mean teacher-forced KL of the pruned model over the base trace "
        "(largest first; when no teacher-forced arrays exist: pruned traces that loop first, then the largest "
        "difference in thinking length). Traces are the sequential ones at the largest budget (sample 0), "
        "or the first parallel sample when the run has no sequential traces.")


@dataclass
class Segment:
    text: str
    loop: bool = False
    omitted: int = 0  # > 0: a marker standing for this many omitted characters


@dataclass
class TraceView:
    record: Any
    segments: list[Segment]
    loop_words: tuple[int, int] | None  # word onset, period (detected on the shown text's words)
    truncated: bool
    n_chars: int


@dataclass
class Case:
    problem_id: str
    group: str
    variant: str
    reason: str
    base: TraceView
    pruned: TraceView
    tf_mean: float | None = None
    tf_plot: Any = None
    layer_plot: Any = None
    notes: list[str] = field(default_factory=list)


def _segments(text: str, max_chars: int) -> tuple[list[Segment], tuple[int, int] | None, bool]:
    """Split text into plain and loop segments (loop = the back-to-back repeated tail, found on words)."""
    import re

    spans = [m.span() for m in re.finditer(r"\S+", text)]
    words = [text[a:b] for a, b in spans]
    loop = detect_loop(words) if len(words) >= 6 else None
    cut = spans[loop.onset][0] if loop is not None and loop.onset < len(spans) else len(text)
    marks = [(0, cut, False), (cut, len(text), True)] if cut < len(text) else [(0, len(text), False)]
    truncated = len(text) > max_chars
    if truncated:  # keep the head and the tail (loops sit at the tail)
        head, tail = max_chars // 3, max_chars - max_chars // 3
        keep = [(0, head), (len(text) - tail, len(text))]
    else:
        keep = [(0, len(text))]
    segs: list[Segment] = []
    for ki, (ka, kb) in enumerate(keep):
        if ki > 0:
            segs.append(Segment("", omitted=ka - keep[ki - 1][1]))
        for a, b, is_loop in marks:
            lo, hi = max(a, ka), min(b, kb)
            if lo < hi:
                segs.append(Segment(text[lo:hi], loop=is_loop))
    return segs, ((loop.onset, loop.period) if loop else None), truncated


def view(rec: Any, max_chars: int) -> TraceView:
    text = rec.thinking_text or rec.text or ""
    segs, lw, trunc = _segments(text, max_chars)
    return TraceView(record=rec, segments=segs, loop_words=lw, truncated=trunc, n_chars=len(text))


def _tf_mean(run: RunData, rec: Any) -> float | None:
    arr = load_trace_arrays(run, rec.tf_file)
    if arr is None or "kl" not in arr or arr["kl"].size == 0:
        return None
    import numpy as np

    v = float(np.nanmean(arr["kl"].astype("float64")))
    return v if is_num(v) else None


def _layer_panels(run: RunData, recs: list[Any]) -> list[tuple[str, Any, Any, int | None]]:
    panels = []
    for r in recs:
        arr = load_trace_arrays(run, r.layers_file)
        if arr is None or "jsd" not in arr or "layers" not in arr:
            continue
        onset = r.repetition.get("loop_onset") if r.repetition.get("loop") else None
        panels.append((f"{r.variant}'s trace", arr["layers"], arr["jsd"], onset if is_num(onset) else None))
    return panels


def choose_cases(run: RunData, colors: dict[str, str], per_variant: int = 3, max_chars: int = 4000,
                 layer_plots: int = 1) -> list[Case]:
    """The case studies of every pruned variant; the first `layer_plots` of each also get the
    per-token logit-lens heat maps of both traces (what the layers do where a loop starts)."""
    from layerprobe.report import figures

    out: list[Case] = []
    seq = [s for s in run.samples if s.mode == "sequential"]
    if seq:
        bmax = max(s.budget for s in seq)
        pool = [s for s in seq if s.budget == bmax and s.sample == 0]
    else:
        pool = [s for s in run.samples if s.mode == "parallel" and s.sample == 0]
    by = {(s.variant, s.problem_id): s for s in pool}
    for v in run.pruned:
        cands = []
        for (var, pid), b in by.items():
            if var != run.base or (v, pid) not in by:
                continue
            p = by[(v, pid)]
            tf = _tf_mean(run, p)
            flip = b.correct and not p.correct
            loops = bool(p.repetition.get("loop"))
            key = (not flip, -(tf if tf is not None else -1.0), not loops, -abs(p.thinking_tokens - b.thinking_tokens), pid)
            cands.append((key, b, p, tf, flip, loops))
        cands.sort(key=lambda c: c[0])
        for rank, (key, b, p, tf, flip, loops) in enumerate(cands[:per_variant]):
            why = []
            if flip:
                why.append(f"{run.base} correct, {v} wrong")
            if tf is not None:
                why.append(f"teacher-forced mean KL {tf:.3f} nats")
            if loops:
                why.append(f"{v}'s trace loops")
            case = Case(problem_id=b.problem_id, group=b.group, variant=v, reason="; ".join(why) or "next in order",
                        base=view(b, max_chars), pruned=view(p, max_chars), tf_mean=tf)
            arr = load_trace_arrays(run, p.tf_file)
            if arr is not None and "kl" in arr and arr["kl"].size > 1:
                onset = int(arr["onset"]) if "onset" in arr and arr["onset"].size == 1 else None
                lo = p.repetition.get("loop_onset") if p.repetition.get("loop") else None
                case.tf_plot = figures.trace_kl(arr["kl"].astype("float64").tolist(), onset, lo,
                                                f"KL({run.base} \u2016 {v}) along {run.base}'s trace of {b.problem_id}", colors[v])
            if rank < layer_plots:
                panels = _layer_panels(run, [b, p])
                if panels:
                    case.layer_plot = figures.trace_layers(panels, int(run.info.model.n_layers))
            out.append(case)
    return out
