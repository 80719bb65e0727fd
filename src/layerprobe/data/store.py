"""An append-only, resumable run directory.

Writes are ordered so that a crash at any moment loses at most the traces in flight:
a trace's array files are written first (to a temporary name, then renamed), and only then its
line is appended to samples.jsonl and flushed to disk. A line that a crash cut short is removed
when the run is opened again; a key already present is never appended twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from layerprobe._io import check_can_write, check_writable, write_text_atomic
from layerprobe.data.schema import (
    CompareFile,
    JudgeState,
    MetricsFile,
    RunConfig,
    RunInfo,
    SampleRecord,
)
from layerprobe.errors import UserError

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
LAYERS_DIR = "layers"
LOCK_FILE = ".lock"
"""Held by the job that writes a run directory (one writer at a time)."""
LOCK_HOLDER_FILE = ".lock.json"
"""Who holds the lock (LockHolder), while it is held (data.lock)."""
EXPLAIN_LOCK_FILE = ".explain.lock"
"""The lock explain held before it took the run's own lock (left in older runs)."""
LOCK_FILES = frozenset({LOCK_FILE, LOCK_HOLDER_FILE, EXPLAIN_LOCK_FILE})


def now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_model(path: Path, model: BaseModel) -> None:
    """Write a stored file (a schema model) as strict JSON (NaN as null), atomically and durably; a file
    that cannot be written (permissions, a full disk) is a UserError naming it."""
    try:
        write_text_atomic(path, model.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"{path} cannot be written ({exc.strerror or exc})") from None


def effective_status(info: RunInfo | JudgeState) -> str:
    """The run's (or a judging's) status, with a "running" one whose process is gone on this host shown as
    "interrupted"."""
    if info.status != "running" or info.pid is None or info.host != socket.gethostname():
        return info.status
    try:
        os.kill(info.pid, 0)
    except (ProcessLookupError, OverflowError):
        return "interrupted"
    except PermissionError:
        return info.status
    return info.status


def check_links(run_dir: str | os.PathLike[str]) -> None:
    """UserError when a file or folder of the run (at its top or under layers/) is a link that leads
    outside it: layerprobe reads and writes nothing outside a run directory."""
    root = Path(run_dir)
    try:
        top = root.resolve()
        entries = list(root.iterdir()) if root.is_dir() else []
        layers = root / LAYERS_DIR
        if layers.is_dir() and not layers.is_symlink():
            entries += list(layers.iterdir())
        for p in entries:
            if p.is_symlink() and not p.resolve().is_relative_to(top):
                raise UserError(
                    f"{p} is a link to {os.readlink(p)}, outside the run; a run directory must hold its own files "
                    "(replace the link with the file itself)"
                )
    except OSError as exc:
        raise UserError(f"{root} cannot be read: {exc.strerror or exc}") from None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def read_run_info(run_dir: str | os.PathLike[str]) -> RunInfo:
    """Load and validate run.json (older layouts are migrated); a missing or invalid file is a UserError."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a layerprobe run directory (no {RUN_FILE})")
    if path.is_symlink():
        check_links(run_dir)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("kind", "layerprobe-run") != "layerprobe-run":
        raise UserError(f"{path} is not a layerprobe run file")
    try:
        return RunInfo.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path} is not a valid run file ({_first_error(exc)})") from None


COMPARE_FILE = "compare.json"
MAX_COMPARE_BYTES = 64 * 2**20
"""Largest compare.json read (one of a hundred runs with thousand-layer sweeps is a few megabytes)."""


def read_compare(out_dir: str | os.PathLike[str]) -> CompareFile:
    """Load and validate compare.json of a `layerprobe compare` directory; a missing or invalid file is
    a UserError."""
    path = Path(out_dir) / COMPARE_FILE
    if not path.is_file() or path.is_symlink():
        raise UserError(f"{out_dir} holds no {COMPARE_FILE} (written by `layerprobe compare RUN RUN ...`)")
    if path.stat().st_size > MAX_COMPARE_BYTES:
        raise UserError(f"{path} is over {MAX_COMPARE_BYTES // 2**20} MiB: not a comparison layerprobe wrote")
    try:
        return CompareFile.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise UserError(f"{path} is not a valid comparison file ({_first_error(exc)})") from None


@dataclass
class SamplesRead:
    """The valid records of samples.jsonl (first occurrence of each key), in file order, and a count
    of the lines that were skipped: not UTF-8, not JSON, not a valid record, or a repeated key."""

    records: list[SampleRecord] = field(default_factory=list)
    skipped: int = 0
    repeated: int = 0


def iter_sample_lines(run_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any] | None]:
    """Every complete line of samples.jsonl, parsed; None for a line that is not a JSON object
    (a cut-short last line, left by a crash, is not yielded at all)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # a line a crash cut short
            if not raw.strip():
                continue
            try:
                line = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield None
                continue
            yield line if isinstance(line, dict) else None


