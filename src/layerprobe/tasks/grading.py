"""Answer extraction and grading (docs/grading.md).

Extraction is a cascade per answer type: the first rule that finds an answer wins, and the rule's
name is recorded with every sample, so a reader can see how answers were found:

- digit (the embedded toy): boxed only; the toy is trained to box its answer, anything else is a
  format failure of the model;
- integer: boxed -> json (`{"answer": 70}`) -> phrase ("the final answer is 70", "Answer: 70") -> gsm8k
  ("#### 70") -> last-number;
- math: boxed -> json -> phrase -> gsm8k -> math-verify (its own extraction of the last expression);
- mc: boxed letter -> json (`{"answer": "B"}`) -> phrase ("the answer is (C)", "Answer: (B)") -> letter-line
  (a line holding only a letter) -> last-letter (the last "(C)" / "C)" / standalone valid letter).

When the model wrote no answer after its thinking (the answer part is empty), `grade_trace` reads the
thinking instead, with the explicit rules only (boxed, json, phrase, gsm8k; never a last number,
letter or expression, which in a chain of reasoning is rarely the answer), and records the rule as
"thinking:<rule>". A trace cut before its thinking ended is never graded (`grade_trace(...,
truncated=True)`): no rule reads an unfinished chain of reasoning.

Math answers are compared with math-verify (`verify(parse(gold), parse(pred))`) in a worker process,
because its timeouts use signals and must not run in a thread of the caller; integers are compared
as numbers; multiple choice by the extracted letter. An answer no rule finds is wrong (never a
default letter or number).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TypeVar

T = TypeVar("T")

# Every rule below reads a text in time linear in its length, whatever the text (docs/grading.md#bad-text):
# no two adjacent quantifiers can match the same characters (each character is consumed in one way
# only), so a failed match never tries the ways of splitting a run of spaces; a rule that needs a
# closing brace finds it in one pass. tests/test_grading.py feeds each rule megabytes of hostile text.
_BRACES = re.compile(r"\\boxed\s*\{|[{}]")
# after "answer": white space, then "is", ":" or "=", then white space and colons, then "**" and spaces
_SEP = r"\s*(?:is|:|=)[:\s]*(?:\*+\s*)?"
_MC_PATTERNS = [
    re.compile(r"\\boxed\s*\{\s*\(?([A-J])\)?\s*\}"),
    re.compile(r"(?:final answer|answer)(?:\s*is)?[:\s]*\(?\*{0,2}([A-J])\b\)?", re.IGNORECASE),
    re.compile(r"^[^\S\n]*\(?([A-J])\)?\s*(?:[.):]\s*)?$", re.MULTILINE),
]
INT_RE = re.compile(r"^\s*[-+]?\d+\s*$")
_INT = INT_RE


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces), or None."""
    opened: list[int] = []  # per open brace: where a box's content starts, or -1 for any other brace
    last: tuple[int, int] | None = None
    for m in _BRACES.finditer(text):
        if m.group() == "}":
            if opened:
                start = opened.pop()
                if start >= 0 and (last is None or start > last[0]):
                    last = (start, m.start())
        else:
            opened.append(-1 if m.group() == "{" else m.end())
    return text[last[0] : last[1]].strip() if last else None


_NUMBER = r"[-+]?\$?\d[\d,]*(?:\.\d+)?"
_PHRASE = re.compile(r"(?:final answer|the answer|answer)" + _SEP + r"(" + _NUMBER + r")", re.IGNORECASE)
# the answer runs to the end of its sentence or line: the first "." before white space or the end, a
# line break, or the end of the text (its pieces never end where it may stop, so it stops at the first)
_PHRASE_TEXT = re.compile(
    r"(?:final answer|the answer|answer)" + _SEP + r"([^\n](?:[^\s.]|\.(?=\S)|[^\S\n]+(?=[^\s.]|\.\S))*)\s*(?:\.\s*$|\.\s|\n|$)",
    re.IGNORECASE,
)
_GSM8K = re.compile(r"####\s*(" + _NUMBER + r")")
_LAST_NUMBER = re.compile(_NUMBER)
# a letter in parentheses, before ")", or standing alone before punctuation or the end ("A lot" is an article)
_LAST_LETTER = [
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b([A-J])\)"),
    re.compile(r"(?<![A-Za-z'])([A-J])(?=\s*[.,;:!?]|\s*$)", re.MULTILINE),
]


_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_JSON_KEYS = ("answer", "final_answer", "final answer")


def extract_json_answer(text: str) -> str | None:
    """The value of the last JSON object's "answer" (or "final_answer") key, as text; None if none.
    Only flat objects (`{"answer": "B"}`, `{"answer": 42, "reason": "..."}`) are read."""
    last = None
    for m in _JSON_OBJECT.finditer(text):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if str(key).strip().lower() in _JSON_KEYS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                last = str(value).strip()
    return last or None


