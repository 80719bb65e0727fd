"""A real client: lm-evaluation-harness 0.4 (`lm-eval run --model hf --log_samples`) generates on CPU with
smollm2-135m and with a checkpoint `layerprobe prune` wrote; `layerprobe ingest` reads both samples files
into one run, probes them by prefill, compares them and renders the report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layerprobe.data.reader import load_run
from layerprobe.probe.layer_files import load_trace_layers
from tests.cli_utils import run_cli

TASKS = Path(__file__).parent / "data" / "lmeval"
pytestmark = pytest.mark.slow


def _lm_eval(model_dir: Path, out: Path) -> Path:
    exe = shutil.which("lm-eval", path=str(Path(sys.executable).parent)) or shutil.which("lm-eval")
    if exe is None:
        pytest.fail("lm-eval is not installed: it is part of the test extra (pip install -e '.[test]')")
    cmd = [
        exe,
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype=float32",
        "--device",
        "cpu",
        "--tasks",
        "layerprobe_arith",
        "--include_path",
        str(TASKS),
        "--log_samples",
        "--output_path",
        str(out),
        "--batch_size",
        "2",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, cwd=TASKS, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples,) = sorted(out.glob("*/samples_layerprobe_arith_*.jsonl"))
    return samples


def test_lm_eval_samples_ingested_probed_and_reported(smollm2, tmp_path, capsys) -> None:
    base_dir = tmp_path / "smollm2"
    smollm2.model.save_pretrained(base_dir)
    smollm2.tokenizer.save_pretrained(base_dir)
    pruned_dir = tmp_path / "pruned"
    res = run_cli(capsys, "prune", "--model", "smollm2-135m", "--drop", "20,21", "--out", str(pruned_dir))
    assert res.code == 0, res.err

    files = {"base": _lm_eval(base_dir, tmp_path / "lm-base"), "pruned": _lm_eval(pruned_dir, tmp_path / "lm-pruned")}
    run_dir = tmp_path / "run"
    common = [
        "--from",
        "lm-eval",
        "--model",
        "smollm2-135m",
        "--format",
        "think-tags",
        "--answer-type",
        "integer",
        "--out",
        str(run_dir),
    ]
    res = run_cli(capsys, "ingest", str(files["base"]), *common, "--no-report")
    assert res.code == 0, res.err
    assert "6 traces ingested as variant base" in res.out
    res = run_cli(capsys, "ingest", str(files["pruned"]), *common, "--drop", "20,21")
    assert res.code == 0, res.err
    assert "6 traces ingested as variant drop-20-21" in res.out
    assert "warning" not in res.err  # same tokenizer: lm-eval's recorded special tokens match
    assert (run_dir / "report.html").is_file()

    run = load_run(run_dir)
    assert [v.name for v in run.variants] == ["base", "drop-20-21"]
    assert run.info.ingested[1].producer == str(pruned_dir)
    for r in run.samples:
        assert r.budget == 24 and r.external["source"] == "lm-eval" and "exact_match" in r.external["harness"]["none"]
        tl = load_trace_layers(run_dir / r.layers_file)
        assert tl.layers.tolist() == ([i for i in range(30) if i not in (20, 21)] if r.variant != "base" else list(range(30)))
        # lm-eval decoded greedily with the model that probes them: the final layer's top token is the
        # trace's own token at (nearly) every position. Re-tokenizing the text may split a few tokens
        # differently, so allow a handful.
        top = (tl.rank[:, -1] == 0).mean()
        assert top >= 0.9, (r.variant, r.problem_id, top)
    tf = sorted((run_dir / "layers" / "drop-20-21" / "tf").glob("*.npz"))
    assert len(tf) == 6
    assert run.metrics is not None
    assert {(c.variant, c.group, c.n_pairs) for c in run.metrics.comparisons} == {
        ("drop-20-21", "all", 6),
        ("drop-20-21", "layerprobe_arith", 6),
    }
