"""layerprobe: see, and explain, how deleting decoder layers breaks long-chain reasoning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerprobe._lazy import lazy_getattr
from layerprobe._version import __version__

if TYPE_CHECKING:
    from layerprobe.models import LoadedModel, load_model
    from layerprobe.prune.surgery import drop_layers, save_model

_LAZY = {
    "LoadedModel": "layerprobe.models",
    "load_model": "layerprobe.models",
    "drop_layers": "layerprobe.prune.surgery",
    "save_model": "layerprobe.prune.surgery",
}

# Lazy, so that `import layerprobe.metrics` (pure functions) does not import torch.
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["LoadedModel", "__version__", "drop_layers", "load_model", "save_model"]
