"""A trace source is one reader and one row of `sources.SOURCES`: a reader written here (tab-separated
lines), given a row for this test only, is what `ingest --from` reads and names, with no other file changed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from layerprobe.data.reader import load_run
from layerprobe.sources import SOURCES, Source, sources_help
from layerprobe.sources.common import Item, Read
from tests.cli_utils import assert_one_line_error, run_cli


def read_tsv(path: Path) -> Read:
    """id, prompt, completion (with \\n for a line break) and gold, one trace a line."""
    read = Read(path=path, items=[], skipped=Counter())
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 4:
            read.skipped["not four tab-separated fields"] += 1
            continue
        pid, prompt, completion, gold = parts
        read.items.append(
            Item(
                problem_id=pid,
                prompt=prompt,
                completion=completion.replace("\\n", "\n"),
                gold=gold,
                group="",
                sample=0,
                budget=None,
                line=n,
                external={"source": "tsv", "file": str(path), "line": n},
            )
        )
    return read


@pytest.fixture
def tsv_source(monkeypatch: pytest.MonkeyPatch) -> Source:
    source = Source("tsv", f"{__name__}:read_tsv", ": id, prompt, completion and gold, tab-separated")
    monkeypatch.setitem(SOURCES, "tsv", source)
    return source


def test_a_source_in_the_table_is_read_by_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str], tsv_source: Source) -> None:
    path = tmp_path / "traces.tsv"
    path.write_text(
        "a\t<q>3+4</q>\t<think>\\n3+4=7\\n</think>\\n\\boxed{7}\t7\n"
        "b\t<q>2+2</q>\t<think>\\n2+2=5\\n</think>\\n\\boxed{5}\t4\n"
        "a line without its fields\n"
    )
    out = tmp_path / "run"
    args = ["--model", "toy", "--answer-type", "digit", "--out", str(out), "--no-report", "--no-probes"]
    res = run_cli(capsys, "ingest", str(path), "--from", "tsv", *args)
    assert res.code == 0, res.err
    run = load_run(out)
    got = {r.problem_id: (r.answer, r.correct, r.thinking_text, r.finish) for r in run.samples}
    assert got == {"a": ("7", True, "3+4=7", "answered"), "b": ("5", False, "2+2=5", "answered")}
    (src,) = run.info.ingested
    assert (src.format, src.traces, src.skipped) == ("tsv", 2, {"not four tab-separated fields": 1})
    assert "tsv: id, prompt, completion and gold, tab-separated" in sources_help()


def test_a_name_not_in_the_table_is_refused_naming_every_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tsv_source: Source
) -> None:
    path = tmp_path / "traces.tsv"
    path.write_text("a\tq\tx\t1\n")
    res = run_cli(capsys, "ingest", str(path), "--from", "csv", "--out", str(tmp_path / "run"), "--no-probes")
    assert_one_line_error(res, "--from csv", "lm-eval, jsonl, tsv")
    assert not (tmp_path / "run").exists()
