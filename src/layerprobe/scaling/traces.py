"""Reading a finished trace, whoever generated it: where its thinking and its answer are, whether the
answer was forced by a thinking budget, whether the trace was cut before it answered
(docs/ingest.md#the-shapes-of-a-trace).

The formats with delimiters, and how each is written in a trace, are declared once in
scaling/formats.py (`FORMATS`); these are read, each in the shapes real producers write them:

- `s1` (s1 / s1.1, and the s1 fork of lm-evaluation-harness): thinking opened by `<|im_start|>think`
  (in the prompt or at the start of the response), ended by the next `<|im_start|>` (normally
  `<|im_start|>answer`). A budget-forced trace has `<|im_start|>answer\\nFinal Answer:` spliced in
  where the budget ran out, and may re-open thinking (`<|im_start|>think`) or answer again. With
  special tokens stripped by the producer the delimiters become bare lines `think` and `answer`.
- `think-tags` (Qwen3, DeepSeek-R1 and its distillations, DeepScaleR): thinking inside
  `<think> … </think>`; the opener may be in the prompt, in the response, or missing (a reasoning
  field glued to the answer with a literal `</think>`).
- `plain`: no thinking delimiters (a non-reasoning model, or a LIMO-style single stream). Such text is
  still reasoning: the answer is what a careful reader would take as the answer, and everything before
  it is the thinking, by one cascade for every trace (`PLAIN_RULES`): from the last final-answer marker
  (`**Final Answer**`, `Final Answer:`); else from the last line holding `\\boxed{`; else from the last
  line that states an answer ("the answer is", "Answer:", "####"); else the last non-empty line. The
  rule that split each trace is recorded (`ParsedTrace.split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from layerprobe.scaling.formats import FORMATS, ReasoningFormat


def _delimited() -> list[ReasoningFormat]:
    """The formats whose traces carry delimiters, in the order a trace that shows several is read as (read_rank)."""
    return sorted((f for f in FORMATS.values() if f.trace_pattern), key=lambda f: f.read_rank)


INGEST_FORMATS = (*(f.name for f in _delimited()), "plain")
"""Formats a finished trace can be read in (`--format`; `auto` decides from the traces)."""

Finish = Literal["answered", "budget", "max_tokens", "truncated"]


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


#: Strings after which a producer's text is not the model's any more (end-of-sequence tokens kept in the text).
_END = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<｜end▁of▁sentence｜>|<\|end_of_text\|>|<\|eot_id\|>")
_FORCED = re.compile(r"\s*Final Answer:")
# linear in the text: the spaces before "Final" are read by one quantifier only (a line of spaces is not split
# every way), as every pattern here
_MARKER = re.compile(r"(?im)^[ \t>#]*(?:\*+[ \t]*)?Final[ \t]+Answer[ \t]*\**[ \t]*:?")
_BOXED_LINE = re.compile(r"(?m)^.*\\boxed\s*\{")
_ANSWER_LINE = re.compile(r"(?im)^[^\n]*?(?:\b(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:|=)|####)")
_LAST_LINE = re.compile(r"(?m)^[ \t]*\S")
PLAIN_RULES = (
    ("a final-answer marker", _MARKER),
    ("the last \\boxed line", _BOXED_LINE),
    ("the last line stating an answer", _ANSWER_LINE),
    ("the last line", _LAST_LINE),
)
"""How a stream without delimiters is split, in order: (what the answer starts at, its pattern); the
answer starts at the last match of the first rule that matches."""


@dataclass(frozen=True)
class ParsedTrace:
    """A trace split into its thinking and its answer."""

    thinking: str
    """Every thinking segment (re-opened ones included), stripped of surrounding whitespace and joined by
    a line break; delimiters removed."""
    answer: str
    """Every answer segment, joined by a line break; delimiters and end-of-sequence tokens removed."""
    ended: bool
    """The thinking phase ended (a delimiter, a separate answer, or a plain output)."""
    forced: bool = False
    """The producer forced the answer when the thinking budget ran out (s1: `Final Answer:`)."""
    reopened: int = 0
    """Thinking segments opened again after an answer had started."""
    split: str = ""
    """For a stream without delimiters: what its answer starts at (a rule of PLAIN_RULES); "" otherwise."""


def _segments(text: str, pattern: re.Pattern[str], kind_of: dict[str, str], default: str) -> list[tuple[str, str]]:
    """(kind, text) pieces of a completion that starts inside its thinking; `kind_of` maps a matched
    delimiter's group to "think" or "answer" (`default` for any other). A delimiter that does not change
    the phase (a second `</think>` inside the answer) is the model's text, kept."""
    out: list[tuple[str, str]] = []
    kind, at = "think", 0
    for m in pattern.finditer(text):
        new = kind_of.get(m.group(1), default)
        if new == kind:
            continue
        out.append((kind, text[at : m.start()]))
        kind, at = new, m.end()
    out.append((kind, text[at:]))
    return out


