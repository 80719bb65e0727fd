"""What every trace source gives the ingest job: the traces it read (`Item`) and what a file said about
them (`Read`), and the checks every reader applies to a foreign file's lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe._io import TOO_LONG, iter_json_lines
from layerprobe.data.schema import MAX_COUNT
from layerprobe.errors import UserError
from layerprobe.rules import MAX_LINE_BYTES, as_int
from layerprobe.scaling.formats import sniff_format
from layerprobe.scaling.traces import INGEST_FORMATS, Shape, detect_shape


@dataclass
class Item:
    """One trace read from a file, before grading and probing."""

    problem_id: str
    prompt: str
    completion: str
    gold: str
    group: str
    sample: int
    budget: int | None
    line: int
    external: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None
    """The prompt's token ids, when the file gives them (then the text is not re-tokenized)."""
    no_prompt: bool = False
    """The file gives no prompt for this trace (text-only ingest reads it; probes need the prompt)."""
    completion_ids: list[int] | None = None
    """The completion's token ids as generated, when the file gives them."""
    reasoning: str | None = None
    """The thinking, when the producer returned it in its own field (then `completion` is the answer)."""
    cut: bool | None = None
    """What the producer says: True cut by a length cap (finish_reason "length"), False stopped on its own."""
    cap: int | None = None
    """The producer's token cap on the whole completion (lm-eval's max_gen_toks), when known."""
    messages: list[dict[str, Any]] | None = None
    """A chat prompt as messages (rendered with the tokenizer's chat template)."""


@dataclass
class Read:
    """What one file gave: its traces, the lines left out (by reason), and what it says about its producer."""

    path: Path
    items: list[Item]
    skipped: Counter[str]
    producer: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    special_tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Special tokens of the producer's tokenizer, as the file records them: name -> (text, id)."""
    merged: int = 0
    """lm-eval lines that repeat a document under another filter, folded into its traces."""
    shape: Shape | None = None
    """The format its traces are in (decided from the traces)."""
    examples: list[str] = field(default_factory=list)
    """One example of each kind of error line that was skipped (shown as a warning)."""


def json_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object or NOT_JSON / TOO_LONG) of a file's non-blank lines (_io.iter_json_lines)."""
    try:
        return list(iter_json_lines(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def skip_bad_line(read: Read, value: Any, what: str) -> bool:
    """Count a line that is not a JSON object (or is too long to read); True when it was one."""
    if value == TOO_LONG:
        read.skipped[f"a line over {MAX_LINE_BYTES // 2**20} MiB (not read)"] += 1
    elif not isinstance(value, dict):
        read.skipped[what] += 1
    else:
        return False
    return True


def positive_int(x: Any) -> int | None:
    """A token count from a foreign file: 1 to MAX_COUNT, else None."""
    v = as_int(x)
    return v if v is not None and 0 < v <= MAX_COUNT else None


def gold_text(x: Any) -> str:
    """A gold answer from a file as text ("" when there is none: the trace is then not graded)."""
    if isinstance(x, bool) or x is None:
        return ""
    return str(x) if isinstance(x, (str, int, float)) else ""


def tokenizer_warnings(tokenizer: Any, read: Read) -> list[str]:
    """Evidence that the traces come from a model with another tokenizer: a special token the file
    records whose text maps to another id (or to nothing) in `tokenizer`."""
    out = []
    for name, (text, tid) in read.special_tokens.items():
        if tid < 0:
            continue
        mine = tokenizer.convert_tokens_to_ids(text) if text else None
        if mine is None or mine != tid or mine == getattr(tokenizer, "unk_token_id", object()):
            out.append(
                f"the traces' tokenizer has {name} token {text!r} = id {tid}, the --model tokenizer {mine}: "
                "the traces may come from another model (probes assume --model produced them)"
            )
    return out


def file_shape(read: Read, hint: str | None, tokenizer: Any) -> Shape:
    """The format of one file's traces: `hint` (--format) or what the traces show; a file whose every
    trace came with its reasoning in a separate field takes the prompts' opener or the tokenizer's format."""
    inline = [it for it in read.items if it.reasoning is None]
    if inline:
        return detect_shape([it.prompt for it in inline], [it.completion for it in inline], hint)
    shape = detect_shape([it.prompt for it in read.items], ["" for _ in read.items], hint)
    if shape.format == "plain" and hint is None:
        fmt = sniff_format(tokenizer)
        if fmt in INGEST_FORMATS:
            shape = Shape(format=fmt, opener="none")
    return shape
