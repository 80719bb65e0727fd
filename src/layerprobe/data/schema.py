"""The run directory contract: one versioned pydantic model per stored file (docs/analyze.md).

    RUN/run.json                              RunInfo: what was asked, what produced it, status
    RUN/samples.jsonl                         one SampleRecord per trace, appended as each finishes
    RUN/layers/<variant>/<trace>.npz          per-token per-layer probe arrays (probe.layer_files)
    RUN/layers/<variant>/tf/<trace>.npz       teacher-forced comparison against the base trace
    RUN/layers/<variant>.json                 LayerAggregates of the variant
    RUN/metrics.json                          MetricsFile: every summary and paired test, from the samples
    RUN/report.html                           the rendered report

A trace is identified by (variant, problem_id, mode, budget, sample); a key is never written twice.

Every file carries `schema_version`. Files written by an older layerprobe are migrated when they are
read (`_migrate_*` below, applied by each model's validator); a newer version is refused. Floats that
are not finite (NaN: "no data") are stored as JSON null and read back as None.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from layerprobe.data.probes import columns
from layerprobe.rules import NAME_RULE, clean_text, is_name, safe_relative

SCHEMA_VERSION = 3

MAX_COUNT = 10**9
"""Largest budget, sample index or token count a stored trace may carry (a billion tokens is far beyond
any context; a larger value in a file is damage, not data)."""
MAX_LAYERS = 10_000
"""Most decoder layers a stored model may have."""

#: A count of tokens (or a sample index, a budget): 0 to MAX_COUNT.
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]

RunStatus = Literal["running", "interrupted", "complete", "failed"]
Mode = Literal["sequential", "parallel"]


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: A float that may be missing: NaN and infinities become None (strict JSON null).
Float = Annotated[float | None, BeforeValidator(_finite_or_none)]


def _valid_unicode(x: Any) -> Any:
    return clean_text(x) if isinstance(x, str) else x


#: Text from a model or a file: lone surrogates, which cannot be written as UTF-8, become U+FFFD.
Text = Annotated[str, BeforeValidator(_valid_unicode)]


def _name(x: Any) -> Any:
    if not is_name(x):
        raise ValueError(f"{x!r} is not a valid variant name ({NAME_RULE})")
    return x


#: A variant name: it becomes a folder and a file name in the run (layerprobe.rules.check_name).
Name = Annotated[str, AfterValidator(_name)]


def _run_path(x: Any) -> Any:
    if x is not None and not safe_relative(x):
        raise ValueError(f"{x!r} is not a path inside the run directory")
    return x


#: A file of the run, relative to its directory; a path that would leave it makes the record invalid.
RunPath = Annotated[str, AfterValidator(_run_path)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        use_attribute_docstrings=True,
        ser_json_inf_nan="null",
        validate_assignment=False,
    )


def _check_version(data: Any, what: str, current: int = SCHEMA_VERSION) -> Any:
    """Refuse a file written by a newer layerprobe (its fields may mean something else) and a
    schema_version that is not a whole number from 1 up (ValueError: the file or line is invalid)."""
    if isinstance(data, dict):
        v = data.get("schema_version", current)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} has schema_version {v!r}; a version is a whole number from 1 to {current}")
        if v > current:
            raise ValueError(f"{what} has schema_version {v}; this layerprobe reads versions up to {current}")
    return data


def _migration(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A migration that meets values of unexpected types fails as invalid data (ValueError), never
    as a TypeError the caller would not count as a damaged file."""

    def run(data: Any) -> Any:
        try:
            return fn(data)
        except (TypeError, AttributeError, KeyError) as exc:
            raise ValueError(f"an older layout that cannot be migrated ({exc})") from None

    return run


# ---------------------------------------------------------------------------------------------
# run.json


class VariantSize(_Model):
    """How much of the unpruned model a variant keeps, counted on its tensors (prune/size.py). The size
    unit is the decoder layers' linear weights; embeddings, unembedding, norms and biases are apart."""

    n_layers: int
    """Decoder layers the variant has."""
    n_layers_base: int | None = None
    """Decoder layers of the unpruned model (one layer's worth = linear_weights_base / n_layers_base)."""
    decoder_params: int
    """Every parameter of its decoder layers (linear weights, biases, norms), as stored."""
    decoder_params_base: int
    """The same for the unpruned model."""
    linear_weights: int
    """Entries of its decoder linear weight matrices, as stored (zeros included)."""
    nonzero_linear_weights: int
    """Of those, the entries that are not exactly zero."""
    linear_weights_base: int
    """Entries of the unpruned model's decoder linear weight matrices."""
    kept_fraction: Float = None
    """nonzero_linear_weights / linear_weights_base: the size axis of the matched-size comparison."""
    removed_fraction: Float = None
    """1 − kept_fraction."""
    layers_removed_equivalent: Float = None
    """Weights removed, in decoder layers' worth (linear_weights_base / L₀ per layer)."""
    flops_per_token: Float = None
    """Analytic forward FLOPs for one new token with dense kernels at `flops_context` cached tokens."""
    flops_per_token_sparse: Float = None
    """The same if every zero weight were skipped (ideal sparse kernels)."""
    flops_per_token_base: Float = None
    """flops_per_token of the unpruned model."""
    flops_context: int = 0
    """Cached tokens assumed for attention's share of the FLOPs."""
    embedding_params: int = 0
    """Input embedding and unembedding (once when tied), not part of the size unit."""
    tokens_per_s: Float = None
    """Measured greedy decoding speed of the variant on the machine that built it (batch 1)."""
    tokens_per_s_base: Float = None
    """The unpruned model's, measured the same way at the same time."""
    speed_setup: dict[str, Any] = Field(default_factory=dict)
    """How the speed was measured (device, threads, dtype, tokens, repeats, load average)."""
    speed_note: str = ""
    """What the speed means (zeros cost as much as any weight with dense kernels)."""


class CompressionSpec(_Model):
    """What a compression removed and how much (the same fields as a checkpoint's layerprobe.json)."""

    kind: Literal["depth", "width", "unstructured", "semi-structured"]
    """depth (whole layers), width (FFN channels), unstructured (single weights) or semi-structured (N:M)."""
    method: str
    """The method (shortgpt, trace-kl, width, wanda, magnitude, nm, manual, ...)."""
    request: dict[str, Any] = Field(default_factory=dict)
    """The size asked: match_layers, sparsity, nm, n_drop or drop."""
    size: VariantSize
    """The size counted on the variant's tensors."""


class VariantSpec(_Model):
    """A variant of the run: the base model, a pruned model, or a checkpoint given by the user."""

    name: Name
    """Unique name inside the run (base, drop-20-21, shortgpt-2, ...)."""
    dropped: list[int] = Field(default_factory=list)
    """Original (0-based) indices of the decoder layers this variant lacks."""
    method: str | None = None
    """Pruning method that chose `dropped` (None for the base and for explicit --drop lists)."""
    n_drop: int | None = None
    """Number of layers the method was asked to remove."""
    calibration: dict[str, Any] | None = None
    """What the method was calibrated on (source, documents, tokens, hash)."""
    n_layers: int | None = None
    """Decoder layers this variant has."""
    layer_map: list[int] | None = None
    """Pruned layer index -> original layer index."""
    selection: dict[str, Any] | None = None
    """The method's scores and choice (e.g. block influence per layer), as the method recorded them."""
    checkpoint: str | None = None
    """Directory of a checkpoint added with --variant NAME=DIR (None for variants built in memory)."""
    provenance: dict[str, Any] | None = None
    """The checkpoint's own layerprobe.json (source model, dropped layers, healing), when it has one."""
    fingerprint: str | None = None
    """Content fingerprint of a --variant checkpoint's config and weights (a run resumed after they were
    replaced is refused)."""
    compression: CompressionSpec | None = None
    """What the variant removed and its size (None: the base, and runs written before sizes were recorded)."""


class RunConfig(_Model):
    """Everything that determines the traces of a run; a resumed run must match it exactly."""

    model: str
    """--model as given (alias, hub id, directory or .gguf)."""
    drops: list[list[int]] = Field(default_factory=list)
    """One list of original layers per --drop."""
    method: str | None = None
    """Comma-separated --method names."""
    n_drop: int | None = None
    """Layers each --method removes."""
    match_layers: list[int] | None = None
    """--match-layers: sizes in decoder layers' worth of parameters; one variant per method and size."""
    sparsity: list[float] | None = None
    """--sparsity: sizes as fractions of the decoder's linear weights; one variant per method and size."""
    nm: str | None = None
    """--nm N:M pattern of --method nm."""
    calibration: str | None = None
    """Calibration source of the methods: a file, or traces:N (the model's own traces)."""
    sweep: str | None = None
    """--sweep kind (single | pairs) when the variants are a layer-sensitivity sweep."""
    sweep_layers: list[int] | None = None
    """Original layers the sweep covers."""
    sweep_proxy: bool = False
    """Only the teacher-forced proxy of the sweep: the pruned variants generate nothing."""
    extra_variants: dict[str, str] = Field(default_factory=dict)
    """--variant NAME=DIR checkpoints."""
    task: str = "toy-mix"
    """Task name (see `layerprobe tasks`)."""
    task_file: str | None = None
    """Local JSONL the problems came from, if any."""
    limit: int | None = None
    """Problems per task group."""
    budgets: list[int]
    """Thinking budgets of the sequential traces, in tokens."""
    samples: int
    """Parallel samples per problem."""
    parallel_budget: int
    """Thinking budget of the parallel samples."""
    wait: int = 0
    """How many early ends of thinking are replaced by "Wait"."""
    temperature: float | None
    """Sampling temperature (0 = greedy; None: unknown, e.g. ingested traces)."""
    top_p: float | None
    """Nucleus sampling threshold (None: unknown)."""
    top_k: int | None
    """Top-k sampling (0 = off; None: unknown)."""
    answer_max: int | None
    """Token cap of the answer after thinking (None: unknown)."""
    seed: int | None
    """Run seed; every sample's seed derives from it (None: unknown)."""
    probes: bool = True
    """Per-layer probes captured."""
    lens: bool = True
    """Logit lens computed by the probes."""
    lens_every: int = 1
    """Logit lens on every k-th token only."""
    probe_mode: Literal["live", "prefill"] | None = None
    """How the probes were computed: captured during generation (live) or by one forward pass over each
    finished trace (prefill). Both give the same values up to rounding, so a run may resume in the
    other mode (not compared on resume). None: written before the option existed (live)."""
    teacher_forced: bool = True
    """Pruned variants run over the base traces."""
    reasoning_format: str | None = None
    """Reasoning format (think-tags, s1, ...)."""
    dtype: str = "auto"
    """--dtype as given."""


