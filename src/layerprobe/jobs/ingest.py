"""`layerprobe ingest`: traces generated elsewhere (lm-evaluation-harness, vLLM, s1's scripts) read into
a normal run directory, graded by layerprobe, with trace metrics and probes by prefill (docs/ingest.md).

Each ingest adds one variant (its `--label`) to the run in `--out`; several ingests (base and pruned,
from the same or different files) compare in one report. The first variant ingested into a run
becomes its base unless a later ingest is labelled `base` (the base is always listed first).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layerprobe._io import TOO_LONG, iter_json_lines
from layerprobe.data.schema import (
    MAX_COUNT,
    CompressionSpec,
    IngestSource,
    ModelInfo,
    RunConfig,
    RunInfo,
    SampleRecord,
    TaskRecord,
    VariantSpec,
    trace_file_stem,
)
from layerprobe.data.store import RunStore, is_run_dir, now, read_run_info
from layerprobe.errors import UserError
from layerprobe.jobs.ingest_fields import GOLD_FIELDS, gold_field, gold_fields_words, gold_like_fields
from layerprobe.jobs.job import Job, ProgressFn
from layerprobe.jobs.textwork import TextJob, TextPool, n_workers
from layerprobe.rules import MAX_LINE_BYTES, as_float, as_int, check_name, inside
from layerprobe.scaling.formats import ReasoningFormat
from layerprobe.scaling.traces import INGEST_FORMATS, Shape, detect_shape, finish_of, from_fields, parse_trace

FORMATS_IN = ("lm-eval", "jsonl")
FLUSH_EVERY = 64
"""Traces probed and written together; an interrupted ingest loses at most this many (they are redone)."""
_API_ERROR = re.compile(
    r"\A\s*(?:Error code: \d{3}\b|(?:[\w.]+\.)?\w*(?:API|RateLimit|Timeout|Connection|InternalServer|BadRequest|"
    r"Authentication|ServiceUnavailable|PermissionDenied)\w*Error\b|Request timed out|Traceback \(most recent call last\))"
)
_ERROR_MAX_CHARS = 2000
_LMEVAL_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics"}
_LMEVAL_KEYS |= {"doc_hash", "prompt_hash", "target_hash"}


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


def _lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object or NOT_JSON / TOO_LONG) of a file's non-blank lines (_io.iter_json_lines)."""
    try:
        return list(iter_json_lines(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _skip_bad_line(read: Read, value: Any, what: str) -> bool:
    """Count a line that is not a JSON object (or is too long to read); True when it was one."""
    if value == TOO_LONG:
        read.skipped[f"a line over {MAX_LINE_BYTES // 2**20} MiB (not read)"] += 1
    elif not isinstance(value, dict):
        read.skipped[what] += 1
    else:
        return False
    return True


def _positive_int(x: Any) -> int | None:
    """A token count from a foreign file: 1 to MAX_COUNT, else None."""
    v = as_int(x)
    return v if v is not None and 0 < v <= MAX_COUNT else None


def _gold(x: Any) -> str:
    """A gold answer from a file as text ("" when there is none: the trace is then not graded)."""
    if isinstance(x, bool) or x is None:
        return ""
    return str(x) if isinstance(x, (str, int, float)) else ""


def _harness_verdicts(row: dict[str, Any], sample: int, n_samples: int) -> dict[str, Any]:
    """The harness's own values for one sample of a line: the metrics it lists (upstream lm-eval), or
    every other top-level value (the s1 fork writes them without a list); per-sample lists are indexed."""
    listed = row.get("metrics")
    names = [k for k in listed if isinstance(k, str)] if isinstance(listed, list) else [k for k in row if k not in _LMEVAL_KEYS]
    out: dict[str, Any] = {}
    for k in names:
        v = row.get(k)
        if isinstance(v, list) and len(v) == n_samples and n_samples > 1:
            v = v[sample]
        if isinstance(v, (bool, int, float, str)):
            out[str(k)] = v
    return out


def read_lm_eval(path: Path) -> Read:
    """A `samples_<task>_<date>.jsonl` of lm-evaluation-harness 0.4 (`--log_samples`), upstream or the s1
    fork: generate_until lines only; the prompt is arguments.gen_args_0.arg_0, the completions
    resps[0] (several with `repeats`: samples 0..K-1), the gold `target`. A document written once per
    filter (with or without a `filter` key) gives one trace per sample; each filter's verdicts are kept."""
    lines = _lines(path)
    task = path.name.removeprefix("samples_").rsplit("_", 1)[0] if path.name.startswith("samples_") else path.stem
    read = Read(path=path, items=[], skipped=Counter())
    looks_right = 0
    by_doc: dict[tuple[str, str], list[Item]] = {}
    for n, row in lines:
        if _skip_bad_line(read, row, "not JSON"):
            continue
        if not {"doc_id", "arguments", "resps", "target"} <= set(row):
            read.skipped["missing doc_id / arguments / resps / target"] += 1
            continue
        looks_right += 1
        args = row["arguments"]
        first = args.get("gen_args_0") if isinstance(args, dict) else None
        if not isinstance(first, dict) or not isinstance(first.get("arg_0"), str) or not isinstance(first.get("arg_1"), dict):
            read.skipped["not a generate_until request (multiple choice / loglikelihood)"] += 1
            continue
        resps = row["resps"][0] if isinstance(row["resps"], list) and row["resps"] else []
        if not isinstance(resps, list) or not all(isinstance(r, str) for r in resps) or not resps:
            read.skipped["no completion"] += 1
            continue
        kwargs = first["arg_1"]
        read.gen_kwargs = kwargs
        budget = _positive_int(kwargs.get("max_tokens_thinking")) or _positive_int(kwargs.get("max_gen_toks"))
        filt = row.get("filter") if isinstance(row.get("filter"), str) else None
        doc = (str(row["doc_id"]), first["arg_0"])
        known = by_doc.get(doc)
        if known is not None and [it.completion for it in known] == resps:  # the same document under another filter
            for s, it in enumerate(known):
                harness = it.external["harness"]
                harness[filt or f"filter {len(harness) + 1}"] = _harness_verdicts(row, s, len(resps))
            read.merged += 1
            continue
        if known is not None:
            read.skipped["the same document again with other completions (the first kept)"] += 1
            continue
        items = []
        for s, completion in enumerate(resps):
            items.append(
                Item(
                    problem_id=f"{task}-{row['doc_id']}",
                    prompt=first["arg_0"],
                    completion=completion,
                    gold=_gold(row["target"]),
                    group=task,
                    sample=s,
                    budget=budget,
                    line=n,
                    cap=_positive_int(kwargs.get("max_gen_toks")),
                    external={
                        "source": "lm-eval",
                        "file": str(path),
                        "line": n,
                        "doc_id": row["doc_id"],
                        "doc_hash": row.get("doc_hash"),
                        "prompt": first["arg_0"],
                        "gen_kwargs": kwargs,
                        "harness": {filt or "filter 1": _harness_verdicts(row, s, len(resps))},
                    },
                )
            )
        by_doc[doc] = items
        read.items += items
    if looks_right == 0:
        raise UserError(
            f"{path} is not an lm-evaluation-harness samples file (no line has doc_id, arguments, resps and target); "
            "use --from jsonl for other files"
        )
    _read_results(path, read)
    return read


def _read_results(samples: Path, read: Read) -> None:
    """The producer and its tokenizer's special tokens from the results_<date>.json written next to a
    samples file in the same run (same date suffix), else the newest one in the folder."""
    date = samples.stem.rsplit("_", 1)[-1]
    candidates = [samples.parent / f"results_{date}.json"] + sorted(samples.parent.glob("results_*.json"), reverse=True)
    for results in candidates:
        if not results.is_file():
            continue
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        cfg = data.get("config")
        args = cfg.get("model_args") if isinstance(cfg, dict) else None
        if isinstance(args, dict):
            read.producer = str(args.get("pretrained") or args.get("model") or args) or None
        elif isinstance(args, str) and args:
            parts = dict(p.split("=", 1) for p in args.split(",") if "=" in p)
            read.producer = parts.get("pretrained") or parts.get("model") or args
        for name in ("eos", "bos", "pad"):
            pair = data.get(f"tokenizer_{name}_token")
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
                tid = as_int(pair[1])
                if tid is not None:
                    read.special_tokens[name] = (pair[0], tid)
        return


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


_COMPLETION_FIELDS = "completion (or content / choices)"


def _skip_error(read: Read, reason: str, message: str) -> None:
    """Count a line that holds an error, and keep the first message of each kind as an example."""
    if not read.skipped[reason]:
        read.examples.append(f"{read.path.name}: {reason}, e.g. {message.strip()[:120]!r}")
    read.skipped[reason] += 1


def _api_error(text: str) -> bool:
    """Whether a completion is an API client's error message rather than a model's text."""
    return len(text) <= _ERROR_MAX_CHARS and bool(_API_ERROR.match(text))


class Refusal(str):
    """Why a record gives no trace (counted as a skip with this reason)."""


def _either(obj: dict[str, Any], names: tuple[str, str]) -> str | None | Refusal:
    """The text of whichever of two fields that mean the same thing holds one (a null field counts as
    absent; an empty one as empty); a Refusal when one is not text or both hold different texts."""
    given = [(k, obj[k]) for k in names if obj.get(k) is not None]
    if any(not isinstance(v, str) for _, v in given):
        return Refusal(f"{' / '.join(names)} not a string")
    texts = list(dict.fromkeys(v.strip() for _, v in given if v.strip()))
    if len(texts) > 1:
        return Refusal(f"{names[0]} and {names[1]} disagree (which one the model wrote is unknown: neither is kept)")
    return next((v for _, v in given if v.strip()), given[0][1] if given else None)


def _sample(obj: dict[str, Any], whole: str, cut: bool | None) -> tuple[str, str | None, bool | None] | Refusal:
    """(completion or answer, reasoning or None, cut) of one sample: the whole completion in `whole`
    (`completion`, or `text` inside `choices`) or the answer in `content` beside the reasoning
    (`reasoning_content` or `reasoning`). A reasoning field with a null or empty `content` is a trace cut
    during its thinking (vLLM's reasoning parser at `finish_reason: length`). A completion beside the
    separate fields is accepted when it is their text (the same answer, or the reasoning followed by
    the answer); the fields are read."""
    reasoning = _either(obj, ("reasoning_content", "reasoning"))
    if isinstance(reasoning, Refusal):
        return reasoning
    completion, content = obj.get(whole), obj.get("content")
    for name, value in ((whole, completion), ("content", content)):
        if value is not None and not isinstance(value, str):
            return Refusal(f"{name} not a string")
    full = completion.strip() if isinstance(completion, str) else ""
    answer = content.strip() if isinstance(content, str) else ""
    if reasoning is None:
        if full and answer and full != answer:
            return Refusal(f"{whole} and content disagree (which one the model wrote is unknown: neither is kept)")
        text = completion if full else content if answer else None
        return (text, None, cut) if text is not None else Refusal(f"missing {_COMPLETION_FIELDS}")
    thinking = reasoning.strip()
    if full and not answer and full != thinking:  # an answer may be in the completion only
        return Refusal(f"{whole} beside reasoning_content / reasoning without content (give the answer as content)")
    if full and answer and full != answer and not (thinking in full and full.endswith(answer)):
        return Refusal(f"{whole} disagrees with reasoning_content / reasoning + content (neither is kept)")
    if not answer and not reasoning.strip():
        return Refusal(f"missing {_COMPLETION_FIELDS}")
    return (content or "", reasoning, cut)


#: finish_reason values (any case) that say a length cap cut the trace (OpenAI / vLLM, Anthropic, Gemini)
#: and that say the model stopped on its own; any other value says neither.
_CUT_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})
_STOP_REASONS = frozenset({"stop", "end_turn", "stop_sequence", "eos", "tool_calls", "function_call"})


