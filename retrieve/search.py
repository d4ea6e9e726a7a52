"""Search the live index: dense (FAISS), lexical (BM25) or hybrid (adaptive score fusion by default, weighted
reciprocal-rank fusion when the workspace's settings say so: retrieve/fusion.py; then the workspace's reranker when it
has one), always access-filtered.

A `Searcher` holds one loaded generation at a time in an immutable `_Loaded`; before each search it checks the
CURRENT pointer and, when a re-index has published a new generation, loads it and swaps the reference. A search in
flight keeps using the generation it started with, so it never sees half of each. The learned parts
(retrieve/retrievers.py: fusion weight, reranker) are re-read the same way when WS/retrievers/settings.json changes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ingest.types import Chunk, can_read
from retrieve import dense
from retrieve.embed import EmbedConfig, Embedder, resolve_embedder
from retrieve.fusion import ADAPTIVE, RRF_K, adaptive_fuse, fuse, fusion_of  # noqa: F401 - RRF_K: an interface
from retrieve.lexical import CHUNKS_DIR, DOCUMENTS_DIR, DocumentIndex, LexicalIndex
from retrieve.rerank import Reranker, rerank_head
from retrieve.retrievers import RetrieverSettings, localize_model_path, part_path, read_settings, settings_stamp
from retrieve.store import Generation, current_generation_path, load_current

MODES = ("dense", "bm25", "hybrid")


@dataclass
class Hit:
    chunk: Chunk
    score: float  # the mode's score: cosine (dense), BM25 (bm25), the fused score (hybrid; a reranker reorders
    # hybrid hits and leaves their fused scores as they were)
    dense_rank: int | None = None  # 1-based rank in the dense list, None if absent
    lexical_rank: int | None = None
    dense_score: float | None = None  # cosine similarity, useful to judge "nothing relevant found"
    rerank_score: float | None = None  # the reranker's score, when it reordered this hit
    retriever: str = ""  # which retriever produced the hit (Searcher.describe)

    def to_json(self) -> dict:
        c = self.chunk
        return {"doc": c.doc, "section": c.section, "score": round(float(self.score), 6), "text": c.text,
                "title": c.title, "page": c.page, "position": c.position, "chunk_id": c.id,
                "groups": list(c.groups), "dense_score": None if self.dense_score is None
                else round(float(self.dense_score), 6), "rerank_score": None if self.rerank_score is None
                else round(float(self.rerank_score), 6), "retriever": self.retriever}


@dataclass
class _Loaded:
    generation: Generation
    dense_index: object
    lexical: LexicalIndex
    documents: DocumentIndex | None = None  # None: a generation indexed before documents were (fusion uses 2 lists)
    masks: dict[frozenset, tuple] = field(default_factory=dict)

    def allowed(self, groups: frozenset[str]) -> np.ndarray | None:
        """Rows the groups may read (None: all of them). Cached per group set."""
        return self._masks(groups)[0]

    def allowed_documents(self, groups: frozenset[str]) -> np.ndarray | None:
        """Document rows with a chunk the groups may read (None: all of them)."""
        return self._masks(groups)[1]

    def _masks(self, groups: frozenset[str]) -> tuple:
        if groups not in self.masks:
            mask = np.fromiter((can_read(c.groups, groups) for c in self.generation.chunks), dtype=bool,
                               count=len(self.generation.chunks))
            rows = None if mask.all() else mask
            docs = self.documents.allowed(rows) if self.documents is not None else None
            self.masks[groups] = (rows, docs)
        return self.masks[groups]


def load_generation_indexes(gen: Generation) -> _Loaded:
    return _Loaded(gen, dense.load(gen.path / "dense.faiss"), LexicalIndex.load(gen.path / CHUNKS_DIR, len(gen.chunks)),
                   DocumentIndex.load(gen.path / DOCUMENTS_DIR, gen.chunks))


@dataclass
class _Learned:
    """The workspace's retriever settings and its loaded reranker, for one version of settings.json."""

    stamp: int | None
    settings: RetrieverSettings
    reranker: Reranker | None


