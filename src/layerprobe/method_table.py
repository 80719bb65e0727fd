"""The pruning methods by name: the one table the registry (`layerprobe.prune.methods`) loads them from
and the command line names them from. It imports nothing and lives outside the `prune` package (whose
`__init__` loads torch), so `layerprobe prune --help` and `analyze --help` list the methods without
loading torch. A new method is a module under prune/methods/ and one row here (docs/architecture.md,
"Adding a pruning method")."""

from __future__ import annotations

#: name -> (kind, module under layerprobe.prune.methods, the PruneMethod instance's name in it), in the
#: order the help and the registry list them. The kind is the method's `kind` (the registry checks).
METHOD_TABLE: dict[str, tuple[str, str, str]] = {
    "shortgpt": ("depth", "shortgpt", "METHOD"),
    "reverse": ("depth", "reverse", "METHOD"),
    "reverse-keep-final": ("depth", "reverse", "METHOD_KEEP_FINAL"),
    "angular": ("depth", "angular", "METHOD"),
    "laco": ("depth", "laco", "METHOD"),
    "ppl": ("depth", "ppl", "METHOD"),
    "trace-kl": ("depth", "tracekl", "METHOD"),
    "width": ("width", "width", "METHOD"),
    "wanda": ("unstructured", "wanda", "METHOD"),
    "magnitude": ("unstructured", "magnitude", "METHOD"),
    "nm": ("semi-structured", "nm", "METHOD"),
}

#: what a kind removes, as the help groups the methods
KIND_WORDS = {"depth": "layers", "width": "width", "unstructured": "weights", "semi-structured": "weights"}


def depth_methods() -> list[str]:
    """The methods that remove whole decoder layers."""
    return [name for name, (kind, _module, _attr) in METHOD_TABLE.items() if kind == "depth"]


def methods_help() -> str:
    """The methods grouped by what they remove: "layers: shortgpt | reverse | ...; width: width; weights: wanda | ..."."""
    groups: dict[str, list[str]] = {}
    for name, (kind, _module, _attr) in METHOD_TABLE.items():
        groups.setdefault(KIND_WORDS[kind], []).append(name)
    return "; ".join(f"{words}: {' | '.join(names)}" for words, names in groups.items())
