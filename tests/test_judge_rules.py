"""`layerprobe judge` without a model server: the rule that reads a count, taxonomies as files, how a
reply is classified, the summary's statistics on records written by hand, and the client's retries and
refusals against a small scripted HTTP server (real HTTP through the real openai client). The judge
against a real model server is in tests/test_judge_server.py."""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import spearmanr

from layerprobe.data.judge import CALLS_FILE, JUDGE_DIR, STATE_FILE, CallLog, compute_judge, read_calls, read_state, select_traces
from layerprobe.data.reader import load_run
from layerprobe.data.schema import JudgeCall, JudgeState
from layerprobe.data.store import write_model
from layerprobe.errors import UserError
from layerprobe.judge.client import JudgeClient, display_endpoint
from layerprobe.judge.taxonomy import ReadRule, load_taxonomy, read_count
from tests.report_runs import make_run

pytest.importorskip("openai")

# ------------------------------------------------------------------------------------ reading a count


def test_read_count_takes_the_rule_s_match() -> None:
    last, first, only = ReadRule(), ReadRule(take="first"), ReadRule(take="only")
    reply = "At first I thought <count>2</count>, but recounting: <count> 3 </count>"
    assert read_count(reply, last).count == 3
    assert read_count(reply, first).count == 2
    assert read_count(reply, only).count is None and "several different counts" in read_count(reply, only).reason
    assert read_count("<count>4</count> ... <count>4</count>", only).count == 4
    assert read_count("<count>0</count>", last).count == 0  # a real zero is a count


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (None, "empty reply"),
        ("   ", "empty reply"),
        ("There are 3 verification steps.", "no match"),
        ("<count>three</count>", "no match"),
        ("<count>99999999999</count>", "too large"),
    ],
)
def test_a_reply_without_a_count_is_not_a_zero(reply: str | None, why: str) -> None:
    reading = read_count(reply, ReadRule())
    assert reading.count is None
    assert why in reading.reason


def test_a_user_rule_that_captures_a_word_is_unparsable_not_a_crash() -> None:
    rule = ReadRule(pattern=r"answer: (\w+)")
    assert read_count("answer: 7", rule).count == 7
    reading = read_count("answer: seven", rule)
    assert reading.count is None and "not a whole number" in reading.reason
    with pytest.raises(ValueError, match="exactly one group"):
        ReadRule(pattern=r"(\d+) of (\d+)")
    with pytest.raises(ValueError, match="not a regular expression"):
        ReadRule(pattern=r"<count>(\d+")


# ------------------------------------------------------------------------------------ taxonomies


def test_the_shipped_taxonomies_load_and_show_problem_and_trace() -> None:
    study, source = load_taxonomy("study")
    assert source == "shipped"
    assert list(study.titles()) == ["verification", "backtracking", "subgoals"]
    four, _ = load_taxonomy("four")
    assert list(four.titles()) == ["verification", "backtracking", "subgoals", "backward-chaining"]
    for tax in (study, four):
        assert tax.uses("problem") and not tax.uses("gold")
        for b in tax.titles():
            msgs = tax.messages(b, "THE TRACE", "THE PROBLEM")
            assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
            assert "THE TRACE" in msgs[-1]["content"] and "THE PROBLEM" in msgs[-1]["content"]
            assert "{" + "trace}" not in msgs[-1]["content"]
            assert "<count>" in msgs[-1]["content"]
    assert study.sha1() != four.sha1() and study.sha1() == load_taxonomy("study")[0].sha1()


