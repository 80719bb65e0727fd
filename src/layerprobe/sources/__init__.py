"""Trace sources: the kinds of file `layerprobe ingest --from NAME` reads, each in its own module that
turns one file into `common.Read` (its traces as `common.Item`s, the lines it left out and why).

`SOURCES` is the one table of them: `ingest --from` takes its names, `ingest --help` shows its words,
and the job calls the reader it names. Adding a source is one module here and one row in `SOURCES`
(docs/architecture.md#adding-a-trace-source). The table imports no reader, so the CLI can show it
without loading them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from layerprobe.sources.gold import gold_fields_words

if TYPE_CHECKING:
    from layerprobe.sources.common import Read


@dataclass(frozen=True)
class Source:
    """One `--from` name and where its reader is."""

    name: str
    """The `--from` name."""
    reader: str
    """`module:function` (a module of this package, or any importable one); the function reads one file
    (a Path) into a `Read`."""
    help: str
    """What the files look like, as `ingest --help` shows it after the name."""
    file_hint: str = ""
    """Added to "give the JSONL file of traces" when a path given is not a file."""
    no_gold_hint: str = ""
    """Added to "not graded (no gold answer" when a trace has none: where this source reads it from."""

    def read(self, path: Path) -> Read:
        """Read one file of this source (UserError when it is not one)."""
        module, function = self.reader.split(":")
        fn: Callable[[Path], Read] = getattr(import_module(module), function)
        return fn(path)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "lm-eval",
            "layerprobe.sources.lm_eval:read_lm_eval",
            " (lm-evaluation-harness --log_samples)",
            file_hint=", samples_<task>_<date>.jsonl",
        ),
        Source(
            "jsonl",
            "layerprobe.sources.jsonl:read_jsonl",
            ": one object per line with id, prompt (optional with --no-probes), completion, and the gold answer under "
            f"one of the fields {gold_fields_words()}",
            no_gold_hint=f" in any of the fields {gold_fields_words()}",
        ),
    )
}
"""Every trace source by its `--from` name (the first is listed first in `--help`)."""


def sources_help() -> str:
    """`ingest --from`'s help: every source with its words."""
    return " | ".join(s.name + s.help for s in SOURCES.values()) + " (docs/ingest.md)"
