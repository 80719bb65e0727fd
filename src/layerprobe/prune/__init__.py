"""Layer surgery and layer-selection methods."""

from layerprobe.prune.calibration import (
    Calibration,
    calibration_from_dataset,
    calibration_from_file,
    embedded_calibration,
    resolve_calibration,
    traces_calibration,
)
from layerprobe.prune.laco import LacoResult, laco, merge_layers
from layerprobe.prune.methods import (
    METHODS,
    PruneMethod,
    Selection,
    get_method,
    method_names,
    prune_model,
)
from layerprobe.prune.scores import (
    LayerScores,
    angular_distances,
    block_influence,
    block_influence_by_original,
    layer_scores,
    perplexity,
)
from layerprobe.prune.surgery import (
    drop_layers,
    parse_layer_list,
    save_model,
    validate_drop,
)

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
