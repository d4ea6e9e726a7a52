"""BM25's terms (stemmed), the whole-document index that hybrid search weighs as a third list, and an index saved by
an older ragtune (unstemmed, no document index): still searchable, and rebuilt by the next `ragtune index` without
re-embedding anything."""

from __future__ import annotations

import shutil

from retrieve import Searcher, build_index
from retrieve import lexical
from retrieve.fusion import adaptive_fuse
from retrieve.lexical import PLAIN, DocumentIndex, LexicalIndex, index_terms, tokenize
from retrieve.store import load_current
from tests.test_index import CountingEmbedder


def test_terms_are_stemmed_and_codes_kept():
    assert index_terms("Connecting the batteries") == ["connect", "batteri"]
    assert index_terms("connection to a battery") == ["connect", "batteri"]
    assert index_terms("Connecting", PLAIN) == tokenize("Connecting") == ["connecting"]
    assert "lg-2" in index_terms("the LG-2 form")  # codes stay whole (and their parts are added)


def test_bm25_finds_another_form_of_the_question_words():
    texts = ["Printer connection: plug the cable into port 2.", "The cafeteria opens at noon.",
             "Badges are renewed every year."]
    index = LexicalIndex.build(texts)
    ids, _ = index.search("connecting printers", k=3)
    assert ids[0] == 0 and len(ids) == 1
    plain = LexicalIndex(index.retriever, len(texts), PLAIN)  # an unstemmed query misses both words' stems
    assert len(plain.search("connecting printers", k=3)[0]) == 0


def test_a_chunk_of_the_matching_document_wins_a_tie():
    # chunks a1 and b1 look alike to dense and BM25; the question's words are all over document B
    dense = [("a1", 0.80), ("b1", 0.80)] + [(f"x{i}", 0.30 - 0.01 * i) for i in range(10)]
    chunks = [("a1", 9.0), ("b1", 9.0)] + [(f"x{i}", 2.0 - 0.1 * i) for i in range(10)]
    docs = [("B", 30.0), ("A", 5.0)] + [(f"X{i}", 4.0 - 0.1 * i) for i in range(10)]
    doc_of = {"a1": "A", "b1": "B", **{f"x{i}": f"X{i}" for i in range(10)}}.get
    assert [i for i, _ in adaptive_fuse(dense, chunks)][:2] == ["a1", "b1"]  # two lists: the tie goes to dense
    assert [i for i, _ in adaptive_fuse(dense, chunks, docs, doc_of)][:2] == ["b1", "a1"]
    flat = [("A", 5.0)]  # one document: a list without a lead has no say
    assert adaptive_fuse(dense, chunks, flat, doc_of) == adaptive_fuse(dense, chunks)


def test_document_rows_follow_the_chunks(built_index):
    _, ws, _ = built_index
    gen = load_current(ws)
    docs = DocumentIndex.load(gen.path / lexical.DOCUMENTS_DIR, gen.chunks)
    keys, doc_of = DocumentIndex.rows(gen.chunks)
    assert docs is not None and docs.lexical.n_docs == len(keys) == len(gen.manifest.docs)
    assert all(keys[d] == c.doc for c, d in zip(gen.chunks, doc_of))
    top = keys[docs.search("mileage allowance for a private car", 1)[0][0]]
    assert top in ("hr/travel-policy.html", "finance/expense-policy.md")


def test_an_index_from_before_stemming_still_searches_and_is_rebuilt_without_embedding(index_copy, embedder):
    docs, ws = index_copy
    gen = load_current(ws)
    shutil.rmtree(gen.path / lexical.DOCUMENTS_DIR)
    (gen.path / lexical.CHUNKS_DIR / lexical.ANALYZER_FILE).unlink()
    assert not lexical.current(gen.path)
    old = Searcher(ws, embedder)
    assert old._current().lexical.analyzer == PLAIN and old._current().documents is None
    assert "documents" not in old.describe() and old.search("mileage rate for my own car", k=3)
    counting = CountingEmbedder(embedder)
    report = build_index(docs, ws, embedder=counting)
    new = load_current(ws)
    assert report.generation == new.path.name != gen.path.name and counting.embedded == [] and report.embedded == 0
    assert lexical.current(new.path) and "documents' BM25" in Searcher(ws, embedder).describe()
    assert build_index(docs, ws, embedder=counting).generation == new.path.name  # and then nothing to do
