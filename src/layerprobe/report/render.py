"""Assemble the report: read the runs, compute what the files lack, draw, render the template."""

from __future__ import annotations

import datetime as _dt
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.data.lock import hold_dir_lock
from layerprobe.data.probes import Column, builtin_columns, columns, heatmap_columns
from layerprobe.data.reader import ALL, Run, load_run
from layerprobe.data.store import COMPARE_FILE, is_run_dir
from layerprobe.data.summarize import TRACE_METRICS
from layerprobe.data.verdicts import MIN_UNITS, RULE, verdict_short, verdict_words
from layerprobe.errors import UserError
from layerprobe.report import cases as cases_mod
from layerprobe.report import figures
from layerprobe.report.compression import compression_view
from layerprobe.report.judge import judge_view
from layerprobe.report.narrative import (
    TRACE_KIND,
    comparison_index,
    sweep_sentences,
    variant_sentences,
    what_broke,
)
from layerprobe.report.numbers import Num, fmt, is_num

TEMPLATES = Path(__file__).parent / "templates"
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
GREYS = ["#3b3b3b", "#7a7a7a", "#a6a6a6", "#5c5c5c"]


@dataclass
class Limits:
    """Size caps: case studies per pruned variant and characters shown per trace."""

    cases_per_variant: int = 3
    max_chars: int = 4000


@dataclass
class RunView:
    run: Run
    anchor: str
    colors: dict[str, str]
    narrative: dict[str, list[Any]]
    headline: list[dict[str, Any]]
    behaviour: list[dict[str, Any]]
    figs: dict[str, Any]
    layer_table: dict[str, Any] | None
    cases: list[Any]
    samples_link: str
    tf_summary: list[dict[str, Any]] = field(default_factory=list)
    sweep_text: list[Any] = field(default_factory=list)
    explain: Any = None
    broke: list[Any] = field(default_factory=list)
    """What broke: one sentence per pruned variant (narrative.what_broke)."""
    explain_command: str = ""
    """The explain command for this run, with its path as seen from where the report was rendered."""
    explain_problem: str = ""
    """Why the run's explain.json is there but not shown (damaged, newer, stale), in words; "" when it is
    shown or absent."""
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    """The behaviours a judge model counted (report.judge.judge_view), when the run was judged."""
    compression: Any = None
    """The matched-size comparison (report/compression.py), when the run has compression.json."""


def _acc_cell(run: Run, v: str, g: str, b: int) -> dict[str, Any] | None:
    p = run.vmetrics(v, g).sequential.get(str(b))
    if p is None:
        return None
    src = ("metrics", "variants", v, "groups", g, "sequential", str(b))
    return {
        "acc": Num(p.accuracy, "p", src + ("accuracy",)),
        "lo": Num(p.ci[0], "pn", src + ("ci", 0)),
        "hi": Num(p.ci[1], "pn", src + ("ci", 1)),
        "n": p.n,
    }


def _headline(run: Run) -> list[dict[str, Any]]:
    """Rows: group x variant at the largest budget, with intervals and the paired verdict."""
    rows = []
    budgets = run.budgets()
    idx = comparison_index(run)
    comps = run.metrics.comparisons
    groups = run.groups() + [ALL] if run.groups() else [ALL]
    for g in groups:
        for spec in run.variants:
            v = spec.name
            row: dict[str, Any] = {"group": g, "regime": run.regime(g) if g != ALL else "", "variant": v}
            if budgets:
                row["acc"] = _acc_cell(run, v, g, budgets[-1])
                i = idx.get((v, g, "sequential", budgets[-1]))
                if i is not None:
                    c = comps[i]
                    src: tuple[Any, ...] = ("metrics", "comparisons", i)
                    row["cmp"] = {
                        "diff": Num(c.diff, "d", src + ("diff",)),
                        "lo": Num(c.ci_low, "d", src + ("ci_low",)),
                        "hi": Num(c.ci_high, "d", src + ("ci_high",)),
                        "verdict": c.verdict,
                        "words": verdict_words(c),
                    }
            par = run.vmetrics(v, g).parallel
            if par.k:
                k = par.k[-1]
                src = ("metrics", "variants", v, "groups", g, "parallel")
                for name in ("pass", "maj"):
                    cell = getattr(par, f"{name}_at_k").get(str(k))
                    if cell is not None:
                        row[name] = {
                            "k": k,
                            "val": Num(cell.value, "p", src + (f"{name}_at_k", str(k), "value")),
                            "lo": Num(cell.ci[0], "pn", src + (f"{name}_at_k", str(k), "ci", 0)),
                            "hi": Num(cell.ci[1], "pn", src + (f"{name}_at_k", str(k), "ci", 1)),
                        }
            rows.append(row)
    return rows


