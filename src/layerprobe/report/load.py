"""Read run directories for the report: run.json, samples, metrics (recomputed when missing or
stale), per-layer aggregates and per-trace arrays. Everything unknown or missing is tolerated:
a missing aggregate means "no probes", a missing array key is simply absent."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError

# Groups are ordered and labelled by the regime they stand for (DESIGN §1: long-chain reasoning
# collapses, short and knowledge controls stay nearly intact).
LONG, SHORT, KNOWLEDGE, OTHER = "long-chain", "short", "knowledge", "other"
_REGIME_BY_GROUP = {
    "long": LONG, "xlong": LONG, "mid": LONG, "aime24": LONG, "aime": LONG, "math500": LONG,
    "gpqa": LONG, "gpqa-diamond": LONG, "long-chain": LONG,
    "short": SHORT, "gsm8k": SHORT, "shallow": SHORT,
    "facts": KNOWLEDGE, "knowledge": KNOWLEDGE, "mmlu": KNOWLEDGE, "fact": KNOWLEDGE,
}
_REGIME_ORDER = {LONG: 0, SHORT: 1, KNOWLEDGE: 2, OTHER: 3}
ALL = "all"


def regime_of(group: str, task_regime: str | None = None) -> str:
    """The regime (long-chain / short / knowledge / other) a sample group stands for."""
    g = group.lower()
    if g in _REGIME_BY_GROUP:
        return _REGIME_BY_GROUP[g]
    for key, regime in _REGIME_BY_GROUP.items():
        if g.startswith(key):
            return regime
    if task_regime:
        t = task_regime.lower()
        if "long" in t:
            return LONG
        if "short" in t or "shallow" in t:
            return SHORT
        if "know" in t:
            return KNOWLEDGE
    return OTHER


@dataclass
class RunData:
    """One run directory, read once."""

    dir: Path
    info: Any  # RunInfo
    samples: list[Any]  # SampleRecord
    metrics: dict[str, Any]
    layers: dict[str, dict[str, Any] | None]
    metrics_source: str  # "metrics.json" or "recomputed (...)"
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def variants(self) -> list[Any]:
        return list(self.info.variants)

    @property
    def base(self) -> str:
        return self.info.variants[0].name if self.info.variants else ""

    @property
    def pruned(self) -> list[str]:
        return [v.name for v in self.info.variants[1:]]

    @property
    def status(self) -> str:
        return str(self.info.status)

    @property
    def partial(self) -> bool:
        return bool(self.metrics.get("partial")) or self.status != "complete"

    @property
    def has_probes(self) -> bool:
        return any(v for v in self.layers.values())

    def spec(self, name: str) -> Any:
        for v in self.info.variants:
            if v.name == name:
                return v
        return None

    def groups(self) -> list[str]:
        """Sample groups present, long-chain first, then short, knowledge, other (without "all")."""
        seen = sorted({s.group for s in self.samples if s.group})
        if not seen:
            for v in self.metrics.get("variants", {}).values():
                seen = sorted({g for g in v.get("groups", {}) if g != ALL} | set(seen))
        return sorted(seen, key=lambda g: (_REGIME_ORDER[self.regime(g)], g))

    def group_title(self, group: str) -> str:
        """"long (long-chain)", "short", "all problems"."""
        if group == ALL:
            return "all problems"
        reg = self.regime(group)
        return group if reg in (group, OTHER) else f"{group} ({reg})"

    def regime(self, group: str) -> str:
        return regime_of(group, getattr(self.info.task, "regime", None))

    def vmetrics(self, variant: str, group: str = ALL) -> dict[str, Any]:
        return self.metrics.get("variants", {}).get(variant, {}).get("groups", {}).get(group, {})

    def budgets(self) -> list[int]:
        bs = {s.budget for s in self.samples if s.mode == "sequential"}
        if not bs:
            for v in self.metrics.get("variants", {}).values():
                bs |= {int(b) for b in v.get("groups", {}).get(ALL, {}).get("sequential", {})}
        return sorted(bs)

    def rel(self, path: str | os.PathLike[str], out_dir: Path) -> str:
        """A path of this run relative to the report's folder (for local links)."""
        return os.path.relpath(self.dir / path, out_dir).replace(os.sep, "/")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


