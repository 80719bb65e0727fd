"""`layerprobe toy train|eval` as jobs: train the embedded toy reasoner, and measure it (accuracy by task
type and chain length, greedy and sampled, a Wait audit and a thinking-budget curve)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError


@dataclass
class ToyTrainSettings:
    """Everything `layerprobe toy train` was asked for."""

    out: Path
    seed: int = 0
    layers: int = 12
    steps: int = 4000
    lr: float = 1e-3
    correction_steps: int = 600
    """Steps of the second stage (always-caught wrong values; 0: none)."""
    correction_lr: float = 3e-4
    precision: str = "fp32"
    threads: int = 2
    thinking: bool = True
    """False: the non-reasoning twin (problems answered directly)."""

    def check(self) -> None:
        """Reject bad flags before anything is trained (UserError, exit 2)."""
        if (
            self.layers < 1
            or self.steps < 1
            or self.lr <= 0
            or self.threads < 1
            or self.correction_steps < 0
            or self.correction_lr <= 0
        ):
            raise UserError("--layers, --steps and --threads must be >= 1, --correction-steps >= 0, learning rates > 0")
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"--precision {self.precision}: valid values are fp32, bf16")


def train_toy(s: ToyTrainSettings, log: Callable[[str], None]) -> Path:
    """Train (or resume) the toy at full depth from scratch, then the correction stage; the final checkpoint."""
    from layerprobe.toy.data import DataMix
    from layerprobe.toy.train import Stage, TrainConfig, train

    s.check()
    stages = [Stage(layers=s.layers, steps=s.steps, lr=s.lr, warmup=min(200, s.steps // 10 + 1), curriculum_frac=1 / 3)]
    if s.correction_steps:
        stages.append(
            Stage(
                layers=s.layers,
                steps=s.correction_steps,
                lr=s.correction_lr,
                warmup=min(50, s.correction_steps // 10 + 1),
                mix=DataMix(masked_error=0.10),
            )
        )
    cfg = TrainConfig(seed=s.seed, precision=s.precision, threads=s.threads, stages=stages, thinking=s.thinking)
    return train(cfg, s.out, log=log)


@dataclass
class ToyEvalSettings:
    """Everything `layerprobe toy eval` was asked for; `check()` parses the lists."""

    model: str = "toy"
    n: int = 100
    samples: int = 8
    temperature: float = 0.8
    seed: int = 0
    drop: str | None = None
    """Original layers to remove first, as given ("4,5")."""
    json_out: Path | None = None
    budgets: str | None = None
    """Thinking budgets of the sequential-scaling curve, as given ("0,20,40")."""
    budget_task: str = "long"
    # set by check()
    budget_list: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def check(self) -> None:
        """Reject bad flags before the model is loaded (UserError, exit 2)."""
        from layerprobe._io import check_output_file
        from layerprobe.prune.surgery import parse_layer_list
        from layerprobe.toy.tasks import TASK_TYPES

        if self.n < 1 or self.samples < 0 or self.temperature <= 0:
            raise UserError("--n must be >= 1, --samples >= 0 and --temperature > 0")
        check_output_file(self.json_out, "--json")
        bt = self.budget_task
        if bt not in TASK_TYPES or bt == "facts":
            if not (bt.startswith("k=") and bt[2:].isdigit() and 1 <= int(bt[2:]) <= 16):
                raise UserError(f"--budget-task {bt}: valid values are short, mid, long, xlong or k=N (N = 1..16)")
        self.budget_list = parse_layer_list(self.budgets, "--budgets", "integers", "0,20,40") if self.budgets else []
        if any(b < 0 for b in self.budget_list):
            raise UserError("--budgets must be >= 0")
        self.dropped = parse_layer_list(self.drop) if self.drop else []


@dataclass
class ToyEval:
    """What `toy eval` measured: the model it evaluated (pruned when asked) and the evaluation
    (layerprobe.toy.evaluate's result)."""

    loaded: Any
    res: Any


def evaluate_toy(s: ToyEvalSettings, progress: Callable[[int, int], None]) -> ToyEval:
    """Check the settings, load (and prune) the toy and evaluate it."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers
    from layerprobe.toy.evaluate import evaluate
    from layerprobe.toy.tasks import TASK_TYPES

    s.check()
    loaded = load_model(s.model, device="cpu", dtype="float32")
    if s.dropped:
        loaded = drop_layers(loaded, s.dropped)
    res = evaluate(
        loaded.model,
        loaded.tokenizer,
        list(TASK_TYPES),
        n=s.n,
        samples=s.samples,
        temperature=s.temperature,
        seed=s.seed,
        progress=progress,
    )
    return ToyEval(loaded, res)


def toy_budget_curve(s: ToyEvalSettings, ev: ToyEval) -> dict[int, float]:
    """Greedy accuracy at each of `s`'s thinking budgets on its budget task (empty without --budgets)."""
    if not s.budget_list:
        return {}
    from layerprobe.toy.evaluate import budget_curve

    return budget_curve(ev.loaded.model, ev.loaded.tokenizer, s.budget_task, s.budget_list, n=s.n, seed=s.seed)


def write_toy_eval_json(s: ToyEvalSettings, ev: ToyEval, curve: dict[int, float]) -> None:
    """The `--json` file of `toy eval` (schema_version 1): the settings, every measurement and the budget curve."""
    if s.json_out is None:
        return
    s.json_out.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "model": s.model,
                "drop": s.drop,
                "n": s.n,
                "samples": s.samples,
                "temperature": s.temperature,
                "seed": s.seed,
                **ev.res.__dict__,
                "budget_task": s.budget_task,
                "budget_curve": curve,
            },
            indent=2,
            default=str,
        )
    )
