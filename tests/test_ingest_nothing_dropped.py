"""`layerprobe ingest` drops nothing silently (issue 37): a gold answer under any of the common field names
is read (one field table, named by `ingest --help`) and one under an unknown name that looks like a gold
answer is refused in one line; traces published without their prompts are read text-only; a stream with
no thinking delimiters is still reasoning (every trace of the file split by one rule, named); and a
wrong-against-right contrast from a handful of traces shows means, no verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprobe.data.reader import load_run
from layerprobe.sources.gold import GOLD_FIELDS
from tests import real_traces as rt
from tests.cli_utils import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rt.qwen_like_checkpoint(tmp_path_factory.mktemp("qwenlike") / "ckpt")


def _rows(gold_field: str = "gold", prompt: bool = True) -> list[dict]:
    rows = []
    for pid, (q, gold) in rt.PROBLEMS.items():
        row = {"id": pid, "completion": f"<think>\n{rt.thinking(pid, rounds=6).text}\n</think>\n\n{rt.answer(pid)}"}
        if prompt:
            row["prompt"] = rt.chatml(q)
        row[gold_field] = gold
        rows.append(row)
    return rows


def _ingest(capsys, path: Path, ckpt: Path, out: Path, *extra: str):
    return run_cli(
        capsys, "ingest", str(path), "--model", str(ckpt), "--answer-type", "integer", "--out", str(out), "--no-report", *extra
    )


@pytest.mark.parametrize("field", GOLD_FIELDS)
def test_gold_answer_under_each_common_name_is_graded(ckpt, tmp_path, capsys, field) -> None:
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "t.jsonl", _rows(field)), ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    assert "not graded" not in res.out
    run = load_run(tmp_path / "run")
    assert len(run.samples) == 3 and all(r.correct for r in run.samples)
    assert {r.gold for r in run.samples} == {g for _, g in rt.PROBLEMS.values()}


def test_an_unknown_gold_field_is_refused_and_help_names_the_fields(ckpt, tmp_path, capsys) -> None:
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "t.jsonl", _rows("ground_truth")), ckpt, tmp_path / "run", "--no-probes")
    assert_one_line_error(res, "ground_truth", *GOLD_FIELDS)
    assert not (tmp_path / "run").exists()
    # no gold at all (and nothing that looks like one): ingested ungraded, and the summary says where it looked
    rows = [{k: v for k, v in r.items() if k != "gold"} for r in _rows()]
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "nogold.jsonl", rows), ckpt, tmp_path / "nogold", "--no-probes")
    assert res.code == 0, res.err
    assert "3 not graded (no gold answer in any of the fields gold, answer, target, solution or expected)" in res.out
    # model-side fields that merely contain "answer" are not mistaken for a gold answer
    rows = [dict(r, model_answer="1", answer_tokens=12) for r in rows]
    assert _ingest(capsys, rt.write_jsonl(tmp_path / "m.jsonl", rows), ckpt, tmp_path / "m", "--no-probes").code == 0
    res = run_cli(capsys, "ingest", "--help")
    assert res.code == 0 and all(name in " ".join(res.out.split()) for name in GOLD_FIELDS)


def test_traces_without_prompts_are_read_text_only(ckpt, tmp_path, capsys) -> None:
    path = rt.write_jsonl(tmp_path / "t.jsonl", _rows(prompt=False))
    res = _ingest(capsys, path, ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    assert "3 traces ingested" in res.out and "3 without a prompt (text metrics only)" in res.out
    run = load_run(tmp_path / "run")
    for r in run.samples:
        th = rt.thinking(r.problem_id, rounds=6)
        assert r.correct and r.prompt_tokens == 0 and r.thinking_text == th.text and r.reflections.counts["wait"] == th.waits
    assert run.info.ingested[0].counts["without a prompt (text metrics only)"] == 3  # recorded for the report
    # probes run the prompt through the model: there they are skipped, each counted with the reason
    res = _ingest(capsys, path, ckpt, tmp_path / "probes")
    assert_one_line_error(res, "no prompt", "--no-probes")


def test_a_stream_without_delimiters_is_reasoning_in_every_trace(ckpt, tmp_path, capsys) -> None:
    """LIMO-style streams (reasoning and answer in one text, "Wait" and all), most with no final-answer
    marker and no box: every trace gets its thinking, and the file's rule is named."""
    rows = []
    for i, (pid, (q, gold)) in enumerate(rt.PROBLEMS.items()):
        t = rt.thinking(pid, rounds=6).text
        ends = [f"\n\nSo the answer is {gold}.", f"\n\nThat leaves {gold}.", f"\n\n**Final Answer**\n{gold}"]
        rows.append({"id": pid, "prompt": rt.chatml(q), "completion": t + ends[i], "gold": gold})
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "limo.jsonl", rows), ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    assert "plain (no thinking delimiters" in res.out
    run = load_run(tmp_path / "run")
    counts = run.info.ingested[0].counts
    for rule in ("answer from the last line stating an answer", "answer from the last line", "answer from a final-answer marker"):
        assert counts.get(rule) == 1, counts  # which rule set each trace's thinking part, for the report
    for r in run.samples:
        th = rt.thinking(r.problem_id, rounds=6)
        assert r.thinking_text == th.text, r.problem_id  # the whole response less its answer line
        assert r.reflections.counts["wait"] == th.waits and r.self_bleu_within is not None and r.correct


