"""Grading on hand-written equivalent and non-equivalent answers."""

from __future__ import annotations

import pytest

from layerprobe.tasks.grading import MathGrader, extract_boxed, extract_choice, grade


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout=30) as g:
        yield g


@pytest.mark.parametrize(
    "gold, answer, ok",
    [
        ("\\frac{1}{2}", "so the answer is \\boxed{0.5}", True),
        ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", True),
        ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", True),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", False),
        ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", True),
        ("(1,2)", "\\boxed{(1, 2)}", True),
        ("x^2+1", "\\boxed{1 + x^{2}}", True),
        ("x^2+1", "\\boxed{x^2-1}", False),
        ("10", "\\boxed{10\\text{ cm}}", True),
        ("10", "\\boxed{12\\text{ cm}}", False),
        ("204", "\\boxed{204}", True),
        ("204", "\\boxed{0204}", True),  # integers compared as integers
        ("204", "\\boxed{205}", False),
        ("3", "I am not sure.", False),
    ],
)
def test_math(grader, gold, answer, ok):
    assert grade("math", gold, answer, grader).correct is ok


def test_boxed_nested_and_last():
    assert extract_boxed("first \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_boxed("no box") is None
    assert extract_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    "text, letter",
    [
        ("The answer is (C).", "C"),
        ("Final answer: B", "B"),
        ("\\boxed{D}", "D"),
        ("A", "A"),
        ("I think it depends on the temperature.", None),  # no letter: wrong, never a default 'A'
        ("Answer: E", None),  # out of range for 4 choices
    ],
)
def test_choice_extraction(text, letter):
    assert extract_choice(text, 4) == letter


def test_mc_unextractable_is_wrong():
    assert grade("mc", "A", "It could be any of them").correct is False
    assert grade("mc", "A", "It could be any of them").extracted is None
    assert grade("mc", "c", "The answer is (C)").correct is True


def test_digit():
    assert grade("digit", "4", "\\boxed{ 4 }").correct
    assert not grade("digit", "4", "\\boxed{ 5 }").correct
    assert not grade("digit", "4", "4").correct  # no boxed answer
