"""Where a run's traces are generated: in this process, or on Ray workers.

Either way the same function (`generate_traces`) generates a variant's traces with the probes
attached, and the analysis (the driver) is the only writer of the run directory: workers return
results, the driver writes them. So resume, the writer lock and the file layout do not depend on
where generation ran.

A Ray worker loads the base model once and builds each variant from a recipe (the original layers
it drops, or a checkpoint directory); work is sent in chunks of whole problems (so the budgets of a
problem share their prefix inside one chunk), and results come back as chunks finish. A worker
that dies is restarted by Ray and its chunk is retried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from layerprobe.errors import UserError

#: on_trace(planned trace, GenResult, TraceLayers or None)
OnTrace = Callable[[Any, Any, Any], None]


@dataclass(frozen=True)
class Recipe:
    """How a worker builds a variant: the base model without `dropped` (original indices), or a
    checkpoint directory loaded as it is."""

    name: str
    dropped: tuple[int, ...] = ()
    checkpoint: str | None = None


@dataclass(frozen=True)
class TraceWork:
    """Traces of one variant to generate: (planned trace, prompt) pairs and the request settings."""

    recipe: Recipe
    items: tuple[tuple[Any, str], ...]
    wait: int
    answer_max: int


def generate_traces(
    loaded: Any, fmt: Any, sampling: Any, job: TraceWork, batch_size: int, probes: dict[str, Any] | None, on_trace: OnTrace
) -> int:
    """Generate a job's traces with `loaded` (probed when `probes` holds their options: lens,
    lens_every and mode — live: captured during generation; prefill: generated without hooks, then
    one forward pass over each finished trace), calling `on_trace` as each finishes. Halves the
    batch after an out-of-memory error and retries what had not finished; returns the batch size it
    ended with."""
    from layerprobe.models.memory import free_memory, is_oom
    from layerprobe.probe.hooks import LayerProbe
    from layerprobe.probe.prefill import prefill_trace_layers
    from layerprobe.scaling.engine import GenRequest, TraceGenerator

    gen = TraceGenerator(loaded.model, loaded.tokenizer, fmt, sampling)
    pending = [
        GenRequest(key=t, prompt=p, budget=t.budget, seed=t.seed, wait=job.wait, answer_max=job.answer_max) for t, p in job.items
    ]
    batch = batch_size
    options = dict(probes or {})
    prefill = options.pop("mode", "live") == "prefill"
    prompts = {r.key: r.prompt for r in pending}
    while pending:
        finished: set[Any] = set()
        probe = LayerProbe(loaded, **options) if probes is not None and not prefill else None
        try:
            if probe is not None:
                probe.attach()

            def on_result(res: Any, finished: set[Any] = finished, probe: Any = probe) -> None:
                tl = None
                if probe is not None:
                    try:
                        tl = probe.pop(res.key)
                    except KeyError:  # a copy of another trace: it has no probe rows of its own
                        tl = None
                elif prefill and res.origin != "copy" and res.all_ids:
                    prompt_ids = loaded.tokenizer.encode(prompts[res.key], add_special_tokens=False)
                    tl = prefill_trace_layers(loaded, prompt_ids, res.all_ids, key=res.key, **options)
                on_trace(res.key, res, tl)
                finished.add(res.key)

            gen.generate(pending, batch_size=batch, observers=[probe] if probe is not None else (), on_result=on_result)
            pending = []
        except Exception as exc:
            if not is_oom(exc) or batch == 1:
                raise
            free_memory()
            batch = max(1, batch // 2)
            pending = [r for r in pending if r.key not in finished]
        finally:
            if probe is not None:
                probe.close()
    return batch


class InProcess:
    """Generation in this process, on the variants the analysis has already built."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models  # variant name -> LoadedModel

    def run(
        self,
        jobs: Sequence[TraceWork],
        fmt: Any,
        sampling: Any,
        batch_size: int,
        probes: dict[str, Any] | None,
        on_trace: Callable[[TraceWork, Any, Any, Any], None],
    ) -> int:
        for job in jobs:

            def forward(t: Any, res: Any, tl: Any, job: TraceWork = job) -> None:
                on_trace(job, t, res, tl)

            batch_size = generate_traces(self.models[job.recipe.name], fmt, sampling, job, batch_size, probes, forward)
        return batch_size

    def teacher_forced(self, tasks: Sequence[tuple[Any, Sequence[str], list[int], list[int]]]) -> Iterator[tuple[Any, list[Any]]]:
        from layerprobe.probe.teacher import teacher_forced_many

        base = next(iter(self.models.values()))
        for key, names, prompt_ids, tokens in tasks:
            yield key, teacher_forced_many(base, [self.models[n] for n in names], prompt_ids, tokens, key=str(key))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------- Ray


