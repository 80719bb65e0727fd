"""Model loading, aliases and the architecture map."""

from layerprobe.models.aliases import ALIASES, Alias, resolve_alias
from layerprobe.models.arch import ARCHITECTURES, ArchSpec, arch_spec_for
from layerprobe.models.loaded import LoadedModel
from layerprobe.models.loading import load_model, resolve_device, resolve_dtype

__all__ = [
    "ALIASES",
    "ARCHITECTURES",
    "Alias",
    "ArchSpec",
    "LoadedModel",
    "arch_spec_for",
    "load_model",
    "resolve_alias",
    "resolve_device",
    "resolve_dtype",
]
