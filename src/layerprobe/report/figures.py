"""Matplotlib figures rendered to inline SVG: no files, no network, text kept as text.

Figures are built as `matplotlib.figure.Figure` objects under `rc_context`, never through pyplot:
rendering a report leaves the caller's backend and rc settings (e.g. a notebook's) untouched."""

from __future__ import annotations

import io
import itertools
import math
import re
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from layerprobe.data.reader import ALL, Run
from layerprobe.data.schema import Accuracy, Interval, LayerAggregates, Settling, TeacherForcedSummary
from layerprobe.report.numbers import is_num

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

PALETTE = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
DROPPED_ALPHA = 0.16
"""Opacity of a dropped layer's shading, drawn in its variant's colour."""
_counter = itertools.count()


_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "layerprobe",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "font.family": "sans-serif",
    "figure.dpi": 100,
    "text.parse_math": False,  # names and problem ids are user text: a "$" must not start mathtext
}


def styled(fn: Any) -> Any:
    """Run a figure function under the report's rc settings (text properties such as parse_math are
    read when each artist is created, so the whole construction must run inside the context)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from matplotlib import rc_context

        with rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def _figure(**kw: Any) -> Any:
    """A new Figure (not registered with pyplot) with the report's style."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        return Figure(**kw)


def subplots_fig(rows: int, cols: int, figsize: tuple[float, float], **kw: Any) -> tuple[Any, Any]:
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = _figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def to_svg(fig: Any, alt: str) -> Markup:
    """The figure as an inline <svg> (ids made unique per figure, no XML prolog or metadata)."""
    from matplotlib import rc_context
    from matplotlib.text import Text

    from layerprobe.rules import printable

    for t in fig.findobj(Text):  # names from files (a run folder's) with control characters: shown as escapes
        text = t.get_text()
        if text and printable(text) != text:
            t.set_text(printable(text, lines=False))
    buf = io.StringIO()
    with rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    n = next(_counter)
    svg = re.sub(r'id="([^"]+)"', rf'id="f{n}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#f{n}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#f{n}-\1"', svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(alt)}" class="fig" ', 1)
    return Markup(svg)


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def plottable(x: Any) -> float:
    """A plottable float: None (strict JSON's NaN) and anything non-numeric become NaN."""
    return float(x) if is_num(x) else math.nan


def _ci(p: Accuracy | Interval) -> tuple[float, float]:
    return (plottable(p.ci[0]), plottable(p.ci[1]))


def _dodge(i: int, n: int) -> float:
    """A small multiplicative x offset per variant so that equal values do not hide each other."""
    return 2 ** (0.04 * (i - (n - 1) / 2))


def percent_axis(ax: Any, axis: str = "y") -> None:
    """Show an axis of shares (0..1) in percent, as every number of the report is shown."""
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(xmax=1.0, decimals=0, symbol=" %"))


def _style(base: bool) -> dict[str, Any]:
    return {"lw": 2.6, "ms": 6, "alpha": 0.8, "zorder": 2} if base else {"lw": 1.5, "ms": 4, "zorder": 3}


def _panel_groups(run: Run) -> list[str]:
    gs = run.groups()
    return gs if gs else [ALL]


def _subplots(n: int, width: float = 3.6, height: float = 2.7, rows: int = 1):
    return subplots_fig(rows, n, (max(4.5, width * n), height * rows))


@styled
def accuracy_vs_budget(run: Run, colors: dict[str, str]) -> Markup | None:
    budgets = run.budgets()
    if not budgets or not run.budget_recorded:
        return None
    groups = _panel_groups(run)
    fig, axes = _subplots(len(groups))
    names = [s.name for s in run.variants]
    for ax, g in zip(axes[0], groups):
        for vi, v in enumerate(names):
            seq = run.vmetrics(v, g).sequential
            pts = [(b, seq[str(b)]) for b in budgets if str(b) in seq]
            if not pts:
                continue
            xs = [b * _dodge(vi, len(names)) for b, _ in pts]
            ys = [plottable(p.accuracy) for _, p in pts]
            lo = [_ci(p)[0] for _, p in pts]
            hi = [_ci(p)[1] for _, p in pts]
            ax.plot(xs, ys, "o-", color=colors[v], label=v, **_style(v == run.base))
            ax.fill_between(xs, lo, hi, color=colors[v], alpha=0.12, lw=0)
        if len(budgets) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(run.group_title(g))
        ax.set_xlabel("thinking budget (tokens)")
        ax.grid(alpha=0.25)
    for ax in axes[0]:
        percent_axis(ax)
    axes[0][0].set_ylabel("accuracy (band: 95 % CI)")
    axes[0][-1].legend(loc="best")
    return to_svg(fig, "accuracy versus thinking budget per variant")


