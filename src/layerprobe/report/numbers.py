"""Numbers as the report shows them: one formatting for every number, each number carrying the
path of the value it came from (`data-src` in the HTML) so that a reader, and the tests, can
trace every figure in the narrative back to metrics.json or layers/<variant>.json."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from markupsafe import Markup, escape

MINUS = "\u2212"


def is_num(x: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool): the values the report can show and plot."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, kind: str = "p") -> str:
    """p and pct: a share as a percent ("53 %"); pn: a share as a percent number (interval bounds after
    a "p": "[36, 70]"); d: a difference of shares in signed percentage points ("−47"; one decimal for a
    value that is not 0 but rounds to it, "+0.2"); r: a signed
    coefficient with 2 decimals (correlations); p1: a share as a percent with one decimal ("83.3 %");
    d1/d3: signed difference with 1/3 decimals; i: integer;
    f1/f3: 1/3 decimals; s: small quantity (3 decimals, or scientific below 0.01). Shares are always
    shown as percents, as the terminal shows them."""
    if not is_num(x):
        return "n/a"
    if kind == "i":
        return f"{int(round(x)):,}"
    if kind == "d":
        s = f"{100 * x:+.0f}"
        if (
            s in ("+0", "-0") and abs(x) > 1e-12
        ):  # not 0: a bound that is not 0 never reads as 0 (an interval "0 to +2" that excludes 0)
            s = f"{100 * x:+.1f}" if abs(100 * x) >= 0.05 else f"{100 * x:+.2g}"
        return s.replace("-", MINUS) if s not in ("+0", "-0") else "0"
    if kind == "pn":
        return f"{100 * x:.0f}"
    if kind == "r":
        s = f"{x:+.2f}"
        return s.replace("-", MINUS) if s not in ("+0.00", "-0.00") else "0.00"
    if kind == "d1":
        s = f"{x:+.1f}"
        return s.replace("-", MINUS) if s not in ("+0.0", "-0.0") else "0.0"
    if kind == "d3":
        s = f"{x:+.3f}"
        return s.replace("-", MINUS) if s not in ("+0.000", "-0.000") else "0.000"
    if kind == "f1":
        return f"{x:.1f}".replace("-", MINUS)
    if kind == "f3":
        return f"{x:.3f}".replace("-", MINUS)
    if kind == "s":  # small positive quantities (block influence, KL): 3 decimals, or 2 significant digits below 0.01
        if x != 0 and abs(x) < 0.01:
            return f"{x:.1e}".replace("e-0", "e-").replace("-", MINUS)
        return f"{x:.3f}".replace("-", MINUS)
    if kind == "p1":
        return f"{100 * x:.1f} %"
    if kind in ("pct", "p"):
        return f"{100 * x:.0f} %"
    return f"{x:.2f}".replace("-", MINUS)


@dataclass(frozen=True)
class Num:
    """A shown number: its value, its format and where it came from (a key path)."""

    value: Any
    kind: str
    src: tuple[Any, ...]

    @property
    def text(self) -> str:
        return fmt(self.value, self.kind)

    def __html__(self) -> str:
        return str(
            Markup('<span class="num" data-kind="{}" data-src="{}">{}</span>').format(
                self.kind, json.dumps(list(self.src)), self.text
            )
        )

    def __str__(self) -> str:
        return self.text


def lookup(root: Any, path: Sequence[Any]) -> Any:
    """Follow a key path (fields of stored models, dict keys, list indices) into nested data; None
    when it is not there."""
    from pydantic import BaseModel

    cur = root
    for key in path:
        if isinstance(cur, BaseModel):
            cur = getattr(cur, str(key), None)
        elif isinstance(cur, dict):
            if key in cur:
                cur = cur[key]
            elif str(key) in cur:
                cur = cur[str(key)]
            elif isinstance(key, str) and key.lstrip("-").isdigit() and int(key) in cur:
                cur = cur[int(key)]
            else:
                return None
        elif isinstance(cur, (list, tuple)) and isinstance(key, int) and -len(cur) <= key < len(cur):
            cur = cur[key]
        else:
            return None
    return cur


class Sentence:
    """A sentence made of text parts and Nums; renders with everything but the markup escaped."""

    def __init__(self, *parts: Any, tone: str = "") -> None:
        self.parts = parts
        self.tone = tone  # "", "drop", "noise", "rise": used for a subtle marker only

    def __html__(self) -> str:
        return "".join(p.__html__() if isinstance(p, Num) else str(escape(p)) for p in self.parts)

    @property
    def text(self) -> str:
        return "".join(p.text if isinstance(p, Num) else str(p) for p in self.parts)
