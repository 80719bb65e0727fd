"""`layerprobe heal`: fine-tune a pruned model (LoRA, full, or distillation from the base model) and
save a servable checkpoint whose layerprobe.json records the healing (docs/heal.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layerprobe.cli.common import DeviceOpt, DtypeOpt, console, current_argv, progress_bars
from layerprobe.method_table import depth_methods
from layerprobe.scaling.formats import FORMATS


def heal(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="the model to prune (alias, hub id, directory, .gguf), or a pruned checkpoint directory"
        ),
    ] = "toy",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="directory of the healed checkpoint (re-run to resume)")] = None,
    drop: Annotated[str | None, typer.Option("--drop", help="original layers to remove first, e.g. 10,11")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help=f"choose the layers to remove: {' | '.join(depth_methods())}")
    ] = None,
    n_drop: Annotated[int | None, typer.Option("--n-drop", help="layers --method removes")] = None,
    how: Annotated[
        str,
        typer.Option(
            "--how",
            help="lora | full | distill (LoRA, KL to the base model) | distill-full (every weight, KL to the base model) | "
            "grpo (LoRA, reinforcement learning on a verifiable reward) | grpo-full (every weight, GRPO)",
        ),
    ] = "lora",
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="traces (the base model's own reasoning traces; for grpo: the task's prompts) or a JSONL file of "
            "prompt/completion (for grpo: prompt/answer)",
        ),
    ] = "traces",
    raw_prompts: Annotated[
        bool,
        typer.Option("--raw-prompts", help="--data FILE: use prompts as they are (default: chat template + thinking opener)"),
    ] = False,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps")] = 300,
    lr: Annotated[float | None, typer.Option("--lr", help="peak learning rate (default 1e-4 LoRA, 1e-5 full)")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="linear warm-up steps (default: a tenth of --steps)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per micro-batch")] = 8,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="micro-batches per optimizer step")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed of the data order, LoRA initialisation and traces")] = 0,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank")] = 16,
    alpha: Annotated[int, typer.Option("--alpha", help="LoRA alpha (adapters are scaled by alpha/rank)")] = 32,
    target_modules: Annotated[
        str | None,
        typer.Option("--target-modules", help="LoRA: comma-separated module names (default: every projection of a layer)"),
    ] = None,
    max_len: Annotated[
        int | None, typer.Option("--max-len", help="cut sequences (prompt + completion) to this many tokens (default 2048)")
    ] = None,
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="grpo: completions sampled per prompt (default 8)")
    ] = None,
    kl: Annotated[float | None, typer.Option("--kl", help="grpo: KL coefficient to the pruned model (default 0)")] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="grpo: sampling temperature (default: the reasoning format's)")
    ] = None,
    max_completion: Annotated[
        int | None,
        typer.Option(
            "--max-completion", help="grpo: most tokens per sampled completion (default 160 for the toy, 4160 otherwise)"
        ),
    ] = None,
    format_reward: Annotated[
        float | None,
        typer.Option(
            "--format-reward", help="grpo: weight of a format reward (thinking ended, answer in the task's format); default 0"
        ),
    ] = None,
    distill_base: Annotated[
        str | None,
        typer.Option(
            "--distill-base",
            "--base",
            help="the base model: distillation teacher and author of the traces (default: the unpruned --model)",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="--data traces: problems to reason about (default toy-mix for the toy)")
    ] = None,
    task_file: Annotated[Path | None, typer.Option("--task-file", help="--data traces: local JSONL of a hub task")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="--data traces: problems per group (default 200 for the toy, all otherwise)")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", help="--data traces: thinking budget (default 128 for the toy, 4096 otherwise)")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help=f"reasoning format: {' | '.join(FORMATS)} (default: detected)")
    ] = None,
    from_run: Annotated[
        Path | None, typer.Option("--from-run", help="--data traces: take the base variant's traces from an analyze run")
    ] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", help="save the training state every N steps (default: every 2 minutes)")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="heal an unpruned model; start afresh in an --out that holds other settings")
    ] = False,
) -> None:
    """Heal a pruned model by LoRA, full fine-tuning, distillation from the base model, or GRPO (reinforcement
    learning on a verifiable reward: the right answer)."""
    from layerprobe.jobs.heal import Heal, summary
    from layerprobe.jobs.heal_settings import HealSettings

    settings = HealSettings.from_flags(
        model=model,
        out=out,
        drop=drop,
        method=method,
        n_drop=n_drop,
        how=how,
        data=data,
        raw_prompts=raw_prompts,
        steps=steps,
        lr=lr,
        warmup=warmup,
        batch_size=batch_size,
        grad_accum=grad_accum,
        seed=seed,
        rank=rank,
        alpha=alpha,
        target_modules=target_modules,
        max_len=max_len,
        group_size=group_size,
        kl=kl,
        temperature=temperature,
        max_completion=max_completion,
        format_reward=format_reward,
        distill_base=distill_base,
        task=task,
        task_file=task_file,
        limit=limit,
        budget=budget,
        fmt=fmt,
        from_run=from_run,
        save_every=save_every,
        device=device,
        dtype=dtype,
        force=force,
    )
    job = Heal(settings, argv=current_argv(), log=_log)
    with progress_bars() as progress:
        job.progress = progress
        result = job.run()
    if result.already:
        console().print(f"already healed with these settings: {out} ({summary(result.record)})")
    else:
        console().print(
            f"healed ({summary(result.record)}); saved {result.n_layers}-layer model (dropped {result.dropped}) to {out}"
        )


def _log(line: str, progress: bool = False) -> None:
    """Notes always; progress lines only where no progress bar is drawn (output that is not a terminal)."""
    err = console(stderr=True)
    if not progress or not err.is_terminal:
        err.print(line)
