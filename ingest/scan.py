"""Find documents in a folder tree and read each one, with its access groups, into a `Document`.

Access groups come from a `groups:` key, either in YAML front matter (Markdown, text) or in a sidecar file next to
the document named `<file name>.meta.yaml` (any format; the sidecar wins). No groups means every employee may read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ingest.readers import SUPPORTED_SUFFIXES, DocumentError, read_file
from ingest.types import Document, sha256_hex

SIDECAR_SUFFIX = ".meta.yaml"
MAX_FILE_BYTES = 200 * 1024 * 1024
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class SourceFile:
    path: str  # relative POSIX path: the document's identity
    abs_path: Path
    sha256: str  # of the file bytes plus the sidecar bytes


def find_documents(root: Path) -> list[SourceFile]:
    """Every supported file under root, sorted, skipping hidden files and folders and links that leave root."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"documents folder not found: {root}")
    real_root = root.resolve()
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.name.endswith(SIDECAR_SUFFIX) or p.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        if not p.resolve().is_relative_to(real_root):
            continue
        data = p.read_bytes() if p.stat().st_size <= MAX_FILE_BYTES else b"too large:%d" % p.stat().st_size
        sidecar = p.with_name(p.name + SIDECAR_SUFFIX)
        extra = sidecar.read_bytes() if sidecar.is_file() else b""
        found.append(SourceFile(rel.as_posix(), p, sha256_hex(data + b"\x00sidecar\x00" + extra)))
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


def read_document(source: SourceFile) -> Document:
    """Parse one file; raises DocumentError (or a library error) with the reason when it cannot be read."""
    p = source.abs_path
    if p.stat().st_size > MAX_FILE_BYTES:
        raise DocumentError(f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    parsed = read_file(p, p.read_bytes())
    meta = dict(parsed.meta)
    sidecar = p.with_name(p.name + SIDECAR_SUFFIX)
    if sidecar.is_file():
        try:
            extra = yaml.safe_load(sidecar.read_text("utf-8")) or {}
        except yaml.YAMLError as e:
            raise DocumentError(f"invalid sidecar {sidecar.name}: {e}") from e
        if not isinstance(extra, dict):
            raise DocumentError(f"sidecar {sidecar.name} is not a YAML mapping")
        meta.update(extra)
    where = sidecar.name if sidecar.is_file() and "groups" in (meta or {}) else source.path
    groups = parse_groups(meta.get("groups"), where)
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise DocumentError("no text found in the document")
    title = str(meta.get("title") or parsed.title or p.stem.replace("-", " ").replace("_", " ")).strip()
    return Document(source.path, title, sections, groups, source.sha256)
