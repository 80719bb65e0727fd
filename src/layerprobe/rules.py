"""The rules for input layerprobe does not control, one place per kind (docs/architecture.md#input):

- **names that become paths or are printed** (variant labels, `--variant NAME=`): `check_name`;
- **paths read from run files** (a record's `layers_file`, `tf_file`): `safe_relative` (the schema's
  check) and `inside` (the check on disk, symlinks resolved);
- **values read from foreign files** (lm-eval's gen_kwargs and results files, JSONL traces): `as_int`,
  `as_float`, `clean_text`, `clean_strings`;
- **names and text printed to a terminal**: `printable` (control characters shown as escapes);
- **sizes bounded before work starts**: `MAX_LINE_BYTES` (one line of a JSONL file), `check_workers`.

Every failure here is either a UserError (one line, exit 2) before any work, or a value the caller
counts as a skip.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from layerprobe.errors import UserError

# ------------------------------------------------------------------------------------------ names

NAME_RULE = "letters, digits, '.', '_', '+', '=', '-', at most 64, starting with a letter or a digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,63}", re.ASCII)


def is_name(name: Any) -> bool:
    """Whether `name` may name a variant: it becomes a folder and a file name and is printed."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: str, flag: str) -> str:
    """`name` when it follows the rule, else a UserError naming `flag` and what is valid."""
    if not is_name(name):
        raise UserError(f"{flag} {name!r}: a name may hold {NAME_RULE} (it becomes a folder name in the run)")
    return name


# ------------------------------------------------------------------------------------------ paths


def safe_relative(rel: str) -> bool:
    """Whether a path read from a run file stays inside the run directory by its spelling: relative,
    forward slashes, no '..', no drive, no empty or '.' parts."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return False
    parts = PurePosixPath(rel).parts
    return all(p not in ("", ".", "..") for p in parts) and not rel.endswith("/")


def inside(root: str | os.PathLike[str], rel: str | None) -> Path | None:
    """The file `rel` names inside `root`, or None when it is missing, not a file, spelled to leave
    `root`, or a link that resolves outside it."""
    if not rel or not safe_relative(rel):
        return None
    base = Path(root)
    path = base / rel
    try:
        if not path.is_file() or not path.resolve().is_relative_to(base.resolve()):
            return None
    except OSError:
        return None
    return path


# ------------------------------------------------------------------------------------------ foreign values


def as_int(x: Any) -> int | None:
    """An integer read from a foreign file: an int (not a bool) or a string of ASCII digits with an
    optional sign; None for anything else ("²", "3.5", "many", true)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", x):
        return int(x)
    return None


def as_float(x: Any) -> float | None:
    """A finite number read from a foreign file (int, float or a numeric string); None otherwise
    ("hot", NaN, infinity, true)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        v = float(x)
    elif isinstance(x, str):
        try:
            v = float(x)
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def clean_text(s: str) -> str:
    """A string from a foreign file with lone surrogates (a JSON "\\ud800" escape: not text, and no
    tokenizer or UTF-8 writer takes it) replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_strings(obj: Any) -> Any:
    """`obj` (parsed JSON) with every string, keys included, passed through `clean_text`."""
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, list):
        return [clean_strings(x) for x in obj]
    if isinstance(obj, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_strings(v) for k, v in obj.items()}
    return obj


#: Characters a terminal acts on instead of showing (C0 controls but line break and tab, DEL, C1 controls,
#: and the bidirectional overrides that reorder what is shown).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, lines: bool = True) -> str:
    """`text` (a name or text from a file) safe to print: every control character written as its escape
    (ESC as `\\x1b`), so a file name or a model's text cannot move the cursor, recolour or retitle the
    terminal, or forge a line. `lines=False`: line breaks and tabs escaped too (a one-line message)."""
    pattern = _CONTROL if lines else _ONE_LINE
    return pattern.sub(lambda m: repr(m.group())[1:-1], text) if pattern.search(text) else text


_ONE_LINE = re.compile(_CONTROL.pattern[:-1] + r"\n\t]")


# ------------------------------------------------------------------------------------------ sizes

MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longest line of a JSONL file that is read (4 MiB, about a million tokens: far beyond any model's
context; a longer line is skipped and counted, never decoded, so it costs no memory)."""


def max_workers() -> int:
    """Most worker processes one machine is given: one per CPU core."""
    return max(1, os.cpu_count() or 1)


def check_workers(n: int, flag: str = "--workers") -> int:
    """`n` when 1 <= n <= the CPU cores of this machine (more would only wait for each other and
    multiply the memory of the model copies); a UserError otherwise."""
    cap = max_workers()
    if n < 1 or n > cap:
        raise UserError(f"{flag} {n}: give 1 to {cap} (one worker per CPU core of this machine at most)")
    return n
