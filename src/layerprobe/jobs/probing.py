"""The probes as a run uses them: capture during generation into per-trace files, teacher-forced
comparison files, and the per-variant aggregates in layers/<variant>.json."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.data.probes import heatmap_columns
from layerprobe.data.schema import (
    LayerAggregates,
    PerLayer,
    SampleRecord,
    Settling,
    TeacherForcedSummary,
    TracePoint,
    VariantSpec,
    teacher_forced_file,
)
from layerprobe.data.store import LAYERS_DIR, write_model
from layerprobe.probe.aggregate import layer_summary, position_bins, position_heatmap
from layerprobe.probe.layer_files import DamagedFile, load_trace_layers
from layerprobe.probe.teacher import (
    WINDOW_DEFAULT,
    load_teacher_forced,
)
from layerprobe.rules import inside

HEATMAP_BINS = 20
#: Aggregates read at most this many trace files per variant, holding at most about this many tokens
#: (a seeded random subset beyond either), so a run with thousands of long traces summarises in
#: bounded memory (400k tokens x 28 layers x 6 float32 statistics = 270 MB); the counts are recorded.
MAX_TRACES_AGGREGATED = 400
MAX_TOKENS_AGGREGATED = 400_000


def _per_layer(summary: dict[str, Any]) -> PerLayer:
    return PerLayer.from_summary(summary)


def _first_departure(tf: Any) -> int | None:
    """First position where the pruned model's argmax differs from the base trace's token and is
    never the same again (positions after it all disagree or agree only by chance are not checked:
    the trace is a sequence, so once the pruned model would have written something else, its own
    text is no longer this trace)."""
    if tf.top1 is None or tf.n_tokens == 0:
        return None
    differ = np.flatnonzero(tf.top1 != tf.tokens)
    return int(differ[0]) if differ.size else None


def teacher_forced_summary(
    run_dir: Path, variant: str, base_traces: Sequence[SampleRecord], n_bins: int = HEATMAP_BINS
) -> TeacherForcedSummary | None:
    """Summarise a variant's teacher-forced files: one per base trace in `base_traces` it was run over
    (present or not: the files are found by the base traces' keys)."""
    pid = {teacher_forced_file(variant, r.problem_id, r.mode, r.budget, r.sample): r.problem_id for r in base_traces}
    files = sorted(f for f in pid if inside(run_dir, f))
    if not files:
        return None
    kls, bins, onsets, fracs, points = [], [], [], [], []
    damaged = 0
    drift: dict[int, list[float]] = {}
    to_base: dict[int, list[float]] = {}
    threshold = window = None
    for f in files:
        try:
            tf = load_teacher_forced(run_dir / f)
        except DamagedFile:
            damaged += 1
            continue
        threshold, window = tf.threshold, WINDOW_DEFAULT
        if tf.n_tokens == 0:
            continue
        mean = float(np.mean(tf.kl))
        kls.append(mean)
        bins.append(position_bins(tf.kl[:, None], n_bins)[:, 0])
        if tf.onset is not None:
            onsets.append(tf.onset)
            fracs.append(tf.onset / tf.n_tokens)
        for j, o in enumerate(tf.layers.tolist()):
            drift.setdefault(int(o), []).append(float(np.nanmean(tf.drift[:, j])))
            if tf.jsd_to_base is not None:
                to_base.setdefault(int(o), []).append(float(np.nanmean(tf.jsd_to_base[:, j])))
        points.append(
            TracePoint(
                file=f,
                problem_id=pid.get(f, ""),
                mean_kl=mean,
                onset=tf.onset,
                first_departure=_first_departure(tf),
                n_tokens=tf.n_tokens,
            )
        )
    if not points:
        return (
            TeacherForcedSummary(n_traces=0, over="base sequential traces at the largest budget", damaged_files=damaged)
            if damaged
            else None
        )
    with warnings.catch_warnings():  # a bin no trace reaches is NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        kl_bins = np.nanmean(np.stack(bins), axis=0)
    finite = [(j, float(x)) for j, x in enumerate(kl_bins) if np.isfinite(x)]
    peak = (max(finite, key=lambda t: t[1])[0] + 0.5) / n_bins if len(finite) > 1 else None
    return TeacherForcedSummary(
        n_traces=len(points),
        over="base sequential traces at the largest budget",
        threshold=threshold,
        window=window,
        mean_kl=float(np.mean(kls)),
        kl_by_relpos=[float(x) for x in kl_bins],
        peak_position=peak,
        n_onset=len(onsets),
        onset_mean=float(np.mean(onsets)) if onsets else None,
        onset_fraction_mean=float(np.mean(fracs)) if fracs else None,
        drift_per_layer={o: float(np.mean(v)) for o, v in sorted(drift.items())},
        jsd_to_base_per_layer={o: float(np.mean(v)) for o, v in sorted(to_base.items())},
        traces=points,
        damaged_files=damaged,
    )


def write_layer_aggregates(
    run_dir: Path,
    spec: VariantSpec,
    records: Sequence[SampleRecord],
    n_layers_original: int,
    base_traces: Sequence[SampleRecord] = (),
) -> LayerAggregates | None:
    """Summarise a variant's probe files, and its teacher-forced files along `base_traces` (the base
    model's traces it was compared on), into layers/<variant>.json; None if it has neither."""
    files: dict[str, str] = {}
    length: dict[str, int] = {}
    for r in records:
        if r.layers_file and r.layers_file not in files and inside(run_dir, r.layers_file):
            files[r.layers_file] = r.group
            length[r.layers_file] = r.thinking_tokens + r.answer_tokens
    tf = teacher_forced_summary(run_dir, spec.name, base_traces) if base_traces else None
    order = sorted(files)
    random.Random(0).shuffle(order)
    chosen: list[str] = []
    tokens = 0
    for f in order:
        if chosen and (len(chosen) >= MAX_TRACES_AGGREGATED or tokens + length[f] > MAX_TOKENS_AGGREGATED):
            continue
        chosen.append(f)
        tokens += length[f]
    readable: list[tuple[str, Any]] = []
    damaged = 0
    for f in sorted(chosen):
        try:
            readable.append((f, load_trace_layers(run_dir / f)))
        except DamagedFile:  # counted, and the aggregate is made of the files that can be read
            damaged += 1
    if not readable and tf is None and not damaged:
        return None
    if not readable:  # teacher forcing only (a sweep's proxy), or every probe file damaged
        agg = LayerAggregates(
            variant=spec.name,
            layers=list(spec.layer_map or []),
            dropped=spec.dropped,
            n_layers_original=n_layers_original,
            n_traces=0,
            n_tokens=0,
            lens="none",
            per_layer=PerLayer(),
            teacher_forced=tf,
            damaged_files=damaged,
        )
        write_model(run_dir / LAYERS_DIR / f"{spec.name}.json", agg)
        return agg
    chosen = [f for f, _ in readable]
    traces = [t for _, t in readable]
    summary = layer_summary(traces)
    by_group = {
        g: _per_layer(layer_summary([t for t, f in zip(traces, chosen) if files[f] == g]))
        for g in sorted({files[f] for f in chosen if files[f]})
    }
    heat: dict[str, list[list[float | None]]] = {}
    lens = summary["lens"][0] if len(summary["lens"]) == 1 else ",".join(summary["lens"])
    settling = None
    if lens != "none":
        for stat in (c.name for c in heatmap_columns()):
            _, h = position_heatmap(traces, stat, HEATMAP_BINS)  # (bins, L)
            heat[stat] = [[float(x) for x in row] for row in h.T]
        st = summary["settling"]
        settling = Settling(
            g=st["g"],
            rho=st["rho"],
            n_lens_tokens=st["n_lens_tokens"],
            mean_depth=st["settling_depth_mean"],
            mean_depth_fraction=st["settling_depth_fraction_mean"],
            mean_depth_original=st["settling_depth_original_mean"],
            deep_thinking_ratio=st["deep_thinking_ratio"],
            per_trace_deep_thinking_ratio=st["per_trace_deep_thinking_ratio"],
        )
    agg = LayerAggregates(
        variant=spec.name,
        layers=summary["layers"],
        dropped=spec.dropped,
        n_layers_original=n_layers_original,
        n_traces=summary["n_traces"],
        n_tokens=summary["n_tokens"],
        traces_available=len(files),
        traces_sampled=len(chosen) + damaged < len(files),
        lens=lens,
        lens_every=traces[0].lens_every if traces else 1,
        per_layer=_per_layer(summary),
        per_layer_by_group=by_group,
        heatmaps=heat,
        heatmap_bins=HEATMAP_BINS,
        settling=settling,
        teacher_forced=tf,
        damaged_files=damaged,
    )
    write_model(run_dir / LAYERS_DIR / f"{spec.name}.json", agg)
    return agg
