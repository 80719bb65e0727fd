"""`layerprobe toy train|eval`: train the embedded toy reasoner, and measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from layerprobe.cli.common import console
from layerprobe.errors import UserError

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
    from layerprobe.toy.data import DataMix
    from layerprobe.toy.train import Stage, TrainConfig, train

    if layers < 1 or steps < 1 or lr <= 0 or threads < 1 or correction_steps < 0 or correction_lr <= 0:
        raise UserError("--layers, --steps and --threads must be >= 1, --correction-steps >= 0, learning rates > 0")
    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision {precision}: valid values are fp32, bf16")
    stages = [Stage(layers=layers, steps=steps, lr=lr, warmup=min(200, steps // 10 + 1), curriculum_frac=1 / 3)]
    if correction_steps:
        stages.append(
            Stage(
                layers=layers,
                steps=correction_steps,
                lr=correction_lr,
                warmup=min(50, correction_steps // 10 + 1),
                mix=DataMix(masked_error=0.10),
            )
        )
    cfg = TrainConfig(seed=seed, precision=precision, threads=threads, stages=stages, thinking=not no_thinking)
    final = train(cfg, out, log=console().print)
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
    from layerprobe.cli.common import check_output_file
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, parse_layer_list
    from layerprobe.toy.evaluate import evaluate
    from layerprobe.toy.tasks import TASK_TYPES

    if n < 1 or samples < 0 or temperature <= 0:
        raise UserError("--n must be >= 1, --samples >= 0 and --temperature > 0")
    check_output_file(json_out, "--json")
    if budget_task not in TASK_TYPES or budget_task == "facts":
        if not (budget_task.startswith("k=") and budget_task[2:].isdigit() and 1 <= int(budget_task[2:]) <= 16):
            raise UserError(f"--budget-task {budget_task}: valid values are short, mid, long, xlong or k=N (N = 1..16)")
    budget_list = parse_layer_list(budgets, "--budgets", "integers", "0,20,40") if budgets else []
    if any(b < 0 for b in budget_list):
        raise UserError("--budgets must be >= 0")
    dropped = parse_layer_list(drop) if drop else []
    loaded = load_model(model, device="cpu", dtype="float32")
    if dropped:
        loaded = drop_layers(loaded, dropped)
    from layerprobe.cli.common import progress_bars

    with progress_bars() as progress:
        res = evaluate(
            loaded.model,
            loaded.tokenizer,
            list(TASK_TYPES),
            n=n,
            samples=samples,
            temperature=temperature,
            seed=seed,
            progress=lambda done, total: progress("toy eval: traces", done, total),
        )
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
    curve = {}
    if budget_list:
        from layerprobe.toy.evaluate import budget_curve

        curve = budget_curve(loaded.model, loaded.tokenizer, budget_task, budget_list, n=n, seed=seed)
        say.print(
            f"greedy accuracy vs thinking budget ({budget_task}): " + ", ".join(f"B={b}: {a:.2f}" for b, a in curve.items())
        )
    if json_out:
        json_out.write_text(
            json.dumps(
                {
                    "schema_version": 1,
                    "model": model,
                    "drop": drop,
                    "n": n,
                    "samples": samples,
                    "temperature": temperature,
                    "seed": seed,
                    **res.__dict__,
                    "budget_task": budget_task,
                    "budget_curve": curve,
                },
                indent=2,
                default=str,
            )
        )


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
