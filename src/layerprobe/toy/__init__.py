"""The embedded toy reasoning model (weights shipped inside the package)."""

from __future__ import annotations

from pathlib import Path

from layerprobe.errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"


def toy_model_dir() -> Path:
    """Directory of the shipped toy checkpoint; UserError if this build does not ship one."""
    if not (WEIGHTS_DIR / "config.json").is_file():
        raise UserError(
            "the embedded toy model is not shipped in this build yet "
            f"(expected {WEIGHTS_DIR}/config.json); use --model smollm2-135m or a hub id / local checkpoint"
        )
    return WEIGHTS_DIR
