"""Durable file writes: the one place where a file is written to a temporary name, flushed to disk
and renamed over its target, so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(fh)` on a temporary file next to `path`, fsync it and rename it over `path`.

    The rename is atomic on POSIX file systems; after this returns the file is on disk (a later
    record that points at it, e.g. a samples.jsonl line, can never outlive it in a crash).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """`write_atomic` for a UTF-8 text."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda fh: fh.write(data))


def check_writable(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse, before any work, a path that could not be created or written: its nearest existing
    ancestor must be a directory with write permission (UserError naming the flag)."""
    from layerprobe.errors import UserError

    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != Path(path) and not probe.is_dir():
        raise UserError(f"{flag} {path} is not writable: {probe} is a file, not a directory")
    if not os.access(probe if probe.is_dir() else probe.parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable (no write permission in {probe if probe.is_dir() else probe.parent})")


def check_output_file(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, a path under
    a file, or a folder without write permission (UserError naming the flag)."""
    from layerprobe.errors import UserError

    if path is None:
        return
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    check_writable(path, flag)


def check_can_write(directory: str | os.PathLike[str], flag: str) -> None:
    """Refuse, before any work, a directory where no file can be created (permissions, a read-only or
    immutable file system): a file is created there and removed again (UserError naming the flag)."""
    from layerprobe.errors import UserError

    probe = Path(directory) / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{flag} {directory} is not writable ({exc.strerror or exc})") from None


def read_user_text(path: str | os.PathLike[str], flag: str, expected: str) -> str:
    """The UTF-8 text of a file the user named with `flag`; UserError (naming the flag and what is
    `expected` there) when it is missing, not a file, unreadable or not UTF-8."""
    from layerprobe.errors import UserError

    p = Path(path)
    if not p.exists():
        raise UserError(f"{flag} {p}: not found (no such file; {expected})")
    if not p.is_file():
        raise UserError(f"{flag} {p}: not a file ({expected})")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{flag} {p}: not UTF-8 text (byte {exc.start}); {expected}") from None
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot be read ({exc.strerror or exc})") from None


#: What `iter_json_lines` yields for a line that could not be used.
NOT_JSON = "not JSON"
TOO_LONG = "too long"


def iter_json_lines(path: str | os.PathLike[str], max_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, value) for every non-blank line of a JSONL file a user or another program wrote
    (a UTF-8 byte-order mark at its start is ignored):
    the parsed JSON with lone surrogates in its strings replaced (rules.clean_strings), NOT_JSON for a
    line that is not UTF-8 JSON, TOO_LONG for a line over `max_bytes` (default rules.MAX_LINE_BYTES),
    which is skipped without being held in memory. OSError when the file cannot be read."""
    import json

    from layerprobe.rules import MAX_LINE_BYTES, clean_strings

    limit = MAX_LINE_BYTES if max_bytes is None else max_bytes
    with open(path, "rb") as fh:
        n = 0
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                return
            n += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # the rest of the long line, a piece at a time
                    raw = fh.readline(1 << 20)
                yield n, TOO_LONG
                continue
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark some editors write
            if not raw.strip():
                continue
            try:
                yield n, clean_strings(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError, RecursionError):
                yield n, NOT_JSON


@contextmanager
def hold_lock(path: str | os.PathLike[str], busy: str | Callable[[], str], wait: float = 0) -> Iterator[None]:
    """One writer at a time: hold the file lock `path` for the block; a UserError when another process
    holds it (at once, or after `wait` seconds): `busy` + what to do, or `busy()` (the whole message). A
    process that dies, even by kill -9, lets go of it."""
    from filelock import FileLock, Timeout

    from layerprobe.errors import UserError

    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(busy() if callable(busy) else f"{busy}; wait for it or use another --out") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be created ({exc.strerror or exc}): the directory must be writable") from None
    try:
        yield
    finally:
        lock.release()
