"""Document management for the app: upload, access groups, delete, re-index in the background, status, viewer.

Safety rules for files coming from a browser:
- a size limit and an allow-list of suffixes (the formats ingest reads);
- the stored name is rebuilt from the uploaded name's last component (letters, digits, '.', '_', '-'), never used
  as given, and every path is resolved and checked to stay inside the documents folder (no '..', no absolute
  paths, no hidden files, no control characters, and no symbolic link anywhere below the folder: ingest does not
  follow links either, see ingest/scan.py);
- groups are written to the sidecar `<file>.meta.yaml` (which wins over front matter), keeping its other keys.

Re-indexing runs `retrieve.build_index` in a background thread (one at a time; `ragtune index` from a shell is
refused by the index's own writer lock and reported). Readers keep answering from the live generation meanwhile
and switch to the new one when it is published (retrieve/search.py). Progress comes from the embedder the job is
given: the chunks to embed are encoded in slices and each slice is reported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import yaml

from ingest.files import write_text_atomic
from ingest.readers import SUPPORTED_SUFFIXES
from ingest.scan import SIDECAR_SUFFIX
from ingest.types import can_read
from serve.jobs import Job, start_background

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DOC_ROUTE = "ragtune/doc/"  # relative to the app's root, so it also works behind a path prefix


class DocsError(ValueError):
    """An upload or document operation that is refused; the message says why."""


def safe_filename(name: str) -> str:
    """A safe file name from an uploaded one: last path component only, ASCII letters/digits/._- (others become
    '-'), no leading dot or dash, at most 120 characters, with a supported suffix."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _SAFE_CHARS.sub("-", base).strip(".-_ ")
    base = re.sub(r"-{2,}", "-", base)
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem:
        raise DocsError(f"{name!r}: the file needs a name and one of the suffixes {', '.join(SUPPORTED_SUFFIXES)}")
    suffix = "." + suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocsError(f"{name!r}: type {suffix} is not allowed (allowed: {', '.join(SUPPORTED_SUFFIXES)})")
    if base.lower().endswith(SIDECAR_SUFFIX):
        raise DocsError(f"{name!r}: sidecar files are written by the app, not uploaded")
    stem = stem[: 120 - len(suffix)].rstrip(".-_") or "document"
    return stem + suffix


def safe_folder(folder: str | None) -> str:
    """A relative sub-folder of the documents folder ('' = the top), each part cleaned like a file name."""
    parts = []
    for part in re.split(r"[\\/]+", str(folder or "").strip()):
        if part in ("", "."):
            continue
        if part == "..":
            raise DocsError("the folder may not contain '..'")
        cleaned = _SAFE_CHARS.sub("-", unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode())
        cleaned = cleaned.strip(".-_")
        if not cleaned:
            raise DocsError(f"folder part {part!r} is not a usable name")
        parts.append(cleaned[:64])
    return "/".join(parts)


def reindex_summary(r: dict) -> str:
    """The line an admin sees when a re-index is done (r: retrieve's IndexReport as JSON)."""
    failed = len(r.get("failed") or [])
    return (f"re-index done in {r.get('seconds', 0):.1f} s: {r.get('added', 0)} added, {r.get('updated', 0)} "
            f"updated, {r.get('removed', 0)} removed, {r.get('unchanged', 0)} unchanged, {r.get('chunks', 0)} "
            f"chunks ({r.get('embedded', 0)} embedded)" + (f"; {failed} failed (see below)" if failed else ""))


class _ProgressEmbedder:
    """Wraps an embedder for one indexing run: encodes in slices and reports (done, total) after each."""

    def __init__(self, base, report: Callable[[int, int], None], slice_size: int = 64) -> None:
        self._base = base
        self._report = report
        self._slice = slice_size

    def encode(self, texts, progress: bool = False, desc: str = "embedding"):
        import numpy as np

        texts = list(texts)
        if not texts:
            return self._base.encode(texts)
        parts = []
        for start in range(0, len(texts), self._slice):
            parts.append(self._base.encode(texts[start:start + self._slice]))
            self._report(min(start + self._slice, len(texts)), len(texts))
        return np.concatenate(parts, axis=0)

    def __getattr__(self, name):
        return getattr(self._base, name)


