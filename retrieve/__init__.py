"""retrieve: embeddings, the on-disk FAISS + BM25 index with atomic generations, and access-filtered search."""

from retrieve.embed import DEFAULT_EMBEDDER, EmbedConfig, Embedder
from retrieve.indexer import IndexConfig, IndexReport, build_index
from retrieve.search import MODES, Hit, Searcher

__all__ = ["DEFAULT_EMBEDDER", "EmbedConfig", "Embedder", "Hit", "IndexConfig", "IndexReport", "MODES", "Searcher",
           "build_index"]
