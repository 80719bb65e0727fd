"""Healing a pruned model: LoRA, full fine-tuning or distillation from the base model on
(prompt, completion) pairs, with the loss on the completion tokens only (docs/heal.md).

`heal` trains a copy of the pruned model (the model passed in, which usually shares its weights
with the base model, is never changed) and returns the healed model as a plain transformers model
(LoRA adapters merged into the weights). Training is resumable: with a `state_dir`, the trainable
weights and the optimizer state are saved there every so often, and a later call with the same
configuration continues from the last saved step. The batches of a step depend only on the seed
and the step (per-epoch permutations), and no dropout is used, so a resumed run follows the same
path as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from layerprobe._io import NOT_JSON, TOO_LONG, iter_json_lines, write_atomic
from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.rules import MAX_LINE_BYTES

#: --how: what is trained (LoRA adapters or every weight) and against what (the data's next tokens,
#: or the base model's next-token distributions).
HOWS: dict[str, tuple[str, str]] = {
    "lora": ("lora", "nll"),
    "full": ("full", "nll"),
    "distill": ("lora", "kl"),
    "distill-full": ("full", "kl"),
    "grpo": ("lora", "reward"),
    "grpo-full": ("full", "reward"),
}
#: Methods trained by reinforcement learning on a verifiable reward (prune/grpo.py, TRL's GRPOTrainer).
RL_HOWS = frozenset(h for h, (_, loss) in HOWS.items() if loss == "reward")
#: The linear projections of a decoder layer in the supported families (Qwen2/3, Llama, Mistral).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATE_FILE = "state.pt"
#: Seconds between saved training states when no step interval is given.
SAVE_SECONDS = 120.0
#: Steps whose mean training loss is reported as the first and the final loss.
LOSS_WINDOW = 10


class HealStopped(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving its state at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped after step {step}")
        self.step = step


@dataclass(frozen=True)
class Example:
    """One training sequence: the prompt as the model sees it (chat template and thinking opener
    already applied) and the completion the loss is computed on."""

    prompt: str
    completion: str
    eos: bool = False
    """Append the tokenizer's EOS token after the completion (unless it already ends with it)."""


MAX_STEPS = 10_000_000
MAX_BATCH = 4096
"""Most sequences per micro-batch (and micro-batches per step): a bound checked before any work."""
MIN_TEMPERATURE = 0.01
"""Lowest GRPO sampling temperature: the logits are divided by it (1e-45 makes them infinite, and the
sampler fails), and far below it every completion of a group is the greedy one (no advantage to learn)."""


