"""compression.json: the variants of a run side by side at their sizes (docs/compression.md).

Per variant: its size (non-zero decoder linear weights kept, FLOPs, measured tokens/s), accuracy per group
at the largest budget with Wilson intervals, the budget curve and its slope per doubling of the budget
(bootstrap over problems), maj@k, the paired difference against the base and against the ShortGPT
variant of the same size, the toy's "Wait"s that fix an error, and the mechanism numbers layerprobe
already measures (teacher-forced KL and divergence onset, where failing traces part from the base,
per-step error and its compounding fit, lens drift, settling depth). Written at the end of `analyze`
and of `explain` (whose numbers it includes), from the run's files only.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._io import write_text_atomic
from layerprobe.data.reader import LONG, Run, load_run
from layerprobe.data.schema import (
    CompressionFile,
    CompressionRow,
    Interval,
    Mechanism,
    SampleRecord,
    WaitFixes,
)
from layerprobe.data.store import now
from layerprobe.metrics.paired import bootstrap

COMPRESSION_FILE = "compression.json"
REFERENCE = "shortgpt"
#: The long-chain criterion: the paired interval against the base stays above this many points.
MAX_LOSS = 0.10
N_BOOT = 4000

CRITERIA = {
    "keeps_long_chains": (
        "long-chain accuracy within 10 points of the base: the lower end of the 95 % paired interval "
        "(variant − base, same problems and seeds, sequential trace at the largest budget) is above −10 points"
    ),
    "keeps_scaling": (
        "the long-chain budget curve still rises: the 95 % bootstrap interval of its slope (accuracy against "
        "log2 of the thinking budget, points per doubling) lies above 0"
    ),
}


def slope_per_doubling(per_problem: dict[str, dict[int, float]], budgets: list[int], seed: int = 0) -> Interval:
    """Least-squares slope of accuracy against log2(budget) (accuracy points per doubling), over the
    problems that have every budget, with a 95 % percentile bootstrap interval resampling problems."""
    probs = [p for p, by in per_problem.items() if all(b in by for b in budgets)]
    if len(budgets) < 2 or len(probs) < 2:
        return Interval()
    x = np.log2(np.asarray(budgets, float))
    xc = x - x.mean()
    y = np.asarray([[per_problem[p][b] for b in budgets] for p in probs], float)  # (problems, budgets)
    denom = float((xc**2).sum())

    def slope(rows: np.ndarray) -> float:
        return float((rows.mean(axis=0) * xc).sum() / denom)

    boots = bootstrap(lambda i: slope(y[i]), len(probs), N_BOOT, seed)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return Interval(value=slope(y), ci=(float(lo), float(hi)))


def _seq(records: list[SampleRecord], variant: str, group: str, budget: int | None = None) -> list[SampleRecord]:
    return [
        r
        for r in records
        if r.variant == variant
        and r.group == group
        and r.mode == "sequential"
        and r.sample == 0
        and (budget is None or r.budget == budget)
    ]


def _correct(records: list[SampleRecord]) -> dict[str, float]:
    return {r.problem_id: float(r.correct is True) for r in records}


def off_program_steps(thinking: str, question: str) -> int:
    """Toy chains: the written steps that leave the chain the prompt asks for (label, operation or input
    value not the next one of the prompt's program; docs/definitions.md#matched-size-comparison)."""
    import re

    from layerprobe.toy.evaluate import STEP

    start = re.search(r"x = (\d)", question)
    ops = re.findall(r"s\d+ ([+\-*]\d)", question)
    if start is None or not ops:
        return 0
    value, bad = int(start.group(1)), 0
    for n, m in enumerate(STEP.finditer(thinking), 1):
        label, v, op, r = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))
        if m.group(5):  # a "Wait" correction: the step as it was finally written
            v, op, r = int(m.group(6)), m.group(7), int(m.group(8))
        if label != n or n > len(ops) or op != ops[n - 1] or v != value:
            bad += 1
        value = r
    return bad


def wait_fixes(records: list[SampleRecord], budget: int, questions: dict[str, str] | None = None) -> WaitFixes:
    """Toy chains: steps, wrong steps, off-program steps and what each "Wait" did, over the variant's
    traces at `budget`."""
    from layerprobe.toy.evaluate import audit_trace

    out = WaitFixes()
    for r in records:
        if r.budget != budget:
            continue
        a = audit_trace(r.thinking_text)
        out.traces += 1
        out.steps += a.steps
        out.step_errors += a.step_errors
        out.waits += a.waits
        out.after_error += a.waits_after_error
        out.fixing += a.waits_fixing
        out.after_correct += a.waits_after_correct
        if questions and r.problem_id in questions:
            out.off_program += off_program_steps(r.thinking_text, questions[r.problem_id])
    return out