@styled
def parallel_curves(run: Run, colors: dict[str, str]) -> Markup | None:
    groups = _panel_groups(run)
    if not any(run.vmetrics(v.name, g).parallel.k for v in run.variants for g in groups):
        return None
    fig, axes = _subplots(len(groups), height=2.4, rows=2)
    for col, g in enumerate(groups):
        for row, (key, name) in enumerate((("pass_at_k", "pass@k"), ("maj_at_k", "maj@k"))):
            ax = axes[row][col]
            names = [s.name for s in run.variants]
            for vi, v in enumerate(names):
                par = run.vmetrics(v, g).parallel
                ks = par.k
                curve = getattr(par, key)
                pts = [(k, curve[str(k)]) for k in ks if str(k) in curve]
                if not pts:
                    continue
                xs = [k * _dodge(vi, len(names)) for k, _ in pts]
                ax.plot(xs, [plottable(p.value) for _, p in pts], "o-", color=colors[v], label=v, **_style(v == run.base))
                lo = [_ci(p)[0] for _, p in pts]
                hi = [_ci(p)[1] for _, p in pts]
                ax.fill_between(xs, lo, hi, color=colors[v], alpha=0.12, lw=0)
                if len(xs) > 1:
                    ax.set_xscale("log", base=2)
                ax.set_xticks([k for k, _ in pts], [str(k) for k, _ in pts])
                ax.minorticks_off()
            ax.set_ylim(-0.03, 1.03)
            percent_axis(ax)
            ax.grid(alpha=0.25)
            if row == 0:
                ax.set_title(run.group_title(g))
            else:
                ax.set_xlabel("k (samples per problem)")
            if col == 0:
                ax.set_ylabel(f"{name} (band: 95 % CI)")
    axes[0][-1].legend(loc="best")
    return to_svg(fig, "pass@k and maj@k versus k per variant")


def _dropped_spans(ax: Any, run: Run, colors: dict[str, str], horizontal: bool = False) -> None:
    """Shade each layer a pruned variant dropped in that variant's own colour (light), labelled with its name."""
    for v in run.pruned:
        spec = run.spec(v)
        if spec is None:
            continue
        for l in spec.dropped:
            if horizontal:
                ax.axhspan(l - 0.5, l + 0.5, color=colors[v], alpha=DROPPED_ALPHA, lw=0, zorder=0)
            else:
                ax.axvspan(l - 0.5, l + 0.5, color=colors[v], alpha=DROPPED_ALPHA, lw=0, zorder=0)
                ax.annotate(
                    f"dropped\nin {v}",
                    (l, 1.0),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="top",
                    fontsize=7,
                    color=colors[v],
                )


@styled
def block_influence(run: Run, colors: dict[str, str]) -> Markup | None:
    n_orig = run.n_layers
    if not run.has_probes:
        return None
    fig, axes = _subplots(1, width=9, height=3.0)
    ax = axes[0][0]
    _dropped_spans(ax, run, colors)
    vals_all = []
    for v in [s.name for s in run.variants]:
        la = run.layers.get(v)
        if la is None:
            continue
        bi = la.per_layer.block_influence
        pts = [(l, x) for l, x in zip(la.layers, bi) if is_num(x)]
        if pts:
            base = v == run.base
            xs: list[float] = []
            ys: list[float] = []
            for l, x in pts:  # no line across a dropped layer: a gap
                if xs and l - xs[-1] > 1:
                    xs.append(math.nan)
                    ys.append(math.nan)
                xs.append(l)
                ys.append(x)
            ax.plot(
                xs,
                ys,
                "o-" if base else "s--",
                color=colors[v],
                label=v,
                ms=7 if base else 4,
                lw=2.6 if base else 1.4,
                alpha=0.75 if base else 1.0,
                zorder=2 if base else 3,
            )
            vals_all += [p[1] for p in pts]
    pos = [x for x in vals_all if x > 0]
    if pos and max(pos) / max(min(pos), 1e-9) > 30:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_xticks(range(n_orig))
    ax.set_xlim(-0.6, n_orig - 0.4)
    ax.set_xlabel("original layer index (shaded: dropped in a pruned variant)")
    ax.set_ylabel("block influence 1 \u2212 cos(in, out)")
    ax.grid(alpha=0.25, axis="y")
    ax.legend(loc="upper center", ncol=4, bbox_to_anchor=(0.5, -0.22))
    return to_svg(fig, "block influence per original layer")