@dataclass(frozen=True)
class HealConfig:
    """How to heal: the method and every training hyper-parameter."""

    how: str = "lora"
    steps: int = 300
    lr: float | None = None
    """Peak learning rate (default 1e-4 for LoRA adapters, 1e-5 for full fine-tuning)."""
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    warmup: int | None = None
    """Linear warm-up steps before the cosine decay (default: a tenth of the steps, at least 1)."""
    rank: int = 16
    alpha: int = 32
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    max_len: int = 2048
    """Sequences (prompt + completion) are cut to this many tokens."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int | None = None
    """Save the training state every N steps (default: every SAVE_SECONDS seconds)."""
    group_size: int = 8
    """GRPO: completions sampled per prompt (a group; advantages are relative to the group's mean reward)."""
    kl: float = 0.0
    """GRPO: coefficient of the KL penalty to the model healing starts from (TRL's beta)."""
    temperature: float | None = None
    """GRPO: sampling temperature (default: the reasoning format's, 1.0 for a greedy format)."""
    max_completion: int | None = None
    """GRPO: most tokens sampled per completion (default 160 for the toy, 4,160 otherwise)."""
    format_reward: float = 0.0
    """GRPO: weight of the format reward (thinking ended and an answer in the task's format), added to
    the correctness reward (weight 1)."""

    @property
    def params(self) -> str:
        """'lora' (adapters on the target modules) or 'full' (every weight)."""
        return HOWS[self.how][0]

    @property
    def loss(self) -> str:
        """'nll' (next-token loss on the data) or 'kl' (KL(base || student) along the data)."""
        return HOWS[self.how][1]

    @property
    def is_rl(self) -> bool:
        """Reinforcement learning on a verifiable reward (GRPO) rather than a loss on given sequences."""
        return self.loss == "reward"

    @property
    def peak_lr(self) -> float:
        """The learning rate at the end of the warm-up."""
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.params == "lora" else 1e-5

    @property
    def warmup_steps(self) -> int:
        """Steps of linear warm-up."""
        if self.warmup is not None:
            return self.warmup
        return max(1, round(self.steps / 10))

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up to the peak, then cosine to 0."""
        w = self.warmup_steps
        if step < w:
            return self.peak_lr * (step + 1) / w
        progress = (step - w) / max(1, self.steps - w)
        return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def check(self) -> None:
        """Reject settings that cannot be right (UserError naming the flag)."""
        if self.how not in HOWS:
            raise UserError(f"--how {self.how}: unknown (valid: {', '.join(HOWS)})")
        if not 1 <= self.steps <= MAX_STEPS:
            raise UserError(f"--steps {self.steps}: give 1 to {MAX_STEPS:,}")
        if self.lr is not None and not (0 < self.lr <= 1 and math.isfinite(self.lr)):
            raise UserError(f"--lr {self.lr}: must be a learning rate in (0, 1]")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UserError(f"--batch-size {self.batch_size}: give 1 to {MAX_BATCH:,} sequences per micro-batch")
        if not 1 <= self.grad_accum <= MAX_BATCH:
            raise UserError(f"--grad-accum {self.grad_accum}: give 1 to {MAX_BATCH:,} micro-batches per step")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed {self.seed}: give 0 to 2**63 - 1")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise UserError(f"--warmup {self.warmup}: must be between 0 and --steps ({self.steps})")
        if self.rank < 1:
            raise UserError(f"--rank {self.rank}: must be at least 1")
        if self.alpha < 1:
            raise UserError(f"--alpha {self.alpha}: must be at least 1")
        if not self.target_modules or any(not t.strip() for t in self.target_modules):
            raise UserError("--target-modules: give module names such as q_proj,v_proj")
        if not 2 <= self.max_len <= 2**20:
            raise UserError(f"--max-len {self.max_len}: give 2 to {2**20:,} tokens")
        if self.save_every is not None and self.save_every < 1:
            raise UserError(f"--save-every {self.save_every}: must be at least 1")
        if self.is_rl:
            if not 2 <= self.group_size <= MAX_BATCH:
                raise UserError(
                    f"--group-size {self.group_size}: give 2 to {MAX_BATCH:,} completions per prompt "
                    "(GRPO compares the completions of a prompt with each other)"
                )
            per_step = self.batch_size * self.grad_accum
            if per_step % self.group_size:
                raise UserError(
                    f"--group-size {self.group_size} does not divide the {per_step} completions of a step "
                    f"(--batch-size {self.batch_size} x --grad-accum {self.grad_accum}); a step holds whole groups"
                )
            if not (0 <= self.kl <= 1e3 and math.isfinite(self.kl)):
                raise UserError(f"--kl {self.kl}: must be a coefficient from 0 to 1,000")
            if self.temperature is not None and not (
                MIN_TEMPERATURE <= self.temperature <= 100 and math.isfinite(self.temperature)
            ):
                raise UserError(
                    f"--temperature {self.temperature}: give {MIN_TEMPERATURE} to 100 (GRPO samples; below {MIN_TEMPERATURE} the "
                    "logits divided by it overflow, and a group's completions would all be the same)"
                )
            if self.max_completion is not None and not 1 <= self.max_completion <= 2**20:
                raise UserError(f"--max-completion {self.max_completion}: give 1 to {2**20:,} tokens")
            if not (0 <= self.format_reward <= 1e3 and math.isfinite(self.format_reward)):
                raise UserError(f"--format-reward {self.format_reward}: must be a weight from 0 to 1,000")

    def to_json(self) -> dict[str, Any]:
        """The settings that determine the training, as stored (a resumed run must match them)."""
        out: dict[str, Any] = {
            "how": self.how,
            "params": self.params,
            "loss": self.loss,
            "steps": self.steps,
            "lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "schedule": "linear warm-up, cosine decay to 0",
            "optimizer": "AdamW (0.9, 0.999)",
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "seed": self.seed,
        }
        if self.is_rl:
            out["schedule"] = "linear warm-up from 0, cosine decay to 0 (transformers' cosine schedule)"
            out["grpo"] = {
                "group_size": self.group_size,
                "kl": self.kl,
                "temperature": self.temperature,
                "max_completion": self.max_completion,
                "format_reward": self.format_reward,
            }
        else:
            out["max_len"] = self.max_len
        if self.params == "lora":
            out["lora"] = {"rank": self.rank, "alpha": self.alpha, "dropout": 0.0, "target_modules": list(self.target_modules)}
        return out


@dataclass
class StepInfo:
    """What one finished optimizer step reports to the progress display."""

    step: int
    """Steps done (1-based)."""
    steps: int
    loss: float
    """Mean loss per completion token of this step (nats)."""
    lr: float
    tokens: int
    """Tokens fed to the student so far (prompt and completion, no padding)."""
    seconds: float
    """Training time so far, all sessions."""
    reward: float | None = None
    """GRPO: mean reward of this step's completions (`loss` is then TRL's policy loss)."""


@dataclass
class HealResult:
    """The healed model and the numbers of its training."""

    loaded: LoadedModel
    """The healed model: a plain transformers model (LoRA merged), in eval mode."""
    record: dict[str, Any]
    """Settings and results for layerprobe.json's `healing` (the caller adds the data's description)."""
    resumed_from: int
    """Step the run continued from (0: a fresh start)."""
    losses: list[float]
    """Training loss of every step (all sessions)."""


# ------------------------------------------------------------------------------------------- data


def read_jsonl_examples(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of a JSONL file, one {"prompt", "completion"} object per line
    (blank lines skipped; lone surrogates replaced); UserError for a missing, empty or unreadable
    file, or a line that is not JSON, over rules.MAX_LINE_BYTES, or without a non-empty completion."""
    p = Path(path)
    expected = 'give a JSONL file of {"prompt", "completion"} objects, or \'traces\''
    if not p.is_file():
        raise UserError(
            f"--data {p}: {'not a file' if p.exists() else 'not found (no such file'}; {expected}{'' if p.exists() else ')'}"
        )
    out: list[tuple[str, str]] = []
    try:
        lines = list(iter_json_lines(p))
    except OSError as exc:
        raise UserError(f"--data {p}: cannot be read ({exc.strerror or exc})") from None
    for n, obj in lines:
        if obj == TOO_LONG:
            raise UserError(
                f"--data {p}: line {n} is over {MAX_LINE_BYTES // 2**20} MiB (a training example that long would not fit)"
            )
        if obj == NOT_JSON:
            raise UserError(f"--data {p}: line {n} is not JSON (or not UTF-8 text)")
        if not isinstance(obj, dict):
            raise UserError(f'--data {p}: line {n} is not a JSON object with "prompt" and "completion"')
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str):
            raise UserError(f'--data {p}: line {n} has no "prompt" string')
        if not isinstance(completion, str) or not completion.strip():
            raise UserError(f'--data {p}: line {n} has no completion (a non-empty "completion" string)')
        out.append((prompt, completion))
    if not out:
        raise UserError(f'--data {p}: the file is empty (expected one {{"prompt", "completion"}} object per line)')
    return out


