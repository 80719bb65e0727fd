"""The one-way import rule (docs/architecture.md): every import statement in the package, at any depth,
goes where layerprobe._layers.ALLOWED says it may; the allowed graph has no cycle; commands do not import
the app that registers them; every package's ruff.toml is the one scripts/import_rules.py writes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from layerprobe._layers import ALLOWED, FOUNDATION

SRC = Path(__file__).resolve().parents[1] / "src" / "layerprobe"


def _unit(path: Path) -> str:
    """The package (or foundation module) a file belongs to."""
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported layerprobe unit) of every import in a file, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "layerprobe" else [f"layerprobe.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "layerprobe" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
            elif parts[0] == "layerprobe":
                out.append((node.lineno, "<root>"))
    return out


def test_every_import_follows_the_allowed_graph() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        if unit in ("__init__", "__main__"):
            continue  # the package root re-exports the API lazily; __main__ runs the command line
        allowed = set(FOUNDATION) | {unit} | (set(ALLOWED[unit]) if unit in ALLOWED else set())
        if unit in FOUNDATION:
            allowed = set(FOUNDATION)
        for line, target in _imports(path):
            if target not in allowed:
                bad.append(f"{path.relative_to(SRC)}:{line} imports layerprobe.{target}")
    assert not bad, "\n".join(bad)


def test_the_allowed_graph_has_no_cycle_and_the_report_reads_data_only() -> None:
    order: list[str] = []
    todo = dict(ALLOWED)
    while todo:
        ready = [p for p, deps in todo.items() if set(deps) <= set(order)]
        assert ready, f"a cycle among {sorted(todo)}"
        order += sorted(ready)
        for p in ready:
            del todo[p]
    assert ALLOWED["report"] == {"data"} and ALLOWED["data"] <= {"metrics"}


def test_commands_do_not_import_the_app() -> None:
    for path in (SRC / "cli").glob("*_cmd.py"):
        src = path.read_text(encoding="utf-8")
        assert "layerprobe.cli.app" not in src, path.name


def test_ruff_rules_are_written_from_the_one_table() -> None:
    script = SRC.parents[1] / "scripts" / "import_rules.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reading_runs_needs_no_torch() -> None:
    """A notebook or the report reads run directories without importing torch or transformers."""
    code = "import sys, layerprobe.data as d; d.load_run; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC.parent)})
    assert done.stdout.split() == ["False", "False"], done.stderr