class ModelInfo(_Model):
    """The model as it was loaded."""

    id: str
    """--model as given."""
    source: str | dict[str, Any]
    """Where the weights came from (path, hub id and revision, GGUF file, embedded toy)."""
    source_kind: str | None = None
    """toy, hub, local, gguf or config."""
    family: str | None = None
    """Architecture family (qwen2, qwen3, llama, mistral, ...)."""
    dtype: str | None = None
    """Parameter dtype."""
    n_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS)] | None
    """Decoder layers of the unpruned model (None: unknown, a text-only ingest without the model's config)."""
    reasoning_format: str | None = None
    """Reasoning format the model was run with (ingest: the formats its files were read in)."""
    revision: str | None = None
    """Hub revision or content hash of the weights."""
    tokenizer: str | None = None
    """The tokenizer that counted tokens when it is not the model's own (ingest --tokenizer)."""


class TaskRecord(_Model):
    """The task and where its problems came from."""

    name: str
    """Task name."""
    source: str | dict[str, Any]
    """Generator, hub data set (id, config, split, fingerprint) or file (path, sha1)."""
    answer_type: str
    """digit, integer, math or mc: how answers are extracted and graded."""
    regime: str | None = None
    """long, short, knowledge or mixed: what the task stands for."""
    n_problems: int
    """Problems in the run."""
    groups: dict[str, int] = Field(default_factory=dict)
    """Problems per group (e.g. toy task type)."""


class IngestSource(_Model):
    """One file read into a run by `layerprobe ingest`."""

    path: str
    """The file."""
    sha1: str
    """Its content hash."""
    format: str
    """lm-eval (samples_<task>_<date>.jsonl of lm-evaluation-harness --log_samples) or jsonl."""
    variant: str
    """The variant its traces became."""
    traces: int = 0
    """Traces of this variant in the run, read from these files (by this and earlier sessions)."""
    new: int = 0
    """Of those, traces the last session added (a resumed or repeated ingest adds only the missing ones)."""
    skipped: dict[str, int] = Field(default_factory=dict)
    """Lines or traces left out, by reason."""
    producer: str | None = None
    """The model that produced the traces, when the file says (lm-eval's model_args)."""
    warnings: list[str] = Field(default_factory=list)
    """What looked wrong while reading (e.g. the file's special tokens differ from the --model tokenizer's)."""
    shapes: list[str] = Field(default_factory=list)
    """Per file, the format its traces were found in ("s1 (...), opener in the response")."""
    counts: dict[str, int] = Field(default_factory=dict)
    """What the traces showed: budget-forced, truncated, re-opened their thinking, reasoning in a separate
    field, merged filter lines (lm-eval), probes skipped (longer than the model's context)."""
    tokenizer: str | None = None
    """The tokenizer that counted tokens when it is not the model's own (--tokenizer)."""


class RunInfo(_Model):
    """run.json: what was asked, what produced it, and where the run stands."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["layerprobe-run"] = "layerprobe-run"
    """Marks a layerprobe run directory."""
    layerprobe_version: str
    """layerprobe version that wrote the run."""
    command: list[str]
    """Command line that started (or last resumed) the run."""
    created: str
    """Creation time, ISO 8601 UTC."""
    updated: str
    """Last status change, ISO 8601 UTC."""
    status: RunStatus = "running"
    """running, interrupted (stopped by the user), failed (an error; resumable) or complete."""
    origin: Literal["analyze", "ingest"] = "analyze"
    """How the traces got here: generated by `analyze`, or read from files by `ingest`."""
    config: RunConfig
    """Settings that determine the traces."""
    model: ModelInfo
    """The model."""
    task: TaskRecord
    """The task."""
    variants: list[VariantSpec] = Field(min_length=1)
    """Base first, then the pruned and other variants."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of layerprobe, Python, torch and transformers."""
    expected_traces: int | None = None
    """Traces the run will hold when complete."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase, summed over resumed sessions."""
    pid: Annotated[int, Field(ge=1, lt=2**31)] | None = None
    """Process writing the run while status is running."""
    host: str | None = None
    """Host of that process."""
    resume_command: list[str] | None = None
    """The command that continues this run (printed when a run stops early)."""
    ingested: list[IngestSource] = Field(default_factory=list)
    """Ingested runs: every file read into the run, by which command and as which variant."""

    @model_validator(mode="after")
    def _layers_exist(self) -> RunInfo:
        n = self.model.n_layers
        for v in self.variants:
            if n is not None and any(not 0 <= d < n for d in v.dropped):
                raise ValueError(f"variant {v.name} drops layers outside the model's 0..{n - 1}: {v.dropped}")
            if len(set(v.dropped)) != len(v.dropped):
                raise ValueError(f"variant {v.name} drops a layer twice: {v.dropped}")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError("two variants have the same name")
        return self

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = _check_version(data, "run.json")
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
            data = dict(data)  # versions 1 and 2 lack only fields that have defaults
            data["schema_version"] = SCHEMA_VERSION
        return data


# ---------------------------------------------------------------------------------------------
# samples.jsonl


class Reflections(_Model):
    """Reflection words in one thinking trace (lexicon matched case-insensitively on word boundaries)."""

    counts: dict[str, int] = Field(default_factory=dict)
    """Occurrences of each lexicon entry."""
    total: int = 0
    """All entries together."""
    per_1k: Float = None
    """Occurrences per 1,000 thinking tokens (None for an empty trace)."""
    rates: dict[str, Float] = Field(default_factory=dict)
    """Per-entry occurrences per 1,000 thinking tokens."""
    profile: dict[str, int] = Field(default_factory=dict)
    """Occurrences in the early, middle and late thirds of the text."""
    thinking_tokens: int = 0
    """Thinking tokens the rates are per."""


class Repetition(_Model):
    """Repetition inside one thinking trace, over its tokens."""

    seq_rep_4: Float = None
    """1 − unique 4-grams / all 4-grams."""
    longest_repeat: int = 0
    """Length of the longest substring that occurs twice (tokens)."""
    longest_repeat_positions: list[int] | None = None
    """Start positions of its first two occurrences."""
    loop: bool = False
    """The trace ends in a segment repeated back-to-back (at least three copies)."""
    loop_onset: int | None = None
    """Token where the loop starts."""
    loop_onset_char: int | None = None
    """Character of the thinking text where the loop starts (for highlighting)."""
    loop_period: int | None = None
    """Length of the repeated segment (tokens)."""
    loop_repeats: int | None = None
    """Complete copies of the segment."""
    loop_partial: int | None = None
    """Tokens of an incomplete last copy."""
    length: int = 0
    """Tokens examined."""


#: How a sample's extracted answer was found (tasks.grading; docs/grading.md).
Extraction = str


class SampleRecord(_Model):
    """One line of samples.jsonl: one trace."""

    schema_version: int = SCHEMA_VERSION
    """Version of this line's layout."""
    variant: Name
    """Variant that produced the trace."""
    problem_id: Text
    """Stable problem id."""
    group: Text = ""
    """Problem group (toy task type, subject, ...)."""
    mode: Mode
    """sequential (one trace per budget) or parallel (several samples at one budget)."""
    budget: Count
    """Thinking budget in tokens (0 when not recorded: see budget_recorded)."""
    budget_recorded: bool = True
    """False: the ingested file recorded no thinking budget for this trace (stored as 0)."""
    sample: Count
    """Sample index (0 for sequential traces)."""
    seed: int
    """Seed of this trace's random stream."""
    prompt_tokens: Count
    """Prompt length in tokens."""
    thinking_tokens: Count
    """Thinking tokens generated (forced text excluded)."""
    answer_tokens: Count
    """Answer tokens generated."""
    finish: Literal["answered", "budget", "max_tokens", "truncated"]
    """answered, budget (the thinking budget ran out and the answer was forced), max_tokens (the answer hit
    its cap) or truncated (cut before the thinking ended: no answer, never graded)."""
    budget_hit: bool | None = None
    """The thinking budget ran out and the answer was forced."""
    waits: int = 0
    """"Wait" insertions made."""
    answer: Text | None
    """Extracted answer (None: the grader found none)."""
    extraction: str | None = None
    """The extraction rule that found the answer (boxed, phrase, gsm8k, last-number, ...)."""
    gold: Text
    """Gold answer."""
    correct: bool | None
    """The extracted answer equals the gold answer; None: not graded (no usable gold answer)."""
    reflections: Reflections
    """Reflection words in the thinking text."""
    repetition: Repetition
    """Repetition in the thinking tokens."""
    self_bleu_within: Float = None
    """Self-BLEU of each sentence of the thinking against the rest of it (0–100; sacrebleu, layerprobe's
    sentence rule)."""
    self_bleu_within_study: Float = None
    """The study's within-response Self-BLEU ×100: nltk sentence_bleu (smoothing method 4) of each sentence
    of the whole response against the others, averaged (metrics.selfbleu.self_bleu_within_study)."""
    thinking_text: Text
    """Thinking text."""
    text: Text
    """Everything after the prompt, forced text included."""
    layers_file: RunPath | None = None
    """Probe arrays of the trace, relative to the run directory."""
    tf_file: RunPath | None = None
    """Teacher-forced comparison of this (pruned) variant along the base trace of the same key."""
    origin: Literal["generated", "copy", "prefix", "ingested"] = "generated"
    """generated; copy (identical to another trace by construction, e.g. greedy samples); prefix (the
    longest-budget trace cut at this budget, then answered); ingested (read from a file)."""
    origin_key: list[Any] | None = None
    """Key of the trace this one was copied or cut from."""
    external: dict[str, Any] | None = None
    """Ingested traces: where the line came from and the producer's own metric values."""

    def key(self) -> tuple[str, str, str, int, int]:
        return trace_key(self.variant, self.problem_id, self.mode, self.budget, self.sample)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = _check_version(data, "a samples.jsonl line")
        return _migrate_sample(data)


