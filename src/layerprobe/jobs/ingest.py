"""`layerprobe ingest`: traces generated elsewhere (lm-evaluation-harness, vLLM, s1's scripts) read into
a normal run directory, graded by layerprobe, with trace metrics and probes by prefill (docs/ingest.md).

Each ingest adds one variant (its `--label`) to the run in `--out`; several ingests (base and pruned,
from the same or different files) compare in one report. The first variant ingested into a run
becomes its base unless a later ingest is labelled `base` (the base is always listed first).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from layerprobe._version import versions
from layerprobe.data.schema import (
    IngestSource,
    ModelInfo,
    RunConfig,
    RunInfo,
    TaskRecord,
    VariantSpec,
)
from layerprobe.data.store import RunStore, is_run_dir, now, read_run_info
from layerprobe.errors import UserError
from layerprobe.jobs.ingest_model import ModelSide, compression_spec, model_side
from layerprobe.jobs.ingest_probes import Pending, after_ingest, prefill_layers
from layerprobe.jobs.job import Job, ProgressFn
from layerprobe.jobs.records import sample_record
from layerprobe.jobs.textwork import TextJob, TextPool, n_workers
from layerprobe.rules import as_float, as_int, check_name
from layerprobe.scaling.traces import INGEST_FORMATS, Shape, finish_of, from_fields, parse_trace, rebuild, split_ids
from layerprobe.sources import SOURCES
from layerprobe.sources.common import Item, Read, file_shape, tokenizer_warnings

FLUSH_EVERY = 64
"""Traces probed and written together; an interrupted ingest loses at most this many (they are redone)."""


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@dataclass
class _Pre:
    """A trace read and parsed, waiting for its text work (jobs.textwork)."""

    i: int
    shape: Shape
    it: Item
    b: int | None
    parsed: Any
    text: str
    mode: Literal["sequential", "parallel"]
    prompt: str
    prompt_ids: list[int]
    thinking: str
    job: TextJob


@dataclass
class IngestSettings:
    """What `layerprobe ingest` was asked (docs/ingest.md)."""

    files: Sequence[Path]
    source_format: str
    model: str
    out: Path | None
    label: str | None = None
    drop: Sequence[int] | None = None
    method: str | None = None
    n_drop: int = 2
    answer_type: str | None = None
    task: str | None = None
    reasoning_format: str | None = None
    """s1, think-tags, plain, or None / "auto" (decided per file from its traces)."""
    budget: int | None = None
    probes: bool = True
    """False: read the tokenizer and config only (`tokenizer` may name another tokenizer to count with)."""
    lens: bool = True
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    """Traces per prefill forward pass (halved on out-of-memory)."""
    force: bool = False
    tokenizer: str | None = None
    producer: str | None = None
    workers: int | None = None
    """Processes for the text work (token counts, trace metrics): 0 in this process, None one per core
    from jobs.textwork.POOL_MIN_TRACES traces on."""

    @property
    def format_hint(self) -> str | None:
        """The reasoning format asked for; None: decided per file from its traces."""
        return None if self.reasoning_format in (None, "auto") else self.reasoning_format

    @property
    def answer_kind(self) -> str:
        """The answer type the traces are graded as: --answer-type, else the --task's, else math."""
        from layerprobe.tasks.registry import TASKS

        return self.answer_type or (TASKS[self.task].answer_type if self.task else "math")

    def check(self) -> None:
        """Reject settings that cannot be right, before anything is read or loaded (UserError, exit 2)."""
        from layerprobe.tasks.registry import TASKS

        if self.out is None:
            raise UserError("--out: give the run directory to write (several ingests into one --out compare in one report)")
        if self.drop and self.method:
            raise UserError("--drop and --method are exclusive: the traces come from one model")
        if self.budget is not None and self.budget < 0:
            raise UserError(f"--budget {self.budget}: must be 0 or more")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be 1 or more")
        if self.workers is not None and not 0 <= self.workers <= 256:
            raise UserError(f"--workers {self.workers}: give 0 (this process only) to 256")
        if self.source_format not in SOURCES:
            raise UserError(f"--from {self.source_format}: valid formats are {', '.join(SOURCES)}")
        if self.label is not None:
            check_name(self.label, "--label")
        if self.format_hint is not None and self.format_hint not in INGEST_FORMATS:
            raise UserError(f"--format {self.reasoning_format}: valid formats are auto, {', '.join(INGEST_FORMATS)}")
        for f in self.files:
            if not Path(f).exists():
                raise UserError(f"{f}: no such file")
            if not Path(f).is_file():
                raise UserError(f"{f}: not a file (give the JSONL file of traces{SOURCES[self.source_format].file_hint})")
        if self.task is not None and self.task not in TASKS:
            raise UserError(f"--task {self.task}: unknown task (valid: {', '.join(TASKS)})")
        if self.answer_kind not in ("integer", "math", "mc", "digit"):
            raise UserError(f"--answer-type {self.answer_kind}: valid types are integer, math, mc, digit")
        if self.method:
            from layerprobe.prune.methods import get_method

            if get_method(self.method).kind != "depth":
                raise UserError(
                    f"ingest --method removes whole layers; --method {self.method} compresses weights: prune first "
                    f"(layerprobe prune --method {self.method} --match-layers K --out DIR) and give that checkpoint as --model"
                )
            if not self.probes:
                raise UserError(
                    f"--method {self.method} chooses layers by running the model; with --no-probes give the layers with --drop"
                )
        if self.probes and self.tokenizer is not None:
            raise UserError(
                "--tokenizer counts tokens when the model is not at hand; probes run the model, whose own tokenizer "
                "must read the traces (drop --tokenizer, or add --no-probes)"
            )


