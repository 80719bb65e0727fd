"""`layerprobe analyze`: base and pruned variants side by side in one resumable run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layerprobe.cli.common import DeviceOpt, DtypeOpt, console, current_argv, progress_bars
from layerprobe.cli.judge_cmd import JudgeAfterModelOpt, JudgeEndpointOpt, JudgeTaxonomyOpt
from layerprobe.errors import UserError
from layerprobe.jobs.defaults import QUICK_DEFAULTS, REAL_DEFAULTS, TOY_DEFAULTS, Defaults
from layerprobe.method_table import methods_help
from layerprobe.scaling.formats import FORMATS


def _defaults(what: str) -> str:
    """ "(default: 8,16,32,64,128 for the toy, 512,...,8192 for other models, 256,1024 with --quick)" from jobs.plan."""

    def one(d: Defaults) -> str:
        x = getattr(d, what)
        if what == "budgets":
            return ",".join(map(str, x))
        return "all" if x is None else str(x)

    return (
        f"(default: {one(TOY_DEFAULTS)} for the toy, {one(REAL_DEFAULTS)} for other models, {one(QUICK_DEFAULTS)} with --quick)"
    )


def analyze(
    model: Annotated[
        str, typer.Option("--model", "-m", help="alias, hub id, local directory or .gguf (default: the embedded toy)")
    ] = "toy",
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="original layers to remove for one variant, e.g. 20,21 (repeatable)")
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help=f"compress by method (repeatable): {methods_help()}",
        ),
    ] = None,
    n_drop: Annotated[
        int | None, typer.Option("--n-drop", help="layers each layer-removing --method removes (default 2)")
    ] = None,
    match_layers: Annotated[
        str | None,
        typer.Option(
            "--match-layers",
            help="sizes in decoder layers' worth of parameters, e.g. 1,2: one variant per --method and size (any kind)",
        ),
    ] = None,
    sparsity: Annotated[
        str | None,
        typer.Option("--sparsity", help="sizes as fractions of the decoder's linear weights, e.g. 0.1,0.2 (any kind)"),
    ] = None,
    nm: Annotated[str | None, typer.Option("--nm", help="--method nm's pattern N:M (default 2:4: half of every row)")] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="add a checkpoint (same tokenizer) as a variant: NAME=CHECKPOINT_DIR (repeatable)"),
    ] = None,
    calib: Annotated[Path | None, typer.Option("--calib", help="calibration text for --method (one document per line)")] = None,
    calib_traces: Annotated[
        int | None, typer.Option("--calib-traces", help="calibrate --method on N of the model's own traces")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", "-t", help="task (see `layerprobe tasks`; default toy-mix for the toy, aime24 otherwise)"),
    ] = None,
    task_file: Annotated[
        Path | None, typer.Option("--task-file", help="local JSONL with id/question/answer for hub tasks offline")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help=f"problems per task group {_defaults('limit')}")] = None,
    budgets: Annotated[str | None, typer.Option("--budgets", help=f"thinking budgets in tokens {_defaults('budgets')}")] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", "-n", help=f"parallel samples per problem {_defaults('samples')}")
    ] = None,
    parallel_budget: Annotated[
        int | None,
        typer.Option("--parallel-budget", help="thinking budget of the parallel samples (default: the largest budget)"),
    ] = None,
    wait: Annotated[int, typer.Option("--wait", help="replace up to N early ends of thinking by 'Wait'")] = 0,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="sampling temperature (default: the reasoning format's)")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            "--top-p",
            help="nucleus sampling: keep the most likely tokens up to this probability (default: the reasoning format's)",
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="sample among the k most likely tokens, 0 = all (default: the reasoning format's)"),
    ] = None,
    answer_max: Annotated[
        int | None,
        typer.Option("--answer-max", help=f"token cap of the answer after thinking {_defaults('answer_max')}"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="run seed; every sample's seed derives from it")] = 0,
    fmt: Annotated[
        str | None, typer.Option("--format", help=f"reasoning format: {' | '.join(FORMATS)} (default: detected)")
    ] = None,
    no_probes: Annotated[
        bool, typer.Option("--no-probes", help="skip per-layer probes and the teacher-forced comparison")
    ] = False,
    no_lens: Annotated[
        bool, typer.Option("--no-lens", help="probes without the logit lens (block influence and norms only)")
    ] = False,
    lens_every: Annotated[int, typer.Option("--lens-every", help="logit lens on every k-th token only")] = 1,
    probe_mode: Annotated[
        str,
        typer.Option(
            "--probe-mode",
            help="live: probes captured while generating | prefill: generate, then one forward pass per trace | auto: live on CPU, prefill on GPU",
        ),
    ] = "auto",
    no_teacher_forced: Annotated[
        bool, typer.Option("--no-teacher-forced", help="skip running pruned models over base traces")
    ] = False,
    quick: Annotated[bool, typer.Option("--quick", help="real models: small budgets and sample counts for a first look")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="sequences per batch (default: auto; halves on out-of-memory)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="run directory (default runs/<model>-<hash of the settings>, so the same command finds its run again); an existing run resumes",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="start afresh in an --out that holds a run with other settings")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="do not render report.html")] = False,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep",
            help="layer-sensitivity sweep: single (every layer removed, one variant each) | pairs (every adjacent pair)",
        ),
    ] = None,
    sweep_layers: Annotated[
        str | None, typer.Option("--sweep-layers", help="restrict the sweep to original layers, e.g. 10-20 or 3,5,7")
    ] = None,
    sweep_proxy: Annotated[
        bool,
        typer.Option(
            "--sweep-proxy", help="sweep without generation: only the teacher-forced KL of each variant along the base traces"
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="run variants on N Ray workers (a local cluster unless --ray-address); default: in this process"
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="join an existing Ray cluster (host:port, or auto)")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="GPUs each Ray worker reserves (GPU nodes)")] = 0.0,
    explain: Annotated[
        bool | None,
        typer.Option(
            "--explain/--no-explain",
            help="run `layerprobe explain` on the run at the end: why the pruned variants fail "
            "(default: on for the toy, about a minute; off for other models, where it takes longer)",
            show_default=False,
        ),
    ] = None,
    judge_endpoint: JudgeEndpointOpt = None,
    judge_model: JudgeAfterModelOpt = None,
    judge_taxonomy: JudgeTaxonomyOpt = None,
) -> None:
    """Base and pruned variants side by side in one resumable run directory."""
    from layerprobe.cli.summary_table import print_summary
    from layerprobe.jobs.plan import AnalyzeSettings
    from layerprobe.jobs.sweep import parse_sweep_layers
    from layerprobe.prune.surgery import parse_layer_list
    from layerprobe.report.render import explain_command

    drops = [parse_layer_list(d) for d in (drop or [])]
    methods: list[str] = []
    for m in method or []:
        methods += [x.strip() for x in m.split(",") if x.strip()]
    settings = AnalyzeSettings(
        model=model,
        drops=drops,
        methods=methods,
        n_drop=n_drop,
        match_layers=parse_layer_list(match_layers, "--match-layers", "numbers of layers", "1,2")
        if match_layers is not None
        else None,
        sparsity=_parse_fractions(sparsity) if sparsity is not None else None,
        nm=nm,
        variants=[_parse_variant(v) for v in variant or []],
        calib=str(calib) if calib else None,
        calib_traces=calib_traces,
        task=task,
        task_file=str(task_file) if task_file else None,
        limit=limit,
        budgets=parse_layer_list(budgets, "--budgets", "integers", "256,512") if budgets is not None else None,
        samples=samples,
        parallel_budget=parallel_budget,
        wait=wait,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        answer_max=answer_max,
        seed=seed,
        probes=not no_probes,
        lens=not no_lens,
        lens_every=lens_every,
        probe_mode=probe_mode,
        teacher_forced=not no_teacher_forced,
        reasoning_format=fmt,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        sweep=sweep,
        sweep_layers=parse_sweep_layers(sweep_layers) if sweep_layers is not None else None,
        sweep_proxy=sweep_proxy,
        workers=workers,
        ray_address=ray_address,
        gpus_per_worker=gpus_per_worker,
        out=out,
        force=force,
        report=not no_report,
        quick=quick,
        explain=explain,
    )

    from layerprobe.cli.judge_cmd import judge_settings, print_judge_summary, run_judge

    judging = judge_settings(judge_endpoint, judge_model, judge_taxonomy)  # checked before any work
    analysis = _run(settings)
    from layerprobe.data.reader import load_run

    say = console()
    if analysis.complete_before:
        n = analysis.info.expected_traces
        say.print(f"the run in {analysis.out} is complete: all {n} traces were there already, nothing was generated")
    if explain is None:  # the default: the toy explains itself (it takes about a minute), other models are asked
        explain = analysis.base.source_kind == "toy" and not no_probes and sweep is None and bool(analysis.info.variants[1:])
    if explain:
        from layerprobe.jobs.explain import explain as run_explain
        from layerprobe.jobs.explain import explain_is_current

        if explain_is_current(analysis.out, device=device):
            say.print(
                "explain.json is up to date (same traces, same settings): reused, not computed again "
                f"({explain_command(analysis.out)} computes it again)"
            )
        else:
            with progress_bars() as progress:
                run_explain(analysis.out, device=device, progress=progress, argv=["layerprobe", "explain", str(analysis.out)])
    if judging is not None:
        judging.run_dir = analysis.out
        run_judge(judging, summary=False)
    run = load_run(analysis.out)  # read once for the report and the summary
    report = None
    if settings.report:
        from layerprobe.report import render_report

        report = render_report([run])
    say.print(f"run directory: {analysis.out}")
    print_summary(run, console(width=max(say.width, 110)), explain_hint=not explain and sweep is None, report=report)
    if "judge.json" in run.extras:
        print_judge_summary(run.extras["judge.json"], console(width=max(say.width, 110)))


def _parse_fractions(text: str) -> list[float]:
    """'0.1,0.2' -> [0.1, 0.2]; UserError for anything that is not a comma-separated list of numbers."""
    out = []
    for part in text.split(","):
        try:
            out.append(float(part.strip()))
        except ValueError:
            raise UserError(f"--sparsity '{text}': expected comma-separated fractions such as 0.1,0.2") from None
    return out


def _parse_variant(text: str) -> tuple[str, str]:
    """NAME=CHECKPOINT_DIR -> (name, dir); UserError otherwise."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise UserError(f"--variant '{text}': expected NAME=CHECKPOINT_DIR, e.g. healed-lora=healed/")
    return name, path  # as given: a name with spaces is refused by the name rule, not trimmed


def _run(settings: Any) -> Any:
    from layerprobe.jobs.analyze import Analysis

    with progress_bars() as progress:
        analysis = Analysis(settings, progress, argv=current_argv())
        analysis.run()
    return analysis
