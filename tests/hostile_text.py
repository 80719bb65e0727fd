"""Texts of about a megabyte built to make a text rule slow (runs of spaces, of " \\n", unclosed
`\\boxed{`, stars, colons, braces ...) and every rule that reads answers or trace shapes from a model's
text. `python -m tests.hostile_text` runs every rule on every text in this process and prints one line
per run, "start RULE | TEXT" before and "done RULE | TEXT | SECONDS" after, so a caller that stops it
after a time limit knows which rule was still reading which text (tests/test_grading.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

MB = 1_000_000


def _rep(unit: str, size: int = MB) -> str:
    return unit * (size // len(unit))


TEXTS: dict[str, str] = {
    "a megabyte of spaces": _rep(" "),
    '" \\n" runs': _rep(" \n"),
    "\\n runs": _rep("\n"),
    "unclosed \\boxed{": _rep("\\boxed{"),
    "\\boxed then spaces": "\\boxed" + _rep(" "),
    "\\boxed{ then spaces": "\\boxed{" + _rep(" ") + "x",
    "answer: then spaces": "answer:" + _rep(" ") + "x",
    "answer: then spaces (integer)": "The answer is" + _rep(" ") + "x",
    'The final answer is then " \\n"': "The final answer is" + _rep(" \n"),
    "answer: x then spaces": "answer: x" + _rep(" ") + "y",
    "answer: x then dots and spaces": "answer: x" + _rep(". a") + "\n",
    "answer: again and again": _rep("answer: "),
    "answer again and again": _rep("answer "),
    "answer: then stars": "answer: " + _rep("*") + "x",
    "answer: then stars and spaces": "answer: " + _rep("* ") + "x",
    "answer is then colons and spaces": "answer is" + _rep(" :") + "x",
    "a letter then spaces": "A" + _rep(" ") + "x",
    "a letter then spaces and punctuation": "(A)" + _rep(" ") + ")" + _rep(" ", 1000) + "x",
    "letters on lines": _rep("A\n"),
    "letters and spaces": _rep("A "),
    "spaces then Final": _rep(" ") + "Final",
    "quote marks then Final": _rep("> ") + "**Final",
    "Final then tabs": "Final" + _rep("\t") + "x",
    "Final Answer then stars": "Final Answer" + _rep(" *"),
    "open braces": _rep("{"),
    "close braces": _rep("}"),
    "an unclosed JSON string": '{"answer": "' + _rep("a"),
    "JSON objects": _rep('{"answer": 1} '),
    "digits": _rep("1"),
    "digits and commas": _rep("1,"),
    "dollars and spaces": _rep("$ "),
    "parentheses": _rep("("),
    "#### runs": _rep("#### "),
    "think tags": _rep("<think>"),
    "think / answer lines": _rep("think\nanswer\n"),
    "s1 delimiters": _rep("<|im_start|>"),
    "the then spaces and newlines": "the" + _rep(" \n") + "x",
    "the final then spaces": _rep("the final "),
    "a long line then \\boxed": _rep("a") + "\\boxed x",
    "\\boxed without a brace on one line": _rep("\\boxed "),
    "<count> tags": _rep("<count>"),
    "<count> then spaces": "<count>" + _rep(" ") + "x",
    "<count> then digits": "<count>" + _rep("1"),
    "nested <count> tags": _rep("<count><count>1</count>"),
    "a two-word reflection split by spaces": "let" + _rep(" ") + "me",
    "sentence ends and spaces": _rep(". "),
}


def rules() -> dict[str, Callable[[str], object]]:
    """Every rule that reads a model's text, by name (the grader's extraction rules, its cascades, the
    readers of a trace's shape, the reflection words and sentences of the trace metrics, the rule that
    reads a judge model's count, and the reader of a JSONL file's field names)."""
    from layerprobe.judge.taxonomy import load_taxonomy, read_count
    from layerprobe.metrics.reflection import reflection_counts
    from layerprobe.metrics.selfbleu import split_sentences
    from layerprobe.scaling import traces
    from layerprobe.sources.gold import gold_like_fields
    from layerprobe.tasks import grading as g

    out: dict[str, Callable[[str], object]] = {
        "boxed": g.extract_boxed,
        "json": g.extract_json_answer,
        "phrase (numbers)": g._PHRASE.findall,
        "phrase (math)": g._PHRASE_TEXT.findall,
        "gsm8k": g._GSM8K.findall,
        "last-number": g._LAST_NUMBER.findall,
        "boxed letter": g._MC_PATTERNS[0].findall,
        "phrase letter": g._MC_PATTERNS[1].findall,
        "letter-line": g._MC_PATTERNS[2].findall,
        "last-letter": lambda t: [p.findall(t) for p in g._LAST_LETTER],
        "json letter": lambda t: g.extract_choice_rule('{"answer": "' + t[:MB] + '"}', 10, explicit_only=True),
        "digit grade": lambda t: g.grade("digit", "4", t),
        "gold answer check": lambda t: [g.gold_problem(k, t) for k in ("integer", "mc", "digit", "math")],
        "number comparison": lambda t: g.numbers_equal(t, t),
    }
    count_rule = load_taxonomy("study")[0].read
    assert count_rule == load_taxonomy("four")[0].read  # one rule for both shipped taxonomies
    out["judge count (shipped taxonomies)"] = lambda t: read_count(t, count_rule)
    out["reflection words"] = reflection_counts
    out["sentence split (Self-BLEU within a trace)"] = split_sentences
    out["gold-like field name"] = lambda t: gold_like_fields({t: "1"})
    for fmt in traces.INGEST_FORMATS:
        out[f"trace shape {fmt}"] = lambda t, fmt=fmt: traces.parse_trace(fmt, t)
    out["trace shape s1 (bare)"] = lambda t: traces.parse_trace("s1", t, bare=True)
    out["format detection"] = lambda t: traces.detect_shape([t], [t])
    return out


def main() -> None:
    for rule, fn in rules().items():
        for name, text in TEXTS.items():
            print(f"start {rule} | {name}", flush=True)
            t0 = time.perf_counter()
            fn(text)
            print(f"done {rule} | {name} | {time.perf_counter() - t0:.3f}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
