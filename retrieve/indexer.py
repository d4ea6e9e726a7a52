"""Build or update the index of a documents folder: only added or changed documents are read, only chunks whose
text is new are embedded, deleted documents' chunks are dropped, and the result is published atomically."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ingest import ChunkConfig, Chunker, FailedDocument, find_documents, read_document
from ingest.files import write_text_atomic
from ingest.types import Chunk
from retrieve import dense
from retrieve.embed import DEFAULT_EMBEDDER, EmbedConfig, Embedder, resolve_embedder
from retrieve import lexical
from retrieve.lexical import CHUNKS_DIR, DOCUMENTS_DIR, DocumentIndex, LexicalIndex
from retrieve.retrievers import tuned_embedder_path
from retrieve.store import (IndexMissingError, Manifest, index_dir, load_current, new_staging_dir, publish,
                            write_chunks, write_manifest, writer_lock)


@dataclass
class IndexConfig:
    embed: EmbedConfig = field(default_factory=EmbedConfig)  # the default model means: the workspace's tuned
    # embedder when `ragtune tune-retriever` made one (WS/retrievers/settings.json), else the packaged one
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    dense_kind: str = "auto"  # auto | flat (exact) | hnsw (approximate); auto picks hnsw for very large indexes

    def settings(self) -> dict:
        """What must match for stored chunks and vectors to be reused."""
        return {"embed_model": self.embed.model, "chunk": asdict(self.chunk)}


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[FailedDocument] = field(default_factory=list)
    kept_previous: list[str] = field(default_factory=list)  # failed now, previous version still indexed
    chunks: int = 0
    embedded: int = 0  # chunks whose vectors were computed in this run
    seconds: float = 0.0
    generation: str = ""

    def to_json(self) -> dict:
        return {
            "added": len(self.added), "updated": len(self.updated), "removed": len(self.removed),
            "unchanged": len(self.unchanged), "chunks": self.chunks, "embedded": self.embedded,
            "failed": [asdict(f) for f in self.failed], "kept_previous": self.kept_previous,
            "seconds": round(self.seconds, 3), "generation": self.generation,
            "documents": {"added": self.added, "updated": self.updated, "removed": self.removed},
        }


def build_index(docs_dir: Path, workspace: Path, config: IndexConfig | None = None,
                embedder: Embedder | None = None, progress: bool = False) -> IndexReport:
    config = workspace_index_config(workspace, config or IndexConfig())
    if embedder is None or getattr(embedder, "path", resolve_embedder(config.embed.model)) != \
            resolve_embedder(config.embed.model):  # e.g. a server's embedder from before the tuned one
        embedder = Embedder(config.embed)
    started = time.perf_counter()
    docs_dir = Path(docs_dir)
    report = IndexReport()
    sources = find_documents(docs_dir, skipped=report.failed)  # links and hard-linked twins are reported, not read
    with writer_lock(workspace):
        try:
            previous = load_current(workspace)
        except IndexMissingError:
            previous = None
        reusable = (previous is not None and previous.manifest.settings == config.settings()
                    and previous.manifest.embedder == embedder.fingerprint)
        prev_docs = previous.manifest.docs if previous else {}
        cached_rows = {c.hash: row for row, c in enumerate(previous.chunks)} if reusable else {}

        chunker = Chunker(embedder.tokenizer, config.chunk)
        docs_meta, kept, fresh = _read_changed(sources, previous, reusable, chunker, report, progress)
        seen = {src.path for src in sources}
        report.removed = sorted(p for p in prev_docs if p not in seen)

        kind = dense.choose_kind(config.dense_kind, len(kept) + len(fresh))
        changed = (bool(report.added or report.updated or report.removed) or (previous is not None and not reusable)
                   or (previous is not None and previous.manifest.dense_kind != kind)
                   or (previous is not None and not lexical.current(previous.path)))  # BM25 from an older ragtune
        if previous is not None and not changed:
            report.chunks = previous.manifest.n_chunks
            report.generation = previous.path.name
            report.seconds = time.perf_counter() - started
            _write_last_run(workspace, report)
            return report

        all_chunks, vectors = _vectors(kept, fresh, previous, cached_rows, embedder, report, progress)

        staging = new_staging_dir(workspace)
        write_chunks(staging, all_chunks)
        np.save(staging / "vectors.npy", vectors, allow_pickle=False)
        dense.save(dense.build(vectors, kind), staging / "dense.faiss")
        LexicalIndex.build([c.embed_text for c in all_chunks]).save(staging / CHUNKS_DIR)
        DocumentIndex.build(all_chunks).save(staging / DOCUMENTS_DIR)
        manifest = Manifest(config.settings(), embedder.fingerprint, dict(sorted(docs_meta.items())),
                            [asdict(f) for f in report.failed], kind, len(all_chunks), str(docs_dir.resolve()),
                            workspace=str(Path(workspace).resolve()))
        write_manifest(staging, manifest)
        final = publish(workspace, staging)
        report.chunks = len(all_chunks)
        report.generation = final.name
        report.seconds = time.perf_counter() - started
        _write_last_run(workspace, report)
        return report


def _read_changed(sources, previous, reusable: bool, chunker: Chunker, report: IndexReport, progress: bool):
    """Read and chunk the new and changed documents; an unchanged one (or one that fails now but was indexed
    before) keeps its previous chunks. Returns (docs_meta, kept [(chunk, row in the previous vectors)], fresh
    chunks); `report` gets the added / updated / unchanged / failed lists."""
    prev_docs = previous.manifest.docs if previous else {}
    prev_chunks: dict[str, list[int]] = {}
    if previous is not None:
        for row, c in enumerate(previous.chunks):
            prev_chunks.setdefault(c.doc, []).append(row)
    docs_meta: dict[str, dict] = {}
    kept: list[tuple[Chunk, int]] = []
    fresh: list[Chunk] = []
    iterator = sources
    if progress:
        from tqdm import tqdm

        iterator = tqdm(sources, desc="reading", unit="doc")
    for src in iterator:
        old = prev_docs.get(src.path)
        if old and old["sha256"] == src.sha256 and reusable:
            report.unchanged.append(src.path)
            docs_meta[src.path] = old
            kept.extend((previous.chunks[r], r) for r in prev_chunks.get(src.path, []))
            continue
        try:
            doc = read_document(src)
        except Exception as e:  # one broken file must never stop the import: report it and go on
            report.failed.append(FailedDocument(src.path, f"{type(e).__name__}: {e}"))
            if old and reusable:
                report.kept_previous.append(src.path)
                docs_meta[src.path] = old
                kept.extend((previous.chunks[r], r) for r in prev_chunks.get(src.path, []))
            continue
        chunks = chunker.chunk(doc)
        (report.updated if old else report.added).append(src.path)
        docs_meta[src.path] = {"sha256": doc.sha256, "title": doc.title, "groups": list(doc.groups),
                               "chunks": len(chunks), "indexed_at": time.time()}
        fresh.extend(chunks)
    return docs_meta, kept, fresh


def _vectors(kept, fresh, previous, cached_rows: dict, embedder: Embedder, report: IndexReport, progress: bool):
    """(chunks in document order, their vectors): kept and cached chunks reuse the previous vectors, only chunks
    whose hash is new are embedded."""
    to_embed = [c for c in fresh if c.hash not in cached_rows]
    new_vectors = embedder.encode([c.embed_text for c in to_embed], progress=progress)
    report.embedded = len(to_embed)
    new_rows = {c.hash: i for i, c in enumerate(to_embed)}
    rows: list[tuple[Chunk, np.ndarray]] = [(c, previous.vectors[r]) for c, r in kept]
    for c in fresh:
        vec = new_vectors[new_rows[c.hash]] if c.hash in new_rows else previous.vectors[cached_rows[c.hash]]
        rows.append((c, vec))
    rows.sort(key=lambda cv: (cv[0].doc, cv[0].position))
    all_chunks = [c for c, _ in rows]
    vectors = (np.stack([v for _, v in rows]).astype(np.float32) if rows
               else np.zeros((0, embedder.dim), dtype=np.float32))
    return all_chunks, vectors


def workspace_index_config(workspace: Path, config: IndexConfig) -> IndexConfig:
    """`config` with the workspace's tuned embedder in place of the default one (a model named explicitly stays)."""
    if config.embed.model != DEFAULT_EMBEDDER:
        return config
    tuned = tuned_embedder_path(workspace)
    return config if tuned is None else replace(config, embed=replace(config.embed, model=tuned))


def _write_last_run(workspace: Path, report: IndexReport) -> None:
    """The last run's report (failures included) for the app's documents view; replaced atomically."""
    path = index_dir(workspace) / "last_run.json"
    write_text_atomic(path, json.dumps({**report.to_json(), "finished_at": time.time()}, indent=1))
