"""`layerprobe ingest` on traces in every shape real reasoning models are published in (fixtures written
for these tests in those shapes: tests/real_traces.py): thinking, answer, reflections and grade as a
careful reader finds them; nothing dropped in text-only mode; truncated traces never graded."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprobe.data.reader import load_run
from tests import real_traces as rt
from tests.cli_utils import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rt.qwen_like_checkpoint(tmp_path_factory.mktemp("qwenlike") / "ckpt")


def _ingest(capsys, files, ckpt, out, *extra, source="jsonl"):
    args = ["ingest", *map(str, files), "--from", source, "--model", str(ckpt), "--answer-type", "integer"]
    res = run_cli(capsys, *args, "--out", str(out), "--no-report", *extra)
    assert res.code == 0, res.err
    return res, load_run(out)


def _by(run, pid=None):
    return {(r.problem_id, r.sample): r for r in run.samples if pid is None or r.problem_id == pid}


def test_s1_fork_of_lm_eval(ckpt, tmp_path, capsys) -> None:
    folder = tmp_path / "lm-out" / "simplescaling__s1.1-7B"
    folder.mkdir(parents=True)
    samples = folder / "samples_aime_nofig_2026-11-01T10-00-00.000001.jsonl"
    truth = rt.s1_fork_samples(samples)
    res, run = _ingest(capsys, [samples], ckpt, tmp_path / "run", "--no-probes", source="lm-eval")
    assert "s1 (<|im_start|>think … <|im_start|>answer), opener in the response" in res.out
    assert "9 traces ingested" in res.out and "3 budget-forced" in res.out and "3 merged filter lines" in res.out
    assert "skipped" not in res.out  # the second filter's lines are the same traces, not duplicates to skip
    assert run.info.config.wait == 1 and run.info.config.budgets == [8000]
    assert run.producer == "simplescaling/s1.1-7B"
    recs = _by(run)
    assert len(recs) == 9
    for pid, t in truth.items():
        th = t["thinking"]
        natural, forced, ignored = recs[(pid, 0)], recs[(pid, 1)], recs[(pid, 2)]
        # the thinking is found: everything between <|im_start|>think and <|im_start|>answer
        assert natural.thinking_text == th.text and natural.thinking_tokens > 1000
        assert natural.reflections.counts["wait"] == th.waits and natural.reflections.counts["hmm"] == th.hmms
        assert natural.reflections.counts["let me check"] == 1
        assert natural.self_bleu_within is not None and natural.self_bleu_within_study is not None
        assert (natural.finish, natural.correct, natural.answer, natural.extraction) == ("answered", True, t["gold"], "boxed")
        # budget-forced: cut mid-sentence, "Final Answer:" spliced in; the last answer is the model's final one
        assert forced.finish == "budget" and forced.budget_hit
        assert forced.thinking_text.startswith(t["cut"]) and "recheck the last residue" in forced.thinking_text
        assert forced.correct and forced.answer == t["gold"]
        assert forced.external["shape"] == {"forced": True, "reopened": 1, "fields": False}
        # thinking_n_ignore: "Wait" where the end of thinking was
        assert ignored.reflections.counts["wait"] == th.waits + 1
        assert not ignored.correct and ignored.answer == str(int(t["gold"]) + 7)
        # the harness's verdicts of both filters are kept, per sample
        assert natural.external["harness"] == {
            "filter 1": {"exact_match": 1, "extracted_answers": t["gold"]},
            "filter 2": {"exact_match": 0},
        }


def test_opener_in_the_prompt_and_in_the_response(ckpt, tmp_path, capsys) -> None:
    th = {pid: rt.thinking(pid) for pid in rt.PROBLEMS}
    # R1-Distill through lm-eval: the prompt ends with <think>\n, the response holds only </think>
    r1 = tmp_path / "samples_math_2026-11-02T00-00-00.000001.jsonl"
    rt.lm_eval_samples(r1, {pid: f"{t.text}\n</think>\n\n{rt.answer(pid)}" for pid, t in th.items()}, prompt_suffix="<think>\n")
    res, run = _ingest(capsys, [r1], ckpt, tmp_path / "r1", "--no-probes", source="lm-eval")
    assert "think-tags (<think> … </think>), opener in the prompt" in res.out
    for r in run.samples:
        pid = r.external["doc_id"]
        t = th[list(rt.PROBLEMS)[pid]]
        assert r.thinking_text == t.text and r.correct and r.reflections.counts["wait"] == t.waits
        assert set(r.external["harness"]) == {"strict-match", "flexible-extract"}
    # Qwen3 / DeepScaleR through vLLM: the model writes the opener itself
    rows = [
        {
            "id": pid,
            "prompt": rt.chatml(rt.PROBLEMS[pid][0]),
            "completion": f"<think>\n{t.text}\n</think>\n\n{rt.answer(pid)}",
            "gold": rt.PROBLEMS[pid][1],
        }
        for pid, t in th.items()
    ]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "q3.jsonl", rows)], ckpt, tmp_path / "q3", "--no-probes")
    assert "opener in the response" in res.out
    for r in run.samples:
        assert r.thinking_text == th[r.problem_id].text and r.correct and r.finish == "answered"


def test_special_tokens_stripped_by_the_producer(ckpt, tmp_path, capsys) -> None:
    """An s1 trace decoded with skip_special_tokens=True: bare `think` / `answer` lines."""
    rows = []
    for pid, (q, gold) in rt.PROBLEMS.items():
        t = rt.thinking(pid)
        rows.append(
            {"id": pid, "prompt": rt.chatml(q), "completion": f"think\n{t.text}\nanswer\n{rt.answer(pid, 's1')}", "gold": gold}
        )
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "bare.jsonl", rows)], ckpt, tmp_path / "run", "--no-probes")
    assert "s1 with special tokens stripped" in res.out
    for r in run.samples:
        t = rt.thinking(r.problem_id)
        assert r.thinking_text == t.text and r.correct and r.reflections.counts["wait"] == t.waits


def test_reasoning_in_its_own_field(ckpt, tmp_path, capsys) -> None:
    """DeepSeek's API and vLLM's reasoning parser (reasoning_content / reasoning beside content), an
    OpenAI-style response with choices, and the two glued with a literal </think> and no opener."""
    (pa, (qa, ga)), (pb, (qb, gb)), (pc, (qc, gc)) = rt.PROBLEMS.items()
    ta, tb, tc = rt.thinking(pa), rt.thinking(pb), rt.thinking(pc)
    rows = [
        {"id": pa, "prompt": rt.chatml(qa), "reasoning_content": ta.text, "content": rt.answer(pa), "gold": ga},
        {"id": pb, "prompt": rt.chatml(qb), "reasoning": tb.text, "content": rt.answer(pb, wrong=True), "gold": gb},
        {
            "id": pc,
            "messages": [{"role": "user", "content": qc}],
            "choices": [
                {"message": {"content": rt.answer(pc), "reasoning_content": tc.text}, "finish_reason": "stop"},
                {"message": {"content": "", "reasoning_content": tc.text[:3000]}, "finish_reason": "length"},
            ],
            "gold": gc,
        },
    ]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "api.jsonl", rows)], ckpt, tmp_path / "api", "--no-probes")
    assert "4 reasoning in a separate field" in res.out
    recs = _by(run)
    assert recs[(pa, 0)].thinking_text == ta.text and recs[(pa, 0)].correct
    assert recs[(pb, 0)].thinking_text == tb.text and not recs[(pb, 0)].correct and recs[(pb, 0)].answer == str(int(gb) + 7)
    assert recs[(pc, 0)].correct and recs[(pc, 0)].prompt_tokens > 5
    assert (recs[(pc, 0)].mode, recs[(pc, 1)].mode) == ("sequential", "parallel")  # the first choice, then a sample
    assert recs[(pc, 1)].finish == "truncated" and recs[(pc, 1)].answer is None  # cut in its reasoning: no answer
    assert run.vmetrics("base").parallel.samples == 2  # pass@k counts both choices
    glued = [{"id": pa, "prompt": rt.chatml(qa), "completion": f"{ta.text}</think>{rt.answer(pa)}", "gold": ga}]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "glued.jsonl", glued)], ckpt, tmp_path / "glued", "--no-probes")
    assert "no opener" in res.out
    (r,) = run.samples
    assert r.thinking_text == ta.text and r.correct


def test_no_delimiters_at_all(ckpt, tmp_path, capsys) -> None:
    """LIMO-style: one stream ending in **Final Answer** and a box; a non-reasoning model's plain answers."""
    rows = []
    for pid, (q, gold) in rt.PROBLEMS.items():
        t = rt.thinking(pid)
        rows.append(
            {"id": pid, "prompt": rt.chatml(q), "completion": f"{t.text}\n\n**Final Answer**\n\\boxed{{{gold}}}", "gold": gold}
        )
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "limo.jsonl", rows)], ckpt, tmp_path / "limo", "--no-probes")
    assert "plain (no thinking delimiters" in res.out and "3 answer from a final-answer marker" in res.out
    for r in run.samples:
        t = rt.thinking(r.problem_id)
        assert r.thinking_text == t.text and r.correct and r.reflections.counts["wait"] == t.waits
    # a model without thinking delimiters through lm-eval (GSM8K style): the text before its answer line is its
    # reasoning (measured like any thinking), the answer line is graded
    plain = tmp_path / "samples_gsm8k_2026-11-03T00-00-00.000001.jsonl"
    rt.lm_eval_samples(plain, {pid: f"We compute step by step.\nSo it is {g}.\n#### {g}" for pid, (_, g) in rt.PROBLEMS.items()})
    res, run = _ingest(capsys, [plain], ckpt, tmp_path / "plain", "--no-probes", source="lm-eval")
    assert "plain (no thinking delimiters" in res.out and "answer from the last line stating an answer" in res.out
    for r in run.samples:
        assert r.correct and r.extraction == "gsm8k" and r.thinking_text == f"We compute step by step.\nSo it is {r.gold}."


