"""A reasoning format is one entry of `scaling.formats.FORMATS`: an entry added for this test only is
read by the trace parser (split, detection from the traces, the shape's words, a reasoning field joined
back) with no other file changed, and the shipped formats keep their delimiters in that one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerprobe.scaling import traces
from layerprobe.scaling.formats import FORMATS, ReasoningFormat


@pytest.fixture
def thought_tags(monkeypatch: pytest.MonkeyPatch) -> ReasoningFormat:
    fmt = ReasoningFormat(
        name="thought-tags",
        prompt_suffix="<thought>\n",
        end_think=("</thought>",),
        answer_open="</thought>",
        forced_answer="\n</thought>\n\n",
        trace_pattern=r"<(/?)thought>[ \t]*\n?",
        trace_phases=(("", "think"), ("/", "answer")),
        between="\n</thought>\n\n",
        read_rank=2,
    )
    monkeypatch.setitem(FORMATS, fmt.name, fmt)
    return fmt


def test_a_format_added_as_one_entry_is_read(thought_tags: ReasoningFormat) -> None:
    parsed = traces.parse_trace("thought-tags", "<thought>\nfirst 2, then 3\n</thought>\n\nso \\boxed{3}<|im_end|>junk")
    assert (parsed.thinking, parsed.answer, parsed.ended) == ("first 2, then 3", "so \\boxed{3}", True)
    cut = traces.parse_trace("thought-tags", "<thought>\nstill going")
    assert (cut.thinking, cut.answer, cut.ended) == ("still going", "", False)
    shape = traces.detect_shape(["q <thought>", "q <thought>"], ["a\n</thought>\n1", "b\n</thought>\n2"])
    assert (shape.format, shape.opener, shape.evidence) == ("thought-tags", "prompt", {"thought-tags": 2})
    assert shape.describe() == "thought-tags (<thought> … </thought>), opener in the prompt"
    assert traces.rebuild(traces.Shape(format="thought-tags", opener="none"), "r", "c") == "<thought>\nr\n</thought>\n\nc"
    # a trace that shows a shipped format as well is read as the one with the lower read_rank
    assert traces.detect_shape(["q"], ["x</think> y </thought> z"]).format == "think-tags"


def test_the_parser_spells_no_delimiter_of_its_own() -> None:
    """Every delimiter of a shipped format is written in formats.py only (traces.py reads FORMATS)."""
    source = (Path(traces.__file__)).read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", source)  # its prose may name them
    for fmt in FORMATS.values():
        for text in (fmt.prompt_suffix.strip(), fmt.answer_open.strip(), *fmt.end_think):
            assert text not in code and re.escape(text) not in code, (fmt.name, text)
