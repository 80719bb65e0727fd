"""Case studies: paired base vs pruned traces of the same problem, chosen by a stated rule, with
loops highlighted and long texts truncated (the full traces stay in samples.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.data.reader import Run
from layerprobe.data.schema import teacher_forced_file
from layerprobe.report.numbers import is_num

RULE = (
    "For each pruned variant: problems where the base and the pruned variant disagree on correctness come "
    "first, then the others; within each, problems are ordered by the mean teacher-forced KL of the pruned "
    "model over the base trace (largest first; without teacher-forced arrays: pruned traces that loop first, "
    "then the largest difference in thinking length). Traces are the sequential ones at the largest budget "
    "(sample 0), or the first parallel sample when the run has no sequential traces. A marker shows the first "
    "character where the two thinking texts part."
)


SINGLE_RULE = (
    "This run has one variant, so its wrong traces are shown, one per problem (any sample, the largest "
    "budget): traces cut before their thinking ended come first, then those that loop, then the longest thinking."
)


def load_trace_arrays(run: Run, rel: str | None) -> dict[str, Any] | None:
    """The arrays of one per-trace .npz of the run (probe or teacher-forced), or None when absent/unreadable."""
    if not rel:
        return None
    import numpy as np

    p = run.dir / rel
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 - a damaged array file only loses its plot
        return None


@dataclass
class Segment:
    text: str
    loop: bool = False
    omitted: int = 0  # > 0: a marker standing for this many omitted characters
    part: bool = False  # the two traces part at the start of this segment


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
    pruned: TraceView | None
    tf_mean: float | None = None
    tf_plot: Any = None
    layer_plot: Any = None
    notes: list[str] = field(default_factory=list)


def _segments(text: str, max_chars: int, loop_char: int | None, part_char: int | None) -> tuple[list[Segment], bool]:
    """Split text into plain and loop segments (the loop starts at `loop_char`, stored with the trace),
    mark where the two traces part, and cut long texts in the middle (loops sit at the tail)."""
    cut = loop_char if loop_char is not None and 0 <= loop_char < len(text) else len(text)
    bounds = sorted({0, cut, len(text)} | ({part_char} if part_char is not None and 0 < part_char < len(text) else set()))
    marks = [(a, b, a >= cut) for a, b in zip(bounds, bounds[1:])]
    truncated = len(text) > max_chars
    if truncated:
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
                segs.append(Segment(text[lo:hi], loop=is_loop, part=lo == part_char))
    return segs, truncated


def _parting(a: str, b: str) -> int | None:
    """First character where two texts differ (None when one is a prefix of the other and equal length)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return None if len(a) == len(b) else n


def view(rec: Any, max_chars: int, part_char: int | None = None) -> TraceView:
    text = rec.thinking_text or rec.text or ""
    rep = rec.repetition
    segs, trunc = _segments(text, max_chars, rep.loop_onset_char if rep.loop else None, part_char)
    lw = (rep.loop_onset, rep.loop_period) if rep.loop and rep.loop_onset is not None else None
    return TraceView(record=rec, segments=segs, loop_words=lw, truncated=trunc, n_chars=len(text))


def _tf_means(run: Run, v: str) -> dict[str, float]:
    la = run.layers.get(v)
    if la is None or la.teacher_forced is None:
        return {}
    return {t.file: t.mean_kl for t in la.teacher_forced.traces if is_num(t.mean_kl)}


def _layer_panels(run: Run, recs: list[Any]) -> list[tuple[str, Any, Any, int | None]]:
    panels = []
    for r in recs:
        arr = load_trace_arrays(run, r.layers_file)
        if arr is None or "jsd" not in arr or "layers" not in arr:
            continue
        onset = r.repetition.loop_onset if r.repetition.loop else None
        panels.append((f"{r.variant}'s trace", arr["layers"], arr["jsd"], onset))
    return panels