def _cut_of(reason: Any) -> bool | None:
    """What a finish_reason says: True cut by a length cap, False stopped on its own, None neither (absent,
    not text, or another reason such as a content filter or an abort)."""
    if not isinstance(reason, str):
        return None
    r = reason.strip().lower()
    return True if r in _CUT_REASONS else False if r in _STOP_REASONS else None


def _completions(row: dict[str, Any]) -> list[tuple[str, str | None, bool | None] | Refusal] | str:
    """(completion or answer, reasoning or None, cut) per sample of a JSONL line, or why there is none.
    One sample from the line itself (`_sample`), or one per choice of `choices` (an OpenAI-compatible
    response, also under `response`; a choice's `message` or the choice itself): a choice that gives no
    trace is a Refusal in its place (counted; the others are kept), all of them the line's refusal."""
    choices = row.get("choices")
    if choices is None and isinstance(row.get("response"), dict):
        choices = row["response"].get("choices")
    if isinstance(choices, list) and choices:
        out: list[tuple[str, str | None, bool | None] | Refusal] = []
        for ch in choices:
            if not isinstance(ch, dict):
                out.append(Refusal("choices that are not objects"))
                continue
            msg: dict[str, Any] = ch["message"] if isinstance(ch.get("message"), dict) else ch
            out.append(_sample(msg, "text", _cut_of(ch.get("finish_reason"))))
        return str(out[0]) if all(isinstance(o, Refusal) for o in out) else out
    cut = _cut_of(row.get("finish_reason"))
    if isinstance(row.get("truncated"), bool):
        cut = row["truncated"]
    one = _sample(row, "completion", cut)
    return str(one) if isinstance(one, Refusal) else [one]


