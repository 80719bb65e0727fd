"""Per-layer probes during generation (docs/definitions.md#probes; docs/probes.md).

- hooks: `LayerProbe` (a scaling-engine observer with forward hooks) and `capture()`;
- lens: logit-lens statistics of all layers of a step in one stacked matmul;
- layer_files: `TraceLayers` and its .npz files;
- settle: settling depth and deep-thinking tokens from stored JSD;
- teacher: teacher-forced KL and lens drift of a pruned model along a base trace;
- aggregate: per-layer summaries over traces and relative-position bins;
- tl: the optional TransformerLens adapter (extra `layerprobe[tl]`).
"""

from __future__ import annotations

from layerprobe._lazy import lazy_getattr

_LAZY = {
    "LayerProbe": "layerprobe.probe.hooks",
    "capture": "layerprobe.probe.hooks",
    "TraceLayers": "layerprobe.probe.layer_files",
    "save_trace_layers": "layerprobe.probe.layer_files",
    "load_trace_layers": "layerprobe.probe.layer_files",
    "settling_depth": "layerprobe.probe.settle",
    "deep_thinking": "layerprobe.probe.settle",
    "settle_summary": "layerprobe.probe.settle",
    "teacher_forced": "layerprobe.probe.teacher",
    "TeacherForced": "layerprobe.probe.teacher",
    "save_teacher_forced": "layerprobe.probe.teacher",
    "load_teacher_forced": "layerprobe.probe.teacher",
    "kl_onset": "layerprobe.probe.teacher",
    "layer_summary": "layerprobe.probe.aggregate",
    "position_bins": "layerprobe.probe.aggregate",
    "position_heatmap": "layerprobe.probe.aggregate",
}

# lazy: settle/aggregate/store are numpy-only and should not import torch
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = sorted(_LAZY)
