"""What a new user meets first: grading that says when it is not working, a run that the same command
finds again, a resume command on failure, and no generation spent on what is known by construction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from layerprobe.data import load_run
from tests.cli_utils import run_cli
from tests.report_runs import make_run

SMALL = ["--limit", "1", "--budgets", "4,12", "--samples", "3", "--drop", "11", "--no-probes", "--no-report"]


def test_missing_answers_are_said_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", problems_per_group=2, samples=2, probes=False)
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    for r in recs:
        if r["variant"] == "base":
            r["answer"], r["extraction"], r["correct"] = None, None, False
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "metrics.json").unlink()
    m = load_run(run).metrics
    assert not m.grading["base"].meaningful and m.grading["base"].missing_rate == 1.0
    from rich.console import Console

    from layerprobe.cli.summary_table import print_summary

    console = Console(record=True, width=200)
    print_summary(run, console)
    text = console.export_text()
    assert text.lstrip().startswith("accuracy is not meaningful: 100 % of base traces had no answer")
    assert "accuracy not meaningful for base, drop-3, see above" in text
    assert run_cli(capsys, "report", str(run)).code == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.index("Accuracy is not meaningful for base") < html.index('id="r0-summary"')
    narrative = html[html.index("What the numbers say") :]
    first = narrative[narrative.index("<li") : narrative.index("</li>")]
    assert "Accuracy is not meaningful" in first


def test_an_empty_answer_is_named_as_such(tmp_path: Path) -> None:
    # the model wrote nothing after the end of thinking: the message says so instead of blaming the rules
    run = make_run(tmp_path / "r", problems_per_group=2, samples=2, probes=False)
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    for r in recs:
        if r["variant"] == "base":
            r["answer"], r["extraction"], r["correct"], r["answer_tokens"] = None, None, False, 0
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "metrics.json").unlink()
    h = load_run(run).metrics.grading["base"]
    assert (
        not h.meaningful and f"in {h.missing} of them the model wrote nothing after the end of thinking and stated" in h.message
    )


def test_a_variant_that_stops_answering_is_not_a_grading_failure(tmp_path: Path) -> None:
    # the base's answers are found, so the grader reads this model: the pruned variant's missing
    # answers are its own failure (counted as wrong), and its accuracy stays meaningful
    run = make_run(tmp_path / "r", problems_per_group=2, samples=2, probes=False)
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    pruned = next(r["variant"] for r in recs if r["variant"] != "base")
    for r in recs:
        if r["variant"] == pruned:
            r["answer"], r["extraction"], r["correct"] = None, None, False
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "metrics.json").unlink()
    m = load_run(run).metrics
    assert m.grading["base"].meaningful and m.grading["base"].missing_rate == 0.0
    h = m.grading[pruned]
    assert h.missing_rate == 1.0 and h.meaningful and "stops answering" in h.message


def test_same_command_finds_its_run(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "analyze", *SMALL).code == 0
    (run,) = list((tmp_path / "runs").iterdir())
    before = (run / "samples.jsonl").read_bytes()
    res = run_cli(capsys, "analyze", *SMALL)
    assert res.code == 0 and list((tmp_path / "runs").iterdir()) == [run]
    assert (run / "samples.jsonl").read_bytes() == before  # found and complete: nothing generated again
    assert run_cli(capsys, "analyze", *SMALL[:-1], "--seed", "1", "--no-report").code == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2  # other settings, another run


def test_failure_prints_the_resume_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layerprobe.scaling.engine import TraceGenerator

    real = TraceGenerator.generate
    calls = {"n": 0}

    def fail_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TraceGenerator, "generate", fail_second)
    out = tmp_path / "run"
    res = run_cli(capsys, "analyze", "--out", str(out), *SMALL)
    assert res.code == 1
    assert f"to resume: layerprobe analyze --out {out}" in " ".join(res.err.split())
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "--out" in info["resume_command"]
    monkeypatch.setattr(TraceGenerator, "generate", real)
    assert run_cli(capsys, "analyze", "--out", str(out), *SMALL).code == 0
    assert load_run(out).status == "complete"


def test_a_format_the_tokenizer_cannot_spell_leaves_no_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli(capsys, "analyze", "--out", str(out), "--format", "s1", *SMALL)
    assert res.code == 2 and "reasoning format" in res.err
    assert not out.exists()


def test_greedy_samples_are_copies_and_budgets_share_a_prefix(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "--limit",
        "2",
        "--budgets",
        "4,12,40",
        "--samples",
        "3",
        "--drop",
        "11",
        "--temperature",
        "0",
        "--no-report",
        "--no-explain",
    ]
    assert run_cli(capsys, "analyze", "--out", str(out), *args).code == 0
    run = load_run(out)
    par = [r for r in run.samples if r.mode == "parallel"]
    assert {r.origin for r in par if r.sample > 0} == {"copy"}
    assert all(r.origin_key == [r.variant, r.problem_id, "parallel", r.budget, 0] for r in par if r.sample > 0)
    for g in run.metrics.variants["base"].groups.values():
        assert g.parallel.identical_samples and g.parallel.self_bleu_across is None  # not "90": there is nothing to compare
    seq = [r for r in run.samples if r.mode == "sequential"]
    assert {r.origin for r in seq if r.budget == 40} == {"generated"}
    small = [r for r in seq if r.budget < 40]
    assert small and all(r.origin in ("prefix", "copy") and r.origin_key[3] == 40 for r in small)
    for r in small:  # each has its own probe arrays (a fork carries the shared prefix's rows)
        assert r.layers_file and (out / r.layers_file).is_file()


def test_runs_table_shows_whole_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = "a-rather-long-run-directory-name-that-would-not-fit-in-eighty-columns-of-a-terminal"
    make_run(tmp_path / name, problems_per_group=1, samples=1, probes=False)
    os.environ.pop("COLUMNS", None)
    res = run_cli(capsys, "runs", str(tmp_path))
    assert res.code == 0
    flat = "".join(line.strip("│ ").split("│")[0].strip() for line in res.out.splitlines())
    assert name in flat


def test_the_toy_explains_itself_and_the_summary_ends_with_verdicts_and_the_next_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    small = ["--limit", "2", "--budgets", "16,64", "--samples", "1", "--drop", "10,11"]
    res = run_cli(capsys, "analyze", "--out", "runs/explained", *small)
    assert res.code == 0, res.err
    assert (tmp_path / "runs/explained/explain.json").is_file()  # the default toy run explains itself
    lines = [line.strip() for line in res.out.splitlines() if line.strip()]
    broke = lines.index("What broke (accuracy change against the base, points, 95 % CI):")
    assert lines[broke + 1].startswith("Without layers 10 and 11 (drop-10-11), at 64 thinking tokens: long (long-chain) ")
    assert " points [" in lines[broke + 1] and "short" in lines[broke + 1] and "facts" in lines[broke + 1]
    assert "Why (layerprobe explain; every number in explain.json):" in lines
    assert lines[-2] == "Next:" and lines[-1].startswith("open runs/explained/report.html in a browser")
    html = (tmp_path / "runs/explained/report.html").read_text(encoding="utf-8")
    assert html.index("What broke") < html.index("Why: what the interventions found") < html.index('id="r0-summary"')

    # not explained: the summary and the report name the command as it works from here
    res = run_cli(capsys, "analyze", "--out", "runs/plain", *small, "--no-explain")
    assert res.code == 0, res.err
    assert not (tmp_path / "runs/plain/explain.json").exists()
    assert "layerprobe explain runs/plain   (why the pruned variants fail)" in res.out
    assert "<code>layerprobe explain runs/plain</code>" in (tmp_path / "runs/plain/report.html").read_text(encoding="utf-8")
    assert run_cli(capsys, "explain", "runs/plain", "--no-report").code == 0  # the printed command works as printed
