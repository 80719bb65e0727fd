"""`layerprobe influence` and `layerprobe prune --method`: happy paths and every bad input (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from tests.cli_utils import assert_one_line_error, run_cli

CAL_LINES = [" ".join(f"w{(9 * i + 5 * j) % 120}" for j in range(n)) for i, n in enumerate([14, 3, 27, 8])]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cal_file(tmp_path):
    f = tmp_path / "cal.txt"
    f.write_text("\n".join(CAL_LINES) + "\n\n")
    return f


def test_influence_table_and_json(capsys, tiny_checkpoint_dir, cal_file, tmp_path):
    out = tmp_path / "sub" / "influence.json"
    r = run_cli(
        capsys, "influence", "--model", str(tiny_checkpoint_dir), "--calib", str(cal_file), "--n-max", "2", "--json", str(out)
    )
    assert r.code == 0, r.err
    assert "BI" in r.out and "d(l,1)" in r.out and "rank" in r.out
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1
    assert doc["model"]["n_layers"] == 6 and doc["model"]["family"] == "qwen3"
    assert doc["calibration"]["source"] == "file" and doc["calibration"]["n_docs"] == 4
    assert doc["calibration"]["seq_len"] == 256 and len(doc["calibration"]["sha1"]) == 40
    layers = doc["layers"]
    assert [e["layer"] for e in layers] == list(range(6))
    assert sorted(e["rank"] for e in layers) == list(range(1, 7))
    lowest = min(layers, key=lambda e: e["block_influence"])
    assert lowest["rank"] == 1
    assert all(0.0 <= e["angular_distance"] <= 1.0 for e in layers)
    assert "2" in layers[4]["angular_distances"] and "2" not in layers[5]["angular_distances"]


def test_influence_on_pruned_checkpoint_uses_original_indices(capsys, tiny_checkpoint_dir, cal_file, tmp_path):
    pruned = tmp_path / "p"
    assert run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--drop", "1,3", "--out", str(pruned)).code == 0
    out = tmp_path / "inf.json"
    r = run_cli(capsys, "influence", "--model", str(pruned), "--calib", str(cal_file), "--json", str(out))
    assert r.code == 0, r.err
    assert [e["layer"] for e in json.loads(out.read_text())["layers"]] == [0, 2, 4, 5]


def test_influence_embedded_default(capsys, tiny_checkpoint_dir, tmp_path):
    out = tmp_path / "inf.json"
    r = run_cli(
        capsys, "influence", "--model", str(tiny_checkpoint_dir), "--calib-docs", "3", "--seq-len", "32", "--json", str(out)
    )
    assert r.code == 0, r.err
    cal = json.loads(out.read_text())["calibration"]
    assert cal["source"] == "embedded" and cal["n_docs"] == 3 and cal["seq_len"] == 32


def test_prune_shortgpt_records_method_and_calibration(capsys, tiny_checkpoint_dir, cal_file, tmp_path):
    inf = tmp_path / "inf.json"
    assert (
        run_cli(capsys, "influence", "--model", str(tiny_checkpoint_dir), "--calib", str(cal_file), "--json", str(inf)).code == 0
    )
    lowest2 = sorted(e["layer"] for e in json.loads(inf.read_text())["layers"] if e["rank"] <= 2)
    out = tmp_path / "pruned"
    r = run_cli(
        capsys,
        "prune",
        "--model",
        str(tiny_checkpoint_dir),
        "--method",
        "shortgpt",
        "--n-drop",
        "2",
        "--calib",
        str(cal_file),
        "--out",
        str(out),
    )
    assert r.code == 0, r.err
    info = json.loads((out / "layerprobe.json").read_text())
    assert info["method"] == "shortgpt" and info["dropped"] == lowest2
    assert info["calibration"]["source"] == "file" and info["calibration"]["path"] == str(cal_file)
    assert sorted(info["selection"]["ranking"][:2]) == lowest2
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


def test_prune_reverse_and_laco(capsys, tiny_checkpoint_dir, cal_file, tmp_path):
    r = run_cli(
        capsys,
        "prune",
        "--model",
        str(tiny_checkpoint_dir),
        "--method",
        "reverse-keep-final",
        "--n-drop",
        "2",
        "--out",
        str(tmp_path / "rev"),
    )
    assert r.code == 0, r.err
    info = json.loads((tmp_path / "rev" / "layerprobe.json").read_text())
    assert info["dropped"] == [3, 4] and info["calibration"] is None
    r = run_cli(
        capsys,
        "prune",
        "--model",
        str(tiny_checkpoint_dir),
        "--method",
        "laco",
        "--laco-c",
        "2",
        "--laco-i",
        "1",
        "--laco-threshold",
        "0.5",
        "--laco-mode",
        "reference",
        "--calib",
        str(cal_file),
        "--out",
        str(tmp_path / "laco"),
    )
    assert r.code == 0, r.err
    info = json.loads((tmp_path / "laco" / "layerprobe.json").read_text())
    assert info["method"] == "laco-reference" and info["selection"]["mode"] == "reference"
    assert info["selection"]["n_removed"] == len(info["dropped"]) >= 1
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "laco")
    assert reloaded.config.num_hidden_layers == 6 - len(info["dropped"])


BAD = [
    (["--method", "shortgpt", "--n-drop", "6"], ["--n-drop 6", "6 layers"]),
    (["--method", "shortgpt", "--n-drop", "0"], ["--n-drop 0", "at least 1"]),
    (["--method", "shortgtp", "--n-drop", "1"], ["unknown method", "shortgpt", "reverse-keep-final", "laco", "ppl"]),
    (["--drop", "1", "--method", "shortgpt", "--n-drop", "1"], ["exclusive"]),
    ([], ["--drop", "--method"]),
    (["--method", "shortgpt"], ["needs --n-drop"]),
    (["--drop", "1", "--n-drop", "1"], ["--n-drop applies only"]),
    (["--method", "shortgpt", "--n-drop", "1", "--calib", "EMPTY"], ["empty"]),
    (["--method", "shortgpt", "--n-drop", "1", "--calib", "MISSING"], ["not found"]),
    (["--method", "shortgpt", "--n-drop", "1", "--calib", "CAL", "--calib-traces", "2"], ["exclusive"]),
    (["--method", "laco", "--laco-c", "1"], ["--laco-c 1"]),
    (["--method", "laco", "--laco-i", "0"], ["--laco-i 0"]),
    (["--method", "laco", "--laco-low", "-1"], ["--laco-low -1"]),
    (["--method", "laco", "--laco-high", "6"], ["--laco-high 6"]),
    (["--method", "laco", "--laco-low", "4", "--laco-high", "2"], ["above"]),
    (["--method", "laco", "--laco-threshold", "0"], ["--laco-threshold 0"]),
    (["--method", "laco", "--laco-threshold", "1.5"], ["--laco-threshold 1.5"]),
    (["--method", "laco", "--laco-mode", "fancy"], ["--laco-mode fancy", "paper", "reference"]),
    (["--method", "laco", "--n-drop", "2"], ["--n-drop does not apply"]),
    (["--method", "shortgpt", "--n-drop", "1", "--laco-c", "3"], ["apply only to --method laco"]),
    (["--drop", "1", "--laco-threshold", "0.5"], ["apply only to --method laco"]),
]


@pytest.mark.parametrize("args, fragments", BAD)
def test_prune_bad_inputs(capsys, tiny_checkpoint_dir, tmp_path, cal_file, args, fragments):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    subst = {"EMPTY": str(empty), "MISSING": str(tmp_path / "missing.txt"), "CAL": str(cal_file)}
    args = [subst.get(a, a) for a in args]
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--out", str(tmp_path / "o"), *args)
    assert_one_line_error(r, *fragments)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--calib", "MISSING"], ["not found"]),
        (["--calib", "EMPTY"], ["empty"]),
        (["--n-max", "7"], ["--n-max 7"]),
        (["--n-max", "0"], ["--n-max 0"]),
        (["--calib-traces", "0"], ["--calib-traces 0"]),
        (["--seq-len", "0"], ["--seq-len 0"]),
        (["--batch-size", "0"], ["--batch-size 0"]),
    ],
)
def test_influence_bad_inputs(capsys, tiny_checkpoint_dir, tmp_path, args, fragments):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    subst = {"EMPTY": str(empty), "MISSING": str(tmp_path / "missing.txt")}
    r = run_cli(capsys, "influence", "--model", str(tiny_checkpoint_dir), *[subst.get(a, a) for a in args])
    assert_one_line_error(r, *fragments)


def test_influence_on_own_traces(capsys, tiny_checkpoint_dir, tmp_path):
    out = tmp_path / "inf.json"
    r = run_cli(
        capsys, "influence", "--model", str(tiny_checkpoint_dir), "--calib-traces", "2", "--trace-tokens", "3", "--json", str(out)
    )
    assert r.code == 0, r.err
    cal = json.loads(out.read_text())["calibration"]
    assert cal["source"] == "traces" and cal["n_docs"] == 2 and cal["n_traces"] == 2 and cal["max_new_tokens"] == 3
