"""The shipped toy weights load offline and solve problems (floors well below the measured levels in
docs/toy.md: greedy 1.00 on short chains, facts and 8-12-step chains, 100 held-out problems each)."""

from __future__ import annotations

import json

import pytest

from layerprobe import load_model
from layerprobe.models.aliases import ALIASES, shipped_dir
from layerprobe.toy.evaluate import extract_answer, generate, toy_prompt
from layerprobe.toy.tasks import sample_problems


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
