"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from layerprobe.jobs.job import ProgressFn

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

# Calibration options of `layerprobe influence` and `layerprobe prune`.
CalibOpt = Annotated[
    Path | None,
    typer.Option(
        "--calib", help="calibration text: one document per line, or JSONL with a 'text' field (default: embedded text)"
    ),
]
CalibDatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--calib-dataset",
        help="a `datasets` spec NAME[:CONFIG[:SPLIT]], e.g. wikitext:wikitext-2-raw-v1:test (needs network or cache)",
    ),
]
CalibTracesOpt = Annotated[
    int | None,
    typer.Option("--calib-traces", help="score on N of the model's own greedy reasoning traces instead of generic text"),
]
CalibDocsOpt = Annotated[int, typer.Option("--calib-docs", help="use at most this many calibration documents")]
TraceTokensOpt = Annotated[int, typer.Option("--trace-tokens", help="max new tokens per reasoning trace (--calib-traces)")]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", help="tokens per document (longer documents are truncated)")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="documents per forward pass")]


#: The arguments of the command being run (what a run records as its command line); set by cli.app.main.
ARGV: list[str] = []


def current_argv() -> list[str]:
    """["layerprobe", *arguments] of the command being run (also when `main` is called in-process)."""
    return ["layerprobe", *ARGV]


def console(stderr: bool = False, width: int | None = None) -> Console:
    """The one way commands print: no rich markup and no highlighting (a variant name, a problem id or a
    model's text is printed as it is, never read as "[bold]" markup), control characters shown as
    escapes (a file or folder name holding ESC cannot act on the terminal: rules.printable), lines never
    wrapped (a path or a command stays one piece that can be copied). Table cells are printed the same way."""
    from rich.console import Console

    from layerprobe.rules import printable

    class _Console(Console):
        def render_str(self, text: str, **kw: Any) -> Any:
            return super().render_str(printable(text), **kw)

    return _Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True, width=width)


@contextmanager
def progress_bars() -> Iterator[ProgressFn]:
    """Rich progress bars on stderr (count, elapsed time, ETA), one per label, for the block's
    duration; nothing is drawn when stderr is not a terminal (a pipe cannot show a live bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err = console(stderr=True)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(label: str, done: int, total: int, detail: str = "") -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total, completed=done, detail=detail)
            bar.update(tasks[label], completed=done, total=total, detail=detail)

        yield progress
