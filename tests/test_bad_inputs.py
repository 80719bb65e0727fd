"""Bad input found by fuzzing the CLI: each is a one-line refusal (exit 2) before any work, or, for a
damaged run directory, a counted skip after which the run still resumes and renders."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from layerprobe.data import load_run
from tests.cli_utils import assert_one_line_error, run_cli
from tests.report_runs import make_run

FAST = 5.0  # seconds: "before any work" (no model is loaded, nothing is generated)


def _damage_a_line(run: Path) -> None:
    lines = (run / "samples.jsonl").read_bytes().splitlines(keepends=True)
    lines[3] = b'{"variant": "base", "problem_id": "\xff\xfe not utf-8"}\n'
    (run / "samples.jsonl").write_bytes(b"".join(lines))


def test_non_utf8_line_is_skipped_and_counted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    run = make_run(tmp_path / "runs" / "r1", problems_per_group=1, samples=2, probes=False)
    make_run(tmp_path / "runs" / "r2", problems_per_group=1, samples=2, probes=False)
    n = len(load_run(run).samples)
    _damage_a_line(run)
    loaded = load_run(run)
    assert loaded.skipped_lines == 1 and len(loaded.samples) == n - 1
    assert any("1 damaged line of samples.jsonl skipped" in note for note in loaded.notes)
    res = run_cli(capsys, "runs", str(tmp_path / "runs"))
    assert res.code == 0 and "r1" in res.out and "r2" in res.out and "(1 damaged lines skipped)" in res.out
    res = run_cli(capsys, "report", str(run))
    assert res.code == 0, res.err


def test_analyze_resumes_past_a_damaged_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = (
        "analyze",
        "--out",
        str(out),
        "--limit",
        "1",
        "--budgets",
        "4",
        "--samples",
        "1",
        "--drop",
        "11",
        "--no-probes",
        "--no-report",
    )
    assert run_cli(capsys, *args).code == 0
    _damage_a_line(out)
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    assert "1 damaged line" in res.out  # said, not hidden
    assert len(load_run(out).samples) == 12  # the damaged trace was generated again


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("5", "expected a JSON object"),
        ('"a string"', "expected a JSON object"),
        ('{"id": 1, "question": "q", "answer": "A", "choices": 5}', "choices must be a list"),
        ('{"id": 1, "question": null, "answer": "4"}', "missing field(s) question"),
        ('{"id": 1, "question": "q", "answer": "two"}', "grades integer answers"),
        ('{"id": 1, "question": "q", "answer": "4.0"}', "grades integer answers"),
        ('{"id": [1], "question": "q", "answer": "4"}', "id must be a string or a number"),
    ],
)
def test_task_file_is_checked_whole_before_loading(capsys, tmp_path, line, fragment) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": 0, "question": "3 + 5?", "answer": "8"}\n' + line + "\n")
    t0 = time.perf_counter()
    res = run_cli(
        capsys, "analyze", "--model", "smollm2-135m", "--task", "gsm8k", "--task-file", str(f), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(res, "line 2", fragment)
    assert time.perf_counter() - t0 < FAST and not (tmp_path / "o").exists()


def test_task_file_not_utf8(capsys, tmp_path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"id": 0, "question": "\xff", "answer": "8"}\n')
    assert_one_line_error(
        run_cli(capsys, "analyze", "--model", "smollm2-135m", "--task", "gsm8k", "--task-file", str(f)), "not UTF-8"
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--samples", str(10**12)), "--samples"),
        (("--limit", str(10**9)), "--limit"),
        (("--limit", "500"), "at most 200 problems per group"),
        (("--budgets", str(10**9)), "--budgets"),
    ],
)
def test_huge_counts_are_refused_at_once(capsys, tmp_path, args, fragment) -> None:
    t0 = time.perf_counter()
    assert_one_line_error(run_cli(capsys, "analyze", "--out", str(tmp_path / "o"), *args), fragment)
    assert time.perf_counter() - t0 < FAST and not (tmp_path / "o").exists()


def test_analyze_error_has_no_blank_line(capsys) -> None:
    res = run_cli(capsys, "analyze", "--task", "bogus")
    assert res.err.startswith("error: ")


def test_provenance_that_disagrees_with_the_checkpoint(capsys, tiny_checkpoint_dir, tmp_path) -> None:
    bad = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_dir, bad)
    n = json.loads((bad / "config.json").read_text())["num_hidden_layers"]
    (bad / "layerprobe.json").write_text(
        json.dumps({"name": "x", "source": "x", "n_layers_original": n, "n_layers": 2, "layer_map": [0, 1]})
    )
    res = run_cli(capsys, "prune", "--model", str(bad), "--drop", "1", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, "disagrees with the checkpoint", f"has {n} layers")
    assert not (tmp_path / "o").exists()
    (bad / "layerprobe.json").write_text("{garbage")
    assert_one_line_error(run_cli(capsys, "inspect", "--model", str(bad)), "not a valid layerprobe.json")
    (bad / "layerprobe.json").write_text("{}")
    assert_one_line_error(run_cli(capsys, "inspect", "--model", str(bad)), "not a valid layerprobe.json")


def test_report_survives_surrogates_control_characters_and_bad_metrics(capsys, tmp_path) -> None:
    run = make_run(tmp_path / "r", problems_per_group=1, samples=2, probes=False)
    lines = (run / "samples.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for r in recs:
        if r["variant"] != "base":
            r["thinking_text"] = "lone \ud800 surrogate, NUL \x00 and ESC \x1b[31m here " + r["thinking_text"]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "metrics.json").write_text(
        json.dumps(
            {"schema_version": 2, "kind": "layerprobe-metrics", "computed": 5, "n_samples": "many", "partial": [], "variants": 7}
        )
    )
    res = run_cli(capsys, "report", str(run))
    assert res.code == 0, res.err
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "\x00" not in html and "\x1b" not in html and "\\x00" in html and "\\x1b[31m" in html
    assert "lone \ufffd surrogate" in html
    assert "recomputed" in html


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--budget-task", "bogus"), "--budget-task bogus"),
        (("--json", "{tmp}"), "is a directory"),
    ],
)
def test_toy_eval_refuses_before_work(capsys, tmp_path, args, fragment) -> None:
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    t0 = time.perf_counter()
    assert_one_line_error(run_cli(capsys, "toy", "eval", "--n", "1", "--samples", "0", *args), fragment)
    assert time.perf_counter() - t0 < FAST


def test_influence_json_under_a_file_is_refused_before_scoring(capsys, tiny_checkpoint_dir, tmp_path) -> None:
    (tmp_path / "file").write_text("")
    res = run_cli(capsys, "influence", "--model", str(tiny_checkpoint_dir), "--json", str(tmp_path / "file" / "x.json"))
    assert_one_line_error(res, "--json", "is a file, not a directory")


def test_killed_run_reads_interrupted_everywhere(capsys, tmp_path) -> None:
    run = make_run(tmp_path / "r", problems_per_group=1, samples=2, probes=False, status="running", write_metrics_file=False)
    info = json.loads((run / "run.json").read_text())
    info["pid"], info["host"] = 2**22 + 12345, __import__("socket").gethostname()  # a process that does not exist
    (run / "run.json").write_text(json.dumps(info))
    assert load_run(run).status == "interrupted"
    assert run_cli(capsys, "report", str(run)).code == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<code>interrupted</code>" in html and "<code>running</code>" not in html
    assert "interrupted" in run_cli(capsys, "runs", str(tmp_path)).out


def test_deleted_run_json_resumes_with_force(capsys, tmp_path) -> None:
    out = tmp_path / "run"
    args = (
        "analyze",
        "--out",
        str(out),
        "--limit",
        "1",
        "--budgets",
        "4",
        "--samples",
        "1",
        "--drop",
        "11",
        "--no-probes",
        "--no-report",
    )
    assert run_cli(capsys, *args).code == 0
    before = (out / "samples.jsonl").read_bytes()
    (out / "run.json").unlink()
    assert_one_line_error(run_cli(capsys, *args), "no run.json", "--force")
    res = run_cli(capsys, *args, "--force")
    assert res.code == 0, res.err
    assert (out / "samples.jsonl").read_bytes() == before  # every trace was kept, none generated again
