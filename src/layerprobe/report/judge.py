"""The report's part on the behaviours a judge model counted (judge.json; templates/judge.html.jinja)."""

from __future__ import annotations

from typing import Any

from layerprobe.data.judge import outcome_totals
from layerprobe.data.reader import ALL, Run
from layerprobe.data.verdicts import verdict_words
from layerprobe.report.numbers import Num

OUTCOME_WORDS = {
    "unparsable": "unparsable replies",
    "refused": "refusals",
    "too_long": "too long for the judge's context",
    "error": "errors",
    "timeout": "timeouts",
    "not asked": "not asked yet",
}


def judge_view(run: Run) -> dict[str, Any] | None:
    """Rows of the judge's tables (every number a Num into judge.json), or None without judge.json."""
    j = run.extras.get("judge.json")
    if j is None:
        return None
    root = "judge.json"
    order = {v.name: i for i, v in enumerate(run.variants)}
    groups = [g for g in run.groups() if any(s.group == g for s in j.stats)]
    index = {(s.variant, s.group, s.behaviour): k for k, s in enumerate(j.stats)}
    rows = []
    for g in [*groups, ALL] if groups else [ALL]:
        for v in run.variants:
            if not any((v.name, g, b) in index for b in j.behaviours):
                continue
            cells: list[dict[str, Any] | None] = []
            for b in j.behaviours:
                k = index.get((v.name, g, b))
                if k is None:
                    cells.append(None)
                    continue
                st, src = j.stats[k], (root, "stats", k)
                cells.append(
                    {
                        "mean": Num(st.mean, "f1", src + ("mean",)),
                        "lo": Num(st.ci[0], "f1", src + ("ci", 0)),
                        "hi": Num(st.ci[1], "f1", src + ("ci", 1)),
                        "n": st.n_counted,
                        "of": st.n_traces,
                    }
                )
            rows.append({"group": g, "variant": v.name, "cells": cells})
    paired = []
    for i, c in enumerate(j.comparisons):
        src = (root, "comparisons", i)
        paired.append(
            {
                "variant": c.variant,
                "group": c.group,
                "behaviour": j.behaviours.get(c.metric, c.metric),
                "a": Num(c.mean_a, "f1", src + ("mean_a",)),
                "b": Num(c.mean_b, "f1", src + ("mean_b",)),
                "diff": Num(c.diff, "d1", src + ("diff",)),
                "lo": Num(c.ci_low, "d1", src + ("ci_low",)),
                "hi": Num(c.ci_high, "d1", src + ("ci_high",)),
                "n": c.n_pairs,
                "verdict": c.verdict,
                "words": verdict_words(c),
            }
        )
    group_order = {g: i for i, g in enumerate([ALL, *run.groups()])}
    behaviour_order = {t: i for i, t in enumerate(j.behaviours.values())}
    paired.sort(
        key=lambda r: (
            order.get(r["variant"], 0),
            group_order.get(r["group"], len(group_order)),
            behaviour_order.get(r["behaviour"], 0),
        )
    )
    agreement = []
    for i, a in enumerate(j.agreement):
        src = (root, "agreement", i)
        agreement.append(
            {
                "variant": a.variant,
                "behaviour": "every behaviour together" if a.behaviour == "total" else j.behaviours.get(a.behaviour, a.behaviour),
                "rho": Num(a.spearman, "r", src + ("spearman",)),
                "lo": Num(a.ci[0], "r", src + ("ci", 0)),
                "hi": Num(a.ci[1], "r", src + ("ci", 1)),
                "n": a.n,
                "problems": a.n_problems,
            }
        )
    totals = outcome_totals(j)
    counted = totals["count"]
    failed = {k: n for k, n in totals.items() if k != "count"}
    return {
        "file": j,
        "rows": rows,
        "paired": paired,
        "agreement": agreement,
        "counted": counted,
        "failed": [(OUTCOME_WORDS.get(k, k), n) for k, n in sorted(failed.items())],
        "n_failed": sum(n for k, n in failed.items() if k != "not asked"),
        "per_variant": {v: dict(o) for v, o in j.outcomes.items()},
    }
