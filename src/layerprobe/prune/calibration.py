"""Calibration text for the layer-selection criteria, and the record of which text chose the layers.

Sources:
- `file`: a text file with one document per line, or JSONL with a `text` field per line (blank lines
  ignored);
- `dataset`: a `datasets` spec `NAME[:CONFIG[:SPLIT]]` (e.g. `wikitext:wikitext-2-raw-v1:test`), when
  the data set is reachable (offline → UserError suggesting `--calib FILE`);
- `embedded`: layerprobe's own offline default, 64 varied English paragraphs written for this project
  (science, history, how-to, dialogue, arithmetic word problems), each long enough for 256 tokens;
- `traces`: the model's own reasoning traces, generated greedily on reasoning prompts (the toy's task
  prompts for the toy model, a fixed list of short reasoning questions otherwise).

Every result records `Calibration.record(seq_len)`: the source, its name or path, the number of
documents, the sequence length and the sha1 of the documents' text (joined with newlines).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe._io import read_user_text
from layerprobe.errors import UserError

DATA_DIR = Path(__file__).parent / "data"
EMBEDDED_FILE = DATA_DIR / "calibration_en.txt"
DEFAULT_MAX_DOCS = 64

# Generic reasoning prompts for models other than the toy: short problems that make an instruct or
# reasoning model write a step-by-step solution.
REASONING_PROMPTS = [
    "A shop sells pencils at 3 for 45 cents. How much do 14 pencils cost? Think step by step.",
    "Tom is twice as old as his sister. In 6 years he will be 1.5 times her age. How old is Tom now? Reason step by step.",
    "What is the sum of all integers from 1 to 40 that are divisible by 3? Show your reasoning.",
    "A train leaves at 9:40 and arrives at 13:05. How many minutes does the trip take? Explain each step.",
    "If 5 workers build a wall in 12 days, how many days do 8 workers need at the same rate? Think it through.",
    "A rectangle has a perimeter of 46 cm and one side of 9 cm. What is its area? Work it out step by step.",
    "Is 221 a prime number? Check carefully and explain.",
    "A recipe needs 250 g of flour for 4 people. How much flour is needed for 10 people? Show the steps.",
    "Anna has 17 apples, gives a third of what remains after eating 2 to Ben, then buys 8. How many does she have?",
    "What is the remainder when 2 to the power 10 is divided by 7? Reason step by step.",
    "A car uses 6.5 litres of fuel per 100 km. How much fuel does it need for 340 km? Explain.",
    "Three friends split a bill of 87 dollars plus a 15 percent tip equally. How much does each pay? Think step by step.",
    "How many different ways can 4 books be arranged on a shelf? Explain your reasoning.",
    "A tank fills in 6 hours with pipe A and in 4 hours with pipe B. How long with both open? Show the steps.",
    "Find the smallest positive integer that leaves remainder 1 when divided by 2, 3, 4 and 5. Reason carefully.",
    "A bike costs 240 dollars after a 20 percent discount. What was the original price? Work it out.",
]


@dataclass
class Calibration:
    """Calibration documents and where they came from.

    `texts` are the documents as text. `token_ids`, when set (traces), are the exact token ids to
    score, used instead of re-tokenizing the text.
    """

    texts: list[str]
    source: str  # file | dataset | embedded | traces
    name: str | None = None
    path: str | None = None
    token_ids: list[list[int]] | None = None
    add_special_tokens: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_lengths: list[int] | None = None
    """Traces: the number of prompt tokens at the start of each document (the rest was generated)."""

    @property
    def documents(self) -> list[Any]:
        """What the scoring functions consume: token-id lists when present, else the texts."""
        return list(self.token_ids) if self.token_ids is not None else list(self.texts)

    @property
    def n_docs(self) -> int:
        return len(self.texts)

    def sha1(self) -> str:
        """sha1 of the documents' text joined with newlines."""
        return hashlib.sha1("\n".join(self.texts).encode("utf-8")).hexdigest()

    def record(self, seq_len: int) -> dict[str, Any]:
        """The provenance entry recorded with every result chosen on this calibration."""
        rec: dict[str, Any] = {"source": self.source}
        if self.name is not None:
            rec["name"] = self.name
        if self.path is not None:
            rec["path"] = self.path
        rec.update({"n_docs": self.n_docs, "seq_len": int(seq_len), "sha1": self.sha1()})
        rec.update(self.extra)
        return rec


