"""`layerprobe prune`: remove decoder layers and save a checkpoint plain transformers can load."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from layerprobe.cli.common import DeviceOpt, DtypeOpt, LayersPathOpt, ModelOpt, NormPathOpt, UnembedPathOpt
from layerprobe.errors import UserError
from layerprobe.models.loading import load_model
from layerprobe.prune.surgery import PROVENANCE_FILE, drop_layers, parse_layer_list, save_model


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an --out that is unwritable, a file, or a non-empty directory that is not ours."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / PROVENANCE_FILE).is_file():
            raise UserError(f"--out {out} is a non-empty directory that is not a layerprobe checkpoint; choose an empty or new directory")
        if not force:
            raise UserError(f"--out {out} already holds a layerprobe checkpoint; pass --force to overwrite it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"--out {out} is not writable: {exc.strerror or exc}") from None

def prune(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the pruned checkpoint")],
    drop: Annotated[str, typer.Option("--drop", help="original 0-based layer indices to remove, e.g. 20,21")],
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing layerprobe checkpoint in --out")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    layers_path: LayersPathOpt = None,
    norm_path: NormPathOpt = None,
    unembed_path: UnembedPathOpt = None,
) -> None:
    """Remove decoder layers and save the pruned model (safetensors, config, tokenizer, provenance)."""
    indices = parse_layer_list(drop)
    check_out_dir(out, force)
    loaded = load_model(model, device=device, dtype=dtype, layers_path=layers_path, norm_path=norm_path, unembed_path=unembed_path)
    pruned = drop_layers(loaded, indices, method="manual")
    save_model(pruned, out)
    Console().print(
        f"saved {pruned.n_layers}-layer model (dropped original layers {pruned.dropped} of {pruned.n_layers_original}) to {out}"
    )
