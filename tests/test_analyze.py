"""`layerprobe analyze` end to end on the toy with tiny settings: files, schema, consistency, resume,
refusal of changed settings, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from layerprobe.data import LayerAggregates, MetricsFile, RunInfo, SampleRecord, read_samples
from layerprobe.data.schema import SCHEMA_VERSION
from layerprobe.data.store import iter_sample_lines
from layerprobe.jobs.plan import plan_traces
from layerprobe.metrics import proportion_interval
from tests.cli_utils import assert_one_line_error, run_cli

TINY = [
    "--limit",
    "2",
    "--budgets",
    "6,20",
    "--samples",
    "3",
    "--drop",
    "10,11",
    "--method",
    "reverse",
    "--n-drop",
    "1",
    "--no-report",
    "--no-explain",
    "--seed",
    "7",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analyze") / "run"
    from layerprobe.cli.app import main

    try:
        main(["analyze", "--out", str(out), *TINY])
    except SystemExit as exc:
        assert not exc.code, exc.code
    return out


def test_every_file_present_and_schema_valid(tiny_run: Path) -> None:
    info = RunInfo.model_validate_json((tiny_run / "run.json").read_text())
    assert info.status == "complete" and info.schema_version == SCHEMA_VERSION
    assert [v.name for v in info.variants] == ["base", "drop-10-11", "reverse-1"]
    assert info.variants[1].dropped == [10, 11] and info.variants[2].dropped == [11]
    assert info.variants[1].layer_map == list(range(10))
    assert info.model.n_layers == 12 and info.config.samples == 3 and info.config.budgets == [6, 20]
    lines = list(iter_sample_lines(tiny_run))
    recs = [SampleRecord.model_validate(line) for line in lines]
    assert len(recs) == info.expected_traces
    keys = [r.key() for r in recs]
    assert len(set(keys)) == len(keys)
    MetricsFile.model_validate_json((tiny_run / "metrics.json").read_text())
    json.loads((tiny_run / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    for v in info.variants:
        agg = LayerAggregates.model_validate_json((tiny_run / "layers" / f"{v.name}.json").read_text())
        assert agg.layers == v.layer_map
        assert len(agg.per_layer.block_influence) == len(agg.layers)
        assert (agg.teacher_forced is None) == (v.name == "base")


def test_trace_contents_follow_the_settings(tiny_run: Path) -> None:
    recs = read_samples(tiny_run)
    problems = {r.problem_id for r in recs}
    assert len(problems) == 6  # 2 per group, toy-mix has 3 groups
    assert Counter(r.group for r in recs if r.variant == "base" and r.mode == "sequential") == {"long": 4, "short": 4, "facts": 4}
    for r in recs:
        assert r.thinking_tokens <= r.budget
        assert r.budget_hit == (r.thinking_tokens >= r.budget)
        assert r.finish in ("answered", "max_tokens") if not r.budget_hit else r.finish in ("budget", "max_tokens")
        assert r.correct == (r.answer == r.gold)
        assert r.layers_file is not None
        arr = np.load(tiny_run / r.layers_file)
        assert arr["block_influence"].shape[1] == {"base": 12, "drop-10-11": 10, "reverse-1": 11}[r.variant]
        # one probe row per generated token (thinking, answer and the format's own delimiters)
        assert arr["tokens"].shape[0] >= r.thinking_tokens + r.answer_tokens
    # the same seed for a problem in every variant: variants are paired
    seeds = {(r.problem_id, r.mode, r.budget, r.sample): r.seed for r in recs if r.variant == "base"}
    assert all(seeds[(r.problem_id, r.mode, r.budget, r.sample)] == r.seed for r in recs)
    # pruned sequential traces at the largest budget point at their teacher-forced file
    tf = [r for r in recs if r.variant != "base" and r.mode == "sequential" and r.budget == 20]
    assert tf and all(r.tf_file and (tiny_run / r.tf_file).is_file() for r in tf)
    kl = np.load(tiny_run / tf[0].tf_file)["kl"]
    assert kl.ndim == 1 and np.all(kl >= -1e-3)


def test_metrics_agree_with_the_samples(tiny_run: Path) -> None:
    recs = read_samples(tiny_run)
    m = json.loads((tiny_run / "metrics.json").read_text())
    for variant in ("base", "drop-10-11", "reverse-1"):
        for group in ("all", "long", "short", "facts"):
            sel = [r for r in recs if r.variant == variant and (group == "all" or r.group == group)]
            for b in (6, 20):
                seq = [r for r in sel if r.mode == "sequential" and r.budget == b]
                cell = m["variants"][variant]["groups"][group]["sequential"][str(b)]
                c = sum(r.correct for r in seq)
                assert cell["n"] == len(seq) and cell["correct"] == c
                assert cell["ci"] == pytest.approx(list(proportion_interval(c, len(seq))))
            par = [r for r in sel if r.mode == "parallel"]
            by_p: dict[str, list[bool]] = {}
            for r in sorted(par, key=lambda r: r.sample):
                by_p.setdefault(r.problem_id, []).append(r.correct)
            cov = np.mean([any(v) for v in by_p.values()])
            assert m["variants"][variant]["groups"][group]["parallel"]["cov_at_k"]["3"]["value"] == pytest.approx(cov)
            loops = np.mean([r.repetition.loop for r in sel])
            assert m["variants"][variant]["groups"][group]["behaviour"]["loop_rate"] == pytest.approx(loops)
    cmp = [
        c
        for c in m["comparisons"]
        if c["variant"] == "drop-10-11" and c["group"] == "all" and c["budget"] == 20 and c["mode"] == "sequential"
    ]
    assert len(cmp) == 1
    base = np.mean([r.correct for r in recs if r.variant == "base" and r.mode == "sequential" and r.budget == 20])
    assert cmp[0]["mean_a"] == pytest.approx(base)


def test_parallel_sample_zero_is_the_sequential_trace(tiny_run: Path) -> None:
    """Same seed and budget: the run reuses the sequential trace instead of generating it twice."""
    recs = {r.key(): r for r in read_samples(tiny_run)}
    for (variant, pid, mode, budget, sample), r in recs.items():
        if mode == "parallel" and sample == 0:
            seq = recs[(variant, pid, "sequential", budget, 0)]
            assert seq.text == r.text and seq.seed == r.seed


def test_rerun_same_settings_adds_nothing(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (tiny_run / "samples.jsonl").read_bytes()
    res = run_cli(capsys, "analyze", "--out", str(tiny_run), *TINY)
    assert res.code == 0, res.err
    assert (tiny_run / "samples.jsonl").read_bytes() == before
    assert "reverse-1" in res.out and "B=20" in res.out


def test_changed_settings_are_refused(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a if a != "3" else "4" for a in TINY]  # --samples 3 -> 4
    res = run_cli(capsys, "analyze", "--out", str(tiny_run), *args)
    assert_one_line_error(res, "different settings", "samples", "--force")


def test_plan_seeds_are_per_sample_and_shared_across_budgets() -> None:
    plan = plan_traces(["p1", "p2"], [4, 8], 3, 8, run_seed=1)
    seq = [t for t in plan if t.mode == "sequential"]
    par = [t for t in plan if t.mode == "parallel"]
    assert len(seq) == 4 and len(par) == 6
    assert {t.seed for t in seq if t.problem_id == "p1"} == {next(t.seed for t in par if t.problem_id == "p1" and t.sample == 0)}
    assert len({t.seed for t in par}) == 6
    assert plan == plan_traces(["p1", "p2"], [4, 8], 3, 8, run_seed=1)
    assert plan != plan_traces(["p1", "p2"], [4, 8], 3, 8, run_seed=2)


def _cli_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return env


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--budgets", "0,16"], ["--budgets", "positive"]),
        (["--budgets", "-4"], ["--budgets"]),
        (["--budgets", "8,x"], ["--budgets", "integers"]),
        (["--samples", "0"], ["--samples 0", "between 1 and"]),
        (["--task", "nope"], ["--task nope", "toy-mix"]),
        (["--model", "/no/such/model"], ["/no/such/model"]),
        (["--n-drop", "2"], ["--n-drop", "--method"]),
        (["--drop", "3,x"], ["--drop"]),
        (["--drop", "99"], ["99"]),
        (["--method", "nope", "--n-drop", "1"], ["nope", "shortgpt"]),
        (["--wait", "-1"], ["--wait"]),
        (["--temperature", "-0.5"], ["--temperature"]),
        (["--lens-every", "0"], ["--lens-every"]),
        (["--explain", "--no-probes"], ["--explain", "--no-probes"]),
        (["--explain", "--sweep", "single"], ["--explain", "sweep"]),
        (["--calib", "/no/such/calib.txt", "--method", "shortgpt", "--n-drop", "1"], ["--calib", "no such file"]),
        (["--task-file", "/no/such/tasks.jsonl"], ["--task-file", "no such file"]),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    args: list[str], fragments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "r"), "--no-report", "--limit", "1", *args)
    assert_one_line_error(res, *fragments)


def test_analyze_flags_are_checked_by_the_settings() -> None:
    """The checks live in AnalyzeSettings.check, so a library caller gets them too, before any work."""
    from layerprobe.errors import UserError
    from layerprobe.jobs.plan import AnalyzeSettings

    for bad, words in [
        (AnalyzeSettings(explain=True, probes=False), "--no-probes"),
        (AnalyzeSettings(explain=True, sweep="single"), "sweep"),
        (AnalyzeSettings(calib="/no/such/calib.txt"), "no such file"),
        (AnalyzeSettings(task_file="/no/such/tasks.jsonl"), "no such file"),
    ]:
        with pytest.raises(UserError, match=words):
            bad.check()
    AnalyzeSettings(explain=True).check()  # the default run with --explain is fine


def test_task_file_with_a_toy_task_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "probs.jsonl"
    f.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n')
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "r"), "--no-report", "--limit", "1", "--task-file", str(f))
    assert_one_line_error(res, "--task-file", "toy-mix")


def test_unwritable_out_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli(
        capsys,
        "analyze",
        "--out",
        str(blocker / "sub"),
        "--no-report",
        "--limit",
        "1",
        "--budgets",
        "4",
        "--samples",
        "1",
        "--drop",
        "3",
    )
    assert_one_line_error(res, "--out")
    res = run_cli(
        capsys, "analyze", "--out", str(blocker), "--no-report", "--limit", "1", "--budgets", "4", "--samples", "1", "--drop", "3"
    )
    assert_one_line_error(res, "--out", "not a directory")


def test_runs_lists_the_run(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(capsys, "runs", str(tiny_run.parent))
    assert res.code == 0, res.err
    assert "complete" in res.out and tiny_run.name in res.out and "toy-mix" in res.out
    res = run_cli(capsys, "runs", str(tiny_run.parent / "missing"))
    assert_one_line_error(res, "no such folder")


def test_runs_keeps_a_long_run_name_on_one_line(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The name is what a user copies into `report` or `explain`: never folded at 80 columns."""
    name = "smollm2-135m-drop-20-21-shortgpt-2-reverse-2-limit-100-budgets-2048"
    shutil.copytree(tiny_run, tmp_path / "many" / name)
    res = run_cli(capsys, "runs", str(tmp_path / "many"))
    assert res.code == 0, res.err
    row = next(line for line in res.out.splitlines() if name in line)
    assert "toy-mix" in row and "complete" in row, res.out  # the other columns are not squeezed away


