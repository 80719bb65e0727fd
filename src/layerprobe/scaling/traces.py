"""Reading a finished trace, whoever generated it: where its thinking and its answer are, whether the
answer was forced by a thinking budget, whether the trace was cut before it answered
(docs/ingest.md#the-shapes-of-a-trace).

Three formats, each in the shapes real producers write them:

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
from typing import Literal

INGEST_FORMATS = ("s1", "think-tags", "plain")
"""Formats a finished trace can be read in (`--format`; `auto` decides from the traces)."""

Finish = Literal["answered", "budget", "max_tokens", "truncated"]

_S1 = re.compile(r"<\|im_start\|>([A-Za-z_]*)[ \t]*\n?")
_S1_BARE = re.compile(r"(?m)^(think|answer)[ \t]*(?:\n|\Z)")
_THINK_TAGS = re.compile(r"<(/?)think>[ \t]*\n?")
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
    if fmt == "s1":
        if bare:
            body = re.sub(r"\A\s*think[ \t]*\n", "", text)
            return _from_segments(_segments(body, _S1_BARE, {"think": "think", "answer": "answer"}, "answer"))
        body = re.sub(r"\A\s*<\|im_start\|>think[ \t]*\n?", "", text)
        return _from_segments(_segments(body, _S1, {"think": "think", "answer": "answer"}, "answer"))
    if fmt == "think-tags":
        body = re.sub(r"\A\s*<think>[ \t]*\n?", "", text)
        return _from_segments(_segments(body, _THINK_TAGS, {"": "think", "/": "answer"}, "answer"))
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
        name = {"s1": "s1 (<|im_start|>think … <|im_start|>answer)", "think-tags": "think-tags (<think> … </think>)"}.get(
            self.format, "plain (no thinking delimiters: the thinking is everything before the answer)"
        )
        if self.bare:
            name = "s1 with special tokens stripped (think / answer lines)"
        where = {"response": "opener in the response", "prompt": "opener in the prompt", "none": "no opener"}.get(self.opener)
        return f"{name}, {where}" if where else name


def _evidence(prompt: str, completion: str) -> str | None:
    c, p = completion.lstrip(), prompt.rstrip()
    if "<|im_start|>answer" in completion or c.startswith("<|im_start|>think") or p.endswith("<|im_start|>think"):
        return "s1"
    if "</think>" in completion or c.startswith("<think>") or p.endswith("<think>"):
        return "think-tags"
    if c.startswith("think\n") or (_S1_BARE.search(completion) and re.search(r"(?m)^answer[ \t]*$", completion)):
        return "s1-bare"
    return None


def detect_shape(prompts: Sequence[str], completions: Sequence[str], hint: str | None = None) -> Shape:
    """The format of a file's traces, from its prompts and completions (the format most traces show;
    plain when none shows one); `hint` (a format name) overrides the format, not the opener."""
    counts = {"s1": 0, "think-tags": 0, "s1-bare": 0}
    for p, c in zip(prompts, completions):
        e = _evidence(p, c)
        if e:
            counts[e] += 1
    found = max(counts, key=lambda k: counts[k]) if any(counts.values()) else "plain"
    fmt = hint or ("s1" if found == "s1-bare" else found)
    bare = fmt == "s1" and counts["s1"] == 0 and counts["s1-bare"] > 0
    opener = ""
    if fmt in ("s1", "think-tags"):
        tag = "think" if bare else {"s1": "<|im_start|>think", "think-tags": "<think>"}[fmt]
        in_prompt = sum(p.rstrip().endswith(tag) for p in prompts)
        in_resp = sum(c.lstrip().startswith(tag) for c in completions)
        half = len(completions) / 2
        opener = "prompt" if in_prompt > half else "response" if in_resp > half else "mixed" if in_prompt + in_resp else "none"
    return Shape(format=fmt, opener=opener, bare=bare, evidence={k: v for k, v in counts.items() if v})
