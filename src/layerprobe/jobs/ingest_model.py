"""The model an ingest reads traces with: loaded with its weights (probes by prefill) or only its tokenizer
and config (text only), pruned as the traces' producer was (`--drop`, `--method`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from layerprobe.data.schema import CompressionSpec
from layerprobe.errors import UserError


@dataclass
class ModelSide:
    """The model as an ingest uses it: its weights (probes) or only its tokenizer and config (text only)."""

    tokenizer: Any
    name: str
    source: Any
    source_kind: str | None
    family: str | None
    dtype: str | None
    revision: str | None
    n_layers: int | None
    """Decoder layers of the unpruned model (None: unknown, text only)."""
    dropped: list[int]
    """Original layers the traces' model lacks."""
    reasoning_format: str | None = None
    """The format the alias declares."""
    context: int | None = None
    tokenizer_name: str | None = None
    base: Any = None
    """The unpruned model (LoadedModel) when probing; None text only."""
    loaded: Any = None
    """The model that produced the traces (base without `dropped`) when probing."""
    method: str | None = None
    compression: dict[str, Any] | None = None
    """The record of a compressed checkpoint given as --model (layerprobe.json)."""


def compression_spec(comp: Any) -> CompressionSpec | None:
    """A checkpoint's compression record as the run stores it (None when it has none or it does not fit)."""
    if not isinstance(comp, dict) or not comp.get("size"):
        return None
    try:
        return CompressionSpec.model_validate(comp)
    except ValueError:
        return None


def model_side(
    model: str,
    probes: bool,
    drop: Sequence[int] | None,
    method: str | None,
    n_drop: int,
    device: str,
    dtype: str,
    tokenizer: str | None,
) -> ModelSide:
    """Load what the ingest needs: the tokenizer and config only when there are no probes (the flags
    checked by IngestSettings.check)."""
    if not probes:
        from layerprobe.models.loading import load_text_model

        tm = load_text_model(model, tokenizer)
        dropped = list(tm.dropped)
        if drop:
            bad = [i for i in drop if tm.n_layers is not None and not 0 <= i < tm.n_layers]
            if bad or len(set(drop)) != len(drop):
                valid = f"0..{tm.n_layers - 1}" if tm.n_layers else "distinct indices"
                raise UserError(f"--drop {','.join(map(str, drop))}: layers must be distinct and in {valid}")
            dropped = sorted(set(dropped) | set(drop))
        return ModelSide(
            tokenizer=tm.tokenizer,
            name=model,
            source=tm.source,
            source_kind=tm.source_kind,
            family=tm.family,
            dtype=None,
            revision=None,
            n_layers=tm.n_layers,
            dropped=dropped,
            reasoning_format=tm.reasoning_format,
            context=tm.context,
            tokenizer_name=tm.tokenizer_name,
            compression=tm.compression,
        )
    from layerprobe.jobs.execute import set_threads_for
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, validate_drop

    base = load_model(model, device=device, dtype=dtype)
    set_threads_for(base)
    loaded = base
    if drop:
        loaded = drop_layers(base, validate_drop(list(drop), base), checked=True)
    elif method:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import default_traces, get_method, prune_model

        m = get_method(method)
        cal = (
            resolve_calibration(base, traces=default_traces(base) if base.source_kind == "toy" or m.needs_traces else None)
            if m.needs_calibration
            else None
        )
        loaded, _ = prune_model(base, method, n_drop, cal)
    return ModelSide(
        tokenizer=loaded.tokenizer,
        name=model,
        source=base.source,
        source_kind=base.source_kind,
        family=base.family,
        dtype=str(base.dtype).removeprefix("torch."),
        revision=base.revision,
        n_layers=base.n_layers_original,
        dropped=list(loaded.dropped),
        reasoning_format=base.reasoning_format,
        context=getattr(loaded.model.config, "max_position_embeddings", None),
        base=base,
        loaded=loaded,
        method=method,
        compression=loaded.extra.get("compression") if not drop and not method else None,
    )
