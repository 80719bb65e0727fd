"""`layerprobe heal`: fine-tune a pruned model (LoRA, full, or distillation from the base model) and
save a servable checkpoint whose layerprobe.json records the healing (docs/heal.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer

from layerprobe.cli.common import DeviceOpt, DtypeOpt, console, current_argv, progress_bars
from layerprobe.errors import UserError


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
        str | None, typer.Option("--method", help="choose the layers to remove: shortgpt | reverse | angular | ...")
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
    fmt: Annotated[str | None, typer.Option("--format", help="reasoning format: think-tags | s1 (default: detected)")] = None,
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
    from layerprobe.jobs.heal_settings import check_trace_flags, pruned_checkpoint
    from layerprobe.prune.heal import DEFAULT_TARGETS, RL_HOWS, HealConfig, peft_available, read_jsonl_examples

    if out is None:
        raise UserError("--out DIR is required (the healed checkpoint is written there)")
    rl = how in RL_HOWS
    rl_flags = [
        f
        for f, v in (
            ("--group-size", group_size),
            ("--kl", kl),
            ("--temperature", temperature),
            ("--max-completion", max_completion),
            ("--format-reward", format_reward),
        )
        if v is not None
    ]
    if rl_flags and not rl:
        raise UserError(f"{', '.join(rl_flags)}: GRPO settings; --how {how} learns from given sequences (use --how grpo)")
    sft_flags = [
        f
        for f, v in (("--max-len", max_len), ("--budget", budget), ("--from-run", from_run), ("--distill-base", distill_base))
        if v is not None
    ]
    if rl and sft_flags:
        raise UserError(
            f"{', '.join(sft_flags)}: settings of the methods that learn from given sequences; --how {how} samples its own "
            "(--max-completion bounds them)"
        )
    targets: tuple[str, ...] = DEFAULT_TARGETS
    if target_modules is not None:
        targets = tuple(t.strip() for t in target_modules.split(","))
    cfg = HealConfig(
        how=how,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        seed=seed,
        warmup=warmup,
        rank=rank,
        alpha=alpha,
        target_modules=targets,
        max_len=2048 if max_len is None else max_len,
        save_every=save_every,
        group_size=8 if group_size is None else group_size,
        kl=0.0 if kl is None else kl,
        temperature=temperature,
        max_completion=max_completion,
        format_reward=0.0 if format_reward is None else format_reward,
    )
    cfg.check()
    if cfg.params != "lora" and (target_modules is not None or rank != 16 or alpha != 32):
        raise UserError(f"--rank, --alpha and --target-modules are LoRA settings; --how {how} trains every weight")
    if cfg.params == "lora" and not peft_available():
        raise UserError(f"--how {how} trains LoRA adapters, which needs peft: pip install 'layerprobe[heal]'")
    if rl:
        from layerprobe.prune.grpo import trl_available

        if not trl_available():
            raise UserError(f"--how {how} trains with TRL's GRPOTrainer, which needs trl: pip install 'layerprobe[heal]'")
    if drop is not None and method is not None:
        raise UserError(
            "--drop and --method are exclusive: give the layers (--drop 10,11) or a method (--method shortgpt --n-drop 2)"
        )
    if n_drop is not None and method is None:
        raise UserError("--n-drop applies only with --method (with --drop the list says which layers go)")
    if method is not None and n_drop is None:
        raise UserError(f"--method {method} needs --n-drop K (how many layers to remove)")
    drop_list = None
    if drop is not None:
        from layerprobe.prune.surgery import parse_layer_list

        drop_list = parse_layer_list(drop)
    if method is not None:
        from layerprobe.prune.methods import get_method

        if get_method(method).kind != "depth":
            raise UserError(
                f"heal --method removes whole layers; --method {method} compresses weights: prune first "
                f"(layerprobe prune --method {method} --match-layers K --out DIR) and heal that checkpoint (--model DIR)"
            )
    if fmt is not None:
        from layerprobe.scaling.formats import FORMATS

        if fmt not in FORMATS:
            raise UserError(f"--format {fmt}: valid formats are {', '.join(FORMATS)}")
        if raw_prompts:
            raise UserError("--format applies to prompts layerprobe builds; --raw-prompts uses the file's prompts as they are")
    file_pairs: list[tuple[str, str]] | None = None
    file_prompts: list[tuple[str, str, str]] | None = None
    file_sha1 = None
    traces_flags = [
        f for f, v in (("--task", task), ("--task-file", task_file), ("--limit", limit), ("--budget", budget)) if v is not None
    ]
    if data != "traces":
        if traces_flags or from_run is not None:
            raise UserError(f"{', '.join(traces_flags + (['--from-run'] if from_run else []))}: only with --data traces")
        if rl:
            from layerprobe.prune.grpo import read_jsonl_prompts

            file_prompts = read_jsonl_prompts(data)
        else:
            file_pairs = read_jsonl_examples(data)
        file_sha1 = hashlib.sha1(Path(data).read_bytes()).hexdigest()
    else:
        if raw_prompts:
            raise UserError("--raw-prompts applies to --data FILE (a task's prompts are wrapped as analyze wraps them)")
        if from_run is not None and traces_flags:
            raise UserError(f"{', '.join(traces_flags)}: the traces of --from-run are already chosen by that run")
        check_trace_flags(task, task_file, limit, budget)
    if distill_base is not None and cfg.loss != "kl" and data != "traces":
        raise UserError(
            f"--distill-base is the teacher of distillation and the author of traces; --how {how} on a file uses neither"
        )
    if from_run is not None:
        from layerprobe.data.store import is_run_dir

        if not is_run_dir(from_run):
            raise UserError(f"--from-run {from_run}: not an analyze run directory (no run.json)")
    pruned_prov = pruned_checkpoint(model) if drop_list is None and method is None else None
    if drop_list is None and method is None and pruned_prov is None and not force:
        raise UserError(
            f"--model {model} is not pruned: give --drop LIST or --method NAME --n-drop K, or a pruned checkpoint "
            "(pass --force to fine-tune an unpruned model anyway)"
        )

    settings = {
        "model": model,
        "drop": drop_list,
        "method": method,
        "n_drop": n_drop,
        "data": data if file_sha1 is None else {"file": str(Path(data).resolve()), "sha1": file_sha1},
        "raw_prompts": raw_prompts,
        "from_run": str(from_run.resolve()) if from_run is not None else None,
        "task": task,
        "task_file": {"path": str(task_file), "sha1": hashlib.sha1(task_file.read_bytes()).hexdigest()} if task_file else None,
        "limit": limit,
        "budget": budget,
        "format": fmt,
        "distill_base": distill_base,
        "dtype": dtype,
        **cfg.to_json(),
    }
    from layerprobe.jobs.heal import Heal, summary
    from layerprobe.jobs.heal_settings import HealSettings

    job = Heal(
        HealSettings(
            model=model,
            out=out,
            cfg=cfg,
            record=settings,
            drop_list=drop_list,
            method=method,
            n_drop=n_drop,
            pruned_prov=pruned_prov,
            file_pairs=file_pairs,
            file_prompts=file_prompts,
            data=data,
            raw_prompts=raw_prompts,
            from_run=from_run,
            task=task,
            task_file=task_file,
            limit=limit,
            budget=budget,
            fmt=fmt,
            distill_base=distill_base,
            device=device,
            dtype=dtype,
            force=force,
        ),
        argv=current_argv(),
        log=_log,
    )
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
