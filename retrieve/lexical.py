"""BM25 with bm25s (sparse matrices: one query over 100k chunks takes a few milliseconds), over each chunk's text
and over each whole document (`DocumentIndex`: hybrid search also weighs how well a chunk's document matches).

Both index the words stemmed (Snowball English through PyStemmer: 'connecting' and 'connection' are one term), so a
question need not use the document's word forms. An index saved before stemming (no ANALYZER_FILE) keeps reading
queries unstemmed until the next `ragtune index` rebuilds it (the indexer rebuilds any index not `current`).
"""

from __future__ import annotations

import json
import re
import threading
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


ANALYZER = "snowball-english"  # how index_terms makes terms; recorded beside each saved index
PLAIN = "plain"  # an index saved before stemming: tokenize() alone
ANALYZER_FILE = "ragtune-analyzer.json"
CHUNKS_DIR = "bm25"  # a generation's folder of the chunks' BM25 index
DOCUMENTS_DIR = "bm25-docs"  # ... and of the whole documents' (DocumentIndex)
_stemmers = threading.local()  # a PyStemmer Stemmer is not safe to share between threads


def index_terms(text: str, analyzer: str = ANALYZER) -> list[str]:
    """The terms BM25 indexes and searches: tokenize()'s words, stemmed ('Batteries' -> 'batteri')."""
    words = tokenize(text)
    if analyzer == PLAIN:
        return words
    stemmer = getattr(_stemmers, "stemmer", None)
    if stemmer is None:
        import Stemmer

        stemmer = _stemmers.stemmer = Stemmer.Stemmer("english")
    return stemmer.stemWords(words)


def term_cover(query: str, texts: list[str]) -> float:
    """The largest share of the query's distinct terms that one of `texts` holds (0.0 for a query without terms):
    'Who is Glenister in love with?' against a passage naming Glenister and love -> 1.0."""
    terms = set(tokenize(query))
    if not terms:
        return 0.0
    return max((len(terms & set(tokenize(t))) / len(terms) for t in texts), default=0.0)


class LexicalIndex:
    """BM25 over a list of texts (rows): the chunks of a generation, or its documents (DocumentIndex)."""

    def __init__(self, retriever, n_docs: int, analyzer: str = ANALYZER) -> None:
        self.retriever = retriever
        self.n_docs = n_docs
        self.analyzer = analyzer

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        import bm25s

        retriever = bm25s.BM25()
        retriever.index([index_terms(t) for t in texts], show_progress=False)
        return cls(retriever, len(texts))

    def save(self, path: Path) -> None:
        self.retriever.save(str(path), allow_pickle=False, show_progress=False)
        (Path(path) / ANALYZER_FILE).write_text(json.dumps({"analyzer": self.analyzer}), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, n_docs: int) -> "LexicalIndex":
        import bm25s

        return cls(bm25s.BM25.load(str(path), allow_pickle=False), n_docs, saved_analyzer(Path(path)))

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (row ids, scores) among allowed rows, best first; rows scoring 0 (no shared word) are left out."""
        tokens = [t for t in index_terms(query, self.analyzer) if t in self.retriever.vocab_dict]
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


def saved_analyzer(path: Path) -> str:
    """The analyzer an index saved at `path` was built with (PLAIN for one saved before stemming)."""
    try:
        return json.loads((path / ANALYZER_FILE).read_text(encoding="utf-8"))["analyzer"]
    except (OSError, ValueError, KeyError, TypeError):
        return PLAIN


class DocumentIndex:
    """BM25 over whole documents (a document's title and its chunks' text as one row), with each chunk row's
    document row: hybrid search adds a chunk's document score as a third list to adaptive fusion, so a chunk of the
    document that matches the question as a whole ranks above a look-alike chunk of another one. A document's
    chunks share its access groups, so a reader who may read a chunk may read its document's row."""

    def __init__(self, lexical: LexicalIndex, doc_of_chunk: np.ndarray) -> None:
        self.lexical = lexical
        self.doc_of_chunk = doc_of_chunk  # chunk row -> document row

    @staticmethod
    def rows(chunks: list) -> tuple[list[str], np.ndarray]:
        """(document keys in first-seen order, each chunk row's document row)."""
        order: dict[str, int] = {}
        doc_of = np.fromiter((order.setdefault(c.doc, len(order)) for c in chunks), dtype=np.int64, count=len(chunks))
        return list(order), doc_of

    @classmethod
    def build(cls, chunks: list) -> "DocumentIndex":
        keys, doc_of = cls.rows(chunks)
        texts: list[list[str]] = [[] for _ in keys]
        for c, d in zip(chunks, doc_of):
            texts[d].append(c.text if texts[d] else f"{c.title}\n{c.text}")
        return cls(LexicalIndex.build([" ".join(t) for t in texts]), doc_of)

    def save(self, path: Path) -> None:
        self.lexical.save(path)

    @classmethod
    def load(cls, path: Path, chunks: list) -> "DocumentIndex | None":
        """The saved index, or None where the generation has none (saved before documents were indexed)."""
        if not Path(path).is_dir():
            return None
        keys, doc_of = cls.rows(chunks)
        return cls(LexicalIndex.load(path, len(keys)), doc_of)

    def allowed(self, chunk_allowed: np.ndarray | None) -> np.ndarray | None:
        """Documents with at least one readable chunk (None: all)."""
        if chunk_allowed is None:
            return None
        mask = np.zeros(self.lexical.n_docs, dtype=bool)
        mask[self.doc_of_chunk[chunk_allowed]] = True
        return mask

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The top-k (document row, BM25 score) among allowed documents, best first."""
        ids, scores = self.lexical.search(query, k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids, scores)]


def current(path: Path) -> bool:
    """Whether the lexical indexes of the generation at `path` are today's: stemmed, with a document index."""
    return (path / DOCUMENTS_DIR).is_dir() and saved_analyzer(path / CHUNKS_DIR) == ANALYZER
