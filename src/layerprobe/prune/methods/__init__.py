"""Registry of layer-selection methods: name → PruneMethod (one module per method).

    from layerprobe.prune.methods import get_method
    sel = get_method("shortgpt").select(loaded, 2, calibration)   # sel.drop: original indices
    pruned = get_method("shortgpt").apply(loaded, sel)

`prune_model` does both, defaults the calibration to the embedded text and records it on the result.
A new method is a module defining a PruneMethod subclass instance, added with `register`.
"""

from __future__ import annotations

from typing import Any

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods import angular, laco, ppl, reverse, shortgpt
from layerprobe.prune.methods.base import PruneMethod, Selection, check_n_drop

METHODS: dict[str, PruneMethod] = {}


def register(method: PruneMethod) -> PruneMethod:
    """Add a method to the registry under `method.name`."""
    if not method.name:
        raise ValueError("a method needs a name")
    METHODS[method.name] = method
    return method


for _m in (shortgpt.METHOD, reverse.METHOD, reverse.METHOD_KEEP_FINAL, angular.METHOD, laco.METHOD, ppl.METHOD):
    register(_m)


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
    seq_len: int = 256,
    batch_size: int = 8,
    **options: Any,
) -> tuple[LoadedModel, Selection]:
    """Choose layers with `method` and build the pruned model; `loaded` is not modified.

    Methods that read text use `calibration` (a Calibration, or a list of documents), defaulting to the
    embedded text. The result's `method`, `calibration` and `extra["selection"]` record how the layers
    were chosen.
    """
    m = get_method(method)
    if m.takes_n_drop:
        check_n_drop(n_drop, loaded)
    if m.needs_calibration and calibration is None:
        from layerprobe.prune.calibration import embedded_calibration

        calibration = embedded_calibration()
    selection = m.select(
        loaded, n_drop, calibration if m.needs_calibration else None, seq_len=seq_len, batch_size=batch_size, **options
    )
    pruned = m.apply(loaded, selection)
    pruned.method = selection.method
    pruned.calibration = selection.calibration
    pruned.extra = {**pruned.extra, "selection": selection.to_json()}
    return pruned, selection


__all__ = ["METHODS", "PruneMethod", "Selection", "get_method", "method_names", "prune_model", "register"]
