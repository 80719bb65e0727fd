"""`layerprobe compare RUN RUN [...] [--out DIR]`: layer sensitivity of several runs side by side."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from layerprobe.cli.common import console
from layerprobe.errors import UserError


def default_compare_out(run_dirs: list[Path]) -> Path:
    """runs/compare-<8 hex digits of the resolved run paths>: the same runs land in the same place."""
    key = "\n".join(str(d.resolve()) for d in run_dirs)
    return Path("runs") / f"compare-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def compare(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="two or more run directories (any models, any tasks)", show_default=False)
    ],
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="folder for compare.json and report.html (default: runs/compare-<hash>)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="write into an --out that holds other files (replacing compare.json and report.html)")
    ] = False,
) -> None:
    """Several runs side by side: each run's layer sensitivity (its sweep, or its drop variants) on a
    relative-depth axis, block influence per layer, and paired comparisons across models on the problems
    the runs share. Writes compare.json and report.html."""
    from layerprobe.cli.common import current_argv
    from layerprobe.data.schema import MAX_COMPARED
    from layerprobe.data.store import is_run_dir
    from layerprobe.jobs.compare import compare as compute
    from layerprobe.jobs.compare import compare_out, write_compare
    from layerprobe.report.compare import cross_sentences, render_compare
    from layerprobe.report.numbers import fmt

    if len(run_dirs) < 2:
        raise UserError("give at least two run directories to compare (`layerprobe report RUN` renders one)")
    if len(run_dirs) > MAX_COMPARED:
        raise UserError(f"{len(run_dirs)} run directories: compare at most {MAX_COMPARED} at once (one colour each on one page)")
    for d in run_dirs:
        if not d.is_dir() or not is_run_dir(d):
            raise UserError(f"{d} is not a layerprobe run directory (no run.json)")
    if out is not None and not out.strip():
        raise UserError("--out '': give a folder for compare.json and report.html")
    target = Path(out) if out is not None else default_compare_out(run_dirs)
    with compare_out(target, run_dirs, force, current_argv()):  # checked before the runs are read
        result = compute(run_dirs)
        write_compare(result, target)
        report = render_compare(target)
    say = console()
    say = console(width=max(say.width, 110))  # the table stays readable when piped
    groups = list(dict.fromkeys(g for r in result.runs for g in r.regimes))
    t = Table(title="layer sensitivity: accuracy change vs base (points, 95 % CI) at each removed depth")
    t.add_column("run", no_wrap=True)
    t.add_column("removed")
    t.add_column("depth", justify="right")
    for g in groups:
        t.add_column(g, justify="right")
    for r in result.runs:
        for s in r.sensitivity:
            cells = [
                f"{fmt(s.delta[g], 'd')} [{fmt(s.delta_ci[g][0], 'd')}, {fmt(s.delta_ci[g][1], 'd')}]"
                if g in s.delta and g in s.delta_ci
                else "–"
                for g in groups
            ]
            t.add_row(
                r.label + (" [damaged]" if r.damage else ""), ", ".join(map(str, s.dropped)), fmt(s.relative_depth, "f3"), *cells
            )
    for r in result.runs:
        say.print(f"{r.label}: {r.model}, {r.n_layers} layers, {r.task}", soft_wrap=True)
        if r.damage:
            say.print(f"  damaged: {'; '.join(r.damage)}: its numbers here rest on what could be read", soft_wrap=True)
    say.print(t)
    for line in cross_sentences(result):
        say.print(line, soft_wrap=True)
    for note in result.notes:
        say.print(f"note: {note}", soft_wrap=True)
    say.print(f"wrote {target / 'compare.json'}; open {report} in a browser", soft_wrap=True)
