"""Healing a pruned model by reinforcement learning on a verifiable reward: GRPO through TRL's
`GRPOTrainer` (docs/heal.md#grpo).

The policy is a copy of the pruned model (LoRA adapters or every weight, as for the other methods);
for each prompt it samples a group of completions, layerprobe's own grader scores each one (1 when
the answer after the thinking is right in the task's format, optionally plus a format reward), and
the policy moves towards the completions that beat their group's mean. TRL is imported here only,
inside the functions, so the base install works without the `heal` extra.

Resumable like the other methods: the trainer's checkpoints (weights, optimizer, scheduler, RNG
states, log) are kept in `state_dir/grpo/`, and a later call with the same configuration continues
from the last one. Generation happens at the start of each optimizer step and the RNG states are
restored with the checkpoint, so a resumed run samples the same completions as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe._io import NOT_JSON, TOO_LONG, iter_json_lines, write_text_atomic
from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.heal import HealConfig, HealResult, HealStopped, StepInfo, merged, rows_sha1, trainable_copy
from layerprobe.rules import MAX_LINE_BYTES, clean_text

#: Answer types a prompt file may name (the grader's; multiple choice needs its choices, so it is not offered).
FILE_ANSWER_TYPES = ("digit", "integer", "math")
WORK_DIR = "grpo"
FINGERPRINT_FILE = "fingerprint.json"
#: Steps whose mean reward is reported as the first and the final reward.
REWARD_WINDOW = 10
#: Seconds between saved checkpoints when no step interval is given (as for the other methods).
SAVE_SECONDS = 120.0
REWARD_DEFINITION = (
    "correct: 1 when the answer after the thinking is the gold answer in the task's format (layerprobe's grader, "
    "tasks.grading.grade_trace; a completion whose thinking never ended scores 0), else 0"
)
FORMAT_DEFINITION = "format: 1 when the thinking ended and the answer part holds an answer in the task's format, else 0"


@dataclass(frozen=True)
class PromptExample:
    """One prompt to reward: the prompt as the model sees it (chat template and thinking opener applied)
    and the gold answer the grader compares with."""

    prompt: str
    gold: str
    answer_type: str
    """The grader's answer type: digit (toy), integer, math."""
    group: str = ""
    id: str = ""


def prompts_sha1(prompts: Sequence[PromptExample]) -> str:
    """SHA-1 of the prompts and their gold answers, as the policy sees them."""
    return rows_sha1([p.prompt, p.gold, p.answer_type] for p in prompts)


