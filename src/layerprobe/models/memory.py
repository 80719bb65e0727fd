"""Out-of-memory handling shared by everything that batches forward passes."""

from __future__ import annotations

import gc

import torch


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is an accelerator (or host) out-of-memory error."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Return cached accelerator memory after an out-of-memory error."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
