"""`layerprobe judge`: every selected trace of a run sent to a judge model, once per behaviour of a
taxonomy, over an OpenAI-compatible chat endpoint (docs/judge.md).

A job on the skeleton (jobs/job.py), holding the run's lock (RUN/.lock) like every job that writes a
run: `prepare()` reads the run and the taxonomy and checks the endpoint, key and
model with one tiny call (bad input is one line, before anything is written); `open()` compares the
settings with an earlier judging of the run; `work()` keeps at most --concurrency calls in flight and
appends one JudgeCall per (trace, behaviour) to RUN/judge/calls.jsonl as each returns, flushed to disk,
so a judging killed at any point (even by kill -9) resumes with no stored call asked again; `close()`
records the status and writes judge.json.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe._io import check_can_write
from layerprobe.data.judge import (
    FINAL,
    JUDGE_FILE,
    STATE_FILE,
    TEXTS,
    CallLog,
    judge_dir,
    read_calls,
    read_state,
    select_traces,
    text_sha,
    trace_text,
    write_judge,
)
from layerprobe.data.lock import check_free
from layerprobe.data.reader import Run, load_run
from layerprobe.data.schema import JudgeCall, JudgeFile, JudgeSession, JudgeState, SampleRecord
from layerprobe.data.store import now, write_model
from layerprobe.errors import UserError
from layerprobe.jobs.job import Job, ProgressFn, settings_differences
from layerprobe.judge.client import Answer, JudgeClient, display_endpoint, request_sha
from layerprobe.judge.taxonomy import load_taxonomy

MAX_CONCURRENCY = 64
"""The most calls kept in flight at once."""
MAX_RETRIES = 20
"""The most retries of one call."""
MAY_DIFFER = frozenset({"endpoint", "api_key_env", "taxonomy_source"})
"""Settings a later session may change without setting the earlier calls aside: where the judge is reached
(a local server on another port), the variable the key is read from, where the same taxonomy was read."""


@dataclass
class JudgeSettings:
    """What `layerprobe judge` was asked."""

    run_dir: Path
    endpoint: str
    judge_model: str
    key_env: str = "OPENAI_API_KEY"
    taxonomy: str = "study"
    text: str = "response"
    first_sample: bool = False
    budget: int | str | None = None
    temperature: float = 0.0
    max_tokens: int = 4096
    timeout: float = 120.0
    retries: int = 4
    concurrency: int = 4
    max_calls: int | None = None
    force: bool = False

    def check(self) -> None:
        """UserError, naming the flag, for a value that cannot be used."""
        if self.text not in TEXTS:
            raise UserError(f"--text {self.text}: expected one of {', '.join(TEXTS)}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UserError(f"--concurrency {self.concurrency}: must be 1 to {MAX_CONCURRENCY}")
        if self.max_calls is not None and self.max_calls < 1:
            raise UserError(f"--max-calls {self.max_calls}: must be at least 1")
        if not 1 <= self.max_tokens <= 1_000_000:
            raise UserError(f"--max-tokens {self.max_tokens}: must be 1 to 1,000,000")
        if not 0 < self.timeout <= 3600:
            raise UserError(f"--timeout {self.timeout:g}: must be more than 0 and at most 3600 seconds")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise UserError(f"--retries {self.retries}: must be 0 to {MAX_RETRIES}")
        if not 0 <= self.temperature <= 2:
            raise UserError(f"--temperature {self.temperature:g}: must be 0 to 2")
        if isinstance(self.budget, int) and self.budget < 0:
            raise UserError(f"--budget {self.budget}: must be 0 or more, or max")
        if not self.judge_model.strip():
            raise UserError("--judge-model: give the name the endpoint knows the judge by")
        if not self.key_env or not self.key_env.replace("_", "").isalnum():
            raise UserError(f"--api-key-env {self.key_env!r}: the name of an environment variable (letters, digits, _)")


def parse_budget(text: str | None) -> int | str | None:
    """--budget: a number of thinking tokens, or "max" (the run's largest); UserError otherwise."""
    if text is None:
        return None
    if text == "max":
        return "max"
    if text.isdigit():
        return int(text)
    raise UserError(f"--budget {text}: expected a thinking budget (a whole number) or max")


@dataclass
class _Item:
    """One (trace, behaviour) to ask about."""

    key: tuple
    trace: SampleRecord
    behaviour: str
    messages: list[dict[str, str]]
    request: str
    trace_sha: str
    followers: list[_Item] = field(default_factory=list)
    """Items with an identical request: they get this item's reply without a call."""


class Judge(Job):
    """Ask a judge model to count behaviours in a run's traces (module docstring)."""

    kind = "judge"

    def __init__(self, settings: JudgeSettings, progress: ProgressFn | None = None, argv: Sequence[str] = ()) -> None:
        super().__init__(progress, argv)
        self.settings = settings
        self.out = Path(settings.run_dir)
        self.session = JudgeSession()
        self.summary: JudgeFile | None = None
        self.remaining = 0
        """(trace, behaviour) pairs still without a standing record when the job stopped."""
        self.stopped = ""
        self.failed: dict[str, int] = {}
        """This session's records without a count, by outcome."""
        self._last_save = 0.0

    def resume_command(self) -> list[str]:
        return list(self.argv)  # the run directory is its argument, not an --out

    def busy_message(self, who: str) -> str:
        return f"{self.out} is being written by {who}; judge it when that ends"

    # -- prepare ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        s = self.settings
        s.check()
        self.run_read = run = load_run(s.run_dir, extras=False)  # the traces; its explain.json, judge.json: not needed
        check_can_write(run.dir, "the run directory")
        folder = judge_dir(run.dir)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is not a folder: move it away (the judge keeps its records in RUN/{folder.name}/)")
        self.taxonomy, self.taxonomy_source = load_taxonomy(s.taxonomy)
        self.selection: dict[str, Any] = {"first_sample": s.first_sample, "budget": s.budget}
        self.traces = select_traces(run.samples, self.selection)
        if not self.traces:
            what = f" at budget {s.budget}" if s.budget is not None else ""
            budgets = sorted({r.budget for r in run.samples})
            raise UserError(
                f"{run.dir} has no trace{what} to judge"
                + (f" (its budgets: {', '.join(map(str, budgets))}, or max)" if budgets and s.budget is not None else "")
            )
        if not any(trace_text(r, s.text).strip() for r in self.traces):  # every call would ask about nothing
            raise UserError(
                f"--text {s.text}: none of the {len(self.traces)} selected traces of {run.dir} has any {s.text} text"
                + (" (a model that answers without thinking); use --text response" if s.text == "thinking" else "")
            )
        self.problems = problem_texts(run, self.traces) if self.taxonomy.uses("problem") else {}
        self.client = JudgeClient(
            s.endpoint,
            s.judge_model,
            key_env=s.key_env,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            timeout=s.timeout,
            retries=s.retries,
        )
        check_free(run.dir, self.kind, self.busy_message)  # before a call to the endpoint: refused at once
        self.client.check()

    def cleanup(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    # -- open ------------------------------------------------------------------------------------
    def stored_settings(self) -> dict[str, Any]:
        """The settings that determine the replies (compared when the command is run again)."""
        s = self.settings
        return {
            "endpoint": display_endpoint(s.endpoint),
            "judge_model": s.judge_model,
            "api_key_env": s.key_env,
            "taxonomy": self.taxonomy.name,
            "taxonomy_sha": self.taxonomy.sha1(),
            "taxonomy_source": self.taxonomy_source,
            "text": s.text,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }

    def open(self) -> None:
        """Resume an earlier judging of the run with the same settings; other settings are refused unless
        --force, which sets the earlier judging aside (judge.<time>.bak) and starts afresh."""
        settings = self.stored_settings()
        old = read_state(self.out)
        diff = settings_differences(old.settings, settings, MAY_DIFFER) if old else []
        if diff and not self.settings.force:
            raise UserError(
                f"{self.out} was judged with other settings ({', '.join(diff)}); run the same command as before to go on, "
                "or add --force to set that judging aside and start afresh"
            )
        if diff:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            os.replace(judge_dir(self.out), self.out / f"judge.{stamp}.bak")
            if (self.out / JUDGE_FILE).exists():
                os.replace(self.out / JUDGE_FILE, self.out / f"{JUDGE_FILE}.{stamp}.bak")
            old = None
        if judge_dir(self.out).is_symlink():
            raise UserError(f"{judge_dir(self.out)} is a link; a run directory must hold its own files")
        judge_dir(self.out).mkdir(exist_ok=True)
        self.state = old or JudgeState(settings=settings, created=now())
        self.state.settings = settings
        self.state.selection = self.selection
        self.state.taxonomy = self.taxonomy.model_dump()
        self.state.command, self.state.resume_command = self.argv, self.resume_command()
        self.session.started = now()
        self.state.sessions.append(self.session)
        self.log = CallLog(self.out)
        self._save("running")

    def _save(self, status: str | None = None) -> None:
        if status is not None:
            self.state.status = status  # type: ignore[assignment]
        running = self.state.status == "running"
        self.state.pid, self.state.host = (os.getpid(), socket.gethostname()) if running else (None, None)
        self.state.updated = now()
        write_model(judge_dir(self.out) / STATE_FILE, self.state)
        self._last_save = time.perf_counter()

    # -- work ------------------------------------------------------------------------------------
    def plan(self) -> tuple[list[_Item], list[tuple[_Item, JudgeCall]]]:
        """(items to ask, items answered by a stored record of an identical request). An item is done
        when its stored record is for the same trace text and request and stands (FINAL, or an error that
        would not pass)."""
        s, tax = self.settings, self.taxonomy
        stored = read_calls(self.out).records
        by_request = {r.request: r for r in stored.values() if r.outcome in FINAL and r.attempts > 0}
        todo: dict[str, _Item] = {}
        reuse: list[tuple[_Item, JudgeCall]] = []
        for r in self.traces:
            text = trace_text(r, s.text)
            sha = text_sha(text)
            for b in tax.titles():
                key = (*r.key(), b)
                problem = self.problems.get(r.problem_id, "")
                messages = tax.messages(b, text, problem, r.gold)
                req = request_sha(s.judge_model, messages, s.temperature, s.max_tokens)
                old = stored.get(key)
                if (
                    old is not None
                    and old.trace_sha == sha
                    and old.request == req
                    and (old.outcome in FINAL or not old.retryable)
                ):
                    continue
                item = _Item(key, r, b, messages, req, sha)
                if req in by_request:
                    reuse.append((item, by_request[req]))
                elif req in todo:
                    todo[req].followers.append(item)
                else:
                    todo[req] = item
        return list(todo.values()), reuse

    def work(self) -> JudgeFile | None:
        s = self.settings
        t0 = time.perf_counter()
        items, reuse = self.plan()
        total = len(items) + sum(len(i.followers) for i in items) + len(reuse)
        done = 0
        for item, rec in reuse:
            self._write(item, None, reused=rec)
            done += 1
        # the bar counts calls (where the time goes), so its ETA is the calls' pace
        label = f"judge calls ({s.judge_model.rstrip('/').rsplit('/', 1)[-1][:24]})"
        self.progress(label, 0, len(items), f"{done} records from identical requests")
        jobs: queue.Queue[_Item | None] = queue.Queue()
        results: queue.Queue[tuple[_Item, Answer | BaseException]] = queue.Queue()

        def worker() -> None:
            while True:
                it = jobs.get()
                if it is None:
                    return
                try:
                    results.put((it, self.client.ask(it.messages, self.taxonomy.rule(it.behaviour))))
                except BaseException as exc:  # noqa: BLE001 - re-raised in the job's thread: a worker that died silently hung it
                    results.put((it, exc))

        threads = [threading.Thread(target=worker, daemon=True, name=f"judge-{k}") for k in range(min(s.concurrency, len(items)))]
        for t in threads:
            t.start()
        pending = list(reversed(items))
        in_flight = 0
        sent = 0
        failing = 0
        outage_after = max(4, 2 * s.concurrency)
        try:
            while pending or in_flight:
                while pending and in_flight < s.concurrency and not self.stopped:
                    if s.max_calls is not None and sent >= s.max_calls:
                        self.stopped = f"--max-calls {s.max_calls} reached"
                        break
                    jobs.put(pending.pop())
                    in_flight += 1
                    sent += 1
                if not in_flight:
                    break
                try:
                    item, answer = results.get(timeout=0.5)
                except queue.Empty:
                    continue
                in_flight -= 1
                if isinstance(answer, BaseException):
                    raise answer
                self._write(item, answer)
                done += 1 + len(item.followers)
                failing = failing + 1 if answer.retryable else 0
                tokens = self.session.prompt_tokens + self.session.completion_tokens
                detail = f"{tokens:,} tokens, {sum(self.failed.values())} without a count"
                self.progress(label, self.session.calls, len(items), detail)
                if answer.fatal:
                    self.stopped = answer.fatal
                    pending.clear()
                elif failing >= outage_after and not self.stopped:
                    self.stopped = f"the judge stopped answering ({failing} calls in a row failed, the last: {answer.reason})"
                    pending.clear()
                if time.perf_counter() - self._last_save > 10:
                    self._save()
        finally:
            for _ in threads:
                jobs.put(None)
            self.session.seconds = round(self.session.seconds + time.perf_counter() - t0, 2)
        self.remaining = total - done
        if self.stopped and not self.stopped.startswith("--max-calls"):
            raise UserError(
                f"{self.stopped}; {done} of {total} records written, every one kept: run the same command again to go on"
            )
        return None

    def _write(self, item: _Item, answer: Answer | None, reused: JudgeCall | None = None) -> None:
        """Append the record of `item` (and of its followers, which share the reply) and count it."""
        s = self.settings
        session = len(self.state.sessions) - 1
        if reused is not None:
            self.session.reused += 1
            self._record(_shared(reused, item, session=session, started=time.time(), seconds=0.0))
            return
        assert answer is not None
        rec = JudgeCall(
            variant=item.trace.variant,
            problem_id=item.trace.problem_id,
            mode=item.trace.mode,
            budget=item.trace.budget,
            sample=item.trace.sample,
            behaviour=item.behaviour,
            outcome=answer.outcome,  # type: ignore[arg-type]
            count=answer.count,
            reason=answer.reason,
            reply=answer.reply,
            finish_reason=answer.finish_reason,
            judge_model=s.judge_model,
            served_model=answer.served_model,
            reply_id=answer.reply_id,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            attempts=answer.attempts,
            status_code=answer.status_code,
            retryable=answer.retryable,
            started=answer.started,
            seconds=round(answer.seconds, 3),
            request=item.request,
            trace_sha=item.trace_sha,
            session=session,
        )
        self.session.calls += 1
        self.session.requests += answer.attempts
        self.session.prompt_tokens += answer.prompt_tokens or 0
        self.session.completion_tokens += answer.completion_tokens or 0
        self._record(rec)
        for f in item.followers:
            self.session.reused += 1
            self._record(_shared(rec, f))

    def _record(self, rec: JudgeCall) -> None:
        self.log.append(rec)
        if rec.outcome != "count":
            self.failed[rec.outcome] = self.failed.get(rec.outcome, 0) + 1

    # -- close -----------------------------------------------------------------------------------
    def close(self, status: str) -> None:
        if not hasattr(self, "state"):
            return
        self.log.close()
        if status == "complete" and self.remaining:
            status = "interrupted"  # --max-calls: resumable
        self.session.stopped = self.stopped
        self._save(status)
        self.summary = write_judge(self.out, self.run_read.info, self.run_read.samples)


def _shared(rec: JudgeCall, item: _Item, **more: Any) -> JudgeCall:
    """The record of `item` that shares `rec`'s reply (an identical request): no call, no tokens of its own."""
    t = item.trace
    keys = {"variant": t.variant, "problem_id": t.problem_id, "mode": t.mode, "budget": t.budget, "sample": t.sample}
    return rec.model_copy(
        update={
            **keys,
            "behaviour": item.behaviour,
            "trace_sha": item.trace_sha,
            "attempts": 0,
            "prompt_tokens": None,
            "completion_tokens": None,
            "reused_from": list(rec.key()),
            **more,
        }
    )


def problem_texts(run: Run, traces: Sequence[SampleRecord]) -> dict[str, str]:
    """Problem id -> the problem as the judge sees it: the question of an analyze run's task (loaded as
    analyze loaded it), or the prompt an ingested trace was given. UserError when a problem's text
    cannot be found (the taxonomy's prompts show the problem)."""
    texts: dict[str, str] = {}
    if run.info.origin == "ingest":
        for r in traces:
            prompt = (r.external or {}).get("prompt")
            if isinstance(prompt, str) and prompt:
                texts.setdefault(r.problem_id, prompt)
    else:
        from layerprobe.tasks.registry import load_problems

        task_file = run.info.config.task_file
        _, problems, _ = load_problems(
            run.info.task.name, run.info.config.limit, run.info.config.seed or 0, Path(task_file) if task_file else None
        )
        texts = {p.id: p.question for p in problems}
    missing = sorted({r.problem_id for r in traces} - set(texts))
    if missing:
        raise UserError(
            f"the taxonomy's prompts show the problem ({{problem}}), but the text of {len(missing)} problem(s) of {run.dir} "
            f"cannot be found (e.g. {missing[0]}); use a taxonomy whose prompts have no {{problem}}"
        )
    return texts


def judge(settings: JudgeSettings, progress: ProgressFn | None = None, argv: Sequence[str] = ()) -> Judge:
    """Run the Judge job; returns it (its `summary`, `session` and `stopped`)."""
    job = Judge(settings, progress, argv)
    job.run()
    return job
