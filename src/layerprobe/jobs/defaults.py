"""The settings an analysis gets when the command line leaves them unset, per kind of model: a light table
(no torch, no pydantic), so that `layerprobe analyze --help` can name the defaults without importing the job."""

from __future__ import annotations

from dataclasses import dataclass


#: Defaults per kind of model: the toy must finish in about two minutes on a laptop CPU; real
#: models follow the study (budgets 512 ... 8192, 16 samples); --quick is a first look.
@dataclass(frozen=True)
class Defaults:
    """Settings a run gets when the command line leaves them unset."""

    budgets: tuple[int, ...]
    samples: int
    limit: int | None
    n_drop: int
    methods: tuple[str, ...]
    answer_max: int = 64
    """Token cap of the answer after thinking."""


TOY_DEFAULTS = Defaults(
    budgets=(8, 16, 32, 64, 128), samples=8, limit=10, n_drop=2, methods=("shortgpt", "reverse"), answer_max=8
)
REAL_DEFAULTS = Defaults(budgets=(512, 1024, 2048, 4096, 8192), samples=16, limit=None, n_drop=2, methods=("shortgpt",))
QUICK_DEFAULTS = Defaults(budgets=(256, 1024), samples=4, limit=10, n_drop=2, methods=("shortgpt",))
