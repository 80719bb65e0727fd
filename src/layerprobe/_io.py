"""Durable file writes: the one place where a file is written to a temporary name, flushed to disk
and renamed over its target, so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
from collections.abc import Callable
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
