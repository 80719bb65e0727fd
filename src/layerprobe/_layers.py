"""Which layerprobe packages may import which: the one table behind the per-package ruff rules
(`python scripts/import_rules.py` writes every `ruff.toml` from it) and the test of the import graph
(docs/architecture.md). Data flows one way: commands -> jobs -> the libraries that do the work -> the
models; the report reads the stored-data contract (`data`) and nothing else."""

from __future__ import annotations

#: Modules every package may import: errors, the input rules, durable files, helper processes, the
#: names of the pruning methods (method_table: read by the help without importing `prune`, which loads torch).
FOUNDATION = ("errors", "rules", "_io", "_proc", "_lazy", "_version", "_layers", "method_table")

#: package -> the layerprobe packages it may import besides FOUNDATION and itself.
ALLOWED: dict[str, frozenset[str]] = {
    "metrics": frozenset(),
    "models": frozenset(),
    "scaling": frozenset({"models"}),
    "toy": frozenset({"scaling", "models"}),
    "tasks": frozenset({"toy"}),
    "sources": frozenset({"data", "scaling"}),
    "probe": frozenset({"models", "scaling", "data"}),
    "prune": frozenset({"models", "scaling", "metrics", "tasks"}),
    "data": frozenset({"metrics"}),
    "judge": frozenset(),
    "jobs": frozenset({"data", "probe", "prune", "scaling", "sources", "tasks", "toy", "models", "metrics", "judge"}),
    "report": frozenset({"data"}),
    "cli": frozenset(
        {"jobs", "data", "report", "probe", "prune", "scaling", "sources", "tasks", "toy", "models", "metrics", "judge"}
    ),
}
