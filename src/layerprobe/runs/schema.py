"""The run directory contract (DESIGN.md §8): versioned pydantic models for every file.

    RUN/run.json             RunInfo: what was asked, what produced it, status
    RUN/samples.jsonl        one SampleRecord per generated trace, appended as each finishes
    RUN/layers/<variant>/<trace>.npz          per-token per-layer probe arrays (probe.store)
    RUN/layers/<variant>/tf/<trace>.npz       teacher-forced comparison against the base trace
    RUN/layers/<variant>.json                 per-layer aggregates of the variant
    RUN/metrics.json         MetricsFile: per-variant, per-group summaries computed from the samples
    RUN/report.html          the rendered report

A trace is identified by (variant, problem_id, mode, budget, sample); a key is never written twice.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

RunStatus = Literal["running", "interrupted", "complete", "failed"]
Mode = Literal["sequential", "parallel"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class VariantSpec(_Model):
    """A base or pruned variant: which original layers it lacks and how they were chosen."""

    name: str
    dropped: list[int] = Field(default_factory=list)  # original indices
    method: str | None = None  # None for the base and for explicit --drop lists
    n_drop: int | None = None
    calibration: dict[str, Any] | None = None
    n_layers: int | None = None  # decoder layers left
    layer_map: list[int] | None = None  # pruned index -> original index


class RunConfig(_Model):
    """Everything that determines the traces of a run; a resumed run must match it exactly."""

    model: str
    drops: list[list[int]] = Field(default_factory=list)
    method: str | None = None
    n_drop: int | None = None
    calibration: str | None = None
    task: str = "toy-mix"
    task_file: str | None = None
    limit: int | None = None
    budgets: list[int]
    samples: int
    parallel_budget: int
    wait: int = 0
    temperature: float
    top_p: float
    top_k: int
    answer_max: int
    seed: int
    probes: bool = True
    lens: bool = True
    lens_every: int = 1
    teacher_forced: bool = True
    reasoning_format: str | None = None
    dtype: str = "auto"


class ModelInfo(_Model):
    id: str
    source: str | dict[str, Any]
    source_kind: str | None = None
    family: str | None = None
    dtype: str | None = None
    n_layers: int
    reasoning_format: str | None = None
    revision: str | None = None


class TaskRecord(_Model):
    name: str
    source: str | dict[str, Any]
    answer_type: str
    regime: str | None = None
    n_problems: int
    groups: dict[str, int] = Field(default_factory=dict)  # group -> number of problems


class RunInfo(_Model):
    """run.json."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["layerprobe-run"] = "layerprobe-run"
    layerprobe_version: str
    command: list[str]
    created: str
    updated: str
    status: RunStatus = "running"
    config: RunConfig
    model: ModelInfo
    task: TaskRecord
    variants: list[VariantSpec]
    versions: dict[str, str] = Field(default_factory=dict)
    expected_traces: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per phase
    pid: int | None = None  # process writing the run while status is "running"
    host: str | None = None


class SampleRecord(_Model):
    """One line of samples.jsonl."""

    schema_version: int = SCHEMA_VERSION
    variant: str
    problem_id: str
    group: str = ""
    mode: Mode
    budget: int
    sample: int
    seed: int
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    finish: str
    budget_hit: bool | None = None  # the thinking budget ran out (the answer was then forced)
    waits: int = 0
    answer: str | None
    gold: str
    correct: bool
    reflections: dict[str, Any]
    repetition: dict[str, Any]
    self_bleu_within: float | None = None
    thinking_text: str
    text: str
    layers_file: str | None = None  # relative to the run directory
    tf_file: str | None = None  # teacher-forced comparison (pruned variants, over the base trace)

    def key(self) -> tuple[str, str, str, int, int]:
        return trace_key(self.variant, self.problem_id, self.mode, self.budget, self.sample)


def trace_key(variant: str, problem_id: str, mode: str, budget: int, sample: int) -> tuple[str, str, str, int, int]:
    """The identity of a trace in a run (DESIGN.md §8)."""
    return (variant, problem_id, mode, int(budget), int(sample))


def trace_file_stem(problem_id: str, mode: str, budget: int, sample: int) -> str:
    """A file-system-safe, unique name for one trace's arrays inside its variant folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", problem_id)[:60]
    tag = hashlib.sha1(problem_id.encode("utf-8")).hexdigest()[:8]  # ids differing only in replaced characters or case
    return f"{mode[:3]}-b{budget}-s{sample}-{safe}-{tag}"


class MetricsFile(_Model):
    """metrics.json: computed from samples.jsonl (and layers/) by runs.summarize."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["layerprobe-metrics"] = "layerprobe-metrics"
    computed: str
    n_samples: int
    partial: bool
    variants: dict[str, dict[str, Any]]
    comparisons: list[dict[str, Any]] = Field(default_factory=list)


class LayerAggregates(_Model):
    """layers/<variant>.json: per-layer summaries of the probe arrays of one variant.

    Every per-layer list is aligned with `layers` (ORIGINAL indices of the layers this variant
    has). Heat maps are layer x relative-position bins (mean over traces of each trace's binned
    values). `teacher_forced` exists for pruned variants: their model run over the base traces.
    """

    schema_version: int = SCHEMA_VERSION
    variant: str
    layers: list[int]
    dropped: list[int] = Field(default_factory=list)
    n_layers_original: int
    n_traces: int
    n_tokens: int
    lens: str = "full"  # full | topk:K | none
    lens_every: int = 1
    per_layer: dict[str, list[float | None]]  # block_influence, norm, jsd, entropy, top1_agree
    per_layer_by_group: dict[str, dict[str, list[float | None]]] = Field(default_factory=dict)
    heatmaps: dict[str, list[list[float | None]]] = Field(default_factory=dict)  # jsd, entropy: [layer][bin]
    heatmap_bins: int = 20
    settling: dict[str, Any] = Field(default_factory=dict)
    teacher_forced: dict[str, Any] | None = None
