"""`layerprobe report`: run directories -> one self-contained HTML file (issue #9).

from layerprobe.report import render_report
render_report(["runs/a", "runs/b"], out="cmp.html")   # -> Path
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render_report(run_dirs: Any, out: Any = None, **kwargs: Any) -> Path:
    """Render one or more run directories into a self-contained HTML report; returns its path."""
    from layerprobe.report.render import render_report as _render

    return _render(run_dirs, out, **kwargs)


__all__ = ["render_report"]
