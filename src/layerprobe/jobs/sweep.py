"""Layer-sensitivity sweeps: every single layer (or adjacent pair) removed, one variant each, and
sweep.json, which says what removing each layer costs each problem group and whether block
influence (or the cheap teacher-forced proxy) predicts that cost."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from layerprobe.data.schema import (
    MAX_LAYERS,
    Correlation,
    LayerAggregates,
    MetricsFile,
    RunInfo,
    SampleRecord,
    SweepFile,
    SweepLayer,
)
from layerprobe.data.store import write_model
from layerprobe.errors import UserError
from layerprobe.metrics.correlation import spearman_interval, spearman_permutation_p
from layerprobe.metrics.paired import BOTH, decide

SWEEP_FILE = "sweep.json"
SWEEP_KINDS = ("single", "pairs")
ALL = "all"


def parse_sweep_layers(text: str) -> list[int]:
    """'10-20' (inclusive) or '3,5,7' -> sorted original layer indices; UserError otherwise."""
    t = text.replace(" ", "")
    try:
        if "-" in t and "," not in t:
            lo, hi = (int(x) for x in t.split("-", 1))
            if lo > hi:
                raise ValueError
            if hi - lo >= MAX_LAYERS:
                raise UserError(f"--sweep-layers {text}: a range of at most {MAX_LAYERS:,} layers")
            return list(range(lo, hi + 1))
        layers = sorted({int(x) for x in t.split(",") if x})
    except ValueError:
        layers = []
    if not layers:
        shown = text if text.strip(", ") else repr(text)  # an empty or comma-only list is shown quoted
        raise UserError(f"--sweep-layers {shown}: give a range such as 10-20 or a list such as 3,5,7")
    return layers


def sweep_drops(kind: str, n_layers: int, layers: Sequence[int] | None = None) -> list[list[int]]:
    """The dropped-layer lists of a sweep over original layers `layers` (default: all) of an
    n_layers model: [[i]] for single, [[i, i+1]] with both in range for pairs."""
    if kind not in SWEEP_KINDS:
        raise UserError(f"--sweep {kind}: valid kinds are {', '.join(SWEEP_KINDS)}")
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if bad:
        raise UserError(f"--sweep-layers: layer {bad[0]} is outside the model (it has {n_layers} layers: 0..{n_layers - 1})")
    if kind == "single":
        return [[i] for i in chosen]
    pairs = [[i, i + 1] for i in chosen if i + 1 in chosen]
    if not pairs:
        raise UserError("--sweep pairs: --sweep-layers must hold at least two adjacent layers")
    return pairs


def _correlations(layers: Sequence[SweepLayer], groups: Sequence[str], predictor: str) -> list[Correlation]:
    out = []
    for g in groups:
        x, y = [], []
        for lay in layers:
            p, d = getattr(lay, predictor), lay.delta.get(g)
            if p is not None and d is not None:
                x.append(p)
                y.append(-d)  # damage: how much accuracy the variant lost
        rho, lo, hi = spearman_interval(x, y)
        p = spearman_permutation_p(x, y)
        ok = decide(lo, hi, len(x), p)[1] == BOTH  # the difference rule: enough layers, interval and test agree
        out.append(Correlation(group=g, predictor=predictor, spearman=rho, ci=(lo, hi), n=len(x), p_value=p, established=ok))
    return out


def compute_sweep(
    info: RunInfo,
    records: Sequence[SampleRecord],
    metrics: MetricsFile,
    layers: dict[str, LayerAggregates | None],
    calibration_bi: Sequence[float] | None,
    calibration: dict[str, Any] | None,
) -> SweepFile:
    """sweep.json from a run's variants, samples, metrics and layer aggregates."""
    if info.config.sweep not in SWEEP_KINDS:
        raise ValueError("not a sweep run")
    kind: Literal["single", "pairs"] = "single" if info.config.sweep == "single" else "pairs"
    seq = [r for r in records if r.mode == "sequential"]
    budget = max((r.budget for r in seq), default=None)
    groups = [ALL] + sorted({r.group for r in records if r.group})
    base = info.variants[0].name
    base_layers = layers.get(base)
    trace_bi = dict(zip(base_layers.layers, base_layers.per_layer.block_influence)) if base_layers is not None else {}
    comps = {(c.variant, c.group): c for c in metrics.comparisons if c.mode == "sequential" and c.budget == budget}
    out: list[SweepLayer] = []
    for spec in info.variants[1:]:
        acc = metrics.variants.get(spec.name)
        entry = SweepLayer(dropped=spec.dropped, variant=spec.name)
        if calibration_bi is not None:
            entry.block_influence = statistics.fmean(calibration_bi[i] for i in spec.dropped)
        tb = [trace_bi.get(i) for i in spec.dropped]
        if tb and all(x is not None for x in tb):
            entry.block_influence_traces = statistics.fmean(x for x in tb if x is not None)
        for g in groups:
            gm = acc.groups.get(g) if acc is not None else None
            cell = gm.sequential.get(str(budget)) if gm is not None else None
            if cell is not None and cell.n:
                entry.accuracy[g], entry.accuracy_ci[g] = cell.accuracy, cell.ci
            c = comps.get((spec.name, g))
            if c is not None:
                entry.delta[g], entry.delta_ci[g], entry.verdict[g] = c.diff, (c.ci_low, c.ci_high), c.verdict
        la = layers.get(spec.name)
        if la is not None and la.teacher_forced is not None:
            entry.teacher_forced_kl = la.teacher_forced.mean_kl
        out.append(entry)
    width = len(out[0].dropped) if out else 1
    choices: dict[str, list[int]] = {}
    if calibration_bi is not None:
        choices["shortgpt"] = sorted(sorted(range(len(calibration_bi)), key=lambda i: calibration_bi[i])[:width])
    n = info.model.n_layers
    assert n is not None  # a sweep is generated by analyze, which loads the model
    choices["reverse"] = list(range(n - width, n))
    return SweepFile(
        kind=kind,
        budget=budget,
        proxy_only=bool(info.config.sweep_proxy),
        calibration=calibration,
        layers=out,
        bi_vs_damage=_correlations(out, groups, "block_influence") + _correlations(out, groups, "block_influence_traces"),
        proxy_vs_damage=_correlations(out, groups, "teacher_forced_kl"),
        method_choices=choices,
    )


def write_sweep(run_dir: Path, sweep: SweepFile) -> None:
    write_model(Path(run_dir) / SWEEP_FILE, sweep)
