"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="alias (see `layerprobe models`), hub id, local directory or .gguf file")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16")]
LayersPathOpt = Annotated[
    str | None,
    typer.Option("--layers-path", help="dotted path of the decoder layer list, for architectures layerprobe does not know"),
]
NormPathOpt = Annotated[str | None, typer.Option("--norm-path", help="dotted path of the final norm (unknown architectures)")]
UnembedPathOpt = Annotated[
    str | None, typer.Option("--unembed-path", help="dotted path of the unembedding (unknown architectures)")
]


def check_output_file(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, a path under
    a file, or a folder without write permission (UserError naming the flag)."""
    import os

    from layerprobe.errors import UserError

    if path is None:
        return
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: no write permission in {probe}")