@_migration
def _migrate_sample(data: Any) -> Any:
    """Version 2 lacks fields that have defaults; version 1 also kept extra keys in its repetition and
    reflection summaries."""
    if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) == 2:
        data = dict(data, schema_version=SCHEMA_VERSION)
    if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) == 1:
        data = dict(data)
        data["schema_version"] = SCHEMA_VERSION
        rep = dict(data.get("repetition") or {})
        data["repetition"] = {k: v for k, v in rep.items() if k in Repetition.model_fields}
        refl = dict(data.get("reflections") or {})
        data["reflections"] = {k: v for k, v in refl.items() if k in Reflections.model_fields}
    return data


def trace_key(variant: str, problem_id: str, mode: str, budget: int, sample: int) -> tuple[str, str, str, int, int]:
    """The identity of a trace in a run."""
    return (variant, problem_id, mode, int(budget), int(sample))


def trace_file_stem(problem_id: str, mode: str, budget: int, sample: int) -> str:
    """A file-system-safe, unique name for one trace's arrays inside its variant folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", problem_id)[:60]
    tag = hashlib.sha1(problem_id.encode("utf-8", "surrogatepass")).hexdigest()[
        :8
    ]  # ids differing only in replaced characters or case
    return f"{mode[:3]}-b{budget}-s{sample}-{safe}-{tag}"


def trace_layers_file(variant: str, problem_id: str, mode: str, budget: int, sample: int) -> str:
    """Where the probe arrays of the trace of `variant` with this key live, relative to the run directory
    (`SampleRecord.layers_file`): layers/<variant>/<trace_file_stem>.npz."""
    return f"layers/{variant}/{trace_file_stem(problem_id, mode, budget, sample)}.npz"


def teacher_forced_file(variant: str, problem_id: str, mode: str, budget: int, sample: int) -> str:
    """Where the teacher-forced comparison of `variant` along the base trace with this key lives,
    relative to the run directory."""
    return f"layers/{variant}/tf/{trace_file_stem(problem_id, mode, budget, sample)}.npz"


# ---------------------------------------------------------------------------------------------
# metrics.json


class Interval(_Model):
    """An estimate with its 95 % interval."""

    value: Float = None
    """Point estimate."""
    ci: tuple[Float, Float] = (None, None)
    """95 % interval (bootstrap over problems unless stated otherwise)."""


class Accuracy(_Model):
    """Accuracy of one variant, group and budget."""

    n: int
    """Traces."""
    correct: int
    """Correct traces."""
    accuracy: Float = None
    """correct / n."""
    ci: tuple[Float, Float] = (None, None)
    """95 % Wilson interval."""
    mean_thinking_tokens: Float = None
    """Mean thinking length."""
    budget_exhausted_rate: Float = None
    """Share of traces whose thinking budget ran out."""
    answer_missing_rate: Float = None
    """Share of traces with no extracted answer."""


class ParallelCurves(_Model):
    """Parallel scaling of one variant and group: pass@k, maj@k and cov@k against k."""

    n_problems: int = 0
    """Problems with parallel samples."""
    samples: int = 0
    """Samples per problem used (the smallest count over problems)."""
    k: list[int] = Field(default_factory=list)
    """k values: powers of two up to `samples`."""
    pass_at_k: dict[str, Interval] = Field(default_factory=dict)
    """Unbiased pass@k, averaged over problems (key: k)."""
    maj_at_k: dict[str, Interval] = Field(default_factory=dict)
    """Accuracy of the majority answer of the first k samples (ties: earliest)."""
    cov_at_k: dict[str, Interval] = Field(default_factory=dict)
    """Any of the first k samples correct."""
    self_bleu_across: Float = None
    """Self-BLEU across the samples of a problem (0–100), averaged over problems; None when all
    samples are copies of one trace (greedy decoding) or a problem has a single sample."""
    identical_samples: bool = False
    """The samples of every problem are one trace by construction (greedy decoding)."""


class Behaviour(_Model):
    """Trace behaviour of one variant and group."""

    n: int = 0
    """Traces."""
    n_problems: int = 0
    """Problems."""
    thinking_tokens_total: int = 0
    """Thinking tokens over all traces."""
    mean_thinking_tokens: Float = None
    """Mean thinking length."""
    median_thinking_tokens: Float = None
    """Median thinking length."""
    loop_rate: Float = None
    """Share of traces that end in a loop."""
    loop_ci: tuple[Float, Float] = (None, None)
    """95 % interval of the loop rate (bootstrap over problems)."""
    mean_loop_onset_fraction: Float = None
    """Mean loop onset as a fraction of the trace (looping traces only)."""
    seq_rep: Float = None
    """Mean seq-rep-4."""
    self_bleu_within: Float = None
    """Mean within-trace Self-BLEU (traces with at least two sentences)."""
    self_bleu_within_study: Float = None
    """The study's within-response Self-BLEU (×100), averaged the study's way: over the first sample
    (sample 0) of each problem's traces."""
    truncated_rate: Float = None
    """Share of traces cut before their thinking ended (no answer; counted wrong)."""
    reflections_per_1k: Float = None
    """Reflection words per 1,000 thinking tokens, pooled over traces."""
    reflections_by_word_per_1k: dict[str, Float] = Field(default_factory=dict)
    """The same, per lexicon entry."""
    waits_inserted: int = 0
    """"Wait" insertions made by the engine."""
    budget_exhausted_rate: Float = None
    """Share of traces whose thinking budget ran out."""
    answer_missing_rate: Float = None
    """Share of traces with no extracted answer."""
    extraction: dict[str, int] = Field(default_factory=dict)
    """Traces per extraction rule that found the answer ("none": no answer)."""


class GroupMetrics(_Model):
    """Every summary of one variant on one problem group ("all" = every problem)."""

    sequential: dict[str, Accuracy] = Field(default_factory=dict)
    """Accuracy per thinking budget (key: budget)."""
    parallel: ParallelCurves = Field(default_factory=ParallelCurves)
    """Parallel scaling."""
    behaviour: Behaviour = Field(default_factory=Behaviour)
    """Trace behaviour over all the group's traces."""


class VariantMetrics(_Model):
    """Summaries of one variant."""

    dropped: list[int] = Field(default_factory=list)
    """Original layers the variant lacks."""
    method: str | None = None
    """Method that chose them."""
    n_traces: int = 0
    """Traces of the variant."""
    groups: dict[str, GroupMetrics] = Field(default_factory=dict)
    """Per group, and "all"."""


class Comparison(_Model):
    """A paired base-vs-variant comparison, problem by problem (metrics.paired_comparison)."""

    variant: str
    """The variant compared with the base."""
    base: str
    """The base variant."""
    group: str
    """Problem group ("all" = every problem)."""
    mode: str
    """sequential or parallel (accuracy comparisons); "trace" for trace behaviour."""
    budget: int | None = None
    """Thinking budget (accuracy comparisons)."""
    metric: str
    """What is compared per problem (accuracy, mean accuracy over samples, loop, seq_rep, ...)."""
    n_pairs: int
    """Problems with values on both sides."""
    mean_a: Float = None
    """Mean over problems, base."""
    mean_b: Float = None
    """Mean over problems, variant."""
    diff: Float = None
    """mean_b − mean_a."""
    ci_low: Float = None
    """Lower end of the 95 % interval of diff."""
    ci_high: Float = None
    """Upper end of the 95 % interval of diff."""
    ci_method: str = ""
    """How the interval was computed."""
    test: str = ""
    """The paired test."""
    p_value: Float = None
    """Its two-sided p-value."""
    n_discordant: int | None = None
    """Binary outcomes: problems where exactly one side is right."""
    n_a_only: int | None = None
    """Binary outcomes: right for the base only."""
    n_b_only: int | None = None
    """Binary outcomes: right for the variant only."""
    verdict: str
    """lower / higher (the difference rule, metrics.decide: at least 6 problems paired, the interval
    excludes zero and the test rejects at 5 %) or no clear difference."""
    agree: bool = True
    """The interval and the test agree on whether there is a difference."""
    reason: str | None = None
    """Why the verdict is what it is (metrics.decide): both, neither, interval only, test only, too few
    (None in files written before it was recorded)."""


