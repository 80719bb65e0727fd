"""`layerprobe prune`: remove decoder layers and save a checkpoint plain transformers can load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
from layerprobe.method_table import methods_help


def prune(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the pruned checkpoint")],
    drop: Annotated[str | None, typer.Option("--drop", help="original 0-based layer indices to remove, e.g. 20,21")] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help=methods_help(),
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
    from layerprobe.jobs.calibration_settings import CalibrationSettings
    from layerprobe.jobs.prune import PruneSettings, describe_size
    from layerprobe.jobs.prune import prune as run_prune

    settings = PruneSettings(
        model=model,
        out=out,
        drop=drop,
        method=method,
        n_drop=n_drop,
        sparsity=sparsity,
        match_layers=match_layers,
        nm=nm,
        calibration=CalibrationSettings(calib, calib_dataset, calib_traces, calib_docs, trace_tokens, seq_len, batch_size),
        laco={
            "c": laco_c,
            "interval": laco_i,
            "low": laco_low,
            "high": laco_high,
            "threshold": laco_threshold,
            "mode": laco_mode,
        },
        force=force,
        device=device,
        dtype=dtype,
        layers_path=layers_path,
        norm_path=norm_path,
        unembed_path=unembed_path,
    )
    done = run_prune(settings, console(stderr=True))
    pruned = done.model
    if done.selection is None:
        console().print(
            f"saved {pruned.n_layers}-layer model (dropped original layers {pruned.dropped} of {pruned.n_layers_original}) to {out}; "
            + describe_size(pruned)
        )
    else:
        console().print(f"{done.selection.method}: {describe_size(pruned)}; saved to {out}")
