"""Registry of layer-selection methods: name → PruneMethod (one module per method).

    from layerprobe.prune.methods import get_method
    sel = get_method("shortgpt").select(loaded, 2, calibration)   # sel.drop: original indices
    pruned = get_method("shortgpt").apply(loaded, sel)
    pruned, sel = prune_model(loaded, "wanda", size=SizeRequest(match_layers=2))   # any kind, one size

`prune_model` does both, defaults the calibration to the embedded text (the model's own traces for a
method that reads traces) and records on the result what was removed and how much (`extra["compression"]`).
A new method is a module defining a PruneMethod subclass instance and its row in method_table.py
(`register` adds one at run time).
"""

from __future__ import annotations

import importlib
from typing import Any

from layerprobe.errors import UserError
from layerprobe.method_table import METHOD_TABLE
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Selection, check_n_drop
from layerprobe.prune.size import SizeRequest, count_size, size_record

METHODS: dict[str, PruneMethod] = {}


def register(method: PruneMethod) -> PruneMethod:
    """Add a method to the registry under `method.name`."""
    if not method.name:
        raise ValueError("a method needs a name")
    METHODS[method.name] = method
    return method


def _load_table() -> None:
    """Register every method of the table (method_table.py), checking that each is what its row says."""
    for name, (kind, module, attr) in METHOD_TABLE.items():
        method = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        if method.name != name or method.kind != kind:
            raise ValueError(f"method_table.py: {name} ({kind}) is {method.name} ({method.kind}) in {module}.{attr}")
        register(method)


_load_table()


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> PruneMethod:
    """The registered method called `name`; UserError listing the valid names otherwise."""
    method = METHODS.get(name)
    if method is None:
        raise UserError(f"--method {name}: unknown method (valid: {', '.join(METHODS)})")
    return method


def prune_model(
    loaded: LoadedModel,
    method: str,
    n_drop: int | None = None,
    calibration: Any = None,
    *,
    size: SizeRequest | None = None,
    seq_len: int = 256,
    batch_size: int = 8,
    **options: Any,
) -> tuple[LoadedModel, Selection]:
    """Choose what to remove with `method` and build the pruned model; `loaded` is not modified.

    The amount is `n_drop` layers (methods that remove whole layers) or `size` (any method that takes
    one). Methods that read text use `calibration` (a Calibration, or a list of documents), defaulting
    to the embedded text, or to the model's own reasoning traces for a method that reads traces. The
    result's `method`, `calibration`, `extra["selection"]` and `extra["compression"]` (kind, the size
    asked, the size counted on the result) record how it was made.
    """
    m = get_method(method)
    if m.kind == "depth" and m.takes_n_drop and size is None:
        check_n_drop(n_drop, loaded)
    if m.needs_calibration and calibration is None:
        from layerprobe.prune.calibration import embedded_calibration, traces_calibration

        calibration = traces_calibration(loaded, default_traces(loaded)) if m.needs_traces else embedded_calibration()
    selection = m.select(
        loaded,
        n_drop,
        calibration if m.needs_calibration else None,
        size=size,
        seq_len=seq_len,
        batch_size=batch_size,
        **options,
    )
    pruned = m.apply(loaded, selection)
    pruned.method = selection.method
    pruned.calibration = selection.calibration
    request = size.to_json() if size is not None else {"n_drop": len(selection.drop)}
    compression = {
        "kind": m.kind,
        "method": selection.method,
        "request": request,
        "size": size_record(pruned, count_size(loaded), loaded.n_layers_original),
    }
    pruned.extra = {**pruned.extra, "selection": selection.to_json(), "compression": compression}
    return pruned, selection


def default_traces(loaded: LoadedModel) -> int:
    """Own reasoning traces a trace-reading method generates when not told how many: 32 for the toy
    (as analyze calibrates it), 16 (the built-in reasoning prompts, once each) for other models."""
    return 32 if loaded.is_toy else 16


__all__ = [
    "METHODS",
    "PruneMethod",
    "Selection",
    "SizeRequest",
    "default_traces",
    "get_method",
    "method_names",
    "prune_model",
    "register",
]