def choose_cases(
    run: Run, colors: dict[str, str], per_variant: int = 3, max_chars: int = 4000, layer_plots: int = 1
) -> list[Case]:
    """The case studies of every pruned variant (see RULE); the first `layer_plots` of each also get
    the per-token logit-lens heat maps of both traces (what the layers do where a loop starts)."""
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
        means = _tf_means(run, v)
        cands = []
        for (var, pid), b in by.items():
            if var != run.base or (v, pid) not in by:
                continue
            p = by[(v, pid)]
            tf = means.get(p.tf_file or teacher_forced_file(p.variant, p.problem_id, p.mode, p.budget, p.sample))
            disagree = None not in (b.correct, p.correct) and b.correct != p.correct
            loops = p.repetition.loop
            key = (not disagree, -(tf if tf is not None else -1.0), not loops, -abs(p.thinking_tokens - b.thinking_tokens), pid)
            cands.append((key, b, p, tf, disagree, loops))
        cands.sort(key=lambda c: c[0])
        for rank, (_key, b, p, tf, disagree, loops) in enumerate(cands[:per_variant]):
            why = []
            if disagree:
                why.append(f"{run.base} {'correct' if b.correct else 'wrong'}, {v} {'correct' if p.correct else 'wrong'}")
            if tf is not None:
                why.append(f"teacher-forced mean KL {tf:.3f} nats")
            if loops:
                why.append(f"{v}'s trace loops")
            part = _parting(b.thinking_text or "", p.thinking_text or "")
            case = Case(
                problem_id=b.problem_id,
                group=b.group,
                variant=v,
                reason="; ".join(why) or "next in order",
                base=view(b, max_chars, part),
                pruned=view(p, max_chars, part),
                tf_mean=tf,
            )
            arr = load_trace_arrays(run, p.tf_file or teacher_forced_file(p.variant, p.problem_id, p.mode, p.budget, p.sample))
            if arr is not None and "kl" in arr and arr["kl"].size > 1:
                onset = int(arr["onset"]) if "onset" in arr and arr["onset"].size == 1 else None
                lo = p.repetition.loop_onset if p.repetition.loop else None
                case.tf_plot = figures.trace_kl(
                    arr["kl"].astype("float64").tolist(),
                    onset,
                    lo,
                    f"KL({run.base} \u2016 {v}) along {run.base}'s trace of {b.problem_id}",
                    colors[v],
                )
            if rank < layer_plots:
                panels = _layer_panels(run, [b, p])
                if panels:
                    case.layer_plot = figures.trace_layers(panels, run.n_layers)
            out.append(case)
    return out


def choose_wrong_cases(run: Run, per_variant: int = 3, max_chars: int = 4000) -> list[Case]:
    """Case studies of a run with a single variant: its wrong traces (see SINGLE_RULE)."""
    bmax = max((s.budget for s in run.samples if s.mode == "sequential"), default=None)
    pool = [s for s in run.samples if s.mode == "parallel" or s.budget == bmax]
    wrong = [s for s in pool if s.variant == run.base and s.correct is False]
    wrong.sort(key=lambda s: (s.finish != "truncated", not s.repetition.loop, -s.thinking_tokens, s.problem_id, s.sample))
    first = list({s.problem_id: s for s in reversed(wrong)}.values())  # the first of each problem in that order
    first.sort(key=lambda s: (s.finish != "truncated", not s.repetition.loop, -s.thinking_tokens, s.problem_id, s.sample))
    out = []
    for s in first[:per_variant]:
        why = ["cut before its thinking ended" if s.finish == "truncated" else "wrong"]
        if s.repetition.loop:
            why.append("loops")
        why.append(f"{s.thinking_tokens:,} thinking tokens")
        out.append(
            Case(
                problem_id=s.problem_id,
                group=s.group,
                variant=s.variant,
                reason=", ".join(why),
                base=view(s, max_chars),
                pruned=None,
            )
        )
    return out
