"""Architecture map: where each supported family keeps its decoder layers, final norm and unembedding.

An unknown architecture is an error that names the missing piece and how to declare it; layerprobe
never guesses a module path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from layerprobe.errors import UserError


@dataclass(frozen=True)
class ArchSpec:
    """Attribute paths (dotted, from the CausalLM module) of the pieces layerprobe needs."""

    layers: str = "model.layers"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    #: per-layer config lists that must be sliced when layers are removed
    per_layer_config: tuple[str, ...] = ("layer_types",)


# Families that must work (docs/definitions.md#supported-architectures). All four keep the same paths in transformers 5.
ARCHITECTURES: dict[str, ArchSpec] = {
    "qwen2": ArchSpec(),
    "qwen3": ArchSpec(),
    "llama": ArchSpec(),
    "mistral": ArchSpec(),
}


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path from `root`; raise UserError naming the first missing part."""
    obj: object = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise UserError(
                f"module path '{path}' not found on {type(root).__name__} (no attribute '{part}'); "
                "declare the right path with --layers-path / --norm-path / --unembed-path"
            )
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        raise UserError(f"'{path}' on {type(root).__name__} is a {type(obj).__name__}, not a module")
    return obj


def arch_spec_for(
    model_type: str,
    layers_path: str | None = None,
    norm_path: str | None = None,
    unembed_path: str | None = None,
) -> ArchSpec:
    """The ArchSpec for a config `model_type`, with optional user overrides.

    An unknown model_type without an explicit `layers_path` is an error: guessing the layer stack of
    an unknown model silently produces wrong statistics.
    """
    base = ARCHITECTURES.get(model_type)
    if base is None:
        if layers_path is None:
            known = ", ".join(sorted(ARCHITECTURES))
            raise UserError(
                f"unknown architecture '{model_type}' (supported: {known}); declare its decoder layers with "
                "--layers-path (e.g. model.layers), and if needed --norm-path and --unembed-path"
            )
        base = ArchSpec()
    return ArchSpec(
        layers=layers_path or base.layers,
        final_norm=norm_path or base.final_norm,
        unembed=unembed_path or base.unembed,
        per_layer_config=base.per_layer_config,
    )
