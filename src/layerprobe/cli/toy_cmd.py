"""`layerprobe toy train|eval`: train the embedded toy reasoner, and measure it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from layerprobe.cli.common import console

toy_app = typer.Typer(help="Train and evaluate the embedded toy reasoning model.", no_args_is_help=True)


@toy_app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="training directory (checkpoints, log, final/)")],
    seed: Annotated[int, typer.Option("--seed", help="data and initialisation seed")] = 0,
    layers: Annotated[int, typer.Option("--layers", help="decoder layers (trained at full depth from scratch)")] = 12,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps (about 4,096 tokens each)")] = 4000,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate")] = 1e-3,
    correction_steps: Annotated[
        int,
        typer.Option(
            "--correction-steps",
            help="steps of the second stage, which adds always-caught wrong values so that Wait follows the model's own errors (0: none)",
        ),
    ] = 600,
    correction_lr: Annotated[float, typer.Option("--correction-lr", help="peak learning rate of the second stage")] = 3e-4,
    precision: Annotated[str, typer.Option("--precision", help="fp32 | bf16 (autocast; fast only with native bf16)")] = "fp32",
    threads: Annotated[int, typer.Option("--threads", help="CPU threads")] = 2,
    no_thinking: Annotated[
        bool,
        typer.Option(
            "--no-thinking",
            help="train the non-reasoning twin: the same problems answered directly (<think> </think>, then the boxed answer)",
        ),
    ] = False,
) -> None:
    """Train (or resume) the toy at full depth from scratch with a depth-scaled initialisation, then a
    short second stage that adds always-caught wrong values (masked from the loss), so that "Wait"
    comes to follow the model's own errors."""
    from layerprobe.jobs.toy import ToyTrainSettings, train_toy

    settings = ToyTrainSettings(
        out=out,
        seed=seed,
        layers=layers,
        steps=steps,
        lr=lr,
        correction_steps=correction_steps,
        correction_lr=correction_lr,
        precision=precision,
        threads=threads,
        thinking=not no_thinking,
    )
    final = train_toy(settings, log=console().print)
    console().print(f"final checkpoint: {final}")


@toy_app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="toy checkpoint (default: the shipped toy)")] = "toy",
    n: Annotated[int, typer.Option("--n", help="problems per task type")] = 100,
    samples: Annotated[int, typer.Option("--samples", help="sampled traces per problem (0: greedy only)")] = 8,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.8,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    drop: Annotated[str | None, typer.Option("--drop", help="original layers to remove first, e.g. 4,5")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the results as JSON")] = None,
    budgets: Annotated[
        str | None, typer.Option("--budgets", help="thinking budgets for a sequential-scaling curve, e.g. 0,20,40,80")
    ] = None,
    budget_task: Annotated[
        str, typer.Option("--budget-task", help="task type for the budget curve (short, mid, long, xlong, k=N)")
    ] = "long",
) -> None:
    """Accuracy by task type and chain length, greedy and sampled (maj@n), and a Wait audit."""
    from layerprobe.cli.common import progress_bars
    from layerprobe.jobs.toy import ToyEvalSettings, evaluate_toy, toy_budget_curve, write_toy_eval_json
    from layerprobe.toy.tasks import TASK_TYPES

    settings = ToyEvalSettings(
        model=model,
        n=n,
        samples=samples,
        temperature=temperature,
        seed=seed,
        drop=drop,
        json_out=json_out,
        budgets=budgets,
        budget_task=budget_task,
    )
    with progress_bars() as progress:
        ev = evaluate_toy(settings, progress=lambda done, total: progress("toy eval: traces", done, total))
    res, dropped = ev.res, settings.dropped
    from layerprobe.data.labels import layers_words

    table = Table(title=f"toy eval: {model}" + (f" without {layers_words(dropped)}" if dropped else ""))
    from layerprobe.metrics import proportion_interval

    for col in ("task", "n", "greedy [95 % CI]", f"sampled T={temperature}", f"maj@{samples}"):
        table.add_column(col)
    for tt in TASK_TYPES:
        n_tt = res.n_problems[tt]
        lo, hi = proportion_interval(round(res.greedy[tt] * n_tt), n_tt)
        table.add_row(
            tt,
            str(n_tt),
            f"{res.greedy[tt]:.0%} [{lo:.0%}, {hi:.0%}]",
            f"{res.sampled[tt]:.1%}" if tt in res.sampled else "n/a",
            f"{res.maj[tt]:.0%}" if tt in res.maj else "n/a",
        )
    say = console()
    say.print(table)
    say.print("greedy by chain length: " + ", ".join(f"k={k}: {v:.2f}" for k, v in res.greedy_by_k.items()))
    if res.audit:
        say.print(_audit_table(res.audit))
    curve = toy_budget_curve(settings, ev)
    if curve:
        say.print(
            f"greedy accuracy vs thinking budget ({budget_task}): " + ", ".join(f"B={b}: {a:.2f}" for b, a in curve.items())
        )
    write_toy_eval_json(settings, ev, curve)


def _audit_table(audit: dict[str, float]) -> Table:
    """The Wait audit of the sampled traces as a two-column table."""
    n = int(audit["sampled_traces"])
    steps = int(audit["steps"])
    waits = int(audit["waits"])
    after_error = int(audit["waits_after_error"])
    rows = [
        ("sampled traces", f"{n:,}"),
        ("steps written", f"{steps:,}"),
        ("steps with a wrong result", f"{audit['step_error_rate']:.1%}"),
        ("Waits", f"{waits:,} ({audit['waits_per_trace']:.2f} per trace)"),
        ("Waits after a wrong result", f"{after_error:,}"),
        ("… that then write the right one", f"{int(audit['waits_fixing_error']):,}"),
        ("Waits after a right result", f"{int(audit['waits_after_correct_value']):,}"),
    ]
    t = Table(title="Wait audit (sampled traces)", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    for row in rows:
        t.add_row(*row)
    return t
