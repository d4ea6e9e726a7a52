"""Shared fixtures: the real packaged embedder, a copy of the sample corpus, and one index of it built per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus"
QUESTIONS = REPO / "data" / "eval" / "questions.jsonl"


@pytest.fixture(scope="session")
def embedder():
    from retrieve import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, embedder):
    """(docs_dir, workspace, report) for the whole sample corpus; treat as read-only, copy before changing."""
    from retrieve import build_index

    root = tmp_path_factory.mktemp("built")
    docs = root / "docs"
    shutil.copytree(CORPUS, docs)
    ws = root / "ws"
    report = build_index(docs, ws, embedder=embedder)
    return docs, ws, report


@pytest.fixture
def index_copy(tmp_path, built_index):
    """A private, writable copy of the built index and its documents folder."""
    docs, ws, _ = built_index
    shutil.copytree(docs, tmp_path / "docs")
    shutil.copytree(ws, tmp_path / "ws")
    return tmp_path / "docs", tmp_path / "ws"
