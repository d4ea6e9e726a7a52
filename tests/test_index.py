"""The real index on disk: building, incremental updates, deletions, failures, access filtering and atomicity."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from retrieve import Embedder, IndexConfig, Searcher, build_index
from retrieve.store import IndexBusyError, index_dir, load_current, writer_lock
from tests.conftest import QUESTIONS, REPO


class CountingEmbedder(Embedder):
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, real: Embedder) -> None:
        super().__init__(real.config)
        self._model, self._tokenizer = real.model, real.tokenizer
        self.embedded: list[str] = []

    def encode(self, texts, progress=False, desc="embedding"):
        self.embedded.extend(texts)
        return super().encode(texts, progress=progress, desc=desc)


def _questions():
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


def test_full_build_report_and_no_duplicates(built_index):
    docs, ws, report = built_index
    gen = load_current(ws)
    assert len(report.added) == len(gen.manifest.docs) >= 30 and not report.failed
    assert report.chunks == report.embedded == len(gen.chunks) == gen.vectors.shape[0]
    assert len({c.id for c in gen.chunks}) == len(gen.chunks)
    assert len({(c.doc, c.position) for c in gen.chunks}) == len(gen.chunks)
    assert np.allclose(np.linalg.norm(gen.vectors, axis=1), 1.0, atol=1e-3)
    assert not any((p / "vectors.npy").read_bytes().startswith(b"\x80") for p in [gen.path])  # numpy, not pickle


def test_rerun_without_changes_embeds_nothing(index_copy, embedder):
    docs, ws = index_copy
    before = load_current(ws).path.name
    counting = CountingEmbedder(embedder)
    report = build_index(docs, ws, embedder=counting)
    assert counting.embedded == [] and report.embedded == 0
    assert report.added == report.updated == report.removed == []
    assert load_current(ws).path.name == before == report.generation


def test_editing_one_document_reembeds_only_that_document(index_copy, embedder):
    docs, ws = index_copy
    old = load_current(ws)
    target = "it/vpn-howto.txt"
    path = docs / target
    path.write_text(path.read_text() + "\n\nLate Addition\n-------------\n\nThe VPN kiosk in the Kestrel Room "
                    "lends a spare hardware token called the Wayfarer Fob for up to 3 days.\n")
    counting = CountingEmbedder(embedder)
    report = build_index(docs, ws, embedder=counting)
    assert report.updated == [target] and report.added == [] and report.removed == []
    assert len(report.unchanged) == len(old.manifest.docs) - 1
    new = load_current(ws)
    target_texts = {c.embed_text for c in new.chunks if c.doc == target}
    assert counting.embedded and set(counting.embedded) <= target_texts  # only the edited document's new chunks
    assert len({c.id for c in new.chunks}) == len(new.chunks)
    hits = Searcher(ws, embedder).search("Wayfarer Fob hardware token loan", k=3)
    assert hits[0].chunk.doc == target and "Wayfarer Fob" in hits[0].chunk.text


def test_deleted_document_is_gone_from_every_mode(index_copy, embedder):
    docs, ws = index_copy
    (docs / "hr" / "parental-leave.txt").unlink()
    report = build_index(docs, ws, embedder=embedder)
    assert report.removed == ["hr/parental-leave.txt"] and report.embedded == 0
    gen = load_current(ws)
    assert not any(c.doc == "hr/parental-leave.txt" for c in gen.chunks)
    searcher = Searcher(ws, embedder)
    for mode in ("dense", "bm25", "hybrid"):
        hits = searcher.search("parental leave keep-in-touch days", k=20, mode=mode)
        assert hits and all(h.chunk.doc != "hr/parental-leave.txt" for h in hits)


def test_broken_files_are_reported_and_the_rest_indexed(index_copy, embedder):
    docs, ws = index_copy
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf\n%%EOF")
    (docs / "fake.docx").write_bytes(os.urandom(2048))
    (docs / "new-note.md").write_text("# Fresh note\n\nThe Osier Lane bike shed code is 4471.\n")
    handbook = docs / "hr" / "employee-handbook.md"
    handbook.write_bytes(b"\x00\x00 binary garbage replaced the handbook")
    report = build_index(docs, ws, embedder=embedder)
    failed = {f.path: f.error for f in report.failed}
    assert set(failed) == {"broken.pdf", "fake.docx", "hr/employee-handbook.md"}
    assert "PDF" in failed["broken.pdf"] and "DOCX" in failed["fake.docx"]
    assert report.added == ["new-note.md"]
    assert report.kept_previous == ["hr/employee-handbook.md"]  # a bad update never loses the indexed version
    gen = load_current(ws)
    assert any(c.doc == "hr/employee-handbook.md" for c in gen.chunks)
    assert not any(c.doc in ("broken.pdf", "fake.docx") for c in gen.chunks)
    assert json.loads((index_dir(ws) / "last_run.json").read_text())["failed"]


def test_restricted_chunks_never_leak_in_any_mode(built_index, embedder):
    _, ws, _ = built_index
    searcher = Searcher(ws, embedder)
    queries = [q["question"] for q in _questions() if q.get("groups")] + ["salary band", "pen test finding",
                                                                          "discount approval", "budget"]
    for groups in (frozenset(), frozenset({"hr"}), frozenset({"security"}), frozenset({"nobody"})):
        for q in queries:
            for mode in ("dense", "bm25", "hybrid"):
                for h in searcher.search(q, k=25, mode=mode, groups=groups):
                    assert not h.chunk.groups or set(h.chunk.groups) & groups, (q, mode, groups, h.chunk.doc)
    hits = searcher.search("salary band BW-4 range", k=3, groups={"hr"})
    assert hits[0].chunk.doc == "hr/salary-bands-2026.md"


def test_search_modes_find_the_gold_document(built_index, embedder):
    _, ws, _ = built_index
    searcher = Searcher(ws, embedder)
    answerable = [q for q in _questions() if q["answers"]]
    for mode in ("dense", "bm25", "hybrid"):
        found = sum(any(h.chunk.doc == q["doc"] for h in searcher.search(
            q["question"], k=5, mode=mode, groups=frozenset(q.get("groups", [])))) for q in answerable)
        assert found / len(answerable) >= 0.7, (mode, found)
    hybrid = sum(any(h.chunk.doc == q["doc"] for h in searcher.search(
        q["question"], k=5, groups=frozenset(q.get("groups", [])))) for q in answerable)
    assert hybrid / len(answerable) >= 0.9


def test_hnsw_index_also_filters_by_access(tmp_path, built_index, embedder):
    docs, _, _ = built_index
    _, built_ws, _ = built_index
    ws = tmp_path / "ws"
    shutil.copytree(built_ws, ws)
    report = build_index(docs, ws, IndexConfig(dense_kind="hnsw"), embedder=embedder)
    assert report.embedded == 0  # switching the index kind reuses the stored vectors
    assert load_current(ws).manifest.dense_kind == "hnsw"
    searcher = Searcher(ws, embedder)
    hits = searcher.search("pen test findings severity", k=10, mode="dense")
    assert hits and all(not h.chunk.groups for h in hits)
    hits = searcher.search("pen test findings severity", k=3, mode="dense", groups={"security"})
    assert hits[0].chunk.doc == "security/pen-test-findings-2026.md"


def test_one_writer_at_a_time(index_copy, embedder):
    docs, ws = index_copy
    with writer_lock(ws):
        with pytest.raises(IndexBusyError):
            build_index(docs, ws, embedder=embedder)


def test_kill_during_reindex_leaves_previous_index_live(index_copy, embedder):
    docs, ws = index_copy
    old = load_current(ws)
    extra = docs / "bulk"
    extra.mkdir()
    # Unique text in every file (identical chunks would reuse stored embeddings), enough that embedding takes
    # several seconds even on a fast machine, so the kill below lands before the new generation is published.
    rng = random.Random(0)
    words = [w for w in (docs / "hr" / "employee-handbook.md").read_text().split() if w.isalpha()]
    for i in range(150):
        body = " ".join(rng.choice(words) for _ in range(2000))
        (extra / f"copy-{i}.md").write_text(f"# Bulk copy {i}\n\n{body}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ragtune_cli", "index", str(docs), "--workspace", str(ws)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen_counts = set()
    stop = threading.Event()

    def read_while_indexing():  # concurrent readers always get a whole generation
        while not stop.is_set():
            gen = load_current(ws)
            seen_counts.add(len(gen.chunks))

    reader = threading.Thread(target=read_while_indexing)
    reader.start()
    buf = ""
    deadline = time.time() + 240
    while "embedding:" not in buf or "%|" not in buf.split("embedding:")[-1]:
        buf += proc.stderr.read(1)
        assert time.time() < deadline and proc.poll() is None, buf[-2000:]
    assert proc.poll() is None, "the indexer finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    reader.join()
    assert seen_counts == {len(old.chunks)}
    # a writer killed while writing leaves a staging folder behind: simulate that state too
    junk = index_dir(ws) / "tmp-killedwriter"
    junk.mkdir()
    (junk / "chunks.jsonl").write_text('{"half": ')
    after_kill = load_current(ws)
    assert after_kill.path == old.path and len(after_kill.chunks) == len(old.chunks)
    assert Searcher(ws, embedder).search("annual leave days", k=1)
    report = build_index(docs, ws, embedder=embedder)
    assert len(report.added) == 150, report.failed
    assert not junk.exists()
    assert len(load_current(ws).chunks) > len(old.chunks)


def test_searcher_picks_up_a_new_generation(index_copy, embedder):
    docs, ws = index_copy
    searcher = Searcher(ws, embedder)
    assert not searcher.search("zebra quokka sandwich", k=3, mode="bm25")
    (docs / "rota.md").write_text("# Lunch rota\n\nThe zebra quokka sandwich is kept by Wenna Pashley.\n")
    build_index(docs, ws, embedder=embedder)
    hits = searcher.search("zebra quokka sandwich", k=3, mode="bm25")
    assert hits and hits[0].chunk.doc == "rota.md"


def test_langchain_retriever(built_index, embedder):
    from langchain_core.retrievers import BaseRetriever

    from retrieve.langchain import RagtuneRetriever

    _, ws, _ = built_index
    retriever = RagtuneRetriever(searcher=Searcher(ws, embedder), k=3, groups=["finance"])
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("FY2026 revenue target")
    assert len(docs) == 3 and docs[0].metadata["doc"] == "finance/budget-fy2026.md"
    assert all({"doc", "section", "score", "groups"} <= set(d.metadata) for d in docs)
