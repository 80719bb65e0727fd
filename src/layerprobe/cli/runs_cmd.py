"""`layerprobe runs`: list run directories (model, variants, task, status, traces, date)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from layerprobe.cli.common import console
from layerprobe.errors import UserError


def runs(
    root: Annotated[Path, typer.Argument(help="folder holding run directories")] = Path("runs"),
) -> None:
    """List run directories: model, variants, task, status, traces done and date."""
    from layerprobe.data.store import (
        effective_status,
        is_run_dir,
        read_run_info,
        read_samples_counted,
    )

    if not root.is_dir():
        raise UserError(f"{root}: no such folder (run directories are created by `layerprobe analyze`, default ./runs)")
    dirs = sorted([root] if is_run_dir(root) else [d for d in root.iterdir() if is_run_dir(d)])
    if not dirs:
        console().print(f"no run directories in {root}")
        return
    t = Table(title=f"runs in {root}")
    t.add_column("run", no_wrap=True)  # the name stays whole so it can be copied
    for col in ("model", "variants", "task", "status", "traces", "updated"):
        t.add_column(col, overflow="fold")
    for d in dirs:
        try:
            info = read_run_info(d)
        except UserError as exc:
            t.add_row(d.name, "", "", "", f"unreadable: {exc}", "", "")
            continue
        read = read_samples_counted(d)
        n = len(read.records)
        variants = ", ".join(v.name for v in info.variants)
        done = f"{n}/{info.expected_traces}" if info.expected_traces else str(n)
        if read.skipped:
            done += f" ({read.skipped} damaged lines skipped)"
        t.add_row(
            d.name, info.model.id, variants, info.task.name, effective_status(info), done, info.updated[:16].replace("T", " ")
        )
    # the name stays whole so it can be copied: the table is as wide as it needs, never folded at 80 columns
    longest = max(len(d.name) for d in dirs)
    say = console()
    console(width=max(say.width, longest + 100)).print(t)
