"""Reasoning formats: how thinking is opened, ended, extended ("Wait") and cut off (DESIGN.md §5)."""

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
class ReasoningFormat:
    """Text conventions of one family of reasoning models.

    - `prompt_suffix` is appended to the chat-templated prompt to open the thinking phase;
    - `end_think` are the strings that end thinking when the model emits them;
    - `answer_open` replaces a natural end of thinking (the answer phase starts after it);
    - `forced_answer` is appended when the thinking budget runs out;
    - `wait_text` replaces an early end of thinking when extension by "Wait" is asked for;
    - `answer_stop` are extra strings that end the answer (besides the tokenizer's EOS).
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
    ),
}


def get_format(name: str) -> ReasoningFormat:
    """The format called `name`; UserError listing the valid names otherwise."""
    if name not in FORMATS:
        raise UserError(f"unknown reasoning format '{name}' (valid: {', '.join(FORMATS)})")
    return FORMATS[name]


def detect_format(tokenizer: Any, hint: str | None = None) -> ReasoningFormat:
    """The reasoning format of a model: `hint` (alias or --format) if given, else from the tokenizer.

    think-tags when `<think>` and `</think>` are in the vocabulary; otherwise an error asking for
    --format (s1 models use the plain Qwen2.5 vocabulary, so they cannot be told apart from a chat
    model and must be named: the `s1.1-7b` alias does that).
    """
    if hint:
        return get_format(hint)
    vocab = tokenizer.get_vocab()
    if "<think>" in vocab and "</think>" in vocab:
        return FORMATS["think-tags"]
    raise UserError(
        "cannot detect the model's reasoning format from its tokenizer (no <think> tokens); "
        f"pass --format ({', '.join(FORMATS)})"
    )