def _clean_number(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip()


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The multiple-choice letter the answer commits to, or None when there is none."""
    return extract_choice_rule(text, n_choices)[0]


def extract_choice_rule(text: str, n_choices: int = 4, explicit_only: bool = False) -> tuple[str | None, str | None]:
    """(letter, rule) for a multiple-choice answer (see the module docstring); (None, None) if none.
    `explicit_only`: boxed, json and phrase only."""
    valid = "ABCDEFGHIJ"[:n_choices]
    rules = ("boxed", "phrase") if explicit_only else ("boxed", "phrase", "letter-line")
    for rule, pattern in zip(rules, _MC_PATTERNS):
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        found = [f for f in found if f in valid]
        if found:
            return found[-1], rule
        if rule == "boxed":
            value = extract_json_answer(text)
            letter = re.fullmatch(r"\(?([A-Ja-j])\)?(?:[.):]|\s.*)?", value or "", re.DOTALL)
            if letter and letter.group(1).upper() in valid:
                return letter.group(1).upper(), "json"
    if explicit_only:
        return None, None
    last: tuple[int, str] | None = None
    for pattern in _LAST_LETTER:
        for m in pattern.finditer(text):
            if m.group(1) in valid and (last is None or m.start() > last[0]):
                last = (m.start(), m.group(1))
    return (last[1], "last-letter") if last else (None, None)


def extract_number(text: str, explicit_only: bool = False) -> tuple[str | None, str | None]:
    """(number, rule) for an integer answer: boxed, phrase, gsm8k, last-number (module docstring);
    `explicit_only` stops before last-number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        inner = _LAST_NUMBER.findall(boxed.replace("\\!", "").replace("{,}", ","))
        return (_clean_number(inner[-1]) if inner else boxed), "boxed"
    value = extract_json_answer(text)
    if value is not None:
        inner = _LAST_NUMBER.findall(value)
        return (_clean_number(inner[-1]) if inner else value), "json"
    for rule, pattern in (("phrase", _PHRASE), ("gsm8k", _GSM8K)):
        found = pattern.findall(text)
        if found:
            return _clean_number(found[-1]), rule
    if explicit_only:
        return None, None
    found = _LAST_NUMBER.findall(text)
    return (_clean_number(found[-1]), "last-number") if found else (None, None)


MATH_VERIFY_CHARS = 4_000
"""The most math-verify reads of one text: its own extraction reads the last this many characters of an
answer (from a line start), and a gold or extracted answer longer than this is never compared (wrong)."""


def gold_problem(answer_type: str, gold: str, n_choices: int = 4) -> str | None:
    """Why `gold` cannot grade answers of `answer_type` (e.g. "four" for integer answers, "" for any),
    or None when it can. A trace with an unusable gold answer is not graded."""
    g = gold.strip()
    if not g:
        return "no gold answer"
    if len(g) > MATH_VERIFY_CHARS:
        return f"gold answer over {MATH_VERIFY_CHARS:,} characters"
    if answer_type == "digit" and not _INT.match(g):
        return "gold answer not an integer"
    if answer_type == "integer" and _number(g) is None:
        return "gold answer not a number"
    if answer_type == "mc" and g.upper().strip("() ") not in set("ABCDEFGHIJ"[:n_choices]):
        return f"gold answer not a choice letter A-{'ABCDEFGHIJ'[n_choices - 1]}"
    return None


def _number(text: str) -> Decimal | None:
    """A number written in text ("1,200", "$70", "70.00", "-3"), exactly (no float rounding or overflow:
    two different 30-digit integers are different); None when it is not one (NaN included)."""
    try:
        value = Decimal(_clean_number(text))
    except (InvalidOperation, ValueError):
        return None
    return None if value.is_nan() else value


def numbers_equal(gold: str, pred: str) -> bool:
    """Integer-task comparison: both parse as numbers and are equal (70 == 70.0 == 70.00)."""
    a, b = _number(pred), _number(gold)
    return a is not None and b is not None and a == b


def _verify_worker(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    # gold answers are bare LaTeX ("2\\sqrt{3}"): without delimiters math-verify reads only a prefix
    g = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$")
    p = parse(pred)
    return bool(verify(g, p))


def _extract_worker(text: str) -> str | None:
    """math-verify's own extraction of the last LaTeX or plain expression, as a string."""
    try:
        from math_verify import parse

        found = parse(text)
    except Exception:  # noqa: BLE001 - nothing extractable
        return None
    return str(found[-1]) if found else None


def _tail(text: str) -> str:
    """The last MATH_VERIFY_CHARS characters of `text`, from the first line start inside them when there is one."""
    if len(text) <= MATH_VERIFY_CHARS:
        return text
    tail = text[-MATH_VERIFY_CHARS:]
    rest = tail.partition("\n")[2]
    return rest if rest.strip() else tail


class MathGrader:
    """math-verify in a separate process with a per-answer timeout; the pool is rebuilt after a hang.
    It never reads more than MATH_VERIFY_CHARS characters of a text."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            from layerprobe._proc import die_with_parent

            self._pool = cf.ProcessPoolExecutor(
                max_workers=1, mp_context=mp.get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
            )
        return self._pool

    def _call(self, fn: Callable[..., T], *args: str) -> T | None:
        """`fn(*args)` in the worker; None when it fails or takes longer than the timeout (the worker is then
        killed and a fresh one started for the next call)."""
        try:
            return self._executor().submit(fn, *args).result(timeout=self.timeout)
        except Exception:  # noqa: BLE001 - math-verify failing on an answer (a hang, its worker dying) makes it wrong, not the run
            self.close(kill=True)
            return None

    def equivalent(self, gold: str, pred: str) -> bool:
        """True when `pred` (model text or an extracted answer) states the gold answer."""
        if _INT.match(gold) and _INT.match(pred):
            return numbers_equal(gold, pred)
        if len(gold) > MATH_VERIFY_CHARS or len(pred) > MATH_VERIFY_CHARS + len("\\boxed{}"):
            return False
        return bool(self._call(_verify_worker, gold, pred))

    def extract(self, text: str) -> str | None:
        """math-verify's own extraction of the last expression of `text` (its last MATH_VERIFY_CHARS
        characters), or None."""
        return self._call(_extract_worker, _tail(text)) if text.strip() else None

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
    """The extracted answer, whether it is right, and the extraction rule that found it."""

    extracted: str | None
    correct: bool
    rule: str | None = None


def grade(
    answer_type: str,
    gold: str,
    answer_text: str,
    grader: MathGrader | None = None,
    n_choices: int = 4,
    explicit_only: bool = False,
) -> Grade:
    """Extract the answer from the answer part of a trace (a cascade of rules per answer type, see
    the module docstring) and grade it against the gold answer. `explicit_only` keeps the explicit
    rules (boxed, phrase, gsm8k) and drops the last-number / letter / expression fallbacks."""
    if answer_type == "mc":
        letter, rule = extract_choice_rule(answer_text, n_choices, explicit_only)
        return Grade(letter, letter is not None and letter == gold.strip().upper(), rule)
    if answer_type == "digit":
        boxed = extract_boxed(answer_text)
        if boxed is None or not _INT.match(boxed):
            return Grade(boxed, False, "boxed" if boxed is not None else None)
        return Grade(boxed.strip(), bool(_INT.match(gold)) and numbers_equal(gold, boxed), "boxed")
    if answer_type == "integer":
        pred, rule = extract_number(answer_text, explicit_only)
        return Grade(pred, pred is not None and numbers_equal(gold, pred), rule)
    if answer_type == "math":
        if grader is None:
            with MathGrader() as g:
                return _grade_math(gold, answer_text, g, explicit_only)
        return _grade_math(gold, answer_text, grader, explicit_only)
    raise ValueError(f"unknown answer type {answer_type!r}")


def _grade_math(gold: str, answer_text: str, grader: MathGrader, explicit_only: bool) -> Grade:
    """`grade` for math answers (boxed -> json -> phrase -> gsm8k -> math-verify)."""
    pred, rule = extract_boxed(answer_text), "boxed"
    if pred is None:
        pred, rule = extract_json_answer(answer_text), "json"
    if pred is None:
        for name, pattern in (("phrase", _PHRASE_TEXT), ("gsm8k", _GSM8K)):
            found = pattern.findall(answer_text)
            if found:
                pred, rule = found[-1].strip(), name
                break
    if pred is None and not explicit_only:
        pred, rule = grader.extract(answer_text), "math-verify"
    if not pred:
        return Grade(None, False, None)
    return Grade(pred, grader.equivalent(gold, f"\\boxed{{{pred}}}"), rule)


def grade_trace(
    answer_type: str,
    gold: str,
    answer_text: str,
    thinking_text: str,
    grader: MathGrader | None = None,
    n_choices: int = 4,
    truncated: bool = False,
) -> Grade:
    """Grade a trace: its answer part by `grade`; when the model wrote no answer after thinking (the
    answer part is empty), its thinking with the explicit rules only, the rule recorded as
    "thinking:<rule>". A `truncated` trace (cut before its thinking ended) has no answer: wrong,
    whatever its thinking says."""
    if truncated:
        return Grade(None, False, None)
    if answer_text.strip():
        return grade(answer_type, gold, answer_text, grader, n_choices)
    g = grade(answer_type, gold, thinking_text, grader, n_choices, explicit_only=True)
    return Grade(g.extracted, g.correct, f"thinking:{g.rule}") if g.rule else Grade(None, False, None)
