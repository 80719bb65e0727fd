"""Task registry: the toy's embedded tasks and the study's benchmarks (hub or local JSONL).

Hub tasks load through `datasets` when reachable; otherwise `--task-file` JSONL with one problem per
line: `id`, `question`, `answer`, optional `choices` (list; then `answer` is the correct choice text or
its letter) and `group`. Offline with neither is an error that says how to provide the file.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from layerprobe._io import read_user_text
from layerprobe.errors import UserError
from layerprobe.tasks.base import Problem, TaskInfo

TOY_TYPES = ("short", "mid", "long", "xlong", "facts")

TASKS: dict[str, TaskInfo] = {
    **{
        f"toy-{t}": TaskInfo(
            f"toy-{t}", "digit", f"embedded toy: {t} problems", regime={"short": "short", "facts": "knowledge"}.get(t, "long")
        )
        for t in TOY_TYPES
    },
    "toy-mix": TaskInfo("toy-mix", "digit", "embedded toy: long chains + short chains + facts", regime="mixed"),
    "toy-shallow": TaskInfo(
        "toy-shallow", "digit", "embedded toy: short chains + facts (what a non-reasoning model can do)", regime="mixed"
    ),
    "arith": TaskInfo("arith", "integer", "arithmetic word problems generated offline: 2-step and 8-step chains", regime="mixed"),
    "aime24": TaskInfo("aime24", "integer", "AIME 2024, 30 problems", "HuggingFaceH4/aime_2024", None, "train", 30),
    "math500": TaskInfo("math500", "math", "MATH-500", "HuggingFaceH4/MATH-500", None, "test", 500),
    "gpqa-diamond": TaskInfo(
        "gpqa-diamond", "mc", "GPQA Diamond (choices shuffled per problem)", "Idavidrein/gpqa", "gpqa_diamond", "train", 198
    ),
    "gsm8k": TaskInfo("gsm8k", "integer", "GSM8K test (shallow control)", "openai/gsm8k", "main", "test", 1319, "short"),
    "mmlu": TaskInfo("mmlu", "mc", "MMLU (knowledge control)", "cais/mmlu", "all", "test", 14042, "knowledge"),
}


def _stable_id(task: str, text: str) -> str:
    return f"{task}-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _toy_problems(name: str, limit: int | None, seed: int) -> list[Problem]:
    from layerprobe.toy.tasks import sample_problems

    mixes = {"toy-mix": ["long", "short", "facts"], "toy-shallow": ["short", "facts"]}
    types = mixes.get(name, [name.removeprefix("toy-")])
    n = limit or 30
    out = []
    for t in types:
        for p in sample_problems(t, n, seed=seed):
            out.append(Problem(p.id, p.prompt, p.answer, "digit", group=p.task_type, meta={"steps": p.steps}))
    return out


def _mc_problem(task: str, pid: str, question: str, choices: list[str], correct: str, group: str = "") -> Problem:
    """Shuffle choices with a seed fixed by the problem id; the gold becomes the correct letter."""
    rng = random.Random(pid)
    order = list(range(len(choices)))
    rng.shuffle(order)
    shuffled = [choices[i] for i in order]
    letters = "ABCDEFGHIJ"
    gold = letters[shuffled.index(correct)]
    body = question.strip() + "\n\n" + "\n".join(f"{letters[i]}) {c}" for i, c in enumerate(shuffled))
    body += "\n\nAnswer with the letter of the correct choice."
    return Problem(pid, body, gold, "mc", group=group, choices=tuple(shuffled))


def _from_rows(task: TaskInfo, rows: list[dict[str, Any]]) -> list[Problem]:
    out = []
    for r in rows:
        if task.name == "gpqa-diamond" and "Question" in r:
            choices = [r["Correct Answer"], r["Incorrect Answer 1"], r["Incorrect Answer 2"], r["Incorrect Answer 3"]]
            pid = _stable_id(task.name, r["Question"])
            out.append(_mc_problem(task.name, pid, r["Question"], [c.strip() for c in choices], r["Correct Answer"].strip()))
        elif task.name == "mmlu" and "choices" in r and isinstance(r.get("answer"), int):
            pid = _stable_id(task.name, r["question"] + "|".join(r["choices"]))
            out.append(
                _mc_problem(task.name, pid, r["question"], list(r["choices"]), r["choices"][r["answer"]], r.get("subject", ""))
            )
        elif task.name == "gsm8k" and "####" in str(r.get("answer", "")):
            out.append(
                Problem(
                    _stable_id(task.name, r["question"]),
                    r["question"],
                    r["answer"].split("####")[-1].strip().replace(",", ""),
                    task.answer_type,
                )
            )
        else:
            q = r.get("problem") or r.get("question")
            a = r.get("answer")
            pid = str(r.get("unique_id") or r.get("id") or _stable_id(task.name, str(q)))
            out.append(Problem(pid, str(q), str(a), task.answer_type))
    return out


def _gold_ok(answer_type: str, gold: str) -> bool:
    from layerprobe.tasks.grading import INT_RE

    return answer_type not in ("integer", "digit") or INT_RE.match(gold) is not None


def load_task_file(path: Path, task: TaskInfo) -> list[Problem]:
    """Problems from a JSONL file: id, question, answer, optional choices and group. The whole file is
    checked before anything runs: a bad line is a UserError naming the line and what is valid."""
    text = read_user_text(path, "--task-file", "a UTF-8 JSONL file: id, question, answer, optional choices")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"--task-file {path}, line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object with id, question, answer (got {type(row).__name__})")
        missing = [k for k in ("id", "question", "answer") if row.get(k) is None]
        if missing:
            raise UserError(
                f"{where}: missing field(s) {', '.join(missing)} (needed: id, question, answer; optional: choices, group)"
            )
        bad = [k for k in ("id", "question", "answer") if not isinstance(row[k], (str, int, float)) or isinstance(row[k], bool)]
        if bad:
            raise UserError(f"{where}: {', '.join(bad)} must be a string or a number")
        group = row.get("group", "")
        if not isinstance(group, str):
            raise UserError(f"{where}: group must be a string")
        pid = f"{task.name}-{row['id']}"
        choices_raw = row.get("choices")
        if choices_raw is not None and choices_raw != []:
            if (
                not isinstance(choices_raw, list)
                or not all(isinstance(c, (str, int, float)) for c in choices_raw)
                or len(choices_raw) < 2
            ):
                raise UserError(f"{where}: choices must be a list of at least two strings")
            if len(choices_raw) > 10:
                raise UserError(f"{where}: at most 10 choices (A-J) are supported, got {len(choices_raw)}")
            choices = [str(c) for c in choices_raw]
            ans = str(row["answer"])
            correct = choices["ABCDEFGHIJ".index(ans)] if len(ans) == 1 and ans in "ABCDEFGHIJ"[: len(choices)] else ans
            if correct not in choices:
                raise UserError(f"{where}: answer '{ans}' is neither a choice nor a choice letter")
            out.append(_mc_problem(task.name, pid, str(row["question"]), choices, correct, group))
        else:
            gold = str(row["answer"]).strip()
            if task.answer_type == "mc":
                raise UserError(f"{where}: task {task.name} is multiple choice: give choices (a list) with the answer")
            if not _gold_ok(task.answer_type, gold):
                raise UserError(
                    f"{where}: task {task.name} grades integer answers, but the answer is '{gold[:40]}' "
                    "(give an integer such as 42, or use --task math500 for expressions)"
                )
            out.append(Problem(pid, str(row["question"]), gold, task.answer_type, group=group))
    if not out:
        raise UserError(f"--task-file {path} holds no problems")
    return out


def get_task(name: str) -> TaskInfo:
    if name not in TASKS:
        raise UserError(f"unknown task '{name}' (valid: {', '.join(TASKS)})")
    return TASKS[name]


def load_problems(
    name: str, limit: int | None = None, seed: int = 0, task_file: Path | None = None
) -> tuple[TaskInfo, list[Problem], dict[str, Any]]:
    """(task info, problems, source record). `limit` keeps the first N (per group for the toy)."""
    task = get_task(name)
    if limit is not None and limit < 1:
        raise UserError("--limit must be >= 1")
    if name.startswith("toy-"):
        from layerprobe.toy.tasks import FACT_SEED

        if task_file is not None:
            raise UserError(
                f"--task-file is for hub tasks; '{name}' is generated by the embedded toy (drop --task-file, or pick a hub task)"
            )

        probs = _toy_problems(name, limit, seed)
        return task, probs, {"source": "embedded toy generator", "seed": seed, "fact_seed": FACT_SEED}
    if name == "arith":
        from layerprobe.tasks.arith import arith_problems

        if task_file is not None:
            raise UserError("--task-file is for hub tasks; 'arith' is generated (drop --task-file, or pick a hub task)")
        return task, arith_problems(limit or 30, seed), {"source": "generated (layerprobe.tasks.arith)", "seed": seed}
    if task_file is not None:
        probs = load_task_file(Path(task_file), task)
        digest = hashlib.sha1(Path(task_file).read_bytes()).hexdigest()
        source: dict[str, Any] = {"source": "file", "path": str(task_file), "sha1": digest}
    else:
        try:
            import datasets
        except ImportError:
            raise UserError(
                f"task '{name}' is loaded from the hub with the 'datasets' package, which is not installed: "
                "pip install 'layerprobe[hub]', or give --task-file FILE.jsonl (one JSON object per line: id, question, answer[, choices])"
            ) from None
        try:
            ds = datasets.load_dataset(task.hub_id, task.hub_config, split=task.hub_split)
        except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all the same to the user
            raise UserError(
                f"task '{name}' could not be loaded from the hub ({task.hub_id}: {str(exc).splitlines()[0][:120]}); "
                "provide it with --task-file FILE.jsonl (one JSON object per line: id, question, answer[, choices])"
            ) from None
        probs = _from_rows(task, [dict(r) for r in ds])
        source = {
            "source": "hub",
            "hub_id": task.hub_id,
            "config": task.hub_config,
            "split": task.hub_split,
            "fingerprint": getattr(ds, "_fingerprint", None),
        }
    if limit is not None:
        probs = probs[:limit]
    return task, probs, source
