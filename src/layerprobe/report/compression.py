"""The report section of the matched-size comparison: which compression keeps long chains, and why
(templates/compression.html.jinja; every number from compression.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.data.reader import Run
from layerprobe.report import compression_figures as cfig
from layerprobe.report.numbers import Num, Sentence

FILE = "compression.json"


@dataclass
class CompressionView:
    """What the template shows."""

    file: Any
    colors: dict[str, str]
    glance: list[Sentence]
    rows: list[dict[str, Any]]
    figs: dict[str, Any] = field(default_factory=dict)
    context: int | None = None
    """Cached tokens behind the FLOPs' attention share."""
    load: float | None = None
    """Load average when the speeds were measured."""


def _src(i: int, *path: Any) -> tuple[Any, ...]:
    return (FILE, "rows", i, *path)


def _interval(i: int, iv: Any, kind: str, *path: Any) -> dict[str, Num] | None:
    if iv is None:
        return None
    return {
        "v": Num(iv.value, kind, _src(i, *path, "value")),
        "lo": Num(iv.ci[0], "pn" if kind == "p" else kind, _src(i, *path, "ci", 0)),
        "hi": Num(iv.ci[1], "pn" if kind == "p" else kind, _src(i, *path, "ci", 1)),
    }


def _cmp(i: int, c: Any, *path: Any) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "v": Num(c.diff, "d", _src(i, *path, "diff")),
        "lo": Num(c.ci_low, "d", _src(i, *path, "ci_low")),
        "hi": Num(c.ci_high, "d", _src(i, *path, "ci_high")),
        "verdict": c.verdict,
    }


def _slope(i: int, iv: Any, g: str) -> dict[str, Num] | None:
    if iv is None or iv.value is None:
        return None
    return {
        "v": Num(iv.value, "d", _src(i, "slope", g, "value")),
        "lo": Num(iv.ci[0], "d", _src(i, "slope", g, "ci", 0)),
        "hi": Num(iv.ci[1], "d", _src(i, "slope", g, "ci", 1)),
    }


def _glance(cf: Any) -> list[Sentence]:
    """One sentence per size: which methods keep long chains (and scaling), against the base and ShortGPT."""
    g = cf.long_group
    if g is None:
        return []
    out = []
    order: list[str] = []
    for r in cf.rows[1:]:
        if r.size_key not in order:
            order.append(r.size_key)
    for key in order:
        idx = [(i, r) for i, r in enumerate(cf.rows) if i and r.size_key == key]
        label = idx[0][1].size_label
        parts: list[Any] = [f"At {label}: "]
        for n, (i, r) in enumerate(idx):
            acc = r.accuracy.get(g)
            if n:
                parts.append("; ")
            parts += [f"{r.method} ", Num(acc.value if acc else None, "p", _src(i, "accuracy", g, "value"))]
            vb = r.vs_base.get(g)
            if vb is not None:
                parts += [
                    " (",
                    Num(vb.diff, "d", _src(i, "vs_base", g, "diff")),
                    " [",
                    Num(vb.ci_low, "d", _src(i, "vs_base", g, "ci_low")),
                    ", ",
                    Num(vb.ci_high, "d", _src(i, "vs_base", g, "ci_high")),
                    "]",
                ]
                verdicts: list[Any] = []
                if r.keeps_long_chains:
                    verdicts.append("keeps long chains")
                sl = r.slope.get(g)
                if r.keeps_scaling and sl is not None:
                    verdicts += ["still scales, ", Num(sl.value, "d", _src(i, "slope", g, "value")), " points per doubling"]
                elif sl is not None and sl.value is not None:
                    verdicts += ["flat budget curve"]
                if verdicts:
                    parts.append(": ")
                    if len(verdicts) > 1 and verdicts[0] == "keeps long chains":
                        verdicts.insert(1, " and ")
                    parts += verdicts
                parts.append(")")
        parts.append(".")
        tone = "rise" if any(r.keeps_long_chains for _, r in idx) else "drop"
        out.append(Sentence(*parts, tone=tone))
    return out


def compression_view(run: Run) -> CompressionView | None:
    """The section's content, or None when the run has no compression.json."""
    cf = run.extras.get(FILE)
    if cf is None or len(cf.rows) < 2:
        return None
    colors = cfig.method_colors(cf)
    g = cf.long_group
    rows = []
    for i, r in enumerate(cf.rows):
        m = r.mechanism
        rows.append(
            {
                "row": r,
                "color": colors[r.method],
                "kept_pct": Num(r.kept_fraction, "p1", _src(i, "kept_fraction")),
                "layers": Num(r.layers_removed_equivalent, "f1", _src(i, "layers_removed_equivalent")),
                "n_layers": r.n_layers if r.n_layers is not None else "—",
                "flops": Num(r.flops_per_token, "p1", _src(i, "flops_per_token")),
                "flops_sparse": Num(r.flops_per_token_sparse, "p1", _src(i, "flops_per_token_sparse")),
                "tps": Num(r.tokens_per_s, "f1", _src(i, "tokens_per_s")),
                "acc": {grp: _interval(i, r.accuracy.get(grp), "p", "accuracy", grp) for grp in cf.groups},
                "vs_base": _cmp(i, r.vs_base.get(g), "vs_base", g) if g else None,
                "vs_ref": _cmp(i, r.vs_reference.get(g), "vs_reference", g) if g else None,
                "slope": _slope(i, r.slope.get(g), g) if g else None,
                "maj": _interval(i, r.maj.get(g), "p", "maj", g) if g else None,
                "waits": r.waits,
                "same": Num(m.same_text_share, "p", _src(i, "mechanism", "same_text_share")),
                "kl": Num(m.tf_mean_kl, "s", _src(i, "mechanism", "tf_mean_kl")),
                "onset": Num(m.tf_onset_share, "p", _src(i, "mechanism", "tf_onset_share")),
                "depart": Num(m.first_departure_median, "p", _src(i, "mechanism", "first_departure_median")),
                "step_err": Num(m.step_error_rate, "p1", _src(i, "mechanism", "step_error_rate")),
                "eps": Num(m.epsilon, "s", _src(i, "mechanism", "epsilon")),
                "drift": Num(m.drift_mean, "s", _src(i, "mechanism", "drift_mean")),
                "settle": Num(m.settling_fraction, "f3", _src(i, "mechanism", "settling_fraction")),
            }
        )
    view = CompressionView(file=cf, colors=colors, glance=_glance(cf), rows=rows)
    view.context = cf.flops_context
    view.load = cf.load_average
    view.figs = {
        "frontier": cfig.frontier(cf, colors),
        "budgets": cfig.budget_curves(cf, colors),
        "mechanisms": cfig.mechanisms(cf, colors),
    }
    return view
