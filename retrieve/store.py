"""The index on disk: immutable generations behind one pointer file, so every write is atomic.

    WS/index/
      CURRENT            the name of the live generation, replaced atomically (os.replace) after it is complete
      gen-000007/        one complete, never-modified index:
        manifest.json    settings, embedder fingerprint, per-document hash/title/groups/chunk count, failures
        chunks.jsonl     one chunk (text + metadata) per line, in vector-row order
        vectors.npy      float32, L2-normalised, one row per chunk (kept so updates never re-embed old chunks)
        dense.faiss      the FAISS index over vectors.npy
        bm25/            the bm25s lexical index of the chunks (numpy arrays + JSON; stemmed terms)
        bm25-docs/       the same over whole documents (hybrid search's third list)
      .lock              held by the one writer at a time

A writer builds `tmp-*` next to the generations and renames it into place before it moves CURRENT, so a writer
killed at any point leaves the previous generation whole and live. A reader resolves CURRENT once and then reads
only that folder, so it sees the old or the new index, never a mix. Nothing is stored with pickle.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.files import fsync_tree
from ingest.types import Chunk
from ingest.workspace import Workspace

FORMAT_VERSION = 1
KEEP_GENERATIONS = 2  # the live one and its predecessor, which a reader may still be opening


class IndexBusyError(RuntimeError):
    pass


class IndexMissingError(FileNotFoundError):
    pass


@dataclass
class Manifest:
    settings: dict  # chunking and embedding settings; a change forces a full re-embed
    embedder: str  # Embedder.fingerprint
    docs: dict[str, dict] = field(default_factory=dict)  # path -> {sha256, title, groups, chunks}
    failed: list[dict] = field(default_factory=list)  # [{"path", "error"}] from the run that wrote it
    dense_kind: str = "flat"
    n_chunks: int = 0
    docs_dir: str = ""
    format_version: int = FORMAT_VERSION
    workspace: str = ""  # the workspace that built it (resolved), so a copy can tell its documents folder apart

    @classmethod
    def from_json(cls, d: dict) -> "Manifest":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Generation:
    """One complete index folder loaded into memory (the FAISS and BM25 parts are loaded by `retrieve.search`)."""

    path: Path
    manifest: Manifest
    chunks: list[Chunk]
    vectors: np.ndarray


def index_dir(workspace: Path) -> Path:
    return Workspace(workspace).index


def current_generation_path(workspace: Path) -> Path | None:
    pointer = index_dir(workspace) / "CURRENT"
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    return index_dir(workspace) / name


def indexed_docs_dir(workspace: Path) -> Path | None:
    """The documents folder the live index was built from, as seen from `workspace`. A folder inside the workspace
    that built the index is taken at the same place inside this one, so a copied or moved workspace never writes
    uploads into the original's documents; a folder outside any workspace is used as recorded. None if there is
    no index or the folder does not exist."""
    try:
        manifest = load_current(workspace).manifest
    except (IndexMissingError, OSError, ValueError):
        return None
    if not manifest.docs_dir:
        return None
    docs = Path(manifest.docs_dir)
    built_in = Path(manifest.workspace) if manifest.workspace else _owning_workspace(docs)
    if built_in is not None and docs.is_relative_to(built_in):
        docs = Path(workspace).resolve() / docs.relative_to(built_in)
    return docs if docs.is_dir() else None


def _owning_workspace(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` that holds an index (manifests older than the `workspace` field)."""
    for parent in (folder, *folder.parents):
        if (index_dir(parent) / "CURRENT").is_file():
            return parent
    return None


def read_generation(path: Path) -> Generation:
    manifest = Manifest.from_json(json.loads((path / "manifest.json").read_text()))
    with open(path / "chunks.jsonl", encoding="utf-8") as f:
        chunks = [Chunk.from_json(json.loads(line)) for line in f if line.strip()]
    vectors = np.load(path / "vectors.npy", allow_pickle=False)
    if len(chunks) != vectors.shape[0] or len(chunks) != manifest.n_chunks:
        raise ValueError(f"index generation {path} is inconsistent: {len(chunks)} chunks, {vectors.shape[0]} vectors")
    return Generation(path, manifest, chunks, vectors)


def load_current(workspace: Path) -> Generation:
    """The live generation; retries if a writer removed it between reading CURRENT and opening it."""
    for _ in range(5):
        path = current_generation_path(workspace)
        if path is None:
            raise IndexMissingError(f"no index in workspace {workspace}: run `ragtune index DOCS_DIR` first")
        try:
            return read_generation(path)
        except FileNotFoundError:
            continue
    raise IndexMissingError(f"index in {workspace} keeps changing under the reader")


@contextmanager
def writer_lock(workspace: Path):
    root = index_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise IndexBusyError(f"another re-index of {workspace} is running") from e
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_staging_dir(workspace: Path) -> Path:
    path = index_dir(workspace) / f"tmp-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def write_chunks(path: Path, chunks: list[Chunk]) -> None:
    with open(path / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")


def write_manifest(path: Path, manifest: Manifest) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest.__dict__, indent=1, ensure_ascii=False))


def publish(workspace: Path, staging: Path) -> Path:
    """Make a complete staging folder the live generation. Call only while holding `writer_lock`."""
    root = index_dir(workspace)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"gen-(\d+)", p.name))]
    final = root / f"gen-{max(numbers, default=0) + 1:06d}"
    fsync_tree(staging)
    os.rename(staging, final)
    tmp_pointer = root / f"CURRENT.{uuid.uuid4().hex[:8]}"
    tmp_pointer.write_text(final.name + "\n")
    with open(tmp_pointer) as f:
        os.fsync(f.fileno())
    os.replace(tmp_pointer, root / "CURRENT")
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    collect_garbage(workspace)
    return final


def collect_garbage(workspace: Path) -> None:
    """Remove staging folders of killed writers and generations older than the last KEEP_GENERATIONS."""
    root = index_dir(workspace)
    live = current_generation_path(workspace)
    gens = sorted(p for p in root.iterdir() if re.fullmatch(r"gen-\d+", p.name))
    keep = set(gens[-KEEP_GENERATIONS:]) | ({live} if live else set())
    for p in root.iterdir():
        if (p.name.startswith("tmp-") and p.is_dir()) or (p in gens and p not in keep):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith("CURRENT."):
            p.unlink(missing_ok=True)