class Ingest(Job):
    """Read files into the run at `out` as one variant (the job skeleton: prepare, then open / work /
    close with the run locked). `run()` returns (run directory, IngestSource)."""

    kind = "ingest"

    def __init__(self, settings: IngestSettings, progress: ProgressFn | None = None, argv: Sequence[str] = ()) -> None:
        super().__init__(progress, argv)
        settings.check()
        self.s = settings
        self.grader: Any = None
        self.pool: TextPool | None = None

    def prepare(self) -> None:
        from layerprobe.data.store import check_out_dir

        s = self.s
        assert s.out is not None  # checked by IngestSettings.check
        self.out = Path(s.out)
        self.hint = s.format_hint
        self.answer_type = s.answer_kind
        check_out_dir(self.out, allow_orphan=s.force)
        self.reads = [SOURCES[s.source_format].read(Path(f)) for f in s.files]
        self.items = [it for r in self.reads for it in r.items]
        if not self.items:
            reasons = Counter[str]()
            for r in self.reads:
                reasons.update(r.skipped)
            raise UserError(f"no trace could be read from {', '.join(map(str, s.files))} ({dict(reasons)})")
        self.side = model_side(s.model, s.probes, s.drop, s.method, s.n_drop, s.device, s.dtype, s.tokenizer)
        for r in self.reads:
            r.shape = file_shape(r, self.hint, self.side.tokenizer)
        dropped = self.side.dropped
        method = s.method
        comp = self.side.compression
        compressed = comp.get("method") if isinstance(comp, dict) and comp.get("kind") not in (None, "depth") else None
        self.name = s.label or (
            (f"{compressed}" if compressed else "base")
            if not dropped
            else (f"{method}-{len(dropped)}" if method else "drop-" + "-".join(map(str, dropped)))
        )
        n = self.side.n_layers
        kept = [i for i in range(n) if i not in set(dropped)] if n is not None else None
        spec = VariantSpec(
            name=self.name,
            dropped=dropped,
            method=self.side.method or compressed,
            n_layers=len(kept) if kept is not None else None,
            layer_map=kept,
            compression=compression_spec(comp),
        )
        self.producer = s.producer or next((r.producer for r in self.reads if r.producer), None)
        self.info = _run_info(
            self.out, spec, self.side, self.reads, s.task, self.answer_type, s.budget, s.dtype, s.probes, self.argv[1:], s.force
        )

    def open(self) -> None:
        self.store = RunStore.open(self.out, self.info, force=self.s.force, extend=True)
        self.store.info.resume_command = self.resume_command()
        self.store.set_status("running")

    def work(self) -> tuple[Path, IngestSource]:
        from layerprobe.models.chat import TemplateTimeout, render_chat
        from layerprobe.scaling.formats import FORMATS
        from layerprobe.tasks.grading import MathGrader, gold_problem, grade_trace

        s, side, store, name, out = self.s, self.side, self.store, self.name, self.out
        answer_type, progress, items = self.answer_type, self.progress, self.items
        tok = side.tokenizer
        skipped: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        warnings: list[str] = []
        for r in self.reads:
            skipped.update(r.skipped)
            counts["merged filter lines"] += r.merged
            warnings += [w for w in tokenizer_warnings(tok, r) + r.examples if w not in warnings]
            if r.shape is not None and len(r.shape.evidence) > 1 and self.hint is None:  # one format is read per file
                seen_as = ", ".join(f"{n} look like {k}" for k, n in r.shape.evidence.items())
                warnings.append(
                    f"{r.path.name} mixes formats ({seen_as}): every trace is read as {r.shape.format}, so the others "
                    "may be split wrongly (give each format its own file, or --format)"
                )
        samples_of = samples_by_budget(items, s.budget)
        seen: set[tuple[str, int, int]] = set()
        grader = self.grader = MathGrader() if answer_type == "math" else None
        # ids a probe can feed: the unembedding's rows (a padded vocabulary may exceed the tokenizer's)
        vocab = int(side.loaded.model.get_output_embeddings().weight.shape[0]) if s.probes else len(tok)
        n_new = 0
        todo: list[Pending] = []
        enc = lambda text: tok.encode(text, add_special_tokens=False)

        def flush() -> None:
            """Probe the traces read so far (batched prefill), then write their records: arrays first."""
            nonlocal n_new
            layers = prefill_layers(side.loaded, out, todo, s.lens, s.batch_size)
            for i, t in enumerate(todo):
                store.append(t.record.model_copy(update={"layers_file": layers.get(i)}) if i in layers else t.record)
                n_new += 1
            todo.clear()

        numbered = [(r.shape, it) for r in self.reads for it in r.items]
        template_hangs = ""

        def prelude() -> Iterator[_Pre]:
            """What each new trace needs before its text work (in this process, in file order)."""
            nonlocal template_hangs
            for i, (shape, it) in enumerate(numbered):
                assert shape is not None
                b = it.budget if it.budget is not None else s.budget
                if (it.problem_id, b or 0, it.sample) in seen:
                    skipped["the same id, budget and sample again (the first kept)"] += 1
                    continue
                seen.add((it.problem_id, b or 0, it.sample))
                if it.no_prompt and s.probes:
                    skipped["no prompt (probes run the prompt through the model; --no-probes reads such traces)"] += 1
                    continue
                counts["without a prompt (text metrics only)"] += it.no_prompt
                if it.reasoning is not None:
                    parsed, text = from_fields(it.reasoning, it.completion), rebuild(shape, it.reasoning, it.completion)
                    counts["reasoning in a separate field"] += 1
                else:
                    parsed, text = parse_trace(shape.format, it.completion, bare=shape.bare), it.completion
                mode = ingest_mode(samples_of[(it.problem_id, b or 0)], it.sample)
                prompt = it.prompt
                if it.messages is not None and not prompt:  # a prompt given as text is used as it is
                    if template_hangs:
                        skipped[template_hangs] += 1
                        continue
                    try:
                        prompt = render_chat(tok, it.messages)
                    except TemplateTimeout as exc:  # a template that loops: not tried again on the other traces
                        template_hangs = f"messages not rendered: {exc} (the template is not run again)"
                        skipped[template_hangs] += 1
                        continue
                    except Exception:  # noqa: BLE001 - a tokenizer without a chat template cannot render messages
                        skipped["messages that the tokenizer's chat template cannot render"] += 1
                        continue
                prompt_ids = it.prompt_ids or enc(prompt)
                stored = store.has((name, it.problem_id, mode, b or 0, it.sample))
                parts = None
                if (
                    it.completion_ids
                    and it.reasoning is None
                    and parsed.ended
                    and not parsed.reopened
                    and shape.format in FORMATS
                ):
                    parts = split_ids(tok, FORMATS[shape.format], it.completion_ids)
                # the generated ids, decoded, when the file gives them (as the engine records it); else the file's text
                thinking = tok.decode(parts[0], skip_special_tokens=False) if parts else parsed.thinking
                job = TextJob(
                    text,
                    thinking,
                    parsed.answer,
                    all_ids=it.completion_ids,
                    think_ids=parts[0] if parts else None,
                    answer_ids=parts[1] if parts else None,
                    metrics=not stored and (bool(prompt_ids) or it.no_prompt) and max(prompt_ids, default=0) < vocab,
                    vocab=vocab,
                )
                yield _Pre(i, shape, it, b, parsed, text, mode, prompt, prompt_ids, thinking, job)

        pool = self.pool = TextPool(tok, n_workers(s.workers, len(numbered))).open()
        for pre, done in pool.text(prelude(), lambda pre: pre.job):
            assert done is not None
            i, shape, it, b, parsed, text, mode, prompt = (
                pre.i,
                pre.shape,
                pre.it,
                pre.b,
                pre.parsed,
                pre.text,
                pre.mode,
                pre.prompt,
            )
            prompt_ids, thinking = pre.prompt_ids, pre.thinking
            progress(f"ingest {name}", i, len(items))
            all_ids = done.all_ids.tolist()
            cut = it.cut if it.cut is not None else (True if it.cap and len(all_ids) >= it.cap else None)
            finish = finish_of(parsed, shape.format, cut)
            counts["budget-forced"] += finish == "budget"
            counts["truncated"] += finish == "truncated"
            counts["re-opened their thinking"] += parsed.reopened > 0
            if parsed.split:  # a stream without delimiters: which rule set its thinking part
                counts[f"answer from {parsed.split}"] += 1
            if store.has((name, it.problem_id, mode, b or 0, it.sample)):
                continue
            if max(prompt_ids + list(all_ids), default=0) >= vocab:
                skipped["token ids outside the tokenizer's vocabulary (another tokenizer?)"] += 1
                continue
            if (not prompt_ids and not it.no_prompt) or not all_ids:
                skipped["empty prompt or completion"] += 1
                continue
            assert done.fields is not None
            think_ids, answer_ids = done.think_ids.tolist(), done.answer_ids.tolist()
            if answer_ids and answer_ids[-1] == tok.eos_token_id:  # the stop token is not part of the answer
                answer_ids = answer_ids[:-1]
            g = grade_trace(answer_type, it.gold, parsed.answer, thinking, grader, truncated=finish == "truncated")
            unusable = gold_problem(answer_type, it.gold)  # the answer is still read; the trace is not graded
            if unusable is not None:
                where = SOURCES[s.source_format].no_gold_hint if unusable == "no gold answer" else ""
                counts[f"not graded ({unusable}{where})"] += 1
            m = done.fields
            too_long = side.context is not None and len(prompt_ids) + len(all_ids) > side.context
            if s.probes and too_long:
                counts["probes skipped (longer than the model's context)"] += 1
            external = dict(it.external, prompt=prompt)
            if parsed.forced or parsed.reopened or it.reasoning is not None:
                external["shape"] = {"forced": parsed.forced, "reopened": parsed.reopened, "fields": it.reasoning is not None}
            record = sample_record(
                name,
                it.problem_id,
                it.group,
                mode,
                b or 0,
                it.sample,
                budget_recorded=b is not None,
                seed=0,
                tokens=(len(prompt_ids), len(think_ids), len(answer_ids)),
                finish=finish,
                budget_hit=finish in ("budget", "truncated"),
                grade=g,
                gold=it.gold,
                graded=unusable is None,
                fields=m,
                thinking_text=thinking,
                text=text,
                layers_file=None,
                origin="ingested",
                external=external,
            )
            todo.append(Pending(record, prompt_ids, list(all_ids), s.probes and not too_long))
            if len(todo) >= FLUSH_EVERY:
                flush()
        flush()
        progress(f"ingest {name}", len(items), len(items))
        total = sum(1 for r in store.records if r.variant == name)
        if total == 0:
            raise UserError(
                f"no trace of {', '.join(str(r.path) for r in self.reads)} could be kept"
                + (f" ({'; '.join(f'{n} {why}' for why, n in skipped.items())})" if skipped else "")
            )
        src = IngestSource(
            path=", ".join(str(r.path) for r in self.reads),
            sha1=",".join(_sha1(r.path) for r in self.reads),
            format=s.source_format,
            variant=name,
            traces=total,
            new=n_new,
            skipped=dict(skipped),
            producer=self.producer,
            warnings=warnings,
            shapes=[f"{r.path.name}: {r.shape.describe()}" for r in self.reads if r.shape is not None],
            counts={k: v for k, v in counts.items() if v},
            tokenizer=side.tokenizer_name,
        )
        store.info.ingested = [x for x in store.info.ingested if x.variant != name] + [src]
        store.info.expected_traces = None
        store.set_status("running")  # run.json records what was read before the derived files are written
        after_ingest(out, side.base, s.probes, pool.imap, store.info, store.records)
        return out, src

    def close(self, status: str) -> None:
        if self.refused and self.created and not self.store.records:
            self.store.close()
            _remove_run(self.out)  # bad input found late in a run this command created: leave nothing behind
            return
        self.store.close(status)

    def cleanup(self) -> None:
        if self.grader is not None:
            self.grader.close()
        if self.pool is not None:
            self.pool.close(wait=False)


