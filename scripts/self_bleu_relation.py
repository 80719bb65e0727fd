"""Both within-trace Self-BLEUs, side by side, on an lm-evaluation-harness samples file of s1-format traces
(the s1 fork's `--log_samples` output, e.g. the study's published s1.1-7B AIME24 example):

    python scripts/self_bleu_relation.py samples_aime24_nofigures_<date>.jsonl

Per trace: layerprobe's `self_bleu_within` (thinking text, sacrebleu) and the study's
`self_bleu_within_study` (whole response, nltk); then their ranges, mean difference and Spearman
correlation with a bootstrap interval (docs/definitions.md#self-bleu)."""

from __future__ import annotations

import json
import statistics
import sys

from layerprobe.metrics.correlation import spearman_interval, spearman_permutation_p
from layerprobe.metrics.selfbleu import self_bleu_within_study, self_bleu_within_trace
from layerprobe.scaling.traces import parse_trace


def main(path: str) -> None:
    ours: list[float] = []
    study: list[float] = []
    first: list[float] = []
    seen: set[object] = set()
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["doc_id"] in seen:  # the fork writes each document once per filter
            continue
        seen.add(row["doc_id"])
        for s, response in enumerate(row["resps"][0]):
            a = self_bleu_within_trace(parse_trace("s1", response).thinking)
            b = self_bleu_within_study(response)
            ours.append(a)
            study.append(b)
            if s == 0:
                first.append(b)
            print(f"doc {row['doc_id']} sample {s}: {len(response):6d} chars  layerprobe {a:5.1f}  study {b:5.1f}")
    rho, lo, hi = spearman_interval(ours, study)
    print(
        f"layerprobe {min(ours):.1f}-{max(ours):.1f} (mean {statistics.fmean(ours):.1f}); "
        f"study {min(study):.1f}-{max(study):.1f} (mean {statistics.fmean(study):.1f}; first samples {statistics.fmean(first):.1f})"
    )
    print(
        f"layerprobe - study: mean {statistics.fmean(a - b for a, b in zip(ours, study)):.1f} points; "
        f"Spearman {rho:.2f} [{lo:.2f}, {hi:.2f}], permutation p {spearman_permutation_p(ours, study):.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
