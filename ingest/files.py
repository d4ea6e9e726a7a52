"""Durable file writes shared by every stage: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write `text` to a temp file beside `path`, fsync it, then os.replace it over `path`. `mode` defaults to
    what a plain open() would give (0666 minus the umask); pass 0o600 for secrets."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)  # mkstemp alone makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_json_line(path: Path, row: dict, lock) -> None:
    """Append `row` to a JSONL file as one line, in one write under `lock` (a threading.Lock), so concurrent writers
    never interleave; the file is made 0600 (it holds users' questions)."""
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of an append-only log such as append_json_line writes, in order; a missing file is empty and
    a damaged line (a crash mid-write, an edit by hand) is skipped, never fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def share_tree(path: Path) -> None:
    """Give a folder made by mkdtemp (0700; some writers also make 0600 files) and everything in it the permissions
    a plain mkdir/open would: 0777 / 0666 minus the umask, so a service user can read a published model folder."""
    mask = _umask()
    for p in [path, *Path(path).rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under `path` (and `path` itself), so a rename that publishes it is durable."""
    for p in [*path.rglob("*"), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