def test_out_of_memory_halves_the_batch_and_keeps_finished_traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA out-of-memory error mid-batch: traces already written stay, the rest is retried at half the
    batch size, and the run ends with every trace exactly once."""
    import torch

    from layerprobe.jobs.analyze import Analysis
    from layerprobe.jobs.plan import AnalyzeSettings
    from layerprobe.scaling.engine import TraceGenerator

    real = TraceGenerator.generate
    calls: list[int] = []

    def flaky(self, requests, batch_size=16, observers=(), on_result=None):
        calls.append(batch_size)
        if len(calls) == 1:

            def two_then_oom(res):
                on_result(res)
                if sum(1 for _ in seen) >= 1:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                seen.append(res)

            seen: list = []
            return real(self, requests, batch_size, observers, two_then_oom)
        return real(self, requests, batch_size, observers, on_result)

    monkeypatch.setattr(TraceGenerator, "generate", flaky)
    s = AnalyzeSettings(
        drops=[[11]], budgets=[6], samples=2, limit=1, out=tmp_path / "oom", report=False, batch_size=8, teacher_forced=False
    )
    a = Analysis(s)
    a.run()
    assert calls[0] == 8 and calls[1] == 4
    recs = read_samples(a.out)
    keys = [r.key() for r in recs]
    assert len(keys) == len(set(keys)) == a.info.expected_traces


def test_an_internal_error_marks_the_run_failed_and_it_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception that is not a stop request: status "failed", finished traces kept; a re-run completes it."""
    from layerprobe.jobs.analyze import Analysis
    from layerprobe.jobs.plan import AnalyzeSettings
    from layerprobe.scaling.engine import TraceGenerator

    real = TraceGenerator.generate

    def broken(self, requests, batch_size=16, observers=(), on_result=None):
        def one_then_fail(res):
            on_result(res)
            raise RuntimeError("simulated internal error")

        return real(self, requests, batch_size, observers, one_then_fail)

    s = AnalyzeSettings(drops=[[11]], budgets=[6], samples=2, limit=1, out=tmp_path / "f", report=False, teacher_forced=False)
    monkeypatch.setattr(TraceGenerator, "generate", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        Analysis(s).run()
    info = RunInfo.model_validate_json((tmp_path / "f" / "run.json").read_text())
    assert info.status == "failed"
    kept = [r.key() for r in read_samples(tmp_path / "f")]
    assert len(kept) == 1
    monkeypatch.setattr(TraceGenerator, "generate", real)
    a = Analysis(s)
    a.run()
    keys = [r.key() for r in read_samples(a.out)]
    assert kept[0] in keys and len(keys) == len(set(keys)) == a.info.expected_traces
    assert RunInfo.model_validate_json((a.out / "run.json").read_text()).status == "complete"


def test_trace_file_names_are_unique_per_problem_id() -> None:
    from layerprobe.data.schema import trace_file_stem

    ids = ["p 2", "p_2", "p/2", "P_2", "a" * 200, "a" * 199 + "b"]
    stems = [trace_file_stem(i, "sequential", 64, 0) for i in ids]
    assert len(set(stems)) == len(ids)
    assert len(set(s.lower() for s in stems)) == len(ids)  # case-insensitive file systems too
    assert all("/" not in s and len(s) < 100 for s in stems)


def test_duplicate_problem_ids_and_drop_lists_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "t.jsonl"
    task.write_text('{"id": "1", "question": "2+2", "answer": "4"}\n{"id": "1", "question": "3+3", "answer": "6"}\n')
    res = run_cli(
        capsys,
        "analyze",
        "--out",
        str(tmp_path / "a"),
        "--no-report",
        "--task",
        "gsm8k",
        "--task-file",
        str(task),
        "--budgets",
        "4",
        "--samples",
        "1",
        "--drop",
        "3",
    )
    assert_one_line_error(res, "unique", "1")
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "b"), "--no-report", "--drop", "10,11", "--drop", "11,10")
    assert_one_line_error(res, "--drop", "twice")


