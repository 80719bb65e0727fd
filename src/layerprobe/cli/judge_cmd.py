"""`layerprobe judge RUN`: behaviours (verification, backtracking, subgoals, ...) counted in a run's traces
by a judge model over an OpenAI-compatible endpoint; also the opt-in step of analyze and ingest."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from layerprobe.cli.common import console, current_argv, progress_bars
from layerprobe.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from layerprobe.data.schema import JudgeFile
    from layerprobe.jobs.judge import Judge, JudgeSettings

EndpointOpt = Annotated[
    str,
    typer.Option(
        "--endpoint", help="URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1"
    ),
]
JudgeModelOpt = Annotated[str, typer.Option("--judge-model", help="the judge model's name at the endpoint, e.g. gpt-4o-mini")]
KeyEnvOpt = Annotated[
    str, typer.Option("--api-key-env", help="environment variable holding the endpoint's key (the key is never written)")
]
TaxonomyOpt = Annotated[str, typer.Option("--taxonomy", help="study | four | FILE.toml (your own prompts, docs/judge.md)")]
# the opt-in step of analyze and ingest
JudgeEndpointOpt = Annotated[
    str | None,
    typer.Option("--judge-endpoint", help="then count behaviours in the traces with a judge model at this OpenAI-compatible URL"),
]
JudgeAfterModelOpt = Annotated[str | None, typer.Option("--judge-model", help="the judge model's name at --judge-endpoint")]
JudgeTaxonomyOpt = Annotated[
    str | None, typer.Option("--judge-taxonomy", help="the judge's behaviours: study | four | FILE.toml (default: study)")
]


def judge(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (analyze or ingest)", show_default=False)],
    endpoint: EndpointOpt,
    judge_model: JudgeModelOpt,
    api_key_env: KeyEnvOpt = "OPENAI_API_KEY",
    taxonomy: TaxonomyOpt = "study",
    text: Annotated[
        str, typer.Option("--text", help="what the judge reads: response (everything after the prompt) | thinking")
    ] = "response",
    first_sample: Annotated[
        bool, typer.Option("--first-sample", help="only sample 0 of each problem (the study's choice); default: every trace")
    ] = False,
    budget: Annotated[
        str | None, typer.Option("--budget", help="only the traces at this thinking budget (a number, or max)")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="calls in flight at once (1-64)")] = 4,
    max_calls: Annotated[int | None, typer.Option("--max-calls", help="stop after this many calls (run again to go on)")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="cap on each reply (the study: 10,000)")] = 4096,
    temperature: Annotated[float, typer.Option("--temperature", help="the judge's sampling temperature")] = 0.0,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds one request may take")] = 120.0,
    retries: Annotated[
        int, typer.Option("--retries", help="retries of a request on 429, 5xx, timeouts and lost connections (backoff)")
    ] = 4,
    force: Annotated[
        bool, typer.Option("--force", help="start afresh when the run was judged with other settings (the old one is kept aside)")
    ] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="do not re-render report.html")] = False,
) -> None:
    """Count behaviours in every trace of a run with a judge model (one call per trace and behaviour):
    writes RUN/judge/calls.jsonl (every call's outcome), RUN/judge.json (mean counts with intervals,
    paired differences against the base, agreement with the reflection words) and the report."""
    from layerprobe.jobs.judge import JudgeSettings, parse_budget

    settings = JudgeSettings(
        run_dir=run_dir,
        endpoint=endpoint,
        judge_model=judge_model,
        key_env=api_key_env,
        taxonomy=taxonomy,
        text=text,
        first_sample=first_sample,
        budget=parse_budget(budget),
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        retries=retries,
        concurrency=concurrency,
        max_calls=max_calls,
        force=force,
    )
    run_judge(settings)
    if not no_report:
        from layerprobe.report import render_report

        console().print(f"report: {render_report([run_dir])}")


def judge_settings(endpoint: str | None, judge_model: str | None, taxonomy: str | None) -> JudgeSettings | None:
    """For analyze and ingest: the settings of --judge-endpoint / --judge-model / --judge-taxonomy (None
    when none is given), checked against the endpoint before any other work (UserError in one line).
    The run directory is filled in once the run is written."""
    if endpoint is None and judge_model is None and taxonomy is None:
        return None
    if endpoint is None or judge_model is None:
        raise UserError(
            "--judge-endpoint and --judge-model go together (--judge-taxonomy needs both): the endpoint and the "
            "judge model's name there"
        )
    taxonomy = "study" if taxonomy is None else taxonomy
    from layerprobe.jobs.judge import JudgeSettings
    from layerprobe.judge.client import JudgeClient
    from layerprobe.judge.taxonomy import load_taxonomy

    settings = JudgeSettings(run_dir=Path("."), endpoint=endpoint, judge_model=judge_model, taxonomy=taxonomy)
    settings.check()
    load_taxonomy(taxonomy, "--judge-taxonomy")
    client = JudgeClient(
        endpoint,
        judge_model,
        key_env=settings.key_env,
        timeout=settings.timeout,
        retries=settings.retries,
        endpoint_flag="--judge-endpoint",
    )
    try:
        client.check()
    finally:
        client.close()
    return settings


def run_judge(settings: JudgeSettings, summary: bool = True) -> Judge:
    """Run the judge job with progress bars and print its summary (also after analyze / ingest, which
    may print it themselves: `summary=False`)."""
    from layerprobe.jobs.judge import Judge

    argv = current_argv()
    if not argv[1:] or argv[1] != "judge":  # the opt-in step of analyze / ingest: the command that resumes it
        argv = _standalone_argv(settings)
    with progress_bars() as progress:
        job = Judge(settings, progress, argv)
        job.run()
    if job.summary is not None and summary:
        for note in job.run_read.notes:  # a partial or damaged run: the counts are over what could be read
            console().print(f"note: the run: {note}", soft_wrap=True)
        print_judge_summary(job.summary, console(), session=job.session)
    if job.stopped:
        console().print(f"stopped: {job.stopped}; run the same command again to go on")
    return job


def _standalone_argv(s: JudgeSettings) -> list[str]:
    args = ["layerprobe", "judge", str(s.run_dir), "--endpoint", s.endpoint, "--judge-model", s.judge_model]
    if s.key_env != "OPENAI_API_KEY":
        args += ["--api-key-env", s.key_env]
    if s.taxonomy != "study":
        args += ["--taxonomy", s.taxonomy]
    return args


def _num(x: Any, kind: str = "{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else kind.format(x)


def _ci(ci: tuple[Any, Any], kind: str = "{:.2f}") -> str:
    lo, hi = ci
    return "" if lo is None or hi is None else f" [{kind.format(lo)}, {kind.format(hi)}]"


def print_judge_summary(j: JudgeFile, say: Console, session: Any = None) -> None:
    """The judge's counts on one screen: who judged what, what failed, mean counts per variant and
    group with 95 % intervals, the paired differences against the base, the agreement with the
    reflection words, and the tokens spent."""

    from layerprobe.data.judge import outcome_totals

    text = "the whole response" if j.text == "response" else "the thinking only"
    which = []
    if j.selection.get("first_sample"):
        which.append("sample 0 of each problem")
    if j.selection.get("budget") == "max":
        which.append("the largest budget")
    elif j.selection.get("budget") is not None:
        which.append(f"budget {j.selection['budget']}")
    say.print(
        f"judged by {j.judge_model} at {j.endpoint} (taxonomy {j.taxonomy}, {text}, temperature {_num(j.temperature, '{:g}')}"
        f", max_tokens {j.max_tokens}): {j.n_selected} traces{' (' + ', '.join(which) + ')' if which else ''} x "
        f"{len(j.behaviours)} behaviours, status {j.status}"
    )
    for note in j.notes:
        say.print(f"note: {note}")
    failed = {k: n for k, n in outcome_totals(j).items() if k != "count"}
    if failed:
        say.print(
            "without a count (missing, not zero): " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(failed.items()))
        )
    if not any(s.n_counted for s in j.stats):
        say.print("no trace has a count, so there is no mean to show: read a few replies in judge/calls.jsonl")
    else:
        _print_means(j, say)
    _print_comparisons(j, say)
    spent = f"calls in all: {j.calls:,}, tokens {j.prompt_tokens:,} prompt + {j.completion_tokens:,} reply"
    if session is not None:
        spent = (
            f"this session: {session.calls:,} calls ({session.requests:,} requests with retries, {session.reused:,} records "
            f"filled from identical requests), {session.prompt_tokens:,} prompt + {session.completion_tokens:,} reply tokens; "
            + spent
        )
    say.print(spent, soft_wrap=True)


def _print_means(j: JudgeFile, say: Console) -> None:
    from rich.table import Table

    table = Table(
        title="mean count per trace, per problem then over problems (95 % CI, problems resampled); n = traces counted",
        title_justify="left",
        pad_edge=False,
    )
    table.add_column("variant", no_wrap=True)
    table.add_column("group", no_wrap=True)
    for title in j.behaviours.values():
        table.add_column(title, justify="right", no_wrap=True)
    stats = {(s.variant, s.group, s.behaviour): s for s in j.stats}
    rows = list(dict.fromkeys((s.variant, s.group) for s in j.stats))  # variants in the run's order, "all" first
    for i, (v, g) in enumerate(rows):
        cells = []
        for b in j.behaviours:
            s = stats.get((v, g, b))
            cells.append("–" if s is None or s.mean is None else f"{s.mean:.2f}{_ci(s.ci)} n={s.n_counted}")
        last = i == len(rows) - 1 or rows[i + 1][0] != v
        table.add_row(v if i == 0 or rows[i - 1][0] != v else "", g, *cells, end_section=last)
    _print_whole(table, say)


def _print_whole(table: Any, say: Console) -> None:
    """Print `table` at its natural width when the terminal is narrower: its cells do not wrap, and a
    number cut to "1.0…" would be a different number (the terminal wraps the long lines instead)."""
    from rich.measure import Measurement

    needed = Measurement.get(say, say.options.update_width(100_000), table).maximum
    width = say.width
    say.width = max(width, needed)
    try:
        say.print(table)
    finally:
        say.width = width


def _print_comparisons(j: JudgeFile, say: Console) -> None:
    from layerprobe.data.verdicts import verdict_note, verdict_short

    paired = [c for c in j.comparisons if c.group == "all"]
    if paired:
        say.print("paired against the base (per problem, traces both counted; 95 % CI):", style="bold")
        for c in paired:
            say.print(
                f"  {c.variant} − {c.base}, {j.behaviours.get(c.metric, c.metric)}: {_num(c.diff, '{:+.2f}')}"
                f"{_ci((c.ci_low, c.ci_high), '{:+.2f}')} over {c.n_pairs} problems: {verdict_note(c) or verdict_short(c)}"
            )
    # over every variant when the file has it (several variants in the run), else the one variant's: one row per behaviour
    agree = [a for a in j.agreement if a.variant == "all"] or j.agreement
    if agree:
        say.print(
            "agreement with layerprobe's reflection words (Spearman's rho over traces, 95 % CI, problems resampled):",
            style="bold",
        )
        say.print(
            "  "
            + "; ".join(
                f"{j.behaviours.get(a.behaviour, 'every behaviour together')} {_num(a.spearman, '{:+.2f}')}{_ci(a.ci, '{:+.2f}')} (n={a.n})"
                for a in agree
            )
        )
