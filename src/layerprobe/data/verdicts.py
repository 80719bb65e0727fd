"""Verdicts in words: how a stored comparison's verdict and its reason (metrics.decide, the one difference
rule) read in the terminal, the report, explain and compare. One place, so that an interval that
excludes 0 is never shown beside words that say there is no difference without saying why."""

from __future__ import annotations

import math
from typing import Any

from layerprobe.metrics.paired import BOTH, HIGHER, INTERVAL_ONLY, LOWER, MIN_UNITS, NEITHER, TEST_ONLY, TOO_FEW

RULE = (
    f"A difference is called lower or higher only when it rests on at least {MIN_UNITS} problems (paired, or on "
    "each side), its 95 % interval excludes 0 and its test, where the data have one, rejects at the 5 % level; "
    "otherwise no direction is claimed, and where the interval and the test part, the text says which."
)
"""The difference rule in one sentence (docs/report.md#the-difference-rule states it in full)."""


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ci(c: Any) -> tuple[Any, Any]:
    if hasattr(c, "ci_low"):
        return c.ci_low, c.ci_high
    ci = getattr(c, "ci", (None, None))
    return ci[0], ci[1]


def _units(c: Any) -> int | None:
    if getattr(c, "n_pairs", None) is not None:
        return int(c.n_pairs)
    sides = [getattr(c, k, None) for k in ("problems_wrong", "problems_right")]
    return min(sides) if all(s is not None for s in sides) else None  # type: ignore[type-var]


def reason_of(c: Any) -> str:
    """The reason of a stored comparison (Comparison, OutcomeContrast, CrossModel); for files written
    before reasons were stored, derived from the verdict, the interval and `agree`."""
    if getattr(c, "reason", None):
        return str(c.reason)
    if c.verdict in (LOWER, HIGHER):
        return BOTH
    n = _units(c)
    if n is not None and n < MIN_UNITS:
        return TOO_FEW
    lo, hi = _ci(c)
    excludes = _finite(lo) and _finite(hi) and (lo > 0 or hi < 0)
    if getattr(c, "agree", True):
        return NEITHER
    return INTERVAL_ONLY if excludes else TEST_ONLY


def _test(c: Any) -> str:
    test = getattr(c, "test", "") or "paired"
    return f"the {test} test"


def _p(c: Any) -> str:
    p = getattr(c, "p_value", None)
    return f"p = {p:.2g}" if _finite(p) else "p not computed"


def _few(c: Any, what: str) -> str:
    n = _units(c)
    return f"{n if n is not None else 'too few'} {what}; a verdict needs at least {MIN_UNITS}"


def verdict_words(c: Any, what: str = "problems paired") -> str:
    """The verdict of a stored comparison as a clause of a sentence ("lower, outside the noise"; "not
    established: ..."; "too few problems for a verdict (...)"). `what` names the units (for the count)."""
    reason = reason_of(c)
    if reason == BOTH and c.verdict in (LOWER, HIGHER):
        return f"{c.verdict}, outside the noise"
    why = "a difference needs both, and they can part because the interval is not the test's inversion"
    if reason == INTERVAL_ONLY:
        return f"not established: the interval excludes 0 but {_test(c)} does not reject ({_p(c)}); {why}"
    if reason == TEST_ONLY:
        return f"not established: {_test(c)} rejects ({_p(c)}) but the interval includes 0; {why}"
    if reason == TOO_FEW:
        return f"too few problems for a verdict ({_few(c, what)})"
    return "inside the noise (no clear difference)"


def verdict_note(c: Any) -> str:
    """A short note after a difference and its interval ("" when a direction is named): "no clear
    difference", "not established: the exact McNemar test does not reject, p = 0.12", "too few problems
    for a verdict: 4 < 6"."""
    reason = reason_of(c)
    if reason == BOTH and c.verdict in (LOWER, HIGHER):
        return ""
    if reason == INTERVAL_ONLY:
        return (
            f"not established: the interval excludes 0 but {_test(c)} does not reject, {_p(c)}; the interval is not its inversion"
        )
    if reason == TEST_ONLY:
        return f"not established: {_test(c)} rejects, {_p(c)}, but the interval includes 0; the interval is not its inversion"
    if reason == TOO_FEW:
        n = _units(c)
        return f"too few problems for a verdict: {n if n is not None else '?'} < {MIN_UNITS}"
    return "no clear difference"


def verdict_short(c: Any) -> str:
    """One or two words for a table cell: lower, higher, no clear difference, not established, too few problems."""
    reason = reason_of(c)
    if reason == BOTH and c.verdict in (LOWER, HIGHER):
        return str(c.verdict)
    if reason in (INTERVAL_ONLY, TEST_ONLY):
        return "not established"
    if reason == TOO_FEW:
        return "too few problems"
    return "no clear difference"
