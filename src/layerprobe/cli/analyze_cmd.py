"""`layerprobe analyze` (being built: issue #8)."""

from __future__ import annotations

from layerprobe.errors import UserError


def analyze() -> None:
    """Base and pruned variants side by side in one resumable run directory."""
    raise UserError("layerprobe analyze is not built yet")
