"""The variants of an analysis: the base model and each pruned, compressed or given checkpoint, built
from the settings with their recorded size; and the batch size that fits a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.data.schema import VariantSpec
from layerprobe.errors import UserError
from layerprobe.jobs.job import ProgressFn
from layerprobe.jobs.plan import AnalyzeSettings, variant_name_for_drop


@dataclass
class Variant:
    spec: VariantSpec
    loaded: Any  # LoadedModel


def auto_batch_size(loaded: Any, device: Any, positions: int | None = None, probes: bool = True) -> int:
    """A batch size that keeps the machine busy: wide for the tiny toy, modest for real models; on a GPU
    16, or fewer when 16 traces of `positions` positions would not fit its free memory with their KV
    cache and probes (probe.costs.max_batch; 32k-token traces of Qwen3-8B need ~77 GB of KV cache at 16)."""
    if loaded.source_kind == "toy":
        return 64
    if getattr(device, "type", "cpu") != "cuda":
        return 4
    if positions is None:
        return 16
    import torch

    from layerprobe.probe import costs

    shape = costs.shape_of(loaded.model.config)
    b = torch.finfo(loaded.dtype).bits // 8
    free, _total = torch.cuda.mem_get_info(device)
    # the weights are loaded already: what is free plus them is what generation_bytes may count
    fits = costs.max_batch(shape, positions, free + costs.weights_bytes(shape, b), b, probes=probes)
    return max(1, min(16, fits))


def build_variants(base: Any, s: AnalyzeSettings, progress: ProgressFn | None = None) -> list[Variant]:
    """The base model and one pruned variant per --drop list and per --method (weights shared)."""
    from layerprobe.prune.methods import prune_model
    from layerprobe.prune.surgery import drop_layers, validate_drop

    variants = [Variant(VariantSpec(name="base", n_layers=base.n_layers, layer_map=list(base.layer_map)), base)]
    drops = list(s.drops)
    if s.sweep is not None:
        from layerprobe.jobs.sweep import sweep_drops

        drops = sweep_drops(s.sweep, base.n_layers_original, s.sweep_layers)
    for drop in drops:
        idx = validate_drop(drop, base)
        pruned = drop_layers(base, idx, checked=True)
        variants.append(
            Variant(
                VariantSpec(
                    name=variant_name_for_drop(idx), dropped=idx, n_layers=pruned.n_layers, layer_map=list(pruned.layer_map)
                ),
                pruned,
            )
        )
    calibration = None
    if s.methods:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import get_method

        for m in s.methods:
            get_method(m)  # unknown names fail before any work
        if any(get_method(m).needs_calibration for m in s.methods):
            if progress:
                progress("calibration", 0, 1)
            calibration = resolve_calibration(base, file=s.calib, traces=s.calib_traces)
            if progress:
                progress("calibration", 1, 1)
    traces_cal = None
    for m in s.methods:
        method = get_method(m)
        cal = calibration
        if method.needs_traces and getattr(calibration, "source", None) != "traces":
            if traces_cal is None:  # a method made for reasoning reads the model's own traces, whatever the others read
                from layerprobe.prune.calibration import traces_calibration
                from layerprobe.prune.methods import default_traces

                traces_cal = traces_calibration(base, s.calib_traces or default_traces(base))
            cal = traces_cal
        for size, label in method_sizes(method, s):
            if progress:
                progress(f"pruning: {m} {label}", 0, 1)
            pruned, sel = prune_model(base, m, None if size is not None else s.n_drop, cal, size=size)
            name = f"{m}-{label if size is not None else len(pruned.dropped)}"
            variants.append(
                Variant(
                    VariantSpec(
                        name=name,
                        dropped=list(pruned.dropped),
                        method=m,
                        n_drop=len(pruned.dropped) if method.kind == "depth" and method.takes_n_drop else None,
                        calibration=pruned.calibration,
                        n_layers=pruned.n_layers,
                        layer_map=list(pruned.layer_map),
                        selection=sel.to_json(),
                    ),
                    pruned,
                )
            )
            if progress:
                progress(f"pruning: {m} {label}", 1, 1)
    for name, path in s.variants:
        variants.append(checkpoint_variant(base, name, path, s.device, s.dtype))
    names = [v.spec.name for v in variants]
    if len(set(names)) < len(names):
        raise UserError("--variant: the name " + ", ".join(sorted({n for n in names if names.count(n) > 1})) + " is taken")
    return variants


def method_sizes(method: Any, s: AnalyzeSettings) -> list[tuple[Any, str]]:
    """(SizeRequest or None for --n-drop, size label) of every variant a method makes in this run."""
    from layerprobe.prune.size import SizeRequest, parse_nm

    if method.name == "nm":
        pattern = parse_nm(s.nm or "2:4")
        req = SizeRequest(nm=pattern)
        return [(req, req.label)]
    if method.kind == "depth" and not method.takes_n_drop:
        return [(None, "")]
    sizes = s.size_requests()
    if not sizes:
        return [(None, str(s.n_drop))]
    return [(r, r.label) for r in sizes]


def record_sizes(variants: list[Variant], base: Any, speed: bool, progress: ProgressFn | None = None) -> None:
    """Every pruned variant's compression record (kind, request, size counted on its tensors against
    the base) and, with `speed`, greedy tokens/s of each variant and of the base, measured here."""
    from layerprobe.data.schema import CompressionSpec
    from layerprobe.prune.size import SPEED_NOTE, count_size, measure_tokens_per_s, size_record

    base_count = count_size(base)
    base_speed = measure_tokens_per_s(base) if speed and len(variants) > 1 else None
    for k, v in enumerate(variants[1:], 1):
        if progress:
            progress("measuring sizes and tokens/s", k - 1, len(variants) - 1)
        comp = dict(v.loaded.extra.get("compression") or {})
        kind = comp.get("kind") or "depth"
        size = size_record(v.loaded, base_count, base.n_layers_original)
        if speed and base_speed is not None:
            mine = measure_tokens_per_s(v.loaded)
            size.update(
                tokens_per_s=mine["tokens_per_s"],
                tokens_per_s_base=base_speed["tokens_per_s"],
                speed_setup={k2: x for k2, x in mine.items() if k2 != "tokens_per_s"},
                speed_note=SPEED_NOTE,
            )
        request = comp.get("request") or ({"drop": list(v.spec.dropped)} if v.spec.dropped else {})
        method = comp.get("method") or v.spec.method or ("manual" if v.spec.dropped else v.spec.name)
        v.spec.compression = CompressionSpec.model_validate({"kind": kind, "method": method, "request": request, "size": size})
    if progress and len(variants) > 1:
        progress("measuring sizes and tokens/s", len(variants) - 1, len(variants) - 1)


def checkpoint_variant(base: Any, name: str, path: str, device: str, dtype: str) -> Variant:
    """A variant loaded from a checkpoint directory (--variant NAME=DIR): it must have the base model's
    tokenizer and original depth; its layerprobe.json (if any) says which layers it lacks and how it
    was healed."""
    from layerprobe.models.loading import load_model
    from layerprobe.models.provenance import read_provenance

    loaded = load_model(path, device=device, dtype=dtype)
    if loaded.tokenizer is None or loaded.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise UserError(f"--variant {name}={path}: its tokenizer differs from the base model's; variants must share it")
    if loaded.n_layers_original != base.n_layers_original:
        raise UserError(
            f"--variant {name}={path}: it comes from a {loaded.n_layers_original}-layer model, the base model has "
            f"{base.n_layers_original} layers, so its layers cannot be lined up with the base model's"
        )
    prov = read_provenance(Path(path), loaded.n_layers)
    spec = VariantSpec(
        name=name,
        dropped=list(prov.dropped) if prov is not None else [],
        method=prov.method if prov is not None and prov.method != "manual" else None,
        n_layers=loaded.n_layers,
        layer_map=list(loaded.layer_map),
        checkpoint=str(path),
        provenance=prov.model_dump(mode="json") if prov is not None else None,
        fingerprint=loaded.revision,
    )
    return Variant(spec, loaded)
