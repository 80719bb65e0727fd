"""Batched generation with thinking budgets, "Wait" extension and per-sample seeds.

One decode loop drives a Hugging Face causal LM with its own KV cache and attention kernel:
left-padded prefill, then one token per step for every live sequence. Each sequence has its own
state (phase, budget, counters, random generator), so sequences in one batch never influence each
other's choices: results do not depend on batch size or order. Finished sequences are removed from
the batch (and from the cache). Observers see every forward pass, which is where the probes hook in.

Sequential budgets share their prefix. Requests for the same prompt and seed that differ only in
their thinking budget (and use no "Wait" extension) are generated once, at the largest budget: when
that trace's thinking reaches a smaller budget B, the sequence is forked (its KV cache row and its
random generator's state are copied) and the fork is forced to answer, exactly as a separate run
with budget B would be at that point. A trace whose thinking ends on its own before B is the budget-B
trace itself (reported as a copy). Only the answers of the smaller budgets are generated again.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from layerprobe.errors import UserError
from layerprobe.models.hooks import cache_kwarg
from layerprobe.scaling.formats import ReasoningFormat, Sampling

THINK, ANSWER, DONE = 0, 1, 2


def derive_seed(run_seed: int, problem_id: str, sample: int) -> int:
    """A 63-bit seed from (run seed, problem id, sample index): every sample gets its own."""
    digest = hashlib.sha256(f"{run_seed}\x1f{problem_id}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class GenRequest:
    """One trace to generate."""

    key: Any  # caller's identifier, returned with the result
    prompt: str  # full prompt text, thinking already opened (see build_prompt)
    budget: int  # maximum thinking tokens
    seed: int = 0
    wait: int = 0  # how many early ends of thinking to replace by "Wait"
    answer_max: int = 64


@dataclass
class GenResult:
    """A generated trace, thinking and answer counted separately."""

    key: Any
    prompt_tokens: int
    thinking_ids: list[int]
    answer_ids: list[int]
    finish: str  # answered | budget | max_tokens
    waits: int  # "Wait" insertions made
    budget_hit: bool
    all_ids: list[int] = field(default_factory=list)  # everything after the prompt, forced text included
    thinking_text: str = ""
    answer_text: str = ""
    text: str = ""
    origin: str = "generated"  # generated | prefix (forked from a longer budget's trace) | copy (identical to it)
    origin_key: Any = None  # key of the request whose trace this one was forked or copied from

    @property
    def thinking_tokens(self) -> int:
        return len(self.thinking_ids)

    @property
    def answer_tokens(self) -> int:
        return len(self.answer_ids)


class GenerationObserver(Protocol):
    """Hook point for per-step statistics (the probes): called around every forward pass."""

    def on_forward(self, keys: Sequence[Any], attention_mask: torch.Tensor, prefill: bool) -> None: ...

    def on_tokens(self, keys: Sequence[Any], tokens: Sequence[int], phases: Sequence[int]) -> None: ...

    def on_finish(self, result: GenResult) -> None: ...

    # Optional: `on_fork(parent_key, child_key)` when a sequence is forked at a smaller budget (the
    # child's history up to now is the parent's).


def build_prompt(tokenizer: Any, fmt: ReasoningFormat, user_text: str) -> str:
    """Chat-templated user turn with the generation prompt, then the format's thinking opener."""
    if getattr(tokenizer, "chat_template", None):
        from layerprobe.models.chat import TemplateTimeout, render_chat

        try:
            chat = render_chat(tokenizer, [{"role": "user", "content": user_text}])
        except TemplateTimeout as exc:
            raise UserError(f"{exc}: the model's tokenizer holds a chat template that does not end") from None
    else:
        chat = user_text + "\n"
    if chat.endswith(fmt.prompt_suffix):  # the template opens thinking itself (DeepSeek-R1's does): once only
        return chat
    return chat + fmt.prompt_suffix


@dataclass
class _Tokens:
    end_think: set[int]
    answer_stop: set[int]
    answer_open: list[int]
    forced_answer: list[int]
    wait: list[int]
    pad: int
    end_strings: list[str] = field(default_factory=list)  # end-of-thinking strings this tokenizer spells with several tokens
    window: int = 0  # trailing thinking tokens to decode when looking for them
    answer_open_text: str = ""