def _quiet_ray_env(joining: bool) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not joining:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster: no token needed
        return
    # joining: an unreachable cluster fails in seconds instead of retrying for minutes (unless the user
    # has set these Ray variables)
    for var in ("RAY_gcs_server_port_wait_time_s", "RAY_py_gcs_connect_timeout_s", "RAY_gcs_rpc_server_connect_timeout_s"):
        os.environ.setdefault(var, "2")


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def start_ray(workers: int, address: str | None) -> Any:
    """Start a local Ray cluster for `workers` workers, or join `address`; UserError when Ray is not
    installed or the cluster cannot be reached (before anything is written)."""
    if not ray_installed():
        raise UserError("--workers / --ray-address need Ray: pip install 'layerprobe[ray]'")
    _quiet_ray_env(joining=address is not None)  # read by Ray when it is imported
    import logging

    import ray

    if ray.is_initialized():
        return ray
    try:  # an --ray-address was probed by the settings (AnalyzeSettings.check), before minutes of loading
        if address is None:
            ray.init(
                address="local",
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                object_store_memory=200 * 2**20,
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not start or reach {where}: {first}") from None
    return ray


def check_ray_address(address: str, timeout: float = 2.0) -> None:
    """A UserError within `timeout` seconds when nothing answers at a Ray cluster address (host:port,
    optionally ray://host:port), instead of Ray's own retries and log lines."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray-address {address}: give host:port (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc})") from None


def set_threads_for(loaded: Any, threads: int | None = None) -> None:
    """Torch threads for working with `loaded`: one for the toy, whose matmuls are so small that a
    second thread mostly waits on the first (on a busy 2-core machine a forward pass took many times
    longer on two threads); otherwise `threads`, or torch's default when None."""
    import torch

    if loaded.is_toy:  # the shipped toy or a checkpoint of it
        torch.set_num_threads(1)
    elif threads is not None:
        torch.set_num_threads(max(1, threads))


class Worker:
    """A Ray actor's body: the base model, loaded once, and the variants built from it."""

    def __init__(self, model: str, device: str, dtype: str, threads: int) -> None:
        from layerprobe.models.loading import load_model

        self.device, self.dtype = device, dtype
        self.base = load_model(model, device=device, dtype=dtype)
        set_threads_for(self.base, threads)
        self.variants: dict[Recipe, Any] = {}

    def _variant(self, recipe: Recipe) -> Any:
        if recipe not in self.variants:
            from layerprobe.models.loading import load_model
            from layerprobe.prune.surgery import drop_layers

            if recipe.checkpoint is not None:
                self.variants[recipe] = load_model(recipe.checkpoint, device=self.device, dtype=self.dtype)
            else:
                dropped = list(recipe.dropped)  # checked by the driver, which built the recipe from its variant
                self.variants[recipe] = drop_layers(self.base, dropped, checked=True) if dropped else self.base
        return self.variants[recipe]

    def generate(
        self, job: TraceWork, fmt: Any, sampling: Any, batch_size: int, probes: dict[str, Any] | None
    ) -> tuple[TraceWork, list[tuple[Any, Any, Any]]]:
        if os.environ.get("LAYERPROBE_TEST_KILL_WORKER") == job.recipe.name:  # fault injection for the tests
            marker = os.environ.get("LAYERPROBE_TEST_KILL_MARKER", "")
            if marker and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
        out: list[tuple[Any, Any, Any]] = []
        generate_traces(
            self._variant(job.recipe), fmt, sampling, job, batch_size, probes, lambda t, res, tl: out.append((t, res, tl))
        )
        return job, out

    def teacher_forced(
        self, key: Any, recipes: Sequence[Recipe], prompt_ids: list[int], tokens: list[int]
    ) -> tuple[Any, list[Any]]:
        from layerprobe.probe.teacher import teacher_forced_many

        return key, teacher_forced_many(self.base, [self._variant(r) for r in recipes], prompt_ids, tokens, key=str(key))


def chunk_work(jobs: Sequence[TraceWork], size: int) -> list[TraceWork]:
    """Split jobs into chunks of about `size` traces, never splitting one problem's traces (the
    budgets of a problem share their prefix only inside one generate call)."""
    out = []
    for job in jobs:
        by_problem: dict[str, list[tuple[Any, str]]] = {}
        for t, p in job.items:
            by_problem.setdefault(t.problem_id, []).append((t, p))
        cur: list[tuple[Any, str]] = []
        for items in by_problem.values():
            if cur and len(cur) + len(items) > size:
                out.append(TraceWork(job.recipe, tuple(cur), job.wait, job.answer_max))
                cur = []
            cur += items
        if cur:
            out.append(TraceWork(job.recipe, tuple(cur), job.wait, job.answer_max))
    return out


class RayPool:
    """Generation on Ray actors (one per worker), results streamed back to the driver as chunks finish."""

    def __init__(
        self,
        workers: int,
        address: str | None,
        model: str,
        device: str,
        dtype: str,
        gpus_per_worker: float,
        recipes: dict[str, Recipe],
    ) -> None:
        self.ray = start_ray(workers, address)
        if address is not None:  # a cluster of its own size: what it has bounds the workers
            have = self.ray.cluster_resources()
            if workers > int(have.get("CPU", 0)) or gpus_per_worker * workers > have.get("GPU", 0):
                self.ray.shutdown()  # disconnect from the cluster (it is not ours to stop)
                raise UserError(
                    f"--workers {workers} (--gpus-per-worker {gpus_per_worker:g}) needs {workers} CPUs and "
                    f"{gpus_per_worker * workers:g} GPUs; the cluster at {address} has {int(have.get('CPU', 0))} and "
                    f"{have.get('GPU', 0):g}"
                )
        remote = self.ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=3, max_task_retries=3)(Worker)
        device = ("cuda" if gpus_per_worker > 0 else "cpu") if device == "auto" else device
        threads = max(1, (os.cpu_count() or 1) // workers) if address is None else 1
        self.actors = [remote.remote(model, device, dtype, threads) for _ in range(workers)]
        self.recipes = recipes
        self.started = address is None

    def _stream(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> Iterator[Any]:
        """Run calls (submit(actor, *args), args) spread over the actors, one at a time per actor;
        yield results as they finish. A call whose actor died is sent again (Ray restarts the actor)."""
        ray = self.ray
        queue = list(enumerate(calls))
        busy: dict[Any, tuple[int, int]] = {}  # object ref -> (actor, call index)
        free = list(range(len(self.actors)))
        attempts: dict[int, int] = {}
        while queue or busy:
            while queue and free:
                a = free.pop(0)
                idx, (submit, args) = queue.pop(0)
                busy[submit(self.actors[a], *args)] = (a, idx)
            done, _ = ray.wait(list(busy), num_returns=1)
            a, idx = busy.pop(done[0])
            free.append(a)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayActorError:
                attempts[idx] = attempts.get(idx, 0) + 1
                if attempts[idx] > 3:
                    raise
                queue.append((idx, calls[idx]))
                continue
            yield result

    def run(
        self,
        jobs: Sequence[TraceWork],
        fmt: Any,
        sampling: Any,
        batch_size: int,
        probes: dict[str, Any] | None,
        on_trace: Callable[[TraceWork, Any, Any, Any], None],
    ) -> int:
        chunks = chunk_work(jobs, max(1, batch_size))
        calls = [(lambda actor, *a: actor.generate.remote(*a), (c, fmt, sampling, batch_size, probes)) for c in chunks]
        for job, results in self._stream(calls):
            for t, res, tl in results:
                on_trace(job, t, res, tl)
        return batch_size

    def teacher_forced(self, tasks: Sequence[tuple[Any, Sequence[str], list[int], list[int]]]) -> Iterator[tuple[Any, list[Any]]]:
        calls = [
            (lambda actor, *a: actor.teacher_forced.remote(*a), (key, [self.recipes[n] for n in names], p, t))
            for key, names, p, t in tasks
        ]
        yield from self._stream(calls)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:  # our own local cluster
            self.ray.shutdown()