@styled
def heatmap(run: Run, key: str, label: str, colors: dict[str, str] | None = None) -> Markup | None:
    import numpy as np

    las: dict[str, LayerAggregates] = {
        s.name: la for s in run.variants if (la := run.layers.get(s.name)) is not None and la.heatmaps.get(key)
    }
    names = list(las)
    if not names:
        return None
    n_orig = run.n_layers
    mats = {}
    for v in names:
        la = las[v]
        rows = la.heatmaps[key]
        nb = max((len(r) for r in rows), default=0)
        m = np.full((n_orig, nb), np.nan)
        for l, r in zip(la.layers, rows):
            if 0 <= l < n_orig:
                m[l, : len(r)] = [x if is_num(x) else np.nan for x in r]
        mats[v] = m
    finite_vals = np.concatenate([m[np.isfinite(m)] for m in mats.values()])
    if finite_vals.size == 0:
        return None
    vmin, vmax = float(np.nanmin(finite_vals)), float(np.nanmax(finite_vals))
    fig, axes = subplots_fig(1, len(names), (max(4.5, 3.3 * len(names)), 0.5 + 0.16 * n_orig + 1.2), sharey=True)
    im = None
    for ax, v in zip(axes[0], names):
        m = mats[v]
        ax.set_facecolor("#eeeeee")
        im = ax.imshow(
            m,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=(0, 1, -0.5, n_orig - 0.5),
            interpolation="nearest",
        )
        spec = run.spec(v)
        dropped = spec.dropped if spec is not None else []
        for l in dropped:  # hatched rows, named once in the title (labels per row overlap on adjacent layers)
            ax.axhspan(l - 0.5, l + 0.5, facecolor="none", edgecolor=(colors or {}).get(v, "#a00"), hatch="///", lw=0)
        ax.set_title(v + (f" (dropped: {', '.join(map(str, dropped))})" if dropped else ""), fontsize=9)
        ax.set_xlabel("relative position in trace")
    axes[0][0].set_ylabel("original layer")
    step = max(1, n_orig // 12)
    axes[0][0].set_yticks(range(0, n_orig, step))
    fig.colorbar(im, ax=axes[0].tolist(), label=label, shrink=0.9)
    return to_svg(fig, f"{label} heat map, layer by relative position")


@styled
def settling(run: Run, colors: dict[str, str]) -> Markup | None:
    st: dict[str, Settling] = {}
    for s in run.variants:
        la = run.layers.get(s.name)
        if la is not None and la.settling is not None:
            st[s.name] = la.settling
    names = list(st)
    if not names:
        return None
    fig, axes = _subplots(3, width=3.0, height=2.5)
    for ax, key, title in (
        (axes[0][0], "mean_depth_fraction", "settling depth / model depth"),
        (axes[0][1], "deep_thinking_ratio", "deep-thinking ratio"),
    ):
        vals = [getattr(st[v], key) for v in names]
        ax.bar(range(len(names)), [x if is_num(x) else 0 for x in vals], color=[colors[v] for v in names])
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        percent_axis(ax)
        for i, x in enumerate(vals):
            if is_num(x):
                ax.text(i, x + 0.02, f"{100 * x:.0f} %", ha="center", fontsize=8)
    ax = axes[0][2]
    per_trace = {v: [x for x in st[v].per_trace_deep_thinking_ratio if is_num(x)] for v in names}
    allx = [x for xs in per_trace.values() for x in xs]
    for i, v in enumerate(names):
        xs = per_trace[v]
        ax.scatter(xs, [i + 0.25 * (((k * 7919) % 11) - 5) / 5 for k in range(len(xs))], s=9, alpha=0.6, color=colors[v])
    ax.set_yticks(range(len(names)), names)
    top = max(allx) if allx else 1.0
    ax.set_xlim(-0.02 * max(top, 1e-3), max(top, 1e-3) * 1.08)  # the data's own range, not 0-1
    ax.set_title("deep-thinking ratio per trace")
    ax.set_xlabel("share of deep-thinking tokens")
    percent_axis(ax, "x")
    return to_svg(fig, "settling depth and deep-thinking ratio per variant")


@styled
def teacher_forced_kl(run: Run, colors: dict[str, str]) -> tuple[Markup, list[str]] | None:
    """The KL curve per pruned variant along the base traces, and a description of each line drawn."""
    tfs: dict[str, TeacherForcedSummary] = {}
    for v in run.pruned:
        la = run.layers.get(v)
        if la is not None and la.teacher_forced is not None and la.teacher_forced.kl_by_relpos:
            tfs[v] = la.teacher_forced
    names = list(tfs)
    if not names:
        return None
    fig, axes = _subplots(1, width=8, height=3.0)
    ax = axes[0][0]
    drawn: list[str] = []
    for v in names:
        tf = tfs[v]
        rel = tf.kl_by_relpos
        nb = len(rel)
        ax.plot(
            [(j + 0.5) / nb for j in range(nb)],
            [plottable(x) for x in rel],
            "-",
            color=colors[v],
            label=f"{v}: KL({run.base} \u2016 {v})",
            lw=1.8,
        )
        onset = run.vmetrics(v).behaviour.mean_loop_onset_fraction
        if is_num(onset):
            ax.axvline(onset, color=colors[v], ls="--", lw=1, label=f"mean loop onset in {v}'s own traces")
            drawn.append(f"dashed: where {v}'s own generated traces start looping, on average")
        if is_num(tf.onset_fraction_mean):
            ax.axvline(tf.onset_fraction_mean, color=colors[v], ls=":", lw=1.4, label=f"{v}: mean divergence onset")
            drawn.append(
                f"dotted: the mean position where {v}'s KL first stays above {tf.threshold} nats for {tf.window} tokens "
                "(a quarter of the trace, at least 2, when that is shorter) "
                f"({tf.n_onset} of {tf.n_traces} traces have such an onset)"
            )
        else:
            drawn.append(
                f"no dotted line for {v}: in none of its {tf.n_traces} traces does the KL stay above {tf.threshold} nats "
                f"for {tf.window} tokens (or a quarter of a shorter trace)"
            )
    ax.set_xlim(0, 1)
    percent_axis(ax, "x")
    ax.set_xlabel(f"position in {run.base}'s trace")
    ax.set_ylabel("KL (nats), next token")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # below the axes: never over a peak
    return to_svg(fig, "teacher-forced KL along the trace"), drawn


@styled
def reflections(run: Run, colors: dict[str, str]) -> tuple[Markup, list[str]] | None:
    """The bar chart and the lexicon words no variant used (left out of the chart)."""
    names = [s.name for s in run.variants]
    words: list[str] = []
    for v in names:
        for w in run.vmetrics(v).behaviour.reflections_by_word_per_1k:
            if w not in words:
                words.append(w)
    rates = {v: run.vmetrics(v).behaviour.reflections_by_word_per_1k for v in names}
    zero = [w for w in words if not any(is_num(r := rates[v].get(w)) and r > 0 for v in names)]
    words = [w for w in words if w not in zero]
    if not words:
        return None
    fig, axes = _subplots(1, width=8, height=0.9 + 0.3 * len(words) * max(1, len(names)) ** 0.5)
    ax = axes[0][0]
    h = 0.8 / len(names)
    for i, v in enumerate(names):
        d = rates[v]
        ax.barh(
            [j + i * h for j in range(len(words))], [plottable(d.get(w, 0)) for w in words], height=h, color=colors[v], label=v
        )
    ax.set_yticks([j + 0.4 - h / 2 for j in range(len(words))], words)
    ax.invert_yaxis()
    ax.set_xlabel("per 1,000 thinking tokens (all traces; mean over problems)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(names), 5))
    return to_svg(fig, "reflection words per 1k thinking tokens"), zero


@styled
def loops(run: Run, colors: dict[str, str]) -> Markup | None:
    if not any(s.repetition.loop for s in run.samples):
        return None  # the table says 0 everywhere; an empty plot would only confuse
    groups = _panel_groups(run)
    names = [s.name for s in run.variants]
    fig, axes = _subplots(2, width=4.2, height=2.7)
    ax = axes[0][0]
    w = 0.8 / len(names)
    for i, v in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, g in enumerate(groups):
            b = run.vmetrics(v, g).behaviour
            if not is_num(b.loop_rate):
                continue
            ci = [x if is_num(x) else b.loop_rate for x in b.loop_ci]
            xs.append(j + i * w)
            ys.append(b.loop_rate)
            lo.append(max(0.0, b.loop_rate - ci[0]))
            hi.append(max(0.0, ci[1] - b.loop_rate))
        ax.bar(xs, ys, width=w, color=colors[v], label=v, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(groups))], groups)
    ax.set_ylim(0, 1)
    percent_axis(ax)
    ax.set_ylabel("loop rate (bar: 95 % CI)")
    ax.set_title("traces that end in a loop")
    ax.legend()
    ax = axes[0][1]
    for i, v in enumerate(names):
        fr = [
            (s.repetition.loop_onset or 0) / max(1, s.repetition.length or 1)
            for s in run.samples
            if s.variant == v and s.repetition.loop and s.repetition.loop_onset is not None
        ]
        if fr:
            jitter = [(i + 0.1 * ((k * 7919) % 11 - 5) / 5) for k in range(len(fr))]
            ax.scatter(fr, jitter, s=10, color=colors[v], alpha=0.6)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlim(0, 1)
    percent_axis(ax, "x")
    ax.set_xlabel("loop onset (position in the trace)")
    ax.set_title("where loops start (one dot per looping trace)")
    return to_svg(fig, "loop rate and loop onset")


