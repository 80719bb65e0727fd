"""What a layer-selection method is: `select` returns the original layers to remove and a record of
how they were chosen; `apply` builds the pruned model (drop_layers unless the method changes weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.surgery import drop_layers


@dataclass
class Selection:
    """The outcome of a method: original layer indices removed, and how they were chosen.

    `method` is the label recorded in the model's provenance (e.g. "shortgpt", "laco-paper");
    `record` holds the method's parameters and the scores it used (keyed by original layer index);
    `calibration` is `Calibration.record(seq_len)` of the text that chose the layers (None when the
    method uses no text). Methods that change weights (LaCo) also return the new `model`.
    """

    method: str
    drop: list[int]
    record: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    model: LoadedModel | None = None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "dropped": list(self.drop), **self.record}


@dataclass(frozen=True)
class Scoring:
    """How a method scores layers on its calibration text: tokens per document, documents per forward
    pass, and the method's own options (e.g. LaCo's threshold, a progress callback)."""

    seq_len: int = 256
    batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)


class PruneMethod:
    """Base class of the registered methods; a new method is one module with one subclass instance."""

    name: str = ""
    summary: str = ""
    needs_calibration: bool = False
    takes_n_drop: bool = True

    def select(
        self,
        loaded: LoadedModel,
        n_drop: int | None,
        calibration: Any = None,
        *,
        seq_len: int = 256,
        batch_size: int = 8,
        **options: Any,
    ) -> Selection:
        """The layers to remove: `n_drop` checked (or refused, for a method that decides the number
        itself), the method's `choose`, and the record of the calibration text that chose them."""
        if self.takes_n_drop:
            n: int | None = check_n_drop(n_drop, loaded)
        elif n_drop is not None:
            raise UserError(f"--n-drop does not apply to --method {self.name}: the method decides how many layers go")
        else:
            n = None
        sel = self.choose(loaded, n, calibration, Scoring(seq_len, batch_size, options))
        if self.needs_calibration and sel.calibration is None:
            sel.calibration = calibration_record(calibration, seq_len)
        return sel

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        """The method itself: which `n` layers (checked; None for a method that decides) go."""
        raise NotImplementedError

    def apply(self, loaded: LoadedModel, selection: Selection) -> LoadedModel:
        """The pruned model; the default removes `selection.drop` with drop_layers (weights shared)."""
        if selection.model is not None:
            return selection.model
        return drop_layers(loaded, selection.drop, method=selection.method)


def check_n_drop(n_drop: int | None, loaded: LoadedModel, flag: str = "--n-drop") -> int:
    """n_drop must be an integer in 1 … n_layers − 1."""
    n = loaded.n_layers
    if n_drop is None:
        raise UserError(f"{flag} is required: how many layers to remove (1..{n - 1})")
    if isinstance(n_drop, bool) or not isinstance(n_drop, int):
        raise UserError(f"{flag} {n_drop!r}: expected an integer")
    if n_drop < 1:
        raise UserError(f"{flag} {n_drop}: must be at least 1")
    if n_drop >= n:
        raise UserError(f"{flag} {n_drop}: the model has {n} layers, so at most {n - 1} can be removed")
    return n_drop


def calibration_record(calibration: Any, seq_len: int) -> dict[str, Any] | None:
    if calibration is None:
        return None
    if hasattr(calibration, "record"):
        return calibration.record(seq_len)
    import hashlib

    texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in calibration]
    return {
        "source": "list",
        "n_docs": len(texts),
        "seq_len": int(seq_len),
        "sha1": hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest(),
    }
