"""BM25 over chunk text with bm25s (sparse matrices: one query over 100k chunks takes a few milliseconds)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its may must my no not of on "
    "or our should so than that the their then there these they this to was we were what when where which who why "
    "will with would you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, keeping codes like 'lg-2' or 'fin-ap' whole and also adding their parts."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in STOPWORDS:
            continue
        out.append(tok)
        if any(c in tok for c in "-_."):
            out.extend(p for p in re.split(r"[-_.]", tok) if p and p not in STOPWORDS)
    return out


def term_cover(query: str, texts: list[str]) -> float:
    """The largest share of the query's distinct terms that one of `texts` holds (0.0 for a query without terms):
    'Who is Glenister in love with?' against a passage naming Glenister and love -> 1.0."""
    terms = set(tokenize(query))
    if not terms:
        return 0.0
    return max((len(terms & set(tokenize(t))) / len(terms) for t in texts), default=0.0)


class LexicalIndex:
    def __init__(self, retriever, n_docs: int) -> None:
        self.retriever = retriever
        self.n_docs = n_docs

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        import bm25s

        retriever = bm25s.BM25()
        retriever.index([tokenize(t) for t in texts], show_progress=False)
        return cls(retriever, len(texts))

    def save(self, path: Path) -> None:
        self.retriever.save(str(path), allow_pickle=False, show_progress=False)

    @classmethod
    def load(cls, path: Path, n_docs: int) -> "LexicalIndex":
        import bm25s

        return cls(bm25s.BM25.load(str(path), allow_pickle=False), n_docs)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (row ids, scores) among allowed rows, best first; rows scoring 0 (no shared word) are left out."""
        tokens = [t for t in tokenize(query) if t in self.retriever.vocab_dict]
        if not tokens or self.n_docs == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top]
