"""Scoring rules for `ragtune eval`, each a small pure function of one question, plus the bootstrap that turns
per-question values into an estimate with a 95% confidence interval.

Answer matching follows SQuAD: lowercase, drop punctuation, drop the articles a/an/the, collapse spaces.
Citation markers like [1] are removed from an answer before it is scored. `contains` asks whether a normalised
gold answer appears in the normalised answer as whole words ("27 days" is in "you get 27 days [1]" but not in
"127 days").

Faithfulness is lexical: an answer sentence is supported when at least half of its content words (stop words
removed, same tokenizer as the engine's support check) occur in the passages the answer cites; the score of an
answer is the share of its sentences that are supported. It is cheap and needs no second model, but it cannot see
negation or a wrong relation between right words.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

SUPPORT_THRESHOLD = 0.5  # share of a sentence's content words that must occur in the cited passages

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def strip_citations(text: str) -> str:
    """Remove [n] and [n, m] source markers."""
    return _CITATION.sub("", text or "").strip()


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation (any Unicode P* character), articles and extra spaces."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: list[str]) -> list[str]:
    return [g for g in (normalize_answer(x) for x in golds) if g]


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalised answer equals a normalised gold answer."""
    pred = normalize_answer(strip_citations(prediction))
    return float(any(pred == g for g in _golds(golds)))


def token_f1(prediction: str, golds: list[str]) -> float:
    """Best SQuAD token F1 against any gold answer."""
    pred = normalize_answer(strip_citations(prediction)).split()
    best = 0.0
    for gold in _golds(golds):
        g = gold.split()
        common = sum((Counter(pred) & Counter(g)).values())
        if common:
            precision, recall = common / len(pred), common / len(g)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, golds: list[str]) -> bool:
    """A normalised gold answer occurs in the normalised text as whole words."""
    hay = f" {normalize_answer(strip_citations(text))} "
    return any(f" {g} " in hay for g in _golds(golds))


def contains_match(prediction: str, golds: list[str]) -> float:
    return float(contains_answer(prediction, golds))


def rank_of(items: list[str], target: str) -> int | None:
    """1-based rank of the first item equal to target (None if absent): the gold document among retrieved docs."""
    for rank, item in enumerate(items, start=1):
        if item == target:
            return rank
    return None


def recall_at(rank: int | None, k: int) -> float:
    return float(rank is not None and rank <= k)


def reciprocal_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


def citation_correct(cited_passages: list[str], golds: list[str]) -> float:
    """1.0 when one of the passages the answer cites contains a gold answer (no citation: 0.0)."""
    return float(any(contains_answer(p, golds) for p in cited_passages))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(strip_citations(text)) if s and s.strip()]


def faithfulness(answer: str, cited_passages: list[str], threshold: float = SUPPORT_THRESHOLD) -> float | None:
    """Share of the answer's sentences whose content words are mostly (>= threshold) in the cited passages.
    None when no sentence has a content word (nothing to judge)."""
    from generate.prompts import content_words

    passage_words = content_words(" ".join(cited_passages))
    judged = supported = 0
    for sentence in split_sentences(answer):
        words = content_words(sentence)
        if not words:
            continue
        judged += 1
        if len(words & passage_words) / len(words) >= threshold:
            supported += 1
    return supported / judged if judged else None


@dataclass
class Estimate:
    """A mean over questions with its bootstrap 95% confidence interval and the number of questions."""

    value: float
    low: float
    high: float
    n: int
    p50: float | None = None  # the median, for cost metrics

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_json(self) -> dict:
        d = {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4), "n": self.n}
        if self.p50 is not None:
            d["p50"] = round(self.p50, 4)
        return d


def bootstrap(values, seed: int = 0, n_boot: int = 1000, alpha: float = 0.05, median: bool = False) -> Estimate | None:
    """Mean of `values` and the percentile-bootstrap (1-alpha) interval of that mean: `n_boot` resamples of the
    questions with replacement, drawn from numpy's generator seeded with `seed`, so the interval is reproducible.
    None for no values."""
    x = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        low = high = mean
    else:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
        low, high = (float(v) for v in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
        low, high = min(low, mean), max(high, mean)
    return Estimate(mean, low, high, int(x.size), float(statistics.median(x)) if median else None)


__all__ = ["Estimate", "SUPPORT_THRESHOLD", "bootstrap", "citation_correct", "contains_answer",
           "contains_match", "exact_match", "faithfulness", "normalize_answer", "rank_of", "recall_at",
           "reciprocal_rank", "split_sentences", "strip_citations", "token_f1"]
