"""Reflection words: hand-counted texts, word boundaries, phrases, rates and profiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerprobe.errors import UserError
from layerprobe.metrics import (
    DEFAULT_REFLECTION_LEXICON,
    reflection_counts,
    reflection_profile,
    reflection_rate,
    reflection_rates,
    reflection_summary,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_default_lexicon_has_the_design_entries():
    assert set(DEFAULT_REFLECTION_LEXICON) == {
        "wait",
        "hmm",
        "alternatively",
        "actually",
        "let me check",
        "let me verify",
        "double-check",
        "hold on",
    }


def test_every_entry_is_a_key_even_with_zero_count():
    counts = reflection_counts("")
    assert list(counts) == list(DEFAULT_REFLECTION_LEXICON)
    assert all(v == 0 for v in counts.values())


def test_hand_counted_text():
    text = (
        "Wait, the sum is 12. await the result. WAIT! Hmm... hmm. Hmmm is not counted.\n"
        "Actually, let me\n  check that. Let me verify: 3+4=7. Alternatively we double-check;\n"
        "hold\ton. waiting and awaited and wait_list are not waits."
    )
    assert reflection_counts(text) == {
        "wait": 2,  # "Wait," and "WAIT!"; not await / waiting / awaited / wait_list / waits
        "hmm": 2,
        "alternatively": 1,
        "actually": 1,
        "let me check": 1,  # across a newline and spaces
        "let me verify": 1,
        "double-check": 1,
        "hold on": 1,  # across a tab
    }


def test_await_is_not_wait():
    assert reflection_counts("await awaits await")["wait"] == 0
    assert reflection_counts("a wait")["wait"] == 1


def test_case_insensitive():
    assert reflection_counts("HMM Hmm hmm hMm", ["hmm"]) == {"hmm": 4}
    assert reflection_counts("LET ME CHECK", ["Let Me Check"]) == {"let me check": 1}


def test_phrase_needs_whitespace_between_words():
    lex = ["let me check"]
    assert reflection_counts("letme check", lex) == {"let me check": 0}
    assert reflection_counts("let me checking", lex) == {"let me check": 0}
    assert reflection_counts("let\n\nme \t check", lex) == {"let me check": 1}


def test_custom_list_lexicon_normalises_and_deduplicates():
    counts = reflection_counts("Oh wait, OK. ok", ["OK", "ok", "  oh   wait "])
    assert counts == {"ok": 2, "oh wait": 1}


def test_lexicon_file(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_text("# my words\nwait\n\nnot so fast\ntambién\n", encoding="utf-8")
    counts = reflection_counts("Wait. NOT so\nfast, y también; tambiénes", path)
    assert counts == {"wait": 1, "not so fast": 1, "también": 1}
    assert reflection_counts("wait", str(path))["wait"] == 1


def test_lexicon_file_errors(tmp_path):
    with pytest.raises(UserError):
        reflection_counts("x", tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(UserError):
        reflection_counts("x", empty)
    with pytest.raises(ValueError):
        reflection_counts("x", [])
    with pytest.raises(ValueError):
        reflection_counts("x", ["  "])


def test_rates_per_thousand_tokens():
    text = "wait wait hmm"
    assert reflection_rates(text, 500)["wait"] == pytest.approx(4.0)
    assert reflection_rates(text, 500)["hmm"] == pytest.approx(2.0)
    assert reflection_rate(text, 2000) == pytest.approx(1.5)
    assert reflection_rates({"wait": 3}, 1000) == {"wait": 3.0}


def test_zero_tokens_gives_nan_not_an_error():
    rates = reflection_rates("wait", 0)
    assert all(math.isnan(v) for v in rates.values())
    assert math.isnan(reflection_rate("", 0))
    with pytest.raises(ValueError):
        reflection_rates("wait", -1)
    with pytest.raises(TypeError):
        reflection_rates("wait", 1.5)


def test_position_profile_by_thirds():
    # 30 characters: thirds are [0, 10), [10, 20), [20, 30).
    text = "wait" + "." * 6 + "hmm" + "." * 7 + "wait.." + "hmm!"
    assert len(text) == 30
    assert reflection_profile(text) == {"early": 1, "middle": 1, "late": 2}
    assert reflection_profile("") == {"early": 0, "middle": 0, "late": 0}


def test_summary_keys_and_consistency():
    out = reflection_summary("Wait. Hmm, wait.", 100)
    assert out["total"] == 3
    assert out["per_1k"] == pytest.approx(30.0)
    assert out["counts"]["wait"] == 2
    assert sum(out["profile"].values()) == 3


# Words joined by non-word separators: the expected count is the number of words equal
# to "wait" ignoring case, computed without any regular expression.
WORDS = st.sampled_from(["wait", "Wait", "WAIT", "await", "waits", "waiting", "wa", "it", "x"])
SEPS = st.sampled_from([" ", "\n", ", ", ". ", "!\t", " -- ", "("])


@FAST
@given(st.lists(st.tuples(WORDS, SEPS), max_size=40))
def test_wait_count_matches_independent_count(pieces):
    text = "".join(w + s for w, s in pieces)
    expected = sum(1 for w, _ in pieces if w.lower() == "wait")
    assert reflection_counts(text, ["wait"]) == {"wait": expected}


@FAST
@given(st.text(max_size=300), st.integers(min_value=0, max_value=10_000))
def test_arbitrary_unicode_never_crashes(text, tokens):
    counts = reflection_counts(text)
    assert set(counts) == set(DEFAULT_REFLECTION_LEXICON)
    assert all(v >= 0 for v in counts.values())
    assert sum(reflection_profile(text).values()) == sum(counts.values())
    rates = reflection_rates(text, tokens)
    assert all(math.isnan(r) if tokens == 0 else r >= 0 for r in rates.values())