def _remove_run(out: Path) -> None:
    """Remove a run directory this command created and that holds only what it wrote."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)


def ingest(files: Sequence[Path], source_format: str, model: str, out: Path, **kw: Any) -> tuple[Path, IngestSource]:
    """Read `files` into the run at `out` as one variant (IngestSettings says what each keyword means);
    returns the run directory and what was read."""
    progress, argv = kw.pop("progress", None), kw.pop("argv", ())
    return Ingest(IngestSettings(files, source_format, model, out, **kw), progress, ["layerprobe", *argv]).run()


def samples_by_budget(items: Sequence[Item], budget: int | None) -> dict[tuple[str, int], set[int]]:
    """(problem id, budget) -> the sample indices the files hold (a budget not recorded counts as 0)."""
    out: dict[tuple[str, int], set[int]] = {}
    for it in items:
        b = it.budget if it.budget is not None else budget
        out.setdefault((it.problem_id, b or 0), set()).add(it.sample)
    return out


def ingest_mode(samples: set[int], sample: int) -> Literal["sequential", "parallel"]:
    """A trace's mode: the first sample of a problem at a budget is its sequential trace (the budget
    curve); the other samples there are parallel ones (pass@k and maj@k, at the largest budget that has
    them; metrics count that budget's first sample with them)."""
    return "parallel" if len(samples) > 1 and sample != min(samples) else "sequential"


def _run_info(
    out: Path,
    spec: VariantSpec,
    side: ModelSide,
    reads: Sequence[Read],
    task: str | None,
    answer_type: str,
    budget: int | None,
    dtype: str,
    probes: bool,
    argv: Sequence[str],
    force: bool = False,
) -> RunInfo:
    """run.json for the run with this variant added (the base listed first). A run.json that cannot
    be read is refused, or with `force` replaced (the traces in samples.jsonl are kept)."""
    items = [it for r in reads for it in r.items]
    old = None
    if is_run_dir(out):
        try:
            old = read_run_info(out)
        except UserError as exc:
            if not force:
                raise UserError(f"{exc}; add --force to write a new run.json (the traces already read are kept)") from None
    if old is not None and old.origin != "ingest":
        raise UserError(f"{out} holds a run written by `layerprobe analyze`; ingest into another --out")
    if old is not None and None not in (old.model.n_layers, side.n_layers) and old.model.n_layers != side.n_layers:
        raise UserError(f"{out} holds traces of a {old.model.n_layers}-layer model; --model {side.name} has {side.n_layers}")
    same = next((v for v in (old.variants if old else []) if v.name == spec.name), None)
    if same is not None and same.dropped != spec.dropped:
        lacks = lambda d: f"without layers {', '.join(map(str, d))}" if d else "unpruned"
        raise UserError(
            f"{out} already has a variant {spec.name} ({lacks(same.dropped)}); these traces come from the model "
            f"{lacks(spec.dropped)}: give them another --label"
        )
    variants = [v for v in (old.variants if old else []) if v.name != spec.name]
    variants = [spec, *variants] if spec.name == "base" else [*variants, spec]
    budgets = sorted(
        {it.budget if it.budget is not None else (budget or 0) for it in items} | set(old.config.budgets if old else [])
    )
    kw = next((r.gen_kwargs for r in reads if r.gen_kwargs), {})
    temperature = (as_float(kw.get("temperature", 1.0)) if kw.get("do_sample") else 0.0) if kw else None
    wait = max(0, as_int(kw.get("thinking_n_ignore")) or 0)
    groups = Counter(it.group or "all" for it in items if it.sample == 0)
    fmt_names = sorted({r.shape.format for r in reads if r.shape is not None})
    config = RunConfig(
        model=side.name,
        task=task or (old.config.task if old else "ingested"),
        budgets=budgets,
        samples=max(it.sample for it in items) + 1,
        parallel_budget=max(
            (b for (_, b), got in samples_by_budget(items, budget).items() if len(got) > 1), default=max(budgets)
        ),
        wait=wait,
        temperature=temperature,
        top_p=as_float(kw.get("top_p")) if kw else None,
        top_k=as_int(kw.get("top_k")) if kw else None,
        answer_max=None,
        seed=None,
        probes=probes or bool(old and old.config.probes),
        reasoning_format=",".join(fmt_names) or None,
        dtype=dtype,
    )
    return RunInfo(
        layerprobe_version=versions()["layerprobe"],
        command=["layerprobe", *argv],
        created=old.created if old else now(),
        updated=now(),
        origin="ingest",
        config=config,
        model=ModelInfo(
            id=side.name,
            source=side.source,
            source_kind=side.source_kind,
            family=side.family,
            dtype=side.dtype,
            n_layers=side.n_layers if side.n_layers is not None else (old.model.n_layers if old else None),
            reasoning_format=config.reasoning_format,
            revision=side.revision,
            tokenizer=side.tokenizer_name,
        ),
        task=TaskRecord(
            name=config.task,
            source={"source": "ingested files"},
            answer_type=answer_type,
            regime=None,
            n_problems=len({it.problem_id for it in items}),
            groups=dict(groups),
        ),
        variants=variants,
        versions=versions(),
        ingested=list(old.ingested) if old else [],
    )
