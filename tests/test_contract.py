"""The contract on the newer commands (explain, ingest, heal, sweeps, --variant), tried the way a hostile
or careless user would: nothing is written or read outside the run directory, a damaged run is a counted
skip that still explains and renders, bad input is one line (exit 2) within seconds."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from layerprobe.data import load_run
from tests.cli_utils import assert_one_line_error, run_cli

FAST = 5.0  # seconds: refused before any work


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished toy run with probes: base and one pruned variant."""
    from layerprobe.cli.app import main

    out = tmp_path_factory.mktemp("contract") / "run"
    args = [
        "analyze",
        "--out",
        str(out),
        "--limit",
        "3",
        "--budgets",
        "60",
        "--samples",
        "1",
        "--drop",
        "7,8",
        "--no-report",
        "--no-explain",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]


def _write_lines(run: Path, lines: list[dict]) -> None:
    (run / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


# ------------------------------------------------------------------------------ names and paths


@pytest.mark.parametrize("label", ["../../../escaped", "x/y", "[/x]", "[bold red]BIG[/bold red]", "", "a" * 65])
def test_labels_that_would_leave_the_run_or_be_markup_are_refused(tmp_path, capsys, label) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "p1", "prompt": "a3 b4 =", "completion": "7 </think> \\boxed{ 7 }", "gold": "7"}) + "\n")
    out = tmp_path / "o" / "run"
    t0 = time.monotonic()
    res = run_cli(capsys, "ingest", str(path), "--model", "toy", "--answer-type", "digit", "--out", str(out), "--label", label)
    assert_one_line_error(res, "--label", "letters, digits")
    assert time.monotonic() - t0 < FAST
    assert not (tmp_path / "o").exists() and not list(tmp_path.rglob("escaped*"))


def test_variant_names_follow_the_same_rule(tmp_path, capsys, tiny_checkpoint_dir) -> None:
    for name in ("../x", "[b]x[/b]", "a/b"):
        res = run_cli(capsys, "analyze", "--variant", f"{name}={tiny_checkpoint_dir}", "--out", str(tmp_path / "r"))
        assert_one_line_error(res, "--variant", "letters, digits")
    assert not (tmp_path / "r").exists()


def test_paths_read_from_run_files_stay_inside_the_run(analyzed, tmp_path, capsys) -> None:
    """A samples.jsonl line pointing outside the run is a damaged line (counted, skipped); a probe file
    replaced by a link to a file outside the run is not followed; explain and the report still work."""
    run = _copy(analyzed, tmp_path / "run")
    lines = _lines(run)
    base = [i for i, x in enumerate(lines) if x["variant"] == "base" and x["layers_file"]]
    lines[base[0]]["layers_file"] = "../../../../../../etc/passwd"
    _write_lines(run, lines)
    link = run / lines[base[1]]["layers_file"]
    link.unlink()
    link.symlink_to("/etc/hostname")
    loaded = load_run(run)
    assert loaded.skipped_lines == 1 and len(loaded.samples) == len(lines) - 1
    res = run_cli(capsys, "explain", str(run), "--no-generation")
    assert res.code == 0, res.err
    assert run_cli(capsys, "report", str(run)).code == 0


# ------------------------------------------------------------------------------ damaged runs


def test_damaged_probe_and_teacher_forced_files_are_counted_skips(analyzed, tmp_path, capsys) -> None:
    run = _copy(analyzed, tmp_path / "run")
    probes = sorted((run / "layers" / "base").glob("*.npz"))
    tf = sorted((run / "layers" / "drop-7-8" / "tf").glob("*.npz"))
    assert len(probes) >= 3 and len(tf) >= 2
    probes[0].write_text("not an array file")  # overwritten with text
    probes[1].write_bytes(probes[1].read_bytes()[:200])  # truncated
    probes[2].write_bytes(b"")  # emptied to 0 bytes (numpy raises EOFError, which click once took for Ctrl-D)
    tf[0].write_bytes(b"PK\x03\x04 corrupt")
    tf[1].unlink()
    res = run_cli(capsys, "explain", str(run), "--no-generation")
    assert res.code == 0, res.err
    assert "could not be read (damaged) and were left out" in res.out
    ex = json.loads((run / "explain.json").read_text())
    assert any("damaged" in s for s in ex["skipped"])
    assert run_cli(capsys, "report", str(run)).code == 0


