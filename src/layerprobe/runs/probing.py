"""The probes as a run uses them: capture during generation into per-trace files, teacher-forced
comparison files, and the per-variant aggregates in layers/<variant>.json."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.probe.aggregate import layer_summary, position_bins, position_heatmap
from layerprobe.probe.hooks import LayerProbe
from layerprobe.probe.store import load_trace_layers, save_trace_layers
from layerprobe.probe.teacher import (
    load_teacher_forced,
    save_teacher_forced,
    teacher_forced,
)
from layerprobe.runs.schema import LayerAggregates, SampleRecord, VariantSpec
from layerprobe.runs.store import LAYERS_DIR, write_json_atomic

HEATMAP_BINS = 20
#: Aggregates read at most this many trace files per variant, holding at most about this many tokens
#: (a seeded random subset beyond either), so a run with thousands of long traces summarises in
#: bounded memory (400k tokens x 28 layers x 6 float32 statistics = 270 MB); the counts are recorded.
MAX_TRACES_AGGREGATED = 400
MAX_TOKENS_AGGREGATED = 400_000


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ProbeSession:
    """A LayerProbe attached to one variant's model for a generation pass (a GenerationObserver)."""

    def __init__(self, loaded: Any, lens: bool = True, lens_every: int = 1) -> None:
        self.loaded, self.lens, self.lens_every = loaded, lens, lens_every
        self._probe = LayerProbe(loaded, lens=lens, lens_every=lens_every)
        self._probe.attach()

    def on_forward(self, keys: Any, attention_mask: Any, prefill: bool) -> None:
        self._probe.on_forward(keys, attention_mask, prefill)

    def on_tokens(self, keys: Any, tokens: Any, phases: Any) -> None:
        self._probe.on_tokens(keys, tokens, phases)

    def on_finish(self, result: Any) -> None:
        self._probe.on_finish(result)

    def save(self, key: Any, path: Path) -> bool:
        """Write the finished trace's arrays to `path` (atomically); False if the probe has none."""
        try:
            tl = self._probe.pop(key)
        except KeyError:
            return False
        tl.key = str(path.stem)
        _atomic(path, lambda tmp: save_trace_layers(tmp, tl))
        return True

    def reset(self) -> None:
        """Forget traces in flight (after an out-of-memory retry) and start a fresh probe."""
        self._probe.close()
        self._probe = LayerProbe(self.loaded, lens=self.lens, lens_every=self.lens_every)
        self._probe.attach()

    def close(self) -> None:
        self._probe.close()


def teacher_forced_file(base: Any, pruned: Any, prompt_ids: Sequence[int], layers_file: Path, out: Path) -> None:
    """Run `pruned` (and `base`) over the exact token ids of a base trace and save the comparison."""
    with np.load(layers_file, allow_pickle=False) as data:  # only the token ids, not the statistics
        tokens = np.asarray(data["tokens"], dtype=np.int64)
    tf = teacher_forced(base, pruned, list(prompt_ids), tokens.tolist(), key=out.stem)
    _atomic(out, lambda tmp: save_teacher_forced(tmp, tf))


def _per_layer(summary: dict[str, Any]) -> dict[str, list[float | None]]:
    keys = ("block_influence", "norm", "jsd", "entropy", "top1_agree", "rank_mean")
    return {k: summary[k] for k in keys if k in summary}