class OutcomeContrast(_Model):
    """How one variant's wrong traces differ from its right ones in one measured quantity (unpaired:
    different traces; the interval resamples problems, so a problem's traces never count as independent)."""

    variant: str
    """The variant."""
    metric: str
    """The per-trace quantity (a key of the behaviour comparisons: thinking_tokens, loop, truncated, ...)."""
    n_wrong: int
    """Wrong traces with a value."""
    n_right: int
    """Right traces with a value."""
    mean_wrong: Float = None
    """Mean over the wrong traces."""
    mean_right: Float = None
    """Mean over the right traces."""
    diff: Float = None
    """mean_wrong − mean_right."""
    ci_low: Float = None
    """Lower end of its 95 % interval (bootstrap over problems)."""
    ci_high: Float = None
    """Upper end."""
    verdict: str = ""
    """higher / lower (wrong traces against right ones; the difference rule, metrics.decide: at least 6
    problems on each side and the interval excludes 0) or no clear difference."""
    problems_wrong: int | None = None
    """Problems with at least one wrong trace (the units the interval resamples)."""
    problems_right: int | None = None
    """Problems with at least one right trace."""
    reason: str | None = None
    """Why the verdict is what it is (metrics.decide; "too few" below 6 problems on a side)."""


class GradingHealth(_Model):
    """Whether the grader could read the variant's answers."""

    n: int
    """Graded traces."""
    missing: int
    """Traces that gave an answer part but no answer the grader could extract (truncated traces aside)."""
    missing_rate: Float = None
    """missing / n."""
    truncated: int = 0
    """Traces cut before their thinking ended: they have no answer because they never gave one, which
    says nothing about the grader (not in `missing`)."""
    ungraded: int = 0
    """Traces without a usable gold answer: not graded, left out of every accuracy (not in `n`)."""
    meaningful: bool
    """False when more than 20 % of the traces have no extracted answer: accuracy then measures
    the grader, not the model. A pruned variant's missing answers do not count against it when the
    base model's answers in the same run are found (the grader reads this model's format)."""
    message: str = ""
    """What to say first when accuracy is not meaningful; for a variant that stops answering while
    the base's answers are found, a note saying so."""


class MetricsFile(_Model):
    """metrics.json: every summary the CLI and the report show, computed from samples.jsonl and layers/."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["layerprobe-metrics"] = "layerprobe-metrics"
    """Marks a layerprobe metrics file."""
    computed: str
    """When it was computed, ISO 8601 UTC."""
    n_samples: int
    """Traces it covers."""
    partial: bool
    """The run was not complete (numbers will change)."""
    variants: dict[str, VariantMetrics] = Field(default_factory=dict)
    """Per variant."""
    comparisons: list[Comparison] = Field(default_factory=list)
    """Paired accuracy comparisons of every variant with the base (group x mode x budget)."""
    behaviour_comparisons: list[Comparison] = Field(default_factory=list)
    """Paired comparisons of trace behaviour (loops, repetition, reflection, length), per problem the
    mean over the traces both variants have."""
    grading: dict[str, GradingHealth] = Field(default_factory=dict)
    """Per variant: whether the grader found answers."""
    outcome_contrasts: list[OutcomeContrast] = Field(default_factory=list)
    """Per variant: its wrong traces against its right ones (length, loops, truncation, reflection, Self-BLEU)."""
    definitions: int = 1
    """Version of the definitions the numbers follow (data.summarize.DEFINITIONS); a file of older
    definitions is recomputed by the reader."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = _check_version(data, "metrics.json")
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
            # metrics are derived data: an old file is recomputed from the samples by the reader
            raise ValueError("metrics.json has an older layout (it is recomputed from samples.jsonl)")
        return data


# ---------------------------------------------------------------------------------------------
# layers/<variant>.json


class PerLayer(_Model):
    """Token-weighted means over generated tokens, one value per layer of `LayerAggregates.layers`.

    One field per column of the built-in probes (data.probes.BUILTIN: the layout every file has);
    the mean of a column of any other registered probe is an extra field under its
    `Column.aggregate` name (a list of numbers, kept on reading whether or not that probe is
    registered)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[Float]] = Field(init=False)

    block_influence: list[Float] = Field(default_factory=list)
    """1 − cos(layer input, layer output)."""
    norm: list[Float] = Field(default_factory=list)
    """‖layer output‖₂."""
    jsd: list[Float] = Field(default_factory=list)
    """Logit-lens JSD to the model's own output distribution (nats)."""
    entropy: list[Float] = Field(default_factory=list)
    """Logit-lens entropy (nats)."""
    top1_agree: list[Float] = Field(default_factory=list)
    """Share of tokens whose lens top-1 equals the output's."""
    rank_mean: list[Float] = Field(default_factory=list)
    """Mean lens rank of the emitted token (0 = top)."""

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> PerLayer:
        """The per-layer means of a probe.aggregate.layer_summary: every registered column's."""
        return cls(**{c.aggregate: summary[c.aggregate] for c in columns() if c.aggregate in summary})

    def values(self, name: str) -> list[float | None]:
        """The per-layer means called `name` (a field or a registered probe's extra); [] when absent."""
        if name in type(self).model_fields:
            vals: list[float | None] = getattr(self, name)
            return vals
        return list((self.__pydantic_extra__ or {}).get(name, []))


class Settling(_Model):
    """Settling depth: the first layer whose lens JSD to the output has fallen to g (pooled over tokens)."""

    g: float
    """JSD threshold (nats)."""
    rho: float
    """A token is deep-thinking when it settles at or after layer ⌈ρ·L⌉ (1-based)."""
    n_lens_tokens: int = 0
    """Tokens with a lens reading."""
    mean_depth: Float = None
    """Mean settling depth, 0-based position in this variant's own layers."""
    mean_depth_fraction: Float = None
    """Mean (depth + 1) / this variant's number of layers."""
    mean_depth_original: Float = None
    """Mean settling layer as an original index."""
    deep_thinking_ratio: Float = None
    """Share of deep-thinking tokens."""
    per_trace_deep_thinking_ratio: list[Float] = Field(default_factory=list)
    """Deep-thinking ratio of each aggregated trace."""


class TracePoint(_Model):
    """Teacher-forced summary of one base trace."""

    file: RunPath
    """The teacher-forced .npz, relative to the run directory."""
    problem_id: str
    """Problem of the base trace."""
    mean_kl: Float = None
    """Mean KL(base ‖ variant) along the trace (nats)."""
    onset: int | None = None
    """Divergence onset (first position of a window of KL above the threshold)."""
    first_departure: int | None = None
    """First position where the variant's argmax differs from the base trace's token and the two
    texts never agree again."""
    n_tokens: int = 0
    """Trace length."""


class TeacherForcedSummary(_Model):
    """A pruned variant run over the base model's own traces (no generation)."""

    n_traces: int
    """Base traces compared."""
    over: str
    """Which base traces."""
    threshold: Float = None
    """KL threshold of the divergence onset (nats)."""
    window: int | None = None
    """Positions the KL must stay above the threshold (at most; a trace shorter than four windows
    uses a quarter of its length, at least 2)."""
    mean_kl: Float = None
    """Mean over traces of each trace's mean KL (nats)."""
    kl_by_relpos: list[Float] = Field(default_factory=list)
    """Mean KL per relative-position bin of the trace."""
    peak_position: Float = None
    """Centre of the bin where kl_by_relpos peaks (fraction of the trace)."""
    n_onset: int = 0
    """Traces with a divergence onset."""
    onset_mean: Float = None
    """Mean onset position (tokens)."""
    onset_fraction_mean: Float = None
    """Mean onset position as a fraction of the trace."""
    drift_per_layer: dict[int, Float] = Field(default_factory=dict)
    """Mean lens JSD between base and variant at each matched original layer (nats)."""
    jsd_to_base_per_layer: dict[int, Float] = Field(default_factory=dict)
    """Mean JSD of the variant's lens at each original layer from the BASE model's output
    distribution along the same tokens (nats)."""
    traces: list[TracePoint] = Field(default_factory=list)
    """Per base trace."""
    damaged_files: int = 0
    """Teacher-forced files that could not be read (damaged) and were left out."""


class LayerAggregates(_Model):
    """layers/<variant>.json: per-layer summaries of the probe arrays of one variant.

    Every per-layer list is aligned with `layers` (original indices of the layers this variant has).
    Heat maps are layer x relative-position bins (the mean over traces of each trace's binned values).
    """

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    variant: str
    """The variant."""
    layers: list[int]
    """Original indices of its layers."""
    dropped: list[int] = Field(default_factory=list)
    """Original layers it lacks."""
    n_layers_original: int
    """Layers of the unpruned model."""
    n_traces: int
    """Traces aggregated."""
    n_tokens: int
    """Tokens aggregated."""
    traces_available: int | None = None
    """Traces with probe files (more than n_traces when a sample was aggregated)."""
    traces_sampled: bool = False
    """n_traces is a seeded random sample of the available traces (size caps)."""
    lens: str = "full"
    """full, topk:K or none."""
    lens_every: int = 1
    """Lens on every k-th token."""
    per_layer: PerLayer
    """All traces."""
    per_layer_by_group: dict[str, PerLayer] = Field(default_factory=dict)
    """Per problem group."""
    heatmaps: dict[str, list[list[Float]]] = Field(default_factory=dict)
    """Per column with a heat map (data.probes; built in: jsd, entropy): [layer][bin]."""
    heatmap_bins: int = 20
    """Relative-position bins."""
    settling: Settling | None = None
    """Settling depth and deep-thinking ratio (None without the lens)."""
    teacher_forced: TeacherForcedSummary | None = None
    """Pruned variants: the comparison along the base traces."""
    damaged_files: int = 0
    """Probe files that could not be read (damaged) and were left out of these aggregates."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = _check_version(data, "a layer aggregate")
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) == 1:
            data = _migration(_migrate_layers_v1)(dict(data))
        if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) == 2:
            data = dict(data, schema_version=SCHEMA_VERSION)  # version 3 changed no field of this file
        return data


def _migrate_layers_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (layerprobe 0.1 before the typed schema): settling keys named settling_depth_*,
    teacher-forced files and per-trace KL in two parallel lists."""
    data["schema_version"] = SCHEMA_VERSION
    st = data.get("settling")
    if isinstance(st, dict) and st:
        rename = {
            "settling_depth_mean": "mean_depth",
            "settling_depth_fraction_mean": "mean_depth_fraction",
            "settling_depth_original_mean": "mean_depth_original",
        }
        data["settling"] = {rename.get(k, k): v for k, v in st.items() if rename.get(k, k) in Settling.model_fields}
    else:
        data["settling"] = None
    tf = data.get("teacher_forced")
    if isinstance(tf, dict):
        files, kls = tf.pop("files", []) or [], tf.pop("per_trace_mean_kl", []) or []
        tf["traces"] = [{"file": f, "problem_id": "", "mean_kl": k} for f, k in zip(files, kls)]
        rel = tf.get("kl_by_relpos") or []
        vals = [(j, x) for j, x in enumerate(rel) if isinstance(x, (int, float)) and math.isfinite(x)]
        if len(vals) > 1:
            tf["peak_position"] = (max(vals, key=lambda t: t[1])[0] + 0.5) / len(rel)
        data["teacher_forced"] = {k: v for k, v in tf.items() if k in TeacherForcedSummary.model_fields}
    return data