def read_samples_counted(run_dir: str | os.PathLike[str]) -> SamplesRead:
    """All valid trace records of a run with a count of the damaged lines that were skipped."""
    out = SamplesRead()
    seen: set[tuple] = set()
    for line in iter_sample_lines(run_dir):
        if line is None:
            out.skipped += 1
            continue
        try:
            rec = SampleRecord.model_validate(line)
        except ValidationError:
            out.skipped += 1
            continue
        if rec.key() in seen:
            out.repeated += 1
            continue
        seen.add(rec.key())
        out.records.append(rec)
    return out


def samples_notes(skipped: int, repeated: int) -> list[str]:
    """The lines of samples.jsonl that were left out, in words (empty when none were)."""
    notes = []
    if skipped:
        notes.append(f"{skipped} damaged line{'s' if skipped != 1 else ''} of samples.jsonl skipped")
    if repeated:
        notes.append(
            f"{repeated} line{'s' if repeated != 1 else ''} of samples.jsonl repeat{'s' if repeated == 1 else ''} "
            "a trace already there (the first kept)"
        )
    return notes


def read_samples(run_dir: str | os.PathLike[str]) -> list[SampleRecord]:
    """All valid trace records of a run, first occurrence of each key only."""
    return read_samples_counted(run_dir).records


def read_metrics(run_dir: str | os.PathLike[str]) -> MetricsFile | None:
    """metrics.json, or None when it is missing, unreadable or of an older layout."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return MetricsFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
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


NOT_COMPARED = frozenset({"probe_mode"})
"""RunConfig fields that do not change a run's traces or values: a resume may differ in them."""


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """Names of the settings that differ between two run configurations (NOT_COMPARED aside)."""
    a, b = old.model_dump(), new.model_dump()
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in NOT_COMPARED)


def run_differences(old: RunInfo, new: RunInfo) -> list[str]:
    """What makes two runs' traces incomparable: settings, the layers each variant drops (a method
    may choose differently on other calibration text), the task's data and the model's weights."""
    diff = config_differences(old.config, new.config)
    if [(v.name, v.dropped) for v in old.variants] != [(v.name, v.dropped) for v in new.variants]:
        diff.append("variants (dropped layers)")
    changed = [
        a.name
        for a, b in zip(old.variants, new.variants)
        if a.name == b.name and None not in (a.fingerprint, b.fingerprint) and a.fingerprint != b.fingerprint
    ]
    if changed:
        diff.append(f"the weights of checkpoint variant {', '.join(changed)}")

    def kept(v: Any) -> int | None:
        return v.compression.size.nonzero_linear_weights if v.compression is not None else None

    resized = [
        a.name
        for a, b in zip(old.variants, new.variants)
        if a.name == b.name and None not in (kept(a), kept(b)) and kept(a) != kept(b)
    ]
    if resized:
        diff.append(f"the weights variant {', '.join(resized)} keeps")
    if old.task.source != new.task.source or old.task.n_problems != new.task.n_problems:
        diff.append("task data")
    # a fingerprint recorded by an older layerprobe is missing (None): not a difference
    revisions_differ = None not in (old.model.revision, new.model.revision) and old.model.revision != new.model.revision
    if old.model.source != new.model.source or revisions_differ:
        diff.append("model source")
    return diff


