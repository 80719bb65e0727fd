"""Optional files of a run directory beyond the core ones (sweep.json, explain.json): each is a typed
schema model registered here and read by `load_run` into `Run.extras`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from layerprobe.runs.schema import ExplainFile, SweepFile

#: file name -> schema model of the optional files a run may hold.
EXTRA_FILES: dict[str, type[BaseModel]] = {"sweep.json": SweepFile, "explain.json": ExplainFile}


def read_extras(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """Every registered optional file present in `run_dir`, validated; an unreadable one is noted."""
    out: dict[str, Any] = {}
    for name, model in EXTRA_FILES.items():
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            out[name] = model.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            notes.append(f"{name} could not be read ({msg}); it is not shown")
    return out