def _behaviour(run: Run) -> list[dict[str, Any]]:
    rows = []
    for g in (run.groups() or []) + [ALL]:
        for spec in run.variants:
            gm = run.vmetrics(spec.name, g)
            b, par = gm.behaviour, gm.parallel
            if not b.n:
                continue
            src = ("metrics", "variants", spec.name, "groups", g, "behaviour")
            psrc = ("metrics", "variants", spec.name, "groups", g, "parallel")
            rows.append(
                {
                    "group": g,
                    "variant": spec.name,
                    "n": b.n,
                    "loop": Num(b.loop_rate, "p", src + ("loop_rate",)),
                    "loop_lo": Num(b.loop_ci[0], "pn", src + ("loop_ci", 0)),
                    "loop_hi": Num(b.loop_ci[1], "pn", src + ("loop_ci", 1)),
                    "onset": Num(b.mean_loop_onset_fraction, "p", src + ("mean_loop_onset_fraction",)),
                    "seq_rep": Num(b.seq_rep, "p", src + ("seq_rep",)),
                    "sb_within": Num(b.self_bleu_within, "f1", src + ("self_bleu_within",)),
                    "sb_within_num": is_num(b.self_bleu_within),
                    "sb_across": Num(par.self_bleu_across, "f1", psrc + ("self_bleu_across",)),
                    "identical": par.identical_samples,
                    "refl": Num(b.reflections_per_1k, "f1", src + ("reflections_per_1k",)),
                    "mean_len": Num(b.mean_thinking_tokens, "f1", src + ("mean_thinking_tokens",)),
                    "median_len": Num(b.median_thinking_tokens, "f1", src + ("median_thinking_tokens",)),
                    "exhausted": Num(b.budget_exhausted_rate, "p", src + ("budget_exhausted_rate",)),
                    "missing": Num(b.answer_missing_rate, "p", src + ("answer_missing_rate",)),
                    "truncated": Num(b.truncated_rate, "p", src + ("truncated_rate",)),
                    "sb_study": Num(b.self_bleu_within_study, "f1", src + ("self_bleu_within_study",)),
                    "sb_study_num": is_num(b.self_bleu_within_study),
                }
            )
    return rows


def layer_columns() -> list[Column]:
    """Columns of the layer table: every registered probe column with a label (data.probes: block
    influence, lens JSD, top-1 agreement built in)."""
    return [c for c in columns() if c.label]


def _layer_table(run: Run) -> dict[str, Any]:
    """One row per original layer, one group of columns per variant: block influence, logit-lens
    JSD to the model's own output, top-1 agreement, and for pruned variants the lens JSD to the base
    model's output (teacher-forced), and any other registered probe's labelled columns (`notes`: their
    headers and what one value is); "dropped" where the variant lacks the layer."""
    n = run.n_layers
    cols: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    builtin = builtin_columns()
    for spec in run.variants:
        la = run.layers.get(spec.name)
        if la is None:
            continue
        for pc in layer_columns():
            vals = la.per_layer.values(pc.aggregate)
            if any(is_num(x) for x in vals):
                cols.append(
                    {
                        "variant": spec.name,
                        "head": pc.label,
                        "kind": pc.fmt,
                        "src": ("layers", spec.name, "per_layer", pc.aggregate),
                        "values": dict(zip(la.layers, range(len(vals)))),
                    }
                )
                if pc not in builtin and pc.label:
                    notes[pc.label] = pc.doc
        tf = la.teacher_forced
        if tf is not None and tf.jsd_to_base_per_layer:
            cols.append(
                {
                    "variant": spec.name,
                    "head": f"lens JSD to {run.base}'s output",
                    "kind": "f3",
                    "src": ("layers", spec.name, "teacher_forced", "jsd_to_base_per_layer"),
                    "values": {o: o for o in tf.jsd_to_base_per_layer},
                }
            )
    rows = []
    for layer in range(n):
        cells: list[str | Num] = []
        for c in cols:
            cspec = run.spec(c["variant"])
            if cspec is not None and layer in cspec.dropped:
                cells.append("dropped")
            elif layer in c["values"]:
                cells.append(Num(_lookup_col(run, c, layer), c["kind"], c["src"] + (c["values"][layer],)))
            else:
                cells.append("—")
        rows.append({"layer": layer, "cells": cells, "dropped_in": [s.name for s in run.variants if layer in s.dropped]})
    spans: list[list[Any]] = []  # the header's first row: each variant over its columns
    for c in cols:
        if spans and spans[-1][0] == c["variant"]:
            spans[-1][1] += 1
        else:
            spans.append([c["variant"], 1])
    return {"columns": cols, "rows": rows, "spans": spans, "notes": list(notes.items())}