class DocsAdmin:
    """Everything the Documents tab does, as plain methods (the handlers add the admin check on top)."""

    def __init__(self, workspace: Path, docs_dir: Path, embedder_for_job: Callable[[], object] | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.workspace = Path(workspace)
        self.docs_dir = Path(docs_dir)
        self.docs_dir.mkdir(parents=True, exist_ok=True)
        self._root = self.docs_dir.resolve()
        self._embedder_for_job = embedder_for_job
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._jobs = 0

    # ---- paths -----------------------------------------------------------------------------------------------
    def resolve(self, rel: str, *, must_exist: bool = True) -> Path:
        """The absolute path of a document given by its path relative to the documents folder; refuses anything
        that would leave the folder or touch hidden files and sidecars."""
        rel = str(rel or "").strip().replace("\\", "/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or rel.startswith("/") or _CONTROL.search(rel) or any(
                p == ".." or p.startswith(".") or len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
            raise DocsError(f"not a document path: {rel[:300]!r}")
        if parts[-1].lower().endswith(SIDECAR_SUFFIX) or Path(parts[-1]).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DocsError(f"not a document path: {rel[:300]!r}")
        path = self.docs_dir.joinpath(*parts)
        try:
            real = path.resolve()
            exists = path.is_file()
        except (OSError, ValueError) as e:  # a path the file system refuses (too long, undecodable)
            raise DocsError(f"not a document path: {rel[:300]!r}") from e
        if real != self._root.joinpath(*parts):  # left the folder, or passed through a link inside it
            raise DocsError(f"not a document path: {rel!r} (links are not followed)")
        if must_exist and not exists:
            raise DocsError(f"no document {rel!r} in {self.docs_dir}")
        return path

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.docs_dir).as_posix()

    # ---- changes -----------------------------------------------------------------------------------------------
    def save_upload(self, src: Path | str, original_name: str | None = None, groups=(), folder: str = "") -> str:
        """Copy an uploaded temp file into the documents folder under a safe name; returns its relative path.
        `groups` (non-empty) are written to its sidecar. An existing document of that name is replaced."""
        src = Path(src)
        name = safe_filename(original_name or src.name)
        size = src.stat().st_size
        if size > self.max_upload_bytes:
            raise DocsError(f"{name}: {size / 2**20:.1f} MiB is over the upload limit of "
                            f"{self.max_upload_bytes / 2**20:.0f} MiB")
        if size == 0:
            raise DocsError(f"{name}: the file is empty")
        sub = safe_folder(folder)
        rel = f"{sub}/{name}" if sub else name
        target = self.resolve(rel, must_exist=False)
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise DocsError(f"{rel}: exists and is not a regular file")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self._root):
            raise DocsError(f"{rel}: the folder leaves the documents folder")
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        group_set = _groups(groups)
        if group_set or target.with_name(target.name + SIDECAR_SUFFIX).exists():
            self.set_groups(rel, group_set)
        return rel

    def set_groups(self, rel: str, groups) -> tuple[str, ...]:
        """Write the document's groups to its sidecar (other keys kept). Empty groups: readable by everyone."""
        path = self.resolve(rel)
        group_set = tuple(sorted(_groups(groups)))
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        meta = {}
        if sidecar.is_file():
            try:
                meta = yaml.safe_load(sidecar.read_text("utf-8")) or {}
            except yaml.YAMLError:
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
        meta["groups"] = list(group_set)
        write_text_atomic(sidecar, yaml.safe_dump(meta, sort_keys=True))
        return group_set

    def delete(self, rel: str) -> None:
        path = self.resolve(rel)
        path.unlink()
        path.with_name(path.name + SIDECAR_SUFFIX).unlink(missing_ok=True)

    # ---- re-index ----------------------------------------------------------------------------------------------
    @property
    def job(self) -> Job | None:
        return self._job

    def start_reindex(self, reason: str = "") -> Job:
        """Start a background re-index (or return the one already running)."""
        with self._lock:
            if self._job is not None and self._job.running:
                return self._job
            self._jobs += 1
            job = Job("reindex", id=self._jobs, reason=reason)
            self._job = job
        return start_background(job, self._run)

    def _index_config(self):
        from ingest import ChunkConfig
        from retrieve import EmbedConfig, IndexConfig
        from retrieve.store import IndexMissingError, load_current

        try:
            manifest = load_current(self.workspace).manifest
        except IndexMissingError:
            return IndexConfig()
        settings = manifest.settings or {}
        chunk = settings.get("chunk") or {}
        return IndexConfig(EmbedConfig(model=settings.get("embed_model") or EmbedConfig().model),
                           ChunkConfig(**chunk) if chunk else ChunkConfig())

    def _run(self, job: Job) -> None:
        from retrieve import Embedder, build_index

        def embedded(done: int, total: int) -> None:
            job.phase = f"embedding {done}/{total} new chunks"
            job.fraction = 0.15 + 0.8 * done / max(total, 1)

        job.phase, job.fraction = "reading and chunking changed documents", 0.05
        config = self._index_config()
        base = self._embedder_for_job() if self._embedder_for_job else Embedder(config.embed)
        report = build_index(self.docs_dir, self.workspace, config, embedder=_ProgressEmbedder(base, embedded))
        job.result = report.to_json()
        job.result["summary"] = reindex_summary(job.result)

    # ---- status ----------------------------------------------------------------------------------------------
    def last_run(self) -> dict:
        from retrieve.store import index_dir

        try:
            return json.loads((index_dir(self.workspace) / "last_run.json").read_text())
        except (OSError, ValueError):
            return {}

    def indexed_docs(self) -> dict[str, dict]:
        from retrieve.store import IndexMissingError, load_current

        try:
            return dict(load_current(self.workspace).manifest.docs)
        except (IndexMissingError, OSError, ValueError):
            return {}

    def status_rows(self, user_groups: frozenset[str], admin: bool) -> list[list]:
        """[document, title, groups, chunks, status] per document. Admins see every file, including files not
        indexed yet and failures, to manage them, but a title (the document's words) only where their groups may
        read it; other users see only indexed documents their groups may read."""
        indexed = self.indexed_docs()
        rows: dict[str, list] = {}
        for path, meta in indexed.items():
            groups = tuple(meta.get("groups") or ())
            readable = can_read(groups, user_groups)
            if not admin and not readable:
                continue
            rows[path] = [path, meta.get("title", "") if readable else "", ", ".join(groups) or "everyone",
                          meta.get("chunks", 0), "indexed"]
        if not admin:
            return [rows[p] for p in sorted(rows)]
        from ingest import find_documents

        on_disk = {s.path: s for s in find_documents(self.docs_dir)} if self.docs_dir.is_dir() else {}
        for path, src in on_disk.items():
            if path not in indexed:
                rows[path] = [path, "", _sidecar_groups(src.abs_path), 0, "new: not indexed yet (re-index)"]
            elif indexed[path].get("sha256") != src.sha256:
                rows[path][4] = "changed: re-index to update"
        for path in indexed:
            if path not in on_disk:
                rows[path][4] = "deleted: still indexed until re-index"
        last = self.last_run()
        kept = set(last.get("kept_previous") or [])
        for f in last.get("failed") or []:
            path = f.get("path", "")
            row = rows.setdefault(path, [path, "", "", 0, ""])
            row[4] = f"FAILED: {f.get('error', '?')}" + (" (previous version still indexed)" if path in kept else "")
        return [rows[p] for p in sorted(rows)]

    def failures(self) -> list[list]:
        last = self.last_run()
        kept = set(last.get("kept_previous") or [])
        return [[f.get("path", ""), f.get("error", ""), "yes" if f.get("path") in kept else "no"]
                for f in last.get("failed") or []]

    # ---- viewer ------------------------------------------------------------------------------------------------
    def has_index(self) -> bool:
        from retrieve.store import current_generation_path

        path = current_generation_path(self.workspace)
        return path is not None and path.is_dir()

    def index_groups(self) -> frozenset[str]:
        """Every group an indexed document names."""
        return frozenset(g for meta in self.indexed_docs().values() for g in meta.get("groups") or ())

    def may_read(self, rel: str, groups: frozenset[str]) -> bool:
        """Whether a reader of `groups` may open the document: its indexed groups are ones they may read (a file
        not indexed yet is judged by its own groups, which the viewer also checks). Admins are no exception:
        groups decide reading, the admin role decides managing (SECURITY.md)."""
        indexed = self.document_groups(rel)
        return indexed is None or can_read(indexed, groups)

    def document_groups(self, rel: str) -> tuple[str, ...] | None:
        """Groups of a document from the live index (None if it is not indexed)."""
        meta = self.indexed_docs().get(rel)
        return None if meta is None else tuple(meta.get("groups") or ())

    def read(self, rel: str):
        """The parsed Document (current file and sidecar), for the viewer and its group check."""
        from ingest import SourceFile, read_document

        return read_document(SourceFile(rel, self.resolve(rel), ""))


def doc_link(rel: str, section: str | None = None, page: int | None = None, base: str = "") -> str:
    """Link to the viewer route for a document (relative to the app root unless `base` is given)."""
    q = []
    if section:
        q.append("section=" + quote(section, safe=""))
    if page:
        q.append(f"page={int(page)}")
    return f"{base}{DOC_ROUTE}{quote(rel)}" + ("?" + "&".join(q) if q else "") + ("#cited" if section else "")


def _groups(value) -> frozenset[str]:
    from serve.users import UsersFileError, parse_groups

    try:
        return parse_groups(value)
    except UsersFileError as e:
        raise DocsError(str(e)) from None


def _sidecar_groups(path: Path) -> str:
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return "(front matter or everyone)"
    try:
        meta = yaml.safe_load(sidecar.read_text("utf-8")) or {}
        return ", ".join(meta.get("groups") or []) or "everyone"
    except Exception:  # noqa: BLE001
        return "(invalid sidecar)"
