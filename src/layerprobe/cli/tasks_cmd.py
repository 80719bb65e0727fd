"""`layerprobe tasks`: the tasks layerprobe knows."""

from __future__ import annotations

from rich.table import Table

from layerprobe.cli.common import console


def tasks() -> None:
    """List tasks: name, source, size, answer type and what they control for."""
    from layerprobe.tasks.registry import TASKS

    table = Table(title="layerprobe tasks")
    for i, col in enumerate(("task", "source", "size", "answer", "regime", "description")):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    for t in TASKS.values():
        source = (
            f"{t.hub_id}" + (f" ({t.hub_config})" if t.hub_config else "")
            if t.hub_id
            else ("embedded" if t.name.startswith("toy-") else "generated")
        )
        size = str(t.size) if t.size else "any (--limit)"
        table.add_row(t.name, source + (" or --task-file" if t.hub_id else ""), size, t.answer_type, t.regime, t.description)
    console().print(table)
