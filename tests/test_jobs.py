"""Every job (analyze, ingest, heal, explain) runs through one skeleton: one writer per output, and a job
killed with SIGKILL half-way resumes, when the same command is run again, to the result of a run that
was never interrupted. One test for all four."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from layerprobe._io import hold_lock
from layerprobe.data import read_samples
from tests.cli_utils import assert_one_line_error, run_cli

ANALYZE = ["--limit", "2", "--budgets", "16,64", "--samples", "2", "--drop", "10,11", "--no-report", "--no-explain"]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "layerprobe.cli.app", *args]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start the command and SIGKILL it as soon as `ready()` says it is half-way."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed; the test needs a longer job"
        assert ready(), "the job did not get half-way in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@dataclass
class JobCase:
    """How to run one job twice (interrupted and not) and what must come out the same."""

    name: str
    command: Callable[[Path, Path], list[str]]  # (work dir, output) -> arguments
    output: Callable[[Path], Path]  # work dir -> what the command writes into (the one writer's directory)
    ready: Callable[[Path], bool]  # output -> half-way
    result: Callable[[Path], object]  # output -> what must be equal


def _samples(out: Path) -> object:
    return sorted((r.key(), r.text, r.correct, r.thinking_tokens) for r in read_samples(out))


def _toy_traces(path: Path, n: int = 260) -> Path:
    rows = []
    for i in range(n):
        a, b = i % 10, (i // 10) % 9 + 1
        rows.append(
            {
                "id": f"p{i}",
                "prompt": f"x = {a} s1 +{b}",
                "completion": f"s1 {a} +{b} = {(a + b) % 10} </think> \\boxed{{ {(a + b) % 10} }}",
                "gold": str((a + b) % 10),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _heal_data(path: Path) -> Path:
    rows = [{"prompt": f"x = {i % 10} s1 +3", "completion": f"s1 {i % 10} +3 = {(i + 3) % 10}"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _explain_result(out: Path) -> object:
    ex = json.loads((out / "explain.json").read_text())
    ex.pop("computed"), ex.pop("timings")
    return ex


CASES = [
    JobCase(
        "analyze",
        lambda w, out: ["analyze", "--out", str(out), *ANALYZE],
        lambda w: w / "run",
        lambda out: _lines(out / "samples.jsonl") >= 8,
        _samples,
    ),
    JobCase(
        "ingest",
        lambda w, out: [
            "ingest",
            str(_toy_traces(w / "t.jsonl")),
            "--model",
            "toy",
            "--answer-type",
            "digit",
            "--out",
            str(out),
            "--no-report",
        ],
        lambda w: w / "run",
        lambda out: 64 <= _lines(out / "samples.jsonl") < 260,
        _samples,
    ),
    JobCase(
        "heal",
        lambda w, out: [
            "heal",
            "--drop",
            "10,11",
            "--how",
            "lora",
            "--data",
            str(_heal_data(w / "d.jsonl")),
            "--steps",
            "40",
            "--save-every",
            "4",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ],
        lambda w: w / "healed",
        lambda out: (out / ".heal" / "state.pt").is_file(),
        lambda out: (out / "model.safetensors").read_bytes(),
    ),
    JobCase(
        "heal-grpo",
        lambda w, out: [
            "heal",
            "--drop",
            "10,11",
            "--how",
            "grpo",
            "--task",
            "toy-short",
            "--limit",
            "8",
            "--steps",
            "10",
            "--save-every",
            "2",
            "--batch-size",
            "8",
            "--group-size",
            "4",
            "--rank",
            "4",
            "--alpha",
            "8",
            "--out",
            str(out),
        ],
        lambda w: w / "healed",
        lambda out: any((out / ".heal" / "grpo").glob("checkpoint-*/trainer_state.json")),
        lambda out: (out / "model.safetensors").read_bytes(),
    ),
    JobCase(
        "explain",
        lambda w, out: ["explain", str(out), "--limit", "2", "--no-report"],
        lambda w: w / "run",
        lambda out: (
            bool(json.loads((out / ".explain" / "state.json").read_text()).get("accuracy"))
            if (out / ".explain" / "state.json").is_file()
            else False
        ),
        _explain_result,
    ),
]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An analyze run to explain (explain's output is the run itself)."""
    out = tmp_path_factory.mktemp("jobs") / "analyzed"
    _run(_cli("analyze", "--out", str(out), *ANALYZE))
    return out


def _workdir(case: JobCase, tmp: Path, analyzed: Path, name: str) -> Path:
    import shutil

    w = tmp / name
    w.mkdir()
    if case.name == "explain":
        shutil.copytree(analyzed, case.output(w))
    return w


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_job_killed_half_way_resumes_to_the_same_result(case: JobCase, tmp_path: Path, analyzed: Path) -> None:
    whole = _workdir(case, tmp_path, analyzed, "whole")
    _run(_cli(*case.command(whole, case.output(whole))))
    killed = _workdir(case, tmp_path, analyzed, "killed")
    cmd = _cli(*case.command(killed, case.output(killed)))
    _kill_when(cmd, lambda: case.ready(case.output(killed)))
    _run(cmd)  # the same command, again
    assert case.result(case.output(killed)) == case.result(case.output(whole))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_second_writer_of_the_same_output_is_refused(case: JobCase, tmp_path: Path, analyzed: Path, capsys) -> None:
    from layerprobe.data.store import LOCK_FILE

    w = _workdir(case, tmp_path, analyzed, "w")
    out = case.output(w)
    out.mkdir(exist_ok=True)
    with hold_lock(out / LOCK_FILE, "held by this test"):  # as another process writing it would hold it (explain too)
        t0 = time.monotonic()
        res = run_cli(capsys, *case.command(w, out))
        assert_one_line_error(res, "being written by another layerprobe job")  # no .lock.json to say which
        assert time.monotonic() - t0 < 60