class Searcher:
    def __init__(self, workspace: Path, embedder: Embedder | None = None, rerank: bool = True) -> None:
        self.workspace = Path(workspace)
        self._loaded: _Loaded | None = None
        self._embedder = embedder
        self._own_embedder: Embedder | None = None
        self._lock = threading.Lock()
        self._learned: _Learned | None = None
        self._pinned = False  # a view over one generation (with_embedder): never swaps generations
        self._embedder_label = ""  # with_embedder: the name of the view's embedder
        self._fixed_learned: _Learned | None = None  # with_reranker: settings that never re-read
        self.use_reranker = rerank  # False: hybrid search never reranks (`--no-rerank`)
        self.refresh()

    @property
    def generation(self) -> Generation:
        return self._current().generation

    @property
    def embedder(self) -> Embedder:
        """The embedder of the live index: the one given if it is that model, else one loaded for it."""
        if self._pinned:
            return self._embedder
        gen = self._current().generation
        model = localize_model_path(self.workspace, gen.manifest.settings["embed_model"], gen.manifest.workspace)
        if self._embedder is not None and getattr(self._embedder, "path", None) == resolve_embedder(model):
            return self._embedder
        if self._own_embedder is None or self._own_embedder.config.model != model:
            self._own_embedder = Embedder(EmbedConfig(model=model))
        return self._own_embedder

    @contextmanager
    def queries_embedded(self, queries: list[str], progress: bool = False, desc: str = "embedding queries"):
        """Embed `queries` now, in batches, and answer their searches from that table for the duration: a caller
        about to search thousands of known queries (synth's round trip) pays one batched encode instead of one
        encode each. Other queries go to the embedder as usual.

            with searcher.queries_embedded(questions):
                hits = [searcher.search(q) for q in questions]
        """
        if not queries:
            yield self
            return
        base = self.embedder
        unique = list(dict.fromkeys(queries))
        table = dict(zip(unique, base.encode(unique, progress=progress, desc=desc)))
        previous = self._embedder
        self._embedder = _CachedQueries(base, table)
        try:
            yield self
        finally:
            self._embedder = previous

    def refresh(self) -> bool:
        """Load the live generation if it is not the one in memory; returns True when it switched."""
        if self._pinned:
            return False
        path = current_generation_path(self.workspace)
        if self._loaded is not None and path == self._loaded.generation.path:
            return False
        with self._lock:
            if self._loaded is not None and current_generation_path(self.workspace) == self._loaded.generation.path:
                return False
            self._loaded = load_generation_indexes(load_current(self.workspace))
            return True

    def _current(self) -> _Loaded:
        self.refresh()
        assert self._loaded is not None
        return self._loaded

    def learned(self) -> _Learned:
        """The workspace's retriever settings (fusion weight, reranker), re-read when settings.json changes."""
        if self._fixed_learned is not None:
            return self._fixed_learned
        stamp = settings_stamp(self.workspace)
        current = self._learned
        if current is None or current.stamp != stamp:
            settings = read_settings(self.workspace)
            reranker = None
            if settings.reranker:
                same = current is not None and current.reranker is not None and \
                    current.settings.reranker == settings.reranker and current.reranker.max_tokens == \
                    settings.rerank_tokens
                reranker = current.reranker if same else Reranker(str(part_path(self.workspace, settings.reranker)),
                                                                 settings.rerank_tokens)
            current = self._learned = _Learned(stamp, settings, reranker)
        return current

    def _view(self) -> "Searcher":
        view = Searcher.__new__(Searcher)
        view.__dict__.update(self.__dict__)
        view._lock = threading.Lock()
        return view

    def with_embedder(self, embedder: Embedder, progress: bool = False) -> "Searcher":
        """A searcher over the live generation whose dense side is re-encoded in memory with `embedder` (BM25,
        fusion weight and reranker as here): to compare embedders without re-indexing."""
        loaded = self._current()
        vectors = embedder.encode([c.embed_text for c in loaded.generation.chunks], progress=progress,
                                  desc="embedding (in memory)")
        view = self._view()
        view._pinned, view._embedder, view._own_embedder = True, embedder, None
        view._loaded = _Loaded(loaded.generation, dense.build(vectors, "flat"), loaded.lexical, loaded.documents)
        view._embedder_label = _embedder_label(embedder.config.model)
        return view

    def with_reranker(self, name: str | None) -> "Searcher":
        """A searcher like this one whose hybrid search reranks with the trained reranker WS/retrievers/NAME (None:
        no reranker), whatever settings.json says: to compare rerankers."""
        learned = self.learned()
        settings = replace(learned.settings, reranker=name)
        reranker = Reranker(str(part_path(self.workspace, name)), settings.rerank_tokens) if name else None
        view = self._view()
        view._fixed_learned = _Learned(learned.stamp, settings, reranker)
        return view

    @property
    def embedder_name(self) -> str:
        if self._embedder_label:
            return self._embedder_label
        return _embedder_label(self._current().generation.manifest.settings.get("embed_model", ""))

    def describe(self, mode: str = "hybrid", rerank: bool | None = None,
                 dense_weight: float | str | None = None) -> str:
        """Which retriever a search with these arguments runs, e.g. 'hybrid (dense all-minilm-l6-v2 + BM25, adaptive
        score fusion)' or 'hybrid (dense 0.30 all-minilm-l6-v2 + BM25 0.70), reranked by
        reranker-20261127-101500 (top 20)'."""
        return self._describe(mode, rerank, dense_weight, self._current() if mode == "hybrid" else None,
                              self.learned() if mode == "hybrid" else None)

    def _describe(self, mode: str, rerank: bool | None, dense_weight: float | str | None, loaded: _Loaded | None,
                  learned: _Learned | None) -> str:
        """`describe` for the generation and settings a search already holds (read once per search)."""
        if mode == "bm25":
            return "bm25"
        if mode == "dense":
            return f"dense ({self.embedder_name})"
        w = fusion_of(learned.settings.dense_weight, dense_weight)
        if w == ADAPTIVE:
            docs = " + documents' BM25" if loaded.documents is not None else ""
            text = f"hybrid (dense {self.embedder_name} + BM25{docs}, adaptive score fusion)"
        else:
            text = f"hybrid (dense {w:.2f} {self.embedder_name} + BM25 {1 - w:.2f})"
        if self._reranks(mode, rerank, learned):
            text += f", reranked by {learned.settings.reranker} (top {learned.settings.rerank_top})"
        return text

    def _reranks(self, mode: str, rerank: bool | None, learned: _Learned) -> bool:
        wanted = self.use_reranker if rerank is None else rerank
        return mode == "hybrid" and wanted and learned.reranker is not None

    def search(self, query: str, k: int = 5, mode: str = "hybrid",
               groups: frozenset[str] | set[str] | tuple = frozenset(), candidates: int | None = None,
               rerank: bool | None = None, dense_weight: float | str | None = None) -> list[Hit]:
        """The top k readable chunks. Hybrid fuses dense and BM25 as the workspace says (adaptive score fusion
        unless settings.json gives a weight of reciprocal-rank fusion) or as `dense_weight` says (None: the
        workspace's; "adaptive"; a number from 0 to 1: weighted RRF, retrieve.fusion.fusion_of) and, when the
        workspace has a reranker, lets it reorder the fused top-N (`rerank=False` or a Searcher made with
        rerank=False skips it)."""
        if mode not in MODES:
            raise ValueError(f"search mode must be one of {', '.join(MODES)}, not {mode!r}")
        loaded = self._current()  # one generation for the whole search
        learned = self.learned() if mode == "hybrid" else None
        fusion = fusion_of(learned.settings.dense_weight, dense_weight) if learned is not None else None
        reranks = learned is not None and self._reranks(mode, rerank, learned)
        allowed = loaded.allowed(frozenset(groups))
        n = max(candidates or max(50, 4 * k), learned.settings.rerank_top if reranks else 0)
        dense_ids = dense_scores = lex_ids = lex_scores = np.zeros(0)
        if mode in ("dense", "hybrid"):
            q = self.embedder.encode([query])[0]
            dense_ids, dense_scores = dense.search(loaded.dense_index, q, n if mode == "hybrid" else k, allowed)
        if mode in ("bm25", "hybrid"):
            lex_ids, lex_scores = loaded.lexical.search(query, n if mode == "hybrid" else k, allowed)
        chunks = loaded.generation.chunks
        dense_rank = {int(i): r for r, i in enumerate(dense_ids, start=1)}
        dense_score = {int(i): float(s) for i, s in zip(dense_ids, dense_scores)}
        lex_rank = {int(i): r for r, i in enumerate(lex_ids, start=1)}
        if mode == "dense":
            scored = [(int(i), float(s)) for i, s in zip(dense_ids, dense_scores)]
        elif mode == "bm25":
            scored = [(int(i), float(s)) for i, s in zip(lex_ids, lex_scores)]
        elif fusion == ADAPTIVE:
            docs = loaded.documents
            doc_hits = docs.search(query, n, loaded.allowed_documents(frozenset(groups))) if docs is not None else []
            scored = adaptive_fuse([(int(i), float(s)) for i, s in zip(dense_ids, dense_scores)],
                                   [(int(i), float(s)) for i, s in zip(lex_ids, lex_scores)],
                                   doc_hits, None if docs is None else lambda i: int(docs.doc_of_chunk[i]))
        else:
            scored = fuse([int(i) for i in dense_ids], [int(i) for i in lex_ids], fusion)
        rerank_score: dict[int, float] = {}
        if reranks:
            head = [chunks[i].embed_text for i, _ in scored[:learned.settings.rerank_top]]
            scored, scores = rerank_head(learned.reranker, query, scored, head, learned.settings.rerank_weight)
            rerank_score = {i: s for (i, _), s in scores.items()}
        label = self._describe(mode, rerank, dense_weight, loaded, learned)
        hits = []
        for i, s in scored[:k]:
            chunk = chunks[i]
            if not can_read(chunk.groups, frozenset(groups)):  # belt and braces: the filters above already did this
                continue
            hits.append(Hit(chunk, s, dense_rank.get(i), lex_rank.get(i), dense_score.get(i), rerank_score.get(i),
                            label))
        return hits


def _embedder_label(model: str) -> str:
    """A short name for an embedder: the tuned folder's name, else the model as given."""
    return Path(model).name if Path(model).is_absolute() else model


class _CachedQueries:
    """Stands in for a searcher's embedder (Searcher.queries_embedded): vectors of known queries come from a table
    filled by one batched encode; anything else goes to the real embedder."""

    def __init__(self, base, table: dict) -> None:
        self._base = base
        self._table = table

    def encode(self, texts, *args, **kwargs):
        missing = [t for t in texts if t not in self._table]
        if missing:
            for t, v in zip(missing, self._base.encode(missing)):
                self._table[t] = v
        return np.stack([self._table[t] for t in texts])

    def __getattr__(self, name):
        return getattr(self._base, name)