def _teacher_forced_summary(run_dir: Path, variant: str, n_bins: int = HEATMAP_BINS) -> dict[str, Any] | None:
    folder = run_dir / LAYERS_DIR / variant / "tf"
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if not files:
        return None
    kls, bins, onsets, fracs, drift_sum, drift_n = [], [], [], [], {}, {}
    threshold = window = None
    for f in files:
        tf = load_teacher_forced(f)
        threshold, window = tf.threshold, tf.window
        if tf.n_tokens == 0:
            continue
        kls.append(float(np.mean(tf.kl)))
        bins.append(position_bins(tf.kl[:, None], n_bins)[:, 0])
        if tf.onset is not None:
            onsets.append(tf.onset)
            fracs.append(tf.onset / tf.n_tokens)
        for j, o in enumerate(tf.layers):
            drift_sum[int(o)] = drift_sum.get(int(o), 0.0) + float(np.nanmean(tf.drift[:, j]))
            drift_n[int(o)] = drift_n.get(int(o), 0) + 1
    with np.errstate(invalid="ignore"):
        kl_bins = np.nanmean(np.stack(bins), axis=0) if bins else np.full(n_bins, np.nan)
    clean = lambda x: None if x is None or not np.isfinite(x) else float(x)  # noqa: E731
    return {
        "n_traces": len(files),
        "over": "base sequential traces at the largest budget",
        "threshold": threshold,
        "window": window,
        "mean_kl": clean(np.mean(kls)) if kls else None,
        "per_trace_mean_kl": kls,
        "kl_by_relpos": [clean(x) for x in kl_bins],
        "n_onset": len(onsets),
        "onset_mean": clean(np.mean(onsets)) if onsets else None,
        "onset_fraction_mean": clean(np.mean(fracs)) if fracs else None,
        "drift_per_layer": {str(o): drift_sum[o] / drift_n[o] for o in sorted(drift_sum)},
        "files": [f.relative_to(run_dir).as_posix() for f in files],
    }


def write_layer_aggregates(run_dir: Path, spec: VariantSpec, loaded: Any, records: Sequence[SampleRecord],
                           n_layers_original: int) -> LayerAggregates | None:
    """Summarise a variant's probe files into layers/<variant>.json; None if it has none."""
    files: dict[str, str] = {}
    length: dict[str, int] = {}
    for r in records:
        if r.layers_file and r.layers_file not in files:
            files[r.layers_file] = r.group
            length[r.layers_file] = r.thinking_tokens + r.answer_tokens
    if not files:
        return None
    order = sorted(files)
    random.Random(0).shuffle(order)
    chosen, tokens = [], 0
    for f in order:
        if chosen and (len(chosen) >= MAX_TRACES_AGGREGATED or tokens + length[f] > MAX_TOKENS_AGGREGATED):
            continue
        chosen.append(f)
        tokens += length[f]
    sampled = len(chosen) < len(files)
    chosen.sort()
    traces = [load_trace_layers(run_dir / f) for f in chosen]
    summary = layer_summary(traces)
    by_group: dict[str, dict[str, list[float | None]]] = {}
    for g in sorted({files[f] for f in chosen if files[f]}):
        sel = [t for t, f in zip(traces, chosen) if files[f] == g]
        by_group[g] = _per_layer(layer_summary(sel))
    heat: dict[str, list[list[float | None]]] = {}
    lens = summary["lens"][0] if len(summary["lens"]) == 1 else ",".join(summary["lens"])
    if lens != "none":
        for stat in ("jsd", "entropy"):
            _, h = position_heatmap(traces, stat, HEATMAP_BINS)  # (bins, L)
            heat[stat] = [[None if not np.isfinite(x) else float(x) for x in row] for row in h.T]
    agg = LayerAggregates(
        variant=spec.name, layers=summary["layers"], dropped=spec.dropped, n_layers_original=n_layers_original,
        n_traces=summary["n_traces"], n_tokens=summary["n_tokens"], lens=lens,
        lens_every=traces[0].lens_every if traces else 1, per_layer=_per_layer(summary), per_layer_by_group=by_group,
        heatmaps=heat, heatmap_bins=HEATMAP_BINS, settling=summary["settling"],
        teacher_forced=_teacher_forced_summary(run_dir, spec.name),
        traces_available=len(files), traces_sampled=sampled,
    )
    write_json_atomic(run_dir / LAYERS_DIR / f"{spec.name}.json", agg.model_dump(mode="json"))
    return agg
