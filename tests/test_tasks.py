"""Task loading: toy tasks, task files, offline errors, shuffled multiple choice."""

from __future__ import annotations

import json

import pytest

from layerprobe.errors import UserError
from layerprobe.tasks.registry import get_task, load_problems
from tests.cli_utils import run_cli


def test_toy_mix_groups_and_determinism():
    task, probs, source = load_problems("toy-mix", limit=5, seed=3)
    assert task.answer_type == "digit" and source["source"] == "embedded toy generator"
    assert [p.group for p in probs].count("long") == 5 and [p.group for p in probs].count("facts") == 5
    again = load_problems("toy-mix", limit=5, seed=3)[1]
    assert [p.id for p in probs] == [p.id for p in again]
    assert len({p.id for p in probs}) == len(probs)


def test_offline_hub_task_says_how_to_provide_a_file():
    with pytest.raises(UserError, match="--task-file FILE.jsonl"):
        load_problems("aime24")


def test_task_file_and_missing_fields(tmp_path):
    f = tmp_path / "aime.jsonl"
    f.write_text(json.dumps({"id": 1, "question": "What is 6*7?", "answer": "42"}) + "\n\n")
    task, probs, source = load_problems("aime24", task_file=f)
    assert probs[0].id == "aime24-1" and probs[0].gold == "42" and probs[0].answer_type == "integer"
    assert source["source"] == "file" and len(source["sha1"]) == 40
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "question": "q"}) + "\n")
    with pytest.raises(UserError, match="line 1: missing field"):
        load_problems("aime24", task_file=bad)


def test_mc_choices_shuffled_with_fixed_seed(tmp_path):
    rows = [{"id": i, "question": f"Q{i}?", "choices": ["right", "w1", "w2", "w3"], "answer": "A"} for i in range(20)]
    f = tmp_path / "gpqa.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    probs = load_problems("gpqa-diamond", task_file=f)[1]
    golds = {p.gold for p in probs}
    assert len(golds) > 1  # the correct choice is not always in the same place
    for p in probs:
        assert p.choices["ABCD".index(p.gold)] == "right"
    assert [p.choices for p in probs] == [p.choices for p in load_problems("gpqa-diamond", task_file=f)[1]]


def test_unknown_task_and_cli_listing(capsys):
    with pytest.raises(UserError, match="unknown task 'aime25'"):
        get_task("aime25")
    r = run_cli(capsys, "tasks")
    assert r.code == 0 and "gpqa-diamond" in r.out and "toy-long" in r.out


def test_bad_limit(capsys):
    with pytest.raises(UserError, match="--limit"):
        load_problems("toy-long", limit=0)


def test_arith_problems_are_offline_grouped_and_their_answers_follow_from_the_words():
    """Every answer is recomputed from the question text; short chains have 2 operations, long ones 8."""
    import re

    task, probs, source = load_problems("arith", limit=20, seed=3)
    assert task.answer_type == "integer" and source["source"].startswith("generated")
    assert [p.group for p in probs] == ["short"] * 20 + ["long"] * 20
    assert len({p.id for p in probs}) == 40
    for p in probs:
        start = int(re.search(r"Start with (\d+)\.", p.question).group(1))
        ops = re.findall(r"(add|subtract|multiply by) (\d+)", p.question)
        assert len(ops) == (2 if p.group == "short" else 8)
        value = start
        for op, n in ops:
            value = value + int(n) if op == "add" else value - int(n) if op == "subtract" else value * int(n)
            assert 0 <= value <= 999
        assert p.gold == str(value)
    again = load_problems("arith", limit=20, seed=3)[1]
    assert [p.question for p in again] == [p.question for p in probs]
    assert [p.question for p in load_problems("arith", limit=20, seed=4)[1]] != [p.question for p in probs]
