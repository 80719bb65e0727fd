"""Self-BLEU, in its two kinds, which must never be confused:

- across samples (`self_bleu_across_samples`, alias `self_bleu`): the parallel samples of one
  problem, each scored against all the others; high = the samples say the same thing (low
  diversity). This is what `self_bleu` means (docs/definitions.md#self-bleu).
- within a trace (`self_bleu_within_trace`): the sentences of one trace, each scored against
  the other sentences of the same trace; high = the trace repeats itself. This is the
  variant the study computed; it measures repetition, not diversity across samples.

Both are means of sacrebleu sentence-level BLEU (0-100, sacrebleu's defaults: 13a tokenizer,
exponential smoothing, effective order, case-sensitive) and equal the plain
`sacrebleu.sentence_bleu(h_i, [h_j for j != i]).score` computation. Each text's n-grams are
extracted once (with sacrebleu's own tokenizer and n-gram code) instead of once per
hypothesis, so long traces and many samples stay fast.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from sacrebleu.metrics.bleu import BLEU

#: Keys under which the two kinds appear in result dicts.
ACROSS_KEY = "self_bleu_across"
WITHIN_KEY = "self_bleu_within"

_LONG_TEXT_CHARS = 20_000  # texts longer than this are not left in sacrebleu's tokenizer cache
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026\u3002\uff01\uff1f])\s+|\n+")


@lru_cache(maxsize=8)
def _bleu(tokenize: str) -> BLEU:
    # The same configuration as sacrebleu.sentence_bleu's defaults.
    return BLEU(lowercase=False, force=False, tokenize=tokenize, smooth_method="exp", smooth_value=None, effective_order=True)


def _forget_tokenized(bleu: BLEU) -> None:
    """Empty sacrebleu's tokenizer memo caches (up to 65,536 inputs and outputs each).

    They are pure memoisation; kept full of 30k-token traces they would hold gigabytes over
    a long run, so they are cleared after long texts have been tokenised.
    """
    for obj in (bleu.tokenizer, getattr(bleu.tokenizer, "_post_tokenizer", None)):
        cache_clear = getattr(getattr(type(obj), "__call__", None), "cache_clear", None)  # noqa: B004 - the cached method itself
        if callable(cache_clear):
            cache_clear()


def _closest_other_length(own: int, counts: Counter[int], lengths: list[int]) -> int:
    """sacrebleu's closest reference length among all lengths except one copy of `own`.

    The hypothesis is one of the texts, so its length is `own`; ties go to the shorter one.
    """
    if counts[own] >= 2:
        return own
    pos = bisect.bisect_left(lengths, own)  # lengths: sorted distinct values, own included
    lower = lengths[pos - 1] if pos > 0 else None
    upper = lengths[pos + 1] if pos + 1 < len(lengths) else None
    if lower is None:
        return upper if upper is not None else 0
    if upper is None or own - lower <= upper - own:
        return lower
    return upper


def _clipped_counts(segments: Sequence[Sequence[str]], max_order: int) -> tuple[list[list[int]], list[list[int]]]:
    """For every segment (a list of words) and n-gram order n = 1..max_order: how many of its n-grams
    the other segments have too, each n-gram's count clipped to its largest count in any other
    segment (`correct`), and how many n-grams it has (`total`). Exact integer counts, the same as
    counting each segment's n-grams in a Counter and comparing it with every other, but computed for
    all segments at once with numpy (each n-gram numbered by its (n-1)-gram and last word)."""
    n_seg = len(segments)
    vocab: dict[str, int] = {}
    lens = np.fromiter((len(s) for s in segments), dtype=np.int64, count=n_seg)
    words = np.fromiter((vocab.setdefault(w, len(vocab)) for s in segments for w in s), dtype=np.int64, count=int(lens.sum()))
    seg = np.repeat(np.arange(n_seg, dtype=np.int64), lens)
    end = np.repeat(np.cumsum(lens), lens)  # one past each word's segment
    pos = np.arange(words.size, dtype=np.int64)
    correct = np.zeros((n_seg, max_order), dtype=np.int64)
    total = np.zeros((n_seg, max_order), dtype=np.int64)
    gram = words  # gram[i]: the number of the n-gram starting at word i (of the flat sequence)
    n_words = max(1, len(vocab))
    for n in range(1, max_order + 1):
        if n > 1:
            if words.size < n:
                break
            _, gram = np.unique(gram[: words.size - n + 1] * n_words + words[n - 1 :], return_inverse=True)
        valid = pos[: gram.size] + n <= end[: gram.size]  # the n-gram lies inside one segment
        if not valid.any():
            break
        n_gram = int(gram.max()) + 1
        pair, count = np.unique(seg[: gram.size][valid] * n_gram + gram[valid], return_counts=True)
        who, g = pair // n_gram, pair % n_gram
        order = np.lexsort((-count, g))  # by n-gram, the largest count first
        who, g, count = who[order], g[order], count[order]
        first = np.ones(g.size, dtype=bool)
        first[1:] = g[1:] != g[:-1]
        start = np.flatnonzero(first)
        top = count[start]
        has_second = np.zeros(start.size, dtype=bool)
        nxt = start + 1
        has_second[nxt < g.size] = ~first[nxt[nxt < g.size]]
        second = np.where(has_second, count[np.minimum(nxt, g.size - 1)], 0)
        group = np.cumsum(first) - 1
        # the largest count among the other segments: the second largest for the segment holding the
        # largest (ties: the same value), the largest for every other
        ref = np.where(first, second[group], top[group])
        correct[:, n - 1] = np.bincount(who, weights=np.minimum(count, ref), minlength=n_seg).astype(np.int64)
        total[:, n - 1] = np.bincount(who, weights=count, minlength=n_seg).astype(np.int64)
    return correct.tolist(), total.tolist()


def pairwise_self_bleu(segments: Sequence[str], tokenize: str = "13a") -> list[float]:
    """Sentence BLEU of each segment against all the other segments, one score per segment.

    scores[i] == sacrebleu.sentence_bleu(segments[i], segments[:i] + segments[i+1:],
    tokenize=tokenize).score. Needs at least 2 segments (else ValueError).
    """
    if isinstance(segments, str):
        raise TypeError("expected a sequence of strings, got a single str")
    segs = list(segments)
    for seg in segs:
        if not isinstance(seg, str):
            raise TypeError(f"every text must be a str, got {type(seg).__name__}")
    if len(segs) < 2:
        raise ValueError("Self-BLEU needs at least 2 texts")
    bleu = _bleu(tokenize)
    order = bleu.max_ngram_order
    words = [bleu._preprocess_segment(seg).split() for seg in segs]  # what extract_all_word_ngrams splits
    if max(len(seg) for seg in segs) > _LONG_TEXT_CHARS:
        _forget_tokenized(bleu)
    lens = [len(w) for w in words]
    correct_all, total_all = _clipped_counts(words, order)
    len_counts = Counter(lens)
    distinct_lens = sorted(len_counts)
    scores: list[float] = []
    for i in range(len(segs)):
        correct, total = correct_all[i], total_all[i]
        ref_len = _closest_other_length(lens[i], len_counts, distinct_lens)
        score = BLEU.compute_bleu(
            correct,
            total,
            lens[i],
            ref_len,
            smooth_method=bleu.smooth_method,
            smooth_value=bleu.smooth_value,
            effective_order=bleu.effective_order,
            max_ngram_order=order,
        ).score
        scores.append(score)
    return scores


def _mean_clipped(scores: list[float]) -> float:
    # sacrebleu gives 100.00000000000004 for a perfect match; keep the mean inside [0, 100].
    return min(100.0, max(0.0, math.fsum(scores) / len(scores)))


def self_bleu_across_samples(texts: Sequence[str], tokenize: str = "13a") -> float:
    """Self-BLEU across the parallel samples of one problem (0-100; high = low diversity).

    The mean over i of sacrebleu.sentence_bleu(texts[i], [texts[j] for j != i]).score, with
    sacrebleu's defaults. Does not depend on the order of the samples. NaN when there are
    fewer than 2 texts (nothing to compare with).
    """
    if isinstance(texts, str):
        raise TypeError("expected a sequence of sample texts, got a single str")
    texts = list(texts)
    if len(texts) < 2:
        return math.nan
    return _mean_clipped(pairwise_self_bleu(texts, tokenize))


def self_bleu(texts: Sequence[str], tokenize: str = "13a") -> float:
    """Self-BLEU across samples (the name in docs/definitions.md#self-bleu); see self_bleu_across_samples."""
    return self_bleu_across_samples(texts, tokenize)


def split_sentences(text: str) -> list[str]:
    """The sentences of a trace: split after . ! ? \u2026 (and CJK full stops) followed by
    whitespace, and at every line break; blank pieces are dropped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


def self_bleu_within_trace(text: str, tokenize: str = "13a") -> float:
    """Self-BLEU within one trace (0-100; high = the trace repeats itself).

    The trace is split into sentences (split_sentences); the result is the mean over
    sentences s of sacrebleu.sentence_bleu(s, [every other sentence of the trace]).score.
    This is the study's variant: a repetition measure, not a diversity measure across
    samples. NaN when the trace has fewer than 2 sentences (empty or one sentence).
    """
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return math.nan
    return _mean_clipped(pairwise_self_bleu(sentences, tokenize))


# ---------------------------------------------------------------------------------------------
# The study's within-response Self-BLEU (nltk), a third number beside the two above.

#: Key of the study's within-response Self-BLEU in result dicts and samples.jsonl.
STUDY_KEY = "self_bleu_within_study"
_NLTK_K = 5  # nltk's SmoothingFunction default k, used by method4
_MAX_ORDER = 4


_WORD_PATTERN_LISTS = ("STARTING_QUOTES", "PUNCTUATION", "ENDING_QUOTES", "CONVERT_PARENTHESES")
_WORD_PATTERN_PAIRS = ("PARENS_BRACKETS", "DOUBLE_DASHES")
_WORD_PATTERN_PLAIN = ("CONTRACTIONS2", "CONTRACTIONS3")


def _stdlib_pattern(p: Any) -> re.Pattern[str] | None:
    """A pattern of nltk's word tokenizer compiled by Python's `re`: itself when it already is one; from
    the pattern text and flags of one compiled by the `regex` module (nltk's ReDoS guard); None when its
    flags have no `re` equivalent or `re` cannot compile it."""
    if isinstance(p, re.Pattern):
        return p
    rx = getattr(p, "_rx", p)
    pattern, flags = getattr(rx, "pattern", None), getattr(rx, "flags", None)
    if not isinstance(pattern, str) or not isinstance(flags, int):
        return None
    import regex

    out = 0
    for name in ("IGNORECASE", "MULTILINE", "DOTALL", "VERBOSE", "ASCII"):
        if flags & getattr(regex, name):
            out |= getattr(re, name)
            flags &= ~getattr(regex, name)
    if flags & ~(regex.UNICODE | regex.VERSION0):  # another engine feature: keep nltk's own pattern
        return None
    try:
        return re.compile(pattern, out)
    except re.error:
        return None


def _stdlib_word_tokenizer(tokenizer: Any) -> Any:
    """nltk's word tokenizer with its own patterns and replacements, compiled by Python's `re` instead of
    the `regex` module behind nltk's ReDoS guard (nltk 3.9.3 on; before it nltk used `re` itself), and
    run by nltk's own `tokenize`: the same tokens, about 1.8x faster. The patterns are nltk's constants
    (linear-time), not the caller's. Unchanged when one of them has no `re` equivalent."""
    swapped: dict[str, Any] = {}
    for name in _WORD_PATTERN_LISTS:
        pairs = [(_stdlib_pattern(p), r) for p, r in getattr(tokenizer, name, [])]
        swapped[name] = pairs
        if any(p is None for p, _ in pairs):
            return tokenizer
    for name in _WORD_PATTERN_PAIRS:
        p, r = getattr(tokenizer, name)
        swapped[name] = (_stdlib_pattern(p), r)
        if swapped[name][0] is None:
            return tokenizer
    for name in _WORD_PATTERN_PLAIN:
        swapped[name] = [_stdlib_pattern(p) for p in getattr(tokenizer, name)]
        if any(p is None for p in swapped[name]):
            return tokenizer
    for name, value in swapped.items():
        setattr(tokenizer, name, value)  # instance attributes over the class's
    return tokenizer


@lru_cache(maxsize=1)
def nltk_tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), _stdlib_word_tokenizer(NLTKWordTokenizer())


def study_sentences(text: str) -> list[list[str]]:
    """The study's units: sentences (nltk's Punkt algorithm with its default parameters: the
    pretrained English model the study used is a download, so abbreviations such as "e.g." may end
    a sentence here), each cut into words by nltk's word tokenizer."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    splitter, words = nltk_tokenizers()
    return [words.tokenize(s) for s in splitter.tokenize(text.strip())]


def nltk_pairwise_bleu(sentences: Sequence[Sequence[str]]) -> list[float]:
    """nltk `sentence_bleu(others, sentences[i], smoothing_function=SmoothingFunction().method4)` of
    each tokenized sentence against all the others (0-1), computed with each sentence's n-grams
    counted once. Needs at least 2 sentences."""
    sents = [list(s) for s in sentences]
    if len(sents) < 2:
        raise ValueError("Self-BLEU needs at least 2 sentences")
    lens = [len(s) for s in sents]
    correct, total = _clipped_counts(sents, _MAX_ORDER)
    scores = [[(num, max(1, den)) for num, den in zip(c, t)] for c, t in zip(correct, total)]
    len_counts = Counter(lens)
    distinct = sorted(len_counts)
    out = []
    for i, pn in enumerate(scores):
        hyp = lens[i]
        if pn[0][0] == 0:  # no matching unigram: nltk returns 0
            out.append(0.0)
            continue
        ref = _closest_other_length(hyp, len_counts, distinct)
        bp = 1.0 if hyp > ref else (0.0 if hyp == 0 else math.exp(1 - ref / hyp))
        p: list[float] = []
        inc = 1
        for num, den in pn:  # smoothing method 4 (Chen & Cherry), as nltk applies it
            if num == 0 and hyp > 1:
                p.append((1 / (2**inc * _NLTK_K / math.log(hyp))) / den)
                inc += 1
            else:
                p.append(num / den)
        out.append(bp * math.exp(math.fsum(0.25 * math.log(x) for x in p if x > 0)))
    return out


def self_bleu_within_study(text: str) -> float:
    """The study's within-response Self-BLEU, ×100 (0-100; high = the response repeats itself).

    Its definition (the study's analysis code): the response cut into sentences, each scored with
    nltk's `sentence_bleu` (4-gram, uniform weights, smoothing method 4, nltk word tokens) against
    all the other sentences of the response, averaged over sentences. The study applies it to the
    whole response (thinking and answer) of a problem's first sample. NaN for fewer than 2
    sentences (the study's script fails there), and when nltk's sentence splitter gives up on a
    pathological text (it stops a regular expression after 5 s: ". " repeated 200,000 times)."""
    try:
        sentences = study_sentences(text)
    except TimeoutError:  # nltk.redos: its own guard against a text its patterns read too slowly
        return math.nan
    if len(sentences) < 2:
        return math.nan
    return 100.0 * math.fsum(nltk_pairwise_bleu(sentences)) / len(sentences)
