"""layerprobe: see, and explain, how deleting decoder layers breaks long-chain reasoning."""

from __future__ import annotations

__version__ = "0.1.0"

from layerprobe.models import LoadedModel, load_model  # noqa: E402
from layerprobe.prune.surgery import drop_layers, save_model  # noqa: E402

__all__ = ["LoadedModel", "__version__", "drop_layers", "load_model", "save_model"]
