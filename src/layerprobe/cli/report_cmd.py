"""`layerprobe report` (being built: issue #9)."""

from __future__ import annotations

from layerprobe.errors import UserError


def report() -> None:
    """Render run directories as a self-contained HTML report."""
    raise UserError("layerprobe report is not built yet")
