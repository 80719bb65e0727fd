"""`layerprobe analyze` as a library call: base and pruned variants on the same problems, under
thinking budgets and parallel samples, probes on, written to one resumable run directory."""

from __future__ import annotations

import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError
from layerprobe.runs.plan import (
    AnalyzeSettings,
    PlannedTrace,
    plan_traces,
    variant_name_for_drop,
)
from layerprobe.runs.schema import (
    ModelInfo,
    RunConfig,
    RunInfo,
    SampleRecord,
    TaskRecord,
    VariantSpec,
    trace_file_stem,
)
from layerprobe.runs.store import RunStore, now

# Called with (phase label, done, total) as traces finish; the CLI turns it into progress bars.
ProgressFn = Callable[[str, int, int], None]


@dataclass
class Variant:
    spec: VariantSpec
    loaded: Any  # LoadedModel


def default_out(model: str) -> Path:
    """runs/<timestamp>-<model> in the working directory."""
    import datetime as _dt

    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in Path(model).name or model)
    base = Path("runs") / f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{safe}"
    out, n = base, 1
    while out.exists():  # two runs started in the same second get their own folders
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from layerprobe import __version__

    return {
        "layerprobe": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def auto_batch_size(loaded: Any, device: Any) -> int:
    """A batch size that keeps the machine busy: wide for the tiny toy, modest for real models."""
    if loaded.source_kind == "toy":
        return 64
    return 16 if getattr(device, "type", "cpu") == "cuda" else 4


def build_variants(base: Any, s: AnalyzeSettings, progress: ProgressFn | None = None) -> list[Variant]:
    """The base model and one pruned variant per --drop list and per --method (weights shared)."""
    from layerprobe.prune.methods import prune_model
    from layerprobe.prune.surgery import drop_layers, validate_drop

    variants = [Variant(VariantSpec(name="base", n_layers=base.n_layers, layer_map=list(base.layer_map)), base)]
    for drop in s.drops:
        idx = validate_drop(drop, base)
        pruned = drop_layers(base, idx)
        variants.append(Variant(VariantSpec(name=variant_name_for_drop(idx), dropped=idx, n_layers=pruned.n_layers,
                                            layer_map=list(pruned.layer_map)), pruned))
    calibration = None
    if s.methods:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import get_method

        for m in s.methods:
            get_method(m)  # unknown names fail before any work
        if any(get_method(m).needs_calibration for m in s.methods):
            if progress:
                progress("calibration", 0, 1)
            calibration = resolve_calibration(base, file=s.calib, traces=s.calib_traces)
            if progress:
                progress("calibration", 1, 1)
    names = [v.spec.name for v in variants]
    if len(set(names)) < len(names):
        raise UserError("--drop: the same layers are given twice (" + ", ".join(n for n in names if names.count(n) > 1) + ")")
    for m in s.methods:
        pruned, sel = prune_model(base, m, s.n_drop, calibration)
        name = f"{m}-{len(pruned.dropped)}"
        variants.append(Variant(VariantSpec(name=name, dropped=list(pruned.dropped), method=m, n_drop=s.n_drop,
                                            calibration=pruned.calibration, n_layers=pruned.n_layers,
                                            layer_map=list(pruned.layer_map), selection=sel.to_json()), pruned))
    return variants


def _run_config(s: AnalyzeSettings, fmt_name: str, sampling: Any) -> RunConfig:
    return RunConfig(
        model=s.model, drops=s.drops, method=",".join(s.methods) or None, n_drop=s.n_drop,
        calibration=s.calib or (f"traces:{s.calib_traces}" if s.calib_traces else None),
        task=s.task, task_file=s.task_file, limit=s.limit, budgets=s.budgets, samples=s.samples,
        parallel_budget=s.parallel_budget, wait=s.wait, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, answer_max=s.answer_max, seed=s.seed, probes=s.probes, lens=s.lens,
        lens_every=s.lens_every, teacher_forced=s.teacher_forced, reasoning_format=fmt_name, dtype=s.dtype,
    )


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


class Analysis:
    """One analysis run: set up with the settings, then `run()`."""

    def __init__(self, settings: AnalyzeSettings, progress: ProgressFn | None = None, argv: list[str] | None = None) -> None:
        settings.check()
        self.s = settings
        self.progress = progress or (lambda *_: None)
        self.argv = argv if argv is not None else list(sys.argv)
        self.timings: dict[str, float] = {}

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        from layerprobe.models.loading import load_model
        from layerprobe.scaling.formats import Sampling, detect_format
        from layerprobe.tasks.registry import TASKS, load_problems

        s = self.s
        if s.task is not None and s.task not in TASKS:
            raise UserError(f"--task {s.task}: unknown task (valid: {', '.join(TASKS)}; see `layerprobe tasks`)")
        from layerprobe.runs.store import check_out_dir

        self.out = Path(s.out) if s.out is not None else default_out(s.model)
        check_out_dir(self.out)  # before minutes of loading
        t0 = time.perf_counter()
        self.progress("loading model", 0, 1)
        base = load_model(s.model, device=s.device, dtype=s.dtype)
        self.progress("loading model", 1, 1)
        if base.source_kind == "toy":
            import torch

            # The toy's matmuls are tiny: a second thread mostly waits on the first (on a busy 2-core
            # machine a forward pass took many times longer on two threads), so the toy runs on one.
            torch.set_num_threads(1)
        s.resolve(is_toy=base.source_kind == "toy")  # a default task is always a known one
        self.fmt = detect_format(base.tokenizer, s.reasoning_format or base.reasoning_format)
        d = self.fmt.sampling
        self.sampling = Sampling(
            temperature=d.temperature if s.temperature is None else s.temperature,
            top_p=d.top_p if s.top_p is None else s.top_p,
            top_k=d.top_k if s.top_k is None else s.top_k,
        )
        self.task, self.problems, source = load_problems(s.task, s.limit, s.seed, s.task_file)
        if not self.problems:
            raise UserError(f"--task {s.task}: no problems to run")
        dup = sorted(pid for pid, n in Counter(p.id for p in self.problems).items() if n > 1)
        if dup:
            raise UserError(f"--task {s.task}: problem ids must be unique; repeated: {', '.join(dup[:5])}")
        self.base = base
        self.variants = build_variants(base, s, self.progress)
        self.timings["setup"] = time.perf_counter() - t0
        groups: dict[str, int] = {}
        for p in self.problems:
            groups[p.group or "all"] = groups.get(p.group or "all", 0) + 1
        self.plan = plan_traces([p.id for p in self.problems], s.budgets, s.samples, s.parallel_budget, s.seed)
        self.info = RunInfo(
            layerprobe_version=_versions()["layerprobe"], command=["layerprobe", *self.argv[1:]], created=now(),
            updated=now(), config=_run_config(s, self.fmt.name, self.sampling),
            model=ModelInfo(id=s.model, source=base.source, source_kind=base.source_kind, family=base.family,
                            dtype=str(base.dtype).removeprefix("torch."), n_layers=base.n_layers_original,
                            reasoning_format=self.fmt.name, revision=base.revision),
            task=TaskRecord(name=self.task.name, source=source, answer_type=self.task.answer_type,
                            regime=self.task.regime, n_problems=len(self.problems), groups=groups),
            variants=[v.spec for v in self.variants], versions=_versions(),
            expected_traces=len(self.plan) * len(self.variants),
        )
        self.store = RunStore.open(self.out, self.info, force=s.force)
        self.batch_size = s.batch_size or auto_batch_size(base, base.device)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Path:
        """Generate every missing trace, compare, summarise and report; returns the run directory."""
        import torch

        from layerprobe.runs.summarize import write_metrics

        threads = torch.get_num_threads()
        try:
            self.prepare()
        except BaseException:
            torch.set_num_threads(threads)
            raise
        status = "interrupted"
        try:
            for i, v in enumerate(self.variants):
                if i > 0 and self.s.probes and self.s.teacher_forced:
                    t0 = time.perf_counter()
                    self._teacher_forced(v)
                    self._add_time(f"teacher-forced {v.spec.name}", t0)
                t0 = time.perf_counter()
                self._generate_variant(v)
                self._add_time(f"generate {v.spec.name}", t0)
            if self.s.probes:
                self._aggregate_layers()
            status = "complete"
        except Exception:
            status = "failed"  # an error, not a stop asked for (Ctrl-C / SIGTERM stay "interrupted"); resumable
            raise
        finally:
            torch.set_num_threads(threads)
            total = dict(self.info.timings)  # a resumed run adds its time to the earlier sessions'
            for k, v in self.timings.items():
                total[k] = round(total.get(k, 0.0) + v, 2)
            self.info.timings = total
            self.store.close(status)
            write_metrics(self.out, self.info)
        if self.s.report:
            from layerprobe.report import render_report

            t0 = time.perf_counter()
            self.report_path = render_report([self.out])
            self.timings["report"] = time.perf_counter() - t0
        return self.out

    def _add_time(self, what: str, t0: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0

    def _generate_variant(self, v: Variant) -> None:
        """Sequential traces first, then parallel ones (whose sample 0 may reuse a sequential trace)."""
        name = v.spec.name
        total = len(self.plan)
        label = f"{name}: generating"
        state = {"done": sum(1 for t in self.plan if self.store.has((name, t.problem_id, t.mode, t.budget, t.sample)))}
        self.progress(label, state["done"], total)
        for mode in ("sequential", "parallel"):
            todo: list[PlannedTrace] = []
            for t in self.plan:
                if t.mode != mode or self.store.has((name, t.problem_id, t.mode, t.budget, t.sample)):
                    continue
                if mode == "parallel" and t.sample == 0 and self._reuse_sequential(v, t):
                    state["done"] += 1
                    continue
                todo.append(t)
            self.progress(label, state["done"], total)
            if todo:
                self._generate(v, todo, label, total, state)

    def _generate(self, v: Variant, todo: list[PlannedTrace], label: str, total: int, state: dict[str, int]) -> None:
        from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt

        problems = {p.id: p for p in self.problems}
        tok = v.loaded.tokenizer
        prompts = {p.id: build_prompt(tok, self.fmt, p.question) for p in self.problems}
        gen = TraceGenerator(v.loaded.model, tok, self.fmt, self.sampling)
        requests = [GenRequest(key=t, prompt=prompts[t.problem_id], budget=t.budget, seed=t.seed, wait=self.s.wait,
                               answer_max=self.s.answer_max) for t in todo]
        probe = self._probe(v)
        grader = self._grader()
        try:
            pending = list(requests)
            batch = self.batch_size
            while pending:
                finished: set[Any] = set()

                def on_result(res: Any) -> None:
                    t: PlannedTrace = res.key
                    self._write_trace(v, t, problems[t.problem_id], res, probe, grader)
                    finished.add(t)
                    state["done"] += 1
                    self.progress(label, state["done"], total)

                try:
                    gen.generate(pending, batch_size=batch, observers=[probe] if probe is not None else (), on_result=on_result)
                    pending = []
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, with a smaller batch
                    if not _is_oom(exc) or batch == 1:
                        raise
                    _free_memory()
                    batch = max(1, batch // 2)
                    self.batch_size = batch
                    pending = [r for r in pending if r.key not in finished]
                    if probe is not None:
                        probe.reset()
        finally:
            if probe is not None:
                probe.close()
            if grader is not None:
                grader.close()

    def _reuse_sequential(self, v: Variant, t: PlannedTrace) -> bool:
        """Parallel sample 0 at a budget that the sequential runs also used is the same trace
        (same seed, same budget): copy it instead of generating it again."""
        seq_key = (v.spec.name, t.problem_id, "sequential", t.budget, 0)
        if not self.store.has(seq_key):
            return False
        rec = self._record(seq_key)
        if rec is None:
            return False
        self.store.append(rec.model_copy(update={"mode": "parallel"}))
        return True

    def _record(self, key: tuple) -> SampleRecord | None:
        from layerprobe.runs.store import read_samples

        if not hasattr(self, "_records_cache") or key not in self._records_cache:
            self._records_cache = {r.key(): r for r in read_samples(self.out)}
        return self._records_cache.get(key)

    def _grader(self) -> Any:
        if self.task.answer_type != "math":
            return None
        from layerprobe.tasks.grading import MathGrader

        return MathGrader()

    def _probe(self, v: Variant) -> Any:
        if not self.s.probes:
            return None
        from layerprobe.runs.probing import ProbeSession

        return ProbeSession(v.loaded, lens=self.s.lens, lens_every=self.s.lens_every)

    def _write_trace(self, v: Variant, t: PlannedTrace, problem: Any, res: Any, probe: Any, grader: Any) -> None:
        from layerprobe.metrics.summary import trace_metrics
        from layerprobe.tasks.grading import grade

        layers_file = None
        if probe is not None:
            rel = Path("layers") / v.spec.name / f"{trace_file_stem(t.problem_id, t.mode, t.budget, t.sample)}.npz"
            if probe.save(res.key, self.out / rel):
                layers_file = rel.as_posix()
        tf = self._tf_rel(v, t.problem_id, t.mode, t.budget, t.sample)
        tf_file = tf.as_posix() if (self.out / tf).is_file() else None
        g = grade(self.task.answer_type, problem.gold, res.answer_text, grader, n_choices=len(problem.choices) or 4)
        m = trace_metrics(res.thinking_text, res.thinking_ids, res.thinking_tokens)
        rec = SampleRecord(
            variant=v.spec.name, problem_id=t.problem_id, group=problem.group, mode=t.mode, budget=t.budget,
            sample=t.sample, seed=t.seed, prompt_tokens=res.prompt_tokens, thinking_tokens=res.thinking_tokens,
            answer_tokens=res.answer_tokens, finish=res.finish, budget_hit=res.budget_hit, waits=res.waits, answer=g.extracted, gold=problem.gold,
            correct=g.correct, reflections=m["reflections"], repetition=m["repetition"],
            self_bleu_within=_nan_to_none(m["self_bleu_within"]), thinking_text=res.thinking_text, text=res.text,
            layers_file=layers_file, tf_file=tf_file,
        )
        self.store.append(rec)

    def _tf_rel(self, v: Variant, problem_id: str, mode: str, budget: int, sample: int) -> Path:
        return Path("layers") / v.spec.name / "tf" / f"{trace_file_stem(problem_id, mode, budget, sample)}.npz"

    def _teacher_forced(self, v: Variant) -> None:
        """The pruned model run over the base model's sequential traces at the largest budget (exact
        token ids from the base trace's probe file); one file per trace, skipped when present."""
        from layerprobe.runs.probing import teacher_forced_file
        from layerprobe.runs.store import read_samples
        from layerprobe.scaling.engine import build_prompt

        base_recs = [r for r in read_samples(self.out) if r.variant == "base" and r.mode == "sequential"
                     and r.budget == self.s.budgets[-1] and r.layers_file]
        label = f"{v.spec.name}: teacher-forced on base traces"
        tok = self.base.tokenizer
        problems = {p.id: p for p in self.problems}
        for i, r in enumerate(base_recs):
            self.progress(label, i, len(base_recs))
            rel = self._tf_rel(v, r.problem_id, r.mode, r.budget, r.sample)
            if (self.out / rel).is_file():
                continue
            prompt_ids = tok.encode(build_prompt(tok, self.fmt, problems[r.problem_id].question), add_special_tokens=False)
            teacher_forced_file(self.base, v.loaded, prompt_ids, self.out / r.layers_file, self.out / rel)
        self.progress(label, len(base_recs), len(base_recs))

    def _aggregate_layers(self) -> None:
        from layerprobe.runs.probing import write_layer_aggregates
        from layerprobe.runs.store import read_samples

        records = read_samples(self.out)
        for v in self.variants:
            write_layer_aggregates(self.out, v.spec, v.loaded, [r for r in records if r.variant == v.spec.name],
                                   self.base.n_layers_original)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def analyze(settings: AnalyzeSettings, progress: ProgressFn | None = None, argv: list[str] | None = None) -> Analysis:
    """Run an analysis end to end; returns the finished Analysis (its `.out` is the run directory)."""
    a = Analysis(settings, progress, argv)
    a.run()
    return a
