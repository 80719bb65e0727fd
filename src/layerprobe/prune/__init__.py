"""Layer surgery and layer-selection methods."""

from layerprobe._lazy import lazy_getattr

# imported on first use, so that the light parts (prune/method_table.py, the names the help lists) load
# without torch
_LAZY = {
    **dict.fromkeys(
        (
            "Calibration",
            "calibration_from_dataset",
            "calibration_from_file",
            "embedded_calibration",
            "resolve_calibration",
            "traces_calibration",
        ),
        "layerprobe.prune.calibration",
    ),
    **dict.fromkeys(("LacoResult", "laco", "merge_layers"), "layerprobe.prune.laco"),
    **dict.fromkeys(
        ("METHODS", "PruneMethod", "Selection", "get_method", "method_names", "prune_model"), "layerprobe.prune.methods"
    ),
    **dict.fromkeys(
        (
            "LayerScores",
            "angular_distances",
            "block_influence",
            "block_influence_by_original",
            "layer_scores",
            "perplexity",
        ),
        "layerprobe.prune.scores",
    ),
    **dict.fromkeys(("drop_layers", "parse_layer_list", "save_model", "validate_drop"), "layerprobe.prune.surgery"),
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "METHODS",
    "Calibration",
    "LacoResult",
    "LayerScores",
    "PruneMethod",
    "Selection",
    "angular_distances",
    "block_influence",
    "block_influence_by_original",
    "calibration_from_dataset",
    "calibration_from_file",
    "drop_layers",
    "embedded_calibration",
    "get_method",
    "laco",
    "layer_scores",
    "merge_layers",
    "method_names",
    "parse_layer_list",
    "perplexity",
    "prune_model",
    "resolve_calibration",
    "save_model",
    "traces_calibration",
    "validate_drop",
]
