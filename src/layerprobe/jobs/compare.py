"""`layerprobe compare`: several runs' layer sensitivity on one relative-depth axis, and paired
comparisons across models where the runs share problems (reasoning model vs its non-reasoning twin)."""

from __future__ import annotations

import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from layerprobe._io import check_writable
from layerprobe._version import __version__
from layerprobe.data.lock import hold_dir_lock
from layerprobe.data.reader import ALL, Run, load_run
from layerprobe.data.schema import ComparedRun, CompareFile, CrossModel, LayerSensitivity, VariantSpec
from layerprobe.data.store import COMPARE_FILE, LOCK_FILES, is_run_dir, now, write_model
from layerprobe.data.summarize import stored_paired
from layerprobe.errors import UserError
from layerprobe.metrics import proportion_interval

#: Problem id -> (group, mean correctness over the sequential samples at the budget).
Scores = dict[str, tuple[str, float]]


def _labels(runs: Sequence[Run]) -> list[str]:
    """The directory names, made unique with a counter (never equal to another run's label)."""
    out: list[str] = []
    for r in runs:
        name = r.dir.name or str(r.dir)
        label, k = name, 1
        while label in out:
            k += 1
            label = f"{name} ({k})"
        out.append(label)
    return out


def scores(run: Run, variant: str, budget: int) -> Scores:
    """Per-problem correctness of one variant's graded sequential traces at `budget`."""
    acc: dict[str, list[float]] = defaultdict(list)
    group: dict[str, str] = {}
    for s in run.samples:
        if s.variant == variant and s.mode == "sequential" and s.budget == budget and s.correct is not None:
            acc[s.problem_id].append(float(s.correct))
            group[s.problem_id] = s.group or ALL
    return {p: (group[p], statistics.fmean(v)) for p, v in acc.items()}