def test_dropped_layers_out_of_range_in_run_json(analyzed, tmp_path, capsys) -> None:
    run = _copy(analyzed, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["variants"][1]["dropped"] = [7, 50]
    (run / "run.json").write_text(json.dumps(info))
    for cmd in (["explain", str(run)], ["report", str(run)]):
        assert_one_line_error(run_cli(capsys, *cmd), "drops layers outside the model's 0..11")


# ------------------------------------------------------------------------------ explain on runs it should handle


def test_explain_on_a_run_killed_mid_generation(analyzed, tmp_path, capsys) -> None:
    """Only the per-trace probe files exist (the per-layer summaries are written at the end)."""
    run = _copy(analyzed, tmp_path / "run")
    for agg in (run / "layers").glob("*.json"):
        agg.unlink()
    (run / "metrics.json").unlink()
    info = json.loads((run / "run.json").read_text())
    info["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(info))
    lines = _lines(run)
    _write_lines(run, lines[: len(lines) - 2])
    res = run_cli(capsys, "explain", str(run), "--no-generation")
    assert res.code == 0, res.err
    assert json.loads((run / "explain.json").read_text())["restoration"]


def test_force_with_other_settings_sets_the_old_explanation_aside(analyzed, tmp_path, capsys) -> None:
    run = _copy(analyzed, tmp_path / "run")
    assert run_cli(capsys, "explain", str(run), "--no-generation", "--no-report").code == 0
    args = ["analyze", "--out", str(run), "--limit", "1", "--budgets", "8", "--samples", "1", "--drop", "10,11", "--no-explain"]
    res = run_cli(capsys, *args, "--no-probes", "--force")
    assert res.code == 0, res.err
    assert not (run / "explain.json").exists() and list(run.glob("explain.json.*.bak"))
    html = (run / "report.html").read_text()
    assert "drop-7-8" not in html
    # an explain.json written for other variants, put back by hand, is not shown either
    shutil.copy(next(run.glob("explain.json.*.bak")), run / "explain.json")
    loaded = load_run(run)
    assert "explain.json" not in loaded.extras and any("other variants" in n for n in loaded.notes)


# ------------------------------------------------------------------------------ ingest


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


TRACE = "s1 3 +4 = 7 </think> \\boxed{ 7 }"


@pytest.mark.parametrize("answer_type", ["digit", "integer"])
def test_gold_answers_of_every_shape(tmp_path, capsys, answer_type) -> None:
    golds = [None, ["7"], {"a": 7}, "", "four", 7, "7"]
    rows = [
        {"id": f"p{i}", "prompt": "x = 3 s1 +4", "completion": TRACE, **({} if g is None else {"gold": g})}
        for i, g in enumerate(golds)
    ]
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "ingest",
        str(_jsonl(tmp_path / "g.jsonl", rows)),
        "--model",
        "toy",
        "--answer-type",
        answer_type,
        "--out",
        str(out),
        "--no-probes",
    )
    assert res.code == 0, res.err
    recs = {r.problem_id: r for r in load_run(out).samples}
    assert [recs[f"p{i}"].correct for i in range(len(golds))] == [None, None, None, None, None, True, True]
    assert all(recs[f"p{i}"].answer == "7" for i in range(len(golds)))  # the answer is still read
    m = load_run(out).metrics
    assert m.variants["base"].groups["all"].sequential["0"].n == 2 and m.grading["base"].ungraded == 5
    assert "not graded (no gold answer in any of the fields gold, answer, target, solution or expected)" in res.out


def test_foreign_values_that_are_not_what_they_should_be(tmp_path, capsys) -> None:
    rows = [
        {"id": "ok", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"},
        {"id": "neg", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7", "budget": -5},
        {"id": "sur", "prompt": "x = 3 s1 +4", "completion": "s1 3 +4 = 7 \ud800 </think> \\boxed{ 7 }", "gold": "7"},
        '{"id": "esc", "prompt": "x", "completion": "s1 \\ud800 </think> \\\\boxed{ 7 }", "gold": "7"}',
        "x" * (5 * 2**20),  # one 5 MiB line: skipped without being decoded or tokenized
    ]
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = run_cli(
        capsys,
        "ingest",
        str(_jsonl(tmp_path / "f.jsonl", rows)),
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(out),
        "--no-probes",
    )
    assert res.code == 0, res.err
    assert time.monotonic() - t0 < 60
    run = load_run(out)
    assert sorted(r.problem_id for r in run.samples) == ["esc", "ok", "sur"]
    assert "\ufffd" in next(r for r in run.samples if r.problem_id == "esc").text
    assert run.info.ingested[0].skipped == {
        "budget / sample not integers from 0 to 1,000,000,000": 1,
        "a line over 4 MiB (not read)": 1,
    }
    for cmd in (["report", str(out)], ["runs", str(tmp_path)]):
        assert run_cli(capsys, *cmd).code == 0


def test_lm_eval_values_that_are_not_numbers(tmp_path, capsys) -> None:
    folder = tmp_path / "lm"
    folder.mkdir()
    kwargs = {"until": [], "do_sample": True, "temperature": "hot", "top_p": "very", "top_k": [3], "max_gen_toks": "many"}
    line = {
        "doc_id": 0,
        "doc": {},
        "target": "7",
        "arguments": {"gen_args_0": {"arg_0": "x = 3 s1 +4", "arg_1": kwargs}},
        "resps": [[TRACE]],
        "filtered_resps": [TRACE],
    }
    samples = _jsonl(folder / "samples_t_2026-01-01T00-00-00.jsonl", [line])
    (folder / "results_2026-01-01T00-00-00.json").write_text(
        json.dumps({"tokenizer_eos_token": ["<eos>", "²"], "config": {"model_args": 5}})
    )
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
        "--no-probes",
    )
    assert res.code == 0, res.err
    cfg = load_run(out).info.config
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.budgets) == (None, None, None, [0])


def test_the_same_label_for_another_model_is_refused(tmp_path, capsys) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"id": "p1", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"}])
    out = tmp_path / "run"
    common = [
        "ingest",
        str(path),
        "--model",
        "toy",
        "--answer-type",
        "digit",
        "--out",
        str(out),
        "--no-probes",
        "--label",
        "pruned",
    ]
    assert run_cli(capsys, *common, "--drop", "7,8").code == 0
    assert_one_line_error(run_cli(capsys, *common), "already has a variant pruned (without layers 7, 8)", "another --label")
    assert load_run(out).variants[0].dropped == [7, 8]


def test_heal_data_with_lone_surrogates_is_read(tmp_path) -> None:
    from layerprobe.prune.heal import read_jsonl_examples

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a \\ud800", "completion": "b \\udfff c"}\n')
    assert read_jsonl_examples(path) == [("a \ufffd", "b \ufffd c")]


# ------------------------------------------------------------------------------ analyze and sweeps


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--workers", "1", "--gpus-per-worker", "1"], ["--gpus-per-worker 1", "this machine has 0"]),
        (["--workers", "1000"], ["--workers 1000", "CPU core"]),
        (["--workers", "1", "--gpus-per-worker", "nan"], ["--gpus-per-worker nan"]),
        (["--workers", "1", "--gpus-per-worker", "inf"], ["--gpus-per-worker inf"]),
        (["--sweep", "single", "--sweep-layers", ""], ["--sweep-layers ''"]),
        (["--sweep", "single", "--sweep-layers", ","], ["--sweep-layers ','"]),
        (["--workers", "1", "--ray-address", "127.0.0.1:9"], ["--ray-address 127.0.0.1:9", "nothing answers"]),
        (["--workers", "1", "--ray-address", "nohost"], ["--ray-address nohost", "host:port"]),
    ],
)
def test_bad_executor_and_sweep_settings_fail_fast(tmp_path, capsys, args, fragments) -> None:
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = run_cli(capsys, "analyze", "--out", str(out), "--limit", "1", "--budgets", "8", "--samples", "1", *args)
    assert_one_line_error(res, *fragments)
    assert time.monotonic() - t0 < 15
    assert not out.exists() or not (out / "samples.jsonl").exists()


