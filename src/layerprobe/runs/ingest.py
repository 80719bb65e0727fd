"""`layerprobe ingest`: traces generated elsewhere (lm-evaluation-harness, vLLM, s1's scripts) read into
a normal run directory, graded by layerprobe, with trace metrics and probes by prefill (docs/ingest.md).

Each ingest adds one variant (its `--label`) to the run in `--out`; several ingests (base and pruned,
from the same or different files) compare in one report. The first variant ingested into a run
becomes its base unless a later ingest is labelled `base` (the base is always listed first).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layerprobe.errors import UserError
from layerprobe.runs.schema import (
    IngestSource,
    ModelInfo,
    RunConfig,
    RunInfo,
    SampleRecord,
    TaskRecord,
    VariantSpec,
    trace_file_stem,
)
from layerprobe.runs.store import ProgressFn, RunStore, is_run_dir, now, read_run_info

FORMATS_IN = ("lm-eval", "jsonl")
JSONL_FIELDS = ("id", "prompt", "completion")
FLUSH_EVERY = 64
"""Traces probed and written together; an interrupted ingest loses at most this many (they are redone)."""


@dataclass
class Item:
    """One trace read from a file, before grading and probing."""

    problem_id: str
    prompt: str
    completion: str
    gold: str
    group: str
    sample: int
    budget: int | None
    line: int
    external: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None
    """The prompt's token ids, when the file gives them (then the text is not re-tokenized)."""
    completion_ids: list[int] | None = None
    """The completion's token ids as generated, when the file gives them."""


@dataclass
class Read:
    """What one file gave: its traces, the lines left out (by reason), and what it says about its producer."""

    items: list[Item]
    skipped: Counter[str]
    producer: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    special_tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Special tokens of the producer's tokenizer, as the file records them: name -> (text, id)."""


