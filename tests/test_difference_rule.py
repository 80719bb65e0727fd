"""One rule decides what counts as a difference (metrics.decide), and one place words it (data.verdicts):
an interval that excludes 0 is never shown beside words that say there is no difference without naming
the test that disagrees; a verdict needs a minimum of problems; explain's accuracy counts say that they
come from greedy generation where the counts are."""

from __future__ import annotations

import html as htmllib
import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from layerprobe.data import load_run
from layerprobe.data.summarize import outcome_contrasts, to_comparison
from layerprobe.metrics import MIN_UNITS, NO_CLEAR_DIFFERENCE, decide, paired_comparison
from layerprobe.metrics.paired import BOTH, INTERVAL_ONLY, NEITHER, TEST_ONLY, TOO_FEW
from tests.report_runs import make_run


def test_decide() -> None:
    assert decide(-0.5, -0.1, 10, 0.01) == ("lower", BOTH)
    assert decide(0.1, 0.5, 10, None) == ("higher", BOTH)  # no test for the data: the interval decides
    assert decide(-0.69, -0.04, 10, 0.125) == (NO_CLEAR_DIFFERENCE, INTERVAL_ONLY)
    assert decide(-0.1, 0.3, 10, 0.01) == (NO_CLEAR_DIFFERENCE, TEST_ONLY)
    assert decide(-0.1, 0.3, 10, 0.5) == (NO_CLEAR_DIFFERENCE, NEITHER)
    assert decide(-0.4, -0.3, MIN_UNITS - 1, 0.001) == (NO_CLEAR_DIFFERENCE, TOO_FEW)
    assert decide(math.nan, math.nan, 10, 1.0) == (NO_CLEAR_DIFFERENCE, NEITHER)
    assert decide(1e-12, 0.1, 10, None, tol=1e-9) == (NO_CLEAR_DIFFERENCE, NEITHER)  # rounding is not a difference


def test_below_the_minimum_no_exact_test_can_reject() -> None:
    """The minimum is where the tests themselves start to be able to reject at 5 %."""
    below = paired_comparison([1.0] * (MIN_UNITS - 1), [0.0] * (MIN_UNITS - 1))  # every pair one way
    assert below.p_value > 0.05 and below.verdict == NO_CLEAR_DIFFERENCE and below.reason == TOO_FEW
    at = paired_comparison([1.0] * MIN_UNITS, [0.0] * MIN_UNITS)
    assert at.p_value < 0.05 and at.verdict == "lower" and at.reason == BOTH
    cont = paired_comparison([0.1 * i for i in range(MIN_UNITS - 1)], [0.1 * i + 1 for i in range(MIN_UNITS - 1)])
    assert cont.ci_low > 0 and cont.verdict == NO_CLEAR_DIFFERENCE and cont.reason == TOO_FEW


@pytest.fixture(scope="module")
def disagreeing_run(tmp_path_factory: pytest.TempPathFactory):
    """A run whose short-chain comparison at the largest budget is the issue's: 10 problems, the base right
    on all, the variant wrong on 4 (Newcombe's interval excludes 0, the exact McNemar test has p = 0.125)."""
    out = make_run(tmp_path_factory.mktemp("rule") / "run", problems_per_group=4)
    run = load_run(out)
    budget = run.budgets()[-1]
    i = next(
        k
        for k, c in enumerate(run.metrics.comparisons)
        if c.group == "short" and c.mode == "sequential" and c.budget == budget and c.variant == "drop-3"
    )
    c = to_comparison(
        [1.0] * 10,
        [1.0] * 6 + [0.0] * 4,
        variant="drop-3",
        base="base",
        group="short",
        mode="sequential",
        budget=budget,
        metric="accuracy",
    )
    assert c.ci_high < 0 and c.p_value == pytest.approx(0.125) and c.verdict == NO_CLEAR_DIFFERENCE
    run.metrics.comparisons[i] = c
    return run, c