def _size_key(spec: Any) -> str:
    """The size part of a variant (what a ShortGPT variant of the same size shares): 2, s0.2, 2of4."""
    comp = spec.compression
    if comp is None:
        return str(len(spec.dropped)) if spec.dropped else ""
    req = comp.request
    if "match_layers" in req:
        return str(req["match_layers"])
    if "sparsity" in req:
        return f"s{float(req['sparsity']):g}"
    if "nm" in req:
        return str(req["nm"]).replace(":", "of")
    if "n_drop" in req:
        return str(req["n_drop"])
    return str(len(spec.dropped)) if spec.dropped else ""


def _size_label(spec: Any) -> str:
    comp = spec.compression
    if comp is None:
        return "none" if not spec.dropped else f"{len(spec.dropped)} layers"
    req = comp.request
    if "match_layers" in req:
        k = int(req["match_layers"])
        return "1 layer's worth" if k == 1 else f"{k} layers' worth"
    if "sparsity" in req:
        return f"sparsity {float(req['sparsity']):g}"
    if "nm" in req:
        return f"{req['nm']} (half of every row)" if req["nm"] == "2:4" else str(req["nm"])
    k = len(spec.dropped)
    return f"{k} layer{'s' if k != 1 else ''}"


def _questions(run: Run) -> dict[str, str]:
    """Problem id -> question of a toy run, generated again as analyze generated them."""
    from layerprobe.tasks.registry import TASKS, load_problems

    if run.info.task.name not in TASKS:
        return {}
    _, problems, _ = load_problems(run.info.task.name, run.info.config.limit, run.info.config.seed or 0)
    return {p.id: p.question for p in problems}


def _zero(x: float | None) -> float | None:
    """x, with values below 1e-9 (an optimiser's tolerance, not a measurement) as 0."""
    return 0.0 if x is not None and abs(x) < 1e-9 else x


def _mechanism(run: Run, variant: str) -> Mechanism:
    m = Mechanism()
    la = run.layers.get(variant)
    if la is not None and la.teacher_forced is not None:
        tf = la.teacher_forced
        m.tf_mean_kl = tf.mean_kl
        m.tf_onset_share = tf.n_onset / tf.n_traces if tf.n_traces else None
        m.tf_onset_fraction = tf.onset_fraction_mean
        drift = [x for x in tf.drift_per_layer.values() if x is not None]
        m.drift_mean = statistics.fmean(drift) if drift else None
        if tf.drift_per_layer:
            m.drift_last = tf.drift_per_layer[max(tf.drift_per_layer)]
    if la is not None and la.settling is not None:
        m.settling_fraction = la.settling.mean_depth_fraction
        m.deep_thinking_ratio = la.settling.deep_thinking_ratio
    ex = run.extras.get("explain.json")
    if ex is not None:
        br = next((b for b in ex.breaks if b.variant == variant), None)
        if br is not None:
            m.first_departure_median = br.median_fraction
            m.first_departure_ci = br.median_ci
            m.n_failing = br.n_failing
        co = next((c for c in ex.compounding if c.variant == variant), None)
        if co is not None:
            m.step_error_rate = co.step_error_rate
            m.epsilon = _zero(co.epsilon)  # the fit's optimiser stops near 1e-13 when every chain is right
            m.epsilon_ci = (_zero(co.epsilon_ci[0]), _zero(co.epsilon_ci[1]))
    return m


