"""Calibration sources: text files, JSONL, data sets (offline → clear error), embedded default, traces."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from layerprobe.errors import UserError
from layerprobe.models.arch import arch_spec_for
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune import (
    block_influence,
    calibration_from_dataset,
    calibration_from_file,
    embedded_calibration,
    resolve_calibration,
    traces_calibration,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_text_file_one_document_per_line(tmp_path):
    f = tmp_path / "cal.txt"
    f.write_text("first doc here\n\n   \nsecond doc\nthird\n")
    cal = calibration_from_file(f)
    assert cal.texts == ["first doc here", "second doc", "third"]
    rec = cal.record(128)
    assert rec == {
        "source": "file",
        "path": str(f),
        "n_docs": 3,
        "seq_len": 128,
        "sha1": hashlib.sha1(b"first doc here\nsecond doc\nthird").hexdigest(),
    }
    assert calibration_from_file(f, max_docs=2).texts == ["first doc here", "second doc"]


@pytest.mark.parametrize("name", ["cal.jsonl", "cal.txt"])
def test_jsonl_with_text_field(tmp_path, name):
    f = tmp_path / name
    lines = [json.dumps({"text": "a multi\nline document", "id": 1}), "", json.dumps({"text": "second"})]
    f.write_text("\n".join(lines) + "\n")
    cal = calibration_from_file(f)
    assert cal.texts == ["a multi\nline document", "second"]


def test_jsonl_line_without_text(tmp_path):
    f = tmp_path / "cal.jsonl"
    f.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no"}) + "\n")
    with pytest.raises(UserError, match="line 2 has no string 'text'"):
        calibration_from_file(f)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(UserError, match="empty"):
        calibration_from_file(empty)
    with pytest.raises(UserError, match="not found"):
        calibration_from_file(tmp_path / "nope.txt")


def test_embedded_default_is_recorded():
    cal = embedded_calibration()
    assert cal.n_docs == 64 and all(len(t.split()) > 150 for t in cal.texts)
    rec = cal.record(256)
    assert rec["source"] == "embedded" and rec["name"] == "layerprobe-en-v1"
    assert rec["n_docs"] == 64 and rec["seq_len"] == 256 and rec["sha1"] == cal.sha1()
    assert embedded_calibration(8).n_docs == 8
    assert resolve_calibration().source == "embedded"


def test_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="--calib FILE"):
        calibration_from_dataset("layerprobe-test/no-such-dataset:default:test")
    with pytest.raises(UserError, match="NAME\\[:CONFIG\\[:SPLIT\\]\\]"):
        calibration_from_dataset("a:b:c:d")


def test_sources_are_exclusive(tmp_path):
    with pytest.raises(UserError, match="exclusive"):
        resolve_calibration(file=tmp_path / "x.txt", traces=2)


def test_generic_traces_on_a_tiny_model(tiny):
    cal = traces_calibration(tiny, 3, max_new_tokens=5)
    assert cal.source == "traces" and cal.n_docs == 3 and len(cal.token_ids) == 3
    rec = cal.record(64)
    assert rec["n_traces"] == 3 and rec["max_new_tokens"] == 5 and rec["generator"] == "engine"
    assert rec["format"] == "think-tags"  # the tiny tokenizer has <think> tokens
    for ids in cal.token_ids:
        assert len(ids) >= 6  # prompt + generated tokens
    assert len(block_influence(tiny, cal)) == 6


def test_toy_traces_use_toy_prompts():
    from transformers import AutoModelForCausalLM

    from layerprobe.toy.model import toy_config
    from layerprobe.toy.vocab import build_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(toy_config(2, hidden=32, heads=2, mlp=64)).eval()
    toy = LoadedModel(
        model=model,
        tokenizer=build_tokenizer(),
        name="toy",
        source="test",
        source_kind="toy",
        family="qwen3",
        arch=arch_spec_for("qwen3"),
        layer_map=[0, 1],
        n_layers_original=2,
    )
    cal = traces_calibration(toy, 2, max_new_tokens=4, task="short")
    assert cal.record(32)["generator"] == "toy" and cal.record(32)["task"] == "short"
    assert all(t.startswith("<q> x =") and "<think>" in t for t in cal.texts)
    assert all(len(ids) > 5 for ids in cal.token_ids)
    assert len(block_influence(toy, cal)) == 2


def test_batched_traces_equal_one_at_a_time():
    from tests.helpers import tiny_loaded

    loaded = tiny_loaded("llama")
    prompts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13"]
    one = traces_calibration(loaded, 4, max_new_tokens=6, prompts=prompts, batch_size=1)
    four = traces_calibration(loaded, 4, max_new_tokens=6, prompts=prompts, batch_size=4)
    assert one.token_ids == four.token_ids
    assert [ids[: len(loaded.tokenizer(p)["input_ids"])] for ids, p in zip(one.token_ids, prompts)] == [
        loaded.tokenizer(p)["input_ids"] for p in prompts
    ]
