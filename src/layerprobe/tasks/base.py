"""Problems and task descriptions shared by every task source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem with a stable id and its gold answer.

    answer_type: 'digit' (toy), 'integer' (AIME), 'math' (math-verify) or 'mc' (gold is a letter).
    For 'mc' the question text already lists the (shuffled) choices as lettered lines.
    """

    id: str
    question: str
    gold: str
    answer_type: str
    group: str = ""  # e.g. toy task type or subject: used for long-vs-short comparisons
    choices: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskInfo:
    """What a task is and where its problems come from (recorded in every run)."""

    name: str
    answer_type: str
    description: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "test"
    size: int | None = None
    regime: str = "long"  # long | short | knowledge: what the task controls for
