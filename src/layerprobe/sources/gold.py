"""The field names `layerprobe ingest --from jsonl` reads a gold answer from: one table, used by the reader
and named by `ingest --help` and docs/ingest.md. Kept apart from the reader so that the CLI can name
the fields without importing it."""

from __future__ import annotations

import re
from typing import Any

GOLD_FIELDS = ("gold", "answer", "target", "solution", "expected")
"""Fields that hold a trace's gold answer, in order of precedence (the first one present wins). `answer`
is the name task files use (README, --task-file)."""

_GOLD_LIKE = re.compile(r"gold|answer|target|truth|solution|expected|reference", re.IGNORECASE)
_NOT_GOLD = re.compile(r"(?:_|^)(?:tokens?|ids?|hash|len|length|count|type|start|end|field|format)$", re.IGNORECASE)
_MODEL_SIDE = re.compile(r"pred|model|extract|generat|respon|output|parsed|sampled", re.IGNORECASE)


def gold_field(row: dict[str, Any]) -> str | None:
    """The first field of GOLD_FIELDS present in a JSONL object (not null, not ""), or None."""
    return next((k for k in GOLD_FIELDS if row.get(k) not in (None, "")), None)


def gold_like_fields(row: dict[str, Any]) -> list[str]:
    """Fields of a JSONL object that look like a gold answer but are not read as one (e.g. `ground_truth`,
    `reference_answer`): a text or a number under a name that says gold, answer, target, truth, solution,
    expected or reference (not a count or an id such as `answer_tokens`, not the model's side such as
    `predicted_answer` or `model_answer`)."""
    return [
        k
        for k, v in row.items()
        if k not in GOLD_FIELDS
        and _GOLD_LIKE.search(k)
        and not _NOT_GOLD.search(k)
        and not _MODEL_SIDE.search(k)
        and isinstance(v, (str, int, float))
        and not isinstance(v, bool)
        and v != ""
    ]


def gold_fields_words() -> str:
    """The accepted names in words: "gold, answer, target, solution or expected"."""
    return ", ".join(GOLD_FIELDS[:-1]) + f" or {GOLD_FIELDS[-1]}"