def _lookup_col(run: Run, col: dict[str, Any], layer: int) -> Any:
    from layerprobe.report.numbers import lookup

    return lookup(run.layers, list(col["src"][1:]) + [col["values"][layer]])


def _tf_summary(run: Run) -> list[dict[str, Any]]:
    out = []
    for v in run.pruned:
        la = run.layers.get(v)
        tf = la.teacher_forced if la is not None else None
        if tf is None:
            continue
        pre = ("layers", v, "teacher_forced")
        out.append(
            {
                "variant": v,
                "mean_kl": Num(tf.mean_kl, "s", pre + ("mean_kl",)),
                "n": Num(tf.n_traces, "i", pre + ("n_traces",)),
                "n_onset": Num(tf.n_onset, "i", pre + ("n_onset",)),
                "onset": Num(tf.onset_fraction_mean, "pct", pre + ("onset_fraction_mean",)),
                "peak": Num(tf.peak_position, "pct", pre + ("peak_position",)),
            }
        )
    return out


def _contrasts(run: Run) -> list[dict[str, Any]]:
    """Rows of the wrong-against-right table: per variant and measured quantity."""
    rows = []
    for i, c in enumerate(run.metrics.outcome_contrasts):
        kind = TRACE_KIND.get(c.metric, "f1")
        dkind = {"p": "d", "f1": "d1"}.get(kind, kind)
        src: tuple[Any, ...] = ("metrics", "outcome_contrasts", i)
        rows.append(
            {
                "variant": c.variant,
                "label": TRACE_METRICS[c.metric][0] if c.metric in TRACE_METRICS else c.metric,
                "wrong": Num(c.mean_wrong, kind, src + ("mean_wrong",)),
                "right": Num(c.mean_right, kind, src + ("mean_right",)),
                "n_wrong": c.n_wrong,
                "n_right": c.n_right,
                "p_wrong": c.problems_wrong,
                "p_right": c.problems_right,
                "short": verdict_short(c),
                "diff": Num(c.diff, dkind, src + ("diff",)),
                "lo": Num(c.ci_low, dkind, src + ("ci_low",)),
                "hi": Num(c.ci_high, dkind, src + ("ci_high",)),
                "verdict": c.verdict,
            }
        )
    return rows


