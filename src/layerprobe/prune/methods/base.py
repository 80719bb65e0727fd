"""What a layer-selection method is: `select` returns the original layers to remove and a record of
how they were chosen; `apply` builds the pruned model (drop_layers unless the method changes weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.size import SizeRequest
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
    """Base class of the registered methods; a new method is one module with one subclass instance.

    `kind` says what the method removes: `depth` (whole layers: `select` returns them in
    `Selection.drop`), `width` (FFN channels), `unstructured` or `semi-structured` (single weights); the
    last three return the new model in `Selection.model`. Depth methods that take a number of layers
    (`takes_n_drop`) accept it as `n_drop` or as a `SizeRequest`; the others need a `SizeRequest`
    (docs/definitions.md#size)."""

    name: str = ""
    summary: str = ""
    needs_calibration: bool = False
    takes_n_drop: bool = True
    kind: str = "depth"
    needs_traces: bool = False
    """Reads the model's own reasoning traces (a traces calibration), whatever the other methods read."""

    def select(
        self,
        loaded: LoadedModel,
        n_drop: int | None,
        calibration: Any = None,
        *,
        size: SizeRequest | None = None,
        seq_len: int = 256,
        batch_size: int = 8,
        **options: Any,
    ) -> Selection:
        """What to remove: the size checked (`n_drop`, or `size`; refused for a method that decides the
        amount itself), the method's `choose`, and the record of the calibration text that chose it."""
        self.check_request(n_drop, size)
        n: int | None = None
        if self.kind == "depth":
            if size is not None:
                n_drop = size.layers(loaded, self.name)
            if self.takes_n_drop:
                n = check_n_drop(n_drop, loaded)
        else:
            options = {**options, "size": size}
        sel = self.choose(loaded, n, calibration, Scoring(seq_len, batch_size, options))
        if self.needs_calibration and sel.calibration is None:
            sel.calibration = calibration_record(calibration, seq_len)
        if size is not None:
            sel.record = {"size_request": size.to_json(), **sel.record}
        return sel

    def check_request(self, n_drop: int | None, size: SizeRequest | None) -> None:
        """The amount asked suits the method (checked before any model is loaded; UserError otherwise)."""
        if self.kind != "depth":
            if n_drop is not None:
                raise UserError(
                    f"--n-drop counts whole layers; --method {self.name} removes {self.kind.replace('-', ' ')} weights: "
                    "say its size with --match-layers K or --sparsity F"
                )
            self.check_size(size)
            return
        if not self.takes_n_drop:
            if size is not None:
                raise UserError(
                    f"--method {self.name} decides how much it removes: it takes no size (--match-layers / --sparsity)"
                )
            if n_drop is not None:
                raise UserError(f"--n-drop does not apply to --method {self.name}: the method decides how many layers go")
            return
        if size is not None and n_drop is not None:
            raise UserError("--n-drop and --match-layers / --sparsity are exclusive: say the size one way")
        if size is None and n_drop is None:
            raise UserError(f"--method {self.name} needs --n-drop K or --match-layers K (how many layers to remove)")
        if size is not None and size.nm is not None:
            raise UserError(f"--nm applies to --method nm; --method {self.name} removes whole layers (--match-layers K)")

    def check_size(self, size: SizeRequest | None) -> SizeRequest:
        """The size request of a method that removes weights or channels (UserError when it has none)."""
        if size is None or size.nm is not None:
            what = (
                "--match-layers K or --sparsity F"
                if size is None
                else "--match-layers K or --sparsity F (--nm is for --method nm)"
            )
            raise UserError(f"--method {self.name} needs a size: {what}")
        return size

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        """The method itself: which `n` layers (checked; None for a method that decides) go, or, for a
        method that is not `depth`, the new model (`how.options["size"]` says how much goes)."""
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
