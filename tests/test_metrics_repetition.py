"""seq-rep, longest repeated substring and loop detection against brute-force references."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerprobe.metrics import detect_loop, longest_repeated_substring, repetition_summary, seq_rep

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_SEQS = st.lists(st.integers(min_value=0, max_value=3), max_size=60)


# ---------------------------------------------------------------- independent references
def ref_seq_rep(seq, n):
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def ref_lrs(seq):
    """(length, first, second) by brute force: the longest L with a repeat, the earliest
    start i whose length-L substring occurs again, and that next occurrence."""
    n = len(seq)
    for length in range(n - 1, 0, -1):
        for i in range(n - length + 1):
            for j in range(i + 1, n - length + 1):
                if seq[i : i + length] == seq[j : j + length]:
                    return length, i, j
    return 0, None, None


def ref_loop(seq, min_repeats=3, allow_partial=True):
    """Naive loop reference: for every period walk back from the end while the symbol
    equals the one a period later; earliest onset wins, then the smallest period."""
    n = len(seq)
    best = None
    for p in range(1, n // min_repeats + 1):
        start = n - p
        while start > 0 and seq[start - 1] == seq[start - 1 + p]:
            start -= 1
        tail = n - start
        if not allow_partial:
            tail -= tail % p
        if tail >= min_repeats * p and (best is None or n - tail < best[0]):
            best = (n - tail, p)
    if best is None:
        return None
    onset, p = best
    return onset, p, (n - onset) // p, (n - onset) % p


# ---------------------------------------------------------------- seq_rep
def test_seq_rep_hand_counted():
    # 4-grams: 1234 2341 3412 4123 1234 -> 4 distinct of 5
    assert seq_rep([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(0.2)
    assert seq_rep([5, 5, 5, 5, 5, 5], n=4) == pytest.approx(1 - 1 / 3)
    assert seq_rep([1, 2, 3, 4]) == 0.0
    assert seq_rep([1, 2, 3]) == 0.0
    assert seq_rep([]) == 0.0
    assert seq_rep("abab", n=2) == pytest.approx(1 - 2 / 3)


def test_seq_rep_rejects_bad_n():
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            seq_rep([1, 2, 3], n=n)


@FAST
@given(SMALL_SEQS, st.integers(min_value=1, max_value=5))
def test_seq_rep_matches_set_computation(seq, n):
    assert seq_rep(seq, n) == pytest.approx(ref_seq_rep(seq, n), abs=1e-12)
    value = seq_rep(seq, n)
    assert 0.0 <= value <= 1.0


def test_seq_rep_large_and_odd_ids():
    rng = np.random.default_rng(0)
    seq = rng.integers(-5, 3, size=500).tolist() + [151_000, 2**40]
    assert seq_rep(seq, 3) == pytest.approx(ref_seq_rep(seq, 3))
    assert seq_rep(np.array(seq), 3) == pytest.approx(ref_seq_rep(seq, 3))


# ---------------------------------------------------------------- longest repeated substring
def test_lrs_hand_examples():
    assert tuple(longest_repeated_substring("banana")) == (3, 1, 3)  # "ana", overlapping
    assert tuple(longest_repeated_substring("aaaa")) == (3, 0, 1)
    assert tuple(longest_repeated_substring("abcd")) == (0, None, None)
    assert tuple(longest_repeated_substring("")) == (0, None, None)
    assert tuple(longest_repeated_substring([7])) == (0, None, None)
    assert tuple(longest_repeated_substring([9, 1, 2, 3, 8, 1, 2, 3, 7])) == (3, 1, 5)


@FAST
@given(SMALL_SEQS)
def test_lrs_matches_brute_force(seq):
    got = longest_repeated_substring(seq)
    assert tuple(got) == ref_lrs(seq)
    if got.length:
        assert seq[got.first : got.first + got.length] == seq[got.second : got.second + got.length]


@FAST
@given(st.text(alphabet="ab\u00e9\U0001f600 ", max_size=40))
def test_lrs_on_str_matches_brute_force(text):
    assert tuple(longest_repeated_substring(text)) == ref_lrs(text)


def test_lrs_numpy_and_large_ids():
    seq = np.array([100_000, 5, 151_000, 100_000, 5, 151_000, 3], dtype=np.int64)
    assert tuple(longest_repeated_substring(seq)) == (3, 0, 3)


def test_lrs_rejects_2d():
    with pytest.raises(ValueError):
        longest_repeated_substring(np.zeros((3, 3), dtype=int))


# ---------------------------------------------------------------- loops
def test_loop_hand_built_with_partial_final_copy():
    seq = [7, 8, 9] + [1, 2, 3] * 4 + [1, 2]
    loop = detect_loop(seq)
    assert loop is not None
    assert (loop.segment, loop.period, loop.repeats, loop.partial, loop.onset) == ([1, 2, 3], 3, 4, 2, 3)
    assert loop.covered == len(seq) - 3


def test_loop_without_partial_copies_shortens_the_tail():
    seq = [7, 8, 9] + [1, 2, 3] * 4 + [1, 2]
    loop = detect_loop(seq, allow_partial=False)
    assert (loop.segment, loop.period, loop.repeats, loop.partial, loop.onset) == ([3, 1, 2], 3, 4, 0, 5)


def test_loop_onset_extends_into_a_matching_prefix():
    # The prefix ends with 3, which is also the last element of the segment: the loop
    # really starts one position earlier, with the rotation [3, 1, 2]: 3 1 2 | 3 1 2 | 3 1 2 | 3
    seq = [9, 3] + [1, 2, 3] * 3
    loop = detect_loop(seq)
    assert (loop.onset, loop.period, loop.segment, loop.repeats, loop.partial) == (1, 3, [3, 1, 2], 3, 1)


def test_loop_prefers_earliest_onset_over_a_short_tail_period():
    seq = list("BAAA" * 3)  # also ends in "AAA" (period 1), but the loop is BAAA from 0
    loop = detect_loop(seq)
    assert (loop.onset, loop.period, loop.segment) == (0, 4, ["B", "A", "A", "A"])


def test_loop_smallest_period_when_onsets_tie():
    loop = detect_loop([5] + [1, 2] * 6)
    assert (loop.period, loop.repeats, loop.onset) == (2, 6, 1)


def test_no_loop():
    assert detect_loop(list(range(100))) is None
    assert detect_loop([1, 2, 3, 1, 2, 3]) is None  # only two copies
    assert detect_loop([1, 2, 3, 1, 2, 3], min_repeats=2) is not None
    assert detect_loop([]) is None
    assert detect_loop([1]) is None
    assert detect_loop([4, 4]) is None


def test_loop_on_str_and_max_period():
    loop = detect_loop("intro: the end. the end. the end. the e")
    assert loop.segment == " the end." and loop.onset == 6 and loop.partial == 6
    assert detect_loop("intro: the end. the end. the end.", max_period=4) is None


def test_loop_argument_checks():
    with pytest.raises(ValueError):
        detect_loop([1, 1, 1], min_repeats=1)
    with pytest.raises(ValueError):
        detect_loop([1, 1, 1], max_period=0)


@pytest.mark.parametrize("seed", range(25))
def test_loop_on_constructed_sequences(seed):
    rnd = random.Random(seed)
    prefix = [rnd.randrange(100, 120) for _ in range(rnd.randrange(0, 40))]
    seg = rnd.sample(range(100), rnd.randrange(1, 12))  # distinct ids: a primitive segment
    k = rnd.randrange(3, 8)
    partial = rnd.randrange(0, len(seg))
    seq = prefix + seg * k + seg[:partial]
    loop = detect_loop(seq)
    assert loop is not None
    assert (loop.onset, loop.period, loop.segment, loop.repeats, loop.partial) == (len(prefix), len(seg), seg, k, partial)
    whole = detect_loop(seq, allow_partial=False)
    assert (whole.onset, whole.repeats, whole.partial) == (len(prefix) + partial, k, 0)


@FAST
@given(SMALL_SEQS, st.integers(min_value=2, max_value=4), st.booleans())
def test_loop_matches_naive_reference(seq, min_repeats, allow_partial):
    loop = detect_loop(seq, min_repeats=min_repeats, allow_partial=allow_partial)
    expected = ref_loop(seq, min_repeats, allow_partial)
    got = None if loop is None else (loop.onset, loop.period, loop.repeats, loop.partial)
    assert got == expected
    if loop is not None:
        assert loop.segment == seq[loop.onset : loop.onset + loop.period]


def test_large_loop_trace_is_handled():
    rng = np.random.default_rng(1)
    free = rng.integers(0, 1000, size=20_000)
    seq = np.concatenate([free, np.tile(np.arange(2000, 2050), 200), np.arange(2000, 2010)])
    loop = detect_loop(seq)
    assert (loop.onset, loop.period, loop.repeats, loop.partial) == (20_000, 50, 200, 10)
    lrs = longest_repeated_substring(seq)
    assert lrs.length == 200 * 50 + 10 - 50
    summary = repetition_summary(seq)
    assert summary["loop"] is True and summary["loop_onset"] == 20_000
    assert summary["length"] == seq.shape[0]
