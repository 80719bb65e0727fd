"""`layerprobe prune`: remove decoder layers and save a checkpoint plain transformers can load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from layerprobe.cli.common import (
    BatchSizeOpt,
    CalibDatasetOpt,
    CalibDocsOpt,
    CalibOpt,
    CalibTracesOpt,
    DeviceOpt,
    DtypeOpt,
    LayersPathOpt,
    ModelOpt,
    NormPathOpt,
    SeqLenOpt,
    TraceTokensOpt,
    UnembedPathOpt,
    console,
)
from layerprobe.errors import UserError

if TYPE_CHECKING:
    from layerprobe.prune.size import SizeRequest


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an --out that is unwritable, a file, or a non-empty directory that is not ours."""
    from layerprobe._io import check_writable
    from layerprobe.prune.surgery import PROVENANCE_FILE

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / PROVENANCE_FILE).is_file():
            raise UserError(
                f"--out {out} is a non-empty directory that is not a layerprobe checkpoint; choose an empty or new directory"
            )
        if not force:
            raise UserError(f"--out {out} already holds a layerprobe checkpoint; pass --force to overwrite it")
    check_writable(out, "--out")


def prune(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the pruned checkpoint")],
    drop: Annotated[str | None, typer.Option("--drop", help="original 0-based layer indices to remove, e.g. 20,21")] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="layers: shortgpt | reverse | reverse-keep-final | angular | laco | ppl | trace-kl; "
            "width: width; weights: wanda | magnitude | nm",
        ),
    ] = None,
    n_drop: Annotated[int | None, typer.Option("--n-drop", help="how many layers a layer-removing --method removes")] = None,
    sparsity: Annotated[
        float | None, typer.Option("--sparsity", help="size: the fraction of the decoder's linear weights to remove, e.g. 0.2")
    ] = None,
    match_layers: Annotated[
        int | None, typer.Option("--match-layers", help="size: remove as many parameters as K decoder layers hold")
    ] = None,
    nm: Annotated[str | None, typer.Option("--nm", help="--method nm: the N:M pattern, e.g. 2:4 (keep 2 of every 4)")] = None,
    calib: CalibOpt = None,
    calib_dataset: CalibDatasetOpt = None,
    calib_traces: CalibTracesOpt = None,
    calib_docs: CalibDocsOpt = 64,
    trace_tokens: TraceTokensOpt = 128,
    seq_len: SeqLenOpt = 256,
    batch_size: BatchSizeOpt = 8,
    laco_c: Annotated[int | None, typer.Option("--laco-c", help="LaCo: layers merged into one per step (default 4)")] = None,
    laco_i: Annotated[int | None, typer.Option("--laco-i", help="LaCo: layers to move down after a merge (default 2)")] = None,
    laco_low: Annotated[int | None, typer.Option("--laco-low", help="LaCo: lowest layer that may merge (default 0)")] = None,
    laco_high: Annotated[
        int | None, typer.Option("--laco-high", help="LaCo: highest layer that may merge, inclusive (default: last)")
    ] = None,
    laco_threshold: Annotated[
        float | None,
        typer.Option(
            "--laco-threshold", help="LaCo: keep a merge while the hidden-state cosine to the original is above T (default 0.45)"
        ),
    ] = None,
    laco_mode: Annotated[
        str | None,
        typer.Option("--laco-mode", help="LaCo: paper (θ_l + Σ(θ_l+k − θ_l)) | reference (the public code: replacement)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing layerprobe checkpoint in --out")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    layers_path: LayersPathOpt = None,
    norm_path: NormPathOpt = None,
    unembed_path: UnembedPathOpt = None,
) -> None:
    """Compress a model and save it: --drop LIST, or --method NAME with a size (--n-drop K / --match-layers K /
    --sparsity F / --nm N:M)."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, parse_layer_list, save_model

    laco_opts = {
        "c": laco_c,
        "interval": laco_i,
        "low": laco_low,
        "high": laco_high,
        "threshold": laco_threshold,
        "mode": laco_mode,
    }
    if drop is not None and method is not None:
        raise UserError(
            "--drop and --method are exclusive: give the layers (--drop 20,21) or a method (--method shortgpt --n-drop 2)"
        )
    if drop is not None:
        flags = {"c": "--laco-c", "interval": "--laco-i", "low": "--laco-low", "high": "--laco-high"}
        given_laco = [flags.get(k, f"--laco-{k}") for k, v in laco_opts.items() if v is not None]
        if given_laco:
            raise UserError(f"{', '.join(given_laco)}: LaCo options apply only to --method laco")
        if n_drop is not None:
            raise UserError("--n-drop applies only with --method (with --drop the list says which layers go)")
        given = [f for f, v in (("--sparsity", sparsity), ("--match-layers", match_layers), ("--nm", nm)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)}: a size applies only with --method (with --drop the list says which layers go)")
        indices = parse_layer_list(drop)
        check_out_dir(out, force)
        loaded = load_model(
            model, device=device, dtype=dtype, layers_path=layers_path, norm_path=norm_path, unembed_path=unembed_path
        )
        pruned = drop_layers(loaded, indices, method="manual")
        record_size(pruned, loaded, "depth", "manual", {"drop": sorted(indices)})
        save_model(pruned, out)
        console().print(
            f"saved {pruned.n_layers}-layer model (dropped original layers {pruned.dropped} of {pruned.n_layers_original}) to {out}; "
            + describe_size(pruned)
        )
        return
    if method is None:
        raise UserError("nothing to remove: give --drop LIST (e.g. 20,21) or --method NAME --n-drop K")
    size = size_request(sparsity, match_layers, nm)
    _prune_with_method(
        model,
        out,
        method,
        n_drop,
        size,
        laco_opts,
        force=force,
        device=device,
        dtype=dtype,
        layers_path=layers_path,
        norm_path=norm_path,
        unembed_path=unembed_path,
        calib=calib,
        calib_dataset=calib_dataset,
        calib_traces=calib_traces,
        calib_docs=calib_docs,
        trace_tokens=trace_tokens,
        seq_len=seq_len,
        batch_size=batch_size,
    )


def _prune_with_method(
    model: str,
    out: Path,
    method: str,
    n_drop: int | None,
    size: SizeRequest | None,
    laco_opts: dict,
    *,
    force: bool,
    device: str,
    dtype: str,
    layers_path,
    norm_path,
    unembed_path,
    calib,
    calib_dataset,
    calib_traces,
    calib_docs,
    trace_tokens,
    seq_len,
    batch_size,
) -> None:
    from layerprobe.cli.influence_cmd import check_calibration_flags, load_calibration_early
    from layerprobe.models.loading import load_model
    from layerprobe.prune.calibration import traces_calibration
    from layerprobe.prune.laco import check_laco_params
    from layerprobe.prune.methods import get_method, prune_model
    from layerprobe.prune.surgery import save_model

    m = get_method(method)
    given_laco = [
        f"--laco-{k}"
        for k, v in (
            ("c", laco_opts["c"]),
            ("i", laco_opts["interval"]),
            ("low", laco_opts["low"]),
            ("high", laco_opts["high"]),
            ("threshold", laco_opts["threshold"]),
            ("mode", laco_opts["mode"]),
        )
        if v is not None
    ]
    if m.name != "laco" and given_laco:
        raise UserError(f"{', '.join(given_laco)}: LaCo options apply only to --method laco")
    if m.kind == "depth" and m.takes_n_drop and size is None:
        if n_drop is None:
            raise UserError(f"--method {m.name} needs --n-drop K or --match-layers K (how many layers to remove)")
        if n_drop < 1:
            raise UserError(f"--n-drop {n_drop}: must be at least 1")
    elif m.kind == "depth" and not m.takes_n_drop and n_drop is not None:
        raise UserError(
            f"--n-drop does not apply to --method {m.name}: the number of removed layers follows from --laco-threshold"
        )
    m.check_request(n_drop, size)
    if m.needs_traces and (calib is not None or calib_dataset is not None):
        raise UserError(
            f"--method {m.name} reads the model's own reasoning traces: use --calib-traces N, not --calib / --calib-dataset"
        )
    opts = {k: v for k, v in laco_opts.items() if v is not None}
    if m.name == "laco":  # range checks that do not need the model; the layer range is checked after loading
        check_laco_params(
            10**9, opts.get("c", 4), opts.get("interval", 2), 0, 10**9 - 1, opts.get("threshold", 0.45), opts.get("mode", "paper")
        )
    cal = None
    if m.needs_calibration:
        check_calibration_flags(calib, calib_dataset, calib_traces, calib_docs, trace_tokens, seq_len, batch_size)
        if calib_traces is None and not m.needs_traces:
            cal = load_calibration_early(calib, calib_dataset, calib_docs)
    check_out_dir(out, force)
    loaded = load_model(
        model, device=device, dtype=dtype, layers_path=layers_path, norm_path=norm_path, unembed_path=unembed_path
    )
    if size is not None and size.match_layers is not None and size.match_layers >= loaded.n_layers:
        raise UserError(
            f"--match-layers {size.match_layers}: the model has {loaded.n_layers} layers, so at most {loaded.n_layers - 1}"
        )
    from layerprobe.jobs.execute import set_threads_for

    set_threads_for(loaded)  # the toy on one thread: its matmuls are too small to share
    if m.takes_n_drop and n_drop is not None and n_drop >= loaded.n_layers:
        raise UserError(
            f"--n-drop {n_drop}: the model has {loaded.n_layers} layers, so at most {loaded.n_layers - 1} can be removed"
        )
    if m.name == "laco":
        check_laco_params(
            loaded.n_layers,
            opts.get("c", 4),
            opts.get("interval", 2),
            opts.get("low"),
            opts.get("high"),
            opts.get("threshold", 0.45),
            opts.get("mode", "paper"),
        )
    say = console(stderr=True)
    if m.needs_calibration and cal is None:
        from layerprobe.prune.methods import default_traces

        n_traces = calib_traces if calib_traces is not None else default_traces(loaded)
        say.print(f"generating {n_traces} reasoning traces (up to {trace_tokens} tokens each) ...")
        cal = traces_calibration(loaded, n_traces, trace_tokens)
    if m.name == "laco":
        opts["log"] = lambda step: say.print(
            f"  merge at layer {step['base']} with {step['followers']}: similarity {step['similarity']:.4f} -> "
            + ("kept" if step["accepted"] else "rejected")
        )
    with say.status(f"pruning with {m.name} ..."):
        pruned, selection = prune_model(loaded, m.name, n_drop, cal, size=size, seq_len=seq_len, batch_size=batch_size, **opts)
    with say.status("measuring tokens/s ..."):
        add_speed(pruned, loaded)
    save_model(pruned, out, selection=selection.to_json())
    console().print(f"{selection.method}: {describe_size(pruned)}; saved to {out}")


def size_request(sparsity: float | None, match_layers: int | None, nm: str | None) -> SizeRequest | None:
    """The size the flags ask for (None when none is given); UserError for a bad or doubled one."""
    if sparsity is None and match_layers is None and nm is None:
        return None
    from layerprobe.prune.size import SizeRequest, parse_nm

    return SizeRequest(match_layers=match_layers, sparsity=sparsity, nm=parse_nm(nm) if nm is not None else None)


def record_size(pruned: Any, base: Any, kind: str, method: str, request: dict[str, Any]) -> None:
    """Attach the compression record (kind, request, size counted on the tensors) to a model built without prune_model."""
    from layerprobe.prune.size import count_size, size_record

    pruned.extra = {
        **pruned.extra,
        "compression": {
            "kind": kind,
            "method": method,
            "request": request,
            "size": size_record(pruned, count_size(base), base.n_layers_original),
        },
    }
    add_speed(pruned, base)


def add_speed(pruned: Any, base: Any) -> None:
    """Measured greedy tokens/s of the pruned and the unpruned model on this machine, into the size record."""
    from layerprobe.prune.size import SPEED_NOTE, measure_tokens_per_s

    size = pruned.extra["compression"]["size"]
    mine, theirs = measure_tokens_per_s(pruned), measure_tokens_per_s(base)
    size.update(
        tokens_per_s=mine["tokens_per_s"],
        tokens_per_s_base=theirs["tokens_per_s"],
        speed_setup={k: v for k, v in mine.items() if k != "tokens_per_s"},
        speed_note=SPEED_NOTE,
    )


def describe_size(pruned: Any) -> str:
    """One line: what was removed and the size kept."""
    comp = pruned.extra.get("compression") or {}
    size = comp.get("size") or {}
    what = f"removed layers {pruned.dropped}" if pruned.dropped else f"{comp.get('kind', '')} compression"
    parts = [
        what,
        f"{size.get('nonzero_linear_weights', 0):,} of {size.get('linear_weights_base', 0):,} decoder linear weights kept "
        f"({100 * (size.get('kept_fraction') or 0):.1f} %, {size.get('layers_removed_equivalent') or 0:.2f} layers' worth removed)",
        f"{pruned.n_layers} layers",
    ]
    if size.get("tokens_per_s"):
        parts.append(f"{size['tokens_per_s']:.0f} tokens/s here (unpruned {size.get('tokens_per_s_base') or 0:.0f})")
    return "; ".join(parts)
