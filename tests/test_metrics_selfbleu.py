"""Self-BLEU across samples and within a trace, checked against plain sacrebleu."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerprobe.metrics import (
    pairwise_self_bleu,
    self_bleu,
    self_bleu_across_samples,
    self_bleu_within_trace,
    split_sentences,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def direct_self_bleu(texts):
    """The definition in docs/definitions.md#self-bleu, computed with nothing but sacrebleu.sentence_bleu."""
    scores = [sacrebleu.sentence_bleu(texts[i], [t for j, t in enumerate(texts) if j != i]).score for i in range(len(texts))]
    return sum(scores) / len(scores)


SMALL_INPUTS = [
    ["the cat sat on the mat .", "the cat sat on a mat", "a dog ran"],
    ["x", "x y", "x y z", "x y z w"],  # lengths 1..4: closest-length ties
    ["a b c d e", "a b c d e", "e d c b a", ""],  # duplicates and an empty sample
    ["Wait, 3 + 4 = 7. Hmm.", "Wait, 3+4=7, hmm!", "So the answer is 7.", "7"],
    ["\u00e9t\u00e9 \u00e0 Paris", "\u732b \u732b \u732b", "ete a paris", "\u00e9t\u00e9 \u00e0 Paris."],
    ["one two", "three four"],
    ["a a a a a a", "a a a", "a a a a a a a a a", "b a a"],
]


@pytest.mark.parametrize("texts", SMALL_INPUTS)
def test_equals_direct_sacrebleu(texts):
    assert self_bleu_across_samples(texts) == pytest.approx(direct_self_bleu(texts), abs=1e-9)
    direct = [sacrebleu.sentence_bleu(texts[i], texts[:i] + texts[i + 1 :]).score for i in range(len(texts))]
    assert pairwise_self_bleu(texts) == pytest.approx(direct, abs=1e-9)


def test_design_alias():
    texts = SMALL_INPUTS[0]
    assert self_bleu(texts) == self_bleu_across_samples(texts)


def test_identical_samples_give_100():
    texts = ["let me check the sum of the first ten odd numbers"] * 5
    assert self_bleu_across_samples(texts) == pytest.approx(100.0, abs=1e-9)


def test_disjoint_vocabularies_give_near_zero():
    texts = [" ".join(f"w{s}x{i}" for i in range(30)) for s in range(6)]
    value = self_bleu_across_samples(texts)
    assert 0.0 <= value < 1.0


def test_fewer_than_two_samples_is_nan():
    assert math.isnan(self_bleu_across_samples([]))
    assert math.isnan(self_bleu_across_samples(["only one"]))
    with pytest.raises(TypeError):
        self_bleu_across_samples("not a list")


def test_split_sentences_hand_example():
    text = "First step. Then x = 3.5 is it? Yes!\nNext line\n\n  Last one"
    assert split_sentences(text) == ["First step.", "Then x = 3.5 is it?", "Yes!", "Next line", "Last one"]
    assert split_sentences("") == []
    assert split_sentences("   \n ") == []


def test_within_trace_equals_direct_sacrebleu_over_its_sentences():
    text = "Wait, let me check. The sum is 12. Wait, let me check. The sum is 12.\nSo 12."
    sentences = split_sentences(text)
    assert len(sentences) == 5
    assert self_bleu_within_trace(text) == pytest.approx(direct_self_bleu(sentences), abs=1e-9)


def test_within_trace_one_sentence_and_empty_do_not_crash():
    assert math.isnan(self_bleu_within_trace(""))
    assert math.isnan(self_bleu_within_trace("   "))
    assert math.isnan(self_bleu_within_trace("Just one sentence without an end"))
    assert math.isnan(self_bleu_within_trace("One sentence."))


def test_within_trace_of_a_looping_trace_is_high():
    looping = "I will compute it again. " * 10
    varied = "First we add. Then we divide by two. The answer is five. Check: ten halves."
    assert self_bleu_within_trace(looping) == pytest.approx(100.0, abs=1e-9)
    assert self_bleu_within_trace(varied) < 50.0


