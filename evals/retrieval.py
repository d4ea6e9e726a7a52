"""Chunk-level retrieval for `ragtune eval`: where the answer's chunk lands under each retriever setting, side by
side (the reader sees only the top 3, so recall@1/3/5 of that chunk is what matters).

The answer's chunk: every chunk that holds a gold answer's text (SQuAD-normalised, whole words); when none does
(long or paraphrased answers: PubMedQA conclusions are not in the abstracts, e-manual answers span chunks), the
gold document's chunk that shares the most of the answer's content words.

Settings (each only where the workspace has what it needs):
    dense, bm25, hybrid   the packaged embedder, BM25, and their plain (equal-weight) RRF: retrieval before issue 21
    adaptive              adaptive score fusion of the two and of the documents' BM25 (the default: settings.json null)
    weighted              hybrid with the workspace's RRF weight, when settings.json gives one other than 0.5
    tuned dense, tuned hybrid   the newest tuned embedder (in memory unless the index is built with it)
    reranked              hybrid with the workspace's fusion, its top-N reordered by the newest trained reranker
    default               what `ragtune search` / `ask` run now (Searcher.describe says which)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from evals import metrics as M
from generate.prompts import content_words
from retrieve.fusion import ADAPTIVE

RECALL_KS = (1, 3, 5)


@dataclass(frozen=True)
class Setting:
    name: str
    view: str  # which searcher: base (packaged embedder), tuned (newest tuned embedder), live (what search uses)
    mode: str
    dense_weight: float | str | None = None  # None: the workspace's fusion; "adaptive" or an RRF weight: that one
    rerank: bool | None = False  # None: the searcher's own choice (the workspace's reranker unless --no-rerank)


def answer_chunks(question, chunks, normalized: list[str]) -> set[str]:
    """Ids of the question's answer chunks (see the module docstring); empty when it has no answer."""
    golds = [g for g in (M.normalize_answer(a) for a in question.answers) if g]
    ids = {c.id for c, text in zip(chunks, normalized) if any(f" {g} " in text for g in golds)}
    if ids or not question.doc:
        return ids
    words = set().union(*(content_words(a) for a in question.answers)) if question.answers else set()
    best, best_ids = 0.0, set()
    for c in chunks:
        if c.doc != question.doc or not words:
            continue
        share = len(words & content_words(c.text)) / len(words)
        if share > best:
            best, best_ids = share, {c.id}
        elif share == best and share > 0:
            best_ids.add(c.id)
    return best_ids


def _views(searcher, progress: bool) -> tuple[dict, list[Setting]]:
    """The searchers each setting runs on, and the settings this workspace supports."""
    from retrieve import Embedder
    from retrieve.retrievers import list_parts

    learned = searcher.learned().settings
    parts = list_parts(searcher.workspace)
    newest = {kind: max((p["name"] for p in parts if p["name"].startswith(kind + "-")), default=None)
              for kind in ("embedder", "reranker")}
    index_tuned = learned.embedder is not None and searcher.embedder_name == learned.embedder
    base = searcher
    if index_tuned:
        base = searcher.with_embedder(Embedder(), progress=progress)
    views = {"base": base.with_reranker(None), "live": searcher}
    settings = [Setting("dense", "base", "dense"), Setting("bm25", "base", "bm25"),
                Setting("hybrid", "base", "hybrid", 0.5), Setting("adaptive", "base", "hybrid", ADAPTIVE)]
    if learned.dense_weight not in (None, 0.5):
        settings.append(Setting("weighted", "live", "hybrid"))
    if newest["embedder"]:
        tuned = searcher if index_tuned else searcher.with_embedder(
            _tuned_embedder(searcher.workspace, newest["embedder"]), progress=progress)
        views["tuned"] = tuned.with_reranker(None)
        settings += [Setting("tuned dense", "tuned", "dense"), Setting("tuned hybrid", "tuned", "hybrid")]
    if newest["reranker"]:
        views["reranked"] = searcher.with_reranker(newest["reranker"])
        settings.append(Setting("reranked", "reranked", "hybrid", rerank=True))
    settings.append(Setting("default", "live", "hybrid", rerank=None))  # None: as `search` decides
    return views, settings


def _tuned_embedder(workspace, name: str):
    from retrieve import EmbedConfig, Embedder
    from retrieve.retrievers import part_path

    return Embedder(EmbedConfig(model=str(part_path(workspace, name).resolve())))


def score_chunk_retrieval(searcher, questions: list, k: int = 10, progress: bool = True) -> tuple[list[dict], dict]:
    """Per answerable question {setting: rank of its first answer chunk in the top k (None: absent)}, and a
    description {setting: what ran} with the live default first."""
    from tqdm import tqdm

    chunks = searcher.generation.chunks
    normalized = [f" {M.normalize_answer(c.text)} " for c in chunks]
    views, settings = _views(searcher, progress)
    described = {s.name: views[s.view].describe(s.mode, s.rerank, s.dense_weight) for s in settings}
    rows = []
    for q in tqdm(questions, desc="chunk retrieval", unit="q", file=sys.stderr, disable=not progress):
        wanted = answer_chunks(q, chunks, normalized) if q.answerable else set()
        row = {}
        for s in settings if wanted else []:
            hits = views[s.view].search(q.query, k=k, mode=s.mode, groups=frozenset(q.groups), rerank=s.rerank,
                                        dense_weight=s.dense_weight)
            row[s.name] = next((r for r, h in enumerate(hits, start=1) if h.chunk.id in wanted), None)
        rows.append(row)
    return rows, described


def aggregate_chunk_recall(rows: list[dict], seed: int = 0, n_boot: int = 1000) -> dict:
    """{setting: {recall@1, recall@3, recall@5, mrr}} as estimates with bootstrap intervals."""
    out = {}
    names = list(dict.fromkeys(name for r in rows for name in r))
    for name in names:
        ranks = [r[name] for r in rows if name in r]
        block = {f"recall@{k}": M.bootstrap([M.recall_at(x, k) for x in ranks], seed, n_boot) for k in RECALL_KS}
        block["mrr"] = M.bootstrap([M.reciprocal_rank(x) for x in ranks], seed, n_boot)
        out[name] = {key: e.to_json() for key, e in block.items()}
    return out