def test_truncated_traces_are_never_graded(ckpt, tmp_path, capsys) -> None:
    (pa, (qa, ga)), (pb, (qb, gb)), (pc, (qc, gc)) = rt.PROBLEMS.items()
    lure = "\n\nSo far the answer is {g}, and I think (C) is what the checker expects. Then the next"
    ta = rt.thinking(pa).text + lure.format(g=ga)
    rows = [
        # vLLM says it was cut; the thinking never ended; an "answer is" phrase and a letter sit in it
        {"id": pa, "prompt": rt.chatml(qa) + "<think>\n", "completion": ta, "gold": ga, "finish_reason": "length"},
        # the same without a finish reason: no end of thinking is a cut trace
        {"id": pb, "prompt": rt.chatml(qb) + "<think>\n", "completion": rt.thinking(pb).text + lure.format(g=gb), "gold": gb},
        # the file says it was cut after the thinking ended: the answer part is graded as written
        {
            "id": pc,
            "prompt": rt.chatml(qc) + "<think>\n",
            "completion": rt.thinking(pc).text + "\n</think>\n\nThe final answer is $\\boxed{" + gc + "}$ and",
            "gold": gc,
            "finish_reason": "length",
        },
    ]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "cut.jsonl", rows)], ckpt, tmp_path / "run", "--no-probes")
    assert "2 truncated" in res.out
    recs = _by(run)
    for pid in (pa, pb):
        r = recs[(pid, 0)]
        assert (r.finish, r.answer, r.correct, r.extraction) == ("truncated", None, False, None)
    assert recs[(pc, 0)].finish == "max_tokens" and recs[(pc, 0)].correct
    m = run.metrics
    assert m.variants["base"].groups["all"].behaviour.truncated_rate == pytest.approx(2 / 3)
    assert m.grading["base"].truncated == 2 and m.grading["base"].missing == 0 and m.grading["base"].meaningful
    # a plain stream the producer says was cut has no answer either
    plain = [{"id": pa, "prompt": rt.chatml(qa), "completion": "Let me see. The answer is " + ga, "gold": ga, "truncated": True}]
    _, run = _ingest(
        capsys, [rt.write_jsonl(tmp_path / "p.jsonl", plain)], ckpt, tmp_path / "plain", "--no-probes", "--format", "plain"
    )
    assert run.samples[0].finish == "truncated" and not run.samples[0].correct


