"""ingest.files: the durable-write helpers every stage uses."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ingest.files import fsync_tree, share_tree, write_text_atomic


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_write_text_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("old")
    old_umask = os.umask(0o027)
    try:
        write_text_atomic(target, "new")
        assert target.read_text() == "new" and _mode(target) == 0o640  # what open() would give under this umask
        write_text_atomic(target, "secret", mode=0o600)
        assert _mode(target) == 0o600
    finally:
        os.umask(old_umask)
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "last_run.json"
    target.write_text("kept")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "\udc80 lone surrogate cannot be encoded")
    assert target.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["last_run.json"]


def test_share_tree_gives_a_mkdtemp_folder_the_usual_permissions(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "sub").mkdir(mode=0o700)
    fd = os.open(folder / "sub" / "weights.bin", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    assert _mode(folder) == 0o700
    old_umask = os.umask(0o022)
    try:
        share_tree(folder)
    finally:
        os.umask(old_umask)
    assert _mode(folder) == _mode(folder / "sub") == 0o755 and _mode(folder / "sub" / "weights.bin") == 0o644
    fsync_tree(folder)  # runs over folders and files alike
