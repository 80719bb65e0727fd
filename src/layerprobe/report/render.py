"""Assemble the report: read the runs, compute what the files lack, draw, render the template."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError
from layerprobe.report import cases as cases_mod
from layerprobe.report import figures
from layerprobe.report.load import ALL, RunData, load_run
from layerprobe.report.narrative import TRACE_METRICS, comparison_index, derive, variant_sentences, verdict_words
from layerprobe.report.numbers import Num, fmt, is_num

TEMPLATES = Path(__file__).parent / "templates"
GREYS = ["#3b3b3b", "#7a7a7a", "#a6a6a6", "#5c5c5c"]
PER_LAYER_KEYS = [("block_influence", "block influence", "s"), ("norm", "residual norm", "f1"), ("jsd", "logit-lens JSD to output (nats)", "f3"),
                  ("entropy", "logit-lens entropy (nats)", "f3"), ("top1_agree", "top-1 agrees with output", "p")]


@dataclass
class Limits:
    """Size caps: case studies per pruned variant and characters shown per trace."""

    cases_per_variant: int = 3
    max_chars: int = 4000


@dataclass
class RunView:
    run: RunData
    anchor: str
    colors: dict[str, str]
    derived: dict[str, Any]
    narrative: dict[str, list[Any]]
    headline: list[dict[str, Any]]
    behaviour: list[dict[str, Any]]
    figs: dict[str, Any]
    layer_rows: list[dict[str, Any]]
    cases: list[Any]
    samples_link: str
    tf_summary: list[dict[str, Any]] = field(default_factory=list)


def _acc_cell(run: RunData, v: str, g: str, b: int) -> dict[str, Any] | None:
    p = run.vmetrics(v, g).get("sequential", {}).get(str(b))
    if not p:
        return None
    src = ("metrics", "variants", v, "groups", g, "sequential", str(b))
    ci = p.get("ci") or [None, None]
    return {"acc": Num(p.get("accuracy"), "p", src + ("accuracy",)), "lo": Num(ci[0], "p", src + ("ci", 0)),
            "hi": Num(ci[1], "p", src + ("ci", 1)), "n": p.get("n")}


def _headline(run: RunData) -> list[dict[str, Any]]:
    """Rows: group x variant at the largest budget, with intervals and the paired verdict."""
    rows = []
    budgets = run.budgets()
    idx = comparison_index(run)
    comps = run.metrics.get("comparisons", [])
    groups = run.groups() + [ALL] if run.groups() else [ALL]
    for g in groups:
        for spec in run.variants:
            v = spec.name
            row: dict[str, Any] = {"group": g, "regime": run.regime(g) if g != ALL else "", "variant": v}
            if budgets:
                row["acc"] = _acc_cell(run, v, g, budgets[-1])
                i = idx.get((v, g, "sequential", budgets[-1]))
                if i is not None:
                    c, src = comps[i], ("metrics", "comparisons", i)
                    row["cmp"] = {"diff": Num(c.get("diff"), "d", src + ("diff",)), "lo": Num(c.get("ci_low"), "d", src + ("ci_low",)),
                                  "hi": Num(c.get("ci_high"), "d", src + ("ci_high",)), "verdict": c.get("verdict"),
                                  "words": verdict_words(c.get("verdict", ""))}
            par = run.vmetrics(v, g).get("parallel", {})
            if par.get("k"):
                k = par["k"][-1]
                src = ("metrics", "variants", v, "groups", g, "parallel")
                for name in ("pass", "maj"):
                    cell = (par.get(f"{name}_at_k") or {}).get(str(k))
                    if cell:
                        ci = cell.get("ci") or [None, None]
                        row[name] = {"k": k, "val": Num(cell.get("value"), "p", src + (f"{name}_at_k", str(k), "value")),
                                     "lo": Num(ci[0], "p", src + (f"{name}_at_k", str(k), "ci", 0)),
                                     "hi": Num(ci[1], "p", src + (f"{name}_at_k", str(k), "ci", 1))}
            rows.append(row)
    return rows


def _behaviour(run: RunData) -> list[dict[str, Any]]:
    rows = []
    for g in (run.groups() or []) + [ALL]:
        for spec in run.variants:
            b = run.vmetrics(spec.name, g).get("behaviour", {})
            if not b.get("n"):
                continue
            src = ("metrics", "variants", spec.name, "groups", g, "behaviour")
            par = run.vmetrics(spec.name, g).get("parallel", {})
            ci = b.get("loop_ci") or [None, None]
            rows.append({
                "group": g, "variant": spec.name, "n": b.get("n"),
                "loop": Num(b.get("loop_rate"), "p", src + ("loop_rate",)), "loop_lo": Num(ci[0], "p", src + ("loop_ci", 0)),
                "loop_hi": Num(ci[1], "p", src + ("loop_ci", 1)),
                "onset": Num(b.get("mean_loop_onset_fraction"), "p", src + ("mean_loop_onset_fraction",)),
                "seq_rep": Num(b.get("seq_rep"), "p", src + ("seq_rep",)),
                "sb_within": Num(b.get("self_bleu_within"), "f1", src + ("self_bleu_within",)),
                "sb_across": Num(par.get("self_bleu_across"), "f1", ("metrics", "variants", spec.name, "groups", g, "parallel", "self_bleu_across")),
                "refl": Num(b.get("reflections_per_1k"), "f1", src + ("reflections_per_1k",)),
                "mean_len": Num(b.get("mean_thinking_tokens"), "f1", src + ("mean_thinking_tokens",)),
                "median_len": Num(b.get("median_thinking_tokens"), "f1", src + ("median_thinking_tokens",)),
                "exhausted": Num(b.get("budget_exhausted_rate"), "p", src + ("budget_exhausted_rate",)),
                "missing": Num(b.get("answer_missing_rate"), "p", src + ("answer_missing_rate",)),
            })
    return rows


def _layer_rows(run: RunData) -> list[dict[str, Any]]:
    """One entry per original layer: each variant's statistics there (or 'dropped'), and its neighbours."""
    n = int(run.info.model.n_layers)
    rows = []
    for l in range(n):
        per_variant = []
        for spec in run.variants:
            la = run.layers.get(spec.name)
            entry: dict[str, Any] = {"variant": spec.name, "dropped": l in spec.dropped, "stats": []}
            if la and l in la["layers"]:
                j = la["layers"].index(l)
                for key, label, kind in PER_LAYER_KEYS:
                    vals = la["per_layer"].get(key) or []
                    if j < len(vals):
                        entry["stats"].append((label, Num(vals[j], kind, ("layers", spec.name, "per_layer", key, j))))
                by_group = la.get("per_layer_by_group") or {}
                for g in run.groups():
                    for key, label, kind in PER_LAYER_KEYS:
                        if key not in ("jsd", "block_influence"):
                            continue
                        vals = (by_group.get(g) or {}).get(key) or []
                        if len(vals) == len(la["layers"]):
                            entry["stats"].append((f"{label}, {g} problems only",
                                                   Num(vals[j], kind, ("layers", spec.name, "per_layer_by_group", g, key, j))))
                tf = la.get("teacher_forced") or {}
                drift = tf.get("drift_by_layer") or {}
                if l in drift:
                    entry["stats"].append((f"teacher-forced drift vs {run.base}", Num(drift[l], "s", ("layers", spec.name, "teacher_forced", "drift_by_layer", l))))
                entry["pruned_index"] = j
            per_variant.append(entry)
        neighbours = []
        for nl in (l - 1, l, l + 1):
            if 0 <= nl < n:
                cells = []
                for spec in run.variants:
                    la = run.layers.get(spec.name)
                    if nl in spec.dropped:
                        cells.append("dropped")
                    elif la and nl in la["layers"]:
                        bi = (la["per_layer"].get("block_influence") or [])
                        j = la["layers"].index(nl)
                        cells.append(Num(bi[j] if j < len(bi) else None, "s", ("layers", spec.name, "per_layer", "block_influence", j)))
                    else:
                        cells.append("n/a")
                neighbours.append({"layer": nl, "cells": cells, "self": nl == l})
        dropped_in = [s.name for s in run.variants if l in s.dropped]
        rows.append({"layer": l, "variants": per_variant, "neighbours": neighbours, "dropped_in": dropped_in})
    return rows


