"""`layerprobe heal`: fine-tune a pruned model (LoRA, full, or distillation from the base model) and
save a servable checkpoint whose layerprobe.json records the healing (docs/heal.md)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from layerprobe._io import check_writable
from layerprobe.cli.common import DeviceOpt, DtypeOpt, console, progress_bars
from layerprobe.errors import UserError
from layerprobe.runs.execute import set_threads_for

STATE_DIR = ".heal"
HEAL_FILE = "heal.json"
DATA_FILE = "data.jsonl"
LOCK_FILE = ".heal.lock"
HEAL_SCHEMA_VERSION = 1
#: Settings that do not change what healing computes: a re-run that differs only in them resumes.
_NOT_SETTINGS = {"device", "save_every", "force"}


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
            help="lora | full | distill (LoRA, KL to the base model) | distill-full (every weight, KL to the base model)",
        ),
    ] = "lora",
    data: Annotated[
        str, typer.Option("--data", help="traces (the base model's own reasoning traces) or a JSONL file of prompt/completion")
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
    max_len: Annotated[int, typer.Option("--max-len", help="cut sequences (prompt + completion) to this many tokens")] = 2048,
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
    """Heal a pruned model by LoRA, full fine-tuning or distillation from the base model."""
    from layerprobe.prune.heal import DEFAULT_TARGETS, HealConfig, peft_available, read_jsonl_examples

    if out is None:
        raise UserError("--out DIR is required (the healed checkpoint is written there)")
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
        max_len=max_len,
        save_every=save_every,
    )
    cfg.check()
    if cfg.params != "lora" and (target_modules is not None or rank != 16 or alpha != 32):
        raise UserError(f"--rank, --alpha and --target-modules are LoRA settings; --how {how} trains every weight")
    if cfg.params == "lora" and not peft_available():
        raise UserError(f"--how {how} trains LoRA adapters, which needs peft: pip install 'layerprobe[heal]'")
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

        get_method(method)
    file_pairs: list[tuple[str, str]] | None = None
    file_sha1 = None
    traces_flags = [
        f for f, v in (("--task", task), ("--task-file", task_file), ("--limit", limit), ("--budget", budget)) if v is not None
    ]
    if data != "traces":
        if traces_flags or from_run is not None:
            raise UserError(f"{', '.join(traces_flags + (['--from-run'] if from_run else []))}: only with --data traces")
        file_pairs = read_jsonl_examples(data)
        file_sha1 = hashlib.sha1(Path(data).read_bytes()).hexdigest()
    else:
        if raw_prompts:
            raise UserError("--raw-prompts applies to --data FILE (traces use the prompts analyze uses)")
        if from_run is not None and traces_flags:
            raise UserError(f"{', '.join(traces_flags)}: the traces of --from-run are already chosen by that run")
        _check_trace_flags(task, task_file, limit, budget)
    if distill_base is not None and cfg.loss != "kl" and data != "traces":
        raise UserError(
            f"--distill-base is the teacher of distillation and the author of traces; --how {how} on a file uses neither"
        )
    if from_run is not None:
        from layerprobe.runs.store import is_run_dir

        if not is_run_dir(from_run):
            raise UserError(f"--from-run {from_run}: not an analyze run directory (no run.json)")
    pruned_prov = _pruned_checkpoint(model) if drop_list is None and method is None else None
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
    state = _check_out(out, settings, model, force)
    say = console()
    if state == "done":
        prov = json.loads((out / "layerprobe.json").read_text(encoding="utf-8"))
        say.print(
            f"already healed with these settings: {out} ({_summary(prov.get('healing') or {})})", soft_wrap=True, highlight=False
        )
        return

    run_argv = _argv()

    def _terminate(signum: int, frame: object) -> None:
        if stop["training"] and not stop["asked"]:  # finish the step, save, stop
            stop["asked"] = True
            return
        raise KeyboardInterrupt

    stop = {"training": False, "asked": False}
    previous = {s: signal.signal(s, _terminate) for s in (signal.SIGINT, signal.SIGTERM)}
    import torch

    threads = torch.get_num_threads()
    held: list[Any] = []  # the lock on --out, once taken
    try:
        _heal(
            out=out,
            state=state,
            settings=settings,
            cfg=cfg,
            model=model,
            drop_list=drop_list,
            method=method,
            n_drop=n_drop,
            pruned_prov=pruned_prov,
            file_pairs=file_pairs,
            data=data,
            raw_prompts=raw_prompts,
            from_run=from_run,
            task=task,
            task_file=task_file,
            limit=limit,
            budget=budget,
            fmt_name=fmt,
            distill_base=distill_base,
            device=device,
            dtype=dtype,
            force=force,
            stop=stop,
            argv=run_argv,
            held=held,
        )
    except BaseException as exc:
        resumable = (out / STATE_DIR / HEAL_FILE).is_file() and not (out / "layerprobe.json").is_file()
        if resumable and not isinstance(exc, UserError):  # bad input stays one line
            console(stderr=True).print("to resume: " + shlex.join(_resume(run_argv, out)), highlight=False, soft_wrap=True)
        raise
    finally:
        torch.set_num_threads(threads)
        for s, h in previous.items():
            signal.signal(s, h)
        for lock in held:
            lock.release()


def _argv() -> list[str]:
    from layerprobe.cli.app import current_argv

    return current_argv()


def _resume(argv: list[str], out: Path) -> list[str]:
    args = list(argv)
    if "--out" not in args and "-o" not in args:
        args += ["--out", str(out)]
    return args


def _check_trace_flags(task: str | None, task_file: Path | None, limit: int | None, budget: int | None) -> None:
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


def _pruned_checkpoint(model: str) -> Any:
    """The provenance of a pruned checkpoint directory given as --model, or None."""
    from layerprobe.models.provenance import PROVENANCE_FILE, Provenance

    path = Path(model).expanduser()
    if not (path / PROVENANCE_FILE).is_file():
        return None
    try:
        prov = Provenance.model_validate_json((path / PROVENANCE_FILE).read_bytes())
    except ValueError as exc:
        raise UserError(f"--model {model}: its layerprobe.json is not valid ({str(exc).splitlines()[0]})") from None
    return prov if prov.dropped else None


def _check_out(out: Path, settings: dict[str, Any], model: str, force: bool) -> str:
    """'new', 'resume' or 'done' for --out; UserError (nothing written) when it cannot be used."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if Path(model).expanduser().exists() and out.exists() and out.resolve() == Path(model).expanduser().resolve():
        raise UserError(f"--out {out} is the --model directory itself; choose another --out")
    check_writable(out, "--out")
    entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
    meta = out / STATE_DIR / HEAL_FILE
    if not entries - {LOCK_FILE} or (not meta.is_file() and entries <= {LOCK_FILE, STATE_DIR}):
        return "new"  # empty, or a run stopped before it wrote its settings
    if not meta.is_file():
        raise UserError(f"--out {out} is a non-empty directory that is not a layerprobe heal output; choose another --out")
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
        old_settings = old["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        if not force:
            raise UserError(f"{meta} is unreadable; pass --force to start afresh in {out}") from None
        return "new"
    if old_settings != json.loads(json.dumps(settings)):
        if not force:
            diff = sorted(
                k for k in set(old_settings) | set(settings) if old_settings.get(k) != json.loads(json.dumps(settings)).get(k)
            )
            raise UserError(
                f"--out {out} holds a healing run with different settings ({', '.join(diff)}); "
                "use another --out, or --force to start afresh"
            )
        return "new"
    if old.get("status") == "complete" and (out / "layerprobe.json").is_file():
        return "done"
    return "resume"


def _take_lock(out: Path) -> Any:
    """One healing process per --out (a filelock on OUT/.heal.lock); UserError when another holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"--out {out} is being written by another layerprobe heal process; wait for it or use another --out"
        ) from None
    return lock


def _clear(out: Path) -> None:
    """Remove what an earlier healing run wrote in `out` (its checkpoint files and state)."""
    meta = out / STATE_DIR / HEAL_FILE
    files: list[str] = []
    try:
        files = list(json.loads(meta.read_text(encoding="utf-8")).get("files", []))
    except (OSError, ValueError, AttributeError):
        pass
    for name in ["layerprobe.json", *files]:
        p = out / Path(name).name
        if p.is_file():
            p.unlink()
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    from layerprobe._io import write_text_atomic

    meta["updated"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    write_text_atomic(out / STATE_DIR / HEAL_FILE, json.dumps(meta, indent=2) + "\n")


def _is_toy(loaded: Any) -> bool:
    from layerprobe.toy.vocab import is_toy_tokenizer

    return loaded.source_kind == "toy" or is_toy_tokenizer(loaded.tokenizer)


def _base_for(prov: Any) -> str:
    """The base model a pruned checkpoint's layerprobe.json names (its alias or hub id, else its source)."""
    from layerprobe.models.loading import resolve_source

    for cand in (prov.name, prov.source):
        if not isinstance(cand, str):
            continue
        try:
            resolve_source(cand)
        except UserError:
            continue
        return cand
    raise UserError(f"the base model this checkpoint was pruned from ({prov.name}) cannot be found; give it with --distill-base")


def _heal(
    *,
    out: Path,
    state: str,
    settings: dict[str, Any],
    cfg: Any,
    model: str,
    drop_list: list[int] | None,
    method: str | None,
    n_drop: int | None,
    pruned_prov: Any,
    file_pairs: list[tuple[str, str]] | None,
    data: str,
    raw_prompts: bool,
    from_run: Path | None,
    task: str | None,
    task_file: Path | None,
    limit: int | None,
    budget: int | None,
    fmt_name: str | None,
    distill_base: str | None,
    device: str,
    dtype: str,
    force: bool,
    stop: dict[str, bool],
    argv: list[str],
    held: list[Any],
) -> None:
    import dataclasses

    from layerprobe.models.loading import load_model
    from layerprobe.prune.heal import Example, HealStopped, StepInfo, check_lora_targets, examples_sha1
    from layerprobe.prune.heal import heal as run_heal
    from layerprobe.prune.surgery import drop_layers

    err = console(stderr=True)
    with err.status(f"loading {model} ...", spinner="dots") if err.is_terminal else _nullcontext():
        loaded = load_model(model, device=device, dtype=dtype)
    set_threads_for(loaded)
    selection = None
    base = None
    pruned_from = None
    if drop_list is not None:
        base, pruned = loaded, drop_layers(loaded, drop_list, method="manual")
    elif method is not None:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import get_method, prune_model

        if n_drop is not None and n_drop >= loaded.n_layers:
            raise UserError(f"--n-drop {n_drop}: the model has {loaded.n_layers} layers, at most {loaded.n_layers - 1} can go")
        cal = None
        if get_method(method).needs_calibration:
            cal = resolve_calibration(loaded, traces=32 if _is_toy(loaded) else None)
        base = loaded
        pruned, sel = prune_model(loaded, method, n_drop, cal)
        selection = sel.to_json()
    else:
        pruned = loaded
        if pruned_prov is not None:
            selection = pruned_prov.selection
            pruned = dataclasses.replace(pruned, calibration=pruned_prov.calibration)
            pruned_from = {"checkpoint": str(Path(model)), "name": pruned_prov.name, "source": pruned_prov.source}
    if distill_base is not None:
        base = load_model(distill_base, device=device, dtype=dtype)
    elif base is None and (cfg.loss == "kl" or file_pairs is None):  # a teacher, or the author of the traces
        # an unpruned model healed with --force is its own base
        base = loaded if pruned_prov is None else load_model(_base_for(pruned_prov), device=device, dtype=dtype)
    if base is not None and base.tokenizer.get_vocab() != pruned.tokenizer.get_vocab():
        raise UserError("the base model's tokenizer differs from the pruned model's: give the model it was pruned from")
    check_lora_targets(pruned.model, cfg)

    cached = out / STATE_DIR / DATA_FILE
    if state == "resume" and cached.is_file():
        held.append(_take_lock(out))
        examples = [Example(**json.loads(line)) for line in cached.read_text(encoding="utf-8").splitlines() if line.strip()]
        meta = json.loads((out / STATE_DIR / HEAL_FILE).read_text(encoding="utf-8"))
        data_record = meta["data"]
    else:
        examples, data_record = _build_data(
            pruned if base is None else base,
            file_pairs=file_pairs,
            data=data,
            raw_prompts=raw_prompts,
            from_run=from_run,
            task=task,
            task_file=task_file,
            limit=limit,
            budget=budget,
            fmt_name=fmt_name,
            seed=cfg.seed,
            err=err,
        )
        data_record["sha1"] = examples_sha1(examples)
        out.mkdir(parents=True, exist_ok=True)
        held.append(_take_lock(out))
        if force or state == "new":
            _clear(out)
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        from layerprobe._io import write_text_atomic

        lines = "".join(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n" for e in examples)
        write_text_atomic(cached, lines)
        meta = {
            "schema_version": HEAL_SCHEMA_VERSION,
            "settings": settings,
            "command": argv,
            "status": "running",
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "data": data_record,
        }
        _write_meta(out, meta)
    meta["status"] = "running"
    _write_meta(out, meta)

    every = max(1, cfg.steps // 20)
    with progress_bars() as progress:

        def on_step(info: StepInfo) -> None:
            progress(f"healing ({cfg.how})", info.step, info.steps, f"loss {info.loss:.4f}")
            if not err.is_terminal and (info.step % every == 0 or info.step == info.steps):
                eta = info.seconds / info.step * (info.steps - info.step)  # mean training time per step so far
                err.print(
                    f"step {info.step}/{info.steps}  loss {info.loss:.4f}  lr {info.lr:.2e}  "
                    f"{info.tokens / max(info.seconds, 1e-9):,.0f} tokens/s  eta {eta:.0f} s",
                    highlight=False,
                    soft_wrap=True,
                )

        stop["training"] = True
        try:
            result = run_heal(
                pruned,
                examples,
                cfg,
                teacher=base if cfg.loss == "kl" else None,
                state_dir=out / STATE_DIR,
                on_step=on_step,
                should_stop=lambda: stop["asked"],
            )
        except HealStopped as exc:
            meta["status"] = "interrupted"
            _write_meta(out, meta)
            err.print(f"stopped after step {exc.step}; the training state is saved in {out / STATE_DIR}")
            raise KeyboardInterrupt from None
        except BaseException as exc:
            meta["status"] = "failed" if isinstance(exc, Exception) else "interrupted"
            _write_meta(out, meta)
            raise
        finally:
            stop["training"] = False

    record = {
        **result.record,
        "data": data_record,
        "model": model,
        "resumed_from_step": result.resumed_from or None,
        "command": argv,
    }
    if cfg.loss == "kl" and base is not None:
        record["teacher"] = {"name": base.name, "source": base.source}
    if pruned_from is not None:
        record["pruned_from"] = pruned_from
    files = _save(result.loaded, out, selection, record)
    meta.update(status="complete", files=files, losses=[round(x, 6) for x in result.losses])
    _write_meta(out, meta)
    (out / STATE_DIR / "state.pt").unlink(missing_ok=True)
    healed = result.loaded
    console().print(
        f"healed ({_summary(record)}); saved {healed.n_layers}-layer model (dropped {healed.dropped}) to {out}",
        soft_wrap=True,
        highlight=False,
    )


def _save(loaded: Any, out: Path, selection: Any, record: dict[str, Any]) -> list[str]:
    """Write the checkpoint into a temporary folder, then rename each file into `out`
    (layerprobe.json last, so a checkpoint with layerprobe.json is always complete)."""
    from layerprobe.prune.surgery import save_model

    tmp = out / STATE_DIR / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(loaded, tmp, selection=selection, healing=record)
    names = sorted(p.name for p in tmp.iterdir() if p.is_file())
    for name in [n for n in names if n != "layerprobe.json"] + ["layerprobe.json"]:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return names


def _summary(h: dict[str, Any]) -> str:
    """One line: how, steps, data, losses and speed of a healing record."""
    data = h.get("data") or {}
    on = "base traces" if data.get("kind") == "traces" else Path(str(data.get("path", "a file"))).name
    parts = [f"{h.get('how')}, {h.get('steps')} steps on {on}"]
    if h.get("first_loss") is not None and h.get("final_loss") is not None:
        parts.append(f"{'KL' if h.get('loss') == 'kl' else 'loss'} {h['first_loss']:.4f} -> {h['final_loss']:.4f}")
    if h.get("tokens_per_s"):
        parts.append(f"{h.get('tokens_seen', 0):,} tokens in {h.get('seconds')} s ({h['tokens_per_s']:,.0f} tokens/s)")
    return "; ".join(parts)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _build_data(
    base: Any,
    *,
    file_pairs: list[tuple[str, str]] | None,
    data: str,
    raw_prompts: bool,
    from_run: Path | None,
    task: str | None,
    task_file: Path | None,
    limit: int | None,
    budget: int | None,
    fmt_name: str | None,
    seed: int,
    err: Console,
) -> tuple[list[Any], dict[str, Any]]:
    """The training examples and their description for layerprobe.json."""
    from layerprobe.prune.heal import Example, base_traces
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import detect_format

    tok = base.tokenizer
    if file_pairs is not None:
        record: dict[str, Any] = {
            "kind": "file",
            "path": str(Path(data)),
            "file_sha1": hashlib.sha1(Path(data).read_bytes()).hexdigest(),
            "prompts": "raw" if raw_prompts else "chat template + thinking opener",
            "n": len(file_pairs),
        }
        if raw_prompts:
            return [Example(p, c, eos=True) for p, c in file_pairs], record
        fmt = detect_format(tok, fmt_name or base.reasoning_format)
        record["format"] = fmt.name
        return [Example(build_prompt(tok, fmt, p), c, eos=True) for p, c in file_pairs], record
    if from_run is not None:
        return _from_run(base, from_run, err)
    toy = _is_toy(base)
    if task is None:
        if not toy:
            raise UserError("--data traces needs --task (the problems the base model reasons about), or --from-run RUN")
        task = "toy-mix"
    fmt = detect_format(tok, fmt_name or base.reasoning_format)
    budget = budget or (128 if toy else 4096)
    answer_max = 8 if toy else 64
    if task.startswith("toy-"):
        from layerprobe.toy.tasks import sample_problems

        types = ["long", "short", "facts"] if task == "toy-mix" else [task.removeprefix("toy-")]
        n = limit or 200
        problems = [
            (p.id, p.prompt)
            for t in types
            for p in sample_problems(t, min(n, 200) if t == "facts" else n, seed=seed, split="train")
        ]
        source: dict[str, Any] = {"split": "train (the toy's held-out test prompts are never used; facts have no split)"}
    else:
        from layerprobe.tasks.registry import load_problems

        _, probs, source = load_problems(task, limit, seed, task_file)
        problems = [(p.id, p.question) for p in probs]
    if not problems:
        raise UserError(f"--task {task}: no problems")
    batch = 64 if toy else (16 if base.device.type == "cuda" else 4)
    with progress_bars() as progress:
        t0 = time.perf_counter()
        examples = base_traces(
            base,
            problems,
            fmt,
            budget=budget,
            answer_max=answer_max,
            seed=seed,
            batch_size=batch,
            on_trace=lambda done, total: progress("base traces", done, total),
        )
    if not err.is_terminal:
        err.print(f"{len(examples)} base traces generated in {time.perf_counter() - t0:.1f} s", highlight=False)
    s = fmt.sampling
    record = {
        "kind": "traces",
        "source": "generated",
        "task": task,
        "problems": len(problems),
        "limit": limit,
        "budget": budget,
        "answer_max": answer_max,
        "format": fmt.name,
        "sampling": {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k},
        "seed": seed,
        "task_source": source,
    }
    return examples, record


def _from_run(base: Any, run_dir: Path, err: Console) -> tuple[list[Any], dict[str, Any]]:
    """The base variant's generated traces of an analyze run, with the prompts that run used."""
    from layerprobe.prune.heal import Example
    from layerprobe.runs import load_run
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import get_format
    from layerprobe.tasks.registry import load_problems

    run = load_run(run_dir)
    if run.info.model.source != base.source:
        raise UserError(
            f"--from-run {run_dir} was made with {run.info.model.id} ({run.info.model.source}), not with the base model "
            f"{base.name} ({base.source})"
        )
    c = run.info.config
    _, probs, _ = load_problems(c.task, c.limit, c.seed, Path(c.task_file) if c.task_file else None)
    questions = {p.id: p.question for p in probs}
    fmt = get_format(c.reasoning_format or run.info.model.reasoning_format or "think-tags")
    seen: set[tuple[str, str]] = set()
    examples = []
    for r in run.samples:
        if r.variant != run.base or r.origin not in ("generated", "ingested") or r.problem_id not in questions:
            continue
        if (r.problem_id, r.text) in seen:
            continue
        seen.add((r.problem_id, r.text))
        examples.append(Example(build_prompt(base.tokenizer, fmt, questions[r.problem_id]), r.text))
    if not examples:
        raise UserError(f"--from-run {run_dir}: no generated traces of its base variant ({run.base})")
    err.print(
        f"note: --from-run trains on the problems {run_dir} evaluated; measure the healed model on other problems "
        "(e.g. analyze --seed 1)",
        highlight=False,
        soft_wrap=True,
    )
    record = {
        "kind": "traces",
        "source": "run",
        "run": str(run_dir),
        "variant": run.base,
        "task": c.task,
        "problems": len({p for p, _ in seen}),
        "traces": len(examples),
        "format": fmt.name,
    }
    return examples, record
