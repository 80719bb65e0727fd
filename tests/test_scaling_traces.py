"""Reading finished traces: where thinking and answer are in each format and shape, and how a trace ended."""

from __future__ import annotations

import pytest

from layerprobe.scaling.traces import detect_shape, finish_of, from_fields, parse_trace


def test_s1_natural_forced_reopened():
    t = parse_trace("s1", "<|im_start|>think\nfirst\nWait, second.\n<|im_start|>answer\nAnswer: \\boxed{3}<|im_end|>junk")
    assert (t.thinking, t.answer, t.ended, t.forced, t.reopened) == ("first\nWait, second.", "Answer: \\boxed{3}", True, False, 0)
    t = parse_trace(
        "s1",
        "<|im_start|>think\nhalf a sent\n<|im_start|>answer\nFinal Answer: \\boxed{5}\n<|im_start|>think\nmore\n"
        "<|im_start|>answer\nAnswer: 6\n<|im_start|>answer\nagain",
    )
    assert t.forced and t.reopened == 1 and t.thinking == "half a sent\nmore"
    # the second answer opener does not change the phase: it is kept as the model's text
    assert t.answer == "Final Answer: \\boxed{5}\nAnswer: 6\n<|im_start|>answer\nagain"
    assert parse_trace("s1", "no opener here, cut").ended is False  # opener in the prompt, no end: cut


def test_s1_with_special_tokens_stripped():
    t = parse_trace("s1", "think\nI think this through.\nThe answer line\nanswer\nAnswer: 4", bare=True)
    assert (t.thinking, t.answer) == ("I think this through.\nThe answer line", "Answer: 4")


def test_think_tags_shapes():
    assert parse_trace("think-tags", "<think>\nabc\n</think>\n\nX").thinking == "abc"
    assert parse_trace("think-tags", "abc</think>X").answer == "X"
    t = parse_trace("think-tags", "abc</think>X</think>Y<｜end▁of▁sentence｜>tail")
    assert t.answer == "X</think>Y" and not t.reopened


def test_plain_streams():
    t = parse_trace("plain", "Let me think.\nWait, no.\n\n**Final Answer**\n\\boxed{116}")
    assert (t.thinking, t.answer) == ("Let me think.\nWait, no.", "**Final Answer**\n\\boxed{116}")
    t = parse_trace("plain", "Step one.\nSo we get \\boxed{7}.")
    assert (t.thinking, t.answer) == ("Step one.", "So we get \\boxed{7}.")
    # no delimiters is still reasoning: the answer is the line that states it, else the last line
    t = parse_trace("plain", "48 + 24 = 72.\n#### 72")
    assert (t.thinking, t.answer, t.split) == ("48 + 24 = 72.", "#### 72", "the last line stating an answer")
    t = parse_trace("plain", "Okay, 3 + 4 = 7.\nWait, let me check: 3 + 4 = 7.\n\nSo it is 7.\n")
    assert (t.thinking, t.answer, t.split) == ("Okay, 3 + 4 = 7.\nWait, let me check: 3 + 4 = 7.", "So it is 7.", "the last line")
    t = parse_trace("plain", "72")
    assert (t.thinking, t.answer) == ("", "72")


@pytest.mark.parametrize(
    ("fmt", "text", "cut", "finish"),
    [
        ("think-tags", "thinking only", None, "truncated"),
        ("think-tags", "thinking only", True, "truncated"),
        ("think-tags", "thinking only", False, "answered"),  # the producer says it stopped on its own
        ("think-tags", "a</think>b", True, "max_tokens"),
        ("think-tags", "a</think>b", None, "answered"),
        ("s1", "a\n<|im_start|>answer\nFinal Answer: 3", None, "budget"),
        ("plain", "The answer is 3", None, "answered"),
        ("plain", "The answer is 3", True, "truncated"),
    ],
)
def test_how_a_trace_ended(fmt, text, cut, finish):
    assert finish_of(parse_trace(fmt, text), fmt, cut) == finish


def test_fields():
    t = from_fields("reasoning\n", "the answer<|im_end|>")
    assert (t.thinking, t.answer, t.ended) == ("reasoning", "the answer", True)
    assert from_fields("cut reasoning", "").ended is False


def test_shape_detection():
    s1p = "<|im_start|>assistant\n"
    sh = detect_shape(
        [s1p] * 3, ["<|im_start|>think\na\n<|im_start|>answer\nb", "<|im_start|>think\ncut", "x<|im_start|>answer\nb"]
    )
    assert (sh.format, sh.opener, sh.bare) == ("s1", "response", False)
    sh = detect_shape(["q<think>\n"] * 2, ["a</think>b", "cut"])
    assert (sh.format, sh.opener) == ("think-tags", "prompt")
    assert detect_shape(["q"], ["think\nabc\nanswer\nd"]).bare
    assert detect_shape(["q", "q"], ["just text", "#### 4"]).format == "plain"
    assert detect_shape(["q"], ["a</think>b"], hint="plain").format == "plain"
