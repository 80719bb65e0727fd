"""Repetition in one trace: seq-rep-n, the longest repeated substring, and end-of-trace loops.

All functions take a sequence of token ids (list, tuple, numpy array, CPU tensor) or a str
(then the symbols are its characters) and never raise on empty or very short input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from layerprobe.metrics._seq import (
    Symbols,
    adjacent_lcp,
    as_codes,
    as_list,
    suffix_array,
    z_function,
)


def seq_rep(tokens: Symbols, n: int = 4) -> float:
    """seq-rep-n: 1 - (distinct n-grams) / (all n-grams) over the token sequence.

    All n-grams are the len(tokens) - n + 1 overlapping windows. 0.0 means no n-gram occurs
    twice; values near 1 mean the trace is mostly repeats. Returns 0.0 when the sequence is
    shorter than n (there are no n-grams). Raises ValueError when n < 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    codes = as_codes(tokens)
    total = codes.shape[0] - n + 1
    if total <= 0:
        return 0.0
    vocab = int(codes.max()) + 1
    gram = codes[:total]
    for k in range(1, n):  # class of the k+1-gram at i = class of (k-gram class, next token)
        _, gram = np.unique(gram * vocab + codes[k : k + total], return_inverse=True)
        gram = gram.reshape(-1).astype(np.int64, copy=False)
    distinct = int(np.unique(gram).shape[0])
    return 1.0 - distinct / total


class RepeatedSubstring(NamedTuple):
    """The longest substring occurring at least twice, as (length, first, second).

    `first` < `second` are the start positions of two occurrences (they may overlap). Both are
    None when nothing repeats (length 0).
    """

    length: int
    first: int | None
    second: int | None


def longest_repeated_substring(tokens: Symbols) -> RepeatedSubstring:
    """The longest contiguous run of symbols that occurs at least twice in the sequence.

    Occurrences may overlap (in "aaaa" the answer is "aaa" at 0 and 1). Among several
    longest repeats, the one whose first occurrence starts earliest is reported, with its two
    earliest occurrences. Uses a suffix array with LCP, O(n log^2 n).
    """
    codes = as_codes(tokens)
    n = int(codes.shape[0])
    if n < 2:
        return RepeatedSubstring(0, None, None)
    sa, levels = suffix_array(codes)
    lcp = adjacent_lcp(sa, levels)
    best = int(lcp.max())
    if best == 0:
        return RepeatedSubstring(0, None, None)
    # Suffixes sharing a longest repeat form runs of adjacent suffix-array entries with lcp == best.
    hits = np.flatnonzero(lcp == best)
    run_id = np.concatenate(([0], np.cumsum(np.diff(hits) != 1)))
    run_start = np.flatnonzero(np.concatenate(([True], run_id[1:] != run_id[:-1])))
    run_lo = hits[run_start]  # first suffix-array rank in each run
    run_hi = np.concatenate((hits[run_start[1:] - 1], hits[-1:])) + 1  # last rank (inclusive)
    # Smallest start position within each run; report the run whose first occurrence is earliest.
    padded = np.concatenate((sa, [n]))
    bounds = np.stack((run_lo, run_hi + 1), axis=1).reshape(-1)
    run_min = np.minimum.reduceat(padded, bounds)[0::2]
    best_run = int(np.argmin(run_min))
    members = np.sort(sa[run_lo[best_run] : run_hi[best_run] + 1])
    return RepeatedSubstring(best, int(members[0]), int(members[1]))


@dataclass(frozen=True)
class Loop:
    """A back-to-back repetition that runs until the end of the sequence.

    segment: the repeated unit (a list of token ids, or a str for str input), taken from the
        onset; period: its length; repeats: how many complete copies follow the onset;
    partial: length of the incomplete final copy (0 when the sequence ends on a boundary);
    onset: index where the first copy starts; covered: symbols from onset to the end.
    """

    segment: list[Any] | str
    period: int
    repeats: int
    partial: int
    onset: int
    covered: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def detect_loop(
    tokens: Symbols,
    min_repeats: int = 3,
    max_period: int | None = None,
    allow_partial: bool = True,
) -> Loop | None:
    """Whether the sequence ends in a segment repeated back-to-back, and where that starts.

    A candidate loop of period p (1 <= p <= max_period, default len // min_repeats) is the
    longest tail s[o:] with s[i] == s[i + p] throughout; it counts when it holds at least
    `min_repeats` complete copies of s[o:o + p]. With allow_partial (default) the tail may end
    inside a copy (a trace cut by the budget mid-segment); otherwise the tail is shortened to
    whole copies. Among counting periods the earliest onset wins, then the smallest period
    (so a segment is never reported as two copies of a shorter one). None when there is no
    loop. Raises ValueError for min_repeats < 2 or max_period < 1.
    """
    if isinstance(min_repeats, bool) or not isinstance(min_repeats, int) or min_repeats < 2:
        raise ValueError(f"min_repeats must be an integer >= 2, got {min_repeats!r}")
    if max_period is not None and (not isinstance(max_period, int) or max_period < 1):
        raise ValueError(f"max_period must be a positive integer or None, got {max_period!r}")
    codes = as_codes(tokens)
    n = int(codes.shape[0])
    limit = n // min_repeats if max_period is None else min(max_period, n // min_repeats)
    if limit < 1:
        return None
    reversed_codes = codes[::-1].tolist()
    z = z_function(reversed_codes, limit)  # z[p] + p = length of the period-p tail
    best: tuple[int, int] | None = None  # (onset, period)
    for p in range(1, limit + 1):
        tail = z[p] + p
        if not allow_partial:
            tail -= tail % p
        if tail < min_repeats * p:
            continue
        onset = n - tail
        if best is None or onset < best[0]:
            best = (onset, p)
    if best is None:
        return None
    onset, period = best
    covered = n - onset
    seq = as_list(tokens)
    return Loop(
        segment=seq[onset : onset + period],
        period=period,
        repeats=covered // period,
        partial=covered % period,
        onset=onset,
        covered=covered,
    )


def repetition_summary(tokens: Symbols, n: int = 4, min_repeats: int = 3, max_period: int | None = None) -> dict[str, Any]:
    """The repetition numbers of one trace in a JSON-ready dict.

    Keys: "seq_rep_<n>", "longest_repeat" (length), "longest_repeat_positions" ([first,
    second] or None), "loop" (bool), "loop_onset", "loop_period", "loop_repeats",
    "loop_partial" (None when there is no loop), "length" (number of symbols).
    """
    lrs = longest_repeated_substring(tokens)
    loop = detect_loop(tokens, min_repeats=min_repeats, max_period=max_period)
    return {
        f"seq_rep_{n}": seq_rep(tokens, n=n),
        "longest_repeat": lrs.length,
        "longest_repeat_positions": None if lrs.first is None else [lrs.first, lrs.second],
        "loop": loop is not None,
        "loop_onset": None if loop is None else loop.onset,
        "loop_period": None if loop is None else loop.period,
        "loop_repeats": None if loop is None else loop.repeats,
        "loop_partial": None if loop is None else loop.partial,
        "length": len(tokens),
    }
