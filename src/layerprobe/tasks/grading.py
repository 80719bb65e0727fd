"""Answer extraction and grading (DESIGN.md §5).

Math answers are compared with math-verify (`verify(parse(gold), parse(pred))`) in a worker
process, because its timeouts use signals and must not run in a thread of the caller; integers are
compared as integers; multiple choice is graded by the extracted letter, and an answer with no
extractable letter is wrong (never a default letter).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import re
from dataclasses import dataclass

_BOXED = re.compile(r"\\boxed\s*\{")
_MC_PATTERNS = [
    re.compile(r"\\boxed\s*\{\s*\(?([A-J])\)?\s*\}"),
    re.compile(r"(?:final answer|answer)\s*(?:is|:)?\s*[:\s]*\(?\*{0,2}([A-J])\b\)?", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])\)?\s*[.):]?\s*$", re.MULTILINE),
]
_INT = re.compile(r"^\s*[-+]?\d+\s*$")


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces), or None."""
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1].strip()
    return last


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The multiple-choice letter the answer commits to, or None when there is none."""
    valid = "ABCDEFGHIJ"[:n_choices]
    for pattern in _MC_PATTERNS:
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        found = [f for f in found if f in valid]
        if found:
            return found[-1]
    return None


def _verify_worker(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    # gold answers are bare LaTeX ("2\\sqrt{3}"): without delimiters math-verify reads only a prefix
    g = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$")
    p = parse(pred)
    return bool(verify(g, p))


class MathGrader:
    """math-verify in a separate process with a per-answer timeout; the pool is rebuilt after a hang."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        return self._pool

    def equivalent(self, gold: str, pred: str) -> bool:
        """True when `pred` (model text or an extracted answer) states the gold answer."""
        if _INT.match(gold) and _INT.match(pred):
            return int(gold) == int(pred)
        future = self._executor().submit(_verify_worker, gold, pred)
        try:
            return future.result(timeout=self.timeout)
        except cf.TimeoutError:
            self.close(kill=True)
            return False

    def close(self, kill: bool = False) -> None:
        if self._pool is not None:
            if kill:
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.kill()
            self._pool.shutdown(wait=not kill, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Grade:
    """The extracted answer and whether it is right."""

    extracted: str | None
    correct: bool


def grade(answer_type: str, gold: str, answer_text: str, grader: MathGrader | None = None, n_choices: int = 4) -> Grade:
    """Grade the answer part of a trace against the gold answer.

    answer_type: 'digit' / 'integer' (boxed integer compared as integer), 'math' (math-verify),
    'mc' (letter; unextractable is wrong).
    """
    if answer_type == "mc":
        letter = extract_choice(answer_text, n_choices)
        return Grade(letter, letter is not None and letter == gold.strip().upper())
    boxed = extract_boxed(answer_text)
    if answer_type in ("digit", "integer"):
        if boxed is None or not _INT.match(boxed):
            return Grade(boxed, False)
        return Grade(boxed, int(boxed) == int(gold))
    if answer_type == "math":
        pred = boxed if boxed is not None else answer_text.strip()
        if not pred:
            return Grade(None, False)
        if grader is None:
            with MathGrader() as g:
                return Grade(pred, g.equivalent(gold, f"\\boxed{{{pred}}}" if boxed is not None else pred))
        return Grade(pred, grader.equivalent(gold, f"\\boxed{{{pred}}}" if boxed is not None else pred))
    raise ValueError(f"unknown answer type {answer_type!r}")
