"""`layerprobe heal` as a job: fine-tune a pruned model (LoRA, full, or distillation from the base model)
and save a servable checkpoint whose layerprobe.json records the healing (docs/heal.md).

The output directory holds the checkpoint and, while healing runs, `.heal/`: `heal.json` (HealFile:
the settings, the status and what was written), the training examples (`data.jsonl`, built once) and
the training state (`state.pt`, saved every few minutes and when asked to stop). Re-running the same
command resumes from the last saved step and lands on the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from layerprobe._io import check_writable, write_text_atomic
from layerprobe.data.schema import HealFile
from layerprobe.data.store import LOCK_FILES, now
from layerprobe.errors import UserError
from layerprobe.jobs.execute import set_threads_for
from layerprobe.jobs.heal_data import fit_prompts, make_examples, plan_data, plan_prompts
from layerprobe.jobs.heal_settings import HealSettings
from layerprobe.jobs.job import Job, ProgressFn, settings_differences

R = TypeVar("R")

STATE_DIR = ".heal"
HEAL_FILE = "heal.json"
DATA_FILE = "data.jsonl"
#: Settings that do not change what healing computes: a re-run that differs only in them resumes.
MAY_DIFFER = frozenset({"device", "save_every", "force"})


@dataclass
class HealedCheckpoint:
    """What a healing job produced: the healing record of the checkpoint's layerprobe.json."""

    record: dict[str, Any]
    n_layers: int | None = None
    dropped: list[int] = field(default_factory=list)
    already: bool = False
    """The output already held a checkpoint healed with these settings (nothing was done)."""


