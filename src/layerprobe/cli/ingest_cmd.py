"""`layerprobe ingest`: traces from lm-evaluation-harness, vLLM or s1's scripts into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layerprobe.cli.common import DeviceOpt, DtypeOpt, console, progress_bars
from layerprobe.cli.judge_cmd import JudgeAfterModelOpt, JudgeEndpointOpt, JudgeTaxonomyOpt
from layerprobe.scaling.traces import INGEST_FORMATS
from layerprobe.sources import sources_help


def ingest(
    files: Annotated[
        list[Path], typer.Argument(help="lm-eval samples_<task>_<date>.jsonl files, or JSONL traces", show_default=False)
    ],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help=sources_help(),
        ),
    ] = "jsonl",
    model: Annotated[
        str, typer.Option("--model", "-m", help="the model that produced the traces (alias, hub id, directory, .gguf)")
    ] = "toy",
    drop: Annotated[
        str | None, typer.Option("--drop", help="the traces come from --model without these original layers, e.g. 20,21")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="... or without the layers this method chooses")] = None,
    n_drop: Annotated[int, typer.Option("--n-drop", help="layers --method removes")] = 2,
    label: Annotated[
        str | None, typer.Option("--label", help="variant name (default: base, drop-<i>-<j> or <method>-<n>)")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory; more ingests into it add variants")] = None,
    answer_type: Annotated[
        str | None, typer.Option("--answer-type", help="integer | math | mc | digit (default: the --task's, else math)")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="the task the traces answer (sets the answer type; see `layerprobe tasks`)")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help=f"auto (decided per file from its traces) | {' | '.join(INGEST_FORMATS)} (no thinking delimiters: the "
            "thinking is the text before the answer, found by one rule for every trace, docs/ingest.md)",
        ),
    ] = "auto",
    budget: Annotated[
        int | None,
        typer.Option("--budget", help="the thinking budget the traces were generated with, when the file does not say"),
    ] = None,
    no_probes: Annotated[
        bool,
        typer.Option(
            "--no-probes",
            help="text only: grade and measure the traces, load the tokenizer but not the weights (traces without a prompt are read)",
        ),
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="--no-probes: count tokens with this tokenizer (alias, hub id, directory, .gguf)"),
    ] = None,
    producer: Annotated[
        str | None, typer.Option("--producer", help="the model that wrote the traces, as the report names it")
    ] = None,
    no_lens: Annotated[bool, typer.Option("--no-lens", help="probes without the logit lens")] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="traces per prefill forward pass (halved on out-of-memory)")
    ] = 8,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="processes for token counts and trace metrics (0: none; default: one per core from 256 traces on)"
        ),
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    force: Annotated[bool, typer.Option("--force", help="resume an --out that lost its run.json")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="do not render report.html")] = False,
    judge_endpoint: JudgeEndpointOpt = None,
    judge_model: JudgeAfterModelOpt = None,
    judge_taxonomy: JudgeTaxonomyOpt = None,
) -> None:
    """Read traces generated elsewhere into a run directory: graded by layerprobe, trace metrics, probes
    by prefill (the same arrays as `analyze` captures), one variant per ingest."""
    from layerprobe.cli.common import current_argv
    from layerprobe.jobs.ingest import Ingest, IngestSettings
    from layerprobe.prune.surgery import parse_layer_list

    settings = IngestSettings(
        files,
        source,
        model,
        out,
        label=label,
        drop=parse_layer_list(drop) if drop else None,
        method=method,
        n_drop=n_drop,
        answer_type=answer_type,
        task=task,
        reasoning_format=fmt,
        budget=budget,
        probes=not no_probes,
        lens=not no_lens,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        force=force,
        tokenizer=tokenizer,
        producer=producer,
        workers=workers,
    )
    job = Ingest(settings, argv=current_argv())  # the flags are checked here, before any work
    from layerprobe.cli.judge_cmd import judge_settings, run_judge

    judging = judge_settings(judge_endpoint, judge_model, judge_taxonomy)  # checked before any work
    err = console(stderr=True)
    with progress_bars() as progress:
        job.progress = progress
        run_dir, src = job.run()
    say = console()
    for note in job.store.notes():
        say.print(f"note: {note}", markup=False)
    for shape in src.shapes:
        say.print(shape, markup=False)
    found = ", ".join(f"{n} {what}" for what, n in src.counts.items())
    again = f", {src.new} of them new in this session" if src.new != src.traces else ""
    say.print(f"{src.traces} traces ingested as variant {src.variant}{again}" + (f" ({found})" if found else ""), markup=False)
    for why, n in src.skipped.items():
        say.print(f"skipped {n}: {why}", markup=False)
    if src.producer:
        say.print(f"the traces come from {src.producer}", markup=False)
    if src.tokenizer:
        say.print(f"tokens counted with the tokenizer of {src.tokenizer}", markup=False)
    for w in src.warnings:
        err.print(f"warning: {w}", soft_wrap=True, markup=False)
    if judging is not None:
        judging.run_dir = run_dir
        run_judge(judging)
    if not no_report:
        from layerprobe.report import render_report

        say.print(f"report: {render_report([run_dir])}")
    say.print(f"run directory: {run_dir}")
