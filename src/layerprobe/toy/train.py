"""Train the toy reasoner: a 6-layer stage, then growth to 12 layers and a second stage.

Deterministic given the seed (up to CPU thread scheduling). Resumable: a checkpoint (safetensors
weights + optimizer state loaded with `weights_only=True`) is written every `ckpt_every` steps and
at each stage end; re-running the same command continues from the last one. A resumed run draws a
fresh data stream seeded by (seed, stage, step), so it is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

import torch

from layerprobe.toy.data import IGNORE, DataMix, batches
from layerprobe.toy.model import grow_depth, scale_residual_init, toy_config
from layerprobe.toy.vocab import save_tokenizer


@dataclass
class Stage:
    """One training stage: `layers` deep, `steps` optimizer steps, peak learning rate `lr`."""

    layers: int
    steps: int
    lr: float
    warmup: int = 100
    curriculum_frac: float = 0.0  # share of the stage over which max chain length grows 4 -> 16
    mix: DataMix | None = None  # this stage's data mixture (None: the config's)


@dataclass
class TrainConfig:
    """Everything that determines a toy training run (recorded next to the weights)."""

    seed: int = 0
    hidden: int = 128
    heads: int = 4
    mlp: int = 512
    tokens_per_batch: int = 4096
    weight_decay: float = 0.05
    ckpt_every: int = 200
    log_every: int = 50
    threads: int = 2
    #: "fp32" or "bf16" autocast. bf16 needs native CPU support (AVX-512-BF16/AMX) to be fast; on an
    #: AVX2-only CPU it was 15x slower than fp32 (368 vs 5,405 tok/s, docs/toy.md).
    precision: str = "fp32"
    #: "depth-scaled": residual output projections start divided by sqrt(2 L); "default": transformers' own.
    init: str = "depth-scaled"
    stages: list[Stage] = field(
        default_factory=lambda: [
            Stage(layers=12, steps=4000, lr=1e-3, warmup=200, curriculum_frac=1 / 3),
            Stage(layers=12, steps=600, lr=3e-4, warmup=50, mix=DataMix(masked_error=0.10)),
        ]
    )
    mix: DataMix = field(default_factory=DataMix)
    #: False: train the non-reasoning twin (every stage's mix without thinking; see DataMix.thinking).
    thinking: bool = True


class TrainState(TypedDict):
    """Where training stands (ckpt/state.json)."""

    stage: int
    step: int
    tokens: int
    elapsed: float


def lr_at(step: int, stage: Stage) -> float:
    """Linear warm-up, flat to half the stage, then cosine down to 5 % of the peak."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    half = stage.steps // 2
    if step < half:
        return stage.lr
    t = (step - half) / max(1, stage.steps - half)
    return stage.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _max_k(step: int, stage: Stage) -> int:
    if stage.curriculum_frac <= 0:
        return 16
    frac = min(1.0, step / (stage.curriculum_frac * stage.steps))
    return int(round(4 + 12 * frac))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _save_ckpt(out: Path, model, opt, state: Mapping[str, object]) -> None:
    from safetensors.torch import save_file

    tmp = out / "ckpt.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(tmp)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, tmp / "weights.safetensors")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    final = out / "ckpt"
    if final.exists():
        import shutil

        shutil.rmtree(final)
    tmp.rename(final)


def _load_ckpt(out: Path, cfg: TrainConfig):
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    ck = out / "ckpt"
    if not (ck / "state.json").is_file():
        return None
    state = json.loads((ck / "state.json").read_text())
    model = Qwen3ForCausalLM(Qwen3Config.from_pretrained(ck))
    model.load_state_dict(load_file(ck / "weights.safetensors"), strict=False)
    model.tie_weights()
    opt = _optimizer(model, cfg, cfg.stages[min(state["stage"], len(cfg.stages) - 1)].lr)
    opt.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True))
    return model, opt, state


