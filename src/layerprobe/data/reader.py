"""The one reader of a run directory: `load_run(dir) -> Run`, for the CLI, the report and notebooks.

    from layerprobe.data import load_run
    run = load_run("runs/20261130-toy")
    run.info.variants            # RunInfo (run.json)
    run.samples                  # [SampleRecord] (samples.jsonl, damaged lines skipped and counted)
    run.metrics.comparisons      # MetricsFile (metrics.json; recomputed when missing or stale)
    run.layers["base"]           # LayerAggregates | None (layers/<variant>.json)

Nothing here writes to the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from layerprobe.data.schema import (
    GroupMetrics,
    LayerAggregates,
    MetricsFile,
    RunInfo,
    SampleRecord,
    VariantSpec,
)
from layerprobe.data.store import (
    LAYERS_DIR,
    METRICS_FILE,
    SAMPLES_FILE,
    check_links,
    read_run_info,
    read_samples_counted,
    samples_notes,
)
from layerprobe.errors import UserError

ALL = "all"
LONG, SHORT, KNOWLEDGE, OTHER = "long-chain", "short", "knowledge", "other"
# Groups are ordered and labelled by the regime they stand for: long-chain reasoning (which pruning
# breaks), and the short and knowledge controls (which survive it).
_REGIME_BY_GROUP = {
    "long": LONG,
    "xlong": LONG,
    "mid": LONG,
    "aime24": LONG,
    "aime": LONG,
    "math500": LONG,
    "gpqa": LONG,
    "gpqa-diamond": LONG,
    "long-chain": LONG,
    "short": SHORT,
    "gsm8k": SHORT,
    "shallow": SHORT,
    "facts": KNOWLEDGE,
    "knowledge": KNOWLEDGE,
    "mmlu": KNOWLEDGE,
    "fact": KNOWLEDGE,
}
_REGIME_ORDER = {LONG: 0, SHORT: 1, KNOWLEDGE: 2, OTHER: 3}


def regime_of(group: str, task_regime: str | None = None) -> str:
    """The regime (long-chain / short / knowledge / other) a problem group stands for."""
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
class Run:
    """One run directory, read once."""

    dir: Path
    info: RunInfo
    samples: list[SampleRecord]
    metrics: MetricsFile
    layers: dict[str, LayerAggregates | None]
    metrics_source: str
    """metrics.json, or why it was recomputed from samples.jsonl."""
    skipped_lines: int = 0
    """Lines of samples.jsonl that were damaged (not UTF-8, not JSON, not a valid record) and skipped."""
    repeated_lines: int = 0
    """Lines of samples.jsonl that repeat the key of an earlier line (the first is kept)."""
    notes: list[str] = field(default_factory=list)
    """What a reader should know about the state of the files (partial, skipped lines, unreadable aggregates)."""
    label: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    """Optional files of the run (sweep.json, explain.json, judge.json), typed, by name."""
    unshown: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Optional files present but not shown: name -> (damaged | newer | stale, why) (data.extras)."""

    @property
    def variants(self) -> list[VariantSpec]:
        return list(self.info.variants)

    @property
    def base(self) -> str:
        return self.info.variants[0].name if self.info.variants else ""

    @property
    def pruned(self) -> list[str]:
        return [v.name for v in self.info.variants[1:]]

    @property
    def status(self) -> str:
        """The run's status; a "running" run whose process is gone shows as "interrupted" (as in `layerprobe runs`)."""
        from layerprobe.data.store import effective_status

        return effective_status(self.info)

    @property
    def partial(self) -> bool:
        return self.metrics.partial or self.status != "complete"

    @property
    def has_probes(self) -> bool:
        return any(v is not None for v in self.layers.values())

    def spec(self, name: str) -> VariantSpec | None:
        return next((v for v in self.info.variants if v.name == name), None)

    def groups(self) -> list[str]:
        """Problem groups present, long-chain first, then short, knowledge, other (without "all")."""
        seen = {s.group for s in self.samples if s.group}
        for v in self.metrics.variants.values():
            seen |= {g for g in v.groups if g != ALL}
        return sorted(seen, key=lambda g: (_REGIME_ORDER[self.regime(g)], g))

    def group_title(self, group: str) -> str:
        """ "long (long-chain)", "short", "all problems"."""
        if group == ALL:
            return "all problems"
        reg = self.regime(group)
        return group if reg in (group, OTHER) else f"{group} ({reg})"

    def regime(self, group: str) -> str:
        return regime_of(group, self.info.task.regime)

    def vmetrics(self, variant: str, group: str = ALL) -> GroupMetrics:
        """Metrics of one variant and group (empty when there are none)."""
        v = self.metrics.variants.get(variant)
        return (v.groups.get(group) if v else None) or GroupMetrics()

    def budgets(self) -> list[int]:
        """Thinking budgets of the sequential traces present (not the 0 that stands for "not recorded"
        when other traces of the run record theirs: see `unbudgeted`)."""
        bs = {s.budget for s in self.samples if s.mode == "sequential"}
        for v in self.metrics.variants.values():
            g = v.groups.get(ALL)
            if g:
                bs |= {int(b) for b in g.sequential}
        return sorted(bs - ({0} if self.unbudgeted else set()))

    def config_budgets(self) -> list[int]:
        """The budgets run.json lists, less the 0 that stands for "not recorded" (see `unbudgeted`)."""
        return [b for b in self.info.config.budgets if not (b == 0 and self.unbudgeted)]

    @cached_property  # read by budgets(), which the report calls many times; a Run is not changed once loaded
    def unbudgeted(self) -> int:
        """Traces that record no thinking budget (stored as 0) in a run whose other traces record theirs:
        they count in the numbers over all traces, never as a budget of 0 tokens."""
        if not any(s.budget_recorded for s in self.samples):
            return 0
        if any(s.budget == 0 and s.budget_recorded for s in self.samples):
            return 0  # a recorded budget of 0 is a budget: the two cannot be told apart on a curve
        return sum(1 for s in self.samples if not s.budget_recorded)

    @property
    def n_layers(self) -> int:
        """Decoder layers of the unpruned model: run.json's, else the deepest layer any variant knows
        (a text-only ingest may not know the depth; 0 when nothing does)."""
        if self.info.model.n_layers is not None:
            return self.info.model.n_layers
        known = [max(v.layer_map) + 1 for v in self.info.variants if v.layer_map] + [
            max(v.dropped) + 1 for v in self.info.variants if v.dropped
        ]
        return max(known, default=0)

    @property
    def budget_recorded(self) -> bool:
        """False when no trace of the run recorded its thinking budget (ingested files that do not say)."""
        return not self.samples or any(s.budget_recorded for s in self.samples)

    @property
    def producer(self) -> str | None:
        """The model that wrote an ingested run's traces, when a file or --producer says."""
        return next((s.producer for s in self.info.ingested if s.producer), None)

    def rel(self, path: str | os.PathLike[str], out_dir: Path) -> str:
        """A path of this run relative to `out_dir` (for local links from a report)."""
        return os.path.relpath(self.dir / path, out_dir).replace(os.sep, "/")


