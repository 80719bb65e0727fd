"""What `--help` says is what the commands do (defaults, descriptions, no type placeholder on flags), and a
re-run of a complete `analyze` says so and reuses explain.json when its inputs are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprobe.jobs.plan import QUICK_DEFAULTS, REAL_DEFAULTS, TOY_DEFAULTS
from tests.cli_utils import run_cli


@pytest.fixture
def helptext(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """`layerprobe ... --help` as printed (wide, so that no phrase is folded), whitespace and borders collapsed."""
    monkeypatch.setenv("COLUMNS", "250")

    def show(*args: str) -> str:
        res = run_cli(capsys, *args, "--help")
        assert res.code == 0, res.err
        return " ".join(res.out.replace("│", " ").split())

    return show


def test_analyze_help_states_the_defaults(helptext) -> None:
    text = helptext("analyze")
    assert "runs/<model>-<hash of the settings>" in text and "<timestamp>" not in text
    budgets = [",".join(map(str, d.budgets)) for d in (TOY_DEFAULTS, REAL_DEFAULTS, QUICK_DEFAULTS)]
    assert (
        f"thinking budgets in tokens (default: {budgets[0]} for the toy, {budgets[1]} for other models, {budgets[2]} with --quick)"
        in text
    )
    assert f"parallel samples per problem (default: {TOY_DEFAULTS.samples} for the toy, {REAL_DEFAULTS.samples}" in text
    assert f"problems per task group (default: {TOY_DEFAULTS.limit} for the toy, all for other models" in text
    assert "--top-p <float> nucleus sampling" in text and "--top-k <int> sample among the k most likely tokens" in text
    assert "--no-probes skip per-layer probes" in text  # a flag takes no value: no placeholder


@pytest.mark.parametrize("cmd", [(), ("analyze",), ("ingest",), ("heal",), ("toy", "eval"), ("report",)])
def test_flags_show_no_type_placeholder(helptext, cmd: tuple[str, ...]) -> None:
    text = helptext(*cmd)
    assert "--help" in text and "<bool>" not in text


def test_heal_help_names_grpo(helptext) -> None:
    text = helptext("heal")
    assert "GRPO" in text.split("Options")[0]  # in the command's description, not only in one flag's


def test_a_complete_rerun_says_so_and_reuses_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = tmp_path / "run"
    args = ["analyze", "--out", str(out), "--limit", "1", "--budgets", "8,16", "--samples", "2", "--drop", "10,11", "--no-report"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = run_cli(capsys, *args, "--explain")
        assert first.code == 0, first.err
        assert "complete: all" not in first.out and "explain.json is up to date" not in first.out
        stamp = (out / "explain.json").stat().st_mtime_ns
        again = run_cli(capsys, *args, "--explain")
        assert again.code == 0, again.err
        n = json.loads((out / "run.json").read_text())["expected_traces"]
        assert f"the run in {out} is complete: all {n} traces were there already, nothing was generated" in again.out
        assert "explain.json is up to date (same traces, same settings): reused" in again.out
        assert (out / "explain.json").stat().st_mtime_ns == stamp  # not computed again
        # other explain settings, or a changed run, are computed again
        state = json.loads((out / ".explain" / "state.json").read_text())
        state["settings"]["generation"] = False  # as if the last explain had run with --no-generation
        (out / ".explain" / "state.json").write_text(json.dumps(state))
        third = run_cli(capsys, *args, "--explain")
        assert third.code == 0 and "explain.json is up to date" not in third.out
        assert (out / "explain.json").stat().st_mtime_ns != stamp
    finally:
        torch.set_num_threads(threads)