def train(cfg: TrainConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) training; returns the directory of the final HF checkpoint (`out_dir/final`)."""
    from transformers import Qwen3ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    resumed = _load_ckpt(out, cfg)
    if resumed is None:
        torch.manual_seed(cfg.seed)
        s0 = cfg.stages[0]
        model = Qwen3ForCausalLM(toy_config(s0.layers, cfg.hidden, cfg.heads, cfg.mlp))
        if cfg.init == "depth-scaled":
            scale_residual_init(model)
        elif cfg.init != "default":
            raise ValueError(f"unknown init {cfg.init!r} (valid: depth-scaled, default)")
        opt = _optimizer(model, cfg, s0.lr)
        state: TrainState = {"stage": 0, "step": 0, "tokens": 0, "elapsed": 0.0}
    else:
        model, opt, state = resumed
        log(f"resumed at stage {state['stage']} step {state['step']}")
    logf = (out / "train_log.jsonl").open("a")
    while state["stage"] < len(cfg.stages):
        stage = cfg.stages[state["stage"]]
        if model.config.num_hidden_layers != stage.layers:
            if stage.layers != 2 * model.config.num_hidden_layers:
                raise ValueError("stages may only keep or double the depth")
            model = grow_depth(model)
            opt = _optimizer(model, cfg, stage.lr)
            log(f"grew to {stage.layers} layers (function-preserving)")
        model.train()
        # the data stream is a function of (seed, stage, step) so a resume continues it exactly
        rng = random.Random(f"{cfg.seed}:{state['stage']}:{state['step']}")
        stream = None
        t0, tok0, loss_sum, n_loss = time.monotonic(), state["tokens"], 0.0, 0
        while state["step"] < stage.steps:
            step = state["step"]
            if stream is None:
                mix = dataclasses.replace(stage.mix or cfg.mix, thinking=cfg.thinking)
                stream = batches(rng, _max_k(step, stage), mix, cfg.tokens_per_batch)
            try:
                ids, labels, mask = next(stream)
            except StopIteration:
                stream = None
                continue
            ids_t, labels_t, mask_t = torch.tensor(ids), torch.tensor(labels), torch.tensor(mask)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, stage)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                logits = model(input_ids=ids_t, attention_mask=mask_t).logits  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels_t[:, 1:].reshape(-1), ignore_index=IGNORE
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] += 1
            state["tokens"] += int(mask_t.sum())
            loss_sum += loss.item()
            n_loss += 1
            if state["step"] % cfg.log_every == 0:
                dt = time.monotonic() - t0
                rec = {
                    "stage": state["stage"],
                    "step": state["step"],
                    "layers": stage.layers,
                    "loss": loss_sum / n_loss,
                    "lr": lr_at(step, stage),
                    "max_k": _max_k(step, stage),
                    "tokens": state["tokens"],
                    "tok_per_s": (state["tokens"] - tok0) / max(dt, 1e-9),
                    "elapsed_s": state["elapsed"] + dt,
                }
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log(
                    f"stage {state['stage']} step {state['step']}/{stage.steps} loss {rec['loss']:.4f} "
                    f"lr {rec['lr']:.2e} k<={rec['max_k']} {rec['tok_per_s']:.0f} tok/s"
                )
                loss_sum, n_loss = 0.0, 0
            if state["step"] % cfg.ckpt_every == 0:
                state["elapsed"] += time.monotonic() - t0
                t0, tok0 = time.monotonic(), state["tokens"]
                _save_ckpt(out, model, opt, state)
        state["elapsed"] += time.monotonic() - t0
        state["stage"] += 1
        state["step"] = 0
        _save_ckpt(out, model, opt, state)  # also after the last stage: a re-run then trains nothing
        model.eval()
        model.save_pretrained(out / f"stage{state['stage'] - 1}", safe_serialization=True)
    logf.close()
    final = out / "final"
    model.eval()
    model.save_pretrained(final, safe_serialization=True)
    save_tokenizer(final)
    return final


def export_checkpoint(out_dir: str | Path, dest: str | Path) -> dict:
    """Write the latest training checkpoint of `out_dir` as a HF checkpoint with tokenizer at `dest`.

    Returns the checkpoint's training state (stage, step, tokens, elapsed seconds), also written to
    `dest/training_state.json` so a shipped model says exactly how far it was trained.
    """
    out = Path(out_dir)
    cfg = TrainConfig(
        **{k: v for k, v in json.loads((out / "train_config.json").read_text()).items() if k not in ("stages", "mix")}
    )
    loaded = _load_ckpt(out, cfg)
    if loaded is None:
        raise FileNotFoundError(f"no checkpoint in {out}")
    model, _, state = loaded
    dest = Path(dest)
    model.eval()
    model.save_pretrained(dest, safe_serialization=True)
    save_tokenizer(dest)
    (dest / "training_state.json").write_text(json.dumps({"schema_version": 1, **state}, indent=2))
    return state