def test_the_words_follow_the_rule_in_terminal_and_report(disagreeing_run, tmp_path: Path) -> None:
    from layerprobe.cli.summary_table import print_summary
    from layerprobe.report import render_report

    run, c = disagreeing_run
    buf = io.StringIO()
    print_summary(run, Console(file=buf, width=200, markup=False, highlight=False, soft_wrap=True))
    terminal = buf.getvalue()
    line = next(x for x in terminal.splitlines() if "short −40 points" in x)
    # the interval excludes 0 and the words say why no direction is claimed: which test, and that it does not reject
    assert "not established: the interval excludes 0 but the exact McNemar test does not reject, p = 0.12" in line
    assert "no clear difference" not in line.split("short −40 points")[1].split(", facts")[0]
    html = render_report([run], out=tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.count("not established: the interval excludes 0 but the exact McNemar test does not reject, p = 0.12") >= 1
    assert "they can part because the interval is not the test's inversion" in htmllib.unescape(html)  # why, where they part
    assert f"at least {MIN_UNITS} problems" in html  # the rule is stated where the verdicts are


def test_too_few_problems_give_no_verdict_anywhere(tmp_path: Path) -> None:
    """A run of 2 problems per group: intervals are shown, no direction is claimed, and the words say why."""
    from layerprobe.report import render_report
    from layerprobe.report.narrative import what_broke

    out = make_run(tmp_path / "run", problems_per_group=2)
    run = load_run(out)
    groups = [c for c in run.metrics.comparisons if c.group != "all"]
    assert groups and all(c.verdict == NO_CLEAR_DIFFERENCE and c.reason == TOO_FEW for c in groups)
    for s in what_broke(run):
        assert "too few problems for a verdict: 2 < 6" in s.text
    html = render_report(out).read_text(encoding="utf-8")
    assert "too few problems for a verdict (2 problems paired" in html


def test_wrong_against_right_needs_problems_on_each_side(tmp_path: Path) -> None:
    """1 wrong trace against 2 right ones (the issue's ingest report): means, no verdict."""
    run = load_run(make_run(tmp_path / "run", variants=(("base", []),), problems_per_group=1, samples=1, budgets=(16,)))
    seq = [r for r in run.samples if r.mode == "sequential"]  # 3 traces, one per problem
    recs = [r.model_copy(update={"correct": i != 0}) for i, r in enumerate(seq)]
    out = outcome_contrasts(recs, ["base"])
    assert out and all(c.n_wrong == 1 and c.n_right == 2 for c in out)
    assert all(c.verdict == NO_CLEAR_DIFFERENCE and c.reason == TOO_FEW for c in out)
    assert all(c.problems_wrong == 1 and c.problems_right == 2 for c in out)


def test_explain_says_its_counts_are_greedy(tmp_path: Path) -> None:
    from layerprobe.data.findings import findings
    from layerprobe.data.schema import ExplainFile, Restoration

    run = load_run(make_run(tmp_path / "run", problems_per_group=2))
    rec = Restoration(
        variant="drop-3",
        positions="numbers",
        share_of_tokens=0.3,
        kl_recovery=0.7,
        kl_ci=(0.6, 0.8),
        accuracy_recovery=0.4,
        ci=(0.17, 0.69),
        n_lost=10,
        n_regained=4,
        n_broken=0,
    )
    ex = ExplainFile(computed="", restoration=[rec])
    (f,) = [f for f in findings(run, ex) if f.kind == "restoration-tokens"]
    assert (
        f"4 of the 10 long-chain problems the pruning loses in greedy generation at {run.budgets()[-1]} thinking tokens" in f.text
    )
    assert "not the sampled traces behind the accuracy tables" in f.text
    few = rec.model_copy(
        update={"n_lost": MIN_UNITS - 1, "n_regained": MIN_UNITS - 1, "ci": (0.57, 1.0), "accuracy_recovery": 1.0}
    )
    (f,) = [f for f in findings(run, ExplainFile(computed="", restoration=[few])) if f.kind == "restoration-tokens"]
    assert "long-chain problems" not in f.text  # too few lost problems: the accuracy part is no finding


def test_compounding_words_say_what_a_wrong_step_is(tmp_path: Path) -> None:
    """A step audit counts wrong results only (a step with another operation is not one): the finding
    says "wrong result"; "none" only when none is, and a share under 1 % is not rounded to 0."""
    from layerprobe.data.findings import findings
    from layerprobe.data.schema import Compounding, ExplainFile

    run = load_run(make_run(tmp_path / "run", problems_per_group=2))
    base = Compounding(
        variant="base", step_error_rate=0.0, epsilon=0.0, epsilon_ci=(0.0, 0.02), by_k={"1": (10, 10), "12": (10, 10)}
    )
    pruned = Compounding(variant="drop-3", epsilon=0.18, epsilon_ci=(0.09, 0.39), by_k={"1": (8, 10), "12": (1, 10)}, fit_p=0.2)

    def text(rate: float) -> str:
        ex = ExplainFile(computed="", compounding=[base, pruned.model_copy(update={"step_error_rate": rate})])
        (f,) = [f for f in findings(run, ex) if f.kind == "compounding"]
        return f.text

    assert "yet none of the steps it writes has a wrong result, so its chains fail otherwise" in text(0.0)
    assert "yet only 0.1 % of the steps it writes have a wrong result" in text(0.001)  # not "none", not "0 %"
    assert "yet only 3 % of the steps it writes have a wrong result" in text(0.03)
    assert "23 % of the steps it writes have a wrong result: errors compound step by step" in text(0.23)
