"""What an analysis will run: settings with their defaults, the variants and the list of traces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.data.schema import Mode
from layerprobe.errors import UserError
from layerprobe.jobs.defaults import QUICK_DEFAULTS, REAL_DEFAULTS, TOY_DEFAULTS
from layerprobe.models.aliases import is_embedded
from layerprobe.rules import check_name, check_workers

#: Upper bounds checked before anything is loaded (a typo like --samples 1000000000000 fails at once).
PROBE_MODES = ("auto", "live", "prefill")


def resolve_probe_mode(mode: str, device_type: str) -> str:
    """`auto` resolved for a device: live capture on a CPU, where the extra forward pass of a prefill
    costs more than the hooks (benchmarks/bench_prefill.py, docs/performance.md); prefill on an
    accelerator, where decoding is memory-bound and per-step hooks stall it."""
    if mode != "auto":
        return mode
    return "live" if device_type == "cpu" else "prefill"


MAX_SAMPLES = 1024
MAX_LIMIT = 1_000_000
MAX_TOY_LIMIT = 200  # the toy has 200 facts; its chain groups are drawn from the same problem pool size
MAX_BUDGET = 1_000_000


@dataclass
class AnalyzeSettings:
    """Everything `layerprobe analyze` was asked for (None = use the default for this model)."""

    model: str = "toy"
    drops: list[list[int]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    n_drop: int | None = None
    match_layers: list[int] | None = None  # sizes in layers' worth: one variant per method and size
    sparsity: list[float] | None = None  # sizes as fractions of the decoder's linear weights
    nm: str | None = None  # --method nm's N:M pattern (default 2:4)
    variants: list[tuple[str, str]] = field(default_factory=list)  # --variant NAME=CHECKPOINT_DIR
    calib: str | None = None  # file path; default: the model's own traces for the toy, embedded text otherwise
    calib_traces: int | None = None
    task: str | None = None
    task_file: str | None = None
    limit: int | None = None
    budgets: list[int] | None = None
    samples: int | None = None
    parallel_budget: int | None = None
    wait: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    answer_max: int | None = None
    seed: int = 0
    probes: bool = True
    lens: bool = True
    lens_every: int = 1
    probe_mode: str = "auto"
    teacher_forced: bool = True
    reasoning_format: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    sweep: str | None = None
    sweep_layers: list[int] | None = None
    sweep_proxy: bool = False
    workers: int | None = None
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    out: Path | None = None
    force: bool = False
    report: bool = True
    quick: bool = False
    explain: bool | None = None  # run explain at the end (None: the default for the model, decided once the run is read)

    def check(self) -> None:
        """Reject settings that cannot be right, before anything is loaded (UserError, exit 2)."""
        if self.budgets is not None:
            if not self.budgets:
                raise UserError("--budgets: give at least one thinking budget, e.g. 256,512")
            bad = [b for b in self.budgets if b <= 0]
            if bad:
                raise UserError(f"--budgets: every budget must be a positive number of tokens, got {bad[0]}")
        if self.samples is not None and not 1 <= self.samples <= MAX_SAMPLES:
            raise UserError(f"--samples {self.samples}: must be between 1 and {MAX_SAMPLES}")
        if self.parallel_budget is not None and not 0 < self.parallel_budget <= MAX_BUDGET:
            raise UserError(f"--parallel-budget {self.parallel_budget}: give 1 to {MAX_BUDGET:,} tokens")
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise UserError(f"--limit {self.limit}: must be between 1 and {MAX_LIMIT:,}")
        toy_task = (self.task or ("toy-mix" if is_embedded(self.model) else "")).startswith("toy-")
        if toy_task and self.limit is not None and self.limit > MAX_TOY_LIMIT:
            raise UserError(f"--limit {self.limit}: the toy tasks have at most {MAX_TOY_LIMIT} problems per group")
        if self.budgets is not None and max(self.budgets) > MAX_BUDGET:
            raise UserError(f"--budgets: at most {MAX_BUDGET:,} thinking tokens, got {max(self.budgets):,}")
        if self.wait < 0:
            raise UserError(f"--wait {self.wait}: must be 0 or more")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UserError(f"--temperature {self.temperature}: must be a number, 0 (greedy) or more")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.answer_max is not None and self.answer_max < 1:
            raise UserError(f"--answer-max {self.answer_max}: must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"--top-k {self.top_k}: must be 0 (off) or more")
        if self.lens_every < 1:
            raise UserError(f"--lens-every {self.lens_every}: must be at least 1")
        if self.probe_mode not in PROBE_MODES:
            raise UserError(f"--probe-mode {self.probe_mode}: valid modes are {', '.join(PROBE_MODES)}")
        if self.n_drop is not None and not self.methods:
            raise UserError("--n-drop applies to --method; with --drop, list the layers themselves")
        self._check_sizes()
        if self.n_drop is not None and self.n_drop < 1:
            raise UserError(f"--n-drop {self.n_drop}: must be at least 1")
        if self.calib is not None and self.calib_traces is not None:
            raise UserError("--calib and --calib-traces are exclusive: give one calibration source")
        if self.calib is not None and not Path(self.calib).is_file():
            raise UserError(f"--calib {self.calib}: no such file")
        if self.task_file is not None and not Path(self.task_file).is_file():
            raise UserError(f"--task-file {self.task_file}: no such file")
        if self.explain and not self.probes:
            raise UserError("--explain needs the probes (the base traces' token ids): drop --no-probes")
        if self.explain and self.sweep is not None:
            raise UserError(
                "--explain explains pruned variants one by one; after a sweep, run analyze on the layers it singles out"
            )
        if len({tuple(sorted(set(d))) for d in self.drops}) < len(self.drops):
            raise UserError("--drop: the same layer list is given twice")
        if len(set(self.methods)) < len(self.methods):
            raise UserError("--method: the same method is given twice")
        self._check_variants()
        if self.sweep is not None:
            from layerprobe.jobs.sweep import SWEEP_KINDS

            if self.sweep not in SWEEP_KINDS:
                raise UserError(f"--sweep {self.sweep}: valid kinds are {', '.join(SWEEP_KINDS)}")
            if self.drops or self.methods:
                raise UserError(
                    "--sweep makes its own variants (one per layer or pair); drop --drop / --method, or run them separately"
                )
            if self.sweep_proxy and not self.probes:
                raise UserError("--sweep-proxy reads the base traces' token ids from their probe files: drop --no-probes")
        elif self.sweep_layers is not None or self.sweep_proxy:
            raise UserError("--sweep-layers and --sweep-proxy need --sweep single|pairs")
        if self.workers is not None and self.ray_address is None:
            check_workers(self.workers)  # a local cluster: bounded by this machine
        elif self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1 (leave it out to run in this process)")
        if not math.isfinite(self.gpus_per_worker) or self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker {self.gpus_per_worker}: must be a number of GPUs, 0 or more")
        if self.gpus_per_worker > 0 and self.ray_address is None:
            import torch

            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            need = self.gpus_per_worker * (self.workers or 1)
            if need > have:
                raise UserError(
                    f"--gpus-per-worker {self.gpus_per_worker} with {self.workers or 1} workers needs {need:g} GPUs; "
                    f"this machine has {have} (leave --gpus-per-worker out to run on the CPU)"
                )
        if self.ray_address not in (None, "auto", "local"):  # before minutes of loading
            from layerprobe.jobs.execute import check_ray_address

            check_ray_address(self.ray_address)
        if (self.ray_address is not None or self.gpus_per_worker) and self.workers is None and self.ray_address is None:
            raise UserError("--gpus-per-worker needs --workers N or --ray-address ADDR")

    def _check_sizes(self) -> None:
        """--match-layers / --sparsity / --nm: each value valid, and each method given a size it takes."""
        from layerprobe.prune.methods import get_method
        from layerprobe.prune.size import SizeRequest, check_match_layers, check_sparsity, parse_nm

        given = [f for f, v in (("--match-layers", self.match_layers), ("--sparsity", self.sparsity)) if v is not None]
        if given and not self.methods:
            raise UserError(
                f"{given[0]} sizes the variants of --method: add --method NAME (e.g. --method wanda); --drop lists layers itself"
            )
        if given and self.n_drop is not None:
            raise UserError(f"--n-drop and {given[0]} are exclusive: say the size one way")
        for k in self.match_layers or []:
            check_match_layers(k)
        for f in self.sparsity or []:
            check_sparsity(f)
        for flag, values in (("--match-layers", self.match_layers), ("--sparsity", self.sparsity)):
            if values is not None and len(set(values)) < len(values):
                raise UserError(f"{flag}: the same size is given twice")
        if self.nm is not None:
            parse_nm(self.nm)
            if "nm" not in self.methods:
                raise UserError("--nm is the pattern of --method nm: add --method nm")
        sizes = [SizeRequest(match_layers=k) for k in self.match_layers or []]
        sizes += [SizeRequest(sparsity=f) for f in self.sparsity or []]
        for name in self.methods:
            m = get_method(name)
            if name == "nm":
                continue
            if m.kind == "depth" and not m.takes_n_drop and given:
                m.check_request(None, sizes[0])  # refused: the method decides how much it removes
            if m.kind != "depth" and self.n_drop is not None:
                m.check_request(self.n_drop, None)  # refused: --n-drop counts layers
        if self.workers is not None or self.ray_address is not None:
            weights = [n for n in self.methods if get_method(n).kind != "depth" or n == "laco"]
            if weights:
                raise UserError(
                    f"--method {weights[0]} changes weights, and Ray workers rebuild variants from the layers they drop: "
                    "run it without --workers / --ray-address"
                )

    def size_requests(self) -> list[Any]:
        """The sizes (SizeRequest) every sized method is run at, in the order given."""
        from layerprobe.prune.size import SizeRequest

        out = [SizeRequest(match_layers=k) for k in self.match_layers or []]
        return out + [SizeRequest(sparsity=f) for f in self.sparsity or []]

    def _check_variants(self) -> None:
        """--variant NAME=DIR: a name usable as a file name, not taken twice, and a checkpoint directory."""
        names = [n for n, _ in self.variants]
        for name, path in self.variants:
            check_name(name, "--variant")
            if name == "base":
                raise UserError(f"--variant {name}={path}: 'base' is the unpruned model's name; choose another")
            if names.count(name) > 1:
                raise UserError(f"--variant: the name {name} is given twice")
            if not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
                raise UserError(f"--variant {name}={path}: not a checkpoint directory (no config.json)")
        if self.variants and self.sweep is not None:
            raise UserError("--variant cannot be combined with --sweep (the sweep's variants are one per layer or pair)")

    def resolve(self, is_toy: bool) -> None:
        """Fill unset settings with the defaults for this kind of model."""
        d = TOY_DEFAULTS if is_toy else (QUICK_DEFAULTS if self.quick else REAL_DEFAULTS)
        if not self.drops and not self.methods and self.sweep is None:
            self.methods = list(d.methods)
        if self.methods and self.n_drop is None and self.match_layers is None and self.sparsity is None:
            from layerprobe.prune.methods import get_method

            if all(get_method(m).kind == "depth" or m == "nm" for m in self.methods):
                self.n_drop = d.n_drop
            else:  # a method that removes weights or channels is sized in layers' worth, like the others
                self.match_layers = [d.n_drop]
        if "nm" in self.methods and self.nm is None:
            self.nm = "2:4"
        if self.budgets is None:
            self.budgets = list(d.budgets)
        self.budgets = sorted(set(self.budgets))
        if self.samples is None:
            self.samples = d.samples
        if self.limit is None:
            self.limit = d.limit
        if self.parallel_budget is None:
            self.parallel_budget = self.budgets[-1]
        if self.task is None:
            self.task = "toy-mix" if is_toy else "aime24"
        if self.answer_max is None:
            self.answer_max = d.answer_max
        if is_toy and self.calib is None and self.calib_traces is None:
            self.calib_traces = 32  # the toy's vocabulary has no English: calibrate on its own traces


def variant_name_for_drop(dropped: list[int]) -> str:
    return "drop-" + "-".join(str(i) for i in dropped)


@dataclass(frozen=True)
class PlannedTrace:
    """One trace to generate: its key fields and seed."""

    problem_id: str
    mode: Mode
    budget: int
    sample: int
    seed: int


def plan_traces(
    problem_ids: list[str], budgets: list[int], samples: int, parallel_budget: int, run_seed: int
) -> list[PlannedTrace]:
    """Sequential traces (sample 0 at every budget) then parallel ones (n samples at one budget).

    The seed depends on (run seed, problem, sample) only, so every variant and every budget of a
    problem starts from the same random stream: variants are paired, and the sequential traces of
    one problem are the same trace cut at different budgets.
    """
    from layerprobe.scaling.engine import derive_seed

    out = [PlannedTrace(p, "sequential", b, 0, derive_seed(run_seed, p, 0)) for b in budgets for p in problem_ids]
    out += [
        PlannedTrace(p, "parallel", parallel_budget, s, derive_seed(run_seed, p, s)) for p in problem_ids for s in range(samples)
    ]
    return out