def test_a_replaced_variant_checkpoint_is_not_resumed(tmp_path, capsys) -> None:
    """The run's --variant checkpoint is replaced by other weights between two runs of the same command:
    resuming would mix two models' traces under one name."""
    from safetensors.torch import load_file, save_file

    from layerprobe.models.aliases import ALIASES, shipped_dir

    ckpt = tmp_path / "healed"
    shutil.copytree(shipped_dir(ALIASES["toy"]), ckpt)
    out = tmp_path / "run"
    args = [
        "analyze",
        "--out",
        str(out),
        "--limit",
        "1",
        "--budgets",
        "8",
        "--samples",
        "1",
        "--variant",
        f"h={ckpt}",
        "--no-probes",
        "--no-report",
    ]
    assert run_cli(capsys, *args).code == 0
    weights = load_file(ckpt / "model.safetensors")
    weights = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in weights.items()}
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    res = run_cli(capsys, *args)
    assert_one_line_error(res, "the weights of checkpoint variant h", "--force")


# ------------------------------------------------------------------------------ links, odd types, bounds


def _ingest_args(path: Path, out: Path, *extra: str) -> list[str]:
    return ["ingest", str(path), "--model", "toy", "--answer-type", "digit", "--out", str(out), "--no-report", *extra]


def test_links_that_lead_out_of_a_run_are_refused(tmp_path, capsys) -> None:
    """samples.jsonl or layers/ replaced by a link to something outside the run: nothing is read through
    it and nothing is written or cut there (the file outside keeps its bytes)."""
    path = _jsonl(tmp_path / "t.jsonl", [{"id": "p1", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"}])
    out = tmp_path / "run"
    assert run_cli(capsys, *_ingest_args(path, out)).code == 0
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"KEEP\nIMPORTANT")
    (out / "samples.jsonl").unlink()
    (out / "samples.jsonl").symlink_to(outside)
    for cmd in (_ingest_args(path, out), ["report", str(out)], ["explain", str(out)]):
        assert_one_line_error(run_cli(capsys, *cmd), "samples.jsonl is a link", "outside the run")
    assert outside.read_bytes() == b"KEEP\nIMPORTANT"
    (out / "samples.jsonl").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(out / "layers")
    (out / "layers").symlink_to(elsewhere)
    assert_one_line_error(run_cli(capsys, *_ingest_args(path, out, "--label", "second", "--drop", "7")), "layers is a link")
    assert list(elsewhere.iterdir()) == []


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("case", "report_code"),
    [
        ("run-version-string", 2),
        ("run-version-list", 2),
        ("run-huge-pid", 2),
        ("run-huge-depth", 2),
        ("run-no-variants", 2),
        ("metrics-version-string", 0),
        ("sample-v1-bad-repetition", 0),
        ("sample-huge-budget", 0),
        ("sample-huge-tokens", 0),
        ("layers-v1-bad-files", 0),
    ],
)
def test_run_files_with_values_of_the_wrong_type_or_size(analyzed, tmp_path, capsys, case, report_code) -> None:
    """Each of these once ended in an internal error (exit 1) in report, explain or `runs` of the whole
    folder: a damaged run.json is one line (exit 2), any other damaged file a counted skip."""
    import socket

    parent = tmp_path / "runs"
    run = _copy(analyzed, parent / "run")
    kind, _, what = case.partition("-")
    if kind == "run":
        changes = {
            "version-string": {"schema_version": "3"},
            "version-list": {"schema_version": [3]},
            "huge-pid": {"status": "running", "pid": 10**30, "host": socket.gethostname()},
            "huge-depth": {"model": {**json.loads((run / "run.json").read_text())["model"], "n_layers": 10**12}},
            "no-variants": {"variants": []},
        }[what]
        _edit_json(run / "run.json", **changes)
    elif kind == "metrics":
        _edit_json(run / "metrics.json", schema_version="3")
    elif kind == "sample":
        lines = _lines(run)
        lines[0].update(
            {
                "v1-bad-repetition": {"schema_version": 1, "repetition": [1, 2]},
                "huge-budget": {"budget": 10**30},
                "huge-tokens": {"thinking_tokens": 10**30, "prompt_tokens": 10**30},
            }[what]
        )
        _write_lines(run, lines)
    else:
        _edit_json(run / "layers" / "base.json", schema_version=1, teacher_forced={"files": 5})
    res = run_cli(capsys, "report", str(run))
    if report_code == 2:
        assert_one_line_error(res, "run.json")
    else:
        assert res.code == 0, res.err
    listing = run_cli(capsys, "runs", str(parent))
    assert listing.code == 0, listing.err
    if kind == "sample":
        assert load_run(run).skipped_lines == 1


def test_bad_ingest_values_are_counted_or_refused(tmp_path, capsys) -> None:
    good = {"id": "p1", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"}
    rows = [
        good,
        {**good, "id": "p2", "budget": int("9" * 260)},
        {**good, "id": "p3", "sample": int("9" * 260)},
        {**good, "id": "p4", "completion_ids": [True, False]},
    ]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = tmp_path / "run"
    res = run_cli(capsys, *_ingest_args(bom, out, "--no-probes"))
    assert res.code == 0, res.err
    skipped = load_run(out).info.ingested[0].skipped
    assert skipped == {
        "budget / sample not integers from 0 to 1,000,000,000": 2,
        "prompt_ids / completion_ids not lists of token ids": 1,
    }
    assert [r.problem_id for r in load_run(out).samples] == ["p1"]  # the first line, after the byte-order mark

    # every trace filtered after reading (token ids no tokenizer has): exit 2 and no run left behind
    none_fit = _jsonl(tmp_path / "ids.jsonl", [{**good, "prompt_ids": [10**12]}])
    fresh = tmp_path / "fresh"
    assert_one_line_error(run_cli(capsys, *_ingest_args(none_fit, fresh, "--no-probes")), "no trace of", "could be kept")
    assert not fresh.exists()
    assert_one_line_error(run_cli(capsys, *_ingest_args(tmp_path, tmp_path / "x")), "not a file")
    assert_one_line_error(run_cli(capsys, *_ingest_args(Path("/dev/null"), tmp_path / "x")), "not a file")


def test_lm_eval_metric_lists_with_odd_entries(tmp_path, capsys) -> None:
    folder = tmp_path / "lm"
    folder.mkdir()
    line = {
        "doc_id": 0,
        "doc": {},
        "target": "7",
        "arguments": {"gen_args_0": {"arg_0": "x = 3 s1 +4", "arg_1": {"until": [], "max_gen_toks": 10**300}}},
        "resps": [[TRACE]],
        "filtered_resps": [TRACE],
        "metrics": [{"a": 1}, ["b"], "exact_match"],
        "exact_match": 1.0,
    }
    samples = _jsonl(folder / "samples_t_2026-01-01T00-00-00.jsonl", [line])
    res = run_cli(capsys, *_ingest_args(samples, tmp_path / "run", "--from", "lm-eval", "--no-probes"))
    assert res.code == 0, res.err
    rec = load_run(tmp_path / "run").samples[0]
    assert rec.budget_recorded is False  # a budget of 10**300 tokens is not one
    assert json.dumps(rec.external).count("exact_match") >= 1


def test_repeated_ingest_counts_the_variants_traces_and_says_what_was_damaged(tmp_path, capsys) -> None:
    rows = [{"id": f"p{i}", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"} for i in range(5)]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "run"
    assert run_cli(capsys, *_ingest_args(path, out, "--no-probes")).code == 0
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join([lines[0], "garbage", lines[1], *lines[1:]]) + "\n")
    res = run_cli(capsys, *_ingest_args(path, out, "--no-probes"))
    assert res.code == 0, res.err
    assert "5 traces ingested as variant base, 0 of them new in this session" in res.out
    assert "note: 1 damaged line of samples.jsonl skipped" in res.out
    assert "note: 1 line of samples.jsonl repeats a trace already there (the first kept)" in res.out
    assert load_run(out).info.ingested[0].traces == 5


def test_ingest_force_replaces_a_damaged_run_json(tmp_path, capsys) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"id": "p1", "prompt": "x = 3 s1 +4", "completion": TRACE, "gold": "7"}])
    out = tmp_path / "run"
    assert run_cli(capsys, *_ingest_args(path, out, "--no-probes")).code == 0
    (out / "run.json").write_text("")
    assert_one_line_error(run_cli(capsys, *_ingest_args(path, out, "--no-probes")), "cannot be read", "--force")
    res = run_cli(capsys, *_ingest_args(path, out, "--no-probes", "--force"))
    assert res.code == 0, res.err
    assert len(load_run(out).samples) == 1