def _cut(text: str, n: int) -> str:
    """`text` within the n characters compare.json allows (a hostile run.json may hold more)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _depth(dropped: Sequence[int], n_layers: int) -> float | None:
    return (statistics.fmean(dropped) + 0.5) / n_layers if dropped and n_layers else None


def _compared(run: Run, label: str) -> ComparedRun:
    budgets = run.budgets()
    budget = budgets[-1] if budgets else None
    n_layers = run.n_layers
    groups = run.groups() or [ALL]  # a task without groups (aime24, a plain task file): all problems
    base_bi: list[float | None] = []
    base_layers = run.layers.get(run.base)
    if base_layers is not None and base_layers.per_layer.block_influence:
        by_layer = dict(zip(base_layers.layers, base_layers.per_layer.block_influence))
        base_bi = [by_layer.get(i) for i in range(n_layers)]
    sweep = run.extras.get("sweep.json")
    sweep_bi = {tuple(lay.dropped): lay.block_influence_traces for lay in sweep.layers} if sweep is not None else {}
    out = ComparedRun(
        label=label,
        path=_cut(str(run.dir), 4096),
        model=_cut(run.info.model.id, 4000),
        n_layers=n_layers,
        task=_cut(run.info.task.name, 4000),
        budget=budget,
        source="sweep" if run.info.config.sweep else "variants",
        regimes={g: run.regime(g) for g in groups},
        damage=[_cut(n, 4000) for n in run.notes if not n.startswith("explain.json ")],  # explain.json: no number here
    )
    if budget is None:
        return out
    base = scores(run, run.base, budget)
    for g in groups:
        vals = [x for grp, x in base.values() if grp == g]  # per problem: the mean over its sequential traces
        if vals:
            out.base_accuracy[g] = statistics.fmean(vals)
            out.base_accuracy_ci[g] = proportion_interval(round(sum(vals)), len(vals))  # exact with one trace each
            out.n_problems[g] = len(vals)
    comps = {
        (c.variant, c.group): c
        for c in run.metrics.comparisons
        if c.mode == "sequential" and c.budget == budget and c.metric == "accuracy"
    }
    for spec in run.variants[1:]:
        if not spec.dropped or _healed(spec):
            continue  # a healed checkpoint is not the sensitivity of its layers
        sens = LayerSensitivity(variant=spec.name, dropped=list(spec.dropped), relative_depth=_depth(spec.dropped, n_layers))
        for g in groups:
            c = comps.get((spec.name, g))
            if c is not None:
                sens.delta[g] = c.diff
                sens.delta_ci[g] = (c.ci_low, c.ci_high)
                sens.verdict[g] = c.verdict
                sens.n[g] = c.n_pairs
        bi = sweep_bi.get(tuple(spec.dropped))
        if bi is None and base_bi and all(0 <= i < len(base_bi) and base_bi[i] is not None for i in spec.dropped):
            bi = statistics.fmean(base_bi[i] for i in spec.dropped)  # type: ignore[misc]
        sens.block_influence = bi
        out.sensitivity.append(sens)
    out.sensitivity.sort(key=lambda s: (s.relative_depth is None, s.relative_depth or 0.0, s.variant))
    out.block_influence = base_bi
    return out


def _healed(spec: VariantSpec) -> bool:
    """A --variant checkpoint that `layerprobe heal` (or anything else) trained after pruning."""
    return bool((spec.provenance or {}).get("healing"))


def _paired(a: Scores, b: Scores, group: str) -> tuple[list[float], list[float]]:
    shared = sorted(p for p in a if p in b and a[p][0] == group and b[p][0] == group)
    return [a[p][1] for p in shared], [b[p][1] for p in shared]


def _cross_record(xa: list[float], xb: list[float], **keys: object) -> CrossModel:
    c = stored_paired(xa, xb)
    return CrossModel(
        **keys,  # type: ignore[arg-type]
        n_pairs=c.n_pairs,
        mean_a=c.mean_a,
        mean_b=c.mean_b,
        diff=c.diff,
        ci=(c.ci_low, c.ci_high),
        ci_method=c.ci_method,
        p_value=c.p_value,
        verdict=c.verdict,
        test=c.test,
        reason=c.reason,
    )


def _cross(ra: Run, ca: ComparedRun, rb: Run, cb: ComparedRun, notes: list[str]) -> list[CrossModel]:
    """Base accuracy and damage per shared group, paired by problem id (same id, same group)."""
    if ca.budget is None or cb.budget is None:
        return []
    base_a, base_b = scores(ra, ra.base, ca.budget), scores(rb, rb.base, cb.budget)
    groups = [g for g in ca.regimes if g in cb.regimes]
    if ca.budget != cb.budget:
        notes.append(
            f"{ca.label} is measured at {ca.budget} thinking tokens and {cb.label} at {cb.budget}: "
            "each run at its own largest budget"
        )
    if not any(p in base_b for p in base_a):
        notes.append(f"{ca.label} and {cb.label} share no problem: no paired comparison across them")
        return []
    out = []
    for g in groups:
        xa, xb = _paired(base_a, base_b, g)
        if xa:
            out.append(_cross_record(xa, xb, a=ca.label, b=cb.label, group=g, what="base accuracy"))
    # variants at the same relative depth (within half a layer of the deeper model)
    tol = 0.5 / max(ca.n_layers, cb.n_layers, 1)
    unmatched = 0
    per_problem: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    matched = 0
    for sa in ca.sensitivity:
        match = [
            sb
            for sb in cb.sensitivity
            if sa.relative_depth is not None
            and sb.relative_depth is not None
            and abs(sa.relative_depth - sb.relative_depth) <= tol + 1e-12
            and len(sb.dropped) == len(sa.dropped)
        ]
        if not match:
            unmatched += 1
            continue
        sb = match[0]
        matched += 1
        va, vb = scores(ra, sa.variant, ca.budget), scores(rb, sb.variant, cb.budget)
        for g in groups:
            shared = sorted(p for p in base_a if p in base_b and p in va and p in vb and base_a[p][0] == g and base_b[p][0] == g)
            if not shared:
                continue
            da = [va[p][1] - base_a[p][1] for p in shared]
            db = [vb[p][1] - base_b[p][1] for p in shared]
            for p, x, y in zip(shared, da, db):
                per_problem[g][p].append((x, y))
            out.append(
                _cross_record(da, db, a=ca.label, b=cb.label, group=g, what="damage", dropped_a=sa.dropped, dropped_b=sb.dropped)
            )
    if matched > 1:
        for g, by_problem in per_problem.items():
            full = [p for p, v in sorted(by_problem.items()) if len(v) == matched]  # problems graded at every depth
            if full:
                xa = [statistics.fmean(x for x, _ in by_problem[p]) for p in full]
                xb = [statistics.fmean(y for _, y in by_problem[p]) for p in full]
                out.append(_cross_record(xa, xb, a=ca.label, b=cb.label, group=g, what="mean damage"))
    if unmatched:
        notes.append(f"{unmatched} variant(s) of {ca.label} have no variant of {cb.label} at the same relative depth")
    return out


def compare(run_dirs: Sequence[Path]) -> CompareFile:
    """Read the runs and compare them; UserError when a directory is not a run."""
    if len(run_dirs) < 2:
        raise UserError("give at least two run directories to compare (layerprobe report renders one)")
    runs = [load_run(d) for d in run_dirs]
    labels = _labels(runs)
    compared = [_compared(r, lab) for r, lab in zip(runs, labels)]
    notes: list[str] = []
    seen: dict[Path, str] = {}
    for r, c in zip(runs, compared):
        where = r.dir.resolve()
        if where in seen:
            notes.append(f"{c.label} is the same run directory as {seen[where]}: it is compared with itself")
        seen.setdefault(where, c.label)
        if r.status != "complete":
            notes.append(f"{c.label} is {r.status}: its numbers cover the traces written so far")
        whole = [v.name for v in r.variants[1:] if not v.dropped and v.compression is not None]
        if whole:
            notes.append(
                f"{c.label}: {', '.join(whole)} remove no layer (width or sparse compression) and are left out of the "
                "layer sensitivity; its report compares them at matched size"
            )
        if not c.sensitivity:
            notes.append(f"{c.label} has no pruned variant: no layer sensitivity")
    cross: list[CrossModel] = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            cross += _cross(runs[i], compared[i], runs[j], compared[j], notes)
    return CompareFile(computed=now(), layerprobe_version=__version__, runs=compared, cross=cross, notes=notes)


def _same_runs(cmp: CompareFile, run_dirs: Sequence[Path]) -> bool:
    return [Path(r.path).resolve() for r in cmp.runs] == [Path(d).resolve() for d in run_dirs]


def check_compare_out(out: Path, run_dirs: Sequence[Path], force: bool) -> None:
    """Refuse, before the runs are read, an --out that is not a comparison's folder of its own: a file, a
    run directory, or (unless `force`) a folder holding anything but an earlier comparison of the same
    runs (the user's files, a comparison of other runs). `force` replaces compare.json and report.html
    only; nothing else in the folder is touched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and is_run_dir(out):
        raise UserError(f"--out {out} is a run directory: give a folder of its own for the comparison")
    check_writable(out, "--out")
    entries = sorted(p.name for p in out.iterdir() if p.name not in LOCK_FILES) if out.is_dir() else []
    if not entries or force:
        return
    try:
        old: CompareFile | None = CompareFile.model_validate_json((out / COMPARE_FILE).read_bytes())
    except (OSError, ValueError):
        old = None
    others = [e for e in entries if e not in (COMPARE_FILE, "report.html")]
    if old is None or others:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise UserError(
            f"--out {out} holds files that are not a layerprobe comparison ({shown}); choose another --out, "
            "or add --force to write compare.json and report.html there (replacing those two only)"
        )
    if not _same_runs(old, run_dirs):
        raise UserError(
            f"--out {out} holds a comparison of other runs ({', '.join(r.path for r in old.runs)}); choose another "
            "--out, or add --force to replace it"
        )


@contextmanager
def compare_out(out: Path, run_dirs: Sequence[Path], force: bool, command: Sequence[str]) -> Iterator[None]:
    """The --out folder of a comparison, checked (`check_compare_out`), created and locked for the block
    (a second compare or a report writing it is refused); a folder this call created is removed again
    when the block fails before writing anything."""
    check_compare_out(out, run_dirs, force)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        with hold_dir_lock(out, "compare", command):
            yield
    except BaseException:
        if created and not any(p.name not in LOCK_FILES for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise


def write_compare(result: CompareFile, out: Path) -> Path:
    """compare.json in `out` (created); UserError when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    path = out / COMPARE_FILE
    write_model(path, result)
    return path