def format_tokens(tokenizer: Any, model: Any, fmt: ReasoningFormat) -> _Tokens:
    """Token ids of the format's delimiters for this tokenizer."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    end: set[int] = set()
    multi: list[str] = []
    for s in fmt.end_think:
        ids = enc(s)
        if len(ids) == 1 and ids[0] == tokenizer.unk_token_id:
            raise UserError(f"the reasoning format needs '{s}' (end of thinking), which is not in this tokenizer's vocabulary")
        if len(ids) == 1:
            end.add(ids[0])
        else:  # spelled by several tokens: found by matching the decoded end of the thinking, as stop strings are
            multi.append(s)
    stops: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            stops.add(source)
        elif isinstance(source, (list, tuple)):
            stops.update(int(s) for s in source)
    vocab = tokenizer.get_vocab()
    stops.update(vocab[s] for s in fmt.answer_stop if s in vocab)
    if not stops:
        raise UserError("the tokenizer has no EOS token: cannot tell where an answer ends")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops))
    window = max((len(enc(s)) for s in multi), default=0) + 2
    return _Tokens(
        end, stops, enc(fmt.answer_open), enc(fmt.forced_answer), enc(fmt.wait_text), pad, multi, window, fmt.answer_open
    )


class _Row:
    __slots__ = (
        "req",
        "gen",
        "phase",
        "queue",
        "thinking",
        "answer",
        "all",
        "waits",
        "budget_hit",
        "finish",
        "prompt_len",
        "forks",
        "fork_now",
        "origin",
        "origin_key",
    )

    def __init__(self, req: GenRequest, device: torch.device, prompt_len: int) -> None:
        self.req = req
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(req.seed)
        self.phase = THINK
        self.queue: deque[tuple[int, int]] = deque()  # (token, phase it counts in; -1 = forced text)
        self.thinking: list[int] = []
        self.answer: list[int] = []
        self.all: list[int] = []
        self.waits = 0
        self.budget_hit = False
        self.finish = ""
        self.prompt_len = prompt_len
        self.forks: list[tuple[int, int, GenRequest]] = []  # (budget, request index, request) still to fork, ascending
        self.fork_now: list[tuple[int, GenRequest]] = []  # forks due after this step
        self.origin = "generated"
        self.origin_key: Any = None

    def child(self, index_req: tuple[int, GenRequest], device: torch.device) -> _Row:
        """A copy of this row (history, random generator state) for a smaller budget's request."""
        _, req = index_req
        c = _Row(req, device, self.prompt_len)
        c.gen.set_state(self.gen.get_state())
        c.thinking, c.all, c.waits = list(self.thinking), list(self.all), self.waits
        c.origin, c.origin_key = "prefix", self.req.key
        return c


def _warpers(sampling: Sampling) -> list[Any]:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out: list[Any] = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_k and sampling.top_k > 0:
        out.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(sampling.top_p))
    return out