class Heal(Job):
    """Heal a pruned model into `out` (the job skeleton: prepare, then open / work / close with the
    output locked). `log(line, progress)` receives notes for the user and, with progress=True, a line
    per twentieth of training (what a progress bar shows, for output that is not a terminal)."""

    kind = "heal"

    def __init__(self, settings: HealSettings, progress: ProgressFn | None = None, argv: Any = (), log: Any = None) -> None:
        super().__init__(progress, argv)
        self.s = settings
        self.log = log or (lambda line, progress=False: None)
        import torch

        self._threads = torch.get_num_threads()

    # -- prepare: nothing is written -----------------------------------------------------------
    def prepare(self) -> None:
        from layerprobe.models.loading import load_model
        from layerprobe.prune.heal import check_lora_targets
        from layerprobe.prune.surgery import drop_layers

        s, cfg = self.s, self.s.cfg
        self.out = s.out
        self.state = check_out(s.out, s.record, s.model, s.force)
        if self.state == "done":
            return
        self.progress(f"loading {s.model}", 0, 1)
        loaded = load_model(s.model, device=s.device, dtype=s.dtype)
        self.progress(f"loading {s.model}", 1, 1)
        set_threads_for(loaded)
        self.selection = None
        base = None
        self.pruned_from = None
        if s.drop_list is not None:
            base, pruned = loaded, drop_layers(loaded, s.drop_list, method="manual")
        elif s.method is not None:
            from layerprobe.prune.calibration import resolve_calibration
            from layerprobe.prune.methods import get_method, prune_model

            if s.n_drop is not None and s.n_drop >= loaded.n_layers:
                raise UserError(
                    f"--n-drop {s.n_drop}: the model has {loaded.n_layers} layers, at most {loaded.n_layers - 1} can go"
                )
            from layerprobe.prune.methods import default_traces

            m = get_method(s.method)
            # the toy has no English; a method made for reasoning reads the model's own traces
            cal = (
                resolve_calibration(loaded, traces=default_traces(loaded) if loaded.is_toy or m.needs_traces else None)
                if m.needs_calibration
                else None
            )
            base = loaded
            pruned, sel = prune_model(loaded, s.method, s.n_drop, cal)
            self.selection = sel.to_json()
        else:
            pruned = loaded
            if s.pruned_prov is not None:
                self.selection = s.pruned_prov.selection
                pruned = dataclasses.replace(pruned, calibration=s.pruned_prov.calibration)
                self.pruned_from = {"checkpoint": str(Path(s.model)), "name": s.pruned_prov.name, "source": s.pruned_prov.source}
        if s.distill_base is not None:
            base = load_model(s.distill_base, device=s.device, dtype=s.dtype)
        elif (
            base is None and not cfg.is_rl and (cfg.loss == "kl" or s.file_pairs is None)
        ):  # a teacher, or the author of the traces
            # an unpruned model healed with --force is its own base
            base = loaded if s.pruned_prov is None else load_model(_base_for(s.pruned_prov), device=s.device, dtype=s.dtype)
        if base is not None and base.tokenizer.get_vocab() != pruned.tokenizer.get_vocab():
            raise UserError("the base model's tokenizer differs from the pruned model's: give the model it was pruned from")
        check_lora_targets(pruned.model, cfg)
        self.base, self.pruned = base, pruned
        if cfg.is_rl:
            self.plan = plan_prompts(pruned, s)
            fit_prompts(self.plan, pruned, cfg, self.log)
            return
        self.plan = plan_data(pruned if base is None else base, s, self.log)
        if self.plan.examples is not None:
            from layerprobe.prune.heal import check_examples

            check_examples(pruned.tokenizer, self.plan.examples, cfg.max_len)

    # -- open: the output is locked ------------------------------------------------------------
    def open(self) -> None:
        state_dir = self.out / STATE_DIR
        if self.state == "done":
            return
        if self.state == "new" or self.s.force and self.state != "resume":
            clear(self.out)
        state_dir.mkdir(parents=True, exist_ok=True)
        old = read_heal_file(self.out) if self.state == "resume" else None
        self.meta = old or HealFile(settings=self.s.record, command=self.argv, created=now())
        self.meta.command, self.meta.resume_command = self.argv, self.resume_command()
        self._write("running")

    def _write(self, status: str) -> None:
        self.meta.status = status  # type: ignore[assignment]
        self.meta.updated = now()
        write_text_atomic(self.out / STATE_DIR / HEAL_FILE, self.meta.model_dump_json(indent=2) + "\n")

    # -- work ------------------------------------------------------------------------------------
    def work(self) -> HealedCheckpoint:
        from layerprobe.prune.heal import Example, examples_sha1
        from layerprobe.prune.heal import heal as run_heal

        if self.state == "done":
            prov = json.loads((self.out / "layerprobe.json").read_text(encoding="utf-8"))
            return HealedCheckpoint(record=prov.get("healing") or {}, already=True)
        cfg, out = self.s.cfg, self.out
        if cfg.is_rl:
            return self._work_rl()
        cached = out / STATE_DIR / DATA_FILE
        if cached.is_file() and self.meta.data:
            examples = [Example(**json.loads(line)) for line in cached.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            author = self.pruned if self.base is None else self.base
            examples = make_examples(author, self.plan, cfg.seed, self.progress, self.log)
            data_record = dict(self.plan.record, sha1=examples_sha1(examples))
            lines = "".join(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n" for e in examples)
            write_text_atomic(cached, lines)
            self.meta.data = data_record
            self._write("running")
        on_step = self._step_reporter("loss", lambda info: info.loss)
        result = self._train(
            lambda: run_heal(
                self.pruned,
                examples,
                cfg,
                teacher=self.base if cfg.loss == "kl" else None,
                state_dir=out / STATE_DIR,
                on_step=on_step,
                should_stop=lambda: self.stop_requested,
            )
        )
        teacher = {"name": self.base.name, "source": self.base.source} if cfg.loss == "kl" and self.base else None
        self.meta.losses = [round(x, 6) for x in result.losses]
        return self._finish(result, teacher)

    def _train(self, train: Callable[[], R]) -> R:
        """Run the training `train`; a first Ctrl-C / SIGTERM finishes the step and saves the training state,
        then stops the job as an interrupt (resumable)."""
        from layerprobe.prune.heal import HealStopped

        try:
            with self.graceful_stops():
                return train()
        except HealStopped as exc:
            self.log(f"stopped after step {exc.step}; the training state is saved in {self.out / STATE_DIR}")
            raise KeyboardInterrupt from None

    def _step_reporter(self, name: str, value: Callable[[Any], float]) -> Callable[[Any], None]:
        """A progress callback: the bar with `name` (loss or reward) every step, a log line 20 times a run."""
        cfg = self.s.cfg
        every = max(1, cfg.steps // 20)

        def on_step(info: Any) -> None:
            shown = f"{name} {value(info):.4f}"
            self.progress(f"healing ({cfg.how})", info.step, info.steps, shown)
            if info.step % every == 0 or info.step == info.steps:
                eta = info.seconds / info.step * (info.steps - info.step)  # mean training time per step so far
                self.log(
                    f"step {info.step}/{info.steps}  {shown}  lr {info.lr:.2e}  "
                    f"{info.tokens / max(info.seconds, 1e-9):,.0f} tokens/s  eta {eta:.0f} s",
                    True,
                )

        return on_step

    def _finish(self, result: Any, teacher: dict[str, Any] | None) -> HealedCheckpoint:
        """The healing record (what ran, on what data, from which command), saved with the checkpoint."""
        record = {
            **result.record,
            "data": self.meta.data,
            "model": self.s.model,
            "resumed_from_step": result.resumed_from or None,
            "command": self.argv,
        }
        if teacher is not None:
            record["teacher"] = teacher
        if self.pruned_from is not None:
            record["pruned_from"] = self.pruned_from
        self._zeros(result.loaded, record)
        self.meta.files = _save(result.loaded, self.out, self.selection, record)
        healed = result.loaded
        return HealedCheckpoint(record=record, n_layers=healed.n_layers, dropped=list(healed.dropped))

    def _zeros(self, healed: Any, record: dict[str, Any]) -> None:
        """A sparse model's zeros before and after healing, counted (a merged LoRA update or full training
        fills them), into the healing record and the compression record; said in one line."""
        from layerprobe.prune.size import count_size, recount

        comp = healed.extra.get("compression")
        if not isinstance(comp, dict) or comp.get("kind") not in ("unstructured", "semi-structured"):
            return
        before, after = count_size(self.pruned), count_size(healed)
        zeros_before = before.linear_weights - before.nonzero_linear_weights
        zeros_after = after.linear_weights - after.nonzero_linear_weights
        record["zeros"] = {"before": zeros_before, "after": zeros_after, "linear_weights": after.linear_weights}
        healed.extra = {**healed.extra, "compression": recount(healed, comp, "after healing")}
        kept = "the zeros survive" if zeros_after >= zeros_before else "the zeros do not survive: healing filled them"
        self.log(
            f"{comp.get('method')} sparsity: {zeros_before:,} zero weights before healing, {zeros_after:,} after ({kept}; "
            "recorded in layerprobe.json)"
        )

    def _work_rl(self) -> HealedCheckpoint:
        """GRPO: the prompts (with their gold answers) are written once, then TRL's trainer runs."""
        from layerprobe.prune.grpo import PromptExample, prompts_sha1
        from layerprobe.prune.grpo import grpo as run_grpo

        cfg, out = self.s.cfg, self.out
        cached = out / STATE_DIR / DATA_FILE
        if cached.is_file() and self.meta.data:
            prompts = [
                PromptExample(**json.loads(line)) for line in cached.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        else:
            prompts = self.plan.examples or []
            lines = "".join(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n" for e in prompts)
            write_text_atomic(cached, lines)
            self.meta.data = dict(self.plan.record, sha1=prompts_sha1(prompts))
            self._write("running")
        on_step = self._step_reporter("reward", lambda info: info.reward)
        result = self._train(
            lambda: run_grpo(
                self.pruned,
                prompts,
                cfg,
                fmt=self.plan.fmt,
                state_dir=out / STATE_DIR,
                on_step=on_step,
                should_stop=lambda: self.stop_requested,
            )
        )
        self.meta.rewards = [round(x, 6) for x in result.losses]
        return self._finish(result, None)

    def close(self, status: str) -> None:
        if self.state == "done":
            return
        from layerprobe.prune.grpo import WORK_DIR

        trained = (self.out / STATE_DIR / "state.pt").is_file() or any((self.out / STATE_DIR / WORK_DIR).glob("checkpoint-*"))
        if self.refused and self.state == "new" and not trained:
            clear(self.out)  # bad input found late: leave nothing that would hold the corrected command back
            return
        self._write(status)
        if status == "complete":
            (self.out / STATE_DIR / "state.pt").unlink(missing_ok=True)
            shutil.rmtree(self.out / STATE_DIR / WORK_DIR, ignore_errors=True)  # GRPO's trainer checkpoints

    def cleanup(self) -> None:
        import torch

        torch.set_num_threads(self._threads)


def read_heal_file(out: Path) -> HealFile | None:
    """OUT/.heal/heal.json, or None when it is missing or unreadable."""
    path = out / STATE_DIR / HEAL_FILE
    try:
        return HealFile.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def check_out(out: Path, settings: dict[str, Any], model: str, force: bool) -> str:
    """'new', 'resume' or 'done' for --out; UserError (nothing written) when it cannot be used."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if Path(model).expanduser().exists() and out.exists() and out.resolve() == Path(model).expanduser().resolve():
        raise UserError(f"--out {out} is the --model directory itself; choose another --out")
    check_writable(out, "--out")
    entries = {p.name for p in out.iterdir()} - LOCK_FILES if out.is_dir() else set()
    meta_path = out / STATE_DIR / HEAL_FILE
    if not entries or (not meta_path.is_file() and entries <= {STATE_DIR}):
        return "new"  # empty, or a run stopped before it wrote its settings
    if not meta_path.is_file():
        raise UserError(f"--out {out} is a non-empty directory that is not a layerprobe heal output; choose another --out")
    old = read_heal_file(out)
    if old is None:
        if not force:
            raise UserError(f"{meta_path} is unreadable; pass --force to start afresh in {out}")
        return "new"
    diff = settings_differences(old.settings, json.loads(json.dumps(settings)), MAY_DIFFER)
    if diff:
        if not force:
            raise UserError(
                f"--out {out} holds a healing run with different settings ({', '.join(diff)}); "
                "use another --out, or --force to start afresh"
            )
        return "new"
    if old.status == "complete" and (out / "layerprobe.json").is_file():
        return "done"
    return "resume"


def clear(out: Path) -> None:
    """Remove what an earlier healing run wrote in `out` (its checkpoint files and state)."""
    old = read_heal_file(out)
    for name in ["layerprobe.json", *(old.files if old is not None else [])]:
        p = out / Path(name).name
        if p.is_file():
            p.unlink()
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


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


def summary(h: dict[str, Any]) -> str:
    """One line: how, steps, data, losses and speed of a healing record."""
    data = h.get("data") or {}
    if data.get("kind") == "prompts":
        on = f"{data.get('task')} prompts" if data.get("task") else Path(str(data.get("path", "a file"))).name
    else:
        on = "base traces" if data.get("kind") == "traces" else Path(str(data.get("path", "a file"))).name
    parts = [f"{h.get('how')}, {h.get('steps')} steps on {on}"]
    if h.get("loss") == "reward":
        if h.get("first_reward") is not None and h.get("final_reward") is not None:
            parts.append(f"reward {h['first_reward']:.3f} -> {h['final_reward']:.3f}")
        if h.get("tokens_per_s"):
            parts.append(
                f"{h.get('tokens_generated', 0):,} tokens generated + {h.get('tokens_trained', 0):,} trained in "
                f"{h.get('seconds')} s ({h['tokens_per_s']:,.0f} tokens/s)"
            )
        return "; ".join(parts)
    if h.get("first_loss") is not None and h.get("final_loss") is not None:
        parts.append(f"{'KL' if h.get('loss') == 'kl' else 'loss'} {h['first_loss']:.4f} -> {h['final_loss']:.4f}")
    if h.get("tokens_per_s"):
        parts.append(f"{h.get('tokens_seen', 0):,} tokens in {h.get('seconds')} s ({h['tokens_per_s']:,.0f} tokens/s)")
    return "; ".join(parts)