def test_placeholders_are_replaced_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        'name = "t"\n[[behaviour]]\nname = "b"\nprompt = "P={problem} T={trace} G={gold} keep {braces} \\\\boxed{x}"\n'
    )
    tax, source = load_taxonomy(str(path))
    assert source == str(path)
    text = tax.messages("b", trace="a {problem} inside the trace", problem="Q", gold="42")[-1]["content"]
    assert text == r"P=Q T=a {problem} inside the trace G=42 keep {braces} \boxed{x}"
    assert tax.messages("b", "t")[0]["role"] == "user"  # no system message unless the file gives one


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('name = "t"\n[[behaviour]]\nname = "b"\nprompt = "count in {response}"\n', "write {trace} where it has {response}"),
        (
            'name = "t"\n[[behaviour]]\nname = "b"\nprompt = "{trace}"\n[[behaviour]]\nname = "b"\nprompt = "{trace}"\n',
            "defined twice",
        ),
        ('name = "t"\n[[behaviour]]\nname = "b/../c"\nprompt = "{trace}"\n', "not a valid name"),
        ('name = "t"\n[[behaviour]]\nname = "total"\nprompt = "{trace}"\n', "reserved"),
        ('name = "t"\n[read]\npattern = "(a)(b)"\n[[behaviour]]\nname = "b"\nprompt = "{trace}"\n', "exactly one group"),
        ('name = "t"\nbehaviour = []\n', "behaviour"),
        ('name = "t"\ncolour = 1\n[[behaviour]]\nname = "b"\nprompt = "{trace}"\n', "colour"),
        ('name = "t"\n[[behaviour]\n', "not valid TOML"),
    ],
)
def test_a_bad_taxonomy_file_is_one_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        load_taxonomy(str(path))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_json_taxonomy_and_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "j", "behaviour": [{"name": "b", "prompt": "{trace}"}], "read": {"take": "only"}}))
    tax, _ = load_taxonomy(str(path))
    assert tax.rule("b").take == "only"
    with pytest.raises(UserError, match="neither a shipped taxonomy"):
        load_taxonomy(str(tmp_path / "nope.toml"))


# ------------------------------------------------------------------------------------ classifying a reply


def _completion(content: str | None, finish: str = "stop", refusal: str | None = None) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "served-name",
            "choices": [
                {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content, "refusal": refusal}}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }
    )


def test_classify_a_reply() -> None:
    client = JudgeClient("http://127.0.0.1:9/v1", "m", max_tokens=7)
    rule = ReadRule()
    ok = client.classify(_completion("so <count>2</count>"), rule)
    assert (ok.outcome, ok.count, ok.served_model, ok.prompt_tokens, ok.completion_tokens) == ("count", 2, "served-name", 11, 3)
    cut = client.classify(_completion("so <count>2</count> and", finish="length"), rule)
    assert cut.outcome == "unparsable" and cut.count is None and "max_tokens (7)" in cut.reason
    bare = client.classify(_completion("two of them"), rule)
    assert bare.outcome == "unparsable" and bare.reply == "two of them"
    assert client.classify(_completion(None, refusal="I can't help"), rule).outcome == "refused"
    assert client.classify(_completion("", finish="content_filter"), rule).outcome == "refused"
    client.close()


def test_the_stored_endpoint_drops_what_may_hold_a_key() -> None:
    assert display_endpoint("https://api.example.com:8443/v1/?key=sk-123#x") == "https://api.example.com:8443/v1"
    with pytest.raises(UserError, match="environment variable"):
        JudgeClient("https://user:sk-123@api.example.com/v1", "m")
    with pytest.raises(UserError, match="http"):
        JudgeClient("ftp://host/v1", "m")


# ------------------------------------------------------------------------------------ retries and refusals over HTTP


