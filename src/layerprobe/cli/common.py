"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="alias (see `layerprobe models`), hub id, local directory or .gguf file")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16")]
LayersPathOpt = Annotated[
    str | None, typer.Option("--layers-path", help="dotted path of the decoder layer list, for architectures layerprobe does not know")
]
NormPathOpt = Annotated[str | None, typer.Option("--norm-path", help="dotted path of the final norm (unknown architectures)")]
UnembedPathOpt = Annotated[str | None, typer.Option("--unembed-path", help="dotted path of the unembedding (unknown architectures)")]
