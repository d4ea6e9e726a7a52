"""The FAISS part: exact inner-product search for small corpora, HNSW for large ones, both filtered by access."""

from __future__ import annotations

from pathlib import Path

import numpy as np

APPROXIMATE_FROM = 200_000  # "auto" switches to HNSW at this many chunks; exact search is fast enough below it


def choose_kind(kind: str, n: int) -> str:
    if kind == "auto":
        return "hnsw" if n >= APPROXIMATE_FROM else "flat"
    if kind not in ("flat", "hnsw"):
        raise ValueError(f"dense index kind must be auto, flat or hnsw, not {kind!r}")
    return kind


def build(vectors: np.ndarray, kind: str):
    import faiss

    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 1
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def save(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load(path: Path):
    import faiss

    return faiss.read_index(str(path))


def search(index, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (row ids, scores) among allowed rows. The filter runs inside FAISS, so hidden chunks never surface."""
    import faiss

    k = min(k, index.ntotal)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    params = None
    if allowed is not None:
        if not allowed.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        bitmap = np.packbits(allowed.astype(np.uint8), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        if isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(64, 2 * k))
        else:
            params = faiss.SearchParameters(sel=selector)
        scores, ids = index.search(q, k, params=params)
        del bitmap  # kept alive until here on purpose: the selector points into it
    else:
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = max(64, 2 * k)
        scores, ids = index.search(q, k)
    keep = ids[0] >= 0
    return ids[0][keep].astype(np.int64), scores[0][keep]