def _run_view(run: Run, anchor: str, colors: dict[str, str], out_dir: Path, limits: Limits) -> RunView:
    narrative = {v: variant_sentences(run, v) for v in run.pruned}
    sweep_text = sweep_sentences(run, run.extras["sweep.json"]) if "sweep.json" in run.extras else []
    figs = {
        "accuracy": figures.accuracy_vs_budget(run, colors),
        "parallel": figures.parallel_curves(run, colors),
        "bi": figures.block_influence(run, colors),
        "heatmaps": [f for c in heatmap_columns() if (f := figures.heatmap(run, c.name, c.heatmap or c.name, colors))],
        "settling": figures.settling(run, colors),
        "tf": figures.teacher_forced_kl(run, colors),
        "reflections": figures.reflections(run, colors),
        "loops": figures.loops(run, colors) if run.samples else None,
        "lengths": figures.lengths(run, colors),
    }
    if run.pruned:
        cases = cases_mod.choose_cases(run, colors, limits.cases_per_variant, limits.max_chars)
    else:
        cases = cases_mod.choose_wrong_cases(run, limits.cases_per_variant, limits.max_chars)
    sweep = run.extras.get("sweep.json")
    if sweep is not None:
        figs["sweep"] = figures.sweep_map(run, sweep, colors)
    ex = run.extras.get("explain.json")
    if ex is not None:
        figs["restoration"] = figures.restoration(run, ex, colors)
        figs["breaks"] = figures.breaks_hist(ex, colors)
        figs["compounding"] = figures.compounding_fit(ex, colors)
        figs["predictors"] = figures.predictor_roc(ex)
    return RunView(
        run=run,
        anchor=anchor,
        colors=colors,
        narrative=narrative,
        headline=_headline(run),
        behaviour=_behaviour(run),
        figs=figs,
        layer_table=_layer_table(run) if run.has_probes else None,
        cases=cases,
        samples_link=run.rel("samples.jsonl", out_dir),
        tf_summary=_tf_summary(run),
        contrasts=_contrasts(run),
        sweep_text=sweep_text,
        explain=run.extras.get("explain.json"),
        broke=what_broke(run),
        explain_command=explain_command(run.dir),
        explain_problem=unshown_text("explain.json", *run.unshown["explain.json"]) if "explain.json" in run.unshown else "",
        judge=judge_view(run),
        compression=compression_view(run),
    )


def unshown_text(name: str, kind: str, detail: str) -> str:
    """Why an optional file of the run is not shown, as the report says it where its section would be."""
    if kind == "newer":
        return f"{name} is from a newer layerprobe ({detail}): its fields may mean something else, so it is not shown; open the run with that version, or compute it again with this one"
    if kind == "stale":
        return f"{name} explains other variants than the run holds now (the run was started afresh since): it is not shown; compute it again"
    return f"{name} is damaged ({detail}): it is not shown; compute it again to rewrite it"


def explain_command(run_dir: Path) -> str:
    """`layerprobe explain RUN` with RUN as the user would type it from the current directory (relative
    when the run is below it, absolute otherwise), quoted for a shell."""
    import shlex

    here = Path.cwd().resolve()
    target = run_dir.resolve()
    shown = str(target.relative_to(here)) if target.is_relative_to(here) else str(target)
    return f"layerprobe explain {shlex.quote(shown)}"


def _colors(runs: Sequence[Run]) -> dict[tuple[str, str], str]:
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


def _comparison(runs: Sequence[Run], colors: dict[tuple[str, str], str]) -> dict[str, Any]:
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
            b = r.vmetrics(spec.name).behaviour
            la = r.layers.get(spec.name)
            tf = la.teacher_forced if la is not None else None
            rows.append(
                {
                    "run": r.label,
                    "variant": spec.name,
                    "color": colors[(r.label, spec.name)],
                    "dropped": spec.dropped,
                    "method": spec.method,
                    "model": r.info.model.id,
                    "budget": budgets[-1] if budgets else None,
                    "cells": cells,
                    "loop": b.loop_rate,
                    "tf": tf.mean_kl if tf is not None else None,
                    "status": r.status,
                }
            )
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


def _healed_label(spec: Any) -> str:
    """'lora, 300 steps on base traces' for a variant whose checkpoint was healed by layerprobe heal; '' otherwise."""
    h = (getattr(spec, "provenance", None) or {}).get("healing")
    if not isinstance(h, dict):
        return ""
    data: dict[str, Any] = h["data"] if isinstance(h.get("data"), dict) else {}
    if data.get("kind") == "traces":
        on = "base traces" + (f" of {data['run']}" if data.get("source") == "run" and data.get("run") else "")
    elif data.get("kind") == "prompts" and data.get("task"):
        on = f"{data['task']} prompts"
    else:
        on = Path(str(data.get("path") or "a data file")).name
    if h.get("loss") == "reward":  # reinforcement learning: say so, and what was rewarded
        reward = h.get("reward")
        weight = reward.get("format_weight") if isinstance(reward, dict) else None
        rewarded = "correct answer" + (f" + {weight:g} x format" if isinstance(weight, (int, float)) and weight > 0 else "")
        params = "every weight" if h.get("params") == "full" else "LoRA"
        return f"GRPO ({params}), {h.get('steps', '?')} steps on {on}, reward: {rewarded}"
    return f"{h.get('how', '?')}, {h.get('steps', '?')} steps on {on}"


