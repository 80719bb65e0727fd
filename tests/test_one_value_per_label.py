"""Every number once: in the default run's terminal summary and report, one quantity of one variant and
group shows one value, whatever place shows it (summary tables, the report's tables, its narrative, "What
broke", explain's findings). The run is a small toy run with the default run's shape (the toy, base and
its two default pruned variants, several budgets, parallel samples, probes and explain), built once."""

from __future__ import annotations

import contextlib
import html as htmllib
import io
import os
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from layerprobe.cli.app import main

#: The names each place gives one quantity (terminal column, report column, narrative label), lower case,
#: mapped to the quantity. The terminal's short column names are spelled out in its table titles.
QUANTITY = {
    "pass@k": "pass@k",
    "maj@k": "maj@k",
    "loops %": "loop rate",
    "loop rate [95 % ci]": "loop rate",
    "share of traces that end in a loop": "loop rate",
    "selfbleu": "self-bleu across samples",
    "self-bleu across samples": "self-bleu across samples",
    "reflect/1k": "reflection words per 1k thinking tokens",
    "reflection words per 1k thinking tokens": "reflection words per 1k thinking tokens",
    "think tokens": "mean thinking tokens",
    "thinking tokens mean / median": "mean thinking tokens",
    "thinking tokens": "mean thinking tokens",
    "no answer %": "no answer",
    "no answer extracted": "no answer",
    "share of traces with no extractable answer": "no answer",
    "seq-rep-4": "seq-rep-4",
    "seq-rep-4 (share of repeated 4-grams)": "seq-rep-4",
    "used up the budget": "budget used up",
    "share of traces that used up the thinking budget": "budget used up",
    "cut before answering": "cut before answering",
    "share of traces cut before their thinking ended": "cut before answering",
    "mean loop onset": "mean loop onset",
}
NUMBER = re.compile(r"[−+-]?\d+(?:\.\d+)?")


def _num(text: str) -> str | None:
    m = NUMBER.search(text.replace("\u2212", "-"))
    return m.group(0).replace("\u2212", "-") if m else None


def _same(a: str, b: str) -> bool:
    """Two shown numbers are one value when they agree to the coarser of their roundings."""
    da = len(a.split(".")[1]) if "." in a else 0
    db = len(b.split(".")[1]) if "." in b else 0
    return abs(float(a) - float(b)) <= 0.5 * 10**-da + 0.5 * 10**-db + 1e-9


class _Tables(HTMLParser):
    """Every <table> of a page: its class and its rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._stack: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._stack.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self._stack:
            self._stack[-1][1].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._stack:
            self.tables.append(self._stack.pop())
        elif tag in ("td", "th") and self._cell is not None and self._stack:
            self._stack[-1][1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


class Seen:
    """(variant, group, quantity) -> [(value, where)]."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)

    def add(self, variant: str, group: str, quantity: str, text: str, where: str) -> None:
        v = _num(text)
        if v is not None:
            self.values[(variant, group, quantity)].append((v, where))

    def clashes(self) -> list[str]:
        out = []
        for key, vals in self.values.items():
            first = vals[0][0]
            if any(not _same(first, v) for v, _ in vals):
                out.append(f"{key}: " + "; ".join(f"{v} ({w})" for v, w in vals))
        return out


def terminal_values(text: str, seen: Seen) -> None:
    """The summary tables of `layerprobe analyze` (rich box tables) and its "What broke" lines."""
    title = ""
    head: list[str] = []
    variant = ""
    for line in text.splitlines():
        if not line.startswith(("│", "┃", "┏", "┡", "├", "└", "┗")) and line.strip():
            if "accuracy" in line or "pass@" in line:
                title = line
            continue
        if line.startswith("┃"):
            head = [c.strip() for c in line.strip("┃").split("┃")]
            continue
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            variant = cells[0].split(" (")[0]
        group = cells[1]
        for name, cell in zip(head[2:], cells[2:]):
            if "accuracy" in title and name.startswith("B="):
                seen.add(variant, group, f"accuracy at {name[2:]}", cell, "terminal accuracy table")
            elif name.startswith(("pass@", "maj@")):
                seen.add(variant, group, name.split("@")[0] + "@k", cell, "terminal")
            elif name.lower() in QUANTITY and cell != "copies":
                seen.add(variant, group, QUANTITY[name.lower()], cell, "terminal")
    for line in text.splitlines():  # What broke: "<group> −90 points [−98, −49]" per variant
        m = re.match(r"\s*Without .*\((\S+)\), at (\d+) thinking tokens: (.*)", line)
        if m:
            for g, d in re.findall(r"(?:^|, )(\w+)(?: \([^)]*\))? ([−+]?\d+) points", m.group(3)):
                seen.add(m.group(1), g if g != "all" else "all", f"change at {m.group(2)}", d, "terminal what broke")


