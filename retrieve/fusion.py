"""Reciprocal-rank fusion with weights: how hybrid search merges the dense and BM25 lists, and how the reranker's
order is blended with the fused one."""

from __future__ import annotations

RRF_K = 60  # the usual reciprocal-rank-fusion constant: rank r contributes 1 / (RRF_K + r)


def fuse(dense_ids, lex_ids, dense_weight: float = 0.5) -> list[tuple]:
    """Weighted reciprocal-rank fusion of two ranked id lists, best first as (id, score): rank r in the dense list
    adds 2w / (RRF_K + r), in the BM25 list 2(1 - w) / (RRF_K + r). w = 0.5 is plain RRF; at 0 (or 1) the order is
    BM25's (dense's) with the other list's extra ids after it. Ties go to the better dense rank."""
    dense_rank = {i: r for r, i in enumerate(dense_ids, start=1)}
    fused: dict = {}
    for weight, ids in ((2 * dense_weight, dense_ids), (2 * (1 - dense_weight), lex_ids)):
        for r, i in enumerate(ids, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (RRF_K + r)
    return sorted(fused.items(), key=lambda kv: (-kv[1], dense_rank.get(kv[0], 10**9)))
