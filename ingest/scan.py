"""Find documents in a folder tree and read each one, with its access groups, into a `Document`.

Access groups come from a `groups:` key, either in YAML front matter (Markdown, text) or in a sidecar file next to
the document named `<file name>.meta.yaml` (any format; the sidecar wins). No groups means every employee may read it.

Links are never followed. A symbolic link (to a file or a folder, inside the documents folder or out of it) is
skipped: its target is indexed under its own path, with its own sidecar, if it is in the folder; read through the
link, it would get the link's sidecar (usually none) and so weaker groups than its own. For the same reason a file
with several hard-linked paths in the folder is skipped at every path. Skipped paths are reported with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ingest.limits import DEFAULT_LIMITS, ReadLimits, load_yaml_meta
from ingest.readers import SUPPORTED_SUFFIXES, DocumentError, read_file
from ingest.types import Document, FailedDocument, sha256_hex

SIDECAR_SUFFIX = ".meta.yaml"
MAX_FILE_BYTES = 200 * 1024 * 1024
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
NOT_FOLLOWED = "links are not followed (the target is indexed under its own path and groups)"
LINK_SKIPPED = f"a symbolic link: {NOT_FOLLOWED}"


@dataclass
class SourceFile:
    path: str  # relative POSIX path: the document's identity
    abs_path: Path
    sha256: str  # of the file bytes plus the sidecar bytes


def _read_nofollow(path: Path, max_bytes: int | None = None) -> bytes:
    """The file's bytes; OSError (ELOOP) if the last component is a symbolic link, even one made since the scan."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            return b"too large:%d" % size
        return f.read()


def _candidates(root: Path, skipped: list[FailedDocument]) -> list[Path]:
    """Supported, non-hidden regular files under root, never entering linked folders; links go to `skipped`."""
    out = []
    for folder, dirs, files in os.walk(root):  # followlinks=False
        here = Path(folder)
        for d in list(dirs):
            if d.startswith("."):
                dirs.remove(d)
            elif (here / d).is_symlink():
                rel = (here / d).relative_to(root).as_posix()
                skipped.append(FailedDocument(rel, f"a linked folder: {NOT_FOLLOWED}"))
        for name in files:
            p = here / name
            if name.startswith(".") or name.endswith(SIDECAR_SUFFIX) or p.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if p.is_symlink():
                skipped.append(FailedDocument(p.relative_to(root).as_posix(), LINK_SKIPPED))
            elif p.is_file():
                out.append(p)
    return out


def find_documents(root: Path, skipped: list[FailedDocument] | None = None) -> list[SourceFile]:
    """Every supported file under root, sorted, skipping hidden files and folders, symbolic links and hard-linked
    duplicates; pass a list as `skipped` to learn which links were skipped and why."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"documents folder not found: {root}")
    skipped = skipped if skipped is not None else []
    files = sorted(_candidates(root, skipped))
    by_inode: dict[tuple[int, int], list[Path]] = {}
    for p in files:
        st = p.stat()
        by_inode.setdefault((st.st_dev, st.st_ino), []).append(p)
    found = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        st = p.stat()
        twins = [q.relative_to(root).as_posix() for q in by_inode[(st.st_dev, st.st_ino)] if q != p]
        sidecar = p.with_name(p.name + SIDECAR_SUFFIX)
        if twins:
            skipped.append(FailedDocument(rel, f"the same file (a hard link) as {', '.join(twins)}: one file with "
                                               "two paths could carry two sets of groups; copy it instead"))
            continue
        if sidecar.is_symlink():
            skipped.append(FailedDocument(rel, f"its sidecar {sidecar.name} is a symbolic link (not followed)"))
            continue
        try:
            data = _read_nofollow(p, MAX_FILE_BYTES)
            extra = _read_nofollow(sidecar) if sidecar.is_file() else b""
        except OSError as e:  # replaced by a link or removed since the walk
            skipped.append(FailedDocument(rel, f"cannot be read: {e.strerror or e}"))
            continue
        found.append(SourceFile(rel, p, sha256_hex(data + b"\x00sidecar\x00" + extra)))
    skipped.sort(key=lambda f: f.path)
    return found


def parse_groups(value, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise DocumentError(f"{where}: 'groups' must be a list like [hr, finance], got {value!r}")
    groups = []
    for g in items:
        name = str(g).strip().lower()
        if not _GROUP_NAME.match(name):
            raise DocumentError(f"{where}: invalid group name {g!r} in 'groups'")
        groups.append(name)
    return tuple(sorted(set(groups)))


def read_document(source: SourceFile, limits: ReadLimits = DEFAULT_LIMITS) -> Document:
    """Parse one file within `limits`; raises DocumentError (or a library error) with the reason when it cannot be
    read. A symbolic link (the file or its sidecar) is refused, whoever passes it."""
    p = source.abs_path
    if p.is_symlink():
        raise DocumentError(LINK_SKIPPED)
    if p.stat().st_size > MAX_FILE_BYTES:
        raise DocumentError(f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    parsed = read_file(p, _read_nofollow(p), limits)
    meta = dict(parsed.meta)
    sidecar = p.with_name(p.name + SIDECAR_SUFFIX)
    if sidecar.is_symlink():
        raise DocumentError(f"its sidecar {sidecar.name} is a symbolic link (not followed)")
    if sidecar.is_file():
        meta.update(load_yaml_meta(_read_nofollow(sidecar).decode("utf-8", errors="replace"),
                                   f"sidecar {sidecar.name}", limits))
    where = sidecar.name if sidecar.is_file() and "groups" in (meta or {}) else source.path
    groups = parse_groups(meta.get("groups"), where)
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise DocumentError("no text found in the document")
    title = str(meta.get("title") or parsed.title or p.stem.replace("-", " ").replace("_", " ")).strip()
    return Document(source.path, title, sections, groups, source.sha256)