# ---------------------------------------------------------------------------------------------
# sweep.json


class SweepLayer(_Model):
    """One variant of a layer-sensitivity sweep."""

    dropped: list[int]
    """Original layers the variant lacks (one, or an adjacent pair)."""
    variant: str
    """Its variant name in the run (drop-<i> or drop-<i>-<i+1>)."""
    block_influence: Float = None
    """Block influence of the dropped layer(s) on the calibration text ShortGPT would use (the mean
    over the dropped layers for a pair)."""
    block_influence_traces: Float = None
    """The same, measured by the probes on the base model's own generated traces in this run."""
    accuracy: dict[str, Float] = Field(default_factory=dict)
    """Accuracy per problem group at the largest budget (None: not generated, e.g. --sweep-proxy)."""
    accuracy_ci: dict[str, tuple[Float, Float]] = Field(default_factory=dict)
    """95 % Wilson interval of each accuracy."""
    delta: dict[str, Float] = Field(default_factory=dict)
    """Accuracy minus the base model's, paired by problem, at the largest budget."""
    delta_ci: dict[str, tuple[Float, Float]] = Field(default_factory=dict)
    """95 % interval of each delta (the paired comparison's)."""
    verdict: dict[str, str] = Field(default_factory=dict)
    """The paired comparison's verdict per group (lower / higher / no clear difference)."""
    teacher_forced_kl: Float = None
    """Mean KL(base ‖ variant) along the base model's traces (no generation): the cheap proxy."""


class Correlation(_Model):
    """Spearman rank correlation across the sweep's variants, with a bootstrap interval over variants."""

    group: str
    """Problem group whose damage is correlated."""
    predictor: str
    """block_influence, block_influence_traces or teacher_forced_kl."""
    spearman: Float = None
    """Spearman correlation between the predictor and the damage (base minus variant accuracy):
    positive = variants with a larger predictor lose more."""
    ci: tuple[Float, Float] = (None, None)
    """95 % percentile bootstrap interval (variants resampled)."""
    n: int = 0
    """Variants with both values."""
    p_value: Float = None
    """Two-sided permutation p-value against no association (exact up to 8 variants)."""
    established: bool = False
    """The interval excludes 0 and the permutation test rejects at 5 % (a bootstrap interval of a
    rank correlation over a handful of variants is too optimistic to be trusted alone)."""


class SweepFile(_Model):
    """sweep.json: which layers long-chain reasoning, short chains and knowledge cannot lose."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["single", "pairs"]
    """Every single layer removed, or every adjacent pair."""
    budget: int | None = None
    """The thinking budget the accuracies are taken at (the largest)."""
    proxy_only: bool = False
    """Only the teacher-forced proxy was computed (no generation by the pruned variants)."""
    calibration: dict[str, Any] | None = None
    """The text the block influence was measured on."""
    layers: list[SweepLayer] = Field(default_factory=list)
    """One entry per variant, in layer order."""
    bi_vs_damage: list[Correlation] = Field(default_factory=list)
    """Does block influence predict the damage? (per group)"""
    proxy_vs_damage: list[Correlation] = Field(default_factory=list)
    """Does the teacher-forced KL predict the damage? (per group)"""
    method_choices: dict[str, list[int]] = Field(default_factory=dict)
    """The layers pruning methods would remove (ShortGPT: lowest BI; reverse: the last), as many as
    the sweep drops per variant."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "sweep.json")


# ---------------------------------------------------------------------------------------------
# explain.json


class Restoration(_Model):
    """Causal restoration: the full model with the removed layers' residual update switched on only at
    one class of positions (h <- h + g_t * delta_t, g_t in {0, 1})."""

    variant: str
    """The pruned variant whose removed layers are restored."""
    positions: str
    """The position class where g_t = 1 (all, none, thinking, answer, first-25%, ..., digits, ...)."""
    share_of_tokens: Float = None
    """Share of the base traces' positions in the class."""
    kl_recovery: Float = None
    """1 - KL(base || gated) / KL(base || pruned), over every position of the base traces (teacher-forced)."""
    kl_ci: tuple[Float, Float] = (None, None)
    """95 % bootstrap interval of kl_recovery (base traces resampled)."""
    accuracy_recovery: Float = None
    """In free greedy generation on long chains (token classes only: position classes need the trace's
    length in advance): of the problems the pruning lost, the share the gated model answers right
    (n_regained / n_lost; older explain.json files, without n_lost: (gated - pruned) / (base - pruned));
    None when not measured or nothing was lost."""
    ci: tuple[Float, Float] = (None, None)
    """95 % interval of accuracy_recovery (Wilson score over the n_lost problems)."""
    accuracy: Float = None
    """Greedy accuracy of the gated model on those problems."""
    n_lost: int | None = None
    """Long-chain problems the pruning lost: right with every layer, wrong without the removed ones."""
    n_regained: int | None = None
    """Of those, the problems the gated model answers right."""
    n_broken: int | None = None
    """Problems the pruned model answered right that the gated model gets wrong."""
    n_traces: int | None = None
    """Base traces the KL recovery was measured along (teacher-forced); a finding needs at least 6 (None in
    explain.json files written before it was recorded)."""


class PredictorFeature(_Model):
    """One feature of the failure predictor."""

    name: str
    """Feature name."""
    importance: Float = None
    """Permutation importance: mean drop in held-out AUC when the feature is shuffled."""


class Predictors(_Model):
    """Which measured signals announce a trace that ends wrong (cross-validated, grouped by problem)."""

    n_traces: int = 0
    """Traces used."""
    n_incorrect: int = 0
    """Of which wrong."""
    model: str = ""
    """The better of logistic regression and gradient boosting (by cross-validated AUC)."""
    auc: Float = None
    """Cross-validated AUC of predicting a wrong answer from all features."""
    auc_ci: tuple[Float, Float] = (None, None)
    """95 % bootstrap interval (problems resampled)."""
    baseline_auc: Float = None
    """The same with thinking length alone."""
    baseline_ci: tuple[Float, Float] = (None, None)
    """Its interval."""
    gain: Float = None
    """auc - baseline_auc."""
    gain_ci: tuple[Float, Float] = (None, None)
    """Paired bootstrap interval of the gain."""
    established: bool = False
    """The gain's interval excludes 0: the features say more than the length alone."""
    features: list[PredictorFeature] = Field(default_factory=list)
    """Permutation importances, largest first."""
    roc: dict[str, list[Float]] = Field(default_factory=dict)
    """fpr / tpr of the model and of the baseline (for the figure)."""


class Compounding(_Model):
    """Does per-step error compounding explain the collapse of long chains? (tasks with checkable steps)"""

    variant: str
    """Variant."""
    step_error_rate: Float = None
    """Wrong steps / steps, read from the traces (each written step checked)."""
    epsilon: Float = None
    """epsilon of the fit accuracy(k) = (1 - epsilon)^k over chain lengths (maximum likelihood)."""
    epsilon_ci: tuple[Float, Float] = (None, None)
    """95 % bootstrap interval (problems resampled)."""
    by_k: dict[str, tuple[int, int]] = Field(default_factory=dict)
    """Chain length -> (correct, problems)."""
    by_k_ci: dict[str, tuple[Float, Float]] = Field(default_factory=dict)
    """Chain length -> 95 % Wilson interval of its accuracy."""
    predicted: dict[str, Float] = Field(default_factory=dict)
    """Chain length -> (1 - epsilon)^k."""
    fit_p: Float = None
    """Goodness of fit (likelihood-ratio test of the one-parameter fit against a free accuracy per k)."""


class Breaks(_Model):
    """Where along a chain the pruned model parts from the base trace."""

    variant: str
    """Variant."""
    n_failing: int = 0
    """Failing pruned traces with a base trace to compare."""
    first_departure_fraction: list[Float] = Field(default_factory=list)
    """Per failing trace: the first position where the pruned model's teacher-forced top token differs
    from the base trace's token, as a fraction of the base trace."""
    median_fraction: Float = None
    """Median of those fractions."""
    median_ci: tuple[Float, Float] = (None, None)
    """95 % bootstrap interval of the median (failing traces resampled)."""
    first_wrong_step: list[int] = Field(default_factory=list)
    """Toy: per failing pruned trace, the first step whose written result is wrong (1-based; 0: none)."""


class Finding(_Model):
    """One ranked sentence of the report's "why" section."""

    text: str
    """The sentence, with its number."""
    effect: Float = None
    """The effect size the sentence reports."""
    ci: tuple[Float, Float] = (None, None)
    """Its 95 % interval."""
    strength: Float = None
    """|effect| / half the interval width (how far outside the noise); the ranking sorts by |effect|."""
    section: str = ""
    """The report anchor of the figure behind it."""
    kind: str = ""
    """restoration-positions, restoration-tokens, compounding, breaks, predictors or sweep: the mechanism
    it is evidence for ("" in older explain.json files, whose findings also held accuracy drops)."""
    variant: str | None = None
    """The pruned variant it is about (None: the whole run)."""
    n: int | None = None
    """What the interval rests on (problems, traces), when it is few enough to say."""


