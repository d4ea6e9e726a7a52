"""Adaptive score fusion (hybrid search's default, see retrieve/retrievers.py): the fusion function on hand-made
lists, the settings file with and without a dense weight, search on the sample index (adaptive by default, weighted
RRF when a weight is set), `ragtune tune-retriever --fusion-weight` parsing and the fusion it chooses, and the eval
table's adaptive and plain-RRF rows side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer

from retrieve import Searcher
from retrieve.fusion import ADAPTIVE, adaptive_fuse, adaptive_weight, confidence, fuse, fusion_of, zscores
from retrieve.retrievers import RetrieverSettings, read_settings, write_settings

QUERY = "mileage rate for my own car"
ADAPTIVE_LABEL = "hybrid (dense all-minilm-l6-v2 + BM25 + documents' BM25, adaptive score fusion)"


def test_a_confident_list_outweighs_a_flat_one():
    # dense has one clear answer; BM25's top ten are level (its tail far below), and its top is another chunk
    dense = [("a", 0.90)] + [(f"d{i}", 0.30 - 0.001 * i) for i in range(12)]
    lexical = [("x", 10.0), ("y", 9.99), ("a", 9.98)] + [(f"b{i}", 9.97 - 0.01 * i) for i in range(7)] + \
        [(f"t{i}", 3.0 - i) for i in range(3)]
    w = adaptive_weight([s for _, s in dense], [s for _, s in lexical])
    assert confidence([s for _, s in dense]) > confidence([s for _, s in lexical]) and w > 0.7
    fused = adaptive_fuse(dense, lexical)
    assert fused[0][0] == "a"
    assert [i for i, _ in fuse([i for i, _ in dense], [i for i, _ in lexical], 0.5)][0] == "a"  # RRF agrees here
    # the roles swapped: a confident BM25 list carries its answer over a flat dense one
    flat = [(f"d{i}", 0.50 - 0.001 * i) for i in range(10)] + [(f"t{i}", 0.2 - 0.05 * i) for i in range(3)]
    sharp = [("z", 25.0)] + [(f"b{i}", 4.0 - 0.01 * i) for i in range(12)]
    assert adaptive_weight([s for _, s in flat], [s for _, s in sharp]) < 0.1
    assert adaptive_fuse(flat, sharp)[0][0] == "z"
    rrf_first = [i for i, _ in fuse([i for i, _ in flat], [i for i, _ in sharp], 0.5)][0]
    assert rrf_first == "d0"  # RRF sees ranks only: the flat list's first ties with z and wins on the dense rank


def test_an_id_missing_from_one_list_gets_that_lists_lowest_z():
    dense = [("a", 0.8), ("b", 0.6), ("c", 0.1)]
    lexical = [("b", 7.0), ("d", 3.0), ("e", 2.0)]
    w = adaptive_weight([0.8, 0.6, 0.1], [7.0, 3.0, 2.0])
    zd, zb = zscores([0.8, 0.6, 0.1]), zscores([7.0, 3.0, 2.0])
    assert zd.mean() == pytest.approx(0.0, abs=1e-9) and zd.std() == pytest.approx(1.0, abs=1e-6)
    fused = dict(adaptive_fuse(dense, lexical))
    assert set(fused) == {"a", "b", "c", "d", "e"}
    assert fused["a"] == pytest.approx(w * zd[0] + (1 - w) * zb.min())  # not in BM25: BM25's lowest z
    assert fused["d"] == pytest.approx(w * zd.min() + (1 - w) * zb[1])  # not in dense: dense's lowest z
    assert fused["b"] == pytest.approx(w * zd[1] + (1 - w) * zb[0])
    ranked = [i for i, _ in adaptive_fuse(dense, lexical)]
    assert ranked[0] == "b" and ranked == sorted(fused, key=lambda i: -fused[i])


def test_equal_confidences_weigh_half_and_edge_cases():
    scores = [0.9, 0.7, 0.65, 0.4, 0.2]
    assert adaptive_weight(scores, [10 * s + 3 for s in scores]) == pytest.approx(0.5)  # same shape, other units
    assert adaptive_weight([0.5, 0.5, 0.5], [2.0, 2.0]) == 0.5  # both flat: confidences 0
    assert adaptive_weight([0.9, 0.1], []) == 1.0  # BM25 found nothing (no query word in the index)
    assert [i for i, _ in adaptive_fuse([("a", 0.9), ("b", 0.1)], [])] == ["a", "b"]
    assert [i for i, _ in adaptive_fuse([], [("x", 3.0), ("y", 1.0)])] == ["x", "y"]
    assert adaptive_fuse([], []) == []
    # confidence reads rank 10 (or the last rank of a shorter list)
    long = [1.0] + [0.5] * 9 + [0.0] * 5
    assert confidence(long) == pytest.approx(0.5 / np.std(long), rel=1e-6)
    # ties: the better dense rank first
    assert [i for i, _ in adaptive_fuse([("a", 1.0), ("b", 1.0)], [("b", 2.0), ("a", 2.0)])] == ["a", "b"]


def test_fusion_of_setting_and_override():
    assert fusion_of(None) == ADAPTIVE and fusion_of(0.3) == 0.3
    assert fusion_of(0.3, ADAPTIVE) == ADAPTIVE and fusion_of(None, 0.5) == 0.5 and fusion_of(0.5, 0) == 0.0
    for bad in ("most", 1.5, -0.1, True):
        with pytest.raises(ValueError, match="dense weight"):
            fusion_of(None, bad)


def test_settings_round_trip_with_adaptive_and_with_a_weight(tmp_path):
    assert read_settings(tmp_path).dense_weight is None  # no file: adaptive score fusion
    path = write_settings(tmp_path, RetrieverSettings(dense_weight=None))
    assert json.loads(path.read_text())["dense_weight"] is None  # null: adaptive score fusion
    assert read_settings(tmp_path) == RetrieverSettings(dense_weight=None)
    write_settings(tmp_path, RetrieverSettings(dense_weight=0.3, reranker="reranker-x"))
    assert read_settings(tmp_path) == RetrieverSettings(dense_weight=0.3, reranker="reranker-x")
    path.write_text(json.dumps({"dense_weight": 0.5, "rerank_top": 10}))  # a file from before issue 21
    assert read_settings(tmp_path).dense_weight == 0.5 and read_settings(tmp_path).rerank_top == 10
    path.write_text(json.dumps({"rerank_top": 10}))  # no dense_weight key: the default (adaptive)
    assert read_settings(tmp_path).dense_weight is None
    for bad in ("adaptive!", 1.5, True):
        path.write_text(json.dumps({"dense_weight": bad}))
        with pytest.raises(ValueError, match="dense_weight must be a number between 0 and 1 or null"):
            read_settings(tmp_path)
    for key, bad in (("rerank_top", 0), ("rerank_top", "20"), ("rerank_tokens", 8), ("rerank_weight", None)):
        path.write_text(json.dumps({key: bad}))
        with pytest.raises(ValueError, match=f"{key} must be a .* not {bad!r}"):
            read_settings(tmp_path)


def test_search_fuses_adaptively_by_default_and_by_rrf_when_settings_give_a_weight(index_copy, embedder):
    _, ws = index_copy
    searcher = Searcher(ws, embedder)
    dense = [(h.chunk.id, h.dense_score) for h in searcher.search(QUERY, k=50, mode="dense")]
    lexical = [(h.chunk.id, h.score) for h in searcher.search(QUERY, k=50, mode="bm25")]
    loaded = searcher._current()
    docs = loaded.documents  # BM25 over whole documents, the third list: only documents the reader may read
    doc_row = {c.id: int(d) for c, d in zip(searcher.generation.chunks, docs.doc_of_chunk)}
    readable = docs.search(QUERY, 50, loaded.allowed_documents(frozenset()))
    assert len(readable) < len(docs.search(QUERY, 50))  # the sample corpus's restricted documents are left out
    expected = adaptive_fuse(dense, lexical, readable, doc_row.get)[:5]
    rrf = [i for i, _ in fuse([i for i, _ in dense], [i for i, _ in lexical], 0.5)][:5]
    assert [i for i, _ in expected] != rrf  # the query tells the two fusions apart
    hits = searcher.search(QUERY, k=5)  # no settings: adaptive score fusion; k=5 fetches 50 of each, as above
    assert [h.chunk.id for h in hits] == [i for i, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected])  # Hit.score is the fused score
    assert hits[0].retriever == ADAPTIVE_LABEL == searcher.describe()
    assert "travel-policy" in hits[0].chunk.doc
    write_settings(ws, RetrieverSettings(dense_weight=None))  # null in settings.json: the same
    assert [h.chunk.id for h in searcher.search(QUERY, k=5)] == [i for i, _ in expected]
    write_settings(ws, RetrieverSettings(dense_weight=0.5))  # a weight in settings.json: weighted RRF
    hits = searcher.search(QUERY, k=5)
    assert [h.chunk.id for h in hits] == rrf and hits[0].retriever.startswith("hybrid (dense 0.50 ")
    forced = searcher.search(QUERY, k=5, dense_weight=ADAPTIVE)  # the override beats the setting
    assert [h.chunk.id for h in forced] == [i for i, _ in expected] and forced[0].retriever == ADAPTIVE_LABEL
    with pytest.raises(ValueError, match="dense weight"):
        searcher.search(QUERY, k=5, dense_weight="most")


def test_tune_retriever_fusion_flag_and_choice():
    from tune.retriever import FUSIONS, RetrieverTuneConfig, _weight, choose_weight, fusion_tables
    from tune.retriever_cli import fusion_label, parse_fusion
    from tune.retriever_data import Candidates

    assert parse_fusion("adaptive") == ADAPTIVE and parse_fusion(" Auto ") is None and parse_fusion("0.3") == 0.3
    for bad in ("most", "1.5", "nan"):
        with pytest.raises(typer.BadParameter):
            parse_fusion(bad)
    assert fusion_label(None) == fusion_label(ADAPTIVE) == "adaptive score fusion"
    assert fusion_label(0.5) == "weighted RRF, dense weight 0.5 (plain RRF)"
    config = RetrieverTuneConfig(workspace=Path("."))
    assert config.fusion_weight == ADAPTIVE and config.check() is config  # adaptive unless told
    with pytest.raises(ValueError, match="--fusion-weight"):
        RetrieverTuneConfig(workspace=Path("."), fusion_weight="most").check()
    # one question: BM25 is confident about the relevant chunk "r", dense is flat in its top ten and ranks it 4th
    x = Candidates([f"d{i}" for i in range(3)] + ["r"] + [f"e{i}" for i in range(8)], ["r", "d0", "b1", "b2"], {"r"},
                   [0.5 - 0.001 * i for i in range(10)] + [0.2, 0.1], [20.0, 2.0, 1.9, 1.8])
    assert x.fused(ADAPTIVE)[0] == "r" and x.fused(0.5)[0] == "d0"
    tables = fusion_tables([x])
    assert list(tables) == list(FUSIONS) and tables[ADAPTIVE]["recall@1"] == 1.0 and tables[0.5]["recall@1"] == 0.0
    assert _weight(config, tables) == ADAPTIVE
    assert _weight(RetrieverTuneConfig(workspace=Path("."), fusion_weight=0.5), tables) == 0.5
    assert _weight(RetrieverTuneConfig(workspace=Path("."), fusion_weight=0.33), tables) == 0.3
    # auto: adaptive when it is within one standard error of the best, else the RRF weight nearest 0.5
    level = {f: {"recall@3": 0.9, "mrr": 0.8, "n": 300} for f in FUSIONS}
    assert choose_weight(level) == ADAPTIVE and _weight(RetrieverTuneConfig(Path("."), fusion_weight=None),
                                                         level) == ADAPTIVE
    level[ADAPTIVE] = {"recall@3": 0.7, "mrr": 0.6, "n": 300}
    assert choose_weight(level) == 0.5


def test_eval_table_shows_adaptive_and_plain_rrf_side_by_side(index_copy, embedder):
    from evals.questions import DEFAULT_QUESTIONS, load_jsonl
    from evals.retrieval import score_chunk_retrieval

    _, ws = index_copy
    questions = [q for q in load_jsonl(DEFAULT_QUESTIONS) if q.answers][:3]
    rows, described = score_chunk_retrieval(Searcher(ws, embedder), questions, progress=False)
    assert list(described) == ["dense", "bm25", "hybrid", "adaptive", "default"]
    assert described["hybrid"] == "hybrid (dense 0.50 all-minilm-l6-v2 + BM25 0.50)"
    assert described["adaptive"] == ADAPTIVE_LABEL and described["default"] == described["adaptive"]
    assert all(set(r) == set(described) for r in rows) and any(r["adaptive"] is not None for r in rows)
    write_settings(ws, RetrieverSettings(dense_weight=0.3))
    _, described = score_chunk_retrieval(Searcher(ws, embedder), questions[:1], progress=False)
    assert list(described) == ["dense", "bm25", "hybrid", "adaptive", "weighted", "default"]
    assert described["weighted"] == described["default"] == "hybrid (dense 0.30 all-minilm-l6-v2 + BM25 0.70)"