def test_truncation_shapes_of_reasoning_servers(ckpt, tmp_path, capsys) -> None:
    """vLLM's reasoning parser cut during the thinking (content null, finish_reason length), in a flat line
    and inside an OpenAI-style response's choices[].message; the renamed `reasoning` beside a null
    `reasoning_content`; a line that also keeps the whole completion: one trace each, the cut ones
    truncated and never graded from their thinking. Fields that contradict each other: counted skips."""
    (pa, (qa, ga)), (pb, (qb, gb)), (pc, (qc, gc)) = rt.PROBLEMS.items()
    lure = "\n\nSo far the answer is {g}, so $\\boxed{{{g}}}$ looks right. Then the next"
    ta, tb = rt.thinking(pa).text + lure.format(g=ga), rt.thinking(pb).text + lure.format(g=gb)
    whole_a = f"{rt.thinking(pa).text}\n</think>\n\n{rt.answer(pa)}"
    rows = [
        rt.reasoning_record(pa, ta, None, "length"),
        rt.vllm_chat_response(pb, tb, None, "length"),
        rt.vllm_chat_response(pc, rt.thinking(pc).text, rt.answer(pc), "stop", field="reasoning"),
        rt.reasoning_record(pa, rt.thinking(pa).text, rt.answer(pa), "stop", completion=whole_a, sample=1),
        # contradictory fields: which one the model wrote is unknown
        rt.reasoning_record(pb, "One chain.", "The answer is 1.", "stop", reasoning="Another chain.", sample=1),
        {"id": pc, "prompt": rt.chatml(qc), "completion": "The answer is 20.", "content": "The answer is 21.", "sample": 1},
    ]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "vllm.jsonl", rows)], ckpt, tmp_path / "run", "--no-probes")
    recs = _by(run)
    assert set(recs) == {(pa, 0), (pa, 1), (pb, 0), (pc, 0)}
    for key, text in (((pa, 0), ta), ((pb, 0), tb)):
        r = recs[key]
        assert (r.finish, r.answer, r.correct, r.extraction) == ("truncated", None, False, None)
        assert r.thinking_text == text and r.thinking_tokens > 1000 and r.answer_tokens == 0
    assert recs[(pc, 0)].thinking_text == rt.thinking(pc).text and recs[(pc, 0)].correct  # `reasoning` read
    assert recs[(pa, 1)].thinking_text == rt.thinking(pa).text and recs[(pa, 1)].correct  # one trace, not two
    assert "2 truncated" in res.out
    assert "skipped 1: reasoning_content and reasoning disagree" in res.out
    assert "skipped 1: completion and content disagree" in res.out