def report_values(html: str, seen: Seen, budget: int) -> None:
    """The report's headline and behaviour tables, its narrative and its "What broke" list."""
    p = _Tables()
    p.feed(html)
    for cls, rows in p.tables:
        if not rows or cls not in ("headline", "behaviour"):
            continue
        head = [h.lower() for h in rows[0]]
        if "quantity" in head:  # wrong against right traces: its own quantities (wrong / right traces)
            variant = ""
            for r in rows[1:]:
                variant = r[0] or variant
                q = QUANTITY.get(r[1].lower(), r[1].lower())
                seen.add(variant, "all", f"{q} of wrong traces", r[2], "report contrasts")
                seen.add(variant, "all", f"{q} of right traces", r[3], "report contrasts")
            continue
        group = ""
        for r in rows[1:]:
            if len(r) != len(head):
                continue
            group = r[0].split(" ")[0] or group
            variant = r[1]
            for name, cell in zip(head[2:], r[2:]):
                if name.startswith("accuracy"):
                    seen.add(variant, group, f"accuracy at {budget}", cell, "report headline")
                elif name.startswith("change vs"):
                    seen.add(variant, group, f"change at {budget}", cell, "report headline")
                elif name.startswith(("pass@k", "maj@k")):
                    seen.add(variant, group, name.split(" ")[0], cell.split(" ", 1)[-1], "report headline")
                elif name in QUANTITY:
                    seen.add(variant, group, QUANTITY[name], cell, f"report table ({name})")
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", html))
    for m in re.finditer(r"([A-Z][^:\n]*?): ([−\d.]+ ?%?) for (\S+) vs ([−\d.]+ ?%?) for (\S+?) \(", text):
        q = QUANTITY.get(m.group(1).lower())
        if q is not None:
            seen.add(m.group(3), "all", q, m.group(2), "report narrative")
            seen.add(m.group(5), "all", q, m.group(4), "report narrative")
    for m in re.finditer(
        r"On (\w+) \(?[^)]*?\)? ?problems at the largest thinking budget \((\d+) tokens\), accuracy was (\d+ %) for (\S+) and (\d+ %) for (\S+?) \(",
        text,
    ):
        seen.add(m.group(4), m.group(1), f"accuracy at {m.group(2)}", m.group(3), "report narrative")
        seen.add(m.group(6), m.group(1), f"accuracy at {m.group(2)}", m.group(5), "report narrative")
    for m in re.finditer(r"pass@\d+ was (\d+ %) for (\S+) and (\d+ %) for (\S+?); maj@\d+ (\d+ %) vs (\d+ %)", text):
        seen.add(m.group(2), "long", "pass@k", m.group(1), "report narrative")
        seen.add(m.group(4), "long", "pass@k", m.group(3), "report narrative")
        seen.add(m.group(2), "long", "maj@k", m.group(5), "report narrative")
        seen.add(m.group(4), "long", "maj@k", m.group(6), "report narrative")
    broke = text[text.index("What broke") : text.index("Why: what the interventions found")]
    terminal_values(broke.replace("Without", "\n  Without"), seen)  # the same sentences as the terminal's


@pytest.fixture(scope="module")
def default_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`layerprobe analyze` on the toy with the default variants, explain included, smaller: its report and
    terminal output."""
    import torch

    out = tmp_path_factory.mktemp("default") / "run"
    buf = io.StringIO()
    threads, columns = torch.get_num_threads(), os.environ.get("COLUMNS")
    torch.set_num_threads(1)
    os.environ["COLUMNS"] = "200"
    try:
        with contextlib.redirect_stdout(buf):
            main(["analyze", "--out", str(out), "--limit", "3", "--budgets", "16,64", "--samples", "3"])
    except SystemExit as exc:
        assert not exc.code, f"layerprobe analyze failed with exit code {exc.code}"
    finally:
        torch.set_num_threads(threads)
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return out, buf.getvalue()


def test_every_label_holds_one_value(default_like: tuple[Path, str]) -> None:
    out, terminal = default_like
    html = (out / "report.html").read_text(encoding="utf-8")
    seen = Seen()
    terminal_values(terminal, seen)
    report_values(html, seen, budget=64)
    places = {w for vals in seen.values.values() for _, w in vals}
    assert {"terminal", "terminal accuracy table", "report headline", "report narrative", "report contrasts"} <= places
    shared = [k for k, vals in seen.values.items() if len({w.split(" (")[0] for _, w in vals}) > 1]
    assert len(shared) >= 40, shared  # most quantities are shown in more than one place and compared here
    assert not seen.clashes(), "\n".join(seen.clashes())


def test_findings_read_the_same_in_terminal_and_report(default_like: tuple[Path, str]) -> None:
    out, terminal = default_like
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", (out / "report.html").read_text(encoding="utf-8")))
    findings = [line.strip()[2:] for line in terminal.splitlines() if line.startswith("  - ")]
    assert findings, terminal
    for f in findings:
        assert " ".join(f.split()) in " ".join(text.split()), f
