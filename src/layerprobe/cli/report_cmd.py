"""`layerprobe report RUN_DIR [RUN_DIR ...] [--out FILE]`: a self-contained HTML report (issue #9)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from layerprobe.errors import UserError


def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="one or more run directories written by `layerprobe analyze`", show_default=False)
    ],
    out_text: Annotated[
        str | None, typer.Option("--out", "-o", help="HTML file to write (default: RUN_DIR/report.html of the first run)")
    ] = None,
) -> None:
    """Render run directories as one self-contained HTML report (no network needed to open it)."""
    from layerprobe.report import render_report

    if out_text is not None and not out_text.strip():
        raise UserError("--out '': give an .html file to write (or an existing directory)")
    out = Path(out_text) if out_text is not None else None
    if out is not None and out.suffix.lower() not in (".html", ".htm") and not out.is_dir():
        raise UserError(f"--out {out} should be an .html file (or an existing directory)")
    t0 = time.perf_counter()
    if len(run_dirs) == 1 and (run_dirs[0] / "compare.json").is_file() and not (run_dirs[0] / "run.json").exists():
        from layerprobe.report.compare import render_compare

        path = render_compare(run_dirs[0], out)  # a `layerprobe compare` folder
    else:
        path = render_report(run_dirs, out)
    from layerprobe.cli.common import console

    console().print(str(path))
    console(stderr=True).print(f"rendered in {time.perf_counter() - t0:.1f} s")
