"""`layerprobe report`: structure of reports from small run directories, escaping, no network
resources, partial and probe-less runs, several runs, the CLI's exit codes."""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path

import pytest

from layerprobe.data import load_run
from layerprobe.data.verdicts import reason_of
from layerprobe.errors import UserError
from layerprobe.metrics import NO_CLEAR_DIFFERENCE
from layerprobe.metrics.paired import INTERVAL_ONLY, TEST_ONLY, TOO_FEW
from layerprobe.report import render_report
from layerprobe.report.narrative import resolve
from layerprobe.report.numbers import fmt
from layerprobe.report.render import Limits
from tests.cli_utils import assert_one_line_error, run_cli
from tests.report_runs import make_run

NUM = re.compile(r'<span class="num" data-kind="([^"]+)" data-src="([^"]+)">([^<]*)</span>')
SECTIONS = ("summary", "scaling", "layers", "traces", "cases", "drill")


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real run: `layerprobe analyze` on the embedded toy (base and one pruned variant)."""
    import torch

    from layerprobe.cli.app import main

    out = tmp_path_factory.mktemp("real") / "toy-run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(
            [
                "analyze",
                "--out",
                str(out),
                "--limit",
                "1",
                "--budgets",
                "8,32",
                "--samples",
                "2",
                "--drop",
                "3",
                "--no-report",
                "--no-explain",
            ]
        )
    except SystemExit as exc:
        assert not exc.code, f"layerprobe analyze failed with exit code {exc.code}"
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "fixture", script_text=True)


@pytest.fixture(scope="module")
def fixture_html(fixture_run: Path) -> str:
    return render_report(fixture_run).read_text(encoding="utf-8")


def _text(html: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


def _narrative_items(html: str) -> list[str]:
    return re.findall(r"<li class=\"[a-z]*\">(.*?)</li>", html, flags=re.S)


def check_numbers(run_dir: Path, html: str) -> int:
    """Every number in the report that names its source shows exactly that value, formatted."""
    run = load_run(run_dir)
    n = 0
    for kind, src, shown in NUM.findall(html):
        path = json.loads(htmllib.unescape(src))
        value = resolve(run, path)
        assert fmt(value, kind) == htmllib.unescape(shown), (path, value, shown)
        n += 1
    return n


def check_structure(run_dir: Path, html: str) -> None:
    run = load_run(run_dir)
    for sec in SECTIONS:
        assert f'id="r0-{sec}"' in html, sec
    for spec in run.variants:
        assert spec.name in html
    for v in run.pruned:
        assert f"{v} against {run.base}" in html
        for layer in run.spec(v).dropped:
            assert re.search(rf'<span class="tag dropped">{layer}</span>', html), layer  # variants table
            if run.has_probes:  # layer table: the dropped layer's row is flagged
                row = re.search(rf'<tr id="r0-layer-{layer}" class="dropped">(.*?)</tr>', html, flags=re.S)
                assert row and 'class="tag dropped">dropped<' in row.group(1)
    # intervals: every headline accuracy comes with its 95 % interval
    head = html[html.index('class="headline"') : html.index("What the numbers say")]
    n_acc = head.count("n=")
    assert n_acc >= len(run.variants) and head.count('<span class="ci">') >= n_acc
    # each narrative comparison sentence says "inside the noise" exactly when the paired verdict is no clear difference
    comps = run.metrics.comparisons
    checked = 0
    for li in _narrative_items(html):
        srcs = [json.loads(htmllib.unescape(s)) for _, s, _ in NUM.findall(li)]
        diff = [s for s in srcs if s[:2] == ["metrics", "comparisons"] and s[-1] == "diff"]
        if len(diff) != 1 or "problems paired" not in li:
            continue
        c = comps[diff[0][2]]
        assert ("outside the noise" in li) == (c.verdict != NO_CLEAR_DIFFERENCE), li
        # interval and test disagreeing is said in words (which test, and why), never left for the reader to spot
        assert (f"{c.test} test" in li) == (reason_of(c) in (INTERVAL_ONLY, TEST_ONLY)), li
        assert ("too few problems for a verdict" in li) == (reason_of(c) == TOO_FEW), li
        checked += 1
    assert checked >= 1
    # the overview sentence counts exactly the comparisons whose verdict names a direction
    for v in run.pruned:
        mine = [c for c in comps if c.variant == v]
        clear = sum(c.verdict != NO_CLEAR_DIFFERENCE for c in mine)
        words = "none is" if clear == 0 else f"{clear} {'is' if clear == 1 else 'are'}"
        assert (
            f"Of {len(mine)} paired accuracy comparisons with {run.base} (group \u00d7 mode \u00d7 budget), {words} outside the noise"
            in _text(html)
        )
    assert check_numbers(run_dir, html) >= 20


def test_real_run_report(capsys: pytest.CaptureFixture[str], real_run: Path) -> None:
    res = run_cli(capsys, "report", str(real_run))
    assert res.code == 0, res.err
    assert res.out.strip() == str(real_run / "report.html")
    html = (real_run / "report.html").read_text(encoding="utf-8")
    check_structure(real_run, html)
    run = load_run(real_run)
    assert run.pruned == ["drop-3"] and run.spec("drop-3").dropped == [3]
    assert run.has_probes and 'id="r0-layer-3" class="dropped"' in html
    assert "Partial run" not in html
    cases = html[html.index('id="r0-cases"') : html.index('id="r0-drill"')]
    assert "logit-lens JSD of every original layer" in cases  # per-token view of the first case's traces
    assert "Teacher-forced: the pruned model reads" in cases


def test_fixture_report_structure_and_numbers(fixture_run: Path, fixture_html: str) -> None:
    check_structure(fixture_run, fixture_html)
    assert "<svg" in fixture_html and fixture_html.count('class="fig"') >= 8


def test_model_text_is_escaped(fixture_html: str) -> None:
    assert "<script" not in fixture_html.lower()
    assert "&lt;script&gt;alert(" in fixture_html  # the trace is shown, as text


def test_odd_names_are_escaped_in_html_and_figures(tmp_path: Path) -> None:
    d = make_run(
        tmp_path / "odd", variants=(("base", []), ("drop+3=x", [3])), pid_prefix="<b>$p$", problems_per_group=1, samples=2
    )
    html = render_report(d).read_text(encoding="utf-8")
    assert "<b>" not in html
    assert html.count("&lt;b&gt;$p$") >= 2  # case study summary and figure title, as text
    legend = re.findall(r"<text[^>]*>([^<]*drop[^<]*)</text>", html)
    assert "drop+3=x" in legend
    # a variant name that could not be a folder name (or would be markup) is refused where a run is read
    info = json.loads((d / "run.json").read_text())
    info["variants"][1]["name"] = "drop<3>$x$&"
    (d / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="not a valid variant name"):
        load_run(d)


def test_no_network_resources(fixture_html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", fixture_html, flags=re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", fixture_html, flags=re.I)
    assert "<link" not in fixture_html and "<iframe" not in fixture_html.lower()
    for href in re.findall(r'(?<![-\w])(?:href|src)="([^"]+)"', fixture_html):  # anchors, inline images, the local samples file
        assert href.startswith(("#", "data:image/")) or href == "samples.jsonl", href[:80]
    ids = set(re.findall(r'\sid="([^"]+)"', fixture_html))
    for anchor in re.findall(r'href="#([^"]+)"', fixture_html):  # every in-page link lands somewhere
        assert anchor in ids, anchor


def test_loops_are_highlighted_and_rule_stated(fixture_html: str) -> None:
    assert "How they were chosen:" in fixture_html
    cases = fixture_html[fixture_html.index('id="r0-cases"') : fixture_html.index('id="r0-drill"')]
    assert '<mark class="loop">' in cases
    assert cases.count("<details") >= 1


def test_partial_run_is_marked(tmp_path: Path) -> None:
    d = make_run(tmp_path / "part", status="interrupted", keep_fraction=0.4, write_metrics_file=False)
    html = render_report(d).read_text(encoding="utf-8")
    assert "Partial run" in html and "<code>interrupted</code>" in html
    run = load_run(d)
    assert f"{len(run.samples)} traces of {run.info.expected_traces} expected" in _text(html)
    assert "samples.jsonl, recomputed" in html
    check_numbers(d, html)


def test_empty_and_single_variant_runs(tmp_path: Path) -> None:
    empty = make_run(tmp_path / "empty", status="running", write_metrics_file=False, probes=False)
    (empty / "samples.jsonl").write_text("")
    html = render_report(empty).read_text(encoding="utf-8")
    assert "Partial run" in html and "0 traces of" in html and "No traces yet." in html
    single = make_run(tmp_path / "single", variants=(("base", []),), problems_per_group=1, samples=2, probes=False)
    html = render_report(single).read_text(encoding="utf-8")
    assert "nothing to compare it with" in html and "Partial run" not in html


def test_stale_metrics_are_recomputed(tmp_path: Path) -> None:
    d = make_run(tmp_path / "stale")
    m = json.loads((d / "metrics.json").read_text())
    m["n_samples"] -= 5
    m["variants"]["base"]["groups"]["all"]["behaviour"]["loop_rate"] = 0.987654
    (d / "metrics.json").write_text(json.dumps(m))
    run = load_run(d)
    assert run.metrics_source.startswith("samples.jsonl, recomputed")
    assert run.metrics.variants["base"].groups["all"].behaviour.loop_rate != 0.987654


def test_run_without_probes(tmp_path: Path) -> None:
    d = make_run(tmp_path / "noprobes", probes=False)
    html = render_report(d).read_text(encoding="utf-8")
    assert "No probes in this run" in html
    assert "logit-lens JSD to the output" not in html  # no heat map drawn
    assert 'id="r0-layer-0"' not in html
    check_structure(d, html)


def test_missing_or_old_layer_aggregates(tmp_path: Path) -> None:
    d = make_run(tmp_path / "old", problems_per_group=2, samples=2)
    (d / "layers" / "drop-3.json").unlink()
    agg = json.loads((d / "layers" / "base.json").read_text())
    new_fraction = agg["settling"]["mean_depth_fraction"]
    # the layout of layerprobe 0.1 (schema_version 1) is migrated when read
    st = agg["settling"]
    st["settling_depth_fraction_mean"] = st.pop("mean_depth_fraction")
    st["settling_depth_mean"] = st.pop("mean_depth")
    st["settling_depth_original_mean"] = st.pop("mean_depth_original")
    agg["schema_version"] = 1
    (d / "layers" / "base.json").write_text(json.dumps(agg))
    run = load_run(d)
    assert run.layers["base"] is not None and run.layers["base"].settling.mean_depth_fraction == new_fraction
    html = render_report(d).read_text(encoding="utf-8")
    assert "No probes for drop-3." in html
    assert "block influence per original layer" in html
    check_numbers(d, html)
    # a newer layout, or one with unknown fields, is not guessed at: noted, and the report goes on without it
    agg["schema_version"] = 99
    (d / "layers" / "base.json").write_text(json.dumps(agg))
    run = load_run(d)
    assert run.layers["base"] is None and any("layers/base.json could not be read" in n for n in run.notes)


def test_size_cap_truncates_and_limits_cases(tmp_path: Path) -> None:
    d = make_run(tmp_path / "cap", problems_per_group=3)
    out = render_report(d, tmp_path / "cap.html", limits=Limits(cases_per_variant=2, max_chars=60))
    html = out.read_text(encoding="utf-8")
    cases = html[html.index('id="r0-cases"') : html.index('id="r0-drill"')]
    assert cases.count("<details") == 2
    assert "characters omitted" in cases and "Shortened here:" in cases
    assert 'href="cap/samples.jsonl"' in html  # the full traces are linked, relative to the report


def test_several_runs_are_compared(capsys: pytest.CaptureFixture[str], tmp_path: Path, real_run: Path) -> None:
    other = make_run(
        tmp_path / "other",
        variants=(("base", []), ("drop-4-5", [4, 5])),
        problems_per_group=2,
        samples=2,
        seed=1,
        status="running",
    )
    res = run_cli(capsys, "report", str(other), str(real_run), "--out", str(tmp_path / "cmp.html"))
    assert res.code == 0, res.err
    assert res.out.strip() == str(tmp_path / "cmp.html")
    html = (tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert 'id="comparison"' in html
    legend = re.search(r'<div class="legend">(.*?)</div>', html, flags=re.S).group(1)
    real = load_run(real_run)
    labels = ["other · base", "other · drop-4-5"] + [f"{real_run.name} · {v.name}" for v in real.variants]
    for label in labels:
        assert label in legend
    assert len(set(re.findall(r"background: (#[0-9a-f]{6})", legend))) == len(labels)  # one colour each
    for i in range(2):
        assert f'id="r{i}-summary"' in html
    assert "drops 4, 5" in legend
    table = html[html.index('id="comparison"') : html.index('id="r0"')]
    assert table.count("partial</span>") == 2  # both variants of the running run are tagged
    assert 'id="r0-partial"' in html and 'id="r1-partial"' not in html
    assert not (real_run / "cmp.html").exists()


def test_cli_bad_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_line_error(run_cli(capsys, "report", str(tmp_path)), "not a layerprobe run directory")
    assert_one_line_error(run_cli(capsys, "report", str(tmp_path / "missing")), "does not exist")
    (tmp_path / "run.json").write_text("{broken")
    assert_one_line_error(run_cli(capsys, "report", str(tmp_path)), "cannot be read")
    run = make_run(tmp_path / "ok", problems_per_group=1, samples=1, probes=False, write_metrics_file=False)
    assert_one_line_error(run_cli(capsys, "report", str(run), "--out", str(tmp_path / "r.txt")), "should be an .html file")
    (tmp_path / "afile").write_text("")
    assert_one_line_error(run_cli(capsys, "report", str(run), "--out", str(tmp_path / "afile" / "r.html")), "is not a directory")
    assert not (run / "report.html").exists()
