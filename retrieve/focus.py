"""Focus: cut each retrieved chunk down to the few sentences around the one most like the question.

A small reader copies the answer more often from a short passage that starts near the right sentence than from
a whole chunk; the engine answers from focused passages first and looks again at the whole chunks when that
answer is a refusal or is withheld (serve/answer.py). Measured in README "Does tuning help?".

"Most like the question" is read two ways, and a chunk keeps the sentence each picks (mostly the same one): the
embedder's cosine, and the cosine plus TERM_WEIGHT times the share of the question's terms (BM25's tokens, each
weighted by how rare it is among the candidate sentences) that the sentence holds. The embedder alone reads
'C3-0410' and 'C3-0610', or 'WFC-720' and 'WFC-512', as the same line; the terms alone follow a question's setting
('the first half of fiscal year 2026') to the sentence that introduces it rather than the one with the revenue
(docs/RESULTS.md, "Sentences chosen by the question's words too").

    spans = sentence_spans(text)              # [(start, end), ...] into text, formatting kept
    texts = focus_passages(embedder, query, [chunk texts], window=0)
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from ingest.sentences import ends_with_abbreviation
from retrieve.lexical import tokenize

# weight of the question's rare terms against the cosine in picking a chunk's sentence (0 = the embedder alone);
# chosen on the development suite (0.5 to 2 all help; 0.75 was best or near it on every set)
TERM_WEIGHT = 0.75

# a sentence ends at . ! ? (closing quotes/brackets kept with it) before whitespace, or at a line break
_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*[ \t]+|\n+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line of `text`, whitespace excluded; abbreviations do not end one."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _END.finditer(text):
        end = m.start() + len(m.group(0).rstrip())  # closing quotes stay with their sentence
        if "\n" in m.group(0) or not ends_with_abbreviation(text[start:end]):
            _add(spans, text, start, end)
            start = m.end()
    _add(spans, text, start, len(text))
    return spans


def _add(spans: list[tuple[int, int]], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def term_scores(query: str, sentences: list[str]) -> np.ndarray:
    """Per sentence, the share of the query's distinct terms it holds, each term weighted by its rarity among
    `sentences` (log(1 + n / (df + 0.5))): 1.0 holds them all, 0.0 none (also for a query without terms)."""
    terms = set(tokenize(query))
    held = [terms & set(tokenize(s)) for s in sentences]
    df = Counter(t for h in held for t in h)
    weight = {t: math.log(1 + len(sentences) / (df[t] + 0.5)) for t in terms}
    total = sum(weight.values())
    if not total:
        return np.zeros(len(sentences), dtype=np.float32)
    return np.array([sum(weight[t] for t in h) / total for h in held], dtype=np.float32)


def focus_passages(embedder, query: str, texts: list[str], window: int, term_weight: float | None = None) -> list[str]:
    """Each text cut to `window` sentences either side of its sentence most like `query` by cosine and of its
    sentence most like it by cosine plus `term_weight` (default TERM_WEIGHT) * term_scores (one sentence when both
    agree, as they mostly do; two runs are joined by ' … '; 0 = the cosine alone). One embedding call for the
    query and every sentence. Texts with no more than 2 * window + 1 sentences, and all of them when window < 0,
    come back whole."""
    if window < 0 or not texts:
        return list(texts)
    spans = [sentence_spans(t) for t in texts]
    cut = [i for i, s in enumerate(spans) if len(s) > 2 * window + 1]
    if not cut:
        return list(texts)
    sentences = [texts[i][a:b] for i in cut for a, b in spans[i]]
    vectors = np.asarray(embedder.encode([query] + sentences), dtype=np.float32)
    cosine = vectors[1:] @ vectors[0]
    with_terms = cosine + (TERM_WEIGHT if term_weight is None else term_weight) * term_scores(query, sentences)
    out = list(texts)
    offset = 0
    for i in cut:
        n = len(spans[i])
        picks = {int(np.argmax(s[offset:offset + n])) for s in (cosine, with_terms)}
        offset += n
        keep = sorted({j for b in picks for j in range(max(0, b - window), min(n - 1, b + window) + 1)})
        out[i] = " … ".join(texts[i][spans[i][run[0]][0]:spans[i][run[-1]][1]] for run in _runs(keep))
    return out


def _runs(indices: list[int]) -> list[list[int]]:
    """Sorted indices split into runs of consecutive ones: [1, 2, 5] -> [[1, 2], [5]]."""
    runs: list[list[int]] = []
    for j in indices:
        if runs and j == runs[-1][-1] + 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs
