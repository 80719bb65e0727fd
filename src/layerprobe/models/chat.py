"""Rendering a conversation with a tokenizer's chat template, in bounded time: the template comes with
a downloaded tokenizer and is a program (Jinja), so it is untrusted input like any file."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Any

TEMPLATE_SECONDS = 2.0
"""Longest a chat template may take to render one conversation (real templates take milliseconds)."""


class TemplateTimeout(Exception):
    """A chat template did not render a conversation within TEMPLATE_SECONDS (a loop without end)."""


def render_chat(tokenizer: Any, messages: Sequence[dict[str, Any]], seconds: float = TEMPLATE_SECONDS) -> str:
    """`tokenizer.apply_chat_template(messages)` as text with the generation prompt; TemplateTimeout when
    it runs past `seconds` (the timer needs the main thread: elsewhere it runs unbounded)."""
    render = lambda: tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return str(render())

    def stop(signum: int, frame: object) -> None:
        raise TemplateTimeout(f"the chat template did not render a conversation within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return str(render())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
