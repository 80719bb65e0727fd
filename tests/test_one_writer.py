"""Hostile input, round 3 (issue #38): one writer per run directory, whichever commands meet there
(analyze, ingest, explain, report, compare), refused in one line naming the job that holds it; compare
on damaged runs and into a user's folder; names with control characters printed escaped; reports on
damaged, foreign or stale explain.json and compare.json files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from layerprobe.data.schema import CompareFile
from tests.cli_utils import assert_one_line_error, run_cli
from tests.report_runs import make_run

_HOLD = """import sys, time
from layerprobe.data.lock import hold_dir_lock
with hold_dir_lock(sys.argv[1], sys.argv[2], sys.argv[3:]):
    print("held", flush=True)
    time.sleep(300)
"""


@contextmanager
def held_by(directory: Path, job: str, *command: str) -> Iterator[int]:
    """Another process holds `directory`'s lock as `job` (as that job would while it writes); its pid."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory), job, *command], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return make_run(root / "a", seed=1), make_run(root / "b", seed=2)


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_a_second_writer_is_refused_naming_the_first(
    runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """analyze --force (start afresh) while explain works on the run was accepted, and explain then wrote
    an explanation of variants the run no longer held; every writer of a run now holds the same lock."""
    import layerprobe.data.lock

    monkeypatch.setattr(layerprobe.data.lock, "PATIENCE_S", 2.0)  # compare waits this long for another compare
    run = _copy(runs[0], tmp_path / "run")
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"id": "p1", "prompt": "1+1?", "completion": "so \\boxed{2}", "gold": "2"}) + "\n")
    with held_by(run, "explain", "layerprobe", "explain", str(run)) as pid:
        args = ["analyze", "--model", "toy", "--drop", "3,4", "--force", "--limit", "1", "--budgets", "8", "--out", str(run)]
        assert_one_line_error(run_cli(capsys, *args), f"{run} is being written by layerprobe explain (pid {pid}", "explain")
        # a report into the run would replace the one the job writes when it ends; elsewhere it is fine
        assert_one_line_error(run_cli(capsys, "report", str(run)), "layerprobe explain", "--out FILE.html")
        peek = run_cli(capsys, "report", str(run), "--out", str(tmp_path / "peek.html"))
        assert peek.code == 0 and (tmp_path / "peek.html").is_file()
    assert not (run / "report.html").exists()
    with held_by(run, "analyze", "layerprobe", "analyze", "--out", str(run)) as pid:
        res = run_cli(capsys, "explain", str(run), "--device", "cpu")  # refused before a model is loaded
        assert_one_line_error(res, f"is being written by layerprobe analyze (pid {pid}", "explain it when that ends")
    fresh = tmp_path / "fresh"  # an analyze that has just started: its folder holds nothing else yet
    fresh.mkdir()
    with held_by(fresh, "analyze", "layerprobe", "analyze", "--out", str(fresh)) as pid:
        args = ["ingest", str(traces), "--model", "toy", "--no-probes", "--answer-type", "integer", "--out", str(fresh)]
        assert_one_line_error(run_cli(capsys, *args), f"is being written by layerprobe analyze (pid {pid}")
        args = ["heal", "--model", "toy", "--drop", "10,11", "--how", "lora", "--steps", "1", "--out", str(fresh)]
        assert_one_line_error(run_cli(capsys, *args), f"is being written by layerprobe analyze (pid {pid}")
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    with held_by(cmp, "compare") as pid:
        assert_one_line_error(run_cli(capsys, "compare", *map(str, runs), "--out", str(cmp)), f"layerprobe compare (pid {pid}")
    assert run_cli(capsys, "compare", *map(str, runs), "--out", str(cmp)).code == 0  # free again