def _tf_summary(run: RunData) -> list[dict[str, Any]]:
    out = []
    for v in run.pruned:
        tf = (run.layers.get(v) or {}).get("teacher_forced")
        if not tf:
            continue
        extra = []
        for k, x in tf.items():
            if k in ("mean_kl",) or not is_num(x):
                continue
            extra.append((k.replace("_", " "), Num(x, "i" if isinstance(x, int) else "f3", ("layers", v, "teacher_forced", k))))
        out.append({"variant": v, "mean_kl": Num(tf.get("mean_kl"), "s", ("layers", v, "teacher_forced", "mean_kl")), "extra": extra})
    return out


def _run_view(run: RunData, anchor: str, colors: dict[str, str], out_dir: Path, limits: Limits) -> RunView:
    derived = derive(run)
    narrative = {v: variant_sentences(run, v, derived) for v in run.pruned}
    figs = {
        "accuracy": figures.accuracy_vs_budget(run, colors),
        "parallel": figures.parallel_curves(run, colors),
        "bi": figures.block_influence(run, colors),
        "jsd": figures.heatmap(run, "jsd", "logit-lens JSD to the output (nats)"),
        "entropy": figures.heatmap(run, "entropy", "logit-lens entropy (nats)"),
        "settling": figures.settling(run, colors),
        "tf": figures.teacher_forced_kl(run, colors),
        "reflections": figures.reflections(run, colors),
        "loops": figures.loops(run, colors) if run.samples else None,
        "lengths": figures.lengths(run, colors),
    }
    cases = cases_mod.choose_cases(run, colors, limits.cases_per_variant, limits.max_chars)
    return RunView(run=run, anchor=anchor, colors=colors, derived=derived, narrative=narrative, headline=_headline(run),
                   behaviour=_behaviour(run), figs=figs, layer_rows=_layer_rows(run) if run.has_probes else [],
                   cases=cases, samples_link=run.rel("samples.jsonl", out_dir), tf_summary=_tf_summary(run))


