"""The skeleton every job shares (analyze, ingest, explain, heal): one writer per output, settings
compared on resume, durable status, signals, and the command that resumes it (docs/architecture.md#jobs).

    job = SomeJob(settings, progress, argv)
    result = job.run()

`run()` calls, in order:

1. `prepare()` — check the input and load what the job needs; nothing is written (bad input is a
   UserError here);
2. with `out/.lock` held (data.lock: any second job that would write the same output, explain
   included, is refused in one line naming this one) and SIGTERM turned into KeyboardInterrupt (a `kill` stops a job the way Ctrl-C does):
   `open()` — create the output or resume it: the job compares its settings with the stored ones
   (`settings_differences`) and refuses a difference unless --force, which starts afresh;
3. `work()` — the job itself; it writes its results durably as it goes, so a job stopped at any point
   (even by `kill -9`) resumes where it was when the same command is run again;
4. `close(status)` — "complete", "interrupted" (Ctrl-C, SIGTERM) or "failed" (an error), durably.

A job that stops before it completes attaches the exact command that resumes it to the exception
(`resume_command_of(exc)`); the command line prints it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from layerprobe.data.lock import hold_dir_lock
from layerprobe.errors import UserError

_RESUME_ATTR = "layerprobe_resume_command"


class ProgressFn(Protocol):
    """progress(label, done, total, detail=""): how far a phase of a job is (the command line draws one
    bar per label); `detail` is a short status shown after the count (e.g. the last loss)."""

    def __call__(self, label: str, done: int, total: int, detail: str = "") -> None: ...


def resume_command_of(exc: BaseException) -> list[str] | None:
    """The command that resumes the job a stopped job's exception came from, if it attached one (also
    when another exception replaced it on the way out: click turns Ctrl-C into its own Abort)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        cmd = getattr(cur, _RESUME_ATTR, None)
        if cmd:
            return list(cmd)
        cur = cur.__cause__ or cur.__context__
    return None


def with_out(argv: Sequence[str], out: Path) -> list[str]:
    """`argv` with `--out OUT` added when it does not name the output (a default --out is made explicit,
    so the printed command finds the same directory from anywhere)."""
    args = list(argv)
    if "--out" not in args and "-o" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return args


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any], may_differ: frozenset[str] = frozenset()) -> list[str]:
    """Names of the settings whose values differ between two runs of a job, those in `may_differ` aside
    (they do not change what the job computes: the device, how often state is saved, ...)."""
    return sorted(k for k in set(old) | set(new) if k not in may_differ and old.get(k) != new.get(k))


@contextmanager
def terminate_as_interrupt(graceful: Any = None) -> Iterator[None]:
    """While the block runs, SIGTERM (and, when `graceful` is given, SIGINT) stop the job like Ctrl-C.
    `graceful()` returning True means the job can stop cleanly at its next step: the first signal only
    asks it to (the job polls `Job.stop_requested`), a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be set in the main thread
        yield
        return
    state = {"asked": False}

    def handler(signum: int, frame: object) -> None:
        if graceful is not None and graceful() and not state["asked"]:
            state["asked"] = True
            graceful.asked = True
            return
        raise KeyboardInterrupt

    signals = [signal.SIGTERM] + ([signal.SIGINT] if graceful is not None else [])
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _no_progress(label: str, done: int, total: int, detail: str = "") -> None:
    return None


class _Graceful:
    """Whether the job is in a phase that can stop cleanly (a training step), and whether it was asked to."""

    def __init__(self) -> None:
        self.active = False
        self.asked = False

    def __call__(self) -> bool:
        return self.active


class Job:
    """One job: subclasses set `out` in `prepare()` and implement `open`, `work` and `close`."""

    kind: ClassVar[str] = "job"
    out: Path
    """The output directory (set by `prepare()`)."""

    def __init__(self, progress: ProgressFn | None = None, argv: Sequence[str] = ()) -> None:
        self.progress: ProgressFn = progress or _no_progress
        self.argv = list(argv) or ["layerprobe", self.kind]
        self.refused = False
        """work() stopped on bad input (a UserError): close() may undo what open() wrote."""
        self.created = False
        """The output directory did not exist before this job (set by run())."""
        self._graceful = _Graceful()

    # -- what a job implements -------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the input and load what the job needs; write nothing. Sets `self.out`."""

    def open(self) -> None:
        """Create or resume the output (the lock is held); compare settings; record "running"."""

    def work(self) -> Any:
        """Do the job, writing results durably as they are made."""
        raise NotImplementedError

    def close(self, status: str) -> None:
        """Record the final status ("complete", "interrupted" or "failed") durably."""

    def cleanup(self) -> None:
        """Release what `prepare()` started (worker processes), whatever happened."""

    # -- the skeleton ----------------------------------------------------------------------------
    def busy_message(self, who: str) -> str:
        """The refusal when `who` (another job, named) writes the output."""
        return f"{self.out} is being written by {who}; wait for it to end or use another --out"

    def resume_command(self) -> list[str]:
        """The exact command that continues this job."""
        return with_out(self.argv, self.out)

    @property
    def stop_requested(self) -> bool:
        """A signal asked the job to stop at its next clean point (see `graceful_stops`)."""
        return self._graceful.asked

    @contextmanager
    def graceful_stops(self) -> Iterator[None]:
        """Inside the block the first Ctrl-C or SIGTERM only sets `stop_requested` (the job finishes its
        step and stops); a second one interrupts at once."""
        self._graceful.active = True
        try:
            yield
        finally:
            self._graceful.active = False

    def run(self) -> Any:
        """prepare, then open / work / close with the output locked (see the module docstring)."""
        try:
            self.prepare()
            if getattr(self, "out", None) is None:
                raise RuntimeError(f"{type(self).__name__}.prepare() did not set the output directory")
            self.created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            with hold_dir_lock(self.out, self.kind, self.argv, busy=self.busy_message):
                with terminate_as_interrupt(self._graceful):
                    self.open()
                    status = "interrupted"
                    try:
                        result = self.work()
                        status = "complete"
                    except UserError:
                        status = "failed"
                        self.refused = True
                        raise
                    except Exception as exc:
                        status = "failed"
                        setattr(exc, _RESUME_ATTR, self.resume_command())
                        raise
                    except BaseException as exc:  # KeyboardInterrupt (Ctrl-C, SIGTERM)
                        setattr(exc, _RESUME_ATTR, self.resume_command())
                        raise
                    finally:
                        self.close(status)
            return result
        finally:
            self.cleanup()