class ExplainFile(_Model):
    """explain.json: interventions, breaks, predictors and the ranked findings of a run."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    computed: str = ""
    """When, ISO 8601 UTC."""
    variants: dict[str, list[int]] | None = None
    """The run's variants (name -> dropped original layers) when it was computed; a run whose variants
    differ now (started afresh with --force) is not explained by it (None: written before this field)."""
    restoration: list[Restoration] = Field(default_factory=list)
    """Per pruned variant and position class."""
    predictors: Predictors | None = None
    """Failure predictors (None: too few wrong or right traces)."""
    breaks: list[Breaks] = Field(default_factory=list)
    """Per pruned variant."""
    compounding: list[Compounding] = Field(default_factory=list)
    """Per variant (toy tasks)."""
    findings: list[Finding] = Field(default_factory=list)
    """Ranked, strongest first; only evidence outside the noise."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per part."""
    skipped: list[str] = Field(default_factory=list)
    """Parts that were not computed, each with the reason (e.g. too few wrong answers for the
    predictors, no long-chain problems for the accuracy part of restoration)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "explain.json")


# ---------------------------------------------------------------------------------------------
# DIR/.lock.json


class LockHolder(_Model):
    """DIR/.lock.json: the job that holds a directory's lock (DIR/.lock), written when it takes the lock
    and removed when it lets go, so that a second writer is refused with a line naming the first."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    job: str
    """What holds it: analyze, ingest, explain, heal, compare or report."""
    pid: Annotated[int, Field(ge=1, lt=2**31)]
    """Its process id."""
    host: str = ""
    """The machine it runs on (its pid means nothing elsewhere)."""
    command: list[str] = Field(default_factory=list)
    """The command line that started it (empty when unknown)."""
    since: str = ""
    """When it took the lock, ISO 8601 UTC."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, ".lock.json")


# ---------------------------------------------------------------------------------------------
# OUT/.heal/heal.json

HEAL_SCHEMA_VERSION = 3


class HealFile(_Model):
    """OUT/.heal/heal.json: what a healing run was asked, where it stands and what it wrote (the healed
    checkpoint's own layerprobe.json records the healing once it is complete)."""

    schema_version: int = HEAL_SCHEMA_VERSION
    """Version of this file's layout (1: the untyped file of layerprobe 0.1, migrated when read)."""
    kind: Literal["layerprobe-heal"] = "layerprobe-heal"
    """Marks a layerprobe healing state file."""
    settings: dict[str, Any]
    """The settings that determine the healed weights (compared when the command is run again)."""
    command: list[str] = Field(default_factory=list)
    """Command line that started (or last resumed) the healing."""
    status: RunStatus = "running"
    """running, interrupted, failed (resumable) or complete."""
    created: str = ""
    """Creation time, ISO 8601 UTC."""
    updated: str = ""
    """Last status change, ISO 8601 UTC."""
    data: dict[str, Any] = Field(default_factory=dict)
    """What the training examples are (base traces of a task, a file, an analyze run's traces) and their hash."""
    files: list[str] = Field(default_factory=list)
    """The checkpoint files written into the output directory."""
    losses: list[float] = Field(default_factory=list)
    """Training loss per step."""
    rewards: list[float] = Field(default_factory=list)
    """GRPO: mean reward of each step's completions (version 3)."""
    resume_command: list[str] | None = None
    """The command that continues this healing."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = _check_version(data, "heal.json", HEAL_SCHEMA_VERSION)
        if isinstance(data, dict):
            if data.get("schema_version", HEAL_SCHEMA_VERSION) == 1:  # the same keys, untyped
                data = {k: x for k, x in data.items() if k in cls.model_fields}
                data.update(schema_version=HEAL_SCHEMA_VERSION, kind="layerprobe-heal")
            elif data.get("schema_version") == 2:  # version 3 adds `rewards`
                data = {**data, "schema_version": HEAL_SCHEMA_VERSION}
        return data


class ExplainState(_Model):
    """RUN/.explain/state.json: the parts of an explanation computed so far, so that a stopped
    `layerprobe explain` resumes where it was (explain.json is written when it completes)."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["layerprobe-explain-state"] = "layerprobe-explain-state"
    """Marks an explain state file."""
    settings: dict[str, Any]
    """The explain settings (--no-generation, --limit, device): parts computed under others are not reused."""
    run: str
    """Fingerprint of the run's variants and traces the parts were computed on (a run that changed since
    makes them stale)."""
    status: RunStatus = "running"
    """running, interrupted, failed (resumable) or complete."""
    command: list[str] = Field(default_factory=list)
    """Command line that started (or last resumed) it."""
    resume_command: list[str] | None = None
    """The command that continues it."""
    created: str = ""
    """Creation time, ISO 8601 UTC."""
    updated: str = ""
    """Last change, ISO 8601 UTC."""
    restoration: dict[str, list[Restoration]] = Field(default_factory=dict)
    """Per pruned variant: the teacher-forced restoration of every position class (accuracy filled later)."""
    accuracy: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    """Per pruned variant and token class: per long-chain problem, 1.0 when the gated model answered right."""
    damaged: list[str] = Field(default_factory=list)
    """Probe or teacher-forced files that could not be read."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per part, summed over sessions."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, ".explain/state.json")


# ---------------------------------------------------------------------------------------------
# compare.json (`layerprobe compare`)


MAX_COMPARED = 100
"""Most runs one comparison holds (one colour each on one page; a hostile file with thousands took minutes)."""
Label = Annotated[str, Field(max_length=300)]
"""A short name in a comparison (a run's label, a variant, a group's regime, a verdict)."""
Group = Annotated[str, Field(max_length=300)]
"""A problem group's name."""
Sentence = Annotated[str, Field(max_length=4000)]
"""A model id, a task name or a sentence of a comparison."""


class LayerSensitivity(_Model):
    """One pruned variant of a compared run, placed on the relative-depth axis."""

    variant: Label
    """Its name in the run."""
    dropped: list[int] = Field(max_length=MAX_LAYERS)
    """Original layers it lacks."""
    relative_depth: Float = None
    """(mean dropped layer + 0.5) / number of layers: 0 is the input end, 1 the output end."""
    delta: dict[Group, Float] = Field(default_factory=dict)
    """Accuracy minus the base model's per problem group, paired by problem, at the run's largest budget."""
    delta_ci: dict[Group, tuple[Float, Float]] = Field(default_factory=dict)
    """95 % interval of each delta (the paired comparison's)."""
    verdict: dict[Group, Label] = Field(default_factory=dict)
    """lower / higher / no clear difference, per group."""
    n: dict[Group, Count] = Field(default_factory=dict)
    """Problems paired per group."""
    block_influence: Float = None
    """Block influence of the dropped layer(s) on the base model's own traces (mean over a pair)."""

    @model_validator(mode="after")
    def _groups_agree(self) -> LayerSensitivity:
        extra = (set(self.delta_ci) | set(self.verdict) | set(self.n)) - set(self.delta)
        if extra:
            raise ValueError(f"variant {self.variant!r} names groups without a delta: {sorted(extra)[:3]}")
        return self


class ComparedRun(_Model):
    """One run directory as the comparison sees it."""

    label: Label
    """Its name in the comparison (the directory name, made unique)."""
    path: Annotated[str, Field(max_length=4096)]
    """The run directory, as given."""
    model: Sentence
    """Model id of the base variant."""
    n_layers: int = Field(ge=0, le=MAX_LAYERS)
    """Decoder layers of the base model."""
    task: Sentence
    """Task name."""
    budget: Count | None = None
    """The thinking budget the accuracies are taken at (the run's largest)."""
    source: Literal["sweep", "variants"]
    """Where the layer sensitivity comes from: the run's sweep.json or its pruned variants."""
    regimes: dict[Group, Label] = Field(default_factory=dict)
    """Problem group -> regime (long-chain, short, knowledge, other)."""
    base_accuracy: dict[Group, Float] = Field(default_factory=dict)
    """The base model's accuracy per group at `budget`."""
    base_accuracy_ci: dict[Group, tuple[Float, Float]] = Field(default_factory=dict)
    """95 % Wilson interval of each base accuracy."""
    n_problems: dict[Group, Count] = Field(default_factory=dict)
    """Problems per group with a graded base trace at `budget`."""
    sensitivity: list[LayerSensitivity] = Field(default_factory=list, max_length=MAX_LAYERS)
    """One entry per pruned variant, in depth order."""
    block_influence: list[Float] = Field(default_factory=list, max_length=MAX_LAYERS)
    """Block influence per layer of the base model on its own traces (empty without probes)."""
    damage: list[Sentence] = Field(default_factory=list)
    """What was wrong with the run directory when it was read (damaged or cut lines of samples.jsonl,
    files that could not be read, traces missing): its numbers rest on what could be read. Empty: intact."""

    @model_validator(mode="after")
    def _groups_agree(self) -> ComparedRun:
        keys = [set(self.base_accuracy), set(self.base_accuracy_ci), set(self.n_problems)]
        if keys[0] != keys[1] or keys[0] != keys[2] or not keys[0] <= set(self.regimes):
            raise ValueError(f"run {self.label!r}: base accuracy, its interval and its problem counts name different groups")
        return self


class CrossModel(_Model):
    """Two runs on the same problems, paired by problem id within one group."""

    a: Label
    """Label of the first run."""
    b: Label
    """Label of the second run (differences are b − a)."""
    group: Group
    """Problem group."""
    what: Literal["base accuracy", "damage", "mean damage"]
    """base accuracy: the two base models' accuracy. damage: (variant − base) of b minus that of a, for
    variants that drop the same relative depth (difference in differences, per problem). mean damage:
    the damage averaged over every matched depth per problem, then compared (problems resampled with
    all their depths together)."""
    dropped_a: list[int] = Field(default_factory=list, max_length=MAX_LAYERS)
    """For damage: the layers a's variant drops."""
    dropped_b: list[int] = Field(default_factory=list, max_length=MAX_LAYERS)
    """For damage: the layers b's variant drops."""
    n_pairs: Count = 0
    """Problems both runs graded."""
    mean_a: Float = None
    """a's mean (accuracy, or accuracy change)."""
    mean_b: Float = None
    """b's mean."""
    diff: Float = None
    """mean_b − mean_a."""
    ci: tuple[Float, Float] = (None, None)
    """95 % interval of diff."""
    ci_method: Label = ""
    """How the interval was computed."""
    p_value: Float = None
    """The paired test's p-value."""
    verdict: str = ""
    """higher / lower (b relative to a) or no clear difference (the difference rule, metrics.decide)."""
    test: str = ""
    """The paired test."""
    reason: str | None = None
    """Why the verdict is what it is (metrics.decide)."""


class CompareFile(_Model):
    """compare.json: several runs' layer sensitivity side by side, and paired comparisons across models."""

    schema_version: int = SCHEMA_VERSION
    """Version of this file's layout."""
    computed: str = ""
    """When, ISO 8601 UTC."""
    layerprobe_version: str = ""
    """The layerprobe that computed it."""
    runs: list[ComparedRun] = Field(default_factory=list, max_length=MAX_COMPARED)
    """The compared runs, in the order given."""
    cross: list[CrossModel] = Field(default_factory=list)
    """Paired comparisons between runs that share problems."""
    notes: list[Sentence] = Field(default_factory=list)
    """What a reader should know (runs without shared problems, unmatched depths, partial runs)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "compare.json")

    @model_validator(mode="after")
    def _labels_agree(self) -> CompareFile:
        labels = [r.label for r in self.runs]
        if len(set(labels)) != len(labels):
            raise ValueError("two runs have the same label")
        unknown = {x for c in self.cross for x in (c.a, c.b)} - set(labels)
        if unknown:
            raise ValueError(f"paired comparisons name runs that are not compared: {sorted(unknown)[:3]}")
        return self


# ---------------------------------------------------------------------------------------------
# RUN/judge/ (`layerprobe judge`: behaviours counted by a judge model over an OpenAI-compatible API)

JUDGE_SCHEMA_VERSION = 1

#: What became of one call to the judge (docs/judge.md#outcomes). Only "count" carries a number; every
#: other outcome is a missing value, never a zero.
JudgeOutcome = Literal["count", "unparsable", "refused", "too_long", "error", "timeout"]


class JudgeCall(_Model):
    """One line of RUN/judge/calls.jsonl: one question to the judge about one trace and one behaviour. A
    later line with the same key supersedes an earlier one (a failed call asked again)."""

    schema_version: int = JUDGE_SCHEMA_VERSION
    """Version of this line's layout."""
    variant: Name
    """Variant that produced the trace."""
    problem_id: Text
    """The trace's problem."""
    mode: Mode
    """The trace's mode."""
    budget: Count
    """The trace's thinking budget."""
    sample: Count
    """The trace's sample index."""
    behaviour: Name
    """The behaviour asked about (a name of the taxonomy)."""
    outcome: JudgeOutcome
    """count (a number was read), unparsable (a reply without a readable count), refused (the judge or its
    endpoint's filter declined), too_long (the endpoint said the prompt exceeds the judge's context),
    error (the call failed), timeout (no reply in time)."""
    count: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    """The count read from the reply (outcome "count" only)."""
    reason: Text = ""
    """Why there is no count, in one line (the rule that found none, the endpoint's error message)."""
    reply: Text | None = None
    """The judge's reply as it came (None when there was none)."""
    finish_reason: str | None = None
    """Why the judge stopped (stop, length, content_filter, ...), as the endpoint said."""
    judge_model: str
    """The model asked for (--judge-model)."""
    served_model: str | None = None
    """The model the endpoint says answered."""
    reply_id: str | None = None
    """The endpoint's id of the reply (to find the call in the endpoint's own logs)."""
    prompt_tokens: Count | None = None
    """Prompt tokens the endpoint counted (None: not reported, or no call was made)."""
    completion_tokens: Count | None = None
    """Reply tokens the endpoint counted."""
    attempts: Annotated[int, Field(ge=0, le=1000)] = 1
    """HTTP requests made for this call, retries included (0: the reply of an identical request was reused)."""
    status_code: int | None = None
    """HTTP status of a failed call (None: no HTTP answer, or success)."""
    retryable: bool = False
    """The failure may pass (a timeout, a lost connection, 429, 5xx): a later run asks again."""
    started: float = 0.0
    """When the call started (Unix time, seconds)."""
    seconds: Float = None
    """Wall time of the call, retries and their waits included."""
    request: str
    """SHA-1 of the request (model, messages, temperature, max_tokens): identical requests share a reply."""
    trace_sha: str
    """SHA-1 of the trace text sent (a record whose trace has changed since is stale and not used)."""
    reused_from: list[Any] | None = None
    """Key of the record whose reply this one shares (an identical request: no call was made)."""
    session: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    """The `layerprobe judge` session that wrote the line (0 for the first)."""

    def key(self) -> tuple[str, str, str, int, int, str]:
        return (*trace_key(self.variant, self.problem_id, self.mode, self.budget, self.sample), self.behaviour)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "a judge/calls.jsonl line", JUDGE_SCHEMA_VERSION)


