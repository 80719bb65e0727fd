"""`layerprobe prune / inspect / models` and every bad input of the foundation issue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import tiny_tokenizer


def test_prune_tiny_checkpoint(capsys, tiny_checkpoint_dir, tmp_path):
    out = tmp_path / "pruned"
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1,2", "--out", str(out))
    assert r.code == 0, r.err
    info = json.loads((out / "layerprobe.json").read_text())
    assert info["dropped"] == [1, 2] and info["n_layers"] == 4 and info["method"] == "manual"
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


@pytest.mark.parametrize(
    "drop, fragments",
    [
        ("6", ["layer 6 is out of range", "0..5"]),
        ("-1", ["negative"]),
        ("1,1", ["listed twice"]),
        ("1,x", ["'x' is not an integer"]),
        ("1.5", ["not an integer"]),
        ("0,1,2,3,4,5", ["cannot remove all 6 layers"]),
        ("", ["expected comma-separated"]),
    ],
)
def test_prune_bad_drop(capsys, tiny_checkpoint_dir, tmp_path, drop, fragments):
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", drop, "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "--drop", *fragments)


def test_unknown_alias(capsys, tmp_path):
    r = run_cli(capsys, "prune", "--model", "smollm3-9t", "--drop", "1", "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "unknown model 'smollm3-9t'", "s1.1-7b")


def test_missing_path(capsys, tmp_path):
    r = run_cli(capsys, "inspect", "--model", str(tmp_path / "nowhere" / "model.gguf"))
    assert_one_line_error(r, "unknown model")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(capsys, "inspect", "--model", str(empty))
    assert_one_line_error(r, "no config.json")


def test_hub_id_offline_fails_at_once(capsys):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    start = time.monotonic()
    r = run_cli(capsys, "inspect", "--model", "nobody-here/no-such-model")
    assert_one_line_error(r, "could not load model 'nobody-here/no-such-model'")
    assert time.monotonic() - start < 30  # no network retries


def test_out_not_writable(capsys, tiny_checkpoint_dir, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1", "--out", str(a_file / "sub"))
    assert_one_line_error(r, "not writable")
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1", "--out", str(a_file))
    assert_one_line_error(r, "not a directory")


def test_out_nonempty_unrelated_and_existing_checkpoint(capsys, tiny_checkpoint_dir, tmp_path):
    unrelated = tmp_path / "thesis"
    unrelated.mkdir()
    (unrelated / "chapter1.tex").write_text("precious")
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1", "--out", str(unrelated))
    assert_one_line_error(r, "non-empty directory that is not a layerprobe checkpoint")
    assert (unrelated / "chapter1.tex").read_text() == "precious"
    out = tmp_path / "ok"
    assert run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1", "--out", str(out)).code == 0
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "2", "--out", str(out))
    assert_one_line_error(r, "--force")
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "2", "--out", str(out), "--force")
    assert r.code == 0 and json.loads((out / "layerprobe.json").read_text())["dropped"] == [2]


def test_corrupted_checkpoint(capsys, tiny_checkpoint_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    r = run_cli(capsys, "inspect", "--model", str(bad))
    assert_one_line_error(r, "could not load")


def test_unknown_architecture_needs_layers_path(capsys, tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=128, n_embd=32, n_layer=4, n_head=2, n_positions=128)
    path = tmp_path / "gpt2-tiny"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    r = run_cli(capsys, "inspect", "--model", str(path))
    assert_one_line_error(r, "unknown architecture 'gpt2'", "--layers-path")
    r = run_cli(capsys, "inspect", "--model", str(path), "--layers-path", "transformer.blocks")
    assert_one_line_error(r, "'transformer.blocks' not found", "'blocks'")
    out = tmp_path / "gpt2-pruned"
    args = ["--layers-path", "transformer.h", "--norm-path", "transformer.ln_f", "--unembed-path", "lm_head"]
    r = run_cli(capsys, "prune", "--model", str(path), "--drop", "1", "--out", str(out), *args)
    assert r.code == 0, r.err
    assert AutoModelForCausalLM.from_pretrained(out).config.n_layer == 3


def test_usage_errors_are_one_line(capsys):
    r = run_cli(capsys, "prune", "--model", "toy")
    assert_one_line_error(r, "Missing option")
    r = run_cli(capsys, "frobnicate")
    assert_one_line_error(r, "No such command")


def test_models_and_inspect(capsys, tiny_checkpoint_dir):
    r = run_cli(capsys, "models")
    assert r.code == 0 and "s1.1-7b" in r.out and "simplescaling/s1.1-7B" in r.out
    r = run_cli(capsys, "inspect", "--model", str(tiny_checkpoint_dir))
    assert r.code == 0, r.err
    assert "qwen3" in r.out and "6 (original 6)" in r.out


def test_console_script_exit_code(tiny_checkpoint_dir, tmp_path):
    """The installed entry point, as a user runs it: exit 2 and a single stderr line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerprobe",
            "prune",
            "--model",
            str(tiny_checkpoint_dir),
            "--drop",
            "9",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --drop: layer 9 is out of range (the model has 6 layers: 0..5)"]


@pytest.mark.slow
def test_prune_smollm2_cli(capsys, smollm2, tmp_path):
    """Done-when of the foundation issue: a 28-layer checkpoint that plain transformers loads and that
    generates the same tokens as the in-memory pruned model."""
    from layerprobe import drop_layers

    out = tmp_path / "X"
    r = run_cli(capsys, "prune", "--model", "smollm2-135m", "--drop", "20,21", "--out", str(out))
    assert r.code == 0, r.err
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 28
    pruned = drop_layers(smollm2, [20, 21])
    ids = smollm2.tokenizer("Question: what is 12 + 7? Answer:", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=16, do_sample=False, pad_token_id=smollm2.tokenizer.eos_token_id)
    with torch.no_grad():
        assert reloaded.generate(ids, **kw).tolist() == pruned.model.generate(ids, **kw).tolist()


def test_unreachable_hub_means_offline_at_once(monkeypatch):
    """No network: the CLI sets HF_HUB_OFFLINE before anything asks the hub, so an uncached model fails
    at once instead of after huggingface_hub's retries; a user's own setting and proxies are respected."""
    import time

    from layerprobe.cli import app

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.monotonic()
    app._offline_when_unreachable()
    assert time.monotonic() - t0 < 1.5 and app.os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    app._offline_when_unreachable()
    assert app.os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    app._offline_when_unreachable()
    assert "HF_HUB_OFFLINE" not in app.os.environ