def test_a_contrast_of_three_traces_has_no_verdict(ckpt, tmp_path, capsys) -> None:
    """One wrong trace against two right ones: the means are shown, no "wrong traces lower"."""
    rows = _rows()
    rows[0]["completion"] = rows[0]["completion"].replace(rt.answer("p-powers"), rt.answer("p-powers", wrong=True))
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "t.jsonl", rows), ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    html_path = tmp_path / "run" / "report.html"
    assert run_cli(capsys, "report", str(tmp_path / "run")).code == 0
    contrasts = load_run(tmp_path / "run").metrics.outcome_contrasts
    assert contrasts and all(c.n_wrong == 1 and c.n_right == 2 for c in contrasts)
    assert all(c.verdict == "no clear difference" and c.reason == "too few" for c in contrasts)
    html = html_path.read_text(encoding="utf-8")
    section = html[html.index('id="r0-wrong"') :]
    section = section[: section.index("</table>")]
    assert "wrong traces lower" not in section and "wrong traces higher" not in section
    assert "too few problems" in section


def test_a_trace_without_a_budget_is_kept_and_never_shown_as_budget_0(ckpt, tmp_path, capsys) -> None:
    """A file whose lines record a thinking budget except one: that trace is kept (stored as budget 0,
    `budget_recorded` false) and counts in the numbers over all traces, but no budget list, table column or
    curve shows a budget of 0 tokens; the report says how many record none."""
    from rich.console import Console

    from layerprobe.cli.summary_table import print_summary
    from layerprobe.report import render_report

    rows = [dict(r, budget=512) for r in _rows()]
    rows[1].pop("budget")
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "mixed.jsonl", rows), ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    assert "3 traces ingested" in res.out
    run = load_run(tmp_path / "run")
    assert sorted((r.budget, r.budget_recorded) for r in run.samples) == [(0, False), (512, True), (512, True)]
    assert run.info.config.budgets == [0, 512]  # as stored
    assert run.unbudgeted == 1 and run.budgets() == [512] and run.config_budgets() == [512]
    assert run.vmetrics("base").behaviour is not None and run.metrics.variants["base"].n_traces == 3
    con = Console(width=160, record=True)
    print_summary(run, con, explain_hint=False, report=None)
    table = con.export_text()
    assert "B=512" in table and "B=0" not in table
    html = render_report([tmp_path / "run"]).read_text(encoding="utf-8")
    assert "thinking budgets 512 tokens; 1 trace records no budget" in html and "thinking budgets 0" not in html
    # a run where no trace records one is unchanged: "not recorded", no count
    none = [{k: v for k, v in r.items() if k != "budget"} for r in rows]
    assert _ingest(capsys, rt.write_jsonl(tmp_path / "none.jsonl", none), ckpt, tmp_path / "none", "--no-probes").code == 0
    run = load_run(tmp_path / "none")
    assert run.unbudgeted == 0 and not run.budget_recorded


def test_the_studys_protocol_shape_gives_a_budget_curve_and_pass_at_k(ckpt, tmp_path, capsys) -> None:
    """Several samples of every problem at each of several budgets (the study's 16 samples x 5 budgets):
    the first sample per problem and budget makes the budget curve; pass@k is taken at the largest budget
    over all of its samples; the samples at the smaller budget count only in the numbers over all traces.
    Before, every such trace was "parallel": no budget curve, and pass@k pooled over the budgets."""
    rows = [dict(r, budget=b, sample=k) for r in _rows() for b in (256, 512) for k in range(3)]
    wrong = next(r for r in rows if r["budget"] == 512 and r["sample"] == 2)
    wrong["completion"] = wrong["completion"].replace(rt.answer(wrong["id"]), rt.answer(wrong["id"], wrong=True))
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "protocol.jsonl", rows), ckpt, tmp_path / "run", "--no-probes")
    assert res.code == 0, res.err
    run = load_run(tmp_path / "run")
    modes = {(r.budget, r.sample): r.mode for r in run.samples}
    assert modes == {(b, k): "sequential" if k == 0 else "parallel" for b in (256, 512) for k in range(3)}
    assert run.budgets() == [256, 512] and run.info.config.parallel_budget == 512
    g = run.vmetrics("base")
    assert set(g.sequential) == {"256", "512"} and g.sequential["512"].n == 3
    assert g.parallel.samples == 3 and g.parallel.n_problems == 3  # the first sample counted with the other two
    assert g.parallel.pass_at_k["1"].value == pytest.approx((1 + 1 + 2 / 3) / 3)  # one wrong of the 3 samples of one problem
    assert run.metrics.variants["base"].n_traces == 18


def test_each_variant_takes_its_own_parallel_budget(ckpt, tmp_path, capsys) -> None:
    """A second ingest whose samples sit at a smaller budget than the first's: its pass@k and its Self-BLEU
    across samples are taken at its own largest budget with samples (not left empty by the other's)."""
    import math

    base = [dict(r, budget=b, sample=k) for r in _rows() for b in (256, 512) for k in range(3)]
    other = [dict(r, budget=256, sample=k) for r in _rows() for k in range(3)]
    assert _ingest(capsys, rt.write_jsonl(tmp_path / "a.jsonl", base), ckpt, tmp_path / "run", "--no-probes").code == 0
    res = _ingest(capsys, rt.write_jsonl(tmp_path / "b.jsonl", other), ckpt, tmp_path / "run", "--no-probes", "--label", "other")
    assert res.code == 0, res.err
    run = load_run(tmp_path / "run")
    for v in ("base", "other"):
        p = run.vmetrics(v).parallel
        assert p.samples == 3 and p.self_bleu_across is not None and not math.isnan(p.self_bleu_across), (v, p)
