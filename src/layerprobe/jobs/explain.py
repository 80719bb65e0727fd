"""`layerprobe explain`: why a pruned variant fails, from interventions and predictions (docs/explain.md).

Reads a run directory (finished or partial), needs the model again (for the interventions), and
writes RUN/explain.json:

- restoration: the removed layers put back, gated per position class, teacher-forced along the base
  traces (KL recovery) and, for token classes, in free greedy generation on long chains (accuracy
  recovery; jobs.restoration);
- breaks: where failing pruned traces part from the base trace; for the toy, the first wrong step;
- compounding (toy): per-step error rate and the fit accuracy(k) = (1 - epsilon)^k;
- predictors: which measured signals announce a wrong answer (scikit-learn, grouped cross-validation;
  jobs.predictors);
- findings: the strongest of these, outside the noise, as ranked sentences for the report (data.findings).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._io import check_can_write
from layerprobe.data.findings import findings
from layerprobe.data.lock import check_free
from layerprobe.data.reader import Run, load_run
from layerprobe.data.schema import (
    Breaks,
    Compounding,
    ExplainFile,
    ExplainState,
    teacher_forced_file,
)
from layerprobe.data.store import now, write_model
from layerprobe.errors import UserError
from layerprobe.jobs.job import Job, ProgressFn, settings_differences
from layerprobe.jobs.predictors import predictors
from layerprobe.jobs.restoration import Skip, restoration_accuracy, restoration_kl, run_problems
from layerprobe.metrics.paired import N_BOOT, bootstrap, resamples
from layerprobe.metrics.token_classes import TOKEN_CLASSES
from layerprobe.rules import inside

EXPLAIN_FILE = "explain.json"


# ---------------------------------------------------------------------------------------- breaks


def breaks(run: Run) -> list[Breaks]:
    """Per pruned variant: where its failing traces part from the base trace (teacher-forced first
    departure), and for toy chains the first step written wrong."""
    from layerprobe.toy.evaluate import first_wrong_step

    budgets = run.budgets()
    if not budgets:
        return []
    out = []
    for v in run.pruned:
        la = run.layers.get(v)
        points = {t.file: t for t in (la.teacher_forced.traces if la is not None and la.teacher_forced is not None else [])}
        failing = [
            r for r in run.samples if r.variant == v and r.mode == "sequential" and r.budget == budgets[-1] and r.correct is False
        ]
        fracs: list[float] = []
        steps: list[int] = []
        for r in failing:
            pt = points.get(r.tf_file or teacher_forced_file(r.variant, r.problem_id, r.mode, r.budget, r.sample))
            if pt is not None and pt.n_tokens and pt.first_departure is not None:
                fracs.append(pt.first_departure / pt.n_tokens)
            if run.info.task.answer_type == "digit":
                steps.append(first_wrong_step(r.thinking_text))
        out.append(
            Breaks(
                variant=v,
                n_failing=len(failing),
                first_departure_fraction=list[float | None](fracs),
                median_fraction=float(statistics.median(fracs)) if fracs else None,
                median_ci=_median_ci(fracs),
                first_wrong_step=steps,
            )
        )
    return out


def _median_ci(xs: Sequence[float], seed: int = 0) -> tuple[float | None, float | None]:
    """95 % bootstrap interval of the median (None, None below 5 values)."""
    if len(xs) < 5:
        return None, None
    a = np.asarray(xs, float)
    meds = np.concatenate([np.median(a[idx], axis=1) for idx in resamples(len(a), N_BOOT, seed)])  # a block at a time
    lo, hi = np.quantile(meds, [0.025, 0.975])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------ compounding


def fit_epsilon(ks: np.ndarray, ok: np.ndarray) -> float:
    """Maximum-likelihood epsilon of P(correct | k) = (1 - epsilon)^k (golden-section on [0, 1))."""

    def nll(e: float) -> float:
        p = np.clip((1.0 - e) ** ks, 1e-12, 1 - 1e-12)
        return float(-(ok * np.log(p) + (1 - ok) * np.log(1 - p)).sum())

    lo, hi = 0.0, 0.999
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(80):
        if nll(a) < nll(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return (lo + hi) / 2


def compounding(run: Run) -> list[Compounding]:
    """Toy chains: per variant, the per-step error rate read from its traces and the fit
    accuracy(k) = (1 - epsilon)^k over chain lengths, with a likelihood-ratio test of the fit."""
    from scipy.stats import chi2

    from layerprobe.metrics.paired import proportion_interval
    from layerprobe.tasks.registry import TASKS
    from layerprobe.toy.evaluate import audit_trace

    if run.info.task.answer_type != "digit" or not run.budgets() or not run.info.task.name.startswith("toy-"):
        return []
    if run.info.task.name not in TASKS:
        return []
    steps = {p.id: int(p.meta.get("steps", 0)) for p in run_problems(run)}
    out = []
    for spec in run.variants:
        recs = [
            r
            for r in run.samples
            if r.variant == spec.name
            and r.mode == "sequential"
            and r.budget == run.budgets()[-1]
            and steps.get(r.problem_id, 0) > 0
            and r.correct is not None
        ]
        if len(recs) < 3:
            continue
        ks = np.array([steps[r.problem_id] for r in recs], float)
        ok = np.array([r.correct for r in recs], float)
        audits = [audit_trace(r.thinking_text) for r in recs]
        n_steps = sum(a.steps for a in audits)
        eps = fit_epsilon(ks, ok)

        def resampled_epsilon(i: np.ndarray, ks: np.ndarray = ks, ok: np.ndarray = ok) -> float:
            return fit_epsilon(ks[i], ok[i])

        boots = bootstrap(resampled_epsilon, len(ks), 300, seed=0)
        by_k: dict[str, tuple[int, int]] = {}
        for k in sorted(set(ks.astype(int).tolist())):
            sel = ks == k
            by_k[str(k)] = (int(ok[sel].sum()), int(sel.sum()))

        # likelihood ratio: one epsilon for all k against a free accuracy per k
        def ll(p: np.ndarray, y: np.ndarray) -> float:
            p = np.clip(p, 1e-12, 1 - 1e-12)
            return float((y * np.log(p) + (1 - y) * np.log(1 - p)).sum())

        free = np.array([by_k[str(int(k))][0] / by_k[str(int(k))][1] for k in ks])
        stat = 2 * (ll(free, ok) - ll((1 - eps) ** ks, ok))
        dof = max(1, len(by_k) - 1)
        out.append(
            Compounding(
                variant=spec.name,
                step_error_rate=sum(a.step_errors for a in audits) / n_steps if n_steps else None,
                epsilon=eps,
                epsilon_ci=(float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))),
                by_k=by_k,
                by_k_ci={k: proportion_interval(c, n) for k, (c, n) in by_k.items()},
                predicted={k: (1 - eps) ** int(k) for k in by_k},
                fit_p=float(chi2.sf(max(0.0, stat), dof)),
            )
        )
    return out


# ------------------------------------------------------------------------------------------- run


STATE_DIR = ".explain"
STATE_FILE = "state.json"
#: Settings that do not change what explain computes: a re-run that differs only in them resumes.
MAY_DIFFER = frozenset({"device", "dtype"})


def run_fingerprint(run: Run) -> str:
    """What an explanation depends on in a run: its variants and the keys of its traces (an analyze that
    added traces since makes the parts computed before stale)."""
    import hashlib

    h = hashlib.sha1(json.dumps({v.name: v.dropped for v in run.variants}, sort_keys=True).encode())
    for key in sorted(r.key() for r in run.samples):
        h.update(repr(key).encode())
    return h.hexdigest()


def explain_settings(
    generation: bool = True, limit: int | None = None, device: str = "auto", dtype: str | None = None
) -> dict[str, Any]:
    """What an explanation was asked for, and by which layerprobe (stored in .explain/state.json; MAY_DIFFER may
    change on a resume; another version computes afresh, so its findings are worded by the code that shows them)."""
    from layerprobe._version import __version__

    return {
        "generation": generation,
        "limit": limit,
        "device": device,
        "dtype": dtype,
        "classes": list(TOKEN_CLASSES),
        "layerprobe": __version__,
    }


def explain_is_current(run_dir: str | Path, **settings: Any) -> bool:
    """Whether RUN/explain.json is the finished explanation of the run as it is now, with these settings
    (explain_settings): the last explain completed, over the same variants and traces, its settings
    differing at most in MAY_DIFFER, and explain.json readable. Then computing it again gives the same file."""
    run_dir = Path(run_dir)
    try:
        state = ExplainState.model_validate_json((run_dir / STATE_DIR / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    if state.status != "complete" or settings_differences(state.settings, explain_settings(**settings), MAY_DIFFER):
        return False
    try:
        run = load_run(run_dir)
    except UserError:
        return False
    return EXPLAIN_FILE in run.extras and state.run == run_fingerprint(run)


class Explain(Job):
    """Why the pruned variants fail (the job skeleton: prepare, then open / work / close with the run's
    lock held: no other job writes the run while explain works on it). Its expensive parts (restoration of each variant,
    teacher-forced and in generation, class by class) are kept in RUN/.explain/state.json as they
    finish, so a stopped explain resumes where it was; explain.json is written at the end."""

    kind = "explain"

    def __init__(
        self,
        run_dir: str | Path,
        *,
        generation: bool = True,
        limit: int | None = None,
        device: str = "auto",
        dtype: str | None = None,
        progress: ProgressFn | None = None,
        argv: Sequence[str] = (),
    ) -> None:
        super().__init__(progress, argv)
        self.out = Path(run_dir)
        self.generation, self.limit, self.device, self.dtype = generation, limit, device, dtype
        self.settings = explain_settings(generation, limit, device, dtype)

    def resume_command(self) -> list[str]:
        return list(self.argv)  # the run directory is its argument, not an --out

    def busy_message(self, who: str) -> str:
        return f"{self.out} is being written by {who}; explain it when that ends"

    def prepare(self) -> None:
        from layerprobe.jobs.execute import set_threads_for
        from layerprobe.models.loading import load_model

        check_free(self.out, self.kind, self.busy_message)  # before the model is loaded: refused at once
        run = self.run_read = load_run(self.out)
        check_can_write(self.out, "the run directory")
        if not run.pruned:
            raise UserError(f"{run.dir} has no pruned variant: nothing to explain (run analyze with --drop or --method)")
        if not any(r.variant == run.base and inside(run.dir, r.layers_file) for r in run.samples):
            raise UserError(
                f"{run.dir} has no probe files for {run.base}'s traces: explain needs their token ids "
                f"(run {'ingest' if run.info.origin == 'ingest' else 'analyze'} without --no-probes)"
            )
        t0 = time.perf_counter()
        self.base = load_model(run.info.config.model, device=self.device, dtype=self.dtype or run.info.config.dtype)
        set_threads_for(self.base)
        self.load_seconds = time.perf_counter() - t0

    def open(self) -> None:
        """Resume the parts an earlier explain of this run with these settings computed, else start afresh."""
        path = self.out / STATE_DIR / STATE_FILE
        fingerprint = run_fingerprint(self.run_read)
        if run_fingerprint(load_run(self.out, extras=False)) != fingerprint:  # written between prepare and the lock
            raise UserError(f"{self.out} changed while explain was loading the model (another job wrote it); run explain again")
        old = None
        if path.is_file():
            try:
                old = ExplainState.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                old = None  # a damaged state file: the parts are computed again
        fresh = old is None or old.run != fingerprint or settings_differences(old.settings, self.settings, MAY_DIFFER)
        self.state = ExplainState(settings=self.settings, run=fingerprint, created=now()) if fresh or old is None else old
        self.state.settings, self.state.command, self.state.resume_command = self.settings, self.argv, self.resume_command()
        self._save("running")

    def _save(self, status: str | None = None) -> None:
        if status is not None:
            self.state.status = status  # type: ignore[assignment]
        self.state.updated = now()
        write_model(self.out / STATE_DIR / STATE_FILE, self.state)

    def work(self) -> ExplainFile:
        run, base, st = self.run_read, self.base, self.state
        damaged = st.damaged
        ex = ExplainFile(computed=now(), variants={v.name: v.dropped for v in run.variants})
        timings = dict(st.timings)
        timings["load"] = round(timings.get("load", 0.0) + self.load_seconds, 2)
        for v in run.pruned:
            spec = run.spec(v)
            if spec is not None and not spec.dropped:  # width and sparse variants keep every layer
                kind = spec.compression.kind if spec.compression is not None else "no layer removed"
                ex.skipped.append(
                    f"restoration for {v}: it removes no layer ({kind}), and causal restoration switches removed layers "
                    "back on, so it does not apply"
                )
                continue
            if spec is None or spec.checkpoint is not None:  # restoration needs the removed layers inside the base model
                ex.skipped.append(f"restoration for {v}: a checkpoint variant, whose weights are not the base model's")
                continue
            if v not in st.restoration:
                t0 = time.perf_counter()
                st.restoration[v] = restoration_kl(run, base, v, spec.dropped, self.progress, damaged)
                timings[f"restoration {v} (teacher-forced)"] = round(time.perf_counter() - t0, 2)
                st.timings = timings
                self._save()
            recs = [r.model_copy(deep=True) for r in st.restoration[v]]
            if self.generation and recs:
                t0 = time.perf_counter()

                def keep(name: str, correct: list[float], v: str = v) -> None:
                    st.accuracy.setdefault(v, {})[name] = correct
                    self._save()

                try:
                    restoration_accuracy(run, base, v, spec.dropped, recs, self.limit, self.progress, st.accuracy.get(v), keep)
                except Skip as why:
                    ex.skipped.append(str(why))
                timings[f"restoration {v} (generation)"] = round(
                    timings.get(f"restoration {v} (generation)", 0.0) + time.perf_counter() - t0, 2
                )
            elif not self.generation:
                ex.skipped.append(f"accuracy recovery for {v}: --no-generation")
            elif not recs:
                ex.skipped.append(f"restoration for {v}: no base traces to teacher-force along")
            ex.restoration += recs
        t0 = time.perf_counter()
        ex.breaks = breaks(run)
        ex.compounding = compounding(run)
        timings["breaks and compounding"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        fitted = predictors(run, damaged=damaged)
        if isinstance(fitted, str):
            ex.skipped.append(fitted)
        else:
            ex.predictors = fitted
        timings["predictors"] = round(time.perf_counter() - t0, 2)
        ex.findings = findings(run, ex)
        if damaged:
            ex.skipped.append(f"{len(set(damaged))} probe or teacher-forced files could not be read (damaged) and were left out")
        ex.timings = timings
        write_model(run.dir / EXPLAIN_FILE, ex)
        from layerprobe.jobs.compression import write_compression

        write_compression(run.dir)  # the matched-size comparison gains the explanation's numbers
        return ex

    def close(self, status: str) -> None:
        if hasattr(self, "state"):
            self._save(status)


def explain(run_dir: str | Path, **kw: Any) -> ExplainFile:
    """Compute and write RUN/explain.json (the Explain job); returns it. UserError when the run cannot be
    explained."""
    result: ExplainFile = Explain(run_dir, **kw).run()
    return result