def trl_available() -> bool:
    """Whether TRL (the `heal` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def read_jsonl_prompts(path: str | Path) -> list[tuple[str, str, str]]:
    """(prompt, answer, answer_type) of a JSONL file, one {"prompt", "answer"[, "answer_type"]} object per
    line (answer_type digit, integer or math; default math); UserError for a missing, empty or unreadable
    file, or a line that is not such an object."""
    p = Path(path)
    expected = 'give a JSONL file of {"prompt", "answer"} objects, or \'traces\' (the task\'s prompts)'
    if not p.is_file():
        raise UserError(f"--data {p}: {'not a file' if p.exists() else 'not found (no such file)'}; {expected}")
    try:
        lines = list(iter_json_lines(p))
    except OSError as exc:
        raise UserError(f"--data {p}: cannot be read ({exc.strerror or exc})") from None
    out: list[tuple[str, str, str]] = []
    for n, obj in lines:
        if obj == TOO_LONG:
            raise UserError(f"--data {p}: line {n} is over {MAX_LINE_BYTES // 2**20} MiB")
        if obj == NOT_JSON:
            raise UserError(f"--data {p}: line {n} is not JSON (or not UTF-8 text)")
        if not isinstance(obj, dict):
            raise UserError(f'--data {p}: line {n} is not a JSON object with "prompt" and "answer"')
        prompt, answer, kind = obj.get("prompt"), obj.get("answer"), obj.get("answer_type", "math")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f'--data {p}: line {n} has no "prompt" string')
        if isinstance(answer, bool) or not isinstance(answer, (str, int)) or not str(answer).strip():
            raise UserError(f'--data {p}: line {n} has no "answer" (the gold answer the reward compares with)')
        if kind not in FILE_ANSWER_TYPES:
            raise UserError(f"--data {p}: line {n}: answer_type {kind!r} (valid: {', '.join(FILE_ANSWER_TYPES)})")
        out.append((clean_text(prompt), clean_text(str(answer)).strip(), kind))
    if not out:
        raise UserError(f'--data {p}: the file is empty (expected one {{"prompt", "answer"}} object per line)')
    return out


@dataclass(frozen=True)
class PolicySampling:
    """How the policy samples its completions."""

    temperature: float
    top_p: float
    top_k: int
    max_completion: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sampling_for(cfg: HealConfig, fmt: Any, is_toy: bool) -> PolicySampling:
    """The sampling of a GRPO run: --temperature, else the reasoning format's (1.0 for a greedy format, which
    would give a group of identical completions), its top-p / top-k, and --max-completion."""
    s = fmt.sampling
    greedy = s.temperature <= 0
    temperature = cfg.temperature if cfg.temperature is not None else (1.0 if greedy else s.temperature)
    return PolicySampling(
        temperature=float(temperature),
        top_p=1.0 if greedy else float(s.top_p),
        top_k=0 if greedy else int(s.top_k),
        max_completion=cfg.max_completion or (160 if is_toy else 4160),
    )


def fit_context(
    tokenizer: Any, prompts: Sequence[PromptExample], max_completion: int, context: int | None
) -> list[PromptExample]:
    """The prompts that leave room in the model's `context` positions for a whole completion (prompt tokens
    + `max_completion` <= context); a longer one could only be cut or run the model past its positions
    (None: the context is unknown, every prompt is kept)."""
    if not context:
        return list(prompts)
    room = context - max_completion
    return [p for p in prompts if room > 0 and len(tokenizer.encode(p.prompt, add_special_tokens=False)) <= room]


class _Rewards:
    """The reward functions TRL calls once per generated batch: correctness (weight 1) and, with a weight,
    format. Completions are decoded with their special tokens (the toy's </think> is one) and split by
    the reasoning format, then graded as `analyze` grades a trace. Counts the tokens generated."""

    def __init__(self, tokenizer: Any, fmt_name: str) -> None:
        self.tok = tokenizer
        self.fmt = fmt_name
        self.grader: Any = None
        self.generated = 0

    def _grades(self, completion_ids: list[list[int]], gold: list[str], answer_type: list[str]) -> list[tuple[bool, bool]]:
        from layerprobe.scaling.traces import parse_trace
        from layerprobe.tasks.grading import MathGrader, grade_trace

        out = []
        texts = self.tok.batch_decode(completion_ids, skip_special_tokens=False)
        for text, g, kind in zip(texts, gold, answer_type):
            parsed = parse_trace(self.fmt, text)
            if kind == "math" and self.grader is None:
                self.grader = MathGrader()
            grade = grade_trace(kind, g, parsed.answer, parsed.thinking, self.grader, truncated=not parsed.ended)
            formatted = parsed.ended and bool(parsed.answer) and grade.extracted is not None and grade.rule is not None
            out.append((bool(grade.correct), formatted))
        return out

    def correct(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[float]:
        self.generated += sum(len(ids) for ids in completion_ids)
        return [1.0 if c else 0.0 for c, _ in self._grades(completion_ids, kw["gold"], kw["answer_type"])]

    def format(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[float]:
        return [1.0 if f else 0.0 for _, f in self._grades(completion_ids, kw["gold"], kw["answer_type"])]

    def close(self) -> None:
        if self.grader is not None:
            self.grader.close()
            self.grader = None


def _last_checkpoint(work: Path) -> Path | None:
    found = [(int(p.name.split("-")[-1]), p) for p in work.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    found = [(n, p) for n, p in found if (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def grpo(
    student: LoadedModel,
    prompts: Sequence[PromptExample],
    cfg: HealConfig,
    *,
    fmt: Any,
    state_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HealResult:
    """Train a copy of `student` by GRPO on `prompts` as `cfg` says and return it healed (a plain
    transformers model, LoRA merged). With `state_dir`, checkpoints are kept there and a saved run of the
    same configuration is resumed. When `should_stop()` turns true, the step ends, a checkpoint is saved
    and HealStopped is raised."""
    cfg.check()
    if not cfg.is_rl:
        raise ValueError(f"--how {cfg.how} is not reinforcement learning: prune.heal.heal trains it")
    if not prompts:
        raise UserError("no prompts to reward")
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    samp = sampling_for(cfg, fmt, student.is_toy)
    fingerprint = {**cfg.to_json(), "sampling": samp.to_json(), "format": fmt.name, "prompts": prompts_sha1(prompts)}
    tmp = None
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="layerprobe-grpo-")
        work = Path(tmp)
    else:
        work = Path(state_dir) / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    fp_path = work / FINGERPRINT_FILE
    resume = _last_checkpoint(work)
    if resume is not None:
        try:
            old = json.loads(fp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(fingerprint)):
            raise UserError(f"{work} was saved by a different healing run; remove it or use another --out")
    write_text_atomic(fp_path, json.dumps(fingerprint, indent=2) + "\n")

    tok = copy.deepcopy(student.tokenizer)  # TRL may set a pad token: the student's own tokenizer is left alone
    device = student.device
    model = trainable_copy(student, cfg)
    rewards = _Rewards(tok, fmt.name)
    funcs: list[Any] = [rewards.correct]
    weights = [1.0]
    if cfg.format_reward > 0:
        funcs.append(rewards.format)
        weights.append(cfg.format_reward)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames gradient_checkpointing
        args = _config(GRPOConfig, work, cfg, samp, weights, device)
    dataset = Dataset.from_list(
        [{"prompt": p.prompt, "gold": p.gold, "answer_type": p.answer_type, "group": p.group} for p in prompts]
    )

    run = {"seconds": 0.0, "t0": time.perf_counter(), "last_save": time.monotonic(), "stopped": False}

    class _Hook(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            last = next((e for e in reversed(state.log_history) if "tokens_generated" in e), None)
            if last is not None:  # resumed: counts and time of the earlier sessions
                rewards.generated = int(last["tokens_generated"])
                run["seconds"] = float(last["seconds_total"])
            run["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if should_stop is not None and should_stop() and state.global_step < cfg.steps:
                control.should_save = True
                control.should_training_stop = True
                run["stopped"] = True
            elif not cfg.save_every and time.monotonic() - run["last_save"] >= SAVE_SECONDS and state.global_step < cfg.steps:
                control.should_save = True
                run["last_save"] = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "reward" not in logs or not state.log_history:
                return
            loss = float(logs.get("loss", 0.0))
            if not math.isfinite(loss):
                raise UserError(
                    f"healing diverged: the loss is {loss} at step {state.global_step}; lower --lr (it is {cfg.peak_lr:g})"
                )
            now = time.perf_counter()
            run["seconds"] += now - run["t0"]
            run["t0"] = now
            entry = state.log_history[-1]  # what the checkpoint saves: counts and time survive a resume
            entry["tokens_generated"] = rewards.generated
            entry["seconds_total"] = round(run["seconds"], 3)
            if on_step is not None:
                on_step(
                    StepInfo(
                        state.global_step,
                        cfg.steps,
                        loss,
                        float(logs.get("learning_rate", 0.0)),
                        rewards.generated + int(state.num_input_tokens_seen),  # generated + trained
                        run["seconds"],
                        reward=float(logs["reward"]),
                    )
                )

    import contextlib
    import unittest.mock

    reference: Any = contextlib.nullcontext()
    if cfg.kl > 0 and cfg.params == "full":
        # TRL builds the KL reference of a full model by loading the policy's checkpoint path again, which for
        # a pruned model in memory is the unpruned model: give it a copy of the model healing starts from
        ref = copy.deepcopy(student.model).eval()
        reference = unittest.mock.patch.object(trl.trainer.grpo_trainer, "create_model_from_path", lambda *a, **k: ref)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # the shards of every checkpoint
    try:
        with reference, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecation notices of transformers' own names
            warnings.simplefilter("ignore", UserWarning)
            trainer = GRPOTrainer(
                model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tok, callbacks=[_Hook()]
            )
            for cb in (PrinterCallback, ProgressCallback):  # layerprobe draws its own progress
                trainer.remove_callback(cb)
            trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
        rewards.close()
    if run["stopped"]:
        step = int(trainer.state.global_step)
        del trainer
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise HealStopped(step)

    log = [e for e in trainer.state.log_history if "reward" in e]
    rewards_per_step = [float(e["reward"]) for e in log]
    trained = trainer.accelerator.unwrap_model(trainer.model)
    healed_model = _plain_copy(student, merged(trained, cfg))
    healed = dataclasses.replace(student, model=healed_model, extra=dict(student.extra))
    window = min(REWARD_WINDOW, max(1, len(rewards_per_step) // 2))
    tokens_trained = int(trainer.state.num_input_tokens_seen)
    generated = int(log[-1].get("tokens_generated", rewards.generated)) if log else rewards.generated
    seconds = float(log[-1].get("seconds_total", run["seconds"])) if log else run["seconds"]
    completions = cfg.steps * cfg.batch_size * cfg.grad_accum

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    kls = [float(e["kl"]) for e in log if "kl" in e]
    record: dict[str, Any] = {
        **cfg.to_json(),
        "algorithm": "GRPO (TRL GRPOTrainer)",
        "reward": {
            "definition": REWARD_DEFINITION
            + (f"; plus {cfg.format_reward:g} x {FORMAT_DEFINITION}" if cfg.format_reward else ""),
            "correct_weight": 1.0,
            "format_weight": cfg.format_reward,
            "format": fmt.name,
        },
        "sampling": samp.to_json(),
        "loss_type": args.loss_type,
        "scale_rewards": args.scale_rewards,
        "epsilon": args.epsilon,
        "num_iterations": args.num_iterations,
        "prompts": len(prompts),
        "groups": completions // cfg.group_size,
        "completions": completions,
        "first_reward": mean(rewards_per_step[:window]),
        "final_reward": mean(rewards_per_step[-window:]),
        "reward_window_steps": window,
        "first_kl": mean(kls[:window]) if cfg.kl > 0 else None,
        "final_kl": mean(kls[-window:]) if cfg.kl > 0 else None,
        "mean_completion_length": round(generated / completions, 2) if completions else None,
        "tokens_generated": generated,
        "tokens_trained": tokens_trained,
        "tokens_seen": generated + tokens_trained,
        "seconds": round(seconds, 2),
        "tokens_per_s": round((generated + tokens_trained) / seconds, 1) if seconds > 0 else None,
        "device": str(device),
        "dtype": str(student.dtype).removeprefix("torch."),
        "trl": trl.__version__,
    }
    if cfg.params == "lora":
        import peft

        record["peft"] = peft.__version__
    resumed_from = int(resume.name.split("-")[-1]) if resume is not None else 0
    del trainer
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return HealResult(healed, record, resumed_from, rewards_per_step)


def _config(GRPOConfig: Any, work: Path, cfg: HealConfig, samp: PolicySampling, weights: list[float], device: Any) -> Any:
    """TRL's GRPOConfig of a healing run: one generation per optimizer step (batch_size x grad_accum
    completions), no dropout, no gradient checkpointing, a log entry per step, nothing reported anywhere."""
    return GRPOConfig(
        output_dir=str(work),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.group_size,
        beta=cfg.kl,
        temperature=samp.temperature,
        top_p=samp.top_p,
        top_k=samp.top_k,
        max_completion_length=samp.max_completion,
        learning_rate=cfg.peak_lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        adam_beta1=0.9,
        adam_beta2=0.999,
        seed=cfg.seed,
        data_seed=cfg.seed,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or cfg.steps,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        disable_dropout=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        log_completions=False,
    )


def _plain_copy(student: LoadedModel, trained: Any) -> Any:
    """A fresh copy of the student's model holding the trained weights: TRL patches the forward of the
    model it trains (a fused LM head), and the checkpoint must be the plain model."""
    fresh = copy.deepcopy(student.model)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    for p in fresh.parameters():
        p.requires_grad_(False)
    return fresh.eval()


def cleanup(state_dir: str | Path) -> None:
    """Remove the trainer's checkpoints of a finished run."""
    shutil.rmtree(Path(state_dir) / WORK_DIR, ignore_errors=True)