def _join(segs: list[tuple[str, str]], kind: str) -> str:
    return "\n".join(t.strip() for k, t in segs if k == kind and t.strip())


def _from_segments(segs: list[tuple[str, str]]) -> ParsedTrace:
    kinds = [k for k, _ in segs]
    ended = "answer" in kinds
    first_answer = next((t for k, t in segs if k == "answer"), "")
    first = kinds.index("answer") if ended else len(kinds)
    reopened = kinds[first:].count("think")
    return ParsedTrace(
        thinking=_join(segs, "think"),
        answer=_join(segs, "answer").strip(),
        ended=ended,
        forced=ended and bool(_FORCED.match(first_answer)),
        reopened=reopened,
    )


def _cut_end(text: str) -> str:
    m = _END.search(text)
    return text[: m.start()] if m else text


def parse_trace(fmt: str, completion: str, *, bare: bool = False) -> ParsedTrace:
    """Split one completion (everything the model wrote after the prompt) in format `fmt`.

    `bare`: an s1 trace whose special tokens the producer stripped (`think` / `answer` lines)."""
    text = _cut_end(completion)
    f = FORMATS.get(fmt)
    if f is not None and f.trace_pattern:
        d = f.stripped if bare and f.stripped is not None else f.delimiters
        opener = _compiled(rf"\A\s*{re.escape(d.think)}[ \t]*\n" + ("" if d.opener_line else "?"))
        return _from_segments(_segments(opener.sub("", text, count=1), _compiled(d.pattern), dict(d.phases), "answer"))
    if fmt == "plain":
        return split_plain(text)
    raise ValueError(f"unknown trace format {fmt!r} (valid: {', '.join(INGEST_FORMATS)})")


def split_plain(text: str) -> ParsedTrace:
    """A stream without thinking delimiters, split by PLAIN_RULES: the answer from the last match of the
    first rule that matches (a final-answer marker, a `\\boxed{` line, a line stating an answer, the last
    non-empty line); everything before it is the thinking."""
    for name, pattern in PLAIN_RULES:
        marks = list(pattern.finditer(text))
        if marks:
            at = marks[-1].start()
            return ParsedTrace(thinking=text[:at].strip(), answer=text[at:].strip(), ended=True, split=name)
    return ParsedTrace(thinking="", answer=text.strip(), ended=True, split="empty")


def from_fields(reasoning: str, content: str) -> ParsedTrace:
    """A trace whose producer returned the reasoning and the answer in separate fields (vLLM's
    reasoning parser, OpenAI-compatible servers, DeepSeek's API)."""
    return ParsedTrace(thinking=reasoning.strip(), answer=_cut_end(content).strip(), ended=bool(content.strip()))


def finish_of(parsed: ParsedTrace, fmt: str, cut: bool | None) -> Finish:
    """How the trace ended. `cut`: what the producer says (True: stopped by a length cap, vLLM's
    `finish_reason: length`; False: stopped on its own; None: not said).

    A trace whose thinking never ended is `truncated` (it has no answer) unless the producer says it
    stopped on its own; a plain output is truncated only when the producer says it was cut. A trace
    cut after its thinking ended is `max_tokens` (its answer was cut); a forced answer is `budget`."""
    if cut and (fmt == "plain" or not parsed.ended):
        return "truncated"
    if not parsed.ended and cut is None:
        return "truncated"
    if cut and parsed.ended:
        return "max_tokens"
    return "budget" if parsed.forced else "answered"