def test_a_second_writer_is_refused_and_changed_variants_are_detected(tiny_run: Path, capsys) -> None:
    from layerprobe._io import hold_lock
    from layerprobe.data import read_run_info
    from layerprobe.data.store import LOCK_FILE, run_differences

    info = read_run_info(tiny_run)
    with hold_lock(tiny_run / LOCK_FILE, "held by this test"):  # another process writing the run
        res = run_cli(capsys, "analyze", "--out", str(tiny_run), *TINY)
        assert_one_line_error(res, "being written by another layerprobe job")  # no .lock.json says which
    assert run_cli(capsys, "analyze", "--out", str(tiny_run), *TINY).code == 0  # released: the run resumes
    changed = info.model_copy(deep=True)
    changed.variants[2].dropped = [3]
    assert run_differences(info, changed) == ["variants (dropped layers)"]
    changed = info.model_copy(deep=True)
    changed.task.source = {"file": "other.jsonl", "sha1": "0"}
    assert run_differences(info, changed) == ["task data"]
    assert run_differences(info, info.model_copy(deep=True)) == []


def test_the_twin_runs_where_the_toy_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--model toy-direct` takes the toy's defaults (toy-mix, toy budgets) and its traces have no thinking."""
    out = tmp_path / "twin"
    res = run_cli(
        capsys,
        "analyze",
        "--model",
        "toy-direct",
        "--out",
        str(out),
        "--limit",
        "2",
        "--budgets",
        "8",
        "--samples",
        "1",
        "--drop",
        "5",
        "--no-explain",
    )
    assert res.code == 0, res.err
    info = RunInfo.model_validate_json((out / "run.json").read_text())
    assert info.task.name == "toy-mix" and "toy-direct" in info.model.id
    records = read_samples(out)
    assert records and all(r.thinking_tokens <= 1 for r in records)
    assert {r.group for r in records} == {"long", "short", "facts"}
    res = run_cli(capsys, "report", str(out))
    assert res.code == 0, res.err
    assert (out / "report.html").is_file()


def test_a_run_without_probes_does_not_point_to_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain needs the probes' token ids: the summary's next step must not be a command that refuses."""
    out = tmp_path / "np"
    args = ["--limit", "1", "--budgets", "8", "--samples", "1", "--drop", "5", "--no-probes", "--no-report"]
    res = run_cli(capsys, "analyze", "--out", str(out), *args)
    assert res.code == 0, res.err
    assert "layerprobe explain" not in res.out
