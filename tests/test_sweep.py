"""Layer-sensitivity sweeps (single and pairs, the teacher-forced proxy, sweep.json, the report
section) and their execution on Ray workers (same texts as in-process, a killed worker retried,
the driver killed and resumed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerprobe.data import load_run
from layerprobe.data.schema import SweepFile
from layerprobe.jobs.sweep import parse_sweep_layers, sweep_drops
from layerprobe.metrics.correlation import spearman, spearman_interval, spearman_permutation_p
from tests.cli_utils import assert_one_line_error, run_cli

SMALL = ["--limit", "2", "--budgets", "8,40", "--samples", "2", "--no-report"]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from layerprobe.cli.app import main

    out = tmp_path_factory.mktemp("sweep") / "run"
    try:
        main(["analyze", "--sweep", "single", "--sweep-layers", "8-11", "--out", str(out), *SMALL])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_sweep_variants_and_file(sweep_run: Path) -> None:
    run = load_run(sweep_run)
    assert [v.name for v in run.variants] == ["base", "drop-8", "drop-9", "drop-10", "drop-11"]
    assert run.info.config.sweep == "single" and run.info.config.sweep_layers == [8, 9, 10, 11]
    sweep = run.extras["sweep.json"]
    assert isinstance(sweep, SweepFile) and sweep.kind == "single" and sweep.budget == 40
    assert [lay.dropped for lay in sweep.layers] == [[8], [9], [10], [11]]
    m = run.metrics
    for lay in sweep.layers:
        # delta is the stored paired comparison at the largest budget, per group
        for g in ("all", "long", "short", "facts"):
            c = next(
                c
                for c in m.comparisons
                if c.variant == lay.variant and c.group == g and c.mode == "sequential" and c.budget == 40
            )
            assert lay.delta[g] == c.diff and lay.delta_ci[g] == (c.ci_low, c.ci_high)
            assert lay.accuracy[g] == m.variants[lay.variant].groups[g].sequential["40"].accuracy
        assert lay.teacher_forced_kl == run.layers[lay.variant].teacher_forced.mean_kl
        assert lay.block_influence is not None and lay.block_influence_traces is not None
    # the correlations are recomputable from the layers
    for c in sweep.bi_vs_damage + sweep.proxy_vs_damage:
        xs = [getattr(lay, c.predictor) for lay in sweep.layers]
        ys = [-lay.delta[c.group] for lay in sweep.layers]
        assert c.n == 4 and (c.spearman is None or c.spearman == pytest.approx(spearman(xs, ys)))
        assert not c.established or c.p_value < 0.05
    assert sweep.method_choices["reverse"] == [11] and len(sweep.method_choices["shortgpt"]) == 1


def test_sweep_report_section(capsys: pytest.CaptureFixture[str], sweep_run: Path) -> None:
    assert run_cli(capsys, "report", str(sweep_run)).code == 0
    html = (sweep_run / "report.html").read_text(encoding="utf-8")
    sec = html[html.index('id="r0-sweep"') :]
    assert "<svg" in sec[: sec.index("</section>") if "</section>" in sec else None]
    for g in ("long", "short", "facts"):
        assert f"Block influence and the damage on {g}" in html
    assert '<a href="#r0-sweep">Layer sensitivity</a>' in html  # reachable from the navigation bar


def test_sweep_proxy_generates_nothing_with_pruned_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "proxy"
    res = run_cli(capsys, "analyze", "--sweep", "pairs", "--sweep-layers", "9-11", "--sweep-proxy", "--out", str(out), *SMALL)
    assert res.code == 0, res.err
    run = load_run(out)
    assert run.status == "complete" and {r.variant for r in run.samples} == {"base"}
    sweep = run.extras["sweep.json"]
    assert sweep.proxy_only and [lay.variant for lay in sweep.layers] == ["drop-9-10", "drop-10-11"]
    assert all(lay.teacher_forced_kl is not None and lay.teacher_forced_kl > 0 and not lay.delta for lay in sweep.layers)
    assert "layerprobe explain" not in res.out  # analyze refuses --explain with a sweep: no hint towards it


def test_sweep_helpers() -> None:
    assert parse_sweep_layers("10-12") == [10, 11, 12] and parse_sweep_layers("3,5, 4") == [3, 4, 5]
    assert sweep_drops("single", 4) == [[0], [1], [2], [3]]
    assert sweep_drops("pairs", 5, [1, 2, 3]) == [[1, 2], [2, 3]]
    # Spearman against scipy, and its permutation test is exact for few points
    from scipy.stats import spearmanr

    x, y = [0.1, 0.5, 0.2, 0.9, 0.3, 0.7], [1, 3, 2, 6, 5, 4]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    p = spearman_permutation_p(x, y)
    assert 0 < p < 0.2 and spearman_permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    rho, lo, hi = spearman_interval(x, y)
    assert lo <= rho <= hi


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sweep", "single", "--drop", "3"], "--sweep makes its own variants"),
        (["--sweep", "single", "--method", "shortgpt"], "--sweep makes its own variants"),
        (["--sweep", "triples"], "valid kinds are single, pairs"),
        (["--sweep", "single", "--sweep-layers", "10-40"], "outside the model"),
        (["--sweep-layers", "3-4"], "need --sweep"),
        (["--sweep", "single", "--sweep-proxy", "--no-probes"], "drop --no-probes"),
        (["--workers", "0"], "--workers 0"),
        (["--sweep", "single", "--sweep-layers", "x-y"], "--sweep-layers x-y"),
    ],
)
def test_sweep_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], fragment: str) -> None:
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "o"), *SMALL, *args)
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "o").exists()


def test_ray_missing_or_unreachable(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprobe.jobs.execute as execute

    monkeypatch.setattr(execute, "ray_installed", lambda: False)  # as if Ray were not installed
    assert_one_line_error(run_cli(capsys, "analyze", "--out", str(tmp_path / "o"), *SMALL, "--workers", "1"), "layerprobe[ray]")
    monkeypatch.undo()
    t0 = time.perf_counter()
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "o"), *SMALL, "--ray-address", "127.0.0.1:1")
    assert_one_line_error(res, "--ray-address 127.0.0.1:1: nothing answers there")
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "o").exists()


def _texts(run: Path) -> dict:
    return {r.key(): (r.text, r.origin) for r in load_run(run).samples}


def test_ray_workers_same_texts_and_a_killed_worker_is_retried(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--sweep", "single", "--sweep-layers", "10-11", *SMALL]
    assert run_cli(capsys, "analyze", "--out", str(tmp_path / "local"), *args).code == 0
    monkeypatch.setenv("LAYERPROBE_TEST_KILL_WORKER", "drop-10")  # the worker dies on its first drop-10 chunk
    monkeypatch.setenv("LAYERPROBE_TEST_KILL_MARKER", str(tmp_path / "killed"))
    res = run_cli(capsys, "analyze", "--out", str(tmp_path / "ray"), *args, "--workers", "2")
    assert res.code == 0, res.err
    assert (tmp_path / "killed").exists()  # a worker really died
    assert _texts(tmp_path / "ray") == _texts(tmp_path / "local")
    assert load_run(tmp_path / "ray").status == "complete"


def test_ray_driver_killed_and_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "layerprobe",
        "analyze",
        "--out",
        str(out),
        "--sweep",
        "single",
        "--sweep-layers",
        "9-11",
        "--limit",
        "3",
        "--budgets",
        "8,40",
        "--samples",
        "3",
        "--no-report",
        "--workers",
        "1",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    samples = out / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not samples.exists() or samples.read_bytes().count(b"\n") < 30):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes
    proc.wait()
    n_before = samples.read_bytes().count(b"\n")
    assert 0 < n_before
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = load_run(out)
    keys = [r.key() for r in run.samples]
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == run.info.expected_traces == len(lines)  # nothing lost, nothing twice
    assert run.status == "complete"