@styled
def lengths(run: Run, colors: dict[str, str]) -> Markup | None:
    groups = _panel_groups(run)
    names = [s.name for s in run.variants]
    if not run.samples:
        return None
    fig, axes = _subplots(len(groups), height=2.5)
    top = max(s.thinking_tokens for s in run.samples) or 1
    bins = min(30, max(5, top // 4))
    for ax, g in zip(axes[0], groups):
        for v in names:
            xs = [s.thinking_tokens for s in run.samples if s.variant == v and (g == ALL or s.group == g)]
            if xs:
                ax.hist(xs, bins=bins, range=(0, top), histtype="step", color=colors[v], label=v, lw=1.5)
        for b in run.budgets():
            ax.axvline(b, color="#999", lw=0.6, ls=":")
        ax.set_title(run.group_title(g))
        ax.set_xlabel("thinking tokens (dotted: budgets)")
    axes[0][0].set_ylabel("traces")
    axes[0][-1].legend()
    return to_svg(fig, "distribution of thinking lengths")


@styled
def trace_kl(kl: Sequence[float], onset: int | None, loop_onset: int | None, label: str, color: str) -> Markup:
    fig, axes = _subplots(1, width=7, height=1.8)
    ax = axes[0][0]
    ax.plot(range(len(kl)), kl, color=color, lw=1.2)
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
    ax.set_xlim(0, max(len(kl) - 1, loop_onset or 0, onset or 0, 1))
    right = ax.get_xlim()[1]

    def mark(x: int, text: str, y: float, **kw: Any) -> None:
        """A label across the top of the plot beside its line, on the side with room: never down into the axis
        or out of the plot."""
        side = "right" if x > 0.5 * right else "left"
        ax.annotate(
            f"{text} " if side == "right" else f" {text}",
            (x, y),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
            ha=side,
            bbox=box,
            **kw,
        )

    if onset is not None and onset >= 0:
        ax.axvline(onset, color="#000", ls="--", lw=1)
        mark(onset, "divergence onset", 0.97)
    if loop_onset is not None and loop_onset >= 0:
        ax.axvline(loop_onset, color=color, ls=":", lw=1.2)
        mark(loop_onset, "pruned trace loops from here", 0.97 if onset is None else 0.72, color=color)
    ax.set_xlabel("token position in the base trace")
    ax.set_ylabel("KL (nats)")
    top = max((x for x in kl if math.isfinite(x)), default=0.0)
    ax.set_ylim(0, max(0.1, 1.1 * top))  # a near-zero curve stays near zero instead of filling the axis
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.25)
    return to_svg(fig, label)


@styled
def compare_runs(runs: Sequence[Run], colors: dict[tuple[str, str], str]) -> Markup | None:
    """Accuracy vs budget for every (run, variant), one panel per regime, legend shared (drawn in HTML)."""
    regimes: list[str] = []
    for r in runs:
        for g in r.groups() or [ALL]:
            reg = r.regime(g) if g != ALL else ALL
            if reg not in regimes:
                regimes.append(reg)
    if not regimes:
        return None
    fig, axes = _subplots(len(regimes))
    styles = ["-", "--", ":", "-."]
    for ax, reg in zip(axes[0], regimes):
        for ri, r in enumerate(runs):
            gs = [g for g in (r.groups() or [ALL]) if (r.regime(g) if g != ALL else ALL) == reg]
            if not gs:
                continue
            g = gs[0]
            for v in [s.name for s in r.variants]:
                seq = r.vmetrics(v, g).sequential
                pts = sorted(((int(b), p) for b, p in seq.items()), key=lambda t: t[0])
                if pts:
                    ax.plot(
                        [b for b, _ in pts],
                        [plottable(p.accuracy) for _, p in pts],
                        "o",
                        ls=styles[ri % 4],
                        color=colors[(r.label, v)],
                        ms=4,
                        lw=1.5,
                    )
        ax.set_xscale("log", base=2)
        ticks = sorted({int(b) for r in runs for b in r.budgets()})
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(reg)
        ax.set_xlabel("thinking budget (tokens)")
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel("accuracy")
    return to_svg(fig, "accuracy versus budget for every run and variant")


@styled
def trace_layers(panels: Sequence[tuple[str, Any, Any, int | None]], n_orig: int, stat: str = "jsd") -> Markup | None:
    """Per-token logit-lens heat maps of individual traces side by side.

    panels: (title, layers (original indices), (T, L) array, loop onset token or None)."""
    import numpy as np

    mats = []
    for title, layers, arr, onset in panels:
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 2:
            continue
        m = np.full((n_orig, a.shape[0]), np.nan)
        for j, l in enumerate(np.asarray(layers).tolist()):
            if 0 <= int(l) < n_orig and j < a.shape[1]:
                m[int(l)] = a[:, j]
        mats.append((title, m, onset))
    vals = [m[np.isfinite(m)] for _, m, _ in mats]
    if not mats or not any(v.size for v in vals):
        return None
    allv = np.concatenate(vals)
    vmin, vmax = float(allv.min()), float(allv.max())
    fig, axes = subplots_fig(1, len(mats), (3.6 * len(mats) + 1.0, 0.9 + 0.13 * n_orig + 0.9), sharey=True)
    im = None
    for ax, (title, m, onset) in zip(axes[0], mats):
        ax.set_facecolor("#eeeeee")
        im = ax.imshow(
            m,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
            extent=(-0.5, m.shape[1] - 0.5, -0.5, n_orig - 0.5),
        )
        if onset is not None and onset >= 0:
            ax.axvline(onset - 0.5, color="#ff4d4d", lw=1.5, ls="--")
            ax.annotate(
                "loop starts", (onset, n_orig - 0.5), color="#ff4d4d", fontsize=7, va="bottom", ha="left", annotation_clip=False
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("token position in this trace")
    axes[0][0].set_ylabel("original layer")
    fig.colorbar(im, ax=axes[0].tolist(), label=f"logit-lens {stat.upper() if stat == 'jsd' else stat}", shrink=0.9)
    return to_svg(fig, f"logit-lens {stat} per token of the two traces")


@styled
def sweep_map(run: Run, sweep: Any, colors: dict[str, str]) -> Markup | None:
    """Damage (base minus variant accuracy, with its interval) per original layer and group, block
    influence on a second axis, and the layers pruning methods would choose."""
    if not sweep.layers:
        return None
    groups = [g for g in run.groups() if any(g in lay.delta for lay in sweep.layers)] or [ALL]
    fig, axes = _subplots(1, width=9.5, height=3.4)
    ax = axes[0][0]
    xs = [lay.dropped[0] + (0.5 if len(lay.dropped) == 2 else 0.0) for lay in sweep.layers]
    for i, g in enumerate(groups):
        off = 0.09 * (i - (len(groups) - 1) / 2)
        ys = [plottable(-lay.delta[g]) if g in lay.delta else math.nan for lay in sweep.layers]
        if all(math.isnan(y) for y in ys):
            continue
        lo = [max(0.0, y - plottable(-lay.delta_ci[g][1])) if g in lay.delta_ci else 0.0 for y, lay in zip(ys, sweep.layers)]
        hi = [max(0.0, plottable(-lay.delta_ci[g][0]) - y) if g in lay.delta_ci else 0.0 for y, lay in zip(ys, sweep.layers)]
        ax.errorbar(
            [x + off for x in xs],
            ys,
            yerr=[lo, hi],
            fmt="o-",
            ms=4,
            lw=1.4,
            capsize=2,
            elinewidth=0.8,
            color=PALETTE[i % len(PALETTE)],
            label=f"damage on {run.group_title(g)}",
        )
    ax.axhline(0, color="#999", lw=0.7)
    ax.set_ylabel("accuracy lost (base − variant)")
    ax.set_xlabel("original layer removed" + (" (pairs: between the two)" if sweep.kind == "pairs" else ""))
    ax.set_xticks(sorted({lay.dropped[0] for lay in sweep.layers} | {lay.dropped[-1] for lay in sweep.layers}))
    bi = [plottable(lay.block_influence) for lay in sweep.layers]
    if not all(math.isnan(b) for b in bi):
        ax2 = ax.twinx()
        ax2.plot(xs, bi, "s--", color="#555", ms=4, lw=1.0, label="block influence (calibration text)")
        ax2.set_ylabel("block influence", color="#555")
        ax2.spines["right"].set_visible(True)
        ax2.legend(loc="upper right")
    marks = {"shortgpt": "ShortGPT would remove", "reverse": "reverse order would remove"}
    for name, layers in sweep.method_choices.items():
        for j, l in enumerate(layers):
            ax.axvspan(
                l - 0.45,
                l + 0.45,
                color="#f4d6d6" if name == "shortgpt" else "#dde7f4",
                zorder=0,
                label=marks.get(name, name) if j == 0 else None,
            )
    ax.legend(loc="upper left", ncol=2)
    ax.grid(alpha=0.25, axis="y")
    return to_svg(fig, "layer-sensitivity map: accuracy lost per removed layer, with block influence")


@styled
def restoration(run: Run, ex: Any, colors: dict[str, str]) -> Markup | None:
    """KL recovery (bars, with interval) and accuracy recovery where measured (a triangle in the variant's
    colour, with its interval) per position and token class, one bar group per variant."""
    from layerprobe.data.labels import position_label

    recs = [r for r in ex.restoration if r.positions not in ("all", "none") and r.kl_recovery is not None]
    if not recs:
        return None
    variants = list(dict.fromkeys(r.variant for r in recs))
    classes = list(dict.fromkeys(r.positions for r in recs))
    fig, axes = _subplots(1, width=11, height=3.6)
    ax = axes[0][0]
    w = 0.8 / len(variants)
    for i, v in enumerate(variants):
        mine = {r.positions: r for r in recs if r.variant == v}
        xs = [j + (i - (len(variants) - 1) / 2) * w for j in range(len(classes))]
        ys = [plottable(mine[c].kl_recovery) if c in mine else math.nan for c in classes]
        lo = [max(0.0, y - plottable(mine[c].kl_ci[0])) if c in mine else 0.0 for y, c in zip(ys, classes)]
        hi = [max(0.0, plottable(mine[c].kl_ci[1]) - y) if c in mine else 0.0 for y, c in zip(ys, classes)]
        color = colors.get(v, "#555")
        ax.bar(
            xs,
            ys,
            width=w,
            color=color,
            alpha=0.55,
            label=f"{v}: divergence recovered",
            yerr=[lo, hi],
            capsize=2,
            error_kw={"lw": 0.8},
        )
        acc = [(x, mine[c]) for x, c in zip(xs, classes) if c in mine and is_num(mine[c].accuracy_recovery)]
        if acc:
            ax.errorbar(
                [x for x, _ in acc],
                [plottable(r.accuracy_recovery) for _, r in acc],
                yerr=[
                    [max(0.0, plottable(r.accuracy_recovery) - plottable(r.ci[0])) for _, r in acc],
                    [max(0.0, plottable(r.ci[1]) - plottable(r.accuracy_recovery)) for _, r in acc],
                ],
                fmt="^",
                color=color,
                mec="black",
                mew=0.6,
                ms=6,
                lw=0.9,
                capsize=2,
                label=f"{v}: lost long-chain problems regained (of {acc[0][1].n_lost})",
            )
    ax.set_xticks(
        range(len(classes)),
        [
            f"{textwrap.fill(position_label(c), 10)}\n{100 * plottable(next(r.share_of_tokens for r in recs if r.positions == c)):.0f} %"
            for c in classes
        ],
        fontsize=7,
    )
    ax.axhline(0, color="#999", lw=0.7)
    ax.axhline(1, color="#999", lw=0.7, ls=":")
    percent_axis(ax)
    ax.set_ylabel("recovered (100 % = the base model)")
    ax.set_title("removed layers restored only at one class of positions (its share of the trace below)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7)
    return to_svg(fig, "restoration recovery by position class")


def breaks_legend(b: Any) -> str:
    """The legend entry of one variant in the break-point histogram (counts as stored in explain.json)."""
    fr = [x for x in b.first_departure_fraction if is_num(x)]
    missing = b.n_failing - len(fr)
    extra = f" ({missing} without a departure point)" if missing > 0 else ""
    return f"{b.variant}: {len(fr)} of {b.n_failing} failing traces{extra}"


@styled
def breaks_hist(ex: Any, colors: dict[str, str]) -> Markup | None:
    data = [b for b in ex.breaks if any(is_num(x) for x in b.first_departure_fraction)]
    if not data:
        return None
    fig, axes = _subplots(1, width=6.5, height=2.4)
    ax = axes[0][0]
    for b in data:
        ax.hist(
            [x for x in b.first_departure_fraction if is_num(x)],
            bins=10,
            range=(0, 1),
            histtype="step",
            lw=1.6,
            color=colors.get(b.variant, "#555"),
            label=breaks_legend(b),
        )
    percent_axis(ax, "x")
    ax.set_xlabel("first position where the pruned model's top token leaves the base trace")
    ax.set_ylabel("failing traces")
    ax.legend(fontsize=7)
    return to_svg(fig, "where failing chains part from the base trace")


@styled
def compounding_fit(ex: Any, colors: dict[str, str]) -> Markup | None:
    """Observed accuracy per chain length (dodged per variant, with its Wilson interval and n) and the fit."""
    if not ex.compounding:
        return None
    fig, axes = _subplots(1, width=7.5, height=3.0)
    ax = axes[0][0]
    n_var = len(ex.compounding)
    all_ks = sorted({int(k) for c in ex.compounding for k in c.by_k})
    for i, c in enumerate(ex.compounding):
        ks = sorted(int(k) for k in c.by_k)
        off = 0.18 * (i - (n_var - 1) / 2)
        acc = [c.by_k[str(k)][0] / c.by_k[str(k)][1] for k in ks]
        cis = [tuple(map(plottable, c.by_k_ci.get(str(k), (None, None)))) for k in ks]
        col = colors.get(c.variant, "#555")
        ax.errorbar(
            [k + off for k in ks],
            acc,
            yerr=[
                [max(0.0, a - lo) if is_num(lo) else 0.0 for a, (lo, _) in zip(acc, cis)],
                [max(0.0, hi - a) if is_num(hi) else 0.0 for a, (_, hi) in zip(acc, cis)],
            ],
            fmt="o",
            color=col,
            ms=4,
            lw=0.8,
            capsize=2,
            label=f"{c.variant} observed",
        )
        grid = [all_ks[0] + j * (all_ks[-1] - all_ks[0]) / 60 for j in range(61)]
        ax.plot(
            grid,
            [(1 - plottable(c.epsilon)) ** k for k in grid],
            "-",
            color=col,
            lw=1.2,
            label=f"{c.variant}: (1 \u2212 {plottable(c.epsilon):.2f})^k",
        )
    ns = {k: max(c.by_k.get(str(k), (0, 0))[1] for c in ex.compounding) for k in all_ks}
    ax.set_xticks(all_ks, [f"{k}\nn={ns[k]}" for k in all_ks], fontsize=7)
    ax.set_ylim(-0.05, 1.08)
    percent_axis(ax)
    ax.set_xlabel("chain length k (steps); n = chains of that length per variant")
    ax.set_ylabel("accuracy (bar: 95 % CI)")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    return to_svg(fig, "accuracy by chain length and the error-compounding fit")


@styled
def predictor_roc(ex: Any) -> Markup | None:
    from layerprobe.data.labels import feature_words

    p = ex.predictors
    if p is None or not p.roc:
        return None
    fig, axes = subplots_fig(1, 2, (10, 3.0), gridspec_kw={"width_ratios": [1, 1.4]})
    ax = axes[0][0]
    ax.plot(
        [plottable(x) for x in p.roc["fpr"]],
        [plottable(x) for x in p.roc["tpr"]],
        color="#1f77b4",
        label=f"{p.model} (AUC {plottable(p.auc):.2f})",
    )
    ax.plot(
        [plottable(x) for x in p.roc["baseline_fpr"]],
        [plottable(x) for x in p.roc["baseline_tpr"]],
        color="#999",
        label=f"thinking length (AUC {plottable(p.baseline_auc):.2f})",
    )
    ax.plot([0, 1], [0, 1], ":", color="#ccc")
    percent_axis(ax)
    percent_axis(ax, "x")
    ax.set_xlabel("right answers flagged (false positives)")
    ax.set_ylabel("wrong answers flagged")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[0][1]
    feats = p.features[:8]
    ax.barh(range(len(feats)), [plottable(f.importance) for f in feats], color="#1f77b4")
    ax.set_yticks(range(len(feats)), [textwrap.fill(feature_words(f.name), 34) for f in feats], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("permutation importance (held-out AUC drop)")
    return to_svg(fig, "failure predictor ROC and feature importances")


_REGIME_TITLES = {"long-chain": "long chains", "short": "short chains", "knowledge": "knowledge", "other": "other"}


@styled
def compare_sensitivity(cmp: Any) -> Markup | None:
    """Accuracy change (variant − base, with its interval) against the relative depth of the removed
    layer(s), one panel per regime, one colour per run; several groups of one regime share a panel."""
    regimes: list[str] = []
    for r in cmp.runs:
        for reg in r.regimes.values():
            if reg not in regimes:
                regimes.append(reg)
    order = list(_REGIME_TITLES)
    regimes.sort(key=lambda x: order.index(x) if x in order else len(order))
    if not regimes or not any(r.sensitivity for r in cmp.runs):
        return None
    fig, axes = _subplots(len(regimes), width=3.9, height=3.0)
    for k, reg in enumerate(regimes):
        ax = axes[0][k]
        for i, r in enumerate(cmp.runs):
            for j, g in enumerate(gr for gr, rg in r.regimes.items() if rg == reg):
                pts = [s for s in r.sensitivity if g in s.delta and s.relative_depth is not None]
                if not pts:
                    continue
                xs = [plottable(s.relative_depth) + 0.004 * (i - (len(cmp.runs) - 1) / 2) for s in pts]
                ys = [plottable(s.delta[g]) for s in pts]
                lo = [max(0.0, y - plottable(s.delta_ci[g][0])) if g in s.delta_ci else 0.0 for y, s in zip(ys, pts)]
                hi = [max(0.0, plottable(s.delta_ci[g][1]) - y) if g in s.delta_ci else 0.0 for y, s in zip(ys, pts)]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi],
                    fmt="o-" if j == 0 else "s--",
                    ms=4,
                    lw=1.3,
                    capsize=2,
                    elinewidth=0.8,
                    color=PALETTE[i % len(PALETTE)],
                    label=f"{r.label}: {g}",
                )
        ax.axhline(0, color="#999", lw=0.7)
        ax.set_xlim(0, 1)
        ax.set_title(_REGIME_TITLES.get(reg, reg))
        ax.set_xlabel("relative depth of the removed layer (layer / L)")
        percent_axis(ax)
        if k == 0:
            ax.set_ylabel("accuracy change vs base")
        ax.grid(alpha=0.25, axis="y")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=7)
    return to_svg(fig, "layer sensitivity of each run on a relative-depth axis, per regime")


@styled
def compare_block_influence(cmp: Any) -> Markup | None:
    """Block influence per layer of each run's base model on its own traces, on the relative-depth axis."""
    runs = [r for r in cmp.runs if any(is_num(b) for b in r.block_influence)]
    if not runs:
        return None
    fig, axes = _subplots(1, width=7.0, height=2.8)
    ax = axes[0][0]
    for i, r in enumerate(cmp.runs):
        if r not in runs:
            continue
        n = len(r.block_influence)
        ax.plot(
            [(j + 0.5) / n for j in range(n)],
            [plottable(b) for b in r.block_influence],
            "o-",
            ms=3,
            lw=1.3,
            color=PALETTE[i % len(PALETTE)],
            label=f"{r.label} ({n} layers)",
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("relative depth (layer / L)")
    ax.set_ylabel("block influence (1 − cos)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.25, axis="y")
    return to_svg(fig, "block influence per layer of each base model, on a relative-depth axis")
