"""Focus: cut each retrieved chunk down to the few sentences around the one most like the question.

A small reader copies the answer more often from a short passage that starts near the right sentence than from
a whole chunk; the engine answers from focused passages first and looks again at the whole chunks when that
answer is a refusal or is withheld (serve/answer.py). Measured in README "Does tuning help?".

    spans = sentence_spans(text)              # [(start, end), ...] into text, formatting kept
    texts = focus_passages(embedder, query, [chunk texts], window=0)
"""

from __future__ import annotations

import re

import numpy as np

from ingest.sentences import ends_with_abbreviation

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


def focus_passages(embedder, query: str, texts: list[str], window: int) -> list[str]:
    """Each text cut to `window` sentences either side of its sentence with the highest cosine to `query`
    (one embedding call for the query and every sentence). Texts with no more than 2 * window + 1 sentences,
    and all of them when window < 0, come back whole."""
    if window < 0 or not texts:
        return list(texts)
    spans = [sentence_spans(t) for t in texts]
    cut = [i for i, s in enumerate(spans) if len(s) > 2 * window + 1]
    if not cut:
        return list(texts)
    sentences = [texts[i][a:b] for i in cut for a, b in spans[i]]
    vectors = np.asarray(embedder.encode([query] + sentences), dtype=np.float32)
    scores = vectors[1:] @ vectors[0]
    out = list(texts)
    offset = 0
    for i in cut:
        n = len(spans[i])
        best = int(np.argmax(scores[offset:offset + n]))
        offset += n
        first, last = max(0, best - window), min(n - 1, best + window)
        out[i] = texts[i][spans[i][first][0]:spans[i][last][1]]
    return out