class JudgeSession(_Model):
    """One `layerprobe judge` session on a run: what it sent and spent."""

    started: str = ""
    """When it started, ISO 8601 UTC."""
    calls: int = 0
    """Calls made (identical requests answered from an earlier reply not included)."""
    reused: int = 0
    """Records filled from the reply of an identical request, without a call."""
    requests: int = 0
    """HTTP requests, retries included."""
    prompt_tokens: int = 0
    """Prompt tokens the endpoint counted."""
    completion_tokens: int = 0
    """Reply tokens the endpoint counted."""
    seconds: float = 0.0
    """Wall time of the session's work."""
    stopped: str = ""
    """Why it stopped before every call was made ("--max-calls 20", "the judge stopped answering", ...)."""


class JudgeState(_Model):
    """RUN/judge/state.json: what `layerprobe judge` was asked, with which prompts, and where it stands."""

    schema_version: int = JUDGE_SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["layerprobe-judge-state"] = "layerprobe-judge-state"
    """Marks a judge state file."""
    settings: dict[str, Any]
    """What determines the replies (endpoint, judge model, taxonomy and its hash, text, temperature,
    max_tokens): compared when the command is run again. Never the key, only the variable it is read from."""
    selection: dict[str, Any] = Field(default_factory=dict)
    """Which traces are judged (first_sample, budget): may change between sessions (records are kept)."""
    taxonomy: dict[str, Any] = Field(default_factory=dict)
    """The taxonomy as used: name, title, system prompt, reading rule and every behaviour's prompt."""
    status: RunStatus = "running"
    """running, interrupted (stopped early: Ctrl-C, --max-calls), failed or complete."""
    command: list[str] = Field(default_factory=list)
    """Command line that started (or last resumed) it."""
    resume_command: list[str] | None = None
    """The command that continues it."""
    created: str = ""
    """Creation time, ISO 8601 UTC."""
    updated: str = ""
    """Last change, ISO 8601 UTC."""
    sessions: list[JudgeSession] = Field(default_factory=list)
    """One entry per session, oldest first."""
    pid: Annotated[int, Field(ge=1, lt=2**31)] | None = None
    """Process judging while status is running."""
    host: str | None = None
    """Host of that process."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "judge/state.json", JUDGE_SCHEMA_VERSION)


class JudgeStat(_Model):
    """The judge's counts of one behaviour in one variant's traces of one problem group."""

    variant: str
    """Variant."""
    group: str
    """Problem group ("all" = every problem)."""
    behaviour: str
    """Behaviour."""
    n_traces: int = 0
    """Selected traces of the variant and group."""
    n_counted: int = 0
    """Of those, traces the judge gave a count for."""
    n_problems: int = 0
    """Problems with at least one counted trace."""
    mean: Float = None
    """Mean count: per problem the mean over its counted traces, then the mean over problems."""
    ci: tuple[Float, Float] = (None, None)
    """95 % bootstrap interval of the mean (problems resampled)."""
    missing: dict[str, int] = Field(default_factory=dict)
    """Traces without a count, by outcome (unparsable, refused, too_long, error, timeout, not asked)."""


class JudgeAgreement(_Model):
    """Does the judge count what layerprobe's reflection words count? Spearman's rank correlation, over
    the traces the judge counted, between its count and the trace's reflection words."""

    variant: str
    """Variant ("all": every variant's traces together)."""
    behaviour: str
    """Behaviour ("total": the sum of every behaviour, over traces with a count for each)."""
    n: int = 0
    """Traces."""
    n_problems: int = 0
    """Problems they come from."""
    spearman: Float = None
    """Spearman's rho (None: fewer than 3 traces, or one side constant)."""
    ci: tuple[Float, Float] = (None, None)
    """95 % percentile bootstrap interval, problems resampled with all their traces."""


