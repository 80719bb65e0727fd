"""`layerprobe judge` tried the way a hostile or careless user (or a misbehaving endpoint) would: replies
that are not chat completions, usage numbers out of range, endpoints that are not URLs, a run held by
another job, taxonomy files that are not small text, flags that go with others. Against the small
scripted HTTP server of tests/test_judge_rules.py (real HTTP through the real openai client)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from layerprobe.data.judge import read_calls
from layerprobe.judge.client import JudgeClient
from layerprobe.judge.taxonomy import ReadRule
from tests.report_runs import make_run
from tests.test_judge_rules import TINY, Scripted, _reply

pytest.importorskip("openai")


def _tiny_run(tmp_path: Path, problems: int = 2) -> Path:
    return make_run(tmp_path / "run", groups=("long",), problems_per_group=problems, budgets=(16,), samples=0, probes=False)


def _taxonomy(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def _run_bounded(job: Any, seconds: float = 120) -> BaseException | None:
    """job.run() in a thread; fails the test when it has not ended after `seconds` (a hang)."""
    outcome: dict[str, BaseException | None] = {"exc": None}

    def target() -> None:
        try:
            job.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the judge job did not end within {seconds} s"
    return outcome["exc"]


def _job(run_dir: Path, url: str, tax: Path, **kw: Any) -> Any:
    from layerprobe.jobs.judge import Judge, JudgeSettings

    return Judge(JudgeSettings(run_dir, url, "judge-1", taxonomy=str(tax), retries=0, timeout=10, **kw))


def test_a_reply_that_is_not_a_chat_completion_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """A 200 whose body is not JSON (a proxy's HTML page) raised inside a worker thread, which died, and
    the job waited for its answer for ever."""
    page = (200, {}, b"<html>502 Bad Gateway</html>")
    srv = Scripted([page])
    client = JudgeClient(srv.url, "judge-1", retries=0, timeout=10)
    a = client.ask([{"role": "user", "content": "q"}], ReadRule())
    assert (a.outcome, a.count, a.attempts, a.retryable) == ("error", None, 1, True) and "could not be read" in a.reason
    client.close()
    srv.close()
    run_dir = _tiny_run(tmp_path)
    srv = Scripted([(200, {}, _reply("ok"))] + [page] * 2)  # the check before any work passes, then two pages
    exc = _run_bounded(_job(run_dir, srv.url, _taxonomy(tmp_path), concurrency=2))
    srv.close()
    assert exc is None, exc
    recs = list(read_calls(run_dir).records.values())
    assert len(recs) == 4 and sorted(r.outcome for r in recs) == ["count", "count", "error", "error"]
    assert all(r.count is None for r in recs if r.outcome == "error")


def test_usage_and_names_out_of_range_are_not_stored_as_numbers(tmp_path: Path) -> None:
    """An endpoint that reported 10^30 prompt tokens or -5 reply tokens (or a number for the model's
    name) ended the job in an internal error: the record could not be written."""
    odd = _reply("<count>3</count>")
    odd["usage"] = {"prompt_tokens": 10**30, "completion_tokens": -5, "total_tokens": 1}
    odd["model"], odd["id"] = 42, ["not", "an", "id"]
    odd["choices"][0]["finish_reason"] = {"why": "?"}
    run_dir = _tiny_run(tmp_path, problems=1)
    srv = Scripted([(200, {}, _reply("ok"))] + [(200, {}, odd)] * 2)
    exc = _run_bounded(_job(run_dir, srv.url, _taxonomy(tmp_path), concurrency=1))
    srv.close()
    assert exc is None, exc
    recs = list(read_calls(run_dir).records.values())
    assert len(recs) == 2
    for r in recs:
        assert (r.outcome, r.count, r.prompt_tokens, r.completion_tokens) == ("count", 3, None, None)
        assert (r.served_model, r.reply_id, r.finish_reason) == (None, None, None)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("http://[::1/v1", "not a URL"),  # an unclosed IPv6 address: an internal error before
        ("http://127.0.0.1:99999/v1", "not a URL"),  # a port out of range: an internal error before
        ("http://127.0.0.1:0/v1", "expected an http(s) URL"),
        ("http://127.0.0.1:1/\x1b[31mv1", "no spaces or control characters"),  # an internal error before
        ("http://127.0.0.1:1/ v1", "no spaces or control characters"),
        # a key in the query was written into judge/state.json with the command (and the client appends
        # the API's paths after the query, so the calls go nowhere)
        ("http://127.0.0.1:1/v1?api_key=sk-hidden-42", "without a ?query"),
        ("http://127.0.0.1:1/v1#sk-hidden-42", "without a ?query"),
    ],
)
def test_an_endpoint_that_is_not_a_usable_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, fragment: str
) -> None:
    from tests.cli_utils import assert_one_line_error, run_cli

    run_dir = _tiny_run(tmp_path, problems=1)
    res = run_cli(capsys, "judge", str(run_dir), "--endpoint", url, "--judge-model", "m", "--taxonomy", str(_taxonomy(tmp_path)))
    assert_one_line_error(res, "--endpoint", fragment)
    assert "sk-hidden-42" not in res.err
    assert not (run_dir / "judge").exists()


def test_an_empty_key_variable_is_said_to_be_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprobe.errors import UserError

    srv = Scripted([(401, {}, {"error": {"message": "missing key"}})])
    monkeypatch.setenv("JUDGE_EMPTY_KEY", "")
    with pytest.raises(UserError, match=r"without a key \(\$JUDGE_EMPTY_KEY is empty\)"):
        JudgeClient(srv.url, "judge-1", key_env="JUDGE_EMPTY_KEY", retries=0).check()
    srv.close()


def test_a_run_held_by_another_job_is_refused_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """judge while analyze writes the run: refused at once in one line naming analyze, before the endpoint
    is asked anything (it said "use another --out", a flag judge does not have); and the other way round."""
    from tests.cli_utils import assert_one_line_error, run_cli
    from tests.test_one_writer import held_by

    run_dir = _tiny_run(tmp_path, problems=1)
    srv = Scripted([])
    args = ["judge", str(run_dir), "--endpoint", srv.url, "--judge-model", "judge-1", "--taxonomy", str(_taxonomy(tmp_path))]
    with held_by(run_dir, "analyze", "layerprobe", "analyze", "--out", str(run_dir)) as pid:
        res = run_cli(capsys, *args)
    assert_one_line_error(res, f"is being written by layerprobe analyze (pid {pid}", "judge it when that ends")
    assert res.err.rstrip().endswith("; judge it when that ends")
    assert srv.requests == [] and not (run_dir / "judge").exists()
    with held_by(run_dir, "judge", "layerprobe", *args) as pid:
        res = run_cli(capsys, "explain", str(run_dir), "--device", "cpu")
        assert_one_line_error(res, f"is being written by layerprobe judge (pid {pid}")
        res = run_cli(capsys, *args)
        assert_one_line_error(res, f"is being written by layerprobe judge (pid {pid}")
    srv.close()


def test_a_file_where_the_judge_keeps_its_records_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cli_utils import assert_one_line_error, run_cli

    run_dir = _tiny_run(tmp_path, problems=1)
    (run_dir / "judge").write_text("mine\n")
    srv = Scripted([])
    res = run_cli(
        capsys, "judge", str(run_dir), "--endpoint", srv.url, "--judge-model", "judge-1", "--taxonomy", str(_taxonomy(tmp_path))
    )
    srv.close()
    assert_one_line_error(res, "judge is not a folder", "move it away")
    assert (run_dir / "judge").read_text() == "mine\n" and srv.requests == []


def test_a_taxonomy_that_is_not_a_small_text_file_is_refused_unread(tmp_path: Path) -> None:
    """A 200 MB taxonomy was read whole into memory (and judged); bytes that are not UTF-8 are named so."""
    from layerprobe.errors import UserError
    from layerprobe.judge.taxonomy import load_taxonomy

    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as fh:  # sparse: 2 GB on paper, nothing on disk
        fh.write(TINY.encode())
        fh.truncate(2 * 10**9)
    with pytest.raises(UserError, match=r"--taxonomy .*huge\.toml: 2,000\.0 MB; .* at most 1,000,000 bytes"):
        load_taxonomy(str(huge))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'name = "t"\n\xbb\xff\x00')
    with pytest.raises(UserError, match=r"--judge-taxonomy .*bin\.toml: not UTF-8 text"):
        load_taxonomy(str(binary), "--judge-taxonomy")


def test_judge_flags_of_analyze_and_ingest_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--judge-taxonomy four` without an endpoint and a model was silently ignored: the run was not judged."""
    from tests.cli_utils import assert_one_line_error, run_cli

    traces = tmp_path / "t.jsonl"
    traces.write_text('{"id": "p1", "prompt": "1+1?", "completion": "so \\\\boxed{2}", "gold": "2"}\n')
    out = tmp_path / "run"
    ingest = ["ingest", str(traces), "--model", "toy", "--no-probes", "--answer-type", "integer", "--out", str(out)]
    for extra in (["--judge-taxonomy", "four"], ["--judge-taxonomy", "study", "--judge-model", "m"]):
        assert_one_line_error(run_cli(capsys, *ingest, *extra), "--judge-taxonomy needs both")
        assert_one_line_error(run_cli(capsys, "analyze", "--out", str(out), *extra), "--judge-taxonomy needs both")
    assert not out.exists()


def _judge_file(**kw: Any) -> Any:
    from layerprobe.data.schema import JudgeFile

    base = {
        "status": "complete",
        "judge_model": "judge-1",
        "endpoint": "http://127.0.0.1:1/v1",
        "taxonomy": "tiny",
        "behaviours": {"b": "bees"},
        "n_selected": 12,
        "expected_calls": 12,
        "outcomes": {"base": {"count": 6}, "drop-3": {"count": 6}},
    }
    return JudgeFile.model_validate({**base, **kw})


def _printed(j: Any, **kw: Any) -> str:
    from rich.console import Console

    from layerprobe.cli.judge_cmd import print_judge_summary

    say = Console(record=True, width=200, markup=False, highlight=False, soft_wrap=True)
    print_judge_summary(j, say, **kw)
    return say.export_text()


def test_the_terminal_words_a_paired_judge_difference_by_the_difference_rule() -> None:
    """The terminal printed "not established" after an interval that excludes 0 without saying which test
    disagreed (every other comparison in the terminal names the test and its p-value)."""
    from layerprobe.data.verdicts import verdict_note

    cmp = {"base": "base", "group": "all", "mode": "judge", "metric": "b", "test": "sign-flip permutation"}
    apart = {**cmp, "variant": "drop-3", "n_pairs": 6, "mean_a": 1.0, "mean_b": 2.5, "diff": 1.5, "ci_low": 0.4}
    apart.update(ci_high=2.6, p_value=0.0625, verdict="no clear difference", agree=False, reason="interval only")
    few = {**cmp, "variant": "drop-4", "n_pairs": 3, "mean_a": 1.0, "mean_b": 2.0, "diff": 1.0, "ci_low": 0.2, "ci_high": 1.8}
    few.update(p_value=0.25, verdict="no clear difference", reason="too few")
    out = _printed(_judge_file(comparisons=[apart, few]))
    j = _judge_file(comparisons=[apart, few])
    line = next(x for x in out.splitlines() if x.strip().startswith("drop-3 − base"))
    assert "+1.50 [+0.40, +2.60] over 6 problems: " + verdict_note(j.comparisons[0]) in line
    assert "sign-flip permutation test does not reject, p = 0.062" in line
    line = next(x for x in out.splitlines() if x.strip().startswith("drop-4 − base"))
    assert line.endswith("over 3 problems: too few problems for a verdict: 3 < 6")


def test_the_agreement_is_printed_once_per_behaviour() -> None:
    """With one variant judged so far (a partial run) the agreement over every variant and the variant's
    own were both printed under one label, with two values."""
    rows = [
        {"variant": "base", "behaviour": "b", "n": 6, "n_problems": 6, "spearman": 0.5, "ci": (0.1, 0.8)},
        {"variant": "all", "behaviour": "b", "n": 6, "n_problems": 6, "spearman": 0.4, "ci": (0.0, 0.7)},
    ]
    out = _printed(_judge_file(outcomes={"base": {"count": 6}}, agreement=rows))
    line = next(x for x in out.splitlines() if "bees" in x and "rho" not in x and "(n=" in x)
    assert line.count("bees") == 1 and "+0.40 [+0.00, +0.70] (n=6)" in line


def test_judging_a_partial_or_damaged_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The terminal said nothing when the run judged was partial or had damaged lines: its numbers rest on
    the traces that could be read, and it must say so where they appear."""
    from tests.cli_utils import run_cli

    run_dir = make_run(
        tmp_path / "run", groups=("long",), problems_per_group=4, budgets=(16,), samples=0, probes=False, keep_fraction=0.5
    )
    with open(run_dir / "samples.jsonl", "ab") as fh:
        fh.write(b'{"variant": "base", "cut\n')
    srv = Scripted([])
    res = run_cli(
        capsys,
        "judge",
        str(run_dir),
        "--endpoint",
        srv.url,
        "--judge-model",
        "judge-1",
        "--taxonomy",
        str(_taxonomy(tmp_path)),
        "--no-report",
    )
    srv.close()
    assert res.code == 0, res.err
    assert "note: the run: 1 damaged line of samples.jsonl skipped" in res.out
    assert "note: the run: 4 of 8 expected traces are present" in res.out


def test_the_means_table_is_never_cut_in_a_narrow_terminal() -> None:
    """At 80 columns the shipped `four` taxonomy's table cut its numbers ("1.00 [1.00, 1.0…") and the
    variant names ("…")."""
    from rich.console import Console

    from layerprobe.cli.judge_cmd import print_judge_summary

    titles = {"verification": "verification", "backtracking": "backtracking", "subgoals": "subgoal setting"}
    titles["backward-chaining"] = "backward chaining"
    stats = [
        {"variant": v, "group": g, "behaviour": b, "n_traces": 16, "n_counted": 16, "n_problems": 8, "mean": 1.25}
        | {"ci": (0.75, 1.5)}
        for v in ("base", "shortgpt-2")
        for g in ("all", "long")
        for b in titles
    ]
    j = _judge_file(behaviours=titles, stats=stats)
    say = Console(record=True, width=80, markup=False, highlight=False, soft_wrap=True)
    print_judge_summary(j, say)
    out = say.export_text()
    assert "…" not in out
    assert out.count("1.25 [0.75, 1.50] n=16") == len(stats) and "shortgpt-2" in out
    assert say.width == 80


def test_the_report_states_the_difference_rule_beside_the_judge_s_paired_differences(tmp_path: Path) -> None:
    """The judge's part of the report stated its own rule ("no clear difference where either does not
    exclude zero"), which is not the difference rule its verdicts follow (at least 6 problems, "not
    established" where interval and test part)."""
    import html as htmllib
    import re

    from layerprobe.data.judge import JUDGE_DIR, STATE_FILE, CallLog
    from layerprobe.data.reader import load_run
    from layerprobe.data.store import write_model
    from layerprobe.data.verdicts import RULE
    from layerprobe.report import render_report
    from tests.test_judge_rules import _call, _state

    run_dir = make_run(tmp_path / "run", groups=("long",), problems_per_group=6, budgets=(16,), samples=0, probes=False)
    (run_dir / JUDGE_DIR).mkdir()
    write_model(run_dir / JUDGE_DIR / STATE_FILE, _state(behaviours=("a",)))
    log = CallLog(run_dir)
    for i, r in enumerate(load_run(run_dir).samples):
        log.append(_call(r, "a", "count", 2 + i % 3 + (r.variant != "base")))
    log.close()
    page = render_report(run_dir).read_text(encoding="utf-8")
    start = page.index("Behaviours counted by a judge model")
    part = htmllib.unescape(re.sub(r"<[^>]+>", "", page[start : page.index("<h3>Loops</h3>", start)]))
    assert "Each variant against base, the study's comparison" in part
    assert RULE in part and "where either does not exclude zero" not in part


def test_compare_counts_removed_depths_by_the_difference_rule_s_words() -> None:
    """compare's sentence counted every depth that was neither clearly lower nor higher as "no clear
    difference", those with too few problems and those whose interval and test part included."""
    from layerprobe.data.schema import CompareFile, CrossModel
    from layerprobe.report.compare import cross_sentences

    def damage(depth: int, verdict: str, reason: str, n: int) -> dict[str, Any]:
        return {"a": "x", "b": "y", "group": "long", "what": "damage", "dropped_a": [depth], "dropped_b": [depth]} | {
            "n_pairs": n,
            "mean_a": -0.1,
            "mean_b": -0.3,
            "diff": -0.2,
            "ci": (-0.4, -0.05),
            "verdict": verdict,
            "reason": reason,
        }

    rows = [
        damage(1, "lower", "both", 10),
        damage(2, "no clear difference", "neither", 10),
        damage(3, "no clear difference", "interval only", 10),
        damage(4, "no clear difference", "too few", 4),
        damage(5, "no clear difference", "too few", 3),
    ]
    cmp = CompareFile.model_construct(runs=[], cross=[CrossModel.model_validate(r) for r in rows])  # only what the sentence reads
    (sentence,) = cross_sentences(cmp)
    assert (
        "y loses clearly more than x at 1 of 5 depths, clearly less at 0, no clear difference at 1, not established at 1, "
        "too few problems at 2" in sentence
    )


def test_judging_the_thinking_of_a_run_without_any_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--text thinking on a run whose model answers without thinking (toy-direct, a chat model) sent every
    call with an empty trace, paying for counts of nothing."""
    import json

    from tests.cli_utils import assert_one_line_error, run_cli

    run_dir = _tiny_run(tmp_path)
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        row["thinking_text"] = ""
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv = Scripted([])
    args = ["judge", str(run_dir), "--endpoint", srv.url, "--judge-model", "judge-1", "--taxonomy", str(_taxonomy(tmp_path))]
    res = run_cli(capsys, *args, "--text", "thinking")
    assert_one_line_error(res, "--text thinking: none of the 4 selected traces", "use --text response")
    assert srv.requests == [] and not (run_dir / "judge").exists()
    assert run_cli(capsys, *args, "--text", "response", "--no-report").code == 0  # the whole response is there
    srv.close()


def test_the_job_computes_the_summary_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job read the run with its extras, which recomputed the judge's summary from every line of
    calls.jsonl before the job computed and wrote it again at the end."""
    import layerprobe.data.judge as data_judge

    run_dir = _tiny_run(tmp_path)
    tax = _taxonomy(tmp_path)
    srv = Scripted([])
    assert _run_bounded(_job(run_dir, srv.url, tax)) is None
    (run_dir / "judge.json").unlink()  # as after a kill -9: the reader would recompute it
    computed = []
    real = data_judge.compute_judge
    monkeypatch.setattr(data_judge, "compute_judge", lambda *a, **k: computed.append(1) or real(*a, **k))
    assert _run_bounded(_job(run_dir, srv.url, tax)) is None
    srv.close()
    assert len(computed) == 1 and (run_dir / "judge.json").is_file()
