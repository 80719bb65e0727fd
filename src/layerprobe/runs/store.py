"""An append-only, resumable run directory.

Writes are ordered so that a crash at any moment loses at most the traces in flight:
a trace's array files are written first (to a temporary name, then renamed), and only then its
line is appended to samples.jsonl and flushed to disk. A line that a crash cut short is removed
when the run is opened again; a key already present is never appended twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from layerprobe.errors import UserError
from layerprobe.runs.schema import (
    SCHEMA_VERSION,
    MetricsFile,
    RunConfig,
    RunInfo,
    SampleRecord,
)

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
LAYERS_DIR = "layers"


def now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write strict JSON to a temporary file and rename it over `path` (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(strict_json(data), fh, indent=1, ensure_ascii=False, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def effective_status(info: RunInfo) -> str:
    """The run's status, with a "running" run whose process is gone on this host shown as "interrupted"."""
    if info.status != "running" or info.pid is None or info.host != socket.gethostname():
        return info.status
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:
        return info.status
    return info.status


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run_info(run_dir: str | os.PathLike[str]) -> RunInfo:
    """Load and validate run.json; a missing or unreadable file is a UserError."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a layerprobe run directory (no {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read: {exc}") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {version!r}; this layerprobe reads version {SCHEMA_VERSION}")
    try:
        return RunInfo.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path} is not a valid run file ({where}: {first['msg']})") from None


def iter_sample_lines(run_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The complete, parseable lines of samples.jsonl in order (a cut-short last line is skipped)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # a line a crash cut short
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def read_samples(run_dir: str | os.PathLike[str]) -> list[SampleRecord]:
    """All trace records of a run, first occurrence of each key only."""
    seen: set[tuple] = set()
    out: list[SampleRecord] = []
    for line in iter_sample_lines(run_dir):
        try:
            rec = SampleRecord.model_validate(line)
        except ValidationError:
            continue
        if rec.key() in seen:
            continue
        seen.add(rec.key())
        out.append(rec)
    return out


def read_metrics(run_dir: str | os.PathLike[str]) -> MetricsFile | None:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return MetricsFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def _repair_tail(path: Path) -> None:
    """Cut a partial last line (left by a crash mid-write) so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """Names of the settings that differ between two run configurations."""
    a, b = old.model_dump(), new.model_dump()
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def run_differences(old: RunInfo, new: RunInfo) -> list[str]:
    """What makes two runs' traces incomparable: settings, the layers each variant drops (a method
    may choose differently on other calibration text), the task's data and the model's weights."""
    diff = config_differences(old.config, new.config)
    if [(v.name, v.dropped) for v in old.variants] != [(v.name, v.dropped) for v in new.variants]:
        diff.append("variants (dropped layers)")
    if old.task.source != new.task.source or old.task.n_problems != new.task.n_problems:
        diff.append("task data")
    if (old.model.source, old.model.revision) != (new.model.source, new.model.revision):
        diff.append("model source")
    return diff


def check_out_dir(path: Path) -> None:
    """Refuse an --out that is a file, a non-empty folder that is not a run, or not writable."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not is_run_dir(path):
        raise UserError(f"--out {path} is a non-empty directory that is not a layerprobe run; choose another --out")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {path} is not writable (no write permission in {existing})")


def _create_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {path} is not writable ({exc.strerror or exc})") from None


class RunStore:
    """Writer for one run directory (create or resume)."""

    def __init__(self, run_dir: str | os.PathLike[str], info: RunInfo) -> None:
        self.dir = Path(run_dir)
        self.info = info
        self._keys: set[tuple] = set()
        self._fh: Any = None
        self._lock: Any = None

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], info: RunInfo, force: bool = False) -> RunStore:
        """Create a run directory, or resume one whose configuration matches `info.config`.

        A different configuration is refused unless `force`, which starts the run afresh
        (the old samples are moved aside to samples.jsonl.<timestamp>.bak, never deleted).
        """
        path = Path(run_dir)
        check_out_dir(path)
        _create_out_dir(path)
        store = cls(path, info)
        store._take_lock()
        try:
            if is_run_dir(path):
                old = read_run_info(path)
                diff = run_differences(old, info)
                if diff and not force:
                    raise UserError(
                        f"{path} holds a run with different settings ({', '.join(diff)}); "
                        "use another --out, or --force to start it afresh"
                    )
                if diff:
                    store._set_aside()
                else:
                    info.created = old.created
                    info.timings = old.timings
            _repair_tail(path / SAMPLES_FILE)
            store._keys = {rec.key() for rec in read_samples(path)}
            (path / LAYERS_DIR).mkdir(exist_ok=True)
            store.set_status("running")
        except BaseException:
            store.close()
            raise
        return store

    def _take_lock(self) -> None:
        """One writer per run directory: a second process on the same --out is refused."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no advisory locks on this platform
            return
        fh = open(self.dir / ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise UserError(f"{self.dir} is being written by another layerprobe process; wait for it or use another --out") from None
        self._lock = fh

    def _set_aside(self) -> None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for name in (SAMPLES_FILE, METRICS_FILE):
            p = self.dir / name
            if p.exists():
                os.replace(p, self.dir / f"{name}.{stamp}.bak")
        layers = self.dir / LAYERS_DIR
        if layers.exists():
            os.replace(layers, self.dir / f"{LAYERS_DIR}.{stamp}.bak")

    # -- state ---------------------------------------------------------------------------
    def has(self, key: tuple) -> bool:
        return key in self._keys

    @property
    def n_done(self) -> int:
        return len(self._keys)

    def set_status(self, status: str) -> None:
        self.info.status = status  # type: ignore[assignment]
        self.info.pid = os.getpid() if status == "running" else None
        self.info.host = socket.gethostname()
        self.info.updated = now()
        write_json_atomic(self.dir / "run.json", self.info.model_dump(mode="json"))

    def layers_dir(self, variant: str) -> Path:
        d = self.dir / LAYERS_DIR / variant
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- writing -------------------------------------------------------------------------
    def append(self, record: SampleRecord) -> bool:
        """Append one trace (its array files must already be on disk). False if the key exists."""
        key = record.key()
        if key in self._keys:
            return False
        line = json.dumps(strict_json(record.model_dump(mode="json")), ensure_ascii=False, allow_nan=False)
        if self._fh is None:
            self._fh = open(self.dir / SAMPLES_FILE, "a", encoding="utf-8")
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._keys.add(key)
        return True

    def close(self, status: str | None = None) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if status is not None:
            self.set_status(status)
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None
