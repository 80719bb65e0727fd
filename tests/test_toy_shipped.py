"""The shipped toy weights load offline and solve problems (floors well below the measured levels in
docs/toy.md: greedy 1.00 on short chains, facts and 8-12-step chains, 100 held-out problems each)."""

from __future__ import annotations

import json

import pytest

from layerprobe import load_model
from layerprobe.models.aliases import ALIASES, shipped_dir
from layerprobe.toy.evaluate import extract_answer, generate, toy_prompt
from layerprobe.toy.tasks import sample_problems
from tests.cli_utils import run_cli


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu", dtype="float32")


def accuracy(loaded, task_type: str, n: int) -> float:
    probs = sample_problems(task_type, n, seed=7)
    outs = generate(loaded.model, loaded.tokenizer, [toy_prompt(loaded.tokenizer, p) for p in probs], max_new_tokens=120)
    return sum(extract_answer(o) == p.answer for o, p in zip(outs, probs)) / n


def test_shipped_toy_is_small_and_records_its_training():
    assert (shipped_dir(ALIASES["toy"]) / "model.safetensors").stat().st_size < 20 * 2**20
    state = json.loads((shipped_dir(ALIASES["toy"]) / "training_state.json").read_text())
    assert state["schema_version"] == 1 and state["tokens"] > 1_000_000


def test_shipped_toy_loads_offline_and_solves(toy):
    assert toy.n_layers == 12 and toy.family == "qwen3" and toy.reasoning_format == "think-tags"
    assert accuracy(toy, "short", 20) >= 0.9
    assert accuracy(toy, "facts", 20) >= 0.9
    assert accuracy(toy, "long", 20) >= 0.8  # chance is 0.1


def test_shipped_twin_is_the_toys_shape_and_answers_without_thinking():
    """toy-direct: same architecture, size and tokenizer as the toy; its thinking is empty and it still
    knows the facts (0.999 on 100 problems when measured, docs/toy.md) while it cannot chain steps."""
    toy_dir, twin_dir = shipped_dir(ALIASES["toy"]), shipped_dir(ALIASES["toy-direct"])
    assert (twin_dir / "model.safetensors").stat().st_size < 20 * 2**20
    assert json.loads((twin_dir / "config.json").read_text()) == json.loads((toy_dir / "config.json").read_text())
    assert (twin_dir / "tokenizer.json").read_text() == (toy_dir / "tokenizer.json").read_text()
    state = json.loads((twin_dir / "training_state.json").read_text())
    assert state["schema_version"] == 1 and state["tokens"] > 1_000_000
    twin = load_model("toy-direct", device="cpu", dtype="float32")
    assert twin.is_toy and twin.n_layers == 12 and twin.reasoning_format == "think-tags"
    probs = sample_problems("facts", 20, seed=7)
    outs = generate(twin.model, twin.tokenizer, [toy_prompt(twin.tokenizer, p) for p in probs], max_new_tokens=40)
    assert all(o.split("</think>")[0].strip() == "" for o in outs), outs[:3]
    assert sum(extract_answer(o) == p.answer for o, p in zip(outs, probs)) >= 18
    assert accuracy(twin, "long", 20) <= 0.5  # without steps it guesses (chance 0.1; 0.09 measured)


def test_toy_eval_prints_tables_and_names_the_dropped_layer(capsys):
    """`toy eval` reads as tables in words: no raw JSON, "without layer 5" in the title."""
    res = run_cli(capsys, "toy", "eval", "--n", "1", "--samples", "2", "--drop", "5")
    assert res.code == 0, res.err
    assert "without layer 5" in res.out
    assert "Wait audit" in res.out and "steps with a wrong result" in res.out
    assert "{" not in res.out


def test_the_twin_is_inspected_pruned_and_healed_like_the_toy(capsys, tmp_path):
    """`--model toy-direct` through inspect, prune and heal (analyze, report and compare: test_analyze.py,
    test_compare.py): the alias resolves to the shipped twin and its provenance names it."""
    res = run_cli(capsys, "inspect", "--model", "toy-direct")
    assert res.code == 0 and "think-tags" in res.out and "3,161,984" in res.out
    res = run_cli(capsys, "prune", "--model", "toy-direct", "--drop", "5", "--out", str(tmp_path / "p"))
    assert res.code == 0, res.err
    prov = json.loads((tmp_path / "p" / "layerprobe.json").read_text())
    assert prov["name"] == "toy-direct" and prov["source"].endswith("weights-direct") and prov["dropped"] == [5]
    res = run_cli(
        capsys,
        "heal",
        "--model",
        "toy-direct",
        "--drop",
        "5",
        "--how",
        "full",
        "--steps",
        "2",
        "--limit",
        "4",
        "--out",
        str(tmp_path / "h"),
    )
    assert res.code == 0, res.err
    healed = load_model(str(tmp_path / "h"), device="cpu", dtype="float32")
    assert healed.n_layers == 11 and healed.is_toy
