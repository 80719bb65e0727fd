"""Optional files of a run directory beyond the core ones (sweep.json, explain.json): each is a typed
schema model registered here and read by `load_run` into `Run.extras`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from layerprobe.data.schema import CompressionFile, ExplainFile, SweepFile

#: file name -> schema model of the optional files a run may hold.
EXTRA_FILES: dict[str, type[BaseModel]] = {
    "sweep.json": SweepFile,
    "explain.json": ExplainFile,
    "compression.json": CompressionFile,
}


def _stale(model: Any, variants: dict[str, list[int]] | None) -> bool:
    """Whether an optional file describes other variants than the run has now (the run was started
    afresh with --force after it was written)."""
    if variants is None:
        return False
    if isinstance(model, (ExplainFile, CompressionFile)):
        return model.variants is not None and model.variants != variants
    if isinstance(model, SweepFile):
        return any(variants.get(layer.variant) != layer.dropped for layer in model.layers)
    return False


def read_extras(run_dir: Path, notes: list[str], variants: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Every registered optional file present in `run_dir`, validated; an unreadable one, or one written
    for other variants than `variants` (name -> dropped layers), is noted and left out."""
    out: dict[str, Any] = {}
    for name, model in EXTRA_FILES.items():
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            value = model.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            notes.append(f"{name} could not be read ({msg}); it is not shown")
            continue
        if _stale(value, variants):
            notes.append(f"{name} was written for other variants than the run has now; it is not shown (compute it again)")
            continue
        out[name] = value
    return out
