"""`--from jsonl`: one object per line, in the shapes real producers write (docs/ingest.md#--from-jsonl)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from layerprobe.data.schema import MAX_COUNT
from layerprobe.errors import UserError
from layerprobe.rules import as_int
from layerprobe.sources.common import Item, Read, gold_text, json_lines, skip_bad_line
from layerprobe.sources.gold import GOLD_FIELDS, gold_field, gold_fields_words, gold_like_fields

_API_ERROR = re.compile(
    r"\A\s*(?:Error code: \d{3}\b|(?:[\w.]+\.)?\w*(?:API|RateLimit|Timeout|Connection|InternalServer|BadRequest|"
    r"Authentication|ServiceUnavailable|PermissionDenied)\w*Error\b|Request timed out|Traceback \(most recent call last\))"
)
_ERROR_MAX_CHARS = 2000


_COMPLETION_FIELDS = "completion (or content / choices)"


def _skip_error(read: Read, reason: str, message: str) -> None:
    """Count a line that holds an error, and keep the first message of each kind as an example."""
    if not read.skipped[reason]:
        read.examples.append(f"{read.path.name}: {reason}, e.g. {message.strip()[:120]!r}")
    read.skipped[reason] += 1


def _api_error(text: str) -> bool:
    """Whether a completion is an API client's error message rather than a model's text."""
    return len(text) <= _ERROR_MAX_CHARS and bool(_API_ERROR.match(text))


class Refusal(str):
    """Why a record gives no trace (counted as a skip with this reason)."""


def _either(obj: dict[str, Any], names: tuple[str, str]) -> str | None | Refusal:
    """The text of whichever of two fields that mean the same thing holds one (a null field counts as
    absent; an empty one as empty); a Refusal when one is not text or both hold different texts."""
    given = [(k, obj[k]) for k in names if obj.get(k) is not None]
    if any(not isinstance(v, str) for _, v in given):
        return Refusal(f"{' / '.join(names)} not a string")
    texts = list(dict.fromkeys(v.strip() for _, v in given if v.strip()))
    if len(texts) > 1:
        return Refusal(f"{names[0]} and {names[1]} disagree (which one the model wrote is unknown: neither is kept)")
    return next((v for _, v in given if v.strip()), given[0][1] if given else None)


def _sample(obj: dict[str, Any], whole: str, cut: bool | None) -> tuple[str, str | None, bool | None] | Refusal:
    """(completion or answer, reasoning or None, cut) of one sample: the whole completion in `whole`
    (`completion`, or `text` inside `choices`) or the answer in `content` beside the reasoning
    (`reasoning_content` or `reasoning`). A reasoning field with a null or empty `content` is a trace cut
    during its thinking (vLLM's reasoning parser at `finish_reason: length`). A completion beside the
    separate fields is accepted when it is their text (the same answer, or the reasoning followed by
    the answer); the fields are read."""
    reasoning = _either(obj, ("reasoning_content", "reasoning"))
    if isinstance(reasoning, Refusal):
        return reasoning
    completion, content = obj.get(whole), obj.get("content")
    for name, value in ((whole, completion), ("content", content)):
        if value is not None and not isinstance(value, str):
            return Refusal(f"{name} not a string")
    full = completion.strip() if isinstance(completion, str) else ""
    answer = content.strip() if isinstance(content, str) else ""
    if reasoning is None:
        if full and answer and full != answer:
            return Refusal(f"{whole} and content disagree (which one the model wrote is unknown: neither is kept)")
        text = completion if full else content if answer else None
        return (text, None, cut) if text is not None else Refusal(f"missing {_COMPLETION_FIELDS}")
    thinking = reasoning.strip()
    if full and not answer and full != thinking:  # an answer may be in the completion only
        return Refusal(f"{whole} beside reasoning_content / reasoning without content (give the answer as content)")
    if full and answer and full != answer and not (thinking in full and full.endswith(answer)):
        return Refusal(f"{whole} disagrees with reasoning_content / reasoning + content (neither is kept)")
    if not answer and not reasoning.strip():
        return Refusal(f"missing {_COMPLETION_FIELDS}")
    return (content or "", reasoning, cut)


#: finish_reason values (any case) that say a length cap cut the trace (OpenAI / vLLM, Anthropic, Gemini)
#: and that say the model stopped on its own; any other value says neither.
_CUT_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})
_STOP_REASONS = frozenset({"stop", "end_turn", "stop_sequence", "eos", "tool_calls", "function_call"})


def _cut_of(reason: Any) -> bool | None:
    """What a finish_reason says: True cut by a length cap, False stopped on its own, None neither (absent,
    not text, or another reason such as a content filter or an abort)."""
    if not isinstance(reason, str):
        return None
    r = reason.strip().lower()
    return True if r in _CUT_REASONS else False if r in _STOP_REASONS else None


def _completions(row: dict[str, Any]) -> list[tuple[str, str | None, bool | None] | Refusal] | str:
    """(completion or answer, reasoning or None, cut) per sample of a JSONL line, or why there is none.
    One sample from the line itself (`_sample`), or one per choice of `choices` (an OpenAI-compatible
    response, also under `response`; a choice's `message` or the choice itself): a choice that gives no
    trace is a Refusal in its place (counted; the others are kept), all of them the line's refusal."""
    choices = row.get("choices")
    if choices is None and isinstance(row.get("response"), dict):
        choices = row["response"].get("choices")
    if isinstance(choices, list) and choices:
        out: list[tuple[str, str | None, bool | None] | Refusal] = []
        for ch in choices:
            if not isinstance(ch, dict):
                out.append(Refusal("choices that are not objects"))
                continue
            msg: dict[str, Any] = ch["message"] if isinstance(ch.get("message"), dict) else ch
            out.append(_sample(msg, "text", _cut_of(ch.get("finish_reason"))))
        return str(out[0]) if all(isinstance(o, Refusal) for o in out) else out
    cut = _cut_of(row.get("finish_reason"))
    if isinstance(row.get("truncated"), bool):
        cut = row["truncated"]
    one = _sample(row, "completion", cut)
    return str(one) if isinstance(one, Refusal) else [one]


def read_jsonl(path: Path) -> Read:
    """One object per line (docs/ingest.md#--from-jsonl): id, prompt (or chat messages; a line without
    one is read, marked `no_prompt`), the completion in one of its shapes (`completion`; `content` beside
    `reasoning_content` / `reasoning`; `choices`), and optionally the gold answer (under a name of
    sources.gold.GOLD_FIELDS), group, budget, sample, model, finish_reason / truncated, prompt_ids and
    completion_ids (the token ids as generated). A line holding an error instead of a trace is skipped
    and counted; a file whose gold answer is under another name that looks like one is refused."""
    read = Read(path=path, items=[], skipped=Counter())
    any_object = has_gold = False
    gold_like: list[str] = []
    for n, row in json_lines(path):
        if skip_bad_line(read, row, "not a JSON object"):
            continue
        any_object = True
        pid = row.get("id", row.get("problem_id"))
        messages = row.get("messages")
        prompt = row.get("prompt")
        if row.get("error") not in (None, "", {}):
            _skip_error(read, "an error instead of a trace (an error field)", str(row["error"]))
            continue
        samples = _completions(row)
        missing = [k for k, v in (("id", pid),) if v in (None, "")]  # no prompt: read, said, left out by probes
        if isinstance(samples, str):
            if not samples.startswith("missing "):
                read.skipped[samples] += 1
                continue
            missing.append(samples.removeprefix("missing "))
        if missing or isinstance(samples, str):
            read.skipped[f"missing {', '.join(missing)}"] += 1
            continue
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            read.skipped["id not a string or integer"] += 1
            continue
        if messages is not None and (
            not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            read.skipped["messages not a list of {role, content} objects"] += 1
            continue
        no_prompt = messages is None and prompt in (None, "")
        if messages is None and not no_prompt and not isinstance(prompt, str):
            read.skipped["prompt not a string"] += 1
            continue
        budget, sample = row.get("budget"), row.get("sample", 0)
        b_int, s_int = (None if budget is None else as_int(budget)), as_int(sample)
        if (
            (budget is not None and (b_int is None or not 0 <= b_int <= MAX_COUNT))
            or s_int is None
            or not 0 <= s_int <= MAX_COUNT
        ):
            read.skipped[f"budget / sample not integers from 0 to {MAX_COUNT:,}"] += 1
            continue
        budget, sample = b_int, s_int
        ids = {k: row.get(k) for k in ("prompt_ids", "completion_ids")}
        if any(
            v is not None and (not isinstance(v, list) or not v or not all(type(t) is int and t >= 0 for t in v))
            for v in ids.values()
        ) or (ids["completion_ids"] is not None and len(samples) > 1):
            read.skipped["prompt_ids / completion_ids not lists of token ids"] += 1
            continue
        for why in (x for x in samples if isinstance(x, Refusal)):
            read.skipped[f"a choice of a response: {why}"] += 1
        kept = [(k, x) for k, x in enumerate(samples) if not isinstance(x, Refusal)]
        errors = [x for _, x in kept if x[1] is None and _api_error(x[0])]
        if errors:
            _skip_error(read, "an API error message instead of a trace", errors[0][0])
            continue
        if row.get("model"):
            read.producer = str(row["model"])
        for k, (completion, reasoning, cut) in kept:
            read.items.append(
                Item(
                    problem_id=str(pid),
                    prompt=prompt if isinstance(prompt, str) else "",
                    completion=completion,
                    gold=gold_text(row.get(gold_field(row) or GOLD_FIELDS[0])),
                    group=str(row.get("group", "")),
                    sample=sample + k,
                    budget=budget,
                    line=n,
                    external={"source": "jsonl", "file": str(path), "line": n},
                    prompt_ids=ids["prompt_ids"],
                    completion_ids=ids["completion_ids"],
                    reasoning=reasoning,
                    cut=cut,
                    messages=messages,
                    no_prompt=no_prompt,
                )
            )
        if gold_field(row) is None and not gold_like:
            gold_like = gold_like_fields(row)
        has_gold = has_gold or gold_field(row) is not None
    if not any_object:
        raise UserError(
            f"{path} holds no JSON object lines (expected one object per line: id, prompt, completion[, gold, group, budget, sample])"
        )
    if not has_gold and gold_like:
        raise UserError(
            f"{path}: no gold-answer field ({gold_fields_words()}), but '{gold_like[0]}' looks like one: rename it to "
            "gold (or another of those names) to grade the traces, or drop it to ingest them ungraded"
        )
    return read
