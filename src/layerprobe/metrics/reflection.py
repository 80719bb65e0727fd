"""Reflection words ("wait", "hmm", "let me check", ...) in a thinking trace.

A lexicon entry is a word or a phrase. It matches case-insensitively, as whole words (not
inside a longer word: "await" is not "wait", "Hmmm" is not "hmm"), and the words of a phrase
may be separated by any run of whitespace, newlines included. Entries are counted
independently of each other (with both "check" and "let me check" in the lexicon, "let me
check" adds one to each).
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from layerprobe.errors import UserError

#: The default lexicon (docs/definitions.md#reflection-words).
DEFAULT_REFLECTION_LEXICON: tuple[str, ...] = (
    "wait",
    "hmm",
    "alternatively",
    "actually",
    "let me check",
    "let me verify",
    "double-check",
    "hold on",
)

#: A lexicon: None (the default), an iterable of entries, or a path (str or PathLike) to a
#: text file with one entry per line (blank lines and lines starting with '#' are skipped).
Lexicon = Union[Iterable[str], str, "os.PathLike[str]", None]

POSITION_PARTS: tuple[str, str, str] = ("early", "middle", "late")


def normalize_entry(entry: str) -> str:
    """The canonical form of a lexicon entry: lower case, single spaces, no outer spaces."""
    return " ".join(entry.split()).lower()


def load_lexicon(path: str | os.PathLike[str]) -> list[str]:
    """Entries from a UTF-8 text file, one word or phrase per line.

    Blank lines and lines starting with '#' are ignored. Raises UserError when the file
    cannot be read or holds no entry.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read the reflection lexicon {str(file)!r} ({exc.__class__.__name__}); "
            "give a UTF-8 text file with one word or phrase per line"
        ) from None
    entries = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise UserError(f"the reflection lexicon {str(file)!r} has no entries")
    return entries


def resolve_lexicon(lexicon: Lexicon = None) -> tuple[str, ...]:
    """The normalised, de-duplicated entries of `lexicon` in their first-seen order.

    None gives DEFAULT_REFLECTION_LEXICON; a str or PathLike is read as a lexicon file.
    Raises ValueError for an empty lexicon or a blank entry.
    """
    if lexicon is None:
        raw: Iterable[Any] = DEFAULT_REFLECTION_LEXICON
    elif isinstance(lexicon, (str, os.PathLike)):
        raw = load_lexicon(lexicon)
    else:
        raw = lexicon
    out: list[str] = []
    for entry in raw:
        if not isinstance(entry, str):
            raise TypeError(f"lexicon entries must be strings, got {entry!r}")
        norm = normalize_entry(entry)
        if not norm:
            raise ValueError("lexicon entries must not be blank")
        if norm not in out:
            out.append(norm)
    if not out:
        raise ValueError("the reflection lexicon is empty")
    return tuple(out)


@lru_cache(maxsize=64)
def _patterns(entries: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(
        re.compile(
            r"(?<!\w)" + r"\s+".join(re.escape(word) for word in entry.split()) + r"(?!\w)",
            re.IGNORECASE,
        )
        for entry in entries
    )


def reflection_counts(text: str, lexicon: Lexicon = None) -> dict[str, int]:
    """How often each lexicon entry occurs in `text`, as {entry: count}.

    Every entry is a key (zero included), in its normalised form (lower case, single
    spaces). Matches of one entry do not overlap each other.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    entries = resolve_lexicon(lexicon)
    return {entry: sum(1 for _ in pattern.finditer(text)) for entry, pattern in zip(entries, _patterns(entries))}


def _check_tokens(thinking_tokens: int) -> int:
    if isinstance(thinking_tokens, bool):
        raise TypeError("thinking_tokens must be an int, got a bool")
    try:
        tokens = operator.index(thinking_tokens)
    except TypeError:
        raise TypeError(f"thinking_tokens must be an int, got {thinking_tokens!r}") from None
    if tokens < 0:
        raise ValueError(f"thinking_tokens must be >= 0, got {tokens}")
    return tokens


def _as_counts(text_or_counts: str | Mapping[str, int], lexicon: Lexicon) -> dict[str, int]:
    if isinstance(text_or_counts, str):
        return reflection_counts(text_or_counts, lexicon)
    return dict(text_or_counts)


def reflection_rates(text_or_counts: str | Mapping[str, int], thinking_tokens: int, lexicon: Lexicon = None) -> dict[str, float]:
    """Occurrences per 1,000 thinking tokens, by entry: {entry: 1000 * count / tokens}.

    `text_or_counts` is the thinking text (counted with `lexicon`) or counts already made by
    reflection_counts. `thinking_tokens` is the length of the thinking phase as counted by
    the model's tokenizer. With 0 thinking tokens every rate is NaN (undefined, not 0).
    """
    tokens = _check_tokens(thinking_tokens)
    counts = _as_counts(text_or_counts, lexicon)
    if tokens == 0:
        return {entry: math.nan for entry in counts}
    return {entry: 1000.0 * count / tokens for entry, count in counts.items()}


def reflection_rate(text_or_counts: str | Mapping[str, int], thinking_tokens: int, lexicon: Lexicon = None) -> float:
    """All lexicon occurrences together per 1,000 thinking tokens (NaN for 0 tokens)."""
    tokens = _check_tokens(thinking_tokens)
    counts = _as_counts(text_or_counts, lexicon)
    if tokens == 0:
        return math.nan
    return 1000.0 * sum(counts.values()) / tokens


def reflection_profile(text: str, lexicon: Lexicon = None) -> dict[str, int]:
    """Where in the text the reflections are: counts in its early, middle and late thirds.

    Thirds are by character position of a match's first character: a match starting at
    character i of a text of length L is in third min(2, floor(3 i / L)). Keys "early",
    "middle", "late"; all lexicon entries together.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    entries = resolve_lexicon(lexicon)
    out = dict.fromkeys(POSITION_PARTS, 0)
    length = len(text)
    for pattern in _patterns(entries):
        for match in pattern.finditer(text):
            out[POSITION_PARTS[min(2, 3 * match.start() // length)]] += 1
    return out


def reflection_summary(text: str, thinking_tokens: int, lexicon: Lexicon = None) -> dict[str, Any]:
    """The reflection numbers of one thinking trace in a JSON-ready dict.

    Keys: "counts" ({entry: count}), "total" (all entries), "per_1k" (total per 1,000
    thinking tokens, NaN for 0 tokens), "rates" ({entry: per 1,000}), "profile" (early /
    middle / late thirds), "thinking_tokens".
    """
    tokens = _check_tokens(thinking_tokens)
    counts = reflection_counts(text, lexicon)
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "per_1k": reflection_rate(counts, tokens),
        "rates": reflection_rates(counts, tokens),
        "profile": reflection_profile(text, lexicon),
        "thinking_tokens": tokens,
    }


def reflection_spans(text: str, lexicon: Lexicon = None) -> list[tuple[int, int]]:
    """The (start, end) character spans of every lexicon match in `text` (entries in lexicon order)."""
    return [m.span() for p in _patterns(resolve_lexicon(lexicon)) for m in p.finditer(text)]
