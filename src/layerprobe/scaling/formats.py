"""Reasoning formats: how thinking is opened, ended, extended ("Wait") and cut off
(docs/definitions.md#reasoning-formats), and how a finished trace shows it. `FORMATS` is the one
declaration of each format's delimiters: the generator (scaling/engine.py) writes them and the parser
(scaling/traces.py) reads them; adding a format is one entry there (docs/architecture.md#adding-a-reasoning-format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerprobe.errors import UserError


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Delimiters:
    """How a finished trace marks its thinking and its answer, as the parser reads them."""

    think: str
    """The text that opens the thinking; a completion starting with it, or a prompt ending with it, shows the format."""
    answer: str
    """The text that starts the answer; a completion holding it shows the format."""
    pattern: str
    """A regex of every phase delimiter in a completion (with the spaces and line break after it); its
    group 1 names the phase the delimiter opens, by `phases`. Linear in the text."""
    phases: tuple[tuple[str, str], ...]
    """group 1 of `pattern` -> "think" or "answer"; a delimiter with any other group 1 opens the answer."""
    opener_line: bool = False
    """The opener at the start of a completion counts only as a line of its own (bare words such as `think`)."""


@dataclass(frozen=True)
class ReasoningFormat:
    """Text conventions of one family of reasoning models.

    - `prompt_suffix` is appended to the chat-templated prompt to open the thinking phase;
    - `end_think` are the strings that end thinking when the model emits them;
    - `answer_open` replaces a natural end of thinking (the answer phase starts after it);
    - `forced_answer` is appended when the thinking budget runs out;
    - `wait_text` replaces an early end of thinking when extension by "Wait" is asked for;
    - `answer_stop` are extra strings that end the answer (besides the tokenizer's EOS);
    - `trace_pattern` and `trace_phases` find the delimiters in a finished trace (`delimiters`, whose
      opener is `prompt_suffix` and whose answer marker is `answer_open`, both stripped), `stripped`
      the same when the producer stripped special tokens, `between` joins a thinking and its answer
      returned in separate fields, `read_rank` decides for a trace that shows several formats (lowest first).
    """

    name: str
    prompt_suffix: str
    end_think: tuple[str, ...]
    answer_open: str
    forced_answer: str
    wait_text: str = "Wait"
    answer_stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    description: str = ""
    trace_pattern: str = ""
    trace_phases: tuple[tuple[str, str], ...] = ()
    stripped: Delimiters | None = None
    between: str = ""
    read_rank: int = 0

    @property
    def delimiters(self) -> Delimiters:
        """The delimiters of a finished trace of this format."""
        return Delimiters(self.prompt_suffix.strip(), self.answer_open.strip(), self.trace_pattern, self.trace_phases)


FORMATS: dict[str, ReasoningFormat] = {
    "think-tags": ReasoningFormat(
        name="think-tags",
        prompt_suffix="<think>\n",
        end_think=("</think>",),
        answer_open="</think>",
        forced_answer="\n</think>\n\n",
        answer_stop=("<|im_end|>", "<|endoftext|>"),
        sampling=Sampling(temperature=0.6, top_p=0.95, top_k=20),  # Qwen3's recommendation; never greedy
        description="Qwen3, DeepSeek-R1-Distill and the toy: <think> ... </think> then the answer",
        trace_pattern=r"<(/?)think>[ \t]*\n?",
        trace_phases=(("", "think"), ("/", "answer")),
        between="\n</think>\n\n",
        read_rank=1,
    ),
    "s1": ReasoningFormat(
        name="s1",
        prompt_suffix="<|im_start|>think\n",
        end_think=("<|im_start|>",),
        answer_open="<|im_start|>answer\n",
        forced_answer="\n<|im_start|>answer\nFinal Answer:",
        answer_stop=("<|im_end|>", "<|endoftext|>"),
        sampling=Sampling(temperature=0.0),
        description="s1 / s1.1: <|im_start|>think ... <|im_start|>answer",
        trace_pattern=r"<\|im_start\|>([A-Za-z_]*)[ \t]*\n?",  # any other role ends the thinking too
        trace_phases=(("think", "think"), ("answer", "answer")),
        stripped=Delimiters(
            "think",
            "answer",
            r"(?m)^(think|answer)[ \t]*(?:\n|\Z)",
            (("think", "think"), ("answer", "answer")),
            opener_line=True,
        ),
        between="\n<|im_start|>answer\n",
        read_rank=0,
    ),
}


def get_format(name: str) -> ReasoningFormat:
    """The format called `name`; UserError listing the valid names otherwise."""
    if name not in FORMATS:
        raise UserError(f"unknown reasoning format '{name}' (valid: {', '.join(FORMATS)})")
    return FORMATS[name]


def sniff_format(tokenizer: Any) -> str | None:
    """The reasoning format a tokenizer shows, or None.

    think-tags when `<think>` and `</think>` are in the vocabulary (Qwen3, R1-Distill; checked first, so
    ChatML models with think tokens never get s1 delimiters); s1 when `<|im_start|>` is a token and the
    chat template itself writes `<|im_start|>think` or `<|im_start|>answer`. s1.1 itself ships Qwen2.5's
    plain ChatML template, which any chat model has: it cannot be told apart and must be named (the
    `s1.1-7b` alias does that).
    """
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab()
    if "<think>" in vocab and "</think>" in vocab:
        return "think-tags"
    template = getattr(tokenizer, "chat_template", None)
    if "<|im_start|>" in vocab and isinstance(template, str):
        if "<|im_start|>think" in template or "<|im_start|>answer" in template:
            return "s1"
    return None


def detect_format(tokenizer: Any, hint: str | None = None) -> ReasoningFormat:
    """The reasoning format of a model: `hint` (alias or --format) if given, else from the tokenizer
    (see `sniff_format`); an error asking for --format when the tokenizer shows none."""
    if hint:
        return get_format(hint)
    name = sniff_format(tokenizer)
    if name is not None:
        return FORMATS[name]
    raise UserError(
        "cannot detect the model's reasoning format from its tokenizer (no <think> tokens, no s1 template); "
        f"pass --format ({', '.join(FORMATS)})"
    )