def _lines(path: Path) -> list[tuple[int, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    out = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError):
            out.append((n, None))
    return out


def read_lm_eval(path: Path) -> Read:
    """A `samples_<task>_<date>.jsonl` of lm-evaluation-harness 0.4 (`--log_samples`): generate_until
    lines only; the prompt is arguments.gen_args_0.arg_0, the completions resps[0] (several with
    `repeats`: samples 0..K-1), the gold `target`; the harness's own metric values are kept."""
    lines = _lines(path)
    task = path.name.removeprefix("samples_").rsplit("_", 1)[0] if path.name.startswith("samples_") else path.stem
    read = Read(items=[], skipped=Counter())
    looks_right = 0
    for n, row in lines:
        if not isinstance(row, dict):
            read.skipped["not JSON"] += 1
            continue
        if not {"doc_id", "arguments", "resps", "target"} <= set(row):
            read.skipped["missing doc_id / arguments / resps / target"] += 1
            continue
        looks_right += 1
        args = row["arguments"]
        first = args.get("gen_args_0") if isinstance(args, dict) else None
        if not isinstance(first, dict) or not isinstance(first.get("arg_0"), str) or not isinstance(first.get("arg_1"), dict):
            read.skipped["not a generate_until request (multiple choice / loglikelihood)"] += 1
            continue
        resps = row["resps"][0] if isinstance(row["resps"], list) and row["resps"] else []
        if not isinstance(resps, list) or not all(isinstance(r, str) for r in resps) or not resps:
            read.skipped["no completion"] += 1
            continue
        kwargs = first["arg_1"]
        read.gen_kwargs = kwargs
        budget = kwargs.get("max_gen_toks")
        metrics = {k: v for k, v in row.items() if k in (row.get("metrics") or []) and isinstance(v, (int, float))}
        for s, completion in enumerate(resps):
            read.items.append(
                Item(
                    problem_id=f"{task}-{row['doc_id']}",
                    prompt=first["arg_0"],
                    completion=completion,
                    gold=str(row["target"]),
                    group=task,
                    sample=s,
                    budget=int(budget) if isinstance(budget, int) else None,
                    line=n,
                    external={
                        "source": "lm-eval",
                        "file": str(path),
                        "line": n,
                        "doc_id": row["doc_id"],
                        "metrics": metrics,
                        "filter": row.get("filter"),
                        "doc_hash": row.get("doc_hash"),
                        "prompt": first["arg_0"],
                        "gen_kwargs": kwargs,
                    },
                )
            )
    if looks_right == 0:
        raise UserError(
            f"{path} is not an lm-evaluation-harness samples file (no line has doc_id, arguments, resps and target); "
            "use --from jsonl for other files"
        )
    _read_results(path, read)
    return read


def _read_results(samples: Path, read: Read) -> None:
    """The producer and its tokenizer's special tokens from the results_<date>.json written next to a
    samples file in the same run (same date suffix), else the newest one in the folder."""
    date = samples.stem.rsplit("_", 1)[-1]
    candidates = [samples.parent / f"results_{date}.json"] + sorted(samples.parent.glob("results_*.json"), reverse=True)
    for results in candidates:
        if not results.is_file():
            continue
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        cfg = data.get("config")
        args = cfg.get("model_args") if isinstance(cfg, dict) else None
        if isinstance(args, dict):
            read.producer = str(args.get("pretrained") or args.get("model") or args) or None
        elif isinstance(args, str) and args:
            parts = dict(p.split("=", 1) for p in args.split(",") if "=" in p)
            read.producer = parts.get("pretrained") or parts.get("model") or args
        for name in ("eos", "bos", "pad"):
            pair = data.get(f"tokenizer_{name}_token")
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and str(pair[1]).lstrip("-").isdigit():
                read.special_tokens[name] = (pair[0], int(pair[1]))
        return


def tokenizer_warnings(tokenizer: Any, read: Read) -> list[str]:
    """Evidence that the traces come from a model with another tokenizer: a special token the file
    records whose text maps to another id (or to nothing) in `tokenizer`."""
    out = []
    for name, (text, tid) in read.special_tokens.items():
        if tid < 0:
            continue
        mine = tokenizer.convert_tokens_to_ids(text) if text else None
        if mine is None or mine != tid or mine == getattr(tokenizer, "unk_token_id", object()):
            out.append(
                f"the traces' tokenizer has {name} token {text!r} = id {tid}, the --model tokenizer {mine}: "
                "the traces may come from another model (probes assume --model produced them)"
            )
    return out


def read_jsonl(path: Path) -> Read:
    """One object per line: id, prompt, completion, and optionally gold, group, budget, sample, model,
    prompt_ids and completion_ids (the token ids as generated; docs/ingest.md)."""
    read = Read(items=[], skipped=Counter())
    any_object = False
    for n, row in _lines(path):
        if not isinstance(row, dict):
            read.skipped["not a JSON object"] += 1
            continue
        any_object = True
        missing = [k for k in JSONL_FIELDS if not isinstance(row.get(k), (str, int)) or row.get(k) == ""]
        if missing:
            read.skipped[f"missing {', '.join(missing)}"] += 1
            continue
        budget, sample = row.get("budget"), row.get("sample", 0)
        if (budget is not None and not isinstance(budget, int)) or not isinstance(sample, int) or sample < 0:
            read.skipped["budget / sample not integers"] += 1
            continue
        ids = {k: row.get(k) for k in ("prompt_ids", "completion_ids")}
        if any(
            v is not None and (not isinstance(v, list) or not v or not all(isinstance(t, int) and t >= 0 for t in v))
            for v in ids.values()
        ):
            read.skipped["prompt_ids / completion_ids not lists of token ids"] += 1
            continue
        ext = {"source": "jsonl", "file": str(path), "line": n, "prompt": str(row["prompt"])}
        if row.get("model"):
            read.producer = str(row["model"])
        read.items.append(
            Item(
                problem_id=str(row["id"]),
                prompt=str(row["prompt"]),
                completion=str(row["completion"]),
                gold=str(row.get("gold", "")),
                group=str(row.get("group", "")),
                sample=sample,
                budget=budget,
                line=n,
                external=ext,
                prompt_ids=ids["prompt_ids"],
                completion_ids=ids["completion_ids"],
            )
        )
    if not any_object:
        raise UserError(
            f"{path} holds no JSON object lines (expected one object per line: id, prompt, completion[, gold, group, budget, sample])"
        )
    return read


def split_trace(fmt: Any, completion: str) -> tuple[str, str, bool]:
    """(thinking text, answer text, whether thinking ended) of a completion in a reasoning format. A
    completion with no end of thinking is taken as cut at its budget: all thinking, no answer."""
    at = [(completion.find(s), s) for s in fmt.end_think if s in completion]
    if not at:
        return completion, "", False
    i, s = min(at)
    answer = completion[i:]
    opener = fmt.answer_open if fmt.answer_open.startswith(s) else s
    answer = answer[len(opener) :] if answer.startswith(opener) else answer[len(s) :]
    return completion[:i], answer, True


def _find(ids: Sequence[int], sub: Sequence[int]) -> int:
    """First index of `sub` in `ids`, -1 when absent."""
    n = len(sub)
    return next((i for i in range(len(ids) - n + 1) if n and list(ids[i : i + n]) == list(sub)), -1)


def split_ids(tokenizer: Any, fmt: Any, ids: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(thinking ids, answer ids) of a generated completion: split at the first end-of-thinking
    delimiter spelled as tokens, the answer after the answer opener, without a final stop token;
    None when no delimiter occurs as a token sequence."""
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)
    found = [(i, d) for d in (enc(s) for s in fmt.end_think) if (i := _find(ids, d)) >= 0]
    if not found:
        return None
    i, d = min(found, key=lambda x: x[0])
    opener = enc(fmt.answer_open)
    rest = list(ids[i:])
    answer = rest[len(opener) :] if rest[: len(opener)] == opener else rest[len(d) :]
    if answer and answer[-1] == tokenizer.eos_token_id:
        answer = answer[:-1]
    return list(ids[:i]), answer


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def ingest(
    files: Sequence[Path],
    source_format: str,
    model: str,
    out: Path,
    *,
    label: str | None = None,
    drop: Sequence[int] | None = None,
    method: str | None = None,
    n_drop: int = 2,
    answer_type: str | None = None,
    task: str | None = None,
    reasoning_format: str | None = None,
    budget: int | None = None,
    probes: bool = True,
    lens: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 8,
    force: bool = False,
    progress: ProgressFn | None = None,
    argv: Sequence[str] = (),
) -> tuple[Path, IngestSource]:
    """Read `files` into the run at `out` as one variant; returns the run directory and what was read.
    `batch_size`: traces per prefill forward pass (halved on out-of-memory)."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, validate_drop
    from layerprobe.runs.records import trace_fields
    from layerprobe.runs.store import check_out_dir
    from layerprobe.scaling.formats import detect_format
    from layerprobe.tasks.grading import MathGrader, grade, grade_trace
    from layerprobe.tasks.registry import TASKS

    if source_format not in FORMATS_IN:
        raise UserError(f"--from {source_format}: valid formats are {', '.join(FORMATS_IN)}")
    for f in files:
        if not Path(f).is_file():
            raise UserError(f"{f}: no such file")
    if task is not None and task not in TASKS:
        raise UserError(f"--task {task}: unknown task (valid: {', '.join(TASKS)})")
    answer_type = answer_type or (TASKS[task].answer_type if task else "math")
    if answer_type not in ("integer", "math", "mc", "digit"):
        raise UserError(f"--answer-type {answer_type}: valid types are integer, math, mc, digit")
    check_out_dir(out, allow_orphan=force)
    reads = [(Path(f), read_lm_eval(Path(f)) if source_format == "lm-eval" else read_jsonl(Path(f))) for f in files]
    items = [it for _, r in reads for it in r.items]
    if not items:
        reasons = Counter[str]()
        for _, r in reads:
            reasons.update(r.skipped)
        raise UserError(f"no trace could be read from {', '.join(map(str, files))} ({dict(reasons)})")
    base = load_model(model, device=device, dtype=dtype)
    from layerprobe.runs.execute import set_threads_for

    set_threads_for(base)
    loaded = base
    dropped: list[int] = list(base.dropped)
    if drop:
        dropped = validate_drop(list(drop), base)
        loaded = drop_layers(base, dropped)
    elif method:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import get_method, prune_model

        cal = (
            resolve_calibration(base, traces=32 if base.source_kind == "toy" else None)
            if get_method(method).needs_calibration
            else None
        )
        loaded, _ = prune_model(base, method, n_drop, cal)
        dropped = list(loaded.dropped)
    fmt = detect_format(loaded.tokenizer, reasoning_format or loaded.reasoning_format)
    name = label or ("base" if not dropped else (f"{method}-{len(dropped)}" if method else "drop-" + "-".join(map(str, dropped))))
    spec = VariantSpec(
        name=name,
        dropped=dropped,
        n_layers=loaded.n_layers,
        layer_map=list(loaded.layer_map),
        checkpoint=str(model) if Path(model).is_dir() else None,
    )
    producer = next((r.producer for _, r in reads if r.producer), None)
    info = _run_info(out, spec, base, model, fmt.name, task, answer_type, items, reads, budget, dtype, argv)
    store = RunStore.open(out, info, force=force, extend=True)
    tok = loaded.tokenizer
    skipped: Counter[str] = Counter()
    warnings: list[str] = []
    for _, r in reads:
        skipped.update(r.skipped)
        warnings += [w for w in tokenizer_warnings(tok, r) if w not in warnings]
    samples_of: dict[str, set[int]] = {}
    for it in items:
        samples_of.setdefault(it.problem_id, set()).add(it.sample)
    seen: set[tuple[str, int | None, int]] = set()
    grader = MathGrader() if answer_type == "math" else None
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    vocab = int(loaded.model.get_output_embeddings().weight.shape[0])  # rows of the unembedding
    n_new = 0
    status = "interrupted"
    todo: list[tuple[SampleRecord, list[int], list[int]]] = []

    def flush() -> None:
        """Probe the traces read so far (batched prefill), then write their records: arrays first."""
        nonlocal n_new
        layers: dict[int, str] = {}
        if probes and todo:
            from layerprobe.probe.prefill import PrefillItem, prefill_many
            from layerprobe.probe.store import save_trace_layers

            batch = [PrefillItem(i, p, t) for i, (_, p, t) in enumerate(todo)]
            for tl in prefill_many(loaded, batch, lens=lens, batch_size=batch_size):
                index = int(tl.key)
                rec = todo[index][0]
                rel = f"layers/{name}/{trace_file_stem(rec.problem_id, rec.mode, rec.budget, rec.sample)}.npz"
                tl.key = Path(rel).stem
                save_trace_layers(out / rel, tl)
                layers[index] = rel
        for i, (rec, _, _) in enumerate(todo):
            store.append(rec.model_copy(update={"layers_file": layers.get(i)}) if layers else rec)
            n_new += 1
        todo.clear()

    try:
        for i, it in enumerate(items):
            if progress:
                progress(f"ingest {name}", i, len(items))
            b = it.budget if it.budget is not None else (budget if budget is not None else 0)
            if (it.problem_id, b, it.sample) in seen:
                skipped["the same id, budget and sample again (the first kept)"] += 1
                continue
            seen.add((it.problem_id, b, it.sample))
            mode: Literal["sequential", "parallel"] = "parallel" if len(samples_of[it.problem_id]) > 1 else "sequential"
            if store.has((name, it.problem_id, mode, b, it.sample)):
                continue
            thinking, answer, ended = split_trace(fmt, it.completion)
            prompt_ids = it.prompt_ids or tok.encode(it.prompt, add_special_tokens=False)
            all_ids = it.completion_ids or tok.encode(it.completion, add_special_tokens=False)
            parts = split_ids(tok, fmt, all_ids) if it.completion_ids and ended else None
            if parts is not None:
                think_ids, answer_ids = parts
            else:
                think_ids = tok.encode(thinking, add_special_tokens=False) if ended else list(all_ids)
                answer_ids = tok.encode(answer, add_special_tokens=False) if answer else []
                if answer_ids and answer_ids[-1] == tok.eos_token_id:  # the stop token is not part of the answer
                    answer_ids = answer_ids[:-1]
            if max(prompt_ids + list(all_ids), default=0) >= vocab:
                skipped["token ids outside the model's vocabulary (another tokenizer?)"] += 1
                continue
            if context is not None and len(prompt_ids) + len(all_ids) > context:
                skipped[f"longer than the model's context ({context} tokens)"] += 1
                continue
            if not prompt_ids or not all_ids:
                skipped["empty prompt or completion"] += 1
                continue
            thinking = tok.decode(think_ids, skip_special_tokens=False)  # as the engine records it (no decode artefacts)
            g = (
                grade_trace(answer_type, it.gold, answer, thinking, grader)
                if ended
                else grade(answer_type, it.gold, it.completion, grader)
            )
            m = trace_fields(thinking, think_ids, lambda ids: tok.decode(ids, skip_special_tokens=False))
            todo.append(
                (
                    SampleRecord(
                        variant=name,
                        problem_id=it.problem_id,
                        group=it.group,
                        mode=mode,
                        budget=b,
                        sample=it.sample,
                        seed=0,
                        prompt_tokens=len(prompt_ids),
                        thinking_tokens=len(think_ids),
                        answer_tokens=len(answer_ids),
                        finish="answered" if ended else "budget",
                        budget_hit=not ended,
                        answer=g.extracted,
                        extraction=g.rule,
                        gold=it.gold,
                        correct=g.correct,
                        **m,
                        thinking_text=thinking,
                        text=it.completion,
                        layers_file=None,
                        origin="ingested",
                        external=it.external,
                    ),
                    prompt_ids,
                    all_ids,
                )
            )
            if len(todo) >= FLUSH_EVERY:
                flush()
        flush()
        if progress:
            progress(f"ingest {name}", len(items), len(items))
        src = IngestSource(
            path=", ".join(str(f) for f, _ in reads),
            sha1=",".join(_sha1(f) for f, _ in reads),
            format=source_format,
            variant=name,
            traces=n_new,
            skipped=dict(skipped),
            producer=producer,
            warnings=warnings,
        )
        store.info.ingested = [s for s in store.info.ingested if s.variant != name] + [src]
        store.info.expected_traces = None
        status = "complete"
    finally:
        if grader is not None:
            grader.close()
        store.close(status)
    _after(out, base, probes)
    return out, src


def _run_info(
    out: Path,
    spec: VariantSpec,
    base: Any,
    model: str,
    fmt_name: str,
    task: str | None,
    answer_type: str,
    items: Sequence[Item],
    reads: Sequence[tuple[Path, Read]],
    budget: int | None,
    dtype: str,
    argv: Sequence[str],
) -> RunInfo:
    """run.json for the run with this variant added (the base listed first)."""
    from layerprobe.runs.analyze import _versions

    old = read_run_info(out) if is_run_dir(out) else None
    if old is not None and old.origin != "ingest":
        raise UserError(f"{out} holds a run written by `layerprobe analyze`; ingest into another --out")
    if old is not None and old.model.n_layers != base.n_layers_original:
        raise UserError(f"{out} holds traces of a {old.model.n_layers}-layer model; --model {model} has {base.n_layers_original}")
    variants = [v for v in (old.variants if old else []) if v.name != spec.name]
    variants = [spec, *variants] if spec.name == "base" else [*variants, spec]
    budgets = sorted(
        {it.budget if it.budget is not None else (budget or 0) for it in items} | set(old.config.budgets if old else [])
    )
    kw = next((r.gen_kwargs for _, r in reads if r.gen_kwargs), {})
    temperature = (float(kw.get("temperature", 1.0)) if kw.get("do_sample") else 0.0) if kw else None
    groups = Counter(it.group or "all" for it in items if it.sample == 0)
    config = RunConfig(
        model=model,
        task=task or (old.config.task if old else "ingested"),
        budgets=budgets,
        samples=max(it.sample for it in items) + 1,
        parallel_budget=max(budgets),
        temperature=temperature,
        top_p=kw.get("top_p") if kw else None,
        top_k=kw.get("top_k") if kw else None,
        answer_max=None,
        seed=None,
        probes=True,
        reasoning_format=fmt_name,
        dtype=dtype,
    )
    return RunInfo(
        layerprobe_version=_versions()["layerprobe"],
        command=["layerprobe", *argv],
        created=old.created if old else now(),
        updated=now(),
        origin="ingest",
        config=config,
        model=ModelInfo(
            id=model,
            source=base.source,
            source_kind=base.source_kind,
            family=base.family,
            dtype=str(base.dtype).removeprefix("torch."),
            n_layers=base.n_layers_original,
            reasoning_format=fmt_name,
            revision=base.revision,
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
        versions=_versions(),
        ingested=list(old.ingested) if old else [],
    )


def _after(out: Path, base: Any, probes: bool) -> None:
    """Teacher-forced comparison of every pruned variant (one that lacks original layers of `base`, the
    full model in memory) along the base traces it shares a key with, where not done yet; per-layer
    aggregates and metrics for every variant of the run."""
    from layerprobe.prune.surgery import drop_layers
    from layerprobe.runs.probing import write_layer_aggregates
    from layerprobe.runs.reader import load_run
    from layerprobe.runs.summarize import write_metrics

    run = load_run(out, extras=False)
    base_name = run.base
    base_spec = run.variants[0]
    if probes and not base.dropped and not base_spec.dropped:
        from layerprobe.probe.store import load_trace_layers
        from layerprobe.probe.teacher import save_teacher_forced, teacher_forced_many
        from layerprobe.runs.schema import teacher_forced_file

        tok = base.tokenizer
        pruned = [v for v in run.variants[1:] if v.dropped and v.checkpoint is None]
        keys = {v.name: {r.key()[1:] for r in run.samples if r.variant == v.name and r.layers_file} for v in pruned}
        model_of = {v.name: drop_layers(base, v.dropped) for v in pruned}  # built once, shared by every trace
        for r in run.samples:
            if r.variant != base_name or not r.layers_file:
                continue
            todo = [
                v
                for v in pruned
                if r.key()[1:] in keys[v.name]
                and not (out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample)).is_file()
            ]
            if not todo:
                continue
            prompt = (r.external or {}).get("prompt", "")
            tokens = load_trace_layers(out / r.layers_file).tokens.tolist()
            tfs = teacher_forced_many(
                base,
                [model_of[v.name] for v in todo],
                tok.encode(prompt, add_special_tokens=False),
                tokens,
                key=trace_file_stem(r.problem_id, r.mode, r.budget, r.sample),
            )
            for v, tf in zip(todo, tfs):
                save_teacher_forced(out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample), tf)
    if probes:
        seq = [r for r in run.samples if r.variant == base_name and r.mode == "sequential"]
        top = max((r.budget for r in seq), default=None)
        base_seq = [r for r in seq if r.budget == top]
        for spec in run.variants:
            write_layer_aggregates(
                out,
                spec,
                [r for r in run.samples if r.variant == spec.name],
                run.info.model.n_layers,
                base_traces=base_seq if spec.name != base_name else (),
            )
    write_metrics(out, run.info, run.samples)