def test_a_tokenizer_folder_and_its_chat_template_are_untrusted_input(ckpt, tmp_path, capsys) -> None:
    """--tokenizer DIR holding only what a tokenizer's save_pretrained writes (no config.json) is read; a
    chat template that loops for ever (10^10 iterations; it hung ingest) is stopped after 2 s and not run
    again: the conversations it would render are counted skips; a prompt given as text never runs it."""
    import time

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    tok.chat_template = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    tdir = tmp_path / "tokenizer"
    tok.save_pretrained(tdir)
    assert not (tdir / "config.json").exists()
    rows = []
    for pid, (q, gold) in rt.PROBLEMS.items():
        completion = f"{rt.thinking(pid).text}</think>{rt.answer(pid)}"
        rows.append({"id": pid, "messages": [{"role": "user", "content": q}], "completion": completion, "gold": gold})
    pid, (q, gold) = next(iter(rt.PROBLEMS.items()))
    rows.append({**rows[0], "prompt": rt.chatml(q), "sample": 1})  # messages and the prompt as text: the text is used
    t0 = time.perf_counter()
    res, run = _ingest(
        capsys, [rt.write_jsonl(tmp_path / "chat.jsonl", rows)], ckpt, tmp_path / "run", "--no-probes", "--tokenizer", str(tdir)
    )
    assert time.perf_counter() - t0 < 60
    assert "skipped 3: messages not rendered: the chat template did not render a conversation within 2 s" in res.out
    (r,) = run.samples
    assert (r.problem_id, r.sample, r.correct) == (pid, 1, True) and r.prompt_tokens > 5
    assert f"tokens counted with the tokenizer of {tdir}" in res.out


