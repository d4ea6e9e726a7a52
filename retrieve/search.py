"""Search the live index: dense (FAISS), lexical (BM25) or hybrid (reciprocal-rank fusion), always access-filtered.

A `Searcher` holds one loaded generation at a time in an immutable `_Loaded`; before each search it checks the
CURRENT pointer and, when a re-index has published a new generation, loads it and swaps the reference. A search in
flight keeps using the generation it started with, so it never sees half of each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.types import Chunk, can_read
from retrieve import dense
from retrieve.embed import EmbedConfig, Embedder
from retrieve.lexical import LexicalIndex
from retrieve.store import Generation, current_generation_path, load_current

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60  # the usual reciprocal-rank-fusion constant: rank r contributes 1 / (RRF_K + r)


@dataclass
class Hit:
    chunk: Chunk
    score: float
    dense_rank: int | None = None  # 1-based rank in the dense list, None if absent
    lexical_rank: int | None = None
    dense_score: float | None = None  # cosine similarity, useful to judge "nothing relevant found"

    def to_json(self) -> dict:
        c = self.chunk
        return {"doc": c.doc, "section": c.section, "score": round(float(self.score), 6), "text": c.text,
                "title": c.title, "page": c.page, "position": c.position, "chunk_id": c.id,
                "groups": list(c.groups), "dense_score": None if self.dense_score is None
                else round(float(self.dense_score), 6)}


@dataclass
class _Loaded:
    generation: Generation
    dense_index: object
    lexical: LexicalIndex
    masks: dict[frozenset, np.ndarray | None] = field(default_factory=dict)

    def allowed(self, groups: frozenset[str]) -> np.ndarray | None:
        """Rows the groups may read (None: all of them). Cached per group set."""
        if groups not in self.masks:
            mask = np.fromiter((can_read(c.groups, groups) for c in self.generation.chunks), dtype=bool,
                               count=len(self.generation.chunks))
            self.masks[groups] = None if mask.all() else mask
        return self.masks[groups]


def load_generation_indexes(gen: Generation) -> _Loaded:
    return _Loaded(gen, dense.load(gen.path / "dense.faiss"), LexicalIndex.load(gen.path / "bm25", len(gen.chunks)))


class Searcher:
    def __init__(self, workspace: Path, embedder: Embedder | None = None) -> None:
        self.workspace = Path(workspace)
        self._loaded: _Loaded | None = None
        self._embedder = embedder
        self._lock = threading.Lock()
        self.refresh()

    @property
    def generation(self) -> Generation:
        return self._current().generation

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            settings = self._current().generation.manifest.settings
            self._embedder = Embedder(EmbedConfig(model=settings["embed_model"]))
        return self._embedder

    def refresh(self) -> bool:
        """Load the live generation if it is not the one in memory; returns True when it switched."""
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

    def search(self, query: str, k: int = 5, mode: str = "hybrid",
               groups: frozenset[str] | set[str] | tuple = frozenset(), candidates: int | None = None) -> list[Hit]:
        if mode not in MODES:
            raise ValueError(f"search mode must be one of {', '.join(MODES)}, not {mode!r}")
        loaded = self._current()  # one generation for the whole search
        allowed = loaded.allowed(frozenset(groups))
        n = candidates or max(50, 4 * k)
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
        else:
            fused: dict[int, float] = {}
            for ranks in (dense_rank, lex_rank):
                for i, r in ranks.items():
                    fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + r)
            scored = sorted(fused.items(), key=lambda kv: (-kv[1], dense_rank.get(kv[0], 10**9)))
        hits = []
        for i, s in scored[:k]:
            chunk = chunks[i]
            if not can_read(chunk.groups, frozenset(groups)):  # belt and braces: the filters above already did this
                continue
            hits.append(Hit(chunk, s, dense_rank.get(i), lex_rank.get(i), dense_score.get(i)))
        return hits
