"""`layerprobe runs` (being built: issue #8)."""

from __future__ import annotations

from layerprobe.errors import UserError


def runs() -> None:
    """List run directories."""
    raise UserError("layerprobe runs is not built yet")
