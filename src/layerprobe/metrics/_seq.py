"""Sequence utilities shared by the repetition metrics: dense codes and a suffix array.

Everything here works on a 1-D sequence of symbols (token ids, characters of a str, or any
sortable values) that is first mapped to dense integer codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: What the repetition metrics accept: a str (its characters) or a 1-D sequence of token ids.
Symbols = str | Sequence[Any] | np.ndarray


def as_codes(tokens: Symbols) -> np.ndarray:
    """Dense int64 codes (0..V-1, order-preserving) for a str or a 1-D sequence of symbols.

    Equal symbols get equal codes and distinct symbols distinct codes. Raises ValueError for
    input that is not one-dimensional and TypeError for values that cannot be compared.
    """
    if isinstance(tokens, str):
        raw = np.frombuffer(tokens.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
        arr: np.ndarray = raw.astype(np.int64)
    else:
        arr = np.asarray(tokens)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1:
            raise ValueError(f"expected a 1-D sequence of tokens, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        _, inverse = np.unique(arr, return_inverse=True)
    except TypeError as exc:  # e.g. a list mixing ints and strings
        raise TypeError(f"tokens must be mutually comparable values: {exc}") from None
    return inverse.reshape(-1).astype(np.int64, copy=False)


def as_list(tokens: Symbols) -> list[Any] | str:
    """The input as a str (for str input) or a plain list of Python values."""
    if isinstance(tokens, str):
        return tokens
    if isinstance(tokens, np.ndarray):
        return tokens.tolist()
    tolist = getattr(tokens, "tolist", None)  # e.g. a torch tensor
    if callable(tolist):
        out = tolist()
        return out if isinstance(out, list) else [out]
    return list(tokens)


def suffix_array(codes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Suffix array of `codes` by prefix doubling, with the rank table of every level.

    Returns (sa, levels): sa[r] is the start of the r-th smallest suffix; levels[j][i] is the
    class of the (end-truncated) substring codes[i:i + 2**j], so for two different start
    positions equal classes mean equal, complete substrings of length 2**j. The last level
    has all classes distinct (or there is only one level). O(n log^2 n) in numpy.
    """
    n = int(codes.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    rank = codes.astype(np.int64, copy=True)
    levels = [rank]
    k = 1
    while int(rank.max()) + 1 < n:
        second = np.zeros(n, dtype=np.int64)
        second[: n - k] = rank[k:] + 1  # 0 marks "past the end", shorter sorts first
        key = rank * (n + 1) + second
        order = np.argsort(key)
        sorted_key = key[order]
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[order] = np.concatenate(([0], np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        rank = new_rank
        levels.append(rank)
        k *= 2
    sa = np.argsort(rank, kind="stable")
    return sa.astype(np.int64, copy=False), levels


def adjacent_lcp(sa: np.ndarray, levels: list[np.ndarray]) -> np.ndarray:
    """Longest common prefix of each pair of suffixes adjacent in the suffix array.

    lcp[r] is the LCP of the suffixes starting at sa[r] and sa[r + 1] (length n - 1).
    Computed for all pairs at once by binary lifting over the doubling levels.
    """
    n = int(sa.shape[0])
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    a = sa[:-1]
    b = sa[1:]
    lcp = np.zeros(n - 1, dtype=np.int64)
    for j in range(len(levels) - 1, -1, -1):
        step = 1 << j
        pa = a + lcp
        pb = b + lcp
        ok = (pa + step <= n) & (pb + step <= n)
        if not ok.any():
            continue
        rank = levels[j]
        eq = ok & (rank[np.minimum(pa, n - 1)] == rank[np.minimum(pb, n - 1)])
        lcp += eq.astype(np.int64) * step
    return lcp


def z_function(values: list[int], limit: int) -> list[int]:
    """Z-array of `values` up to index `limit` (inclusive): z[i] = LCP(values, values[i:]).

    z[0] is defined as len(values). Linear time in `limit` plus the matched lengths.
    """
    n = len(values)
    limit = min(limit, n - 1)
    z = [0] * (limit + 1)
    if n == 0:
        return []
    z[0] = n
    left = right = 0  # [left, right) is the rightmost window known to match a prefix
    for i in range(1, limit + 1):
        if i < right:
            zi = min(right - i, z[i - left])
        else:
            zi = 0
        if i + zi >= right:
            while i + zi < n and values[zi] == values[i + zi]:
                zi += 1
            if i + zi > right:
                left, right = i, i + zi
        z[i] = zi
    return z
