"""benchmarks/gpu_check.py, the one-call GPU measurement, runs end to end on CPU at a tiny shape and
writes every part; without a GPU and without --tiny it says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerprobe.probe import costs

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_tiny_writes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    res = _run("--tiny", "--threads", "1", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["parts"]) == {"prefill", "memory", "live", "trace", "capacity"}
    assert all("error" not in p for p in report["parts"].values())
    assert report["shape"] == "tiny" and report["model"]["layers"] == 2
    assert report["model"]["params"] == costs.SHAPES["tiny"].params
    prefill = report["parts"]["prefill"]["result"]
    assert [r["tokens"] for r in prefill] == report["plan"]["prefill"]
    for r in prefill:
        assert 0 < r["plain_s"] and 0 < r["full_s"]
        # the stored statistics are float16 / int32 per token and layer: the file is never larger than that (+ headers)
        bound = costs.stored_bytes(costs.SHAPES["tiny"], r["tokens"]) + 4096
        assert 0 < r["file_bytes_per_token_layer"] * r["tokens"] * 2 < bound
    (live,) = report["parts"]["live"]["result"]
    assert live["batch"] == 2 and live["forward_passes"] > 4
    assert report["parts"]["trace"]["result"]["trace_tokens"] >= report["plan"]["trace"]
    cap = report["parts"]["capacity"]["result"]
    assert cap["kv_cache_mib"] * 2**20 == costs.kv_bytes(costs.SHAPES["tiny"], 64, 2, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run on it")
def test_no_gpu_is_one_line(tmp_path: Path) -> None:
    res = _run("--out", str(tmp_path / "x.json"), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no CUDA device" in res.stderr
    assert not (tmp_path / "x.json").exists()
