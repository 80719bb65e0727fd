"""Layer surgery and layer-selection methods."""

from layerprobe.prune.surgery import drop_layers, parse_layer_list, save_model, validate_drop

__all__ = ["drop_layers", "parse_layer_list", "save_model", "validate_drop"]