def test_records_holding_an_error_are_counted_skips(ckpt, tmp_path, capsys) -> None:
    (pa, (qa, ga)), (pb, (qb, gb)), (pc, (qc, gc)) = rt.PROBLEMS.items()
    rows = [
        {
            "id": pa,
            "prompt": rt.chatml(qa),
            "completion": f"<think>\n{rt.thinking(pa).text}\n</think>\n\n{rt.answer(pa)}",
            "gold": ga,
        },
        {"id": pb, "prompt": rt.chatml(qb), "completion": None, "error": "Request timed out after 600 s", "gold": gb},
        {
            "id": pc,
            "prompt": rt.chatml(qc),
            "content": "Error code: 429 - {'error': {'message': 'Rate limit reached'}}",
            "gold": gc,
        },
    ]
    res, run = _ingest(capsys, [rt.write_jsonl(tmp_path / "e.jsonl", rows)], ckpt, tmp_path / "run", "--no-probes")
    assert len(run.samples) == 1 and "1 traces ingested" in res.out
    skipped = run.info.ingested[0].skipped
    assert skipped == {"an error instead of a trace (an error field)": 1, "an API error message instead of a trace": 1}
    assert "e.g. 'Request timed out after 600 s'" in res.err and 'e.g. "Error code: 429' in res.err


def test_multiple_choice_answers_in_every_form(ckpt, tmp_path, capsys) -> None:
    t = rt.thinking("p-powers").text
    forms = [
        '{"answer": "B"}',
        "Answer: (B)",
        "So the choice is \\boxed{B}.",
        "Therefore the answer is (B).",
        '```json\n{"answer": "C"}\n```',
    ]
    rows = [
        {"id": f"mc{i}", "prompt": "Q <think>\n", "completion": f"{t}\n</think>\n\n{f}", "gold": "B"} for i, f in enumerate(forms)
    ]
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "ingest",
        str(rt.write_jsonl(tmp_path / "mc.jsonl", rows)),
        "--model",
        str(ckpt),
        "--answer-type",
        "mc",
        "--out",
        str(out),
        "--no-probes",
        "--no-report",
    )
    assert res.code == 0, res.err
    got = {r.problem_id: (r.answer, r.extraction, r.correct) for r in load_run(out).samples}
    assert got == {
        "mc0": ("B", "json", True),
        "mc1": ("B", "phrase", True),
        "mc2": ("B", "boxed", True),
        "mc3": ("B", "phrase", True),
        "mc4": ("C", "json", False),
    }


def test_text_only_loads_no_weights_and_drops_nothing(tmp_path, capsys, monkeypatch) -> None:
    """A model whose context is shorter than the traces: text only, every trace is kept; with probes,
    the long ones keep their grade and text metrics and only their probes are skipped."""
    import transformers

    small = rt.qwen_like_checkpoint(tmp_path / "small", context=1024)
    rows = [
        {
            "id": pid,
            "prompt": rt.chatml(q) + "<think>\n",
            "completion": f"{rt.thinking(pid, rounds=r).text}\n</think>\n\n{rt.answer(pid)}",
            "gold": g,
        }
        for (pid, (q, g)), r in zip(rt.PROBLEMS.items(), (2, 40, 80))
    ]
    path = rt.write_jsonl(tmp_path / "long.jsonl", rows)

    def no_weights(*_a, **_k):
        raise AssertionError("--no-probes loaded the model's weights")

    with monkeypatch.context() as m:
        m.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
        res, run = _ingest(capsys, [path], small, tmp_path / "text", "--no-probes")
    assert len(run.samples) == 3 and "skipped" not in res.out
    assert max(r.prompt_tokens + r.thinking_tokens + r.answer_tokens for r in run.samples) > 3000
    res, run = _ingest(capsys, [path], small, tmp_path / "probed")
    assert "2 probes skipped (longer than the model's context)" in res.out
    kept = {r.problem_id: r for r in run.samples}
    assert len(kept) == 3 and all(r.correct for r in kept.values())
    assert [pid for pid, r in kept.items() if r.layers_file] == ["p-powers"]
    from layerprobe.report import render_report

    html = render_report([tmp_path / "probed"], tmp_path / "r.html").read_text()
    assert "2 probes skipped (longer than the model&#39;s context)" in html


