"""What `layerprobe heal` was asked (docs/heal.md): its settings, checked before any work."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError


@dataclass
class HealSettings:
    """What `layerprobe heal` was asked (docs/heal.md), every flag checked once, by `from_flags`; the job
    below trusts it."""

    model: str
    out: Path
    cfg: Any
    """prune.heal.HealConfig: how, steps, learning rate, batches, LoRA settings."""
    record: dict[str, Any]
    """The settings as stored in heal.json and compared on resume."""
    drop_list: list[int] | None = None
    method: str | None = None
    n_drop: int | None = None
    pruned_prov: Any = None
    """The provenance of a pruned checkpoint given as --model (None otherwise)."""
    file_pairs: list[tuple[str, str]] | None = field(default=None, repr=False)
    """--data FILE: its (prompt, completion) pairs; None for --data traces."""
    file_prompts: list[tuple[str, str, str]] | None = field(default=None, repr=False)
    """--how grpo --data FILE: its (prompt, answer, answer type) lines; None for a task's prompts."""
    data: str = "traces"
    raw_prompts: bool = False
    from_run: Path | None = None
    task: str | None = None
    task_file: Path | None = None
    limit: int | None = None
    budget: int | None = None
    fmt: str | None = None
    distill_base: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    force: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        model: str,
        out: Path | None,
        drop: str | None,
        method: str | None,
        n_drop: int | None,
        how: str,
        data: str,
        raw_prompts: bool,
        steps: int,
        lr: float | None,
        warmup: int | None,
        batch_size: int,
        grad_accum: int,
        seed: int,
        rank: int,
        alpha: int,
        target_modules: str | None,
        max_len: int | None,
        group_size: int | None,
        kl: float | None,
        temperature: float | None,
        max_completion: int | None,
        format_reward: float | None,
        distill_base: str | None,
        task: str | None,
        task_file: Path | None,
        limit: int | None,
        budget: int | None,
        fmt: str | None,
        from_run: Path | None,
        save_every: int | None,
        device: str,
        dtype: str,
        force: bool,
    ) -> HealSettings:
        """The settings of `layerprobe heal`'s flags, every flag checked here, once, before any work (each
        flag's meaning: `layerprobe heal --help`, docs/heal.md); UserError naming the flag otherwise."""
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
                raise UserError(
                    "--format applies to prompts layerprobe builds; --raw-prompts uses the file's prompts as they are"
                )
        file_pairs: list[tuple[str, str]] | None = None
        file_prompts: list[tuple[str, str, str]] | None = None
        file_sha1 = None
        traces_flags = [
            f
            for f, v in (("--task", task), ("--task-file", task_file), ("--limit", limit), ("--budget", budget))
            if v is not None
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
            "task_file": {"path": str(task_file), "sha1": hashlib.sha1(task_file.read_bytes()).hexdigest()}
            if task_file
            else None,
            "limit": limit,
            "budget": budget,
            "format": fmt,
            "distill_base": distill_base,
            "dtype": dtype,
            **cfg.to_json(),
        }
        return cls(
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
        )


def check_trace_flags(task: str | None, task_file: Path | None, limit: int | None, budget: int | None) -> None:
    from layerprobe.tasks.registry import TASKS

    if task is not None and task not in TASKS:
        raise UserError(f"--task {task}: unknown task (valid: {', '.join(TASKS)}; see `layerprobe tasks`)")
    if task_file is not None and not task_file.is_file():
        raise UserError(f"--task-file {task_file}: no such file")
    if task_file is not None and task is not None and task.startswith("toy-"):
        raise UserError(f"--task-file is for hub tasks; '{task}' is generated by the embedded toy")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1")
    if budget is not None and budget < 1:
        raise UserError(f"--budget {budget}: must be a positive number of thinking tokens")


def pruned_checkpoint(model: str) -> Any:
    """The provenance of a pruned checkpoint directory given as --model, or None."""
    from layerprobe.models.provenance import PROVENANCE_FILE, Provenance

    path = Path(model).expanduser()
    if not (path / PROVENANCE_FILE).is_file():
        return None
    try:
        prov = Provenance.model_validate_json((path / PROVENANCE_FILE).read_bytes())
    except ValueError as exc:
        raise UserError(f"--model {model}: its layerprobe.json is not valid ({str(exc).splitlines()[0]})") from None
    return prov if prov.dropped or prov.compression is not None else None
