"""Optional files of a run directory beyond the core ones (sweep.json, explain.json): each is a typed
schema model registered here and read by `load_run` into `Run.extras`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from layerprobe.data.schema import SCHEMA_VERSION, CompressionFile, ExplainFile, SweepFile

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


def read_extras(
    run_dir: Path,
    notes: list[str],
    variants: dict[str, list[int]] | None = None,
    problems: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Every registered optional file present in `run_dir`, validated; one that cannot be shown is noted
    and left out, and `problems` gets its name -> (kind, detail): "damaged" (not a file, not JSON, not
    valid), "newer" (written by a newer layerprobe, whose fields may mean something else) or "stale"
    (written for other variants than `variants`, name -> dropped layers). A file that is absent is
    simply not there."""
    out: dict[str, Any] = {}
    problems = {} if problems is None else problems
    for name, model in EXTRA_FILES.items():
        path = run_dir / name
        if path.exists() and not path.is_file():
            problems[name] = ("damaged", "not a file")
        elif not path.is_file():
            continue
        else:
            raw = b""
            try:
                raw = path.read_bytes()
                value = model.model_validate_json(raw)
            except (OSError, ValidationError, ValueError) as exc:
                msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                version = _version(raw)
                if version is not None and version > SCHEMA_VERSION:
                    problems[name] = ("newer", f"schema_version {version}; this one reads up to {SCHEMA_VERSION}")
                else:
                    problems[name] = ("damaged", msg)
            else:
                if not _stale(value, variants):
                    out[name] = value
                    continue
                problems[name] = ("stale", "other variants than the run has now")
        kind, why = problems[name]
        if kind == "stale":
            notes.append(f"{name} was written for {why}; it is not shown (compute it again)")
        else:
            said = "could not be read" if kind == "damaged" else "was written by a newer layerprobe"
            notes.append(f"{name} {said} ({why}); it is not shown")
    return out


def _version(raw: bytes) -> int | None:
    """The whole-number schema_version of a JSON object, if it has one."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    v = data.get("schema_version") if isinstance(data, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None