def test_tokenizer_of_another_model(ckpt, tmp_path, capsys) -> None:
    """The producing model is not at hand (no weights, no config offline): --tokenizer counts tokens."""
    rows = [{"id": "p-powers", "prompt": "Q", "completion": "<think>\nWait, so.\n</think>\n\\boxed{1}", "gold": "1"}]
    path = rt.write_jsonl(tmp_path / "t.jsonl", rows)
    args = ["ingest", str(path), "--model", "simplescaling/s1.1-7B", "--no-probes", "--no-report", "--answer-type", "integer"]
    res = run_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert_one_line_error(res, "--tokenizer")
    res = run_cli(capsys, *args, "--out", str(tmp_path / "b"), "--tokenizer", str(ckpt))
    assert res.code == 0, res.err
    run = load_run(tmp_path / "b")
    assert run.info.model.tokenizer == str(ckpt) and run.info.model.n_layers is None and run.samples[0].correct
    res = run_cli(capsys, *args[:-4], "--out", str(tmp_path / "c"), "--tokenizer", str(ckpt))  # s1.1 by alias: depth known
    res = run_cli(
        capsys,
        "ingest",
        str(path),
        "--model",
        "s1.1-7b",
        "--tokenizer",
        str(ckpt),
        "--no-probes",
        "--out",
        str(tmp_path / "c"),
        "--no-report",
    )
    assert res.code == 0, res.err and load_run(tmp_path / "c").info.model.n_layers == 28
    res = run_cli(capsys, "ingest", str(path), "--model", str(ckpt), "--tokenizer", str(ckpt), "--out", str(tmp_path / "d"))
    assert_one_line_error(res, "--tokenizer", "--no-probes")


def test_one_ingested_model_gets_a_report_of_its_own(ckpt, tmp_path, capsys) -> None:
    """No pruned variant, no budget in the file: the report names the producer, says the budget is not
    recorded, compares wrong traces with right ones and shows the wrong ones."""
    rows = []
    for pid, (q, g) in rt.PROBLEMS.items():
        t = rt.thinking(pid).text
        for s in range(4):
            wrong = s % 2 == 1
            body = f"<think>\n{t}\n</think>\n\n{rt.answer(pid, wrong=wrong)}" if s != 3 else f"<think>\n{t}\n\n{t}"
            rows.append(
                {"id": pid, "prompt": rt.chatml(q), "completion": body, "gold": g, "sample": s, "model": "deepseek-reasoner"}
            )
    out = tmp_path / "r1"
    res = run_cli(
        capsys,
        "ingest",
        str(rt.write_jsonl(tmp_path / "r1.jsonl", rows)),
        "--model",
        str(ckpt),
        "--answer-type",
        "integer",
        "--out",
        str(out),
        "--no-probes",
    )
    assert res.code == 0, res.err
    run = load_run(out)
    assert run.producer == "deepseek-reasoner" and not run.budget_recorded
    contrasts = {c.metric: c for c in run.metrics.outcome_contrasts}
    assert contrasts["truncated"].mean_wrong == pytest.approx(0.5) and contrasts["truncated"].mean_right == 0
    assert contrasts["thinking_tokens"].diff > 0  # the cut traces repeat their thinking: longer
    html = (out / "report.html").read_text()
    assert "traces written by <strong>deepseek-reasoner</strong>" in html
    assert "thinking budget not recorded in the ingested files" in html and "thinking budgets 0" not in html
    assert "How the wrong traces differ from the right ones" in html and "its wrong traces are shown" in html
    assert "cut before its thinking ended" in html