def test_files_that_cannot_be_written_are_one_line(analyzed, tmp_path, capsys) -> None:
    """A run file that cannot be replaced (here its temporary name is taken by a folder; permissions and
    a full disk fail the same way) is exit 2 naming the file; explain says so before loading a model."""
    run = _copy(analyzed, tmp_path / "run")
    (run / "run.json.tmp").mkdir()
    args = [
        "analyze",
        "--out",
        str(run),
        "--limit",
        "3",
        "--budgets",
        "60",
        "--samples",
        "1",
        "--drop",
        "7,8",
        "--no-report",
        "--no-explain",
    ]
    assert_one_line_error(run_cli(capsys, *args), "run.json", "cannot be written")
    (run / "run.json.tmp").rmdir()
    (run / ".write-test").mkdir()
    (run / ".write-test" / "x").write_text("")
    t0 = time.monotonic()
    assert_one_line_error(run_cli(capsys, "explain", str(run)), "not writable")
    assert time.monotonic() - t0 < FAST


def test_bad_analyze_values_that_once_were_internal_errors(tmp_path, capsys) -> None:
    ckpt = tmp_path / "ck"
    from layerprobe.models.aliases import ALIASES, shipped_dir

    shutil.copytree(shipped_dir(ALIASES["toy"]), ckpt)
    (ckpt / "layerprobe.json").write_text(
        json.dumps(
            {
                "name": "toy",
                "source": "toy",
                "n_layers_original": 12,
                "n_layers": 12,
                "dropped": [99, -1],
                "layer_map": list(range(12)),
            }
        )
    )
    out = tmp_path / "run"
    common = ["analyze", "--out", str(out), "--limit", "1", "--budgets", "8", "--samples", "1", "--no-report"]
    cases = [
        (["--temperature", "nan"], ["--temperature nan"]),
        (["--temperature", "inf"], ["--temperature inf"]),
        (["--sweep", "single", "--sweep-layers", "0-99999999999999"], ["--sweep-layers", "at most 10,000"]),
        (["--variant", f" x ={ckpt}"], ["--variant ' x '"]),
        (["--variant", f"ok={ckpt}"], ["layerprobe.json disagrees", "dropped layers"]),
        (["--model", ""], ["--model ''", "empty"]),
        (["--parallel-budget", str(10**12)], ["--parallel-budget"]),
    ]
    for extra, fragments in cases:
        t0 = time.monotonic()
        assert_one_line_error(run_cli(capsys, *common, *extra), *fragments)
        assert time.monotonic() - t0 < 30, extra
        assert not (out / "samples.jsonl").exists()
    assert_one_line_error(run_cli(capsys, "report", str(tmp_path), "--out", ""), "--out ''")