@FAST
@given(st.lists(st.text(max_size=60), max_size=6))
def test_arbitrary_unicode_never_crashes_and_stays_in_bounds(texts):
    value = self_bleu_across_samples(texts)
    if len(texts) < 2:
        assert math.isnan(value)
    else:
        assert 0.0 <= value <= 100.0
    within = self_bleu_within_trace("\n".join(texts))
    assert math.isnan(within) or 0.0 <= within <= 100.0


WORDS = st.sampled_from(["a", "b", "c", "the", "cat", ",", ".", "7", "x=1"])


@FAST
@given(st.lists(st.lists(WORDS, max_size=12).map(" ".join), min_size=2, max_size=6), st.data())
def test_order_invariance_and_equality_with_sacrebleu(texts, data):
    value = self_bleu_across_samples(texts)
    assert value == pytest.approx(direct_self_bleu(texts), abs=1e-9)
    shuffled = data.draw(st.permutations(texts))
    assert abs(self_bleu_across_samples(shuffled) - value) <= 1e-9


# ---------------------------------------------------------------------------------------------
# the study's within-response Self-BLEU (nltk)


def study_direct(text: str) -> float:
    """The study's definition computed with nltk alone: each sentence's sentence_bleu (smoothing method 4)
    against all the others, averaged, ×100 (the study's analysis script, on layerprobe's offline splitter)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from layerprobe.metrics.selfbleu import study_sentences

    sents = study_sentences(text)
    smooth = SmoothingFunction().method4
    scores = [sentence_bleu(sents[:i] + sents[i + 1 :], s, smoothing_function=smooth) for i, s in enumerate(sents)]
    return 100 * sum(scores) / len(scores)


@given(
    st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "Wait", ",", "7"]), min_size=1, max_size=9), min_size=2, max_size=7)
)
@FAST
def test_nltk_pairwise_bleu_equals_nltk(sentences):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from layerprobe.metrics.selfbleu import nltk_pairwise_bleu

    smooth = SmoothingFunction().method4
    want = [sentence_bleu(sentences[:i] + sentences[i + 1 :], s, smoothing_function=smooth) for i, s in enumerate(sentences)]
    assert nltk_pairwise_bleu(sentences) == pytest.approx(want, abs=1e-12)


def test_study_self_bleu_on_a_reasoning_text():
    from layerprobe.metrics import self_bleu_within_study

    text = (
        "Okay, so I need $7^{2024}$ modulo 100. Let me compute the powers. 7^2 = 49. Wait, 7^4 = 2401, so 7^4 is 1 "
        "modulo 100. Hmm, so the cycle has length 4. Wait, 2024 = 4 * 506. So 7^2024 is 1 modulo 100. "
        "Let me check: 7^4 = 2401. Yes. So the answer is 1.\n<|im_start|>answer\nAnswer: \\boxed{1}"
    )
    assert self_bleu_within_study(text) == pytest.approx(study_direct(text), abs=1e-9)
    assert 0 < self_bleu_within_study(text) < 100
    assert math.isnan(self_bleu_within_study("Only one sentence here"))  # the study's script fails there
    repeated = "I try again. " * 6
    assert self_bleu_within_study(repeated) == pytest.approx(100.0)


def test_study_self_bleu_is_nan_when_nltk_gives_up_on_a_text(monkeypatch):
    """nltk's Punkt stops a pattern that reads a text too slowly with TimeoutError (". " repeated 200,000
    times, measured: after minutes); that crashed ingest. The number is then NaN ("n/a"), like a text of
    one sentence."""
    import math

    from layerprobe.metrics import selfbleu

    def gives_up(text: str) -> list[list[str]]:
        raise TimeoutError("regular-expression match exceeded its 5.0s time limit")

    monkeypatch.setattr(selfbleu, "study_sentences", gives_up)
    assert math.isnan(selfbleu.self_bleu_within_study("Wait. Wait. Wait."))
