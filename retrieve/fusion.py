"""How hybrid search merges the dense and BM25 lists, and how the reranker's order is blended with the fused one.

Two fusions:
- `adaptive_fuse` (hybrid search's default; settings.json null): each list's scores z-normalised and summed with a
  weight taken from how confident each list is for this query; the lists are dense, BM25 over chunks and BM25 over
  whole documents (a chunk takes its document's score). Parameter-free; on the five evaluation sets it
  never ranked below the better of its two inputs, where plain RRF fell 0.04 below BM25 on narrativeqa, and the
  rag and hybrid answers with it were as good or better (docs/RESULTS.md, issue 21).
- `fuse`: weighted reciprocal-rank fusion of two ranked id lists: an explicit dense weight (settings.json,
  `ragtune tune-retriever --fusion-weight W`; 0.5 is plain RRF, the default before), and the blend of the
  reranker's order with the fused one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

RRF_K = 60  # the usual reciprocal-rank-fusion constant: rank r contributes 1 / (RRF_K + r)
ADAPTIVE = "adaptive"  # the name of adaptive score fusion where a dense weight could stand (search, tune-retriever)
CONFIDENCE_RANK = 10  # a list's confidence: how far its top score stands above its score at this rank
EPS = 1e-9


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


def fusion_of(setting: float | None, override: float | str | None = None) -> float | str:
    """The fusion a hybrid search runs: ADAPTIVE or a dense weight of reciprocal-rank fusion. `setting` is the
    workspace's (RetrieverSettings.dense_weight: None means adaptive); `override` replaces it unless None:
    ADAPTIVE ("adaptive") forces adaptive score fusion, a number from 0 to 1 weighted RRF (0.5: plain RRF)."""
    w = setting if override is None else override
    if w is None or w == ADAPTIVE:
        return ADAPTIVE
    if isinstance(w, (str, bool)) or not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"dense weight must be a number from 0 to 1 or {ADAPTIVE!r}, not {w!r}")
    return float(w)


def zscores(scores) -> np.ndarray:
    """A list's scores in its own units: minus their mean, over their population standard deviation."""
    s = np.asarray(scores, dtype=np.float64)
    return (s - s.mean()) / (s.std() + EPS) if len(s) else s


def confidence(scores) -> float:
    """How sure a ranked list (scores best first) is: its top score's lead over the score at rank CONFIDENCE_RANK
    (the last one if the list is shorter), in standard deviations of the list. A list whose top stands out is
    confident; a flat one (or one with fewer than two items) is not (0)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2:
        return 0.0
    return max(0.0, float((s[0] - s[min(CONFIDENCE_RANK, len(s)) - 1]) / (s.std() + EPS)))


def list_weights(*score_lists) -> list[float]:
    """Each list's share of the fused score: its confidence over the sum of all (when every one is 0: the dense and
    BM25 lists half each, any further list none)."""
    conf = [confidence(scores) for scores in score_lists]
    total = sum(conf)
    return [c / total for c in conf] if total > 0 else [0.5 if j < 2 else 0.0 for j in range(len(conf))]


def adaptive_weight(dense_scores, lex_scores) -> float:
    """The dense list's share of the fused score of two lists: its confidence over the sum of both (0.5 when both
    are 0)."""
    return list_weights(dense_scores, lex_scores)[0]


def adaptive_fuse(dense: list[tuple], lexical: list[tuple], documents: list[tuple] = (),
                  doc_of: Callable | None = None) -> list[tuple]:
    """Adaptive z-score fusion of ranked (id, score) lists, best first (dense: cosine similarities, lexical: BM25
    scores; optionally `documents`: (document, BM25 score) of whole documents, with `doc_of(id)` an id's document),
    as (id, fused score) for every id of the dense and lexical lists.

    Each list's scores are z-normalised by its own mean and standard deviation, and an id's fused score is the sum
    of its z in each list weighted by that list's share of the lists' confidence (`list_weights`: the more
    confident list counts more for this query); an id's document list z is its document's. An id missing from a
    list gets that list's lowest z (it ranked below everything the list returned). Ties go to the better dense
    rank, then the better BM25 rank. No constant to tune: unlike RRF it sees how far apart the scores are, so a
    list that has one clear answer is not outvoted by a flat one, and a flat document list (one document, or
    documents that all match alike) has no say."""
    dense, lexical, documents = list(dense), list(lexical), list(documents) if doc_of is not None else []
    lists = [dense, lexical, documents]
    weights = list_weights(*([s for _, s in items] for items in lists))
    z = [dict(zip((i for i, _ in items), zscores([s for _, s in items]))) for items in lists]
    floor = [min(table.values(), default=0.0) for table in z]
    dense_rank = {i: r for r, (i, _) in enumerate(dense)}
    lex_rank = {i: r for r, (i, _) in enumerate(lexical)}

    def score(i) -> float:
        total = weights[0] * z[0].get(i, floor[0]) + weights[1] * z[1].get(i, floor[1])
        return total + (weights[2] * z[2].get(doc_of(i), floor[2]) if weights[2] else 0.0)

    fused = {i: float(score(i)) for i in {**dense_rank, **lex_rank}}
    far = len(dense) + len(lexical)
    return sorted(fused.items(), key=lambda kv: (-kv[1], dense_rank.get(kv[0], far), lex_rank.get(kv[0], far)))
