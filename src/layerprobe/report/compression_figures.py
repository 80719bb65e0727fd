"""Figures of the matched-size comparison (compression.json): accuracy against size kept, one line per
method; the long-chain budget curves per size; accuracy against the mechanism numbers."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup

from layerprobe.report.figures import percent_axis, plot_float, styled, subplots_fig, to_svg

#: One colour per method throughout the section (the base in grey).
METHOD_COLORS = {
    "base": "#555555",
    "shortgpt": "#d62728",
    "reverse": "#ff7f0e",
    "trace-kl": "#9467bd",
    "width": "#1f77b4",
    "wanda": "#2ca02c",
    "magnitude": "#17becf",
    "nm": "#8c564b",
}
_EXTRA = ["#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
#: Methods drawn side by side, so that equal values stay visible: this share of the weights apart on the
#: frontier, and this fraction of a doubling apart on the budget curves (the captions say so).
FRONTIER_DODGE = 0.01
BUDGET_DODGE = 0.06


def method_colors(cf: Any) -> dict[str, str]:
    """Method -> colour, the known methods fixed, any other in turn."""
    out = {}
    k = 0
    for row in cf.rows:
        if row.method not in out:
            if row.method in METHOD_COLORS:
                out[row.method] = METHOD_COLORS[row.method]
            else:
                out[row.method] = _EXTRA[k % len(_EXTRA)]
                k += 1
    return out


def _by_method(cf: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in cf.rows[1:]:
        out.setdefault(row.method, []).append(row)
    return out


@styled
def frontier(cf: Any, colors: dict[str, str]) -> Markup | None:
    """Accuracy at the largest budget (95 % Wilson interval) against the share of decoder linear weights
    kept, one panel per group, one line per method; the base at 100 %."""
    groups = cf.groups
    if not groups or len(cf.rows) < 2:
        return None
    fig, axes = subplots_fig(1, len(groups), (max(5.0, 3.5 * len(groups)), 3.0), sharey=True)
    base = cf.rows[0]
    n_methods = len(_by_method(cf))
    for ax, g in zip(axes[0], groups):
        b = base.accuracy.get(g)
        if b is not None:
            ax.axhline(plot_float(b.value), color=colors["base"], lw=1, ls=":", zorder=1)
            ax.errorbar(
                [1.0],
                [plot_float(b.value)],
                yerr=[[plot_float(b.value) - plot_float(b.ci[0])], [plot_float(b.ci[1]) - plot_float(b.value)]],
                fmt="o",
                color=colors["base"],
                ms=6,
                capsize=2,
                label="base",
            )
        for j, (method, rows) in enumerate(_by_method(cf).items()):
            pts = sorted((plot_float(r.kept_fraction), r.accuracy.get(g)) for r in rows if r.accuracy.get(g) is not None)
            pts = [(x, a) for x, a in pts if not math.isnan(x)]
            if not pts:
                continue
            xs = [x + FRONTIER_DODGE * (j - (n_methods - 1) / 2) for x, _ in pts]  # side by side: equal points stay visible
            ys = [plot_float(a.value) for _, a in pts]
            lo = [y - plot_float(a.ci[0]) for y, (_, a) in zip(ys, pts)]
            hi = [plot_float(a.ci[1]) - y for y, (_, a) in zip(ys, pts)]
            marker = MARKERS[j % len(MARKERS)]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], fmt=f"-{marker}", color=colors[method], ms=4, lw=1.4, capsize=2, label=method, alpha=0.9
            )
        ax.set_title(g)
        ax.set_xlabel("decoder linear weights kept")
        ax.set_ylim(-0.03, 1.05)
        ax.invert_xaxis()
        percent_axis(ax)
        percent_axis(ax, "x")
    axes[0][0].set_ylabel(f"accuracy at {cf.budget} tokens")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")
    return to_svg(fig, "accuracy against the share of weights kept, one line per compression method")


@styled
def budget_curves(cf: Any, colors: dict[str, str]) -> Markup | None:
    """Long-chain accuracy against the thinking budget, one panel per size, one line per method."""
    g = cf.long_group or (cf.groups[0] if cf.groups else None)
    if g is None or not cf.budgets or len(cf.rows) < 2:
        return None
    sizes: list[tuple[str, str]] = []
    for r in cf.rows[1:]:
        if (r.size_key, r.size_label) not in sizes:
            sizes.append((r.size_key, r.size_label))
    fig, axes = subplots_fig(1, len(sizes), (max(5.0, 3.2 * len(sizes)), 2.8), sharey=True)
    methods = list(_by_method(cf))  # the frontier's marker per method
    base = cf.rows[0]
    for ax, (key, label) in zip(axes[0], sizes):
        curve = base.budget_curve.get(g, {})
        bs = sorted(int(b) for b in curve)
        ax.plot(bs, [plot_float(curve[str(b)]) for b in bs], "o:", color=colors["base"], lw=1.6, ms=4, label="base")
        mine = [r for r in cf.rows[1:] if r.size_key == key]
        for j, r in enumerate(mine):
            curve = r.budget_curve.get(g, {})
            bs = sorted(int(b) for b in curve)
            shift = 2 ** (BUDGET_DODGE * (j - (len(mine) - 1) / 2))  # side by side on the log axis: equal curves stay visible
            ax.plot(
                [b * shift for b in bs],
                [plot_float(curve[str(b)]) for b in bs],
                f"{MARKERS[methods.index(r.method) % len(MARKERS)]}-",
                color=colors[r.method],
                lw=1.4,
                ms=3.5,
                label=r.method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(cf.budgets, [str(b) for b in cf.budgets])
        ax.set_title(label)
        ax.set_xlabel("thinking budget (tokens)")
        ax.set_ylim(-0.03, 1.05)
        percent_axis(ax)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"{g}: accuracy")
    return to_svg(fig, "long-chain accuracy against the thinking budget, one panel per size")


@styled
def mechanisms(cf: Any, colors: dict[str, str]) -> Markup | None:
    """Long-chain accuracy against the teacher-forced KL along the base traces and against the per-step
    error rate, one point per variant (colour: method; marker: size)."""
    g = cf.long_group
    if g is None:
        return None
    panels = [
        ("tf_mean_kl", "KL(base ‖ variant) along base traces (nats)", True),
        ("step_error_rate", "steps with a wrong result / steps written", False),
    ]
    panels = [
        p
        for p in panels
        if any(plot_float(getattr(r.mechanism, p[0])) == plot_float(getattr(r.mechanism, p[0])) for r in cf.rows[1:])
    ]
    if not panels:
        return None
    keys: list[str] = []
    for r in cf.rows[1:]:
        if r.size_key not in keys:
            keys.append(r.size_key)
    fig, axes = subplots_fig(1, len(panels), (max(5.0, 3.8 * len(panels)), 3.0), sharey=True)
    seen: set[str] = set()
    for ax, (field, label, logx) in zip(axes[0], panels):
        for r in cf.rows:
            x = plot_float(getattr(r.mechanism, field))
            a = r.accuracy.get(g)
            if math.isnan(x) or a is None:
                continue
            if logx:
                x = max(x, 1e-6)
            tag = r.method if r.method not in seen else None
            seen.add(r.method)
            marker = "*" if r.method == "base" else MARKERS[keys.index(r.size_key) % len(MARKERS)]
            ax.plot(
                [x], [plot_float(a.value)], marker, color=colors[r.method], ms=7 if r.method != "base" else 10, ls="", label=tag
            )
        if logx:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # no mathtext (parse_math is off)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        ax.set_xlabel(label)
        ax.set_ylim(-0.03, 1.05)
        percent_axis(ax)
    axes[0][0].set_ylabel(f"{g}: accuracy at {cf.budget} tokens")
    handles, labels = [], []
    for ax in axes[0]:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="outside right center")
    return to_svg(fig, "long-chain accuracy against the mechanism numbers, one point per variant")
