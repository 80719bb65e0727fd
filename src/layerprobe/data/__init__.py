"""The stored-data contract: the versioned schema of every file layerprobe writes, the append-only
resumable store, the summaries derived from the samples, and the one reader (`load_run`) for the CLI,
the report and notebooks. Imports no job (and no torch)."""

from layerprobe._lazy import lazy_getattr
from layerprobe.data.schema import (
    SCHEMA_VERSION,
    LayerAggregates,
    MetricsFile,
    RunConfig,
    RunInfo,
    SampleRecord,
    VariantSpec,
    trace_key,
)
from layerprobe.data.store import (
    RunStore,
    is_run_dir,
    read_metrics,
    read_run_info,
    read_samples,
)

_LAZY = {"load_run": "layerprobe.data.reader", "Run": "layerprobe.data.reader"}
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
