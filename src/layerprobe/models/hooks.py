"""The one way layerprobe looks inside (or intervenes in) a model's decoder layers: forward hooks
registered for the duration of a `with` block and removed on exit, also on errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from layerprobe.models.loaded import LoadedModel


def first_tensor(value: Any) -> torch.Tensor:
    """A decoder layer's hidden state: transformers 5 returns a tensor, older versions a tuple."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    hs = getattr(value, "hidden_states", None) if not isinstance(value, (tuple, list)) else None
    if isinstance(hs, torch.Tensor):
        return hs
    raise TypeError(f"cannot find the hidden state in a decoder layer's output of type {type(value).__name__}")


def replace_first_tensor(value: Any, new: torch.Tensor) -> Any:
    """A decoder layer's output with its hidden state replaced by `new` (same container type)."""
    if isinstance(value, torch.Tensor):
        return new
    if isinstance(value, tuple):
        return (new, *value[1:])
    if isinstance(value, list):
        return [new, *value[1:]]
    raise TypeError(f"cannot replace the hidden state in a decoder layer's output of type {type(value).__name__}")


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state entering a decoder layer, from a forward (pre-)hook's arguments."""
    x = args[0] if args else kwargs.get("hidden_states")
    if x is None:
        raise TypeError("could not find the hidden state entering a decoder layer")
    return first_tensor(x)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the duration of a block; the previous training flag is restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


#: on_output(position, layer input (B, T, H), layer output (B, T, H)) -> a replacement output or None.
OutputHook = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


@contextmanager
def layer_hooks(
    loaded: LoadedModel,
    on_output: OutputHook | None = None,
    *,
    positions: Sequence[int] | None = None,
    on_input: Callable[[torch.Tensor], None] | None = None,
) -> Iterator[None]:
    """Hooks on the decoder layers of `loaded` (positions in `loaded.layers`, default all) while the
    block runs: `on_input(x)` sees the hidden state entering the first layer, `on_output(i, x_in,
    x_out)` each hooked layer's input and output; when it returns a tensor, that tensor replaces the
    layer's output (an intervention). Every hook is removed on exit, also on errors."""
    layers = loaded.layers
    chosen = range(len(layers)) if positions is None else list(positions)
    handles: list[Any] = []

    def make(i: int) -> Callable[..., Any]:
        def hook(_module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
            assert on_output is not None
            new = on_output(i, layer_input(args, kwargs), first_tensor(output))
            return None if new is None else replace_first_tensor(output, new)

        return hook

    try:
        if on_input is not None:

            def pre(_module: Any, args: tuple, kwargs: dict) -> None:
                on_input(layer_input(args, kwargs))

            handles.append(layers[0].register_forward_pre_hook(pre, with_kwargs=True))
        if on_output is not None:
            for i in chosen:
                handles.append(layers[i].register_forward_hook(make(i), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def cache_kwarg(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword that passes a KV cache to `model`'s forward: `cache` in transformers >= 5.24,
    `past_key_values` before (the old name still works there but warns on every call)."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@contextmanager
def input_hooks(modules: dict[str, torch.nn.Module], on_input: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """While the block runs, `on_input(name, x)` sees the first positional input of each named module
    (e.g. the activations entering a linear layer, (B, T, in)); every hook is removed on exit, also on errors."""
    handles: list[Any] = []

    def make(name: str) -> Callable[..., None]:
        def pre(_module: Any, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                on_input(name, args[0])

        return pre

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(make(name)))
        yield
    finally:
        for h in handles:
            h.remove()


def last_logits_kwarg(model: torch.nn.Module) -> dict[str, Any]:
    """The keyword that makes `model` compute the next-token logits of the last position only (a
    forward pass run for its hidden states need not unembed every position: B·T·V values), when its
    forward takes one."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}
