"""`layerprobe explain`: gated restoration pinned to the pruned and the base model exactly, class masks,
the compounding fit, failure predictors on known signal and on pure noise, explain.json and the
report's "Why it failed" section, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from layerprobe import drop_layers
from layerprobe.data import load_run
from layerprobe.jobs.explain import fit_epsilon
from layerprobe.jobs.predictors import fit_predictors
from layerprobe.metrics.token_classes import class_masks, token_classes
from layerprobe.probe.restore import gated_logprobs
from tests.cli_utils import assert_one_line_error, run_cli
from tests.probe_ref import lively_loaded

SEQ = [2, 10, 11, 12, 13, 40, 41, 42, 43, 44, 45, 46]


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_gates_give_exactly_the_pruned_and_the_base_model(family: str, one_thread: None) -> None:
    base = lively_loaded(family)
    dropped = [2, 3]
    pruned = drop_layers(base, dropped)
    ids = torch.tensor([SEQ])

    def logprobs(model: torch.nn.Module) -> torch.Tensor:  # the same arithmetic as gated_logprobs
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
        return logits - torch.logsumexp(logits, -1, keepdim=True)

    lb, lp = logprobs(base.model), logprobs(pruned.model)
    assert (lb - lp).abs().max() > 1e-3  # the two layers matter in this model
    zeros, ones = torch.zeros((1, len(SEQ))), torch.ones((1, len(SEQ)))
    assert torch.equal(gated_logprobs(base, dropped, SEQ, zeros, slice(None))[0], lp)  # g = 0: the pruned model, bit for bit
    assert torch.equal(gated_logprobs(base, dropped, SEQ, ones, slice(None))[0], lb)  # g = 1: the base model, bit for bit
    gates = torch.zeros((3, len(SEQ)))
    gates[1] = 1.0
    gates[2, 5:] = 1.0  # restored only from position 5 on
    out = gated_logprobs(base, dropped, SEQ, gates, slice(None))  # three patterns in one batch: equal up to rounding
    torch.testing.assert_close(out[0], lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], lb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[2, :5], lp[:5], rtol=1e-5, atol=1e-5)  # causal: earlier positions untouched
    assert (out[2, 5:] - lp[5:]).abs().max() > 1e-4


def test_class_masks_partition_the_trace() -> None:
    texts = ["s1", " 7", " +5", " =", " 2", " Wait", ",", "\n", " so", " 2"]
    start = "".join(texts).index("Wait")
    classes = token_classes(texts, [(start, start + 4)])  # a reflection-lexicon match in the joined text
    assert classes == [
        "boundaries",
        "numbers",
        "operations",
        "equals",
        "numbers",
        "reflection",
        "other",
        "boundaries",
        "other",
        "numbers",
    ]
    m = class_masks(len(texts), thinking_tokens=8, classes=classes)
    assert m["answer-start"].tolist() == [False] * 8 + [True, True]  # the answer's first (at most four) tokens
    assert m["all"].all() and not m["none"].any()
    assert (m["thinking"] ^ m["answer"]).all() and m["thinking"].sum() == 8
    for x in (25, 50, 75):
        assert (m[f"first-{x}%"] | m[f"rest-{100 - x}%"]).sum() == 8 and not (m[f"first-{x}%"] & m[f"rest-{100 - x}%"]).any()
    assert (
        sum(m[c].astype(int) for c in ("numbers", "equals", "operations", "boundaries", "reflection", "other")).tolist()
        == [1] * 10
    )


def test_accuracy_recovery_counts_the_lost_problems_with_a_wilson_interval() -> None:
    """Of the problems the pruning lost, the share a class brings back; the interval at 6 of 6 is the
    Wilson score bound 1 / (1 + z^2 / 6) (about 0.61), not the point a bootstrap collapses to."""
    from layerprobe.data.schema import Restoration
    from layerprobe.jobs.restoration import fill_accuracy

    base = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], float)  # problems 0-5 lost by the pruning; 6, 7 kept; 8, 9 never solved
    pruned = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0], float)
    gated = {"all-back": np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], float), "some": np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 1], float)}
    recs = [Restoration(variant="v", positions=name) for name in ("all", "none", *gated)]
    fill_accuracy(recs, {"all": base, "none": pruned, **gated})
    r = {x.positions: x for x in recs}
    z = 1.959963984540054
    assert (r["all-back"].n_lost, r["all-back"].n_regained, r["all-back"].n_broken) == (6, 6, 0)
    assert r["all-back"].accuracy_recovery == 1.0
    assert r["all-back"].ci[0] == pytest.approx(1 / (1 + z * z / 6)) and r["all-back"].ci[1] == pytest.approx(1.0)
    assert (r["some"].n_regained, r["some"].n_broken, r["some"].accuracy_recovery) == (2, 1, pytest.approx(2 / 6))
    assert r["some"].accuracy == pytest.approx(0.4)  # problem 9 right by chance counts in the accuracy, not in the recovery
    assert r["none"].accuracy_recovery == 0.0 and r["all"].accuracy_recovery == 1.0


def test_rank_auc_is_sklearns() -> None:
    from sklearn.metrics import roc_auc_score

    from layerprobe.jobs.predictors import auc

    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(4, 80))
        y = np.array([0, 1] + rng.integers(0, 2, n - 2).tolist())
        p = rng.integers(0, 6, n) / 5  # ties, as predicted probabilities of a few distinct values have
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_compounding_fit_recovers_a_known_epsilon() -> None:
    rng = np.random.default_rng(0)
    ks = rng.integers(1, 17, 4000).astype(float)
    ok = (rng.random(4000) < (1 - 0.07) ** ks).astype(float)
    assert fit_epsilon(ks, ok) == pytest.approx(0.07, abs=0.005)


def test_predictors_find_a_known_signal_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    n, problems = 400, 80
    groups = np.array([f"p{i % problems}" for i in range(n)])
    length = rng.normal(100, 20, n)
    signal = rng.normal(0, 1, n)
    noise = rng.normal(0, 1, (n, 3))
    names = ["thinking_tokens", "signal", "n1", "n2", "n3"]
    y = (signal + 0.3 * rng.normal(0, 1, n) > 0.5).astype(int)
    X = np.column_stack([length, signal, noise])
    p = fit_predictors(X, y, groups, names)
    assert p.auc > 0.85 and p.auc_ci[0] > 0.5 and p.established and p.gain_ci[0] > 0
    assert p.features[0].name == "signal"
    y_noise = rng.integers(0, 2, n)
    q = fit_predictors(X, y_noise, groups, names)
    assert q.auc_ci[0] < 0.5 < q.auc_ci[1]  # pure noise: the interval covers chance
    assert not q.established


def test_vocab_classes_cover_every_output_row() -> None:
    # the toy's embedding has rows beyond its tokenizer; a damaged model can emit them during the
    # gated generation, so the class table must cover every row (a 94-entry table once crashed on id 95)
    from layerprobe import load_model
    from layerprobe.metrics.token_classes import vocab_classes

    toy = load_model("toy")
    rows = int(toy.model.get_output_embeddings().weight.shape[0])
    classes = vocab_classes(toy.tokenizer, rows)
    assert len(classes) == rows >= len(toy.tokenizer)
    assert set(classes[len(toy.tokenizer) :]) <= {"other"}
    assert {"numbers", "equals", "operations", "boundaries", "reflection"} <= set(classes)


@pytest.fixture(scope="module")
def explained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from layerprobe.cli.app import main

    out = tmp_path_factory.mktemp("explain") / "run"
    for args in (
        [
            "analyze",
            "--out",
            str(out),
            "--limit",
            "3",
            "--budgets",
            "16,64",
            "--samples",
            "2",
            "--drop",
            "10,11",
            "--no-report",
            "--no-explain",
        ],
        ["explain", str(out), "--limit", "3"],
    ):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code
    return out


def test_explain_file_and_report(explained_run: Path) -> None:
    run = load_run(explained_run)
    ex = run.extras["explain.json"]
    rec = {(r.variant, r.positions): r for r in ex.restoration}
    for v in run.pruned:
        assert rec[(v, "all")].kl_recovery == pytest.approx(1.0, abs=1e-6)  # restoring everywhere is the base model
        assert rec[(v, "none")].kl_recovery == pytest.approx(0.0, abs=1e-6)  # restoring nowhere is the pruned one
        assert rec[(v, "all")].share_of_tokens == 1.0
        if rec[(v, "all")].accuracy_recovery is not None:
            assert rec[(v, "all")].accuracy_recovery == pytest.approx(1.0) and rec[(v, "none")].accuracy_recovery == 0.0
    for f in ex.findings:  # only evidence outside the noise (a break point is a location), each with its interval
        assert f.ci[0] is not None and f.text and f.kind
        assert f.kind == "breaks" or f.ci[0] > 0 or f.ci[1] < 0
    html = (explained_run / "report.html").read_text(encoding="utf-8")
    assert html.index('id="why"') < html.index('id="r0-summary"')
    assert '<details class="appendix" id="r0-comparisons">' in html
    assert ex.timings and all(math.isfinite(t) for t in ex.timings.values())


def test_parts_not_computed_are_named(capsys: pytest.CaptureFixture[str], explained_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(explained_run, run)
    res = run_cli(capsys, "explain", str(run), "--no-generation", "--no-report")
    assert res.code == 0
    ex = load_run(run).extras["explain.json"]
    for v in load_run(run).pruned:
        assert f"accuracy recovery for {v}: --no-generation" in ex.skipped
        assert all(r.accuracy_recovery is None for r in ex.restoration if r.variant == v)
    assert "not computed: accuracy recovery" in res.out
    if ex.predictors is None:  # too few wrong or right traces in this small run: the reason is given
        assert any(w.startswith("failure predictors:") for w in ex.skipped)


def test_explain_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.report_runs import make_run

    assert_one_line_error(run_cli(capsys, "explain", str(tmp_path)), "not a layerprobe run directory")
    single = make_run(tmp_path / "single", variants=(("base", []),), problems_per_group=1, samples=1, probes=False)
    assert_one_line_error(run_cli(capsys, "explain", str(single)), "no pruned variant")
    noprobes = make_run(tmp_path / "noprobes", problems_per_group=1, samples=1, probes=False)
    assert_one_line_error(run_cli(capsys, "explain", str(noprobes)), "no probe files")
    assert not (noprobes / "explain.json").exists()


def _svg_texts(html: str, anchor: str) -> list[str]:
    """The text elements of the figure with the given id (matplotlib writes text as text)."""
    import re

    start = html.index(f'id="{anchor}"')
    return re.findall(r"<text[^>]*>([^<]*)</text>", html[start : html.index("</figure>", start)])


def test_figure_legends_match_the_stored_numbers(explained_run: Path) -> None:
    """Every count or number a legend or axis of the "why" figures shows is the one explain.json holds."""
    import html as htmllib

    from layerprobe.report import render_report

    run = load_run(explained_run)
    ex = run.extras["explain.json"]
    # every figure is there to be checked (the test would pass vacuously on a run without them)
    assert ex.breaks and ex.compounding and any(r.accuracy_recovery is not None for r in ex.restoration)
    page = Path(render_report([run])).read_text(encoding="utf-8")
    texts = [htmllib.unescape(t) for t in _svg_texts(page, "r0-why-breaks")] if ex.breaks else []
    for b in ex.breaks:
        fr = [x for x in b.first_departure_fraction if x is not None]
        if fr:
            entry = next(t for t in texts if t.startswith(f"{b.variant}: "))
            assert entry.startswith(f"{b.variant}: {len(fr)} of {b.n_failing} failing traces")
    if any(r.accuracy_recovery is not None for r in ex.restoration):
        texts = [htmllib.unescape(t) for t in _svg_texts(page, "r0-why-restoration")]
        for v in run.pruned:
            n_lost = next(r.n_lost for r in ex.restoration if r.variant == v and r.accuracy_recovery is not None)
            assert f"{v}: lost long-chain problems regained (of {n_lost})" in texts
    if ex.compounding:
        texts = _svg_texts(page, "r0-why-compounding")
        for k in {k for c in ex.compounding for k in c.by_k}:
            n = max(c.by_k[k][1] for c in ex.compounding if k in c.by_k)
            assert texts[texts.index(k) + 1] == f"n={n}"
        for c in ex.compounding:
            assert f"{c.variant}: (1 \u2212 {c.epsilon:.2f})^k" in [htmllib.unescape(t) for t in texts]
    if ex.predictors is not None and ex.predictors.roc:
        texts = [htmllib.unescape(t) for t in _svg_texts(page, "r0-why-predictors")]
        assert f"{ex.predictors.model} (AUC {ex.predictors.auc:.2f})" in texts
        assert f"thinking length (AUC {ex.predictors.baseline_auc:.2f})" in texts