class TraceGenerator:
    """Generates reasoning traces under a format, thinking budgets and a sampling setting."""

    def __init__(self, model: Any, tokenizer: Any, fmt: ReasoningFormat, sampling: Sampling | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.sampling = sampling if sampling is not None else fmt.sampling
        if self.sampling.temperature < 0 or not 0 < self.sampling.top_p <= 1 or self.sampling.top_k < 0:
            raise UserError("sampling needs temperature >= 0, 0 < top-p <= 1 and top-k >= 0")
        self.tokens = format_tokens(tokenizer, model, fmt)
        self.device = next(model.parameters()).device
        self._warp = [] if self.sampling.greedy else _warpers(self.sampling)

    def generate(
        self,
        requests: Sequence[GenRequest],
        batch_size: int = 16,
        observers: Sequence[GenerationObserver] = (),
        on_result: Callable[[GenResult], None] | None = None,
        share_prefixes: bool = True,
    ) -> list[GenResult]:
        """Generate every request; results in request order. `on_result` is called as each finishes."""
        results: dict[int, GenResult] = {}
        for idx, res in self.iter_generate(requests, batch_size, observers, share_prefixes):
            results[idx] = res
            if on_result is not None:
                on_result(res)
        return [results[i] for i in range(len(requests))]

    def iter_generate(
        self,
        requests: Sequence[GenRequest],
        batch_size: int = 16,
        observers: Sequence[GenerationObserver] = (),
        share_prefixes: bool = True,
    ) -> Iterator[tuple[int, GenResult]]:
        """Yield (request index, result) as traces finish. Requests are batched by prompt length.

        With `share_prefixes`, requests that differ only in their budget share one generation (see
        the module docstring); the results are the same as generating each request on its own."""
        if batch_size < 1:
            raise UserError("batch size must be >= 1")
        for r in requests:
            if r.budget < 0 or r.answer_max < 1 or r.wait < 0:
                raise UserError(f"bad request {r.key}: budget must be >= 0, answer cap >= 1, wait >= 0")
        encoded = [self.tokenizer.encode(r.prompt, add_special_tokens=False) for r in requests]
        leaders: list[int] = list(range(len(requests)))
        forks: dict[int, list[tuple[int, GenRequest]]] = {}
        if share_prefixes:
            leaders, forks = _share_prefixes(requests)
        order = sorted(leaders, key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield from self._run_batch([(i, requests[i], encoded[i]) for i in chunk], observers, forks)

    @torch.inference_mode()
    def _run_batch(
        self,
        items: list[tuple[int, GenRequest, list[int]]],
        observers: Sequence[GenerationObserver],
        forks: dict[int, list[tuple[int, GenRequest]]] | None = None,
    ):
        from transformers import DynamicCache

        tk = self.tokens
        width = max(len(ids) for _, _, ids in items)
        input_ids = torch.full((len(items), width), tk.pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for b, (_, _, ids) in enumerate(items):  # left padding: (B, T)
            input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[b, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        rows = [_Row(req, self.device, len(ids)) for _, req, ids in items]
        index = [i for i, _, _ in items]
        for row, i in zip(rows, index):
            row.forks = sorted(((r.budget, j, r) for j, r in (forks or {}).get(i, [])), key=lambda t: t[0])
        cache = DynamicCache(config=self.model.config)
        cache_kw = cache_kwarg(self.model, cache)  # the cache is changed in place: one dict for the whole batch
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        for r in rows:  # a zero budget forces the answer at once
            if r.req.budget == 0:
                self._force_answer(r)
        prefill = True
        while rows:
            for obs in observers:
                obs.on_forward([r.req.key for r in rows], mask, prefill)
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **cache_kw)
            prefill = False
            logits = out.logits[:, -1, :].float()  # (B, V)
            chosen = self._choose(logits, rows)
            fed, keep = [], []
            for b, (row, tok) in enumerate(zip(rows, chosen)):
                tok = self._advance(row, tok)
                fed.append(tok)
                if row.phase != DONE:
                    keep.append(b)
            for obs in observers:
                obs.on_tokens([r.req.key for r in rows], fed, [r.phase for r in rows])
            for b, row in enumerate(rows):
                if row.phase == DONE:
                    res = self._result(row)
                    for obs in observers:
                        obs.on_finish(res)
                    yield index[b], res
                    for _, j, req in row.forks:  # smaller budgets the thinking never reached: the same trace
                        yield j, self._result(row, copy_for=req)
            # forks due: each child copies its parent's cache row and feeds the same token next
            new = [(b, j, req) for b, row in enumerate(rows) if row.phase != DONE for j, req in row.fork_now]
            for b, j, req in new:
                child = rows[b].child((j, req), self.device)
                self._force_answer(child)
                rows.append(child)
                index.append(j)
                fed.append(fed[b])
                keep.append(len(rows) - 1)
                mask = torch.cat([mask, mask[b : b + 1]], dim=0)
                positions = torch.cat([positions, positions[b : b + 1]], dim=0)
                cache.batch_select_indices(torch.tensor(list(range(len(rows) - 1)) + [b], device=self.device))
                for obs in observers:
                    on_fork = getattr(obs, "on_fork", None)
                    if on_fork is not None:
                        on_fork(rows[b].req.key, req.key)
            for row in rows:
                row.fork_now = []
            if not keep:
                break
            if len(keep) < len(rows):
                sel = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(sel)
                mask = mask[sel]
                positions = positions[sel]
                rows = [rows[b] for b in keep]
                index = [index[b] for b in keep]
                fed = [fed[b] for b in keep]
            input_ids = torch.tensor(fed, dtype=torch.long, device=self.device).unsqueeze(-1)  # (B, 1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            positions = positions[:, -1:] + 1

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> list[int | None]:
        """The model's choice for each row (None where the row feeds forced text next)."""
        need = [b for b, r in enumerate(rows) if not r.queue]
        out: list[int | None] = [None] * len(rows)
        if not need:
            return out
        if self.sampling.greedy:
            picks = logits[need].argmax(-1).tolist()
            for b, t in zip(need, picks):
                out[b] = int(t)
            return out
        scores = logits[need]
        for w in self._warp:
            scores = w(None, scores)
        probs = torch.softmax(scores, dim=-1)
        for j, b in enumerate(need):
            out[b] = int(torch.multinomial(probs[j], 1, generator=rows[b].gen))
        return out

    def _force_answer(self, row: _Row) -> None:
        row.budget_hit = True
        row.phase = ANSWER
        row.queue.extend((t, -1) for t in self.tokens.forced_answer)

    def _queue_wait(self, row: _Row) -> bool:
        """Budget forcing at an end of thinking: queue another "Wait" when the row has Waits left and room
        in its budget for one (True), else leave the row to answer (False)."""
        wait = self.tokens.wait
        if row.waits < row.req.wait and len(wait) < row.req.budget - len(row.thinking):
            row.waits += 1
            row.queue.extend((t, THINK) for t in wait)
            return True
        return False

    def _advance(self, row: _Row, tok: int | None) -> int:
        """Apply one step of the row's state machine; returns the token fed to the model next."""
        tk = self.tokens
        if tok is None:  # forced text or a Wait continuation
            tok, counts = row.queue.popleft()
            row.all.append(tok)
            if counts == THINK:
                row.thinking.append(tok)
                if len(row.thinking) >= row.req.budget and row.phase == THINK:
                    self._force_answer(row)
            return tok
        if row.phase == THINK:
            if tok in tk.end_think or tok in tk.answer_stop:  # an EOS while thinking also ends thinking
                if not self._queue_wait(row):
                    row.phase = ANSWER
                    row.queue.extend((t, -1) for t in tk.answer_open)
                    if not row.queue:  # a format whose answer needs no opener: feed the end token itself
                        row.all.append(tok)
                        return tok
                return self._advance(row, None)
            row.thinking.append(tok)
            row.all.append(tok)
            if tk.end_strings:
                m, s = self._multi_end(row)
                if m:  # the model has just finished writing a multi-token end of thinking
                    del row.thinking[-m:]  # it is a delimiter, not thinking (it stays in the model's context)
                    if not self._queue_wait(row):
                        row.phase = ANSWER
                        if tk.answer_open_text.strip() != s.strip():  # the model wrote the opener itself otherwise
                            row.queue.extend((t, -1) for t in tk.answer_open)
                    return tok
            while row.forks and row.forks[0][0] <= len(row.thinking):  # a smaller budget is reached: fork there
                _, j, req = row.forks.pop(0)
                row.fork_now.append((j, req))
            if len(row.thinking) >= row.req.budget:
                self._force_answer(row)
            return tok
        # answer phase
        row.all.append(tok)
        if tok in tk.answer_stop:
            row.phase, row.finish = DONE, "budget" if row.budget_hit else "answered"
            return tok
        row.answer.append(tok)
        if len(row.answer) >= row.req.answer_max:
            row.phase, row.finish = DONE, "max_tokens"
        return tok

    def _multi_end(self, row: _Row) -> tuple[int, str]:
        """(m, s): the thinking's last m tokens complete the end-of-thinking string s (smallest such m),
        or (0, "") when they do not."""
        tk = self.tokens
        tail = row.thinking[-tk.window :]
        text = self.tokenizer.decode(tail, skip_special_tokens=False)
        for s in tk.end_strings:
            if s in text and s not in self.tokenizer.decode(tail[:-1], skip_special_tokens=False):
                for m in range(1, len(tail) + 1):
                    if s in self.tokenizer.decode(tail[-m:], skip_special_tokens=False):
                        return m, s
        return 0, ""

    def _result(self, row: _Row, copy_for: GenRequest | None = None) -> GenResult:
        dec = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)
        return GenResult(
            key=row.req.key if copy_for is None else copy_for.key,
            origin=row.origin if copy_for is None else "copy",
            origin_key=row.origin_key if copy_for is None else row.req.key,
            prompt_tokens=row.prompt_len,
            thinking_ids=row.thinking,
            answer_ids=row.answer,
            finish=row.finish,
            waits=row.waits,
            budget_hit=row.budget_hit,
            all_ids=row.all,
            thinking_text=dec(row.thinking),
            answer_text=dec(row.answer),
            text=dec(row.all),
        )


def _share_prefixes(requests: Sequence[GenRequest]) -> tuple[list[int], dict[int, list[tuple[int, GenRequest]]]]:
    """(indices of the requests to generate, {leader index: [(index, request) forked from it]}).

    Requests with the same prompt, seed and answer cap, no "Wait" extension and a budget >= 1 are
    grouped; the one with the largest budget leads, the others are forked from it. Duplicate budgets
    are not grouped (each is generated)."""
    groups: dict[tuple, list[int]] = {}
    leaders: list[int] = []
    for i, r in enumerate(requests):
        if r.wait == 0 and r.budget >= 1:
            groups.setdefault((r.prompt, r.seed, r.answer_max), []).append(i)
        else:
            leaders.append(i)
    forks: dict[int, list[tuple[int, GenRequest]]] = {}
    for members in groups.values():
        members.sort(key=lambda i: requests[i].budget)
        lead = members[-1]
        leaders.append(lead)
        seen = {requests[lead].budget}
        for i in members[:-1]:
            if requests[i].budget in seen:
                leaders.append(i)  # the same budget twice: generate it (a copy would hide a duplicate request)
                continue
            seen.add(requests[i].budget)
            forks.setdefault(lead, []).append((i, requests[i]))
    return sorted(leaders), forks