def read_layers(run_dir: Path, variant: str, notes: list[str]) -> LayerAggregates | None:
    path = run_dir / LAYERS_DIR / f"{variant}.json"
    if not path.is_file():
        return None
    try:
        return LayerAggregates.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        notes.append(f"{path.relative_to(run_dir)} could not be read ({msg}); its per-layer statistics are not shown")
        return None


def _stale_reason(metrics: MetricsFile | None, n_samples: int, partial: bool, raw_exists: bool) -> str | None:
    if metrics is None:
        return "metrics.json of an older layout or unreadable" if raw_exists else "metrics.json missing"
    if metrics.n_samples != n_samples:
        return f"metrics.json covers {metrics.n_samples} traces, samples.jsonl has {n_samples}"
    if metrics.partial != partial:
        return "metrics.json was written before the run's status changed"
    from layerprobe.data.summarize import DEFINITIONS

    if metrics.definitions != DEFINITIONS:
        return "metrics.json follows older definitions of its numbers"
    return None


def _cut_short(path: Path) -> bool:
    """The file's last line lacks its line break (a crash, or a copy that stopped part-way)."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def load_run(run_dir: str | os.PathLike[str], *, extras: bool = True) -> Run:
    """Read one run directory; UserError when it is not a readable layerprobe run.

    metrics.json is recomputed in memory (never written) when it is missing, unreadable, of an
    older layout, or does not cover the samples present. Damaged samples.jsonl lines are skipped
    and counted (`Run.skipped_lines`).
    """
    from layerprobe.data.store import read_metrics
    from layerprobe.data.summarize import compute_metrics

    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (expected a layerprobe run directory)")
    check_links(path)
    info = read_run_info(path)
    try:
        read = read_samples_counted(path)
    except OSError as exc:
        raise UserError(f"{path / 'samples.jsonl'} cannot be read: {exc.strerror or exc}") from None
    samples = read.records
    notes = samples_notes(read.skipped, read.repeated)
    if info.status == "complete" and _cut_short(path / SAMPLES_FILE):
        notes.append(
            "the last line of samples.jsonl is cut short (the file was damaged after the run completed); its trace is left out"
        )
    expected_partial = info.status != "complete" or (info.expected_traces is not None and len(samples) < info.expected_traces)
    metrics = read_metrics(path)
    reason = _stale_reason(metrics, len(samples), expected_partial, (path / METRICS_FILE).is_file())
    source = METRICS_FILE
    if reason is not None or metrics is None:
        metrics = compute_metrics(path, info, records=samples)
        source = f"samples.jsonl, recomputed ({reason})"
    layers = {v.name: read_layers(path, v.name, notes) for v in info.variants}
    if info.expected_traces and len(samples) < info.expected_traces:
        notes.append(f"{len(samples)} of {info.expected_traces} expected traces are present")
    run = Run(
        dir=path,
        info=info,
        samples=samples,
        metrics=metrics,
        layers=layers,
        metrics_source=source,
        skipped_lines=read.skipped,
        repeated_lines=read.repeated,
        notes=notes,
        label=path.name,
    )
    if extras:
        from layerprobe.data.extras import read_extras

        run.extras = read_extras(path, notes, {v.name: v.dropped for v in info.variants}, run.unshown)
        from layerprobe.data.judge import JUDGE_FILE, current_judge

        judged = current_judge(path, info, samples, notes)
        if judged is not None:
            run.extras[JUDGE_FILE] = judged
    return run