def rows_sha1(rows: Iterable[Sequence[Any]]) -> str:
    """SHA-1 of rows of JSON values, one JSON array and a newline per row (what a healing run learns from)."""
    h = hashlib.sha1()
    for row in rows:
        h.update(json.dumps(list(row), ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def examples_sha1(examples: Sequence[Example]) -> str:
    """SHA-1 of the training sequences (prompts and completions as the model sees them)."""
    return rows_sha1([e.prompt, e.completion, e.eos] for e in examples)


def base_traces(
    base: LoadedModel,
    problems: Sequence[tuple[str, str]],
    fmt: Any,
    *,
    budget: int,
    answer_max: int,
    seed: int = 0,
    batch_size: int = 16,
    on_trace: Callable[[int, int], None] | None = None,
) -> list[Example]:
    """The base model's own reasoning traces on (problem id, question) pairs, one per problem,
    sampled as the reasoning format recommends with a seed per problem; each becomes an Example
    (the prompt `analyze` would use, and everything the model wrote after it)."""
    from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt, derive_seed

    tok = base.tokenizer
    gen = TraceGenerator(base.model, tok, fmt)
    requests = [
        GenRequest(key=i, prompt=build_prompt(tok, fmt, q), budget=budget, seed=derive_seed(seed, pid, 0), answer_max=answer_max)
        for i, (pid, q) in enumerate(problems)
    ]
    out: dict[int, Example] = {}
    for _, res in gen.iter_generate(requests, batch_size=batch_size):
        out[res.key] = Example(requests[res.key].prompt, res.text)
        if on_trace is not None:
            on_trace(len(out), len(requests))
    return [out[i] for i in range(len(requests))]


@dataclass
class _Tokenized:
    ids: list[list[int]]
    n_prompt: list[int]
    truncated: int
    dropped: int


def _tokenize(tokenizer: Any, examples: Sequence[Example], max_len: int) -> _Tokenized:
    eos = tokenizer.eos_token_id
    ids: list[list[int]] = []
    n_prompt: list[int] = []
    truncated = dropped = 0
    for e in examples:
        p = tokenizer.encode(e.prompt, add_special_tokens=False)
        c = tokenizer.encode(e.completion, add_special_tokens=False)
        if e.eos and eos is not None and (not c or c[-1] != eos):
            c = [*c, eos]
        seq = p + c
        if len(seq) > max_len:
            truncated += 1
            seq = seq[:max_len]
        if len(p) >= len(seq) or not c:  # nothing of the completion is left to learn from
            dropped += 1
            continue
        ids.append(seq)
        n_prompt.append(len(p))
    return _Tokenized(ids, n_prompt, truncated, dropped)


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    """(B, T-1): position t is scored (it predicts token t+1, a completion token)."""


def _collate(data: _Tokenized, idx: Sequence[int], pad_id: int, device: torch.device) -> _Batch:
    width = max(len(data.ids[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(idx), width), dtype=torch.long)
    tgt = torch.zeros((len(idx), width - 1), dtype=torch.bool)
    for b, i in enumerate(idx):
        seq = data.ids[i]
        ids[b, : len(seq)] = torch.tensor(seq)
        att[b, : len(seq)] = 1
        tgt[b, data.n_prompt[i] - 1 : len(seq) - 1] = True
    return _Batch(ids.to(device), att.to(device), tgt.to(device))


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _micro_indices(n: int, batch_size: int, seed: int, micro: int) -> list[int]:
    """Example indices of micro-batch `micro` (0-based): consecutive slices of a stream of per-epoch
    permutations, so they depend only on (seed, micro)."""
    start = micro * batch_size
    out: list[int] = []
    epoch, pos = divmod(start, n)
    order = _epoch_order(n, seed, epoch)
    while len(out) < batch_size:
        if pos >= n:
            epoch, pos = epoch + 1, 0
            order = _epoch_order(n, seed, epoch)
        take = min(batch_size - len(out), n - pos)
        out += order[pos : pos + take]
        pos += take
    return out


def _loss_sum(logits: torch.Tensor, batch: _Batch, teacher_logits: torch.Tensor | None) -> torch.Tensor:
    """Summed loss over the scored positions: next-token NLL, or KL(teacher || student)."""
    mask = batch.target_mask
    student = logits[:, :-1][mask].float()
    if teacher_logits is None:
        targets = batch.input_ids[:, 1:][mask]
        return F.cross_entropy(student, targets, reduction="sum")
    teacher = teacher_logits[:, :-1][mask].float()
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="sum")


# ------------------------------------------------------------------------------------------ model


def peft_available() -> bool:
    """Whether peft (the `heal` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("peft") is not None


def check_lora_targets(model: Any, cfg: HealConfig) -> None:
    """UserError when LoRA is asked for and peft is missing or a target module name is not a linear
    module of `model` (checked before anything is written)."""
    if cfg.params != "lora":
        return
    if not peft_available():
        raise UserError(f"--how {cfg.how} trains LoRA adapters, which needs peft: pip install 'layerprobe[heal]'")
    linears = [(name.rsplit(".", 1)[-1], m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    linear = {n for n, _ in linears}
    missing = [t for t in cfg.target_modules if t not in linear]
    if missing:
        raise UserError(
            f"--target-modules: {', '.join(missing)} not found in this model (its linear modules: {', '.join(sorted(linear))})"
        )
    narrowest = min(min(m.in_features, m.out_features) for n, m in linears if n in cfg.target_modules)
    if cfg.rank > narrowest:
        raise UserError(
            f"--rank {cfg.rank}: the narrowest target module is {narrowest} wide, so a rank above {narrowest} adds nothing"
        )


def _add_lora(model: Any, cfg: HealConfig) -> Any:
    check_lora_targets(model, cfg)
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"
    )
    import warnings

    with warnings.catch_warnings():  # transformers' deprecation notice about a name peft still uses
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, conf)


def _same_vocab(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a.get_vocab() == b.get_vocab()


def _forward_logits(model: Any, batch: _Batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits


def trainable_copy(student: LoadedModel, cfg: HealConfig) -> Any:
    """A copy of the student's model ready to train (the student itself, which usually shares its
    weights with the base model, is not changed): LoRA adapters on the target modules (seeded by
    cfg.seed), or every weight trainable. In eval mode: no dropout anywhere, so a training step
    depends only on the weights and its batch."""
    torch.manual_seed(cfg.seed)  # LoRA's initial A matrices
    model = copy.deepcopy(student.model)
    if cfg.params == "lora":
        model = _add_lora(model, cfg)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    return model


def merged(model: Any, cfg: HealConfig) -> Any:
    """The plain transformers model of a trained copy: LoRA adapters merged into the weights
    (peft's merge_and_unload), nothing left trainable, eval mode."""
    if cfg.params == "lora":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------------------- training


def check_examples(tokenizer: Any, examples: Sequence[Example], max_len: int) -> None:
    """UserError when no example keeps a completion token within `max_len` (checked before anything is written)."""
    if not _tokenize(tokenizer, examples, max_len).ids:
        raise UserError(f"no training example keeps any completion token within --max-len {max_len}")


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    write_atomic(path, lambda fh: fh.write(data))


def heal(
    student: LoadedModel,
    examples: Sequence[Example],
    cfg: HealConfig,
    *,
    teacher: LoadedModel | None = None,
    state_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HealResult:
    """Train a copy of `student` on `examples` as `cfg` says and return it healed.

    `teacher` (the base model) is required for distillation. With `state_dir`, the training state
    is saved there (state.pt) and a saved state of the same configuration is resumed. When
    `should_stop()` turns true between steps, the state is saved and HealStopped is raised.
    """
    cfg.check()
    if cfg.is_rl:
        raise ValueError(f"--how {cfg.how} is reinforcement learning: prune.grpo.grpo trains it")
    if cfg.loss == "kl":
        if teacher is None:
            raise ValueError("distillation needs the teacher (the base model)")
        if not _same_vocab(student.tokenizer, teacher.tokenizer):
            raise UserError("the distillation teacher has a different tokenizer than the pruned model")
    if not examples:
        raise UserError("no training examples")
    tok = student.tokenizer
    data = _tokenize(tok, examples, cfg.max_len)
    if not data.ids:
        raise UserError(f"no training example keeps any completion token within --max-len {cfg.max_len}")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = student.device

    model = trainable_copy(student, cfg)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in named], lr=cfg.peak_lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    fingerprint = {**cfg.to_json(), "examples": examples_sha1(examples)}
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    start, tokens, completion_tokens, seconds = 0, 0, 0, 0.0
    losses: list[float] = []
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise UserError(f"{state_path} was saved by a different healing run; remove it or use another --out")
        params = dict(named)
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device))
        opt.load_state_dict(state["optimizer"])
        start, tokens, seconds = int(state["step"]), int(state["tokens"]), float(state["seconds"])
        completion_tokens, losses = int(state["completion_tokens"]), list(state["losses"])

    def save(step: int) -> None:
        if state_path is None:
            return
        _save_state(
            state_path,
            {
                "fingerprint": fingerprint,
                "step": step,
                "trainable": {n: p.detach().cpu().clone() for n, p in named},
                "optimizer": opt.state_dict(),
                "tokens": tokens,
                "completion_tokens": completion_tokens,
                "seconds": seconds,
                "losses": losses,
            },
        )

    if teacher is not None and cfg.loss == "kl":
        teacher.model.eval()
    n = len(data.ids)
    last_save = time.monotonic()
    for step in range(start, cfg.steps):
        if should_stop is not None and should_stop():
            save(step)
            raise HealStopped(step)
        t0 = time.perf_counter()
        lr = cfg.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        batches = [
            _collate(data, _micro_indices(n, cfg.batch_size, cfg.seed, step * cfg.grad_accum + a), pad_id, device)
            for a in range(cfg.grad_accum)
        ]
        n_targets = int(sum(int(b.target_mask.sum()) for b in batches))
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for b in batches:
            t_logits = None
            if cfg.loss == "kl":
                assert teacher is not None
                with torch.no_grad():
                    t_logits = _forward_logits(teacher.model, b)
            loss = _loss_sum(_forward_logits(model, b), b, t_logits)
            (loss / n_targets).backward()
            total += float(loss.detach())
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
        opt.step()
        tokens += int(sum(int(b.attention_mask.sum()) for b in batches))
        completion_tokens += n_targets
        seconds += time.perf_counter() - t0
        losses.append(total / n_targets)
        if not math.isfinite(losses[-1]):
            raise UserError(f"healing diverged: the loss is {losses[-1]} at step {step + 1}; lower --lr (it is {lr:g} there)")
        if on_step is not None:
            on_step(StepInfo(step + 1, cfg.steps, losses[-1], lr, tokens, seconds))
        due = (step + 1) % cfg.save_every == 0 if cfg.save_every else time.monotonic() - last_save >= SAVE_SECONDS
        if due and step + 1 < cfg.steps:
            save(step + 1)
            last_save = time.monotonic()

    model = merged(model, cfg)
    healed = dataclasses.replace(student, model=model, extra=dict(student.extra))
    window = min(LOSS_WINDOW, max(1, len(losses) // 2))  # first and last steps never overlap
    record = {
        **cfg.to_json(),
        "first_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
        "loss_window_steps": window,
        "examples": n,
        "examples_truncated": data.truncated,
        "examples_dropped": data.dropped,
        "tokens_seen": tokens,
        "completion_tokens_seen": completion_tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "device": str(device),
        "dtype": str(student.dtype).removeprefix("torch."),
    }
    if cfg.params == "lora":
        import peft

        record["peft"] = peft.__version__
    return HealResult(healed, record, start, losses)


@torch.no_grad()
def completion_loss(
    model: LoadedModel,
    examples: Sequence[Example],
    *,
    teacher: LoadedModel | None = None,
    batch_size: int = 8,
    max_len: int = 2048,
) -> float:
    """Mean loss per completion token of `model` on `examples`: next-token NLL, or with `teacher`
    KL(teacher || model) (nats), over the same positions training scores."""
    data = _tokenize(model.tokenizer, examples, max_len)
    if not data.ids:
        raise UserError("no example keeps any completion token")
    tok = model.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    total, count = 0.0, 0
    for start in range(0, len(data.ids), batch_size):
        b = _collate(data, range(start, min(start + batch_size, len(data.ids))), pad_id, model.device)
        t_logits = _forward_logits(teacher.model, b) if teacher is not None else None
        total += float(_loss_sum(_forward_logits(model.model, b), b, t_logits))
        count += int(b.target_mask.sum())
    return total / count
