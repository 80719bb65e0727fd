"""`layerprobe explain RUN`: why the pruned variants fail (restoration, breaks, predictors), then the report again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layerprobe.cli.common import DeviceOpt, console
from layerprobe.errors import UserError


def explain(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `layerprobe analyze`", show_default=False)],
    no_generation: Annotated[
        bool, typer.Option("--no-generation", help="restoration teacher-forced only (no accuracy recovery)")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", help="long-chain problems for the accuracy recovery (default: all of the run's)")
    ] = None,
    device: DeviceOpt = "auto",
    no_report: Annotated[bool, typer.Option("--no-report", help="do not re-render report.html")] = False,
) -> None:
    """Why the pruned variants fail: causal restoration of the removed layers by position class,
    where failing chains part from the base, error compounding, failure predictors; writes
    RUN/explain.json and re-renders the report with a "Why it failed" section first."""
    from layerprobe.data.store import is_run_dir, samples_notes
    from layerprobe.jobs.explain import Explain

    if not run_dir.is_dir() or not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a layerprobe run directory (no run.json)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1")
    from layerprobe.cli.common import current_argv, progress_bars

    with progress_bars() as progress:
        job = Explain(run_dir, generation=not no_generation, limit=limit, device=device, progress=progress, argv=current_argv())
        ex = job.run()
    say = console()
    for note in samples_notes(job.run_read.skipped_lines, job.run_read.repeated_lines):
        say.print(f"note: {note}", markup=False)
    for f in ex.findings:
        say.print(f"- {f.text}")
    if not ex.findings:
        say.print("no finding outside the noise (see explain.json for every number)")
    for why in ex.skipped:
        say.print(f"not computed: {why}", highlight=False, soft_wrap=True)
    if not no_report:
        from layerprobe.report import render_report

        say.print(f"report: {render_report([run_dir])}")
    say.print(f"wrote {run_dir / 'explain.json'}")
