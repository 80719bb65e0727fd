"""`layerprobe compare`: two toy sweep runs (the toy and its non-reasoning twin) side by side; every
number checked against a recomputation from the runs' samples.jsonl."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from layerprobe.data.schema import CompareFile
from tests.cli_utils import assert_one_line_error, run_cli

SWEEP = ["--sweep", "single", "--sweep-layers", "9-11", "--limit", "3", "--budgets", "24", "--samples", "1", "--no-report"]


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from layerprobe.cli.app import main

    root = tmp_path_factory.mktemp("compare")
    for model in ("toy", "toy-direct"):
        try:
            main(["analyze", "--model", model, "--out", str(root / model), *SWEEP])
        except SystemExit as exc:
            assert not exc.code
    return root / "toy", root / "toy-direct"


def correct_by_problem(run: Path, variant: str) -> dict[str, tuple[str, float]]:
    """problem id -> (group, correctness) read straight from samples.jsonl."""
    out: dict[str, list[float]] = defaultdict(list)
    group = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["variant"] == variant and r["mode"] == "sequential" and r["correct"] is not None:
            out[r["problem_id"]].append(float(r["correct"]))
            group[r["problem_id"]] = r["group"]
    return {p: (group[p], statistics.fmean(v)) for p, v in out.items()}


def test_compare_two_sweeps(twin_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toy, twin = twin_runs
    out = tmp_path / "cmp"
    res = run_cli(capsys, "compare", str(toy), str(twin), "--out", str(out))
    assert res.code == 0, res.err
    cmp = CompareFile.model_validate_json((out / "compare.json").read_text())
    assert [r.label for r in cmp.runs] == ["toy", "toy-direct"]
    for r, path in zip(cmp.runs, twin_runs):
        assert r.n_layers == 12 and r.source == "sweep" and r.budget == 24
        assert [s.dropped for s in r.sensitivity] == [[9], [10], [11]]
        assert [s.relative_depth for s in r.sensitivity] == pytest.approx([9.5 / 12, 10.5 / 12, 11.5 / 12])
        base = correct_by_problem(path, "base")
        for g in ("long", "short", "facts"):
            vals = [c for grp, c in base.values() if grp == g]
            assert r.base_accuracy[g] == pytest.approx(sum(vals) / len(vals)) and r.n_problems[g] == 3
        for s in r.sensitivity:
            var = correct_by_problem(path, s.variant)
            for g in ("long", "short", "facts"):
                d = [var[p][1] - base[p][1] for p in base if base[p][0] == g]
                assert s.delta[g] == pytest.approx(statistics.fmean(d))
                lo, hi = s.delta_ci[g]
                assert lo <= s.delta[g] <= hi
    # across models: base accuracy and difference in differences, paired by problem id
    b_toy, b_twin = correct_by_problem(toy, "base"), correct_by_problem(twin, "base")
    assert set(b_toy) == set(b_twin)  # same task, same seed: the same problems
    bases = {c.group: c for c in cmp.cross if c.what == "base accuracy"}
    assert set(bases) == {"long", "short", "facts"}
    for g, c in bases.items():
        ids = [p for p in b_toy if b_toy[p][0] == g]
        assert c.n_pairs == 3
        assert c.diff == pytest.approx(statistics.fmean(b_twin[p][1] - b_toy[p][1] for p in ids))
    damage = [c for c in cmp.cross if c.what == "damage"]
    assert len(damage) == 9  # 3 layers x 3 groups
    for c in damage:
        name = f"drop-{c.dropped_a[0]}"
        assert c.dropped_a == c.dropped_b
        v_toy, v_twin = correct_by_problem(toy, name), correct_by_problem(twin, name)
        ids = [p for p in b_toy if b_toy[p][0] == c.group]
        want = statistics.fmean((v_twin[p][1] - b_twin[p][1]) - (v_toy[p][1] - b_toy[p][1]) for p in ids)
        assert c.diff == pytest.approx(want)
    means = {c.group: c for c in cmp.cross if c.what == "mean damage"}
    assert set(means) == {"long", "short", "facts"}
    for g, c in means.items():
        ids = [p for p in b_toy if b_toy[p][0] == g]
        per_problem = [
            statistics.fmean(
                (correct_by_problem(twin, f"drop-{k}")[p][1] - b_twin[p][1])
                - (correct_by_problem(toy, f"drop-{k}")[p][1] - b_toy[p][1])
                for k in (9, 10, 11)
            )
            for p in ids
        ]
        assert c.diff == pytest.approx(statistics.fmean(per_problem)) and c.ci[0] <= c.diff <= c.ci[1]
    html = (out / "report.html").read_text()
    assert "toy-direct" in html and html.count("<svg") >= 1 and "Across models" in html
    assert "base accuracy" in res.out and str(out / "report.html") in res.out
    # `layerprobe report` renders a compare folder again
    (out / "report.html").unlink()
    assert run_cli(capsys, "report", str(out)).code == 0 and (out / "report.html").is_file()


def test_compare_bad_input(twin_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toy, twin = twin_runs
    assert_one_line_error(run_cli(capsys, "compare", str(toy)), "at least two")
    assert_one_line_error(run_cli(capsys, "compare", str(toy), str(tmp_path)), "not a layerprobe run directory")
    assert_one_line_error(run_cli(capsys, "compare", str(toy), str(twin), "--out", str(twin)), "is a run directory")
    assert_one_line_error(run_cli(capsys, "compare", str(toy), str(twin), "--out", ""), "--out ''")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli(capsys, "compare", str(toy), str(twin), "--out", str(tmp_path / "file")), "not a folder")
    assert_one_line_error(run_cli(capsys, "compare", str(toy), str(twin), "--out", str(tmp_path / "file" / "x")), "--out")
    assert not any(p.name == "compare.json" for p in tmp_path.rglob("*"))


def test_runs_without_groups_are_compared_as_all(
    twin_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task without problem groups (aime24, a plain task file): everything is compared as "all"."""
    import shutil

    plain = []
    for run in twin_runs:
        dst = tmp_path / run.name
        shutil.copytree(run, dst)
        lines = [json.loads(x) for x in (dst / "samples.jsonl").read_text().splitlines()]
        (dst / "samples.jsonl").write_text("".join(json.dumps({**r, "group": ""}) + "\n" for r in lines))
        (dst / "metrics.json").unlink()  # recomputed from the samples by the reader
        plain.append(dst)
    out = tmp_path / "cmp"
    res = run_cli(capsys, "compare", *map(str, plain), "--out", str(out))
    assert res.code == 0, res.err
    cmp = CompareFile.model_validate_json((out / "compare.json").read_text())
    toy = correct_by_problem(plain[0], "base")
    assert cmp.runs[0].base_accuracy["all"] == pytest.approx(statistics.fmean(c for _, c in toy.values()))
    assert all("all" in s.delta for r in cmp.runs for s in r.sensitivity)
    assert {c.group for c in cmp.cross} == {"all"} and any(c.what == "damage" for c in cmp.cross)
