"""Run directories: the versioned schema, the append-only resumable store, metrics from samples,
and the one reader (`load_run`) for the CLI, the report and notebooks."""

from layerprobe._lazy import lazy_getattr
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

_LAZY = {"load_run": "layerprobe.runs.reader", "Run": "layerprobe.runs.reader"}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "SCHEMA_VERSION",
    "LayerAggregates",
    "MetricsFile",
    "Run",
    "RunConfig",
    "RunInfo",
    "RunStore",
    "SampleRecord",
    "VariantSpec",
    "is_run_dir",
    "load_run",
    "read_metrics",
    "read_run_info",
    "read_samples",
    "trace_key",
]
