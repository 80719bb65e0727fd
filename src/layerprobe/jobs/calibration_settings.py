"""The calibration text `layerprobe influence` and `layerprobe prune` score layers on: the flags, checked
before any model is loaded, and the text read early (a missing file fails before minutes of loading)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError


@dataclass
class CalibrationSettings:
    """Where the calibration text comes from (at most one of calib, calib_dataset, calib_traces; none:
    the embedded text) and how much of it is read."""

    calib: Path | None = None
    """--calib: one document per line, or JSONL with a 'text' field."""
    calib_dataset: str | None = None
    """--calib-dataset: a `datasets` spec NAME[:CONFIG[:SPLIT]]."""
    calib_traces: int | None = None
    """--calib-traces: N of the model's own greedy reasoning traces."""
    calib_docs: int = 64
    """--calib-docs: at most this many documents."""
    trace_tokens: int = 128
    """--trace-tokens: max new tokens per reasoning trace."""
    seq_len: int = 256
    """--seq-len: tokens per document."""
    batch_size: int = 8
    """--batch-size: documents per forward pass."""

    def check(self) -> None:
        """Reject bad calibration flags before any model is loaded."""
        given = [
            f
            for f, v in (("--calib", self.calib), ("--calib-dataset", self.calib_dataset), ("--calib-traces", self.calib_traces))
            if v is not None
        ]
        if len(given) > 1:
            raise UserError(f"{' and '.join(given)} are exclusive: give one calibration source")
        if self.calib_traces is not None and self.calib_traces < 1:
            raise UserError(f"--calib-traces {self.calib_traces}: must be at least 1")
        if self.calib_docs < 1:
            raise UserError(f"--calib-docs {self.calib_docs}: must be at least 1")
        if self.trace_tokens < 1:
            raise UserError(f"--trace-tokens {self.trace_tokens}: must be at least 1")
        if self.seq_len < 2:
            raise UserError(f"--seq-len {self.seq_len}: must be at least 2")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")

    def load_early(self) -> Any:
        """Read a file / data set / the embedded text now (so mistakes fail before the model loads)."""
        from layerprobe.prune.calibration import (
            calibration_from_dataset,
            calibration_from_file,
            embedded_calibration,
        )

        if self.calib is not None:
            return calibration_from_file(self.calib, self.calib_docs)
        if self.calib_dataset is not None:
            return calibration_from_dataset(self.calib_dataset, self.calib_docs)
        return embedded_calibration(self.calib_docs)