@dataclass
class Shape:
    """The format a file's traces are in, as found from the traces themselves."""

    format: str
    """s1, think-tags or plain."""
    opener: str = ""
    """Where the thinking opener is: response, prompt, none, or mixed."""
    bare: bool = False
    """s1 delimiters written as bare `think` / `answer` lines (special tokens stripped)."""
    evidence: dict[str, int] = field(default_factory=dict)
    """Traces showing each format."""

    def describe(self) -> str:
        """e.g. "s1 (opener in the response)"."""
        f = FORMATS.get(self.format)
        d = f.delimiters if f is not None and f.trace_pattern else None
        name = (
            f"{self.format} ({d.think} … {d.answer})"
            if d
            else "plain (no thinking delimiters: the thinking is everything before the answer)"
        )
        if self.bare and f is not None and f.stripped is not None:
            name = f"{self.format} with special tokens stripped ({f.stripped.think} / {f.stripped.answer} lines)"
        where = {"response": "opener in the response", "prompt": "opener in the prompt", "none": "no opener"}.get(self.opener)
        return f"{name}, {where}" if where else name


def _evidence(prompt: str, completion: str) -> str | None:
    """The format a trace shows (`<name>-bare` for one written with its special tokens stripped), or None."""
    c, p = completion.lstrip(), prompt.rstrip()
    for f in _delimited():
        d = f.delimiters
        if d.answer in completion or c.startswith(d.think) or p.endswith(d.think):
            return f.name
    for f in _delimited():
        b = f.stripped
        if b is not None and (
            c.startswith(b.think + "\n")
            or (_compiled(b.pattern).search(completion) and _compiled(rf"(?m)^{re.escape(b.answer)}[ \t]*$").search(completion))
        ):
            return f"{f.name}-bare"
    return None


def detect_shape(prompts: Sequence[str], completions: Sequence[str], hint: str | None = None) -> Shape:
    """The format of a file's traces, from its prompts and completions (the format most traces show;
    plain when none shows one); `hint` (a format name) overrides the format, not the opener."""
    counts = {f.name: 0 for f in _delimited()} | {f"{f.name}-bare": 0 for f in _delimited() if f.stripped is not None}
    for p, c in zip(prompts, completions):
        e = _evidence(p, c)
        if e:
            counts[e] += 1
    found = max(counts, key=lambda k: counts[k]) if any(counts.values()) else "plain"
    fmt = hint or found.removesuffix("-bare")
    f = FORMATS.get(fmt)
    bare = f is not None and f.stripped is not None and counts.get(fmt) == 0 and counts.get(f"{fmt}-bare", 0) > 0
    opener = ""
    if f is not None and f.trace_pattern:
        tag = f.stripped.think if bare and f.stripped is not None else f.delimiters.think
        in_prompt = sum(p.rstrip().endswith(tag) for p in prompts)
        in_resp = sum(c.lstrip().startswith(tag) for c in completions)
        half = len(completions) / 2
        opener = "prompt" if in_prompt > half else "response" if in_resp > half else "mixed" if in_prompt + in_resp else "none"
    return Shape(format=fmt, opener=opener, bare=bare, evidence={k: v for k, v in counts.items() if v})


def rebuild(shape: Shape, reasoning: str, content: str) -> str:
    """The completion as the model wrote it, from a reasoning field and an answer field (what probes
    and the stored text use): the format's delimiters between them, its opener first unless the prompt has it."""
    f = FORMATS.get(shape.format)
    if f is not None and f.between:
        return ("" if shape.opener == "prompt" else f.prompt_suffix) + f"{reasoning}{f.between}{content}"
    return f"{reasoning}\n\n{content}"


def _find(ids: Sequence[int], sub: Sequence[int]) -> int:
    """First index of `sub` in `ids`, -1 when absent."""
    n = len(sub)
    return next((i for i in range(len(ids) - n + 1) if n and list(ids[i : i + n]) == list(sub)), -1)


def split_ids(tokenizer: Any, fmt: ReasoningFormat, ids: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(thinking ids, answer ids) of a generated completion with one thinking segment: the opener at
    its start (if the model wrote it) left out, split at the first end-of-thinking delimiter spelled as
    tokens, the answer after the answer opener, without a final stop token; None when no delimiter
    occurs as a token sequence."""
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)
    opener = enc(fmt.prompt_suffix)
    start = len(opener) if opener and list(ids[: len(opener)]) == opener else 0
    found = [(i, d) for d in (enc(s) for s in fmt.end_think) if (i := _find(ids[start:], d)) >= 0]
    if not found:
        return None
    i, d = min(found, key=lambda x: x[0])
    i += start
    answer_open = enc(fmt.answer_open)
    rest = list(ids[i:])
    answer = rest[len(answer_open) :] if rest[: len(answer_open)] == answer_open else rest[len(d) :]
    if answer and answer[-1] == tokenizer.eos_token_id:
        answer = answer[:-1]
    return list(ids[start:i]), answer