def compression_summary(run: Run) -> CompressionFile:
    """The matched-size comparison of a run (module docstring)."""
    from layerprobe.data.summarize import to_comparison

    budgets = sorted({r.budget for r in run.samples if r.mode == "sequential"})
    out = CompressionFile(
        computed=now(),
        n_samples=len(run.samples),
        variants={v.name: list(v.dropped) for v in run.info.variants},
        criteria=dict(CRITERIA),
        reference_method=REFERENCE,
    )
    if not budgets:
        out.notes.append("no sequential traces: nothing to compare")
        return out
    top = budgets[-1]
    groups = run.groups()
    out.budget, out.budgets, out.groups = top, budgets, groups
    out.long_group = next((g for g in groups if run.regime(g) == LONG), None)
    toy_chains = run.info.task.answer_type == "digit" and run.info.task.name.startswith("toy-")
    questions = _questions(run) if toy_chains else {}
    specs = {v.name: v for v in run.info.variants}
    keys = {name: _size_key(spec) for name, spec in specs.items()}
    refs = {
        keys[n]: n
        for n, s in specs.items()
        if n != run.base and (s.method == REFERENCE or (s.compression and s.compression.method == REFERENCE))
    }
    base_text = {r.key()[1:]: r.text for r in run.samples if r.variant == run.base}
    for spec in run.info.variants:
        name = spec.name
        is_base = name == run.base
        comp = spec.compression
        row = CompressionRow(
            variant=name,
            method="base"
            if is_base
            else (comp.method if comp is not None else spec.method or ("manual" if spec.dropped else name)),
            kind="none" if is_base else (comp.kind if comp is not None else "depth"),
            size_label="" if is_base else _size_label(spec),
            size_key="" if is_base else keys[name],
            restoration_applies=bool(spec.dropped) and spec.checkpoint is None,
        )
        row.n_layers = spec.n_layers
        if is_base:
            row.kept_fraction, row.layers_removed_equivalent = 1.0, 0.0
            row.flops_per_token, row.flops_per_token_sparse = 1.0, 1.0
            base_size = next((s.compression.size for s in run.info.variants if s.compression is not None), None)
            if base_size is not None:
                row.tokens_per_s = base_size.tokens_per_s_base
        elif comp is not None:
            sz = comp.size
            row.kept_fraction = sz.kept_fraction
            row.layers_removed_equivalent = sz.layers_removed_equivalent
            if sz.flops_per_token_base:
                row.flops_per_token = (sz.flops_per_token or 0.0) / sz.flops_per_token_base
                row.flops_per_token_sparse = (sz.flops_per_token_sparse or 0.0) / sz.flops_per_token_base
            row.tokens_per_s, row.tokens_per_s_base = sz.tokens_per_s, sz.tokens_per_s_base
            out.flops_context = out.flops_context or sz.flops_context
            if out.load_average is None:
                load = sz.speed_setup.get("load_average_1min")
                out.load_average = float(load) if isinstance(load, (int, float)) else None
        vm = run.metrics.variants.get(name)
        for g in groups:
            gm = vm.groups.get(g) if vm is not None else None
            if gm is not None:
                acc = gm.sequential.get(str(top))
                if acc is not None:
                    row.accuracy[g] = Interval(value=acc.accuracy, ci=acc.ci)
                    row.n_problems[g] = acc.n
                row.budget_curve[g] = {b: a.accuracy for b, a in gm.sequential.items()}
                k = gm.parallel.samples
                if k and str(k) in gm.parallel.maj_at_k:
                    row.maj[g] = gm.parallel.maj_at_k[str(k)]
                    row.maj_k = k
            per_problem: dict[str, dict[int, float]] = {}
            for r in _seq(run.samples, name, g):
                per_problem.setdefault(r.problem_id, {})[r.budget] = float(r.correct is True)
            row.slope[g] = slope_per_doubling(per_problem, budgets)
        if not is_base:
            row.vs_base = {
                c.group: c
                for c in run.metrics.comparisons
                if c.variant == name and c.mode == "sequential" and c.budget == top and c.group in groups
            }
            ref = refs.get(keys[name])
            if ref is not None and ref != name:
                row.reference = ref
                for g in groups:
                    a, b = _correct(_seq(run.samples, ref, g, top)), _correct(_seq(run.samples, name, g, top))
                    common = sorted(set(a) & set(b))
                    if common:
                        row.vs_reference[g] = to_comparison(
                            [a[p] for p in common],
                            [b[p] for p in common],
                            variant=name,
                            base=ref,
                            group=g,
                            mode="sequential",
                            budget=top,
                            metric="accuracy",
                        )
            lg = out.long_group
            low = row.vs_base[lg].ci_low if lg is not None and lg in row.vs_base else None
            if low is not None:
                row.keeps_long_chains = bool(low > -MAX_LOSS)
        lg = out.long_group
        if lg is not None and lg in row.slope and row.slope[lg].ci[0] is not None:
            row.keeps_scaling = bool(row.slope[lg].ci[0] > 0)  # type: ignore[operator]
        if toy_chains:
            mine = [r for r in run.samples if r.variant == name and r.group == lg and r.origin != "copy"]
            row.waits = wait_fixes(mine, top, questions)
        row.mechanism = _mechanism(run, name)
        if not is_base:
            mine = [r for r in run.samples if r.variant == name]
            pairs = [(r, base_text.get(r.key()[1:])) for r in mine]
            pairs = [(r, t) for r, t in pairs if t is not None]
            row.mechanism.n_same_text = len(pairs)
            row.mechanism.same_text_share = sum(r.text == t for r, t in pairs) / len(pairs) if pairs else None
        out.rows.append(row)
    no_restore = [r.variant for r in out.rows[1:] if not r.restoration_applies]
    if no_restore:
        out.notes.append(
            "causal restoration (explain) switches removed layers back on at chosen positions; it does not apply to "
            + ", ".join(no_restore)
            + ", which remove no layer (width and sparse variants keep every layer: their layer map is the identity)"
        )
    if any(r.kind in ("unstructured", "semi-structured") for r in out.rows):
        out.notes.append(
            "tokens/s are measured with dense kernels: zeros cost as much time as any other weight on a CPU; "
            "2:4 gives speed only on GPUs whose kernels use it"
        )
    return out


def write_compression(run_dir: str | Path) -> Path | None:
    """Compute compression.json for a run with at least one compressed variant; None when it has none."""
    run = load_run(run_dir)
    if len(run.info.variants) < 2 or not any(v.compression is not None for v in run.info.variants[1:]):
        return None
    summary = compression_summary(run)
    path = Path(run_dir) / COMPRESSION_FILE
    write_text_atomic(path, summary.model_dump_json(indent=1) + "\n")
    return path