_SETTLING_ALIASES = {  # name the report uses <- names writers have used
    "mean_depth_fraction": ("mean_depth_fraction", "settling_depth_fraction_mean"),
    "mean_depth_original": ("mean_depth_original", "settling_depth_original_mean"),
    "mean_depth": ("mean_depth", "settling_depth_mean"),
}


def _read_layers(run_dir: Path, variant: str) -> dict[str, Any] | None:
    """layers/<variant>.json, normalised: settling keys under one name each, drift as a list
    aligned with `layers`. None when absent or not an aggregate (= no probes for this variant)."""
    data = _read_json(run_dir / "layers" / f"{variant}.json")
    if not isinstance(data, dict) or not isinstance(data.get("per_layer"), dict) or not data.get("layers"):
        return None
    try:
        data["layers"] = [int(x) for x in data["layers"]]
    except (TypeError, ValueError):
        return None
    st = data.get("settling")
    if isinstance(st, dict):
        for name, aliases in _SETTLING_ALIASES.items():
            for a in aliases:
                if st.get(a) is not None:
                    st.setdefault(name, st[a])
                    break
    else:
        data["settling"] = {}
    tf = data.get("teacher_forced")
    if isinstance(tf, dict):
        drift = tf.get("drift_per_layer")
        if isinstance(drift, dict):  # {original layer: drift}
            tf["drift_by_layer"] = {int(k): v for k, v in drift.items() if str(k).lstrip("-").isdigit()}
        elif isinstance(drift, list) and len(drift) == len(data["layers"]):
            tf["drift_by_layer"] = dict(zip(data["layers"], drift))
    elif tf is not None:
        data["teacher_forced"] = None
    if not isinstance(data.get("heatmaps"), dict):
        data["heatmaps"] = {}
    return data


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read one run directory; UserError when it is not a readable layerprobe run."""
    from layerprobe.runs.store import read_run_info, read_samples
    from layerprobe.runs.summarize import compute_metrics

    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (expected a layerprobe run directory)")
    info = read_run_info(path)  # UserError on a missing/invalid run.json
    try:
        samples = read_samples(path)
    except OSError as exc:
        raise UserError(f"{path / 'samples.jsonl'} cannot be read: {exc.strerror or exc}") from None
    notes: list[str] = []
    metrics = _read_json(path / "metrics.json")
    expected_partial = info.status != "complete" or (
        info.expected_traces is not None and len(samples) < info.expected_traces)
    reason = None
    if not isinstance(metrics, dict) or metrics.get("kind") != "layerprobe-metrics":
        reason = "metrics.json missing or unreadable"
    elif metrics.get("n_samples") != len(samples):
        reason = f"metrics.json covers {metrics.get('n_samples')} traces, samples.jsonl has {len(samples)}"
    elif bool(metrics.get("partial")) != expected_partial:
        reason = "metrics.json was written before the run's status changed"
    source = "metrics.json"
    if reason is not None:
        metrics = compute_metrics(path, info).model_dump()
        source = f"samples.jsonl, recomputed ({reason})"
    layers = {v.name: _read_layers(path, v.name) for v in info.variants}
    if info.expected_traces and len(samples) < info.expected_traces:
        notes.append(f"{len(samples)} of {info.expected_traces} expected traces are present")
    return RunData(dir=path, info=info, samples=samples, metrics=metrics, layers=layers,
                   metrics_source=source, label=path.name, notes=notes)


def load_trace_arrays(run: RunData, rel: str | None) -> dict[str, Any] | None:
    """The arrays of one per-trace .npz (probe or teacher-forced), or None when absent/unreadable."""
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