def read_jsonl(path: Path) -> Read:
    """One object per line (docs/ingest.md#--from-jsonl): id, prompt (or chat messages; a line without
    one is read, marked `no_prompt`), the completion in one of its shapes (`completion`; `content` beside
    `reasoning_content` / `reasoning`; `choices`), and optionally the gold answer (under a name of
    ingest_fields.GOLD_FIELDS), group, budget, sample, model, finish_reason / truncated, prompt_ids and
    completion_ids (the token ids as generated). A line holding an error instead of a trace is skipped
    and counted; a file whose gold answer is under another name that looks like one is refused."""
    read = Read(path=path, items=[], skipped=Counter())
    any_object = has_gold = False
    gold_like: list[str] = []
    for n, row in _lines(path):
        if _skip_bad_line(read, row, "not a JSON object"):
            continue
        any_object = True
        pid = row.get("id", row.get("problem_id"))
        messages = row.get("messages")
        prompt = row.get("prompt")
        if row.get("error") not in (None, "", {}):
            _skip_error(read, "an error instead of a trace (an error field)", str(row["error"]))
            continue
        samples = _completions(row)
        missing = [k for k, v in (("id", pid),) if v in (None, "")]  # no prompt: read, said, left out by probes
        if isinstance(samples, str):
            if not samples.startswith("missing "):
                read.skipped[samples] += 1
                continue
            missing.append(samples.removeprefix("missing "))
        if missing or isinstance(samples, str):
            read.skipped[f"missing {', '.join(missing)}"] += 1
            continue
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            read.skipped["id not a string or integer"] += 1
            continue
        if messages is not None and (
            not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            read.skipped["messages not a list of {role, content} objects"] += 1
            continue
        no_prompt = messages is None and prompt in (None, "")
        if messages is None and not no_prompt and not isinstance(prompt, str):
            read.skipped["prompt not a string"] += 1
            continue
        budget, sample = row.get("budget"), row.get("sample", 0)
        b_int, s_int = (None if budget is None else as_int(budget)), as_int(sample)
        if (
            (budget is not None and (b_int is None or not 0 <= b_int <= MAX_COUNT))
            or s_int is None
            or not 0 <= s_int <= MAX_COUNT
        ):
            read.skipped[f"budget / sample not integers from 0 to {MAX_COUNT:,}"] += 1
            continue
        budget, sample = b_int, s_int
        ids = {k: row.get(k) for k in ("prompt_ids", "completion_ids")}
        if any(
            v is not None and (not isinstance(v, list) or not v or not all(type(t) is int and t >= 0 for t in v))
            for v in ids.values()
        ) or (ids["completion_ids"] is not None and len(samples) > 1):
            read.skipped["prompt_ids / completion_ids not lists of token ids"] += 1
            continue
        for why in (x for x in samples if isinstance(x, Refusal)):
            read.skipped[f"a choice of a response: {why}"] += 1
        kept = [(k, x) for k, x in enumerate(samples) if not isinstance(x, Refusal)]
        errors = [x for _, x in kept if x[1] is None and _api_error(x[0])]
        if errors:
            _skip_error(read, "an API error message instead of a trace", errors[0][0])
            continue
        if row.get("model"):
            read.producer = str(row["model"])
        for k, (completion, reasoning, cut) in kept:
            read.items.append(
                Item(
                    problem_id=str(pid),
                    prompt=prompt if isinstance(prompt, str) else "",
                    completion=completion,
                    gold=_gold(row.get(gold_field(row) or GOLD_FIELDS[0])),
                    group=str(row.get("group", "")),
                    sample=sample + k,
                    budget=budget,
                    line=n,
                    external={"source": "jsonl", "file": str(path), "line": n},
                    prompt_ids=ids["prompt_ids"],
                    completion_ids=ids["completion_ids"],
                    reasoning=reasoning,
                    cut=cut,
                    messages=messages,
                    no_prompt=no_prompt,
                )
            )
        if gold_field(row) is None and not gold_like:
            gold_like = gold_like_fields(row)
        has_gold = has_gold or gold_field(row) is not None
    if not any_object:
        raise UserError(
            f"{path} holds no JSON object lines (expected one object per line: id, prompt, completion[, gold, group, budget, sample])"
        )
    if not has_gold and gold_like:
        raise UserError(
            f"{path}: no gold-answer field ({gold_fields_words()}), but '{gold_like[0]}' looks like one: rename it to "
            "gold (or another of those names) to grade the traces, or drop it to ingest them ungraded"
        )
    return read


def _find(ids: Sequence[int], sub: Sequence[int]) -> int:
    """First index of `sub` in `ids`, -1 when absent."""
    n = len(sub)
    return next((i for i in range(len(ids) - n + 1) if n and list(ids[i : i + n]) == list(sub)), -1)


def split_ids(tokenizer: Any, fmt: ReasoningFormat, ids: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(thinking ids, answer ids) of a generated completion with one thinking segment: the opener at
    its start (if the model wrote it) left out, split at the first end-of-thinking delimiter spelled as
    tokens, the answer after the answer opener, without a final stop token; None when no delimiter
    occurs as a token sequence."""
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)
    opener = enc(fmt.prompt_suffix)
    start = len(opener) if opener and list(ids[: len(opener)]) == opener else 0
    found = [(i, d) for d in (enc(s) for s in fmt.end_think) if (i := _find(ids[start:], d)) >= 0]
    if not found:
        return None
    i, d = min(found, key=lambda x: x[0])
    i += start
    answer_open = enc(fmt.answer_open)
    rest = list(ids[i:])
    answer = rest[len(answer_open) :] if rest[: len(answer_open)] == answer_open else rest[len(d) :]
    if answer and answer[-1] == tokenizer.eos_token_id:
        answer = answer[:-1]
    return list(ids[start:i]), answer


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@dataclass
class ModelSide:
    """The model as an ingest uses it: its weights (probes) or only its tokenizer and config (text only)."""

    tokenizer: Any
    name: str
    source: Any
    source_kind: str | None
    family: str | None
    dtype: str | None
    revision: str | None
    n_layers: int | None
    """Decoder layers of the unpruned model (None: unknown, text only)."""
    dropped: list[int]
    """Original layers the traces' model lacks."""
    reasoning_format: str | None = None
    """The format the alias declares."""
    context: int | None = None
    tokenizer_name: str | None = None
    base: Any = None
    """The unpruned model (LoadedModel) when probing; None text only."""
    loaded: Any = None
    """The model that produced the traces (base without `dropped`) when probing."""
    method: str | None = None
    compression: dict[str, Any] | None = None
    """The record of a compressed checkpoint given as --model (layerprobe.json)."""


def _compression_spec(comp: Any) -> CompressionSpec | None:
    """A checkpoint's compression record as the run stores it (None when it has none or it does not fit)."""
    if not isinstance(comp, dict) or not comp.get("size"):
        return None
    try:
        return CompressionSpec.model_validate(comp)
    except ValueError:
        return None


def _model_side(
    model: str,
    probes: bool,
    drop: Sequence[int] | None,
    method: str | None,
    n_drop: int,
    device: str,
    dtype: str,
    tokenizer: str | None,
) -> ModelSide:
    """Load what the ingest needs: the tokenizer and config only when there are no probes."""
    if method:
        from layerprobe.prune.methods import get_method

        if get_method(method).kind != "depth":
            raise UserError(
                f"ingest --method removes whole layers; --method {method} compresses weights: prune first "
                f"(layerprobe prune --method {method} --match-layers K --out DIR) and give that checkpoint as --model"
            )
    if not probes:
        from layerprobe.models.loading import load_text_model

        if method:
            raise UserError(
                f"--method {method} chooses layers by running the model; with --no-probes give the layers with --drop"
            )
        tm = load_text_model(model, tokenizer)
        dropped = list(tm.dropped)
        if drop:
            bad = [i for i in drop if tm.n_layers is not None and not 0 <= i < tm.n_layers]
            if bad or len(set(drop)) != len(drop):
                valid = f"0..{tm.n_layers - 1}" if tm.n_layers else "distinct indices"
                raise UserError(f"--drop {','.join(map(str, drop))}: layers must be distinct and in {valid}")
            dropped = sorted(set(dropped) | set(drop))
        return ModelSide(
            tokenizer=tm.tokenizer,
            name=model,
            source=tm.source,
            source_kind=tm.source_kind,
            family=tm.family,
            dtype=None,
            revision=None,
            n_layers=tm.n_layers,
            dropped=dropped,
            reasoning_format=tm.reasoning_format,
            context=tm.context,
            tokenizer_name=tm.tokenizer_name,
            compression=tm.compression,
        )
    if tokenizer is not None:
        raise UserError(
            "--tokenizer counts tokens when the model is not at hand; probes run the model, whose own tokenizer "
            "must read the traces (drop --tokenizer, or add --no-probes)"
        )
    from layerprobe.jobs.execute import set_threads_for
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, validate_drop

    base = load_model(model, device=device, dtype=dtype)
    set_threads_for(base)
    loaded = base
    if drop:
        loaded = drop_layers(base, validate_drop(list(drop), base))
    elif method:
        from layerprobe.prune.calibration import resolve_calibration
        from layerprobe.prune.methods import default_traces, get_method, prune_model

        m = get_method(method)
        cal = (
            resolve_calibration(base, traces=default_traces(base) if base.source_kind == "toy" or m.needs_traces else None)
            if m.needs_calibration
            else None
        )
        loaded, _ = prune_model(base, method, n_drop, cal)
    return ModelSide(
        tokenizer=loaded.tokenizer,
        name=model,
        source=base.source,
        source_kind=base.source_kind,
        family=base.family,
        dtype=str(base.dtype).removeprefix("torch."),
        revision=base.revision,
        n_layers=base.n_layers_original,
        dropped=list(loaded.dropped),
        reasoning_format=base.reasoning_format,
        context=getattr(loaded.model.config, "max_position_embeddings", None),
        base=base,
        loaded=loaded,
        method=method,
        compression=loaded.extra.get("compression") if not drop and not method else None,
    )


def _file_shape(read: Read, hint: str | None, tokenizer: Any) -> Shape:
    """The format of one file's traces: `hint` (--format) or what the traces show; a file whose every
    trace came with its reasoning in a separate field takes the prompts' opener or the tokenizer's format."""
    from layerprobe.scaling.formats import sniff_format

    inline = [it for it in read.items if it.reasoning is None]
    if inline:
        return detect_shape([it.prompt for it in inline], [it.completion for it in inline], hint)
    shape = detect_shape([it.prompt for it in read.items], ["" for _ in read.items], hint)
    if shape.format == "plain" and hint is None:
        fmt = sniff_format(tokenizer)
        if fmt in INGEST_FORMATS:
            shape = Shape(format=fmt, opener="none")
    return shape


def _rebuild(shape: Shape, reasoning: str, content: str) -> str:
    """The completion as the model wrote it, from a reasoning field and an answer field (what probes
    and the stored text use): the format's delimiters between them, its opener first unless the prompt has it."""
    if shape.format == "think-tags":
        return ("" if shape.opener == "prompt" else "<think>\n") + f"{reasoning}\n</think>\n\n{content}"
    if shape.format == "s1":
        return ("" if shape.opener == "prompt" else "<|im_start|>think\n") + f"{reasoning}\n<|im_start|>answer\n{content}"
    return f"{reasoning}\n\n{content}"


@dataclass
class _Pre:
    """A trace read and parsed, waiting for its text work (jobs.textwork)."""

    i: int
    shape: Shape
    it: Item
    b: int | None
    parsed: Any
    text: str
    mode: Literal["sequential", "parallel"]
    prompt: str
    prompt_ids: list[int]
    thinking: str
    job: TextJob


@dataclass
class _Todo:
    record: SampleRecord
    prompt_ids: list[int]
    ids: list[int]
    probe: bool


@dataclass
class IngestSettings:
    """What `layerprobe ingest` was asked (docs/ingest.md)."""

    files: Sequence[Path]
    source_format: str
    model: str
    out: Path
    label: str | None = None
    drop: Sequence[int] | None = None
    method: str | None = None
    n_drop: int = 2
    answer_type: str | None = None
    task: str | None = None
    reasoning_format: str | None = None
    """s1, think-tags, plain, or None / "auto" (decided per file from its traces)."""
    budget: int | None = None
    probes: bool = True
    """False: read the tokenizer and config only (`tokenizer` may name another tokenizer to count with)."""
    lens: bool = True
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    """Traces per prefill forward pass (halved on out-of-memory)."""
    force: bool = False
    tokenizer: str | None = None
    producer: str | None = None
    workers: int | None = None
    """Processes for the text work (token counts, trace metrics): 0 in this process, None one per core
    from jobs.textwork.POOL_MIN_TRACES traces on."""


class Ingest(Job):
    """Read files into the run at `out` as one variant (the job skeleton: prepare, then open / work /
    close with the run locked). `run()` returns (run directory, IngestSource)."""

    kind = "ingest"

    def __init__(self, settings: IngestSettings, progress: ProgressFn | None = None, argv: Sequence[str] = ()) -> None:
        super().__init__(progress, argv)
        self.s = settings
        self.grader: Any = None
        self.pool: TextPool | None = None

    def prepare(self) -> None:
        from layerprobe.data.store import check_out_dir
        from layerprobe.tasks.registry import TASKS

        s = self.s
        self.out = Path(s.out)
        if s.source_format not in FORMATS_IN:
            raise UserError(f"--from {s.source_format}: valid formats are {', '.join(FORMATS_IN)}")
        if s.label is not None:
            check_name(s.label, "--label")
        self.hint = None if s.reasoning_format in (None, "auto") else s.reasoning_format
        if self.hint is not None and self.hint not in INGEST_FORMATS:
            raise UserError(f"--format {s.reasoning_format}: valid formats are auto, {', '.join(INGEST_FORMATS)}")
        for f in s.files:
            if not Path(f).exists():
                raise UserError(f"{f}: no such file")
            if not Path(f).is_file():
                raise UserError(
                    f"{f}: not a file (give the JSONL file of traces{', samples_<task>_<date>.jsonl' if s.source_format == 'lm-eval' else ''})"
                )
        if s.task is not None and s.task not in TASKS:
            raise UserError(f"--task {s.task}: unknown task (valid: {', '.join(TASKS)})")
        self.answer_type = s.answer_type or (TASKS[s.task].answer_type if s.task else "math")
        if self.answer_type not in ("integer", "math", "mc", "digit"):
            raise UserError(f"--answer-type {self.answer_type}: valid types are integer, math, mc, digit")
        check_out_dir(self.out, allow_orphan=s.force)
        self.reads = [read_lm_eval(Path(f)) if s.source_format == "lm-eval" else read_jsonl(Path(f)) for f in s.files]
        self.items = [it for r in self.reads for it in r.items]
        if not self.items:
            reasons = Counter[str]()
            for r in self.reads:
                reasons.update(r.skipped)
            raise UserError(f"no trace could be read from {', '.join(map(str, s.files))} ({dict(reasons)})")
        self.side = _model_side(s.model, s.probes, s.drop, s.method, s.n_drop, s.device, s.dtype, s.tokenizer)
        for r in self.reads:
            r.shape = _file_shape(r, self.hint, self.side.tokenizer)
        dropped = self.side.dropped
        method = s.method
        comp = self.side.compression
        compressed = comp.get("method") if isinstance(comp, dict) and comp.get("kind") not in (None, "depth") else None
        self.name = s.label or (
            (f"{compressed}" if compressed else "base")
            if not dropped
            else (f"{method}-{len(dropped)}" if method else "drop-" + "-".join(map(str, dropped)))
        )
        n = self.side.n_layers
        kept = [i for i in range(n) if i not in set(dropped)] if n is not None else None
        spec = VariantSpec(
            name=self.name,
            dropped=dropped,
            method=self.side.method or compressed,
            n_layers=len(kept) if kept is not None else None,
            layer_map=kept,
            compression=_compression_spec(comp),
        )
        self.producer = s.producer or next((r.producer for r in self.reads if r.producer), None)
        self.info = _run_info(
            self.out, spec, self.side, self.reads, s.task, self.answer_type, s.budget, s.dtype, s.probes, self.argv[1:], s.force
        )

    def open(self) -> None:
        self.store = RunStore.open(self.out, self.info, force=self.s.force, extend=True)
        self.store.info.resume_command = self.resume_command()
        self.store.set_status("running")

    def work(self) -> tuple[Path, IngestSource]:
        from layerprobe.models.chat import TemplateTimeout, render_chat
        from layerprobe.scaling.formats import FORMATS
        from layerprobe.tasks.grading import MathGrader, gold_problem, grade_trace

        s, side, store, name, out = self.s, self.side, self.store, self.name, self.out
        answer_type, progress, items = self.answer_type, self.progress, self.items
        tok = side.tokenizer
        skipped: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        warnings: list[str] = []
        for r in self.reads:
            skipped.update(r.skipped)
            counts["merged filter lines"] += r.merged
            warnings += [w for w in tokenizer_warnings(tok, r) + r.examples if w not in warnings]
            if r.shape is not None and len(r.shape.evidence) > 1 and self.hint is None:  # one format is read per file
                seen_as = ", ".join(f"{n} look like {k}" for k, n in r.shape.evidence.items())
                warnings.append(
                    f"{r.path.name} mixes formats ({seen_as}): every trace is read as {r.shape.format}, so the others "
                    "may be split wrongly (give each format its own file, or --format)"
                )
        samples_of: dict[str, set[int]] = {}
        for it in items:
            samples_of.setdefault(it.problem_id, set()).add(it.sample)
        seen: set[tuple[str, int, int]] = set()
        grader = self.grader = MathGrader() if answer_type == "math" else None
        # ids a probe can feed: the unembedding's rows (a padded vocabulary may exceed the tokenizer's)
        vocab = int(side.loaded.model.get_output_embeddings().weight.shape[0]) if s.probes else len(tok)
        n_new = 0
        todo: list[_Todo] = []
        enc = lambda text: tok.encode(text, add_special_tokens=False)

        def flush() -> None:
            """Probe the traces read so far (batched prefill), then write their records: arrays first."""
            nonlocal n_new
            layers: dict[int, str] = {}
            batch = [(i, t) for i, t in enumerate(todo) if t.probe]
            if batch:
                from layerprobe.probe.prefill import PrefillItem, prefill_many
                from layerprobe.probe.store import save_trace_layers

                for tl in prefill_many(
                    side.loaded, [PrefillItem(i, t.prompt_ids, t.ids) for i, t in batch], lens=s.lens, batch_size=s.batch_size
                ):
                    index = int(tl.key)
                    rec = todo[index].record
                    rel = f"layers/{name}/{trace_file_stem(rec.problem_id, rec.mode, rec.budget, rec.sample)}.npz"
                    tl.key = Path(rel).stem
                    save_trace_layers(out / rel, tl)
                    layers[index] = rel
            for i, t in enumerate(todo):
                store.append(t.record.model_copy(update={"layers_file": layers.get(i)}) if i in layers else t.record)
                n_new += 1
            todo.clear()

        numbered = [(r.shape, it) for r in self.reads for it in r.items]
        template_hangs = ""

        def prelude() -> Iterator[_Pre]:
            """What each new trace needs before its text work (in this process, in file order)."""
            nonlocal template_hangs
            for i, (shape, it) in enumerate(numbered):
                assert shape is not None
                b = it.budget if it.budget is not None else s.budget
                if (it.problem_id, b or 0, it.sample) in seen:
                    skipped["the same id, budget and sample again (the first kept)"] += 1
                    continue
                seen.add((it.problem_id, b or 0, it.sample))
                if it.no_prompt and s.probes:
                    skipped["no prompt (probes run the prompt through the model; --no-probes reads such traces)"] += 1
                    continue
                counts["without a prompt (text metrics only)"] += it.no_prompt
                if it.reasoning is not None:
                    parsed, text = from_fields(it.reasoning, it.completion), _rebuild(shape, it.reasoning, it.completion)
                    counts["reasoning in a separate field"] += 1
                else:
                    parsed, text = parse_trace(shape.format, it.completion, bare=shape.bare), it.completion
                mode: Literal["sequential", "parallel"] = "parallel" if len(samples_of[it.problem_id]) > 1 else "sequential"
                prompt = it.prompt
                if it.messages is not None and not prompt:  # a prompt given as text is used as it is
                    if template_hangs:
                        skipped[template_hangs] += 1
                        continue
                    try:
                        prompt = render_chat(tok, it.messages)
                    except TemplateTimeout as exc:  # a template that loops: not tried again on the other traces
                        template_hangs = f"messages not rendered: {exc} (the template is not run again)"
                        skipped[template_hangs] += 1
                        continue
                    except Exception:  # noqa: BLE001 - a tokenizer without a chat template cannot render messages
                        skipped["messages that the tokenizer's chat template cannot render"] += 1
                        continue
                prompt_ids = it.prompt_ids or enc(prompt)
                stored = store.has((name, it.problem_id, mode, b or 0, it.sample))
                parts = None
                if (
                    it.completion_ids
                    and it.reasoning is None
                    and parsed.ended
                    and not parsed.reopened
                    and shape.format in FORMATS
                ):
                    parts = split_ids(tok, FORMATS[shape.format], it.completion_ids)
                # the generated ids, decoded, when the file gives them (as the engine records it); else the file's text
                thinking = tok.decode(parts[0], skip_special_tokens=False) if parts else parsed.thinking
                job = TextJob(
                    text,
                    thinking,
                    parsed.answer,
                    all_ids=it.completion_ids,
                    think_ids=parts[0] if parts else None,
                    answer_ids=parts[1] if parts else None,
                    metrics=not stored and (bool(prompt_ids) or it.no_prompt) and max(prompt_ids, default=0) < vocab,
                    vocab=vocab,
                )
                yield _Pre(i, shape, it, b, parsed, text, mode, prompt, prompt_ids, thinking, job)

        pool = self.pool = TextPool(tok, n_workers(s.workers, len(numbered))).open()
        for pre, done in pool.text(prelude(), lambda pre: pre.job):
            assert done is not None
            i, shape, it, b, parsed, text, mode, prompt = (
                pre.i,
                pre.shape,
                pre.it,
                pre.b,
                pre.parsed,
                pre.text,
                pre.mode,
                pre.prompt,
            )
            prompt_ids, thinking = pre.prompt_ids, pre.thinking
            progress(f"ingest {name}", i, len(items))
            all_ids = done.all_ids.tolist()
            cut = it.cut if it.cut is not None else (True if it.cap and len(all_ids) >= it.cap else None)
            finish = finish_of(parsed, shape.format, cut)
            counts["budget-forced"] += finish == "budget"
            counts["truncated"] += finish == "truncated"
            counts["re-opened their thinking"] += parsed.reopened > 0
            if parsed.split:  # a stream without delimiters: which rule set its thinking part
                counts[f"answer from {parsed.split}"] += 1
            if store.has((name, it.problem_id, mode, b or 0, it.sample)):
                continue
            if max(prompt_ids + list(all_ids), default=0) >= vocab:
                skipped["token ids outside the tokenizer's vocabulary (another tokenizer?)"] += 1
                continue
            if (not prompt_ids and not it.no_prompt) or not all_ids:
                skipped["empty prompt or completion"] += 1
                continue
            assert done.fields is not None
            think_ids, answer_ids = done.think_ids.tolist(), done.answer_ids.tolist()
            if answer_ids and answer_ids[-1] == tok.eos_token_id:  # the stop token is not part of the answer
                answer_ids = answer_ids[:-1]
            g = grade_trace(answer_type, it.gold, parsed.answer, thinking, grader, truncated=finish == "truncated")
            unusable = gold_problem(answer_type, it.gold)  # the answer is still read; the trace is not graded
            if unusable is not None:
                where = (
                    f" in any of the fields {gold_fields_words()}"
                    if unusable == "no gold answer" and s.source_format == "jsonl"
                    else ""
                )
                counts[f"not graded ({unusable}{where})"] += 1
            m = done.fields
            too_long = side.context is not None and len(prompt_ids) + len(all_ids) > side.context
            if s.probes and too_long:
                counts["probes skipped (longer than the model's context)"] += 1
            external = dict(it.external, prompt=prompt)
            if parsed.forced or parsed.reopened or it.reasoning is not None:
                external["shape"] = {"forced": parsed.forced, "reopened": parsed.reopened, "fields": it.reasoning is not None}
            record = SampleRecord(
                variant=name,
                problem_id=it.problem_id,
                group=it.group,
                mode=mode,
                budget=b or 0,
                budget_recorded=b is not None,
                sample=it.sample,
                seed=0,
                prompt_tokens=len(prompt_ids),
                thinking_tokens=len(think_ids),
                answer_tokens=len(answer_ids),
                finish=finish,
                budget_hit=finish in ("budget", "truncated"),
                answer=g.extracted,
                extraction=g.rule,
                gold=it.gold,
                correct=g.correct if unusable is None else None,
                **m,
                thinking_text=thinking,
                text=text,
                layers_file=None,
                origin="ingested",
                external=external,
            )
            todo.append(_Todo(record, prompt_ids, list(all_ids), s.probes and not too_long))
            if len(todo) >= FLUSH_EVERY:
                flush()
        flush()
        progress(f"ingest {name}", len(items), len(items))
        total = sum(1 for r in store.records if r.variant == name)
        if total == 0:
            raise UserError(
                f"no trace of {', '.join(str(r.path) for r in self.reads)} could be kept"
                + (f" ({'; '.join(f'{n} {why}' for why, n in skipped.items())})" if skipped else "")
            )
        src = IngestSource(
            path=", ".join(str(r.path) for r in self.reads),
            sha1=",".join(_sha1(r.path) for r in self.reads),
            format=s.source_format,
            variant=name,
            traces=total,
            new=n_new,
            skipped=dict(skipped),
            producer=self.producer,
            warnings=warnings,
            shapes=[f"{r.path.name}: {r.shape.describe()}" for r in self.reads if r.shape is not None],
            counts={k: v for k, v in counts.items() if v},
            tokenizer=side.tokenizer_name,
        )
        store.info.ingested = [x for x in store.info.ingested if x.variant != name] + [src]
        store.info.expected_traces = None
        store.set_status("running")  # run.json records what was read before the derived files are written
        _after(out, side.base, s.probes, pool.imap, store.info, store.records)
        return out, src

    def close(self, status: str) -> None:
        if self.refused and self.created and not self.store.records:
            self.store.close()
            _remove_run(self.out)  # bad input found late in a run this command created: leave nothing behind
            return
        self.store.close(status)

    def cleanup(self) -> None:
        if self.grader is not None:
            self.grader.close()
        if self.pool is not None:
            self.pool.close(wait=False)


def _remove_run(out: Path) -> None:
    """Remove a run directory this command created and that holds only what it wrote."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)


def ingest(files: Sequence[Path], source_format: str, model: str, out: Path, **kw: Any) -> tuple[Path, IngestSource]:
    """Read `files` into the run at `out` as one variant (IngestSettings says what each keyword means);
    returns the run directory and what was read."""
    progress, argv = kw.pop("progress", None), kw.pop("argv", ())
    return Ingest(IngestSettings(files, source_format, model, out, **kw), progress, ["layerprobe", *argv]).run()


def _run_info(
    out: Path,
    spec: VariantSpec,
    side: ModelSide,
    reads: Sequence[Read],
    task: str | None,
    answer_type: str,
    budget: int | None,
    dtype: str,
    probes: bool,
    argv: Sequence[str],
    force: bool = False,
) -> RunInfo:
    """run.json for the run with this variant added (the base listed first). A run.json that cannot
    be read is refused, or with `force` replaced (the traces in samples.jsonl are kept)."""
    from layerprobe.jobs.analyze import _versions

    items = [it for r in reads for it in r.items]
    old = None
    if is_run_dir(out):
        try:
            old = read_run_info(out)
        except UserError as exc:
            if not force:
                raise UserError(f"{exc}; add --force to write a new run.json (the traces already read are kept)") from None
    if old is not None and old.origin != "ingest":
        raise UserError(f"{out} holds a run written by `layerprobe analyze`; ingest into another --out")
    if old is not None and None not in (old.model.n_layers, side.n_layers) and old.model.n_layers != side.n_layers:
        raise UserError(f"{out} holds traces of a {old.model.n_layers}-layer model; --model {side.name} has {side.n_layers}")
    same = next((v for v in (old.variants if old else []) if v.name == spec.name), None)
    if same is not None and same.dropped != spec.dropped:
        lacks = lambda d: f"without layers {', '.join(map(str, d))}" if d else "unpruned"
        raise UserError(
            f"{out} already has a variant {spec.name} ({lacks(same.dropped)}); these traces come from the model "
            f"{lacks(spec.dropped)}: give them another --label"
        )
    variants = [v for v in (old.variants if old else []) if v.name != spec.name]
    variants = [spec, *variants] if spec.name == "base" else [*variants, spec]
    budgets = sorted(
        {it.budget if it.budget is not None else (budget or 0) for it in items} | set(old.config.budgets if old else [])
    )
    kw = next((r.gen_kwargs for r in reads if r.gen_kwargs), {})
    temperature = (as_float(kw.get("temperature", 1.0)) if kw.get("do_sample") else 0.0) if kw else None
    wait = max(0, as_int(kw.get("thinking_n_ignore")) or 0)
    groups = Counter(it.group or "all" for it in items if it.sample == 0)
    fmt_names = sorted({r.shape.format for r in reads if r.shape is not None})
    config = RunConfig(
        model=side.name,
        task=task or (old.config.task if old else "ingested"),
        budgets=budgets,
        samples=max(it.sample for it in items) + 1,
        parallel_budget=max(budgets),
        wait=wait,
        temperature=temperature,
        top_p=as_float(kw.get("top_p")) if kw else None,
        top_k=as_int(kw.get("top_k")) if kw else None,
        answer_max=None,
        seed=None,
        probes=probes or bool(old and old.config.probes),
        reasoning_format=",".join(fmt_names) or None,
        dtype=dtype,
    )
    return RunInfo(
        layerprobe_version=_versions()["layerprobe"],
        command=["layerprobe", *argv],
        created=old.created if old else now(),
        updated=now(),
        origin="ingest",
        config=config,
        model=ModelInfo(
            id=side.name,
            source=side.source,
            source_kind=side.source_kind,
            family=side.family,
            dtype=side.dtype,
            n_layers=side.n_layers if side.n_layers is not None else (old.model.n_layers if old else None),
            reasoning_format=config.reasoning_format,
            revision=side.revision,
            tokenizer=side.tokenizer_name,
        ),
        task=TaskRecord(
            name=config.task,
            source={"source": "ingested files"},
            answer_type=answer_type,
            regime=None,
            n_problems=len({it.problem_id for it in items}),
            groups=dict(groups),
        ),
        variants=variants,
        versions=_versions(),
        ingested=list(old.ingested) if old else [],
    )


def _after(out: Path, base: Any, probes: bool, map_fn: Any, info: RunInfo, records: Sequence[SampleRecord]) -> None:
    """Metrics for every variant of the run (`info` and `records`: the run as written; `map_fn` maps the
    Self-BLEU across samples over problems); with probes, teacher-forced comparison of every pruned
    variant (one that lacks original layers of `base`, the full model in memory) along the base traces
    it shares a key with, where not done yet, and per-layer aggregates."""
    from layerprobe.data.reader import load_run
    from layerprobe.data.summarize import write_metrics
    from layerprobe.jobs.probing import write_layer_aggregates
    from layerprobe.prune.surgery import drop_layers

    write_metrics(out, info, records, map_fn=map_fn)  # first, so that load_run reads them
    if not probes:
        return
    run = load_run(out, extras=False)
    base_name = run.base
    base_spec = run.variants[0]
    if not base.dropped and not base_spec.dropped:
        from layerprobe.data.schema import teacher_forced_file
        from layerprobe.probe.store import DamagedFile, load_trace_tokens
        from layerprobe.probe.teacher import save_teacher_forced, teacher_forced_many

        tok = base.tokenizer
        pruned = [v for v in run.variants[1:] if v.dropped and v.checkpoint is None]
        keys = {v.name: {r.key()[1:] for r in run.samples if r.variant == v.name and r.layers_file} for v in pruned}
        model_of = {v.name: drop_layers(base, v.dropped) for v in pruned}  # built once, shared by every trace
        for r in run.samples:
            if r.variant != base_name or not inside(out, r.layers_file):
                continue
            todo = [
                v
                for v in pruned
                if r.key()[1:] in keys[v.name]
                and not (out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample)).is_file()
            ]
            if not todo:
                continue
            prompt = (r.external or {}).get("prompt", "")
            try:
                tokens = load_trace_tokens(out / str(r.layers_file))
            except DamagedFile:  # a damaged probe file: this trace gets no teacher-forced comparison
                continue
            tfs = teacher_forced_many(
                base,
                [model_of[v.name] for v in todo],
                tok.encode(prompt, add_special_tokens=False),
                tokens,
                key=trace_file_stem(r.problem_id, r.mode, r.budget, r.sample),
            )
            for v, tf in zip(todo, tfs):
                save_teacher_forced(out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample), tf)
    seq = [r for r in run.samples if r.variant == base_name and r.mode == "sequential"]
    top = max((r.budget for r in seq), default=None)
    base_seq = [r for r in seq if r.budget == top]
    for spec in run.variants:
        write_layer_aggregates(
            out,
            spec,
            [r for r in run.samples if r.variant == spec.name],
            run.n_layers,
            base_traces=base_seq if spec.name != base_name else (),
        )
