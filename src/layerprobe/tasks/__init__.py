"""Tasks: problem loaders, prompts, answer extraction and grading."""

from layerprobe.tasks.base import Problem, TaskInfo
from layerprobe.tasks.grading import (
    Grade,
    MathGrader,
    extract_boxed,
    extract_choice,
    grade,
)
from layerprobe.tasks.registry import TASKS, get_task, load_problems

__all__ = [
    "TASKS",
    "Grade",
    "MathGrader",
    "Problem",
    "TaskInfo",
    "extract_boxed",
    "extract_choice",
    "get_task",
    "grade",
    "load_problems",
]