def _limit(texts: list[str], max_docs: int | None) -> list[str]:
    if max_docs is not None:
        if max_docs < 1:
            raise UserError(f"--calib-docs {max_docs}: must be at least 1")
        texts = texts[:max_docs]
    return texts


def _read_documents(path: Path) -> list[str]:
    raw = read_user_text(path, "--calib", "one document per line, or JSONL with a 'text' field")
    lines = [(no, line) for no, line in enumerate(raw.splitlines(), 1) if line.strip()]
    if not lines:
        raise UserError(f"--calib {path}: the file is empty (expected one document per line, or JSONL with a 'text' field)")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson") or _looks_like_jsonl(lines[0][1])
    if not jsonl:
        return [line.strip() for _, line in lines]
    docs = []
    for no, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"--calib {path}: line {no} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UserError(f"--calib {path}: line {no} has no string 'text' field (JSONL documents need one)")
        if obj["text"].strip():
            docs.append(obj["text"])
    if not docs:
        raise UserError(f"--calib {path}: every 'text' field is empty")
    return docs


def _looks_like_jsonl(line: str) -> bool:
    s = line.strip()
    if not s.startswith("{"):
        return False
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "text" in obj


def calibration_from_file(path: str | Path, max_docs: int | None = None) -> Calibration:
    """Documents from a text file (one per line) or JSONL (`text` field); blank lines are ignored.

    JSONL is recognised by a `.jsonl` suffix or by a first line that is a JSON object with `text`.
    UserError when the file is missing, unreadable or empty.
    """
    p = Path(path).expanduser()
    texts = _limit(_read_documents(p), max_docs)
    return Calibration(texts=texts, source="file", path=str(p))


def embedded_calibration(max_docs: int | None = None) -> Calibration:
    """layerprobe's offline default: 64 English paragraphs written for this project."""
    texts = [line.strip() for line in EMBEDDED_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Calibration(texts=_limit(texts, max_docs), source="embedded", name="layerprobe-en-v1")


def parse_dataset_spec(spec: str) -> tuple[str, str | None, str]:
    """'NAME[:CONFIG[:SPLIT]]' → (name, config or None, split; default 'train')."""
    parts = spec.split(":")
    if not spec.strip() or len(parts) > 3 or not parts[0].strip():
        raise UserError(f"--calib-dataset '{spec}': expected NAME[:CONFIG[:SPLIT]], e.g. wikitext:wikitext-2-raw-v1:test")
    name = parts[0].strip()
    config = parts[1].strip() or None if len(parts) > 1 else None
    split = parts[2].strip() if len(parts) > 2 and parts[2].strip() else "train"
    return name, config, split


def calibration_from_dataset(spec: str, max_docs: int | None = DEFAULT_MAX_DOCS, column: str = "text") -> Calibration:
    """The first `max_docs` non-blank `column` entries of a `datasets` split (spec NAME[:CONFIG[:SPLIT]]).

    Any failure to load it (offline, unknown name, missing column) is a UserError that names the failure
    and suggests `--calib FILE`.
    """
    name, config, split = parse_dataset_spec(spec)
    hint = "pass --calib FILE (one document per line) or use the embedded default instead"
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"--calib-dataset {spec}: the 'datasets' package is not installed (pip install 'layerprobe[hub]'); {hint}"
        ) from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, bad config: all user-fixable
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise UserError(f"--calib-dataset {spec}: could not load it ({type(exc).__name__}: {first}); {hint}") from None
    if column not in getattr(ds, "column_names", []):
        raise UserError(f"--calib-dataset {spec}: no '{column}' column (columns: {getattr(ds, 'column_names', [])}); {hint}")
    texts: list[str] = []
    for value in ds[column]:
        if isinstance(value, str) and value.strip():
            texts.append(value.strip())
            if max_docs is not None and len(texts) >= max_docs:
                break
    if not texts:
        raise UserError(f"--calib-dataset {spec}: the '{column}' column has no text; {hint}")
    return Calibration(texts=_limit(texts, max_docs), source="dataset", name=spec)


