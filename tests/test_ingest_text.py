"""The text path of `layerprobe ingest --no-probes` at scale (jobs.textwork): worker processes and the
faster Self-BLEU counting give every number the previous code gave.

tests/data/ingest_text_expected.json holds the per-trace values and metrics of 11 traces from
benchmarks/make_traces.py (both shapes, budget-forced, natural and truncated traces, three samples of
one problem), written by layerprobe's main branch before this change (commit in its `made_by`; regenerated
there with the later rule of which ingested traces are sequential and which parallel, docs/ingest.md, patched
into that commit's code, so that the text path itself is still checked against the old code) with

    PYTHONPATH=<main>/src python -m layerprobe.cli.app ingest m0.jsonl m1.jsonl m2.jsonl m3.jsonl --from jsonl \\
        --model s1.1-7b --tokenizer smollm2-135m --no-probes --task aime24 --out run --no-report

(the inputs: make_traces.trace(0, i) for the `indices` it lists, one file per model; their sha1s are kept).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.cli_utils import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "tests" / "data" / "ingest_text_expected.json").read_text())


def _make_traces():
    spec = importlib.util.spec_from_file_location("make_traces", ROOT / "benchmarks" / "make_traces.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inputs(tmp: Path) -> list[Path]:
    mt = _make_traces()
    files: dict[int, list[str]] = {}
    for i in EXPECTED["indices"]:
        files.setdefault(mt.model_of(i), []).append(json.dumps(mt.trace(0, i)) + "\n")
    paths = []
    for m, lines in sorted(files.items()):
        path = tmp / f"m{m}.jsonl"
        path.write_text("".join(lines))
        paths.append(path)
    got = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in paths}
    assert got == EXPECTED["inputs_sha1"], "benchmarks/make_traces.py writes other traces than the fixture was made from"
    return paths


def _same(a, b, where: str) -> None:
    """Equal, floats bit for bit (NaN equal to NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_text_path_gives_mains_numbers(tmp_path: Path, capsys, workers: int) -> None:
    """Every per-trace value and the run's metrics equal what main's code computed, in this process and
    with two worker processes."""
    files = _inputs(tmp_path)
    out = tmp_path / "run"
    args = ["ingest", *map(str, files), "--from", "jsonl", "--model", "s1.1-7b", "--tokenizer", "smollm2-135m"]
    res = run_cli(capsys, *args, "--no-probes", "--task", "aime24", "--out", str(out), "--no-report", "--workers", str(workers))
    assert res.code == 0, res.err
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == len(EXPECTED["samples"])
    for got, want in zip(recs, EXPECTED["samples"]):
        where = f"{want['problem_id']}/{want['budget']}/{want['sample']}"
        for key, value in want.items():
            if key.endswith("_sha1"):
                field = key.removesuffix("_sha1")
                assert hashlib.sha1(got[field].encode()).hexdigest() == value, f"{where}: {field} differs"
            else:
                _same(got[key], value, f"{where}.{key}")
    metrics = json.loads((out / "metrics.json").read_text())
    for key, value in EXPECTED["metrics"].items():
        _same(metrics[key], value, f"metrics.{key}")
    assert EXPECTED["metrics"]["variants"]["base"]["groups"]["all"]["parallel"]["self_bleu_across"] > 0


def test_bad_workers_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "q", "completion": "x"}) + "\n")
    res = run_cli(capsys, "ingest", str(path), "--no-probes", "--out", str(tmp_path / "run"), "--workers", "-1")
    assert_one_line_error(res, "--workers -1")


def _clipped_reference(segments: list[list[str]], order: int) -> tuple[list[list[int]], list[list[int]]]:
    """Each segment's n-grams counted in a Counter and clipped against every other segment, pair by pair."""
    grams = [[Counter(tuple(s[i : i + n]) for i in range(len(s) - n + 1)) for n in range(1, order + 1)] for s in segments]
    correct, total = [], []
    for i, mine in enumerate(grams):
        c, t = [], []
        for n in range(order):
            others = Counter[tuple[str, ...]]()
            for j, theirs in enumerate(grams):
                if j != i:
                    others |= theirs[n]  # the largest count among the others
            c.append(sum(min(k, others[g]) for g, k in mine[n].items()))
            t.append(sum(mine[n].values()))
        correct.append(c)
        total.append(t)
    return correct, total


def test_clipped_counts_equal_counting_pair_by_pair() -> None:
    """The numpy n-gram counting behind both Self-BLEUs gives the integers a Counter per segment gives:
    ties at the top, repeated segments, empty and one-word segments, a small vocabulary (many repeats)."""
    from layerprobe.metrics.selfbleu import _clipped_counts

    rng = random.Random(7)
    cases = [
        [["a", "b", "a", "b"], ["a", "b"], [], ["a"], ["a", "b", "a", "b"]],
        [["x"], ["y"]],
        [[], []],
        [["w"] * 9, ["w"] * 3, ["w", "v"] * 4],
    ]
    for _ in range(40):
        vocab = [f"t{k}" for k in range(rng.choice([2, 3, 5, 40]))]
        cases.append([[rng.choice(vocab) for _ in range(rng.randint(0, 30))] for _ in range(rng.randint(2, 12))])
    for segs in cases:
        assert _clipped_counts(segs, 4) == _clipped_reference(segs, 4), segs


def test_word_tokenizer_on_re_gives_nltks_tokens() -> None:
    """nltk's word tokenizer with its patterns on Python's `re` splits text as nltk's own does: quotes,
    contractions, brackets, dashes, ellipses, LaTeX, Unicode punctuation."""
    from nltk.tokenize import NLTKWordTokenizer

    from layerprobe.metrics.selfbleu import nltk_tokenizers

    fast = nltk_tokenizers()[1]
    ref = NLTKWordTokenizer()
    texts = [
        "He said, \"Wait, that's not right.\" I can't see why... (maybe $x^2$?) -- or [not].",
        "“Hmm,” she wrote — it’s 3.14, isn’t it? 'Let's check': a+b=c; #5 @home & 100%.",
        "So the answer is \\boxed{42}. Alternatively, $\\frac{a}{b}$ gives 1,000.5 -- done!!",
        "``quoted'' text, don't won't gonna wanna gimme lemme 'tis 'twas ... end.",
        "Ellipsis…  and – en dash ‒ figure dash ― bar; «guillemets» „low” ‘single’.",
        "Final Answer: The final answer is $\\boxed{7}$. I hope it is correct.",
    ]
    rng = random.Random(3)
    pieces = [w for t in texts for w in t.split()]
    texts += [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    for t in texts:
        assert fast.tokenize(t) == ref.tokenize(t), t