class JudgeFile(_Model):
    """judge.json: the judge's behaviour counts summarised, from RUN/judge/calls.jsonl and the samples."""

    schema_version: int = JUDGE_SCHEMA_VERSION
    """Version of this file's layout."""
    kind: Literal["layerprobe-judge"] = "layerprobe-judge"
    """Marks a judge summary."""
    computed: str = ""
    """When, ISO 8601 UTC."""
    n_lines: int = 0
    """Valid lines of judge/calls.jsonl it was computed from (the reader recomputes it when this differs)."""
    n_samples: int = 0
    """Traces of the run when it was computed."""
    status: RunStatus = "running"
    """The judge's status (judge/state.json)."""
    judge_model: str = ""
    """The judge model asked for."""
    served_models: list[str] = Field(default_factory=list)
    """The models the endpoint said answered."""
    endpoint: str = ""
    """The endpoint (scheme, host and path only)."""
    taxonomy: str = ""
    """Taxonomy name."""
    taxonomy_source: str = ""
    """shipped (layerprobe's own prompts) or the file it was read from."""
    taxonomy_sha: str = ""
    """SHA-1 of the taxonomy as used."""
    behaviours: dict[str, str] = Field(default_factory=dict)
    """Behaviour name -> its title, in the taxonomy's order."""
    text: str = "response"
    """What was sent as the trace: response (everything after the prompt) or thinking."""
    temperature: Float = None
    """Sampling temperature of the judge."""
    max_tokens: int | None = None
    """Cap on each reply."""
    selection: dict[str, Any] = Field(default_factory=dict)
    """Which traces were judged (first_sample, budget)."""
    n_selected: int = 0
    """Traces selected."""
    expected_calls: int = 0
    """Selected traces x behaviours (records to hold when complete; identical requests share one call)."""
    outcomes: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per variant: records by outcome, plus "not asked" (no record yet)."""
    stats: list[JudgeStat] = Field(default_factory=list)
    """Per variant, group and behaviour."""
    comparisons: list[Comparison] = Field(default_factory=list)
    """Paired base-vs-variant differences of each behaviour's count, per group: per problem the mean over
    the traces (same mode, budget, sample) both have counted (metric = the behaviour, mode = "judge")."""
    agreement: list[JudgeAgreement] = Field(default_factory=list)
    """The judge's counts against layerprobe's reflection words in the same traces."""
    calls: int = 0
    """Calls made over every session (identical requests reused not included)."""
    prompt_tokens: int = 0
    """Prompt tokens spent over every session."""
    completion_tokens: int = 0
    """Reply tokens spent over every session."""
    largest_prompt: int | None = None
    """The largest prompt the endpoint counted, in tokens (a server that silently cuts long prompts shows
    here at its context size)."""
    notes: list[str] = Field(default_factory=list)
    """What a reader should know (damaged or stale lines left out, a partial judging)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "judge.json", JUDGE_SCHEMA_VERSION)


# ---------------------------------------------------------------------------------------------
# compression.json

COMPRESSION_SCHEMA_VERSION = 1


class WaitFixes(_Model):
    """Toy chains: what the "Wait"s of a variant's traces did (each written step checked)."""

    traces: int = 0
    """Traces read (sequential at the largest budget and the parallel samples)."""
    steps: int = 0
    """Steps written."""
    step_errors: int = 0
    """Steps whose final written result is wrong."""
    waits: int = 0
    """"Wait"s written."""
    after_error: int = 0
    """"Wait"s that follow a wrong result."""
    fixing: int = 0
    """Of those, the ones followed by the right result."""
    after_correct: int = 0
    """"Wait"s that follow a right result."""
    off_program: int = 0
    """Steps that do not continue the chain the prompt asks for: the n-th step written is not labelled n,
    or applies another operation than the prompt's n-th, or starts from another value than the previous
    step's result (the first: x). Counted apart from wrong results (a step can be both)."""


class Mechanism(_Model):
    """What layerprobe measures of why a variant keeps or loses its chains (None where it does not apply)."""

    same_text_share: Float = None
    """Share of the variant's traces whose text equals the base model's trace of the same problem, mode,
    budget and sample (same seed): how often the compression changed nothing that was written."""
    n_same_text: int | None = None
    """Traces behind that share."""
    tf_mean_kl: Float = None
    """Mean KL(base ‖ variant) along the base model's own traces, teacher-forced (nats)."""
    tf_onset_share: Float = None
    """Share of those traces with a divergence onset (KL above the threshold for a window)."""
    tf_onset_fraction: Float = None
    """Mean onset position as a fraction of the trace (traces with an onset)."""
    first_departure_median: Float = None
    """Failing traces: median position (fraction of the base trace) where the variant first parts from it."""
    first_departure_ci: tuple[Float, Float] = (None, None)
    """Its 95 % bootstrap interval."""
    n_failing: int | None = None
    """Failing traces behind the median."""
    step_error_rate: Float = None
    """Toy chains: wrong steps / steps written (compounding per-step error)."""
    epsilon: Float = None
    """Toy chains: ε of the fit accuracy(k) = (1 − ε)^k over chain lengths."""
    epsilon_ci: tuple[Float, Float] = (None, None)
    """Its 95 % bootstrap interval."""
    drift_mean: Float = None
    """Mean over matched layers of the lens JSD between base and variant (nats)."""
    drift_last: Float = None
    """The same at the last layer both have (nats)."""
    settling_fraction: Float = None
    """Mean settling depth as a fraction of the variant's own layers (logit lens, own traces)."""
    deep_thinking_ratio: Float = None
    """Share of tokens that settle in the last 15 % of the variant's layers."""


class CompressionRow(_Model):
    """One variant of the matched-size comparison."""

    variant: str
    """Variant name in the run."""
    method: str
    """Method (shortgpt, reverse, trace-kl, width, wanda, magnitude, nm, manual, base)."""
    kind: str
    """none (the base), depth, width, unstructured or semi-structured."""
    size_label: str = ""
    """The size asked, in words ("2 layers' worth", "2:4", "sparsity 0.2")."""
    size_key: str = ""
    """What variants of the same size share (the size part of the name: 2, 2of4, s0.2)."""
    n_layers: int | None = None
    """Decoder layers the variant has."""
    kept_fraction: Float = None
    """Non-zero decoder linear weights kept, against the base."""
    layers_removed_equivalent: Float = None
    """Weights removed in decoder layers' worth."""
    flops_per_token: Float = None
    """Dense-kernel FLOPs per token against the base's (fraction)."""
    flops_per_token_sparse: Float = None
    """FLOPs per token if zeros were skipped, against the base's (fraction)."""
    tokens_per_s: Float = None
    """Measured greedy tokens/s here."""
    tokens_per_s_base: Float = None
    """The base's, measured the same way."""
    accuracy: dict[str, Interval] = Field(default_factory=dict)
    """Per group: accuracy of the sequential trace at the largest budget, with its Wilson interval."""
    n_problems: dict[str, int] = Field(default_factory=dict)
    """Per group: problems behind the accuracy."""
    budget_curve: dict[str, dict[str, Float]] = Field(default_factory=dict)
    """Per group: budget -> accuracy of the sequential traces."""
    slope: dict[str, Interval] = Field(default_factory=dict)
    """Per group: least-squares slope of accuracy against log2(budget), points per doubling of the thinking
    budget, with a 95 % bootstrap interval over problems."""
    maj: dict[str, Interval] = Field(default_factory=dict)
    """Per group: maj@k of the parallel samples (k = maj_k), with its bootstrap interval."""
    maj_k: int | None = None
    """k of maj (the number of parallel samples)."""
    vs_base: dict[str, Comparison] = Field(default_factory=dict)
    """Per group: paired difference against the base at the largest budget."""
    reference: str | None = None
    """The ShortGPT variant of the same size (None: there is none, e.g. 2:4)."""
    vs_reference: dict[str, Comparison] = Field(default_factory=dict)
    """Per group: paired difference against that ShortGPT variant (same problems, same seeds)."""
    keeps_long_chains: bool | None = None
    """The long-chain criterion: the lower end of the paired interval against the base is above −10 points."""
    keeps_scaling: bool | None = None
    """The scaling criterion: the long-chain slope's interval lies above 0 (more thinking still helps)."""
    waits: WaitFixes | None = None
    """Toy chains: what its "Wait"s did."""
    mechanism: Mechanism = Field(default_factory=Mechanism)
    """Why: the measurements that apply to it."""
    restoration_applies: bool = False
    """Causal restoration (explain) applies: the variant lacks whole layers of the base."""


class CompressionFile(_Model):
    """compression.json: the variants of a run side by side at their sizes (which compression keeps long
    chains, and the measurements behind why)."""

    schema_version: int = COMPRESSION_SCHEMA_VERSION
    """Version of this file's layout."""
    computed: str = ""
    """When, ISO 8601 UTC."""
    n_samples: int = 0
    """Traces it covers."""
    variants: dict[str, list[int]] = Field(default_factory=dict)
    """The run's variants (name -> dropped layers) when it was computed (a run started afresh is not described by it)."""
    budget: int | None = None
    """The largest budget: where accuracy and paired differences are taken."""
    budgets: list[int] = Field(default_factory=list)
    """The sequential budgets."""
    groups: list[str] = Field(default_factory=list)
    """Problem groups, long-chain first."""
    long_group: str | None = None
    """The group the criteria are judged on (the first long-chain group)."""
    reference_method: str = "shortgpt"
    """The method every variant is paired with at the same size."""
    flops_context: int | None = None
    """Cached tokens behind the attention share of the FLOPs per token."""
    load_average: Float = None
    """The machine's 1-minute load average when the speeds were measured (the first variant's measurement)."""
    criteria: dict[str, str] = Field(default_factory=dict)
    """The criteria, in words."""
    rows: list[CompressionRow] = Field(default_factory=list)
    """The base first, then every variant."""
    notes: list[str] = Field(default_factory=list)
    """What does not apply and why (e.g. causal restoration for width and sparse variants)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _check_version(data, "compression.json", COMPRESSION_SCHEMA_VERSION)