def traces_calibration(
    loaded: Any,
    n: int,
    max_new_tokens: int = 128,
    *,
    task: str = "long",
    seed: int = 0,
    prompts: list[str] | None = None,
    batch_size: int = 8,
) -> Calibration:
    """The model's own greedy reasoning traces as calibration documents (prompt + generated text), made
    by the scaling engine that `analyze` generates with.

    The toy model answers its own problems of `task` (the `toy-<task>` task); other models answer
    `prompts` (default: REASONING_PROMPTS, cycled) in their reasoning format (think tags when they
    declare none). Each trace thinks for at most `max_new_tokens` tokens and answers in at most 8 more.
    The exact token ids (the prompt and everything generated after it) are what gets scored.
    """
    from layerprobe.scaling.engine import GenRequest, TraceGenerator, build_prompt
    from layerprobe.scaling.formats import FORMATS, Sampling, sniff_format

    if n < 1:
        raise UserError(f"--calib-traces {n}: must be at least 1")
    if max_new_tokens < 1:
        raise UserError(f"--trace-tokens {max_new_tokens}: must be at least 1")
    tok = loaded.tokenizer
    if tok is None:
        raise UserError("--calib-traces needs the model's tokenizer")
    if loaded.is_toy:
        from layerprobe.tasks.registry import load_problems

        _, problems, _ = load_problems(f"toy-{task}", limit=n, seed=seed)
        questions = [p.question for p in problems]
        fmt = FORMATS["think-tags"]
        extra: dict[str, Any] = {"generator": "toy", "task": task, "n_traces": n, "max_new_tokens": max_new_tokens, "seed": seed}
    else:
        pool = prompts or REASONING_PROMPTS
        questions = [pool[k % len(pool)] for k in range(n)]
        fmt = FORMATS[loaded.reasoning_format or sniff_format(tok) or "think-tags"]
        extra = {"generator": "engine", "format": fmt.name, "n_traces": n, "max_new_tokens": max_new_tokens}
    chats = [build_prompt(tok, fmt, q) for q in questions]
    gen = TraceGenerator(loaded.model, tok, fmt, Sampling(temperature=0.0))
    reqs = [GenRequest(key=i, prompt=c, budget=max_new_tokens, answer_max=8) for i, c in enumerate(chats)]
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        results = gen.generate(reqs, batch_size=batch_size)
    finally:
        model.train(was_training)
    prompt_ids = [tok.encode(c, add_special_tokens=False) for c in chats]
    ids = [p + list(r.all_ids) for p, r in zip(prompt_ids, results)]
    texts = [tok.decode(x, skip_special_tokens=False) for x in ids]
    return Calibration(
        texts=texts,
        source="traces",
        name=f"{loaded.name}-traces",
        token_ids=ids,
        add_special_tokens=False,
        extra=extra,
        prompt_lengths=[len(p) for p in prompt_ids],
    )


def resolve_calibration(
    loaded: Any = None,
    *,
    file: str | Path | None = None,
    dataset: str | None = None,
    traces: int | None = None,
    max_docs: int | None = DEFAULT_MAX_DOCS,
    trace_tokens: int = 128,
) -> Calibration:
    """The calibration the command line asked for (at most one of file / dataset / traces; else the
    embedded default). `loaded` is needed only for traces."""
    given = [flag for flag, v in (("--calib", file), ("--calib-dataset", dataset), ("--calib-traces", traces)) if v is not None]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} are exclusive: give one calibration source")
    if file is not None:
        return calibration_from_file(file, max_docs)
    if dataset is not None:
        return calibration_from_dataset(dataset, max_docs)
    if traces is not None:
        if loaded is None:
            raise ValueError("traces calibration needs the loaded model")
        return traces_calibration(loaded, traces, trace_tokens)
    return embedded_calibration(max_docs)
