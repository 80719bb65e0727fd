"""`layerprobe analyze` as a library call: base and pruned variants on the same problems, under
thinking budgets and parallel samples, probes on, written to one resumable run directory."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from layerprobe._version import versions
from layerprobe.data.schema import (
    ModelInfo,
    RunConfig,
    RunInfo,
    TaskRecord,
    teacher_forced_file,
)
from layerprobe.data.store import RunStore, now
from layerprobe.errors import UserError
from layerprobe.jobs.job import Job, ProgressFn
from layerprobe.jobs.plan import (
    AnalyzeSettings,
    PlannedTrace,
    plan_traces,
    resolve_probe_mode,
)
from layerprobe.jobs.variants import Variant, auto_batch_size, build_variants, record_sizes
from layerprobe.models.aliases import is_embedded
from layerprobe.probe.layer_files import DamagedFile, load_trace_tokens
from layerprobe.rules import inside

#: Settings that do not change what a run computes, left out of the default run directory's name.
_NOT_IN_NAME = {"out", "force", "report", "device", "batch_size", "workers", "ray_address", "gpus_per_worker"}
#: Settings added later, left out of the name while unset, so that an older command finds its run again.
_NEW_UNSET = {"match_layers", "sparsity", "nm"}


def default_out(s: AnalyzeSettings) -> Path:
    """runs/<model>-<hash of the settings as given>: the same command finds (and resumes) its run."""
    import dataclasses
    import hashlib
    import json

    given = {
        k: v for k, v in sorted(dataclasses.asdict(s).items()) if k not in _NOT_IN_NAME and not (k in _NEW_UNSET and v is None)
    }
    if s.task_file is not None and Path(s.task_file).is_file():  # edited task data is another run
        given["task_file_sha1"] = hashlib.sha1(Path(s.task_file).read_bytes()).hexdigest()
    digest = hashlib.sha1(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in Path(s.model).name or s.model)
    return Path("runs") / f"{safe}-{digest}"


PROMPT_ALLOWANCE = 1024
"""Positions a prompt is assumed to take when sizing a batch (chat template and problem; AIME's are ~200)."""


def run_config(s: AnalyzeSettings, fmt_name: str, sampling: Any, probe_mode: str = "live") -> RunConfig:
    """The stored configuration: every RunConfig field the settings have, plus the resolved
    sampling, format and probe mode and the method / calibration labels."""
    fields = {f: getattr(s, f) for f in RunConfig.model_fields if hasattr(s, f)}
    fields.update(
        extra_variants={name: path for name, path in s.variants},
        method=",".join(s.methods) or None,
        nm=s.nm if "nm" in s.methods else None,
        calibration=s.calib or (f"traces:{s.calib_traces}" if s.calib_traces else None),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        reasoning_format=fmt_name,
        probe_mode=probe_mode if s.probes else None,
    )
    return RunConfig(**fields)


class Analysis(Job):
    """One analysis run (the job skeleton: prepare, then open / work / close with the run locked)."""

    kind = "analyze"

    def __init__(self, settings: AnalyzeSettings, progress: ProgressFn | None = None, argv: list[str] | None = None) -> None:
        super().__init__(progress, argv if argv is not None else list(sys.argv))
        settings.check()
        self.s = settings
        self.timings: dict[str, float] = {}
        import torch

        self._threads = torch.get_num_threads()  # set back by cleanup()

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        from layerprobe.models.loading import load_model
        from layerprobe.scaling.formats import Sampling, detect_format
        from layerprobe.tasks.registry import TASKS, load_problems

        s = self.s
        if s.task is not None and s.task not in TASKS:
            raise UserError(f"--task {s.task}: unknown task (valid: {', '.join(TASKS)}; see `layerprobe tasks`)")
        from layerprobe.data.store import check_out_dir

        if s.task_file is not None:  # the whole file is checked before minutes of loading
            from layerprobe.tasks.registry import get_task, load_task_file

            name = s.task or ("toy-mix" if is_embedded(s.model) else "aime24")
            if not name.startswith("toy-"):
                load_task_file(Path(s.task_file), get_task(name))
        self.out = Path(s.out) if s.out is not None else default_out(s)
        check_out_dir(self.out, allow_orphan=s.force)  # before minutes of loading
        t0 = time.perf_counter()
        self.progress("loading model", 0, 1)
        base = load_model(s.model, device=s.device, dtype=s.dtype)
        self.progress("loading model", 1, 1)
        from layerprobe.jobs.execute import set_threads_for

        set_threads_for(base)
        s.resolve(is_toy=base.source_kind == "toy")  # a default task is always a known one
        if s.task is None or s.budgets is None or s.samples is None or s.parallel_budget is None or s.answer_max is None:
            raise RuntimeError("settings were not resolved")  # resolve() sets every one of them
        self.task_name, self.budgets, self.samples = s.task, s.budgets, s.samples
        self.parallel_budget, self.answer_max = s.parallel_budget, s.answer_max
        self.fmt = detect_format(base.tokenizer, s.reasoning_format or base.reasoning_format)
        self.probe_mode = resolve_probe_mode(s.probe_mode, base.device.type)
        from layerprobe.scaling.engine import format_tokens

        format_tokens(
            base.tokenizer, base.model, self.fmt
        )  # a format this tokenizer cannot spell fails here, before the run exists
        d = self.fmt.sampling
        self.sampling = Sampling(
            temperature=d.temperature if s.temperature is None else s.temperature,
            top_p=d.top_p if s.top_p is None else s.top_p,
            top_k=d.top_k if s.top_k is None else s.top_k,
        )
        self.task, self.problems, source = load_problems(
            self.task_name, s.limit, s.seed, Path(s.task_file) if s.task_file is not None else None
        )
        if not self.problems:
            raise UserError(f"--task {s.task}: no problems to run")
        dup = sorted(pid for pid, n in Counter(p.id for p in self.problems).items() if n > 1)
        if dup:
            raise UserError(f"--task {s.task}: problem ids must be unique; repeated: {', '.join(dup[:5])}")
        self.base = base
        self.variants = build_variants(base, s, self.progress)
        record_sizes(self.variants, base, speed=s.sweep is None, progress=self.progress)
        self.sweep_bi: list[float] | None = None
        self.sweep_calibration: dict[str, Any] | None = None
        if s.sweep is not None:
            self._sweep_scores()
        self.timings["setup"] = time.perf_counter() - t0
        groups: dict[str, int] = {}
        for p in self.problems:
            groups[p.group or "all"] = groups.get(p.group or "all", 0) + 1
        self.plan = plan_traces([p.id for p in self.problems], self.budgets, self.samples, self.parallel_budget, s.seed)
        self.info = RunInfo(
            layerprobe_version=versions()["layerprobe"],
            command=["layerprobe", *self.argv[1:]],
            created=now(),
            updated=now(),
            config=run_config(s, self.fmt.name, self.sampling, self.probe_mode),
            model=ModelInfo(
                id=s.model,
                source=base.source,
                source_kind=base.source_kind,
                family=base.family,
                dtype=str(base.dtype).removeprefix("torch."),
                n_layers=base.n_layers_original,
                reasoning_format=self.fmt.name,
                revision=base.revision,
            ),
            task=TaskRecord(
                name=self.task.name,
                source=source,
                answer_type=self.task.answer_type,
                regime=self.task.regime,
                n_problems=len(self.problems),
                groups=groups,
            ),
            variants=[v.spec for v in self.variants],
            versions=versions(),
            expected_traces=len(self.plan) * (1 if s.sweep_proxy else len(self.variants)),
        )
        self.executor = self._executor()  # Ray starts (or fails) before anything is written
        longest = max(self.budgets + [self.parallel_budget]) + int(s.answer_max or 0) + PROMPT_ALLOWANCE
        self.batch_size = s.batch_size or auto_batch_size(base, base.device, longest, s.probes)

    def open(self) -> None:
        self.store = RunStore.open(self.out, self.info, force=self.s.force)
        self.store.info.resume_command = self.resume_command()
        self.store.set_status("running")
        self.complete_before = 0 < (self.info.expected_traces or 0) <= self.store.n_done
        """Every planned trace was in the run already when this command opened it (nothing to generate)."""

    # -- running -----------------------------------------------------------------------------
    def work(self) -> Path:
        """Generate every missing trace, compare and summarise; returns the run directory.

        The report is rendered by the caller (the CLI), so that jobs never depend on the report."""
        base, pruned = self.variants[0], self.variants[1:]
        t0 = time.perf_counter()
        self._generate_variants([base])
        self._add_time(f"generate {base.spec.name}", t0)
        if pruned and self.s.probes and (self.s.teacher_forced or self.s.sweep_proxy):
            t0 = time.perf_counter()
            self._teacher_forced(pruned)
            self._add_time("teacher-forced", t0)
        if pruned and not self.s.sweep_proxy:  # the proxy generates nothing with pruned models
            t0 = time.perf_counter()
            self._generate_variants(pruned)
            self._add_time("generate " + ", ".join(v.spec.name for v in pruned), t0)
        if self.s.probes:
            self._aggregate_layers()
        missing = (self.info.expected_traces or 0) - self.store.n_done
        if missing > 0:  # never call a run complete that is not
            raise RuntimeError(f"{missing} planned traces were not written")
        return self.out

    def close(self, status: str) -> None:
        """Status, timings (a resumed run adds its time to the earlier sessions'), metrics and the sweep."""
        from layerprobe.data.summarize import write_metrics

        total = dict(self.info.timings)
        for k, secs in self.timings.items():
            total[k] = round(total.get(k, 0.0) + secs, 2)
        self.info.timings = total
        self.store.close(status)
        try:
            metrics = write_metrics(self.out, self.info, self.store.records)
            if self.s.sweep is not None:
                self._write_sweep(metrics)
            elif status == "complete":
                from layerprobe.jobs.compression import write_compression

                write_compression(self.out)
        except Exception:
            if status == "complete":
                raise
            # the run already stopped for another reason, which is the one to report

    def cleanup(self) -> None:
        import torch

        torch.set_num_threads(self._threads)
        for closing in (getattr(self, "executor", None), getattr(self, "grader", None)):
            if closing is not None:
                closing.close()

    def _sweep_scores(self) -> None:
        """Block influence of every original layer on the calibration text ShortGPT would use (what
        the sweep asks: does it predict the damage?)."""
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.scores import layer_scores

        self.progress("sweep: block influence on calibration text", 0, 1)
        cal = resolve_calibration(self.base, file=self.s.calib, traces=self.s.calib_traces)
        scores = layer_scores(self.base, cal, n_max=1)
        self.sweep_bi = list(scores.block_influence)
        self.sweep_calibration = cal.record(256)
        self.progress("sweep: block influence on calibration text", 1, 1)

    def _write_sweep(self, metrics: Any) -> None:
        from layerprobe.data.reader import read_layers
        from layerprobe.jobs.sweep import compute_sweep, write_sweep

        notes: list[str] = []
        layers = {v.spec.name: read_layers(self.out, v.spec.name, notes) for v in self.variants}
        write_sweep(
            self.out, compute_sweep(self.info, self.store.records, metrics, layers, self.sweep_bi, self.sweep_calibration)
        )

    def _add_time(self, what: str, t0: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0

    def _executor(self) -> Any:
        """Where traces are generated: in this process, or on Ray workers (--workers / --ray-address)."""
        from layerprobe.jobs.execute import InProcess, RayPool, Recipe

        if self.s.workers is None and self.s.ray_address is None:
            return InProcess({v.spec.name: v.loaded for v in self.variants})
        recipes = {v.spec.name: Recipe(v.spec.name, tuple(v.spec.dropped), v.spec.checkpoint) for v in self.variants}
        return RayPool(
            self.s.workers or 1, self.s.ray_address, self.s.model, self.s.device, self.s.dtype, self.s.gpus_per_worker, recipes
        )

    def _generate_variants(self, variants: list[Variant]) -> None:
        """Sequential traces of every variant first, then parallel ones (whose sample 0 may reuse a
        sequential trace, and, with greedy decoding, whose other samples are copies of sample 0)."""
        from layerprobe.jobs.execute import Recipe, TraceWork
        from layerprobe.scaling.engine import build_prompt

        total = sum(self._cost(t) for t in self.plan)
        labels = {v.spec.name: f"{v.spec.name}: generating (tokens, at most)" for v in variants}
        done = {
            v.spec.name: sum(
                self._cost(t) for t in self.plan if self.store.has((v.spec.name, t.problem_id, t.mode, t.budget, t.sample))
            )
            for v in variants
        }
        by_name = {v.spec.name: v for v in variants}
        problems = {p.id: p for p in self.problems}
        for name in labels:
            self.progress(labels[name], done[name], total)
        for mode in ("sequential", "parallel"):
            jobs = []
            for v in variants:
                name = v.spec.name
                todo: list[PlannedTrace] = []
                for t in self.plan:
                    if t.mode != mode or self.store.has((name, t.problem_id, t.mode, t.budget, t.sample)):
                        continue
                    if mode == "parallel" and t.sample == 0 and self._reuse_sequential(v, t):
                        done[name] += self._cost(t)
                        continue
                    if mode == "parallel" and t.sample > 0 and self.sampling.greedy and self._copy_greedy(v, t):
                        done[name] += self._cost(t)
                        continue
                    todo.append(t)
                self.progress(labels[name], done[name], total)
                if todo:
                    tok = v.loaded.tokenizer
                    prompts = {p.id: build_prompt(tok, self.fmt, p.question) for p in self.problems}
                    recipe = Recipe(name, tuple(v.spec.dropped), v.spec.checkpoint)
                    jobs.append(TraceWork(recipe, tuple((t, prompts[t.problem_id]) for t in todo), self.s.wait, self.answer_max))
            if not jobs:
                continue

            def on_trace(job: Any, t: PlannedTrace, res: Any, tl: Any) -> None:
                name = job.recipe.name
                self._write_trace(by_name[name], t, problems[t.problem_id], res, tl)
                done[name] += self._cost(t)
                self.progress(labels[name], done[name], total)

            probes = {"lens": self.s.lens, "lens_every": self.s.lens_every, "mode": self.probe_mode} if self.s.probes else None
            self.batch_size = self.executor.run(jobs, self.fmt, self.sampling, self.batch_size, probes, on_trace)

    def _cost(self, t: PlannedTrace) -> int:
        """Tokens a trace may cost, for a progress bar whose ETA means something: its budget plus the
        answer cap; a sequential trace below the largest budget is forked from it (shared prefix), so
        only its answer costs anything."""
        if t.mode == "sequential" and self.s.wait == 0 and 0 < t.budget < self.budgets[-1]:
            return self.answer_max
        return t.budget + self.answer_max

    def _copy_greedy(self, v: Variant, t: PlannedTrace) -> bool:
        """Greedy decoding makes every parallel sample the same trace: sample k is recorded as a copy
        of sample 0 (marked, so no statistic mistakes copies for independent samples)."""
        first = self.store.get((v.spec.name, t.problem_id, "parallel", t.budget, 0))
        if first is None:
            return False
        self.store.append(
            first.model_copy(update={"sample": t.sample, "seed": t.seed, "origin": "copy", "origin_key": list(first.key())})
        )
        return True

    def _reuse_sequential(self, v: Variant, t: PlannedTrace) -> bool:
        """Parallel sample 0 at a budget that the sequential runs also used is the same trace
        (same seed, same budget): copy it instead of generating it again."""
        seq_key = (v.spec.name, t.problem_id, "sequential", t.budget, 0)
        rec = self.store.get(seq_key)
        if rec is None:
            return False
        self.store.append(rec.model_copy(update={"mode": "parallel", "origin": "copy", "origin_key": list(rec.key())}))
        return True

    def _grade(self, problem: Any, answer_text: str, thinking_text: str) -> Any:
        from layerprobe.tasks.grading import MathGrader, grade_trace

        if self.task.answer_type == "math" and getattr(self, "grader", None) is None:
            self.grader = MathGrader()  # one worker process for the whole run, closed at its end
        return grade_trace(
            self.task.answer_type,
            problem.gold,
            answer_text,
            thinking_text,
            getattr(self, "grader", None),
            n_choices=len(problem.choices) or 4,
        )

    def _write_trace(self, v: Variant, t: PlannedTrace, problem: Any, res: Any, tl: Any) -> None:
        """Write one finished trace: its probe arrays `tl` (TraceLayers, or None) first, durably, then
        its samples.jsonl line."""
        from layerprobe.jobs.records import sample_record, save_layers, trace_fields

        layers_file = None
        origin_key = None
        if res.origin_key is not None:
            o: PlannedTrace = res.origin_key
            origin_key = [v.spec.name, o.problem_id, o.mode, o.budget, o.sample]
        if tl is not None:
            layers_file = save_layers(self.out, v.spec.name, t.problem_id, t.mode, t.budget, t.sample, tl)
        elif self.s.probes and res.origin == "copy" and origin_key is not None:  # the same trace: the same arrays
            src = self.store.get(tuple(origin_key))
            layers_file = src.layers_file if src is not None else None
        tf = self._tf_rel(v, t.problem_id, t.mode, t.budget, t.sample)
        tf_file = tf.as_posix() if (self.out / tf).is_file() else None
        g = self._grade(problem, res.answer_text, res.thinking_text)
        tok = v.loaded.tokenizer
        m = trace_fields(
            res.thinking_text, res.thinking_ids, lambda ids: tok.decode(ids, skip_special_tokens=False), full_text=res.text
        )
        rec = sample_record(
            v.spec.name,
            t.problem_id,
            problem.group,
            t.mode,
            t.budget,
            t.sample,
            seed=t.seed,
            tokens=(res.prompt_tokens, res.thinking_tokens, res.answer_tokens),
            finish=res.finish,
            budget_hit=res.budget_hit,
            waits=res.waits,
            grade=g,
            gold=problem.gold,
            fields=m,
            thinking_text=res.thinking_text,
            text=res.text,
            layers_file=layers_file,
            tf_file=tf_file,
            origin=res.origin,
            origin_key=origin_key,
        )
        self.store.append(rec)

    def _tf_rel(self, v: Variant, problem_id: str, mode: str, budget: int, sample: int) -> Path:
        return Path(teacher_forced_file(v.spec.name, problem_id, mode, budget, sample))

    def _teacher_forced(self, pruned: list[Variant]) -> None:
        """Every pruned model run over the base model's sequential traces at the largest budget (exact
        token ids from the base trace's probe file), the base model once per trace for all of them;
        one file per trace and variant, skipped when present."""

        from layerprobe.probe.teacher import save_teacher_forced
        from layerprobe.scaling.engine import build_prompt

        base_name = self.variants[0].spec.name
        base_recs = [
            r
            for r in self.store.records
            if r.variant == base_name
            and r.mode == "sequential"
            and r.budget == self.budgets[-1]
            and inside(self.out, r.layers_file)
        ]
        label = "teacher-forced on base traces"
        tok = self.base.tokenizer
        problems = {p.id: p for p in self.problems}
        tasks, paths = [], {}
        for r in base_recs:
            todo = [(v, self._tf_rel(v, r.problem_id, r.mode, r.budget, r.sample)) for v in pruned]
            todo = [(v, rel) for v, rel in todo if not (self.out / rel).is_file()]
            if not todo:
                continue
            prompt_ids = tok.encode(build_prompt(tok, self.fmt, problems[r.problem_id].question), add_special_tokens=False)
            assert r.layers_file is not None  # selected above
            try:
                tokens = load_trace_tokens(self.out / r.layers_file)
            except DamagedFile:  # a damaged probe file: this trace gets no teacher-forced comparison
                continue
            tasks.append((r.key(), [v.spec.name for v, _ in todo], prompt_ids, tokens))
            paths[r.key()] = [self.out / rel for _, rel in todo]
        done = len(base_recs) - len(tasks)
        self.progress(label, done, len(base_recs))
        for key, tfs in self.executor.teacher_forced(tasks):
            for tf, path in zip(tfs, paths[key]):
                save_teacher_forced(path, tf)
            done += 1
            self.progress(label, done, len(base_recs))

    def _aggregate_layers(self) -> None:
        from layerprobe.jobs.probing import write_layer_aggregates

        records = self.store.records
        base_name = self.variants[0].spec.name
        base_seq = [r for r in records if r.variant == base_name and r.mode == "sequential" and r.budget == self.budgets[-1]]
        for v in self.variants:
            mine = [r for r in records if r.variant == v.spec.name]
            write_layer_aggregates(
                self.out, v.spec, mine, self.base.n_layers_original, base_traces=base_seq if v.spec.name != base_name else ()
            )


def analyze(settings: AnalyzeSettings, progress: ProgressFn | None = None, argv: list[str] | None = None) -> Analysis:
    """Run an analysis end to end; returns the finished Analysis (its `.out` is the run directory)."""
    a = Analysis(settings, progress, argv)
    a.run()
    return a
