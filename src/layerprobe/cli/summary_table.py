"""The one-screen summary printed at the end of `layerprobe analyze` (from the run's files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerprobe.data.reader import ALL, Run, load_run
from layerprobe.data.schema import Accuracy
from layerprobe.data.store import samples_notes
from layerprobe.report.narrative import what_broke
from layerprobe.report.render import explain_command


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}"


def _acc(cell: Accuracy | None) -> str:
    if cell is None or not cell.n:
        return "–"
    return f"{_pct(cell.accuracy)} ({_pct(cell.ci[0])}-{_pct(cell.ci[1])})"


def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def print_summary(run: Run | str | Path, console: Console, explain_hint: bool = False, report: Path | None = None) -> None:
    """What went wrong with grading (first, when it did), accuracy per budget (95 % Wilson intervals)
    per variant and group, parallel scaling and trace behaviour; then what broke per variant and group
    in words, why (explain.json's findings, when there are), and the next command: `explain` when
    `explain_hint` and the run is not explained yet, and the `report` when one was written."""
    if not isinstance(run, Run):
        run = load_run(run)
    info, m = run.info, run.metrics
    for h in m.grading.values():
        if not h.meaningful:
            console.print(Text(h.message, style="bold red"))
        elif h.message:  # more than 20 % unanswered, but the base model's answers are found
            console.print(Text(f"note: {h.message}", style="bold"))
    for note in samples_notes(run.skipped_lines, run.repeated_lines):
        console.print(f"note: {note}", markup=False)
    budgets = [str(b) for b in run.config_budgets()]
    k = info.config.samples
    partial = "  (PARTIAL RUN)" if m.partial else ""
    acc = Table(
        title=f"{info.model.id} on {info.task.name}: accuracy % (95 % CI) by thinking budget B{partial}",
        title_justify="left",
        pad_edge=False,
    )
    beh = Table(
        title=(
            f"parallel: pass@{k} / maj@{k} % over {k} samples at B={info.config.parallel_budget}; the rest over all traces "
            "(every budget and sample), each the mean over problems: loops % (traces that end in a loop), SelfBLEU across "
            "samples (0-100), reflect/1k (reflection words per 1k thinking tokens), think tokens (mean thinking tokens), "
            "no answer % (no answer extracted)"
        ),
        title_justify="left",
        pad_edge=False,
    )
    for t, cols in (
        (acc, [f"B={b}" for b in budgets]),
        (beh, [f"pass@{k}", f"maj@{k}", "loops %", "SelfBLEU", "reflect/1k", "think tokens", "no answer %"]),
    ):
        t.add_column("variant (dropped)", no_wrap=True)
        t.add_column("group", no_wrap=True)
        for c in cols:
            t.add_column(c, justify="right", no_wrap=True)
    for name, v in m.variants.items():
        order = [g for g in v.groups if g != ALL] or [ALL]
        if len(order) > 1:
            order = [ALL, *order]
        label = f"{name} ({','.join(map(str, v.dropped))})" if v.dropped else name
        for i, g in enumerate(order):
            gm = v.groups[g]
            par, b = gm.parallel, gm.behaviour
            first, last = label if i == 0 else "", i == len(order) - 1
            acc.add_row(first, g, *[_acc(gm.sequential.get(x)) for x in budgets], end_section=last)
            pk, mk = par.pass_at_k.get(str(k)), par.maj_at_k.get(str(k))
            beh.add_row(
                first,
                g,
                _pct(pk.value if pk else None),
                _pct(mk.value if mk else None),
                _pct(b.loop_rate),
                "copies" if par.identical_samples else _num(par.self_bleu_across),
                _num(b.reflections_per_1k),
                _num(b.mean_thinking_tokens, "{:.0f}"),
                _pct(b.answer_missing_rate),
                end_section=last,
            )
    console.print(acc)
    console.print(beh)
    caveat = [n for n, h in m.grading.items() if not h.meaningful]
    broke = what_broke(run)
    if broke:
        console.print(
            "What broke (accuracy change against the base, points, 95 % CI)"
            + (f"; accuracy not meaningful for {', '.join(caveat)}, see above:" if caveat else ":"),
            style="bold",
        )
        for sentence in broke:
            console.print(f"  {sentence.text}", soft_wrap=True, markup=False)
    ex = run.extras.get("explain.json")
    if ex is not None and ex.findings:
        console.print("Why (layerprobe explain; every number in explain.json):", style="bold")
        for f in ex.findings:
            console.print(f"  - {f.text}", soft_wrap=True, markup=False)
    next_steps = []
    if explain_hint and run.pruned and ex is None and run.info.config.probes:  # explain needs the probes
        next_steps.append(f"{explain_command(run.dir)}   (why the pruned variants fail)")
    if report is not None:
        next_steps.append(f"open {report} in a browser   (every figure, the traces, the layer table)")
    if next_steps:
        console.print("Next:", style="bold")
        for step in next_steps:
            console.print(f"  {step}", soft_wrap=True, markup=False)


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.0f}"
