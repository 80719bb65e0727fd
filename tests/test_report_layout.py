"""The report as a reader sees it at 1400 px: tables fit the page (headers wrap, never clip), figure labels
stay inside their plots, each pruned variant's dropped layers are shaded in its own colour, counts agree
with their nouns. Widths are estimated from the text a table cannot break (no browser in the tests)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from layerprobe.data import load_run
from layerprobe.report import figures, render_report
from tests.report_runs import make_run

CONTENT_PX = 1180 - 2 * 28  # the page's main column at a 1400 px window (report.css: max-width 1180 px, padding 28 px)
CHAR_PX = {"th": 8.0, "td": 7.5}  # widest average advance of the report's fonts at 12-13 px (DejaVu Sans, bold headers)
CELL_PAD_PX = 20 + 2  # 10 px each side, and the border


class _Widths(HTMLParser):
    """Per table: the narrowest width each column can take, from its cells' unbreakable text (a cell whose
    CSS says nowrap cannot break at all; otherwise its longest word)."""

    def __init__(self, nowrap: dict[str, set[str]]) -> None:
        super().__init__()
        self.nowrap = nowrap
        self.tables: list[tuple[str, list[float]]] = []
        self._stack: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._stack.append({"class": a.get("class") or "", "cols": [], "col": 0, "cell": None})
        elif not self._stack:
            return
        t = self._stack[-1]
        if tag == "tr":
            t["col"] = 0
        elif tag in ("td", "th"):
            classes = set((a.get("class") or "").split())
            t["cell"] = {
                "tag": tag,
                "text": [],
                "nowrap": bool(classes & self.nowrap.get(tag, set())) or "nowrap" in (a.get("style") or ""),
                "span": int(a.get("colspan") or 1),
            }
        elif tag == "br" and t["cell"] is not None:
            t["cell"]["text"].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if not self._stack:
            return
        t = self._stack[-1]
        if tag in ("td", "th") and t["cell"] is not None:
            c = t["cell"]
            lines = "".join(c["text"]).split("\n")
            pieces = [" ".join(line.split()) for line in lines] if c["nowrap"] else [w for line in lines for w in line.split()]
            width = max((len(p) for p in pieces), default=0) * CHAR_PX[c["tag"]] + CELL_PAD_PX
            if c["span"] == 1:
                while len(t["cols"]) <= t["col"]:
                    t["cols"].append(0.0)
                t["cols"][t["col"]] = max(t["cols"][t["col"]], width)
            t["col"] += c["span"]
            t["cell"] = None
        elif tag == "table":
            self._stack.pop()
            self.tables.append((t["class"], t["cols"]))

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1]["cell"] is not None:
            self._stack[-1]["cell"]["text"].append(data)


def _nowrap_classes(css: str) -> dict[str, set[str]]:
    """Which cell classes report.css keeps on one line ("td.n { white-space: nowrap }")."""
    out: dict[str, set[str]] = {"td": set(), "th": set()}
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        if "nowrap" not in body:
            continue
        for sel in selectors.split(","):
            m = re.fullmatch(r"\s*(td|th)\.([\w-]+)\s*", sel)
            if m:
                out[m.group(1)].add(m.group(2))
    return out


@pytest.fixture(scope="module")
def three_variant_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default run's shape: a base and two pruned variants, every section filled."""
    out = make_run(
        tmp_path_factory.mktemp("layout") / "run",
        variants=(("base", []), ("shortgpt-2", [3, 4]), ("reverse-2", [4, 5])),
        problems_per_group=3,
        samples=3,
    )
    return render_report(out).read_text(encoding="utf-8")


def test_every_table_fits_the_page(three_variant_report: str) -> None:
    from layerprobe.report.render import TEMPLATES

    w = _Widths(_nowrap_classes((TEMPLATES / "report.css").read_text()))
    w.feed(three_variant_report)
    assert len(w.tables) >= 8
    too_wide = {cls: round(sum(cols)) for cls, cols in w.tables if sum(cols) > CONTENT_PX}
    assert not too_wide, too_wide


def test_onset_labels_stay_inside_their_plot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop-onset and divergence-onset labels of a case study's KL plot never run over the x axis."""
    made = []
    real = figures.to_svg

    def keep(fig, alt):
        made.append(fig)
        return real(fig, alt)

    monkeypatch.setattr(figures, "to_svg", keep)
    kl = [0.1, 0.2, 0.5, 1.0, 0.8, 0.4] * 4
    for onset, loop_onset in ((6, 9), (3, 22), (20, 2)):  # labels near either edge
        figures.trace_kl(kl, onset=onset, loop_onset=loop_onset, label="KL(base ‖ pruned) along base's trace", color="#d62728")
    for fig in made:
        _inside(fig)


def _inside(fig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_window_extent(r)
    texts = [t for t in ax.texts if t.get_text().strip()]
    assert len(texts) == 2
    for t in texts:
        bb = t.get_window_extent(r)
        assert bb.y0 >= box.y0 - 1 and bb.y1 <= box.y1 + 1, (t.get_text(), bb, box)
        assert bb.x0 >= box.x0 - 1 and bb.x1 <= box.x1 + 1, (t.get_text(), bb, box)


def test_dropped_layers_are_shaded_in_their_variants_colour(tmp_path: Path) -> None:
    out = make_run(
        tmp_path / "run", variants=(("base", []), ("shortgpt-2", [3]), ("reverse-2", [5])), problems_per_group=1, samples=1
    )
    run = load_run(out)
    colors = {"base": "#3b3b3b", "shortgpt-2": "#d62728", "reverse-2": "#1f77b4"}
    svg = str(figures.block_influence(run, colors))
    shaded = re.findall(r"fill: (#[0-9a-f]{6}); opacity: 0\.\d+", svg)
    assert "#d62728" in shaded and "#1f77b4" in shaded, shaded
    heat = str(figures.heatmap(run, "jsd", "logit-lens JSD", colors))  # the hatched rows of each panel
    assert "#1f77b4" in heat.lower() and "#d62728" in heat.lower()


def test_one_variant_is_not_variants(tmp_path: Path) -> None:
    out = make_run(tmp_path / "run", variants=(("base", []),), problems_per_group=1, samples=1)
    html = render_report(out).read_text(encoding="utf-8")
    assert ", 1 variant</div>" in " ".join(html.split()).replace(" </div>", "</div>") or ", 1 variant<" in html
    assert "1 variants" not in html
