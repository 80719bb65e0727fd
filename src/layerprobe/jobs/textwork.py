"""The text work of an ingested trace: its token counts and trace metrics (reflections, repetition, both
Self-BLEUs), computed in worker processes when there are many traces.

Each worker loads what is slow to load once (the tokenizer, sent pickled instead of read again from its
GGUF or JSON; nltk and its tokenizers; sacrebleu) and then takes one trace at a time. Results come back
in submission order, with at most a few traces per worker in flight, so memory stays flat however many
traces there are. The numbers are the same as in-process: the same functions run on the same inputs
(tests/test_ingest_text.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

POOL_MIN_TRACES = 256
"""`workers=None` starts worker processes from this many traces on (below it the start-up, a few
seconds per worker, costs more than it saves)."""
IN_FLIGHT_PER_WORKER = 4

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TextJob:
    """One trace's text work: what to tokenize and what to measure."""

    text: str
    """The whole completion as stored (its tokens when `all_ids` is None; the study's Self-BLEU reads it)."""
    thinking: str
    """The thinking text the metrics read."""
    answer: str
    """The answer text (its tokens when `answer_ids` is None)."""
    all_ids: Sequence[int] | None = None
    """The completion's token ids when the file gives them."""
    think_ids: Sequence[int] | None = None
    """The thinking's ids when already known (split from the file's ids)."""
    answer_ids: Sequence[int] | None = None
    metrics: bool = True
    """Compute the trace metrics (False: only the completion's ids, for a trace already stored)."""
    vocab: int | None = None
    """Ids from here on are outside the model's vocabulary: such a trace is skipped, not measured."""


@dataclass
class TextDone:
    """What a worker returns for one TextJob (ids as int64 arrays: cheap to send between processes)."""

    all_ids: np.ndarray
    think_ids: np.ndarray
    answer_ids: np.ndarray
    fields: dict[str, Any] | None
    """trace_fields of the trace (None when the job asked for no metrics)."""


_TOKENIZER: Any = None


def _init(tokenizer: Any, parent: int | None) -> None:
    """A worker's start: keep the tokenizer, load nltk's tokenizers now (not at the first trace)."""
    global _TOKENIZER
    if parent is not None:
        from layerprobe._proc import die_with_parent

        die_with_parent(parent)
    _TOKENIZER = tokenizer
    from layerprobe.metrics.selfbleu import nltk_tokenizers

    nltk_tokenizers()


def text_work(job: TextJob, tokenizer: Any = None) -> TextDone:
    """Token ids and trace metrics of one trace (with `tokenizer`, else the worker's)."""
    from layerprobe.jobs.records import trace_fields

    tok = tokenizer if tokenizer is not None else _TOKENIZER
    enc = lambda text: tok.encode(text, add_special_tokens=False)
    ids = lambda given, text: list(given) if given is not None else enc(text)
    all_ids = ids(job.all_ids, job.text)
    # a trace that ingest skips (empty, or ids the model cannot read) is not measured
    measure = job.metrics and bool(all_ids) and (job.vocab is None or max(all_ids) < job.vocab)
    think_ids = ids(job.think_ids, job.thinking) if measure else []
    answer_ids = ids(job.answer_ids, job.answer) if measure else []
    fields = None
    if measure:
        fields = trace_fields(job.thinking, think_ids, lambda x: tok.decode(x, skip_special_tokens=False), full_text=job.text)
    as_array = lambda x: np.asarray(x, dtype=np.int64)
    return TextDone(as_array(all_ids), as_array(think_ids), as_array(answer_ids), fields)


def n_workers(workers: int | None, n_jobs: int) -> int:
    """Worker processes for `n_jobs` traces: `workers` as given (0: in-process), else one per core
    available to this process from POOL_MIN_TRACES traces on."""
    if workers is not None:
        return max(0, workers)
    if n_jobs < POOL_MIN_TRACES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 else 0


class TextPool:
    """`map` runs a function over jobs, in worker processes (`workers` > 0) or in this one, results in
    order. A context manager: the workers end when it closes (and with this process, however it ends)."""

    def __init__(self, tokenizer: Any, workers: int) -> None:
        self.tokenizer = tokenizer
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def open(self) -> TextPool:
        """Start the workers (none when `workers` is 0)."""
        if self.workers > 0 and self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init,
                initargs=(self.tokenizer, os.getpid()),
            )
        return self

    def close(self, wait: bool = True) -> None:
        """End the workers (idempotent); without `wait`, work not started is dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> TextPool:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)

    def text(self, items: Iterable[T], job_of: Callable[[T], TextJob | None]) -> Iterator[tuple[T, TextDone | None]]:
        """(item, its TextDone) for every item, in order; `job_of(item)` is its TextJob (None: nothing
        to compute, TextDone None)."""
        fn = text_work if self._pool is not None else functools.partial(text_work, tokenizer=self.tokenizer)
        return self.map(fn, items, job_of)

    def imap(self, fn: Callable[[T], R], args: Iterable[T]) -> Iterator[R]:
        """fn(arg) for every arg, in order (the shape of the builtin `map`)."""
        return (r for _, r in self.map(fn, args, lambda a: a))  # type: ignore[misc]

    def map(self, fn: Callable[[Any], R], items: Iterable[T], arg_of: Callable[[T], Any]) -> Iterator[tuple[T, R | None]]:
        """(item, fn(arg_of(item))) in order, fn run by the workers (in this process without them);
        an item whose argument is None gets None."""
        if self._pool is None:
            for item in items:
                arg = arg_of(item)
                yield item, (fn(arg) if arg is not None else None)
            return
        window: deque[tuple[T, cf.Future[R] | None]] = deque()
        limit = IN_FLIGHT_PER_WORKER * self.workers
        for item in items:
            arg = arg_of(item)
            window.append((item, self._pool.submit(fn, arg) if arg is not None else None))
            while len(window) > limit:
                first, fut = window.popleft()
                yield first, (fut.result() if fut is not None else None)
        while window:
            first, fut = window.popleft()
            yield first, (fut.result() if fut is not None else None)