def test_compare_says_which_run_is_damaged_wherever_its_numbers_appear(
    runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _copy(runs[0], tmp_path / "a")
    lines = (a / "samples.jsonl").read_bytes().split(b"\n")
    (a / "samples.jsonl").write_bytes(b"\n".join(lines[:40]) + b"\njunk\n" + lines[40][:30])  # junk, then cut mid-line
    (a / "sweep.json").mkdir()  # a folder where a file should be
    (a / "layers" / "base.json").write_text('{"schema_version": ')
    out = tmp_path / "cmp"
    res = run_cli(capsys, "compare", str(a), str(runs[1]), "--out", str(out))
    assert res.code == 0, res.err
    damage = CompareFile.model_validate_json((out / "compare.json").read_text()).runs[0].damage
    said = " ".join(damage)
    for fragment in (
        "1 damaged line of samples.jsonl",
        "cut short",
        "sweep.json could not be read (not a file)",
        "layers/base.json",
    ):
        assert fragment in said, (fragment, damage)
    assert "40 of 144 expected traces are present" in said
    assert "a [damaged]" in res.out and "damaged: " in res.out
    assert not CompareFile.model_validate_json((out / "compare.json").read_text()).runs[1].damage
    html = (out / "report.html").read_text()
    assert "Run a is damaged" in html and html.count('class="damaged"') >= 4


def test_compare_keeps_off_a_folder_of_the_users(runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my report")
    (mine / "compare.json").write_text('{"mine": true}')
    args = ["compare", *map(str, runs), "--out", str(mine)]
    assert_one_line_error(run_cli(capsys, *args), "not a layerprobe comparison", "report.html", "--force")
    assert (mine / "report.html").read_text() == "my report" and not (mine / ".lock").exists()
    assert run_cli(capsys, *args, "--force").code == 0 and "my report" not in (mine / "report.html").read_text()
    assert run_cli(capsys, *args).code == 0  # its own comparison of the same runs: written again
    other = _copy(runs[1], tmp_path / "other")
    assert_one_line_error(run_cli(capsys, "compare", str(runs[0]), str(other), "--out", str(mine)), "a comparison of other runs")
    (mine / "notes.txt").write_text("keep me")
    assert_one_line_error(run_cli(capsys, *args), "notes.txt")
    assert run_cli(capsys, *args, "--force").code == 0 and (mine / "notes.txt").read_text() == "keep me"
    assert_one_line_error(run_cli(capsys, *args[:-1], str(runs[0])), "is a run directory")


def test_names_with_control_characters_are_printed_escaped(runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace file or a run directory whose name holds ESC sequences must not act on the terminal."""
    evil = "x\x1b[2J\x1b]0;owned\x07"
    traces = tmp_path / f"{evil}.jsonl"
    traces.write_text(json.dumps({"id": "p1", "prompt": "1+1?", "completion": "so \\boxed{2}", "gold": "2"}) + "\n")
    res = run_cli(
        capsys, "ingest", str(traces), "--model", "toy", "--no-probes", "--answer-type", "integer", "--out", str(tmp_path / "i")
    )
    assert res.code == 0, res.err
    assert "\x1b" not in res.out + res.err and "x\\x1b[2J" in res.out
    run = _copy(runs[0], tmp_path / evil)
    res = run_cli(capsys, "compare", str(run), str(runs[1]), "--out", str(tmp_path / "c"))
    assert res.code == 0, res.err
    assert "\x1b" not in res.out + res.err and "\x07" not in res.out and "x\\x1b[2J" in res.out
    res = run_cli(capsys, "report", str(tmp_path / f"missing{evil}"))
    assert_one_line_error(res, "missing")
    assert "\x1b" not in res.err


@pytest.mark.parametrize(
    "content, said",
    [
        ('{"schema_version": 3, "computed": "2026-', "explain.json is damaged"),
        ('{"schema_version": 9, "findings": []}', "explain.json is from a newer layerprobe (schema_version 9"),
        ('{"schema_version": 3, "variants": {"base": [], "drop-7-8": [7, 8]}}', "explain.json explains other variants"),
    ],
)
def test_report_says_why_explain_json_is_not_shown(
    runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], content, said
) -> None:
    """Damaged, newer and stale are three different things, said where the section would be; before, a
    newer file was rendered as if explain had found nothing, and a damaged one as if explain never ran."""
    run = _copy(runs[0], tmp_path / "run")
    (run / "explain.json").write_text(content)
    res = run_cli(capsys, "report", str(run))
    assert res.code == 0, res.err
    html = (run / "report.html").read_text()
    why = html[html.index('id="why"') :]
    assert said in why and "To test why, run" not in why and "No mechanism is outside the noise" not in html


def test_report_on_a_hostile_compare_json(runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert run_cli(capsys, "compare", *map(str, runs), "--out", str(out)).code == 0
    good = json.loads((out / "compare.json").read_text())
    for mutate, fragment in [
        (lambda d: d["runs"][0].update(label="x" * 80_000), "at most 300 characters"),  # took 28 s to render
        (lambda d: d["runs"][0]["base_accuracy"].update(other=0.5), "name different groups"),  # jinja UndefinedError
        (lambda d: d["runs"][0]["n_problems"].pop("long"), "name different groups"),
        (lambda d: d["cross"][0].update(a="nobody"), "name runs that are not compared"),
        (lambda d: d["runs"][1].update(label=d["runs"][0]["label"]), "the same label"),
        (lambda d: d.update(schema_version=7), "this layerprobe reads versions up to"),
    ]:
        bad = json.loads(json.dumps(good))
        mutate(bad)
        (out / "compare.json").write_text(json.dumps(bad))
        assert_one_line_error(run_cli(capsys, "report", str(out)), "not a valid comparison file", fragment)
