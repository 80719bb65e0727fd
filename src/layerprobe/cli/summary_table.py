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
    title = (f"{info.model.id} on {info.task.name}: accuracy % (95 % CI) by thinking budget B; pass/maj over "
             f"{k} samples at B={info.config.parallel_budget}; SelfBLEU across samples (0-100); refl/1k = reflection "
             "words per 1k thinking tokens" + ("  (PARTIAL RUN)" if m.partial else ""))
    t = Table(title=title, title_justify="left", pad_edge=False)
    for col in ["variant (dropped)", "group", *[f"B={b}" for b in budgets], f"pass@{k}", f"maj@{k}",
                "loops%", "SelfBLEU", "refl/1k", "tokens"]:
        t.add_column(col, justify="left" if col in ("variant (dropped)", "group") else "right", no_wrap=True)
    for name, v in m.variants.items():
        groups = v["groups"]
        order = [g for g in groups if g != "all"] or ["all"]
        if len(order) > 1:
            order = ["all", *order]
        label = f"{name} ({','.join(map(str, v['dropped']))})" if v["dropped"] else name
        for i, g in enumerate(order):
            gm = groups[g]
            par = gm.get("parallel", {})
            beh = gm.get("behaviour", {})
            t.add_row(
                label if i == 0 else "", g,
                *[_acc(gm["sequential"].get(b)) for b in budgets],
                _pct(par.get("pass_at_k", {}).get(str(k), {}).get("value")),
                _pct(par.get("maj_at_k", {}).get(str(k), {}).get("value")),
                _pct(beh.get("loop_rate")), _num(par.get("self_bleu_across")),
                _num(beh.get("reflections_per_1k")), _num(beh.get("mean_thinking_tokens"), "{:.0f}"),
                end_section=i == len(order) - 1,
            )
    console.print(t)
    for c in m.comparisons:
        if c["group"] == "all" and c["mode"] == "sequential" and c["budget"] == info.config.budgets[-1]:
            console.print(
                f"{c['variant']} vs {c['base']} at B={c['budget']}: accuracy {_pct(c['mean_b'])} vs {_pct(c['mean_a'])} %, "
                f"difference {100 * c['diff']:+.0f} points [95 % CI {100 * c['ci_low']:+.0f} to {100 * c['ci_high']:+.0f}], "
                f"{c['n_pairs']} problems: {c['verdict']}"
            )
