"""The report of a `layerprobe compare` directory: compare.json -> one self-contained HTML file."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from layerprobe.data.schema import CompareFile
from layerprobe.data.store import read_compare
from layerprobe.data.verdicts import RULE, verdict_note, verdict_short
from layerprobe.errors import UserError
from layerprobe.report import figures
from layerprobe.report.numbers import fmt


def cross_sentences(cmp: CompareFile) -> list[str]:
    """Per run pair and group, in words: base accuracies, and at how many removed depths the second model
    loses more, less, or not clearly differently than the first."""
    out = []
    pairs = list(dict.fromkeys((c.a, c.b) for c in cmp.cross))
    for a, b in pairs:
        recs = [c for c in cmp.cross if c.a == a and c.b == b]
        for g in dict.fromkeys(c.group for c in recs):
            base = next((c for c in recs if c.group == g and c.what == "base accuracy"), None)
            dmg = [c for c in recs if c.group == g and c.what == "damage"]
            parts = []
            if base is not None:
                note = verdict_note(base)
                parts.append(
                    f"{g}: base accuracy {fmt(base.mean_a)} ({a}) vs {fmt(base.mean_b)} ({b}), "
                    f"difference {fmt(base.diff, 'd')} points [{fmt(base.ci[0], 'd')}, {fmt(base.ci[1], 'd')}], n={base.n_pairs}"
                    f" ({note or verdict_short(base)})"
                )
            mean = next((c for c in recs if c.group == g and c.what == "mean damage"), None)
            if mean is not None:
                parts.append(
                    f"averaged over the removed depths, {b}'s change minus {a}'s is {fmt(mean.diff, 'd')} points "
                    f"[{fmt(mean.ci[0], 'd')}, {fmt(mean.ci[1], 'd')}] ({verdict_note(mean) or verdict_short(mean)})"
                )
            if dmg:
                short = Counter(verdict_short(c) for c in dmg)  # the difference rule's words, not only its direction
                rest = ", ".join(
                    f"{w} at {short[w]}" for w in ("no clear difference", "not established", "too few problems") if short[w]
                )
                parts.append(
                    f"removing one depth at a time, {b} loses clearly more than {a} at {short['lower']} of {len(dmg)} depths, "
                    f"clearly less at {short['higher']}" + (f", {rest}" if rest else "")
                )
            accs: tuple[tuple[str, float | None], ...] = (
                ((a, base.mean_a), (b, base.mean_b)) if base is not None and (dmg or mean) else ()
            )
            low = [(who, acc) for who, acc in accs if acc is not None and acc < 0.5]
            for who, acc in low:
                parts.append(f"{who} solves only {fmt(acc)} of {g} without any layer removed, so it has little to lose there")
            if parts:
                out.append("; ".join(parts) + ".")
    return out


def render_compare(out_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Render compare.json of `out_dir` to `out` (default out_dir/report.html); returns the path."""
    from layerprobe._io import write_atomic
    from layerprobe.report.render import CONTROL, TEMPLATES, environment, writing_into

    path = Path(out) if out is not None else Path(out_dir) / "report.html"
    if path.is_dir():
        path = path / "report.html"
    with writing_into(path):
        cmp = read_compare(out_dir)
        groups = list(dict.fromkeys(g for r in cmp.runs for g in r.regimes))
        html = (
            environment()
            .get_template("compare.html.jinja")
            .render(
                cmp=cmp,
                css=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
                groups=groups,
                damaged={r.label for r in cmp.runs if r.damage},
                sentences=cross_sentences(cmp),
                difference_rule=RULE,
                verdict_short=verdict_short,
                figs={"sensitivity": figures.compare_sensitivity(cmp), "bi": figures.compare_block_influence(cmp)},
            )
        )
        html = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", html)  # names from files: no raw control characters
        data = html.encode("utf-8", "replace")
        try:
            write_atomic(path, lambda fh: fh.write(data))
        except OSError as exc:
            raise UserError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path
