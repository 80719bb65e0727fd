"""Summaries over many traces: per-layer means keyed by original layer, and relative-position bins.

Everything returned by `layer_summary` is a plain JSON-able dict (lists, floats, ints, None for a
statistic with no data). Means are token-weighted over all traces (each generated token counts once)
and skip NaN (steps where the lens did not run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerprobe.data.probes import column, columns
from layerprobe.probe.layer_files import TraceLayers
from layerprobe.probe.settle import (
    G_DEFAULT,
    RHO_DEFAULT,
    deep_thinking,
    settling_depth,
)


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def layer_summary(traces: Sequence[TraceLayers], g: float = G_DEFAULT, rho: float = RHO_DEFAULT) -> dict[str, Any]:
    """Per-original-layer means of every statistic over `traces`, and the settling summary.

    Every registered column (layerprobe.data.probes) gets its mean under `Column.aggregate`: a float
    column skips NaN, a rank column (e.g. "rank" -> "rank_mean") skips −1; a column some traces lack
    (written before its probe was registered) is averaged over the traces that have it.
    Layers are the union of the traces' original indices (traces of one variant share them); a layer
    absent from a trace simply gets no data from it. Settling depth and the deep-thinking ratio are
    computed per trace (each against its own depth) and pooled over tokens.
    """
    layers = sorted({int(o) for t in traces for o in t.layers})
    col = {o: i for i, o in enumerate(layers)}
    n_lay = len(layers)
    cols = columns()
    sums = {k.name: np.zeros(n_lay) for k in cols}
    counts = {k.name: np.zeros(n_lay) for k in cols}
    depth, frac, orig, deep = [], [], [], []
    n_tokens = 0
    for t in traces:
        idx = np.array([col[int(o)] for o in t.layers], dtype=np.int64)
        n_tokens += t.n_tokens
        for k in cols:
            if not t.has(k.name):
                continue
            a = np.asarray(t.stat(k.name), dtype=np.float64)
            ok = a >= 0 if k.kind == "rank" else ~np.isnan(a)
            np.add.at(sums[k.name], idx, np.where(ok, a, 0.0).sum(axis=0))
            np.add.at(counts[k.name], idx, ok.sum(axis=0))
        if t.n_tokens and t.lens != "none":
            c = settling_depth(t.jsd, g)
            c = c[c >= 0]
            depth.append(c)
            frac.append((c + 1) / t.n_layers)
            orig.append(np.asarray(t.layers)[c].astype(np.int64))
            deep.append(deep_thinking(c, t.n_layers, rho))
    out: dict[str, Any] = {"layers": layers, "n_traces": len(traces), "n_tokens": n_tokens}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in cols:
            out[k.aggregate] = [_clean(s / n) if n else None for s, n in zip(sums[k.name], counts[k.name])]
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
    d, f, o, dt = cat(depth), cat(frac), cat(orig), cat(deep)
    out["lens"] = sorted({t.lens for t in traces})
    out["settling"] = {
        "g": float(g),
        "rho": float(rho),
        "n_lens_tokens": int(d.size),
        "settling_depth_mean": _clean(d.mean()) if d.size else None,
        "settling_depth_fraction_mean": _clean(f.mean()) if f.size else None,
        "settling_depth_original_mean": _clean(o.mean()) if o.size else None,
        "deep_thinking_ratio": _clean(dt.mean()) if dt.size else None,
        "per_trace_deep_thinking_ratio": [_clean(x.mean()) if x.size else None for x in deep],
    }
    return out


def position_bins(arr: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Bin a trace's (T, L) array into (n_bins, L) by relative position: token t goes to bin
    ⌊t · n_bins / T⌋; each bin is the NaN-skipping mean of its tokens (NaN for an empty bin, which
    happens when T < n_bins). For heat maps of layer × relative position."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError("arr must be (tokens, layers)")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    T, L = a.shape
    out = np.full((n_bins, L), np.nan)
    if T == 0:
        return out
    b = (np.arange(T) * n_bins) // T
    ok = ~np.isnan(a)
    s = np.zeros((n_bins, L))
    n = np.zeros((n_bins, L))
    np.add.at(s, b, np.where(ok, a, 0.0))
    np.add.at(n, b, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def position_heatmap(traces: Sequence[TraceLayers], stat: str = "jsd", n_bins: int = 20) -> tuple[list[int], np.ndarray]:
    """(original layers, (n_bins, n_layers) mean over traces of each trace's position_bins of `stat`).

    Each trace contributes equally (its bins are averaged first), so a long trace does not dominate."""
    layers = sorted({int(o) for t in traces for o in t.layers})
    col = {o: i for i, o in enumerate(layers)}
    s = np.zeros((n_bins, len(layers)))
    n = np.zeros((n_bins, len(layers)))
    for t in traces:
        if not t.has(stat):  # written before the probe of that column was registered
            continue
        a = t.stat(stat).astype(np.float64)
        if (c := column(stat)) is not None and c.kind == "rank":
            a = np.where(a < 0, np.nan, a)
        bins = position_bins(a, n_bins)
        idx = np.array([col[int(o)] for o in t.layers], dtype=np.int64)
        ok = ~np.isnan(bins)
        s[:, idx] += np.where(ok, bins, 0.0)
        n[:, idx] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return layers, np.where(n > 0, s / np.maximum(n, 1), np.nan)