def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["fmt"] = fmt
    env.filters["source"] = _source_text
    env.filters["short"] = _short
    env.filters["healed"] = _healed_label
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
    if out_path.is_dir():
        raise UserError(f"cannot write the report to {out_path}: it is a folder")
    parent = out_path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"cannot write the report to {out_path}: {probe} is not a directory")
    if probe.is_dir() and not os.access(probe, os.W_OK):
        raise UserError(f"cannot write the report to {out_path}: {probe} is not writable")
    return out_path


def render_report(
    run_dirs: Sequence[str | os.PathLike[str] | Run] | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    limits: Limits | None = None,
) -> Path:
    """Render one or more run directories (paths, or runs already read with `load_run`) into a
    self-contained HTML file and return its path.

    The default output is RUN_DIR/report.html of the first run. Bad input (not a run directory,
    unreadable files, an unwritable output) raises layerprobe.errors.UserError.
    """
    t0 = time.perf_counter()
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise UserError("give at least one run directory")
    limits = limits or Limits()
    out_path = _output_path([r.dir if isinstance(r, Run) else r for r in run_dirs], out)
    with writing_into(out_path):
        return _render(run_dirs, out_path, limits, t0)


@contextmanager
def writing_into(out_path: Path) -> Iterator[None]:
    """While a report is read and written: the lock of the run (or compare) folder it is written into,
    so that it never replaces the report of a job that writes that folder (refused in one line naming
    the job); no lock for a file elsewhere."""
    folder = out_path.parent
    if not (is_run_dir(folder) or (folder / COMPARE_FILE).is_file()):
        yield
        return

    def busy(who: str) -> str:
        return (
            f"{folder} is being written by {who}: its report.html is rendered when that ends; "
            "to look at it now, give --out FILE.html"
        )

    with hold_dir_lock(folder, "report", busy=busy):
        yield


def _render(run_dirs: Sequence[str | os.PathLike[str] | Run], out_path: Path, limits: Limits, t0: float) -> Path:
    runs = [r if isinstance(r, Run) else load_run(r) for r in run_dirs]
    labels: dict[str, int] = {}
    for r in runs:
        if r.label in labels:
            labels[r.label] += 1
            r.label = f"{r.label} ({labels[r.label]})"
        else:
            labels[r.label] = 1
    out_dir = out_path.parent
    colors = _colors(runs)
    views = [
        _run_view(
            r,
            f"r{i}",
            {s.name: colors[(r.label, s.name)] for s in r.variants},
            out_dir.resolve() if out_dir.exists() else out_dir,
            limits,
        )
        for i, r in enumerate(runs)
    ]
    comparison = _comparison(runs, colors) if len(runs) > 1 else None
    env = environment()
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    html = env.get_template("report.html.jinja").render(
        views=views,
        comparison=comparison,
        css=css,
        trace_metrics={k: (v[0], TRACE_KIND[k]) for k, v in TRACE_METRICS.items()},
        rule=cases_mod.RULE,
        difference_rule=RULE,
        min_units=MIN_UNITS,
        single_rule=cases_mod.SINGLE_RULE,
        limits=limits,
        generated=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        version=runs[0].info.layerprobe_version,
    )
    html = html.replace("@@RENDER_SECONDS@@", f"{time.perf_counter() - t0:.1f}")
    # control characters a model wrote (NUL, ESC, ...) are shown as \xNN, never written raw into HTML
    html = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", html)
    from layerprobe._io import write_atomic

    data = html.encode("utf-8", "replace")  # lone surrogates from a hostile file cannot be UTF-8
    try:
        write_atomic(out_path, lambda fh: fh.write(data))
    except OSError as exc:
        raise UserError(f"cannot write the report to {out_path}: {exc.strerror or exc}") from None
    return out_path
