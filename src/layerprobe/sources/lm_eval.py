"""`--from lm-eval`: the samples files of lm-evaluation-harness 0.4 (`--log_samples`), upstream or the
s1 fork (docs/ingest.md#--from-lm-eval)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError
from layerprobe.rules import as_int
from layerprobe.sources.common import Item, Read, gold_text, json_lines, positive_int, skip_bad_line

_LMEVAL_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics"}
_LMEVAL_KEYS |= {"doc_hash", "prompt_hash", "target_hash"}


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
    lines = json_lines(path)
    task = path.name.removeprefix("samples_").rsplit("_", 1)[0] if path.name.startswith("samples_") else path.stem
    read = Read(path=path, items=[], skipped=Counter())
    looks_right = 0
    by_doc: dict[tuple[str, str], list[Item]] = {}
    for n, row in lines:
        if skip_bad_line(read, row, "not JSON"):
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
        budget = positive_int(kwargs.get("max_tokens_thinking")) or positive_int(kwargs.get("max_gen_toks"))
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
                    gold=gold_text(row["target"]),
                    group=task,
                    sample=s,
                    budget=budget,
                    line=n,
                    cap=positive_int(kwargs.get("max_gen_toks")),
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
