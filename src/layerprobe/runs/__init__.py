"""Run directories: versioned schema, append-only resumable store, metrics from samples."""

from layerprobe.runs.schema import (
    SCHEMA_VERSION,
    LayerAggregates,
    MetricsFile,
    RunConfig,
    RunInfo,
    SampleRecord,
    VariantSpec,
    trace_key,
)
from layerprobe.runs.store import (
    RunStore,
    is_run_dir,
    read_metrics,
    read_run_info,
    read_samples,
)

__all__ = [
    "SCHEMA_VERSION", "LayerAggregates", "MetricsFile", "RunConfig", "RunInfo", "SampleRecord", "VariantSpec",
    "trace_key", "RunStore", "is_run_dir", "read_metrics", "read_run_info", "read_samples",
]
