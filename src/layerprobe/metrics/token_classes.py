"""Token and position classes of a reasoning trace (docs/explain.md#causal-layer-restoration): which tokens
are numbers, '=' signs, operations, step boundaries or reflection words, and which part of the thinking
a position is in. Pure functions over token texts; explain's causal restoration gates the removed layers
by these classes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerprobe.metrics.reflection import resolve_lexicon

POSITION_CLASSES = (
    "all",
    "none",
    "thinking",
    "answer",
    "first-25%",
    "rest-75%",
    "first-50%",
    "rest-50%",
    "first-75%",
    "rest-25%",
    "answer-start",
)
TOKEN_CLASSES = ("numbers", "equals", "operations", "boundaries", "reflection", "other")
"""Token classes, as narrow as the text allows: '=' (where a step's result is written) apart from the
operations (+5, *3, the symbols), numbers, step boundaries, reflection words (data.labels says each in words)."""
ANSWER_START = 4
"""The answer's first tokens ("answer-start"): where the answer is committed to."""
_NUMBER = re.compile(r"^\s*[-+]?\d[\d.,]*\s*$")
_EQUALS = re.compile(r"^\s*(?:=|==|≈|:=)\s*$")
_OPERATION = re.compile(r"^\s*(?:[-+*/×÷^<>]|[-+*/×÷^]\d+)\s*$")
_BOUNDARY = re.compile(r"\n|^\s*(?:s\d+|[.!?;:])\s*$")


def token_classes(token_texts: Sequence[str], reflection_spans: Sequence[tuple[int, int]]) -> list[str]:
    """The token class of each token (TOKEN_CLASSES): by its decoded text; a token that overlaps a
    reflection-lexicon match in the decoded trace is reflection."""
    out, pos = [], 0
    for text in token_texts:
        a, b = pos, pos + len(text)
        pos = b
        if any(s < b and a < e for s, e in reflection_spans):
            out.append("reflection")
        elif _EQUALS.match(text):
            out.append("equals")
        elif _OPERATION.match(text):  # before numbers: the toy's "+5" is an operation, not a signed number
            out.append("operations")
        elif _NUMBER.match(text):
            out.append("numbers")
        elif _BOUNDARY.search(text):
            out.append("boundaries")
        else:
            out.append("other")
    return out


def class_masks(n_tokens: int, thinking_tokens: int, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """(n_tokens,) bool masks of every position and token class over a trace's tokens. Position
    classes split the thinking tokens by their relative position (first x % of the thinking)."""
    idx = np.arange(n_tokens)
    think = idx < thinking_tokens
    frac = idx / max(1, thinking_tokens)
    masks = {"all": np.ones(n_tokens, bool), "none": np.zeros(n_tokens, bool), "thinking": think, "answer": ~think}
    for x in (25, 50, 75):
        masks[f"first-{x}%"] = think & (frac < x / 100)
        masks[f"rest-{100 - x}%"] = think & (frac >= x / 100)
    masks["answer-start"] = ~think & (idx < thinking_tokens + ANSWER_START)
    cls = np.asarray(classes)
    for c in TOKEN_CLASSES:
        masks[c] = cls == c
    return masks


def decoded(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], str]:
    """Each token id decoded on its own, and the trace they spell (their concatenation)."""
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return texts, "".join(texts)


def vocab_classes(tokenizer: Any, n_rows: int) -> list[str]:
    """The token class of each of the model's n_rows output ids, by its text alone (reflection words
    by the first word of each lexicon entry); ids beyond the tokenizer's (padding rows of the
    embedding, which a damaged model can still emit) are "other"."""
    first_words = {e.split()[0].lower() for e in resolve_lexicon(None)}
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if text.strip().lower() in first_words:
            out.append("reflection")
        else:
            out.append(token_classes([text], [])[0])
    return out + ["other"] * max(0, n_rows - len(out))
