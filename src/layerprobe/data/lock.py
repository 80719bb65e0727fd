"""One writer per directory (a run, a compare folder, a healed checkpoint's folder): every job that
writes into it holds DIR/.lock for as long as it writes, and DIR/.lock.json says who holds it, so a
second writer is refused at once in one line naming the first (docs/architecture.md#jobs)."""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from layerprobe._io import hold_lock, write_text_atomic
from layerprobe.data.schema import LockHolder
from layerprobe.data.store import LOCK_FILE, LOCK_HOLDER_FILE, now
from layerprobe.rules import printable

PATIENCE_S = 120.0
"""How long a writer waits for a report or a comparison that holds the folder (a job is refused at once)."""
_HELD: set[Path] = set()
"""Directories whose lock this process holds."""


def holder(directory: str | os.PathLike[str]) -> LockHolder | None:
    """Who holds `directory`'s lock, as its .lock.json says; None when the file is missing, unreadable,
    or names a process of this machine that is gone."""
    try:
        h = LockHolder.model_validate_json((Path(directory) / LOCK_HOLDER_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if h.host == socket.gethostname():
        try:
            os.kill(h.pid, 0)
        except (ProcessLookupError, OverflowError):
            return None
        except PermissionError:
            pass
    return h


def describe(h: LockHolder | None) -> str:
    """e.g. "layerprobe analyze (pid 4242, since 2026-01-05T10:00:00+00:00: layerprobe analyze --model toy ...)"."""
    if h is None:
        return "another layerprobe job"
    what = f"layerprobe {h.job} (pid {h.pid}" + (f" on {h.host}" if h.host and h.host != socket.gethostname() else "")
    what += f", since {h.since}" if h.since else ""
    if h.command:
        cmd = shlex.join(h.command)
        what += ": " + (cmd if len(cmd) <= 160 else cmd[:157] + "...")
    return printable(what + ")", lines=False)


@contextmanager
def hold_dir_lock(
    directory: str | os.PathLike[str], job: str, command: Sequence[str] = (), busy: Callable[[str], str] | None = None
) -> Iterator[None]:
    """Hold `directory`'s lock for the block as `job`, recording who holds it; a UserError when another
    process holds it: "DIR is being written by <who>; wait for it to end or use another --out" (`busy(who)`
    gives another message), at once, or after up to PATIENCE_S when the holder is a report or a
    comparison (seconds of work). Nested holds of one directory in one process are one hold."""
    path = Path(directory)
    key = path.resolve()
    if key in _HELD:  # this process holds it already (compare renders its report inside its own lock)
        yield
        return

    def refusal() -> str:
        who = describe(holder(path))
        return busy(who) if busy is not None else f"{path} is being written by {who}; wait for it to end or use another --out"

    wait = 0.0
    if (path / LOCK_FILE).is_file():  # a report or a comparison being written takes seconds: worth waiting for
        h = holder(path)
        wait = PATIENCE_S if h is not None and h.job in ("report", "compare") else 0.0
    with hold_lock(path / LOCK_FILE, refusal, wait):
        record = LockHolder(job=job, pid=os.getpid(), host=socket.gethostname(), command=list(command), since=now())
        try:
            write_text_atomic(path / LOCK_HOLDER_FILE, record.model_dump_json() + "\n")
        except OSError:
            pass  # the lock holds without it; a refused writer then says "another layerprobe job"
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            try:
                mine = LockHolder.model_validate_json((path / LOCK_HOLDER_FILE).read_bytes()).pid == os.getpid()
            except (OSError, ValueError):
                mine = False
            if mine:
                (path / LOCK_HOLDER_FILE).unlink(missing_ok=True)


def check_free(directory: str | os.PathLike[str], job: str, busy: Callable[[str], str] | None = None) -> None:
    """Refuse now (UserError naming the holder) when another process holds `directory`'s lock: a job
    checks before it spends minutes loading a model, then takes the lock for real."""
    if (Path(directory) / LOCK_FILE).is_file():
        with hold_dir_lock(directory, job, busy=busy):
            pass
