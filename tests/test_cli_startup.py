"""The command line starts without the heavy libraries: importing the app, and asking any command for its
help, imports neither torch nor transformers nor a job (they are imported when a command runs). A
behaviour test (what is in sys.modules of a fresh interpreter), not a timed one: the time is measured by
benchmarks/bench_startup.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("torch", "transformers", "numpy", "scipy", "layerprobe.jobs.analyze", "layerprobe.jobs.ingest")

PROBE = """
import json, sys
sys.argv = ["layerprobe", *json.loads(sys.argv[1])]
if len(sys.argv) > 1:
    from layerprobe.cli.app import main
    try:
        main()
    except SystemExit:
        pass
else:
    import layerprobe.cli.app  # noqa: F401
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "numpy", "scipy")
                                   or m.startswith("layerprobe.jobs."))))
"""


def loaded_modules(*args: str) -> list[str]:
    """Modules a fresh interpreter holds after importing the app (no args) or after `layerprobe ARGS`."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True, env=env, timeout=120
    )
    return list(json.loads(proc.stderr.strip().splitlines()[-1]))


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m in HEAVY]


def test_importing_the_app_imports_no_torch() -> None:
    mods = loaded_modules()
    assert "torch" not in mods
    assert heavy(mods) == []


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("analyze", "--help"),
        ("prune", "--help"),
        ("influence", "--help"),
        ("ingest", "--help"),
        ("heal", "--help"),
        ("judge", "--help"),
        ("toy", "eval", "--help"),
    ],
)
def test_help_imports_no_torch(args: tuple[str, ...]) -> None:
    assert heavy(loaded_modules(*args)) == []


def test_the_help_names_every_registered_method_by_its_kind() -> None:
    from layerprobe.method_table import KIND_WORDS, methods_help
    from layerprobe.prune.methods import METHODS

    groups = dict(part.split(": ", 1) for part in methods_help().split("; "))
    listed = {name: words for words, names in groups.items() for name in names.split(" | ")}
    assert listed == {name: KIND_WORDS[m.kind] for name, m in METHODS.items()}
