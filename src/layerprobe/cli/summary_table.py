"""The one-screen summary printed at the end of `layerprobe analyze` (from metrics.json)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from layerprobe.runs.store import read_metrics, read_run_info


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}"


def _acc(cell: dict[str, Any] | None) -> str:
    if not cell or not cell.get("n"):
        return "–"
    lo, hi = cell.get("ci", [None, None])
    return f"{_pct(cell['accuracy'])} ({_pct(lo)}-{_pct(hi)})"


def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def print_summary(run_dir: str | Path, console: Console) -> None:
    """Accuracy per budget (95 % Wilson intervals) per variant and group, parallel scaling, and
    trace behaviour, one row per variant and task group."""
    info = read_run_info(run_dir)
    m = read_metrics(run_dir)
    if m is None:
        console.print(f"{run_dir}: no metrics.json yet")
        return
    budgets = [str(b) for b in info.config.budgets]
    k = info.config.samples
    partial = "  (PARTIAL RUN)" if m.partial else ""
    acc = Table(title=f"{info.model.id} on {info.task.name}: accuracy % (95 % CI) by thinking budget B{partial}",
                title_justify="left", pad_edge=False)
    beh = Table(title=(f"parallel: pass@{k} / maj@{k} % over {k} samples at B={info.config.parallel_budget}; "
                       "SelfBLEU across samples (0-100); reflection words per 1k thinking tokens"),
                title_justify="left", pad_edge=False)
    for t, cols in ((acc, [f"B={b}" for b in budgets]),
                    (beh, [f"pass@{k}", f"maj@{k}", "loops %", "SelfBLEU", "reflect/1k", "think tokens"])):
        t.add_column("variant (dropped)", no_wrap=True)
        t.add_column("group", no_wrap=True)
        for c in cols:
            t.add_column(c, justify="right", no_wrap=True)
    for name, v in m.variants.items():
        groups = v["groups"]
        order = [g for g in groups if g != "all"] or ["all"]
        if len(order) > 1:
            order = ["all", *order]
        label = f"{name} ({','.join(map(str, v['dropped']))})" if v["dropped"] else name
        for i, g in enumerate(order):
            gm = groups[g]
            par = gm.get("parallel", {})
            b = gm.get("behaviour", {})
            first, last = label if i == 0 else "", i == len(order) - 1
            acc.add_row(first, g, *[_acc(gm["sequential"].get(x)) for x in budgets], end_section=last)
            beh.add_row(
                first, g,
                _pct(par.get("pass_at_k", {}).get(str(k), {}).get("value")),
                _pct(par.get("maj_at_k", {}).get(str(k), {}).get("value")),
                _pct(b.get("loop_rate")), _num(par.get("self_bleu_across")),
                _num(b.get("reflections_per_1k")), _num(b.get("mean_thinking_tokens"), "{:.0f}"),
                end_section=last,
            )
    console.print(acc)
    console.print(beh)
    for c in m.comparisons:
        if c["group"] == "all" and c["mode"] == "sequential" and c["budget"] == info.config.budgets[-1]:
            console.print(
                f"{c['variant']} vs {c['base']} at B={c['budget']}: accuracy {_pct(c['mean_b'])} vs {_pct(c['mean_a'])} %, "
                f"difference {100 * c['diff']:+.0f} points [95 % CI {100 * c['ci_low']:+.0f} to {100 * c['ci_high']:+.0f}], "
                f"{c['n_pairs']} problems: {c['verdict']}"
            )
