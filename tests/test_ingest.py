"""`layerprobe ingest`: traces written by `layerprobe analyze` on the toy, exported as plain JSONL and
ingested again, must come back with the same grades, trace metrics, probe arrays (prefill = live) and
teacher-forced comparison; bad input is refused in one line or skipped with a count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from layerprobe.data.reader import load_run
from layerprobe.probe.layer_files import load_trace_layers
from layerprobe.probe.teacher import load_teacher_forced
from tests.cli_utils import assert_one_line_error, run_cli

FLOATS = ("block_influence", "norm", "jsd", "entropy")


def _export(run_dir: Path, dest: Path, ids: bool = True) -> dict[str, Path]:
    """One JSONL file per variant of an analyze run, written the way a user's own script would (with
    the token ids as generated, as vLLM gives them, or text only)."""
    from layerprobe.models.loading import load_model
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import FORMATS
    from layerprobe.tasks.registry import load_problems

    run = load_run(run_dir)
    tok = load_model("toy").tokenizer
    _, problems, _ = load_problems(run.info.config.task, limit=run.info.config.limit)
    question = {p.id: p.question for p in problems}
    files = {}
    for v in run.variants:
        path = dest / f"{v.name}.jsonl"
        with path.open("w") as f:
            for r in run.samples:
                if r.variant == v.name and r.mode == "sequential":
                    prompt = build_prompt(tok, FORMATS["think-tags"], question[r.problem_id])
                    row = {"id": r.problem_id, "prompt": prompt, "completion": r.text, "gold": r.gold, "group": r.group}
                    if ids:
                        row["prompt_ids"] = tok.encode(prompt, add_special_tokens=False)
                        row["completion_ids"] = load_trace_layers(run_dir / r.layers_file).tokens.tolist()
                    f.write(json.dumps(row | {"budget": r.budget, "sample": r.sample}) + "\n")
        files[v.name] = path
    return files


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    from layerprobe.cli.app import main

    root = tmp_path_factory.mktemp("ingest")
    run_dir = root / "analyzed"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "analyze",
                "--out",
                str(run_dir),
                "--limit",
                "2",
                "--budgets",
                "60",
                "--samples",
                "1",
                "--drop",
                "7,8",
                "--no-report",
                "--no-explain",
            ]
        )
    assert exc.value.code in (0, None)
    return run_dir, _export(run_dir, root)


@pytest.fixture(scope="module")
def ingested(analyzed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from layerprobe.cli.app import main

    _, files = analyzed
    out = tmp_path_factory.mktemp("ingested") / "run"
    common = ["--from", "jsonl", "--model", "toy", "--format", "think-tags", "--answer-type", "digit", "--out", str(out)]
    for args in (
        ["ingest", str(files["drop-7-8"]), *common, "--drop", "7,8", "--no-report"],  # the pruned one first: base comes later
        ["ingest", str(files["base"]), *common, "--no-report"],
    ):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None)
    return out


def test_ingest_reproduces_analyze(analyzed, ingested) -> None:
    run_dir, _ = analyzed
    a, b = load_run(run_dir), load_run(ingested)
    assert [v.name for v in b.variants] == ["base", "drop-7-8"]  # base listed first though ingested second
    assert b.info.origin == "ingest" and len(b.info.ingested) == 2
    assert [v.dropped for v in b.variants] == [[], [7, 8]]
    key = lambda r: (r.variant, r.problem_id, r.budget, r.sample)
    mine = {key(r): r for r in b.samples}
    seq = [r for r in a.samples if r.mode == "sequential"]
    assert len(mine) == len(seq) > 0
    for r in seq:
        s = mine[key(r)]
        assert s.origin == "ingested" and s.external["source"] == "jsonl"
        for field in ("correct", "answer", "gold", "thinking_tokens", "answer_tokens", "thinking_text", "group"):
            assert getattr(s, field) == getattr(r, field), (field, r.problem_id)
        # a text cannot tell an answer cut at its cap (max_tokens) from a finished one
        assert s.finish == ("answered" if r.finish == "max_tokens" else r.finish)
        assert s.reflections == r.reflections and s.repetition == r.repetition
        assert s.prompt_tokens == r.prompt_tokens
        live, pre = load_trace_layers(run_dir / r.layers_file), load_trace_layers(ingested / s.layers_file)
        assert pre.tokens.tolist() == live.tokens.tolist()
        assert pre.layers.tolist() == live.layers.tolist()
        for k in FLOATS:  # stored as float16: equal to its rounding
            np.testing.assert_allclose(getattr(pre, k), getattr(live, k), atol=1e-4, rtol=2e-3, err_msg=k)
        np.testing.assert_array_equal(pre.rank, live.rank)


def test_text_only_traces_that_round_trip(analyzed, tmp_path, capsys) -> None:
    """Without token ids the completion is re-tokenized: equal wherever decoding the generated ids and
    encoding the text again gives the same ids (a token with no text, e.g. an unused vocabulary slot a
    pruned model emits, does not survive the text)."""
    from layerprobe.models.loading import load_model

    run_dir, _ = analyzed
    files = _export(run_dir, tmp_path, ids=False)
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "ingest",
        str(files["drop-7-8"]),
        "--from",
        "jsonl",
        "--model",
        "toy",
        "--drop",
        "7,8",
        "--answer-type",
        "digit",
        "--out",
        str(out),
        "--no-report",
        "--no-probes",
    )
    assert res.code == 0, res.err
    tok = load_model("toy").tokenizer
    mine = {r.problem_id: r for r in load_run(out).samples}
    checked = 0
    for r in load_run(run_dir).samples:
        if r.variant != "drop-7-8" or r.mode != "sequential":
            continue
        ids = load_trace_layers(run_dir / r.layers_file).tokens.tolist()
        if tok.encode(tok.decode(ids, skip_special_tokens=False), add_special_tokens=False) != ids:
            continue
        s = mine[r.problem_id]
        assert (s.correct, s.answer, s.thinking_tokens, s.answer_tokens, s.thinking_text) == (
            r.correct,
            r.answer,
            r.thinking_tokens,
            r.answer_tokens,
            r.thinking_text,
        )
        checked += 1
    assert checked >= 3


def test_teacher_forced_along_ingested_base_traces(analyzed, ingested) -> None:
    run_dir, _ = analyzed
    a_files = sorted((run_dir / "layers").glob("*/tf/*.npz"))
    b_files = sorted((ingested / "layers").glob("*/tf/*.npz"))
    assert len(a_files) == len(b_files) > 0
    for fa, fb in zip(a_files, b_files):
        assert fa.name == fb.name
        ta, tb = load_teacher_forced(fa), load_teacher_forced(fb)
        assert ta.tokens.tolist() == tb.tokens.tolist()
        np.testing.assert_allclose(tb.kl, ta.kl, atol=2e-3, rtol=1e-2)  # stored as float16
    agg = load_run(ingested).layers["drop-7-8"]
    assert agg is not None and agg.teacher_forced is not None


def test_ingested_run_renders_and_compares(analyzed, ingested, tmp_path) -> None:
    from layerprobe.report import render_report

    run = load_run(ingested)
    assert run.metrics is not None and any(c.variant == "drop-7-8" for c in run.metrics.comparisons)
    html = render_report([ingested], tmp_path / "r.html").read_text()
    assert "drop-7-8" in html and "read by <code>layerprobe ingest</code>" in html
    assert "<strong>drop-7-8</strong>: 6 traces from <code>" in html and "not recorded in the ingested files" in html


def test_ingest_again_adds_nothing(analyzed, ingested, capsys) -> None:
    _, files = analyzed
    n = len(load_run(ingested).samples)
    res = run_cli(
        capsys,
        "ingest",
        str(files["base"]),
        "--from",
        "jsonl",
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(ingested),
        "--no-report",
        "--no-probes",
    )
    assert res.code == 0, res.err
    assert "0 of them new in this session" in res.out
    assert len(load_run(ingested).samples) == n


def test_bad_lines_are_skipped_and_counted(tmp_path, capsys) -> None:
    good = {"id": "p1", "prompt": "a3 b4 =", "completion": "7 </think> \\boxed{ 7 } <eos>", "gold": "7"}
    long = {"id": "p2", "prompt": "a3 b4 =", "completion": " ".join(["a3"] * 5000), "gold": "1"}
    path = tmp_path / "t.jsonl"
    bad_ids = dict(good, id="p4", completion_ids="7 </think>")
    foreign = dict(good, id="p5", completion_ids=[5, 151643])  # an id the toy's 96-token vocabulary lacks
    lines = [json.dumps(x) for x in (good, {"id": "p3", "prompt": "x"}, long, bad_ids, foreign)] + ["{not json"]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "ingest",
        str(path),
        "--from",
        "jsonl",
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(out),
        "--no-report",
    )
    assert res.code == 0, res.err
    # the trace longer than the model's context is kept, graded and measured; only its probes are skipped
    assert "2 traces ingested" in res.out and "1 probes skipped (longer than the model's context)" in res.out
    assert "skipped 1: not a JSON object" in res.out
    assert "skipped 1: missing completion" in res.out
    assert "skipped 1: prompt_ids / completion_ids not lists of token ids" in res.out
    run = load_run(out)
    rec, cut = run.samples
    assert rec.correct is True and rec.answer == "7" and rec.layers_file is not None
    assert cut.problem_id == "p2" and cut.thinking_tokens == 5000 and cut.layers_file is None
    assert cut.finish == "truncated" and cut.answer is None and not cut.correct  # no end of thinking: never graded
    assert run.info.ingested[0].skipped == {
        "not a JSON object": 1,
        "missing completion (or content / choices)": 1,
        "prompt_ids / completion_ids not lists of token ids": 1,
        "token ids outside the tokenizer's vocabulary (another tokenizer?)": 1,
    }


def test_not_an_lm_eval_file(tmp_path, capsys) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "p1", "prompt": "a", "completion": "b"}) + "\n")
    res = run_cli(capsys, "ingest", str(path), "--from", "lm-eval", "--model", "toy", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, "not an lm-evaluation-harness samples file", "--from jsonl")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--from", "csv"], ["--from csv", "lm-eval, jsonl"]),
        (["--task", "nope"], ["--task nope", "unknown task"]),
        (["--answer-type", "words"], ["--answer-type words", "integer, math, mc, digit"]),
        (["--drop", "7", "--method", "shortgpt"], ["exclusive"]),
        (["--batch-size", "0"], ["--batch-size 0"]),
    ],
)
def test_bad_options(tmp_path, capsys, args, fragments) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "p1", "prompt": "a3 b4 =", "completion": "7"}) + "\n")
    res = run_cli(capsys, "ingest", str(path), "--model", "toy", "--out", str(tmp_path / "run"), *args)
    assert_one_line_error(res, *fragments)


def test_no_readable_trace(tmp_path, capsys) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "p1", "prompt": "a3 b4 ="}) + "\n")
    res = run_cli(capsys, "ingest", str(path), "--model", "toy", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, "no trace could be read", "missing completion")


def _lm_eval_files(tmp_path: Path, eos: list[str]) -> Path:
    """A samples file and its results file as lm-evaluation-harness 0.4 writes them (--log_samples)."""
    folder = tmp_path / "out" / "model"
    folder.mkdir(parents=True)
    date = "2026-11-30T05-35-22.812851"
    line = {
        "doc_id": 0,
        "doc": {"q": "a3 b4 ="},
        "target": "7",
        "arguments": {"gen_args_0": {"arg_0": "a3 b4 =", "arg_1": {"until": ["<eos>"], "max_gen_toks": 40, "do_sample": False}}},
        "resps": [["7 </think> \\boxed{ 7 }"]],
        "filtered_resps": ["7 </think> \\boxed{ 7 }"],
        "filter": "none",
        "metrics": ["exact_match"],
        "doc_hash": "x",
        "prompt_hash": "y",
        "target_hash": "z",
        "exact_match": 0.0,
    }
    mc = dict(line, doc_id=1, arguments={"gen_args_0": {"arg_0": "a3 b4 =", "arg_1": " 7"}}, resps=[[["-1.5", "False"]]])
    samples = folder / f"samples_toyadd_{date}.jsonl"
    samples.write_text(json.dumps(line) + "\n" + json.dumps(mc) + "\n")
    results = {
        "config": {"model": "hf", "model_args": {"pretrained": "/models/other", "dtype": "float32"}},
        "tokenizer_eos_token": eos,
    }
    (folder / f"results_{date}.json").write_text(json.dumps(results))
    return samples


def test_lm_eval_file_read_with_its_metrics(tmp_path, capsys) -> None:
    from layerprobe.models.loading import load_model

    tok = load_model("toy").tokenizer
    samples = _lm_eval_files(tmp_path, [tok.eos_token, str(tok.eos_token_id)])
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "ingest",
        str(samples),
        "--from",
        "lm-eval",
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(out),
        "--no-report",
    )
    assert res.code == 0, res.err
    assert "warning" not in res.err
    assert "skipped 1: not a generate_until request" in res.out
    (rec,) = load_run(out).samples
    assert rec.problem_id == "toyadd-0" and rec.group == "toyadd" and rec.budget == 40
    assert rec.correct is True and rec.external["harness"] == {"none": {"exact_match": 0.0}}  # the harness's own value kept
    assert load_run(out).info.ingested[0].producer == "/models/other"


def test_tokenizer_mismatch_warns(tmp_path, capsys) -> None:
    samples = _lm_eval_files(tmp_path, ["<|endoftext|>", "0"])
    res = run_cli(
        capsys,
        "ingest",
        str(samples),
        "--from",
        "lm-eval",
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(tmp_path / "run"),
        "--no-report",
        "--no-probes",
    )
    assert res.code == 0, res.err
    (line,) = [x for x in res.err.splitlines() if x.strip()]
    assert line.startswith("warning: ") and "'<|endoftext|>'" in line and "another model" in line
    assert load_run(tmp_path / "run").info.ingested[0].warnings