def check_out_dir(path: Path, allow_orphan: bool = False) -> None:
    """Refuse an --out that is a file, a non-empty folder that is not a run, or not writable.

    With `allow_orphan`, a folder that lost its run.json but still holds samples.jsonl is accepted
    (`--force` resumes its traces)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(p.name not in LOCK_FILES for p in path.iterdir()) and not is_run_dir(path):
        if (path / SAMPLES_FILE).is_file():
            if not allow_orphan:
                raise UserError(
                    f"--out {path} holds samples.jsonl but no run.json; add --force to resume its traces "
                    "under the settings of this command"
                )
        else:
            raise UserError(f"--out {path} is a non-empty directory that is not a layerprobe run; choose another --out")
    check_writable(path, "--out")


def _create_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {path} is not writable ({exc.strerror or exc})") from None
    check_can_write(path, "--out")


class RunStore:
    """Writer for one run directory (create or resume). It keeps every record it has read or
    written, so one analysis reads samples.jsonl once (`records`). The job that writes the run holds
    its lock (jobs.job.Job: one writer per run directory)."""

    def __init__(self, run_dir: str | os.PathLike[str], info: RunInfo) -> None:
        self.dir = Path(run_dir)
        self.info = info
        self._records: dict[tuple, SampleRecord] = {}
        self.skipped = 0  # damaged lines found when the run was opened
        self.repeated = 0  # lines that repeat the key of an earlier line (the first is kept)
        self._fh: Any = None

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], info: RunInfo, force: bool = False, extend: bool = False) -> RunStore:
        """Create a run directory, or resume one whose configuration matches `info.config`.

        A different configuration is refused unless `force`, which starts the run afresh
        (the old samples are moved aside to samples.jsonl.<timestamp>.bak, never deleted).
        A run directory whose run.json is missing or unreadable but that holds samples is resumed
        only with `force`, which keeps the samples whose keys belong to the new run. With `extend`
        (ingest adding a variant) only a different model source is refused.
        """
        path = Path(run_dir)
        check_out_dir(path, allow_orphan=force)
        check_links(path)
        _create_out_dir(path)
        store = cls(path, info)
        try:
            if is_run_dir(path):
                try:
                    old: RunInfo | None = read_run_info(path)
                except UserError:
                    if not force:
                        raise
                    old = None
                diff = run_differences(old, info) if old is not None else []
                if extend:  # ingest adds a variant: only a different model makes the runs incomparable
                    diff = [d for d in diff if d == "model source"]
                if diff and not force:
                    raise UserError(
                        f"{path} holds a run with different settings ({', '.join(diff)}); "
                        "use another --out, or --force to start it afresh"
                    )
                if diff:
                    store._set_aside()
                elif old is not None:
                    info.created = old.created
                    info.timings = old.timings
            _repair_tail(path / SAMPLES_FILE)
            read = read_samples_counted(path)
            store._records = {rec.key(): rec for rec in read.records}
            store.skipped, store.repeated = read.skipped, read.repeated
            (path / LAYERS_DIR).mkdir(exist_ok=True)
            store.set_status("running")
        except BaseException:
            store.close()
            raise
        return store

    def _set_aside(self) -> None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for name in (SAMPLES_FILE, METRICS_FILE, "sweep.json", "explain.json"):
            p = self.dir / name
            if p.exists():
                os.replace(p, self.dir / f"{name}.{stamp}.bak")
        layers = self.dir / LAYERS_DIR
        if layers.exists():
            os.replace(layers, self.dir / f"{LAYERS_DIR}.{stamp}.bak")

    # -- state ---------------------------------------------------------------------------
    def notes(self) -> list[str]:
        """What the user should know about samples.jsonl as it was found when the run was opened."""
        return samples_notes(self.skipped, self.repeated)

    def has(self, key: tuple) -> bool:
        return key in self._records

    def get(self, key: tuple) -> SampleRecord | None:
        return self._records.get(key)

    @property
    def records(self) -> list[SampleRecord]:
        """Every record of the run, in the order it was written."""
        return list(self._records.values())

    @property
    def n_done(self) -> int:
        return len(self._records)

    def set_status(self, status: str) -> None:
        self.info.status = status  # type: ignore[assignment]
        self.info.pid = os.getpid() if status == "running" else None
        self.info.host = socket.gethostname()
        self.info.updated = now()
        write_model(self.dir / RUN_FILE, self.info)

    def layers_dir(self, variant: str) -> Path:
        d = self.dir / LAYERS_DIR / variant
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- writing -------------------------------------------------------------------------
    def append(self, record: SampleRecord) -> bool:
        """Append one trace (its array files must already be on disk). False if the key exists."""
        key = record.key()
        if key in self._records:
            return False
        line = record.model_dump_json()
        try:
            if self._fh is None:
                self._fh = open(self.dir / SAMPLES_FILE, "a", encoding="utf-8", errors="surrogateescape")
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise UserError(f"{self.dir / SAMPLES_FILE} cannot be written ({exc.strerror or exc})") from None
        self._records[key] = record
        return True

    def close(self, status: str | None = None) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if status is not None:
            self.set_status(status)
