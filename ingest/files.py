"""Durable file writes shared by every stage: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

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