def _colors(runs: Sequence[RunData]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    k = 0
    for i, r in enumerate(runs):
        for j, spec in enumerate(r.variants):
            if j == 0:
                out[(r.label, spec.name)] = GREYS[i % len(GREYS)]
            else:
                out[(r.label, spec.name)] = figures.PALETTE[k % len(figures.PALETTE)]
                k += 1
    return out


def _comparison(runs: Sequence[RunData], colors: dict[tuple[str, str], str]) -> dict[str, Any]:
    rows = []
    regimes: list[str] = []
    for r in runs:
        for g in r.groups():
            if r.regime(g) not in regimes:
                regimes.append(r.regime(g))
    for r in runs:
        budgets = r.budgets()
        for spec in r.variants:
            cells = {}
            for reg in regimes:
                gs = [g for g in r.groups() if r.regime(g) == reg]
                if gs and budgets:
                    cells[reg] = _acc_cell(r, spec.name, gs[0], budgets[-1])
            b = r.vmetrics(spec.name).get("behaviour", {})
            tf = (r.layers.get(spec.name) or {}).get("teacher_forced") or {}
            rows.append({"run": r.label, "variant": spec.name, "color": colors[(r.label, spec.name)], "dropped": spec.dropped,
                         "method": spec.method, "model": r.info.model.id, "budget": budgets[-1] if budgets else None,
                         "cells": cells, "loop": b.get("loop_rate"), "tf": tf.get("mean_kl"), "status": r.status})
    return {"rows": rows, "regimes": regimes, "figure": figures.compare_runs(runs, colors)}


def _short(x: Any) -> str:
    """A calibration value for display: long hashes and paths are cut."""
    t = str(x)
    return t if len(t) <= 24 else t[:12] + "\u2026" + t[-8:]


def _source_text(src: Any) -> str:
    """A model/task source for display (writers give a string or a dict of details)."""
    if isinstance(src, dict):
        for k in ("path", "repo", "id", "name", "kind"):
            if src.get(k):
                rest = ", ".join(f"{a}: {b}" for a, b in src.items() if a != k and isinstance(b, (str, int, float)) and b != "")
                return f"{src[k]}" + (f" ({rest})" if rest else "")
        return ", ".join(f"{a}: {b}" for a, b in src.items())
    return str(src)


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["source"] = _source_text
    env.filters["short"] = _short
    env.globals["is_num"] = is_num
    return env


def _output_path(run_dirs: Sequence[Any], out: Any) -> Path:
    """Where the report goes; a UserError now (before any work) when it cannot be written there."""
    if out is None:
        first = Path(run_dirs[0])
        if not first.is_dir():
            return first / "report.html"  # load_run will say what is wrong with the run directory
        out_path = first / "report.html"
    else:
        out_path = Path(out)
        if out_path.is_dir():
            out_path = out_path / "report.html"
    parent = out_path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"cannot write the report to {out_path}: {probe} is not a directory")
    if probe.is_dir() and not os.access(probe, os.W_OK):
        raise UserError(f"cannot write the report to {out_path}: {probe} is not writable")
    return out_path


def render_report(run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                  *, limits: Limits | None = None) -> Path:
    """Render one or more run directories into a self-contained HTML file and return its path.

    The default output is RUN_DIR/report.html of the first run. Bad input (not a run directory,
    unreadable files, an unwritable output) raises layerprobe.errors.UserError.
    """
    t0 = time.perf_counter()
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise UserError("give at least one run directory")
    limits = limits or Limits()
    out_path = _output_path(run_dirs, out)
    runs = [load_run(d) for d in run_dirs]
    labels: dict[str, int] = {}
    for r in runs:
        if r.label in labels:
            labels[r.label] += 1
            r.label = f"{r.label} ({labels[r.label]})"
        else:
            labels[r.label] = 1
    out_dir = out_path.parent
    colors = _colors(runs)
    views = [_run_view(r, f"r{i}", {s.name: colors[(r.label, s.name)] for s in r.variants}, out_dir.resolve() if out_dir.exists() else out_dir, limits)
             for i, r in enumerate(runs)]
    comparison = _comparison(runs, colors) if len(runs) > 1 else None
    env = _environment()
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    html = env.get_template("report.html.jinja").render(
        views=views, comparison=comparison, css=css, trace_metrics=TRACE_METRICS, rule=cases_mod.RULE, limits=limits,
        generated=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        version=runs[0].info.layerprobe_version,
    )
    html = html.replace("@@RENDER_SECONDS@@", f"{time.perf_counter() - t0:.1f}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, out_path)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out_path}: {exc.strerror or exc}") from None
    return out_path