class Scripted:
    """A small HTTP server that answers each POST to /v1/chat/completions with the next scripted
    (status, headers, body: a JSON value, or bytes sent as they are), and GET /v1/models with one model;
    it records every request."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]], models: list[str] | None = None) -> None:
        self.script, self.requests = list(script), []  # type: ignore[var-annotated]
        self.models = ["judge-1"] if models is None else models
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                return None

            def _send(self, status: int, headers: dict[str, str], body: dict[str, Any] | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()  # bytes: sent as they are
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                self._send(200, {}, {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, reply = outer.script.pop(0) if outer.script else (200, {}, _reply("<count>1</count>"))
                self._send(status, headers, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(content: str) -> dict[str, Any]:
    return {
        "id": "r",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-1",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    return (status, headers or {}, {"error": {"message": message, "type": "x", "code": None}})


def test_rate_limits_and_server_errors_are_retried_with_backoff() -> None:
    srv = Scripted([_error(429, "slow down", {"retry-after-ms": "300"}), _error(503, "busy", {"retry-after-ms": "300"})])
    client = JudgeClient(srv.url, "judge-1", retries=3, timeout=10)
    t0 = time.perf_counter()
    answer = client.ask([{"role": "user", "content": "q"}], ReadRule())
    took = time.perf_counter() - t0
    assert (answer.outcome, answer.count, answer.attempts) == ("count", 1, 3)
    assert took >= 0.6  # it waited as the server asked, twice
    posts = [r for r in srv.requests if r[0] == "POST"]
    assert len(posts) == 3 and all(p[3]["messages"] == [{"role": "user", "content": "q"}] for p in posts)
    srv.close()
    client.close()


def test_failures_are_classified_and_never_counted() -> None:
    srv = Scripted(
        [
            _error(500, "boom", {"retry-after-ms": "10"}),
            _error(500, "boom", {"retry-after-ms": "10"}),
            _error(400, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."),
            _error(400, "bad temperature"),
            _error(401, "Incorrect API key provided: sk-secret-123"),
        ]
    )
    client = JudgeClient(srv.url, "judge-1", retries=1, timeout=10)
    rule = ReadRule()
    err = client.ask([{"role": "user", "content": "q"}], rule)
    assert (err.outcome, err.count, err.retryable, err.attempts, err.status_code) == ("error", None, True, 2, 500)
    long = client.ask([{"role": "user", "content": "q"}], rule)
    assert (long.outcome, long.retryable) == ("too_long", False)
    bad = client.ask([{"role": "user", "content": "q"}], rule)
    assert (bad.outcome, bad.retryable, bad.fatal) == ("error", False, "")
    key = client.ask([{"role": "user", "content": "q"}], rule)
    assert key.outcome == "error" and "refused the key" in key.fatal
    srv.close()
    client.close()


def test_the_key_is_sent_and_redacted_from_what_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-123")
    srv = Scripted([_error(400, "you sent sk-secret-123, which is odd"), (200, {}, _reply("sk-secret-123 <count>2</count>"))])
    client = JudgeClient(srv.url, "judge-1", key_env="JUDGE_TEST_KEY", retries=0)
    a = client.ask([{"role": "user", "content": "q"}], ReadRule())
    b = client.ask([{"role": "user", "content": "q"}], ReadRule())
    assert "sk-secret-123" not in a.reason and "<key>" in a.reason
    assert b.count == 2 and b.reply is not None and "sk-secret-123" not in b.reply
    assert srv.requests[0][2]["authorization"] == "Bearer sk-secret-123"
    srv.close()
    client.close()


def test_check_names_what_is_wrong_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = Scripted([_error(404, "model 'gpt-x' not found")], models=["judge-1", "judge-2"])
    with pytest.raises(UserError, match="serves no such model; it serves: judge-1, judge-2"):
        JudgeClient(srv.url, "gpt-x", retries=0).check()
    srv.close()
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    srv = Scripted([_error(401, "missing key")])
    with pytest.raises(UserError, match=r"refused the request without a key \(\$NO_SUCH_KEY_VAR is not set\)"):
        JudgeClient(srv.url, "judge-1", key_env="NO_SUCH_KEY_VAR", retries=0).check()
    srv.close()
    with pytest.raises(UserError, match="no answer"):
        JudgeClient("http://127.0.0.1:9/v1", "judge-1", retries=0, timeout=2).check()


# ------------------------------------------------------------------------------------ the summary


def _state(selection: dict[str, Any] | None = None, behaviours: tuple[str, ...] = ("a", "b")) -> JudgeState:
    return JudgeState(
        settings={"endpoint": "http://x/v1", "judge_model": "j", "text": "thinking", "temperature": 0.0, "max_tokens": 9},
        selection=selection or {"first_sample": False, "budget": None},
        taxonomy={"name": "t", "behaviour": [{"name": b, "prompt": "{trace}"} for b in behaviours]},
        status="complete",
    )


def _call(r: Any, behaviour: str, outcome: str, count: int | None, sha: str | None = None) -> JudgeCall:
    from layerprobe.data.judge import text_sha

    return JudgeCall(
        variant=r.variant,
        problem_id=r.problem_id,
        mode=r.mode,
        budget=r.budget,
        sample=r.sample,
        behaviour=behaviour,
        outcome=outcome,  # type: ignore[arg-type]
        count=count,
        judge_model="j",
        request="r",
        trace_sha=sha or text_sha(r.thinking_text),
        prompt_tokens=10,
        completion_tokens=2,
    )


def test_summary_means_paired_differences_and_agreement(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long", "short"), problems_per_group=3, budgets=(16,), samples=2, probes=False)
    run = load_run(run_dir)
    (run_dir / JUDGE_DIR).mkdir()
    write_model(run_dir / JUDGE_DIR / STATE_FILE, _state())
    log = CallLog(run_dir)
    counts: dict[tuple, int] = {}
    for i, r in enumerate(run.samples):
        # behaviour a: a count that differs by trace; every 5th trace's reply is unparsable (missing)
        if i % 5 == 4:
            log.append(_call(r, "a", "unparsable", None))
        else:
            counts[r.key()] = (i * 7) % 4 + (2 if r.variant != run.base else 0)
            log.append(_call(r, "a", "count", counts[r.key()]))
        log.append(_call(r, "b", "timeout" if i == 0 else "count", None if i == 0 else 1))
    log.close()
    j = compute_judge(run_dir, run.info, run.samples)
    assert j is not None and j.n_selected == len(run.samples) and j.expected_calls == 2 * len(run.samples)
    # means: per problem, then over problems, counts only (the unparsable ones are left out, not zeros)
    for v in (run.base, "drop-3"):
        per: dict[str, list[int]] = {}
        for r in run.samples:
            if r.variant == v and r.key() in counts:
                per.setdefault(r.problem_id, []).append(counts[r.key()])
        want = statistics.fmean(statistics.fmean(x) for x in per.values())
        stat = next(s for s in j.stats if (s.variant, s.group, s.behaviour) == (v, "all", "a"))
        assert stat.mean == pytest.approx(want)
        assert stat.n_counted == sum(len(x) for x in per.values())
        assert stat.missing == {"unparsable": stat.n_traces - stat.n_counted}
        assert stat.ci[0] is not None and stat.ci[0] <= want <= stat.ci[1]
    assert j.outcomes[run.base]["timeout"] == 1
    # paired: per problem the mean over the traces both counted, then the mean difference
    by = {r.key(): r for r in run.samples}
    diffs: dict[str, list[tuple[int, int]]] = {}
    for k, r in by.items():
        if r.variant == run.base:
            other = ("drop-3", *k[1:])
            if k in counts and other in counts:
                diffs.setdefault(r.problem_id, []).append((counts[k], counts[other]))
    want_diff = statistics.fmean(statistics.fmean(b for _, b in p) - statistics.fmean(a for a, _ in p) for p in diffs.values())
    comp = next(c for c in j.comparisons if (c.group, c.metric) == ("all", "a"))
    assert comp.diff == pytest.approx(want_diff) and comp.n_pairs == len(diffs)
    assert comp.diff > 0 and comp.ci_low is not None and comp.ci_low > 0  # the variant's counts are 2 higher by construction
    # agreement: Spearman over the counted traces against the reflection words, as scipy computes it
    xs = [counts[r.key()] for r in run.samples if r.key() in counts]
    ys = [r.reflections.total for r in run.samples if r.key() in counts]
    agree = next(a for a in j.agreement if (a.variant, a.behaviour) == ("all", "a"))
    assert agree.n == len(xs)
    rho = spearmanr(xs, ys).statistic
    assert (agree.spearman is None and math.isnan(rho)) or agree.spearman == pytest.approx(rho)
    assert j.prompt_tokens == 10 * 2 * len(run.samples) and j.calls == 2 * len(run.samples)


def test_summary_leaves_out_stale_records_and_follows_the_selection(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=2, budgets=(16, 32), samples=2, probes=False)
    run = load_run(run_dir)
    (run_dir / JUDGE_DIR).mkdir()
    sel = {"first_sample": True, "budget": "max"}
    write_model(run_dir / JUDGE_DIR / STATE_FILE, _state(sel, ("a",)))
    chosen = select_traces(run.samples, sel)
    assert chosen and all(r.sample == 0 and r.budget == 32 for r in chosen)
    assert len(chosen) == len([r for r in run.samples if r.sample == 0 and r.budget == 32])
    log = CallLog(run_dir)
    log.append(_call(chosen[0], "a", "count", 5, sha="0" * 40))  # written for another text of the trace
    for r in chosen[1:]:
        log.append(_call(r, "a", "count", 1))
    log.close()
    j = compute_judge(run_dir, run.info, run.samples)
    assert j is not None and j.n_selected == len(chosen)
    assert any("earlier text" in n for n in j.notes)
    assert sum(o.get("not asked", 0) for o in j.outcomes.values()) == 1
    assert any("judged so far" in n for n in j.notes)


def test_the_call_log_survives_a_cut_line_and_damage(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=1, budgets=(16,), samples=1, probes=False)
    run = load_run(run_dir)
    log = CallLog(run_dir)
    log.append(_call(run.samples[0], "a", "timeout", None))
    log.append(_call(run.samples[0], "a", "count", 3))  # asked again: the later line supersedes
    log.close()
    path = run_dir / JUDGE_DIR / CALLS_FILE
    with open(path, "ab") as fh:
        fh.write(b"not json\n" + b'{"variant": "base", "cut sh')
    read = read_calls(run_dir)
    assert (read.lines, read.damaged) == (2, 1)
    assert [r.count for r in read.records.values()] == [3]
    CallLog(run_dir).close()  # opening again removes the cut line
    assert path.read_bytes().endswith(b"not json\n")


# ------------------------------------------------------------------------------------ the job against a scripted server

TINY = 'name = "tiny"\n[[behaviour]]\nname = "b"\nprompt = "count in {trace}"\n'


def _judge(run_dir: Path, url: str, tax: Path, **kw: Any) -> Any:
    from layerprobe.jobs.judge import Judge, JudgeSettings

    settings = JudgeSettings(run_dir, url, "judge-1", taxonomy=str(tax), retries=0, timeout=10, **kw)
    return Judge(settings)


def test_a_judge_that_stops_answering_stops_the_job_and_a_rerun_asks_only_what_is_missing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=3, budgets=(16,), samples=1, probes=False)
    n = len(load_run(run_dir).samples)
    assert n == 12
    tax = tmp_path / "tiny.toml"
    tax.write_text(TINY)
    down = Scripted([(200, {}, _reply("ok"))] + [_error(503, "overloaded", {"retry-after-ms": "10"})] * 50)
    with pytest.raises(UserError, match=r"stopped answering \(4 calls in a row failed, the last: 503: overloaded\)"):
        _judge(run_dir, down.url, tax, concurrency=1).run()
    down.close()
    read = read_calls(run_dir)
    assert read.lines == 4 and all(r.outcome == "error" and r.retryable and r.count is None for r in read.records.values())
    j = load_run(run_dir).extras["judge.json"]
    assert j.status == "failed" and sum(o.get("error", 0) for o in j.outcomes.values()) == 4
    assert sum(o.get("not asked", 0) for o in j.outcomes.values()) == n - 4
    up = Scripted([])  # every call answered <count>1</count>
    _judge(run_dir, up.url, tax, concurrency=3).run()
    posts = [r for r in up.requests if r[0] == "POST"]
    assert len(posts) == 1 + n  # the check before any work, then each (trace, behaviour) once
    up.close()
    read = read_calls(run_dir)
    assert read.lines == 4 + n and all(r.outcome == "count" and r.count == 1 for r in read.records.values())
    assert load_run(run_dir).extras["judge.json"].status == "complete"


def test_a_refused_key_mid_run_stops_at_once(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=3, budgets=(16,), samples=0, probes=False)
    tax = tmp_path / "tiny.toml"
    tax.write_text(TINY)
    srv = Scripted([(200, {}, _reply("ok")), _error(401, "key revoked")] + [(200, {}, _reply("<count>2</count>"))] * 10)
    with pytest.raises(UserError, match="refused the key"):
        _judge(run_dir, srv.url, tax, concurrency=1).run()
    srv.close()
    assert read_calls(run_dir).lines == 1


def test_identical_requests_share_one_call(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=2, budgets=(16,), samples=0, probes=False)
    tax = tmp_path / "fixed.toml"
    tax.write_text('name = "fixed"\n[[behaviour]]\nname = "b"\nprompt = "the same question for every {trace}"\n')
    run = load_run(run_dir)
    # every trace gets the same text: one request, asked once, its reply shared
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    for row in rows:
        row["text"] = "the same trace"
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv = Scripted([])
    job = _judge(run_dir, srv.url, tax, concurrency=2)
    job.run()
    srv.close()
    assert len([r for r in srv.requests if r[0] == "POST"]) == 2  # the check, and one call
    read = read_calls(run_dir)
    assert read.lines == len(run.samples) and read.calls == 1
    shared = [r for r in read.records.values() if r.reused_from is not None]
    assert len(shared) == len(run.samples) - 1 and all(r.count == 1 and r.attempts == 0 for r in shared)
    assert job.session.calls == 1 and job.session.reused == len(run.samples) - 1


# ------------------------------------------------------------------------------------ the command line


def test_bad_flags_are_one_line_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cli_utils import assert_one_line_error, run_cli

    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=1, budgets=(16,), samples=0, probes=False)
    base = ["judge", str(run_dir), "--endpoint", "http://127.0.0.1:9/v1", "--judge-model", "m"]
    assert_one_line_error(run_cli(capsys, *base, "--concurrency", "0"), "--concurrency 0")
    assert_one_line_error(run_cli(capsys, *base, "--text", "answer"), "--text answer", "response, thinking")
    assert_one_line_error(run_cli(capsys, *base, "--budget", "big"), "--budget big", "max")
    assert_one_line_error(run_cli(capsys, *base, "--budget", "99"), "no trace at budget 99", "16")
    assert_one_line_error(run_cli(capsys, *base, "--taxonomy", "five"), "--taxonomy five", "study, four")
    assert_one_line_error(run_cli(capsys, "judge", str(tmp_path), "--endpoint", "http://x/v1", "--judge-model", "m"), "run.json")
    assert_one_line_error(run_cli(capsys, "judge", str(run_dir), "--judge-model", "m"), "--endpoint")
    assert not (run_dir / JUDGE_DIR).exists()


def test_analyze_checks_the_judge_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cli_utils import assert_one_line_error, run_cli

    out = tmp_path / "run"
    res = run_cli(capsys, "analyze", "--out", str(out), "--judge-endpoint", "http://127.0.0.1:9/v1")
    assert_one_line_error(res, "--judge-endpoint and --judge-model go together")
    res = run_cli(capsys, "analyze", "--out", str(out), "--judge-endpoint", "http://127.0.0.1:9/v1", "--judge-model", "m")
    assert_one_line_error(res, "--judge-endpoint http://127.0.0.1:9/v1", "no answer")
    assert not out.exists()


def test_the_report_names_the_judge_and_counts_the_failed_calls(tmp_path: Path) -> None:
    import html as htmllib
    import re

    from layerprobe.report import render_report
    from layerprobe.report.narrative import resolve
    from layerprobe.report.numbers import fmt

    run_dir = make_run(tmp_path / "run", groups=("long", "short"), problems_per_group=3, budgets=(16,), samples=1, probes=False)
    run = load_run(run_dir)
    (run_dir / JUDGE_DIR).mkdir()
    write_model(run_dir / JUDGE_DIR / STATE_FILE, _state())
    log = CallLog(run_dir)
    outcomes = ["count", "count", "unparsable", "count", "error", "count", "too_long"]
    for i, r in enumerate(run.samples):
        o = outcomes[i % len(outcomes)]
        log.append(_call(r, "a", o, i % 3 if o == "count" else None))
        log.append(_call(r, "b", "count", 1 + i % 2))
    log.close()
    page = render_report(run_dir).read_text(encoding="utf-8")
    start = page.index("Behaviours counted by a judge model")
    part = page[start : page.index("<h3>Loops</h3>", start)]
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", part))
    n_missing = {
        o: sum(1 for i in range(len(run.samples)) if outcomes[i % len(outcomes)] == o)
        for o in ("unparsable", "error", "too_long")
    }
    assert "the judge j at" in text and "http://x/v1" in text
    assert f"{n_missing['unparsable']} unparsable replies" in text and f"{n_missing['error']} errors" in text
    assert f"{n_missing['too_long']} too long for the judge's context" in text
    assert (
        f"{2 * len(run.samples) - sum(n_missing.values())} of {2 * len(run.samples)} (trace, behaviour) pairs have a count"
        in text
    )
    # every number shown is the value in judge.json it names
    shown = re.findall(r'<span class="num" data-kind="([^"]+)" data-src="([^"]+)">([^<]*)</span>', part)
    assert len(shown) > 30
    judged = load_run(run_dir)
    for kind, src, value in shown:
        path = json.loads(htmllib.unescape(src))
        assert path[0] == "judge.json"
        assert fmt(resolve(judged, path), kind) == htmllib.unescape(value), path


def test_force_sets_an_earlier_judging_aside(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=2, budgets=(16,), samples=0, probes=False)
    tax = tmp_path / "tiny.toml"
    tax.write_text(TINY)
    srv = Scripted([])
    _judge(run_dir, srv.url, tax).run()
    first = (run_dir / JUDGE_DIR / CALLS_FILE).read_bytes()
    with pytest.raises(UserError, match=r"judged with other settings \(max_tokens\)"):
        _judge(run_dir, srv.url, tax, max_tokens=7).run()
    assert (run_dir / JUDGE_DIR / CALLS_FILE).read_bytes() == first  # refused before anything was written
    _judge(run_dir, srv.url, tax, max_tokens=7, force=True).run()
    srv.close()
    aside = [p for p in run_dir.glob("judge.*.bak") if p.is_dir()]
    assert len(aside) == 1 and (aside[0] / CALLS_FILE).read_bytes() == first
    assert len(list(run_dir.glob("judge.json.*.bak"))) == 1
    assert read_state(run_dir) is not None and read_state(run_dir).settings["max_tokens"] == 7  # type: ignore[union-attr]
    assert read_calls(run_dir).lines == 4
